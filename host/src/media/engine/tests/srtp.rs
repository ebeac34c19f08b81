//! SRTP in the engine: what it sends the peer decrypts, what the peer sends it plays, and what
//! fails authentication or is replayed is dropped, counted and never played.

use super::*;
use crate::media::g711;
use crate::media::srtp::{MasterKey, SrtpKeys, SrtpSession, Suite};

/// An engine on SRTP and the peer's side of the same keys.
fn srtp_pair(suite: Suite) -> (Harness, SrtpSession) {
    let (ours, theirs) = (MasterKey::random(), MasterKey::random());
    let mut media = negotiated(PEER, Codec::Pcmu);
    media.srtp = Some(SrtpKeys {
        suite,
        send: ours.clone(),
        recv: theirs.clone(),
    });
    let peer = SrtpSession::new(&SrtpKeys {
        suite,
        send: theirs,
        recv: ours,
    });
    (Harness::new(config(30_000), media), peer)
}

/// How many of `frames` carry the loud test tone (the others are silence or concealment).
fn loud(frames: &[AudioFrame]) -> usize {
    frames
        .iter()
        .filter(|f| f.samples.iter().any(|&s| s.abs() > 2000))
        .count()
}

fn protected(peer: &mut SrtpSession, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = rtp(0, seq == 1, seq, seq as u32 * 160, 0xABCD, payload);
    peer.protect_rtp(&mut p, 0).unwrap();
    p
}

#[test]
fn srtp_both_ways_drops_tampered_and_replayed_packets() {
    for suite in Suite::ALL {
        let (mut h, mut peer) = srtp_pair(suite);
        let level = g711::ulaw_encode(4000);
        for seq in 1..=5u16 {
            h.run_until(h.at(seq as u64 * 20));
            let datagram = protected(&mut peer, seq, &[level; 160]);
            h.receive_on(Socket::Rtp, &datagram, PEER);
            if seq == 3 {
                // The same packet again, then one with a byte of its payload flipped.
                h.receive_on(Socket::Rtp, &datagram, PEER);
            }
        }
        let mut tampered = protected(&mut peer, 6, &[level; 160]);
        tampered[40] ^= 0x01;
        h.receive_on(Socket::Rtp, &tampered, PEER);
        h.run_for(300);
        let frames = h.take_audio();
        assert_eq!(
            loud(&frames),
            5,
            "{suite:?}: the five good packets are played"
        );
        let stats = h.engine.stats().clone();
        assert_eq!(stats.srtp_replayed, 1, "{suite:?}");
        assert_eq!(stats.srtp_auth_failures, 1, "{suite:?}");

        // What the engine sends is SRTP the peer decrypts: the silence so far (which crossed
        // the sequence wrap, so the peer follows the roll-over counter), then queued audio.
        let mut plain = Vec::new();
        let mut decrypt = |h: &mut Harness, plain: &mut Vec<u8>| -> usize {
            let mut audio = 0;
            for sent in h.take_sent() {
                let mut datagram = rtp(sent.pt, sent.marker, sent.seq, sent.ts, sent.ssrc, &[]);
                datagram.extend_from_slice(&sent.payload);
                peer.unprotect_rtp(&datagram, plain)
                    .expect("the peer authenticates every packet");
                assert_eq!(plain.len(), 12 + 160);
                audio += usize::from(plain[12..].iter().any(|&b| b != g711::ULAW_SILENCE));
            }
            audio
        };
        assert_eq!(decrypt(&mut h, &mut plain), 0, "silence before the audio");
        h.queue_audio(&[3000; 1600], 8000);
        h.run_until_sent_to_peer(20);
        let audio = decrypt(&mut h, &mut plain);
        assert!(audio >= 5, "{suite:?}: the queued audio went out encrypted");
        // Its RTCP is SRTCP.
        h.run_for(6000);
        let (_, _, report) = h.rtcp.last().expect("an RTCP report").clone();
        peer.unprotect_rtcp(&report, &mut plain)
            .expect("the peer authenticates the report");
        assert!(matches!(plain[1], 200 | 201), "a report: {}", plain[1]);
    }
}

/// A re-INVITE's update: the same keys again (a hold or a resume) keep the context, so a
/// packet from before it is still a replay; a new key from the peer (RFC 4568 §7.1.4) starts a
/// new one, in which a packet under the old key fails authentication and is not played, and
/// packets under the new key play, from the same sequence number on.
#[test]
fn srtp_update_keeps_the_context_for_the_same_keys_and_follows_a_new_key() {
    let (mut h, mut peer) = srtp_pair(Suite::AesCm128HmacSha1_80);
    let level = g711::ulaw_encode(4000);
    let mut first = Vec::new();
    for seq in 1..=3u16 {
        h.run_until(h.at(seq as u64 * 20));
        let datagram = protected(&mut peer, seq, &[level; 160]);
        h.receive_on(Socket::Rtp, &datagram, PEER);
        first.push(datagram);
    }
    let media = h.engine.media().clone();
    h.command(Command::Update(Box::new(media.clone())));
    h.receive_on(Socket::Rtp, &first[1], PEER);
    assert_eq!(h.engine.stats().srtp_replayed, 1, "same keys, same context");

    let ours = media.srtp.as_ref().unwrap().send.clone();
    let new_key = MasterKey::random();
    let mut rekeyed = media;
    rekeyed.srtp.as_mut().unwrap().recv = new_key.clone();
    h.command(Command::Update(Box::new(rekeyed)));
    h.run_until(h.at(80));
    // Late, under the old key: refused (and silent, unlike the rest).
    let stale = protected(&mut peer, 4, &[g711::ulaw_encode(-9000); 160]);
    h.receive_on(Socket::Rtp, &stale, PEER);
    peer.rekey(&SrtpKeys {
        suite: Suite::AesCm128HmacSha1_80,
        send: new_key,
        recv: ours,
    });
    // The same sequence number again, under the new key: a new context has no replay list.
    for seq in 4..=7u16 {
        h.run_until(h.at(seq as u64 * 20));
        let datagram = protected(&mut peer, seq, &[level; 160]);
        h.receive_on(Socket::Rtp, &datagram, PEER);
    }
    h.run_for(300);
    let frames = h.take_audio();
    assert_eq!(
        loud(&frames),
        7,
        "three packets under the old key play, four under the new"
    );
    assert!(
        frames.iter().all(|f| f.samples.iter().all(|&s| s > -6000)),
        "the stale packet's audio is never played"
    );
    let stats = h.engine.stats();
    assert_eq!(stats.srtp_auth_failures, 1);
    assert_eq!(stats.srtp_replayed, 1);
    assert_eq!(stats.packets_received, 7);
}
