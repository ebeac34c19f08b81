//! The dashboard in Debian's headless Chromium against the running binary (real SQLite file):
//! a live outbound call to SIPp appears among the active calls, is hung up from its detail
//! page, moves to the history, and its detail shows the menu agent's greeting in the
//! transcript and the event timeline; history search and paging; agents with a reload,
//! registrations, usage, the live log and the masked configuration. With `[http] tokens` the
//! page asks for the token, refuses a wrong one and loads everything with the right one.

use std::path::Path;
use std::time::Duration;

use crate::support::agents::repo_root;
use crate::support::api::Api;
use crate::support::browser::Browser;
use crate::support::host::Host;
use crate::support::ports::free_port;
use crate::support::process::require;
use crate::support::sipp::{sipp_callee, sipp_errors};
use serde_json::json;

const TOKEN: &str = "tok-Dash-51c0e2";
const WAIT: Duration = Duration::from_secs(20);

/// Go to a view of the already open page (as clicking its link in the header would) and wait
/// until it is drawn.
pub(crate) async fn show(browser: &mut Browser, hash: &str) {
    browser
        .eval(&format!("location.hash = {}", json!(hash)))
        .await;
    browser
        .wait_for(
            &format!("the view {hash}"),
            &format!(
                "document.querySelector('#view').dataset.route === {}",
                json!(hash)
            ),
            WAIT,
        )
        .await;
}

/// Save a screenshot in the test's folder and beside the build output for people to look at.
pub(crate) async fn screenshot(browser: &mut Browser, dir: &Path, name: &str) {
    let path = dir.join(name);
    browser.screenshot(&path).await;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join("target"));
    std::fs::copy(&path, Path::new(&target).join(name)).expect("copy the screenshot");
}

/// A JS expression: whether the view shows the route in the address bar, and that route
/// contains `part` (e.g. a search filter).
fn rendered(part: &str) -> String {
    format!(
        "document.querySelector('#view').dataset.route === location.hash && \
         location.hash.includes({})",
        json!(part)
    )
}

/// A JS expression: whether the history table lists the call `id`.
fn in_history(id: &str) -> String {
    format!(
        "!!document.querySelector('#history tr[data-id={}]')",
        json!(id)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_live_call_from_the_active_list_to_its_detail() {
    if !require("chromium") || !require("sipp") || !require("espeak-ng") {
        return;
    }
    // Nothing listens at the registrar: the account fails and the page shows why.
    let registrar = free_port();
    let mut host = Host::builder()
        .examples(&["menu"])
        .calls("record = true")
        .config(&format!(
            "[[sip.accounts]]\nname = \"pbx\"\nregistrar = \"127.0.0.1:{registrar}\"\n\
             aor = \"sip:agent@127.0.0.1\"\ntransport = \"tcp\"\ntimeout-secs = 2\n"
        ))
        .start();
    let api = Api::new(host.http, None);
    let mut browser = Browser::launch().await;
    browser.navigate(&format!("http://{}/", host.http)).await;
    browser
        .wait_for(
            "the calls view with a live event stream",
            "!!document.querySelector('#history') && \
             document.querySelector('#stream-status').textContent === 'live'",
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .eval("document.querySelector('#login').hidden")
            .await,
        true,
        "no token asked for when the API has none"
    );

    // A live call appears among the active calls without a reload.
    let (mut sipp, sipp_dir, port) = sipp_callee(None);
    let id = api
        .place_call(
            &json!({"to": format!("sip:callee@127.0.0.1:{port}"), "agent": "menu", "from": "4000"}),
        )
        .await;
    let row = format!("#active-calls tr[data-id={}]", json!(id));
    browser
        .wait_for(
            "the call among the active calls",
            &format!("!!document.querySelector({})", json!(row)),
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .eval("document.querySelector('#active-count').textContent")
            .await,
        "1"
    );

    // Its detail follows it live: the greeting the offline model spoke is an agent line.
    browser.click(&format!("{row} td:nth-child(3)")).await;
    browser
        .wait_for(
            "the agent's greeting in the live transcript",
            "document.querySelector('#call-state')?.textContent === 'live' && \
             [...document.querySelectorAll('#transcript .line.agent')]\
               .some(l => l.textContent.includes('Welcome to'))",
            Duration::from_secs(40),
        )
        .await;

    // Hanging up from the page ends the call: SIPp gets our BYE.
    browser.click("#hangup").await;
    assert_eq!(
        sipp.wait(Duration::from_secs(15)).await,
        Some(0),
        "SIPp did not get the BYE: {}",
        sipp_errors(sipp_dir.path())
    );
    browser
        .wait_for(
            "the detail to show the call ended",
            "document.querySelector('#call-state')?.textContent === 'ended' && \
             !document.querySelector('#hangup')",
            WAIT,
        )
        .await;
    let kinds = browser
        .eval("[...document.querySelectorAll('#timeline tr[data-kind]')].map(r => r.dataset.kind)")
        .await;
    let kinds: Vec<&str> = kinds
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    for kind in ["created", "answered", "transcript", "ended"] {
        assert!(
            kinds.contains(&kind),
            "{kind} not in the timeline {kinds:?}"
        );
    }

    // Back on the calls view it has left the active list for the history.
    show(&mut browser, "#/calls").await;
    browser
        .wait_for(
            "the call in the history and not among the active calls",
            &format!(
                "{} && !document.querySelector({}) && \
                 document.querySelector('#active-count').textContent === ''",
                in_history(&id),
                json!(row)
            ),
            WAIT,
        )
        .await;

    // Search: transcript text, agent and number narrow the history.
    for (field, value, found) in [
        ("text", "welcome", true),
        ("text", "zebra", false),
        ("agent", "menu", true),
        ("agent", "nobody", false),
        ("number", "4000", true),
    ] {
        browser.click("#search a").await;
        browser
            .wait_for(
                "the cleared search",
                &format!(
                    "location.hash === '#/calls' && {} && {}",
                    rendered("#/calls"),
                    in_history(&id)
                ),
                WAIT,
            )
            .await;
        browser
            .fill(&format!("#search input[name={field}]"), value)
            .await;
        browser.submit("#search").await;
        let expect = if found {
            in_history(&id)
        } else {
            "document.querySelector('#history')?.textContent === 'No finished call matches.'"
                .to_string()
        };
        let filter = format!("{field}={value}");
        browser
            .wait_for(
                &format!("{filter} found={found}"),
                &format!("{} && {expect}", rendered(&filter)),
                WAIT,
            )
            .await;
    }

    // A second call (the callee is busy) makes two pages of one.
    let (mut busy, busy_dir, busy_port) = sipp_callee(Some("uas_early_busy.xml"));
    let busy_id = api
        .place_call(&json!({"to": format!("sip:busy@127.0.0.1:{busy_port}"), "agent": "menu"}))
        .await;
    assert_eq!(
        busy.wait(WAIT).await,
        Some(0),
        "{}",
        sipp_errors(busy_dir.path())
    );
    api.poll("/v1/calls?active=false", WAIT, |b| {
        b["calls"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    show(&mut browser, "#/calls?limit=1").await;
    browser
        .wait_for(
            "one call on the first page, with More, and no active call",
            &format!(
                "{} && document.querySelectorAll('#history tbody tr').length === 1 && \
                 !document.querySelector('#more').hidden && \
                 document.querySelector('#active-calls').textContent === 'No call in progress.'",
                in_history(&busy_id)
            ),
            WAIT,
        )
        .await;
    browser.click("#more").await;
    browser
        .wait_for(
            "the older call on the next page, and no further page",
            &format!(
                "{} && document.querySelectorAll('#history tbody tr').length === 2 && \
                 document.querySelector('#more').hidden",
                in_history(&id)
            ),
            WAIT,
        )
        .await;
    screenshot(&mut browser, host.data.path(), "dashboard-calls.png").await;

    // The finished call's detail, opened from the history.
    browser
        .click(&format!(
            "#history tr[data-id={}] td:nth-child(2)",
            json!(id)
        ))
        .await;
    browser
        .wait_for(
            "the finished call's detail",
            "document.querySelector('#call-state')?.textContent === 'ended' && \
             document.querySelector('#transcript .line.agent')?.textContent.includes('Welcome to')",
            WAIT,
        )
        .await;
    let facts = browser.text("dl.facts").await;
    assert!(
        facts.contains("4000") && facts.contains("hangup-requested"),
        "{facts}"
    );
    // The call was recorded: the page fetches the WAV with the token and can play it.
    browser.click("#recording button").await;
    browser
        .wait_for(
            "the recording loaded in the player",
            "(document.querySelector('#recording audio')?.duration || 0) > 0",
            WAIT,
        )
        .await;
    screenshot(&mut browser, host.data.path(), "dashboard.png").await;

    // Agents: the live version, its route, and a reload from the page.
    show(&mut browser, "#/agents").await;
    browser
        .wait_for(
            "the menu agent and its route",
            "!!document.querySelector('#agents tr[data-name=\"menu\"]') && \
             document.querySelector('#routes').textContent.includes('1000') && \
             document.querySelector('#reload-history').textContent.includes('loaded')",
            WAIT,
        )
        .await;
    browser.click("#reload-agents").await;
    browser
        .wait_for(
            "the reload result",
            "document.querySelector('#reload-result').textContent.includes('Reloaded')",
            WAIT,
        )
        .await;
    screenshot(&mut browser, host.data.path(), "dashboard-agents.png").await;

    // Registrations: the failing account with its last error.
    show(&mut browser, "#/registrations").await;
    browser
        .wait_for(
            "the failing account with its error",
            "(() => { const r = document.querySelector('#registrations tr[data-account=\"pbx\"]'); \
               return r && r.textContent.includes('failing') && \
                 r.querySelector('td.bad')?.textContent.length > 0; })()",
            Duration::from_secs(30),
        )
        .await;

    // Usage: the offline provider reports no tokens.
    show(&mut browser, "#/usage").await;
    browser
        .wait_for(
            "the usage view",
            "document.querySelector('#usage')?.textContent === 'No tokens used in this period.'",
            WAIT,
        )
        .await;

    // The log tail holds what the host logged since the page opened.
    show(&mut browser, "#/logs").await;
    browser
        .wait_for(
            "the reload's log line in the live log",
            "document.querySelector('#log-lines')?.textContent.includes('agents reloaded from the API')",
            WAIT,
        )
        .await;

    // Configuration, read-only.
    show(&mut browser, "#/config").await;
    let config = browser
        .wait_for(
            "the configuration",
            "document.querySelector('#config')?.textContent",
            WAIT,
        )
        .await;
    let config: serde_json::Value = serde_json::from_str(config.as_str().unwrap()).unwrap();
    assert_eq!(config["sip"]["accounts"][0]["name"], "pbx");

    assert!(
        browser.problems.is_empty(),
        "the page reported problems: {:?}",
        browser.problems
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asks_for_the_token_and_refuses_a_wrong_one() {
    if !require("chromium") {
        return;
    }
    let host = Host::builder()
        .examples(&["menu"])
        .http(&format!("tokens = [\"{TOKEN}\"]"))
        .start();
    let base = format!("http://{}", host.http);

    // The page and its assets are public (they hold no data) and locked down by CSP.
    let client = reqwest::Client::new();
    for (path, content_type) in [
        ("/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert!(header("content-security-policy").contains("default-src 'self'"));
        assert_eq!(header("cache-control"), "no-cache");
        assert!(!header("etag").is_empty());
    }
    assert_eq!(
        Api::new(host.http, None).get("/v1/calls").await.status,
        401,
        "the data still needs the token"
    );

    let mut browser = Browser::launch().await;
    browser.navigate(&format!("{base}/")).await;
    browser
        .wait_for(
            "the token prompt",
            "!document.querySelector('#login').hidden && \
             document.querySelector('#view').childElementCount === 0",
            WAIT,
        )
        .await;

    browser.fill("#token", "tok-Dash-wrong").await;
    browser.submit("#login-form").await;
    browser
        .wait_for(
            "the refusal",
            "!document.querySelector('#login-error').hidden && \
             document.querySelector('#login-error').textContent.includes('refused')",
            WAIT,
        )
        .await;
    assert_eq!(
        browser
            .eval("sessionStorage.getItem('switchboard-token')")
            .await,
        serde_json::Value::Null,
        "a refused token is not kept"
    );

    browser.fill("#token", TOKEN).await;
    browser.submit("#login-form").await;
    browser
        .wait_for(
            "the dashboard with data and a live event stream",
            "document.querySelector('#login').hidden && !!document.querySelector('#history') && \
             document.querySelector('#stream-status').textContent === 'live'",
            WAIT,
        )
        .await;

    // The authenticated event stream delivers: the reload's log line reaches the log view.
    show(&mut browser, "#/agents").await;
    browser
        .wait_for(
            "the agents",
            "!!document.querySelector('#reload-agents')",
            WAIT,
        )
        .await;
    browser.click("#reload-agents").await;
    show(&mut browser, "#/logs").await;
    browser
        .wait_for(
            "the reload in the live log",
            "document.querySelector('#log-lines')?.textContent.includes('agents reloaded from the API')",
            WAIT,
        )
        .await;

    // Kept for this tab: a reload of the page asks no more.
    browser.navigate(&format!("{base}/#/config")).await;
    browser
        .wait_for(
            "the configuration without asking again",
            "document.querySelector('#login').hidden && \
             document.querySelector('#config')?.textContent.includes('***')",
            WAIT,
        )
        .await;
    // The token travels only in headers, never in a URL.
    let urls = browser
        .eval("performance.getEntries().map(e => e.name).join(' ') + ' ' + location.href")
        .await;
    assert!(!urls.as_str().unwrap().contains(TOKEN), "{urls}");

    // The only complaints are the refused requests before the right token.
    let others: Vec<&String> = browser
        .problems
        .iter()
        .filter(|p| !p.contains("401"))
        .collect();
    assert!(others.is_empty(), "the page reported problems: {others:?}");
}
