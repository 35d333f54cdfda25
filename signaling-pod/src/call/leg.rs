//! One leg of a B2BUA call: the dialog state of one side and the messages built for it.
//!
//! The two legs of a call share no identifiers (Call-ID, tags, Via, Contact): what one side sends
//! never reveals the other side's addresses. Everything here is pure; the call task sends.

use bytes::Bytes;
use tandem_sip::headers::Headers;
use tandem_sip::message::{Method, RequestLine, SipMessage, StartLine};

use crate::transport::{Flow, Transport};

/// Our own address as peers must see it in Via and Contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAddress {
    /// The advertised host (IP address or name).
    pub host: String,
    /// The UDP listener's port.
    pub udp_port: u16,
    /// The TCP listener's port.
    pub tcp_port: u16,
    /// The TLS listener's port (5061 without one: the port a TLS peer would connect to).
    pub tls_port: u16,
    /// The WebSocket listener's port.
    pub ws_port: u16,
    /// The secure WebSocket listener's port.
    pub wss_port: u16,
}

impl LocalAddress {
    /// Our port on `transport`.
    pub fn port(&self, transport: Transport) -> u16 {
        match transport {
            Transport::Udp => self.udp_port,
            Transport::Tcp => self.tcp_port,
            Transport::Tls => self.tls_port,
            Transport::Ws => self.ws_port,
            Transport::Wss => self.wss_port,
        }
    }

    /// A Via header value for a request we send on `transport`.
    pub fn via(&self, transport: Transport, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            transport.via_name(),
            self.host,
            self.port(transport)
        )
    }

    /// A Contact header value for `transport`.
    pub fn contact(&self, transport: Transport) -> String {
        let port = self.port(transport);
        match transport {
            Transport::Udp => format!("<sip:{}:{port}>", self.host),
            other => format!("<sip:{}:{port};transport={}>", self.host, other.label()),
        }
    }
}

/// The dialog state of one side of a call.
#[derive(Clone, Debug)]
pub struct Leg {
    /// The Call-ID of this side's dialog.
    pub call_id: Bytes,
    /// Our address-of-record on this side (name-addr without tag).
    pub local: Bytes,
    /// Our tag on this side.
    pub local_tag: Bytes,
    /// The peer's address-of-record (name-addr without tag).
    pub remote: Bytes,
    /// The peer's tag, once known.
    pub remote_tag: Option<Bytes>,
    /// The Request-URI for requests inside the dialog (the peer's Contact).
    pub remote_target: Bytes,
    /// Route headers for requests inside the dialog (RFC 3261 §12.1), in sending order.
    pub route_set: Vec<Bytes>,
    /// The CSeq number of the last request we sent on this side.
    pub local_cseq: u32,
    /// Where this side's messages go.
    pub flow: Flow,
}

impl Leg {
    /// Builds a request inside the dialog (BYE, re-INVITE, INFO, …), taking the next CSeq.
    pub fn request(&mut self, method: Method, local: &LocalAddress, branch: &str) -> SipMessage {
        self.local_cseq += 1;
        let cseq = self.local_cseq;
        self.request_with_cseq(method, cseq, local, branch)
    }

    /// Builds the ACK for a 2xx answer to the INVITE sent with `cseq`.
    pub fn ack(&self, cseq: u32, local: &LocalAddress, branch: &str) -> SipMessage {
        self.request_with_cseq(Method::Ack, cseq, local, branch)
    }

    fn request_with_cseq(
        &self,
        method: Method,
        cseq: u32,
        local: &LocalAddress,
        branch: &str,
    ) -> SipMessage {
        let mut headers = Headers::default();
        headers.push("Via", local.via(self.flow.transport, branch));
        headers.push("Max-Forwards", "70");
        for route in &self.route_set {
            headers.push("Route", route.clone());
        }
        headers.push("From", with_tag(&self.local, Some(&self.local_tag)));
        headers.push("To", with_tag(&self.remote, self.remote_tag.as_ref()));
        headers.push("Call-ID", self.call_id.clone());
        headers.push("CSeq", format!("{cseq} {}", method.as_str()));
        if matches!(method, Method::Invite | Method::Update) {
            headers.push("Contact", local.contact(self.flow.transport));
        }
        SipMessage {
            start: StartLine::Request(RequestLine {
                method,
                uri: self.remote_target.clone(),
            }),
            headers,
            body: Bytes::new(),
        }
    }
}

/// `value;tag=tag`, or `value` alone when there is no tag yet.
pub fn with_tag(value: &Bytes, tag: Option<&Bytes>) -> Bytes {
    match tag {
        None => value.clone(),
        Some(tag) => {
            let mut out = Vec::with_capacity(value.len() + tag.len() + 5);
            out.extend_from_slice(value);
            out.extend_from_slice(b";tag=");
            out.extend_from_slice(tag);
            Bytes::from(out)
        }
    }
}

/// A name-addr (`"Display" <uri>`) from its parts, without parameters.
pub fn name_addr(display: Option<&[u8]>, uri: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(uri.len() + 32);
    if let Some(display) = display.filter(|d| !d.is_empty()) {
        out.extend_from_slice(display);
        out.push(b' ');
    }
    out.push(b'<');
    out.extend_from_slice(uri);
    out.push(b'>');
    Bytes::from(out)
}

/// Adds a body with its Content-Type to `msg` (or clears it when `body` is `None`).
pub fn set_sdp_body(msg: &mut SipMessage, body: Option<Bytes>) {
    msg.headers.remove("Content-Type");
    match body {
        Some(body) if !body.is_empty() => {
            msg.headers.push("Content-Type", "application/sdp");
            msg.body = body;
        }
        _ => msg.body = Bytes::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg() -> Leg {
        Leg {
            call_id: Bytes::from_static(b"b-leg-1@tandem"),
            local: Bytes::from_static(b"\"Alice\" <sip:1000@192.0.2.1>"),
            local_tag: Bytes::from_static(b"ours"),
            remote: Bytes::from_static(b"<sip:2000@198.51.100.7>"),
            remote_tag: Some(Bytes::from_static(b"theirs")),
            remote_target: Bytes::from_static(b"sip:2000@198.51.100.7:5090"),
            route_set: vec![Bytes::from_static(b"<sip:edge.carrier.example;lr>")],
            local_cseq: 1,
            flow: Flow {
                transport: Transport::Udp,
                remote: "198.51.100.7:5090".parse().unwrap(),
            },
        }
    }

    fn local() -> LocalAddress {
        LocalAddress {
            host: "192.0.2.1".into(),
            udp_port: 5060,
            tcp_port: 5060,
            tls_port: 5061,
            ws_port: 8080,
            wss_port: 8443,
        }
    }

    #[test]
    fn in_dialog_request_carries_the_dialog_and_next_cseq() {
        let mut leg = leg();
        let bye = leg.request(Method::Bye, &local(), "z9hG4bKbye");
        let text = String::from_utf8(bye.to_bytes().to_vec()).unwrap();
        assert!(
            text.starts_with("BYE sip:2000@198.51.100.7:5090 SIP/2.0\r\n"),
            "{text}"
        );
        assert!(text.contains("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKbye;rport\r\n"));
        assert!(text.contains("From: \"Alice\" <sip:1000@192.0.2.1>;tag=ours\r\n"));
        assert!(text.contains("To: <sip:2000@198.51.100.7>;tag=theirs\r\n"));
        assert!(text.contains("Call-ID: b-leg-1@tandem\r\n"));
        assert!(text.contains("CSeq: 2 BYE\r\n"));
        assert!(text.contains("Route: <sip:edge.carrier.example;lr>\r\n"));
        assert!(!text.contains("Contact:"));
        assert_eq!(leg.local_cseq, 2);
    }

    #[test]
    fn ack_reuses_the_invite_cseq() {
        let leg = leg();
        let ack = leg.ack(1, &local(), "z9hG4bKack");
        let text = String::from_utf8(ack.to_bytes().to_vec()).unwrap();
        assert!(text.contains("CSeq: 1 ACK\r\n"), "{text}");
        assert_eq!(leg.local_cseq, 1);
    }

    #[test]
    fn name_addr_and_tags() {
        assert_eq!(
            name_addr(Some(b"\"Bob\""), b"sip:2000@h"),
            Bytes::from_static(b"\"Bob\" <sip:2000@h>")
        );
        assert_eq!(
            name_addr(None, b"sip:2000@h"),
            Bytes::from_static(b"<sip:2000@h>")
        );
        assert_eq!(
            with_tag(
                &Bytes::from_static(b"<sip:a@h>"),
                Some(&Bytes::from_static(b"t1"))
            ),
            Bytes::from_static(b"<sip:a@h>;tag=t1")
        );
    }

    #[test]
    fn tcp_contact_names_the_transport() {
        assert_eq!(
            local().contact(Transport::Tcp),
            "<sip:192.0.2.1:5060;transport=tcp>"
        );
    }
}
