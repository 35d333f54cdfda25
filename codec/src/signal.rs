//! Test signals and their measurement: sine tones, the Goertzel single-frequency power, and
//! RMS level. Used to check that audio survives transcoding.

use std::f64::consts::PI;

/// `samples` samples of a sine of `frequency` Hz at `dbfs` (peak relative to full scale) at
/// `rate` Hz.
pub fn tone(frequency: f64, dbfs: f64, rate: u32, samples: usize) -> Vec<i16> {
    let amplitude = 32767.0 * 10f64.powf(dbfs / 20.0);
    (0..samples)
        .map(|n| {
            let phase = 2.0 * PI * frequency * n as f64 / f64::from(rate);
            (amplitude * phase.sin()).round() as i16
        })
        .collect()
}

/// The power of `samples` at `frequency` Hz (Goertzel), normalised so that a full-band sum
/// over all bins equals the signal's energy.
pub fn goertzel_power(samples: &[i16], frequency: f64, rate: u32) -> f64 {
    let coefficient = 2.0 * (2.0 * PI * frequency / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coefficient * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coefficient * s1 * s2;
    // A sine of amplitude A over N samples gives power (A N / 2)^2; its energy is A^2 N / 2.
    2.0 * power / samples.len().max(1) as f64
}

/// The share of the energy of `samples` that lies at `frequency` Hz: close to 1 for a clean
/// tone of that frequency.
pub fn tone_power_ratio(samples: &[i16], frequency: f64, rate: u32) -> f64 {
    let energy: f64 = samples.iter().map(|&x| f64::from(x).powi(2)).sum();
    if energy == 0.0 {
        return 0.0;
    }
    goertzel_power(samples, frequency, rate) / energy
}

/// The strongest of `candidates` in `samples`, in Hz.
pub fn dominant_frequency(samples: &[i16], candidates: &[f64], rate: u32) -> Option<f64> {
    candidates.iter().copied().max_by(|a, b| {
        goertzel_power(samples, *a, rate).total_cmp(&goertzel_power(samples, *b, rate))
    })
}

/// RMS level in dBFS (a full-scale sine reads -3 dBFS); -120 for silence.
pub fn level_dbfs(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return -120.0;
    }
    let mean: f64 =
        samples.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / samples.len() as f64;
    if mean == 0.0 {
        return -120.0;
    }
    10.0 * (mean.sqrt() / 32768.0).powi(2).log10()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_is_found_at_its_frequency_and_level() {
        let t = tone(1000.0, -6.0, 8000, 8000);
        assert!(tone_power_ratio(&t, 1000.0, 8000) > 0.99);
        assert!(tone_power_ratio(&t, 1500.0, 8000) < 0.01);
        assert!((level_dbfs(&t) - -9.0).abs() < 0.1);
        assert_eq!(
            dominant_frequency(&t, &[400.0, 1000.0, 2000.0], 8000),
            Some(1000.0)
        );
        assert_eq!(level_dbfs(&[0; 10]), -120.0);
    }
}
