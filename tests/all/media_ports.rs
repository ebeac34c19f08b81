//! Port and socket hygiene: 500 sessions that end by media timeout leave no socket open and
//! every port pair back in the pool. Its own test binary, so no other test's sockets disturb
//! the count of open file descriptors.

use std::net::IpAddr;
use std::time::Duration;

use switchboard::media::sdp::{Direction, NegotiatedMedia};
use switchboard::media::{Codec, MediaConfig, MediaEvent, PendingMedia, PortPool};

use crate::support::ports::ports;

fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

fn media() -> NegotiatedMedia {
    NegotiatedMedia {
        codec: Codec::Pcmu,
        send_payload_type: 0,
        recv_payload_type: 0,
        dtmf_send: None,
        dtmf_recv: vec![],
        // The discard port: packets go out and nothing ever answers.
        remote_rtp: Some("127.0.0.1:9".parse().unwrap()),
        remote_rtcp: Some("127.0.0.1:10".parse().unwrap()),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        srtp: None,
    }
}

async fn run_until_timeout(pool: PortPool) -> bool {
    let config = MediaConfig {
        bind_ip: IpAddr::from([127, 0, 0, 1]),
        media_timeout: Duration::from_millis(100),
        ..MediaConfig::default()
    };
    let mut session = PendingMedia::bind(&pool, config)
        .expect("port pair")
        .start(&media())
        .expect("session");
    let mut timed_out = false;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(10), session.recv()).await
    {
        timed_out |= matches!(event, MediaEvent::Timeout { .. });
    }
    session.close().await;
    timed_out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_timed_out_sessions_leave_no_sockets() {
    let ports = ports(400);
    let pool = PortPool::new(ports.first(), ports.last()).unwrap();
    // Warm the runtime up so lazily created descriptors are not counted as leaks.
    assert!(run_until_timeout(pool.clone()).await);
    let before = open_sockets();
    let mut peak = 0;
    for _batch in 0..10 {
        let tasks: Vec<_> = (0..50)
            .map(|_| tokio::spawn(run_until_timeout(pool.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(open_sockets());
        for t in tasks {
            assert!(t.await.unwrap(), "every session ends with a timeout event");
        }
    }
    assert!(
        peak >= before + 50,
        "sessions were really open together: peak {peak}, base {before}"
    );
    assert_eq!(pool.leased(), 0, "every port pair back in the pool");
    assert_eq!(open_sockets(), before, "no socket left open");
}
