//! The sender: POSTs spooled records to the CDR endpoint in batches, as a JSON array, and moves
//! the spool's cursor past a batch only once the endpoint answered 2xx. Any other outcome is
//! retried after a pause that doubles up to a maximum. Delivery is at least once; each record's
//! `id` is the key to drop duplicates by.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Notify, watch};

use super::spool::{Batch, Spool};
use super::{CdrMetrics, Config, PostFailure};

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The HTTP client: plain, or with TLS (the system's root certificates) for an https URL.
#[derive(Clone, Debug)]
enum HttpClient {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<Https, Full<Bytes>>),
}

impl HttpClient {
    fn new(uri: &http::Uri) -> anyhow::Result<HttpClient> {
        let builder = Client::builder(TokioExecutor::new());
        match uri.scheme_str() {
            Some("http") => Ok(HttpClient::Plain(builder.build(HttpConnector::new()))),
            Some("https") => {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_native_roots()
                    .map_err(|e| anyhow::anyhow!("--cdr-url {uri}: no root certificates: {e}"))?
                    .https_only()
                    .enable_http1()
                    .build();
                Ok(HttpClient::Tls(builder.build(connector)))
            }
            _ => anyhow::bail!("--cdr-url {uri}: the scheme must be http or https"),
        }
    }

    async fn post(&self, request: http::Request<Full<Bytes>>) -> Result<u16, PostError> {
        let response = match self {
            HttpClient::Plain(client) => client.request(request).await,
            HttpClient::Tls(client) => client.request(request).await,
        }
        .map_err(|e| PostError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        // Read the body so the connection can be reused.
        let _ = response.into_body().collect().await;
        Ok(status)
    }
}

#[derive(Debug)]
enum PostError {
    Unreachable(String),
}

/// The running sender.
#[derive(Debug)]
pub struct Sender {
    stop: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sender {
    /// Starts sending what `spool` holds (from a previous run too) to `url`.
    pub fn start(
        url: &str,
        spool: Arc<Spool>,
        config: &Config,
        metrics: CdrMetrics,
        notify: Arc<Notify>,
    ) -> anyhow::Result<Sender> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--cdr-url {url:?}: {e}"))?;
        let client = HttpClient::new(&uri)?;
        let (stop, stopping) = watch::channel(None);
        let task = tokio::spawn(run(Run {
            uri,
            client,
            spool,
            batch_size: config.batch_size.max(1),
            timeout: config.post_timeout,
            max_backoff: config.max_backoff,
            metrics,
            notify,
            stopping,
        }));
        Ok(Sender { stop, task })
    }

    /// Sends for up to `grace` more while the spool holds records, then stops.
    pub async fn stop(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        let _ = self.task.await;
    }
}

struct Run {
    uri: http::Uri,
    client: HttpClient,
    spool: Arc<Spool>,
    batch_size: usize,
    timeout: Duration,
    max_backoff: Duration,
    metrics: CdrMetrics,
    notify: Arc<Notify>,
    stopping: watch::Receiver<Option<Duration>>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);

async fn run(mut run: Run) {
    let mut backoff = FIRST_BACKOFF;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if deadline.is_none()
            && let Some(grace) = *run.stopping.borrow()
        {
            deadline = Some(tokio::time::Instant::now() + grace);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
        let spool = Arc::clone(&run.spool);
        let size = run.batch_size;
        let batch = match tokio::task::spawn_blocking(move || spool.read(size)).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reading the CDR spool failed");
                None
            }
            Err(_) => None,
        };
        let Some(batch) = batch else {
            if deadline.is_some() {
                break; // Draining and nothing left to send.
            }
            tokio::select! {
                _ = run.notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                changed = run.stopping.changed() => if changed.is_err() {
                    break; // The pod is gone without a drain.
                }
            }
            continue;
        };
        match post(&run, &batch).await {
            Ok(()) => {
                backoff = FIRST_BACKOFF;
                let spool = Arc::clone(&run.spool);
                let count = batch.records.len() as u64;
                match tokio::task::spawn_blocking(move || spool.ack(&batch)).await {
                    Ok(Ok(())) => {
                        run.metrics.delivered.inc_by(count);
                    }
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "moving the CDR spool cursor failed");
                    }
                    Err(_) => {}
                }
                run.metrics.spool_records.set(run.spool.depth() as i64);
            }
            Err(failure) => {
                run.metrics.count_post_failure(failure);
                let pause = jittered(backoff);
                backoff = (backoff * 2).min(run.max_backoff);
                let stopping = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => {
                            if run.stopping.changed().await.is_err() {
                                // The pod is gone without a drain: wait out the pause.
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stopping => {}
                }
            }
        }
    }
    let left = run.spool.depth();
    if left > 0 {
        tracing::warn!(
            records = left,
            "call detail records stay in the spool until the next start"
        );
    }
}

/// Pauses between 75% and 125% of `base`, so that pods do not retry in step.
fn jittered(base: Duration) -> Duration {
    base.mul_f64(rand::random_range(0.75..1.25))
}

async fn post(run: &Run, batch: &Batch) -> Result<(), PostFailure> {
    let mut body = Vec::with_capacity(batch.records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, record) in batch.records.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record);
    }
    body.push(b']');
    let request = http::Request::post(run.uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("X-Tandem-Cdr-Schema", super::record::SCHEMA.to_string())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| {
            tracing::error!(error = %e, "building the CDR request failed");
            PostFailure::Unreachable
        })?;
    match tokio::time::timeout(run.timeout, run.client.post(request)).await {
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
        Ok(Ok(status)) => {
            tracing::warn!(
                status,
                records = batch.records.len(),
                url = %run.uri,
                "the CDR endpoint refused a batch; retrying"
            );
            Err(PostFailure::Status)
        }
        Ok(Err(PostError::Unreachable(error))) => {
            tracing::warn!(error, url = %run.uri, "the CDR endpoint is unreachable; retrying");
            Err(PostFailure::Unreachable)
        }
        Err(_) => {
            tracing::warn!(url = %run.uri, "the CDR endpoint did not answer in time; retrying");
            Err(PostFailure::Timeout)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

    use super::*;
    use crate::cdr::file::Rotation;

    /// An endpoint answering 500 to the first `refuse` POSTs, then 200; keeps the bodies it took.
    async fn endpoint(refuse: usize) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let taken = Arc::clone(&bodies);
        tokio::spawn(async move {
            let mut posts = 0;
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let mut stream = BufReader::new(stream);
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        break;
                    }
                    loop {
                        line.clear();
                        stream.read_line(&mut line).await.unwrap();
                        if line.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).await.unwrap();
                    posts += 1;
                    let status = if posts <= refuse {
                        "500 Internal Server Error"
                    } else {
                        taken.lock().unwrap().push(String::from_utf8(body).unwrap());
                        "200 OK"
                    };
                    let reply = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                    stream.get_mut().write_all(reply.as_bytes()).await.unwrap();
                }
            }
        });
        (port, bodies)
    }

    #[tokio::test]
    async fn a_refused_batch_is_sent_again_and_the_spool_empties_once_acknowledged() {
        let dir = std::env::temp_dir().join(format!(
            "tandem-cdr-sender-{}-{}",
            std::process::id(),
            crate::call::random_token()
        ));
        let spool = Arc::new(Spool::open(&dir).unwrap());
        let lines: String = (0..5).map(|n| format!("{{\"id\":\"{n}\"}}\n")).collect();
        spool.append(lines.as_bytes(), 5).unwrap();
        let (port, bodies) = endpoint(1).await;
        let config = Config {
            dir: dir.clone(),
            rotation: Rotation {
                max_bytes: 0,
                max_age: None,
            },
            fsync_interval: Duration::ZERO,
            url: None,
            batch_size: 2,
            post_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(1),
            gateway: "local".into(),
        };
        let metrics = CdrMetrics::default();
        let sender = Sender::start(
            &format!("http://127.0.0.1:{port}/cdr"),
            Arc::clone(&spool),
            &config,
            metrics.clone(),
            Arc::new(Notify::new()),
        )
        .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while spool.depth() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the spool did not empty"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sender.stop(Duration::ZERO).await;
        let bodies = bodies.lock().unwrap().clone();
        assert_eq!(
            bodies,
            [
                "[{\"id\":\"0\"},{\"id\":\"1\"}]",
                "[{\"id\":\"2\"},{\"id\":\"3\"}]",
                "[{\"id\":\"4\"}]"
            ],
            "the refused first batch came again, then the rest, each once"
        );
        assert_eq!(metrics.delivered.get(), 5);
        let failures = metrics
            .post_failures
            .get_or_create(&super::super::FailureLabels { reason: "status" });
        assert_eq!(failures.get(), 1);
        // Nothing is sent again after a restart: the cursor moved past every batch.
        assert_eq!(Spool::open(&dir).unwrap().depth(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
