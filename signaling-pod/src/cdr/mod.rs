//! Call detail records: one per call attempt ([`record`]), written as JSON lines to rotated
//! files ([`file`]) and, when an endpoint is configured, appended to a disk [`spool`] from which
//! [`http`] POSTs them in batches until the endpoint acknowledges them (docs/cdr.md).
//!
//! The shards hand finished records to a [`Sink`]; one writer thread appends each batch to the
//! file and the spool, and syncs them by the fsync policy. Nothing is dropped on the way: the
//! queue to the writer is unbounded, a write error is retried, and the spool keeps what the
//! endpoint has not acknowledged across restarts.

pub mod file;
pub mod http;
pub mod record;
pub mod spool;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

use self::file::{RecordFile, Rotation};
pub use self::record::{AdmissionFacts, CallRecord, Disposition, Recorder, new_id};
use self::spool::Spool;

/// How records are written and sent.
#[derive(Clone, Debug)]
pub struct Config {
    /// The directory of the record files (and of the spool, in `spool/`).
    pub dir: PathBuf,
    pub rotation: Rotation,
    /// How often written records are synced to disk; zero: after every batch.
    pub fsync_interval: Duration,
    /// Where batches are POSTed, if anywhere.
    pub url: Option<String>,
    /// Records per POST.
    pub batch_size: usize,
    /// How long one POST may take.
    pub post_timeout: Duration,
    /// The longest pause between retries of a failed POST.
    pub max_backoff: Duration,
    /// The Gateway named in each record.
    pub gateway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    reason: &'static str,
}

/// Why a POST of records failed, for the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostFailure {
    /// The endpoint answered with a status other than 2xx.
    Status,
    /// No connection, or the connection broke.
    Unreachable,
    /// No answer within the POST timeout.
    Timeout,
}

impl PostFailure {
    fn label(self) -> &'static str {
        match self {
            PostFailure::Status => "status",
            PostFailure::Unreachable => "unreachable",
            PostFailure::Timeout => "timeout",
        }
    }
}

/// The CDR series (`tandem_signaling_cdr_*`).
#[derive(Clone, Debug, Default)]
pub struct CdrMetrics {
    written: Counter,
    delivered: Counter,
    post_failures: Family<FailureLabels, Counter>,
    write_errors: Counter,
    spool_records: Gauge,
}

impl CdrMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> CdrMetrics {
        let metrics = CdrMetrics::default();
        for reason in [
            PostFailure::Status,
            PostFailure::Unreachable,
            PostFailure::Timeout,
        ] {
            let _ = metrics.post_failures.get_or_create(&FailureLabels {
                reason: reason.label(),
            });
        }
        let sub = registry.sub_registry_with_prefix("tandem_signaling_cdr");
        sub.register(
            "records_written",
            "Call detail records written to the record file (and the spool)",
            metrics.written.clone(),
        );
        sub.register(
            "records_delivered",
            "Call detail records acknowledged (2xx) by the CDR endpoint",
            metrics.delivered.clone(),
        );
        sub.register(
            "post_failures",
            "POSTs of call detail records that failed and will be retried, by reason",
            metrics.post_failures.clone(),
        );
        sub.register(
            "write_errors",
            "Failed writes of call detail records to disk (retried)",
            metrics.write_errors.clone(),
        );
        sub.register(
            "spool_records",
            "Call detail records in the spool, not yet acknowledged by the CDR endpoint",
            metrics.spool_records.clone(),
        );
        metrics
    }

    pub(crate) fn count_post_failure(&self, failure: PostFailure) {
        self.post_failures
            .get_or_create(&FailureLabels {
                reason: failure.label(),
            })
            .inc();
    }
}

enum Message {
    Record(Box<CallRecord>),
    /// Sync and close the file; answer once done.
    Close(mpsc::Sender<()>),
}

/// Where the shards hand finished records; cheap to clone.
#[derive(Clone, Debug)]
pub struct Sink {
    tx: mpsc::Sender<Message>,
    open: Arc<AtomicUsize>,
    gateway: Arc<str>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cdr::Message")
    }
}

/// A record being built, counted as open until it is handed over or dropped.
#[derive(Debug)]
pub struct Open {
    pub recorder: Recorder,
    _counted: Counted,
}

#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Sink {
    /// The Gateway named in records.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Opens the record of a call; [`Sink::open_records`] counts it until it is written.
    pub fn open(&self, recorder: Recorder) -> Box<Open> {
        self.open.fetch_add(1, Ordering::SeqCst);
        Box::new(Open {
            recorder,
            _counted: Counted(Arc::clone(&self.open)),
        })
    }

    /// Finishes an open record at `at` and hands it to the writer.
    pub fn finish(&self, open: Box<Open>, at: jiff::Timestamp) {
        let Open { recorder, _counted } = *open;
        self.write(recorder.finish(at));
    }

    /// Writes the record of an INVITE refused before any call state (overload, draining).
    pub fn write_refused(
        &self,
        invite: &tandem_sip::message::SipMessage,
        code: u16,
        disposition: Disposition,
    ) {
        let at = jiff::Timestamp::now();
        self.write(CallRecord::refused(
            new_id(),
            &self.gateway,
            at,
            invite,
            code,
            disposition,
        ));
    }

    /// Hands a finished record to the writer.
    pub fn write(&self, record: CallRecord) {
        if self.tx.send(Message::Record(Box::new(record))).is_err() {
            tracing::error!("call detail record after the writer stopped");
        }
    }

    /// Records opened and not yet handed to the writer: a draining pod waits for them.
    pub fn open_records(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// The running writer and sender.
#[derive(Debug)]
pub struct Writer {
    sink: Sink,
    thread: Option<std::thread::JoinHandle<()>>,
    sender: Option<http::Sender>,
}

impl Writer {
    /// Opens the record directory and the spool (replaying what it holds) and starts writing.
    pub fn start(config: Config, metrics: CdrMetrics) -> anyhow::Result<Writer> {
        use anyhow::Context as _;
        std::fs::create_dir_all(&config.dir)
            .with_context(|| format!("CDR directory {}", config.dir.display()))?;
        let file = RecordFile::open(&config.dir, config.rotation)
            .with_context(|| format!("CDR directory {}", config.dir.display()))?;
        let notify = Arc::new(Notify::new());
        let (spool, sender) = match &config.url {
            Some(url) => {
                let dir = config.dir.join("spool");
                let spool = Arc::new(
                    Spool::open(&dir).with_context(|| format!("CDR spool {}", dir.display()))?,
                );
                metrics.spool_records.set(spool.depth() as i64);
                if spool.depth() > 0 {
                    tracing::info!(
                        records = spool.depth(),
                        "replaying call detail records from the spool"
                    );
                }
                let sender = http::Sender::start(
                    url,
                    Arc::clone(&spool),
                    &config,
                    metrics.clone(),
                    Arc::clone(&notify),
                )?;
                (Some(spool), Some(sender))
            }
            None => (None, None),
        };
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("cdr-writer".into())
            .spawn(move || write_loop(rx, file, spool, config.fsync_interval, metrics, notify))?;
        Ok(Writer {
            sink: Sink {
                tx,
                open: Arc::new(AtomicUsize::new(0)),
                gateway: Arc::from(config.gateway.as_str()),
            },
            thread: Some(thread),
            sender,
        })
    }

    pub fn sink(&self) -> Sink {
        self.sink.clone()
    }

    /// Writes what is queued, syncs and closes the record file, gives the sender up to `grace`
    /// to empty the spool, and stops. What the endpoint has not acknowledged stays spooled for
    /// the next start.
    pub async fn shutdown(mut self, grace: Duration) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.sink.tx.send(Message::Close(done_tx)).is_ok() {
            let _ = tokio::task::spawn_blocking(move || done_rx.recv()).await;
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Some(sender) = self.sender.take() {
            sender.stop(grace).await;
        }
    }
}

/// The writer thread: batches records, appends them to the file and the spool, syncs.
fn write_loop(
    rx: mpsc::Receiver<Message>,
    mut file: RecordFile,
    spool: Option<Arc<Spool>>,
    fsync_interval: Duration,
    metrics: CdrMetrics,
    notify: Arc<Notify>,
) {
    const MAX_BATCH: usize = 1024;
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    let mut pending: Vec<u8> = Vec::new();
    let mut count = 0u64;
    loop {
        let wait = if unsynced {
            fsync_interval.saturating_sub(last_sync.elapsed())
        } else {
            Duration::from_secs(1)
        };
        let mut close = None;
        match rx.recv_timeout(wait) {
            Ok(Message::Record(record)) => {
                encode(&record, &mut pending, &mut count);
                while count < MAX_BATCH as u64 {
                    match rx.try_recv() {
                        Ok(Message::Record(record)) => encode(&record, &mut pending, &mut count),
                        Ok(Message::Close(done)) => {
                            close = Some(done);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            Ok(Message::Close(done)) => close = Some(done),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        if !pending.is_empty() {
            // A failed write is retried until it succeeds: records are never dropped here.
            retry(&metrics, "the record file", || file.append(&pending));
            if let Some(spool) = &spool {
                retry(&metrics, "the spool", || spool.append(&pending, count));
            }
            metrics.written.inc_by(count);
            if let Some(spool) = &spool {
                metrics.spool_records.set(spool.depth() as i64);
            }
            pending.clear();
            count = 0;
            unsynced = true;
        }
        if unsynced && (close.is_some() || last_sync.elapsed() >= fsync_interval) {
            let synced = file.sync().and_then(|()| match &spool {
                Some(spool) => spool.sync(),
                None => Ok(()),
            });
            if let Err(e) = synced {
                metrics.write_errors.inc();
                tracing::error!(error = %e, "syncing call detail records failed");
            }
            last_sync = Instant::now();
            unsynced = false;
            // The sender reads what is synced: records reach the endpoint once on disk.
            notify.notify_one();
        }
        if let Err(e) = file.rotate_if_due() {
            metrics.write_errors.inc();
            tracing::error!(error = %e, "rotating the call detail record file failed");
        }
        if let Some(done) = close {
            if let Err(e) = file.close() {
                tracing::error!(error = %e, "closing the call detail record file failed");
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Runs `write` until it succeeds, pausing longer after each failure.
fn retry(metrics: &CdrMetrics, target: &str, mut write: impl FnMut() -> std::io::Result<()>) {
    let mut delay = Duration::from_millis(100);
    while let Err(e) = write() {
        metrics.write_errors.inc();
        tracing::error!(error = %e, "writing call detail records to {target} failed; retrying");
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn encode(record: &CallRecord, out: &mut Vec<u8>, count: &mut u64) {
    match serde_json::to_writer(&mut *out, record) {
        Ok(()) => {
            out.push(b'\n');
            *count += 1;
        }
        Err(e) => tracing::error!(error = %e, id = record.id, "call detail record not encodable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u32) -> CallRecord {
        let invite = tandem_sip::parse_datagram(bytes::Bytes::from(format!(
            "INVITE sip:2000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK{n}\r\n\
             From: <sip:1000@127.0.0.1>;tag=a{n}\r\nTo: <sip:2000@127.0.0.1>\r\n\
             Call-ID: call-{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )))
        .unwrap();
        CallRecord::refused(
            new_id(),
            "local",
            jiff::Timestamp::now(),
            &invite,
            503,
            Disposition::Draining,
        )
    }

    #[tokio::test]
    async fn records_written_before_a_shutdown_are_in_a_complete_file() {
        let dir = std::env::temp_dir().join(format!(
            "tandem-cdr-writer-{}-{}",
            std::process::id(),
            crate::call::random_token()
        ));
        let config = Config {
            dir: dir.clone(),
            rotation: Rotation {
                max_bytes: 0,
                max_age: None,
            },
            fsync_interval: Duration::ZERO,
            url: None,
            batch_size: 10,
            post_timeout: Duration::from_secs(1),
            max_backoff: Duration::from_secs(1),
            gateway: "local".into(),
        };
        let metrics = CdrMetrics::default();
        let writer = Writer::start(config, metrics.clone()).unwrap();
        let sink = writer.sink();
        let sent: Vec<CallRecord> = (0..3).map(record).collect();
        for r in &sent {
            sink.write(r.clone());
        }
        writer.shutdown(Duration::ZERO).await;
        assert_eq!(metrics.written.get(), 3);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].to_string_lossy().ends_with(".jsonl"));
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let read: Vec<CallRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(read, sent);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
