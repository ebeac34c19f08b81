//! Load-time checks of what a component imports and exports, against the contract versions this
//! host speaks and the capabilities its manifest grants.

use super::contract::{Contract, PACKAGE};
use super::manifest::Manifest;

/// Interfaces every agent may import (`mcp` offers only the servers the manifest names).
const ALWAYS_GRANTED: &[&str] = &["types", "call", "config", "log", "mcp"];

/// WASI interfaces the Rust standard library pulls in; they are wired to an empty context (no
/// environment, arguments, stdin; discarded stdout/stderr).
const HARMLESS_WASI: &[&str] = &["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/"];

/// WASI interfaces an interpreter's runtime imports whether or not the agent uses them
/// (CPython's `open` and `socket`, for instance). They are linked deny-by-default: no
/// preopened folder, every socket address refused, no name lookup; so importing them grants
/// nothing, and any use fails inside the guest.
const DENIED_WASI: &[&str] = &["wasi:filesystem/", "wasi:sockets/"];

fn split_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((base, version)) => (base, Some(version)),
        None => (name, None),
    }
}

/// Check the component's import and export names. Returns the first problem as a message
/// that names the fix.
pub fn check(
    imports: &[String],
    exports: &[String],
    manifest: &Manifest,
) -> Result<Contract, String> {
    let current = Contract::CURRENT;
    let agent_export = format!("{PACKAGE}/agent@");
    let Some(export) = exports.iter().find(|e| e.starts_with(&agent_export)) else {
        return Err(format!(
            "does not export {PACKAGE}/agent@{}: build the agent with switchboard-sdk and \
             `switchboard_sdk::export_agent!(YourAgent);`",
            current.version()
        ));
    };
    let version = split_version(export).1.unwrap_or("(none)");
    let Some(contract) = Contract::from_version(version) else {
        let spoken: Vec<String> = Contract::ALL.iter().map(|c| c.package()).collect();
        return Err(format!(
            "built for contract {PACKAGE}@{version}, but this host speaks {}: rebuild the agent \
             with a matching switchboard-sdk",
            spoken.join(" and ")
        ));
    };
    for import in imports {
        let (base, version) = split_version(import);
        if let Some(interface) = base.strip_prefix(&format!("{PACKAGE}/")) {
            if version != Some(contract.version()) {
                return Err(format!(
                    "imports {import}, but exports the agent of {}: rebuild the agent with one \
                     switchboard-sdk",
                    contract.package()
                ));
            }
            match interface {
                i if ALWAYS_GRANTED.contains(&i) => {}
                // An interpreter's bindings import every interface of the world, used or not;
                // `kv` and `http` refuse at call time what the manifest does not grant.
                "kv" | "http" if manifest.language.is_interpreted() => {}
                "kv" if manifest.capabilities.kv_quota_bytes > 0 => {}
                "kv" => {
                    return Err(
                        "imports switchboard:agent/kv, but the manifest grants no kv quota: set \
                         `kv-quota-bytes` under [capabilities]"
                            .into(),
                    );
                }
                "http" if !manifest.capabilities.http.is_empty() => {}
                "http" => {
                    return Err(
                        "imports switchboard:agent/http, but the manifest allows no hosts: list \
                         them in `http = [...]` under [capabilities]"
                            .into(),
                    );
                }
                other => {
                    return Err(format!(
                        "imports unknown interface {PACKAGE}/{other}: rebuild with a \
                         matching switchboard-sdk"
                    ));
                }
            }
            continue;
        }
        if HARMLESS_WASI.iter().any(|p| import.starts_with(p)) {
            continue;
        }
        if manifest.language.is_interpreted() && DENIED_WASI.iter().any(|p| import.starts_with(p)) {
            continue;
        }
        let why = if import.starts_with("wasi:filesystem/") {
            "uses the filesystem, which agents are never granted: keep state in switchboard:agent/kv"
        } else if import.starts_with("wasi:sockets/") {
            "opens network sockets, which agents are never granted: use switchboard:agent/http \
             with hosts listed in the manifest"
        } else if import.starts_with("wasi:http/") {
            "uses wasi:http directly: use switchboard:agent/http with hosts listed in the manifest"
        } else {
            "is not provided by Switchboard: agents may import only switchboard:agent interfaces \
             and the WASI basics the Rust standard library needs"
        };
        return Err(format!("imports {import}, which {why}"));
    }
    Ok(contract)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(extra: &str) -> Manifest {
        Manifest::parse(&format!("name = \"a\"\n{extra}"), "a.toml").unwrap()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn grants_and_refusals() {
        let exports = names(&["switchboard:agent/agent@0.1.0"]);
        let base = names(&[
            "wasi:cli/environment@0.2.6",
            "wasi:io/streams@0.2.6",
            "switchboard:agent/call@0.1.0",
        ]);
        assert_eq!(check(&base, &exports, &manifest("")), Ok(Contract::V0_1));

        let kv = names(&["switchboard:agent/kv@0.1.0"]);
        assert!(
            check(&kv, &exports, &manifest(""))
                .unwrap_err()
                .contains("kv-quota-bytes")
        );
        let granted = manifest("[capabilities]\nkv-quota-bytes = 10");
        assert_eq!(check(&kv, &exports, &granted), Ok(Contract::V0_1));

        let http = names(&["switchboard:agent/http@0.1.0"]);
        assert!(
            check(&http, &exports, &manifest(""))
                .unwrap_err()
                .contains("http = [")
        );

        for (import, needle) in [
            ("wasi:filesystem/preopens@0.2.6", "filesystem"),
            ("wasi:sockets/tcp@0.2.6", "sockets"),
            ("wasi:http/outgoing-handler@0.2.6", "wasi:http"),
            ("acme:evil/thing", "not provided"),
            ("switchboard:agent/call@0.2.0", "rebuild"),
        ] {
            let err = check(&names(&[import]), &exports, &manifest("")).unwrap_err();
            assert!(err.contains(import) && err.contains(needle), "{err}");
        }

        // An interpreter imports the filesystem and sockets (linked deny-by-default); wasi:http
        // stays refused whatever the language.
        let python = manifest("language = \"python\"");
        let interpreter = names(&[
            "wasi:filesystem/preopens@0.2.9",
            "wasi:sockets/tcp@0.2.9",
            "switchboard:agent/kv@0.1.0",
            "switchboard:agent/http@0.1.0",
        ]);
        assert_eq!(check(&interpreter, &exports, &python), Ok(Contract::V0_1));
        let http = names(&["wasi:http/outgoing-handler@0.2.9"]);
        assert!(
            check(&http, &exports, &python)
                .unwrap_err()
                .contains("wasi:http")
        );
    }

    #[test]
    fn contract_version_is_checked() {
        let err = check(
            &[],
            &names(&["switchboard:agent/agent@0.3.0"]),
            &manifest(""),
        )
        .unwrap_err();
        assert!(
            err.contains("switchboard:agent@0.3.0")
                && err.contains("switchboard:agent@0.1.0 and switchboard:agent@0.2.0")
                && err.contains("rebuild"),
            "{err}"
        );
        let err = check(&[], &names(&["wasi:cli/run@0.2.0"]), &manifest("")).unwrap_err();
        assert!(err.contains("export_agent!"), "{err}");
    }

    #[test]
    fn both_contract_versions_are_recognised() {
        let v2 = names(&[
            "switchboard:agent/call@0.2.0",
            "switchboard:agent/mcp@0.2.0",
        ]);
        let exports = names(&["switchboard:agent/agent@0.2.0"]);
        assert_eq!(check(&v2, &exports, &manifest("")), Ok(Contract::V0_2));
        // One component speaks one version.
        let mixed = names(&["switchboard:agent/call@0.1.0"]);
        let err = check(&mixed, &exports, &manifest("")).unwrap_err();
        assert!(err.contains("call@0.1.0") && err.contains("0.2.0"), "{err}");
    }
}
