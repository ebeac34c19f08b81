//! Sessions on real sockets: the shell, its media thread and the handle together.

use super::*;
use crate::media::codec::Codec;
use crate::media::ports::test_port_range;
use crate::media::rtcp::{self, ReportBlock, RtcpPacket};
use crate::media::rtp::{RtpPacket, is_rtcp};
use crate::media::test_support::{self, config};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};

fn pool(pairs: u16) -> PortPool {
    let (start, end) = test_port_range(pairs);
    PortPool::new(start, end).unwrap()
}

fn negotiated(peer: SocketAddr, codec: Codec) -> NegotiatedMedia {
    let rtcp = SocketAddr::new(peer.ip(), peer.port() + 1);
    test_support::negotiated(peer, rtcp, codec)
}

struct Peer {
    socket: tokio::net::UdpSocket,
    target: SocketAddr,
}

impl Peer {
    async fn new(session_port: u16) -> Peer {
        Peer {
            socket: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            target: SocketAddr::from(([127, 0, 0, 1], session_port)),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    async fn send(&self, pt: u8, marker: bool, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) {
        let mut buf = Vec::new();
        RtpPacket {
            payload_type: pt,
            marker,
            sequence: seq,
            timestamp: ts,
            ssrc,
            payload,
        }
        .write(&mut buf)
        .unwrap();
        self.socket.send_to(&buf, self.target).await.unwrap();
    }

    /// Next RTP packet from the session (RTCP and timeouts skipped), as owned parts.
    async fn recv(&self) -> Option<(u8, bool, u16, u32, u32, Vec<u8>)> {
        let mut buf = [0u8; 2048];
        loop {
            let (n, _) =
                tokio::time::timeout(Duration::from_secs(2), self.socket.recv_from(&mut buf))
                    .await
                    .ok()?
                    .ok()?;
            if is_rtcp(&buf[..n]) {
                continue;
            }
            let p = RtpPacket::parse(&buf[..n]).ok()?;
            return Some((
                p.payload_type,
                p.marker,
                p.sequence,
                p.timestamp,
                p.ssrc,
                p.payload.to_vec(),
            ));
        }
    }
}

async fn collect_audio(session: &mut MediaSession, until: Duration) -> Vec<AudioFrame> {
    let mut frames = Vec::new();
    let deadline = Instant::now() + until;
    while let Ok(Some(event)) = tokio::time::timeout_at(deadline, session.recv()).await {
        if let MediaEvent::Audio(f) = event {
            frames.push(f);
        }
    }
    frames
}

#[tokio::test]
async fn loopback_sends_each_packet_as_it_arrives() {
    let pool = pool(2);
    let config = MediaConfig {
        silence: SilenceMode::Suppress,
        ..config(30_000)
    };
    let pending = PendingMedia::bind(&pool, config).unwrap();
    let peer = Peer::new(pending.port()).await;
    let mut media = negotiated(peer.addr(), Codec::Pcmu);
    media.ptime_ms = 60;
    let session = pending.start(&media).unwrap();
    session.loop_back().unwrap();
    // Each packet goes out as soon as the previous one came back: up to 60 ms before its
    // slot on the engine's packet clock. Its echo must not wait for that slot.
    let mut delays = Vec::new();
    for i in 0..4u8 {
        let sent = Instant::now();
        let (seq, ts) = (10 + u16::from(i), u32::from(i) * 480);
        peer.send(0, i == 0, seq, ts, 7, &[0x90 + i; 480]).await;
        let (_, _, _, _, _, payload) = peer.recv().await.expect("the echo");
        assert_eq!(payload, [0x90 + i; 480]);
        delays.push(sent.elapsed());
    }
    let mut early = delays[1..].to_vec();
    early.sort();
    assert!(
        early[1] < Duration::from_millis(30),
        "echo delays {delays:?}"
    );
    session.close().await;
}

#[tokio::test]
async fn media_timeout_ends_the_session_and_returns_the_port() {
    let pool = pool(2);
    let pending = PendingMedia::bind(&pool, config(200)).unwrap();
    let port = pending.port();
    let peer = Peer::new(port).await;
    let mut session = pending
        .start(&negotiated(peer.addr(), Codec::Pcmu))
        .unwrap();
    assert_eq!(pool.leased(), 1);
    let started = Instant::now();
    let mut timeout = None;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), session.recv()).await {
        if let MediaEvent::Timeout { silent_for } = event {
            timeout = Some(silent_for);
        }
    }
    let silent_for = timeout.expect("timeout event");
    assert!(silent_for >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(3));
    // The task ended by itself: it refuses commands, its sockets are closed and the pair is
    // back in the pool.
    assert!(matches!(session.loop_back(), Err(MediaError::Closed)));
    assert_eq!(pool.leased(), 0);
    assert!(
        StdUdpSocket::bind(("127.0.0.1", port)).is_ok(),
        "RTP port free again"
    );
    session.close().await;
}

/// RTCP: the session sends SR + SDES to the peer's RTCP port on its interval, with a report
/// block about the peer's stream; the peer's RR gives us its view and the round-trip time.
#[tokio::test]
async fn rtcp_reports_both_ways() {
    let pool = pool(2);
    let config = MediaConfig {
        rtcp_interval: Duration::from_millis(200),
        ..config(30_000)
    };
    let pending = PendingMedia::bind(&pool, config).unwrap();
    let our_rtcp = SocketAddr::from(([127, 0, 0, 1], pending.port() + 1));
    let peer = Peer::new(pending.port()).await;
    let peer_rtcp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut media = negotiated(peer.addr(), Codec::Pcmu);
    media.remote_rtcp = Some(peer_rtcp.local_addr().unwrap());
    let mut session = pending.start(&media).unwrap();
    for i in 0..5u16 {
        // Sequence gap: packet 2 never sent.
        if i != 2 {
            peer.send(0, i == 0, i, i as u32 * 160, 0x1234, &[0xFF; 160])
                .await;
        }
    }
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), peer_rtcp.recv_from(&mut buf))
        .await
        .expect("an RTCP report within the interval")
        .unwrap();
    let packets = rtcp::parse_compound(&buf[..n]).unwrap();
    let (our_ssrc, info, block) = match &packets[0] {
        RtcpPacket::SenderReport { ssrc, info, blocks } => (*ssrc, *info, blocks[0]),
        other => panic!("expected SR, got {other:?}"),
    };
    assert_eq!(packets[1], RtcpPacket::Other(202), "SDES follows");
    assert!(info.packets > 0);
    assert_eq!(block.ssrc, 0x1234);
    assert_eq!(block.cumulative_lost, 1);
    assert_eq!(block.highest_seq, 4);
    assert_eq!(block.fraction_lost, 51, "1 of 5 expected lost (256 / 5)");
    // Peer answers with an RR about our stream, echoing our SR time (zero delay).
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
    peer_rtcp.send_to(&rr, our_rtcp).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut stats_events = 0;
    let mut stats = session.stats();
    while stats.round_trip_ms.is_none() && Instant::now() < deadline {
        if let Ok(Some(MediaEvent::Stats(s))) =
            tokio::time::timeout_at(deadline, session.recv()).await
        {
            stats_events += 1;
            stats = s;
        }
    }
    assert!(stats_events > 0);
    assert_eq!(stats.remote_fraction_lost, Some(0.5));
    assert_eq!(stats.remote_jitter_ms, Some(10.0));
    let rtt = stats.round_trip_ms.expect("rtt from LSR");
    assert!((0.0..1000.0).contains(&rtt), "rtt {rtt}");
    assert!(stats.rtcp_sent >= 1 && stats.rtcp_received >= 1);
    session.close().await;
}

#[tokio::test]
async fn dropping_frees_the_ports() {
    let pool = pool(2);
    let pending = PendingMedia::bind(&pool, config(30_000)).unwrap();
    assert_eq!(pool.leased(), 1);
    drop(pending);
    assert_eq!(
        pool.leased(),
        0,
        "an unstarted session returns its pair at once"
    );
    let pending = PendingMedia::bind(&pool, config(30_000)).unwrap();
    let port = pending.port();
    let mut session = pending
        .start(&negotiated("127.0.0.1:9".parse().unwrap(), Codec::Pcmu))
        .unwrap();
    let mut events = session.take_events().unwrap();
    assert!(session.recv().await.is_none(), "events were taken");
    drop(session);
    // The aborted task drops its sockets and lease; the event stream ends.
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while events.recv().await.is_some() {}
    })
    .await;
    assert!(ended.is_ok());
    assert_eq!(pool.leased(), 0);
    assert!(StdUdpSocket::bind(("127.0.0.1", port)).is_ok());
    assert!(StdUdpSocket::bind(("127.0.0.1", port + 1)).is_ok());
}

#[tokio::test]
async fn opus_call_roundtrip_between_two_sessions() {
    let pool = pool(4);
    let a = PendingMedia::bind(
        &pool,
        MediaConfig {
            inbound_rate: 16000,
            ..config(30_000)
        },
    )
    .unwrap();
    let b = PendingMedia::bind(
        &pool,
        MediaConfig {
            inbound_rate: 16000,
            ..config(30_000)
        },
    )
    .unwrap();
    let a_addr = SocketAddr::from(([127, 0, 0, 1], a.port()));
    let b_addr = SocketAddr::from(([127, 0, 0, 1], b.port()));
    let a = a.start(&negotiated(b_addr, Codec::Opus)).unwrap();
    let mut b = b.start(&negotiated(a_addr, Codec::Opus)).unwrap();
    let tone: Vec<i16> = (0..16000)
        .map(|i| ((i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 16000.0).sin() * 10000.0) as i16)
        .collect();
    a.queue_audio(&tone, 16000).unwrap();
    let frames = collect_audio(&mut b, Duration::from_millis(1300)).await;
    assert!(frames.len() >= 50, "{} frames", frames.len());
    assert!(
        frames
            .iter()
            .all(|f| f.samples.len() == 320 && f.sample_rate == 16000)
    );
    let loud = frames
        .iter()
        .filter(|f| {
            f.samples
                .iter()
                .map(|&s| (s as i64).abs())
                .max()
                .unwrap_or(0)
                > 5000
        })
        .count();
    assert!(loud >= 40, "the tone arrives: {loud} loud frames");
    a.close().await;
    b.close().await;
    assert_eq!(pool.leased(), 0);
}
