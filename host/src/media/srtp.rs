//! SRTP and SRTCP (RFC 3711) for calls keyed in SDP (SDES, RFC 4568): the suites
//! AES_CM_128_HMAC_SHA1_80 and AES_CM_128_HMAC_SHA1_32, key derivation rate 0, no MKI.
//!
//! Sans-IO like the engine that uses it: packets in, packets out, no clock. Sources: RFC 3711
//! §3.3 (packet processing), §3.3.1 and Appendix A (index estimation), §3.3.2 (replay list),
//! §3.4 (SRTCP), §4.1.1 (AES counter mode), §4.2 (HMAC-SHA1), §4.3 (key derivation) and
//! Appendices B.2 and B.3 (the keystream and key derivation vectors in the tests, the same in
//! several independent implementations' tests); RFC 4568 §6.2 (both suites keep an 80-bit SRTCP tag) and §9.1 (the
//! `inline:` key-params).

use std::fmt;

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{KeyInit as _, Mac as _};

/// Bytes of an AES-128 master key and of a master salt.
const KEY_LEN: usize = 16;
const SALT_LEN: usize = 14;
/// SRTCP's tag is 80 bits in both suites (RFC 4568 §6.2.1, §6.2.2).
const RTCP_TAG_LEN: usize = 10;
/// The E flag and SRTCP index that follow an SRTCP packet.
const RTCP_INDEX_LEN: usize = 4;
/// Packets remembered behind the newest one for replay protection (RFC 3711 §3.3.2: ≥ 64).
const REPLAY_WINDOW: u64 = 64;
/// Distinct peer SSRCs followed at once; a new one beyond that replaces the oldest.
const MAX_STREAMS: usize = 4;

/// An SDES crypto suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
}

impl Suite {
    /// The suites we offer, in preference order.
    pub const ALL: [Suite; 2] = [Suite::AesCm128HmacSha1_80, Suite::AesCm128HmacSha1_32];

    /// The name in `a=crypto`.
    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    fn rtp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
        }
    }
}

/// A master key and salt, as one side of a call sends them in `inline:`.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    key: [u8; KEY_LEN],
    salt: [u8; SALT_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys stay out of logs.
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh key from the system's secure random source.
    pub fn random() -> MasterKey {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; KEY_LEN + SALT_LEN];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random source works");
        MasterKey::from_bytes(&bytes).expect("30 bytes")
    }

    fn from_bytes(bytes: &[u8]) -> Option<MasterKey> {
        (bytes.len() == KEY_LEN + SALT_LEN).then(|| MasterKey {
            key: bytes[..KEY_LEN].try_into().expect("16 bytes"),
            salt: bytes[KEY_LEN..].try_into().expect("14 bytes"),
        })
    }

    /// From the base64 of `inline:` (key then salt, 30 bytes).
    pub fn from_inline(text: &str) -> Option<MasterKey> {
        MasterKey::from_bytes(&BASE64.decode(text.trim()).ok()?)
    }

    /// The base64 for `inline:`.
    pub fn inline(&self) -> String {
        let mut bytes = [0u8; KEY_LEN + SALT_LEN];
        bytes[..KEY_LEN].copy_from_slice(&self.key);
        bytes[KEY_LEN..].copy_from_slice(&self.salt);
        BASE64.encode(bytes)
    }
}

/// The keys of one SRTP call: ours for what we send, the peer's for what we receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrtpKeys {
    pub suite: Suite,
    pub send: MasterKey,
    pub recv: MasterKey,
}

/// Why a packet was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("packet too short for SRTP")]
    Malformed,
    #[error("authentication tag does not match")]
    Auth,
    #[error("packet replayed or too old")]
    Replay,
}

type HmacSha1 = hmac::Hmac<sha1::Sha1>;

/// Counter blocks encrypted in one call: a 20 ms G.711 payload (160 bytes) is 10 of them, and
/// AES-NI works on several blocks at once.
const KEYSTREAM_BLOCKS: usize = 16;

/// AES counter mode (RFC 3711 §4.1.1): XORs the keystream from counter block `iv` into `data`.
fn aes_cm(cipher: &Aes128, iv: [u8; 16], data: &mut [u8]) {
    let mut counter = u128::from_be_bytes(iv);
    let mut keystream = [GenericArray::default(); KEYSTREAM_BLOCKS];
    for run in data.chunks_mut(16 * KEYSTREAM_BLOCKS) {
        let blocks = &mut keystream[..run.len().div_ceil(16)];
        for block in blocks.iter_mut() {
            *block = GenericArray::from(counter.to_be_bytes());
            counter = counter.wrapping_add(1);
        }
        cipher.encrypt_blocks(blocks);
        for (chunk, block) in run.chunks_mut(16).zip(blocks.iter()) {
            for (d, k) in chunk.iter_mut().zip(block.iter()) {
                *d ^= k;
            }
        }
    }
}

/// The session keys for one label set (RTP: labels 0-2, SRTCP: 3-5).
struct SessionKeys {
    cipher: Aes128,
    salt: [u8; SALT_LEN],
    /// HMAC-SHA1 already keyed: each tag starts from a copy.
    auth: HmacSha1,
}

impl SessionKeys {
    /// Key derivation with rate 0 (RFC 3711 §4.3.1): the PRF is AES-CM under the master key with
    /// IV = (master salt XOR label << 48) << 16.
    fn derive(master: &MasterKey, first_label: u8) -> SessionKeys {
        let prf = Aes128::new(&GenericArray::from(master.key));
        let derive = |label: u8, out: &mut [u8]| {
            let mut iv = [0u8; 16];
            iv[..SALT_LEN].copy_from_slice(&master.salt);
            iv[7] ^= label;
            aes_cm(&prf, iv, out);
        };
        let mut key = [0u8; KEY_LEN];
        let mut auth = [0u8; 20];
        let mut salt = [0u8; SALT_LEN];
        derive(first_label, &mut key);
        derive(first_label + 1, &mut auth);
        derive(first_label + 2, &mut salt);
        SessionKeys {
            cipher: Aes128::new(&GenericArray::from(key)),
            salt,
            auth: HmacSha1::new_from_slice(&auth).expect("HMAC takes any key length"),
        }
    }

    /// IV = (salt << 16) XOR (SSRC << 64) XOR (index << 16) (RFC 3711 §4.1.1).
    fn iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..SALT_LEN].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, i) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= i;
        }
        iv
    }

    fn tag(&self, parts: &[&[u8]]) -> [u8; 20] {
        let mut mac = self.auth.clone();
        for p in parts {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

/// Packets accepted from one source, for replay protection (RFC 3711 §3.3.2).
#[derive(Debug, Clone, Copy)]
struct ReplayList {
    /// The highest index accepted.
    highest: u64,
    /// Bit n: `highest - n` was accepted.
    seen: u64,
}

impl ReplayList {
    fn new(first: u64) -> ReplayList {
        ReplayList {
            highest: first,
            seen: 0,
        }
    }

    fn check(&self, index: u64) -> Result<(), SrtpError> {
        if index > self.highest {
            return Ok(());
        }
        let behind = self.highest - index;
        if behind >= REPLAY_WINDOW || self.seen & (1 << behind) != 0 {
            return Err(SrtpError::Replay);
        }
        Ok(())
    }

    fn accept(&mut self, index: u64) {
        if index > self.highest {
            let ahead = index - self.highest;
            self.seen = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.seen << ahead
            };
            self.seen |= 1;
            self.highest = index;
        } else {
            self.seen |= 1 << (self.highest - index);
        }
    }
}

/// What we follow of one peer SSRC.
struct Source {
    ssrc: u32,
    /// RTP: the replay list's highest index carries ROC and the highest sequence number.
    rtp: Option<ReplayList>,
    rtcp: Option<ReplayList>,
}

/// The RTP index a received sequence number most likely has (RFC 3711 Appendix A).
fn estimate_index(highest: u64, seq: u16) -> u64 {
    let roc = highest >> 16;
    let s_l = (highest & 0xFFFF) as u16;
    let v = if s_l < 0x8000 {
        if seq > s_l && seq - s_l > 0x8000 {
            roc.wrapping_sub(1)
        } else {
            roc
        }
    } else if s_l - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    ((v & 0xFFFF_FFFF) << 16) | seq as u64
}

/// The length of an RTP header (fixed part, CSRCs, extension), or `None` if it does not fit.
fn rtp_header_len(packet: &[u8]) -> Option<usize> {
    if packet.len() < 12 {
        return None;
    }
    let mut len = 12 + 4 * (packet[0] & 0x0F) as usize;
    if packet[0] & 0x10 != 0 {
        let ext = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * u16::from_be_bytes([ext[0], ext[1]]) as usize;
    }
    (len <= packet.len()).then_some(len)
}

/// One call's SRTP: protects what we send, checks and decrypts what we receive.
pub struct SrtpSession {
    keys: SrtpKeys,
    suite: Suite,
    tx_rtp: SessionKeys,
    tx_rtcp: SessionKeys,
    rx_rtp: SessionKeys,
    rx_rtcp: SessionKeys,
    /// Our roll-over counter and last sequence number sent.
    tx_roc: u32,
    tx_last_seq: Option<u16>,
    tx_rtcp_index: u32,
    sources: Vec<Source>,
}

impl SrtpSession {
    pub fn new(keys: &SrtpKeys) -> SrtpSession {
        SrtpSession {
            keys: keys.clone(),
            suite: keys.suite,
            tx_rtp: SessionKeys::derive(&keys.send, 0),
            tx_rtcp: SessionKeys::derive(&keys.send, 3),
            rx_rtp: SessionKeys::derive(&keys.recv, 0),
            rx_rtcp: SessionKeys::derive(&keys.recv, 3),
            tx_roc: 0,
            tx_last_seq: None,
            tx_rtcp_index: 0,
            sources: Vec::new(),
        }
    }

    /// New keys from a re-INVITE (RFC 4568 §7.1.4): a direction whose key and suite stay keeps
    /// its counters (the peer's roll-over counter and replay list for our stream go on), a
    /// changed one starts afresh.
    pub fn rekey(&mut self, keys: &SrtpKeys) {
        if *keys == self.keys {
            return;
        }
        let fresh = SrtpSession::new(keys);
        if keys.suite != self.keys.suite || keys.send != self.keys.send {
            self.tx_rtp = fresh.tx_rtp;
            self.tx_rtcp = fresh.tx_rtcp;
            self.tx_roc = 0;
            self.tx_last_seq = None;
            self.tx_rtcp_index = 0;
        }
        if keys.suite != self.keys.suite || keys.recv != self.keys.recv {
            self.rx_rtp = fresh.rx_rtp;
            self.rx_rtcp = fresh.rx_rtcp;
            self.sources.clear();
        }
        self.suite = keys.suite;
        self.keys = keys.clone();
    }

    /// Encrypts the RTP packet at `buf[start..]` in place and appends its tag.
    pub fn protect_rtp(&mut self, buf: &mut Vec<u8>, start: usize) -> Result<(), SrtpError> {
        let packet = &mut buf[start..];
        let header = rtp_header_len(packet).ok_or(SrtpError::Malformed)?;
        let seq = u16::from_be_bytes([packet[2], packet[3]]);
        let ssrc = u32::from_be_bytes(packet[8..12].try_into().expect("4 bytes"));
        if let Some(last) = self.tx_last_seq
            && seq < last
            && last - seq > 0x8000
        {
            self.tx_roc = self.tx_roc.wrapping_add(1);
        }
        self.tx_last_seq = Some(seq);
        let index = ((self.tx_roc as u64) << 16) | seq as u64;
        aes_cm(
            &self.tx_rtp.cipher,
            self.tx_rtp.iv(ssrc, index),
            &mut packet[header..],
        );
        let tag = self
            .tx_rtp
            .tag(&[&buf[start..], &self.tx_roc.to_be_bytes()]);
        buf.extend_from_slice(&tag[..self.suite.rtp_tag_len()]);
        Ok(())
    }

    /// Encrypts the RTCP compound packet at `buf[start..]` in place and appends the E flag,
    /// the SRTCP index and the tag.
    pub fn protect_rtcp(&mut self, buf: &mut Vec<u8>, start: usize) -> Result<(), SrtpError> {
        let packet = &mut buf[start..];
        if packet.len() < 8 {
            return Err(SrtpError::Malformed);
        }
        let ssrc = u32::from_be_bytes(packet[4..8].try_into().expect("4 bytes"));
        let index = self.tx_rtcp_index;
        self.tx_rtcp_index = (index + 1) & 0x7FFF_FFFF;
        aes_cm(
            &self.tx_rtcp.cipher,
            self.tx_rtcp.iv(ssrc, index as u64),
            &mut packet[8..],
        );
        buf.extend_from_slice(&(0x8000_0000 | index).to_be_bytes());
        let tag = self.tx_rtcp.tag(&[&buf[start..]]);
        buf.extend_from_slice(&tag[..RTCP_TAG_LEN]);
        Ok(())
    }

    fn source(&mut self, ssrc: u32) -> &mut Source {
        let at = match self.sources.iter().position(|s| s.ssrc == ssrc) {
            Some(at) => at,
            None => {
                if self.sources.len() == MAX_STREAMS {
                    self.sources.remove(0);
                }
                self.sources.push(Source {
                    ssrc,
                    rtp: None,
                    rtcp: None,
                });
                self.sources.len() - 1
            }
        };
        &mut self.sources[at]
    }

    /// Checks and decrypts an SRTP packet into `out` (cleared first): the plain RTP packet.
    pub fn unprotect_rtp(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let body_len = datagram
            .len()
            .checked_sub(tag_len)
            .ok_or(SrtpError::Malformed)?;
        let (body, tag) = datagram.split_at(body_len);
        let header = rtp_header_len(body).ok_or(SrtpError::Malformed)?;
        let seq = u16::from_be_bytes([body[2], body[3]]);
        let ssrc = u32::from_be_bytes(body[8..12].try_into().expect("4 bytes"));
        let replay = self.source(ssrc).rtp;
        let index = match replay {
            Some(list) => estimate_index(list.highest, seq),
            None => seq as u64,
        };
        if let Some(list) = replay {
            list.check(index)?;
        }
        let roc = (index >> 16) as u32;
        let expected = self.rx_rtp.tag(&[body, &roc.to_be_bytes()]);
        if !constant_eq(&expected[..tag_len], tag) {
            return Err(SrtpError::Auth);
        }
        let source = self.source(ssrc);
        source
            .rtp
            .get_or_insert_with(|| ReplayList::new(index))
            .accept(index);
        out.clear();
        out.extend_from_slice(body);
        aes_cm(
            &self.rx_rtp.cipher,
            self.rx_rtp.iv(ssrc, index),
            &mut out[header..],
        );
        Ok(())
    }

    /// Checks and decrypts an SRTCP packet into `out` (cleared first): the plain RTCP.
    pub fn unprotect_rtcp(&mut self, datagram: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let body_len = datagram
            .len()
            .checked_sub(RTCP_TAG_LEN + RTCP_INDEX_LEN)
            .filter(|&n| n >= 8)
            .ok_or(SrtpError::Malformed)?;
        let (authenticated, tag) = datagram.split_at(body_len + RTCP_INDEX_LEN);
        let expected = self.rx_rtcp.tag(&[authenticated]);
        if !constant_eq(&expected[..RTCP_TAG_LEN], tag) {
            return Err(SrtpError::Auth);
        }
        let e_index = u32::from_be_bytes(authenticated[body_len..].try_into().expect("4 bytes"));
        let index = (e_index & 0x7FFF_FFFF) as u64;
        let ssrc = u32::from_be_bytes(datagram[4..8].try_into().expect("4 bytes"));
        let source = self.source(ssrc);
        if let Some(list) = source.rtcp {
            list.check(index)?;
        }
        source
            .rtcp
            .get_or_insert_with(|| ReplayList::new(index))
            .accept(index);
        out.clear();
        out.extend_from_slice(&datagram[..body_len]);
        if e_index & 0x8000_0000 != 0 {
            aes_cm(
                &self.rx_rtcp.cipher,
                self.rx_rtcp.iv(ssrc, index),
                &mut out[8..],
            );
        }
        Ok(())
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn key_derivation_matches_rfc_3711_b3() {
        let master = MasterKey::from_bytes(&hex(
            "E1F97A0D3E018BE0D64FA32C06DE41390EC675AD498AFEEBB6960B3AABE6",
        ))
        .unwrap();
        let prf = Aes128::new(&GenericArray::from(master.key));
        let derive = |label: u8, len: usize| {
            let mut iv = [0u8; 16];
            iv[..SALT_LEN].copy_from_slice(&master.salt);
            iv[7] ^= label;
            let mut out = vec![0u8; len];
            aes_cm(&prf, iv, &mut out);
            out
        };
        assert_eq!(derive(0, 16), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        assert_eq!(
            derive(1, 20),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
        assert_eq!(derive(2, 14), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let keys = SessionKeys::derive(&master, 0);
        assert_eq!(keys.salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    }

    /// RFC 3711 B.2: the AES-CM keystream for counters 0000 to FF01 (many runs of
    /// [`KEYSTREAM_BLOCKS`], the last one short), its first and last three blocks.
    #[test]
    fn keystream_matches_rfc_3711_b2() {
        let cipher = Aes128::new(&GenericArray::from(
            <[u8; 16]>::try_from(hex("2B7E151628AED2A6ABF7158809CF4F3C")).unwrap(),
        ));
        let iv = <[u8; 16]>::try_from(hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")).unwrap();
        let mut stream = vec![0u8; 16 * 0xFF02];
        aes_cm(&cipher, iv, &mut stream);
        let block = |n: usize| stream[16 * n..16 * (n + 1)].to_vec();
        assert_eq!(block(0), hex("E03EAD0935C95E80E166B16DD92B4EB4"));
        assert_eq!(block(1), hex("D23513162B02D0F72A43A2FE4A5F97AB"));
        assert_eq!(block(2), hex("41E95B3BB0A2E8DD477901E4FCA894C0"));
        assert_eq!(block(0xFEFF), hex("EC8CDF7398607CB0F2D21675EA9EA1E4"));
        assert_eq!(block(0xFF00), hex("362B7C3C6773516318A077D7FC5073AE"));
        assert_eq!(block(0xFF01), hex("6A2CC3787889374FBEB4C81B17BA6C44"));
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 160, 0x12, 0x34, 0x56, 0x78];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    fn pair(suite: Suite) -> (SrtpSession, SrtpSession) {
        let (a, b) = (MasterKey::random(), MasterKey::random());
        let alice = SrtpSession::new(&SrtpKeys {
            suite,
            send: a.clone(),
            recv: b.clone(),
        });
        let bob = SrtpSession::new(&SrtpKeys {
            suite,
            send: b,
            recv: a,
        });
        (alice, bob)
    }

    #[test]
    fn rtp_round_trip_hides_the_payload_and_checks_the_tag() {
        for suite in Suite::ALL {
            let (mut alice, mut bob) = pair(suite);
            let plain = rtp(65530, &[0x55; 160]);
            let mut wire = plain.clone();
            alice.protect_rtp(&mut wire, 0).unwrap();
            assert_eq!(wire.len(), plain.len() + suite.rtp_tag_len());
            assert_eq!(wire[..12], plain[..12], "the header stays readable");
            assert_ne!(wire[12..172], plain[12..], "the payload is encrypted");
            let mut out = Vec::new();
            bob.unprotect_rtp(&wire, &mut out).unwrap();
            assert_eq!(out, plain);

            // Tampered: dropped, and the next good packet still passes.
            let mut next = rtp(65531, &[1; 160]);
            alice.protect_rtp(&mut next, 0).unwrap();
            let mut bad = next.clone();
            bad[20] ^= 1;
            assert_eq!(bob.unprotect_rtp(&bad, &mut out), Err(SrtpError::Auth));
            bob.unprotect_rtp(&next, &mut out).unwrap();
            // Replayed: dropped.
            assert_eq!(bob.unprotect_rtp(&next, &mut out), Err(SrtpError::Replay));
            assert_eq!(bob.unprotect_rtp(&wire, &mut out), Err(SrtpError::Replay));
        }
    }

    #[test]
    fn sequence_wrap_rolls_the_counter_on_both_sides() {
        let (mut alice, mut bob) = pair(Suite::AesCm128HmacSha1_80);
        let mut out = Vec::new();
        let mut late = None;
        for seq in (65530u16..=65535).chain(0..10) {
            let plain = rtp(seq, &[seq as u8; 20]);
            let mut wire = plain.clone();
            alice.protect_rtp(&mut wire, 0).unwrap();
            if seq == 65534 {
                // Reordered across the wrap: arrives after packet 2.
                late = Some((wire, plain));
                continue;
            }
            bob.unprotect_rtp(&wire, &mut out).unwrap();
            assert_eq!(out, plain, "seq {seq}");
            if seq == 2 {
                let (wire, plain) = late.take().unwrap();
                bob.unprotect_rtp(&wire, &mut out).unwrap();
                assert_eq!(out, plain);
            }
        }
        assert_eq!(alice.tx_roc, 1);
    }

    #[test]
    fn rekey_keeps_the_direction_whose_key_stays() {
        let (mut alice, mut bob) = pair(Suite::AesCm128HmacSha1_80);
        let mut out = Vec::new();
        for seq in 65534..=65535u16 {
            let mut p = rtp(seq, &[1; 20]);
            alice.protect_rtp(&mut p, 0).unwrap();
            bob.unprotect_rtp(&p, &mut out).unwrap();
        }
        // Bob's re-INVITE brings a new key for what he sends; Alice's stays.
        let mut keys = bob.keys.clone();
        keys.send = MasterKey::random();
        bob.rekey(&keys);
        let mut alice_keys = alice.keys.clone();
        alice_keys.recv = keys.send.clone();
        alice.rekey(&alice_keys);
        // Alice's stream crosses the wrap after the rekey: Bob still follows it.
        let mut p = rtp(0, &[2; 20]);
        alice.protect_rtp(&mut p, 0).unwrap();
        bob.unprotect_rtp(&p, &mut out).unwrap();
        let mut q = rtp(7, &[3; 20]);
        bob.protect_rtp(&mut q, 0).unwrap();
        alice.unprotect_rtp(&q, &mut out).unwrap();
        assert_eq!(out, rtp(7, &[3; 20]));
    }

    #[test]
    fn too_old_packets_are_refused() {
        let (mut alice, mut bob) = pair(Suite::AesCm128HmacSha1_80);
        let mut out = Vec::new();
        let mut first = rtp(100, &[0; 10]);
        alice.protect_rtp(&mut first, 0).unwrap();
        let mut newest = rtp(100 + REPLAY_WINDOW as u16 + 1, &[0; 10]);
        alice.protect_rtp(&mut newest, 0).unwrap();
        bob.unprotect_rtp(&newest, &mut out).unwrap();
        assert_eq!(bob.unprotect_rtp(&first, &mut out), Err(SrtpError::Replay));
    }

    #[test]
    fn rtcp_round_trip_tamper_and_replay() {
        let (mut alice, mut bob) = pair(Suite::AesCm128HmacSha1_32);
        let mut plain = vec![0x80, 200, 0, 6, 0x12, 0x34, 0x56, 0x78];
        plain.extend_from_slice(&[7; 20]);
        let mut wire = plain.clone();
        alice.protect_rtcp(&mut wire, 0).unwrap();
        assert_eq!(wire.len(), plain.len() + 14, "E and index, 80-bit tag");
        assert_ne!(wire[8..28], plain[8..]);
        let mut out = Vec::new();
        let mut bad = wire.clone();
        bad[10] ^= 0x80;
        assert_eq!(bob.unprotect_rtcp(&bad, &mut out), Err(SrtpError::Auth));
        bob.unprotect_rtcp(&wire, &mut out).unwrap();
        assert_eq!(out, plain);
        assert_eq!(bob.unprotect_rtcp(&wire, &mut out), Err(SrtpError::Replay));
    }

    #[test]
    fn inline_keys_round_trip() {
        let k = MasterKey::random();
        assert_eq!(MasterKey::from_inline(&k.inline()), Some(k.clone()));
        assert_eq!(k.inline().len(), 40);
        assert!(MasterKey::from_inline("c2hvcnQ=").is_none());
        assert_eq!(format!("{k:?}"), "MasterKey(..)");
    }
}
