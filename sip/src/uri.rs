//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966): enough structure to route on — user
//! part (the called number), host and port, parameters — cut zero-copy from the raw URI.
//!
//! An unknown scheme is reported apart from a malformed URI, because the first is answered with
//! 416 (Unsupported URI Scheme) and the second with 400.

use std::fmt;

use bytes::Bytes;

use crate::params::{self, Params};
use crate::syntax;

/// The URI schemes this crate understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `sip:`.
    Sip,
    /// `sips:`.
    Sips,
    /// `tel:` (RFC 3966).
    Tel,
}

impl Scheme {
    /// The scheme name, lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Sip => "sip",
            Scheme::Sips => "sips",
            Scheme::Tel => "tel",
        }
    }
}

/// Why a URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// A syntactically valid absolute URI whose scheme is not sip, sips or tel.
    #[error("unsupported URI scheme")]
    UnsupportedScheme,
    /// Not a valid URI.
    #[error("malformed URI: {0}")]
    Malformed(&'static str),
}

impl UriError {
    /// The response code for a Request-URI with this defect: 416 or 400.
    pub fn status_code(&self) -> u16 {
        match self {
            UriError::UnsupportedScheme => 416,
            UriError::Malformed(_) => 400,
        }
    }
}

/// A parsed SIP, SIPS or tel URI. All parts are slices of the original and keep their
/// `%HH` escapes; see [`SipUri::user_unescaped`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUri {
    /// The scheme.
    pub scheme: Scheme,
    /// The user part (for tel: the telephone number).
    pub user: Option<Bytes>,
    /// The password of `user:password@`, rarely used and deprecated.
    pub password: Option<Bytes>,
    /// Host name, IPv4 address or bracketed IPv6 reference; empty for tel URIs.
    pub host: Bytes,
    /// The port, when given.
    pub port: Option<u16>,
    /// URI parameters (`;transport=tcp;lr`).
    pub params: Params,
    /// The raw header part after `?`, if any.
    pub headers: Option<Bytes>,
}

impl SipUri {
    /// Parses `uri`.
    pub fn parse(uri: &Bytes) -> Result<SipUri, UriError> {
        let s = &uri[..];
        let colon = scheme_end(s)?;
        let scheme = &s[..colon];
        let scheme = if scheme.eq_ignore_ascii_case(b"sip") {
            Scheme::Sip
        } else if scheme.eq_ignore_ascii_case(b"sips") {
            Scheme::Sips
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            Scheme::Tel
        } else {
            return Err(UriError::UnsupportedScheme);
        };
        if s[colon + 1..]
            .iter()
            .any(|&b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"')
        {
            return Err(UriError::Malformed("forbidden character in URI"));
        }
        match scheme {
            Scheme::Tel => parse_tel(uri, colon + 1),
            _ => parse_sip(uri, scheme, colon + 1),
        }
    }

    /// A `sip:` URI for `host` with nothing else.
    pub fn new(scheme: Scheme, host: impl Into<Bytes>) -> SipUri {
        SipUri {
            scheme,
            user: None,
            password: None,
            host: host.into(),
            port: None,
            params: Params::new(),
            headers: None,
        }
    }

    /// The user part with `%HH` escapes decoded (shares storage when there are none).
    pub fn user_unescaped(&self) -> Option<Bytes> {
        self.user.as_ref().map(unescape)
    }

    /// The `transport` URI parameter.
    pub fn transport(&self) -> Option<&Bytes> {
        self.params.value("transport")
    }

    /// Whether the URI carries `;lr` (a loose router, RFC 3261 §19.1.1).
    pub fn is_loose_router(&self) -> bool {
        self.params.contains("lr")
    }

    /// `host` or `host:port`.
    pub fn host_port(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", String::from_utf8_lossy(&self.host)),
            None => String::from_utf8_lossy(&self.host).into_owned(),
        }
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme.as_str())?;
        if let Some(user) = &self.user {
            f.write_str(&String::from_utf8_lossy(user))?;
            if let Some(password) = &self.password {
                write!(f, ":{}", String::from_utf8_lossy(password))?;
            }
            if self.scheme != Scheme::Tel {
                f.write_str("@")?;
            }
        }
        f.write_str(&String::from_utf8_lossy(&self.host))?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        write!(f, "{}", self.params)?;
        if let Some(headers) = &self.headers {
            write!(f, "?{}", String::from_utf8_lossy(headers))?;
        }
        Ok(())
    }
}

/// Decodes `%HH` escapes; malformed escapes are kept literally. Zero-copy without escapes.
pub fn unescape(raw: &Bytes) -> Bytes {
    if !raw.contains(&b'%') {
        return raw.clone();
    }
    let s = &raw[..];
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if syntax::is_escape_at(s, i) {
            out.push(hex(s[i + 1]) << 4 | hex(s[i + 2]));
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out.into()
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// The position of the `:` ending a syntactically valid scheme.
fn scheme_end(s: &[u8]) -> Result<usize, UriError> {
    match s.first() {
        Some(b) if b.is_ascii_alphabetic() => {}
        _ => return Err(UriError::Malformed("URI must start with a scheme")),
    }
    let mut i = 1;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || matches!(s[i], b'+' | b'-' | b'.')) {
        i += 1;
    }
    if i >= s.len() || s[i] != b':' {
        return Err(UriError::Malformed("URI must start with a scheme"));
    }
    Ok(i)
}

/// Checks that `s` is an absolute URI of any scheme with no whitespace or delimiters inside:
/// what a name-addr may carry (From, To and Contact may use any scheme, RFC 4475 §3.3.4).
pub(crate) fn check_absolute(s: &[u8]) -> Result<(), &'static str> {
    let colon = scheme_end(s).map_err(|_| "URI must start with a scheme")?;
    if colon + 1 >= s.len() {
        return Err("empty URI after scheme");
    }
    if s[colon + 1..]
        .iter()
        .any(|&b| b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"')
    {
        return Err("forbidden character in URI");
    }
    Ok(())
}

/// Scans escaped-or-`allowed` characters of `s[i..end]`; returns the end of the run.
fn scan_escaped(
    s: &[u8],
    mut i: usize,
    end: usize,
    allowed: fn(u8) -> bool,
) -> Result<usize, UriError> {
    while i < end {
        if s[i] == b'%' {
            if !syntax::is_escape_at(&s[..end], i) {
                return Err(UriError::Malformed("invalid %-escape"));
            }
            i += 3;
        } else if allowed(s[i]) {
            i += 1;
        } else {
            break;
        }
    }
    Ok(i)
}

fn parse_sip(uri: &Bytes, scheme: Scheme, start: usize) -> Result<SipUri, UriError> {
    let s = &uri[..];
    let end = s.len();
    let mut i = start;
    let mut user = None;
    let mut password = None;
    // The user part may itself hold `;`, `?` and `/` (RFC 4475 §3.1.1.9), so the first `@`,
    // which it may not hold unescaped, is what ends it.
    if let Some(at) = s[start..]
        .iter()
        .position(|&b| b == b'@')
        .map(|p| start + p)
    {
        let user_end = scan_escaped(s, start, at, syntax::is_user_char)?;
        if user_end == start {
            return Err(UriError::Malformed("empty user part"));
        }
        user = Some(uri.slice(start..user_end));
        if user_end < at {
            if s[user_end] != b':' {
                return Err(UriError::Malformed("invalid character in user part"));
            }
            let pw_end = scan_escaped(s, user_end + 1, at, syntax::is_password_char)?;
            if pw_end != at {
                return Err(UriError::Malformed("invalid character in password"));
            }
            password = Some(uri.slice(user_end + 1..at));
        }
        i = at + 1;
    }
    let (host, port, after) = parse_host_port(uri, i, end)?;
    i = after;
    let (params, after) = params::parse_uri_params(uri, i, end).map_err(UriError::Malformed)?;
    i = after;
    let mut headers = None;
    if i < end && s[i] == b'?' {
        let h_end = scan_escaped(s, i + 1, end, |b| {
            syntax::is_hnv_char(b) || b == b'=' || b == b'&'
        })?;
        if h_end != end || h_end == i + 1 {
            return Err(UriError::Malformed("invalid URI headers"));
        }
        headers = Some(uri.slice(i + 1..end));
        i = end;
    }
    if i != end {
        return Err(UriError::Malformed("unexpected character after host"));
    }
    Ok(SipUri {
        scheme,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

/// Parses `host [":" port]` of `uri[i..end]`.
pub(crate) fn parse_host_port(
    uri: &Bytes,
    i: usize,
    end: usize,
) -> Result<(Bytes, Option<u16>, usize), UriError> {
    let s = &uri[..];
    let host_end = if i < end && s[i] == b'[' {
        let close = s[i..end]
            .iter()
            .position(|&b| b == b']')
            .ok_or(UriError::Malformed("unterminated IPv6 reference"))?
            + i;
        let inner = &s[i + 1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(UriError::Malformed("invalid IPv6 reference"));
        }
        close + 1
    } else {
        let mut j = i;
        while j < end && syntax::is_host_char(s[j]) {
            j += 1;
        }
        j
    };
    if host_end == i {
        return Err(UriError::Malformed("missing host"));
    }
    let host = uri.slice(i..host_end);
    let mut j = host_end;
    let mut port = None;
    if j < end && s[j] == b':' {
        let digits_start = j + 1;
        j = digits_start;
        while j < end && s[j].is_ascii_digit() {
            j += 1;
        }
        let value = syntax::parse_u64(&s[digits_start..j])
            .filter(|&p| j - digits_start <= 5 && p <= u64::from(u16::MAX))
            .ok_or(UriError::Malformed("invalid port"))?;
        port = u16::try_from(value).ok();
    }
    Ok((host, port, j))
}

fn parse_tel(uri: &Bytes, start: usize) -> Result<SipUri, UriError> {
    let s = &uri[..];
    let mut i = start;
    while i < s.len() && is_tel_char(s[i]) {
        i += 1;
    }
    if i == start {
        return Err(UriError::Malformed("empty telephone number"));
    }
    let user = uri.slice(start..i);
    let (params, after) = params::parse_uri_params(uri, i, s.len()).map_err(UriError::Malformed)?;
    if after != s.len() {
        return Err(UriError::Malformed("invalid character in telephone number"));
    }
    Ok(SipUri {
        scheme: Scheme::Tel,
        user: Some(user),
        password: None,
        host: Bytes::new(),
        port: None,
        params,
        headers: None,
    })
}

/// RFC 3966 `global-number-digits` / `local-number-digits` characters.
fn is_tel_char(b: u8) -> bool {
    b.is_ascii_hexdigit() || matches!(b, b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SipUri, UriError> {
        SipUri::parse(&Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn sip_uri_parts() {
        let u = parse("sip:+15551234567@gw1.example.net:5070;user=phone;lr?Subject=hi").unwrap();
        assert_eq!(u.scheme, Scheme::Sip);
        assert_eq!(u.user.as_deref(), Some(&b"+15551234567"[..]));
        assert_eq!(&u.host[..], b"gw1.example.net");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.params.value("user").unwrap(), "phone");
        assert!(u.is_loose_router());
        assert_eq!(u.headers.as_deref(), Some(&b"Subject=hi"[..]));
        assert_eq!(u.host_port(), "gw1.example.net:5070");
        assert_eq!(
            u.to_string(),
            "sip:+15551234567@gw1.example.net:5070;user=phone;lr?Subject=hi"
        );
    }

    #[test]
    fn hosts_without_user_and_ipv6() {
        let u = parse("SIPS:[2001:db8::1]:5061;transport=tls").unwrap();
        assert_eq!(u.scheme, Scheme::Sips);
        assert!(u.user.is_none());
        assert_eq!(&u.host[..], b"[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport().unwrap(), "tls");
        let u = parse("sip:192.0.2.1").unwrap();
        assert_eq!(u.host_port(), "192.0.2.1");
    }

    #[test]
    fn user_parts_with_delimiters_and_escapes() {
        let u = parse("sip:user;par=u%40example.net@example.com").unwrap();
        assert_eq!(u.user.as_deref(), Some(&b"user;par=u%40example.net"[..]));
        assert_eq!(&u.user_unescaped().unwrap()[..], b"user;par=u@example.net");
        let u = parse("sip:sips%3Auser%40example.com@example.net").unwrap();
        assert_eq!(&u.user_unescaped().unwrap()[..], b"sips:user@example.com");
        let u = parse("sip:alice:secret@example.com").unwrap();
        assert_eq!(u.password.as_deref(), Some(&b"secret"[..]));
    }

    #[test]
    fn tel_uris() {
        let u = parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(u.scheme, Scheme::Tel);
        assert_eq!(u.user.as_deref(), Some(&b"+1-201-555-0123"[..]));
        assert!(u.host.is_empty());
        assert_eq!(
            u.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        assert!(parse("tel:").is_err());
        assert!(parse("tel:+1 555").is_err());
    }

    #[test]
    fn unknown_schemes_are_distinguishable() {
        assert_eq!(
            parse("nobodyKnowsThisScheme:opaque").unwrap_err(),
            UriError::UnsupportedScheme
        );
        assert_eq!(
            parse("soap.beep://192.0.2.103:3002")
                .unwrap_err()
                .status_code(),
            416
        );
        for bad in [
            "<sip:user@example.com>",
            "sip:user@example.com>",
            "sip:",
            "sip:user@",
            "sip:user@host:99999",
            "sip:user@host:",
            "sip:us er@host",
            "sip:user@[::1",
            "sip:user@host;=x",
            "sip:%zz@host",
            "sip:host?",
            ":nothing",
            "",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.status_code(), 400, "{bad}: {err}");
        }
    }

    #[test]
    fn unescape_is_lenient_with_bad_escapes() {
        let raw = Bytes::from_static(b"a%20b%zz%4");
        assert_eq!(&unescape(&raw)[..], b"a b%zz%4");
        let plain = Bytes::from_static(b"plain");
        assert_eq!(unescape(&plain).as_ptr(), plain.as_ptr());
    }

    #[test]
    fn absolute_uris_of_any_scheme() {
        assert!(check_absolute(b"isbn:2983792873").is_ok());
        assert!(check_absolute(b"http://www.example.com").is_ok());
        assert!(check_absolute(b" sip:a@b").is_err());
        assert!(check_absolute(b"sip:").is_err());
        assert!(check_absolute(b"sip:a b").is_err());
    }
}
