//! Engine to caller: pacing, talkspurts, silence, DTMF out, the echo line and recording.

use super::*;
use crate::media::dtmf::TelephoneEvent;
use crate::media::engine::CallerAudio;
use crate::media::g711;
use crate::media::session::SilenceMode;

/// Queued 24 kHz audio leaves as paced PCMU with continuous sequence numbers and timestamps,
/// marker on the first packet, silence after the queue runs dry; the engine latches to the
/// peer's real source address instead of the SDP one.
#[test]
fn paced_send_with_latching_flush_and_timestamp_continuity() {
    // SDP points somewhere else (a NATed private address); symmetric RTP fixes it.
    let mut media = negotiated("127.0.0.1:9".parse().unwrap(), Codec::Pcmu);
    media.remote_rtcp = None;
    let mut h = Harness::new(config(30_000), media);
    h.rtp_in(0, true, 1, 0, 77, &[0xFF; 160]);
    h.run_for(50);
    let tone: Vec<i16> = (0..24000)
        .map(|i| ((i as f32 * 0.1).sin() * 8000.0) as i16)
        .collect();
    h.queue_audio(&tone, 24000);
    h.run_until_sent_to_peer(30);
    let report = lock(&h.shared).queue.flush();
    assert!(
        report.played_ms > 0 && report.played_ms < 1000,
        "{report:?}"
    );
    assert!(report.played_ms + report.discarded_ms >= 990, "{report:?}");
    h.run_until_sent_to_peer(40);
    let packets: Vec<Sent> = h.rtp.iter().filter(|p| p.dest == PEER).cloned().collect();
    assert_eq!(packets.len(), 40, "packets reach the latched source");
    for w in packets.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "sequence continuous");
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160), "timestamp continuous");
        assert_eq!(w[1].ssrc, w[0].ssrc, "one SSRC");
    }
    assert!(packets.iter().all(|p| p.pt == 0 && p.payload.len() == 160));
    let is_audio = |p: &Sent| p.payload.iter().any(|&b| b != g711::ULAW_SILENCE);
    let first_audio = packets.iter().position(is_audio).expect("audio was sent");
    let last_audio = packets.iter().rposition(is_audio).unwrap();
    assert!(
        packets[first_audio..=last_audio]
            .windows(2)
            .all(|w| w[1].at - w[0].at == Duration::from_millis(20)),
        "paced"
    );
    assert_eq!(
        packets[first_audio].at,
        Duration::from_millis(50),
        "the talkspurt starts when the audio is queued"
    );
    let markers: Vec<usize> = (0..packets.len()).filter(|&i| packets[i].marker).collect();
    assert_eq!(
        markers,
        [first_audio],
        "marker on the talkspurt's first packet only"
    );
    // After the flush only silence goes out.
    let last = packets.last().unwrap();
    assert!(last.payload.iter().all(|&b| b == g711::ULAW_SILENCE));
    assert!(packets.iter().any(is_audio));
    assert_eq!(lock(&h.shared).queue.queued_ms(), 0);
    // The call layer hears when the talkspurt started and when the line went idle.
    let playout: Vec<(Duration, &str)> = h
        .events
        .iter()
        .filter_map(|(at, e)| match e {
            MediaEvent::PlayoutStarted { .. } => Some((*at, "started")),
            MediaEvent::PlayoutIdle => Some((*at, "idle")),
            _ => None,
        })
        .collect();
    assert_eq!(playout.len(), 2, "{playout:?}");
    assert_eq!(playout[0], (Duration::from_millis(50), "started"));
    assert_eq!(playout[1].1, "idle");
}

/// With steady silence the engine's deadline is its next packet slot, 20 ms apart.
#[test]
fn the_deadline_is_the_next_packet_slot() {
    let mut h = Harness::pcmu();
    assert_eq!(h.rtp.len(), 1, "the first packet goes out at the start");
    for slot in 1..=5 {
        assert_eq!(h.engine.deadline(), h.at(20 * slot));
        h.run_until(h.at(20 * slot));
        assert_eq!(h.rtp.len(), 1 + slot as usize);
    }
}

/// A stalled process does not burst out the packets it missed: the timestamps jump over them.
#[test]
fn a_stall_skips_packets_and_keeps_timestamps_on_the_clock() {
    let mut h = Harness::pcmu();
    h.run_until(h.at(20));
    h.now = h.at(500);
    h.poll();
    let sent = h.take_sent();
    assert_eq!(sent.len(), 3, "one packet for the stall, not 24: {sent:?}");
    assert_eq!(sent[2].ts.wrapping_sub(sent[1].ts), 160);
    h.run_for(20);
    let next = h.take_sent();
    let elapsed = next[0].ts.wrapping_sub(sent[0].ts) / 160;
    assert!(elapsed >= 25, "timestamps kept time: {elapsed} packets");
}

#[test]
fn dtmf_is_sent_as_rfc4733_events_one_after_the_other() {
    let mut h = Harness::pcmu();
    assert!(h.send_dtmf("1x", 100).is_err(), "invalid digit rejected");
    h.send_dtmf("1#", 100).unwrap();
    let ends = |h: &Harness| {
        h.rtp
            .iter()
            .filter(|p| p.pt == 101 && TelephoneEvent::parse(&p.payload).unwrap().end)
            .count()
    };
    assert!(h.run_while_not(2000, |h| ends(h) >= 6), "dtmf packets");
    let events: Vec<(bool, u32, TelephoneEvent)> = h
        .rtp
        .iter()
        .filter(|p| p.pt == 101)
        .map(|p| (p.marker, p.ts, TelephoneEvent::parse(&p.payload).unwrap()))
        .collect();
    let first: Vec<_> = events.iter().filter(|e| e.2.event == 1).collect();
    let second: Vec<_> = events.iter().filter(|e| e.2.event == 11).collect();
    assert_eq!(first.len(), 7, "4 updates + 3 end packets");
    assert!(first[0].0 && !first[1].0, "marker on the first packet only");
    assert!(
        first.iter().all(|e| e.1 == first[0].1),
        "one timestamp per event"
    );
    assert_eq!(first.iter().filter(|e| e.2.end).count(), 3);
    assert_eq!(first.last().unwrap().2.duration, 800);
    assert!(second[0].1 > first[0].1, "second digit starts later");
    h.run_for(100);
    assert_eq!(h.published.dtmf_events_sent, 2);
}

/// Silence suppression: nothing is sent while the queue is empty, and the first packet of
/// the next talkspurt carries the marker bit and a timestamp that kept running meanwhile.
#[test]
fn suppressed_silence_keeps_timestamps_running() {
    let config = MediaConfig {
        silence: SilenceMode::Suppress,
        ..config(30_000)
    };
    let mut h = Harness::new(config, negotiated(PEER, Codec::Pcmu));
    h.queue_audio(&[1000; 320], 8000);
    h.run_for(100);
    let talk = h.take_sent();
    let (first, second) = (&talk[0], &talk[1]);
    assert_eq!(talk.len(), 2);
    assert!(
        first.marker && !second.marker,
        "marker starts the talkspurt"
    );
    assert_eq!(second.ts, first.ts.wrapping_add(160));
    assert!(
        h.engine.deadline() >= h.at(1000),
        "an idle line sleeps (until the media timeout or RTCP)"
    );
    h.run_for(300);
    assert!(
        h.take_sent().is_empty(),
        "nothing sent while there is nothing to say"
    );
    h.queue_audio(&[1000; 160], 8000);
    let resumed = h.take_sent().pop().expect("queued audio goes out at once");
    assert!(resumed.marker, "new talkspurt marked");
    assert_eq!(
        resumed.seq,
        second.seq.wrapping_add(1),
        "no sequence gap for unsent packets"
    );
    let elapsed_ticks = resumed.ts.wrapping_sub(second.ts) / 160;
    assert!(
        elapsed_ticks >= 15,
        "timestamp advanced through the silence: {elapsed_ticks} ticks"
    );
    assert_eq!(
        resumed.ts.wrapping_sub(second.ts) % 160,
        0,
        "still on the packet grid"
    );
    // A digit queued on the sleeping line wakes it.
    h.run_for(100);
    assert!(h.take_sent().is_empty(), "idle again after the talkspurt");
    h.send_dtmf("5", 60).unwrap();
    assert!(
        h.run_while_not(2000, |h| !h.rtp.is_empty()),
        "a digit wakes the idle line"
    );
    let digit = &h.rtp[0];
    assert_eq!(digit.pt, 101);
    assert_eq!(
        digit.ts.wrapping_sub(resumed.ts) % 160,
        0,
        "the digit starts on the packet grid"
    );
}

#[test]
fn loopback_plays_the_callers_audio_back_in_order() {
    let mut h = Harness::pcmu();
    h.command(Command::CallerAudio(CallerAudio::Loopback));
    for i in 0..5u8 {
        let (seq, ts) = (100 + u16::from(i), u32::from(i) * 160);
        h.rtp_in(0, i == 0, seq, ts, 7, &[0x90 + i; 160]);
    }
    h.run_for(200);
    // Silence may come before and after; the five frames come back in order, the first
    // opening a talkspurt, in consecutive packets.
    let echoed: Vec<Sent> = h
        .take_sent()
        .into_iter()
        .filter(|p| p.payload[0] != 0xff)
        .collect();
    assert!(echoed.iter().all(|p| p.pt == 0));
    assert!(
        echoed
            .iter()
            .all(|p| p.payload.iter().all(|&b| b == p.payload[0])),
        "one frame per packet"
    );
    assert_eq!(
        echoed.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        [0x90, 0x91, 0x92, 0x93, 0x94]
    );
    assert!(echoed[0].marker && echoed[1..].iter().all(|p| !p.marker));
    assert!(
        echoed
            .windows(2)
            .all(|w| w[1].seq == w[0].seq.wrapping_add(1))
    );
    assert!(
        h.take_audio().is_empty(),
        "no audio events while looping back"
    );
}

/// The echo line sends G.711 back byte for byte; a lost packet is concealed in its place,
/// from the audio echoed just before it (the decoder never saw that audio).
#[test]
fn loopback_echoes_g711_as_it_came_and_conceals_a_loss_in_place() {
    let mut h = Harness::pcmu();
    h.command(Command::CallerAudio(CallerAudio::Loopback));
    for i in [0u8, 1, 3, 4] {
        // Both μ-law codes for zero (0xff, 0x7f) would not survive a decode and encode.
        let mut payload = [0x90 + i; 160];
        payload[0] = 0x7f;
        let (seq, ts) = (200 + u16::from(i), u32::from(i) * 160);
        h.rtp_in(0, i == 0, seq, ts, 7, &payload);
    }
    h.run_for(300);
    let echoed: Vec<Vec<u8>> = h
        .take_sent()
        .into_iter()
        .map(|p| p.payload)
        .filter(|p| p.iter().any(|&b| b != 0xff))
        .collect();
    assert_eq!(
        echoed.len(),
        5,
        "five packets of audio, the concealed one not silent"
    );
    for (packet, i) in [(0, 0u8), (1, 1), (3, 3), (4, 4)] {
        assert_eq!(
            echoed[packet][0], 0x7f,
            "packet {i} came back as it was sent"
        );
        assert!(echoed[packet][1..].iter().all(|&b| b == 0x90 + i));
    }
    let concealed = &echoed[2];
    assert_eq!(
        concealed[1..80],
        [0x91; 79],
        "the first 10 ms repeat the audio before the loss at full level"
    );
    assert_ne!(concealed[159], 0x91, "then it fades");
}

/// Digits queued while the echo line is talking go out between echoed packets (an echo tick
/// skips the shared state until a digit is queued). The caller's packets come faster than they
/// go back, so that echo always waits when the digit is queued.
#[test]
fn digits_sent_during_an_echo_go_out_between_echoed_packets() {
    let mut h = Harness::pcmu();
    h.command(Command::CallerAudio(CallerAudio::Loopback));
    for i in 0..40u16 {
        h.rtp_in(0, i == 0, 300 + i, u32::from(i) * 160, 7, &[0x90; 160]);
        if i == 20 {
            h.send_dtmf("7", 100).unwrap();
        }
        h.run_for(5);
    }
    h.run_for(40 * 20 + 500);
    // Payload types in the order they came back (echo 0, telephone-event 101), silence left
    // out.
    let mut heard = Vec::new();
    for p in h.take_sent() {
        if p.pt == 101 {
            assert_eq!(TelephoneEvent::parse(&p.payload).unwrap().event, 7);
        }
        if p.pt == 101 || p.payload[0] == 0x90 {
            heard.push(p.pt);
        }
    }
    let first_digit = heard.iter().position(|&pt| pt == 101).expect("the digit");
    let after = &heard[first_digit..];
    let last_digit = after.iter().rposition(|&pt| pt == 101).unwrap();
    assert!(first_digit > 0, "echo before the digit: {heard:?}");
    assert_eq!(after[..=last_digit], [101; 7], "one whole event: {heard:?}");
    assert!(
        after[last_digit + 1..].contains(&0),
        "echo after the digit: {heard:?}"
    );
}

/// Each echoed packet goes out as soon as the previous one came back: up to 60 ms before its
/// slot on the engine's packet clock. Its echo must not wait for that slot.
#[test]
fn loopback_sends_each_packet_as_it_arrives() {
    let config = MediaConfig {
        silence: SilenceMode::Suppress,
        ..config(30_000)
    };
    let mut media = negotiated(PEER, Codec::Pcmu);
    media.ptime_ms = 60;
    let mut h = Harness::new(config, media);
    h.command(Command::CallerAudio(CallerAudio::Loopback));
    h.run_for(7);
    let mut delays = Vec::new();
    for i in 0..4u8 {
        let sent = h.now;
        let (seq, ts) = (10 + u16::from(i), u32::from(i) * 480);
        h.rtp_in(0, i == 0, seq, ts, 7, &[0x90 + i; 480]);
        assert!(h.run_while_not(2000, |h| !h.rtp.is_empty()), "the echo");
        let echo = h.take_sent().remove(0);
        assert_eq!(echo.payload, [0x90 + i; 480]);
        delays.push(h.now - sent);
    }
    let mut early = delays[1..].to_vec();
    early.sort();
    assert!(
        early[1] < Duration::from_millis(30),
        "echo delays {delays:?}"
    );
}

#[test]
fn records_both_directions_to_stereo_wav() {
    let dir = std::env::temp_dir().join(format!("sb-engine-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("call.wav");
    let mut h = Harness::pcmu();
    h.start_recording(&path);
    h.queue_audio(&vec![4000; 8000], 8000);
    for i in 0..25u16 {
        let caller = [g711::ulaw_encode(-3000); 160];
        h.rtp_in(0, i == 0, i, i as u32 * 160, 9, &caller);
        h.run_for(20);
    }
    h.close();
    let mut reader = hound::WavReader::open(&path).unwrap();
    assert_eq!(reader.spec().channels, 2);
    let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
    let left_caller = samples
        .iter()
        .step_by(2)
        .filter(|&&s| s == g711::ulaw_decode(g711::ulaw_encode(-3000)))
        .count();
    let right_agent = samples
        .iter()
        .skip(1)
        .step_by(2)
        .filter(|&&s| s == 4000)
        .count();
    assert_eq!(left_caller, 25 * 160, "caller audio on the left");
    // The audio went out from the start, at 0, 20, ..., 500 ms.
    assert_eq!(
        right_agent,
        26 * 160,
        "agent audio on the right, as it was sent"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
