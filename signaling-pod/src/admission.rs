//! Call admission per trunk and direction: `limits.maxCalls` as reservations and
//! `limits.callsPerSecond` with `limits.burst` as token buckets.
//!
//! A trunk's active calls in one direction are counted in its `tandem_trunk_calls_active` gauge.
//! A call takes a [`Reservation`] when its INVITE is accepted (inbound) or sent (outbound); the
//! check and the increment are one atomic step, so concurrent calls never overshoot the limit,
//! and the reservation is released exactly once, when it is dropped.
//!
//! New calls per second are metered by a [`TokenBucket`] per trunk and direction, shared by the
//! shards: one compare-and-swap per call, so the rate holds exactly under concurrency. Limits
//! are per signaling replica.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tandem_api::trunk::CallLimits;

use crate::metrics::TrunkDirection;

/// What a caller refused at `maxCalls` is told to wait, in seconds.
pub const MAX_CALLS_RETRY_AFTER: u32 = 5;

/// The limit a new call ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `limits.maxCalls`: the trunk carries as many calls as it may.
    MaxCalls,
    /// `limits.callsPerSecond`: the trunk's token bucket is empty; the next token comes after
    /// `retry_after`.
    CallsPerSecond { retry_after: Duration },
}

impl Limit {
    /// The reason phrase of the `503` that refuses the call.
    pub fn reason(self) -> &'static str {
        match self {
            Limit::MaxCalls => "Trunk Max Calls Exceeded",
            Limit::CallsPerSecond { .. } => "Trunk Calls Per Second Exceeded",
        }
    }

    /// The `limit` label of `tandem_signaling_admission_rejections_total`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::MaxCalls => "max_calls",
            Limit::CallsPerSecond { .. } => "calls_per_second",
        }
    }

    /// The `Retry-After` of the `503`, in whole seconds (at least 1).
    pub fn retry_after(self) -> u32 {
        match self {
            Limit::MaxCalls => MAX_CALLS_RETRY_AFTER,
            Limit::CallsPerSecond { retry_after } => {
                u32::try_from(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0))
                    .unwrap_or(u32::MAX)
                    .max(1)
            }
        }
    }
}

/// A token bucket of `rate` calls per second holding up to `burst` tokens, kept as the generic
/// cell rate algorithm: one "theoretical arrival time" that each admitted call pushes one
/// interval further, admitted while it stays within `burst` intervals of now. Time is passed
/// in; the state is one atomic word.
#[derive(Debug)]
pub struct TokenBucket {
    origin: Instant,
    /// Nanoseconds per call, rounded up so the rate is never exceeded.
    interval: u64,
    /// `burst` intervals.
    tolerance: u64,
    /// Theoretical arrival time of the next call, in nanoseconds since `origin`.
    tat: AtomicU64,
    rate: u32,
    burst: u32,
}

impl TokenBucket {
    /// A full bucket of `rate` calls per second and `burst` tokens (both at least 1).
    pub fn new(origin: Instant, rate: u32, burst: u32) -> Self {
        let rate = rate.max(1);
        let burst = burst.max(1);
        let interval = 1_000_000_000u64.div_ceil(u64::from(rate));
        Self {
            origin,
            interval,
            tolerance: interval * u64::from(burst),
            tat: AtomicU64::new(0),
            rate,
            burst,
        }
    }

    /// Takes a token at `now`, or tells how long until one is available.
    pub fn try_take(&self, now: Instant) -> Result<(), Duration> {
        let now = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX / 2);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now) + self.interval;
            if next > now + self.tolerance {
                return Err(Duration::from_nanos(next - now - self.tolerance));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

/// The token buckets of every trunk and direction with a `callsPerSecond`, created on a
/// trunk's first call and replaced when its rate or burst changes.
#[derive(Debug)]
pub struct RateLimits {
    origin: Instant,
    buckets: Mutex<HashMap<(String, TrunkDirection), Arc<TokenBucket>>>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            buckets: Mutex::default(),
        }
    }
}

impl RateLimits {
    /// Admits a new call on `trunk` in `direction` at `now` under `limits`: a reservation of
    /// one call in `active`, then a token of the trunk's bucket. A call refused for its rate
    /// releases its reservation; one refused at `maxCalls` takes no token.
    pub fn admit(
        &self,
        now: Instant,
        trunk: &str,
        direction: TrunkDirection,
        limits: Option<&CallLimits>,
        active: &Gauge,
    ) -> Result<Reservation, Limit> {
        let reservation =
            Reservation::take(active, limits.and_then(|l| l.max_calls)).ok_or(Limit::MaxCalls)?;
        if let Some(rate) = limits.and_then(|l| l.calls_per_second) {
            let burst = limits.and_then(|l| l.burst).unwrap_or(rate);
            self.bucket(trunk, direction, rate, burst)
                .try_take(now)
                .map_err(|retry_after| Limit::CallsPerSecond { retry_after })?;
        }
        Ok(reservation)
    }

    fn bucket(
        &self,
        trunk: &str,
        direction: TrunkDirection,
        rate: u32,
        burst: u32,
    ) -> Arc<TokenBucket> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get(&(trunk.to_owned(), direction))
            && bucket.rate == rate
            && bucket.burst == burst
        {
            return Arc::clone(bucket);
        }
        let bucket = Arc::new(TokenBucket::new(self.origin, rate, burst));
        buckets.insert((trunk.to_owned(), direction), Arc::clone(&bucket));
        bucket
    }
}

/// One call counted against a trunk's limit; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    active: Gauge,
}

impl Reservation {
    /// Counts one more call in `active` unless it already holds `limit` (no limit: always).
    pub fn take(active: &Gauge, limit: Option<u32>) -> Option<Reservation> {
        let max = limit.map_or(i64::MAX, i64::from);
        active
            .inner()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Reservation {
            active: active.clone(),
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.active.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: Option<u32>) -> CallLimits {
        CallLimits {
            max_calls: None,
            calls_per_second: Some(rate),
            burst,
        }
    }

    #[test]
    fn a_bucket_admits_its_burst_then_one_call_per_interval() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new(t0, 10, 3);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(t0), Ok(()));
        }
        assert_eq!(bucket.try_take(t0), Err(Duration::from_millis(100)));
        assert_eq!(
            bucket.try_take(t0 + Duration::from_millis(40)),
            Err(Duration::from_millis(60))
        );
        assert_eq!(bucket.try_take(t0 + Duration::from_millis(100)), Ok(()));
        assert!(bucket.try_take(t0 + Duration::from_millis(150)).is_err());
        assert_eq!(bucket.try_take(t0 + Duration::from_millis(200)), Ok(()));
        // Idle for long: the bucket refills to its burst, no further.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(later), Ok(()));
        }
        assert!(bucket.try_take(later).is_err());
    }

    #[test]
    fn over_any_window_a_bucket_admits_at_most_burst_plus_rate_times_window() {
        let t0 = Instant::now();
        let (rate, burst) = (7u32, 4u32);
        let bucket = TokenBucket::new(t0, rate, burst);
        // Offered every millisecond for 10 virtual seconds.
        let admitted: Vec<u64> = (0..10_000u64)
            .filter(|ms| bucket.try_take(t0 + Duration::from_millis(*ms)).is_ok())
            .collect();
        assert_eq!(admitted.len() as u32, burst + 10 * rate - 1);
        for (i, start) in admitted.iter().enumerate() {
            let within_a_second = admitted[i..]
                .iter()
                .take_while(|t| **t < start + 1000)
                .count();
            assert!(
                within_a_second as u32 <= burst + rate,
                "{within_a_second} at {start}"
            );
        }
    }

    #[test]
    fn concurrent_callers_take_exactly_the_tokens_there_are() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new(t0, 100, 1000);
        let offered = std::sync::Barrier::new(8);
        // 8 threads offer 500 calls each at once, then again one second later.
        let admitted: Vec<(usize, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let first = (0..500).filter(|_| bucket.try_take(t0).is_ok()).count();
                        offered.wait();
                        let later = t0 + Duration::from_secs(1);
                        let second = (0..500).filter(|_| bucket.try_take(later).is_ok()).count();
                        (first, second)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let first: usize = admitted.iter().map(|a| a.0).sum();
        let second: usize = admitted.iter().map(|a| a.1).sum();
        assert_eq!(first, 1000, "the burst, not one call more");
        assert_eq!(second, 100, "one second of the rate");
    }

    #[test]
    fn refusals_name_their_limit_and_when_to_retry() {
        let limits_of = RateLimits::default();
        let now = Instant::now();
        let active = Gauge::default();
        let one_a_second = limits(1, None);
        let first = limits_of
            .admit(
                now,
                "carrier",
                TrunkDirection::Inbound,
                Some(&one_a_second),
                &active,
            )
            .unwrap();
        let refused = limits_of
            .admit(
                now,
                "carrier",
                TrunkDirection::Inbound,
                Some(&one_a_second),
                &active,
            )
            .unwrap_err();
        assert_eq!(refused.reason(), "Trunk Calls Per Second Exceeded");
        assert_eq!(refused.label(), "calls_per_second");
        assert_eq!(refused.retry_after(), 1);
        assert_eq!(active.get(), 1, "the refused call released its reservation");
        // The other direction has a bucket of its own.
        assert!(
            limits_of
                .admit(
                    now,
                    "carrier",
                    TrunkDirection::Outbound,
                    Some(&one_a_second),
                    &active
                )
                .is_ok()
        );
        drop(first);
        let full = CallLimits {
            max_calls: Some(1),
            ..limits(100, Some(100))
        };
        let _held = limits_of
            .admit(now, "peer", TrunkDirection::Inbound, Some(&full), &active)
            .unwrap();
        let refused = limits_of
            .admit(now, "peer", TrunkDirection::Inbound, Some(&full), &active)
            .unwrap_err();
        assert_eq!(refused, Limit::MaxCalls);
        assert_eq!(refused.reason(), "Trunk Max Calls Exceeded");
        assert_eq!(refused.retry_after(), MAX_CALLS_RETRY_AFTER);
        // A changed rate takes effect at once, with a full bucket.
        let more = limits(5, None);
        for _ in 0..5 {
            assert!(
                limits_of
                    .admit(
                        now,
                        "carrier",
                        TrunkDirection::Inbound,
                        Some(&more),
                        &Gauge::default()
                    )
                    .is_ok()
            );
        }
        assert_eq!(
            Limit::CallsPerSecond {
                retry_after: Duration::from_millis(1500)
            }
            .retry_after(),
            2
        );
    }

    #[test]
    fn a_limit_admits_that_many_and_each_release_frees_one() {
        let gauge = Gauge::default();
        let first = Reservation::take(&gauge, Some(2)).unwrap();
        let _second = Reservation::take(&gauge, Some(2)).unwrap();
        assert!(Reservation::take(&gauge, Some(2)).is_none());
        assert_eq!(gauge.get(), 2);
        drop(first);
        assert_eq!(gauge.get(), 1);
        assert!(Reservation::take(&gauge, Some(2)).is_some());
        assert!(Reservation::take(&gauge, None).is_some());
    }

    #[test]
    fn concurrent_takers_never_overshoot() {
        let gauge = Gauge::default();
        let all_taken = std::sync::Barrier::new(8);
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let mut held = Vec::new();
                        for _ in 0..1000 {
                            if let Some(r) = Reservation::take(&gauge, Some(100)) {
                                held.push(r);
                            }
                        }
                        // Nobody releases before everyone has tried.
                        all_taken.wait();
                        held.len()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 100);
        assert_eq!(gauge.get(), 0, "every reservation was released once");
    }
}
