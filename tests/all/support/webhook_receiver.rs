//! A webhook receiver on 127.0.0.1, as an operator's system would run one: it checks every
//! delivery's Standard Webhooks signature with `WebhookSecret::verify`, records what it got, and
//! can be told to refuse connections (not listening yet), answer an error status, hang (never
//! answer), or accept (204).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use switchboard::webhooks::WebhookSecret;
use tokio::net::TcpListener;

use crate::support::ports::free_port;
use crate::support::rest_fake::{self, Reply, Request};

/// The secret the tests configure (base64 of "switchboard-webhook-test-key-01").
pub const SECRET: &str = "whsec_c3dpdGNoYm9hcmQtd2ViaG9vay10ZXN0LWtleS0wMQ==";

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 204 No Content.
    Accept,
    /// This status (e.g. "500 Internal Server Error").
    Fail(&'static str),
    /// No answer for an hour.
    Hang,
    /// Takes each delivery (recorded as accepted) but answers its first attempt only after
    /// this long, as a receiver that processed it and then was slow to say so: past the
    /// sender's timeout, the delivery comes again.
    AcceptLateOnce(Duration),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub id: String,
    pub timestamp: String,
    /// Whether the signature matched the body (`WebhookSecret::verify`).
    pub signed: bool,
    pub body: Value,
    /// What the receiver answered.
    pub mode: Mode,
}

impl Got {
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    /// Whether the receiver took (processed) this delivery.
    pub fn taken(&self) -> bool {
        matches!(self.mode, Mode::Accept | Mode::AcceptLateOnce(_))
    }

    pub fn call_id(&self) -> &str {
        self.body["data"]["call_id"].as_str().unwrap_or_default()
    }
}

struct State {
    mode: Mode,
    got: Vec<Got>,
}

pub struct Receiver {
    pub port: u16,
    state: Arc<Mutex<State>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver on a reserved port, not listening yet (connections are refused).
    pub fn reserve(mode: Mode) -> Receiver {
        Receiver {
            port: free_port(),
            state: Arc::new(Mutex::new(State {
                mode,
                got: Vec::new(),
            })),
            server: None,
        }
    }

    /// A receiver listening now.
    pub async fn start(mode: Mode) -> Receiver {
        let mut r = Receiver::reserve(mode);
        r.listen().await;
        r
    }

    /// The URL to configure.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// Starts listening on the reserved port.
    pub async fn listen(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the receiver's port");
        let state = self.state.clone();
        let secret = WebhookSecret::new(SECRET).unwrap();
        let answer = Arc::new(move |req: Request| answer(&state, &secret, req));
        self.server = Some(tokio::spawn(rest_fake::serve(listener, answer)));
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Everything received so far, in arrival order.
    pub fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    /// The deliveries taken, once each by `webhook-id` (a receiver's dedup), in arrival order.
    pub fn accepted(&self) -> Vec<Got> {
        let mut seen = std::collections::HashSet::new();
        self.got()
            .into_iter()
            .filter(|g| g.taken() && seen.insert(g.id.clone()))
            .collect()
    }

    /// Waits until `done` holds for what was received, at most `timeout`.
    pub async fn wait(&self, timeout: Duration, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.got();
            if done(&got) || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

fn answer(state: &Mutex<State>, secret: &WebhookSecret, req: Request) -> Reply {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = secret
        .verify(
            id.as_deref(),
            timestamp.as_deref(),
            signature.as_deref(),
            &req.body,
            now,
        )
        .is_ok();
    let mut state = state.lock().unwrap();
    let id_text = id.clone().unwrap_or_default();
    let mode = match state.mode {
        Mode::AcceptLateOnce(_) if state.got.iter().any(|g| g.id == id_text) => Mode::Accept,
        mode => mode,
    };
    state.got.push(Got {
        id: id.unwrap_or_default(),
        timestamp: timestamp.unwrap_or_default(),
        signed,
        body: serde_json::from_slice(&req.body).unwrap_or(Value::Null),
        mode,
    });
    match mode {
        Mode::Accept => ("204 No Content", Value::Null).into(),
        Mode::Fail(status) => (status, serde_json::json!({"error": "down"})).into(),
        Mode::Hang => Reply {
            status: "204 No Content",
            body: Value::Null,
            after: Some(Duration::from_secs(3600)),
        },
        Mode::AcceptLateOnce(late) => Reply {
            status: "204 No Content",
            body: Value::Null,
            after: Some(late),
        },
    }
}
