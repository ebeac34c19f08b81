//! Debian's headless Chromium driven over the Chrome DevTools Protocol: one page, JavaScript
//! evaluated in it, screenshots, and every console error, uncaught exception and CSP violation
//! the page reports. The browser runs in its own process group with a throwaway profile, and
//! is killed with it when dropped. It resolves no host but 127.0.0.1 and has its background
//! networking (updates, sync, metrics, first-run pages) switched off.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::support::process::Proc;
use crate::support::tempdir;

/// Laptop screen, so screenshots show what an operator sees.
const WINDOW: (u32, u32) = (1440, 900);

pub struct Browser {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    /// Console errors, uncaught exceptions and browser log errors (CSP violations, failed
    /// loads), in the order they arrived.
    pub problems: Vec<String>,
    // Declared after the socket and before the profile: the process dies before its profile
    // folder is removed.
    _process: Proc,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Start `chromium` with about:blank and attach to that page.
    pub async fn launch() -> Browser {
        Self::launch_with(&[]).await
    }

    /// A browser for web calls: its microphone plays the WAV file `mic` (over and over), pages
    /// may use it without asking, may play sound without a gesture of their own, and peer
    /// connections may use 127.0.0.1 (Chromium gathers no loopback candidates otherwise).
    pub async fn launch_with_microphone(mic: &Path) -> Browser {
        Self::launch_with(&[
            "--use-fake-device-for-media-stream".into(),
            "--use-fake-ui-for-media-stream".into(),
            format!("--use-file-for-fake-audio-capture={}", mic.display()),
            "--allow-loopback-in-peer-connection".into(),
            "--autoplay-policy=no-user-gesture-required".into(),
        ])
        .await
    }

    /// [`launch`](Self::launch) with more command-line switches.
    async fn launch_with(switches: &[String]) -> Browser {
        let profile = tempdir("chromium-profile");
        let log = std::fs::File::create(profile.path().join("chromium.log")).unwrap();
        let process = Proc::spawn(
            "chromium",
            Command::new("chromium")
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--remote-debugging-address=127.0.0.1",
                    // Port 0: Chromium picks one and writes it to DevToolsActivePort.
                    "--remote-debugging-port=0",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-default-apps",
                    "--disable-sync",
                    "--disable-extensions",
                    "--metrics-recording-only",
                    "--disable-breakpad",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    &format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                ])
                .args(switches)
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        );
        let port = wait_for_port(profile.path());
        let list = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
            .await
            .expect("DevTools /json/list")
            .text()
            .await
            .expect("DevTools target list");
        let targets: Value = serde_json::from_str(&list).expect("DevTools target list is JSON");
        let page = targets
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap_or_else(|| panic!("no page target: {targets}"))
            .to_string();
        let (ws, _) = tokio_tungstenite::connect_async(page.as_str())
            .await
            .expect("DevTools websocket");
        let mut browser = Browser {
            ws,
            next_id: 0,
            problems: Vec::new(),
            _process: process,
            profile,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            browser.call(domain, json!({})).await;
        }
        browser
    }

    /// Send one command and wait for its result, collecting the events that arrive meanwhile.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to DevTools");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("DevTools did not answer {method}"))
                .unwrap_or_else(|| panic!("DevTools closed during {method}: {}", self.log()))
                .expect("DevTools websocket");
            let Message::Text(text) = frame else { continue };
            let msg: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if msg["id"] == id {
                if let Some(err) = msg.get("error") {
                    panic!("{method} failed: {err}");
                }
                return msg["result"].clone();
            }
            self.note(&msg);
        }
    }

    fn note(&mut self, event: &Value) {
        let p = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"]
                    .as_str()
                    .or(d["text"].as_str())
                    .unwrap_or_default();
                self.problems.push(format!("exception: {text}"));
            }
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                let args: Vec<String> = p["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .map_or_else(|| a.to_string(), String::from)
                    })
                    .collect();
                self.problems
                    .push(format!("console.error: {}", args.join(" ")));
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => {
                let e = &p["entry"];
                self.problems.push(format!(
                    "{}: {} {}",
                    e["source"].as_str().unwrap_or_default(),
                    e["text"].as_str().unwrap_or_default(),
                    e["url"].as_str().unwrap_or_default()
                ));
            }
            _ => {}
        }
    }

    /// Open `url` and wait until its document has loaded.
    pub async fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url})).await;
        assert!(r.get("errorText").is_none(), "navigate to {url}: {r}");
        self.wait_for(
            "the document loaded",
            "document.readyState === 'complete'",
            Duration::from_secs(20),
        )
        .await;
    }

    /// The value of a JavaScript expression (promises awaited); panics on a thrown exception.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        r["result"]["value"].clone()
    }

    /// The text of the first element `selector` matches (empty when none does).
    pub async fn text(&mut self, selector: &str) -> String {
        let text = self
            .eval(&format!(
                "document.querySelector({selector:?})?.innerText ?? ''"
            ))
            .await;
        text.as_str().unwrap_or_default().to_string()
    }

    /// Poll `expression` until it is truthy and return its value; on timeout, panic with `what`
    /// and the text the page shows.
    pub async fn wait_for(&mut self, what: &str, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(expression).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let page = self
                    .eval("location.href + '\\n' + (document.body ? document.body.innerText : '')")
                    .await;
                panic!(
                    "timed out waiting for {what} ({expression}); problems {:?}; page:\n{}",
                    self.problems,
                    page.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Click the first element matching `selector` (it must exist).
    pub async fn click(&mut self, selector: &str) {
        let sel = json!(selector);
        let found = self
            .eval(&format!(
                "(() => {{ const el = document.querySelector({sel}); if (el) el.click(); return !!el; }})()"
            ))
            .await;
        assert_eq!(found, true, "nothing to click at {selector}");
    }

    /// Set the value of the input at `selector` as if typed.
    pub async fn fill(&mut self, selector: &str, text: &str) {
        let (sel, text) = (json!(selector), json!(text));
        let found = self
            .eval(&format!(
                "(() => {{ const el = document.querySelector({sel}); if (!el) return false; \
                 el.value = {text}; el.dispatchEvent(new Event('input', {{bubbles: true}})); \
                 return true; }})()"
            ))
            .await;
        assert_eq!(found, true, "no input at {selector}");
    }

    /// Submit the form at `selector` the way its submit button would.
    pub async fn submit(&mut self, selector: &str) {
        let sel = json!(selector);
        let found = self
            .eval(&format!(
                "(() => {{ const f = document.querySelector({sel}); if (f) f.requestSubmit(); return !!f; }})()"
            ))
            .await;
        assert_eq!(found, true, "no form at {selector}");
    }

    /// A PNG of the whole page (beyond the window when it is taller), written to `path`.
    pub async fn screenshot(&mut self, path: &Path) {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// What Chromium printed (for failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }
}

/// Chromium writes its DevTools port as the first line of DevToolsActivePort once it listens.
fn wait_for_port(profile: &Path) -> u16 {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(port) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse().ok())
        {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "Chromium did not open its DevTools port: {}",
            std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
