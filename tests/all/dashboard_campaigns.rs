//! The dashboard's campaigns view in Debian's headless Chromium, against SIPp callees (by the
//! dialled number's last digit: tests/sipp/uas_campaign.xml). A campaign created through the
//! API (a person, a busy number, a number on the do-not-call list) is started, paused and
//! resumed with its buttons and followed live, without a reload, to its end; its contacts'
//! outcomes are in the table, a contact's call link opens that call's detail, each state shows
//! only its controls, a refused control shows the API's reason and the results CSV is saved
//! with the token. In the list, another campaign's row follows its cancel live.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::campaigns::{MONDAY_10_NY, callees, campaign, host_with_trunk};
use crate::dashboard::{screenshot, show};
use crate::support::api::Api;
use crate::support::browser::Browser;
use crate::support::process::require;
use crate::support::tempdir;

const WAIT: Duration = Duration::from_secs(20);

/// A JS expression: the controls the campaign's view shows, by name, in order.
const CONTROLS: &str = "[...document.querySelectorAll('#campaign button[data-control]')]\
                        .map((b) => b.dataset.control).join(' ')";

/// Wait until the open campaign's view shows `state` with exactly the controls `controls`.
async fn wait_state(browser: &mut Browser, state: &str, controls: &str) {
    browser
        .wait_for(
            &format!("the campaign {state} with the controls [{controls}]"),
            &format!(
                "document.querySelector('#campaign')?.dataset.state === {} && {CONTROLS} === {}",
                json!(state),
                json!(controls)
            ),
            WAIT,
        )
        .await;
}

/// A JS expression: the text of the cell `column` (a class) in the contacts table's row for
/// `number`.
fn contact_cell(number: &str, column: &str) -> String {
    format!(
        "document.querySelector('#campaign-contacts tr[data-number={}] td.{column}')?.textContent",
        json!(number)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_campaigns_a_campaign_is_started_and_followed_live_to_its_outcomes() {
    if !require("chromium") || !require("sipp") {
        return;
    }
    let (_sipp, _sipp_dir, port) = callees();
    let host = host_with_trunk(port, MONDAY_10_NY).start();
    let api = Api::new(host.http, None);
    let dnc = api
        .post("/v1/dnc", &json!({"numbers": ["+12125550109"]}))
        .await;
    assert_eq!(dnc.status, 200, "{}", dnc.text);
    let contacts = json!([
        {"number": "+12125550101", "name": "Ada"},
        {"number": "+12125550102", "name": "Bo"},
        {"number": "+12125550109", "name": "Cy"},
    ]);
    let created = api.post("/v1/campaigns", &campaign(contacts)).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let id = created.json["id"].as_str().unwrap().to_string();
    // Another campaign, never started: the list follows its cancel.
    let other = api
        .post(
            "/v1/campaigns",
            &campaign(json!([{"number": "+12125550111"}])),
        )
        .await;
    assert_eq!(other.status, 201, "{}", other.text);
    let other_id = other.json["id"].as_str().unwrap().to_string();

    let downloads = tempdir("dashboard-campaigns");
    let mut browser = Browser::launch().await;
    browser
        .call(
            "Page.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": downloads.path()}),
        )
        .await;
    browser
        .navigate(&format!("http://{}/#/campaigns", host.http))
        .await;
    let row = |id: &str| format!("#campaigns tr[data-campaign={}]", json!(id));
    browser
        .wait_for(
            "both campaigns listed as ready",
            &format!(
                "document.querySelector({})?.dataset.state === 'ready' && \
                 document.querySelector({})?.dataset.state === 'ready'",
                json!(row(&id)),
                json!(row(&other_id))
            ),
            WAIT,
        )
        .await;
    // Gone if the page reloads: everything below must come without one.
    browser.eval("window.notReloaded = true").await;

    browser.click(&format!("{} a", row(&id))).await;
    wait_state(&mut browser, "ready", "start cancel").await;
    let facts = browser.text("#campaign dl.facts").await;
    for part in [
        "menu",
        "carrier",
        "3 at once, 4 calls/s",
        "mon tue wed thu fri 09:00–20:00",
        "patients who booked online and agreed to reminder calls",
    ] {
        assert!(facts.contains(part), "{part} in {facts}");
    }

    browser.click("#campaign button[data-control=start]").await;
    wait_state(&mut browser, "running", "pause cancel").await;
    browser.click("#campaign button[data-control=pause]").await;
    wait_state(&mut browser, "paused", "resume cancel").await;
    browser.click("#campaign button[data-control=resume]").await;
    wait_state(&mut browser, "running", "pause cancel").await;

    // Only the stream's events tell the page the campaign went on and finished.
    browser
        .wait_for(
            "the campaign finished, with no control left",
            &format!(
                "document.querySelector('#campaign')?.dataset.state === 'finished' && {CONTROLS} === '' && \
                 document.querySelector('#campaign-progress td[data-count=done]')?.textContent === '3' && \
                 {} === 'answered' && {} === 'busy' && {} === 'dnc-skipped'",
                contact_cell("+12125550101", "outcome"),
                contact_cell("+12125550102", "outcome"),
                contact_cell("+12125550109", "outcome"),
            ),
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(browser.eval("window.notReloaded === true").await, true);
    screenshot(&mut browser, downloads.path(), "dashboard-campaign.png").await;
    let counts = browser
        .eval(
            "[...document.querySelectorAll('#campaign-progress td')].map((td) => td.textContent).join(' ')",
        )
        .await;
    // Contacts, pending, dialling, done; attempts: one to the person, two to the busy number.
    assert_eq!(counts, "3 0 0 3 3");
    let outcomes = browser.text("#campaign-outcomes").await;
    for part in ["answered\t1", "busy\t1", "dnc-skipped\t1"] {
        assert!(outcomes.contains(part), "{part:?} in {outcomes:?}");
    }
    let calls = browser
        .eval(
            "['+12125550101', '+12125550102', '+12125550109'].map((n) => \
             document.querySelectorAll(`#campaign-contacts tr[data-number=\"${n}\"] a[data-call]`).length)\
             .join(' ')",
        )
        .await;
    assert_eq!(calls, "1 2 0", "call links per contact");

    // A control the state does not allow: the API's reason, on the page.
    browser
        .eval(&format!("controlCampaign({}, 'pause')", json!(id)))
        .await;
    browser
        .wait_for(
            "the refusal shown",
            "(document.querySelector('#campaign-notice')?.textContent ?? '').includes('finished: it cannot pause')",
            WAIT,
        )
        .await;

    // The results CSV, fetched with the token and saved by the browser.
    browser.click("#campaign-results").await;
    let saved = downloads.path().join(format!("{id}.csv"));
    let deadline = Instant::now() + WAIT;
    let csv = loop {
        let text = std::fs::read_to_string(&saved).unwrap_or_default();
        if text.lines().count() == 4 {
            break text;
        }
        assert!(Instant::now() < deadline, "no results saved: {text:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(csv.starts_with("number,name,"), "{csv}");
    assert!(csv.contains("+12125550109,Cy,"), "{csv}");
    assert!(csv.contains("dnc-skipped"), "{csv}");

    // The person's call link opens that call's detail.
    let listed = api.get(&format!("/v1/campaigns/{id}/contacts")).await;
    let person = listed.json["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["number"] == "+12125550101")
        .unwrap();
    let call_id = person["attempts"][0]["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    browser
        .click("#campaign-contacts tr[data-number=\"+12125550101\"] a[data-call]")
        .await;
    let route = format!("#/call/{call_id}");
    browser
        .wait_for(
            "the call's detail",
            &format!(
                "document.querySelector('#view').dataset.route === {} && \
                 document.querySelector('#view h2')?.textContent === {}",
                json!(route),
                json!(call_id)
            ),
            WAIT,
        )
        .await;

    // The list: the finished campaign's counts, and the other one's row follows its cancel.
    show(&mut browser, "#/campaigns").await;
    let finished = browser.text(&row(&id)).await;
    assert!(
        finished.contains("finished") && finished.contains("answered 1"),
        "{finished}"
    );
    let cancelled = api
        .post(&format!("/v1/campaigns/{other_id}/cancel"), &json!({}))
        .await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    browser
        .wait_for(
            "the other campaign's row cancelled",
            &format!(
                "document.querySelector({})?.dataset.state === 'cancelled'",
                json!(row(&other_id))
            ),
            WAIT,
        )
        .await;
    assert_eq!(browser.eval("window.notReloaded === true").await, true);
    // The refused pause is the one failed request the page may report.
    let problems: Vec<&String> = browser
        .problems
        .iter()
        .filter(|p| !(p.contains("409") && p.contains("/pause")))
        .collect();
    assert!(
        problems.is_empty(),
        "the page reported problems: {problems:?}"
    );
}
