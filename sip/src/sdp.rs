//! SDP (RFC 8866, formerly RFC 4566) parsing, printing and rewriting.
//!
//! A description is kept as its lines, in order: the session-level lines, then one block per
//! `m=` section. Lines this module has no type for (unknown attributes, `b=`, `k=`, …) survive
//! a parse/print round trip untouched. The lines a media relay depends on — `o=`, `c=`, `m=`
//! and `a=rtcp` (RFC 3605) — are validated when parsing, so a description that parses can be
//! rewritten without further failure. Printing always ends lines with CRLF; parsing also
//! accepts bare LF.

use std::fmt;
use std::net::IpAddr;

/// Why a body is not an acceptable SDP.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The body has no lines.
    #[error("SDP is empty")]
    Empty,
    /// The body is not UTF-8 text.
    #[error("SDP is not valid UTF-8 (line {line})")]
    NotUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// A line is not of the form `<type>=<value>`.
    #[error("SDP line {line} is not of the form <type>=<value>")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
    },
    /// The first line is not `v=`.
    #[error("SDP must start with a v= line")]
    MissingVersion,
    /// `v=` is not 0.
    #[error("unsupported SDP version {0:?} (expected 0)")]
    UnsupportedVersion(String),
    /// There is no `o=` line.
    #[error("SDP has no o= line")]
    MissingOrigin,
    /// A typed line does not follow its grammar.
    #[error("SDP line {line}: invalid {kind}= line: {reason}")]
    InvalidLine {
        /// 1-based line number.
        line: usize,
        /// The line type.
        kind: char,
        /// What is wrong.
        reason: &'static str,
    },
}

/// One `<type>=<value>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    kind: char,
    value: String,
}

impl Line {
    /// A line of type `kind` with `value` (which must not contain line breaks).
    pub fn new(kind: char, value: impl Into<String>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }

    /// The type letter.
    pub fn kind(&self) -> char {
        self.kind
    }

    /// Everything after the `=`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The attribute, if this is an `a=` line.
    pub fn attribute(&self) -> Option<Attribute<'_>> {
        (self.kind == 'a').then(|| Attribute::parse(&self.value))
    }
}

/// An `a=<name>[:<value>]` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute name.
    pub name: &'a str,
    /// The value after the `:`, if any.
    pub value: Option<&'a str>,
}

impl<'a> Attribute<'a> {
    fn parse(s: &'a str) -> Self {
        match s.split_once(':') {
            Some((name, value)) => Self {
                name,
                value: Some(value),
            },
            None => Self {
                name: s,
                value: None,
            },
        }
    }
}

/// The `o=` line: `<username> <sess-id> <sess-version> <nettype> <addrtype> <address>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Login of the originating user, `-` when none.
    pub username: String,
    /// Session identifier (digits; may exceed 64 bits, so kept as text).
    pub session_id: String,
    /// Session version (digits).
    pub session_version: String,
    /// Network type, `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// Address or host name of the originator.
    pub address: String,
}

impl Origin {
    /// Parses the value of an `o=` line.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let fields: Vec<&str> = value.split_ascii_whitespace().collect();
        let [username, id, version, net, addr_type, address] = fields.as_slice() else {
            return Err("expected 6 fields");
        };
        if !id.bytes().all(|b| b.is_ascii_digit()) || !version.bytes().all(|b| b.is_ascii_digit()) {
            return Err("session id and version must be numeric");
        }
        Ok(Self {
            username: (*username).to_owned(),
            session_id: (*id).to_owned(),
            session_version: (*version).to_owned(),
            net_type: (*net).to_owned(),
            addr_type: (*addr_type).to_owned(),
            address: (*address).to_owned(),
        })
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.net_type,
            self.addr_type,
            self.address
        )
    }
}

/// A `c=` line: `<nettype> <addrtype> <connection-address>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Network type, `IN`.
    pub net_type: String,
    /// `IP4` or `IP6`.
    pub addr_type: String,
    /// The address, possibly with `/ttl` or `/count` for multicast.
    pub address: String,
}

impl Connection {
    /// An `IN IP4|IP6 <ip>` connection.
    pub fn for_ip(ip: IpAddr) -> Self {
        Self {
            net_type: "IN".to_owned(),
            addr_type: addr_type(ip).to_owned(),
            address: ip.to_string(),
        }
    }

    /// Parses the value of a `c=` line.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let fields: Vec<&str> = value.split_ascii_whitespace().collect();
        let [net, addr_type, address] = fields.as_slice() else {
            return Err("expected 3 fields");
        };
        Ok(Self {
            net_type: (*net).to_owned(),
            addr_type: (*addr_type).to_owned(),
            address: (*address).to_owned(),
        })
    }

    /// The address as an IP, without any multicast suffix; `None` for host names.
    pub fn ip(&self) -> Option<IpAddr> {
        let host = self.address.split('/').next().unwrap_or_default();
        host.parse().ok()
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.net_type, self.addr_type, self.address)
    }
}

/// The `m=` line: `<media> <port>[/<count>] <proto> <fmt> ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// `audio`, `video`, `image`, `application`, …
    pub media_type: String,
    /// Transport port; 0 marks a rejected or disabled stream.
    pub port: u16,
    /// The `/<number of ports>` suffix, if any.
    pub port_count: Option<u16>,
    /// Transport protocol, e.g. `RTP/AVP`.
    pub proto: String,
    /// Media formats (RTP payload types for RTP protocols).
    pub formats: Vec<String>,
}

impl Media {
    /// Parses the value of an `m=` line.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let mut fields = value.split_ascii_whitespace();
        let media_type = fields.next().ok_or("missing media type")?;
        let port_field = fields.next().ok_or("missing port")?;
        let proto = fields.next().ok_or("missing protocol")?;
        let (port, port_count) = match port_field.split_once('/') {
            Some((p, n)) => (p, Some(n.parse::<u16>().map_err(|_| "invalid port count")?)),
            None => (port_field, None),
        };
        let port = port.parse::<u16>().map_err(|_| "invalid port")?;
        Ok(Self {
            media_type: media_type.to_owned(),
            port,
            port_count,
            proto: proto.to_owned(),
            formats: fields.map(str::to_owned).collect(),
        })
    }

    /// Whether the protocol is RTP-based (`RTP/AVP`, `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`, …).
    pub fn is_rtp(&self) -> bool {
        self.proto
            .split('/')
            .any(|part| part.eq_ignore_ascii_case("RTP"))
    }
}

impl fmt::Display for Media {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.media_type, self.port)?;
        if let Some(n) = self.port_count {
            write!(f, "/{n}")?;
        }
        write!(f, " {}", self.proto)?;
        for fmt_ in &self.formats {
            write!(f, " {fmt_}")?;
        }
        Ok(())
    }
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtcpAttribute {
    /// The RTCP port.
    pub port: u16,
    /// The RTCP address, when it differs from the media's.
    pub connection: Option<Connection>,
}

impl RtcpAttribute {
    /// Parses the value of an `a=rtcp:` attribute.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let value = value.trim();
        let (port, rest) = match value.split_once(char::is_whitespace) {
            Some((p, rest)) => (p, Some(rest)),
            None => (value, None),
        };
        let port = port.parse::<u16>().map_err(|_| "invalid port")?;
        let connection = rest
            .map(|r| Connection::parse(r).map_err(|_| "invalid address part"))
            .transpose()?;
        Ok(Self { port, connection })
    }
}

impl fmt::Display for RtcpAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.port)?;
        if let Some(c) = &self.connection {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpMap {
    /// The payload type number.
    pub payload_type: u8,
    /// Encoding name, e.g. `PCMU`, `opus`, `telephone-event`.
    pub encoding: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Encoding parameters (channel count for audio).
    pub encoding_params: Option<String>,
}

impl RtpMap {
    /// Parses the value of an `a=rtpmap:` attribute.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        let (pt, rest) = value
            .trim()
            .split_once(char::is_whitespace)
            .ok_or("missing encoding")?;
        let payload_type = pt.parse::<u8>().map_err(|_| "invalid payload type")?;
        if payload_type > 127 {
            return Err("payload type above 127");
        }
        let mut parts = rest.trim().splitn(3, '/');
        let encoding = parts
            .next()
            .filter(|e| !e.is_empty())
            .ok_or("missing encoding")?;
        let clock_rate = parts
            .next()
            .ok_or("missing clock rate")?
            .parse::<u32>()
            .map_err(|_| "invalid clock rate")?;
        Ok(Self {
            payload_type,
            encoding: encoding.to_owned(),
            clock_rate,
            encoding_params: parts.next().map(str::to_owned),
        })
    }
}

/// Media direction attributes (RFC 3264 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv` (the default).
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl Direction {
    fn from_attribute(name: &str) -> Option<Self> {
        match name {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }

    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// One `m=` section and the lines under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaDescription {
    media: Media,
    lines: Vec<Line>,
}

impl MediaDescription {
    /// A section with just its `m=` line.
    pub fn new(media: Media) -> Self {
        Self {
            media,
            lines: Vec::new(),
        }
    }

    /// The `m=` line.
    pub fn media(&self) -> &Media {
        &self.media
    }

    /// The lines after `m=`, in order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Sets the transport port of the `m=` line.
    pub fn set_port(&mut self, port: u16) {
        self.media.port = port;
    }

    /// Sets the transport protocol of the `m=` line.
    pub fn set_protocol(&mut self, protocol: &str) {
        protocol.clone_into(&mut self.media.proto);
    }

    /// Sets the format list of the `m=` line.
    pub fn set_formats(&mut self, formats: Vec<String>) {
        self.media.formats = formats;
    }

    /// The media-level `c=` line, if any.
    pub fn connection(&self) -> Option<Connection> {
        connection_in(&self.lines)
    }

    /// Points every media-level `c=` line at `ip`; returns whether there was one.
    pub fn set_connection_address(&mut self, ip: IpAddr) -> bool {
        set_connection_in(&mut self.lines, ip)
    }

    /// Sets the media-level connection, inserting a `c=` line where RFC 8866 orders it (after
    /// `m=` and any `i=`) when there is none.
    pub fn set_connection(&mut self, connection: Connection) {
        if let Some(line) = self.lines.iter_mut().find(|l| l.kind == 'c') {
            line.value = connection.to_string();
            return;
        }
        let at = self.lines.iter().take_while(|l| l.kind == 'i').count();
        self.lines
            .insert(at, Line::new('c', connection.to_string()));
    }

    /// The media-level attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'_>> {
        self.lines.iter().filter_map(Line::attribute)
    }

    /// The value of the first attribute called `name`: `Some(None)` for a flag attribute,
    /// `None` when absent.
    pub fn attribute(&self, name: &str) -> Option<Option<&str>> {
        self.attributes().find(|a| a.name == name).map(|a| a.value)
    }

    /// Whether an attribute called `name` is present.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attribute(name).is_some()
    }

    /// Appends `a=<name>[:<value>]`.
    pub fn push_attribute(&mut self, name: &str, value: Option<&str>) {
        let text = match value {
            Some(v) => format!("{name}:{v}"),
            None => name.to_owned(),
        };
        self.lines.push(Line::new('a', text));
    }

    /// Removes the attributes for which `remove` returns true; returns how many went.
    pub fn remove_attributes(&mut self, remove: impl Fn(&Attribute<'_>) -> bool) -> usize {
        remove_attributes_in(&mut self.lines, remove)
    }

    /// The `a=rtcp` attribute (validated while parsing).
    pub fn rtcp(&self) -> Option<RtcpAttribute> {
        self.attribute("rtcp")
            .flatten()
            .and_then(|v| RtcpAttribute::parse(v).ok())
    }

    /// Rewrites the `a=rtcp` attribute's port, and its address (if it carries one) to `ip`.
    /// Returns whether the attribute was present.
    pub fn set_rtcp(&mut self, port: u16, ip: Option<IpAddr>) -> bool {
        let mut found = false;
        for line in &mut self.lines {
            let Some(attr) = line.attribute() else {
                continue;
            };
            if attr.name != "rtcp" {
                continue;
            }
            let Some(mut rtcp) = attr.value.and_then(|v| RtcpAttribute::parse(v).ok()) else {
                continue;
            };
            rtcp.port = port;
            if let (Some(conn), Some(ip)) = (&mut rtcp.connection, ip) {
                *conn = Connection::for_ip(ip);
            }
            line.value = format!("rtcp:{rtcp}");
            found = true;
        }
        found
    }

    /// Whether `a=rtcp-mux` (RFC 5761) is present.
    pub fn rtcp_mux(&self) -> bool {
        self.has_attribute("rtcp-mux")
    }

    /// The valid `a=rtpmap` attributes.
    pub fn rtpmaps(&self) -> Vec<RtpMap> {
        self.attributes()
            .filter(|a| a.name == "rtpmap")
            .filter_map(|a| a.value.and_then(|v| RtpMap::parse(v).ok()))
            .collect()
    }

    /// The media-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.lines)
    }

    fn write_to(&self, out: &mut String) {
        out.push_str("m=");
        out.push_str(&self.media.to_string());
        out.push_str("\r\n");
        write_lines(&self.lines, out);
    }
}

/// A parsed session description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDescription {
    session: Vec<Line>,
    media: Vec<MediaDescription>,
}

impl SessionDescription {
    /// Parses and validates an SDP body.
    pub fn parse(input: &[u8]) -> Result<Self, SdpError> {
        let mut session: Vec<Line> = Vec::new();
        let mut media: Vec<MediaDescription> = Vec::new();
        let mut seen_any = false;
        let mut seen_origin = false;
        for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
            let number = index + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(|b| *b == b' ' || *b == b'\t') {
                continue;
            }
            let text = std::str::from_utf8(raw).map_err(|_| SdpError::NotUtf8 { line: number })?;
            let mut chars = text.chars();
            let (Some(kind), Some('=')) = (chars.next(), chars.next()) else {
                return Err(SdpError::MalformedLine { line: number });
            };
            if !kind.is_ascii_alphabetic() {
                return Err(SdpError::MalformedLine { line: number });
            }
            let value = &text[2..];
            let invalid = |reason| SdpError::InvalidLine {
                line: number,
                kind,
                reason,
            };
            if !seen_any {
                if kind != 'v' {
                    return Err(SdpError::MissingVersion);
                }
                if value.trim() != "0" {
                    return Err(SdpError::UnsupportedVersion(value.to_owned()));
                }
                seen_any = true;
                session.push(Line::new(kind, value));
                continue;
            }
            match kind {
                'm' => {
                    let m = Media::parse(value).map_err(invalid)?;
                    media.push(MediaDescription::new(m));
                    continue;
                }
                'o' => {
                    if !media.is_empty() {
                        return Err(invalid("o= inside a media section"));
                    }
                    Origin::parse(value).map_err(invalid)?;
                    seen_origin = true;
                }
                'c' => {
                    Connection::parse(value).map_err(invalid)?;
                }
                'a' => {
                    let attr = Attribute::parse(value);
                    if attr.name == "rtcp" {
                        RtcpAttribute::parse(attr.value.unwrap_or_default()).map_err(invalid)?;
                    }
                }
                _ => {}
            }
            let line = Line::new(kind, value);
            match media.last_mut() {
                Some(section) => section.lines.push(line),
                None => session.push(line),
            }
        }
        if !seen_any {
            return Err(SdpError::Empty);
        }
        if !seen_origin {
            return Err(SdpError::MissingOrigin);
        }
        Ok(Self { session, media })
    }

    /// The session-level lines, `v=` first.
    pub fn session_lines(&self) -> &[Line] {
        &self.session
    }

    /// The media sections, in order.
    pub fn media(&self) -> &[MediaDescription] {
        &self.media
    }

    /// The media sections, for rewriting.
    pub fn media_mut(&mut self) -> &mut [MediaDescription] {
        &mut self.media
    }

    /// The `o=` line (present and valid in any parsed description).
    pub fn origin(&self) -> Option<Origin> {
        self.session
            .iter()
            .find(|l| l.kind == 'o')
            .and_then(|l| Origin::parse(&l.value).ok())
    }

    /// Replaces the `o=` line. Returns whether there was one.
    pub fn set_origin(&mut self, origin: &Origin) -> bool {
        match self.session.iter_mut().find(|l| l.kind == 'o') {
            Some(line) => {
                line.value = origin.to_string();
                true
            }
            None => false,
        }
    }

    /// Points the `o=` address at `ip`. Returns whether there was an `o=` line.
    pub fn set_origin_address(&mut self, ip: IpAddr) -> bool {
        for line in &mut self.session {
            if line.kind != 'o' {
                continue;
            }
            if let Ok(mut origin) = Origin::parse(&line.value) {
                origin.addr_type = addr_type(ip).to_owned();
                origin.address = ip.to_string();
                line.value = origin.to_string();
                return true;
            }
        }
        false
    }

    /// The session-level `c=` line, if any.
    pub fn connection(&self) -> Option<Connection> {
        connection_in(&self.session)
    }

    /// Points the session-level `c=` line at `ip`; returns whether there was one.
    pub fn set_connection_address(&mut self, ip: IpAddr) -> bool {
        set_connection_in(&mut self.session, ip)
    }

    /// The connection that applies to media section `index`: its own or the session's.
    pub fn media_connection(&self, index: usize) -> Option<Connection> {
        self.media
            .get(index)
            .and_then(MediaDescription::connection)
            .or_else(|| self.connection())
    }

    /// The session-level attributes, in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'_>> {
        self.session.iter().filter_map(Line::attribute)
    }

    /// Appends a session-level `a=<name>[:<value>]` (after the lines already there).
    pub fn push_attribute(&mut self, name: &str, value: Option<&str>) {
        let text = match value {
            Some(v) => format!("{name}:{v}"),
            None => name.to_owned(),
        };
        self.session.push(Line::new('a', text));
    }

    /// Removes session-level attributes for which `remove` returns true; returns the count.
    pub fn remove_attributes(&mut self, remove: impl Fn(&Attribute<'_>) -> bool) -> usize {
        remove_attributes_in(&mut self.session, remove)
    }

    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_in(&self.session)
    }

    /// The direction in force for media section `index`: its own attribute, else the
    /// session's, else `sendrecv`.
    pub fn media_direction(&self, index: usize) -> Direction {
        self.media
            .get(index)
            .and_then(MediaDescription::direction)
            .or_else(|| self.direction())
            .unwrap_or(Direction::SendRecv)
    }

    /// Prints the description with CRLF line endings.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_lines(&self.session, &mut out);
        for m in &self.media {
            m.write_to(&mut out);
        }
        f.write_str(&out)
    }
}

fn addr_type(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IP4" } else { "IP6" }
}

fn write_lines(lines: &[Line], out: &mut String) {
    for line in lines {
        out.push(line.kind);
        out.push('=');
        out.push_str(&line.value);
        out.push_str("\r\n");
    }
}

fn connection_in(lines: &[Line]) -> Option<Connection> {
    lines
        .iter()
        .find(|l| l.kind == 'c')
        .and_then(|l| Connection::parse(&l.value).ok())
}

fn set_connection_in(lines: &mut [Line], ip: IpAddr) -> bool {
    let mut found = false;
    for line in lines.iter_mut().filter(|l| l.kind == 'c') {
        let net_type = Connection::parse(&line.value)
            .map(|c| c.net_type)
            .unwrap_or_else(|_| "IN".to_owned());
        let connection = Connection {
            net_type,
            ..Connection::for_ip(ip)
        };
        line.value = connection.to_string();
        found = true;
    }
    found
}

fn remove_attributes_in(lines: &mut Vec<Line>, remove: impl Fn(&Attribute<'_>) -> bool) -> usize {
    let before = lines.len();
    lines.retain(|l| l.attribute().is_none_or(|a| !remove(&a)));
    before - lines.len()
}

fn direction_in(lines: &[Line]) -> Option<Direction> {
    lines
        .iter()
        .filter_map(Line::attribute)
        .find_map(|a| Direction::from_attribute(a.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\n\
        o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com\r\n\
        s=-\r\n\
        c=IN IP4 192.0.2.10\r\n\
        t=0 0\r\n\
        a=tool:x-phone 1.0\r\n\
        m=audio 49170 RTP/AVP 0 8 97 101\r\n\
        b=AS:80\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:97 iLBC/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\n\
        a=rtcp:53020 IN IP4 192.0.2.11\r\n\
        a=x-vendor-thing:keep me\r\n\
        a=sendrecv\r\n\
        m=video 51372 RTP/AVPF 99\r\n\
        c=IN IP4 192.0.2.12\r\n\
        a=rtpmap:99 H264/90000\r\n\
        a=rtcp-mux\r\n\
        a=recvonly\r\n";

    fn offer() -> SessionDescription {
        SessionDescription::parse(OFFER.as_bytes()).unwrap()
    }

    #[test]
    fn round_trips_byte_for_byte() {
        assert_eq!(offer().to_string(), OFFER);
        assert_eq!(offer().to_bytes(), OFFER.as_bytes());
    }

    #[test]
    fn accepts_bare_lf_and_prints_crlf() {
        let lf = OFFER.replace("\r\n", "\n");
        let parsed = SessionDescription::parse(lf.as_bytes()).unwrap();
        assert_eq!(parsed.to_string(), OFFER);
    }

    #[test]
    fn typed_session_lines() {
        let sdp = offer();
        let o = sdp.origin().unwrap();
        assert_eq!(o.username, "alice");
        assert_eq!(o.session_version, "2890844526");
        assert_eq!(o.address, "host.atlanta.example.com");
        let c = sdp.connection().unwrap();
        assert_eq!(c.ip(), Some("192.0.2.10".parse().unwrap()));
        assert_eq!(
            sdp.attributes().next(),
            Some(Attribute {
                name: "tool",
                value: Some("x-phone 1.0")
            })
        );
        assert_eq!(sdp.direction(), None);
    }

    #[test]
    fn typed_media_lines() {
        let sdp = offer();
        let audio = &sdp.media()[0];
        assert_eq!(audio.media().media_type, "audio");
        assert_eq!(audio.media().port, 49170);
        assert_eq!(audio.media().proto, "RTP/AVP");
        assert_eq!(audio.media().formats, vec!["0", "8", "97", "101"]);
        assert!(audio.media().is_rtp());
        assert_eq!(audio.connection(), None);
        assert_eq!(
            sdp.media_connection(0).and_then(|c| c.ip()),
            Some("192.0.2.10".parse().unwrap())
        );
        let rtcp = audio.rtcp().unwrap();
        assert_eq!(rtcp.port, 53020);
        assert_eq!(
            rtcp.connection.and_then(|c| c.ip()),
            Some("192.0.2.11".parse().unwrap())
        );
        let maps = audio.rtpmaps();
        assert_eq!(maps.len(), 4);
        assert_eq!(
            maps[3],
            RtpMap {
                payload_type: 101,
                encoding: "telephone-event".into(),
                clock_rate: 8000,
                encoding_params: None
            }
        );
        assert_eq!(audio.direction(), Some(Direction::SendRecv));
        assert!(!audio.rtcp_mux());
        let video = &sdp.media()[1];
        assert_eq!(
            sdp.media_connection(1).and_then(|c| c.ip()),
            Some("192.0.2.12".parse().unwrap())
        );
        assert!(video.rtcp_mux());
        assert_eq!(video.rtcp(), None);
        assert_eq!(sdp.media_direction(1), Direction::RecvOnly);
    }

    #[test]
    fn rewrites_for_a_relay() {
        let mut sdp = offer();
        let relay: IpAddr = "203.0.113.5".parse().unwrap();
        assert!(sdp.set_connection_address(relay));
        assert!(sdp.set_origin_address(relay));
        let audio = &mut sdp.media_mut()[0];
        audio.set_port(30000);
        assert!(audio.set_rtcp(30001, Some(relay)));
        let video = &mut sdp.media_mut()[1];
        video.set_port(30002);
        assert!(video.set_connection_address(relay));
        assert!(!video.set_rtcp(30003, Some(relay)));
        let text = sdp.to_string();
        assert!(text.contains("o=alice 2890844526 2890844526 IN IP4 203.0.113.5\r\n"));
        assert!(text.contains("c=IN IP4 203.0.113.5\r\nt=0 0"));
        assert!(text.contains("m=audio 30000 RTP/AVP 0 8 97 101\r\n"));
        assert!(text.contains("a=rtcp:30001 IN IP4 203.0.113.5\r\n"));
        assert!(text.contains("m=video 30002 RTP/AVPF 99\r\nc=IN IP4 203.0.113.5\r\n"));
        // Everything else is untouched.
        assert!(text.contains("a=x-vendor-thing:keep me\r\n"));
        assert!(text.contains("b=AS:80\r\n"));
        assert!(!text.contains("192.0.2."));
        // The result parses again to the same thing.
        assert_eq!(SessionDescription::parse(text.as_bytes()).unwrap(), sdp);
    }

    #[test]
    fn rewrites_to_ipv6() {
        let mut sdp = offer();
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        sdp.set_connection_address(v6);
        sdp.media_mut()[0].set_rtcp(40001, Some(v6));
        let text = sdp.to_string();
        assert!(text.contains("c=IN IP6 2001:db8::7\r\n"));
        assert!(text.contains("a=rtcp:40001 IN IP6 2001:db8::7\r\n"));
    }

    #[test]
    fn short_rtcp_attribute_keeps_its_form() {
        let mut sdp = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
              m=audio 5000 RTP/AVP 0\r\na=rtcp:5001\r\n",
        )
        .unwrap();
        sdp.media_mut()[0].set_rtcp(7001, Some("10.9.9.9".parse().unwrap()));
        assert!(sdp.to_string().ends_with("a=rtcp:7001\r\n"));
    }

    #[test]
    fn inserts_a_media_connection_after_info() {
        let mut sdp = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n\
              m=audio 5000 RTP/AVP 0\r\ni=voice\r\na=sendonly\r\n",
        )
        .unwrap();
        sdp.media_mut()[0].set_connection(Connection::for_ip("10.1.1.1".parse().unwrap()));
        assert!(
            sdp.to_string().ends_with(
                "m=audio 5000 RTP/AVP 0\r\ni=voice\r\nc=IN IP4 10.1.1.1\r\na=sendonly\r\n"
            )
        );
        assert_eq!(sdp.media_direction(0), Direction::SendOnly);
    }

    #[test]
    fn removes_and_adds_attributes() {
        let mut sdp = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abc\r\n\
              m=audio 5000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\n\
              a=candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host\r\na=ice-pwd:x\r\n",
        )
        .unwrap();
        let is_ice = |a: &Attribute<'_>| a.name.starts_with("ice-") || a.name == "candidate";
        assert_eq!(sdp.remove_attributes(is_ice), 1);
        assert_eq!(sdp.media_mut()[0].remove_attributes(is_ice), 2);
        sdp.media_mut()[0].push_attribute("ptime", Some("20"));
        sdp.media_mut()[0].push_attribute("sendrecv", None);
        let text = sdp.to_string();
        assert!(!text.contains("ice"));
        assert!(!text.contains("candidate"));
        assert!(text.ends_with("a=ptime:20\r\na=sendrecv\r\n"));
    }

    #[test]
    fn port_count_and_non_rtp_media() {
        let sdp = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 224.2.1.1/127/3\r\nt=0 0\r\n\
              m=video 49170/2 RTP/AVP 31\r\nm=image 0 udptl t38\r\n",
        )
        .unwrap();
        assert_eq!(sdp.media()[0].media().port_count, Some(2));
        assert_eq!(
            sdp.connection().and_then(|c| c.ip()),
            Some("224.2.1.1".parse().unwrap())
        );
        assert!(!sdp.media()[1].media().is_rtp());
        assert!(
            SessionDescription::parse(b"v=0\r\no=- 1 1 IN IP4 h\r\nm=x 9 UDP/TLS/RTP/SAVPF 1\r\n")
                .unwrap()
                .media()[0]
                .media()
                .is_rtp()
        );
        assert!(sdp.to_string().contains("m=video 49170/2 RTP/AVP 31\r\n"));
    }

    #[test]
    fn malformed_sdp_is_a_clear_error() {
        let cases: &[(&[u8], SdpError)] = &[
            (b"", SdpError::Empty),
            (b"\r\n\r\n", SdpError::Empty),
            (b"o=- 1 1 IN IP4 h\r\n", SdpError::MissingVersion),
            (b"v=1\r\n", SdpError::UnsupportedVersion("1".into())),
            (b"v=0\r\ns=-\r\n", SdpError::MissingOrigin),
            (
                b"v=0\r\nthis is not sdp\r\n",
                SdpError::MalformedLine { line: 2 },
            ),
            (b"v=0\r\n=x\r\n", SdpError::MalformedLine { line: 2 }),
            (b"v=0\r\n1=x\r\n", SdpError::MalformedLine { line: 2 }),
            (b"v=0\r\no=\xff\r\n", SdpError::NotUtf8 { line: 2 }),
            (
                b"v=0\r\no=- 1 IN IP4 h\r\n",
                SdpError::InvalidLine {
                    line: 2,
                    kind: 'o',
                    reason: "expected 6 fields",
                },
            ),
            (
                b"v=0\r\no=- x 1 IN IP4 h\r\n",
                SdpError::InvalidLine {
                    line: 2,
                    kind: 'o',
                    reason: "session id and version must be numeric",
                },
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n",
                SdpError::InvalidLine {
                    line: 3,
                    kind: 'c',
                    reason: "expected 3 fields",
                },
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n",
                SdpError::InvalidLine {
                    line: 3,
                    kind: 'm',
                    reason: "invalid port",
                },
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 5000\r\n",
                SdpError::InvalidLine {
                    line: 3,
                    kind: 'm',
                    reason: "missing protocol",
                },
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 5000 RTP/AVP 0\r\na=rtcp:abc\r\n",
                SdpError::InvalidLine {
                    line: 4,
                    kind: 'a',
                    reason: "invalid port",
                },
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 5000 RTP/AVP 0\r\no=- 1 1 IN IP4 h\r\n",
                SdpError::InvalidLine {
                    line: 4,
                    kind: 'o',
                    reason: "o= inside a media section",
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                SessionDescription::parse(input).as_ref(),
                Err(expected),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let e = SessionDescription::parse(b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4\r\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "SDP line 3: invalid c= line: expected 3 fields"
        );
    }

    #[test]
    fn invalid_rtpmaps_are_skipped_not_fatal() {
        let sdp = SessionDescription::parse(
            b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 5000 RTP/AVP 0 8\r\n\
              a=rtpmap:0 PCMU/8000\r\na=rtpmap:zz nonsense\r\na=rtpmap:8\r\n",
        )
        .unwrap();
        assert_eq!(sdp.media()[0].rtpmaps().len(), 1);
        assert_eq!(RtpMap::parse("200 X/8000"), Err("payload type above 127"));
        assert_eq!(
            RtpMap::parse("111 opus/48000/2").map(|m| m.encoding_params),
            Ok(Some("2".into()))
        );
    }

    #[test]
    fn mutated_descriptions_never_panic() {
        let mut state = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b" =/:\r\n0aIPmcov9";
        for _ in 0..20_000 {
            let mut input = OFFER.as_bytes().to_vec();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % input.len();
                input[at] = alphabet[(next() as usize) % alphabet.len()];
            }
            if let Ok(mut sdp) = SessionDescription::parse(&input) {
                // Whatever parses survives a rewrite and parses again.
                let relay: IpAddr = "203.0.113.5".parse().unwrap();
                sdp.set_connection_address(relay);
                sdp.set_origin_address(relay);
                for m in sdp.media_mut() {
                    m.set_port(1000);
                    m.set_rtcp(1001, Some(relay));
                    let _ = (m.rtpmaps(), m.direction(), m.rtcp());
                }
                SessionDescription::parse(&sdp.to_bytes()).unwrap();
            }
        }
    }
}
