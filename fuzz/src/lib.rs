//! What each fuzz target does with one input: feed it to the entry point the product uses on
//! bytes from outside, and check what must hold whatever the bytes. The binaries in
//! `fuzz_targets/` are one line each around these; host/src/fuzz_corpus.rs compiles this file
//! into the host's tests and replays every saved input of [`TARGETS`] through the same code.
//!
//! Inputs that carry several parts (headers and a body, a stream of frames) split them at 0xFF,
//! a byte that never occurs in UTF-8 text, so the saved inputs stay readable.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use switchboard::bridges::stream::{Framing, StreamEvent};
use switchboard::bridges::{telnyx, twilio, vonage};
use switchboard::media::codec::Codec;
use switchboard::media::dtmf::{DtmfReceiver, DtmfSender};
use switchboard::media::rtcp::parse_compound;
use switchboard::media::rtp::{RtpPacket, is_rtcp, is_stun};
use switchboard::media::sdp::{LocalMedia, SrtpPolicy, answer_offer, process_answer};
use switchboard::media::srtp::{MasterKey, SrtpKeys, SrtpSession, Suite};
use switchboard::plugins::manifest::Manifest;
use switchboard::sip::{DatagramVerdict, ScannerAction, ScannerRules, screen_datagram};
use switchboard::webhooks::WebhookSecret;
use tokio_tungstenite::tungstenite::Message;

/// What a target does with one input.
pub type Target = fn(&[u8]);

/// Every target by the name of its binary and corpus directory (fuzz/corpus/<name>/).
pub const TARGETS: &[(&str, Target)] = &[
    ("sip_guard", sip_guard),
    ("sdp", sdp),
    ("rtp", rtp),
    ("rtcp", rtcp),
    ("srtp", srtp),
    ("dtmf", dtmf),
    ("manifest", manifest),
    ("media_stream", media_stream),
    ("webhooks", webhooks),
];

/// A UDP datagram at the SIP port, screened as the guard does before the stack parses it. A
/// refusal is a SIP response.
pub fn sip_guard(datagram: &[u8]) {
    let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 5060);
    let scanners = ScannerRules {
        patterns: vec!["friendly-scanner".into(), "sipvicious".into()],
        action: ScannerAction::Reject,
    };
    if let DatagramVerdict::Reply(reply) = screen_datagram(datagram, source, 65_535, &scanners) {
        assert!(
            reply.starts_with(b"SIP/2.0 "),
            "a refusal is a SIP response"
        );
    }
}

/// An SDP body from a peer, as an offer (under each SRTP policy) and as the answer to ours; the
/// negotiated telephone-event clock then drives DTMF both ways as a call's media does.
pub fn sdp(body: &[u8]) {
    let body = String::from_utf8_lossy(body);
    for policy in [SrtpPolicy::Off, SrtpPolicy::Optional, SrtpPolicy::Required] {
        let mut local = LocalMedia::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            40_000,
            vec![Codec::Opus, Codec::G722, Codec::Pcmu, Codec::Pcma],
            1,
        );
        local.srtp = policy;
        let negotiated = [
            answer_offer(&body, &local).ok().map(|(_, media)| media),
            process_answer(&body, &local).ok(),
        ];
        for media in negotiated.into_iter().flatten() {
            let audio_clock = media.codec.clock_rate();
            for dtmf in media.dtmf_recv.iter().chain(&media.dtmf_send) {
                let mut receiver = DtmfReceiver::new(dtmf.clock_rate, audio_clock);
                // Key 1, 100 ms long, ended.
                let now = Instant::now();
                receiver.on_packet(0, &[1, 0x80, 0x03, 0x20], now);
                let mut sender = DtmfSender::new('1', 100, dtmf.clock_rate, media.ptime_ms, 0)
                    .expect("1 is a digit");
                while sender.next_packet().is_some() {}
            }
        }
    }
}

/// A datagram on a call's RTP port, as the media engine reads it: STUN and RTCP told apart, then
/// the RTP header parsed; a parsed packet written back parses the same.
pub fn rtp(datagram: &[u8]) {
    if is_rtcp(datagram) || is_stun(datagram) {
        return;
    }
    let Ok(packet) = RtpPacket::parse(datagram) else {
        return;
    };
    let mut written = Vec::new();
    packet
        .write(&mut written)
        .expect("a parsed packet can be written");
    assert_eq!(
        RtpPacket::parse(&written).expect("what we write parses"),
        packet
    );
}

/// A compound RTCP datagram from a peer.
pub fn rtcp(datagram: &[u8]) {
    let _ = parse_compound(datagram);
}

/// A datagram on an SRTP call: unprotected as SRTP and as SRTCP (the tag will not match, so
/// this reaches the header reading); then taken as the peer's plain packet, protected with the
/// peer's key and unprotected with ours, which must give it back unchanged.
pub fn srtp(datagram: &[u8]) {
    let ours =
        MasterKey::from_inline("ZnV6ei1zcnRwLWtleS1vdXJzLTMwLWJ5dGVzLW9r").expect("30 bytes");
    let theirs =
        MasterKey::from_inline("ZnV6ei1zcnRwLWtleS1wZWVyLTMwLWJ5dGVzLW9r").expect("30 bytes");
    for suite in Suite::ALL {
        let mut us = SrtpSession::new(&SrtpKeys {
            suite,
            send: ours.clone(),
            recv: theirs.clone(),
        });
        let mut peer = SrtpSession::new(&SrtpKeys {
            suite,
            send: theirs.clone(),
            recv: ours.clone(),
        });
        let mut out = Vec::new();
        let _ = us.unprotect_rtp(datagram, &mut out);
        let _ = us.unprotect_rtcp(datagram, &mut out);
        let mut wire = datagram.to_vec();
        if peer.protect_rtp(&mut wire, 0).is_ok() {
            us.unprotect_rtp(&wire, &mut out)
                .expect("the peer's SRTP packet is taken");
            assert_eq!(out, datagram, "SRTP gives back what was protected");
        }
        let mut wire = datagram.to_vec();
        if peer.protect_rtcp(&mut wire, 0).is_ok() {
            us.unprotect_rtcp(&wire, &mut out)
                .expect("the peer's SRTCP packet is taken");
            assert_eq!(out, datagram, "SRTCP gives back what was protected");
        }
    }
}

/// A run of telephone-event packets into one call's DTMF receiver. The first byte picks the
/// negotiated clocks; then each 9 bytes are one packet: RTP timestamp (4), payload (4), and the
/// milliseconds since the previous packet (1), after which the receiver is polled.
pub fn dtmf(input: &[u8]) {
    const CLOCKS: [(u32, u32); 4] = [
        (8000, 8000),
        (8000, 48_000),
        (16_000, 16_000),
        (48_000, 48_000),
    ];
    let Some((&pick, packets)) = input.split_first() else {
        return;
    };
    let (event_clock, audio_clock) = CLOCKS[pick as usize % CLOCKS.len()];
    let mut receiver = DtmfReceiver::new(event_clock, audio_clock);
    let mut now = Instant::now();
    for packet in packets.chunks_exact(9) {
        let timestamp = u32::from_be_bytes(packet[..4].try_into().expect("4 bytes"));
        now += Duration::from_millis(packet[8].into());
        receiver.on_packet(timestamp, &packet[4..8], now);
        receiver.poll(now);
    }
    if let Some(deadline) = receiver.next_deadline() {
        receiver.poll(deadline);
    }
}

/// An agent's manifest (agent.toml).
pub fn manifest(text: &[u8]) {
    let _ = Manifest::parse(&String::from_utf8_lossy(text), "agent.toml");
}

/// The frames of a carrier's media socket, split at 0xFF (text when UTF-8, else binary); the
/// first byte picks the carrier. Frames are read for the stream's start as the bridge does until
/// one starts it, then by the carrier's framing.
pub fn media_stream(input: &[u8]) {
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    let mut frames = rest
        .split(|&b| b == 0xFF)
        .map(|frame| match std::str::from_utf8(frame) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(frame.to_vec()),
        });
    let mut framing: Box<dyn Framing> = match pick % 3 {
        0 => {
            let Some(start) = frames.find_map(|f| match twilio::frames::parse(&f) {
                Ok(twilio::frames::Inbound::Start { start }) => Some(start),
                _ => None,
            }) else {
                return;
            };
            Box::new(twilio::frames::TwilioFraming {
                stream_sid: start.stream_sid,
            })
        }
        1 => {
            let Some(sequence) = frames.find_map(|f| match telnyx::frames::parse(&f) {
                Ok(telnyx::frames::Inbound::Start {
                    sequence_number, ..
                }) => telnyx::frames::sequence(&sequence_number).ok(),
                _ => None,
            }) else {
                return;
            };
            Box::new(telnyx::frames::TelnyxFraming::after(sequence))
        }
        _ => {
            if frames
                .find_map(|f| vonage::frames::connected(&f).ok())
                .is_none()
            {
                return;
            }
            Box::new(vonage::frames::VonageFraming)
        }
    };
    for frame in frames {
        for event in framing.read(frame).unwrap_or_default() {
            if let StreamEvent::Audio(pcm) = event {
                assert!(!pcm.is_empty(), "an audio event carries audio");
            }
        }
    }
}

/// A webhook delivery: three header values then the body, split at 0xFF. Each carrier's
/// signature check reads the headers against the body (a forged signature never passes); then
/// the body is signed as the carrier would sign it, which must pass, and read as the bridge
/// reads it.
pub fn webhooks(input: &[u8]) {
    let mut parts = input.splitn(4, |&b| b == 0xFF);
    let mut header = || parts.next().map(String::from_utf8_lossy);
    let (first, second, third) = (header(), header(), header());
    let body = parts.next().unwrap_or_default();
    let (first, second, third) = (first.as_deref(), second.as_deref(), third.as_deref());
    let now: u64 = 1_765_000_000;

    // OpenAI (Standard Webhooks): webhook-id, webhook-timestamp, webhook-signature.
    let secret = WebhookSecret::new("whsec_c2VjcmV0LWZvci1mdXp6aW5nLW9ubHk=").expect("a secret");
    let _ = secret.verify(first, second, third, body, now);
    let id = first.unwrap_or_default();
    let signature = secret.sign(id, now, body);
    let timestamp = now.to_string();
    secret
        .verify(Some(id), Some(&timestamp), Some(&signature), body, now)
        .expect("a signed delivery passes");

    // Twilio: a form body, X-Twilio-Signature.
    let url = "https://switchboard.example.com/twilio/voice";
    let params: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let token = "twilio-auth-token";
    let _ = twilio::signature::verify(token, url, &params, first.unwrap_or_default());
    let signed = twilio::signature::sign(token, url, &params);
    assert!(
        twilio::signature::verify(token, url, &params, &signed),
        "a signed form passes"
    );

    // Telnyx: telnyx-signature-ed25519, telnyx-timestamp; a JSON event.
    let key: telnyx::signature::PublicKey =
        String::from("ZnV6emluZy1vbmx5LWVkMjU1MTktcHVibGljLWtleSE=")
            .try_into()
            .expect("32 bytes");
    let _ = telnyx::signature::verify(&key, first, second, body, now);
    if let Ok(event) = serde_json::from_slice::<telnyx::webhook::Webhook>(body)
        && let Ok(payload) = serde_json::from_value::<telnyx::webhook::Payload>(event.data.payload)
        && let Some(id) = payload.call_control_id
    {
        telnyx::webhook::is_call_control_id(&id);
    }

    // Vonage: Authorization: Bearer <HS256 JWT>; the second part as the claims of a token
    // signed with the account's secret.
    let (secret, application) = (
        "vonage-signature-secret",
        "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    );
    let _ = vonage::signature::verify(secret, application, first, body, now as i64);
    let claims = URL_SAFE_NO_PAD.encode(second.unwrap_or_default());
    let input = format!(
        "{}.{claims}",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#)
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, input.as_bytes());
    let bearer = format!("Bearer {input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()));
    let _ = vonage::signature::verify(secret, application, Some(&bearer), body, now as i64);
    let _ = vonage::signature::query_payload(first.unwrap_or_default());
}
