//! DTMF in audio: a Goertzel detector with the ITU-T Q.24 acceptance checks, and the tone
//! generator. Digits are RFC 4733 event codes: 0-9, `*` (10), `#` (11), A-D (12-15).
//!
//! The detector runs the eight keypad frequencies over blocks of 12.75 ms (102 samples at
//! 8 kHz, scaled for other rates) and accepts a block as a digit when exactly one row and one
//! column tone stand out: each above the minimum level, the two within the twist limits, each
//! well above the other tones of its group, and the pair holding most of the block's energy
//! (which speech and noise never do). A digit starts after two agreeing blocks the tone fills
//! whole (so a tone of 40 ms is always found and one shorter than 23 ms never is) and ends
//! after two blocks without it (so a break of 10 ms does not split it).

use std::f32::consts::PI;

/// Low-group (row) frequencies in Hz.
pub const ROWS: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// High-group (column) frequencies in Hz.
pub const COLUMNS: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// Event codes by row and column of the keypad.
const KEYPAD: [[u8; 4]; 4] = [[1, 2, 3, 12], [4, 5, 6, 13], [7, 8, 9, 14], [10, 0, 11, 15]];

/// Block length at 8 kHz.
const BLOCK_8K: u32 = 102;
/// Weakest tone accepted: -30 dBm0 per frequency, as a peak amplitude of a 16-bit sample
/// (0 dBm0 is 3.17 dB below full scale).
const MIN_AMPLITUDE: f32 = 32767.0 * 0.021_9;
/// Strongest high-group tone relative to the low one (reverse twist), as a power ratio: 4 dB.
const MAX_REVERSE_TWIST: f32 = 2.512;
/// Strongest low-group tone relative to the high one (normal twist), as a power ratio: 8 dB.
const MAX_NORMAL_TWIST: f32 = 6.31;
/// How far the found tone must exceed the others of its group, as a power ratio: 8 dB.
const MIN_GROUP_MARGIN: f32 = 6.31;
/// The share of the block's energy the two tones must hold.
const MIN_TONE_SHARE: f32 = 0.7;
/// Agreeing blocks before a digit starts, and blocks without it before it ends.
const DEBOUNCE_BLOCKS: u32 = 2;

/// The two frequencies of an event code, `(row, column)` in Hz.
pub fn frequencies(code: u8) -> Option<(f32, f32)> {
    KEYPAD.iter().enumerate().find_map(|(r, row)| {
        row.iter()
            .position(|&c| c == code)
            .map(|c| (ROWS[r], COLUMNS[c]))
    })
}

/// The keypad character of an event code.
pub fn digit_char(code: u8) -> Option<char> {
    b"0123456789*#ABCD"
        .get(usize::from(code))
        .map(|&b| char::from(b))
}

/// A digit found in the audio, with times in samples since the detector started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    /// A digit began (at the start of its first accepted block).
    Start {
        /// Event code.
        code: u8,
        /// Sample index.
        at: u64,
    },
    /// The digit ended.
    End {
        /// Event code.
        code: u8,
        /// Sample index of the end of its last accepted block.
        at: u64,
        /// Its length in samples.
        samples: u64,
    },
}

/// Finds DTMF digits in a stream of linear samples (sans-IO: samples in, events out).
#[derive(Clone, Debug)]
pub struct Detector {
    block: usize,
    /// Goertzel coefficients of the rows, then the columns.
    coefficients: [f32; 8],
    state: [(f32, f32); 8],
    energy: f32,
    /// Energy of each quarter of the block: a tone fills all four.
    quarters: [f32; 4],
    filled: usize,
    /// Samples seen before the current block.
    position: u64,
    /// The digit of the last blocks and how many in a row.
    candidate: Option<u8>,
    run: u32,
    /// The digit in progress: its code, first sample, last accepted sample.
    current: Option<(u8, u64, u64)>,
    misses: u32,
}

impl Detector {
    /// A detector for audio at `rate` Hz.
    pub fn new(rate: u32) -> Self {
        let mut coefficients = [0.0; 8];
        for (c, f) in coefficients.iter_mut().zip(ROWS.iter().chain(&COLUMNS)) {
            *c = 2.0 * (2.0 * PI * f / rate as f32).cos();
        }
        Self {
            block: (BLOCK_8K * rate / 8000).max(1) as usize,
            coefficients,
            state: [(0.0, 0.0); 8],
            energy: 0.0,
            quarters: [0.0; 4],
            filled: 0,
            position: 0,
            candidate: None,
            run: 0,
            current: None,
            misses: 0,
        }
    }

    /// The digit being heard, if any.
    pub fn current(&self) -> Option<u8> {
        self.current.map(|(code, _, _)| code)
    }

    /// Takes `samples`; appends the digits that start or end in them to `out`.
    pub fn process(&mut self, samples: &[i16], out: &mut Vec<Detected>) {
        for &x in samples {
            let x = f32::from(x);
            self.energy += x * x;
            self.quarters[self.filled * 4 / self.block] += x * x;
            for (c, (s1, s2)) in self.coefficients.iter().zip(self.state.iter_mut()) {
                let s0 = x + c * *s1 - *s2;
                *s2 = *s1;
                *s1 = s0;
            }
            self.filled += 1;
            if self.filled == self.block {
                let digit = self.classify();
                self.block_done(digit, out);
            }
        }
    }

    /// The digit of the block just filled, if it passes every check, and whether it sounds
    /// through the whole block; resets the block.
    fn classify(&mut self) -> Option<(u8, bool)> {
        let mut power = [0.0f32; 8];
        for (p, (c, (s1, s2))) in power
            .iter_mut()
            .zip(self.coefficients.iter().zip(self.state.iter()))
        {
            *p = s1 * s1 + s2 * s2 - c * s1 * s2;
        }
        let energy = self.energy;
        let n = self.block as f32;
        let loudest_quarter = self.quarters.iter().copied().fold(0.0, f32::max);
        let whole = self.quarters.iter().all(|&q| q * 2.0 >= loudest_quarter);
        self.state = [(0.0, 0.0); 8];
        self.energy = 0.0;
        self.quarters = [0.0; 4];
        self.filled = 0;

        let strongest = |group: &[f32]| {
            let (i, &p) = group
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap_or((0, &0.0));
            let others_ok = group
                .iter()
                .enumerate()
                .all(|(j, &q)| j == i || q * MIN_GROUP_MARGIN <= p);
            (i, p, others_ok)
        };
        let (row, row_power, row_alone) = strongest(&power[..4]);
        let (column, column_power, column_alone) = strongest(&power[4..]);
        // A sine of amplitude A over N samples has Goertzel power (A N / 2)^2.
        let min_power = (MIN_AMPLITUDE * n / 2.0).powi(2);
        let loud = row_power >= min_power && column_power >= min_power;
        let twist_ok = column_power <= row_power * MAX_REVERSE_TWIST
            && row_power <= column_power * MAX_NORMAL_TWIST;
        // The pair's energy is 2 (P_row + P_col) / N of the block's.
        let share = 2.0 * (row_power + column_power) / n / energy.max(1.0);
        (loud && twist_ok && row_alone && column_alone && share >= MIN_TONE_SHARE)
            .then_some((KEYPAD[row][column], whole))
    }

    /// Debounces the blocks' verdicts: a digit starts with two agreeing blocks it fills
    /// whole, goes on through any block that hears it, and ends after two blocks that do not.
    fn block_done(&mut self, verdict: Option<(u8, bool)>, out: &mut Vec<Detected>) {
        let block = self.block as u64;
        let start = self.position;
        self.position += block;
        let digit = verdict.map(|(code, _)| code);
        match verdict {
            Some((code, true)) if self.candidate == Some(code) => self.run += 1,
            Some((code, true)) => {
                self.candidate = Some(code);
                self.run = 1;
            }
            _ => {
                self.candidate = None;
                self.run = 0;
            }
        }
        if let Some((code, first, last)) = &mut self.current {
            if digit == Some(*code) {
                *last = self.position;
                self.misses = 0;
                return;
            }
            self.misses += 1;
            if self.misses < DEBOUNCE_BLOCKS && digit.is_none() {
                return;
            }
            out.push(Detected::End {
                code: *code,
                at: *last,
                samples: *last - *first,
            });
            self.current = None;
            self.misses = 0;
        }
        if let Some(code) = self.candidate
            && self.run >= DEBOUNCE_BLOCKS
        {
            let first = start - block * u64::from(self.run - 1);
            self.current = Some((code, first, self.position));
            out.push(Detected::Start { code, at: first });
        }
    }
}

/// Generates the tone pair of one digit, sample by sample, keeping its phase across calls.
#[derive(Clone, Debug)]
pub struct ToneGenerator {
    steps: (f32, f32),
    phases: (f32, f32),
    amplitude: f32,
}

impl ToneGenerator {
    /// The tone of event `code` at `rate` Hz, each frequency at `volume` dBm0 below zero (the
    /// RFC 4733 volume field). `None` for a code that is no digit.
    pub fn new(code: u8, volume: u8, rate: u32) -> Option<Self> {
        let (low, high) = frequencies(code)?;
        let step = |f: f32| 2.0 * PI * f / rate as f32;
        // 0 dBm0 is a sine 3.17 dB below the 16-bit full scale.
        let dbfs = -f32::from(volume.min(63)) - 3.17;
        Some(Self {
            steps: (step(low), step(high)),
            phases: (0.0, 0.0),
            amplitude: 32767.0 * 10f32.powf(dbfs / 20.0),
        })
    }

    /// Appends `samples` samples of the tone to `out`.
    pub fn generate(&mut self, samples: usize, out: &mut Vec<i16>) {
        out.reserve(samples);
        for _ in 0..samples {
            let v = self.amplitude * (self.phases.0.sin() + self.phases.1.sin());
            out.push(v.round().clamp(-32768.0, 32767.0) as i16);
            self.phases.0 = (self.phases.0 + self.steps.0) % (2.0 * PI);
            self.phases.1 = (self.phases.1 + self.steps.1) % (2.0 * PI);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{goertzel_power, level_dbfs};

    fn tone(code: u8, volume: u8, rate: u32, ms: u32) -> Vec<i16> {
        let mut out = Vec::new();
        ToneGenerator::new(code, volume, rate)
            .unwrap()
            .generate((rate * ms / 1000) as usize, &mut out);
        out
    }

    fn silence(rate: u32, ms: u32) -> Vec<i16> {
        vec![0; (rate * ms / 1000) as usize]
    }

    /// A sum of two sines at arbitrary frequencies and levels (dBFS peak each).
    fn pair(low: (f32, f32), high: (f32, f32), rate: u32, ms: u32) -> Vec<i16> {
        let n = (rate * ms / 1000) as usize;
        let l = crate::signal::tone(f64::from(low.0), f64::from(low.1), rate, n);
        let h = crate::signal::tone(f64::from(high.0), f64::from(high.1), rate, n);
        l.iter()
            .zip(&h)
            .map(|(a, b)| a.saturating_add(*b))
            .collect()
    }

    /// Deterministic white noise at roughly `dbfs` RMS.
    fn noise(dbfs: f32, samples: usize, seed: u32) -> Vec<i16> {
        let mut state = seed | 1;
        let scale = 32767.0 * 10f32.powf(dbfs / 20.0) * 3f32.sqrt();
        (0..samples)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let u = state as f32 / u32::MAX as f32 * 2.0 - 1.0;
                (u * scale) as i16
            })
            .collect()
    }

    fn detect(rate: u32, audio: &[i16]) -> Vec<Detected> {
        let mut detector = Detector::new(rate);
        let mut out = Vec::new();
        // Odd chunk sizes: block boundaries never line up with the calls.
        for chunk in audio.chunks(77) {
            detector.process(chunk, &mut out);
        }
        detector.process(&silence(rate, 60), &mut out);
        out
    }

    fn digits(events: &[Detected]) -> Vec<u8> {
        events
            .iter()
            .filter_map(|e| match e {
                Detected::Start { code, .. } => Some(*code),
                Detected::End { .. } => None,
            })
            .collect()
    }

    #[test]
    fn all_sixteen_digits_at_every_codec_rate() {
        for rate in [8000, 16000, 48000] {
            let mut audio = silence(rate, 30);
            for code in 0..16 {
                audio.extend(tone(code, 10, rate, 70));
                audio.extend(silence(rate, 60));
            }
            let events = detect(rate, &audio);
            assert_eq!(digits(&events), (0..16).collect::<Vec<_>>(), "{rate} Hz");
            assert_eq!(events.len(), 32, "{rate} Hz: every start has its end");
        }
    }

    #[test]
    fn start_end_and_length_follow_the_tone() {
        let mut audio = silence(8000, 100);
        audio.extend(tone(11, 6, 8000, 200));
        audio.extend(silence(8000, 100));
        let events = detect(8000, &audio);
        let [
            Detected::Start { code: 11, at },
            Detected::End {
                code: 11,
                at: end,
                samples,
            },
        ] = events[..]
        else {
            panic!("{events:?}");
        };
        // Within one block (102 samples) of the truth: 800 and 2400.
        assert!(at.abs_diff(800) <= 102, "{at}");
        assert!(end.abs_diff(2400) <= 102, "{end}");
        assert!(samples.abs_diff(1600) <= 204, "{samples}");
    }

    #[test]
    fn q24_timing_40_ms_found_shorter_than_23_ms_not_and_short_breaks_bridged() {
        for offset in 0..8 {
            let mut audio = silence(8000, 10 + offset * 2);
            audio.extend(tone(5, 10, 8000, 40));
            audio.extend(silence(8000, 50));
            audio.extend(tone(6, 10, 8000, 22));
            audio.extend(silence(8000, 50));
            assert_eq!(digits(&detect(8000, &audio)), vec![5], "offset {offset}");
        }
        // A 10 ms interruption inside a digit does not make two digits of it.
        let mut audio = tone(9, 10, 8000, 100);
        audio.extend(silence(8000, 10));
        audio.extend(tone(9, 10, 8000, 100));
        assert_eq!(digits(&detect(8000, &audio)), vec![9]);
        // A 40 ms pause separates two presses of the same key.
        let mut audio = tone(9, 10, 8000, 60);
        audio.extend(silence(8000, 40));
        audio.extend(tone(9, 10, 8000, 60));
        assert_eq!(digits(&detect(8000, &audio)), vec![9, 9]);
    }

    #[test]
    fn levels_and_twist_limits() {
        let row = ROWS[1];
        let column = COLUMNS[1];
        let five = |low_db: f32, high_db: f32| {
            digits(&detect(
                8000,
                &pair((row, low_db), (column, high_db), 8000, 80),
            ))
        };
        assert_eq!(five(-10.0, -10.0), vec![5]);
        assert_eq!(five(-28.0, -28.0), vec![5], "-25 dBm0 per tone");
        assert!(five(-40.0, -40.0).is_empty(), "too quiet");
        assert_eq!(five(-13.0, -10.0), vec![5], "3 dB reverse twist");
        assert!(five(-20.0, -10.0).is_empty(), "10 dB reverse twist");
        assert_eq!(five(-10.0, -17.0), vec![5], "7 dB normal twist");
        assert!(five(-10.0, -22.0).is_empty(), "12 dB normal twist");
    }

    #[test]
    fn frequencies_off_by_one_and_a_half_percent_are_accepted() {
        for (r, c) in [(0, 0), (3, 3), (2, 1)] {
            for sign in [-1.0, 1.0] {
                let skew = 1.0 + sign * 0.015;
                let audio = pair(
                    (ROWS[r] * skew, -12.0),
                    (COLUMNS[c] * skew, -12.0),
                    8000,
                    80,
                );
                assert_eq!(
                    digits(&detect(8000, &audio)),
                    vec![KEYPAD[r][c]],
                    "{r},{c} {skew}"
                );
            }
        }
    }

    #[test]
    fn single_tones_noise_and_speech_like_sound_give_no_digit() {
        // One group only (dial tone-like, a single keypad frequency).
        assert!(
            digits(&detect(
                8000,
                &pair((697.0, -10.0), (350.0, -60.0), 8000, 500)
            ))
            .is_empty()
        );
        assert!(
            digits(&detect(
                8000,
                &pair((440.0, -10.0), (1336.0, -10.0), 8000, 500)
            ))
            .is_empty()
        );
        // White noise, loud and quiet.
        for (db, seed) in [(-10.0, 1), (-30.0, 7)] {
            assert!(digits(&detect(8000, &noise(db, 16000, seed))).is_empty());
        }
        // Voiced speech: a glottal pulse train whose pitch glides 100-220 Hz, through two
        // moving formant-like resonances.
        let mut speech = Vec::new();
        let (mut phase, mut y1, mut y2, mut z1, mut z2) = (0.0f32, 0.0f32, 0.0, 0.0, 0.0);
        for n in 0..40_000 {
            let t = n as f32 / 8000.0;
            let pitch = 160.0 + 60.0 * (2.0 * PI * 0.7 * t).sin();
            phase += pitch / 8000.0;
            let pulse = if phase >= 1.0 {
                phase -= 1.0;
                8000.0
            } else {
                0.0
            };
            let resonate = |f: f32, x: f32, s1: &mut f32, s2: &mut f32| {
                let r = 0.97f32;
                let y = x + 2.0 * r * (2.0 * PI * f / 8000.0).cos() * *s1 - r * r * *s2;
                *s2 = *s1;
                *s1 = y;
                y
            };
            let f1 = 700.0 + 200.0 * (2.0 * PI * 1.3 * t).sin();
            let f2 = 1300.0 + 300.0 * (2.0 * PI * 0.9 * t).cos();
            let a = resonate(f1, pulse, &mut y1, &mut y2);
            let b = resonate(f2, pulse, &mut z1, &mut z2);
            speech.push(((a + b) * 0.6).clamp(-32768.0, 32767.0) as i16);
        }
        assert!(level_dbfs(&speech) > -30.0, "{}", level_dbfs(&speech));
        assert!(digits(&detect(8000, &speech)).is_empty());
    }

    #[test]
    fn digits_survive_moderate_noise() {
        let mut audio = tone(3, 6, 8000, 100);
        audio.extend(silence(8000, 60));
        audio.extend(tone(14, 6, 8000, 100));
        let n = noise(-35.0, audio.len(), 3);
        let noisy: Vec<i16> = audio
            .iter()
            .zip(&n)
            .map(|(a, b)| a.saturating_add(*b))
            .collect();
        assert_eq!(digits(&detect(8000, &noisy)), vec![3, 14]);
    }

    #[test]
    fn the_generator_makes_the_two_frequencies_at_the_volume() {
        let audio = tone(0, 10, 8000, 1000);
        let total: f64 = audio.iter().map(|&x| f64::from(x).powi(2)).sum();
        let (low, high) = frequencies(0).unwrap();
        let share = (goertzel_power(&audio, f64::from(low), 8000)
            + goertzel_power(&audio, f64::from(high), 8000))
            / total;
        assert!(share > 0.99, "{share}");
        // Two tones each 13.17 dB below full scale: -16.17 dBFS RMS each, -13.2 together.
        assert!(
            (level_dbfs(&audio) - -13.2).abs() < 0.2,
            "{}",
            level_dbfs(&audio)
        );
        assert_eq!(frequencies(16), None);
        assert!(ToneGenerator::new(16, 0, 8000).is_none());
        assert_eq!(digit_char(11), Some('#'));
        assert_eq!(digit_char(15), Some('D'));
    }
}
