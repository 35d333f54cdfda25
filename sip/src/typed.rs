//! Typed views of header values, parsed on demand from the raw `Bytes`: Call-ID, CSeq, Via,
//! From/To/Contact/Route name-addrs, Max-Forwards, Content-Length, Content-Type.
//!
//! Parsing one header never depends on another, so a defective header only fails the view
//! that reads it. Views return slices of the message buffer (no copies) except where a value
//! must be rewritten (escaped display names).

use std::fmt;

use bytes::Bytes;

use crate::headers::{Headers, KnownHeader};
use crate::message::{Method, SipMessage};
use crate::params::{self, Params};
use crate::syntax;
use crate::uri::{self, SipUri, UriError};

/// RFC 3261 branch prefix marking a branch that is unique per transaction (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A header that is absent or does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The header is missing.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// The header is present but malformed.
    #[error("invalid {header} header: {reason}")]
    Invalid {
        /// Canonical header name.
        header: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Result of a typed header view.
pub type Result<T> = std::result::Result<T, HeaderError>;

fn invalid(header: KnownHeader, reason: &'static str) -> HeaderError {
    HeaderError::Invalid {
        header: header.name(),
        reason,
    }
}

/// The CSeq header: sequence number and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSeq {
    /// Sequence number (RFC 3261 requires < 2^31 from senders; any u32 is accepted).
    pub seq: u32,
    /// The method of the request this CSeq belongs to.
    pub method: Method,
}

impl CSeq {
    /// Parses a CSeq value.
    pub fn parse(value: &Bytes) -> std::result::Result<CSeq, &'static str> {
        let s = &value[..];
        let i = syntax::skip_ws(s, 0);
        let mut j = i;
        while j < s.len() && s[j].is_ascii_digit() {
            j += 1;
        }
        let seq = syntax::parse_u64(&s[i..j])
            .ok_or("missing sequence number")
            .and_then(|n| u32::try_from(n).map_err(|_| "sequence number out of range"))?;
        let k = syntax::skip_ws(s, j);
        if k == j {
            return Err("missing method");
        }
        let end = syntax::scan_token(s, k);
        if end == k || syntax::skip_ws(s, end) != s.len() {
            return Err("invalid method");
        }
        Ok(CSeq {
            seq,
            method: Method::from_bytes(&value.slice(k..end)),
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// One Via hop. `branch`, `received` and `rport` are lifted out of the parameter list;
/// `params` holds the others (maddr, ttl, extensions) in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via {
    /// Transport token as received (`UDP`, `TCP`, `TLS`, `WS`, …).
    pub transport: Bytes,
    /// Host part of sent-by.
    pub host: Bytes,
    /// Port part of sent-by.
    pub port: Option<u16>,
    /// The branch parameter (transaction id).
    pub branch: Option<Bytes>,
    /// The received parameter (RFC 3261 §18.2.1).
    pub received: Option<Bytes>,
    /// The rport parameter (RFC 3581): absent, present without value, or with a port.
    pub rport: Option<Option<u16>>,
    /// Other parameters.
    pub params: Params,
}

impl Via {
    /// A Via for a request we send: `SIP/2.0/<transport> host[:port];branch=<branch>`.
    pub fn new(transport: &str, host: &str, port: Option<u16>, branch: &str) -> Via {
        Via {
            transport: Bytes::copy_from_slice(transport.as_bytes()),
            host: Bytes::copy_from_slice(host.as_bytes()),
            port,
            branch: Some(Bytes::copy_from_slice(branch.as_bytes())),
            received: None,
            rport: None,
            params: Params::new(),
        }
    }

    /// Parses one Via value.
    pub fn parse(value: &Bytes) -> std::result::Result<Via, &'static str> {
        let s = &value[..];
        let mut parts = [(0usize, 0usize); 3];
        let mut i = syntax::skip_ws(s, 0);
        for (n, part) in parts.iter_mut().enumerate() {
            if n > 0 {
                if i >= s.len() || s[i] != b'/' {
                    return Err("invalid sent-protocol");
                }
                i = syntax::skip_ws(s, i + 1);
            }
            let end = syntax::scan_token(s, i);
            if end == i {
                return Err("invalid sent-protocol");
            }
            *part = (i, end);
            i = syntax::skip_ws(s, end);
        }
        if !s[parts[0].0..parts[0].1].eq_ignore_ascii_case(b"SIP")
            || &s[parts[1].0..parts[1].1] != b"2.0"
        {
            return Err("unsupported protocol version");
        }
        let transport = value.slice(parts[2].0..parts[2].1);
        if i == parts[2].1 {
            return Err("missing sent-by");
        }
        let host_end = if i < s.len() && s[i] == b'[' {
            let close = s[i..]
                .iter()
                .position(|&b| b == b']')
                .ok_or("unterminated IPv6 reference")?;
            i + close + 1
        } else {
            let mut j = i;
            while j < s.len() && syntax::is_host_char(s[j]) {
                j += 1;
            }
            j
        };
        if host_end == i {
            return Err("missing sent-by host");
        }
        let host = value.slice(i..host_end);
        let mut j = syntax::skip_ws(s, host_end);
        let mut port = None;
        if j < s.len() && s[j] == b':' {
            let start = syntax::skip_ws(s, j + 1);
            j = start;
            while j < s.len() && s[j].is_ascii_digit() {
                j += 1;
            }
            port = Some(parse_port(&s[start..j]).ok_or("invalid sent-by port")?);
        }
        let (mut params, end) = params::parse_header_params(value, j)?;
        if end != s.len() {
            return Err("unexpected character in Via");
        }
        let branch = take_param(&mut params, "branch")?;
        let received = take_param(&mut params, "received")?;
        let rport = match params.get("rport") {
            None => None,
            Some(p) => Some(match &p.value {
                None => None,
                Some(v) => Some(parse_port(v).ok_or("invalid rport")?),
            }),
        };
        params.remove("rport");
        Ok(Via {
            transport,
            host,
            port,
            branch,
            received,
            rport,
            params,
        })
    }

    /// `host` or `host:port` — the sent-by of this hop.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", String::from_utf8_lossy(&self.host)),
            None => String::from_utf8_lossy(&self.host).into_owned(),
        }
    }

    /// Whether the branch carries the RFC 3261 magic cookie and something after it.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .as_ref()
            .is_some_and(|b| b.len() > MAGIC_COOKIE.len() && b.starts_with(MAGIC_COOKIE.as_bytes()))
    }
}

/// Removes parameter `name` and returns its value; a valueless one is an error for the
/// parameters that need a value.
fn take_param(params: &mut Params, name: &str) -> std::result::Result<Option<Bytes>, &'static str> {
    let value = match params.get(name) {
        None => return Ok(None),
        Some(p) => p.value.clone().ok_or("parameter needs a value")?,
    };
    params.remove(name);
    Ok(Some(value))
}

fn parse_port(digits: &[u8]) -> Option<u16> {
    if digits.len() > 5 {
        return None;
    }
    syntax::parse_u64(digits).and_then(|p| u16::try_from(p).ok())
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SIP/2.0/{} {}",
            String::from_utf8_lossy(&self.transport),
            self.sent_by()
        )?;
        if let Some(branch) = &self.branch {
            write!(f, ";branch={}", String::from_utf8_lossy(branch))?;
        }
        write!(f, "{}", self.params)?;
        if let Some(received) = &self.received {
            write!(f, ";received={}", String::from_utf8_lossy(received))?;
        }
        match self.rport {
            Some(Some(port)) => write!(f, ";rport={port}")?,
            Some(None) => f.write_str(";rport")?,
            None => {}
        }
        Ok(())
    }
}

/// A name-addr or addr-spec with header parameters: the value of From, To, Contact, Route,
/// Record-Route and similar headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as it appeared: a quoted string keeps its quotes and escapes, a token
    /// sequence is trimmed. Printing it back as is is always valid; see
    /// [`NameAddr::display_name`] for the text.
    pub display: Option<Bytes>,
    /// The URI inside `<>` (or the bare addr-spec).
    pub uri: Bytes,
    /// Header parameters after the address (`tag`, `expires`, `q`, …).
    pub params: Params,
}

impl NameAddr {
    /// `<uri>` with no display name or parameters.
    pub fn new(uri: impl Into<Bytes>) -> NameAddr {
        NameAddr {
            display: None,
            uri: uri.into(),
            params: Params::new(),
        }
    }

    /// Parses a name-addr / addr-spec with parameters.
    pub fn parse(value: &Bytes) -> std::result::Result<NameAddr, &'static str> {
        let s = &value[..];
        let mut i = syntax::skip_ws(s, 0);
        if i == s.len() {
            return Err("empty address");
        }
        let mut display = None;
        let angle_start = if s[i] == b'"' {
            let end = syntax::scan_quoted(s, i).ok_or("unterminated quoted display name")?;
            display = Some(value.slice(i..end));
            let j = syntax::skip_ws(s, end);
            if j >= s.len() || s[j] != b'<' {
                return Err("display name must be followed by <URI>");
            }
            Some(j)
        } else {
            let mut j = i;
            while j < s.len() && (syntax::is_token(s[j]) || syntax::is_ws(s[j])) {
                j += 1;
            }
            if j < s.len() && s[j] == b'<' {
                let (a, b) = syntax::trim_range(s, i, j);
                if a < b {
                    display = Some(value.slice(a..b));
                }
                Some(j)
            } else {
                None
            }
        };
        let (uri, after) = match angle_start {
            Some(lt) => {
                let gt = s[lt..]
                    .iter()
                    .position(|&b| b == b'>')
                    .ok_or("missing > after URI")?
                    + lt;
                let uri = value.slice(lt + 1..gt);
                uri::check_absolute(&uri)?;
                (uri, gt + 1)
            }
            None => {
                // addr-spec: parameters after it belong to the header, and a URI holding
                // `;`, `,` or `?` would have needed <> (RFC 3261 §20.10).
                let end = s[i..]
                    .iter()
                    .position(|&b| b == b';')
                    .map_or(s.len(), |p| p + i);
                let (a, b) = syntax::trim_range(s, i, end);
                let spec = &s[a..b];
                if spec.contains(&b'?') || spec.contains(&b',') {
                    return Err("URI with ? or , must be enclosed in <>");
                }
                uri::check_absolute(spec)?;
                i = end;
                (value.slice(a..b), i)
            }
        };
        let (params, end) = params::parse_header_params(value, after)?;
        if end != s.len() {
            return Err("unexpected character after address");
        }
        Ok(NameAddr {
            display,
            uri,
            params,
        })
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&[u8]> {
        self.params.value("tag").map(|t| &t[..])
    }

    /// Sets (or replaces) the `tag` parameter.
    pub fn set_tag(&mut self, tag: &str) {
        self.params
            .set("tag", Some(Bytes::copy_from_slice(tag.as_bytes())));
    }

    /// The display name as text: quotes removed, escapes resolved, invalid UTF-8 replaced.
    pub fn display_name(&self) -> Option<String> {
        let raw = self.display.as_ref()?;
        if raw.first() != Some(&b'"') {
            return Some(String::from_utf8_lossy(raw).into_owned());
        }
        let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            if inner[i] == b'\\' && i + 1 < inner.len() {
                i += 1;
            }
            out.push(inner[i]);
            i += 1;
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// The URI parsed as a SIP, SIPS or tel URI.
    pub fn sip_uri(&self) -> std::result::Result<SipUri, UriError> {
        SipUri::parse(&self.uri)
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(display) = self.display.as_ref().filter(|d| !d.is_empty()) {
            write!(f, "{} ", String::from_utf8_lossy(display))?;
        }
        write!(f, "<{}>{}", String::from_utf8_lossy(&self.uri), self.params)
    }
}

/// A Content-Type value: `type/subtype;params`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaType {
    /// Top-level type (`application`).
    pub mtype: Bytes,
    /// Subtype (`sdp`).
    pub subtype: Bytes,
    /// Parameters (`boundary`, `charset`, …).
    pub params: Params,
}

impl MediaType {
    /// Parses a media type.
    pub fn parse(value: &Bytes) -> std::result::Result<MediaType, &'static str> {
        let s = &value[..];
        let i = syntax::skip_ws(s, 0);
        let t_end = syntax::scan_token(s, i);
        let slash = syntax::skip_ws(s, t_end);
        if t_end == i || slash >= s.len() || s[slash] != b'/' {
            return Err("expected type/subtype");
        }
        let st = syntax::skip_ws(s, slash + 1);
        let st_end = syntax::scan_token(s, st);
        if st_end == st {
            return Err("expected type/subtype");
        }
        let (params, end) = params::parse_header_params(value, st_end)?;
        if end != s.len() {
            return Err("unexpected character in media type");
        }
        Ok(MediaType {
            mtype: value.slice(i..t_end),
            subtype: value.slice(st..st_end),
            params,
        })
    }

    /// Whether this is `mtype/subtype` (case-insensitive).
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype.as_bytes())
            && self.subtype.eq_ignore_ascii_case(subtype.as_bytes())
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}{}",
            String::from_utf8_lossy(&self.mtype),
            String::from_utf8_lossy(&self.subtype),
            self.params
        )
    }
}

/// Parses an unsigned decimal header value no larger than `max`.
fn parse_number(header: KnownHeader, value: &Bytes, max: u64) -> Result<u64> {
    let s = &value[..];
    let (a, b) = syntax::trim_range(s, 0, s.len());
    let n = syntax::parse_u64(&s[a..b]).ok_or(invalid(header, "not a non-negative integer"))?;
    if n > max {
        return Err(invalid(header, "value out of range"));
    }
    Ok(n)
}

impl Headers {
    fn required(&self, header: KnownHeader) -> Result<&Bytes> {
        self.get_known(header)
            .ok_or(HeaderError::Missing(header.name()))
    }

    /// The Call-ID: non-empty, without whitespace or control characters.
    pub fn call_id(&self) -> Result<&Bytes> {
        let v = self.required(KnownHeader::CallId)?;
        if v.is_empty() || v.iter().any(|&b| b <= b' ' || b == 0x7f) {
            return Err(invalid(KnownHeader::CallId, "empty or contains whitespace"));
        }
        Ok(v)
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq> {
        let v = self.required(KnownHeader::CSeq)?;
        CSeq::parse(v).map_err(|r| invalid(KnownHeader::CSeq, r))
    }

    /// Every Via hop, top first; fails if there is none or any does not parse.
    pub fn vias(&self) -> Result<Vec<Via>> {
        let vias = self
            .all_known(KnownHeader::Via)
            .map(|v| Via::parse(v).map_err(|r| invalid(KnownHeader::Via, r)))
            .collect::<Result<Vec<_>>>()?;
        if vias.is_empty() {
            return Err(HeaderError::Missing("Via"));
        }
        Ok(vias)
    }

    /// The top Via hop.
    pub fn top_via(&self) -> Result<Via> {
        let v = self.required(KnownHeader::Via)?;
        Via::parse(v).map_err(|r| invalid(KnownHeader::Via, r))
    }

    /// The From address.
    pub fn from(&self) -> Result<NameAddr> {
        let v = self.required(KnownHeader::From)?;
        NameAddr::parse(v).map_err(|r| invalid(KnownHeader::From, r))
    }

    /// The To address.
    pub fn to(&self) -> Result<NameAddr> {
        let v = self.required(KnownHeader::To)?;
        NameAddr::parse(v).map_err(|r| invalid(KnownHeader::To, r))
    }

    /// Whether the Contact is the REGISTER wildcard `*`.
    pub fn is_contact_wildcard(&self) -> bool {
        self.get_known(KnownHeader::Contact)
            .is_some_and(|v| v.trim_ascii() == b"*")
    }

    /// The first Contact, if any (the wildcard `*` is an error here).
    pub fn contact(&self) -> Result<Option<NameAddr>> {
        self.get_known(KnownHeader::Contact)
            .map(|v| NameAddr::parse(v).map_err(|r| invalid(KnownHeader::Contact, r)))
            .transpose()
    }

    /// Every Contact.
    pub fn contacts(&self) -> Result<Vec<NameAddr>> {
        self.addresses(KnownHeader::Contact)
    }

    /// Every Route, in order.
    pub fn routes(&self) -> Result<Vec<NameAddr>> {
        self.addresses(KnownHeader::Route)
    }

    /// Every Record-Route, in order.
    pub fn record_routes(&self) -> Result<Vec<NameAddr>> {
        self.addresses(KnownHeader::RecordRoute)
    }

    fn addresses(&self, header: KnownHeader) -> Result<Vec<NameAddr>> {
        self.all_known(header)
            .map(|v| NameAddr::parse(v).map_err(|r| invalid(header, r)))
            .collect()
    }

    /// Max-Forwards (0–255), if present.
    pub fn max_forwards(&self) -> Result<Option<u8>> {
        self.get_known(KnownHeader::MaxForwards)
            .map(|v| {
                parse_number(KnownHeader::MaxForwards, v, 255)
                    .map(|n| u8::try_from(n).unwrap_or(u8::MAX))
            })
            .transpose()
    }

    /// Content-Length, if present. More than one Content-Length is an error.
    pub fn content_length(&self) -> Result<Option<usize>> {
        let mut all = self.all_known(KnownHeader::ContentLength);
        let first = all.next();
        if all.next().is_some() {
            return Err(invalid(KnownHeader::ContentLength, "multiple values"));
        }
        first
            .map(|v| {
                parse_number(KnownHeader::ContentLength, v, u64::from(u32::MAX))
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
            })
            .transpose()
    }

    /// Content-Type, if present.
    pub fn content_type(&self) -> Result<Option<MediaType>> {
        self.get_known(KnownHeader::ContentType)
            .map(|v| MediaType::parse(v).map_err(|r| invalid(KnownHeader::ContentType, r)))
            .transpose()
    }

    /// Expires (delta-seconds), if present.
    pub fn expires(&self) -> Result<Option<u32>> {
        self.get_known(KnownHeader::Expires)
            .map(|v| {
                parse_number(KnownHeader::Expires, v, u64::from(u32::MAX))
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            })
            .transpose()
    }
}

/// The same views straight from a message.
impl SipMessage {
    /// See [`Headers::call_id`].
    pub fn call_id(&self) -> Result<&Bytes> {
        self.headers.call_id()
    }
    /// See [`Headers::cseq`].
    pub fn cseq(&self) -> Result<CSeq> {
        self.headers.cseq()
    }
    /// See [`Headers::vias`].
    pub fn vias(&self) -> Result<Vec<Via>> {
        self.headers.vias()
    }
    /// See [`Headers::top_via`].
    pub fn top_via(&self) -> Result<Via> {
        self.headers.top_via()
    }
    /// See [`Headers::from`].
    pub fn from(&self) -> Result<NameAddr> {
        self.headers.from()
    }
    /// See [`Headers::to`].
    pub fn to(&self) -> Result<NameAddr> {
        self.headers.to()
    }
    /// See [`Headers::contact`].
    pub fn contact(&self) -> Result<Option<NameAddr>> {
        self.headers.contact()
    }
    /// See [`Headers::contacts`].
    pub fn contacts(&self) -> Result<Vec<NameAddr>> {
        self.headers.contacts()
    }
    /// See [`Headers::routes`].
    pub fn routes(&self) -> Result<Vec<NameAddr>> {
        self.headers.routes()
    }
    /// See [`Headers::record_routes`].
    pub fn record_routes(&self) -> Result<Vec<NameAddr>> {
        self.headers.record_routes()
    }
    /// See [`Headers::max_forwards`].
    pub fn max_forwards(&self) -> Result<Option<u8>> {
        self.headers.max_forwards()
    }
    /// See [`Headers::content_length`].
    pub fn content_length(&self) -> Result<Option<usize>> {
        self.headers.content_length()
    }
    /// See [`Headers::content_type`].
    pub fn content_type(&self) -> Result<Option<MediaType>> {
        self.headers.content_type()
    }
    /// See [`Headers::expires`].
    pub fn expires(&self) -> Result<Option<u32>> {
        self.headers.expires()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn cseq_values() {
        let c = CSeq::parse(&b(" 0009 INVITE ")).unwrap();
        assert_eq!((c.seq, &c.method), (9, &Method::Invite));
        assert_eq!(c.to_string(), "9 INVITE");
        assert!(CSeq::parse(&b("36893488147419103232 REGISTER")).is_err());
        assert!(CSeq::parse(&b("4294967296 INVITE")).is_err());
        assert_eq!(CSeq::parse(&b("4294967295 INVITE")).unwrap().seq, u32::MAX);
        for bad in [
            "",
            "INVITE",
            "1",
            "1INVITE",
            "-1 INVITE",
            "1 INVITE x",
            "1 INV/ITE",
        ] {
            assert!(CSeq::parse(&b(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn via_with_odd_whitespace() {
        let v = Via::parse(&b(
            "SIP  / 2.0  / TCP     spindle.example.com   ; branch  =   z9hG4bK9ikj8",
        ))
        .unwrap();
        assert_eq!(&v.transport[..], b"TCP");
        assert_eq!(&v.host[..], b"spindle.example.com");
        assert_eq!(v.port, None);
        assert_eq!(v.branch.as_deref(), Some(&b"z9hG4bK9ikj8"[..]));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn via_parameters() {
        let v = Via::parse(&b(
            "SIP/2.0/UDP [2001:db8::9] : 5070;rport;branch=z9hG4bKx;maddr=224.2.0.1;ttl=16;received=192.0.2.7",
        ))
        .unwrap();
        assert_eq!(&v.host[..], b"[2001:db8::9]");
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.received.as_deref(), Some(&b"192.0.2.7"[..]));
        assert_eq!(v.params.value("ttl").unwrap(), "16");
        assert_eq!(v.sent_by(), "[2001:db8::9]:5070");
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKx;maddr=224.2.0.1;ttl=16;received=192.0.2.7;rport"
        );
        let reparsed = Via::parse(&b(&v.to_string())).unwrap();
        assert_eq!(reparsed, v);
        let v = Via::parse(&b("SIP/2.0/UDP host;rport=5062;branch=z9hG4bK")).unwrap();
        assert_eq!(v.rport, Some(Some(5062)));
        assert!(!v.has_rfc3261_branch());
    }

    #[test]
    fn via_rejects_garbage() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP ",
            "SIP/7.0/UDP host",
            "SIP/2.0 UDP host",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP host;rport=x",
            "SIP/2.0/UDP host;branch",
            "SIP/2.0/UDP host junk",
        ] {
            assert!(Via::parse(&b(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(&b(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ;  tag = 98asjd8"#,
        ))
        .unwrap();
        assert_eq!(n.display.as_deref(), Some(&br#""J Rosenberg \\\"""#[..]));
        assert_eq!(n.display_name().unwrap(), r#"J Rosenberg \""#);
        assert_eq!(&n.uri[..], b"sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some(&b"98asjd8"[..]));

        let n = NameAddr::parse(&b(
            "sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
        ))
        .unwrap();
        assert!(n.display.is_none());
        assert_eq!(&n.uri[..], b"sip:vivekg@chair-dnrc.example.com");
        assert_eq!(n.tag(), Some(&b"1918181833n"[..]));

        let n = NameAddr::parse(&b("caller<sip:caller@example.com>;tag=323")).unwrap();
        assert_eq!(n.display.as_deref(), Some(&b"caller"[..]));
        assert_eq!(n.display_name().unwrap(), "caller");

        let n = NameAddr::parse(&b("sip:+19725552222@gw1.example.net;unknownparam")).unwrap();
        assert_eq!(&n.uri[..], b"sip:+19725552222@gw1.example.net");
        assert!(n.params.contains("unknownparam"));

        let n = NameAddr::parse(&b("<sip:+19725552222@gw1.example.net;unknownparam>")).unwrap();
        assert!(n.params.is_empty());
        assert_eq!(n.sip_uri().unwrap().params.len(), 1);

        let mut n = NameAddr::parse(&b("Bob <sip:bob@b.example>")).unwrap();
        n.set_tag("abc");
        assert_eq!(n.to_string(), "Bob <sip:bob@b.example>;tag=abc");
    }

    #[test]
    fn name_addr_rejects_torture_defects() {
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            r#""Joe" <sip:joe@example.org>;;;;"#,
            "alan@jasomi.com",
            "<sip:a@b",
            "",
            "<>",
            "<sip:a@b> junk",
        ] {
            assert!(NameAddr::parse(&b(bad)).is_err(), "{bad}");
        }
        assert!(NameAddr::parse(&b("isbn:2983792873")).is_ok());
        assert!(NameAddr::parse(&b("<http://www.example.com>;tag=3234233")).is_ok());
    }

    #[test]
    fn media_types() {
        let m = MediaType::parse(&b("multipart/mixed;boundary=7a9cbec02ceef655")).unwrap();
        assert!(m.is("Multipart", "MIXED"));
        assert_eq!(m.params.value("boundary").unwrap(), "7a9cbec02ceef655");
        assert_eq!(m.to_string(), "multipart/mixed;boundary=7a9cbec02ceef655");
        assert!(
            MediaType::parse(&b("application / sdp"))
                .unwrap()
                .is("application", "sdp")
        );
        assert!(MediaType::parse(&b("application")).is_err());
        assert!(MediaType::parse(&b("text/")).is_err());
    }

    #[test]
    fn numeric_headers() {
        let mut h = Headers::new();
        h.push("Max-Forwards", "0068");
        h.push("Expires", "10000000000000000000000000000");
        h.push("Content-Length", " 12 ");
        assert_eq!(h.max_forwards().unwrap(), Some(68));
        assert!(h.expires().is_err());
        assert_eq!(h.content_length().unwrap(), Some(12));
        h.set("Max-Forwards", "300");
        assert!(h.max_forwards().is_err());
        h.set("Max-Forwards", "-1");
        assert!(h.max_forwards().is_err());
        h.push("l", "12");
        assert!(h.content_length().is_err());
        assert_eq!(Headers::new().max_forwards().unwrap(), None);
    }

    #[test]
    fn missing_and_invalid_are_distinct() {
        let mut h = Headers::new();
        assert_eq!(h.call_id().unwrap_err(), HeaderError::Missing("Call-ID"));
        h.push("Call-ID", "a b");
        assert!(matches!(
            h.call_id().unwrap_err(),
            HeaderError::Invalid {
                header: "Call-ID",
                ..
            }
        ));
        assert_eq!(h.vias().unwrap_err(), HeaderError::Missing("Via"));
        h.push("Contact", "*");
        assert!(h.is_contact_wildcard());
        assert!(h.contact().is_err());
    }
}
