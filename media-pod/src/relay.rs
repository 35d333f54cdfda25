//! The relay's packet path: worker threads, each owning a shard of the calls (its own
//! [`SessionTable`], port pairs and sockets), so that a packet never takes a lock shared with
//! another worker or with the ng control plane.
//!
//! Calls are assigned to a shard by a hash of their call-id, for their whole life. The control
//! plane runs commands on a shard by sending it a job over a channel; the worker runs jobs
//! between packets on its own single-threaded runtime, so the table needs no lock at all.
//! Each socket has a receive task that drains it in batches ([`crate::batch`]: `recvmmsg`
//! in, `sendmmsg` out) into buffers allocated once per worker. Packet and drop counts are
//! kept per worker and summed into the metrics when they are scraped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use socket2::{Domain, Protocol, Socket, Type};
use tandem_codec::{DtmfConversion, Pushed, Transcoder, TranscoderConfig};
use tandem_rtp::PacketKind;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, LocalSet};

use crate::batch::{BATCH, Batch, Forward};
use crate::dtmf;
use crate::ice;
use crate::metrics::{
    DTMF_CONVERSIONS, Metrics, PacketClass, PacketCounters, SEND_FAILED, TRANSCODER_FAILED,
};
use crate::recording::Recorder;
use crate::session::{Datagram, DropReason, Packet, PortBinder, Route, SessionTable, Timestamp};

/// Batches drained from one socket per wake-up before yielding to the other sockets, so one
/// flooded port cannot starve the others.
const BATCHES_PER_WAKE: usize = 4;

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

/// Where and how media sockets bind.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    /// Address the RTP/RTCP sockets bind.
    pub bind_ip: IpAddr,
    /// Network interface the sockets are bound to (`SO_BINDTODEVICE`), e.g. an SR-IOV
    /// virtual function.
    pub interface: Option<String>,
    /// Where call recordings are written; recording is refused without one.
    pub recording_dir: Option<PathBuf>,
}

/// A job a worker runs on its table: returns the closure that delivers the result, which
/// the worker calls once the sockets the job closed are really closed.
type Job = Box<dyn FnOnce(&mut SessionTable, &mut dyn PortBinder) -> Box<dyn FnOnce()> + Send>;

/// The relay workers.
#[derive(Debug)]
pub struct Relay {
    workers: Vec<WorkerHandle>,
}

#[derive(Debug)]
struct WorkerHandle {
    jobs: mpsc::UnboundedSender<Job>,
    thread: thread::JoinHandle<()>,
}

/// The relay is stopped or a worker died: the command could not run.
#[derive(Clone, Copy, Debug, thiserror::Error)]
#[error("media worker unavailable")]
pub struct WorkerGone;

impl Relay {
    /// Starts one worker thread per table, each owning its table.
    pub fn start(
        sockets: &SocketConfig,
        tables: Vec<SessionTable>,
        metrics: &Metrics,
    ) -> io::Result<Self> {
        let mut workers = Vec::with_capacity(tables.len());
        for (index, table) in tables.into_iter().enumerate() {
            let (jobs, receiver) = mpsc::unbounded_channel();
            let sockets = sockets.clone();
            let metrics = metrics.clone();
            let thread = thread::Builder::new()
                .name(format!("media-worker-{index}"))
                .spawn(move || run_worker(table, receiver, sockets, metrics))?;
            workers.push(WorkerHandle { jobs, thread });
        }
        Ok(Self { workers })
    }

    /// Number of shards (workers).
    pub fn shards(&self) -> usize {
        self.workers.len()
    }

    /// The shard that owns the call `call_id`.
    pub fn shard_of(&self, call_id: &str) -> usize {
        let mut hasher = DefaultHasher::new();
        call_id.hash(&mut hasher);
        let shards = u64::try_from(self.workers.len().max(1)).unwrap_or(1);
        usize::try_from(hasher.finish() % shards).unwrap_or(0)
    }

    /// Runs `f` on shard `shard`'s table and returns its result once any sockets it closed
    /// are closed.
    pub async fn run<R, F>(&self, shard: usize, f: F) -> Result<R, WorkerGone>
    where
        R: Send + 'static,
        F: FnOnce(&mut SessionTable, &mut dyn PortBinder) -> R + Send + 'static,
    {
        let worker = self.workers.get(shard).ok_or(WorkerGone)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |table, binder| {
            let result = f(table, binder);
            Box::new(move || {
                // The requester may have gone away (shutdown); nothing to deliver then.
                let _ = tx.send(result);
            })
        });
        worker.jobs.send(job).map_err(|_| WorkerGone)?;
        rx.await.map_err(|_| WorkerGone)
    }

    /// Runs `f` on every shard, in shard order.
    pub async fn run_all<R, F>(&self, f: F) -> Result<Vec<R>, WorkerGone>
    where
        R: Send + 'static,
        F: Fn(&mut SessionTable, &mut dyn PortBinder) -> R + Clone + Send + 'static,
    {
        let mut results = Vec::with_capacity(self.workers.len());
        for shard in 0..self.workers.len() {
            results.push(self.run(shard, f.clone()).await?);
        }
        Ok(results)
    }

    /// Stops the workers (their sockets close) and waits for their threads.
    pub fn stop(self) {
        for worker in self.workers {
            drop(worker.jobs);
            if worker.thread.join().is_err() {
                tracing::warn!("a media worker panicked");
            }
        }
    }
}

fn run_worker(
    table: SessionTable,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    sockets: SocketConfig,
    metrics: Metrics,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start a media worker runtime");
            return;
        }
    };
    let local = LocalSet::new();
    local.block_on(&runtime, async move {
        let worker = Rc::new(Worker {
            table: RefCell::new(table),
            sockets,
            open: RefCell::new(HashMap::new()),
            closing: RefCell::new(Vec::new()),
            recordings: RefCell::new(HashMap::new()),
            batch: RefCell::new(Batch::new()),
            forwards: RefCell::new(Vec::with_capacity(BATCH)),
            transcoders: RefCell::new(HashMap::new()),
            tones: RefCell::new(HashMap::new()),
            dtmf_sockets: RefCell::new([None, None]),
            counters: metrics.worker_counters(),
            metrics,
        });
        while let Some(job) = jobs.recv().await {
            let deliver = {
                let mut table = worker.table.borrow_mut();
                let mut binder = WorkerBinder {
                    worker: Rc::clone(&worker),
                };
                job(&mut table, &mut binder)
            };
            worker.finish_closing().await;
            deliver();
        }
    });
}

/// One worker's state; lives on the worker's thread only.
struct Worker {
    table: RefCell<SessionTable>,
    sockets: SocketConfig,
    /// Open sockets and their receive tasks, by local port.
    open: RefCell<HashMap<u16, OpenSocket>>,
    /// Receive tasks aborted but not yet finished; their sockets close when they finish.
    closing: RefCell<Vec<JoinHandle<()>>>,
    /// Open call recordings, by call.
    recordings: RefCell<HashMap<u64, Recorder>>,
    /// Buffers of the batch being relayed (receive tasks take turns on the one thread).
    batch: RefCell<Batch>,
    /// The forwards of that batch.
    forwards: RefCell<Vec<Forward>>,
    /// Transcoded streams, by the local port their packets arrive on.
    transcoders: RefCell<HashMap<u16, StreamTranscoder>>,
    /// Tones to play into the transcoded stream arriving on a port, with its next packet.
    tones: RefCell<HashMap<u16, dtmf::Tone>>,
    /// The sockets DTMF reports leave from (IPv4, IPv6), opened with the first report: on the
    /// pod's own network, not the media interface.
    dtmf_sockets: RefCell<[Option<std::net::UdpSocket>; 2]>,
    counters: Arc<PacketCounters>,
    metrics: Metrics,
}

impl Worker {
    fn open(self: &Rc<Self>, port: u16) -> io::Result<()> {
        let address = SocketAddr::new(self.sockets.bind_ip, port);
        let socket = Socket::new(
            Domain::for_address(address),
            Type::DGRAM,
            Some(Protocol::UDP),
        )?;
        if let Some(interface) = &self.sockets.interface {
            socket.bind_device(Some(interface.as_bytes()))?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&address.into())?;
        let socket = Rc::new(UdpSocket::from_std(socket.into())?);
        let task = tokio::task::spawn_local(receive(Rc::clone(self), Rc::clone(&socket), port));
        self.open.borrow_mut().insert(port, (socket, task));
        Ok(())
    }

    /// Ends the transcoding of the stream arriving on `port`, if any (a new answer gave the
    /// parties a codec in common, or the port closes). Cheap when nothing is transcoded.
    fn stop_transcoding(&self, port: u16) {
        let mut transcoders = self.transcoders.borrow_mut();
        if transcoders.is_empty() {
            return;
        }
        if let Some(stream) = transcoders.remove(&port) {
            stream.end(&self.metrics);
        }
    }

    fn close(&self, port: u16) {
        self.stop_transcoding(port);
        self.tones.borrow_mut().remove(&port);
        if let Some((_, task)) = self.open.borrow_mut().remove(&port) {
            task.abort();
            self.closing.borrow_mut().push(task);
        }
    }

    async fn finish_closing(&self) {
        let closing = std::mem::take(&mut *self.closing.borrow_mut());
        for task in closing {
            // The task was aborted: a cancellation error is the expected outcome.
            let _ = task.await;
        }
    }

    /// Routes one received datagram (rewriting it in place for SRTP legs); returns where to
    /// send it, if anywhere.
    fn route(
        &self,
        port: u16,
        packet: &Packet,
        datagram: &mut Datagram<'_>,
        source: SocketAddr,
        now: Timestamp,
    ) -> Route {
        let mut table = self.table.borrow_mut();
        let route = table.route_datagram(port, source, packet, Some(datagram), now);
        if table.has_dtmf_reports() {
            for (dest, report) in table.take_dtmf_reports() {
                self.report_dtmf(dest, &report);
            }
        }
        // Streams displaced by new SSRCs leave samples here; rare, so check cheaply.
        if table.has_quality_samples() {
            for sample in table.take_quality_samples() {
                self.metrics.observe_quality(&sample);
            }
        }
        if let Route::Drop(reason) = route {
            tracing::trace!(port, %source, ?reason, "media packet dropped");
            self.counters.dropped(reason.as_str(), 1);
            if let DropReason::Srtp(error) = reason {
                self.counters.srtp_dropped(error);
            }
        }
        route
    }

    /// Sends one digit's report to the call's `dtmf-log-dest`. A lost report is a lost digit,
    /// as a lost INFO would be: nothing is retried.
    fn report_dtmf(&self, dest: SocketAddr, report: &dtmf::Report) {
        let mut sockets = self.dtmf_sockets.borrow_mut();
        let slot = &mut sockets[usize::from(dest.is_ipv6())];
        if slot.is_none() {
            let any: SocketAddr = if dest.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            *slot = std::net::UdpSocket::bind(any)
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .inspect_err(|e| tracing::warn!(error = %e, "no socket for DTMF reports"))
                .ok();
        }
        let Some(socket) = slot.as_ref() else { return };
        match socket.send_to(&report.to_json(), dest) {
            Ok(_) => {
                self.metrics.dtmf_converted("events_to_info", 1);
                tracing::debug!(call_id = report.call_id, code = report.code, %dest, "DTMF reported");
            }
            Err(e) => tracing::info!(error = %e, %dest, "DTMF report not sent"),
        }
    }

    /// `packet`, made by the relay, protected for an SRTP party on `from_port`'s side (as is
    /// for a plain one); `None`, counted as dropped, when it cannot be.
    fn protect_generated(&self, from_port: u16, mut packet: Vec<u8>) -> Option<Vec<u8>> {
        let len = packet.len();
        packet.resize(len + SRTP_ROOM, 0);
        let protected = self
            .table
            .borrow_mut()
            .protect_generated(from_port, &mut packet, len);
        match protected {
            Ok(n) => {
                packet.truncate(n);
                Some(packet)
            }
            Err(reason) => {
                self.counters.dropped(reason.as_str(), 1);
                None
            }
        }
    }

    fn socket(&self, port: u16) -> Option<Rc<UdpSocket>> {
        self.open.borrow().get(&port).map(|(s, _)| Rc::clone(s))
    }
}

/// Room for the SRTP authentication tag (or AEAD tag) of a packet the relay makes itself.
const SRTP_ROOM: usize = 32;

/// One transcoded direction of a call, on the worker that owns it: off the batched fast
/// path, each packet is decoded, resampled and encoded here and sent on its own.
struct StreamTranscoder {
    transcoder: Transcoder,
    packets: Counter,
    /// Concealed packets already counted in the metrics.
    concealed: u64,
    /// DTMF digits converted already counted in the metrics.
    digits: u64,
    out: Vec<Vec<u8>>,
}

impl StreamTranscoder {
    fn end(mut self, metrics: &Metrics) {
        self.count_conversions(metrics);
        let config = self.transcoder.config();
        metrics.transcoding_ended(config.from, config.to);
    }

    fn count_conversions(&mut self, metrics: &Metrics) {
        let concealed = self.transcoder.concealed();
        if concealed > self.concealed {
            metrics.concealed(concealed - self.concealed);
            self.concealed = concealed;
        }
        let digits = self.transcoder.dtmf_digits();
        if digits > self.digits {
            let conversion = match self.transcoder.config().dtmf {
                DtmfConversion::TonesToEvents { .. } => DTMF_CONVERSIONS[1],
                _ => DTMF_CONVERSIONS[0],
            };
            metrics.dtmf_converted(conversion, digits - self.digits);
            self.digits = digits;
        }
    }
}

/// A bound media socket and the task receiving on it.
type OpenSocket = (Rc<UdpSocket>, JoinHandle<()>);

/// Opens and closes sockets on the worker that runs the job.
struct WorkerBinder {
    worker: Rc<Worker>,
}

impl PortBinder for WorkerBinder {
    fn bind_pair(&mut self, rtp_port: u16) -> io::Result<()> {
        let rtcp_port = rtp_port
            .checked_add(1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no port above 65535"))?;
        self.worker.open(rtp_port)?;
        if let Err(e) = self.worker.open(rtcp_port) {
            self.worker.close(rtp_port);
            return Err(e);
        }
        Ok(())
    }

    fn unbind_pair(&mut self, rtp_port: u16) {
        self.worker.close(rtp_port);
        if let Some(rtcp_port) = rtp_port.checked_add(1) {
            self.worker.close(rtcp_port);
        }
    }

    fn open_recording(&mut self, call: u64, name: &str, metadata: &str) -> io::Result<()> {
        let dir = self
            .worker
            .sockets
            .recording_dir
            .as_ref()
            .ok_or(io::ErrorKind::Unsupported)?;
        let path = dir.join(format!("{name}.pcap"));
        let recorder = Recorder::create(&path, metadata).map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "cannot create a recording");
            e
        })?;
        self.worker.recordings.borrow_mut().insert(call, recorder);
        Ok(())
    }

    fn inject_tone(&mut self, port: u16, tone: dtmf::Tone) {
        self.worker.tones.borrow_mut().insert(port, tone);
    }

    fn send_later(&mut self, from_port: u16, to: SocketAddr, packets: dtmf::Schedule) {
        let worker = Rc::clone(&self.worker);
        tokio::task::spawn_local(async move {
            let start = tokio::time::Instant::now();
            for (offset, datagram) in packets {
                tokio::time::sleep_until(start + offset).await;
                // The call may have ended meanwhile: its socket is gone, and so is the event.
                let Some(socket) = worker.socket(from_port) else {
                    return;
                };
                let Some(datagram) = worker.protect_generated(from_port, datagram) else {
                    continue;
                };
                if let Err(e) = socket.send_to(&datagram, to).await {
                    tracing::debug!(from_port, %to, error = %e, "generated packet not sent");
                }
            }
        });
    }

    fn close_recording(&mut self, call: u64) {
        if let Some(mut recorder) = self.worker.recordings.borrow_mut().remove(&call)
            && let Err(e) = recorder.flush()
        {
            tracing::warn!(error = %e, "cannot finish a recording");
        }
    }
}

/// Receives on one socket: each wake-up drains a few batches, routes every datagram and
/// sends each batch's forwards grouped by outgoing socket.
async fn receive(worker: Rc<Worker>, socket: Rc<UdpSocket>, port: u16) {
    loop {
        if let Err(e) = socket.readable().await {
            tracing::warn!(port, error = %e, "media socket failed; no longer receiving");
            return;
        }
        let mut drained = false;
        for _ in 0..BATCHES_PER_WAKE {
            let received = socket.try_io(tokio::io::Interest::READABLE, || {
                worker.batch.borrow_mut().receive(&*socket)
            });
            match received {
                Ok(0) => {
                    drained = true;
                    break;
                }
                Ok(_) => forward_batch(&worker, port),
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

/// Routes the datagrams of the worker's last received batch and sends the forwards, one
/// `sendmmsg` per local port they leave from.
fn forward_batch(worker: &Worker, port: u16) {
    let now = now();
    let mut batch = worker.batch.borrow_mut();
    let mut forwards = worker.forwards.borrow_mut();
    forwards.clear();
    // Every datagram of a batch arrived on one port, so one call decides for all of them.
    let recording = worker.table.borrow().recording_of(port);
    for index in 0..batch.len() {
        let Some((datagram, source)) = batch.datagram(index) else {
            worker.counters.dropped(DropReason::Malformed.as_str(), 1);
            continue;
        };
        let packet = Packet::inspect(datagram);
        if packet.kind == PacketKind::Other && ice::is_stun(datagram) {
            answer_ice_check(worker, port, source, datagram, now);
            continue;
        }
        // SRTCP does not parse as RTCP until it is unprotected: it goes by its packet type
        // octet (RFC 5761).
        let rtcp = match packet.kind {
            PacketKind::Rtcp => true,
            PacketKind::Rtp => false,
            PacketKind::Other => datagram.get(1).is_some_and(|b| (192..=223).contains(b)),
        };
        let route = batch.rewrite(index, |buf, len| {
            let mut datagram = Datagram { buf, len: *len };
            let route = worker.route(port, &packet, &mut datagram, source, now);
            *len = datagram.len;
            route
        });
        let (from_port, to) = match route {
            Some(Route::Forward { from_port, to }) => {
                if !rtcp {
                    worker.stop_transcoding(port);
                }
                (from_port, to)
            }
            Some(Route::Transcode {
                from_port,
                to,
                config,
            }) => {
                let Some((datagram, _)) = batch.datagram(index) else {
                    continue;
                };
                if transcode(worker, port, datagram, (from_port, to), config, now) == Pushed::Taken
                {
                    continue;
                }
                // Not a packet the transcoder can read: relayed unchanged.
                (from_port, to)
            }
            Some(Route::Drop(_)) | None => continue,
        };
        forwards.push(Forward {
            index,
            from_port,
            to,
            rtcp,
        });
    }
    if let Some(call) = recording {
        record_batch(worker, call, port, &batch, &forwards);
    }
    // Grouped by outgoing port, in arrival order within a port; sorting in place allocates
    // nothing.
    forwards.sort_unstable_by_key(|f| (f.from_port, f.index));
    for run in forwards.chunk_by(|a, b| a.from_port == b.from_port) {
        let from_port = run.first().map_or(0, |f| f.from_port);
        let sent = match worker.socket(from_port) {
            Some(socket) => batch.send(&*socket, run),
            None => 0,
        };
        for forward in run.iter().take(sent) {
            let len = batch.datagram(forward.index).map_or(0, |(d, _)| d.len());
            let class = if forward.rtcp {
                PacketClass::Rtcp
            } else {
                PacketClass::Rtp
            };
            worker
                .counters
                .relayed(class, 1, u64::try_from(len).unwrap_or(u64::MAX));
        }
        if sent < run.len() {
            tracing::debug!(from_port, unsent = run.len() - sent, "media send failed");
            let unsent = u64::try_from(run.len() - sent).unwrap_or(u64::MAX);
            worker.counters.dropped(SEND_FAILED, unsent);
        }
    }
}

/// Transcodes one packet of the stream arriving on `port` and sends what comes out from
/// `from_port` to `to`. A stream whose codecs changed (a new answer) starts afresh.
fn transcode(
    worker: &Worker,
    port: u16,
    datagram: &[u8],
    (from_port, to): (u16, SocketAddr),
    config: TranscoderConfig,
    now: Timestamp,
) -> Pushed {
    let mut transcoders = worker.transcoders.borrow_mut();
    if transcoders
        .get(&port)
        .is_some_and(|s| s.transcoder.config() != config)
        && let Some(old) = transcoders.remove(&port)
    {
        old.end(&worker.metrics);
    }
    let stream = match transcoders.entry(port) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => match Transcoder::new(config) {
            Ok(transcoder) => {
                tracing::debug!(port, from = %config.from, to = %config.to, "transcoding");
                e.insert(StreamTranscoder {
                    transcoder,
                    packets: worker.metrics.transcoding_started(config.from, config.to),
                    concealed: 0,
                    digits: 0,
                    out: Vec::new(),
                })
            }
            Err(error) => {
                tracing::warn!(port, %error, "cannot start a transcoder");
                worker.counters.dropped(TRANSCODER_FAILED, 1);
                return Pushed::Taken;
            }
        },
    };
    if let Some(tone) = worker.tones.borrow_mut().remove(&port) {
        let ms = u32::try_from(tone.duration.as_millis()).unwrap_or(u32::MAX);
        stream.transcoder.inject_tone(tone.code, tone.volume, ms);
    }
    let mut out = std::mem::take(&mut stream.out);
    out.clear();
    let pushed = stream.transcoder.push(datagram, &mut out);
    stream.count_conversions(&worker.metrics);
    if let DtmfConversion::TonesToEvents { payload_type } = config.dtmf {
        // Events made from the sender's tones: reported like the events it sends itself, and
        // blocked like them.
        let mut table = worker.table.borrow_mut();
        out.retain(|p| {
            p.get(1).is_none_or(|b| b & 0x7f != payload_type)
                || table.generated_event(port, p, now)
                || {
                    worker.counters.dropped(DropReason::Blocked.as_str(), 1);
                    false
                }
        });
        for (dest, report) in table.take_dtmf_reports() {
            worker.report_dtmf(dest, &report);
        }
    }
    if let Some(socket) = worker.socket(from_port) {
        for packet in out.iter_mut() {
            let Some(protected) = worker.protect_generated(from_port, std::mem::take(packet))
            else {
                continue;
            };
            *packet = protected;
            match socket.try_send_to(packet, to) {
                Ok(_) => {
                    stream.packets.inc();
                    let len = u64::try_from(packet.len()).unwrap_or(u64::MAX);
                    worker.counters.relayed(PacketClass::Rtp, 1, len);
                }
                Err(_) => worker.counters.dropped(SEND_FAILED, 1),
            }
        }
    }
    stream.out = out;
    pushed
}

/// Writes the datagrams of a batch that are relayed into call `call`'s recording, as received
/// on `port`.
fn record_batch(worker: &Worker, call: u64, port: u16, batch: &Batch, forwards: &[Forward]) {
    let mut recordings = worker.recordings.borrow_mut();
    let Some(recorder) = recordings.get_mut(&call) else {
        return;
    };
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let local = SocketAddr::new(worker.sockets.bind_ip, port);
    let written = forwards
        .iter()
        .try_for_each(|forward| match batch.datagram(forward.index) {
            Some((datagram, source)) => recorder.write(at, source, local, datagram),
            None => Ok(()),
        });
    if let Err(e) = written.and_then(|()| recorder.flush()) {
        tracing::warn!(call, error = %e, "recording write failed; recording stopped");
        recordings.remove(&call);
    }
}

/// Answers an ICE connectivity check at once; checks that are not the relay's to answer are
/// dropped as malformed.
fn answer_ice_check(
    worker: &Worker,
    port: u16,
    source: SocketAddr,
    datagram: &[u8],
    now: Timestamp,
) {
    let response = worker
        .table
        .borrow_mut()
        .answer_ice_check(port, source, datagram, now);
    let sent = response
        .zip(worker.socket(port))
        .is_some_and(|(response, socket)| socket.try_send_to(&response, source).is_ok());
    if !sent {
        worker.counters.dropped(DropReason::Malformed.as_str(), 1);
    }
}
