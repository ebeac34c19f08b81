//! RTCP sender/receiver reports with SDES CNAME (RFC 3550 §6.4, §6.5), written and read by hand.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
/// Seconds from 1900 (NTP era 0) to 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// An RTCP datagram that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RtcpError {
    #[error("RTCP packet truncated at byte {0}")]
    Truncated(usize),
    #[error("not RTCP version 2")]
    BadVersion,
}

/// Sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp of the report.
    pub ntp: u64,
    pub rtp_timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

/// One reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed cumulative loss.
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received from this source.
    pub last_sr: u32,
    /// Delay since that SR, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

/// The parts of a compound RTCP packet this layer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket {
    SenderReport {
        ssrc: u32,
        info: SenderInfo,
        blocks: Vec<ReportBlock>,
    },
    ReceiverReport {
        ssrc: u32,
        blocks: Vec<ReportBlock>,
    },
    /// Any other packet type (SDES, BYE, APP, feedback), skipped.
    Other(u8),
}

/// Wall-clock time since the Unix epoch.
pub fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// A time since the Unix epoch as a 64-bit NTP timestamp.
pub fn ntp_from_unix(unix: Duration) -> u64 {
    let secs = unix.as_secs() + NTP_UNIX_OFFSET;
    let frac = ((unix.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp (the LSR/DLSR time base).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Builds a compound packet: SR (if `sender` is given) or RR, then SDES with our CNAME.
pub fn build_report(
    ssrc: u32,
    sender: Option<SenderInfo>,
    blocks: &[ReportBlock],
    cname: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let blocks = &blocks[..blocks.len().min(31)];
    let (pt, words) = match sender {
        Some(_) => (PT_SR, 6 + 6 * blocks.len()),
        None => (PT_RR, 1 + 6 * blocks.len()),
    };
    out.push(0x80 | blocks.len() as u8);
    out.push(pt);
    out.extend_from_slice(&(words as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    if let Some(info) = sender {
        out.extend_from_slice(&info.ntp.to_be_bytes());
        out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&info.packets.to_be_bytes());
        out.extend_from_slice(&info.octets.to_be_bytes());
    }
    for b in blocks {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        let lost = (b.cumulative_lost.clamp(-0x80_0000, 0x7F_FFFF) as u32) & 0x00FF_FFFF;
        out.extend_from_slice(&(((b.fraction_lost as u32) << 24) | lost).to_be_bytes());
        out.extend_from_slice(&b.highest_seq.to_be_bytes());
        out.extend_from_slice(&b.jitter.to_be_bytes());
        out.extend_from_slice(&b.last_sr.to_be_bytes());
        out.extend_from_slice(&b.delay_since_last_sr.to_be_bytes());
    }
    // SDES: one chunk, CNAME item, null terminator, padded to a 32-bit boundary.
    let cname = &cname.as_bytes()[..cname.len().min(255)];
    let chunk_len = 4 + 2 + cname.len() + 1;
    let padded = chunk_len.div_ceil(4) * 4;
    out.push(0x81);
    out.push(PT_SDES);
    out.extend_from_slice(&((padded / 4) as u16).to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.push(1);
    out.push(cname.len() as u8);
    out.extend_from_slice(cname);
    out.resize(out.len() + padded - chunk_len + 1, 0);
    out
}

fn be32(buf: &[u8], at: usize) -> Result<u32, RtcpError> {
    buf.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(RtcpError::Truncated(at))
}

fn blocks(buf: &[u8], mut at: usize, count: usize) -> Result<Vec<ReportBlock>, RtcpError> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let word = be32(buf, at + 4)?;
        // Sign-extend the 24-bit cumulative loss.
        let cumulative_lost = ((word << 8) as i32) >> 8;
        out.push(ReportBlock {
            ssrc: be32(buf, at)?,
            fraction_lost: (word >> 24) as u8,
            cumulative_lost,
            highest_seq: be32(buf, at + 8)?,
            jitter: be32(buf, at + 12)?,
            last_sr: be32(buf, at + 16)?,
            delay_since_last_sr: be32(buf, at + 20)?,
        });
        at += 24;
    }
    Ok(out)
}

/// Reads every packet of a compound RTCP datagram.
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket>, RtcpError> {
    let mut packets = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let header = buf.get(at..at + 4).ok_or(RtcpError::Truncated(at))?;
        if header[0] >> 6 != 2 {
            return Err(RtcpError::BadVersion);
        }
        let count = (header[0] & 0x1F) as usize;
        let len = (u16::from_be_bytes([header[2], header[3]]) as usize + 1) * 4;
        let body = buf
            .get(at..at + len)
            .ok_or(RtcpError::Truncated(at + len))?;
        packets.push(match header[1] {
            PT_SR => RtcpPacket::SenderReport {
                ssrc: be32(body, 4)?,
                info: SenderInfo {
                    ntp: ((be32(body, 8)? as u64) << 32) | be32(body, 12)? as u64,
                    rtp_timestamp: be32(body, 16)?,
                    packets: be32(body, 20)?,
                    octets: be32(body, 24)?,
                },
                blocks: blocks(body, 28, count)?,
            },
            PT_RR => RtcpPacket::ReceiverReport {
                ssrc: be32(body, 4)?,
                blocks: blocks(body, 8, count)?,
            },
            other => RtcpPacket::Other(other),
        });
        at += len;
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_receiver_report() {
        let block = ReportBlock {
            ssrc: 0x0A0B_0C0D,
            fraction_lost: 25,
            cumulative_lost: 2,
            highest_seq: 0x0001_000D,
            jitter: 160,
            last_sr: 0x1234_5678,
            delay_since_last_sr: 0x0001_0000,
        };
        let pkt = build_report(0x1111_2222, None, &[block], "sb");
        let expected: Vec<u8> = vec![
            0x81, 201, 0, 7, 0x11, 0x11, 0x22, 0x22, // RR header, 1 block
            0x0A, 0x0B, 0x0C, 0x0D, 25, 0, 0, 2, 0, 1, 0, 0x0D, 0, 0, 0, 160, 0x12, 0x34, 0x56,
            0x78, 0, 1, 0, 0, // block
            0x81, 202, 0, 3, 0x11, 0x11, 0x22, 0x22, 1, 2, b's', b'b', 0, 0, 0, 0, // SDES
        ];
        assert_eq!(pkt, expected);
        let parsed = parse_compound(&pkt).unwrap();
        assert_eq!(
            parsed,
            vec![
                RtcpPacket::ReceiverReport {
                    ssrc: 0x1111_2222,
                    blocks: vec![block]
                },
                RtcpPacket::Other(202)
            ]
        );
    }

    #[test]
    fn sender_report_roundtrip_with_negative_loss() {
        let info = SenderInfo {
            ntp: ntp_from_unix(unix_now()),
            rtp_timestamp: 8000,
            packets: 50,
            octets: 8000,
        };
        let block = ReportBlock {
            ssrc: 7,
            cumulative_lost: -3,
            ..Default::default()
        };
        let pkt = build_report(9, Some(info), &[block], "switchboard@host");
        assert_eq!(pkt.len() % 4, 0);
        match &parse_compound(&pkt).unwrap()[0] {
            RtcpPacket::SenderReport {
                ssrc,
                info: got,
                blocks,
            } => {
                assert_eq!(*ssrc, 9);
                assert_eq!(*got, info);
                assert_eq!(blocks[0].cumulative_lost, -3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_and_bad_input_is_an_error() {
        let pkt = build_report(9, None, &[ReportBlock::default()], "x");
        assert!(parse_compound(&pkt[..20]).is_err());
        assert!(parse_compound(&[0x00, 200, 0, 0]).is_err());
        assert!(ntp_from_unix(unix_now()) >> 32 > NTP_UNIX_OFFSET);
    }
}
