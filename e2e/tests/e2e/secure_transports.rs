//! End-to-end tests of the TLS and WebSocket transports and of the connection limits, with real
//! clients against the local platform (`make run`'s configuration): a SIP-over-TLS client and a
//! SIP-over-secure-WebSocket client (RFC 7118, as a browser sends it) calling a SIPp carrier, a
//! carrier Trunk peer reached over TLS, and hostile connections (slow, idle, oversized, too many,
//! garbage WebSocket frames) while good calls keep completing.
//!
//! They share the contract ports and 5061/8443: run them one at a time, like every e2e test.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tandem_e2e::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const TLS_ADDR: &str = "127.0.0.1:5061";
const WSS_ADDR: &str = "127.0.0.1:8443";
const TLS_CARRIER_PORT: u16 = 5091;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// The local platform's self-signed certificate (`make run` generates it on its first run).
fn local_certificate() -> PathBuf {
    workspace().join(".tandem/tls/tls.crt")
}

/// A TLS client configuration trusting only the certificates in `ca` (PEM).
fn trusting(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn tls_connect(addr: &str, ca: &Path) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    TlsConnector::from(trusting(ca))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// One SIP message from a stream framed by Content-Length: the header section up to the blank
/// line, then the body. `None` at the end of the stream or after `timeout`.
async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            let body_len: usize = header(&head, "Content-Length")
                .or_else(|| header(&head, "l"))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + body_len {
                let message: Vec<u8> = buf.drain(..end + 4 + body_len).collect();
                return Some(String::from_utf8_lossy(&message).into_owned());
            }
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A SIP client on one connection: TLS, or a WebSocket inside TLS.
#[allow(clippy::large_enum_variant)] // one per test
enum Client {
    Tls {
        stream: tokio_rustls::client::TlsStream<TcpStream>,
        buf: Vec<u8>,
    },
    Wss(WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Client {
    async fn tls() -> Self {
        Client::Tls {
            stream: tls_connect(TLS_ADDR, &local_certificate()).await,
            buf: Vec::new(),
        }
    }

    async fn wss() -> Self {
        Client::Wss(wss_connect(Some("sip")).await.unwrap())
    }

    /// The Via transport and the host a client of this kind puts in Via and Contact: a
    /// browser knows no address of its own and sends a random `.invalid` name (RFC 7118).
    fn identity(&self) -> (&'static str, &'static str) {
        match self {
            Client::Tls { .. } => ("TLS", "127.0.0.1:5999"),
            Client::Wss(_) => ("WSS", "df7jal23ls0d.invalid"),
        }
    }

    async fn send(&mut self, message: &str) {
        match self {
            Client::Tls { stream, .. } => stream.write_all(message.as_bytes()).await.unwrap(),
            Client::Wss(ws) => ws.send(Message::text(message)).await.unwrap(),
        }
    }

    /// The next SIP message, within 10 s.
    async fn recv(&mut self) -> String {
        let timeout = Duration::from_secs(10);
        match self {
            Client::Tls { stream, buf } => read_message(stream, buf, timeout)
                .await
                .expect("a SIP message on the TLS connection"),
            Client::Wss(ws) => loop {
                let message = tokio::time::timeout(timeout, ws.next())
                    .await
                    .expect("a SIP message on the WebSocket within 10 s")
                    .expect("the WebSocket stays open")
                    .unwrap();
                match message {
                    Message::Text(text) => return text.to_string(),
                    Message::Binary(data) => return String::from_utf8_lossy(&data).into_owned(),
                    _ => continue,
                }
            },
        }
    }

    /// The next response, answering the requests that come first with 200.
    async fn response(&mut self) -> String {
        loop {
            let message = self.recv().await;
            if message.starts_with("SIP/2.0 ") {
                return message;
            }
            let ok = ok_for(&message);
            self.send(&ok).await;
        }
    }
}

/// Opens a secure WebSocket to the platform offering `protocol` (none when `None`).
async fn wss_connect(
    protocol: Option<&str>,
) -> Result<
    WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let tls = tls_connect(WSS_ADDR, &local_certificate()).await;
    let mut request = format!("wss://{WSS_ADDR}").into_client_request().unwrap();
    if let Some(protocol) = protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    }
    tokio_tungstenite::client_async(request, tls)
        .await
        .map(|(ws, _)| ws)
}

/// A 200 OK for `request`, with a To tag when it has none.
fn ok_for(request: &str) -> String {
    let get = |name| header(request, name).unwrap_or_default();
    let vias: String = request
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("via:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let to = get("To");
    let to = if to.contains("tag=") {
        to.to_owned()
    } else {
        format!("{to};tag=peer")
    };
    format!(
        "SIP/2.0 200 OK\r\n{vias}From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
         Content-Length: 0\r\n\r\n",
        get("From"),
        get("Call-ID"),
        get("CSeq")
    )
}

/// The client's side of one dialog: its transport and host, the To header, the Call-ID.
struct Dialog<'a> {
    identity: (&'a str, &'a str),
    to: &'a str,
    call_id: &'a str,
}

fn request(
    method: &str,
    uri: &str,
    dialog: &Dialog<'_>,
    cseq: u32,
    extra: &str,
    body: &str,
) -> String {
    let Dialog {
        identity: (transport, host),
        to,
        call_id,
    } = dialog;
    format!(
        "{method} {uri} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {host};branch=z9hG4bK{call_id}{cseq}{method}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:1000@127.0.0.1>;tag=client{call_id}\r\n\
         To: {to}\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} {method}\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Calls 2000 through the platform and plays `carrier-in-dialog.xml`'s side of the dialog: INFO
/// and OPTIONS to the carrier, the carrier's INFO back on this connection, then BYE. Every
/// response names `client`'s transport in its Via.
async fn call_in_dialog(client: &mut Client, call_id: &str) {
    let identity = client.identity();
    let (transport, host) = identity;
    let sdp = "v=0\r\no=client 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=audio 7100 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n";
    let to = "<sip:2000@127.0.0.1>";
    let contact = format!(
        "Contact: <sip:1000@{host};transport={}>\r\nContent-Type: application/sdp\r\n",
        transport.to_ascii_lowercase()
    );
    let invite = request(
        "INVITE",
        "sip:2000@127.0.0.1",
        &Dialog {
            identity,
            to,
            call_id,
        },
        1,
        &contact,
        sdp,
    );
    client.send(&invite).await;
    let answer = loop {
        let response = client.response().await;
        assert!(
            header(&response, "Via")
                .unwrap()
                .starts_with(&format!("SIP/2.0/{transport} {host}")),
            "{response}"
        );
        match status_code(&response) {
            100..=199 => continue,
            200 => break response,
            code => panic!("the call was refused with {code}:\n{response}"),
        }
    };
    assert!(answer.contains("m=audio"), "no SDP answer:\n{answer}");
    let to = header(&answer, "To").unwrap().to_owned();
    let target = header(&answer, "Contact")
        .unwrap()
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let dialog = Dialog {
        identity,
        to: &to,
        call_id,
    };
    let ack = request("ACK", &target, &dialog, 1, "", "");
    client.send(&ack).await;

    let info = request(
        "INFO",
        &target,
        &dialog,
        2,
        "Content-Type: application/dtmf-relay\r\n",
        "Signal=5\r\nDuration=160\r\n",
    );
    client.send(&info).await;
    assert_eq!(status_code(&client.response().await), 200);
    let options = request("OPTIONS", &target, &dialog, 3, "", "");
    client.send(&options).await;
    assert_eq!(status_code(&client.response().await), 200);

    // The carrier's INFO comes back on this very connection (for a browser, the only way).
    let carrier_info = client.recv().await;
    assert!(carrier_info.starts_with("INFO "), "{carrier_info}");
    assert!(carrier_info.contains("Signal=7"), "{carrier_info}");
    assert!(
        header(&carrier_info, "Via")
            .unwrap()
            .starts_with(&format!("SIP/2.0/{transport} ")),
        "{carrier_info}"
    );
    client.send(&ok_for(&carrier_info)).await;

    let bye = request("BYE", &target, &dialog, 4, "", "");
    client.send(&bye).await;
    assert_eq!(status_code(&client.response().await), 200);
}

fn call_through(client: fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Client>>>) {
    let mut carrier = Peer::carrier("carrier-in-dialog.xml").start();
    std::thread::sleep(Duration::from_millis(300));
    runtime().block_on(async {
        let mut client = client().await;
        call_in_dialog(&mut client, "secure1").await;
    });
    carrier.assert_success(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(5),
        "call and media released",
        no_call_left,
    );
}

#[test]
fn a_call_over_tls_reaches_the_sipp_carrier() {
    require_sipp();
    let platform = Platform::start();
    call_through(|| Box::pin(Client::tls()));
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_calls_total",
            &["outcome=\"answered\""]
        ),
        1.0,
        "{}",
        platform.log()
    );
}

#[test]
fn a_call_over_secure_websocket_reaches_the_sipp_carrier() {
    require_sipp();
    let platform = Platform::start();
    call_through(|| Box::pin(Client::wss()));
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_calls_total",
            &["outcome=\"answered\""]
        ),
        1.0,
        "{}",
        platform.log()
    );
}

/// Writes a self-signed certificate for IP address 127.0.0.1 into `dir` (openssl).
fn self_signed(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let output = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=carrier"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        // An end entity, not a CA: WebPKI refuses a CA certificate as a server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .output()
        .expect("openssl runs");
    assert!(output.status.success(), "{output:?}");
}

/// A carrier answering over TLS: every INVITE gets a 200 with SDP, every BYE and OPTIONS a 200.
/// Counts the connections whose handshake succeeded, and keeps the Via of each INVITE.
struct TlsCarrier {
    handshakes: Arc<AtomicUsize>,
    invites: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TlsCarrier {
    async fn start(dir: &Path, addrs: &[&str]) -> Self {
        let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("tls.crt"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).unwrap();
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let carrier = Self {
            handshakes: Arc::default(),
            invites: Arc::default(),
        };
        for addr in addrs {
            let listener = TcpListener::bind(addr).await.unwrap();
            let acceptor = acceptor.clone();
            let handshakes = Arc::clone(&carrier.handshakes);
            let invites = Arc::clone(&carrier.invites);
            tokio::spawn(async move {
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        continue;
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(answer_calls(stream, Arc::clone(&invites)));
                }
            });
        }
        carrier
    }
}

async fn answer_calls<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    invites: Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut buf = Vec::new();
    while let Some(message) = read_message(&mut stream, &mut buf, Duration::from_secs(120)).await {
        let reply = if message.starts_with("INVITE ") {
            invites.lock().unwrap().push(message.clone());
            let sdp = "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
                       t=0 0\r\nm=audio 6100 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
            ok_for(&message).replace(
                "Content-Length: 0\r\n\r\n",
                &format!(
                    "Contact: <sip:carrier@127.0.0.1:{TLS_CARRIER_PORT};transport=tls>\r\n\
                     Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    sdp.len()
                ),
            )
        } else if message.starts_with("ACK ") || message.starts_with("SIP/2.0") {
            continue;
        } else {
            ok_for(&message)
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[test]
fn a_trunk_peer_over_tls_gets_the_calls_on_one_verified_connection() {
    require_sipp();
    let config = ConfigDir::copy("tls-carrier");
    let certs = config.path().join("carrier-tls");
    self_signed(&certs);
    // 127.0.0.2 first: its certificate names 127.0.0.1 only, so the platform must refuse it
    // and fail over to 127.0.0.1, whose certificate the CA file (`--tls-ca-file`) vouches for.
    config.write(
        "trunks.yaml",
        &carrier_trunk(
            &format!(
                "    - {{host: 127.0.0.2, port: {TLS_CARRIER_PORT}, transport: TLS, priority: 1}}\n    \
                 - {{host: 127.0.0.1, port: {TLS_CARRIER_PORT}, transport: TLS, priority: 2}}"
            ),
            "{enabled: false}",
        ),
    );
    let ca = certs.join("tls.crt");
    let platform = Platform::start_with_env(
        config.path(),
        &[
            ("TANDEM_TLS_CA_FILE", ca.to_str().unwrap()),
            ("TANDEM_INVITE_TIMEOUT", "2"),
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let carrier = rt.block_on(TlsCarrier::start(
        &certs,
        &[
            &format!("127.0.0.1:{TLS_CARRIER_PORT}"),
            &format!("127.0.0.2:{TLS_CARRIER_PORT}"),
        ],
    ));
    let mut caller = Peer::caller("caller.xml", "2000")
        .calls(3)
        .args(&["-d", "500"])
        .start();
    caller.assert_success(Duration::from_secs(60));
    wait_until(Duration::from_secs(5), "calls released", no_call_left);
    let invites = carrier.invites.lock().unwrap().clone();
    assert_eq!(invites.len(), 3, "{}", platform.log());
    for invite in &invites {
        assert!(
            header(invite, "Via").unwrap().starts_with("SIP/2.0/TLS "),
            "{invite}"
        );
        assert!(invite.contains(";transport=tls>"), "{invite}");
    }
    // One connection carried every call: reused, not opened per call.
    assert_eq!(carrier.handshakes.load(Ordering::SeqCst), 1);
    assert!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_connections_closed_total",
            &["transport=\"tls\"", "reason=\"handshake_failed\""]
        ) >= 1.0,
        "the peer whose certificate does not name it was not refused"
    );
    drop(rt);
}

/// Reads until the platform closes the connection (or 15 s pass); returns what it sent.
fn read_to_close(stream: &mut StdTcpStream) -> (String, bool) {
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&received).into_owned(), true);
            }
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), false),
        }
    }
}

fn closed(reason: &str) -> f64 {
    scrape(
        SIGNALING_ADMIN,
        "tandem_signaling_connections_closed_total",
        &[&format!("reason=\"{reason}\"")],
    )
}

#[test]
fn hostile_connections_are_closed_and_good_calls_keep_completing() {
    require_sipp();
    let platform = Platform::start_with_env(
        &workspace().join("examples/local"),
        &[
            ("TANDEM_MESSAGE_TIMEOUT", "2"),
            ("TANDEM_CONNECTION_IDLE_TIMEOUT", "3"),
            ("TANDEM_MAX_CONNECTIONS_PER_IP", "4"),
        ],
    );

    // RFC 5626: a CRLFCRLF ping gets a CRLF pong.
    let mut keepalive = StdTcpStream::connect(SIP).unwrap();
    keepalive.write_all(b"\r\n\r\n").unwrap();
    keepalive
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut pong = [0u8; 2];
    keepalive.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"\r\n");
    drop(keepalive);

    // Slowloris: a header that never ends is cut off.
    let mut slow = StdTcpStream::connect(SIP).unwrap();
    slow.write_all(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;bra")
        .unwrap();
    let (_, was_closed) = read_to_close(&mut slow);
    assert!(was_closed, "a slow header kept its connection open");

    // Idle: a connection that says nothing is closed.
    let mut idle = StdTcpStream::connect(SIP).unwrap();
    let (_, was_closed) = read_to_close(&mut idle);
    assert!(was_closed, "an idle connection stayed open");

    // Oversized: a message announcing a body over the limit gets 513, then the close.
    let mut big = StdTcpStream::connect(SIP).unwrap();
    big.write_all(
        b"INVITE sip:2000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKbig\r\n\
          From: <sip:1@127.0.0.1>;tag=1\r\nTo: <sip:2000@127.0.0.1>\r\nCall-ID: big\r\n\
          CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 1000000\r\n\r\n",
    )
    .unwrap();
    let (answer, was_closed) = read_to_close(&mut big);
    assert_eq!(status_code(&answer), 513, "{answer}");
    assert!(was_closed);
    // A header section over the limit without an end: closed.
    let mut flood = StdTcpStream::connect(SIP).unwrap();
    let mut headers = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n".to_vec();
    while headers.len() < 70_000 {
        headers.extend_from_slice(b"X-Flood: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let _ = flood.write_all(&headers);
    let (_, was_closed) = read_to_close(&mut flood);
    assert!(was_closed);

    // Too many connections from one address: the fifth is closed at once.
    let held: Vec<_> = (0..4)
        .map(|_| StdTcpStream::connect(SIP).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = StdTcpStream::connect(SIP).unwrap();
    let (_, was_closed) = read_to_close(&mut fifth);
    assert!(was_closed, "a fifth connection from one address was kept");
    drop(held);
    wait_until(Duration::from_secs(5), "connections released", || {
        scrape(SIGNALING_ADMIN, "tandem_signaling_connections", &[]) == 0.0
    });

    runtime().block_on(async {
        // WebSocket without the sip subprotocol: refused at the handshake.
        assert!(wss_connect(None).await.is_err());
        // Garbage in a WebSocket message: closed with code 1002.
        let mut ws = wss_connect(Some("sip")).await.unwrap();
        ws.send(Message::binary(vec![0x16, 0x03, 0x01, 0xff, 0x00, 0x42]))
            .await
            .unwrap();
        let mut code = None;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_secs(10), ws.next()).await
        {
            if let Message::Close(frame) = message {
                code = frame.map(|f| f.code);
                break;
            }
        }
        assert_eq!(code, Some(CloseCode::Protocol));
    });

    wait_until(Duration::from_secs(10), "every close counted", || {
        closed("slow") >= 1.0
            && closed("idle") >= 1.0
            && closed("oversized") >= 2.0
            && closed("too_many_connections") >= 1.0
            && closed("garbage") >= 1.0
            && closed("handshake_failed") >= 1.0
    });
    assert!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_keepalive_pongs_total",
            &[]
        ) >= 1.0
    );

    // Meanwhile the platform kept serving: a good call completes.
    play(
        &Peer::caller("caller.xml", "2000"),
        &Peer::carrier("carrier.xml"),
        Duration::from_secs(30),
    );
    drop(platform);
}

#[test]
fn baresip_calls_over_tls_verifying_the_certificate_and_hears_its_tone_echoed() {
    require_sipp();
    require_tool("baresip", "baresip-core");
    let platform = Platform::start();
    let scratch = Scratch::new("baresip-tls");
    let dir = scratch.0.clone();
    let recordings = dir.join("recordings");
    std::fs::create_dir_all(&recordings).unwrap();
    write_tone(&dir.join("tone.wav"), 440.0, 10);
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\n\
             sip_listen 127.0.0.1:5996\n\
             sip_cafile {ca}\n\
             sip_verify_server yes\n\
             net_interface 127.0.0.1\n\
             audio_source aufile,{tone}\n\
             audio_player aufile,{discard}\n\
             audio_alert aufile,{discard}\n\
             audio_codecs PCMU/8000/1\n\
             rtp_ports 7200-7299\n\
             snd_path {recordings}\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module aufile.so\n\
             module sndfile.so\n\
             module account.so\n\
             module_app menu.so\n",
            ca = local_certificate().display(),
            tone = dir.join("tone.wav").display(),
            discard = dir.join("discard.wav").display(),
            recordings = recordings.display(),
        ),
    )
    .unwrap();
    // No registration: the account only names the transport.
    std::fs::write(
        dir.join("accounts"),
        "<sip:1000@127.0.0.1;transport=tls>;regint=0\n",
    )
    .unwrap();
    let mut carrier = Peer::carrier("carrier.xml").start();
    std::thread::sleep(Duration::from_millis(300));
    let output = Command::new("timeout")
        .args(["60", "baresip", "-f"])
        .arg(&dir)
        .args(["-e", "/dial sip:2000@127.0.0.1", "-t", "8"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        log.contains("Call established"),
        "baresip did not get the call up over TLS:\n{log}\n{}",
        platform.log()
    );
    carrier.assert_success(Duration::from_secs(30));
    wait_until(
        Duration::from_secs(5),
        "call and media released",
        no_call_left,
    );
    assert_eq!(
        scrape(
            SIGNALING_ADMIN,
            "tandem_signaling_calls_total",
            &["outcome=\"answered\""]
        ),
        1.0
    );
    // The call came over TLS: its connection is counted, closed when baresip quit.
    wait_until(
        Duration::from_secs(5),
        "baresip's TLS connection closed",
        || {
            scrape(
                SIGNALING_ADMIN,
                "tandem_signaling_connections_closed_total",
                &["transport=\"tls\""],
            ) >= 1.0
        },
    );
    // What baresip decoded: its own tone, echoed by the carrier through the media pod.
    let decoded = std::fs::read_dir(&recordings)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no recording of the decoded audio:\n{log}"));
    let samples = wav_samples(&decoded);
    assert!(
        samples.len() > 8000 * 2,
        "only {} samples heard",
        samples.len()
    );
    let second = &samples[samples.len() / 2..samples.len() / 2 + 4000];
    assert!(
        power(second, 440.0) > 100.0 * power(second, 1000.0),
        "the 440 Hz tone did not come back"
    );
}
