//! DTMF reports from media pods (ng `dtmf-log-dest`): one JSON datagram per digit a pod
//! received in a call's media, sent to the signaling pod that made the call's offer (the
//! address in the offer is the pod's own). Each report goes to the shard of its call, which
//! turns it into an INFO on a SIPINFO side.
//!
//! The datagram follows rtpengine's DTMF log: `callid`, `source_tag`, `event` (0-15),
//! `duration` (ms), `volume` (dB below the maximum) and `type` `"DTMF"`; other keys are
//! ignored. Reports are taken from the media pods of the pool only (their ng address).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use tokio::net::UdpSocket;

use crate::call::core::Digit;
use crate::dispatcher::Dispatcher;
use crate::media_pool::MediaPool;

/// How often a DTMF report from an address that is no media pod is logged, at most.
const STRANGER_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A digit a media pod reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DtmfReport {
    /// The call's media Call-ID (the caller's).
    pub call_id: Bytes,
    /// The tag of the party the digit came from.
    pub from_tag: Bytes,
    pub digit: Digit,
}

#[derive(Deserialize)]
struct Wire {
    callid: String,
    source_tag: String,
    event: u8,
    duration: u32,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

/// Reads one report datagram.
pub fn parse(datagram: &[u8]) -> Result<DtmfReport, String> {
    let wire: Wire = serde_json::from_slice(datagram).map_err(|e| e.to_string())?;
    if wire.kind.as_deref().is_some_and(|k| k != "DTMF") {
        return Err(format!("not a DTMF report: type {:?}", wire.kind));
    }
    if wire.event > 15 {
        return Err(format!("event {} is not a DTMF digit", wire.event));
    }
    Ok(DtmfReport {
        call_id: Bytes::from(wire.callid),
        from_tag: Bytes::from(wire.source_tag),
        digit: Digit {
            code: wire.event,
            duration_ms: wire.duration,
        },
    })
}

/// Receives reports on `socket` for as long as the pod runs. Only the pool's media pods are
/// believed: anyone else who knew a call's Call-ID and tag could make it send INFO digits.
pub async fn serve(socket: UdpSocket, dispatcher: Arc<Dispatcher>, media: Arc<MediaPool>) {
    let mut buf = vec![0u8; 2048];
    // A report from elsewhere is dropped; the first one of each minute is logged.
    let mut last_stranger_logged: Option<Instant> = None;
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!(error = %e, "DTMF report socket error");
                continue;
            }
        };
        if !media.is_member(from.ip()) {
            if last_stranger_logged.is_none_or(|t| t.elapsed() >= STRANGER_LOG_INTERVAL) {
                last_stranger_logged = Some(Instant::now());
                tracing::warn!(%from, "DTMF report from an address that is no media pod dropped");
            }
            continue;
        }
        match parse(&buf[..len]) {
            Ok(report) => dispatcher.deliver_dtmf(report),
            Err(error) => tracing::info!(%from, error, "bad DTMF report ignored"),
        }
    }
}

/// The address put in offers: `advertise` when given, else the pod's own IP (`POD_IP`), else
/// the listening address (loopback when it listens on every address).
pub fn report_address(
    listen: SocketAddr,
    advertise: Option<SocketAddr>,
    pod_ip: Option<IpAddr>,
) -> SocketAddr {
    match (advertise, pod_ip) {
        (Some(address), _) => address,
        (None, Some(ip)) => SocketAddr::new(ip, listen.port()),
        (None, None) if listen.ip().is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        (None, None) => listen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_as_rtpengine_writes_them() {
        let report = parse(
            br#"{"callid":"abc@x","source_tag":"t1","tags":["t1","t2"],"type":"DTMF","timestamp":1700000000,"source_ip":"192.0.2.1","event":11,"duration":160,"volume":10}"#,
        )
        .unwrap();
        assert_eq!(report.call_id, "abc@x");
        assert_eq!(report.from_tag, "t1");
        assert_eq!(
            report.digit,
            Digit {
                code: 11,
                duration_ms: 160
            }
        );
    }

    #[test]
    fn the_report_address_is_the_pod_s_own() {
        let listen: SocketAddr = "0.0.0.0:2224".parse().unwrap();
        let pod_ip = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            report_address(listen, None, pod_ip).to_string(),
            "10.1.2.3:2224"
        );
        assert_eq!(
            report_address(listen, None, None).to_string(),
            "127.0.0.1:2224"
        );
        let fixed = "192.0.2.9:7000".parse().unwrap();
        assert_eq!(report_address(listen, Some(fixed), pod_ip), fixed);
    }

    #[test]
    fn bad_reports_are_refused() {
        assert!(parse(b"not json").is_err());
        assert!(parse(br#"{"callid":"a","source_tag":"t","event":16,"duration":1}"#).is_err());
        assert!(parse(br#"{"callid":"a","event":1,"duration":1}"#).is_err());
        assert!(
            parse(br#"{"callid":"a","source_tag":"t","event":1,"duration":1,"type":"X"}"#).is_err()
        );
    }
}
