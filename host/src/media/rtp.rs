//! RTP packet reading and writing (RFC 3550 §5.1), over `rtp-rs`.

use rtp_rs::{RtpPacketBuilder, RtpReader, Seq};

/// A packet that is not usable RTP.
#[derive(Debug, thiserror::Error)]
pub enum RtpError {
    #[error("not RTP: {0:?}")]
    Invalid(rtp_rs::RtpReaderError),
    #[error("cannot build RTP packet: {0:?}")]
    Build(rtp_rs::RtpPacketBuildError),
}

/// A parsed RTP packet borrowing its payload (padding, CSRCs and extensions stripped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub payload_type: u8,
    pub marker: bool,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram.
    pub fn parse(buf: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let reader = RtpReader::new(buf).map_err(RtpError::Invalid)?;
        Ok(RtpPacket {
            payload_type: reader.payload_type(),
            marker: reader.mark(),
            sequence: reader.sequence_number().into(),
            timestamp: reader.timestamp(),
            ssrc: reader.ssrc(),
            payload: reader.payload(),
        })
    }

    /// Serialises the packet (12-byte header, no CSRC/extension/padding) into `out`.
    pub fn write(&self, out: &mut Vec<u8>) -> Result<(), RtpError> {
        let builder = RtpPacketBuilder::new()
            .payload_type(self.payload_type)
            .marked(self.marker)
            .sequence(Seq::from(self.sequence))
            .timestamp(self.timestamp)
            .ssrc(self.ssrc)
            .payload(self.payload);
        let start = out.len();
        out.resize(start + builder.target_length(), 0);
        let n = builder
            .build_into(&mut out[start..])
            .map_err(RtpError::Build)?;
        out.truncate(start + n);
        Ok(())
    }
}

/// Whether a datagram on the RTP port is RTCP (RFC 5761 §4: packet types 192–223).
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (192..=223).contains(&buf[1])
}

/// Whether a datagram on a media port is STUN (RFC 7983: first byte 0–3), as ICE-capable
/// phones such as linphone send even to peers that offered no ICE.
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] < 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_is_told_apart_from_rtp_and_rtcp() {
        // A STUN Binding request header (type 0x0001, length 0, magic cookie, transaction id).
        let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
        stun.extend([7u8; 12]);
        assert!(is_stun(&stun) && !is_rtcp(&stun));
        let mut rtp = Vec::new();
        RtpPacket {
            payload_type: 0,
            marker: false,
            sequence: 1,
            timestamp: 160,
            ssrc: 9,
            payload: &[0xFF; 160],
        }
        .write(&mut rtp)
        .unwrap();
        assert!(!is_stun(&rtp));
    }

    #[test]
    fn golden_packet_roundtrip() {
        let payload = [0xFFu8; 4];
        let packet = RtpPacket {
            payload_type: 0,
            marker: true,
            sequence: 0xFFFF,
            timestamp: 0x0102_0304,
            ssrc: 0xDEAD_BEEF,
            payload: &payload,
        };
        let mut out = Vec::new();
        packet.write(&mut out).unwrap();
        assert_eq!(
            out,
            [
                0x80, 0x80, 0xFF, 0xFF, 0x01, 0x02, 0x03, 0x04, 0xDE, 0xAD, 0xBE, 0xEF, 0xFF, 0xFF,
                0xFF, 0xFF
            ]
        );
        assert_eq!(RtpPacket::parse(&out).unwrap(), packet);
        assert!(!is_rtcp(&out));
    }

    #[test]
    fn strips_padding_csrc_and_extension() {
        // V=2 P=1 X=1 CC=1, PT 8, seq 7, ts 160, ssrc 1, csrc 9, ext (0xBEDE, 1 word), payload, padding 3.
        let pkt = [
            0xB1, 0x08, 0x00, 0x07, 0, 0, 0, 160, 0, 0, 0, 1, 0, 0, 0, 9, 0xBE, 0xDE, 0, 1, 1, 2,
            3, 4, 0xAA, 0xBB, 0, 0, 3,
        ];
        let p = RtpPacket::parse(&pkt).unwrap();
        assert_eq!(
            (p.payload_type, p.sequence, p.timestamp, p.ssrc),
            (8, 7, 160, 1)
        );
        assert_eq!(p.payload, &[0xAA, 0xBB]);
    }

    #[test]
    fn rejects_garbage_and_spots_rtcp() {
        assert!(RtpPacket::parse(&[0x80, 0, 1]).is_err());
        assert!(RtpPacket::parse(&[0x40; 20]).is_err(), "version 1");
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
        assert!(is_rtcp(&[0x81, 201, 0, 7, 0, 0, 0, 1]));
    }
}
