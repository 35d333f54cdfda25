//! Shutdown signals: SIGINT (Ctrl-C) and SIGTERM (Kubernetes pod termination).
//!
//! The first signal asks for a graceful stop (drain); a later one asks to stop at once. A
//! repeat within [`ECHO_WINDOW`] of the first is an echo, not a second request: a terminal's
//! Ctrl-C reaches the whole process group while the local launcher also forwards it to its
//! pods, so each pod sees it twice in a row.

use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal as UnixSignal, SignalKind, signal as unix_signal};

/// How long after the first signal a repeat still counts as the same request to stop.
pub const ECHO_WINDOW: Duration = Duration::from_secs(1);

/// Which signal asked the process to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C in a terminal.
    Interrupt,
    /// A supervisor (Kubernetes, systemd, the local launcher) asking for a graceful stop.
    Terminate,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// SIGTERM and SIGINT handlers, installed once for the life of the process so that no signal is
/// lost between two waits.
#[derive(Debug)]
pub struct Signals {
    terminate: UnixSignal,
    interrupt: UnixSignal,
    first: Option<Instant>,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self {
            terminate: unix_signal(SignalKind::terminate())?,
            interrupt: unix_signal(SignalKind::interrupt())?,
            first: None,
        })
    }

    async fn any(&mut self) -> Signal {
        tokio::select! {
            Some(()) = self.terminate.recv() => Signal::Terminate,
            Some(()) = self.interrupt.recv() => Signal::Interrupt,
            else => std::future::pending().await,
        }
    }

    /// Waits for the first signal: the request to stop gracefully.
    pub async fn first(&mut self) -> Signal {
        let signal = self.any().await;
        self.first.get_or_insert_with(Instant::now);
        signal
    }

    /// Waits for a signal that asks to stop at once: one more than [`ECHO_WINDOW`] after the
    /// first. Echoes are ignored.
    pub async fn again(&mut self) -> Signal {
        loop {
            let signal = self.any().await;
            let first = *self.first.get_or_insert_with(Instant::now);
            if first.elapsed() > ECHO_WINDOW {
                return signal;
            }
            tracing::debug!(%signal, "repeated signal ignored");
        }
    }
}

/// Waits for the next SIGINT or SIGTERM (for a process that only needs the first).
pub async fn signal() -> std::io::Result<Signal> {
    Ok(Signals::install()?.first().await)
}
