//! The media engine client: rtpengine "ng" requests over UDP to a media pod.
//!
//! Requests carry a unique cookie; a reader task hands each reply to the request waiting for it.
//! A request that gets no reply is retransmitted with the same cookie (the media pod answers a
//! duplicate from its reply cache instead of executing it twice) before it fails.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tandem_ng::{Reply, Request};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tracing::Instrument as _;

use crate::metrics::Metrics;

/// How long to wait for a reply before retransmitting.
const RETRANSMIT_AFTER: Duration = Duration::from_millis(500);
/// How many times a request is sent before it fails.
const ATTEMPTS: u32 = 3;

/// Why a media request failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The media pod did not answer any attempt.
    #[error("media engine at {0} did not answer")]
    NoAnswer(SocketAddr),
    /// The media pod answered with an error.
    #[error("media engine refused {command}: {reason}")]
    Refused {
        command: &'static str,
        reason: String,
    },
    /// The reply lacked what the command must return.
    #[error("media engine reply to {0} carried no SDP")]
    NoSdp(&'static str),
    /// The request could not be sent.
    #[error("cannot send to the media engine: {0}")]
    Io(#[from] std::io::Error),
}

type Pending = Mutex<HashMap<String, oneshot::Sender<Reply>>>;

/// A client of one media pod's ng control port.
#[derive(Debug)]
pub struct MediaClient {
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    pending: Arc<Pending>,
    next_cookie: AtomicU64,
    metrics: Metrics,
    /// The reply reader, stopped when the client goes (a media pod left the pool).
    reader: tokio::task::AbortHandle,
}

impl Drop for MediaClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl MediaClient {
    /// Opens a socket towards the media pod at `server` and starts the reply reader.
    pub async fn connect(server: SocketAddr, metrics: Metrics) -> anyhow::Result<Arc<Self>> {
        let local: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()?;
        let socket = Arc::new(UdpSocket::bind(local).await?);
        socket.connect(server).await?;
        let pending: Arc<Pending> = Arc::default();
        let reader =
            tokio::spawn(read_replies(Arc::clone(&socket), Arc::clone(&pending))).abort_handle();
        Ok(Arc::new(Self {
            socket,
            server,
            pending,
            next_cookie: AtomicU64::new(1),
            metrics,
            reader,
        }))
    }

    /// Sends `request` and waits for its reply, retransmitting as needed.
    pub async fn request(
        &self,
        command: &'static str,
        request: &Request,
    ) -> Result<Reply, MediaError> {
        let span = tracing::info_span!(
            "media.ng",
            otel.name = format!("ng {command}"),
            ng.command = command
        );
        let result = self
            .exchange(request)
            .instrument(span)
            .await
            .and_then(|reply| {
                if reply.is_error() {
                    Err(MediaError::Refused {
                        command,
                        reason: reply.error_reason().unwrap_or("unspecified").to_owned(),
                    })
                } else {
                    Ok(reply)
                }
            });
        self.metrics.count_ng(command, result.is_ok());
        result
    }

    async fn exchange(&self, request: &Request) -> Result<Reply, MediaError> {
        let cookie = format!(
            "{:x}_{}",
            std::process::id(),
            self.next_cookie.fetch_add(1, Ordering::Relaxed)
        );
        let datagram = request.encode(&cookie);
        let (tx, mut rx) = oneshot::channel();
        self.lock_pending().insert(cookie.clone(), tx);
        let mut outcome = Err(MediaError::NoAnswer(self.server));
        for _ in 0..ATTEMPTS {
            if let Err(e) = self.socket.send(&datagram).await {
                outcome = Err(MediaError::Io(e));
                break;
            }
            match tokio::time::timeout(RETRANSMIT_AFTER, &mut rx).await {
                Ok(Ok(reply)) => {
                    outcome = Ok(reply);
                    break;
                }
                Ok(Err(_)) => break,
                Err(_elapsed) => continue,
            }
        }
        self.lock_pending().remove(&cookie);
        outcome
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Reply>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Anchors the offerer's media: returns the SDP to send on to the answerer.
    pub async fn offer(
        &self,
        call_id: &str,
        from_tag: &str,
        sdp: &[u8],
    ) -> Result<Bytes, MediaError> {
        let reply = self
            .request("offer", &Request::offer(call_id, from_tag, sdp))
            .await?;
        reply
            .sdp()
            .map(Bytes::copy_from_slice)
            .ok_or(MediaError::NoSdp("offer"))
    }

    /// Anchors the answerer's media: returns the SDP to send back to the offerer.
    pub async fn answer(
        &self,
        call_id: &str,
        from_tag: &str,
        to_tag: &str,
        sdp: &[u8],
    ) -> Result<Bytes, MediaError> {
        let reply = self
            .request("answer", &Request::answer(call_id, from_tag, to_tag, sdp))
            .await?;
        reply
            .sdp()
            .map(Bytes::copy_from_slice)
            .ok_or(MediaError::NoSdp("answer"))
    }

    /// Releases every media resource of the call.
    pub async fn delete(&self, call_id: &str) -> Result<(), MediaError> {
        self.request("delete", &Request::delete(call_id, None))
            .await
            .map(|_| ())
    }
}

async fn read_replies(socket: Arc<UdpSocket>, pending: Arc<Pending>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // ECONNREFUSED while the media pod restarts: the requests time out on their own.
                tracing::debug!(error = %e, "ng receive error");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        match Reply::decode(&buf[..n]) {
            Ok((cookie, reply)) => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(cookie.as_str());
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
            Err(e) => tracing::warn!(error = %e, "unparsable ng reply"),
        }
    }
}
