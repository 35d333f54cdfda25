//! Sample-rate conversion between the codecs' rates (8, 16 and 48 kHz), all integer ratios
//! of each other: a polyphase FIR (Blackman-windowed sinc) that upsamples by `L` and
//! decimates by `M` in one pass, streaming across calls.

use std::f64::consts::PI;

/// Filter taps per polyphase branch for each unit of decimation.
const TAPS_PER_PHASE: usize = 16;

/// Converts a stream of mono samples from one rate to another.
#[derive(Clone, Debug)]
pub struct Resampler {
    up: usize,
    down: usize,
    /// Taps per polyphase branch.
    taps: usize,
    /// The prototype filter, `up * taps` long, branch `p` at indices `p, p + up, ...`.
    filter: Vec<f32>,
    /// The last `taps - 1` input samples of the previous call.
    history: Vec<f32>,
    /// The next output's position on the upsampled grid, relative to the next input.
    position: usize,
    /// Scratch: history followed by the current input.
    buffer: Vec<f32>,
}

impl Resampler {
    /// A converter from `from` Hz to `to` Hz. Rates must be positive.
    pub fn new(from: u32, to: u32) -> Self {
        let g = gcd(from.max(1), to.max(1));
        let up = (to.max(1) / g) as usize;
        let down = (from.max(1) / g) as usize;
        let taps = TAPS_PER_PHASE * down.max(1);
        let length = up * taps;
        // Cut off a little below the lower Nyquist frequency, on the upsampled grid.
        let cutoff = 0.45 * f64::from(from.min(to)) / (f64::from(from) * up as f64);
        let centre = (length - 1) as f64 / 2.0;
        let filter = (0..length)
            .map(|n| {
                let t = n as f64 - centre;
                let sinc = if t == 0.0 {
                    2.0 * cutoff
                } else {
                    (2.0 * PI * cutoff * t).sin() / (PI * t)
                };
                let window = 0.42 - 0.5 * (2.0 * PI * n as f64 / (length - 1) as f64).cos()
                    + 0.08 * (4.0 * PI * n as f64 / (length - 1) as f64).cos();
                // Gain `up` restores the level lost to zero-stuffing.
                (sinc * window * up as f64) as f32
            })
            .collect();
        Self {
            up,
            down,
            taps,
            filter,
            history: vec![0.0; taps - 1],
            position: 0,
            buffer: Vec::new(),
        }
    }

    /// Whether the rates are equal (samples pass unchanged).
    pub fn is_identity(&self) -> bool {
        self.up == 1 && self.down == 1
    }

    /// Converts `input`, appending the output to `out`.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if self.is_identity() {
            out.extend_from_slice(input);
            return;
        }
        self.buffer.clear();
        self.buffer.extend_from_slice(&self.history);
        self.buffer.extend(input.iter().map(|&s| f32::from(s)));
        let newest = self.taps - 1;
        loop {
            let index = self.position / self.up;
            if index >= input.len() {
                break;
            }
            let phase = self.position % self.up;
            let mut acc = 0.0f32;
            for j in 0..self.taps {
                acc += self.buffer[newest + index - j] * self.filter[phase + j * self.up];
            }
            out.push(acc.round().clamp(-32768.0, 32767.0) as i16);
            self.position += self.down;
        }
        self.position -= input.len() * self.up;
        let keep = self.buffer.len() - newest;
        self.history.clear();
        self.history.extend_from_slice(&self.buffer[keep..]);
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{level_dbfs, tone, tone_power_ratio};

    /// Converts a second of tone in 20 ms chunks, as the transcoder does.
    fn convert(from: u32, to: u32, frequency: f64) -> Vec<i16> {
        let mut resampler = Resampler::new(from, to);
        let input = tone(frequency, -6.0, from, from as usize);
        let mut out = Vec::new();
        for chunk in input.chunks(from as usize / 50) {
            resampler.process(chunk, &mut out);
        }
        out
    }

    #[test]
    fn every_rate_pair_keeps_a_tone_and_its_level() {
        let rates = [8000, 16000, 48000];
        for from in rates {
            for to in rates {
                let out = convert(from, to, 1000.0);
                assert_eq!(out.len(), to as usize, "{from} -> {to}");
                let settled = &out[to as usize / 20..];
                let ratio = tone_power_ratio(settled, 1000.0, to);
                assert!(ratio > 0.99, "{from} -> {to}: ratio {ratio:.4}");
                let level = level_dbfs(settled);
                assert!(
                    (level - -9.0).abs() < 0.5,
                    "{from} -> {to}: {level:.2} dBFS"
                );
            }
        }
    }

    #[test]
    fn downsampling_removes_what_the_lower_rate_cannot_carry() {
        // 6 kHz cannot exist at 8 kHz: it must not fold back to 2 kHz.
        let out = convert(48000, 8000, 6000.0);
        assert!(
            level_dbfs(&out[400..]) < -50.0,
            "{}",
            level_dbfs(&out[400..])
        );
    }
}
