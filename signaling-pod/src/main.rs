//! signaling-pod: the SIP B2BUA/SBC of Tandem.
//!
//! It listens for SIP on UDP, TCP, TLS, WebSocket and secure WebSocket, routes each call by the Gateway's RoutePlans to a Trunk
//! peer, anchors its media in a media pod over the ng protocol, and bridges the two legs with
//! no identifier in common (topology hiding).

mod admission;
mod auth;
mod call;
mod cdr;
mod dispatcher;
mod dtmf_reports;
mod header_rules;
mod health;
mod identity;
mod location;
mod media;
mod media_pool;
mod metrics;
mod overload;
mod registrar;
mod registration;
mod routing;
mod transport;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use prometheus_client::registry::Registry;
use tandem_runtime::admin::{self, Health};
use tandem_runtime::config_dir;
#[cfg(not(feature = "kubernetes"))]
use tandem_runtime::features;
use tandem_runtime::logging::{self, LogFormat};
use tandem_runtime::network_status;
use tandem_runtime::ratedecks::{self, DeckLoader, DeckMetrics};
use tandem_runtime::shutdown::Signals;
use tandem_sip::digest::Algorithm;
use tandem_sip::transaction::TimerConfig;

use crate::admission::RateLimits;
use crate::auth::Auth;
use crate::call::leg::LocalAddress;
use crate::call::{CallContext, Calls, Settings};
use crate::dispatcher::{Dispatcher, Exchanges};
use crate::health::TrunkHealth;
use crate::media_pool::MediaPool;
use crate::metrics::Metrics;
use crate::overload::OverloadSettings;
use crate::registration::Registrations;
use crate::transport::{ConnectionMetrics, Limits, Transport, Transports, tls};

/// How long a stopping pod waits for its registrars to confirm the removal of its bindings.
const UNREGISTER_WAIT: Duration = Duration::from_secs(4);

/// Command line and environment of the signaling pod.
#[derive(Debug, Parser)]
#[command(version, about = "Tandem signaling pod: the SIP B2BUA/SBC")]
struct Args {
    /// Where the Gateway, Trunks and RoutePlans come from: a directory of YAML files, or the
    /// Kubernetes API (a watch in --namespace; needs the `kubernetes` feature, which the
    /// container image has and the local build of `make run` leaves out).
    #[arg(
        long,
        env = "TANDEM_CONFIG_SOURCE",
        value_enum,
        default_value = "directory"
    )]
    config_source: ConfigSource,
    /// Directory of Gateway, Trunk and RoutePlan YAML files (reloaded on change).
    #[arg(long, env = "TANDEM_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// The namespace of the Gateway and its Trunks and RoutePlans (Kubernetes source).
    #[arg(long, env = "TANDEM_NAMESPACE", default_value = "default")]
    namespace: String,
    /// The Gateway this pod serves.
    #[arg(long, env = "TANDEM_GATEWAY")]
    gateway: String,
    /// The address SIP listeners bind (the Gateway's listeners give the ports); defaults to the
    /// Gateway's `signaling.bindAddress`, else all addresses (0.0.0.0).
    #[arg(long, env = "TANDEM_BIND_ADDRESS")]
    bind_address: Option<IpAddr>,
    /// The host put in Via and Contact on every listener; defaults to the pod's address on its
    /// secondary network (--network-status-file), else each listener's advertised address rule
    /// of the Gateway (whose port still applies), else the bind address.
    #[arg(long, env = "TANDEM_ADVERTISE_ADDRESS")]
    advertise_address: Option<String>,
    /// The pod's Multus network status (a downward-API file), to advertise the pod's own
    /// address on --network-name (SecondaryNetwork exposure).
    #[arg(long, env = "TANDEM_NETWORK_STATUS_FILE", requires = "network_name")]
    network_status_file: Option<PathBuf>,
    /// The secondary network (`<namespace>/<attachment>`) whose address the pod advertises.
    #[arg(long, env = "TANDEM_NETWORK_NAME", requires = "network_status_file")]
    network_name: Option<String>,
    /// Seconds to wait for Multus to list the secondary network in the network status.
    #[arg(long, env = "TANDEM_NETWORK_STATUS_WAIT_SECONDS", default_value_t = 60)]
    network_status_wait_seconds: u64,
    /// The media pod's ng control address, when there is one media pod.
    #[arg(long, env = "TANDEM_MEDIA_NG", default_value = "127.0.0.1:2223")]
    media_ng: SocketAddr,
    /// A DNS name resolving to every media pod (a headless Service); overrides --media-ng.
    #[arg(long, env = "TANDEM_MEDIA_SERVICE")]
    media_service: Option<String>,
    /// The media pods' ng port, with --media-service.
    #[arg(long, env = "TANDEM_MEDIA_NG_PORT", default_value_t = 2223)]
    media_ng_port: u16,
    /// Where media pods' DTMF reports (one UDP datagram per digit) are received, for calls
    /// with a SIPINFO Trunk.
    #[arg(
        long,
        env = "TANDEM_DTMF_REPORT_LISTEN",
        default_value = "0.0.0.0:2224"
    )]
    dtmf_report_listen: SocketAddr,
    /// The address media pods send DTMF reports to (put in offers); defaults to the pod's own
    /// IP (`POD_IP`) at the --dtmf-report-listen port, else that address (loopback when it is
    /// the unspecified one).
    #[arg(long, env = "TANDEM_DTMF_REPORT_ADDRESS")]
    dtmf_report_address: Option<SocketAddr>,
    /// Admin HTTP address (/metrics, /livez, /readyz).
    #[arg(long, env = "TANDEM_ADMIN_LISTEN", default_value = "0.0.0.0:9101")]
    admin_listen: SocketAddr,
    /// Seconds a carrier may stay silent (not even 100 Trying) before the next target is tried.
    #[arg(long, env = "TANDEM_INVITE_TIMEOUT", default_value_t = 5)]
    invite_timeout_seconds: u64,
    /// Seconds a call may ring unanswered before it is abandoned.
    #[arg(long, env = "TANDEM_RING_TIMEOUT", default_value_t = 180)]
    ring_timeout_seconds: u64,
    /// The session interval (seconds) asked of carriers and granted to callers that support
    /// session timers without asking for one (RFC 4028).
    #[arg(long, env = "TANDEM_SESSION_EXPIRES", default_value_t = 1800)]
    session_expires_seconds: u32,
    /// The smallest session interval accepted (RFC 4028 Min-SE; at least 90).
    #[arg(long, env = "TANDEM_MIN_SE", default_value_t = 90, value_parser = clap::value_parser!(u32).range(90..))]
    min_se_seconds: u32,
    /// Answered calls are ended after this many seconds (0: no limit).
    #[arg(long, env = "TANDEM_MAX_CALL_DURATION", default_value_t = 0)]
    max_call_duration_seconds: u64,
    /// Answered calls whose media pod saw no packet for this many seconds are ended (0: only
    /// when the media pod itself dropped the call's media).
    #[arg(long, env = "TANDEM_MEDIA_TIMEOUT", default_value_t = 0)]
    media_timeout_seconds: u64,
    /// How often the media pod is asked whether an answered call still has media, in seconds
    /// (0: never).
    #[arg(long, env = "TANDEM_MEDIA_CHECK_INTERVAL", default_value_t = 15)]
    media_check_interval_seconds: u64,
    /// How often the configuration directory and the rate deck files are checked for changes,
    /// in milliseconds.
    #[arg(long, env = "TANDEM_CONFIG_POLL_MS", default_value_t = 1000)]
    config_poll_ms: u64,
    /// Overload control: the queue delay of new calls each shard keeps under, in
    /// milliseconds; above it a share of new calls is refused with a stateless 503, adjusted
    /// every --overload-interval-ms (0: never refuse).
    #[arg(long, env = "TANDEM_OVERLOAD_QUEUE_DELAY_MS", default_value_t = 100)]
    overload_queue_delay_ms: u64,
    /// How often the share of new calls refused for overload is adjusted, from the shortest
    /// queue delay of new calls seen over the interval, in milliseconds.
    #[arg(long, env = "TANDEM_OVERLOAD_INTERVAL_MS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    overload_interval_ms: u64,
    /// The Retry-After of a refusal for overload, in seconds.
    #[arg(long, env = "TANDEM_OVERLOAD_RETRY_AFTER", default_value_t = 1)]
    overload_retry_after_seconds: u32,
    /// Directory of the call detail records: JSON lines, one file at a time, rotated
    /// (docs/cdr.md). No records are kept without it.
    #[arg(long, env = "TANDEM_CDR_DIR")]
    cdr_dir: Option<PathBuf>,
    /// An http(s) URL to POST records to, in batches, from a disk spool in <cdr-dir>/spool:
    /// retried until the endpoint answers 2xx, kept across restarts.
    #[arg(long, env = "TANDEM_CDR_URL", requires = "cdr_dir")]
    cdr_url: Option<String>,
    /// A record file is closed and the next started past this many bytes (0: no limit).
    #[arg(long, env = "TANDEM_CDR_ROTATE_BYTES", default_value_t = 64 * 1024 * 1024)]
    cdr_rotate_bytes: u64,
    /// A record file is closed and the next started once this old, in seconds (0: no limit).
    #[arg(long, env = "TANDEM_CDR_ROTATE_SECONDS", default_value_t = 3600)]
    cdr_rotate_seconds: u64,
    /// How often records written are synced to disk, in milliseconds (0: after every batch
    /// written, before the sender reads it).
    #[arg(long, env = "TANDEM_CDR_FSYNC_MS", default_value_t = 0)]
    cdr_fsync_ms: u64,
    /// Records per POST to --cdr-url.
    #[arg(long, env = "TANDEM_CDR_BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    cdr_batch_size: u32,
    /// Seconds one POST may take before it is retried.
    #[arg(long, env = "TANDEM_CDR_POST_TIMEOUT", default_value_t = 10)]
    cdr_post_timeout_seconds: u64,
    /// The longest pause between retries of a failed POST, in seconds (the pause starts at
    /// 0.5 s and doubles).
    #[arg(long, env = "TANDEM_CDR_RETRY_MAX", default_value_t = 30)]
    cdr_retry_max_seconds: u64,
    /// On SIGTERM, once calls have ended: how long the sender may go on emptying the spool, in
    /// seconds. What is left stays spooled for the next start.
    #[arg(long, env = "TANDEM_CDR_DRAIN_SECONDS", default_value_t = 5)]
    cdr_drain_seconds: u64,
    /// The directory holding `tls.crt` and `tls.key` (PEM) of a TLS or WSS listener, as
    /// `<listener name>=<directory>`; repeat for each. Without one a listener's files are read
    /// from /etc/tandem/tls/<listener name> (where the operator mounts its Secret). The files are
    /// reloaded when they change.
    #[arg(long = "tls-dir", env = "TANDEM_TLS_DIRS", value_delimiter = ',', value_parser = transport::parse_tls_dir)]
    tls_dirs: Vec<(String, PathBuf)>,
    /// Certificates (PEM) trusted for TLS Trunk peers besides the system's roots.
    #[arg(long, env = "TANDEM_TLS_CA_FILE")]
    tls_ca_file: Option<PathBuf>,
    /// The DNS server (`address:port`) asked for trunk peers' NAPTR, SRV and A/AAAA records;
    /// the servers of /etc/resolv.conf without it.
    #[arg(long, env = "TANDEM_DNS_SERVER")]
    dns_server: Option<SocketAddr>,
    /// The largest SIP message accepted on a connection, in bytes (513 or close code 1009
    /// beyond it).
    #[arg(long, env = "TANDEM_MAX_MESSAGE_SIZE", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1024..))]
    max_message_size: u32,
    /// Connections accepted from one source address at a time (TCP, TLS, WS and WSS together).
    #[arg(long, env = "TANDEM_MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    max_connections_per_ip: usize,
    /// A connection on which nothing arrives for this many seconds is closed.
    #[arg(long, env = "TANDEM_CONNECTION_IDLE_TIMEOUT", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    connection_idle_timeout_seconds: u64,
    /// A SIP message, or a TLS or WebSocket handshake, must arrive within this many seconds
    /// of its first byte, else the connection is closed (slowloris).
    #[arg(long, env = "TANDEM_MESSAGE_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    message_timeout_seconds: u64,
    /// The digest algorithms inbound challenges offer, most preferred first (RFC 8760: SHA-256
    /// and MD5). `MD5` alone serves clients that cannot choose among several challenges.
    #[arg(long, env = "TANDEM_AUTH_ALGORITHMS", value_delimiter = ',', default_value = "SHA-256,MD5", value_parser = parse_algorithm)]
    auth_algorithms: Vec<Algorithm>,
    /// Seconds a digest nonce of an inbound challenge stays valid; later answers get a new
    /// challenge with `stale=true`.
    #[arg(long, env = "TANDEM_AUTH_NONCE_LIFETIME", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..))]
    auth_nonce_lifetime_seconds: u64,
    /// Authentication failures from one source address within --auth-failure-window-seconds
    /// that block it.
    #[arg(long, env = "TANDEM_AUTH_MAX_FAILURES", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    auth_max_failures: u32,
    /// The window authentication failures are counted in, in seconds.
    #[arg(long, env = "TANDEM_AUTH_FAILURE_WINDOW", default_value_t = 60)]
    auth_failure_window_seconds: u64,
    /// How long a blocked source's requests are dropped, in seconds.
    #[arg(long, env = "TANDEM_AUTH_BLOCK", default_value_t = 600)]
    auth_block_seconds: u64,
    /// The shortest registration accepted, in seconds (shorter gets 423 Interval Too Brief).
    #[arg(long, env = "TANDEM_REGISTRATION_MIN_EXPIRES", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    registration_min_expires: u32,
    /// The longest registration granted, in seconds (longer requests are shortened).
    #[arg(long, env = "TANDEM_REGISTRATION_MAX_EXPIRES", default_value_t = 3600, value_parser = clap::value_parser!(u32).range(1..))]
    registration_max_expires: u32,
    /// The longest registration granted to a contact behind a NAT, in seconds: its refreshes
    /// keep the NAT's mapping open.
    #[arg(long, env = "TANDEM_REGISTRATION_NAT_MAX_EXPIRES", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..))]
    registration_nat_max_expires: u32,
    /// Keep subscribers' registrations in the Redis at this URL (`redis://host:port`), shared
    /// with the other signaling replicas; in this process only when unset.
    #[arg(long, env = "TANDEM_LOCATION_REDIS_URL")]
    location_redis_url: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "TANDEM_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

/// `seconds` as a duration, 0 meaning none.
fn seconds_opt(seconds: u64) -> Option<Duration> {
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// Reads a digest algorithm name (`SHA-256`, `MD5`, …).
fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    Algorithm::parse(name.trim())
        .ok_or_else(|| format!("unknown digest algorithm {name:?}: use SHA-256 or MD5"))
}

/// Where the configuration comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ConfigSource {
    /// A directory of YAML files (the local platform).
    Directory,
    /// The Kubernetes API.
    Kubernetes,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let telemetry = logging::init("signaling-pod", args.log_format);
    let result = run(args).await;
    telemetry.shutdown();
    if let Err(e) = result {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // Installed first, so that no signal during start-up is lost.
    let mut signals = Signals::install()?;
    let (config, _watcher) = match args.config_source {
        ConfigSource::Directory => {
            let Some(dir) = args.config_dir.clone() else {
                anyhow::bail!(
                    "--config-dir (TANDEM_CONFIG_DIR) is required with the directory source"
                );
            };
            config_dir::watch_gateway(
                dir,
                args.gateway.clone(),
                Duration::from_millis(args.config_poll_ms),
            )?
        }
        #[cfg(feature = "kubernetes")]
        ConfigSource::Kubernetes => {
            tandem_runtime::kube_source::watch_gateway(
                tandem_runtime::kube_source::client().await?,
                args.namespace.clone(),
                args.gateway.clone(),
            )
            .await?
        }
        #[cfg(not(feature = "kubernetes"))]
        ConfigSource::Kubernetes => {
            return Err(features::Missing {
                feature: features::Feature::Kubernetes,
                binary: "signaling-pod",
                asked_by: "--config-source kubernetes (TANDEM_CONFIG_SOURCE)",
            }
            .into());
        }
    };
    // Rate decks are read aside and attached to each configuration published.
    let deck_metrics = DeckMetrics::default();
    let deck_base = match args.config_source {
        ConfigSource::Directory => args.config_dir.clone(),
        ConfigSource::Kubernetes => None,
    };
    let (config, _decks) = ratedecks::attach(
        config,
        DeckLoader::new(deck_base, deck_metrics.clone()),
        Duration::from_millis(args.config_poll_ms),
    )
    .await?;
    let (listeners, signaling, drain_timeout) = {
        let gateway = &config.borrow().gateway;
        let signaling = gateway.spec.signaling.clone();
        let listeners: Vec<(String, Transport, u16)> = signaling
            .listeners
            .iter()
            .map(|l| (l.name.clone(), Transport::from(l.transport), l.port))
            .collect();
        let drain = Duration::from_secs(u64::from(gateway.spec.drain_timeout_seconds));
        (listeners, signaling, drain)
    };
    let bind_address = args
        .bind_address
        .or(signaling.bind_address)
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let port_of = |transport: Transport| {
        listeners
            .iter()
            .find(|(_, t, _)| *t == transport)
            .map(|(_, _, port)| *port)
    };
    let (udp, tcp) = (port_of(Transport::Udp), port_of(Transport::Tcp));
    let (Some(udp_port), Some(tcp_port)) = (udp.or(tcp), tcp.or(udp)) else {
        anyhow::bail!("gateway {:?} has no UDP or TCP listener", args.gateway);
    };
    let own = match (&args.network_status_file, &args.network_name) {
        (Some(file), Some(network)) => Some(
            network_status::wait_for_address(
                file,
                network,
                Duration::from_secs(args.network_status_wait_seconds),
            )
            .await
            // A SIP host is an IPv6 reference in brackets (RFC 3261 section 25.1).
            .map(|ip| match ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            })?,
        ),
        _ => None,
    };
    let local = LocalAddress::advertised(
        &signaling,
        args.advertise_address.clone().or(own).as_deref(),
        &bind_address.to_string(),
    );

    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let cdr_writer = match &args.cdr_dir {
        Some(dir) => {
            let writer = cdr::Writer::start(
                cdr::Config {
                    dir: dir.clone(),
                    rotation: cdr::file::Rotation {
                        max_bytes: args.cdr_rotate_bytes,
                        max_age: seconds_opt(args.cdr_rotate_seconds),
                    },
                    fsync_interval: Duration::from_millis(args.cdr_fsync_ms),
                    url: args.cdr_url.clone(),
                    batch_size: args.cdr_batch_size as usize,
                    post_timeout: Duration::from_secs(args.cdr_post_timeout_seconds.max(1)),
                    max_backoff: Duration::from_secs(args.cdr_retry_max_seconds.max(1)),
                    gateway: args.gateway.clone(),
                },
                cdr::CdrMetrics::register(&mut registry),
            )?;
            tracing::info!(dir = %dir.display(), url = args.cdr_url.as_deref().unwrap_or("none"), "call detail records on");
            Some(writer)
        }
        None => None,
    };
    deck_metrics.register(&mut registry);
    let health = Health::new();
    let connection_metrics = ConnectionMetrics::register(&mut registry);
    let specs = transport::listener_specs(bind_address, tcp_port, &listeners, &args.tls_dirs)?;
    let limits = Limits {
        max_message_size: args.max_message_size as usize,
        max_connections_per_ip: args.max_connections_per_ip,
        idle_timeout: Duration::from_secs(args.connection_idle_timeout_seconds),
        message_timeout: Duration::from_secs(args.message_timeout_seconds),
    };
    let (transports, stream_listeners) = Transports::bind(
        SocketAddr::new(bind_address, udp_port),
        specs,
        tls::client_config(args.tls_ca_file.as_deref())?,
        transport::dns::Resolver::new(args.dns_server, &mut registry)?,
        limits,
        metrics.clone(),
        connection_metrics,
    )
    .await?;
    let media = match args.media_service.clone() {
        Some(service) => MediaPool::discover(service, args.media_ng_port, metrics.clone()).await?,
        None => MediaPool::fixed(args.media_ng, metrics.clone()).await?,
    };
    let ctx_metrics = metrics.clone();
    let auth = Arc::new(Auth::new(
        auth::Limits {
            algorithms: args.auth_algorithms.clone(),
            nonce_lifetime_secs: args.auth_nonce_lifetime_seconds,
            max_failures: args.auth_max_failures,
            window: Duration::from_secs(args.auth_failure_window_seconds),
            block: Duration::from_secs(args.auth_block_seconds),
        },
        &mut registry,
    ));
    let trunk_health = Arc::new(TrunkHealth::default());
    let registrations = Arc::new(Registrations::new(&mut registry));
    let seconds = |s: u64| (s > 0).then(|| Duration::from_secs(s));
    let settings = Settings {
        local,
        timers: TimerConfig::default(),
        invite_timeout: Duration::from_secs(args.invite_timeout_seconds),
        ring_timeout: Duration::from_secs(args.ring_timeout_seconds),
        session_expires: args.session_expires_seconds.max(args.min_se_seconds),
        min_se: args.min_se_seconds,
        max_duration: seconds(args.max_call_duration_seconds),
        media_timeout: seconds(args.media_timeout_seconds),
        media_check_interval: seconds(args.media_check_interval_seconds),
        shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
        overload: OverloadSettings {
            target: Duration::from_millis(args.overload_queue_delay_ms),
            interval: Duration::from_millis(args.overload_interval_ms),
            retry_after: args.overload_retry_after_seconds,
        },
    };
    let location: Arc<dyn location::LocationStore> = match &args.location_redis_url {
        Some(url) => {
            let store = location::RedisStore::connect(url)
                .await
                .map_err(|e| anyhow::anyhow!("--location-redis-url: {e}"))?;
            tracing::info!("registrations kept in Redis");
            Arc::new(store)
        }
        None => Arc::new(location::MemoryStore::default()),
    };
    let ctx = Arc::new(CallContext {
        transports: Arc::clone(&transports),
        media: Arc::clone(&media),
        metrics,
        trunk_health: Arc::clone(&trunk_health),
        settings: Arc::new(settings),
        rate_limits: RateLimits::default(),
        cdr: cdr_writer.as_ref().map(cdr::Writer::sink),
        auth,
        location,
        registration: registrar::Policy {
            min_expires: args.registration_min_expires,
            max_expires: args
                .registration_max_expires
                .max(args.registration_min_expires),
            default_expires: args.registration_max_expires,
            nat_max_expires: args.registration_nat_max_expires,
            ..registrar::Policy::default()
        },
        registrations: Arc::clone(&registrations),
        dtmf_reports: dtmf_reports::report_address(
            args.dtmf_report_listen,
            args.dtmf_report_address,
            std::env::var("POD_IP").ok().and_then(|ip| ip.parse().ok()),
        ),
    });
    let exchanges = Arc::new(Exchanges::default());
    tokio::spawn(health::run_prober(
        Arc::clone(&ctx),
        Arc::clone(&exchanges),
        config.clone(),
        Arc::clone(&trunk_health),
    ));
    let (stop_registering, registering_stopped) = tokio::sync::watch::channel(false);
    let registering = tokio::spawn(registration::run(
        Arc::clone(&ctx),
        Arc::clone(&exchanges),
        registrations,
        config.clone(),
        registering_stopped,
    ));
    let status = health::status_routes(Arc::clone(&ctx), config.clone(), trunk_health);
    let calls = Calls::start(Arc::clone(&ctx), config);
    let dispatcher = Arc::new(Dispatcher::new(ctx, exchanges, calls));
    tokio::spawn(Arc::clone(&transports).run_udp(Arc::clone(&dispatcher)));
    let dtmf_socket = tokio::net::UdpSocket::bind(args.dtmf_report_listen)
        .await
        .map_err(|e| anyhow::anyhow!("--dtmf-report-listen {}: {e}", args.dtmf_report_listen))?;
    tokio::spawn(dtmf_reports::serve(
        dtmf_socket,
        Arc::clone(&dispatcher),
        media,
    ));
    for listener in stream_listeners {
        tokio::spawn(Arc::clone(&transports).run_listener(listener, Arc::clone(&dispatcher)));
    }

    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut admin = tokio::spawn(admin::serve_with(
        args.admin_listen,
        Arc::new(registry),
        health.clone(),
        status,
        async {
            let _ = admin_stopped.await;
        },
    ));
    health.set_ready(true);
    let listening: Vec<String> = listeners
        .iter()
        .map(|(_, transport, port)| format!("{}:{port}", transport.label()))
        .collect();
    tracing::info!(
        listeners = listening.join(" "),
        bind = %bind_address,
        gateway = args.gateway,
        "signaling pod ready"
    );

    tokio::select! {
        signal = signals.first() => tracing::info!(%signal, "draining"),
        result = &mut admin => return result?,
    }
    // Drain: not ready, new calls refused with 503, calls in progress go on until they end or
    // the Gateway's drain timeout passes. A second signal stops at once.
    health.set_ready(false);
    dispatcher.start_draining();
    // The carriers' registrars stop sending calls here: bindings are removed.
    let _ = stop_registering.send(true);
    let active = ctx_metrics.calls_active().clone();
    let records = cdr_writer.as_ref().map(cdr::Writer::sink);
    let drained = async {
        // Calls, then their records (a record waits for the media pod's final statistics).
        while active.get() > 0 || records.as_ref().is_some_and(|r| r.open_records() > 0) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let all_ended = tokio::select! {
        _ = drained => {
            tracing::info!("all calls ended");
            true
        }
        _ = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(calls = ctx_metrics.calls_active().get(), "drain timeout passed with calls in progress");
            false
        }
        signal = signals.again() => {
            tracing::warn!(%signal, "stopping without waiting for calls");
            false
        }
    };
    if let Some(writer) = cdr_writer {
        if !all_ended {
            dispatcher.write_open_records().await;
        }
        writer
            .shutdown(Duration::from_secs(args.cdr_drain_seconds))
            .await;
    }
    if tokio::time::timeout(UNREGISTER_WAIT, registering)
        .await
        .is_err()
    {
        tracing::warn!("stopping before every registration was removed");
    }
    let _ = stop_admin.send(());
    let _ = admin.await;
    tracing::info!("stopped");
    Ok(())
}
