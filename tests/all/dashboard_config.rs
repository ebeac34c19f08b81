//! The dashboard's configuration editors in Debian's headless Chromium (issue 30), with
//! kamailio as the registrar (digest) and SIPp as a trunk's carrier. Everything is typed into
//! the page's forms: a read-only token is refused (403) and the page says why; with the write
//! token an added account registers (kamailio challenges and logs the REGISTER) and the page
//! shows it registered; a changed password un-REGISTERs the old binding and registers with the
//! new one (a wrong one fails with 401, the right one registers again); a removed account
//! un-REGISTERs (Expires: 0); an added trunk carries the next `POST /v1/calls` with `via` to
//! SIPp; an invalid value names its field next to it and leaves the effective configuration
//! byte-identical; a change made elsewhere meanwhile gives a 409 the page reloads and tells;
//! a value from the environment shows its variable and cannot be edited; an agent's secret is
//! set and never shown; the default agent is set; the audit list shows each change as it
//! happens, with passwords and secrets as ***.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::agents::{example_manifest, repo_root};
use crate::support::api::Api;
use crate::support::browser::Browser;
use crate::support::host::Host;
use crate::support::kamailio::Kamailio;
use crate::support::ports::free_port;
use crate::support::process::require;
use crate::support::sipp::{sipp_callee_with, sipp_errors};

const WRITE_TOKEN: &str = "ops-Dash-7f2c91";
const READ_TOKEN: &str = "view-Dash-03ab44";
const WAIT: Duration = Duration::from_secs(20);

/// Waits until kamailio's log holds `line` `n` times.
async fn wait_log(kam: &Kamailio, line: &str, n: usize) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if kam.log().matches(line).count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "kamailio logged `{line}` fewer than {n} times:\n{}",
        kam.log()
    );
}

/// Log in on the page's token form and wait for the dashboard.
async fn log_in(browser: &mut Browser, token: &str) {
    browser
        .wait_for(
            "the token form",
            "document.readyState === 'complete' && \
             document.querySelector('#login')?.hidden === false",
            WAIT,
        )
        .await;
    browser.fill("#token", token).await;
    browser.submit("#login-form").await;
    browser
        .wait_for(
            "the dashboard",
            "document.querySelector('#login').hidden",
            WAIT,
        )
        .await;
}

/// Open the configuration view and wait until the editors are drawn.
async fn show_config(browser: &mut Browser) {
    browser.eval("location.hash = '#/config'").await;
    browser
        .wait_for(
            "the configuration editors",
            "document.querySelector('#view').dataset.route === '#/config' && \
             !!document.querySelector('#account-form') && \
             document.querySelector('#stream-status').textContent === 'live'",
            WAIT,
        )
        .await;
}

/// A JS expression: the text of the first element `selector` matches ('' when none does).
fn text_of(selector: &str) -> String {
    format!(
        "(document.querySelector({}) ?.textContent ?? '')",
        json!(selector)
    )
}

/// Waits until the element at `selector` holds `part`.
async fn wait_text(browser: &mut Browser, what: &str, selector: &str, part: &str) -> String {
    let v = browser
        .wait_for(
            what,
            &format!("{0}.includes({1}) && {0}", text_of(selector), json!(part)),
            WAIT,
        )
        .await;
    v.as_str().unwrap_or_default().to_string()
}

/// Waits until the page shows account `pbx` in `state` (the live registration state).
async fn wait_account_state(browser: &mut Browser, state: &str) {
    browser
        .wait_for(
            &format!("the account pbx {state} on the page"),
            &format!(
                "{} === {}",
                text_of("[data-account-state=pbx]"),
                json!(state)
            ),
            WAIT,
        )
        .await;
}

/// Fill the inputs of the form `form` (name → text) and submit it.
async fn fill_and_submit(browser: &mut Browser, form: &str, values: &[(&str, &str)]) {
    for (name, text) in values {
        browser
            .fill(&format!("{form} [name=\"{name}\"]"), text)
            .await;
    }
    browser.submit(form).await;
}

/// Waits until the save notice names `target` (the view reloaded after the write).
async fn wait_saved(browser: &mut Browser, target: &str) {
    wait_text(
        browser,
        &format!("the save of {target}"),
        "#config-notice",
        &format!(" {target}."),
    )
    .await;
}

/// SIPp's `-trace_msg` log in `dir`: every message it sent and received.
fn sipp_messages(dir: &std::path::Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with("_messages.log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_config_edits_accounts_and_trunks_against_kamailio() {
    if !require("chromium") || !require("kamailio") || !require("kamcmd") || !require("sipp") {
        return;
    }
    let kport = free_port();
    let kam = Kamailio::start(kport).await;
    let manifest = std::fs::read_to_string(example_manifest("menu"))
        .unwrap()
        .replace("[capabilities]", "[capabilities]\nsecrets = [\"crm-key\"]");
    let host = Host::builder()
        .example_with_manifest("menu", manifest)
        .http(&format!(
            "[[http.api-tokens]]\nname = \"ops\"\ntoken = \"{WRITE_TOKEN}\"\nscope = \"write\"\n\
             [[http.api-tokens]]\nname = \"viewer\"\ntoken = \"{READ_TOKEN}\"\nscope = \"read\"\n"
        ))
        .env("SWITCHBOARD__ROUTES__3000", "menu")
        .start();
    let api = Api::new(host.http, Some(WRITE_TOKEN));
    let mut browser = Browser::launch().await;
    browser.navigate(&format!("http://{}/", host.http)).await;

    // A read-only token sees the editors, but its write is refused and the page says why.
    log_in(&mut browser, READ_TOKEN).await;
    show_config(&mut browser).await;
    fill_and_submit(
        &mut browser,
        "#route-form",
        &[("pattern", "1000"), ("agent", "menu")],
    )
    .await;
    let refused = wait_text(
        &mut browser,
        "the refusal of a read-only token",
        "#route-form .form-error",
        "scope",
    )
    .await;
    assert!(refused.contains("token:"), "{refused}");
    assert!(refused.contains("\"read\""), "{refused}");
    browser.click("#forget-token").await;
    log_in(&mut browser, WRITE_TOKEN).await;
    show_config(&mut browser).await;

    // The environment's route shows its variable and offers no editor.
    let env_route = "#config-routes tr[data-pattern='3000']";
    let source = browser.text(&format!("{env_route} [data-source]")).await;
    assert_eq!(source, "environment (SWITCHBOARD__ROUTES__3000)");
    assert_eq!(
        browser
            .eval(&format!(
                "document.querySelector(\"{env_route} select\").disabled && \
                 !document.querySelector(\"{env_route} button\")"
            ))
            .await,
        true
    );

    // An account added in the page: kamailio challenges, takes the digest and binds; the page
    // shows it registered, the stream bringing the state.
    fill_and_submit(
        &mut browser,
        "#account-form",
        &[
            ("name", "pbx"),
            ("registrar", &format!("127.0.0.1:{kport}")),
            ("aor", &format!("sip:agent@127.0.0.1:{kport}")),
            ("password", "agentpw"),
            ("expires", "60"),
        ],
    )
    .await;
    wait_saved(&mut browser, "accounts/pbx").await;
    wait_log(&kam, "REGISTERED agent expires 60", 1).await;
    assert!(
        kam.log().contains("CHALLENGE 401 REGISTER agent"),
        "{}",
        kam.log()
    );
    assert!(kam.ul_dump().contains("AoR: agent"), "{}", kam.ul_dump());
    wait_account_state(&mut browser, "registered").await;
    let row = browser.text("#config-accounts tr[data-name=pbx]").await;
    assert!(row.contains("***") && row.contains("live"), "{row}");
    assert!(!row.contains("agentpw"), "{row}");

    // A new password through the editor: the old binding goes (Expires: 0) and the REGISTER
    // with the new (wrong) one is refused; the right one registers again.
    for (password, state) in [("not-agentpw", "failing"), ("agentpw", "registered")] {
        let unregisters = kam.log().matches("REGISTERED agent expires 0").count();
        let registers = kam.log().matches("REGISTERED agent expires 60").count();
        browser
            .click("#config-accounts button[data-edit=pbx]")
            .await;
        let placeholder = browser
            .eval("document.querySelector('#account-form [name=password]').placeholder")
            .await;
        assert!(
            placeholder.as_str().unwrap().contains("***"),
            "{placeholder}"
        );
        fill_and_submit(&mut browser, "#account-form", &[("password", password)]).await;
        wait_saved(&mut browser, "accounts/pbx").await;
        if state == "failing" {
            wait_log(&kam, "REGISTERED agent expires 0", unregisters + 1).await;
        } else {
            // The failing binding had nothing to take down.
            wait_log(&kam, "REGISTERED agent expires 60", registers + 1).await;
        }
        wait_account_state(&mut browser, state).await;
    }
    assert!(
        kam.log().contains("CHALLENGE 401 REGISTER agent"),
        "{}",
        kam.log()
    );
    let registrations = api.get("/v1/registrations").await;
    assert_eq!(
        registrations.json["registrations"][0]["state"], "registered",
        "{}",
        registrations.text
    );

    // An invalid value: the error sits next to the field it names; nothing changed.
    let before = api.get("/v1/config/effective").await;
    fill_and_submit(
        &mut browser,
        "#account-form",
        &[
            ("name", "second"),
            ("registrar", &format!("127.0.0.1:{kport}")),
            ("aor", "agent"),
        ],
    )
    .await;
    let error = wait_text(
        &mut browser,
        "the inline error at the AOR",
        "#account-form .field-error[data-field=aor]",
        "aor",
    )
    .await;
    assert!(!error.is_empty(), "{error}");
    assert_eq!(
        browser
            .eval(
                "document.querySelector('#account-form .field-error[data-field=registrar]').hidden"
            )
            .await,
        true
    );
    let after = api.get("/v1/config/effective").await;
    assert_eq!(after.text, before.text);
    assert_eq!(after.etag, before.etag);

    // A trunk added in the page carries the next call through it to SIPp.
    let (mut sipp, sipp_dir, sipp_port) = sipp_callee_with(None, &["-trace_msg"]);
    fill_and_submit(
        &mut browser,
        "#trunk-form",
        &[
            ("name", "lab"),
            ("outbound-proxy", &format!("127.0.0.1:{sipp_port}")),
            ("from-user", "live-trunk"),
            ("password", "trunk-secret"),
        ],
    )
    .await;
    wait_saved(&mut browser, "trunks/lab").await;
    let id = api
        .place_call(&json!({"to": "+1 555 0100", "via": "lab", "agent": "menu"}))
        .await;
    api.poll(&format!("/v1/calls/{id}"), WAIT, |b| {
        b["call"]["state"] == "active"
    })
    .await;
    // SIPp writes its trace in its own time; the call is hung up once it has the ACK.
    let deadline = Instant::now() + WAIT;
    let mut trace = sipp_messages(sipp_dir.path());
    while !trace.contains("ACK sip:") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        trace = sipp_messages(sipp_dir.path());
    }
    assert!(
        trace.contains(&format!(
            "INVITE sip:+15550100@127.0.0.1:{sipp_port} SIP/2.0"
        )),
        "{trace}"
    );
    assert!(trace.contains("sip:live-trunk@"), "{trace}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hung = api
        .post(&format!("/v1/calls/{id}/hangup"), &json!({}))
        .await;
    assert_eq!(hung.status, 202, "{}", hung.text);
    assert_eq!(
        sipp.wait(Duration::from_secs(15)).await,
        Some(0),
        "SIPp: {}\n{}\n{}",
        sipp_errors(sipp_dir.path()),
        sipp_messages(sipp_dir.path()),
        api.get(&format!("/v1/calls/{id}")).await.text
    );

    // A change made elsewhere while the operator types: it appears in the audit list at once,
    // and the operator's save meets a 409; the page reloads and says so.
    browser.fill("#route-form [name=pattern]", "4000").await;
    browser.fill("#route-form [name=agent]", "menu").await;
    let etag = api.get("/v1/config/effective").await.etag.unwrap();
    let elsewhere = api
        .put(
            "/v1/config/routes/2000",
            &json!({"agent": "menu"}),
            Some(&etag),
        )
        .await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.text);
    browser
        .wait_for(
            "the change made elsewhere in the audit list",
            "!!document.querySelector('#audit tr[data-target=\"routes/2000\"]')",
            WAIT,
        )
        .await;
    browser.submit("#route-form").await;
    wait_text(&mut browser, "the conflict notice", "#config-notice", "409").await;
    let routes = browser
        .eval(
            "[...document.querySelectorAll('#config-routes tbody tr')].map(r => r.dataset.pattern)",
        )
        .await;
    assert_eq!(
        routes,
        json!(["1000", "2000", "3000"]),
        "the routes after the reload"
    );
    fill_and_submit(
        &mut browser,
        "#route-form",
        &[("pattern", "4000"), ("agent", "menu")],
    )
    .await;
    wait_saved(&mut browser, "routes/4000").await;

    // An agent's secret: a key its manifest does not declare is refused next to the key; a
    // declared one is set and never shown again.
    fill_and_submit(
        &mut browser,
        "#agent-value-form",
        &[
            ("agent", "menu"),
            ("kind", "secrets"),
            ("key", "other-key"),
            ("value", "crm-s3cret"),
        ],
    )
    .await;
    wait_text(
        &mut browser,
        "the inline error at the key",
        "#agent-value-form .field-error[data-field=key]",
        "crm-key",
    )
    .await;
    fill_and_submit(&mut browser, "#agent-value-form", &[("key", "crm-key")]).await;
    wait_saved(&mut browser, "agents/menu/secrets/crm-key").await;
    let secret = "#config-agent-values tr[data-key='crm-key']";
    assert_eq!(
        browser
            .eval(&format!(
                "(() => {{ const i = document.querySelector(\"{secret} input\"); \
                 return [i.type, i.value, i.placeholder]; }})()"
            ))
            .await,
        json!(["password", "", "*** (write-only)"])
    );

    // The default agent, for calls no route matches.
    fill_and_submit(&mut browser, "#default-agent-form", &[("agent", "menu")]).await;
    wait_saved(&mut browser, "default-agent").await;
    let effective = api.get("/v1/config/effective").await;
    assert_eq!(
        effective.json["default_agent"],
        json!({"value": "menu", "source": "live"}),
        "{}",
        effective.text
    );

    // Removed in the page: un-REGISTER (Expires: 0), gone from kamailio's location table.
    let unregisters = kam.log().matches("REGISTERED agent expires 0").count();
    browser
        .click("#config-accounts tr[data-name=pbx] button.danger-text")
        .await;
    wait_saved(&mut browser, "accounts/pbx").await;
    wait_log(&kam, "REGISTERED agent expires 0", unregisters + 1).await;
    assert!(!kam.ul_dump().contains("AoR: agent"), "{}", kam.ul_dump());
    browser
        .wait_for(
            "the account gone from the page",
            "!document.querySelector('#config-accounts tr[data-name=pbx]')",
            WAIT,
        )
        .await;

    // The audit list holds every change, newest first, by the write token's name, with the
    // passwords masked.
    let audit = browser
        .eval(
            "[...document.querySelectorAll('#audit tbody tr')].map(r => \
             [...r.cells].map(c => c.textContent))",
        )
        .await;
    let rows: Vec<Vec<String>> = serde_json::from_value(audit.clone()).unwrap();
    let targets: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[2].as_str(), r[3].as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            ("delete", "accounts/pbx"),
            ("set", "default-agent"),
            ("set", "agents/menu/secrets/crm-key"),
            ("set", "routes/4000"),
            ("set", "routes/2000"),
            ("set", "trunks/lab"),
            ("set", "accounts/pbx"),
            ("set", "accounts/pbx"),
            ("set", "accounts/pbx"),
        ],
        "{audit}"
    );
    assert!(rows.iter().all(|r| r[1] == "ops"), "{audit}");
    let text = audit.to_string();
    assert!(text.contains("\\\"password\\\":\\\"***\\\""), "{text}");
    for secret in ["agentpw", "trunk-secret", "crm-s3cret"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }

    // For people to look at, beside the other dashboard screenshots.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    browser
        .screenshot(&target.join("dashboard-config.png"))
        .await;

    // The only complaints are the refusals the page showed.
    let others: Vec<&String> = browser
        .problems
        .iter()
        .filter(|p| !["400", "401", "403", "409"].iter().any(|s| p.contains(s)))
        .collect();
    assert!(others.is_empty(), "the page reported problems: {others:?}");
}
