//! Sans-IO SIP transactions (RFC 3261 §17, with the RFC 6026 Accepted states).
//!
//! A transaction is a state machine fed with messages and the current time and drained of
//! effects: `on_*(now, ..)` and `on_timeout(now)` in, `poll_output()` out, `next_timeout()`
//! for when to call back. Nothing here touches a socket or reads a clock, so tests run whole
//! retransmission schedules on virtual time.
//!
//! INVITE 2xx handling follows RFC 6026: a 2xx moves both sides to *Accepted* instead of
//! terminating. The client keeps passing 2xx retransmissions up (the TU acknowledges each) for
//! Timer M; the server absorbs INVITE retransmissions for Timer L while the TU retransmits its
//! 2xx (RFC 3261 §13.3.1.4) — the ACK for a 2xx is a request of its own and goes to the TU.

mod client;
mod key;
mod server;

use std::time::Duration;

pub use client::{ClientOutput, ClientState, ClientTransaction};
pub use key::{KeyError, TransactionKey, transaction_key};
pub use server::{ServerOutput, ServerState, ServerTransaction};

/// Timer values (RFC 3261 §17.1.1.1 and Table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerConfig {
    /// Round-trip estimate: first retransmission interval, and 64·T1 is the transaction
    /// timeout (Timers B, F, H, J, L, M). Default 500 ms.
    pub t1: Duration,
    /// Cap on the retransmission interval of non-INVITE requests and INVITE final responses.
    /// Default 4 s.
    pub t2: Duration,
    /// How long a message may stay in the network (Timers I and K). Default 5 s.
    pub t4: Duration,
    /// Timer D: how long an INVITE client stays Completed to answer final response
    /// retransmissions with ACK over unreliable transports. Default 32 s.
    pub timer_d: Duration,
    /// How long an INVITE server transaction waits for the TU's first response before sending
    /// 100 Trying itself (§17.2.1); `None` leaves it to the TU. Default 200 ms.
    pub auto_trying: Option<Duration>,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            auto_trying: Some(Duration::from_millis(200)),
        }
    }
}

impl TimerConfig {
    /// 64·T1: Timers B, F, H, J, L and M.
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// The earliest of some optional deadlines.
fn earliest<const N: usize>(
    deadlines: [Option<std::time::Instant>; N],
) -> Option<std::time::Instant> {
    deadlines.into_iter().flatten().min()
}

fn due(deadline: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    deadline.is_some_and(|t| t <= now)
}
