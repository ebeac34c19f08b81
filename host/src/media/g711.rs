//! G.711 μ-law and A-law (ITU-T G.711, companding as in the G.191 reference implementation).
//!
//! Encoding works on 16-bit linear PCM; negative inputs use the one's complement magnitude
//! exactly as G.191 does, which is what makes the output bit-exact with other stacks. Both ways
//! are table lookups built at compile time: decoding from the 256 codes, encoding from the top
//! bits of the sample, which are all the companding looks at (14 for μ-law, 12 for A-law).

/// μ-law code for digital silence (what a silent G.711 payload is filled with).
pub const ULAW_SILENCE: u8 = 0xFF;
/// A-law code for digital silence.
pub const ALAW_SILENCE: u8 = 0xD5;

/// Encodes one 16-bit linear sample to μ-law.
#[inline]
pub fn ulaw_encode(sample: i16) -> u8 {
    ULAW_ENCODE[((sample >> 2) as i32 + (1 << 13)) as usize]
}

/// Encodes one 16-bit linear sample to A-law.
#[inline]
pub fn alaw_encode(sample: i16) -> u8 {
    ALAW_ENCODE[((sample >> 4) as i32 + (1 << 11)) as usize]
}

/// μ-law by one entry per value of `sample >> 2`, offset to start at 0.
static ULAW_ENCODE: [u8; 1 << 14] = {
    let mut table = [0u8; 1 << 14];
    let mut i = 0;
    while i < table.len() {
        table[i] = ulaw_compress(((i as i32 - (1 << 13)) << 2) as i16);
        i += 1;
    }
    table
};

/// A-law by one entry per value of `sample >> 4`, offset to start at 0.
static ALAW_ENCODE: [u8; 1 << 12] = {
    let mut table = [0u8; 1 << 12];
    let mut i = 0;
    while i < table.len() {
        table[i] = alaw_compress(((i as i32 - (1 << 11)) << 4) as i16);
        i += 1;
    }
    table
};

const fn ulaw_compress(sample: i16) -> u8 {
    let x = sample as i32;
    // 14-bit magnitude; one's complement for negatives (G.191 `ulaw_compress`).
    let magnitude = if x < 0 { (!x) >> 2 } else { x >> 2 };
    let biased = if magnitude + 33 < 0x1FFF {
        magnitude + 33
    } else {
        0x1FFF
    };
    let mut segment = 1;
    let mut rest = biased >> 6;
    while rest != 0 {
        segment += 1;
        rest >>= 1;
    }
    let high = (8 - segment) << 4;
    let low = 0x0F - ((biased >> segment) & 0x0F);
    let code = (high | low) as u8;
    if x >= 0 { code | 0x80 } else { code }
}

const fn ulaw_expand(code: u8) -> i16 {
    let inverted = !code;
    let exponent = ((inverted >> 4) & 0x07) as i32;
    let mantissa = (inverted & 0x0F) as i32;
    let step = 4 << (exponent + 1);
    let magnitude = (0x80 << exponent) + step * mantissa + step / 2 - 4 * 33;
    if code < 0x80 {
        -magnitude as i16
    } else {
        magnitude as i16
    }
}

const fn alaw_compress(sample: i16) -> u8 {
    let x = sample as i32;
    // 12-bit magnitude; one's complement for negatives (G.191 `alaw_compress`).
    let mut magnitude = if x < 0 { (!x) >> 4 } else { x >> 4 };
    if magnitude > 15 {
        let mut exponent = 1;
        while magnitude > 16 + 15 {
            magnitude >>= 1;
            exponent += 1;
        }
        magnitude -= 16;
        magnitude += exponent << 4;
    }
    if x >= 0 {
        magnitude |= 0x80;
    }
    (magnitude as u8) ^ 0x55
}

const fn alaw_expand(code: u8) -> i16 {
    let bits = (code ^ 0x55) & 0x7F;
    let exponent = (bits >> 4) as i32;
    let mut mantissa = (bits & 0x0F) as i32;
    if exponent > 0 {
        mantissa += 16;
    }
    mantissa = (mantissa << 4) + 8;
    if exponent > 1 {
        mantissa <<= exponent - 1;
    }
    if code > 127 {
        mantissa as i16
    } else {
        -mantissa as i16
    }
}

const fn build_table(ulaw: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if ulaw {
            ulaw_expand(i as u8)
        } else {
            alaw_expand(i as u8)
        };
        i += 1;
    }
    table
}

static ULAW_TABLE: [i16; 256] = build_table(true);
static ALAW_TABLE: [i16; 256] = build_table(false);

/// Decodes one μ-law code to 16-bit linear.
#[inline]
pub fn ulaw_decode(code: u8) -> i16 {
    ULAW_TABLE[code as usize]
}

/// Decodes one A-law code to 16-bit linear.
#[inline]
pub fn alaw_decode(code: u8) -> i16 {
    ALAW_TABLE[code as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_encode_is_bit_exact_on_all_inputs() {
        let mismatches: Vec<i16> = (i16::MIN..=i16::MAX)
            .filter(|&s| ulaw_encode(s) != audio_codec_algorithms::encode_ulaw(s))
            .collect();
        assert!(
            mismatches.is_empty(),
            "{} mismatches, first {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        );
    }

    #[test]
    fn alaw_encode_is_bit_exact_on_all_inputs() {
        let mismatches: Vec<i16> = (i16::MIN..=i16::MAX)
            .filter(|&s| alaw_encode(s) != audio_codec_algorithms::encode_alaw(s))
            .collect();
        assert!(
            mismatches.is_empty(),
            "{} mismatches, first {:?}",
            mismatches.len(),
            &mismatches[..mismatches.len().min(5)]
        );
    }

    #[test]
    fn decode_is_bit_exact_on_all_codes() {
        for code in 0..=255u8 {
            assert_eq!(
                ulaw_decode(code),
                audio_codec_algorithms::decode_ulaw(code),
                "ulaw {code:#04x}"
            );
            assert_eq!(
                alaw_decode(code),
                audio_codec_algorithms::decode_alaw(code),
                "alaw {code:#04x}"
            );
        }
    }

    #[test]
    fn decode_then_encode_is_identity() {
        for code in 0..=255u8 {
            // μ-law has two zero codes (0x7F and 0xFF); both decode to 0 and re-encode to 0xFF.
            if code != 0x7F {
                assert_eq!(ulaw_encode(ulaw_decode(code)), code, "ulaw {code:#04x}");
            }
            assert_eq!(alaw_encode(alaw_decode(code)), code, "alaw {code:#04x}");
        }
        assert_eq!(ulaw_decode(ULAW_SILENCE), 0);
        assert!(alaw_decode(ALAW_SILENCE).abs() <= 8);
    }

    #[test]
    fn known_values() {
        assert_eq!(ulaw_decode(0x00), -32124);
        assert_eq!(ulaw_decode(0x80), 32124);
        assert_eq!(alaw_decode(0xAA), 32256);
        assert_eq!(ulaw_encode(0), 0xFF);
        assert_eq!(alaw_encode(0), 0xD5);
    }
}
