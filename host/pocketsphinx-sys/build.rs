//! Compiles the PocketSphinx 5 C library from its sources into a static library.
//!
//! The sources are the PyPI sdist `pocketsphinx-5.1.1.tar.gz`, which `.ci/setup` downloads
//! (hash-checked) and unpacks to `target/third-party/pocketsphinx-5.1.1`; `POCKETSPHINX_SRC`
//! names another unpacked tree. The file list is the one upstream's CMake build uses
//! (`src/CMakeLists.txt`), and the two headers CMake would configure (`config.h`,
//! `sphinx_config.h`) are written here from their `.h.in` templates, so no CMake is needed.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const VERSION: &str = "5.1.1";

fn main() {
    let src = source_dir();
    println!("cargo:rerun-if-env-changed=POCKETSPHINX_SRC");
    println!(
        "cargo:rerun-if-changed={}",
        src.join("src/CMakeLists.txt").display()
    );
    println!("cargo:rerun-if-changed=build.rs");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let values = configure_values();
    configure(&src.join("config.h.in"), &out.join("config.h"), &values);
    let generated_include = out.join("include");
    configure(
        &src.join("sphinx_config.h.in"),
        &generated_include.join("pocketsphinx/sphinx_config.h"),
        &values,
    );

    let files = library_sources(&src.join("src/CMakeLists.txt"));
    let mut build = cc::Build::new();
    build
        .files(files.iter().map(|f| src.join("src").join(f)))
        .include(&out)
        .include(&generated_include)
        .include(src.join("include"))
        .include(src.join("src"))
        .define("HAVE_CONFIG_H", None)
        .define("POCKETSPHINX_EXPORTS", None)
        .define("SPHINXBASE_EXPORTS", None)
        .define("PS_USE_THREAD_LOCAL_RNG", None)
        // The decoder is the hot loop of offline recognition: optimise it in every profile,
        // or debug builds (and their tests) decode several times slower than real time.
        .opt_level(2)
        // Upstream code, compiled as upstream ships it: its warnings are not ours to fix.
        .warnings(false);
    build.compile("pocketsphinx");
    println!("cargo:rustc-link-lib=m");
    println!("cargo:include={}", src.join("include").display());
}

/// The unpacked sdist: `POCKETSPHINX_SRC`, or where `.ci/setup` puts it.
fn source_dir() -> PathBuf {
    let dir = match env::var_os("POCKETSPHINX_SRC") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
            manifest.join(format!("../../target/third-party/pocketsphinx-{VERSION}"))
        }
    };
    let marker = dir.join("include/pocketsphinx.h");
    if !marker.is_file() || !dir.join("src/CMakeLists.txt").is_file() {
        panic!(
            "\n\nPocketSphinx {VERSION} C sources not found in {} (no include/pocketsphinx.h or \
             src/CMakeLists.txt).\nRun `bash .ci/setup`: it downloads the PyPI sdist \
             pocketsphinx=={VERSION} with pip and unpacks it there. Or set POCKETSPHINX_SRC to \
             an unpacked PocketSphinx {VERSION} source tree.\n\n",
            dir.display()
        );
    }
    dir
}

/// The `.c` files of the `pocketsphinx` library target in upstream's `src/CMakeLists.txt`.
fn library_sources(cmake: &Path) -> Vec<String> {
    let text = fs::read_to_string(cmake)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", cmake.display()));
    let start = text
        .find("add_library(pocketsphinx")
        .unwrap_or_else(|| panic!("{}: no add_library(pocketsphinx", cmake.display()));
    let body = &text[start + "add_library(pocketsphinx".len()..];
    let end = body
        .find(')')
        .unwrap_or_else(|| panic!("{}: unterminated add_library", cmake.display()));
    let files: Vec<String> = body[..end]
        .split_whitespace()
        .filter(|t| t.ends_with(".c"))
        .map(str::to_string)
        .collect();
    assert!(
        files.len() > 50 && files.iter().any(|f| f == "pocketsphinx.c"),
        "{}: unexpected library source list {files:?}",
        cmake.display()
    );
    files
}

/// What CMake's checks find on the targets we build for (64-bit Linux, glibc).
fn configure_values() -> BTreeMap<&'static str, String> {
    let pointer_width = env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
    let long = if pointer_width == "64" { "8" } else { "4" };
    let mut v: BTreeMap<&'static str, String> = [
        ("DEFAULT_RADIX", "12"),
        ("HAVE_INTTYPES_H", "1"),
        ("HAVE_LONG_LONG", "1"),
        ("HAVE_POPEN", "1"),
        ("HAVE_SNPRINTF", "1"),
        ("HAVE_STDINT_H", "1"),
        ("HAVE_SYS_STAT_H", "1"),
        ("HAVE_SYS_TYPES_H", "1"),
        ("HAVE_UNISTD_H", "1"),
        ("SIZEOF_LONG", long),
        ("SIZEOF_LONG_LONG", "8"),
        ("PACKAGE_NAME", "PocketSphinx"),
        ("PACKAGE_VERSION", VERSION),
        ("PACKAGE_TARNAME", "pocketsphinx"),
        ("PACKAGE_BUGREPORT", ""),
        ("PACKAGE_URL", ""),
        // The random generator's state per thread (C11 `_Thread_local`), as upstream's CMake
        // sets when the compiler has it: decoders run on several threads at once.
        ("PS_USE_THREAD_LOCAL_RNG", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    v.insert("PACKAGE_STRING", format!("PocketSphinx {VERSION}"));
    if env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() == Ok("big") {
        v.insert("WORDS_BIGENDIAN", "1".into());
    }
    v
}

/// Writes `template` with CMake's `configure_file` rules: `#cmakedefine NAME rest` becomes
/// `#define NAME rest` when NAME has a value (`@VAR@` substituted) and a comment otherwise;
/// `#cmakedefine01 NAME` becomes 0 or 1. Names we do not set (FIXED_POINT, SPHINX_DEBUG) stay
/// undefined: floating point, no debug output.
fn configure(template: &Path, output: &Path, values: &BTreeMap<&'static str, String>) {
    let text = fs::read_to_string(template)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", template.display()));
    let substitute = |s: &str| {
        let mut out = s.to_string();
        for (k, v) in values {
            out = out
                .replace(&format!("@{k}@"), v)
                .replace(&format!("${{{k}}}"), v);
        }
        out
    };
    let mut result = String::new();
    for line in text.lines() {
        // `#cmakedefine` or `#  cmakedefine` (CMake allows blanks after the `#`).
        let directive = line.trim_start().strip_prefix('#').map(|rest| {
            let body = rest.trim_start();
            (&line[..line.len() - body.len()], body)
        });
        match directive {
            Some((lead, body)) if body.starts_with("cmakedefine01 ") => {
                let name = body["cmakedefine01 ".len()..].trim();
                let on = values.contains_key(name);
                result.push_str(&format!("{lead}define {name} {}\n", on as u8));
            }
            Some((lead, body)) if body.starts_with("cmakedefine ") => {
                let rest = &body["cmakedefine ".len()..];
                let mut parts = rest.splitn(2, char::is_whitespace);
                let name = parts.next().unwrap_or_default();
                if values.contains_key(name) {
                    let value = substitute(parts.next().unwrap_or_default());
                    result.push_str(&format!("{lead}define {name} {value}\n"));
                } else {
                    result.push_str(&format!("/* #undef {name} */\n"));
                }
            }
            _ => {
                result.push_str(&substitute(line));
                result.push('\n');
            }
        }
    }
    fs::create_dir_all(output.parent().expect("output has a folder"))
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", output.display()));
    fs::write(output, result).unwrap_or_else(|e| panic!("cannot write {}: {e}", output.display()));
}
