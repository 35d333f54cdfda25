//! Call admission: `limits.maxCalls` as reservations.
//!
//! A trunk's active calls in one direction are counted in its `tandem_trunk_calls_active` gauge.
//! A call takes a [`Reservation`] when its INVITE is accepted (inbound) or sent (outbound); the
//! check and the increment are one atomic step, so concurrent calls never overshoot the limit,
//! and the reservation is released exactly once, when it is dropped.

use std::sync::atomic::Ordering;

use prometheus_client::metrics::gauge::Gauge;

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
