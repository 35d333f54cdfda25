//! `operator`: the Tandem Kubernetes operator. Its controllers are not written yet; today it
//! prints the CustomResourceDefinitions it will reconcile.

mod commands;

use clap::{Parser, Subcommand};

/// Tandem operator: reconciles Gateway, Trunk and RoutePlan.
#[derive(Debug, Parser)]
#[command(name = "operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print every CustomResourceDefinition as one multi-document YAML stream, ready for
    /// `kubectl apply --server-side -f -`.
    Crds,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => commands::print_crds(&mut std::io::stdout().lock()),
    }
}
