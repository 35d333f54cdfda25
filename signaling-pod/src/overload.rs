//! Overload control: when a shard cannot keep up, new calls are refused early and cheaply.
//!
//! The measure of load is the queue delay of new calls: how long an out-of-dialog INVITE waited
//! in its shard's queue of new calls, which the shard serves only after its timers and every
//! message of the calls it already carries (in-dialog requests, responses, CANCEL, ACK). A
//! short burst that queues for a moment is not overload; a queue that stays behind is: once
//! new calls have waited longer than the target for a whole interval, each new call that
//! waited that long is refused with a stateless `503` and `Retry-After` before any call state
//! exists, until one gets through faster (the idea of CoDel, RFC 8289, on call set-ups).
//! Retransmissions of INVITEs of calls already started reach their calls, never this decision.

use std::time::{Duration, Instant};

use tandem_sip::message::{Method, SipMessage};

/// When new calls are refused for overload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverloadSettings {
    /// Queue delay of new calls above which the shard counts as behind (zero: never refuse).
    pub target: Duration,
    /// How long the queue delay must stay above `target` before new calls are refused.
    pub interval: Duration,
    /// The `Retry-After` of the refusal, in seconds.
    pub retry_after: u32,
}

impl Default for OverloadSettings {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(50),
            interval: Duration::from_millis(100),
            retry_after: 1,
        }
    }
}

/// One shard's overload state: since when its new calls have waited longer than the target.
#[derive(Debug)]
pub struct Overload {
    settings: OverloadSettings,
    above_since: Option<Instant>,
}

impl Overload {
    pub fn new(settings: OverloadSettings) -> Self {
        Self {
            settings,
            above_since: None,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &OverloadSettings {
        &self.settings
    }

    /// Whether a new call dequeued at `now` after waiting `queued` is taken (or refused).
    pub fn admit(&mut self, now: Instant, queued: Duration) -> bool {
        if self.settings.target.is_zero() || queued < self.settings.target {
            self.above_since = None;
            return true;
        }
        let since = *self.above_since.get_or_insert(now);
        now.saturating_duration_since(since) < self.settings.interval
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

    #[test]
    fn a_short_burst_is_not_overload_a_standing_queue_is() {
        let t0 = Instant::now();
        let mut overload = Overload::new(OverloadSettings::default());
        // A burst: above the target for less than the interval, then back under it.
        assert!(overload.admit(t0, ms(80)));
        assert!(overload.admit(t0 + ms(60), ms(70)));
        assert!(overload.admit(t0 + ms(90), ms(10)));
        assert!(
            overload.admit(t0 + ms(150), ms(60)),
            "the interval starts again"
        );
        // Still above the target a whole interval later: refused until one gets through fast.
        assert!(!overload.admit(t0 + ms(250), ms(60)));
        assert!(!overload.admit(t0 + ms(251), ms(200)));
        assert!(overload.admit(t0 + ms(252), ms(49)));
        assert!(overload.admit(t0 + ms(260), ms(55)));
    }

    #[test]
    fn a_zero_target_never_refuses() {
        let t0 = Instant::now();
        let mut overload = Overload::new(OverloadSettings {
            target: Duration::ZERO,
            ..OverloadSettings::default()
        });
        for i in 0..10 {
            assert!(overload.admit(t0 + Duration::from_secs(i), Duration::from_secs(5)));
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
