//! SIP transports: the UDP socket and the connections (TCP, TLS, WebSocket, secure WebSocket)
//! of the pod's listeners, and the flows that tie a message to the peer it came from or goes to.
//!
//! Inbound bytes are framed and parsed here and handed to the [`Dispatcher`] as messages; the
//! dispatcher and the calls send through [`Transports::transmit`], which picks the socket for a
//! flow (opening a TCP or TLS connection to a peer when none is open). A connection is a flow
//! of its own, keyed by its transport and the peer's address: replies and requests inside the
//! dialogs it carries go back on it, which is what WebSocket clients (RFC 7118) and clients
//! behind NAT (RFC 5626) need. A connection the pod opens is read like an accepted one, so a
//! carrier's replies on it reach the dispatcher, and it is reused for every later message to the
//! same peer.
//!
//! Every connection is held to the [`Limits`]: message size, connections per source address,
//! idle time and the time a message may take to arrive; each close is counted by reason.

pub mod dns;
pub mod rfc3263;
mod stream;
pub mod tls;
mod ws;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Instant;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustls_pki_types::ServerName;
use tandem_api::gateway::ListenerTransport;
use tandem_sip::SipMessage;
use tandem_sip::parse::{ParseError, ParseErrorKind, StreamFramer, parse_datagram};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::dispatcher::Dispatcher;
use crate::metrics::{Direction, Metrics};
use crate::routing::Target;

pub use stream::{Close, Limits};
use stream::{Deadlines, keepalive_pings};

/// A SIP transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Datagrams: the transaction layer retransmits.
    Udp,
    /// A stream: reliable, framed by Content-Length.
    Tcp,
    /// A TCP stream inside TLS.
    Tls,
    /// WebSocket (RFC 7118): one SIP message per WebSocket message.
    Ws,
    /// WebSocket inside TLS.
    Wss,
}

impl Transport {
    /// The name used in Via headers.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// Whether the transport is reliable (RFC 3261 §17: no retransmissions).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// The lower-case label used in metrics, and the `transport` URI parameter.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }
}

/// Where a message came from or goes to: a transport and the peer's address. Over a connection
/// the address is the connection's far end, so a flow names one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub remote: SocketAddr,
}

impl From<ListenerTransport> for Transport {
    fn from(listener: ListenerTransport) -> Self {
        match listener {
            ListenerTransport::Udp => Transport::Udp,
            ListenerTransport::Tcp => Transport::Tcp,
            ListenerTransport::Tls => Transport::Tls,
            ListenerTransport::Ws => Transport::Ws,
            ListenerTransport::Wss => Transport::Wss,
        }
    }
}

/// Where a TLS or WSS listener's certificate is read when no `--tls-dir` names it (where the
/// operator mounts the listener's Secret).
pub const DEFAULT_TLS_DIR: &str = "/etc/tandem/tls";

/// Parses a `--tls-dir` value: `<listener name>=<directory>`.
pub fn parse_tls_dir(value: &str) -> Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(dir)))
        }
        _ => Err(format!(
            "expected <listener name>=<directory>, got {value:?}"
        )),
    }
}

/// The stream listeners to bind on `bind`: TCP on `tcp_port` (always: the pod's own TCP
/// connections need it too), then each TLS, WS and WSS listener of `listeners` (name,
/// transport, port), TLS and WSS with their certificate loaded from their `tls_dirs` entry (or
/// [`DEFAULT_TLS_DIR`]) and watched for changes.
pub fn listener_specs(
    bind: IpAddr,
    tcp_port: u16,
    listeners: &[(String, Transport, u16)],
    tls_dirs: &[(String, PathBuf)],
) -> anyhow::Result<Vec<ListenerSpec>> {
    let mut specs = vec![ListenerSpec {
        transport: Transport::Tcp,
        addr: SocketAddr::new(bind, tcp_port),
        certificate: None,
    }];
    for (name, transport, port) in listeners {
        let certificate = match transport {
            Transport::Udp | Transport::Tcp => continue,
            Transport::Ws => None,
            Transport::Tls | Transport::Wss => {
                let dir = tls_dirs
                    .iter()
                    .find(|(listener, _)| listener == name)
                    .map_or_else(
                        || Path::new(DEFAULT_TLS_DIR).join(name),
                        |(_, dir)| dir.clone(),
                    );
                let store = tls::CertStore::load(&dir)
                    .map_err(|e| anyhow::anyhow!("listener {name:?}: {e:#}"))?;
                store.watch();
                Some(store)
            }
        };
        specs.push(ListenerSpec {
            transport: *transport,
            addr: SocketAddr::new(bind, *port),
            certificate,
        });
    }
    Ok(specs)
}

/// Outbound messages queued per connection before the connection counts as stuck.
const CONNECTION_QUEUE: usize = 1024;

/// A stream listener bound by [`Transports::bind`], waiting for [`Transports::run_listener`].
#[derive(Debug)]
pub struct Listener {
    transport: Transport,
    socket: TcpListener,
    tls: Option<Arc<ServerConfig>>,
}

/// One listener to bind: its transport, address and, for TLS and WSS, its certificate.
#[derive(Debug)]
pub struct ListenerSpec {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub certificate: Option<Arc<tls::CertStore>>,
}

/// An open connection: its outbound queue, and an identity telling it from a later connection
/// of the same flow.
#[derive(Debug, Clone)]
struct Connection {
    id: u64,
    queue: mpsc::Sender<Bytes>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClosedLabels {
    transport: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    transport: &'static str,
}

/// `tandem_signaling_connections` and `tandem_signaling_connections_closed_total`.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    open: Family<ConnectionLabels, Gauge>,
    closed: Family<ClosedLabels, Counter>,
    pongs: Counter,
}

impl ConnectionMetrics {
    /// Registers the connection metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("tandem_signaling");
        sub.register(
            "connections",
            "Open SIP connections (TCP, TLS, WS, WSS), accepted and opened",
            metrics.open.clone(),
        );
        sub.register(
            "connections_closed",
            "SIP connections closed, by transport and reason",
            metrics.closed.clone(),
        );
        sub.register(
            "keepalive_pongs",
            "RFC 5626 keep-alive pings (CRLFCRLF) answered with a pong on a connection",
            metrics.pongs.clone(),
        );
        metrics
    }

    fn opened(&self, transport: Transport) {
        self.open
            .get_or_create(&ConnectionLabels {
                transport: transport.label(),
            })
            .inc();
    }

    fn closed(&self, transport: Transport, reason: Close, was_open: bool) {
        if was_open {
            self.open
                .get_or_create(&ConnectionLabels {
                    transport: transport.label(),
                })
                .dec();
        }
        self.closed
            .get_or_create(&ClosedLabels {
                transport: transport.label(),
                reason: reason.as_str(),
            })
            .inc();
    }
}

/// The sockets and connections of the pod's SIP listeners.
#[derive(Debug)]
pub struct Transports {
    udp: Arc<UdpSocket>,
    connections: Mutex<HashMap<Flow, Connection>>,
    /// Accepted connections per source address (the per-IP limit).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The host names of TLS peers, by address: the name their certificate must carry.
    peer_names: Mutex<HashMap<SocketAddr, String>>,
    next_id: AtomicU64,
    /// Serialises opening connections, so that concurrent sends to a new peer share one.
    connecting: tokio::sync::Mutex<()>,
    /// Where messages read from any connection go; set when the receive loops start. Weak: the
    /// dispatcher owns (through the calls' context) these transports.
    dispatcher: OnceLock<Weak<Dispatcher>>,
    tls_client: Arc<ClientConfig>,
    resolver: dns::Resolver,
    limits: Limits,
    metrics: Metrics,
    connection_metrics: ConnectionMetrics,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned map only means a task panicked mid-insert; the map itself is still usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Transports {
    /// Binds the UDP socket on `udp_addr` and a listening socket for each of `listeners`.
    pub async fn bind(
        udp_addr: SocketAddr,
        listeners: Vec<ListenerSpec>,
        tls_client: Arc<ClientConfig>,
        resolver: dns::Resolver,
        limits: Limits,
        metrics: Metrics,
        connection_metrics: ConnectionMetrics,
    ) -> anyhow::Result<(Arc<Self>, Vec<Listener>)> {
        let udp = UdpSocket::bind(udp_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind SIP UDP on {udp_addr}: {e}"))?;
        let mut bound = Vec::with_capacity(listeners.len());
        for spec in listeners {
            let name = spec.transport.via_name();
            let socket = TcpListener::bind(spec.addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot bind SIP {name} on {}: {e}", spec.addr))?;
            let tls = match spec.certificate {
                Some(store) => Some(tls::server_config(store)?),
                None if matches!(spec.transport, Transport::Tls | Transport::Wss) => {
                    anyhow::bail!(
                        "the SIP {name} listener on {} has no certificate",
                        spec.addr
                    )
                }
                None => None,
            };
            bound.push(Listener {
                transport: spec.transport,
                socket,
                tls,
            });
        }
        let transports = Arc::new(Self {
            udp: Arc::new(udp),
            connections: Mutex::new(HashMap::new()),
            per_ip: Mutex::new(HashMap::new()),
            peer_names: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            connecting: tokio::sync::Mutex::new(()),
            dispatcher: OnceLock::new(),
            tls_client,
            resolver,
            limits,
            metrics,
            connection_metrics,
        });
        Ok((transports, bound))
    }

    /// The next hops of a trunk peer or registrar, in failover order (RFC 3263: NAPTR, SRV and
    /// A/AAAA records for a host name without a port, A/AAAA with one); empty when it does not
    /// resolve. Over TLS the host is remembered as the name the peer's certificate must carry.
    pub async fn resolve(&self, target: &Target) -> Vec<Flow> {
        let hops = self
            .resolver
            .resolve(&target.host, target.port, target.configured_transport())
            .await;
        for hop in &hops {
            if hop.transport == Transport::Tls {
                lock(&self.peer_names).insert(hop.remote, target.host.clone());
            }
        }
        hops
    }

    /// The resolver of peers, to report which hops fail and answer.
    pub fn resolver(&self) -> &dns::Resolver {
        &self.resolver
    }

    /// Sends one message on `flow`; over TCP and TLS it reuses the peer's connection or opens
    /// one. A WebSocket flow is only ever the connection a client opened.
    pub async fn send(self: &Arc<Self>, flow: Flow, data: Bytes) -> io::Result<()> {
        self.metrics
            .count_message(Direction::Out, message_kind(&data));
        if flow.transport == Transport::Udp {
            return self.udp.send_to(&data, flow.remote).await.map(|_| ());
        }
        let queue = match self.connection(flow) {
            Some(queue) => queue,
            None => self.connect(flow).await?,
        };
        queue.try_send(data).map_err(|e| {
            io::Error::other(format!(
                "{} connection to {}: {e}",
                flow.transport.via_name(),
                flow.remote
            ))
        })
    }

    /// Sends `data` without waiting: at once on UDP and on an open connection, else from a
    /// task of its own (a connection to open, a full socket buffer). Failures are logged: the
    /// transaction layer retransmits or times out.
    pub fn transmit(self: &Arc<Self>, flow: Flow, data: Bytes) {
        if flow.transport == Transport::Udp {
            match self.udp.try_send_to(&data, flow.remote) {
                Ok(_) => {
                    self.metrics
                        .count_message(Direction::Out, message_kind(&data));
                    return;
                }
                Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                    tracing::debug!(error = %e, remote = %flow.remote, "send failed");
                    return;
                }
                Err(_) => {}
            }
        } else if let Some(queue) = self.connection(flow) {
            self.metrics
                .count_message(Direction::Out, message_kind(&data));
            if let Err(e) = queue.try_send(data) {
                tracing::debug!(error = %e, remote = %flow.remote, "connection stuck");
            }
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = this.send(flow, data).await {
                tracing::debug!(error = %e, remote = %flow.remote, "send failed");
            }
        });
    }

    fn connection(&self, flow: Flow) -> Option<mpsc::Sender<Bytes>> {
        lock(&self.connections).get(&flow).map(|c| c.queue.clone())
    }

    /// Opens a connection for `flow`, unless another send opened one meanwhile.
    async fn connect(self: &Arc<Self>, flow: Flow) -> io::Result<mpsc::Sender<Bytes>> {
        let _opening = self.connecting.lock().await;
        if let Some(queue) = self.connection(flow) {
            return Ok(queue);
        }
        let remote = flow.remote;
        let timeout = self.limits.message_timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(remote))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
        let _ = tcp.set_nodelay(true);
        match flow.transport {
            Transport::Tcp => {
                tracing::debug!(%remote, "outbound TCP connection open");
                Ok(self.adopt_stream(tcp, flow, false))
            }
            Transport::Tls => {
                let name = lock(&self.peer_names)
                    .get(&remote)
                    .cloned()
                    .unwrap_or_else(|| remote.ip().to_string());
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let handshake =
                    TlsConnector::from(Arc::clone(&self.tls_client)).connect(server_name, tcp);
                let stream = match tokio::time::timeout(timeout, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::warn!(%remote, peer = name, error = %e, "TLS connection to a peer failed");
                        self.connection_metrics
                            .closed(flow.transport, Close::Handshake, false);
                        return Err(e);
                    }
                    Err(_) => {
                        self.connection_metrics
                            .closed(flow.transport, Close::Slow, false);
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "TLS handshake timed out",
                        ));
                    }
                };
                tracing::debug!(%remote, peer = name, "outbound TLS connection open");
                Ok(self.adopt_stream(stream, flow, false))
            }
            Transport::Udp | Transport::Ws | Transport::Wss => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!(
                    "no {} connection from {remote} (only the client opens one)",
                    flow.transport.via_name()
                ),
            )),
        }
    }

    /// The dispatcher of inbound messages, once the receive loops run.
    fn dispatcher(&self) -> Option<Arc<Dispatcher>> {
        self.dispatcher.get().and_then(Weak::upgrade)
    }

    fn set_dispatcher(&self, dispatcher: &Arc<Dispatcher>) {
        let _ = self.dispatcher.set(Arc::downgrade(dispatcher));
    }

    /// Registers a connection of `flow` and returns its identity and outbound queue.
    fn register(&self, flow: Flow) -> (u64, mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queue, outbound) = mpsc::channel(CONNECTION_QUEUE);
        lock(&self.connections).insert(
            flow,
            Connection {
                id,
                queue: queue.clone(),
            },
        );
        self.connection_metrics.opened(flow.transport);
        (id, queue, outbound)
    }

    /// Forgets connection `id` of `flow` (a newer connection of the same flow stays) and
    /// counts why it closed.
    fn closed(&self, flow: Flow, id: u64, reason: Close, accepted: bool) {
        {
            let mut connections = lock(&self.connections);
            if connections.get(&flow).is_some_and(|c| c.id == id) {
                connections.remove(&flow);
            }
        }
        if accepted {
            self.release_ip(flow.remote.ip());
        }
        self.connection_metrics.closed(flow.transport, reason, true);
        tracing::debug!(
            remote = %flow.remote,
            transport = flow.transport.label(),
            reason = reason.as_str(),
            "connection closed"
        );
    }

    /// Counts an accepted connection from `ip`; false when it already has the most allowed.
    fn admit_ip(&self, ip: IpAddr) -> bool {
        let mut per_ip = lock(&self.per_ip);
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.limits.max_connections_per_ip {
            return false;
        }
        *count += 1;
        true
    }

    fn release_ip(&self, ip: IpAddr) {
        let mut per_ip = lock(&self.per_ip);
        if let Some(count) = per_ip.get_mut(&ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                per_ip.remove(&ip);
            }
        }
    }

    /// Runs a TCP or TLS connection (accepted by a listener when `accepted`): a task reads, frames and
    /// dispatches what arrives and writes what is queued, until it closes.
    fn adopt_stream<S>(
        self: &Arc<Self>,
        stream: S,
        flow: Flow,
        accepted: bool,
    ) -> mpsc::Sender<Bytes>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (id, queue, outbound) = self.register(flow);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let reason = this.serve_stream(stream, flow, outbound).await;
            this.closed(flow, id, reason, accepted);
        });
        queue
    }

    async fn serve_stream<S>(
        &self,
        stream: S,
        flow: Flow,
        mut outbound: mpsc::Receiver<Bytes>,
    ) -> Close
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut framer = StreamFramer::new(self.limits.max_message_size);
        let mut deadlines = Deadlines::new(self.limits, Instant::now());
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let (deadline, timeout_reason) = deadlines.next();
            let n = tokio::select! {
                read = reader.read(&mut buf) => match read {
                    Ok(0) => return Close::PeerClosed,
                    Ok(n) => n,
                    // A TLS peer gone without close_notify.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Close::PeerClosed,
                    Err(_) => return Close::Error,
                },
                data = outbound.recv() => {
                    let Some(data) = data else { return Close::Error };
                    if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
                        return Close::Error;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    let _ = writer.shutdown().await;
                    return timeout_reason;
                }
            };
            let pings = keepalive_pings(framer.buffered() == 0, &buf[..n]);
            for _ in 0..pings {
                self.connection_metrics.pongs.inc();
                if writer.write_all(b"\r\n").await.is_err() {
                    return Close::Error;
                }
            }
            framer.push(&buf[..n]);
            while let Some(result) = framer.next_message() {
                let Some(dispatcher) = self.dispatcher() else {
                    tracing::debug!(remote = %flow.remote, "message before the receive loops started dropped");
                    continue;
                };
                match result {
                    Ok(msg) => self.deliver(&dispatcher, msg, flow),
                    Err(e) => {
                        let reason = match e.kind() {
                            ParseErrorKind::TooLarge { .. } => Close::Oversized,
                            _ => Close::Garbage,
                        };
                        let answer = e.partial().is_some();
                        self.reject(&dispatcher, &e, flow);
                        if framer.is_failed() {
                            // A stream that lost its framing cannot be resynchronised: the
                            // answer (513, 400) goes out first, then the connection closes.
                            if answer {
                                while let Ok(data) = outbound.try_recv() {
                                    let _ = writer.write_all(&data).await;
                                }
                            }
                            let _ = writer.shutdown().await;
                            return reason;
                        }
                    }
                }
            }
            deadlines.received(Instant::now(), framer.buffered() > 0);
        }
    }

    /// Runs a WebSocket connection: one SIP message per WebSocket message.
    async fn serve_ws<S>(
        &self,
        mut ws: WebSocketStream<S>,
        flow: Flow,
        mut outbound: mpsc::Receiver<Bytes>,
    ) -> Close
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut deadlines = Deadlines::new(self.limits, Instant::now());
        loop {
            let (deadline, timeout_reason) = deadlines.next();
            let message = tokio::select! {
                message = ws.next() => message,
                data = outbound.recv() => {
                    let Some(data) = data else { return Close::Error };
                    if ws.send(ws::frame(data)).await.is_err() {
                        return Close::Error;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    let _ = ws.close(None).await;
                    return timeout_reason;
                }
            };
            deadlines.received(Instant::now(), false);
            let message = match message {
                None => return Close::PeerClosed,
                Some(Ok(message)) => message,
                Some(Err(tungstenite::Error::Capacity(e))) => {
                    tracing::debug!(remote = %flow.remote, error = %e, "WebSocket message over the size limit");
                    close_ws(&mut ws, ws::OVERSIZED_CLOSE, "SIP message too large").await;
                    return Close::Oversized;
                }
                Some(Err(tungstenite::Error::ConnectionClosed)) => return Close::PeerClosed,
                Some(Err(e)) => {
                    tracing::debug!(remote = %flow.remote, error = %e, "WebSocket protocol error");
                    return Close::Garbage;
                }
            };
            let Some(dispatcher) = self.dispatcher() else {
                continue;
            };
            match ws::receive(message) {
                ws::Received::Sip(Ok(msg)) => self.deliver(&dispatcher, msg, flow),
                ws::Received::Sip(Err(e)) => self.reject(&dispatcher, &e, flow),
                ws::Received::Nothing => {}
                ws::Received::Closed => return Close::PeerClosed,
                ws::Received::Garbage => {
                    self.metrics.count_parse_error(flow.transport);
                    tracing::debug!(remote = %flow.remote, "WebSocket message that is no SIP message: closing");
                    close_ws(&mut ws, ws::GARBAGE_CLOSE, "not a SIP message").await;
                    return Close::Garbage;
                }
            }
        }
    }

    /// Receives datagrams until the socket fails; each is parsed and dispatched.
    pub async fn run_udp(self: Arc<Self>, dispatcher: Arc<Dispatcher>) {
        self.set_dispatcher(&dispatcher);
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, remote) = match self.udp.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(e) => {
                    // ICMP port-unreachable from a vanished peer surfaces here on Linux.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            };
            let flow = Flow {
                transport: Transport::Udp,
                remote,
            };
            let datagram = Bytes::copy_from_slice(&buf[..n]);
            if datagram.iter().all(|b| matches!(b, b'\r' | b'\n' | 0)) {
                continue; // RFC 5626 keep-alive
            }
            match parse_datagram(datagram) {
                Ok(msg) => self.deliver(&dispatcher, msg, flow),
                Err(e) => self.reject(&dispatcher, &e, flow),
            }
        }
    }

    /// Accepts connections on `listener` until it fails.
    pub async fn run_listener(self: Arc<Self>, listener: Listener, dispatcher: Arc<Dispatcher>) {
        self.set_dispatcher(&dispatcher);
        let transport = listener.transport;
        loop {
            let (tcp, remote) = match listener.socket.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, transport = transport.label(), "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let flow = Flow { transport, remote };
            if !self.admit_ip(remote.ip()) {
                tracing::debug!(%remote, limit = self.limits.max_connections_per_ip, "connection refused: too many from this address");
                self.connection_metrics
                    .closed(transport, Close::TooManyConnections, false);
                drop(tcp);
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let this = Arc::clone(&self);
            let tls = listener.tls.clone().map(TlsAcceptor::from);
            tokio::spawn(async move { this.accept(tcp, flow, tls).await });
        }
    }

    /// Completes the TLS and WebSocket handshakes of an accepted connection (within the
    /// message timeout), then serves it.
    async fn accept(self: Arc<Self>, tcp: TcpStream, flow: Flow, tls: Option<TlsAcceptor>) {
        let timeout = self.limits.message_timeout;
        let failed = |reason: Close| {
            self.release_ip(flow.remote.ip());
            self.connection_metrics
                .closed(flow.transport, reason, false);
            tracing::debug!(remote = %flow.remote, transport = flow.transport.label(), reason = reason.as_str(), "connection closed during its handshake");
        };
        match (flow.transport, tls) {
            (Transport::Tcp, _) => {
                self.adopt_stream(tcp, flow, true);
            }
            (Transport::Tls, Some(tls)) => {
                match tokio::time::timeout(timeout, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        self.adopt_stream(stream, flow, true);
                    }
                    Ok(Err(_)) => failed(Close::Handshake),
                    Err(_) => failed(Close::Slow),
                }
            }
            (Transport::Ws, _) => match self.ws_handshake(tcp, timeout).await {
                Ok(ws) => self.adopt_ws(ws, flow),
                Err(reason) => failed(reason),
            },
            (Transport::Wss, Some(tls)) => {
                let started = tokio::time::Instant::now();
                let stream = match tokio::time::timeout(timeout, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(_)) => return failed(Close::Handshake),
                    Err(_) => return failed(Close::Slow),
                };
                let rest = timeout.saturating_sub(started.elapsed());
                match self.ws_handshake(stream, rest).await {
                    Ok(ws) => self.adopt_ws(ws, flow),
                    Err(reason) => failed(reason),
                }
            }
            (Transport::Udp | Transport::Tls | Transport::Wss, _) => failed(Close::Handshake),
        }
    }

    async fn ws_handshake<S>(
        &self,
        stream: S,
        timeout: std::time::Duration,
    ) -> Result<WebSocketStream<S>, Close>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = tokio_tungstenite::accept_hdr_async_with_config(
            stream,
            ws::accept_sip_subprotocol,
            Some(ws::config(self.limits.max_message_size)),
        );
        match tokio::time::timeout(timeout, handshake).await {
            Ok(Ok(ws)) => Ok(ws),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket handshake refused");
                Err(Close::Handshake)
            }
            Err(_) => Err(Close::Slow),
        }
    }

    fn adopt_ws<S>(self: &Arc<Self>, ws: WebSocketStream<S>, flow: Flow)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (id, _queue, outbound) = self.register(flow);
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let reason = this.serve_ws(ws, flow, outbound).await;
            this.closed(flow, id, reason, true);
        });
    }

    fn deliver(&self, dispatcher: &Dispatcher, msg: SipMessage, flow: Flow) {
        self.metrics.count_message(
            Direction::In,
            if msg.is_request() {
                "request"
            } else {
                "response"
            },
        );
        dispatcher.dispatch(msg, flow);
    }

    fn reject(&self, dispatcher: &Dispatcher, error: &ParseError, flow: Flow) {
        self.metrics.count_parse_error(flow.transport);
        dispatcher.reject_unparsable(error, flow);
    }
}

/// Sends a close frame with `code` and `reason`; the peer may already be gone.
async fn close_ws<S>(
    ws: &mut WebSocketStream<S>,
    code: tungstenite::protocol::frame::coding::CloseCode,
    reason: &'static str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = ws.send(Message::Close(Some(frame))).await;
    let _ = ws.flush().await;
}

/// "request" or "response", from the first bytes of a printed message.
fn message_kind(data: &[u8]) -> &'static str {
    if data.starts_with(b"SIP/2.0 ") {
        "response"
    } else {
        "request"
    }
}
