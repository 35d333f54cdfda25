//! G.711 (ITU-T G.711) µ-law and A-law companding: each 16-bit sample becomes one octet.

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// Encodes one linear sample as µ-law.
pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample);
    let sign = if pcm < 0 {
        pcm = -pcm;
        0x80
    } else {
        0
    };
    pcm = pcm.min(ULAW_CLIP) + ULAW_BIAS;
    // The segment is the position of the highest set bit above bit 7.
    let top = (pcm >> 7) as u32 & 0xFF;
    let exponent = if top == 0 {
        0
    } else {
        31 - top.leading_zeros() as i32
    };
    let mantissa = (pcm >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Decodes one µ-law octet.
pub fn ulaw_to_linear(code: u8) -> i16 {
    let code = !code;
    let exponent = i32::from((code >> 4) & 0x07);
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    let value = if code & 0x80 != 0 {
        -magnitude
    } else {
        magnitude
    };
    value as i16
}

/// Segment end points of A-law, in 13-bit magnitude.
const ALAW_SEGMENT_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

/// Encodes one linear sample as A-law.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut pcm = i32::from(sample) >> 3;
    let mask = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let Some(segment) = ALAW_SEGMENT_END.iter().position(|&end| pcm <= end) else {
        return 0x7F ^ mask;
    };
    let shift = if segment < 2 { 1 } else { segment };
    let code = ((segment as i32) << 4) | ((pcm >> shift) & 0x0F);
    (code as u8) ^ mask
}

/// Decodes one A-law octet.
pub fn alaw_to_linear(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut magnitude = i32::from(code & 0x0F) << 4;
    let segment = (code & 0x70) >> 4;
    match segment {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        _ => {
            magnitude += 0x108;
            magnitude <<= segment - 1;
        }
    }
    let value = if code & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    };
    value as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ulaw_code_survives_a_round_trip() {
        for code in 0..=255u8 {
            // Both zero codes decode to 0, which encodes as the positive one.
            if code == 0x7F {
                continue;
            }
            assert_eq!(
                linear_to_ulaw(ulaw_to_linear(code)),
                code,
                "code {code:#04x}"
            );
        }
    }

    #[test]
    fn every_alaw_code_survives_a_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(
                linear_to_alaw(alaw_to_linear(code)),
                code,
                "code {code:#04x}"
            );
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
    }

    #[test]
    fn companding_error_is_within_a_segment_step() {
        for sample in (-32000i32..32000).step_by(7) {
            let s = sample as i16;
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(s)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(s)));
            // The largest step is 1024 (µ-law) and 1024 (A-law) in the top segment.
            assert!((u - sample).abs() <= 1024, "µ-law {sample} -> {u}");
            assert!((a - sample).abs() <= 1024, "A-law {sample} -> {a}");
        }
    }
}
