//! `operator`: the Tandem Kubernetes operator.
//!
//! - `operator run` reconciles Gateway, Trunk and RoutePlan into signaling and media pods;
//! - `operator render -f FILE...` prints what it would apply, without a cluster;
//! - `operator crds` prints the CustomResourceDefinitions.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tandem_operator::settings::{
    DEFAULT_CLUSTER_DOMAIN, DEFAULT_DATAPLANE_CLUSTER_ROLE, DEFAULT_DATAPLANE_IMAGE, Settings,
};
use tandem_operator::{commands, process, render};
use tandem_runtime::logging::{self, LogFormat};

/// Tandem operator: reconciles Gateway, Trunk and RoutePlan.
#[derive(Debug, Parser)]
#[command(name = "operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (in a cluster, or against the cluster of KUBECONFIG).
    Run(RunArgs),
    /// Print the objects the operator would apply for Gateway, Trunk and RoutePlan manifests,
    /// as one YAML stream, without a cluster. Children carry no ownerReferences.
    Render(RenderArgs),
    /// Print every CustomResourceDefinition as one multi-document YAML stream, ready for
    /// `kubectl apply --server-side -f -`.
    Crds,
}

/// How the data-plane pods are built.
#[derive(Debug, Args)]
struct DataplaneArgs {
    /// Container image of the signaling and media pods.
    #[arg(long, env = "TANDEM_DATAPLANE_IMAGE", default_value = DEFAULT_DATAPLANE_IMAGE)]
    dataplane_image: String,
    /// ClusterRole bound to each Gateway's data-plane ServiceAccount.
    #[arg(long, env = "TANDEM_DATAPLANE_CLUSTER_ROLE", default_value = DEFAULT_DATAPLANE_CLUSTER_ROLE)]
    dataplane_cluster_role: String,
    /// DNS domain of the cluster.
    #[arg(long, env = "TANDEM_CLUSTER_DOMAIN", default_value = DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
}

impl DataplaneArgs {
    fn settings(self) -> Settings {
        Settings {
            dataplane_image: self.dataplane_image,
            dataplane_cluster_role: self.dataplane_cluster_role,
            cluster_domain: self.cluster_domain,
            ..Settings::default()
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    dataplane: DataplaneArgs,
    /// Admin HTTP address: /metrics, /livez, /readyz.
    #[arg(long, env = "TANDEM_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    admin_listen: SocketAddr,
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "TANDEM_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Name of the leader election Lease.
    #[arg(long, env = "TANDEM_LEASE_NAME", default_value = "tandem-operator")]
    lease_name: String,
    /// Namespace of the leader election Lease (default: the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the election and in Events (default: the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "TANDEM_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Args)]
struct RenderArgs {
    /// Manifest files or directories (walked for .yaml and .yml files); repeatable.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    dataplane: DataplaneArgs,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tandem-operator".to_owned())
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crds => match commands::print_crds(&mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Render(args) => {
            let settings = args.dataplane.settings();
            let rendered = render::read_sources(&args.files)
                .and_then(|sources| render::render(&sources, &settings));
            match rendered {
                Ok(stream) => match commands::write_stdout(&stream) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => {
                        eprintln!("error: {error:#}");
                        ExitCode::FAILURE
                    }
                },
                Err(error) => {
                    for line in error.lines() {
                        eprintln!("error: {line}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            let telemetry = logging::init("operator", args.log_format);
            let options = process::Options {
                settings: args.dataplane.settings(),
                admin_listen: args.admin_listen,
                namespace: args.namespace,
                lease_name: args.lease_name,
                lease_namespace: args.lease_namespace,
                identity: args.identity.unwrap_or_else(host_name),
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: cannot start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let code = match runtime.block_on(process::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    ExitCode::FAILURE
                }
            };
            // Outside the runtime: the exporter flushes with blocking I/O.
            drop(runtime);
            telemetry.shutdown();
            code
        }
    }
}
