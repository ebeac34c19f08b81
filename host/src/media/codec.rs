//! The audio codecs an RTP session can carry, behind one encoder/decoder interface.
//!
//! PCM inside the media layer is mono signed 16-bit at the codec's own sample rate
//! (8 kHz for G.711, 16 kHz for G.722, 48 kHz for Opus, which may also code at a lower rate:
//! [`Codec::pcm_rate_near`]); resampling to other rates happens outside the codec. The RTP clock is the sample rate but for G.722, whose timestamps run at
//! 8000/s for 16 kHz audio (RFC 3551 §4.5.2, kept for compatibility with an RFC 1890 error):
//! [`Codec::clock_rate`] is the one, [`Codec::sample_rate`] the other.

use super::opus::{OpusDecoder, OpusEncoder};
use super::{g711, g722};
use crate::resample::samples_for_ms;

/// Failure inside a codec.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// libopus refused to create a coder or to process a frame.
    #[error("opus {op}: {source}")]
    Opus {
        op: &'static str,
        #[source]
        source: audiopus::Error,
    },
    /// An RTP payload had no bytes to decode.
    #[error("empty payload")]
    EmptyPayload,
}

/// An audio codec the media layer can negotiate and transcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law, static payload type 0.
    Pcmu,
    /// G.711 A-law, static payload type 8.
    Pcma,
    /// G.722 at 64 kbit/s, static payload type 9: 16 kHz audio on an 8000/s RTP clock.
    G722,
    /// Opus, always signalled as `opus/48000/2`, decoded here as mono 48 kHz.
    Opus,
}

impl Codec {
    /// Encoding name as written in `a=rtpmap`.
    pub fn encoding_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// Every codec, in the order of the default preference.
    pub const ALL: [Codec; 4] = [Codec::Pcmu, Codec::Pcma, Codec::Opus, Codec::G722];

    /// The static RTP payload type, if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            Codec::Pcmu => Some(0),
            Codec::Pcma => Some(8),
            Codec::G722 => Some(9),
            Codec::Opus => None,
        }
    }

    /// Whether a payload is one byte per sample with no state between packets (G.711): a
    /// payload can be sent again as it came, and split or joined at any sample.
    pub fn is_g711(self) -> bool {
        matches!(self, Codec::Pcmu | Codec::Pcma)
    }

    /// RTP clock rate: the rate of the stream's timestamps, written in `a=rtpmap`.
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => 8000,
            Codec::Opus => 48000,
        }
    }

    /// Sample rate of the codec's PCM, which this layer encodes and decodes.
    pub fn sample_rate(self) -> u32 {
        match self {
            Codec::G722 => 16000,
            other => other.clock_rate(),
        }
    }

    /// The PCM rate to code at for audio wanted at `wanted`: `wanted` itself where the codec
    /// works at it (Opus codes at 8, 12, 16, 24 or 48 kHz on its one 48 kHz RTP clock), so no
    /// resampling is needed; else the codec's own rate.
    pub fn pcm_rate_near(self, wanted: u32) -> u32 {
        match self {
            Codec::Opus if matches!(wanted, 8000 | 12000 | 16000 | 24000 | 48000) => wanted,
            other => other.sample_rate(),
        }
    }

    /// Channel count written in `a=rtpmap` (Opus is always declared stereo).
    pub fn rtpmap_channels(self) -> Option<u8> {
        match self {
            Codec::Opus => Some(2),
            _ => None,
        }
    }

    /// Whether `duration_ms` is a packet duration this codec can produce.
    pub fn supports_ptime(self, duration_ms: u32) -> bool {
        match self {
            Codec::Pcmu | Codec::Pcma | Codec::G722 => {
                (10..=60).contains(&duration_ms) && duration_ms.is_multiple_of(10)
            }
            Codec::Opus => matches!(duration_ms, 10 | 20 | 40 | 60),
        }
    }

    /// Identifies a codec from an `a=rtpmap` encoding name and clock rate.
    pub fn from_rtpmap(name: &str, clock_rate: u32) -> Option<Codec> {
        Codec::ALL
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name) && c.clock_rate() == clock_rate)
    }

    /// Identifies a codec from a static payload type (used when `a=rtpmap` is absent).
    pub fn from_static_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            _ => None,
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = String;

    /// Parses a codec name as written in configuration and on the command line
    /// (`pcmu`, `pcma`, `g722`, `opus`, any case).
    fn from_str(name: &str) -> Result<Codec, String> {
        Codec::ALL
            .into_iter()
            .find(|c| c.encoding_name().eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown codec `{name}` (pcmu, pcma, g722, opus)"))
    }
}

/// Turns PCM at the codec rate into RTP payloads.
pub trait AudioEncoder: Send {
    /// Encodes one packet's worth of PCM, appending the payload to `out`.
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError>;
}

/// Turns RTP payloads into PCM at the codec rate and conceals lost packets.
pub trait AudioDecoder: Send {
    /// Decodes one payload, appending PCM to `out`.
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError>;
    /// Appends `samples` of concealment for a lost packet. `following` is the payload of the
    /// packet after the lost one when it is already buffered (Opus recovers from its FEC data).
    fn conceal(
        &mut self,
        following: Option<&[u8]>,
        samples: usize,
        out: &mut Vec<i16>,
    ) -> Result<(), CodecError>;
}

/// Creates an encoder for `codec` at its own sample rate.
pub fn new_encoder(codec: Codec) -> Result<Box<dyn AudioEncoder>, CodecError> {
    new_encoder_at(codec, codec.sample_rate())
}

/// Creates an encoder for `codec` taking PCM at `pcm_rate`, an answer of
/// [`Codec::pcm_rate_near`].
pub fn new_encoder_at(codec: Codec, pcm_rate: u32) -> Result<Box<dyn AudioEncoder>, CodecError> {
    Ok(match codec {
        Codec::Pcmu => Box::new(G711Encoder { ulaw: true }),
        Codec::Pcma => Box::new(G711Encoder { ulaw: false }),
        Codec::G722 => Box::new(g722::Encoder::new()),
        Codec::Opus => Box::new(OpusEncoder::new(pcm_rate)?),
    })
}

/// Creates a decoder (with packet-loss concealment) for `codec` at its own sample rate.
pub fn new_decoder(codec: Codec) -> Result<Box<dyn AudioDecoder>, CodecError> {
    new_decoder_at(codec, codec.sample_rate())
}

/// Creates a decoder for `codec` giving PCM at `pcm_rate`, an answer of
/// [`Codec::pcm_rate_near`].
pub fn new_decoder_at(codec: Codec, pcm_rate: u32) -> Result<Box<dyn AudioDecoder>, CodecError> {
    Ok(match codec {
        Codec::Pcmu => Box::new(FadingDecoder::new(Waveform::Ulaw, 8000)),
        Codec::Pcma => Box::new(FadingDecoder::new(Waveform::Alaw, 8000)),
        Codec::G722 => Box::new(FadingDecoder::new(
            Waveform::G722(Box::default()),
            Codec::G722.sample_rate(),
        )),
        Codec::Opus => Box::new(OpusDecoder::new(pcm_rate)?),
    })
}

struct G711Encoder {
    ulaw: bool,
}

impl AudioEncoder for G711Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        if self.ulaw {
            out.extend(pcm.iter().map(|&s| g711::ulaw_encode(s)));
        } else {
            out.extend(pcm.iter().map(|&s| g711::alaw_encode(s)));
        }
        Ok(())
    }
}

impl AudioEncoder for g722::Encoder {
    fn encode(&mut self, pcm: &[i16], out: &mut Vec<u8>) -> Result<(), CodecError> {
        g722::Encoder::encode(self, pcm, out);
        Ok(())
    }
}

/// Concealment for codecs without their own: the last good packet repeated, at full level for
/// the first 10 ms of a loss, then fading linearly to silence at 60 ms (the shape of G.711
/// Appendix I), so short losses are inaudible and long ones quiet.
struct RepeatFade {
    /// Last good decoded packet: the pattern repeated while concealing.
    history: Vec<i16>,
    /// Samples concealed since the last good packet.
    concealed: usize,
    fade_start: usize,
    fade_end: usize,
}

impl RepeatFade {
    fn new(sample_rate: u32) -> RepeatFade {
        RepeatFade {
            history: Vec::new(),
            concealed: 0,
            fade_start: samples_for_ms(sample_rate, 10),
            fade_end: samples_for_ms(sample_rate, 60),
        }
    }

    /// A good packet decoded into `decoded`: the pattern for the next loss.
    fn good(&mut self, decoded: &[i16]) {
        self.history.clear();
        self.history.extend_from_slice(decoded);
        self.concealed = 0;
    }

    fn conceal(&mut self, samples: usize, out: &mut Vec<i16>) {
        for i in 0..samples {
            let position = self.concealed + i;
            let source = if self.history.is_empty() {
                0.0
            } else {
                self.history[position % self.history.len()] as f32
            };
            let gain = if position < self.fade_start {
                1.0
            } else if position >= self.fade_end {
                0.0
            } else {
                1.0 - (position - self.fade_start) as f32 / (self.fade_end - self.fade_start) as f32
            };
            out.push((source * gain) as i16);
        }
        self.concealed += samples;
    }
}

/// What a [`FadingDecoder`] decodes.
enum Waveform {
    Ulaw,
    Alaw,
    G722(Box<g722::Decoder>),
}

/// The decoders with no concealment of their own (G.711; G.722, whose Appendices III and IV are
/// optional): a gap is filled by repeating and fading the last good audio, and G.722's state
/// stays where the last good packet left it.
struct FadingDecoder {
    waveform: Waveform,
    plc: RepeatFade,
}

impl FadingDecoder {
    fn new(waveform: Waveform, sample_rate: u32) -> Self {
        FadingDecoder {
            waveform,
            plc: RepeatFade::new(sample_rate),
        }
    }
}

impl AudioDecoder for FadingDecoder {
    fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), CodecError> {
        if payload.is_empty() {
            return Err(CodecError::EmptyPayload);
        }
        let start = out.len();
        match &mut self.waveform {
            Waveform::Ulaw => out.extend(payload.iter().map(|&c| g711::ulaw_decode(c))),
            Waveform::Alaw => out.extend(payload.iter().map(|&c| g711::alaw_decode(c))),
            Waveform::G722(decoder) => decoder.decode(payload, out),
        }
        self.plc.good(&out[start..]);
        Ok(())
    }

    fn conceal(
        &mut self,
        _following: Option<&[u8]>,
        samples: usize,
        out: &mut Vec<i16>,
    ) -> Result<(), CodecError> {
        self.plc.conceal(samples, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        assert_eq!("PCMU".parse::<Codec>(), Ok(Codec::Pcmu));
        assert_eq!("pcma".parse::<Codec>(), Ok(Codec::Pcma));
        assert_eq!("Opus".parse::<Codec>(), Ok(Codec::Opus));
        assert!("g729".parse::<Codec>().unwrap_err().contains("g729"));
    }

    #[test]
    fn rtpmap_lookup() {
        assert_eq!(Codec::from_rtpmap("pcmu", 8000), Some(Codec::Pcmu));
        assert_eq!(Codec::from_rtpmap("OPUS", 48000), Some(Codec::Opus));
        assert_eq!(Codec::from_rtpmap("PCMU", 16000), None);
        // RFC 3551 §4.5.2: G.722 is declared at 8000 whatever its sample rate.
        assert_eq!(Codec::from_rtpmap("G722", 8000), Some(Codec::G722));
        assert_eq!(Codec::from_rtpmap("g722", 16000), None);
        assert_eq!(Codec::from_static_payload_type(9), Some(Codec::G722));
        assert_eq!("g722".parse::<Codec>(), Ok(Codec::G722));
        assert_eq!(
            (Codec::G722.clock_rate(), Codec::G722.sample_rate()),
            (8000, 16000)
        );
        assert_eq!(Codec::from_static_payload_type(8), Some(Codec::Pcma));
        assert!(Codec::Pcmu.supports_ptime(30));
        assert!(!Codec::Opus.supports_ptime(30));
    }

    #[test]
    fn g711_roundtrip_through_trait() {
        let pcm: Vec<i16> = (0..160)
            .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
            .collect();
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let mut enc = new_encoder(codec).unwrap();
            let mut dec = new_decoder(codec).unwrap();
            let mut payload = Vec::new();
            enc.encode(&pcm, &mut payload).unwrap();
            assert_eq!(payload.len(), 160);
            let mut out = Vec::new();
            dec.decode(&payload, &mut out).unwrap();
            for (a, b) in pcm.iter().zip(&out) {
                assert!((a - b).abs() < 300, "{codec:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn g722_through_trait_two_samples_a_byte_and_concealment_at_16k() {
        let pcm: Vec<i16> = (0..320)
            .map(|i| ((i as f32 * 0.2).sin() * 8000.0) as i16)
            .collect();
        let mut enc = new_encoder(Codec::G722).unwrap();
        let mut dec = new_decoder(Codec::G722).unwrap();
        let mut payload = Vec::new();
        enc.encode(&pcm, &mut payload).unwrap();
        assert_eq!(payload.len(), 160, "20 ms: 160 bytes, as PCMU");
        let mut out = Vec::new();
        dec.decode(&payload, &mut out).unwrap();
        assert_eq!(out.len(), 320);
        out.clear();
        dec.conceal(None, 320, &mut out).unwrap();
        assert_eq!(out.len(), 320);
        assert!(out[..160].iter().any(|&s| s != 0), "repeats at first");
        out.clear();
        dec.conceal(None, 960, &mut out).unwrap();
        assert!(
            out[640..].iter().all(|&s| s == 0),
            "silent after 60 ms at 16 kHz"
        );
        assert!(dec.decode(&[], &mut out).is_err());
    }

    #[test]
    fn g711_concealment_repeats_then_fades_to_silence() {
        let mut dec = new_decoder(Codec::Pcmu).unwrap();
        let payload = vec![g711::ulaw_encode(10000); 160];
        let mut out = Vec::new();
        dec.decode(&payload, &mut out).unwrap();
        let level = out[0];
        out.clear();
        dec.conceal(None, 160, &mut out).unwrap();
        assert_eq!(out[0], level, "first lost samples repeat the last packet");
        assert!(
            out[159].abs() < level.abs(),
            "fading by the end of the first 20 ms"
        );
        out.clear();
        dec.conceal(None, 160, &mut out).unwrap();
        dec.conceal(None, 160, &mut out).unwrap();
        dec.conceal(None, 160, &mut out).unwrap();
        assert!(
            out[..160].iter().any(|&s| s != 0),
            "still fading at 20-40 ms"
        );
        assert!(out[320..].iter().all(|&s| s == 0), "silent after 60 ms");
        // A good packet resets concealment.
        out.clear();
        dec.decode(&payload, &mut out).unwrap();
        dec.conceal(None, 10, &mut out).unwrap();
        assert_eq!(out[160], level);
        assert!(matches!(
            dec.decode(&[], &mut out),
            Err(CodecError::EmptyPayload)
        ));
    }
}
