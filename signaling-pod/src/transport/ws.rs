//! SIP over WebSocket (RFC 7118): the opening handshake's subprotocol check and what each
//! WebSocket message means. Each text or binary message carries exactly one SIP message; the
//! messages of one connection are one flow, so responses and requests inside its dialogs go
//! back on it whatever host (`*.invalid` from browsers) the Via and Contact name.

use bytes::Bytes;
use tandem_sip::SipMessage;
use tandem_sip::parse::{ParseError, parse_datagram};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The WebSocket subprotocol of SIP (RFC 7118 §4).
pub const SUBPROTOCOL: &str = "sip";

/// The close code for a message that is not SIP.
pub const GARBAGE_CLOSE: CloseCode = CloseCode::Protocol;
/// The close code for a message over the size limit.
pub const OVERSIZED_CLOSE: CloseCode = CloseCode::Size;

/// The WebSocket limits for SIP messages of at most `max_message_size` bytes.
pub fn config(max_message_size: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
}

/// Accepts the opening handshake only when the client offers the `sip` subprotocol, and
/// selects it in the response.
#[allow(clippy::result_large_err)] // the handshake callback's signature
pub fn accept_sip_subprotocol(
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    let offered = request
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case(SUBPROTOCOL));
    if !offered {
        let mut refusal = ErrorResponse::new(Some(
            "the WebSocket subprotocol \"sip\" is required (RFC 7118)".to_owned(),
        ));
        *refusal.status_mut() = StatusCode::BAD_REQUEST;
        return Err(refusal);
    }
    response.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(response)
}

/// What one received WebSocket message is.
#[derive(Debug)]
pub enum Received {
    /// A SIP message, or one that could not be parsed (answered with 400 when a request line
    /// and enough headers were read).
    Sip(Result<SipMessage, ParseError>),
    /// Not SIP at all: the connection is closed with [`GARBAGE_CLOSE`].
    Garbage,
    /// Nothing for SIP: control frames, RFC 5626 keep-alive line breaks.
    Nothing,
    /// The peer closes the connection.
    Closed,
}

/// Interprets one WebSocket message.
pub fn receive(message: Message) -> Received {
    let data: Bytes = match message {
        Message::Text(text) => Bytes::from(text),
        Message::Binary(data) => data,
        Message::Close(_) => return Received::Closed,
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Received::Nothing,
    };
    if data.iter().all(|&b| b == b'\r' || b == b'\n') {
        return Received::Nothing;
    }
    match parse_datagram(data) {
        Ok(msg) => Received::Sip(Ok(msg)),
        Err(e) if e.partial().is_some() => Received::Sip(Err(e)),
        Err(_) => Received::Garbage,
    }
}

/// A SIP message to send: text when it is UTF-8 (as browsers expect), else binary.
pub fn frame(data: Bytes) -> Message {
    match Utf8Bytes::try_from(data.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_sip::message::Method;

    const OPTIONS: &str = "OPTIONS sip:127.0.0.1:8443;transport=ws SIP/2.0\r\n\
        Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK56sdasks\r\n\
        From: <sip:alice@example.com>;tag=1\r\n\
        To: <sip:bob@example.com>\r\n\
        Call-ID: ws1\r\n\
        CSeq: 1 OPTIONS\r\n\
        Max-Forwards: 70\r\n\
        Content-Length: 0\r\n\r\n";

    #[test]
    fn a_text_message_is_one_sip_message() {
        let Received::Sip(Ok(msg)) = receive(Message::text(OPTIONS)) else {
            panic!("not a SIP message");
        };
        assert_eq!(msg.method(), Some(&Method::Options));
    }

    #[test]
    fn a_binary_message_is_one_sip_message_too() {
        let received = receive(Message::binary(OPTIONS.as_bytes().to_vec()));
        assert!(matches!(received, Received::Sip(Ok(_))));
    }

    #[test]
    fn a_request_with_a_bad_header_is_answered_not_dropped() {
        let bad = OPTIONS.replace("Content-Length: 0", "Content-Length: zero");
        let Received::Sip(Err(e)) = receive(Message::text(bad)) else {
            panic!("expected an answerable parse error");
        };
        assert!(e.partial().is_some());
    }

    #[test]
    fn bytes_that_are_not_sip_are_garbage() {
        assert!(matches!(
            receive(Message::binary(vec![0x16, 0x03, 0x01, 0xff, 0x00])),
            Received::Garbage
        ));
        assert!(matches!(
            receive(Message::text("hello there")),
            Received::Garbage
        ));
    }

    #[test]
    fn control_frames_and_keepalives_carry_nothing() {
        assert!(matches!(
            receive(Message::Ping(Bytes::new())),
            Received::Nothing
        ));
        assert!(matches!(
            receive(Message::text("\r\n\r\n")),
            Received::Nothing
        ));
        assert!(matches!(receive(Message::Close(None)), Received::Closed));
    }

    #[test]
    fn a_sip_message_goes_out_as_text() {
        assert!(matches!(frame(Bytes::from(OPTIONS)), Message::Text(_)));
        assert!(matches!(
            frame(Bytes::from_static(&[0xff, 0xfe])),
            Message::Binary(_)
        ));
    }

    #[allow(clippy::result_large_err)] // the handshake callback's result
    fn handshake(protocols: Option<&str>) -> Result<Response, ErrorResponse> {
        let mut request = Request::builder().uri("/").body(()).expect("request");
        if let Some(p) = protocols {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(p).expect("value"),
            );
        }
        accept_sip_subprotocol(&request, Response::new(()))
    }

    #[test]
    fn the_sip_subprotocol_is_required_and_selected() {
        let response = handshake(Some("chat, sip")).expect("accepted");
        assert_eq!(response.headers()["Sec-WebSocket-Protocol"], "sip");
        let refused = handshake(Some("chat")).expect_err("refused");
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
        assert!(handshake(None).is_err());
    }
}
