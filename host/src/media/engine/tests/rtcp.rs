//! RTCP on the fake clock: reports on their interval, what they say, and what the peer's say.

use super::*;
use crate::media::rtcp::{self, ReportBlock, RtcpPacket, SenderInfo};
use crate::media::session::SilenceMode;

fn rtcp_every(ms: u64, silence: SilenceMode) -> MediaConfig {
    MediaConfig {
        rtcp_interval: Duration::from_millis(ms),
        silence,
        ..config(30_000)
    }
}

/// The engine sends SR + SDES to the peer's RTCP port on its interval, with a report block
/// about the peer's stream; the peer's RR gives us its view and the round-trip time.
#[test]
fn rtcp_reports_both_ways() {
    let config = rtcp_every(200, SilenceMode::SendSilence);
    let mut h = Harness::new(config, negotiated(PEER, Codec::Pcmu));
    for i in 0..5u16 {
        // Sequence gap: packet 2 never sent.
        if i != 2 {
            h.rtp_in(0, i == 0, i, i as u32 * 160, 0x1234, &[0xFF; 160]);
        }
    }
    h.run_until(h.at(199));
    assert!(h.rtcp.is_empty(), "not before the interval");
    h.run_until(h.at(200));
    let (at, dest, report) = h.rtcp.pop().expect("an RTCP report at the interval");
    assert_eq!((at, dest), (Duration::from_millis(200), PEER_RTCP));
    let packets = rtcp::parse_compound(&report).unwrap();
    let (our_ssrc, info, block) = match &packets[0] {
        RtcpPacket::SenderReport { ssrc, info, blocks } => (*ssrc, *info, blocks[0]),
        other => panic!("expected SR, got {other:?}"),
    };
    assert_eq!(packets[1], RtcpPacket::Other(202), "SDES follows");
    assert_eq!(our_ssrc, IDS.ssrc);
    assert_eq!(info.packets, 11, "the packets of 200 ms, both ends counted");
    assert_eq!(info.octets, 11 * 160);
    assert_eq!(block.ssrc, 0x1234);
    assert_eq!(block.cumulative_lost, 1);
    assert_eq!(block.highest_seq, 4);
    assert_eq!(block.fraction_lost, 51, "1 of 5 expected lost (256 / 5)");
    // The peer answers 30 ms later with an RR about our stream, echoing our SR time (no delay
    // of its own counted): the round trip is those 30 ms.
    h.run_until(h.at(230));
    let rr = rtcp::build_report(
        0x1234,
        None,
        &[ReportBlock {
            ssrc: our_ssrc,
            fraction_lost: 128,
            jitter: 80,
            last_sr: rtcp::ntp_middle(info.ntp),
            ..ReportBlock::default()
        }],
        "peer",
    );
    h.receive_on(Socket::Rtcp, &rr, PEER_RTCP);
    h.run_until(h.at(400));
    let stats: Vec<&MediaStats> = h
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            MediaEvent::Stats(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(stats.len(), 2, "one statistics event per report");
    let stats = stats[1];
    assert_eq!(stats.remote_fraction_lost, Some(0.5));
    assert_eq!(stats.remote_jitter_ms, Some(10.0));
    let rtt = stats.round_trip_ms.expect("rtt from LSR");
    assert!((rtt - 30.0).abs() < 0.1, "rtt {rtt}");
    assert!(stats.rtcp_sent >= 1 && stats.rtcp_received >= 1);
}

/// An engine that has sent nothing reports as a receiver (RR, no sender info), on its
/// interval, and tells the peer how long ago its last SR came (DLSR).
#[test]
fn a_silent_engine_sends_receiver_reports_with_the_delay_since_the_peers_sr() {
    let mut h = Harness::new(
        rtcp_every(1000, SilenceMode::Suppress),
        negotiated(PEER, Codec::Pcmu),
    );
    h.rtp_in(0, true, 7, 0, 0x77, &[0xFF; 160]);
    h.run_until(h.at(250));
    let sr = rtcp::build_report(
        0x77,
        Some(SenderInfo {
            ntp: 0x1234_5678_9ABC_0000,
            rtp_timestamp: 0,
            packets: 1,
            octets: 160,
        }),
        &[],
        "peer",
    );
    h.receive_on(Socket::Rtcp, &sr, PEER_RTCP);
    h.run_until(h.at(3000));
    let times: Vec<Duration> = h.rtcp.iter().map(|r| r.0).collect();
    assert_eq!(
        times,
        [1000, 2000, 3000].map(Duration::from_millis),
        "one report per interval"
    );
    assert!(h.rtp.is_empty(), "nothing to say, nothing sent");
    match &rtcp::parse_compound(&h.rtcp[0].2).unwrap()[0] {
        RtcpPacket::ReceiverReport { ssrc, blocks } => {
            assert_eq!(*ssrc, IDS.ssrc);
            assert_eq!(blocks[0].ssrc, 0x77);
            assert_eq!(blocks[0].last_sr, 0x5678_9ABC);
            // 750 ms in units of 1/65536 s.
            assert_eq!(blocks[0].delay_since_last_sr, 49152);
        }
        other => panic!("expected RR, got {other:?}"),
    }
}

/// Without an RTCP address in the SDP, reports go to the port above the latched RTP source,
/// until the peer's own RTCP shows where it really is.
#[test]
fn reports_follow_the_peers_rtcp_source() {
    let mut media = negotiated("127.0.0.1:9".parse().unwrap(), Codec::Pcmu);
    media.remote_rtcp = None;
    let mut h = Harness::new(rtcp_every(100, SilenceMode::SendSilence), media);
    h.rtp_in(0, true, 1, 0, 5, &[0xFF; 160]);
    h.run_until(h.at(100));
    assert_eq!(h.rtcp.last().unwrap().1, PEER_RTCP, "RTP port + 1");
    let elsewhere: SocketAddr = "127.0.0.1:40555".parse().unwrap();
    let rr = rtcp::build_report(5, None, &[], "peer");
    h.receive_on(Socket::Rtcp, &rr, elsewhere);
    h.run_until(h.at(200));
    assert_eq!(h.rtcp.last().unwrap().1, elsewhere);
}
