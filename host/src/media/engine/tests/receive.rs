//! Caller to engine: the jitter buffer, concealment, statistics, DTMF in, latching, the media
//! timeout and hold.

use super::*;
use crate::media::codec::new_encoder;
use crate::media::dtmf::{DtmfEvent, DtmfSource, TelephoneEvent};
use crate::media::engine::CallerAudio;
use crate::media::g711;

/// 5 % loss and 0–40 ms random delay (reordering): one continuous, in-order 20 ms frame per
/// packet sent, and the losses counted.
#[test]
fn loss_and_jitter_give_continuous_output_and_right_stats() {
    let mut h = Harness::pcmu();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next_rand = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    const PACKETS: u16 = 150;
    let mut schedule = Vec::new();
    let mut dropped = 0u64;
    for i in 0..PACKETS {
        if i > 0 && i < PACKETS - 1 && next_rand() % 100 < 5 {
            dropped += 1;
            continue;
        }
        schedule.push((i as u64 * 20 + next_rand() % 41, i));
    }
    schedule.sort();
    for (at, i) in &schedule {
        h.run_until(h.at(*at));
        let level = g711::ulaw_encode(*i as i16 * 100);
        let seq = 65500u16.wrapping_add(*i);
        h.rtp_in(
            0,
            *i == 0,
            seq,
            1000 + *i as u32 * 160,
            0xABCD,
            &[level; 160],
        );
    }
    h.run_until(h.at(PACKETS as u64 * 20 + 600));
    let frames = h.take_audio();
    assert_eq!(
        frames.len(),
        PACKETS as usize,
        "one frame per packet, losses concealed"
    );
    assert!(
        frames
            .iter()
            .all(|f| f.samples.len() == 160 && f.sample_rate == 8000)
    );
    let mut matched = 0;
    for (i, f) in frames.iter().enumerate() {
        let expected = g711::ulaw_decode(g711::ulaw_encode(i as i16 * 100));
        if f.samples[0] == expected {
            matched += 1;
        }
    }
    let stats = h.published.clone();
    // Every delay is inside the 60 ms window: nothing comes too late.
    assert_eq!(stats.packets_discarded, 0, "{stats:?}");
    assert!(
        matched as u64 >= PACKETS as u64 - dropped,
        "frames in order: {matched} matched"
    );
    assert_eq!(stats.packets_lost, dropped, "{stats:?}");
    assert_eq!(stats.packets_expected, PACKETS as u64);
    assert!(
        stats.jitter_ms > 2.0 && stats.jitter_ms < 60.0,
        "jitter {}",
        stats.jitter_ms
    );
    assert!(stats.concealed_ms >= dropped * 20);
    assert_eq!(stats.remote_ssrc, Some(0xABCD));
    let final_stats = h.close();
    assert_eq!(final_stats.packets_lost, dropped);
}

/// A packet out of order waits for the missing one; a missing one is concealed exactly when
/// the window after the packet behind it runs out, not before.
#[test]
fn a_gap_waits_the_jitter_window_then_is_concealed() {
    let mut h = Harness::pcmu();
    h.rtp_in(0, true, 10, 0, 7, &[0x90; 160]);
    h.run_until(h.at(20));
    h.rtp_in(0, false, 12, 320, 7, &[0x92; 160]);
    assert_eq!(h.take_audio().len(), 1, "packet 12 waits for 11");
    assert_eq!(h.engine.jitter.next_deadline(), Some(h.at(80)));
    h.run_until(h.at(30));
    h.rtp_in(0, false, 11, 160, 7, &[0x91; 160]);
    let levels: Vec<u8> = h
        .take_audio()
        .iter()
        .map(|f| g711::ulaw_encode(f.samples[0]))
        .collect();
    assert_eq!(
        levels,
        [0x91, 0x92],
        "the late packet fills the gap, in order"
    );

    h.rtp_in(0, false, 14, 640, 7, &[0x94; 160]);
    h.run_until(h.at(89));
    assert!(h.take_audio().is_empty(), "still within the window");
    h.run_until(h.at(90));
    let frames = h.take_audio();
    assert_eq!(frames.len(), 2, "13 concealed, then 14");
    assert_eq!(g711::ulaw_encode(frames[1].samples[0]), 0x94);
    h.run_for(20);
    assert_eq!(h.published.packets_lost, 1);
    assert_eq!(h.published.concealed_ms, 20);
    assert_eq!(h.published.packets_discarded, 0);
    // 13 arrives after all: too late, discarded.
    h.rtp_in(0, false, 13, 480, 7, &[0x93; 160]);
    assert!(h.take_audio().is_empty());
    assert_eq!(h.engine.stats().packets_discarded, 1);
}

#[test]
fn ssrc_change_resets_the_stream() {
    let mut h = Harness::new(config(30_000), negotiated(PEER, Codec::Pcma));
    for i in 0..10u16 {
        h.rtp_in(8, i == 0, 500 + i, i as u32 * 160, 1, &[0xD5; 160]);
        h.run_for(5);
    }
    // New source (e.g. after a transfer): unrelated sequence and timestamp.
    for i in 0..10u16 {
        let ts = 9_000_000 + i as u32 * 160;
        h.rtp_in(8, i == 0, 40000 + i, ts, 2, &[0xD5; 160]);
        h.run_for(5);
    }
    h.run_for(400);
    assert_eq!(
        h.take_audio().len(),
        20,
        "no loss invented across the change"
    );
    let stats = h.close();
    assert_eq!(stats.ssrc_changes, 1);
    assert_eq!(stats.remote_ssrc, Some(2));
    assert_eq!(stats.packets_lost, 0);
    assert_eq!(stats.packets_expected, 10, "counted for the current source");
}

#[test]
fn an_audio_sink_takes_the_frames_in_place_of_events() {
    let mut h = Harness::pcmu();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let sink = frames.clone();
    h.command(Command::CallerAudio(CallerAudio::Sink(Box::new(
        move |samples: &[i16]| sink.lock().unwrap().push(samples.to_vec()),
    ))));
    for i in 0..5u16 {
        h.rtp_in(0, i == 0, 100 + i, u32::from(i) * 160, 7, &[0x9f; 160]);
    }
    let frames = frames.lock().unwrap();
    assert_eq!(
        frames.len(),
        5,
        "each frame reaches the sink as its packet arrives"
    );
    let expected = g711::ulaw_decode(0x9f);
    assert!(frames.iter().all(|f| f.len() == 160 && f[0] == expected));
    h.run_for(100);
    assert!(
        h.take_audio().is_empty(),
        "no audio events once the sink is set"
    );
}

/// Opus with losses: the engine conceals from the next packet's FEC or PLC and the output
/// stays continuous at the requested rate.
#[test]
fn opus_losses_are_concealed_continuously() {
    let config = MediaConfig {
        inbound_rate: 16000,
        ..config(30_000)
    };
    let mut h = Harness::new(config, negotiated(PEER, Codec::Opus));
    let mut encoder = new_encoder(Codec::Opus).unwrap();
    for i in 0..50u32 {
        let pcm: Vec<i16> = (0..960)
            .map(|k| {
                (((i * 960 + k) as f32 * 2.0 * std::f32::consts::PI * 300.0 / 48000.0).sin()
                    * 8000.0) as i16
            })
            .collect();
        let mut payload = Vec::new();
        encoder.encode(&pcm, &mut payload).unwrap();
        h.run_until(h.at(20 * i as u64));
        if i % 10 == 5 {
            continue;
        }
        h.rtp_in(111, i == 0, i as u16, i * 960, 3, &payload);
    }
    h.run_until(h.at(1500));
    let frames = h.take_audio();
    // One 20 ms frame per packet, lost ones concealed (without concealment: 45); the last
    // frame may still sit in the 48k -> 16k filter, which releases it with the next audio.
    assert!((49..=50).contains(&frames.len()), "{} frames", frames.len());
    assert!(frames.iter().all(|f| f.samples.len() == 320));
    let stats = h.close();
    assert_eq!(stats.packets_lost, 5);
    assert!(stats.concealed_ms >= 100, "{stats:?}");
}

#[test]
fn dtmf_is_received_once_with_its_duration() {
    let mut h = Harness::pcmu();
    // PT 120 (telephone-event/8000 as baresip offers it), with three end packets.
    for (k, dur, end) in [
        (0, 160u16, false),
        (1, 320, false),
        (2, 480, true),
        (3, 480, true),
        (4, 480, true),
    ] {
        let te = TelephoneEvent {
            event: 9,
            end,
            volume: 10,
            duration: dur,
        };
        h.rtp_in(120, k == 0, 100 + k, 8000, 5, &te.to_bytes());
        h.run_for(20);
    }
    h.run_for(2000);
    let digits: Vec<_> = h
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            MediaEvent::Dtmf(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(
        digits,
        [DtmfEvent {
            digit: '9',
            duration_ms: 60,
            source: DtmfSource::Rtp
        }]
    );
    assert_eq!(h.published.dtmf_events_received, 1);
}

/// A digit whose end packets are all lost still ends, when its packets stop coming.
#[test]
fn a_digit_without_end_packets_ends_on_its_deadline() {
    let mut h = Harness::pcmu();
    for k in 0..3u16 {
        let te = TelephoneEvent {
            event: 5,
            end: false,
            volume: 10,
            duration: 160 * (k + 1),
        };
        h.rtp_in(101, k == 0, 10 + k, 16_000, 5, &te.to_bytes());
        h.run_for(20);
    }
    let deadline = h.engine.dtmf_rx.next_deadline().expect("a digit is open");
    assert!(deadline > h.now, "it waits for more packets");
    let dtmf = |h: &Harness| {
        h.events
            .iter()
            .filter(|(_, e)| matches!(e, MediaEvent::Dtmf(_)))
            .count()
    };
    h.run_until(deadline - Duration::from_millis(1));
    assert_eq!(dtmf(&h), 0);
    h.run_until(deadline);
    assert_eq!(dtmf(&h), 1, "reported at the deadline");
    assert!(matches!(&h.events.last().unwrap().1, MediaEvent::Dtmf(d) if d.digit == '5'));
}

/// Symmetric RTP: the first source is latched; another is refused while it talks and taken
/// once it has been silent for two seconds. STUN checks and rtcp-mux reports on the RTP port
/// are not media and not errors.
#[test]
fn the_first_source_is_latched_and_replaced_only_after_silence() {
    let mut h = Harness::pcmu();
    let other: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    h.rtp_in(0, true, 1, 0, 7, &[0x90; 160]);
    h.run_for(20);
    h.receive_on(Socket::Rtp, &rtp(0, false, 2, 160, 7, &[0x90; 160]), other);
    assert_eq!(h.engine.stats().foreign_packets, 1);
    h.run_for(2000);
    assert!(h.rtp.iter().rev().take(5).all(|p| p.dest == PEER));
    h.receive_on(Socket::Rtp, &rtp(0, false, 3, 320, 7, &[0x90; 160]), other);
    assert_eq!(h.engine.stats().foreign_packets, 1, "the peer fell silent");
    h.run_for(40);
    assert!(h.rtp.last().is_some_and(|p| p.dest == other), "re-latched");

    let mut stun = vec![0u8; 20];
    stun[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
    h.receive_on(Socket::Rtp, &stun, other);
    let rr = crate::media::rtcp::build_report(7, None, &[], "peer");
    h.receive_on(Socket::Rtp, &rr, other);
    let stats = h.engine.stats();
    assert_eq!((stats.malformed_packets, stats.rtcp_received), (0, 1));
    h.receive_on(Socket::Rtp, &[0x80, 0], other);
    assert_eq!(h.engine.stats().malformed_packets, 1);
}

/// No RTP for the media timeout ends the engine, exactly then.
#[test]
fn media_timeout_stops_the_engine_at_its_deadline() {
    let mut h = Harness::new(config(200), negotiated(PEER, Codec::Pcmu));
    h.run_for(100);
    h.rtp_in(0, true, 1, 0, 7, &[0x90; 160]);
    assert_eq!(
        h.engine.deadline(),
        h.at(120),
        "the next packet slot comes first"
    );
    h.run_until(h.at(299));
    assert!(!h.stopped);
    h.run_until(h.at(300));
    assert!(h.stopped, "200 ms after the last packet");
    let (at, last) = h.events.last().unwrap();
    assert_eq!(*at, Duration::from_millis(300));
    assert_eq!(
        *last,
        MediaEvent::Timeout {
            silent_for: Duration::from_millis(200)
        }
    );
}

#[test]
fn hold_stops_sending_and_suspends_the_timeout() {
    let mut media = negotiated(PEER, Codec::Pcmu);
    let mut h = Harness::new(config(300), media.clone());
    h.run_for(40);
    assert!(!h.take_sent().is_empty(), "sending while sendrecv");
    media.direction = Direction::Inactive;
    h.command(Command::Update(Box::new(media.clone())));
    h.run_for(800);
    assert!(h.take_sent().is_empty(), "nothing sent on hold");
    assert!(
        !h.events
            .iter()
            .any(|(_, e)| matches!(e, MediaEvent::Timeout { .. })),
        "no timeout on hold"
    );
    assert!(!h.stopped);
    // Resume: packets flow again, and the timeout applies again, from the resume.
    media.direction = Direction::SendRecv;
    h.command(Command::Update(Box::new(media)));
    let resumed = h.now;
    h.run_for(40);
    assert!(!h.take_sent().is_empty(), "sending after resume");
    h.run_until(resumed + Duration::from_millis(300));
    assert!(h.stopped, "the timeout counts from the resume");
    let stats = h.close();
    assert!(stats.packets_sent > 0);
}
