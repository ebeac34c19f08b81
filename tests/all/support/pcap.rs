//! Capturing a test's own traffic on the loopback with tcpdump, and reading the capture back:
//! the classic pcap format (microsecond or nanosecond, either byte order), IPv4 over the link
//! types tcpdump gives `lo` (Ethernet, Linux cooked v1/v2, BSD loopback), TCP and UDP payloads.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::process::{Lines, Proc};

/// A tcpdump writing what matches its filter on `lo` to a file, until [`Capture::stop`].
pub struct Capture {
    pub file: PathBuf,
    proc: Proc,
    /// tcpdump's stderr, read to its end (it reports its counts there as it stops).
    _log: Lines,
}

impl Capture {
    /// Starts capturing `filter` (a BPF expression naming the test's own ports) into `dir`,
    /// and returns once tcpdump says it is listening.
    pub fn start(dir: &Path, filter: &str) -> Capture {
        let file = dir.join("capture.pcap");
        let mut proc = Proc::spawn(
            "tcpdump",
            Command::new("tcpdump")
                .args(["-i", "lo", "-n", "-U", "-s", "0", "-w"])
                .arg(&file)
                .arg(filter)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped()),
        );
        let mut log = Lines::new(proc.child.stderr.take().unwrap());
        log.wait_for(&["listening on"], Duration::from_secs(10))
            .unwrap_or_else(|| panic!("tcpdump did not start: {:?}", log.seen));
        Capture {
            file,
            proc,
            _log: log,
        }
    }

    /// Stops tcpdump (SIGINT: it flushes the file) and reads what it captured.
    pub async fn stop(mut self) -> Vec<Packet> {
        self.proc.signal(libc::SIGINT);
        self.proc.wait(Duration::from_secs(10)).await;
        read(&std::fs::read(&self.file).expect("the capture file"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One IPv4 TCP or UDP packet of a capture.
#[derive(Debug, Clone)]
pub struct Packet {
    /// When it was captured (since the Unix epoch).
    pub at: Duration,
    pub proto: Proto,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// The IPv4 TCP and UDP packets of a classic pcap file, in order.
pub fn read(file: &[u8]) -> Vec<Packet> {
    assert!(file.len() >= 24, "a pcap file has a 24-byte header");
    let magic = [file[0], file[1], file[2], file[3]];
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        other => panic!("not a classic pcap file: magic {other:02x?}"),
    };
    let nanos = matches!(magic, [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d]);
    let u32_at = |at: usize| {
        let b = [file[at], file[at + 1], file[at + 2], file[at + 3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let link_header = match u32_at(20) {
        0 => 4,    // BSD loopback
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked v1
        276 => 20, // Linux cooked v2
        other => panic!("link type {other} not handled"),
    };
    let mut packets = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let fraction = u64::from(u32_at(at + 4));
        let time = Duration::from_secs(u64::from(u32_at(at)))
            + Duration::from_nanos(if nanos { fraction } else { fraction * 1000 });
        let captured = u32_at(at + 8) as usize;
        let frame = &file[at + 16..(at + 16 + captured).min(file.len())];
        at += 16 + captured;
        if let Some(p) = frame.get(link_header..).and_then(|ip| ipv4(ip, time)) {
            packets.push(p);
        }
    }
    packets
}

fn ipv4(ip: &[u8], at: Duration) -> Option<Packet> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return None;
    }
    let header = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let body = ip.get(header..total)?;
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let (proto, data_at) = match ip[9] {
        6 if body.len() >= 20 => (Proto::Tcp, usize::from(body[12] >> 4) * 4),
        17 if body.len() >= 8 => (Proto::Udp, 8),
        _ => return None,
    };
    Some(Packet {
        at,
        proto,
        src_port: port(0),
        dst_port: port(2),
        payload: body.get(data_at..)?.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_udp_and_tcp_over_ethernet() {
        let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        file.extend([0; 8]);
        file.extend(65535u32.to_le_bytes());
        file.extend(1u32.to_le_bytes());
        let frame = |proto: u8, l4: &[u8]| {
            let mut f = vec![0; 12];
            f.extend([0x08, 0x00]);
            let total = (20 + l4.len()) as u16;
            f.extend([
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                0,
                0,
                0,
                0,
                64,
                proto,
                0,
                0,
            ]);
            f.extend([127, 0, 0, 1, 127, 0, 0, 1]);
            f.extend(l4);
            f
        };
        let udp = [0x13, 0x88, 0x13, 0x89, 0, 11, 0, 0, b'a', b'b', b'c'];
        let mut tcp = vec![0x13, 0xc5, 0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x18];
        tcp.extend([0; 6]);
        tcp.extend(b"INVITE");
        for f in [frame(17, &udp), frame(6, &tcp)] {
            file.extend([0; 8]);
            file.extend((f.len() as u32).to_le_bytes());
            file.extend((f.len() as u32).to_le_bytes());
            file.extend(f);
        }
        let packets = read(&file);
        assert_eq!(packets.len(), 2);
        assert_eq!(
            (packets[0].proto, packets[0].src_port, packets[0].dst_port),
            (Proto::Udp, 5000, 5001)
        );
        assert_eq!(packets[0].payload, b"abc");
        assert_eq!((packets[1].proto, packets[1].src_port), (Proto::Tcp, 5061));
        assert_eq!(packets[1].payload, b"INVITE");
    }
}
