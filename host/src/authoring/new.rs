//! `switchboard new NAME [--lang rust|python|js] [--number N]`: writes an agent project from the
//! templates in `host/templates/<lang>/` and `host/templates/common/` (compiled into the binary) with its name and number
//! filled in. The project builds, deploys and answers a call as it is: instructions, a
//! greeting, one tool and a keypad branch.

use std::path::{Path, PathBuf};

use crate::plugins::Language;
use crate::plugins::manifest::is_agent_name;

/// One file of a template: its path in the new project, and its text with `{{…}}` placeholders.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
}

macro_rules! template {
    ($lang:literal: $($path:literal),+ $(,)?) => {
        &[$(TemplateFile {
            path: $path,
            text: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $lang, "/", $path)),
        }),+]
    };
}

const RUST: &[TemplateFile] =
    template!("rust": "Cargo.toml", "src/lib.rs", "agent.toml", "README.md");
const PYTHON: &[TemplateFile] = template!("python": "app.py", "agent.toml", "README.md");
const JS: &[TemplateFile] = template!("js": "agent.js", "agent.toml", "README.md");
/// Every language's agent says and does the same, so one set of scripted conversations tests
/// them all.
const COMMON: &[TemplateFile] = template!("common": "tests/basic.toml");

/// The checkout this binary was built from: the SDK and the language helpers live there (none of
/// them is published to a registry).
pub fn checkout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error(
        "bad agent name `{0}`: use 1-64 lowercase letters, digits, '-' or '_' (it names the \
         folder, the files and the agent)"
    )]
    BadName(String),
    #[error("bad number `{0}`: {1}")]
    BadNumber(String, String),
    #[error("{0} already exists: choose another name or remove it")]
    Exists(String),
    #[error(
        "cannot find the Switchboard SDK at {0} (this binary's checkout): pass --sdk \
         <checkout>/guest-sdk"
    )]
    NoSdk(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What `switchboard new` was asked for.
#[derive(Debug, Clone)]
pub struct NewAgent {
    pub name: String,
    pub language: Language,
    pub number: String,
    /// Folder to create; default `./NAME`.
    pub dir: Option<PathBuf>,
    /// The `guest-sdk` folder a Rust agent depends on; default: this binary's checkout's.
    pub sdk: Option<PathBuf>,
}

/// Write the project; returns its folder.
pub fn create(request: &NewAgent) -> Result<PathBuf, NewError> {
    let name = &request.name;
    if !is_agent_name(name) {
        return Err(NewError::BadName(name.clone()));
    }
    crate::plugins::routing::Pattern::parse(&request.number)
        .map_err(|e| NewError::BadNumber(request.number.clone(), e.to_string()))?;
    let dir = request.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        return Err(NewError::Exists(dir.display().to_string()));
    }
    let files = match request.language {
        Language::Rust => RUST,
        Language::Python => PYTHON,
        Language::Js => JS,
    };
    let sdk = match request.language {
        Language::Rust => {
            let sdk = request
                .sdk
                .clone()
                .unwrap_or_else(|| checkout().join("guest-sdk"));
            sdk.canonicalize()
                .map_err(|_| NewError::NoSdk(sdk.display().to_string()))?
        }
        _ => PathBuf::new(),
    };
    let values = [
        ("name", name.clone()),
        ("number", request.number.clone()),
        ("title", title(name)),
        ("type", type_name(name)),
        ("sdk", sdk.display().to_string()),
    ];
    for file in files.iter().chain(COMMON) {
        let path = dir.join(file.path);
        let write = |source| NewError::Write {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write)?;
        }
        std::fs::write(&path, render(file.text, &values)).map_err(write)?;
    }
    if request.language == Language::Rust {
        share_example_builds(&sdk, &dir)?;
    }
    Ok(dir)
}

/// Let a new Rust crate build like the example agents beside the SDK: their lock file (the
/// dependency versions the SDK is tested with, available offline; cargo drops the entries the
/// crate does not need) and their build folder, where the SDK and its dependencies are already
/// compiled, so a new agent compiles only itself.
fn share_example_builds(sdk: &Path, dir: &Path) -> Result<(), NewError> {
    let examples = sdk.with_file_name("plugins");
    let (lock, target) = (examples.join("Cargo.lock"), examples.join("target"));
    if !lock.is_file() {
        return Ok(());
    }
    let written = |path: PathBuf, result: std::io::Result<()>| {
        result.map_err(|source| NewError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    written(
        dir.join("Cargo.lock"),
        std::fs::copy(&lock, dir.join("Cargo.lock")).map(drop),
    )?;
    let config = dir.join(".cargo/config.toml");
    written(config.clone(), std::fs::create_dir_all(dir.join(".cargo")))?;
    written(
        config.clone(),
        std::fs::write(
            &config,
            format!(
                "# Build in the example agents' folder: the SDK is compiled there already.\n\
                 [build]\ntarget-dir = {:?}\n",
                target.display().to_string()
            ),
        ),
    )
}

/// Replace every `{{key}}` by its value.
fn render(text: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(text.to_string(), |text, (key, value)| {
        text.replace(&format!("{{{{{key}}}}}"), value)
    })
}

/// "front-desk" → "Front Desk": how the agent introduces itself until configured.
fn title(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|w| !w.is_empty())
        .map(capitalised)
        .collect::<Vec<_>>()
        .join(" ")
}

/// "front-desk" → "FrontDesk": the Rust type of the agent.
fn type_name(name: &str) -> String {
    let joined: String = name.split(['-', '_']).map(capitalised).collect();
    if joined.starts_with(|c: char| c.is_ascii_digit()) {
        format!("Agent{joined}")
    } else {
        joined
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_titles_and_types() {
        assert_eq!(title("front-desk"), "Front Desk");
        assert_eq!(type_name("front-desk"), "FrontDesk");
        assert_eq!(type_name("2nd_line"), "Agent2ndLine");
        assert_eq!(
            render("{{name}} {{name}} {{x}}", &[("name", "a".into())]),
            "a a {{x}}"
        );
    }

    #[test]
    fn refuses_bad_names_numbers_and_existing_folders() {
        let dir = tempfile::tempdir().unwrap();
        let request = |name: &str, number: &str| NewAgent {
            name: name.into(),
            language: Language::Rust,
            number: number.into(),
            dir: Some(dir.path().join(name)),
            sdk: None,
        };
        assert!(matches!(
            create(&request("Bad Name", "5000")),
            Err(NewError::BadName(_))
        ));
        assert!(matches!(
            create(&request("ok", "50a!")),
            Err(NewError::BadNumber(..))
        ));
        let made = create(&request("ok", "5000")).unwrap();
        let manifest = crate::plugins::manifest::Manifest::load(&made.join("agent.toml")).unwrap();
        assert_eq!(
            (manifest.name.as_str(), manifest.numbers.as_slice()),
            ("ok", &["5000".to_string()][..])
        );
        assert!(
            !std::fs::read_to_string(made.join("src/lib.rs"))
                .unwrap()
                .contains("{{")
        );
        assert!(matches!(
            create(&request("ok", "5000")),
            Err(NewError::Exists(_))
        ));
    }
}
