//! Listening-quality estimate of a voice stream with the ITU-T G.107 E-model, reduced to the
//! terms a relay can observe: packet loss (and its burstiness), delay, and the codec.
//!
//! `R = 93.2 − Id − Ie,eff`, where 93.2 is G.107's rating with every other parameter at its
//! default (noise, loudness and echo of ordinary handsets, echo controlled: the relay sees none
//! of them), `Id` is the delay impairment `Idd` of G.107 §7.3 for the absolute one-way delay,
//! and `Ie,eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)` (G.107 §7.4). The MOS comes from R
//! by G.107 Annex B.
//!
//! Codec factors (`Ie`, `Bpl`) come from ITU-T G.113 Appendix I where it lists them:
//!
//! | codec | Ie | Bpl | source |
//! |---|---|---|---|
//! | G.711 with PLC | 0 | 25.1 | G.113 App. I |
//! | G.711 without PLC | 0 | 4.3 | G.113 App. I |
//! | G.729(A) (+VAD) | 11 | 19.0 | G.113 App. I |
//! | G.723.1 6.3 kbit/s (+VAD) | 15 | 16.1 | G.113 App. I |
//! | GSM-EFR | 5 | 10.0 | G.113 App. I |
//! | GSM-FR | 20 | 10.0 | Ie from G.113; Bpl taken from GSM-EFR (approximation) |
//! | G.726 32 kbit/s, G.728 | 7 | 25.1 | Ie from G.113; Bpl of G.711+PLC (approximation) |
//! | iLBC, AMR | 10 | 25.1 | approximation: no G.113 narrowband entry used |
//! | G.722, AMR-WB, EVS, Opus, Speex | 0 | 25.1 | approximation, see below |
//!
//! Wideband codecs belong on the extended (R up to 129) scale of G.107.1, which this narrowband
//! estimate does not model: they are rated like G.711 with PLC, so their estimate is capped at
//! 4.41 and still falls with loss and delay. G.711 is assumed to run with packet loss
//! concealment, as practically every current endpoint does.

use std::time::Duration;

use crate::codec::Codec;

/// G.107's R with every parameter at its default: what a perfect G.711 call scores.
pub const R_DEFAULT: f64 = 93.2;

/// The E-model factors of a codec: equipment impairment `Ie` and packet-loss robustness `Bpl`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CodecImpairment {
    /// Equipment impairment factor without loss.
    pub ie: f64,
    /// Packet-loss robustness factor.
    pub bpl: f64,
}

impl CodecImpairment {
    /// G.711 with packet loss concealment (G.113 Appendix I).
    pub const G711: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 25.1 };
    /// G.711 without packet loss concealment (G.113 Appendix I).
    pub const G711_WITHOUT_PLC: CodecImpairment = CodecImpairment { ie: 0.0, bpl: 4.3 };
    /// G.729A with VAD (G.113 Appendix I).
    pub const G729: CodecImpairment = CodecImpairment {
        ie: 11.0,
        bpl: 19.0,
    };
    /// G.723.1 at 6.3 kbit/s with VAD (G.113 Appendix I).
    pub const G723_1: CodecImpairment = CodecImpairment {
        ie: 15.0,
        bpl: 16.1,
    };
    /// GSM enhanced full rate (G.113 Appendix I).
    pub const GSM_EFR: CodecImpairment = CodecImpairment { ie: 5.0, bpl: 10.0 };
    /// GSM full rate: Ie from G.113, Bpl borrowed from GSM-EFR.
    pub const GSM_FR: CodecImpairment = CodecImpairment {
        ie: 20.0,
        bpl: 10.0,
    };

    /// The factors used for `codec` (see the module table). Non-voice formats get G.711's,
    /// which callers should not rely on: [`Codec::impairment`] returns `None` for them.
    pub fn for_codec(codec: Codec) -> CodecImpairment {
        match codec {
            Codec::Pcmu | Codec::Pcma => Self::G711,
            Codec::G729 => Self::G729,
            Codec::G723 => Self::G723_1,
            Codec::GsmEfr => Self::GSM_EFR,
            Codec::Gsm => Self::GSM_FR,
            Codec::G726 | Codec::G728 => CodecImpairment { ie: 7.0, bpl: 25.1 },
            Codec::Ilbc | Codec::Amr => CodecImpairment {
                ie: 10.0,
                bpl: 25.1,
            },
            Codec::G722
            | Codec::AmrWb
            | Codec::Evs
            | Codec::Opus
            | Codec::Speex
            | Codec::TelephoneEvent
            | Codec::ComfortNoise
            | Codec::Other => Self::G711,
        }
    }
}

/// What the estimate is computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conditions {
    /// The codec's factors.
    pub codec: CodecImpairment,
    /// Packets lost over packets expected, 0 to 1.
    pub loss_ratio: f64,
    /// G.107's BurstR: 1 for random loss, above 1 for bursty loss (see [`burst_ratio`]).
    pub burst_ratio: f64,
    /// Absolute one-way (mouth-to-ear) delay.
    pub one_way_delay: Duration,
}

/// The result of the E-model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// The transmission rating R.
    pub r: f64,
    /// The estimated mean opinion score (conversational quality), 1 to 4.5.
    pub mos: f64,
}

impl Conditions {
    /// Runs the E-model.
    pub fn estimate(&self) -> Estimate {
        let r = R_DEFAULT
            - delay_impairment(self.one_way_delay)
            - effective_equipment_impairment(self.codec, self.loss_ratio, self.burst_ratio);
        Estimate {
            r,
            mos: mos_from_r(r),
        }
    }
}

/// G.107's delay impairment `Idd` for an absolute one-way delay: none up to 100 ms, then
/// growing (about 12 at 250 ms, 25 at 400 ms).
pub fn delay_impairment(one_way_delay: Duration) -> f64 {
    let ta = one_way_delay.as_secs_f64() * 1000.0;
    if ta <= 100.0 {
        return 0.0;
    }
    let x = (ta / 100.0).log2();
    25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
        + 2.0)
}

/// G.107's effective equipment impairment `Ie,eff` of `codec` at `loss_ratio` (0 to 1) with
/// burst ratio `burst_ratio`. Out-of-range inputs are clamped (loss to 0..1, BurstR to at
/// least 1); NaN counts as no loss and random loss.
pub fn effective_equipment_impairment(
    codec: CodecImpairment,
    loss_ratio: f64,
    burst_ratio: f64,
) -> f64 {
    let loss = if loss_ratio.is_nan() {
        0.0
    } else {
        loss_ratio.clamp(0.0, 1.0)
    };
    let burst = if burst_ratio.is_nan() {
        1.0
    } else {
        burst_ratio.max(1.0)
    };
    let ppl = loss * 100.0;
    if ppl == 0.0 {
        return codec.ie;
    }
    codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst + codec.bpl)
}

/// G.107 Annex B: the MOS for a rating R (1 below R = 0, 4.5 from R = 100).
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        return 1.0;
    }
    if r >= 100.0 {
        return 4.5;
    }
    let mos = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6;
    // The polynomial dips just under 1 for very small R.
    mos.clamp(1.0, 4.5)
}

/// G.107's BurstR from counts over an interval: packets `received`, packets `lost`, and the
/// number of loss bursts (runs of consecutive losses). Modelled as a two-state Markov chain:
/// `p` = bursts / received (found → lost), `q` = bursts / lost (lost → found), BurstR =
/// 1 / (p + q). Random loss gives about 1; no loss, or no burst information, gives 1.
pub fn burst_ratio(received: u64, lost: u64, bursts: u64) -> f64 {
    if lost == 0 || bursts == 0 || received == 0 {
        return 1.0;
    }
    let bursts = bursts as f64;
    let p = bursts / received as f64;
    let q = (bursts / lost as f64).min(1.0);
    (1.0 / (p + q)).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    fn g711(loss_ratio: f64) -> Conditions {
        Conditions {
            codec: CodecImpairment::G711,
            loss_ratio,
            burst_ratio: 1.0,
            one_way_delay: Duration::ZERO,
        }
    }

    #[test]
    fn default_rating_gives_the_well_known_mos() {
        assert!(
            close(mos_from_r(R_DEFAULT), 4.41, 0.005),
            "{}",
            mos_from_r(93.2)
        );
        let e = g711(0.0).estimate();
        assert!(close(e.r, 93.2, 1e-9));
        assert!(close(e.mos, 4.41, 0.005));
    }

    #[test]
    fn mos_known_points_and_bounds() {
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(0.0), 1.0);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        assert_eq!(mos_from_r(100.0), 4.5);
        assert_eq!(mos_from_r(120.0), 4.5);
        // R = 50: 1 + 1.75 + 50 * -10 * 50 * 7e-6 = 2.575.
        assert!(close(mos_from_r(50.0), 2.575, 1e-9));
        // R = 80: 1 + 2.8 + 80 * 20 * 20 * 7e-6 = 4.024.
        assert!(close(mos_from_r(80.0), 4.024, 1e-9));
        assert!(mos_from_r(3.0) >= 1.0);
        let mut previous = 0.0;
        for r in 0..=100 {
            let mos = mos_from_r(f64::from(r));
            assert!(mos >= previous, "MOS not monotonic at R = {r}");
            previous = mos;
        }
    }

    #[test]
    fn loss_impairment_matches_g107() {
        // G.711+PLC at 1 % random loss: 95 * 1 / (1 + 25.1) = 3.64.
        let ie = effective_equipment_impairment(CodecImpairment::G711, 0.01, 1.0);
        assert!(close(ie, 95.0 / 26.1, 1e-9), "{ie}");
        // G.729A at 2 %: 11 + 84 * 2 / (2 + 19) = 19.
        let ie = effective_equipment_impairment(CodecImpairment::G729, 0.02, 1.0);
        assert!(close(ie, 19.0, 1e-9), "{ie}");
        // Total loss approaches 95 (no speech at all).
        let ie = effective_equipment_impairment(CodecImpairment::G711, 1.0, 1.0);
        assert!(ie > 75.0);
        // Bursty loss hurts more than random loss at the same rate.
        let bursty = effective_equipment_impairment(CodecImpairment::G711, 0.05, 3.0);
        let random = effective_equipment_impairment(CodecImpairment::G711, 0.05, 1.0);
        assert!(bursty > random);
        // Nonsense inputs are clamped.
        assert_eq!(
            effective_equipment_impairment(CodecImpairment::G729, f64::NAN, f64::NAN),
            11.0
        );
        assert_eq!(
            effective_equipment_impairment(CodecImpairment::G729, -1.0, 0.2),
            11.0
        );
    }

    #[test]
    fn mos_falls_monotonically_with_loss() {
        for codec in [
            CodecImpairment::G711,
            CodecImpairment::G729,
            CodecImpairment::G723_1,
        ] {
            let mut previous = f64::INFINITY;
            for permille in 0..=300 {
                let mos = Conditions {
                    codec,
                    loss_ratio: f64::from(permille) / 1000.0,
                    burst_ratio: 1.0,
                    one_way_delay: Duration::ZERO,
                }
                .estimate()
                .mos;
                assert!(mos <= previous, "{codec:?} at {permille} per mille");
                previous = mos;
            }
        }
        // Typical figures: 1 % random loss on G.711 stays good, 10 % does not.
        assert!(g711(0.01).estimate().mos > 4.2);
        assert!(g711(0.10).estimate().mos < 3.6);
    }

    #[test]
    fn codecs_rank_as_g113_says() {
        let at = |codec| {
            Conditions {
                codec,
                loss_ratio: 0.0,
                burst_ratio: 1.0,
                one_way_delay: Duration::ZERO,
            }
            .estimate()
            .mos
        };
        // G.729 without loss: R = 82.2, MOS about 4.10.
        assert!(close(at(CodecImpairment::G729), mos_from_r(82.2), 1e-9));
        assert!(close(at(CodecImpairment::G729), 4.10, 0.01));
        assert!(at(CodecImpairment::G711) > at(CodecImpairment::GSM_EFR));
        assert!(at(CodecImpairment::GSM_EFR) > at(CodecImpairment::G729));
        assert!(at(CodecImpairment::G729) > at(CodecImpairment::G723_1));
        assert_eq!(
            CodecImpairment::for_codec(Codec::Pcma),
            CodecImpairment::G711
        );
        assert_eq!(
            CodecImpairment::for_codec(Codec::G729),
            CodecImpairment::G729
        );
    }

    #[test]
    fn delay_impairment_starts_at_100_ms() {
        assert_eq!(delay_impairment(Duration::ZERO), 0.0);
        assert_eq!(delay_impairment(Duration::from_millis(100)), 0.0);
        let at = |ms| delay_impairment(Duration::from_millis(ms));
        assert!(at(150) > 0.0 && at(150) < 3.0, "{}", at(150));
        // G.107's Idd at 400 ms: X = 2, 25 * ((1 + 64)^(1/6) - 3 (1 + (2/3)^6)^(1/6) + 2).
        let expected = 25.0
            * (65f64.powf(1.0 / 6.0) - 3.0 * (1.0 + (2.0f64 / 3.0).powi(6)).powf(1.0 / 6.0) + 2.0);
        assert!(close(at(400), expected, 1e-9));
        assert!(at(400) > 20.0 && at(400) < 30.0, "{}", at(400));
        let mut previous = 0.0;
        for ms in (100..2000).step_by(10) {
            assert!(at(ms) >= previous);
            previous = at(ms);
        }
        let slow = Conditions {
            one_way_delay: Duration::from_millis(400),
            ..g711(0.0)
        };
        assert!(slow.estimate().mos < 4.0);
    }

    #[test]
    fn burst_ratio_from_counts() {
        assert_eq!(burst_ratio(100, 0, 0), 1.0);
        assert_eq!(burst_ratio(0, 10, 1), 1.0);
        // 5 % random loss: 1000 expected, 50 lost in about 47.5 single bursts.
        let random = burst_ratio(950, 50, 48);
        assert!(close(random, 1.0, 0.05), "{random}");
        // The same loss in 5 bursts of 10.
        let bursty = burst_ratio(950, 50, 5);
        assert!(bursty > 5.0, "{bursty}");
    }
}
