//! Framing and parsing of SIP messages from datagrams ([`parse_datagram`]) and byte streams
//! ([`StreamFramer`]), zero-copy: start line parts, header names and values and the body are
//! slices of the received buffer (folded header lines are the only values copied).
//!
//! The parser checks framing and line syntax only (RFC 3261 §7); header contents are parsed on
//! demand by [`crate::typed`] and checked as a whole by [`crate::validate`]. When a request is
//! malformed but its start line and the headers a response needs are readable, the error
//! carries that partial request so the caller can still answer 400 (or 505).

use bytes::{Buf, Bytes, BytesMut};

use crate::headers::{HeaderName, Headers, KnownHeader};
use crate::message::{Method, RequestLine, SipMessage, StartLine, StatusLine};
use crate::syntax;

/// Largest datagram accepted: the largest UDP payload.
pub const MAX_DATAGRAM_SIZE: usize = 65_535;

/// Default limit for one message on a stream transport.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Limit on stored header values, bounding the work a hostile message can cause.
pub const MAX_HEADER_VALUES: usize = 1024;

/// What is wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// Nothing but line breaks.
    #[error("empty message")]
    Empty,
    /// Larger than the configured limit.
    #[error("message larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The start line is not a valid request or status line.
    #[error("malformed start line: {0}")]
    StartLine(&'static str),
    /// A SIP version other than 2.0 (answered with 505).
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// A header line is malformed.
    #[error("malformed header on line {line}: {reason}")]
    Header {
        /// 1-based line number in the message.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// More than [`MAX_HEADER_VALUES`] header values.
    #[error("too many header fields")]
    TooManyHeaders,
    /// The header section does not end with an empty line.
    #[error("header section not terminated by an empty line")]
    Unterminated,
    /// Content-Length is not a non-negative decimal number.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// More than one Content-Length header.
    #[error("multiple Content-Length headers")]
    MultipleContentLength,
    /// No Content-Length on a stream transport, where it frames the message.
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// Content-Length announces more bytes than the datagram holds.
    #[error("body shorter than Content-Length ({declared} declared, {available} present)")]
    BodyTruncated {
        /// Content-Length value.
        declared: usize,
        /// Bytes present after the header section.
        available: usize,
    },
}

/// A message that could not be parsed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    kind: ParseErrorKind,
    partial: Option<Box<SipMessage>>,
}

impl ParseError {
    fn bare(kind: ParseErrorKind) -> ParseError {
        ParseError {
            kind,
            partial: None,
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> &ParseErrorKind {
        &self.kind
    }

    /// The readable part of a malformed request — its start line (read leniently if need be)
    /// and headers, no body — when it holds Via, From, To, Call-ID and CSeq, so that
    /// [`crate::response::response_for`] can address an error response. `None` for responses
    /// and for requests too damaged to answer.
    pub fn partial(&self) -> Option<&SipMessage> {
        self.partial.as_deref()
    }

    /// Takes the partial request out of the error.
    pub fn into_partial(self) -> Option<SipMessage> {
        self.partial.map(|m| *m)
    }

    /// The status code for answering the partial request: 505 for an unsupported version,
    /// 513 for an oversized message, 400 otherwise.
    pub fn status_code(&self) -> u16 {
        match self.kind {
            ParseErrorKind::UnsupportedVersion => 505,
            ParseErrorKind::TooLarge { .. } => 513,
            _ => 400,
        }
    }
}

/// Content-Length as seen while reading the header section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Absent,
    Length(usize),
    Invalid,
    Multiple,
}

impl Framing {
    fn error(self) -> Option<ParseErrorKind> {
        match self {
            Framing::Invalid => Some(ParseErrorKind::InvalidContentLength),
            Framing::Multiple => Some(ParseErrorKind::MultipleContentLength),
            _ => None,
        }
    }
}

/// A start line that failed, and the lenient reading of it used for a partial request.
type StartLineError = (ParseErrorKind, Option<StartLine>);

/// The parsed start line and header section.
#[derive(Debug)]
struct Head {
    start: Result<StartLine, StartLineError>,
    headers: Headers,
    header_error: Option<ParseErrorKind>,
    framing: Framing,
    /// Offset just past the empty line ending the header section.
    end: usize,
}

/// Parses one message from a UDP datagram.
///
/// The body is the Content-Length bytes after the header section; bytes beyond it are ignored
/// (RFC 4475 §3.1.1.8). Without Content-Length the body is the rest of the datagram
/// (RFC 3261 §18.3); a Content-Length larger than what is present is an error. Leading CRLFs
/// are skipped; a datagram of nothing else is [`ParseErrorKind::Empty`] (a keep-alive).
pub fn parse_datagram(buf: Bytes) -> Result<SipMessage, ParseError> {
    if buf.len() > MAX_DATAGRAM_SIZE {
        return Err(ParseError::bare(ParseErrorKind::TooLarge {
            limit: MAX_DATAGRAM_SIZE,
        }));
    }
    let start = skip_line_breaks(&buf);
    if start == buf.len() {
        return Err(ParseError::bare(ParseErrorKind::Empty));
    }
    let head = parse_head(&buf, start).map_err(ParseError::bare)?;
    let available = buf.len() - head.end;
    let body = match head.framing {
        Framing::Absent => Ok(buf.slice(head.end..)),
        Framing::Length(declared) if declared <= available => {
            Ok(buf.slice(head.end..head.end + declared))
        }
        Framing::Length(declared) => Err(ParseErrorKind::BodyTruncated {
            declared,
            available,
        }),
        other => Err(other
            .error()
            .unwrap_or(ParseErrorKind::InvalidContentLength)),
    };
    assemble(head, body)
}

/// Whether a datagram is only line breaks: a NAT keep-alive (RFC 5626 §3.5.1), not a message.
pub fn is_keepalive(buf: &[u8]) -> bool {
    !buf.is_empty() && buf.iter().all(|&b| b == b'\r' || b == b'\n')
}

fn skip_line_breaks(s: &[u8]) -> usize {
    s.iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(s.len())
}

/// Builds the message, or the error with the partial request when one can be answered.
fn assemble(head: Head, body: Result<Bytes, ParseErrorKind>) -> Result<SipMessage, ParseError> {
    let Head {
        start,
        headers,
        header_error,
        ..
    } = head;
    let (kind, start) = match (start, header_error, body) {
        (Ok(start), None, Ok(body)) => {
            return Ok(SipMessage {
                start,
                headers,
                body,
            });
        }
        (Err((kind, lenient)), _, _) => (kind, lenient),
        (Ok(start), Some(kind), _) => (kind, Some(start)),
        (Ok(start), None, Err(kind)) => (kind, Some(start)),
    };
    let partial = start
        .filter(|s| matches!(s, StartLine::Request(_)))
        .filter(|_| {
            [
                KnownHeader::Via,
                KnownHeader::From,
                KnownHeader::To,
                KnownHeader::CallId,
                KnownHeader::CSeq,
            ]
            .iter()
            .all(|&h| headers.get_known(h).is_some())
        })
        .map(|start| {
            Box::new(SipMessage {
                start,
                headers,
                body: Bytes::new(),
            })
        });
    Err(ParseError { kind, partial })
}

/// Byte classes for the line scanner: 0 ordinary, 1 line feed, 2 carriage return, 3 other
/// control character.
static LINE_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = 3;
        b += 1;
    }
    t[b'\t' as usize] = 0;
    t[b'\n' as usize] = 1;
    t[b'\r' as usize] = 2;
    t[0x7f] = 3;
    t
};

/// One physical line.
struct Line {
    /// End of the line's content (before CRLF or LF).
    end: usize,
    /// Start of the next line.
    next: usize,
    /// Whether the line holds a control character not escaped by a backslash (a NUL inside a
    /// quoted-pair is legal, RFC 4475 §3.1.1.2) or a bare CR.
    bad_control: bool,
}

/// Whether any of the eight bytes in `word` is below 0x20 or equal to 0x7f (SWAR test).
#[inline]
fn has_control(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let del = word ^ (ONES * 0x7f);
    let is_del = del.wrapping_sub(ONES) & !del & HIGHS;
    below_space | is_del != 0
}

/// Finds the line starting at `from`; `None` when no line feed follows.
fn next_line(s: &[u8], from: usize) -> Option<Line> {
    let mut bad_control = false;
    let mut i = from;
    loop {
        // Skip eight ordinary bytes at a time; line ends and controls need a closer look.
        while let Some(chunk) = s.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if has_control(u64::from_le_bytes(word)) {
                break;
            }
            i += 8;
        }
        let stop = (i + 8).min(s.len());
        while i < stop {
            match LINE_CLASS[usize::from(s[i])] {
                0 => {}
                1 => {
                    let end = if i > from && s[i - 1] == b'\r' {
                        i - 1
                    } else {
                        i
                    };
                    return Some(Line {
                        end,
                        next: i + 1,
                        bad_control,
                    });
                }
                2 => {
                    if s.get(i + 1) != Some(&b'\n') {
                        bad_control = true;
                    }
                }
                _ => {
                    if i == from || s[i - 1] != b'\\' {
                        bad_control = true;
                    }
                }
            }
            i += 1;
        }
        if i >= s.len() {
            return None;
        }
    }
}

/// Reads the start line and header section of `buf` from `start`.
fn parse_head(buf: &Bytes, start: usize) -> Result<Head, ParseErrorKind> {
    let s = &buf[..];
    let first = next_line(s, start).ok_or(ParseErrorKind::Unterminated)?;
    let start_line = if first.bad_control {
        Err((
            ParseErrorKind::StartLine("control character in start line"),
            None,
        ))
    } else {
        parse_start_line(buf, start, first.end)
    };
    let mut headers = Headers::with_capacity(16);
    let mut header_error = None;
    let mut framing = Framing::Absent;
    let mut pos = first.next;
    let mut line_no = 1;
    loop {
        let line = next_line(s, pos).ok_or(ParseErrorKind::Unterminated)?;
        line_no += 1;
        if line.end == pos {
            return Ok(Head {
                start: start_line,
                headers,
                header_error,
                framing,
                end: line.next,
            });
        }
        let header_line = line_no;
        let mut fail = |reason: &'static str| {
            header_error.get_or_insert(ParseErrorKind::Header {
                line: header_line,
                reason,
            });
        };
        if syntax::is_ws(s[pos]) {
            fail("continuation line without a header");
            pos = line.next;
            continue;
        }
        // Folded continuation lines belong to this header.
        let mut value_end = line.end;
        let mut after = line.next;
        let mut folded = false;
        let mut bad_control = line.bad_control;
        while after < s.len() && syntax::is_ws(s[after]) {
            let more = next_line(s, after).ok_or(ParseErrorKind::Unterminated)?;
            line_no += 1;
            bad_control |= more.bad_control;
            value_end = more.end;
            after = more.next;
            folded = true;
        }
        let line_start = pos;
        pos = after;
        let name_end = syntax::scan_token(s, line_start);
        let colon = syntax::skip_ws(s, name_end);
        if name_end == line_start || colon >= value_end || s[colon] != b':' {
            fail("expected a header name followed by a colon");
            continue;
        }
        if bad_control {
            fail("control character in header");
            continue;
        }
        let value = if folded {
            unfold(&s[colon + 1..value_end])
        } else {
            let (a, b) = syntax::trim_range(s, colon + 1, value_end);
            buf.slice(a..b)
        };
        let name = HeaderName::from_token(buf.slice(line_start..name_end));
        if name == HeaderName::Known(KnownHeader::ContentLength) {
            framing = match framing {
                Framing::Absent => content_length(&value),
                _ => Framing::Multiple,
            };
        }
        if headers.len() >= MAX_HEADER_VALUES {
            header_error.get_or_insert(ParseErrorKind::TooManyHeaders);
            continue;
        }
        headers.push_parsed(name, value);
    }
}

/// Joins folded lines: each line break with the white space around it becomes one space
/// (RFC 3261 §7.3.1), and the result is trimmed.
fn unfold(raw: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'\r' || b == b'\n' {
            while out.last().is_some_and(|&c| syntax::is_ws(c)) {
                out.pop();
            }
            while i < raw.len() && (raw[i] == b'\r' || raw[i] == b'\n' || syntax::is_ws(raw[i])) {
                i += 1;
            }
            out.push(b' ');
            continue;
        }
        out.push(b);
        i += 1;
    }
    let (a, b) = syntax::trim_range(&out, 0, out.len());
    out.truncate(b);
    out.drain(..a);
    out.into()
}

fn content_length(value: &[u8]) -> Framing {
    match syntax::parse_u64(value) {
        Some(n) if n <= u64::from(u32::MAX) => {
            usize::try_from(n).map_or(Framing::Invalid, Framing::Length)
        }
        _ => Framing::Invalid,
    }
}

/// How a version string reads.
enum Version {
    Sip20,
    OtherSip,
    NotSip,
}

fn classify_version(v: &[u8]) -> Version {
    if v.len() < 4 || !v[..4].eq_ignore_ascii_case(b"SIP/") {
        return Version::NotSip;
    }
    let rest = &v[4..];
    let Some(dot) = rest.iter().position(|&b| b == b'.') else {
        return Version::NotSip;
    };
    let (major, minor) = (&rest[..dot], &rest[dot + 1..]);
    let digits = |d: &[u8]| !d.is_empty() && d.iter().all(u8::is_ascii_digit);
    if !digits(major) || !digits(minor) {
        return Version::NotSip;
    }
    if rest == b"2.0" {
        Version::Sip20
    } else {
        Version::OtherSip
    }
}

fn parse_start_line(buf: &Bytes, start: usize, end: usize) -> Result<StartLine, StartLineError> {
    let line = &buf[start..end];
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        return parse_status_line(buf, start, end).map_err(|kind| (kind, None));
    }
    parse_request_line(buf, start, end)
}

fn parse_status_line(buf: &Bytes, start: usize, end: usize) -> Result<StartLine, ParseErrorKind> {
    let s = &buf[..end];
    let version_end = s[start..]
        .iter()
        .position(|&b| b == b' ')
        .map_or(end, |p| start + p);
    match classify_version(&s[start..version_end]) {
        Version::Sip20 => {}
        Version::OtherSip => return Err(ParseErrorKind::UnsupportedVersion),
        Version::NotSip => return Err(ParseErrorKind::StartLine("invalid SIP version")),
    }
    let code_start = version_end + 1;
    let code_end = code_start + 3;
    if code_end > end
        || !s[code_start..code_end].iter().all(u8::is_ascii_digit)
        || (code_end < end && s[code_end] != b' ')
    {
        return Err(ParseErrorKind::StartLine(
            "status code must be three digits",
        ));
    }
    let code = s[code_start..code_end]
        .iter()
        .fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    if !(100..=699).contains(&code) {
        return Err(ParseErrorKind::StartLine("status code out of range"));
    }
    // A missing space before an empty reason phrase is tolerated.
    let reason = if code_end < end {
        buf.slice(code_end + 1..end)
    } else {
        Bytes::new()
    };
    Ok(StartLine::Response(StatusLine { code, reason }))
}

fn parse_request_line(buf: &Bytes, start: usize, end: usize) -> Result<StartLine, StartLineError> {
    let s = &buf[..end];
    // Whitespace-separated words, remembered as ranges.
    let mut words: [(usize, usize); 3] = [(0, 0); 3];
    let mut count = 0usize;
    let mut i = start;
    while i < end {
        i = syntax::skip_ws(s, i);
        if i >= end {
            break;
        }
        let w = i;
        while i < end && !syntax::is_ws(s[i]) {
            i += 1;
        }
        // Only the first word, the last word and the span between matter.
        if count < 2 {
            words[count] = (w, i);
        } else {
            words[2] = (w, i);
        }
        count += 1;
    }
    if count < 3 {
        return Err((
            ParseErrorKind::StartLine("request line needs a method, a Request-URI and a version"),
            None,
        ));
    }
    let (method, uri_start, version) = (words[0], words[1].0, words[2]);
    if !syntax::is_token_str(&s[method.0..method.1]) {
        return Err((ParseErrorKind::StartLine("invalid method"), None));
    }
    let (_, uri_end) = syntax::trim_range(s, uri_start, version.0);
    let lenient = StartLine::Request(RequestLine {
        method: Method::from_bytes(&buf.slice(method.0..method.1)),
        uri: buf.slice(uri_start..uri_end),
    });
    match classify_version(&s[version.0..version.1]) {
        Version::Sip20 => {}
        Version::OtherSip => return Err((ParseErrorKind::UnsupportedVersion, Some(lenient))),
        Version::NotSip => {
            return Err((ParseErrorKind::StartLine("invalid SIP version"), None));
        }
    }
    // RFC 3261 §7.1: exactly one SP between the elements and none around them
    // (RFC 4475 §3.1.2.8 - §3.1.2.10).
    let strict = count == 3
        && method.0 == start
        && s[method.1] == b' '
        && uri_start == method.1 + 1
        && s[uri_end] == b' '
        && version.0 == uri_end + 1
        && version.1 == end;
    if !strict {
        return Err((
            ParseErrorKind::StartLine("request line elements must be separated by single spaces"),
            Some(lenient),
        ));
    }
    Ok(lenient)
}

/// Incremental framer for stream transports (TCP, TLS): feed bytes with [`push`], take
/// complete messages with [`next_message`].
///
/// Content-Length is required to frame a message. Line breaks between messages (keep-alives)
/// are skipped. A framing failure — missing or invalid Content-Length, or a message beyond the
/// size limit — leaves the stream impossible to resynchronise: it is reported once, then the
/// framer yields nothing more ([`is_failed`]) and the connection should be closed. Other
/// errors concern one message only and framing continues after it.
///
/// [`push`]: StreamFramer::push
/// [`next_message`]: StreamFramer::next_message
/// [`is_failed`]: StreamFramer::is_failed
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    max_size: usize,
    /// How far the search for the end of the header section has got.
    scanned: usize,
    /// A header section already read, waiting for its body.
    pending: Option<(Head, Bytes, usize)>,
    failed: bool,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

impl StreamFramer {
    /// A framer refusing messages larger than `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> StreamFramer {
        StreamFramer {
            buf: BytesMut::with_capacity(4096),
            max_size: max_message_size,
            scanned: 0,
            pending: None,
            failed: false,
        }
    }

    /// Appends received bytes. Ignored once the framer has failed.
    pub fn push(&mut self, data: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes received but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.pending.as_ref().map_or(0, |(_, head, _)| head.len())
    }

    /// Whether framing was lost; no further messages will be produced.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The next complete message, `None` when more bytes are needed (or after a failure).
    pub fn next_message(&mut self) -> Option<Result<SipMessage, ParseError>> {
        if self.failed {
            return None;
        }
        if self.pending.is_none() {
            let skip = skip_line_breaks(&self.buf);
            self.buf.advance(skip);
            self.scanned = self.scanned.saturating_sub(skip);
            if self.buf.is_empty() {
                return None;
            }
            let Some(head_len) = find_head_end(&self.buf, self.scanned) else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_size {
                    return Some(Err(self.fail(
                        ParseErrorKind::TooLarge {
                            limit: self.max_size,
                        },
                        None,
                    )));
                }
                return None;
            };
            self.scanned = 0;
            let head_bytes = self.buf.split_to(head_len).freeze();
            let head = match parse_head(&head_bytes, 0) {
                Ok(head) => head,
                Err(kind) => return Some(Err(self.fail(kind, None))),
            };
            let body_len = match head.framing {
                Framing::Length(n) => n,
                Framing::Absent => {
                    return Some(Err(
                        self.fail(ParseErrorKind::MissingContentLength, Some(head))
                    ));
                }
                other => {
                    let kind = other
                        .error()
                        .unwrap_or(ParseErrorKind::InvalidContentLength);
                    return Some(Err(self.fail(kind, Some(head))));
                }
            };
            if head_len.saturating_add(body_len) > self.max_size {
                let limit = self.max_size;
                return Some(Err(
                    self.fail(ParseErrorKind::TooLarge { limit }, Some(head))
                ));
            }
            self.pending = Some((head, head_bytes, body_len));
        }
        let body_len = self.pending.as_ref().map_or(0, |p| p.2);
        if self.buf.len() < body_len {
            return None;
        }
        let (head, _, _) = self.pending.take()?;
        let body = self.buf.split_to(body_len).freeze();
        Some(assemble(head, Ok(body)))
    }

    fn fail(&mut self, kind: ParseErrorKind, head: Option<Head>) -> ParseError {
        self.failed = true;
        self.buf = BytesMut::new();
        self.pending = None;
        match head {
            Some(head) => match assemble(head, Err(kind.clone())) {
                Err(mut e) => {
                    // The framing error is what the peer must hear about.
                    e.kind = kind;
                    e
                }
                Ok(_) => ParseError::bare(kind),
            },
            None => ParseError::bare(kind),
        }
    }
}

/// The length of the header section (through its empty line), searching from `from`.
fn find_head_end(s: &[u8], from: usize) -> Option<usize> {
    let mut i = from.saturating_sub(3);
    while let Some(p) = s[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        match s.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') if s.get(nl + 2) == Some(&b'\n') => return Some(nl + 3),
            _ => {}
        }
        i = nl + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn swar_control_test_matches_the_byte_test() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut word = [b'a'; 8];
                word[pos] = b;
                let expected = b < 0x20 || b == 0x7f;
                assert_eq!(
                    has_control(u64::from_le_bytes(word)),
                    expected,
                    "{b:#x} at {pos}"
                );
            }
        }
        assert!(!has_control(u64::from_le_bytes(*b"\xff\x80 ~!aZ0")));
    }

    /// The byte-at-a-time definition `next_line` must agree with.
    fn naive_next_line(s: &[u8], from: usize) -> Option<(usize, usize, bool)> {
        let nl = s[from..].iter().position(|&b| b == b'\n')? + from;
        let end = if nl > from && s[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        };
        let bad = (from..end).any(|i| {
            let b = s[i];
            let control = (b < 0x20 && b != b'\t') || b == 0x7f;
            control && (b == b'\r' || i == from || s[i - 1] != b'\\')
        });
        Some((end, nl + 1, bad))
    }

    #[test]
    fn line_scanner_agrees_with_the_naive_definition() {
        let mut rng = StdRng::seed_from_u64(11);
        let alphabet = b"ab \t\r\n\\\0\x7f\x01~\xc3";
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let s: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let from = rng.random_range(0..=len);
            let fast = next_line(&s, from).map(|l| (l.end, l.next, l.bad_control));
            assert_eq!(fast, naive_next_line(&s, from), "{s:?} from {from}");
        }
    }

    #[test]
    fn unfolding_collapses_breaks_and_surrounding_space() {
        assert_eq!(&unfold(b" a \r\n  b\r\n\tc ")[..], b"a b c");
        assert_eq!(&unfold(b"x\n y")[..], b"x y");
    }
}
