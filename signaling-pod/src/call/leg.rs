//! One leg of a B2BUA call: the dialog state of one side and the messages built for it.
//!
//! The two legs of a call share no identifiers (Call-ID, tags, Via, Contact): what one side sends
//! never reveals the other side's addresses. Everything here is pure; the call task sends.

use bytes::Bytes;
use tandem_api::gateway::SignalingSpec;
use tandem_sip::headers::Headers;
use tandem_sip::message::{Method, RequestLine, SipMessage, StartLine};

use crate::transport::{Flow, Transport};

/// Our own address as peers must see it in Via and Contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAddress {
    /// The advertised host (IP address or name) of the transports not in `hosts`, and the
    /// domain of the requests we originate.
    pub host: String,
    /// The port advertised on UDP.
    pub udp_port: u16,
    /// The port advertised on TCP.
    pub tcp_port: u16,
    /// The port advertised on TLS (5061 without a listener: the port a TLS peer would connect
    /// to).
    pub tls_port: u16,
    /// The port advertised on WebSocket.
    pub ws_port: u16,
    /// The port advertised on secure WebSocket.
    pub wss_port: u16,
    /// Transports advertised with a host other than `host` (a listener with a rule of its
    /// own).
    pub hosts: Vec<(Transport, String)>,
}

impl LocalAddress {
    /// What the listeners of `signaling` advertise: each listener the host and port of its
    /// advertised address rule (a NodePort or a load balancer may map the bound port to
    /// another), else `default_host` and its own port. `host_override` (the pod's address on
    /// its secondary network, or `--advertise-address`) replaces every host; a rule's port
    /// still applies.
    pub fn advertised(
        signaling: &SignalingSpec,
        host_override: Option<&str>,
        default_host: &str,
    ) -> Self {
        let mut by_transport: Vec<(Transport, &str, u16)> = Vec::new();
        for listener in &signaling.listeners {
            let (host, port) = signaling
                .advertised(listener)
                .unwrap_or((default_host, listener.port));
            let host = host_override.unwrap_or(host);
            by_transport.push((Transport::from(listener.transport), host, port));
        }
        let rules = &signaling.advertised_addresses;
        let catch_all = rules
            .iter()
            .find(|r| r.listener.is_none())
            .or(rules.first());
        let host = host_override
            .or(catch_all.map(|r| r.address.as_str()))
            .unwrap_or(default_host);
        let port_of = |transport| {
            by_transport
                .iter()
                .find(|(t, _, _)| *t == transport)
                .map(|(_, _, port)| *port)
        };
        let (udp, tcp) = (port_of(Transport::Udp), port_of(Transport::Tcp));
        let (udp_port, tcp_port) = (udp.or(tcp).unwrap_or(5060), tcp.or(udp).unwrap_or(5060));
        Self {
            udp_port,
            tcp_port,
            tls_port: port_of(Transport::Tls).unwrap_or(5061),
            ws_port: port_of(Transport::Ws).unwrap_or(tcp_port),
            wss_port: port_of(Transport::Wss).unwrap_or(tcp_port),
            hosts: by_transport
                .iter()
                .filter(|(_, h, _)| *h != host)
                .map(|(t, h, _)| (*t, (*h).to_owned()))
                .collect(),
            host: host.to_owned(),
        }
    }

    /// Our host on `transport`.
    pub fn host(&self, transport: Transport) -> &str {
        self.hosts
            .iter()
            .find(|(t, _)| *t == transport)
            .map_or(self.host.as_str(), |(_, host)| host.as_str())
    }

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
            self.host(transport),
            self.port(transport)
        )
    }

    /// A Contact header value for `transport`.
    pub fn contact(&self, transport: Transport) -> String {
        let (host, port) = (self.host(transport), self.port(transport));
        match transport {
            Transport::Udp => format!("<sip:{host}:{port}>"),
            other => format!("<sip:{host}:{port};transport={}>", other.label()),
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
            hosts: Vec::new(),
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

    /// Listeners UDP 5060, TCP 5060, TLS 5061 and WSS 8443, with the advertised address
    /// `rules`.
    fn signaling(rules: serde_json::Value) -> SignalingSpec {
        let cert = serde_json::json!({"name": "cert"});
        serde_json::from_value(serde_json::json!({
            "listeners": [
                {"name": "udp", "transport": "UDP", "port": 5060},
                {"name": "tcp", "transport": "TCP", "port": 5060},
                {"name": "tls", "transport": "TLS", "port": 5061, "tlsSecretRef": cert},
                {"name": "wss", "transport": "WSS", "port": 8443, "tlsSecretRef": cert},
            ],
            "advertisedAddresses": rules,
        }))
        .unwrap()
    }

    #[test]
    fn each_listener_advertises_its_rule_with_the_external_port() {
        let local = LocalAddress::advertised(
            &signaling(serde_json::json!([
                {"listener": "udp", "address": "203.0.113.10", "port": 30060},
                {"address": "sbc.example.net"},
                {"listener": "wss", "address": "sbc.example.net", "port": 443},
            ])),
            None,
            "0.0.0.0",
        );
        assert_eq!(
            local.via(Transport::Udp, "z9hG4bK1"),
            "SIP/2.0/UDP 203.0.113.10:30060;branch=z9hG4bK1;rport"
        );
        assert_eq!(local.contact(Transport::Udp), "<sip:203.0.113.10:30060>");
        assert_eq!(
            local.contact(Transport::Tcp),
            "<sip:sbc.example.net:5060;transport=tcp>"
        );
        assert_eq!(
            local.via(Transport::Tls, "z9hG4bK2"),
            "SIP/2.0/TLS sbc.example.net:5061;branch=z9hG4bK2;rport"
        );
        assert_eq!(
            local.contact(Transport::Wss),
            "<sip:sbc.example.net:443;transport=wss>"
        );
        // Requests we originate name the catch-all host as their domain.
        assert_eq!(local.host, "sbc.example.net");
    }

    #[test]
    fn without_rules_the_listeners_advertise_the_default_host_and_their_ports() {
        let local = LocalAddress::advertised(&signaling(serde_json::json!([])), None, "127.0.0.1");
        assert_eq!(
            local.via(Transport::Udp, "b"),
            "SIP/2.0/UDP 127.0.0.1:5060;branch=b;rport"
        );
        assert_eq!(
            local.contact(Transport::Wss),
            "<sip:127.0.0.1:8443;transport=wss>"
        );
        assert!(local.hosts.is_empty());
    }

    #[test]
    fn an_override_replaces_every_host_but_keeps_the_rule_ports() {
        let local = LocalAddress::advertised(
            &signaling(serde_json::json!([
                {"listener": "udp", "address": "203.0.113.10", "port": 30060},
            ])),
            Some("10.1.2.3"),
            "0.0.0.0",
        );
        assert_eq!(local.contact(Transport::Udp), "<sip:10.1.2.3:30060>");
        assert_eq!(
            local.contact(Transport::Tcp),
            "<sip:10.1.2.3:5060;transport=tcp>"
        );
        assert_eq!(local.host, "10.1.2.3");
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
