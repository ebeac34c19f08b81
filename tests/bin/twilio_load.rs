//! Twilio as a load: N concurrent inbound calls at a voice webhook, each played on its media
//! stream as Twilio plays a phone call (the wire formats of support/twilio_wire.rs, the speaker
//! of support/speaker.rs): the form POST (signed when an auth token is given), the TwiML's
//! `<Connect><Stream>`, `connected`, `start`, a 20 ms μ-law `media` frame every 20 ms from the
//! given audio (looped), marks echoed once their audio has played, `clear` honoured, `stop`
//! after the call length. A process of its own so that its CPU is not the server's.
//!
//! With `--epoch-ns` (CLOCK_MONOTONIC of the stamp epoch) every frame sent carries a send-time
//! stamp, and the first frame of every talkspurt received is read for one: that is the server's
//! model in → stream out latency when the model's stamped audio crosses it unchanged.
//!
//! `twilio-load --webhook URL --calls N --secs S --audio FILE.ulaw [--ramp-ms MS]
//!  [--auth-token T] [--account-sid AC…] [--to 2000] [--epoch-ns NS]`
//! prints `opened K of N` once every call has opened its stream (or failed to), then one JSON
//! line with what the calls saw: failures and where, counts, stamped latencies, where in its
//! audio the caller was when each talkspurt began (`talkspurt_at_ms`), audio heard per call.
//! 127.0.0.1 only; bounded by `--calls` and `--secs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The test helpers this program shares with the test binary, mounted at the same paths; it
/// uses only part of them.
#[allow(dead_code, unused_imports)]
#[path = "../all/support"]
mod support {
    pub mod load_args;
    pub mod model_audio;
    pub mod speaker;
    pub mod twilio_wire;
}

use support::load_args::{Load, LoadArgs};
use support::model_audio::{STAMP_LEN, epoch_from_monotonic_ns, since_stamp, stamp};
use support::speaker::Speaker;
use support::twilio_wire::{
    StreamMessages, encode_form, hmac_sha1_b64, sid, signature, stream_of, voice_params,
};

/// Calls at most, and seconds a call at most: a load, not a flood.
const MAX_CALLS: u32 = 1000;
const MAX_SECS: u64 = 600;

struct Args {
    webhook: String,
    calls: u32,
    secs: u64,
    ramp: Duration,
    audio: Vec<u8>,
    auth_token: Option<String>,
    account_sid: String,
    to: String,
    epoch: Option<Instant>,
}

fn args() -> Args {
    let args = LoadArgs::from_env();
    let Load {
        target: webhook,
        calls,
        secs,
        ramp,
        audio,
    } = args.load("webhook", MAX_CALLS, MAX_SECS);
    assert!(
        audio.len() >= 160,
        "at least one 20 ms frame of μ-law audio"
    );
    Args {
        webhook,
        calls,
        secs,
        ramp,
        audio,
        auth_token: args.get("auth-token"),
        account_sid: args
            .get("account-sid")
            .unwrap_or_else(|| format!("AC{:032x}", 0x10ad)),
        to: args.get("to").unwrap_or_else(|| "2000".into()),
        epoch: args
            .get("epoch-ns")
            .map(|v| epoch_from_monotonic_ns(v.parse().expect("--epoch-ns"))),
    }
}

/// What one call saw.
#[derive(Default)]
struct Seen {
    /// Where the call broke, if it did.
    failure: Option<String>,
    media_received: u64,
    marks_echoed: u64,
    clears: u64,
    /// Model in → stream out of each stamped talkspurt start, in order (the first is the
    /// greeting).
    talkspurts: Vec<Duration>,
    /// Where in the looped audio the caller was (ms) when each talkspurt began.
    talkspurt_at: Vec<u64>,
    /// μ-law bytes received.
    heard: usize,
    /// μ-law bytes the speaker has still to play: 0 when a talkspurt begins.
    unplayed: usize,
    /// The caller's position in its audio (ms since the start of the loop).
    position_ms: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Arc::new(args());
    let http = reqwest::Client::new();
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let calls: Vec<_> = (0..args.calls)
        .map(|n| {
            let (args, http, opened) = (args.clone(), http.clone(), opened_tx.clone());
            tokio::spawn(async move {
                // Spread the call setups over the ramp, as a burst of real calls would be.
                tokio::time::sleep(args.ramp * n / args.calls.max(1)).await;
                // A server that stops reading blocks a send: such a call ends here.
                let limit = SETUP_LIMIT + Duration::from_secs(args.secs + 10);
                tokio::time::timeout(limit, call(&args, &http, opened))
                    .await
                    .unwrap_or_else(|_| Seen {
                        failure: Some(format!("stuck (the server stopped reading) past {limit:?}")),
                        ..Seen::default()
                    })
            })
        })
        .collect();
    drop(opened_tx);
    let mut opened = 0;
    let mut settled = 0;
    while let Some(ok) = opened_rx.recv().await {
        settled += 1;
        opened += u32::from(ok);
        if settled == args.calls {
            println!("opened {opened} of {}", args.calls);
        }
    }
    let mut failures = Vec::new();
    let (mut greetings, mut answers) = (Vec::new(), Vec::new());
    let (mut media, mut marks, mut clears) = (0, 0, 0);
    let (mut talkspurt_at, mut heard_s) = (Vec::new(), Vec::new());
    for (n, c) in calls.into_iter().enumerate() {
        let seen = c.await.expect("a call task");
        if let Some(f) = seen.failure {
            failures.push(format!("call {n}: {f}"));
        }
        media += seen.media_received;
        marks += seen.marks_echoed;
        clears += seen.clears;
        talkspurt_at.extend(seen.talkspurt_at);
        heard_s.push(seen.heard as f64 / 8000.0);
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        greetings.extend(seen.talkspurts.first().map(ms));
        answers.extend(seen.talkspurts.iter().skip(1).map(ms));
    }
    let report: Value = json!({
        "calls": args.calls, "opened": opened, "failures": failures,
        "media_received": media, "marks_echoed": marks, "clears": clears,
        "greeting_ms": greetings, "answer_ms": answers,
        "talkspurt_at_ms": talkspurt_at, "heard_s": heard_s,
    });
    println!("{report}");
}

/// How long a call's webhook and stream setup may take before it counts as failed.
const SETUP_LIMIT: Duration = Duration::from_secs(20);

/// Place one call and play it to its end; `opened` learns whether its stream started.
async fn call(
    args: &Args,
    http: &reqwest::Client,
    opened: tokio::sync::mpsc::UnboundedSender<bool>,
) -> Seen {
    let setup = Instant::now();
    let mut seen = Seen::default();
    let call_sid = sid("CA");
    let params = voice_params(&args.account_sid, &call_sid, "+14155550100", &args.to);
    let mut request = http
        .post(&args.webhook)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "TwilioProxy/1.1")
        .body(encode_form(&params));
    if let Some(token) = &args.auth_token {
        request = request.header(
            "x-twilio-signature",
            signature(token, &args.webhook, &params),
        );
    }
    let twiml = match request.timeout(SETUP_LIMIT).send().await {
        Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
        Ok(r) => return failed(seen, &opened, format!("webhook answered {}", r.status())),
        Err(e) => return failed(seen, &opened, format!("webhook: {e}")),
    };
    let Some((url, parameters)) = stream_of(&twiml) else {
        return failed(seen, &opened, format!("no <Stream> in the TwiML: {twiml}"));
    };
    let mut upgrade = url.as_str().into_client_request().expect("a stream URL");
    upgrade
        .headers_mut()
        .insert("user-agent", "Twilio.TmeWs/1.0".parse().unwrap());
    if let Some(token) = &args.auth_token {
        let sig = hmac_sha1_b64(token, &url);
        upgrade
            .headers_mut()
            .insert("x-twilio-signature", sig.parse().unwrap());
    }
    let left = SETUP_LIMIT.saturating_sub(setup.elapsed());
    // A media sender does not hold small frames back for Nagle's algorithm.
    let connect = tokio_tungstenite::connect_async_with_config(upgrade, None, true);
    let mut ws = match tokio::time::timeout(left, connect).await {
        Ok(Ok((ws, _))) => ws,
        Ok(Err(e)) => return failed(seen, &opened, format!("stream upgrade: {e}")),
        Err(_) => {
            return failed(
                seen,
                &opened,
                format!("stream upgrade: no answer in {SETUP_LIMIT:?}"),
            );
        }
    };
    let mut msgs = StreamMessages::new(&args.account_sid, &call_sid);
    let sent = async {
        ws.send(Message::text(msgs.connected())).await?;
        ws.send(Message::text(msgs.start(&parameters))).await
    };
    if let Err(e) = sent.await {
        return failed(seen, &opened, format!("stream start: {e}"));
    }
    let _ = opened.send(true);

    let started = Instant::now();
    let length = Duration::from_secs(args.secs);
    let mut speaker = Speaker::default();
    let mut heard = Vec::with_capacity(160);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut chunk = 0u64;
    let frames = args.audio.len() / 160;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if started.elapsed() >= length {
                    let _ = ws.send(Message::text(msgs.stop())).await;
                    let _ = ws.close(None).await;
                    break;
                }
                let at = (chunk as usize % frames) * 160;
                let mut frame = args.audio[at..at + 160].to_vec();
                if let Some(epoch) = args.epoch {
                    stamp(&mut frame, epoch);
                }
                chunk += 1;
                seen.position_ms = (chunk * 20) % (frames as u64 * 20);
                if let Err(e) = ws.send(Message::text(msgs.media(chunk, &frame))).await {
                    seen.failure = Some(format!("stream send at {:.1} s: {e}", started.elapsed().as_secs_f64()));
                    break;
                }
                heard.clear();
                seen.unplayed = seen.unplayed.saturating_sub(160);
                for name in speaker.play(160, &mut heard) {
                    seen.marks_echoed += 1;
                    let _ = ws.send(Message::text(msgs.mark(&name))).await;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    for name in on_server_frame(&text, args.epoch, &mut speaker, &mut seen) {
                        seen.marks_echoed += 1;
                        let _ = ws.send(Message::text(msgs.mark(&name))).await;
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    seen.failure = Some(format!("the server closed the stream at {:.1} s", started.elapsed().as_secs_f64()));
                    break;
                }
                Some(Err(e)) => {
                    seen.failure = Some(format!("stream error at {:.1} s: {e}", started.elapsed().as_secs_f64()));
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    if seen.failure.is_none() && seen.media_received == 0 {
        seen.failure = Some("no audio from the server".into());
    }
    seen
}

fn failed(mut seen: Seen, opened: &tokio::sync::mpsc::UnboundedSender<bool>, why: String) -> Seen {
    let _ = opened.send(false);
    seen.failure = Some(why);
    seen
}

/// One frame from the server (Twilio's "our server → Twilio" messages); marks to echo now.
fn on_server_frame(
    text: &str,
    epoch: Option<Instant>,
    speaker: &mut Speaker,
    seen: &mut Seen,
) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    match v["event"].as_str() {
        Some("media") => {
            let Some(Ok(audio)) = v["media"]["payload"].as_str().map(|p| B64.decode(p)) else {
                return Vec::new();
            };
            seen.media_received += 1;
            seen.heard += audio.len();
            if seen.unplayed == 0 {
                seen.talkspurt_at.push(seen.position_ms);
            }
            // A talkspurt starts with a stamp when the model's audio crossed the server as is;
            // μ-law silence reads as a stamp too, so only a recent one counts.
            if let Some(epoch) = epoch
                && seen.unplayed == 0
                && audio.len() >= STAMP_LEN
                && audio[..STAMP_LEN].iter().all(|&b| b >= 0xF0)
            {
                let latency = since_stamp(&audio, epoch);
                if latency > Duration::ZERO && latency < Duration::from_secs(10) {
                    seen.talkspurts.push(latency);
                }
            }
            seen.unplayed += audio.len();
            speaker.audio(audio);
            Vec::new()
        }
        Some("mark") => {
            if let Some(name) = v["mark"]["name"].as_str() {
                speaker.mark(name);
            }
            Vec::new()
        }
        Some("clear") => {
            seen.clears += 1;
            seen.unplayed = 0;
            speaker.clear()
        }
        _ => Vec::new(),
    }
}
