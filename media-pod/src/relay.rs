//! The relay's packet path: the UDP sockets of every allocated port pair, one receive task per
//! socket, and the forwarding of each datagram as the session table decides.
//!
//! Each receive task waits for readiness and then drains its socket into a per-thread buffer
//! (no per-socket buffer memory, no truncation of large datagrams), a bounded batch at a time
//! so one flooded port cannot starve the others. Socket tuning and batched system calls
//! (recvmmsg/GSO) belong here when they come.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tandem_rtp::PacketKind;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::metrics::{Metrics, PacketClass};
use crate::session::{Packet, PortBinder, Route, SessionTable, Timestamp};

/// Datagrams handled per wake-up before yielding to other tasks.
const BATCH: usize = 64;

thread_local! {
    static RECEIVE_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; 65_536]);
}

/// The current time in both clocks.
pub fn now() -> Timestamp {
    Timestamp {
        instant: Instant::now(),
        unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

/// Locks the session table; a panic elsewhere while holding the lock must not stop the relay,
/// and the table stays consistent between its own method calls.
pub fn lock_table(table: &Mutex<SessionTable>) -> MutexGuard<'_, SessionTable> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Shared {
    bind_ip: IpAddr,
    table: Arc<Mutex<SessionTable>>,
    metrics: Metrics,
    sockets: RwLock<HashMap<u16, Arc<UdpSocket>>>,
    tasks: Mutex<HashMap<u16, JoinHandle<()>>>,
    /// Receive tasks aborted but not yet finished; their sockets close when they finish.
    closing: Mutex<Vec<JoinHandle<()>>>,
}

/// The media sockets and their receive tasks.
#[derive(Clone)]
pub struct Relay {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("bind_ip", &self.shared.bind_ip)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay binding media sockets on `bind_ip`, routing through `table`.
    pub fn new(bind_ip: IpAddr, table: Arc<Mutex<SessionTable>>, metrics: Metrics) -> Self {
        Self {
            shared: Arc::new(Shared {
                bind_ip,
                table,
                metrics,
                sockets: RwLock::new(HashMap::new()),
                tasks: Mutex::new(HashMap::new()),
                closing: Mutex::new(Vec::new()),
            }),
        }
    }

    /// The [`PortBinder`] the session table uses to open and close pairs.
    pub fn binder(&self) -> RelayBinder {
        RelayBinder {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Waits until the sockets of every unbound pair are really closed, so that a reply
    /// confirming a `delete` means its ports can be bound again.
    pub async fn finish_closing(&self) {
        let closing = std::mem::take(&mut *lock(&self.shared.closing));
        for task in closing {
            // The task was aborted: a cancellation error is the expected outcome.
            let _ = task.await;
        }
    }

    /// Closes every socket (shutdown).
    pub async fn close_all(&self) {
        let ports: Vec<u16> = lock(&self.shared.tasks).keys().copied().collect();
        let mut binder = self.binder();
        for port in ports {
            binder.close(port);
        }
        self.finish_closing().await;
    }
}

/// Opens and closes media sockets for the session table.
pub struct RelayBinder {
    shared: Arc<Shared>,
}

impl RelayBinder {
    fn open(&mut self, port: u16) -> io::Result<()> {
        let std_socket = std::net::UdpSocket::bind(SocketAddr::new(self.shared.bind_ip, port))?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        write(&self.shared.sockets).insert(port, Arc::clone(&socket));
        let task = tokio::spawn(receive(Arc::clone(&self.shared), socket, port));
        lock(&self.shared.tasks).insert(port, task);
        Ok(())
    }

    fn close(&mut self, port: u16) {
        write(&self.shared.sockets).remove(&port);
        if let Some(task) = lock(&self.shared.tasks).remove(&port) {
            task.abort();
            lock(&self.shared.closing).push(task);
        }
    }
}

impl PortBinder for RelayBinder {
    fn bind_pair(&mut self, rtp_port: u16) -> io::Result<()> {
        let rtcp_port = rtp_port
            .checked_add(1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port above 65535"))?;
        self.open(rtp_port)?;
        if let Err(e) = self.open(rtcp_port) {
            self.close(rtp_port);
            return Err(e);
        }
        Ok(())
    }

    fn unbind_pair(&mut self, rtp_port: u16) {
        self.close(rtp_port);
        if let Some(rtcp_port) = rtp_port.checked_add(1) {
            self.close(rtcp_port);
        }
    }
}

async fn receive(shared: Arc<Shared>, socket: Arc<UdpSocket>, port: u16) {
    loop {
        if let Err(e) = socket.readable().await {
            tracing::warn!(port, error = %e, "media socket failed; no longer receiving");
            return;
        }
        let mut drained = false;
        for _ in 0..BATCH {
            let received = RECEIVE_BUFFER.with_borrow_mut(|buffer| {
                socket.try_recv_from(buffer).map(|(len, source)| {
                    let datagram = buffer.get(..len).unwrap_or_default();
                    shared.forward(port, datagram, source);
                })
            });
            match received {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) => {
                    // Errors queued by ICMP and the like: note it and back off briefly so a
                    // persistent error cannot spin the task.
                    tracing::debug!(port, error = %e, "media receive error");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    drained = true;
                    break;
                }
            }
        }
        if !drained {
            tokio::task::yield_now().await;
        }
    }
}

impl Shared {
    fn forward(&self, port: u16, datagram: &[u8], source: SocketAddr) {
        let packet = Packet::inspect(datagram);
        let kind = packet.kind;
        let (route, ended) = {
            let mut table = lock_table(&self.table);
            let route = table.route_packet(port, source, &packet, now());
            // Streams displaced by new SSRCs leave samples here; rare, so check cheaply.
            let ended = table
                .has_quality_samples()
                .then(|| table.take_quality_samples());
            (route, ended)
        };
        for sample in ended.iter().flatten() {
            self.metrics.observe_quality(sample);
        }
        match route {
            Route::Forward { from_port, to } => {
                let socket = read(&self.sockets).get(&from_port).cloned();
                let sent = match socket {
                    Some(socket) => socket.try_send_to(datagram, to),
                    None => Err(io::Error::from(io::ErrorKind::NotConnected)),
                };
                match sent {
                    Ok(_) => {
                        let class = if kind == PacketKind::Rtcp {
                            PacketClass::Rtcp
                        } else {
                            PacketClass::Rtp
                        };
                        self.metrics.relayed(class, datagram.len());
                    }
                    Err(e) => {
                        tracing::debug!(from_port, %to, error = %e, "media send failed");
                        self.metrics.dropped("send_failed");
                    }
                }
            }
            Route::Drop(reason) => {
                tracing::trace!(port, %source, reason = reason.as_str(), "media packet dropped");
                self.metrics.dropped(reason.as_str());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
