//! Shutdown signals: SIGINT (Ctrl-C) and SIGTERM (Kubernetes pod termination).

use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal as unix_signal};

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

/// Waits for the next SIGINT or SIGTERM.
pub async fn signal() -> std::io::Result<Signal> {
    let mut interrupt = unix_signal(SignalKind::interrupt())?;
    let mut terminate = unix_signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => Ok(Signal::Interrupt),
        _ = terminate.recv() => Ok(Signal::Terminate),
    }
}

/// How long after the first signal a repeat still counts as the same request to stop.
pub const ECHO_WINDOW: Duration = Duration::from_secs(1);

/// Waits for a signal that asks to stop *at once*: one that arrives more than [`ECHO_WINDOW`]
/// after the first (`first`). Earlier repeats are echoes, e.g. a launcher forwarding the Ctrl-C
/// that the terminal already sent to the whole process group, and are ignored.
pub async fn second_signal(first: Instant) -> std::io::Result<Signal> {
    loop {
        let signal = signal().await?;
        if first.elapsed() > ECHO_WINDOW {
            return Ok(signal);
        }
        tracing::debug!(%signal, "repeated signal ignored");
    }
}
