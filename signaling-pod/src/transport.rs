//! SIP transports: the UDP socket and TCP connections of a listener address, and the flows that
//! tie a message to the peer it came from or goes to.
//!
//! Inbound bytes are framed and parsed here and handed to the [`Dispatcher`] as messages; the
//! dispatcher and the calls send through [`Transports::transmit`], which picks the socket for a flow
//! (opening a TCP connection to a peer when none is open). A connection the pod opens is read
//! like an accepted one, so a carrier's replies on it reach the dispatcher, and it is reused for
//! every later message to the same peer.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use tandem_sip::SipMessage;
use tandem_sip::parse::{ParseError, StreamFramer, parse_datagram};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::dispatcher::Dispatcher;
use crate::metrics::{Direction, Metrics};
use crate::routing::Target;

/// A SIP transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams: the transaction layer retransmits.
    Udp,
    /// A stream: reliable, framed by Content-Length.
    Tcp,
}

impl Transport {
    /// The name used in Via headers.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }

    /// Whether the transport is reliable (RFC 3261 §17: no retransmissions).
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }

    /// The lower-case label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// Where a message came from or goes to: a transport and the peer's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub transport: Transport,
    pub remote: SocketAddr,
}

/// The largest SIP message accepted on a stream; larger ones close the connection.
const MAX_STREAM_MESSAGE: usize = 64 * 1024;
/// Outbound messages queued per TCP connection before the connection counts as stuck.
const TCP_QUEUE: usize = 1024;

/// The sockets of one SIP listener address (UDP and TCP on the same port).
#[derive(Debug)]
pub struct Transports {
    udp: Arc<UdpSocket>,
    tcp: Mutex<HashMap<SocketAddr, mpsc::Sender<Bytes>>>,
    /// Serialises opening connections, so that concurrent sends to a new peer share one.
    connecting: tokio::sync::Mutex<()>,
    /// Where messages read from any connection go; set when the receive loops start. Weak: the
    /// dispatcher owns (through the calls' context) these transports.
    dispatcher: OnceLock<Weak<Dispatcher>>,
    metrics: Metrics,
}

impl Transports {
    /// Binds the UDP socket on `udp_addr` and the TCP listener on `tcp_addr`.
    pub async fn bind(
        udp_addr: SocketAddr,
        tcp_addr: SocketAddr,
        metrics: Metrics,
    ) -> anyhow::Result<(Arc<Self>, TcpListener)> {
        let udp = UdpSocket::bind(udp_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind SIP UDP on {udp_addr}: {e}"))?;
        let tcp = TcpListener::bind(tcp_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind SIP TCP on {tcp_addr}: {e}"))?;
        let transports = Arc::new(Self {
            udp: Arc::new(udp),
            tcp: Mutex::new(HashMap::new()),
            connecting: tokio::sync::Mutex::new(()),
            dispatcher: OnceLock::new(),
            metrics,
        });
        Ok((transports, tcp))
    }

    /// Sends one message on `flow`; over TCP it reuses the peer's connection or opens one.
    pub async fn send(self: &Arc<Self>, flow: Flow, data: Bytes) -> io::Result<()> {
        self.metrics
            .count_message(Direction::Out, message_kind(&data));
        match flow.transport {
            Transport::Udp => self.udp.send_to(&data, flow.remote).await.map(|_| ()),
            Transport::Tcp => {
                let existing = self.tcp_sender(flow.remote);
                let sender = match existing {
                    Some(sender) => sender,
                    None => self.connect(flow.remote).await?,
                };
                sender.try_send(data).map_err(|e| {
                    io::Error::other(format!("TCP connection to {}: {e}", flow.remote))
                })
            }
        }
    }

    /// Sends `data` without waiting: at once on UDP and on an open TCP connection, else from a
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
        } else if let Some(sender) = self.tcp_sender(flow.remote) {
            self.metrics
                .count_message(Direction::Out, message_kind(&data));
            if let Err(e) = sender.try_send(data) {
                tracing::debug!(error = %e, remote = %flow.remote, "TCP connection stuck");
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

    fn tcp_sender(&self, remote: SocketAddr) -> Option<mpsc::Sender<Bytes>> {
        self.lock_tcp().get(&remote).cloned()
    }

    fn lock_tcp(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, mpsc::Sender<Bytes>>> {
        // A poisoned map only means a task panicked mid-insert; the map itself is still usable.
        self.tcp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a connection to `remote`, unless another send opened one meanwhile.
    async fn connect(self: &Arc<Self>, remote: SocketAddr) -> io::Result<mpsc::Sender<Bytes>> {
        let _opening = self.connecting.lock().await;
        if let Some(sender) = self.tcp_sender(remote) {
            return Ok(sender);
        }
        let stream = TcpStream::connect(remote).await?;
        tracing::debug!(%remote, "outbound TCP connection open");
        Ok(self.adopt(stream, remote))
    }

    /// The dispatcher of inbound messages, once the receive loops run.
    fn dispatcher(&self) -> Option<Arc<Dispatcher>> {
        self.dispatcher.get().and_then(Weak::upgrade)
    }

    fn set_dispatcher(&self, dispatcher: &Arc<Dispatcher>) {
        let _ = self.dispatcher.set(Arc::downgrade(dispatcher));
    }

    /// Registers a TCP connection, accepted or opened: a writer task drains its queue and a
    /// reader task frames and dispatches what arrives.
    fn adopt(self: &Arc<Self>, stream: TcpStream, remote: SocketAddr) -> mpsc::Sender<Bytes> {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Bytes>(TCP_QUEUE);
        self.lock_tcp().insert(remote, tx.clone());
        let this = Arc::clone(self);
        let writer_tx = tx.clone();
        tokio::spawn(async move {
            while let Some(data) = rx.recv().await {
                if let Err(e) = writer.write_all(&data).await {
                    tracing::debug!(%remote, error = %e, "TCP write failed");
                    break;
                }
            }
            this.forget(remote, &writer_tx);
        });
        let this = Arc::clone(self);
        let reader_tx = tx.clone();
        tokio::spawn(async move {
            let flow = Flow {
                transport: Transport::Tcp,
                remote,
            };
            let mut framer = StreamFramer::new(MAX_STREAM_MESSAGE);
            let mut buf = vec![0u8; 16 * 1024];
            'read: loop {
                let n = match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                framer.push(&buf[..n]);
                while let Some(result) = framer.next_message() {
                    let Some(dispatcher) = this.dispatcher() else {
                        tracing::debug!(%remote, "message before the receive loops started dropped");
                        continue;
                    };
                    match result {
                        Ok(msg) => this.deliver(&dispatcher, msg, flow),
                        Err(e) => {
                            this.reject(&dispatcher, &e, flow);
                            if framer.is_failed() {
                                // A stream that lost its framing cannot be resynchronised.
                                break 'read;
                            }
                        }
                    }
                }
            }
            this.forget(remote, &reader_tx);
        });
        tx
    }

    /// Forgets the connection to `remote` when `sender` is still the one registered (a newer
    /// connection to the same peer stays).
    fn forget(&self, remote: SocketAddr, sender: &mpsc::Sender<Bytes>) {
        let mut tcp = self.lock_tcp();
        if tcp.get(&remote).is_some_and(|s| s.same_channel(sender)) {
            tcp.remove(&remote);
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

    /// Accepts TCP connections until the listener fails.
    pub async fn run_tcp(self: Arc<Self>, listener: TcpListener, dispatcher: Arc<Dispatcher>) {
        self.set_dispatcher(&dispatcher);
        loop {
            match listener.accept().await {
                Ok((stream, remote)) => {
                    self.adopt(stream, remote);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
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

/// The socket address of a trunk peer (DNS names are looked up; SRV/NAPTR are not yet).
pub async fn resolve(target: &Target) -> Option<SocketAddr> {
    if let Ok(ip) = target.host.parse::<std::net::IpAddr>() {
        return Some(SocketAddr::new(ip, target.port));
    }
    tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .ok()?
        .next()
}

/// "request" or "response", from the first bytes of a printed message.
fn message_kind(data: &[u8]) -> &'static str {
    if data.starts_with(b"SIP/2.0 ") {
        "response"
    } else {
        "request"
    }
}
