//! Shutdown signals: SIGINT (Ctrl-C) and SIGTERM (Kubernetes pod termination).

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
