//! Real audio through a `MediaSession` over RTP on 127.0.0.1: sox-made tones and espeak-ng
//! speech, sent by our own RTP peer and compared with the same audio converted by sox.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::support::media::{RtpPeer, best_correlation, read_raw_i16, run};
use crate::support::ports::ports;
use crate::support::process::require;
use switchboard::media::sdp::{Direction, NegotiatedMedia};
use switchboard::media::{Codec, MediaConfig, MediaEvent, MediaSession, PendingMedia, PortPool};

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("sb-media-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> String {
        self.0.join(file).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pool of 40 reserved ports (kept until the test's process exits).
fn pool() -> PortPool {
    let first = ports(40).keep();
    PortPool::new(first, first + 39).unwrap()
}

fn media(peer: SocketAddr) -> NegotiatedMedia {
    NegotiatedMedia {
        codec: Codec::Pcmu,
        send_payload_type: 0,
        recv_payload_type: 0,
        dtmf_send: None,
        dtmf_recv: vec![],
        remote_rtp: Some(peer),
        remote_rtcp: None,
        ptime_ms: 20,
        direction: Direction::SendRecv,
        srtp: None,
    }
}

async fn start(pool: &PortPool, inbound_rate: u32) -> (MediaSession, RtpPeer) {
    let config = MediaConfig {
        bind_ip: IpAddr::from([127, 0, 0, 1]),
        inbound_rate,
        ..MediaConfig::default()
    };
    let pending = PendingMedia::bind(pool, config).unwrap();
    let peer = RtpPeer::new(pending.port()).await;
    let session = pending.start(&media(peer.addr())).unwrap();
    (session, peer)
}

/// Streams `input_8k` from the peer and returns what the session delivers at `rate`.
async fn inbound(pool: &PortPool, input_8k: &[i16], rate: u32) -> Vec<i16> {
    let (mut session, peer) = start(pool, rate).await;
    let collect = async {
        let mut out = Vec::new();
        let quiet_for = Duration::from_millis(500);
        while let Ok(Some(event)) = tokio::time::timeout(quiet_for, session.recv()).await {
            if let MediaEvent::Audio(frame) = event {
                assert_eq!(frame.sample_rate, rate);
                out.extend(frame.samples);
            }
        }
        out
    };
    let (_, received) = tokio::join!(peer.stream_pcmu(input_8k, 0x5EED), collect);
    let stats = session.close().await;
    assert_eq!(stats.packets_lost, 0);
    received
}

fn sox_raw(dir: &TempDir, name: &str, rate: u32, effect: &[&str]) -> (String, Vec<i16>) {
    let path = dir.path(name);
    let rate_s = rate.to_string();
    let mut args = vec![
        "-n",
        "-r",
        &rate_s,
        "-c",
        "1",
        "-b",
        "16",
        "-e",
        "signed-integer",
        "-t",
        "raw",
        &path,
    ];
    args.extend_from_slice(effect);
    run("sox", &args);
    let samples = read_raw_i16(Path::new(&path));
    (path, samples)
}

fn sox_convert(
    dir: &TempDir,
    input: &str,
    in_rate: u32,
    out_name: &str,
    out_rate: u32,
) -> Vec<i16> {
    let out = dir.path(out_name);
    let (ir, or) = (in_rate.to_string(), out_rate.to_string());
    run(
        "sox",
        &[
            "-t",
            "raw",
            "-r",
            &ir,
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-c",
            "1",
            input,
            "-t",
            "raw",
            "-r",
            &or,
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-c",
            "1",
            &out,
        ],
    );
    read_raw_i16(Path::new(&out))
}

#[tokio::test]
async fn sox_tone_in_both_directions() {
    if !require("sox") {
        return;
    }
    let dir = TempDir::new("tone");
    let pool = pool();

    // Inbound: 8 kHz over PCMU, delivered at 16 kHz, compared with sox's own 8k -> 16k.
    let (path, tone_8k) = sox_raw(
        &dir,
        "in8k.raw",
        8000,
        &["synth", "2", "sine", "440", "sine", "1300", "vol", "0.4"],
    );
    let reference = sox_convert(&dir, &path, 8000, "ref16k.raw", 16000);
    let received = inbound(&pool, &tone_8k, 16000).await;
    assert!(
        received.len() >= reference.len() - 640,
        "{} of {}",
        received.len(),
        reference.len()
    );
    let (corr, lag) = best_correlation(&received[..30000], &reference[..30000], 200);
    eprintln!("inbound tone correlation {corr:.4} at lag {lag}");
    assert!(corr > 0.98, "inbound correlation {corr} at lag {lag}");

    // Outbound: model-style 24 kHz audio queued, received by the peer as PCMU at 8 kHz.
    let (path, tone_24k) = sox_raw(
        &dir,
        "out24k.raw",
        24000,
        &["synth", "1", "sine", "1000", "vol", "0.4"],
    );
    let reference = sox_convert(&dir, &path, 24000, "ref8k.raw", 8000);
    let (session, peer) = start(&pool, 8000).await;
    session.queue_audio(&tone_24k, 24000).unwrap();
    let sent = peer.receive_pcmu(Duration::from_millis(1400)).await;
    let report = session.flush_playout();
    assert_eq!(report.played_ms, 1000, "{report:?}");
    let start = sent
        .iter()
        .position(|&s| s.abs() > 1000)
        .expect("tone arrives");
    let (corr, lag) = best_correlation(&sent[start..start + 6000], &reference[..6000], 200);
    eprintln!("outbound tone correlation {corr:.4} at lag {lag}");
    assert!(corr > 0.98, "outbound correlation {corr} at lag {lag}");
    session.close().await;
}

#[tokio::test]
async fn espeak_speech_survives_the_inbound_path() {
    if !require("espeak-ng") || !require("sox") {
        return;
    }
    let dir = TempDir::new("speech");
    let wav = dir.path("speech.wav");
    run(
        "espeak-ng",
        &["-w", &wav, "Thank you for calling. Press one for sales."],
    );
    let speech_8k_path = dir.path("speech8k.raw");
    run(
        "sox",
        &[
            &wav,
            "-r",
            "8000",
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
            &speech_8k_path,
        ],
    );
    let speech_8k = read_raw_i16(Path::new(&speech_8k_path));
    assert!(speech_8k.len() > 8000, "espeak produced speech");
    let reference = sox_convert(&dir, &speech_8k_path, 8000, "ref16k.raw", 16000);
    let pool = pool();
    let received = inbound(&pool, &speech_8k, 16000).await;
    let n = reference.len().min(received.len()) - 400;
    let (corr, lag) = best_correlation(&received[..n], &reference[..n], 200);
    eprintln!("speech correlation {corr:.4} at lag {lag}");
    assert!(corr > 0.95, "speech correlation {corr} at lag {lag}");
}
