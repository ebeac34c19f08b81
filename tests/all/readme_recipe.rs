//! The README's "Writing an agent" recipe works as written: its `Cargo.toml`, `src/lib.rs` and
//! `agent.toml` blocks (found by the `<!-- readme-recipe: FILE -->` comment before each) make a
//! crate that builds for wasm32-wasip2 with warnings denied, from a folder outside the repository
//! and from one inside it, and the component loads in the host and describes itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::agents::repo_root;
use switchboard::domain::Action;
use switchboard::plugins::StartOutcome;
use switchboard::plugins::harness::Harness;

/// The fenced block after `<!-- readme-recipe: {file} -->`.
fn snippet(readme: &str, file: &str) -> String {
    let marker = format!("<!-- readme-recipe: {file} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README has no {marker}"));
    let rest = readme[at + marker.len()..].trim_start();
    assert!(
        rest.starts_with("```"),
        "no fenced block right after {marker}"
    );
    let body = &rest[rest.find('\n').unwrap() + 1..];
    body[..body.find("\n```").expect("closing fence") + 1].to_string()
}

/// Writes the recipe's crate into `dir` (with `<checkout>` replaced by the repository).
fn write_crate(dir: &Path, readme: &str) {
    let root = repo_root();
    let manifest = snippet(readme, "Cargo.toml");
    assert!(manifest.contains("<checkout>/guest-sdk"), "{manifest}");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        manifest.replace("<checkout>", root.to_str().unwrap()),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), snippet(readme, "src/lib.rs")).unwrap();
    std::fs::write(dir.join("agent.toml"), snippet(readme, "agent.toml")).unwrap();
}

/// `cargo build --release --target wasm32-wasip2` in `dir` with warnings denied, as a shell
/// would run it (without the variables cargo sets for this test); returns the built component.
fn build(dir: &Path, target_dir: &Path) -> PathBuf {
    let cargo = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO"));
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_") && key != "CARGO_HOME" {
                cmd.env_remove(&*key);
            }
        }
        cmd.current_dir(dir)
            .args(args)
            .args(["--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", target_dir)
            .env("RUSTFLAGS", "-Dwarnings")
            .env_remove("OUT_DIR")
            .output()
            .expect("run cargo")
    };
    // Every crate named `bakery` shares one fingerprint in the shared target folder (its
    // dependencies are what the sharing is for): drop it so this crate is really compiled.
    let clean = cargo(&["clean", "-p", "bakery"]);
    assert!(clean.status.success(), "{clean:?}");
    let out = cargo(&["build"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README recipe does not build in {}:\n{stderr}",
        dir.display()
    );
    assert!(stderr.contains("Compiling bakery"), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    target_dir.join("wasm32-wasip2/release/bakery.wasm")
}

#[tokio::test]
async fn the_readme_agent_recipe_builds_outside_and_inside_the_repository_and_loads() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // The dependencies (wit-bindgen) compile once into the repository's target folder.
    let target_dir = root.join("target/readme-recipe");

    let outside = tempfile::Builder::new()
        .prefix("readme-recipe-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    assert!(!outside.path().starts_with(&root));
    let crate_dir = outside.path().join("bakery");
    write_crate(&crate_dir, &readme);
    let wasm = build(&crate_dir, &target_dir);

    // Inside the checkout (below its workspace root), where a crate without its own
    // `[workspace]` table is refused as "believes it's in a workspace".
    let inside = root.join("target/readme-recipe/inside/bakery");
    let _ = std::fs::remove_dir_all(&inside);
    write_crate(&inside, &readme);
    build(&inside, &target_dir);

    let h = Harness::load(&wasm, crate_dir.join("agent.toml"))
        .await
        .expect("the recipe's agent loads with the recipe's manifest");
    assert_eq!(h.version().info.name, "bakery");
    assert_eq!(h.version().info.description, "Bakery orders");
    let mut call = h.call("+15550100001", "+15550100").await.unwrap();
    match call.start().await.unwrap() {
        StartOutcome::Accept { config, .. } => {
            let greeting = config.greeting.unwrap_or_default();
            assert!(greeting.contains("Corner Bakery"), "{greeting}");
            assert_eq!(config.tools.len(), 1);
        }
        StartOutcome::Reject(r) => panic!("rejected: {r:?}"),
    }
    assert_eq!(
        call.dtmf("0").await.unwrap(),
        vec![Action::Transfer("sip:counter@bakery.example".into())]
    );
}
