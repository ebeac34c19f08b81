//! Cost measurements, run on demand (they assert nothing about speed):
//!
//! ```text
//! cargo test -p switchboard --lib media::bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! For real numbers build optimised: add `--release`, or (much cheaper, reusing the debug
//! dependency build) `--config profile.dev.package.<crate>.opt-level=3` for `switchboard`,
//! `rubato`, `rustfft`, `realfft` and their small helpers. Each figure is the median over
//! several runs of the per-item mean.

use std::hint::black_box;
use std::net::UdpSocket;
use std::time::Instant;

use super::codec::{Codec, new_decoder, new_decoder_at, new_encoder, new_encoder_at};
use super::jitter::{BufferedPacket, DEFAULT_WINDOW, JitterBuffer};
use super::playout::PlayoutQueue;
use super::rtp::RtpPacket;
use super::stats::ReceiveStats;
use crate::resample::StreamResampler;

const RUNS: usize = 9;

/// Median over `RUNS` of the mean cost of one call to `f`, in microseconds.
fn median_us(iterations: u32, mut f: impl FnMut(u32)) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            for i in 0..iterations {
                f(i);
            }
            start.elapsed().as_secs_f64() * 1e6 / iterations as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn speech_like(rate: u32, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / rate as f64;
            ((t * 2.0 * std::f64::consts::PI * 220.0).sin() * 6000.0
                + (t * 2.0 * std::f64::consts::PI * 1750.0).sin() * 2000.0) as i16
        })
        .collect()
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_media() {
    // G.711, G.722 and Opus, one 20 ms frame; Opus also at the rates models take and give.
    let at_own_rate = Codec::ALL.map(|c| (c, c.sample_rate()));
    for (codec, rate) in at_own_rate
        .into_iter()
        .chain([(Codec::Opus, 24000), (Codec::Opus, 16000)])
    {
        let n = rate as usize / 50;
        let pcm = speech_like(rate, n);
        let mut enc = new_encoder_at(codec, rate).unwrap();
        let mut dec = new_decoder_at(codec, rate).unwrap();
        let mut payload = Vec::new();
        let encode = median_us(2000, |_| {
            payload.clear();
            enc.encode(black_box(&pcm), &mut payload).unwrap();
        });
        let mut out = Vec::new();
        let decode = median_us(2000, |_| {
            out.clear();
            dec.decode(black_box(&payload), &mut out).unwrap();
        });
        let conceal = median_us(2000, |_| {
            out.clear();
            dec.conceal(None, n, &mut out).unwrap();
        });
        println!(
            "{codec:?} at {rate} Hz per 20 ms frame: encode {encode:.2} us, decode {decode:.2} us, conceal {conceal:.2} us"
        );
    }

    // Resampler, one 20 ms input frame.
    for (from, to) in [
        (8000u32, 16000u32),
        (8000, 24000),
        (16000, 8000),
        (24000, 8000),
        (48000, 8000),
        (22050, 8000),
        (8000, 48000),
    ] {
        let frame = speech_like(from, from as usize / 50);
        let mut r = StreamResampler::new(from, to).unwrap();
        let cost = median_us(2000, |_| {
            r.push(black_box(&frame)).unwrap();
            black_box(r.pop_all());
        });
        println!("resample {from} -> {to} per 20 ms frame: {cost:.2} us");
    }

    // Receive path per packet without the socket: parse, statistics, reorder buffer, decode
    // and delivery at 16 kHz (what the session does for every PCMU packet).
    let payload: Vec<u8> = speech_like(8000, 160)
        .iter()
        .map(|&s| super::g711::ulaw_encode(s))
        .collect();
    let packets: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let mut buf = Vec::new();
            RtpPacket {
                payload_type: 0,
                marker: false,
                sequence: i as u16,
                timestamp: i * 160,
                ssrc: 7,
                payload: &payload,
            }
            .write(&mut buf)
            .unwrap();
            buf
        })
        .collect();
    let mut stats = ReceiveStats::new(8000);
    let mut jitter = JitterBuffer::new(DEFAULT_WINDOW);
    let mut dec = new_decoder(Codec::Pcmu).unwrap();
    let mut up = StreamResampler::new(8000, 16000).unwrap();
    let mut pcm = Vec::new();
    let mut frame = Vec::new();
    let mut seq = 0u16;
    let now = Instant::now();
    let receive = median_us(1000, |i| {
        let p = RtpPacket::parse(black_box(&packets[i as usize])).unwrap();
        stats.on_packet(seq, Some(p.timestamp), now);
        jitter.push(
            seq,
            BufferedPacket {
                payload_type: p.payload_type,
                marker: p.marker,
                timestamp: p.timestamp,
                payload: p.payload.to_vec(),
            },
            now,
        );
        seq = seq.wrapping_add(1);
        while let Some(super::jitter::Playout::Packet(b)) = jitter.pop(now) {
            pcm.clear();
            dec.decode(&b.payload, &mut pcm).unwrap();
            up.push(&pcm).unwrap();
            while up.pop_frame(&mut frame) {
                black_box(&frame);
            }
        }
    });
    println!(
        "receive per PCMU packet (parse+stats+jitter+decode+8k->16k), no socket: {receive:.2} us"
    );

    // Send path per packet without the socket: playout queue pop, encode, RTP header.
    let mut queue = PlayoutQueue::new(8000);
    let mut enc = new_encoder(Codec::Pcmu).unwrap();
    let mut payload = Vec::new();
    let mut packet = Vec::new();
    let mut frame = Vec::new();
    let model_audio = speech_like(24000, 480);
    let send = median_us(1000, |i| {
        queue.push(&model_audio, 24000).unwrap();
        if !queue.pop(160, &mut frame) {
            frame = vec![0; 160];
        }
        payload.clear();
        enc.encode(&frame, &mut payload).unwrap();
        packet.clear();
        RtpPacket {
            payload_type: 0,
            marker: false,
            sequence: i as u16,
            timestamp: i * 160,
            ssrc: 9,
            payload: &payload,
        }
        .write(&mut packet)
        .unwrap();
        black_box(&packet);
    });
    println!("send per PCMU packet (24k->8k queue+encode+header), no socket: {send:.2} us");

    // The UDP system calls themselves on loopback.
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dest = rx.local_addr().unwrap();
    let mut buf = [0u8; 2048];
    let syscalls = median_us(2000, |i| {
        tx.send_to(&packets[(i % 1000) as usize], dest).unwrap();
        rx.recv_from(&mut buf).unwrap();
    });
    println!("loopback UDP send_to + recv_from per 172-byte packet: {syscalls:.2} us");
}

fn process_cpu_seconds() -> f64 {
    // utime + stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 Hz on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}

/// Whole-session cost: pairs of sessions on loopback streaming PCMU to each other both ways
/// (encode, pacing, send, receive, jitter buffer, decode, 8k -> 16k, events) for a few seconds;
/// process CPU time divided by packets handled.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_concurrent_sessions() {
    use super::ports::{PortPool, test_port_range};
    use super::sdp::{Direction, NegotiatedMedia};
    use super::session::{MediaConfig, MediaEvent, PendingMedia};
    use std::net::SocketAddr;
    use std::time::Duration;

    const PAIRS: usize = 50;
    const SECONDS: u64 = 5;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (start, end) = test_port_range(PAIRS as u16 * 2);
        let pool = PortPool::new(start, end).unwrap();
        let config = MediaConfig {
            bind_ip: "127.0.0.1".parse().unwrap(),
            inbound_rate: 16000,
            ..MediaConfig::default()
        };
        let media = |peer: u16| NegotiatedMedia {
            codec: Codec::Pcmu,
            send_payload_type: 0,
            recv_payload_type: 0,
            dtmf_send: None,
            dtmf_recv: vec![],
            remote_rtp: Some(SocketAddr::from(([127, 0, 0, 1], peer))),
            remote_rtcp: None,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            srtp: None,
        };
        let mut sessions = Vec::new();
        for _ in 0..PAIRS {
            let a = PendingMedia::bind(&pool, config.clone()).unwrap();
            let b = PendingMedia::bind(&pool, config.clone()).unwrap();
            let (pa, pb) = (a.port(), b.port());
            sessions.push(a.start(&media(pb)).unwrap());
            sessions.push(b.start(&media(pa)).unwrap());
        }
        let speech = speech_like(8000, 8000 * SECONDS as usize);
        let mut consumers = Vec::new();
        for s in &mut sessions {
            s.queue_audio(&speech, 8000).unwrap();
            let mut events = s.take_events().unwrap();
            consumers.push(tokio::spawn(async move {
                let mut frames = 0u64;
                while let Some(e) = events.recv().await {
                    if let MediaEvent::Audio(f) = e {
                        frames += black_box(f.samples.len() as u64 / 320);
                    }
                }
                frames
            }));
        }
        let cpu0 = process_cpu_seconds();
        let wall0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(SECONDS)).await;
        let cpu = process_cpu_seconds() - cpu0;
        let wall = wall0.elapsed().as_secs_f64();
        let mut sent = 0;
        let mut received = 0;
        for s in sessions {
            let stats = s.close().await;
            sent += stats.packets_sent;
            received += stats.packets_received;
        }
        let mut frames = 0;
        for c in consumers {
            frames += c.await.unwrap();
        }
        println!(
            "{} sessions for {wall:.1} s: {sent} packets sent, {received} received, {frames} frames delivered; \
             CPU {cpu:.2} s = {:.1} % of one core, {:.2} us per packet (send or receive), {:.3} % of a core per session",
            PAIRS * 2,
            cpu / wall * 100.0,
            cpu * 1e6 / (sent + received) as f64,
            cpu / wall * 100.0 / (PAIRS * 2) as f64,
        );
    });
}
