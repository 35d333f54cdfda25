//! Overload control: when a shard cannot keep up, new calls are refused early and cheaply.
//!
//! The measure of load is the queue delay of new calls: how long an out-of-dialog INVITE waited
//! in its shard's queue of new calls, which the shard serves only after its timers and every
//! message of the calls it already carries (in-dialog requests, responses, CANCEL, ACK).
//!
//! A burst that queues for a moment is not overload; a queue that never empties is. So the
//! decision reads the shortest delay seen over each interval (as CoDel, RFC 8289, does): it
//! exceeds the target only when a standing queue formed. From it, once per interval, a PI
//! controller (as PIE, RFC 8033, does) adjusts the share of new calls refused: up in proportion
//! to how far that delay is above the target and how fast it grows, down as it falls below. A
//! new call is refused only while the queue is longer than the target, the refusals spread evenly
//! (no randomness), with a stateless `503` and `Retry-After` before any call state exists. Below
//! saturation the queue empties within each interval and no call is refused; at a sustained
//! overload the share settles where the calls admitted match what the shard can carry.
//!
//! Retransmissions of INVITEs of calls already started reach their calls, never this decision;
//! those of refused INVITEs are refused again, so that a caller that keeps retransmitting one
//! (instead of acknowledging the `503`) never starts a call it has given up on.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use tandem_sip::message::{Method, SipMessage};

/// How long a refused INVITE's retransmissions are refused too: 64·T1, the INVITE transaction's
/// lifetime at the caller (RFC 3261, Timer B).
const REMEMBER_REFUSED: Duration = Duration::from_secs(32);

/// The largest change of the refused share in one interval.
const MAX_STEP: f64 = 0.25;

/// When new calls are refused for overload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverloadSettings {
    /// Queue delay of new calls the shard keeps under (zero: never refuse).
    pub target: Duration,
    /// How often the refused share is adjusted, from the shortest queue delay of the interval.
    pub interval: Duration,
    /// The `Retry-After` of the refusal, in seconds.
    pub retry_after: u32,
}

impl Default for OverloadSettings {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(100),
            interval: Duration::from_millis(300),
            retry_after: 1,
        }
    }
}

/// What becomes of a new call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It goes on to admission and routing.
    Take,
    /// It is refused for overload.
    Refuse,
    /// It is a retransmission of an INVITE refused before: refused again, not counted again.
    Repeat,
}

/// One shard's overload state: the share of new calls it refuses and what it is adjusted from.
#[derive(Debug)]
pub struct Overload {
    settings: OverloadSettings,
    /// Share of the new calls refused while the queue is above the target, 0 to 1.
    shed: f64,
    /// Refusals owed: grows by `shed` per new call over the target, one refusal per unit.
    owed: f64,
    /// When the current interval ends, and the shortest queue delay seen in it.
    interval_end: Option<Instant>,
    interval_min: Option<Duration>,
    /// The shortest queue delay of the previous interval.
    previous_min: Duration,
    /// Refused Call-IDs (hashed): the current generation and the one before.
    refused: [HashSet<u64>; 2],
    generation_end: Option<Instant>,
    hasher: RandomState,
}

impl Overload {
    pub fn new(settings: OverloadSettings) -> Self {
        Self {
            settings,
            shed: 0.0,
            owed: 0.0,
            interval_end: None,
            interval_min: None,
            previous_min: Duration::ZERO,
            refused: [HashSet::new(), HashSet::new()],
            generation_end: None,
            hasher: RandomState::new(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &OverloadSettings {
        &self.settings
    }

    /// The share of new calls refused while the queue is above the target.
    #[cfg(test)]
    fn shed(&self) -> f64 {
        self.shed
    }

    /// What becomes of the new call `call_id`, dequeued at `now` after waiting `queued`.
    pub fn admit(&mut self, now: Instant, call_id: &[u8], queued: Duration) -> Verdict {
        if self.settings.target.is_zero() {
            return Verdict::Take;
        }
        self.end_intervals(now);
        self.forget_old_refusals(now);
        self.interval_min = Some(self.interval_min.map_or(queued, |min| min.min(queued)));
        let key = self.hasher.hash_one(call_id);
        if self.refused.iter().any(|set| set.contains(&key)) {
            return Verdict::Repeat;
        }
        if queued < self.settings.target || self.shed == 0.0 {
            return Verdict::Take;
        }
        self.owed += self.shed;
        if self.owed < 1.0 {
            return Verdict::Take;
        }
        self.owed -= 1.0;
        self.refused[0].insert(key);
        Verdict::Refuse
    }

    /// Adjusts the refused share at the end of each interval up to `now`.
    fn end_intervals(&mut self, now: Instant) {
        let interval = self.settings.interval;
        let end = *self.interval_end.get_or_insert(now + interval);
        if now < end {
            return;
        }
        let target = self.settings.target.as_secs_f64();
        let min = self.interval_min.take().unwrap_or_default();
        let error = (min.as_secs_f64() - target) / target;
        let mut growth = (min.as_secs_f64() - self.previous_min.as_secs_f64()) / target;
        if error <= 0.0 {
            // A queue growing under the target is no reason to refuse.
            growth = growth.min(0.0);
        }
        let step = (0.1 * error + 0.5 * growth).clamp(-MAX_STEP, MAX_STEP);
        self.shed = (self.shed + step).clamp(0.0, 1.0);
        self.previous_min = min;
        // Intervals without new calls: the queue was empty.
        let idle = (now - end).as_nanos() / interval.as_nanos().max(1);
        if idle > 0 {
            self.shed = (self.shed - 0.1 * idle.min(10) as f64).max(0.0);
            self.previous_min = Duration::ZERO;
            self.interval_end = Some(now + interval);
        } else {
            self.interval_end = Some(end + interval);
        }
        if self.shed == 0.0 {
            self.owed = 0.0;
        }
    }

    /// Starts a new generation of refused Call-IDs every [`REMEMBER_REFUSED`], forgetting the
    /// one before.
    fn forget_old_refusals(&mut self, now: Instant) {
        let end = *self.generation_end.get_or_insert(now + REMEMBER_REFUSED);
        if now >= end {
            if now >= end + REMEMBER_REFUSED {
                self.refused[1].clear();
            } else {
                self.refused.swap(0, 1);
            }
            self.refused[0].clear();
            self.generation_end = Some(now + REMEMBER_REFUSED);
        }
    }
}

/// Whether `msg` may start a call: an INVITE outside any dialog (no To tag). Such messages go
/// to their shard's queue of new calls; everything else keeps priority.
pub fn starts_a_call(msg: &SipMessage) -> bool {
    msg.method() == Some(&Method::Invite) && msg.to().ok().is_none_or(|to| to.tag().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// What a shard did with the new calls of a run: when each was served, and whether taken.
    struct Run {
        served: Vec<(Duration, bool)>,
        overload: Overload,
    }

    impl Run {
        /// Calls taken per second between `from` and `to` (seconds into the run).
        fn taken_per_second(&self, from: f64, to: f64) -> f64 {
            self.count(from, to, true) / (to - from)
        }

        fn refused(&self, from: f64, to: f64) -> f64 {
            self.count(from, to, false)
        }

        fn count(&self, from: f64, to: f64, taken: bool) -> f64 {
            let window = Duration::from_secs_f64(from)..Duration::from_secs_f64(to);
            self.served
                .iter()
                .filter(|(at, t)| *t == taken && window.contains(at))
                .count() as f64
        }
    }

    /// A shard on virtual time: new calls arrive `gap(t)` seconds apart for `seconds`, wait in
    /// one queue, and take 1/`capacity` s each to set up, a refusal a twentieth of that.
    fn simulate(capacity: f64, seconds: f64, mut gap: impl FnMut(f64) -> f64) -> Run {
        let t0 = Instant::now();
        let mut overload = Overload::new(OverloadSettings::default());
        let mut served = Vec::new();
        let (mut arrival, mut free, mut n) = (0.0_f64, 0.0_f64, 0_u64);
        while arrival < seconds {
            let start = arrival.max(free);
            let queued = Duration::from_secs_f64(start - arrival);
            let now = Duration::from_secs_f64(start);
            let taken = overload.admit(t0 + now, &n.to_be_bytes(), queued) == Verdict::Take;
            free = start + if taken { 1.0 } else { 0.05 } / capacity;
            served.push((now, taken));
            arrival += gap(arrival);
            n += 1;
        }
        Run { served, overload }
    }

    /// Evenly spaced arrivals at `rate(t)` calls per second.
    fn even(rate: impl Fn(f64) -> f64) -> impl FnMut(f64) -> f64 {
        move |t| 1.0 / rate(t)
    }

    #[test]
    fn steady_load_below_capacity_is_never_refused() {
        for load in [0.5, 0.9, 0.99] {
            let run = simulate(1000.0, 30.0, even(|_| load * 1000.0));
            assert_eq!(run.refused(0.0, 30.0), 0.0, "at {load} of capacity");
        }
    }

    #[test]
    fn random_arrivals_below_capacity_are_never_refused() {
        for seed in 1..=5_u64 {
            // Poisson arrivals at 95% of capacity (exponential gaps from an xorshift generator).
            let mut state = seed;
            let gaps = move |_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let uniform = (state >> 11) as f64 / (1_u64 << 53) as f64;
                -(1.0 - uniform).ln() / 950.0
            };
            let run = simulate(1000.0, 30.0, gaps);
            assert_eq!(run.refused(0.0, 30.0), 0.0, "seed {seed}");
        }
    }

    #[test]
    fn a_burst_the_shard_catches_up_with_is_not_overload() {
        // 100 ms at three times the capacity every second, on a load of 60%: a queue of 200 ms
        // that drains in half a second.
        let run = simulate(
            1000.0,
            20.0,
            even(|t| if t.fract() < 0.1 { 3000.0 } else { 600.0 }),
        );
        assert_eq!(run.refused(0.0, 20.0), 0.0);
    }

    #[test]
    fn a_sustained_overload_converges_to_refusing_the_excess() {
        for load in [1.2, 2.0, 4.0] {
            let run = simulate(1000.0, 30.0, even(|_| load * 1000.0));
            let taken = run.taken_per_second(5.0, 30.0);
            // The refusals' own cost (a twentieth of a call each) is what is lost.
            assert!(taken >= 800.0, "at {load}x: {taken} calls/s taken");
            assert!(taken <= 1000.0, "at {load}x: {taken} calls/s taken");
            let expected = 1.0 - 1.0 / load;
            assert!(
                (run.overload.shed() - expected).abs() < 0.25,
                "at {load}x: refused share {}",
                run.overload.shed()
            );
        }
    }

    #[test]
    fn recovers_when_the_load_drops() {
        let run = simulate(
            1000.0,
            30.0,
            even(|t| if t < 10.0 { 2000.0 } else { 500.0 }),
        );
        assert!(run.refused(5.0, 10.0) > 1000.0);
        assert_eq!(run.refused(12.0, 30.0), 0.0);
        assert_eq!(run.overload.shed(), 0.0);
    }

    #[test]
    fn a_refused_invite_stays_refused_for_its_transaction() {
        let t0 = Instant::now();
        let mut overload = Overload::new(OverloadSettings::default());
        // Overloaded: the queue stays a second long for a few intervals.
        let mut refused = None;
        for i in 0..200_u64 {
            let now = t0 + ms(10 * i);
            if overload.admit(now, &i.to_be_bytes(), Duration::from_secs(1)) == Verdict::Refuse {
                refused = Some((i, now));
                break;
            }
        }
        let (id, at) = refused.expect("a call refused");
        // Its retransmission is refused even once the queue is short again ...
        let again = overload.admit(at + ms(500), &id.to_be_bytes(), Duration::ZERO);
        assert_eq!(again, Verdict::Repeat);
        // ... and forgotten after the INVITE transaction's lifetime.
        let later = at + REMEMBER_REFUSED * 2 + ms(1);
        let forgotten = overload.admit(later, &id.to_be_bytes(), Duration::ZERO);
        assert_eq!(forgotten, Verdict::Take);
    }

    #[test]
    fn a_zero_target_never_refuses() {
        let t0 = Instant::now();
        let mut overload = Overload::new(OverloadSettings {
            target: Duration::ZERO,
            ..OverloadSettings::default()
        });
        for i in 0..10_u64 {
            let now = t0 + Duration::from_secs(i);
            let verdict = overload.admit(now, &i.to_be_bytes(), Duration::from_secs(5));
            assert_eq!(verdict, Verdict::Take);
        }
    }

    #[test]
    fn only_out_of_dialog_invites_start_calls() {
        let message = |first: &str, to: &str| {
            tandem_sip::parse_datagram(bytes::Bytes::from(format!(
                "{first}\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
                 From: <sip:a@192.0.2.1>;tag=1\r\nTo: {to}\r\nCall-ID: c\r\n\
                 CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            )))
            .unwrap()
        };
        assert!(starts_a_call(&message(
            "INVITE sip:b@x SIP/2.0",
            "<sip:b@x>"
        )));
        assert!(!starts_a_call(&message(
            "INVITE sip:b@x SIP/2.0",
            "<sip:b@x>;tag=2"
        )));
        assert!(!starts_a_call(&message(
            "CANCEL sip:b@x SIP/2.0",
            "<sip:b@x>"
        )));
        assert!(!starts_a_call(&message("SIP/2.0 180 Ringing", "<sip:b@x>")));
    }
}
