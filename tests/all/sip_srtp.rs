//! SRTP with SDES keys over SIP over TLS, against baresip (libre's SRTP): audio both ways on a
//! `mediaenc=srtp-mand` call (baresip drops what it cannot authenticate, so audio it records
//! proves our SRTP; ours proves its), and the policy matrix: a plain offer to a host that
//! requires SRTP gets 488, best-effort SRTP (`mediaenc=srtp`, keys in RTP/AVP) and forced
//! RTP/SAVP (`srtp-mandf`) are taken when SRTP is optional, and a plain offer then stays plain.
//! With a caller of our own: tampered, replayed and stale-key packets dropped and counted, a
//! rekey by re-INVITE, key lifetimes taken and MKI refused.
//! A capture of such a call's traffic (tcpdump on the loopback, filtered to the test's own
//! ports) holds neither readable SIP nor the call's audio.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard::media::srtp::{MasterKey, SrtpKeys, SrtpSession, Suite};
use tokio::net::UdpSocket;

use crate::support::agents::repo_root;
use crate::support::api::{Api, events_of, find, metric, only_call_record};
use crate::support::baresip::Baresip;
use crate::support::calls::{AudioCheck, audio_both_ways, loud_spans, spans_ms};
use crate::support::fake_openai::{FakeOpenAi, Received, Script};
use crate::support::host::Host;
use crate::support::media::{
    Wav, only_file, onset_correlation, quiet_then_tones, to_8k, write_wav,
};
use crate::support::model_tls::{TestCerts, client_config_trusting, have_openssl};
use crate::support::pcap::{Capture, Packet, Proto};
use crate::support::pjsua;
use crate::support::process::{require, require_python};
use crate::support::secure_caller::{
    Dialog, RtpStream, SipTls, body, crypto_attribute, offer, parse_answer, status, tone_frame,
    transact,
};
use crate::support::tempdir;

fn host(certs: &TestCerts, srtp: &str) -> Host {
    host_with_model(certs, srtp, "")
}

/// [`host`] with these `[model]` lines (the offline provider when empty).
fn host_with_model(certs: &TestCerts, srtp: &str, model: &str) -> Host {
    Host::builder()
        .examples(&["menu"])
        .tls(&certs.cert, &certs.key)
        .sip(&format!("srtp = \"{srtp}\""))
        .calls("codecs = [\"pcmu\"]\nrecord = true")
        .model(model)
        .rust_log("info,rsipstack=warn,switchboard::call=debug,switchboard::media=debug")
        .start()
}

/// A TLS phone with `mediaenc` (empty: none) that trusts `certs`' CA.
async fn phone(certs: &TestCerts, mediaenc: &str, mic: &[i16]) -> Baresip {
    let enc = match mediaenc {
        "" => String::new(),
        e => format!(";mediaenc={e}"),
    };
    Baresip::start_with_mic(
        &format!("<sip:caller@127.0.0.1;transport=tls>;regint=0;audio_codecs=pcmu{enc}"),
        &format!(
            "module sndfile.so\nmodule srtp.so\nsip_cafile {}\n",
            certs.ca.display()
        ),
        mic,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_mandatory_call_over_tls_has_audio_both_ways() {
    if !require("baresip") || !require("espeak-ng") || !have_openssl() {
        return;
    }
    let certs = TestCerts::make();
    let mut host = host(&certs, "required");
    let run = AudioCheck::new("pcmu");
    let phone = phone(&certs, "srtp-mand", &run.mic).await;
    let uri = format!("sip:1000@127.0.0.1:{};transport=tls", host.tls_port);
    audio_both_ways(&mut host, &phone, &uri, &run).await;
    host.expect(&["media started", "AesCm128HmacSha1"], 1);
    // baresip sends a short plain RTCP packet before its SRTP starts and its RTCP BYE after
    // it stops (both dropped, as unauthenticated packets must be); no RTP packet is dropped.
    let dropped: Vec<&String> = host
        .log
        .seen
        .iter()
        .filter(|l| l.contains("SRTP packet dropped"))
        .collect();
    assert!(
        dropped.iter().all(|l| l.contains("rtcp=true")) && dropped.len() <= 2,
        "{dropped:#?}"
    );
}

/// Dials the host's `1000` over TLS and returns the event that settled the call (hanging up
/// an established one).
async fn dial(phone: &Baresip, host: &Host) -> String {
    let mut ctrl = phone.ctrl().await;
    let uri = format!("sip:1000@127.0.0.1:{};transport=tls", host.tls_port);
    ctrl.command("dial", &uri).await;
    let event = ctrl
        .wait_event_any(
            &["CALL_ESTABLISHED", "CALL_CLOSED"],
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|| panic!("the call settled: {}", phone.log()));
    if event.contains("CALL_ESTABLISHED") {
        ctrl.command("hangup", "").await;
        // Kept connected until the hang-up is done: ctrl_tcp drops what a closed client sent.
        ctrl.wait_event("CALL_CLOSED", Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("hung up: {}", phone.log()));
    }
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_policy_matrix_with_baresip() {
    if !require("baresip") || !require("espeak-ng") || !have_openssl() {
        return;
    }
    let certs = TestCerts::make();
    let mic = vec![0i16; 8000 * 10];

    let mut required = host(&certs, "required");
    let plain = phone(&certs, "", &mic).await;
    let refused = dial(&plain, &required).await;
    assert!(
        refused.contains("CALL_CLOSED") && refused.contains("488"),
        "{refused}"
    );
    required.expect(&["no acceptable audio stream", "SRTP is required"], 5);
    drop(required);

    let mut optional = host(&certs, "optional");
    let best_effort = phone(&certs, "srtp", &mic).await;
    assert!(
        dial(&best_effort, &optional)
            .await
            .contains("CALL_ESTABLISHED")
    );
    optional.expect(&["media started", "srtp=Some(AesCm128HmacSha1"], 5);
    optional.expect(&["call ended"], 10);
    // RTP/SAVP forced (baresip's `srtp-mandf`).
    let forced = phone(&certs, "srtp-mandf", &mic).await;
    assert!(dial(&forced, &optional).await.contains("CALL_ESTABLISHED"));
    optional.wait_calls_ended(0, 2, Duration::from_secs(10));
    assert_eq!(optional.ended_calls(), 2, "the second call ended");
    let plain = phone(&certs, "", &mic).await;
    assert!(dial(&plain, &optional).await.contains("CALL_ESTABLISHED"));
    let started: Vec<String> = {
        optional.expect(&["media started", "srtp=None"], 5);
        optional
            .log
            .seen
            .iter()
            .filter(|l| l.contains("media started"))
            .cloned()
            .collect()
    };
    assert_eq!(started.len(), 3, "{started:?}");
    assert!(
        started[..2].iter().all(|l| l.contains("srtp=Some")),
        "{started:?}"
    );
}

/// baresip puts the call on hold during the greeting and resumes it (re-INVITEs with
/// `a=sendonly`, then `a=sendrecv`, keys included) on an SRTP call, with the OpenAI provider
/// played by its fake: the hold cancels the greeting being spoken, the model gets none of the
/// audio baresip still sends while holding, the call stays up, and after the resume the
/// caller's speech reaches the host and the model, and the agent's answer to a key press
/// reaches the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srtp_hold_and_resume_keep_the_call_and_audio_both_ways() {
    if !require("baresip") || !require("espeak-ng") || !have_openssl() {
        return;
    }
    const RATE: usize = 8000;
    let certs = TestCerts::make();
    // Audio in real time, as the server streams it: the greeting lasts seconds. What the
    // caller says names no menu choice (the menu takes spoken answers), so the key pressed
    // after the resume is the one the agent answers.
    let fake = FakeOpenAi::start(Script {
        api_key: "test".into(),
        delta_ms: 20,
        delta_interval: Duration::from_millis(20),
        caller_transcript: "Hello there.".into(),
        ..Script::default()
    })
    .await;
    let model = format!(
        "provider = \"openai\"\nbase-url = \"{}\"\napi-key = \"test\"",
        fake.url
    );
    let mut host = host_with_model(&certs, "required", &model);
    let mic = quiet_then_tones(11, 4, 12);
    let phone = phone(&certs, "srtp-mand", &mic).await;
    let mut ctrl = phone.ctrl().await;
    let uri = format!("sip:1000@127.0.0.1:{};transport=tls", host.tls_port);
    ctrl.dial(&uri, &phone).await;
    host.expect(&["Answered"], 10);
    tokio::time::sleep(Duration::from_secs(1)).await;
    ctrl.command("hold", "").await;
    host.expect(&["media updated", "direction=RecvOnly"], 10);
    host.expect(&["Hold { held: true"], 5);
    // The cancel goes out with the hold; the fake may read it a moment later.
    let cancelled = |received: &[Received]| {
        received
            .iter()
            .any(|r| r.event["type"] == "response.cancel")
    };
    assert!(
        fake.wait_for(Duration::from_secs(5), cancelled).await,
        "the greeting being spoken was cancelled"
    );
    // baresip keeps sending its microphone while it holds (sendonly); none of it reaches the
    // model.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_hold = fake.appended_bytes();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during_hold = fake.appended_bytes() - at_hold;
    ctrl.command("resume", "").await;
    host.expect(&["media updated", "direction=SendRecv"], 10);
    host.expect(&["Hold { held: false"], 5);
    eprintln!("audio to the model during the hold: {during_hold} bytes");
    assert_eq!(during_hold, 0, "the model heard the held call");
    let at_resume = fake.appended_bytes();
    // The microphone's tones play from 11 s; then a key press the agent answers.
    tokio::time::sleep(Duration::from_secs(13)).await;
    ctrl.command("sndcode", "1").await;
    host.expect(&["Actions", "We are open"], 20);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !host.log.seen.iter().any(|l| l.contains("call ended")),
        "the call stayed up through hold and resume"
    );
    // 19 s of the caller's audio (PCMU, 8000 bytes a second) since the resume.
    let after_resume = fake.appended_bytes() - at_resume;
    eprintln!("audio to the model after the resume: {after_resume} bytes");
    assert!(after_resume >= 15 * 8000, "{after_resume}");
    ctrl.command("hangup", "").await;
    host.expect(&["call ended", "CallerHangup"], 20);

    let wav = Wav::read(&only_file(&host.data.path().join("recordings"), ".wav"));
    let caller = to_8k(&wav.channel(0), wav.rate);
    let agent = to_8k(&wav.channel(1), wav.rate);
    let up = onset_correlation(&mic[11 * RATE..], &caller, 3 * RATE);
    eprintln!("after resume: baresip → host {up:.3}");
    assert!(up >= 0.9, "caller audio after the resume: {up:.3}");
    assert!(
        agent[16 * RATE..].iter().any(|s| s.abs() > 2000),
        "the agent answered the key after the resume"
    );
    // baresip's sndfile stops writing at the hold, so what it heard after the resume shows in
    // its status line instead: PCMU (64 kbit/s) both ways at the end, through its mandatory
    // SRTP, which drops what it cannot authenticate.
    let log = phone.log();
    let last = log.rsplit("] audio=").next().unwrap_or_default();
    let rates: Vec<u32> = last
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    eprintln!("baresip's last audio rates (bit/s): {rates:?}");
    // Its SRTP logs each packet it could not unprotect.
    assert!(!log.contains("unprotect"), "{log}");
    assert!(
        rates.len() == 2 && rates.iter().all(|&r| r > 50_000),
        "audio both ways at baresip after the resume: {rates:?}"
    );
}

/// pjsua2 (pjsip's TLS over OpenSSL, libsrtp) calls over TLS with SRTP mandatory: its
/// microphone reaches the agent (correlation ≥ 0.9) and the greeting reaches its recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pjsua2_srtp_call_over_tls_has_audio_both_ways() {
    if !require("espeak-ng") || !require_python("pjsua2") || !have_openssl() {
        return;
    }
    const RATE: usize = 8000;
    let certs = TestCerts::make();
    let mut host = host(&certs, "required");
    let dir = tempdir("pjsua2-secure");
    let mic = quiet_then_tones(11, 4, 3);
    let (mic_wav, heard_wav) = (dir.path().join("mic.wav"), dir.path().join("heard.wav"));
    write_wav(&mic_wav, RATE as u32, &mic);
    let uri = format!("sip:1000@127.0.0.1:{};transport=tls", host.tls_port);
    let json = pjsua::call(
        "pj_secure.py",
        [
            OsStr::new("--call"),
            uri.as_ref(),
            "--ca".as_ref(),
            certs.ca.as_ref(),
            "--mic".as_ref(),
            mic_wav.as_ref(),
            "--heard".as_ref(),
            heard_wav.as_ref(),
            "--seconds".as_ref(),
            "17".as_ref(),
        ],
        dir.path(),
    )
    .await;
    assert_eq!(json["disconnected"], true, "{json}");
    host.expect(&["media started", "srtp=Some(AesCm128HmacSha1"], 1);
    host.expect(&["call ended"], 10);

    let wav = Wav::read(&only_file(&host.data.path().join("recordings"), ".wav"));
    let caller = to_8k(&wav.channel(0), wav.rate);
    let agent = to_8k(&wav.channel(1), wav.rate);
    let up = onset_correlation(&mic[11 * RATE..], &caller, 3 * RATE);
    let heard = Wav::read(&heard_wav);
    let heard = to_8k(&heard.channel(0), heard.rate);
    // pjsua's adaptive jitter buffer shifts its playout by tens of milliseconds as it goes and,
    // on a loaded machine, stretches or splits a word as it adapts, so neither a correlation
    // over seconds nor word-by-word lengths hold. What holds: once the first words line up,
    // nearly all the agent's speech is speech in what pjsua2 heard, and the other way round
    // (silence fails the first, noise from bad keys the second).
    let speech = |x: &[i16]| spans_ms(&loud_spans(x, 10));
    let (sent, got) = (speech(&agent), speech(&heard));
    let (said, heard_back) = (covered(&sent, &got), covered(&got, &sent));
    eprintln!(
        "pjsua2 over TLS + SRTP: pjsua2 → host {up:.3}; greeting heard {said:.3}, \
         heard in the greeting {heard_back:.3}; agent {sent:?}, heard {got:?}"
    );
    assert!(up >= 0.9, "caller audio in the recording: {up:.3}");
    assert!(
        sent.len() >= 8 && said >= 0.9 && heard_back >= 0.9,
        "greeting at pjsua2: {said:.3} / {heard_back:.3}: {sent:?} / {got:?}"
    );
}

/// The share of `a`'s speech (spans of start and length in ms) that falls within 60 ms of
/// speech in `b`, each timed from its first span and both cut at `a`'s greeting (10 s).
fn covered(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    const SLACK: f64 = 60.0;
    const LENGTH_MS: usize = 10_000;
    let mask = |spans: &[(f64, f64)], widen: f64| {
        let mut ms = vec![false; LENGTH_MS];
        let zero = spans.first().map_or(0.0, |s| s.0);
        for &(at, len) in spans {
            let from = (at - zero - widen).max(0.0) as usize;
            let to = ((at - zero + len + widen) as usize).min(LENGTH_MS);
            ms[from.min(to)..to].iter_mut().for_each(|m| *m = true);
        }
        ms
    };
    let (a, b) = (mask(a, 0.0), mask(b, SLACK));
    let speech = a.iter().filter(|&&m| m).count();
    let matched = a.iter().zip(&b).filter(|&(&x, &y)| x && y).count();
    matched as f64 / speech.max(1) as f64
}

/// Our own caller (support/secure_caller: SIP over TLS, the project's SRTP) on an SRTP call to
/// the echo line, which sends back what it plays: packets with one byte flipped (in the
/// header, the payload, the tag) and replayed packets are dropped, counted in the call's
/// `media-stats` event and in `/metrics`, and never played; after a re-INVITE with a new key,
/// a packet under the old key is refused and the new key's packets play. Offers with a key
/// lifetime (`|2^31`, `|1048576`) are taken; one whose only key has an MKI gets 488.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_replayed_and_stale_key_packets_are_dropped_and_counted() {
    if !have_openssl() {
        return;
    }
    let certs = TestCerts::make();
    let host = Host::builder()
        .examples(&["menu"])
        .tls(&certs.cert, &certs.key)
        .sip("srtp = \"required\"")
        .calls("codecs = [\"pcmu\"]")
        .model("provider = \"echo\"")
        .start();
    let target: SocketAddr = format!("127.0.0.1:{}", host.tls_port).parse().unwrap();
    let uri = format!("sip:1000@127.0.0.1:{};transport=tls", host.tls_port);
    let tls = Arc::new(client_config_trusting(&certs.ca));
    let mut sip = SipTls::connect(target, tls).await.expect("TLS to the host");
    let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (rtp_port, rtcp_port) = (
        rtp.local_addr().unwrap().port(),
        rtcp.local_addr().unwrap().port(),
    );
    let suite = Suite::AesCm128HmacSha1_80;
    let first_key = MasterKey::random();
    let mut dialog = Dialog::new(&uri, sip.local);
    let crypto = crypto_attribute(suite, &first_key, "|2^31");
    let invite = dialog.invite(&offer(rtp_port, rtcp_port, Some(&crypto), 1));
    let ok = transact(&mut sip, &dialog, &invite, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(status(&ok), Some(200), "{ok}");
    dialog.established(&ok);
    sip.send(&dialog.ack()).await.unwrap();
    let answer = parse_answer(body(&ok)).unwrap_or_else(|| panic!("an SDP answer: {ok}"));
    assert_eq!(answer.proto, "RTP/SAVP", "{ok}");
    let (answered, host_key) = answer.crypto.expect("the host's key");
    assert_eq!(answered, suite);
    let keys = SrtpKeys {
        suite,
        send: first_key,
        recv: host_key.clone(),
    };
    let mut stream = RtpStream::new(Some(&keys), 1000);
    // What the echo line sends back, checked at the end with the host's key.
    let (echo_tx, mut echoes) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let reader = tokio::spawn({
        let rtp = rtp.clone();
        async move {
            let mut buf = vec![0u8; 2048];
            while let Ok(n) = rtp.recv(&mut buf).await {
                let _ = echo_tx.send(buf[..n].to_vec());
            }
        }
    });

    let tone = tone_frame();
    // Bad packets carry this payload: were one played, the echo would bring it back.
    let marker = [0x2Au8; 160];
    let mut packet = Vec::new();
    let mut good = 0u64;
    let mut sent_good: Vec<Vec<u8>> = Vec::new();
    let (mut auth, mut replayed) = (0u64, 0u64);
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    for i in 0..50 {
        pace.tick().await;
        match i {
            // A replay of the last packet, and of one 30 packets back (inside the window).
            10 | 45 => {
                let back = if i == 10 { 1 } else { 30 };
                let again = &sent_good[sent_good.len() - back];
                rtp.send_to(again, answer.rtp).await.unwrap();
                replayed += 1;
            }
            // A byte flipped in the header (payload type), the payload, the tag.
            20 | 25 | 30 => {
                stream.next_packet(&marker, &mut packet);
                let at = match i {
                    20 => 1,
                    25 => 12 + 80,
                    _ => packet.len() - 1,
                };
                packet[at] ^= 0x01;
                rtp.send_to(&packet, answer.rtp).await.unwrap();
                auth += 1;
                continue;
            }
            _ => {}
        }
        stream.next_packet(&tone, &mut packet);
        rtp.send_to(&packet, answer.rtp).await.unwrap();
        sent_good.push(packet.clone());
        good += 1;
    }

    // A re-INVITE with a new key: the host answers with its own key unchanged.
    let second_key = MasterKey::random();
    let crypto = crypto_attribute(suite, &second_key, "|1048576");
    let reinvite = dialog.invite(&offer(rtp_port, rtcp_port, Some(&crypto), 2));
    let ok = transact(&mut sip, &dialog, &reinvite, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status(&ok), Some(200), "{ok}");
    sip.send(&dialog.ack()).await.unwrap();
    let reanswer = parse_answer(body(&ok)).unwrap_or_else(|| panic!("an SDP answer: {ok}"));
    assert_eq!(reanswer.crypto.map(|c| c.1), Some(host_key.clone()));
    // The media thread takes the update a moment after the answer leaves.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut stale = SrtpSession::new(&keys);
    stream.srtp.as_mut().unwrap().rekey(&SrtpKeys {
        suite,
        send: second_key,
        recv: host_key.clone(),
    });
    sent_good.clear();
    for i in 0..50 {
        pace.tick().await;
        match i {
            // Under the old key.
            10 => {
                stream.next_plain(&marker, &mut packet);
                stale.protect_rtp(&mut packet, 0).unwrap();
                rtp.send_to(&packet, answer.rtp).await.unwrap();
                auth += 1;
                continue;
            }
            20 => {
                rtp.send_to(sent_good.last().unwrap(), answer.rtp)
                    .await
                    .unwrap();
                replayed += 1;
            }
            _ => {}
        }
        stream.next_packet(&tone, &mut packet);
        rtp.send_to(&packet, answer.rtp).await.unwrap();
        sent_good.push(packet.clone());
        good += 1;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bye = dialog.bye();
    let ok = transact(&mut sip, &dialog, &bye, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status(&ok), Some(200), "{ok}");

    let record = only_call_record(host.http).await;
    let events = events_of(&record);
    let stats = find(&events, "media-stats");
    assert_eq!(stats.len(), 1, "{events:?}");
    let stats = stats[0];
    eprintln!("media-stats: {stats}");
    assert_eq!(stats["srtp_auth_failures"], auth, "{stats}");
    assert_eq!(stats["srtp_replayed"], replayed, "{stats}");
    assert_eq!(stats["packets_received"], good, "{stats}");
    let metrics = Api::new(host.http, None).get("/metrics").await.text;
    assert_eq!(
        metric(
            &metrics,
            "switchboard_srtp_packets_dropped_total{reason=\"auth\"}"
        ),
        auth as f64
    );
    assert_eq!(
        metric(
            &metrics,
            "switchboard_srtp_packets_dropped_total{reason=\"replay\"}"
        ),
        replayed as f64
    );

    // The echo: every packet authenticates under the host's key; the tone came back, the
    // marker never did.
    reader.abort();
    let mut check = RtpStream::new(Some(&keys), 0);
    let (mut plain, mut tones, mut total) = (Vec::new(), 0, 0);
    while let Ok(datagram) = echoes.try_recv() {
        check
            .receive(&datagram, &mut plain)
            .expect("the host's SRTP authenticates");
        let payload = &plain[12..];
        total += 1;
        tones += usize::from(payload == tone.as_slice());
        assert!(
            payload.iter().filter(|&&b| b == 0x2A).count() < 100,
            "a dropped packet was played"
        );
    }
    eprintln!("echo: {tones} of {total} packets carry the tone; {good} good packets sent");
    assert!(tones as u64 >= good / 2, "{tones} of {total}");

    // An offer whose only key has an MKI (which we do not do) is refused.
    let mut refused = Dialog::new(&uri, sip.local);
    let crypto = crypto_attribute(suite, &MasterKey::random(), "|2^31|1:4");
    let invite = refused.invite(&offer(rtp_port, rtcp_port, Some(&crypto), 1));
    let answer = transact(&mut sip, &refused, &invite, Duration::from_secs(10))
        .await
        .unwrap();
    sip.send(&refused.ack_failure(&answer)).await.unwrap();
    assert_eq!(status(&answer), Some(488), "{answer}");
}

/// A TLS + SRTP call (baresip `srtp-mand`) with audio both ways, captured on the loopback with
/// tcpdump filtered to the host's TLS port and RTP range: the TCP bytes hold no readable SIP
/// (TLS records only), and the RTP payloads, decoded as the negotiated PCMU, do not correlate
/// with what the agent said or what the phone sent (the same check gives ≥ 0.9 on the call's
/// audio), nor hold any 16 bytes of the μ-law the host sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_of_a_tls_srtp_call_shows_no_clear_sip_or_audio() {
    if !require("baresip") || !require("espeak-ng") || !require("tcpdump") || !have_openssl() {
        return;
    }
    const RATE: usize = 8000;
    let certs = TestCerts::make();
    let mut host = host(&certs, "required");
    let run = AudioCheck::new("pcmu");
    let phone = phone(&certs, "srtp-mand", &run.mic).await;
    let dir = tempdir("capture");
    let (rtp_min, rtp_max) = host.rtp_ports();
    let capture = Capture::start(
        dir.path(),
        &format!(
            "tcp port {} or udp portrange {rtp_min}-{rtp_max}",
            host.tls_port
        ),
    );
    let uri = format!("sip:1000@127.0.0.1:{};transport=tls", host.tls_port);
    audio_both_ways(&mut host, &phone, &uri, &run).await;
    let packets = capture.stop().await;

    let tls: Vec<u8> = packets
        .iter()
        .filter(|p| p.proto == Proto::Tcp)
        .flat_map(|p| p.payload.iter().copied())
        .collect();
    assert!(tls.len() > 2000, "TLS bytes captured: {}", tls.len());
    for clear in ["INVITE sip:", "SIP/2.0", "m=audio", "a=crypto", "inline:"] {
        assert!(
            !tls.windows(clear.len()).any(|w| w == clear.as_bytes()),
            "{clear:?} in clear on the TLS port"
        );
    }

    let ours = |port: u16| (rtp_min..=rtp_max).contains(&port);
    let to_phone = pcmu_stream(packets.iter().filter(|p| ours(p.src_port)));
    let to_host = pcmu_stream(packets.iter().filter(|p| ours(p.dst_port)));
    // Over 16 s of call in 20 ms packets each way.
    assert!(
        to_phone.len() > 600 && to_host.len() > 600,
        "RTP captured: {} and {} packets",
        to_phone.len(),
        to_host.len()
    );
    let decode = |stream: &[Vec<u8>]| -> Vec<i16> {
        stream
            .iter()
            .flatten()
            .map(|&b| switchboard::media::g711::ulaw_decode(b))
            .collect()
    };
    let wav = Wav::read(&only_file(&host.data.path().join("recordings"), ".wav"));
    assert_eq!(
        wav.rate as usize, RATE,
        "PCMU: the recording is what went out"
    );
    let agent = wav.channel(1);
    let down = onset_correlation(&agent, &decode(&to_phone), 4 * RATE);
    let up = onset_correlation(&run.mic[11 * RATE..], &decode(&to_host), 3 * RATE);
    eprintln!(
        "captured payloads against the call's audio: to the phone {down:.3}, to the host {up:.3}"
    );
    assert!(
        down.abs() < 0.3,
        "the greeting is readable in the capture: {down:.3}"
    );
    assert!(
        up.abs() < 0.3,
        "the caller's audio is readable in the capture: {up:.3}"
    );

    // What the host sent, byte for byte (PCMU of its recording), appears nowhere: 16-byte runs
    // of it with some variety (not silence) against every 16 bytes captured towards the phone.
    let sent: Vec<u8> = agent
        .iter()
        .map(|&s| switchboard::media::g711::ulaw_encode(s))
        .collect();
    let runs: std::collections::HashSet<&[u8]> = sent
        .windows(16)
        .filter(|w| w.iter().collect::<std::collections::HashSet<_>>().len() >= 6)
        .collect();
    assert!(
        runs.len() > 10_000,
        "the greeting has {} distinct runs",
        runs.len()
    );
    let leaked = to_phone
        .iter()
        .filter(|payload| payload.windows(16).any(|w| runs.contains(w)))
        .count();
    assert_eq!(leaked, 0, "packets carrying the greeting's plain μ-law");
}

/// The audio payloads (PT 0) of RTP packets in capture order, each packet once, without their
/// SRTP authentication tag; RTCP and telephone-events left out.
fn pcmu_stream<'a>(packets: impl Iterator<Item = &'a Packet>) -> Vec<Vec<u8>> {
    let mut seen = std::collections::HashSet::new();
    packets
        .filter_map(|p| {
            let b = &p.payload;
            if b.len() < 12 || b[0] >> 6 != 2 || b[1] & 0x7f != 0 {
                return None;
            }
            let seq = u16::from_be_bytes([b[2], b[3]]);
            let ssrc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
            if !seen.insert((ssrc, seq)) {
                return None;
            }
            let mut at = 12 + 4 * usize::from(b[0] & 0x0f);
            if b[0] & 0x10 != 0 {
                let words = usize::from(u16::from_be_bytes([*b.get(at + 2)?, *b.get(at + 3)?]));
                at += 4 + 4 * words;
            }
            // 20 ms of PCMU; what follows is the tag.
            b.get(at..(at + 160).min(b.len())).map(<[u8]>::to_vec)
        })
        .collect()
}

/// `examples/secure.toml` as it is, run from a folder holding a freshly made
/// `examples/certs/server.crt` and `server.key` (the README's way), with only its ports and its
/// data and agents folders overridden (and recording on, to check the audio): baresip calls
/// 1000 over TLS with mandatory SRTP, the bundled `menu` agent answers with SRTP, and audio
/// flows both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secure_example_config_serves_a_tls_srtp_call() {
    if !require("baresip") || !require("espeak-ng") || !have_openssl() {
        return;
    }
    let certs = TestCerts::make();
    let cwd = tempdir("secure-example");
    let cert_dir = cwd.path().join("examples/certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    std::fs::copy(&certs.cert, cert_dir.join("server.crt")).unwrap();
    std::fs::copy(&certs.key, cert_dir.join("server.key")).unwrap();
    let mut host = Host::builder()
        .examples(&["menu", "receptionist", "appointments"])
        .config_file(&repo_root().join("examples/secure.toml"), cwd.path())
        .env("SWITCHBOARD__CALLS__RECORD", "true")
        .rust_log("info,rsipstack=warn,switchboard::call=debug,switchboard::media=debug")
        .start();
    let run = AudioCheck::new("pcmu");
    let phone = phone(&certs, "srtp-mand", &run.mic).await;
    let uri = format!("sip:1000@127.0.0.1:{};transport=tls", host.tls_port);
    audio_both_ways(&mut host, &phone, &uri, &run).await;
    host.expect(&["media started", "srtp=Some(AesCm128HmacSha1"], 1);
}
