//! Opus over the system libopus (via audiopus): mono, VoIP mode, in-band FEC. The RTP clock is
//! always 48 kHz; the PCM may be at any rate Opus codes at (8, 12, 16, 24 or 48 kHz), so a leg
//! can hand a model its audio at the model's rate without resampling.

use audiopus::coder::{Decoder, Encoder};
use audiopus::{Application, Channels, MutSignals, SampleRate, packet::Packet};

use super::codec::{AudioDecoder, AudioEncoder, CodecError};

/// Largest Opus packet (RFC 6716 §3.4: 1275 bytes per frame, up to 3 frames of 20 ms in 60 ms).
const MAX_PACKET_BYTES: usize = 4000;
/// Largest decoded packet: 120 ms at 48 kHz.
const MAX_FRAME_SAMPLES: usize = 5760;
/// Loss rate the encoder plans FEC for; phone paths rarely exceed it.
const EXPECTED_LOSS_PERCENT: u8 = 5;

fn opus_err(op: &'static str) -> impl FnOnce(audiopus::Error) -> CodecError {
    move |source| CodecError::Opus { op, source }
}

fn sample_rate(pcm_rate: u32) -> Result<SampleRate, CodecError> {
    SampleRate::try_from(pcm_rate as i32).map_err(opus_err("sample rate"))
}

pub(super) struct OpusEncoder {
    inner: Encoder,
    scratch: Vec<u8>,
}

impl OpusEncoder {
    pub(super) fn new(pcm_rate: u32) -> Result<Self, CodecError> {
        let mut inner = Encoder::new(sample_rate(pcm_rate)?, Channels::Mono, Application::Voip)
            .map_err(opus_err("create encoder"))?;
        inner.set_inband_fec(true).map_err(opus_err("enable fec"))?;
        inner
            .set_packet_loss_perc(EXPECTED_LOSS_PERCENT)
            .map_err(opus_err("set loss"))?;
        Ok(OpusEncoder {
            inner,
            scratch: vec![0; MAX_PACKET_BYTES],
        })
    }
}

impl AudioEncoder for OpusEncoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let n = self
            .inner
            .encode(pcm, &mut self.scratch)
            .map_err(opus_err("encode"))?;
        out.extend_from_slice(&self.scratch[..n]);
        Ok(())
    }
}

pub(super) struct OpusDecoder {
    inner: Decoder,
    scratch: Vec<i16>,
}

impl OpusDecoder {
    pub(super) fn new(pcm_rate: u32) -> Result<Self, CodecError> {
        Ok(OpusDecoder {
            inner: Decoder::new(sample_rate(pcm_rate)?, Channels::Mono)
                .map_err(opus_err("create decoder"))?,
            scratch: vec![0; MAX_FRAME_SAMPLES],
        })
    }

    fn run(
        &mut self,
        payload: Option<&[u8]>,
        samples: usize,
        fec: bool,
        out: &mut Vec<i16>,
    ) -> Result<(), CodecError> {
        let packet = match payload {
            Some(p) => Some(Packet::try_from(p).map_err(opus_err("packet"))?),
            None => None,
        };
        let len = samples.min(MAX_FRAME_SAMPLES);
        let signals =
            MutSignals::try_from(&mut self.scratch[..len]).map_err(opus_err("signals"))?;
        let n = self
            .inner
            .decode(packet, signals, fec)
            .map_err(opus_err("decode"))?;
        out.extend_from_slice(&self.scratch[..n]);
        Ok(())
    }
}

impl AudioDecoder for OpusDecoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        if payload.is_empty() {
            return Err(CodecError::EmptyPayload);
        }
        self.run(Some(payload), MAX_FRAME_SAMPLES, false, out)
    }

    fn conceal(
        &mut self,
        following: Option<&[u8]>,
        samples: usize,
        out: &mut Vec<i16>,
    ) -> Result<(), CodecError> {
        // The next packet's in-band FEC carries a low-bitrate copy of the lost one; without it
        // the decoder extrapolates (PLC).
        let fec = following.filter(|p| !p.is_empty());
        self.run(fec, samples, fec.is_some(), out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{Codec, new_decoder, new_decoder_at, new_encoder, new_encoder_at};

    fn tone(n: usize, offset: usize) -> Vec<i16> {
        (0..n)
            .map(|i| {
                let t = (i + offset) as f32 / 48000.0;
                ((2.0 * std::f32::consts::PI * 440.0 * t).sin() * 10000.0) as i16
            })
            .collect()
    }

    #[test]
    fn encode_decode_and_conceal() {
        let mut enc = new_encoder(Codec::Opus).unwrap();
        let mut dec = new_decoder(Codec::Opus).unwrap();
        let mut packets = Vec::new();
        for k in 0..10 {
            let mut p = Vec::new();
            enc.encode(&tone(960, k * 960), &mut p).unwrap();
            assert!(!p.is_empty() && p.len() < 400);
            packets.push(p);
        }
        let mut out = Vec::new();
        for p in &packets[..5] {
            dec.decode(p, &mut out).unwrap();
        }
        assert_eq!(out.len(), 5 * 960);
        let energy: f64 = out[2880..].iter().map(|&s| (s as f64).powi(2)).sum::<f64>();
        assert!(energy / 1920.0 > 1.0e6, "decoded tone has energy");
        // Packet 5 lost: FEC from packet 6, then plain PLC.
        dec.conceal(Some(&packets[6]), 960, &mut out).unwrap();
        dec.conceal(None, 960, &mut out).unwrap();
        assert_eq!(out.len(), 7 * 960);
        // A bad payload is an error, not a panic.
        assert!(dec.decode(&[0xFF; 3], &mut out).is_err());
        assert!(dec.decode(&[], &mut out).is_err());
    }

    #[test]
    fn codes_at_a_models_rate_on_the_48_khz_clock() {
        assert_eq!(Codec::Opus.pcm_rate_near(24_000), 24_000);
        assert_eq!(Codec::Opus.pcm_rate_near(22_050), 48_000);
        assert_eq!(Codec::Pcmu.pcm_rate_near(24_000), 8_000);
        // 20 ms at 24 kHz in, a packet a 48 kHz decoder (a browser's) takes as 20 ms.
        let mut enc = new_encoder_at(Codec::Opus, 24_000).unwrap();
        let mut browser = new_decoder(Codec::Opus).unwrap();
        let mut back = new_decoder_at(Codec::Opus, 24_000).unwrap();
        let (mut at_48k, mut at_24k) = (Vec::new(), Vec::new());
        for k in 0..10 {
            let half_rate: Vec<i16> = tone(960, k * 960).into_iter().step_by(2).collect();
            let mut p = Vec::new();
            enc.encode(&half_rate, &mut p).unwrap();
            browser.decode(&p, &mut at_48k).unwrap();
            back.decode(&p, &mut at_24k).unwrap();
        }
        assert_eq!((at_48k.len(), at_24k.len()), (9600, 4800));
        let energy = at_48k[4800..]
            .iter()
            .map(|&s| f64::from(s).powi(2))
            .sum::<f64>();
        assert!(energy / 4800.0 > 1.0e6, "the tone is heard");
        assert!(new_encoder_at(Codec::Opus, 22_050).is_err());
    }
}
