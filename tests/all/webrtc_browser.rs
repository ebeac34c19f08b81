//! Web calls from a real browser (Debian's headless Chromium over the DevTools protocol, its
//! microphone a WAV file) to the running binary, with a host candidate on 127.0.0.1: the
//! dashboard's Talk button calls the receptionist on the OpenAI fake (greeting heard, the
//! page's speech reaching the model, a tool call, the live transcript, a key press, the record
//! saying `webrtc`); the embeddable widget on a page of another origin calls the menu with a
//! ticket through the public listener, and is refused with an expired ticket or one for another
//! number; the appointments agent greets a phone caller by caller ID and asks a web caller who
//! is calling; without `[webrtc]` the Talk panel says web calls are off.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::api::{Api, agent_lines, ended, events_of, find};
use crate::support::baresip::Baresip;
use crate::support::browser::Browser;
use crate::support::calls::{dial, espeak_at};
use crate::support::fake_openai::{FakeOpenAi, Reply, Script};
use crate::support::host::Host;
use crate::support::media::write_wav;
use crate::support::ports::{Ports, ports};
use crate::support::process::require;
use crate::support::rest_fake::read_request;
use crate::support::tempdir;

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "tok-Web-7d31a0";
/// The browser's microphone rate (Chromium's own capture rate: nothing to resample).
const MIC_RATE: u32 = 48_000;
/// UDP ports of the host's web calls (one per call).
const UDP_PORTS: u16 = 8;

/// The `[webrtc]` table: the ICE host candidate on 127.0.0.1, web calls on `udp`, and the
/// origins whose pages may post offers to the public listener.
fn webrtc_table(udp: &Ports, origins: &[&str]) -> String {
    format!(
        "[webrtc]\npublic-ip = \"127.0.0.1\"\nports = [{}, {}]\nallowed-origins = {}\n",
        udp.first(),
        udp.last(),
        json!(origins)
    )
}

/// A microphone track at 48 kHz in `dir`: `lead` seconds of silence, `text` spoken by
/// espeak-ng, `tail` seconds of silence (Chromium plays it in a loop). No text: silence.
fn microphone(dir: &Path, text: Option<&str>, lead: f64, tail: f64) -> PathBuf {
    let silence = |secs: f64| vec![0i16; (secs * f64::from(MIC_RATE)) as usize];
    let mut track = silence(lead);
    if let Some(text) = text {
        track.extend(espeak_at(text, MIC_RATE));
    }
    track.extend(silence(tail));
    let path = dir.join("mic.wav");
    write_wav(&path, MIC_RATE, &track);
    path
}

/// A JS expression: whether the talk panel's transcript has a `role` line containing `text`.
fn said(role: &str, text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#talk-transcript .line.{role}')]\
           .some(l => l.textContent.includes({}))",
        json!(text)
    )
}

/// A JS expression: whether the talk panel shows the call in `state`.
fn talk_state(state: &str) -> String {
    format!(
        "document.querySelector('#talk')?.dataset.state === {}",
        json!(state)
    )
}

/// Open the dashboard's agents view and start a web call to `agent` with its Talk button;
/// returns the call's id once the call is connected.
async fn talk_to(browser: &mut Browser, host: &Host, agent: &str) -> String {
    browser
        .navigate(&format!("http://{}/#/agents", host.http))
        .await;
    let button = format!("#agents tr[data-name={}] button.talk", json!(agent));
    browser
        .wait_for(
            "the agent's Talk button",
            &format!("!!document.querySelector({})", json!(button)),
            WAIT,
        )
        .await;
    browser.click(&button).await;
    browser
        .wait_for("the web call connected", &talk_state("connected"), WAIT)
        .await;
    let id = browser.text("#talk-call").await;
    assert!(!id.is_empty() && id != "—", "no call id in the panel");
    id
}

async fn press(browser: &mut Browser, keys: &str) {
    for key in keys.chars() {
        browser
            .click(&format!(
                "#talk-keypad button[data-key={}]",
                json!(key.to_string())
            ))
            .await;
    }
}

/// The stored record of call `id` once it has ended.
async fn stored(api: &Api, id: &str) -> Value {
    ended(api, id).await;
    api.get(&format!("/v1/calls/{id}")).await.json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_talks_to_the_receptionist_on_openai() {
    if !require("chromium") || !require("espeak-ng") || !require("sox") {
        return;
    }
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        replies: vec![
            Reply::Echo,
            Reply::ToolCall {
                name: "opening_hours".into(),
                arguments: "{}".into(),
            },
            Reply::Speech {
                transcript: "We are open Monday to Friday from nine to five.".into(),
                audio_ms: 2000,
            },
        ],
        caller_transcript: "When are you open?".into(),
        ..Script::default()
    })
    .await;
    let udp = ports(UDP_PORTS);
    let host = Host::builder()
        .examples(&["receptionist"])
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            fake.url
        ))
        .config(&webrtc_table(&udp, &[]))
        .start();
    // The greeting (3.6 s) plays first; the question comes 7 s into the microphone's track.
    let dir = tempdir("webrtc-mic");
    let mic = microphone(dir.path(), Some("When are you open?"), 7.0, 8.0);
    let mut browser = Browser::launch_with_microphone(&mic).await;
    let id = talk_to(&mut browser, &host, "receptionist").await;

    // The greeting is heard in the page: received audio with energy, and its words.
    browser
        .wait_for(
            "the greeting's audio received",
            "Number(document.querySelector('#talk').dataset.energy) > 0.01",
            WAIT,
        )
        .await;
    browser
        .wait_for(
            "the greeting in the live transcript",
            &said("agent", "Thank you for calling"),
            WAIT,
        )
        .await;
    // The page's speech reaches the model, whose turn calls a tool and answers.
    browser
        .wait_for(
            "the question, the tool call and the answer",
            &format!(
                "{} && !!document.querySelector('#talk-events [data-kind=\"tool-call\"]') && {}",
                said("caller", "When are you open?"),
                said("agent", "We are open Monday")
            ),
            Duration::from_secs(40),
        )
        .await;
    press(&mut browser, "5").await;
    browser
        .wait_for(
            "the key press as an event of the call",
            "!!document.querySelector('#talk-events [data-kind=\"dtmf\"]')",
            WAIT,
        )
        .await;
    browser.click("#talk-hangup").await;
    browser
        .wait_for("the call ended", &talk_state("ended"), WAIT)
        .await;

    // The model heard the page and got the agent's tool result.
    let energy = browser
        .eval("document.querySelector('#talk').dataset.energy")
        .await;
    eprintln!(
        "received audio energy {energy}; {} bytes of the page's audio reached the model",
        fake.appended_bytes()
    );
    assert!(fake.appended_bytes() > 0, "no audio reached the model");
    let outputs = fake.received_of("conversation.item.create");
    let output = outputs
        .iter()
        .find(|e| e["item"]["type"] == "function_call_output")
        .unwrap_or_else(|| panic!("no function_call_output: {outputs:?}"));
    assert!(
        output["item"]["output"]
            .as_str()
            .unwrap()
            .contains("Monday to Friday"),
        "{output}"
    );

    let api = Api::new(host.http, None);
    let record = stored(&api, &id).await;
    assert_eq!(record["call"]["transport"], "webrtc", "{record}");
    let events = events_of(&record);
    assert_eq!(find(&events, "created")[0]["transport"], "webrtc");
    assert_eq!(find(&events, "tool-call")[0]["name"], "opening_hours");
    let keys: Vec<&Value> = find(&events, "dtmf")
        .into_iter()
        .map(|d| &d["digits"])
        .collect();
    assert_eq!(keys, [&json!("5")], "{events:?}");
    assert!(
        browser.problems.is_empty(),
        "the page reported problems: {:?}",
        browser.problems
    );
}

/// The embedding site: `html` at every path, under a CSP that lets the page load scripts from
/// and connect to the Switchboard host `widget_origin` only (nothing inline).
async fn serve_page(listener: TcpListener, html: String, widget_origin: String) {
    let csp = format!(
        "default-src 'none'; script-src {widget_origin}; connect-src {widget_origin}; \
         img-src data:; base-uri 'none'; form-action 'none'"
    );
    while let Ok((stream, _)) = listener.accept().await {
        let (html, csp) = (html.clone(), csp.clone());
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            while read_request(&mut stream).await.is_some() {
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                     content-security-policy: {csp}\r\ncontent-length: {}\r\n\r\n{html}",
                    html.len()
                );
                if stream
                    .get_mut()
                    .write_all(response.as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

/// Mints a ticket for `number` valid `ttl_secs`; returns it and when it expires (Unix ms).
async fn ticket(api: &Api, number: &str, ttl_secs: u64) -> (String, u64) {
    let r = api
        .post(
            "/v1/webrtc/tickets",
            &json!({"number": number, "ttl-secs": ttl_secs}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["number"], number);
    (
        r.json["ticket"].as_str().unwrap().to_string(),
        r.json["expires-at-ms"].as_u64().unwrap(),
    )
}

/// A JS expression: the widget in `#id` in `state`.
fn widget_state(id: &str, state: &str) -> String {
    format!(
        "document.querySelector('#{id}').dataset.switchboardState === {}",
        json!(state)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_calls_the_menu_with_a_ticket_and_refuses_bad_ones() {
    if !require("chromium") {
        return;
    }
    let page = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", page.local_addr().unwrap());
    let public = ports(1);
    let widget_origin = format!("http://127.0.0.1:{}", public.first());
    let udp = ports(UDP_PORTS);
    let host = Host::builder()
        .examples(&["menu", "receptionist"])
        .http(&format!(
            "tokens = [\"{TOKEN}\"]\n[http.public]\nlisten = \"127.0.0.1:{}\"\n\
             public-url = \"{widget_origin}\"",
            public.first()
        ))
        .config(&webrtc_table(&udp, &[&origin]))
        .start();
    let api = Api::new(host.http, Some(TOKEN));
    let (good, _) = ticket(&api, "1000", 300).await;
    let (expired, expires_at_ms) = ticket(&api, "1000", 1).await;
    let (other, _) = ticket(&api, "2000", 300).await;

    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Clinic</title>\
         <link rel=\"icon\" href=\"data:,\">\
         <script src=\"{widget_origin}/webrtc/widget.js\" defer></script></head>\n<body>\
         <h1>Talk to us</h1>\
         <div id=\"good\" data-switchboard-number=\"1000\" data-switchboard-ticket=\"{good}\"></div>\
         <div id=\"expired\" data-switchboard-number=\"1000\" data-switchboard-ticket=\"{expired}\"></div>\
         <div id=\"other\" data-switchboard-number=\"1000\" data-switchboard-ticket=\"{other}\"></div>\
         </body></html>\n"
    );
    let server = tokio::spawn(serve_page(page, html, widget_origin.clone()));
    let dir = tempdir("webrtc-mic");
    let mut browser =
        Browser::launch_with_microphone(&microphone(dir.path(), None, 1.0, 0.0)).await;
    browser.navigate(&format!("{origin}/")).await;
    browser
        .wait_for(
            "the widget's call buttons",
            "document.querySelectorAll('button.switchboard-call').length === 3",
            WAIT,
        )
        .await;

    // A good ticket: the call connects, the greeting is heard, a key reaches the agent.
    browser.click("#good button").await;
    browser
        .wait_for(
            "the call connected",
            &widget_state("good", "connected"),
            WAIT,
        )
        .await;
    let id = browser.eval("Switchboard.calls[0].callId").await;
    let id = id.as_str().expect("a call id").to_string();
    let heard = browser
        .wait_for(
            "the greeting's audio received",
            "Switchboard.calls[0].stats().then(s => (s.received?.energy ?? 0) > 0.01 && s)",
            WAIT,
        )
        .await;
    eprintln!("the widget's call: {heard}");
    assert_eq!(browser.eval("Switchboard.calls[0].key('1')").await, true);
    api.poll(&format!("/v1/calls/{id}"), WAIT, |d| {
        d["transcript"].as_array().is_some_and(|t| {
            t.iter()
                .any(|l| l["text"].as_str().unwrap_or("").contains("We are open"))
        })
    })
    .await;
    browser.click("#good button").await;
    browser
        .wait_for("the call hung up", &widget_state("good", "ended"), WAIT)
        .await;
    let record = stored(&api, &id).await;
    assert_eq!(record["call"]["transport"], "webrtc", "{record}");
    let events = events_of(&record);
    assert_eq!(find(&events, "dtmf")[0]["digits"], "1", "{events:?}");
    assert!(agent_lines(&record)[0].contains("Welcome to"), "{record}");

    // An expired ticket, a ticket for another number and a used one: refused, and the page
    // says why.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(
        expires_at_ms.saturating_sub(now_ms) + 500,
    ))
    .await;
    for (refused, why) in [
        ("expired", "the ticket has expired"),
        ("other", "the ticket is for another number"),
        ("good", "the ticket has been used for all its calls"),
    ] {
        browser.click(&format!("#{refused} button")).await;
        browser
            .wait_for(
                &format!("the {refused} ticket refused"),
                &widget_state(refused, "failed"),
                WAIT,
            )
            .await;
        let status = browser
            .eval(&format!(
                "document.querySelector('#{refused}').dataset.switchboardStatus"
            ))
            .await;
        assert_eq!(status, "403", "the {refused} ticket");
        let shown = browser
            .text(&format!("#{refused} .switchboard-status"))
            .await;
        assert_eq!(shown, format!("Call failed: refused (403): {why}"));
    }
    assert_eq!(
        api.get("/v1/calls?active=false").await.json["calls"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "the refused offers made no call"
    );
    // The refused offers are the only complaints.
    let others: Vec<&String> = browser
        .problems
        .iter()
        .filter(|p| !p.contains("403"))
        .collect();
    assert!(others.is_empty(), "the page reported problems: {others:?}");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appointments_agent_tells_web_from_phone_callers() {
    if !require("chromium") || !require("baresip") {
        return;
    }
    let udp = ports(UDP_PORTS);
    let mut host = Host::builder()
        .examples(&["appointments"])
        .config(&webrtc_table(&udp, &[]))
        .start();
    let api = Api::new(host.http, None);

    // On the phone, the caller ID finds the patient: the greeting names them.
    let phone = Baresip::start("<sip:1001@127.0.0.1>;regint=0").await;
    let mut ctrl = dial(&phone, "3000", host.sip_port).await;
    host.expect(&["Transcript", "Agent", "Hello Jordan"], 20);
    ctrl.command("hangup", "").await;
    host.expect(&["call ended"], 10);
    let calls = api
        .poll("/v1/calls?active=false", WAIT, |l| {
            l["calls"].as_array().is_some_and(|c| c.len() == 1)
        })
        .await;
    let phone_id = calls["calls"][0]["id"].as_str().unwrap().to_string();
    let phone_call = stored(&api, &phone_id).await;
    assert_ne!(phone_call["call"]["transport"], "webrtc");
    let greeting = &agent_lines(&phone_call)[0];
    assert!(
        greeting.starts_with("Hello Jordan") && greeting.contains("0 to speak to the front desk"),
        "{greeting}"
    );

    // On the web there is no caller ID: the agent asks, the caller types the number.
    let dir = tempdir("webrtc-mic");
    let mut browser =
        Browser::launch_with_microphone(&microphone(dir.path(), None, 1.0, 0.0)).await;
    let id = talk_to(&mut browser, &host, "appointments").await;
    browser
        .wait_for(
            "the web greeting",
            &said("agent", "Who am I speaking with?"),
            WAIT,
        )
        .await;
    press(&mut browser, "1001#").await;
    browser
        .wait_for(
            "the appointment found by the typed number",
            &said("agent", "Thank you, Jordan."),
            WAIT,
        )
        .await;
    press(&mut browser, "1").await;
    browser
        .wait_for(
            "the confirmation, and the agent hanging up",
            &format!(
                "{} && {}",
                said("agent", "is confirmed"),
                talk_state("ended")
            ),
            Duration::from_secs(30),
        )
        .await;
    // The page got the call's `ended` event with the host's reason, not only the close.
    let reason = browser
        .eval("document.querySelector('#talk').dataset.reason")
        .await;

    let web_call = stored(&api, &id).await;
    assert_eq!(web_call["call"]["transport"], "webrtc", "{web_call}");
    assert_eq!(reason, "agent-hangup");
    assert_eq!(web_call["call"]["end_reason"], reason, "{web_call}");
    let lines = agent_lines(&web_call);
    assert!(
        lines[0].contains("Who am I speaking with?") && !lines[0].contains("Jordan"),
        "{lines:?}"
    );
    let keys: String = find(&events_of(&web_call), "dtmf")
        .iter()
        .filter_map(|d| d["digits"].as_str())
        .collect();
    assert_eq!(keys, "1001#1");
    assert!(
        browser.problems.is_empty(),
        "the page reported problems: {:?}",
        browser.problems
    );
    assert!(host.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_may_not_send_udp_calls_over_ice_tcp() {
    if !require("chromium") {
        return;
    }
    let udp = ports(UDP_PORTS);
    let tcp = ports(1);
    let mut host = Host::builder()
        .examples(&["menu"])
        .config(&format!(
            "{}tcp-port = {}\n",
            webrtc_table(&udp, &[]),
            tcp.first()
        ))
        .start();
    let dir = tempdir("webrtc-mic");
    let mut browser = Browser::launch_without_udp(&microphone(dir.path(), None, 1.0, 0.0)).await;
    let id = talk_to(&mut browser, &host, "menu").await;
    host.expect(&["web call connected over TCP"], 10);
    browser
        .wait_for(
            "the greeting's audio received",
            "Number(document.querySelector('#talk').dataset.energy) > 0.01",
            WAIT,
        )
        .await;
    browser
        .wait_for("the greeting's words", &said("agent", "Welcome to"), WAIT)
        .await;
    press(&mut browser, "1").await;
    browser.click("#talk-hangup").await;
    browser
        .wait_for("the call ended", &talk_state("ended"), WAIT)
        .await;
    let api = Api::new(host.http, None);
    let record = stored(&api, &id).await;
    assert_eq!(record["call"]["transport"], "webrtc", "{record}");
    let events = events_of(&record);
    let keys: Vec<&Value> = find(&events, "dtmf")
        .into_iter()
        .map(|d| &d["digits"])
        .collect();
    assert_eq!(keys, [&json!("1")], "{record}");
    assert!(
        browser.problems.is_empty(),
        "the page reported problems: {:?}",
        browser.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_talk_panel_says_when_web_calls_are_off() {
    if !require("chromium") {
        return;
    }
    let host = Host::builder().examples(&["menu"]).start();
    let dir = tempdir("webrtc-mic");
    let mut browser =
        Browser::launch_with_microphone(&microphone(dir.path(), None, 1.0, 0.0)).await;
    browser
        .navigate(&format!("http://{}/#/agents", host.http))
        .await;
    let button = "#agents tr[data-name=\"menu\"] button.talk";
    browser
        .wait_for(
            "the menu's Talk button",
            &format!("!!document.querySelector({})", json!(button)),
            WAIT,
        )
        .await;
    browser.click(button).await;
    browser
        .wait_for("the refusal", &talk_state("failed"), WAIT)
        .await;
    assert_eq!(
        browser
            .eval("document.querySelector('#talk').dataset.status")
            .await,
        "503"
    );
    let shown = browser.text("#talk-error").await;
    assert!(
        shown.starts_with("refused (503): ") && shown.contains("web calls are off"),
        "{shown}"
    );
    let others: Vec<&String> = browser
        .problems
        .iter()
        .filter(|p| !p.contains("503"))
        .collect();
    assert!(others.is_empty(), "the page reported problems: {others:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_call_is_handed_from_the_receptionist_to_appointments() {
    if !require("chromium") || !require("espeak-ng") || !require("sox") {
        return;
    }
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        ..Script::default()
    })
    .await;
    let udp = ports(UDP_PORTS);
    let host = Host::builder()
        .examples(&["receptionist", "appointments"])
        .model(&format!(
            "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
            fake.url
        ))
        .config(&webrtc_table(&udp, &[]))
        .start();
    let dir = tempdir("webrtc-mic");
    let mic = microphone(dir.path(), None, 30.0, 0.0);
    let mut browser = Browser::launch_with_microphone(&mic).await;
    let id = talk_to(&mut browser, &host, "receptionist").await;
    browser
        .wait_for(
            "the greeting",
            &said("agent", "Thank you for calling"),
            WAIT,
        )
        .await;
    // A web call cannot be transferred to a phone, but it can move to another agent: key 2.
    press(&mut browser, "2").await;
    browser
        .wait_for(
            "the appointments desk greeting the web caller",
            &said("agent", "I have your details from reception"),
            WAIT,
        )
        .await;
    browser.click("#talk-hangup").await;
    browser
        .wait_for("the call ended", &talk_state("ended"), WAIT)
        .await;

    let api = Api::new(host.http, None);
    let record = stored(&api, &id).await;
    assert_eq!(record["call"]["transport"], "webrtc", "{record}");
    assert_eq!(record["call"]["agent"], "appointments", "{record}");
    let events = events_of(&record);
    let statuses: Vec<&Value> = find(&events, "handoff")
        .into_iter()
        .map(|h| &h["status"])
        .collect();
    assert_eq!(
        statuses,
        [
            &json!("requested"),
            &json!("handed-off"),
            &json!("greeting-heard")
        ],
        "{events:?}"
    );
    // The web caller has no caller ID: appointments asks who is calling.
    let lines = agent_lines(&record);
    assert!(
        lines.iter().any(|l| l.contains("Who am I speaking with?")),
        "{lines:?}"
    );
    assert!(
        browser.problems.is_empty(),
        "the page reported problems: {:?}",
        browser.problems
    );
}
