//! `bench-media`: the two programs `make bench-media` runs in a private network namespace.
//!
//! - `generate`: sets up N one-way G.711 streams through an engine (over ng: `offer`/`answer`
//!   per stream, or a fixed port map for the raw forwarder), sends 172-byte RTP packets at
//!   50 per second per stream with `sendmmsg` from one socket, receives them with `recvmmsg`
//!   on one socket with kernel receive timestamps (`SO_TIMESTAMPNS`), and prints loss, added
//!   latency percentiles and whether it kept up with its own schedule.
//! - `forward`: the baseline, a minimal single-threaded epoll + `recvmmsg`/`sendmmsg`
//!   forwarder from N fixed ports to one destination.

mod forwarder;
mod generator;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "bench-media", about = "RTP relay benchmark tools")]
struct Cli {
    #[command(subcommand)]
    command: Tool,
}

#[derive(Debug, Subcommand)]
enum Tool {
    /// Runs one step: N streams for a fixed time through an engine.
    Generate(generator::Options),
    /// Forwards every datagram arriving on N ports to one address.
    Forward(forwarder::Options),
}

fn main() {
    let result = match Cli::parse().command {
        Tool::Generate(options) => generator::run(&options),
        Tool::Forward(options) => forwarder::run(&options),
    };
    if let Err(e) = result {
        eprintln!("bench-media: {e:#}");
        std::process::exit(1);
    }
}
