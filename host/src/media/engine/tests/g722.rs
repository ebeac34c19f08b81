//! G.722 through the engine: 16 kHz audio both ways on an 8000/s RTP clock.

use super::*;
use crate::media::codec::{new_decoder, new_encoder};

fn tone(hz: f32, n: usize, offset: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = (i + offset) as f32 / 16000.0;
            ((2.0 * std::f32::consts::PI * hz * t).sin() * 8000.0) as i16
        })
        .collect()
}

/// Audio queued at 16 kHz leaves as PT 9 packets of 160 bytes (320 samples) whose timestamps
/// step by 160 (RFC 3551 §4.5.2), and decodes back to the tone at 16 kHz: nothing on the way
/// went through 8 kHz.
#[test]
fn sends_16k_audio_on_an_8k_rtp_clock() {
    let mut h = Harness::new(config(30_000), negotiated(PEER, Codec::G722));
    // A 6 kHz tone exists only in the upper band: narrowband on the way would remove it.
    h.queue_audio(&tone(6000.0, 16000, 0), 16000);
    h.run_until_sent_to_peer(40);
    let packets: Vec<&Sent> = h.rtp.iter().filter(|p| p.dest == PEER).collect();
    assert!(packets.iter().all(|p| p.pt == 9 && p.payload.len() == 160));
    for w in packets.windows(2) {
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160), "8000/s timestamps");
    }
    let mut decoder = new_decoder(Codec::G722).unwrap();
    let mut heard = Vec::new();
    for p in &packets {
        decoder.decode(&p.payload, &mut heard).unwrap();
    }
    assert_eq!(heard.len(), 40 * 320, "16 kHz: 320 samples a packet");
    let rms =
        |s: &[i16]| (s.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    let level = rms(&heard[3200..]);
    assert!(level > 4000.0, "the 6 kHz tone arrives: rms {level:.0}");
}

/// PT 9 packets in (timestamps 160 apart) give 20 ms frames at the requested 16 kHz, the
/// upper band intact, and a lost packet is concealed at 16 kHz.
#[test]
fn receives_16k_audio_with_concealment() {
    let config = MediaConfig {
        inbound_rate: 16000,
        ..config(30_000)
    };
    let mut h = Harness::new(config, negotiated(PEER, Codec::G722));
    let mut encoder = new_encoder(Codec::G722).unwrap();
    for i in 0..50u32 {
        let mut payload = Vec::new();
        encoder
            .encode(&tone(6000.0, 320, i as usize * 320), &mut payload)
            .unwrap();
        h.run_until(h.at(20 * i as u64));
        if i == 25 {
            continue;
        }
        h.rtp_in(9, i == 0, i as u16, i * 160, 3, &payload);
    }
    h.run_until(h.at(1500));
    let frames = h.take_audio();
    assert_eq!(
        frames.len(),
        50,
        "one frame a packet, the lost one concealed"
    );
    assert!(
        frames
            .iter()
            .all(|f| f.samples.len() == 320 && f.sample_rate == 16000)
    );
    let loud = frames[5..]
        .iter()
        .filter(|f| f.samples.iter().any(|s| s.abs() > 4000))
        .count();
    assert!(
        loud >= 44,
        "the 6 kHz tone comes through: {loud} loud frames"
    );
    let stats = h.close();
    assert_eq!(stats.packets_lost, 1);
    assert_eq!(stats.concealed_ms, 20);
    // 8000/s timestamps 20 ms apart: no jitter measured.
    assert!(stats.jitter_ms < 1.0, "{stats:?}");
}
