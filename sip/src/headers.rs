//! Header fields kept raw: names resolved once (long and compact forms), values as zero-copy
//! `Bytes` slices of the received message, in their original order.
//!
//! Values of list-valued headers (Via, Route, Contact, Allow, …) are split at top-level commas
//! when stored, one entry per value, so `get("Via")` is the top Via and `remove_first("Via")`
//! pops exactly one hop however the sender grouped them on lines. Everything else stays a
//! single opaque value until a typed view (see [`crate::typed`]) asks for it, so one odd header
//! never fails the whole message.

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::syntax;

/// How a header's values may be grouped on lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ListStyle {
    /// Not a comma-separated list: each line is one value (Date, Authorization, …).
    Single,
    /// A list printed one value per line (Via, Route, Contact, …): per-hop values stay
    /// readable and never mix on a line.
    Lines,
    /// A list of short tokens printed joined on one line (Allow, Supported, …) to keep
    /// messages small.
    Joined,
}

macro_rules! known_headers {
    ($( $variant:ident => $name:literal, $compact:expr, $style:ident; )*) => {
        /// A header field name this crate knows, with its canonical spelling.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum KnownHeader {
            $( #[doc = $name] $variant, )*
        }

        const KNOWN: &[KnownHeader] = &[ $( KnownHeader::$variant, )* ];

        impl KnownHeader {
            /// The canonical (long) name.
            pub const fn name(self) -> &'static str {
                match self { $( KnownHeader::$variant => $name, )* }
            }

            /// The compact form (RFC 3261 §7.3.3 and extensions), if any.
            pub const fn compact(self) -> Option<u8> {
                match self { $( KnownHeader::$variant => $compact, )* }
            }

            pub(crate) fn list_style(self) -> ListStyle {
                match self { $( KnownHeader::$variant => ListStyle::$style, )* }
            }
        }
    };
}

known_headers! {
    Accept => "Accept", None, Joined;
    AcceptContact => "Accept-Contact", Some(b'a'), Lines;
    AcceptEncoding => "Accept-Encoding", None, Joined;
    AcceptLanguage => "Accept-Language", None, Joined;
    AlertInfo => "Alert-Info", None, Lines;
    Allow => "Allow", None, Joined;
    AllowEvents => "Allow-Events", Some(b'u'), Joined;
    AuthenticationInfo => "Authentication-Info", None, Single;
    Authorization => "Authorization", None, Single;
    CallId => "Call-ID", Some(b'i'), Single;
    CallInfo => "Call-Info", None, Lines;
    Contact => "Contact", Some(b'm'), Lines;
    ContentDisposition => "Content-Disposition", None, Single;
    ContentEncoding => "Content-Encoding", Some(b'e'), Joined;
    ContentLanguage => "Content-Language", None, Joined;
    ContentLength => "Content-Length", Some(b'l'), Single;
    ContentType => "Content-Type", Some(b'c'), Single;
    CSeq => "CSeq", None, Single;
    Date => "Date", None, Single;
    ErrorInfo => "Error-Info", None, Lines;
    Event => "Event", Some(b'o'), Single;
    Expires => "Expires", None, Single;
    From => "From", Some(b'f'), Single;
    HistoryInfo => "History-Info", None, Lines;
    Identity => "Identity", Some(b'y'), Single;
    IdentityInfo => "Identity-Info", Some(b'n'), Single;
    InReplyTo => "In-Reply-To", None, Joined;
    MaxForwards => "Max-Forwards", None, Single;
    MimeVersion => "MIME-Version", None, Single;
    MinExpires => "Min-Expires", None, Single;
    MinSe => "Min-SE", None, Single;
    Organization => "Organization", None, Single;
    PAssertedIdentity => "P-Asserted-Identity", None, Lines;
    PPreferredIdentity => "P-Preferred-Identity", None, Lines;
    Path => "Path", None, Lines;
    Priority => "Priority", None, Single;
    Privacy => "Privacy", None, Single;
    ProxyAuthenticate => "Proxy-Authenticate", None, Single;
    ProxyAuthorization => "Proxy-Authorization", None, Single;
    ProxyRequire => "Proxy-Require", None, Joined;
    RAck => "RAck", None, Single;
    Reason => "Reason", None, Lines;
    RecordRoute => "Record-Route", None, Lines;
    ReferTo => "Refer-To", Some(b'r'), Single;
    ReferredBy => "Referred-By", Some(b'b'), Single;
    RejectContact => "Reject-Contact", Some(b'j'), Lines;
    Replaces => "Replaces", None, Single;
    ReplyTo => "Reply-To", None, Single;
    RequestDisposition => "Request-Disposition", Some(b'd'), Joined;
    Require => "Require", None, Joined;
    RetryAfter => "Retry-After", None, Single;
    Route => "Route", None, Lines;
    RSeq => "RSeq", None, Single;
    SecurityClient => "Security-Client", None, Lines;
    SecurityServer => "Security-Server", None, Lines;
    SecurityVerify => "Security-Verify", None, Lines;
    Server => "Server", None, Single;
    ServiceRoute => "Service-Route", None, Lines;
    SessionExpires => "Session-Expires", Some(b'x'), Single;
    Subject => "Subject", Some(b's'), Single;
    SubscriptionState => "Subscription-State", None, Single;
    Supported => "Supported", Some(b'k'), Joined;
    Timestamp => "Timestamp", None, Single;
    To => "To", Some(b't'), Single;
    Unsupported => "Unsupported", None, Joined;
    UserAgent => "User-Agent", None, Single;
    Via => "Via", Some(b'v'), Lines;
    Warning => "Warning", None, Lines;
    WwwAuthenticate => "WWW-Authenticate", None, Single;
}

/// Sort key for name lookup: length, first and last letter (lower case). Cheap to compute
/// and nearly unique among the known names.
const fn lookup_key(name: &[u8]) -> u32 {
    let len = name.len();
    if len == 0 {
        return 0;
    }
    ((len as u32) << 16)
        | ((name[0].to_ascii_lowercase() as u32) << 8)
        | name[len - 1].to_ascii_lowercase() as u32
}

/// The known long names sorted by [`lookup_key`], built at compile time.
static BY_KEY: [(u32, KnownHeader); KNOWN.len()] = {
    let mut table = [(0u32, KnownHeader::Accept); KNOWN.len()];
    let mut i = 0;
    while i < KNOWN.len() {
        table[i] = (lookup_key(KNOWN[i].name().as_bytes()), KNOWN[i]);
        i += 1;
    }
    let mut i = 1;
    while i < table.len() {
        let mut j = i;
        while j > 0 && table[j - 1].0 > table[j].0 {
            let t = table[j - 1];
            table[j - 1] = table[j];
            table[j] = t;
            j -= 1;
        }
        i += 1;
    }
    table
};

/// Compact forms indexed by lower-case letter.
static BY_COMPACT: [Option<KnownHeader>; 26] = {
    let mut table = [None; 26];
    let mut i = 0;
    while i < KNOWN.len() {
        if let Some(c) = KNOWN[i].compact() {
            table[(c - b'a') as usize] = Some(KNOWN[i]);
        }
        i += 1;
    }
    table
};

impl KnownHeader {
    /// The known header named `name` (long or compact form, any case).
    pub fn lookup(name: &[u8]) -> Option<KnownHeader> {
        if let [c] = name {
            let c = c.to_ascii_lowercase();
            return if c.is_ascii_lowercase() {
                BY_COMPACT[usize::from(c - b'a')]
            } else {
                None
            };
        }
        let key = lookup_key(name);
        let start = BY_KEY.partition_point(|(k, _)| *k < key);
        BY_KEY[start..]
            .iter()
            .take_while(|(k, _)| *k == key)
            .map(|&(_, h)| h)
            .find(|h| h.name().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// A header field name: a known header (matched case-insensitively, compact forms folded in)
/// or an extension header kept as received.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HeaderName {
    /// A header this crate knows.
    Known(KnownHeader),
    /// An extension header; the bytes are a SIP token.
    Other(Bytes),
}

impl HeaderName {
    /// Resolves a name given as text (compact forms allowed).
    pub fn from_name(name: &str) -> HeaderName {
        match KnownHeader::lookup(name.as_bytes()) {
            Some(h) => HeaderName::Known(h),
            None => HeaderName::Other(sanitize_name(name.as_bytes())),
        }
    }

    /// Resolves a name cut from a parsed message (already known to be a token).
    pub(crate) fn from_token(name: Bytes) -> HeaderName {
        match KnownHeader::lookup(&name) {
            Some(h) => HeaderName::Known(h),
            None => HeaderName::Other(name),
        }
    }

    /// The canonical spelling: the long form of a known header, the received form otherwise.
    pub fn as_str(&self) -> &str {
        match self {
            HeaderName::Known(h) => h.name(),
            // Token characters are ASCII; the fallback is unreachable for names built here.
            HeaderName::Other(name) => std::str::from_utf8(name).unwrap_or("X-Invalid"),
        }
    }

    /// Whether this name denotes the same header as `other` (case-insensitive).
    pub fn matches(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Known(a), HeaderName::Known(b)) => a == b,
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }

    fn list_style(&self) -> ListStyle {
        match self {
            HeaderName::Known(h) => h.list_style(),
            HeaderName::Other(_) => ListStyle::Single,
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header name to look up, borrowed from the caller: lookups never allocate.
#[derive(Clone, Copy)]
enum NameRef<'a> {
    Known(KnownHeader),
    Other(&'a [u8]),
}

impl<'a> NameRef<'a> {
    fn new(name: &'a str) -> NameRef<'a> {
        match KnownHeader::lookup(name.as_bytes()) {
            Some(h) => NameRef::Known(h),
            None => NameRef::Other(name.as_bytes()),
        }
    }

    fn matches(self, name: &HeaderName) -> bool {
        match (self, name) {
            (NameRef::Known(a), HeaderName::Known(b)) => a == *b,
            (NameRef::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

/// A name from application code: bytes that are not token characters would corrupt the
/// framing of the printed message, so they are replaced by `-`.
fn sanitize_name(name: &[u8]) -> Bytes {
    if name.is_empty() {
        return Bytes::from_static(b"X-Invalid");
    }
    if syntax::is_token_str(name) {
        return Bytes::copy_from_slice(name);
    }
    name.iter()
        .map(|&b| if syntax::is_token(b) { b } else { b'-' })
        .collect::<Vec<u8>>()
        .into()
}

/// A value from application code: CR and LF would start a new header line (header injection),
/// so they become spaces.
fn sanitize_value(value: Bytes) -> Bytes {
    if !value.iter().any(|&b| b == b'\r' || b == b'\n') {
        return value;
    }
    value
        .iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect::<Vec<u8>>()
        .into()
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    name: HeaderName,
    value: Bytes,
}

/// The header fields of a message, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<Entry>,
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// An empty header list with room for `n` values.
    pub fn with_capacity(n: usize) -> Headers {
        Headers {
            entries: Vec::with_capacity(n),
        }
    }

    /// Number of stored values (a list header contributes one per value).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no header fields.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first value of `name` (long or compact form, any case): for Via, the top Via.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        let name = NameRef::new(name);
        self.entries
            .iter()
            .find(|e| name.matches(&e.name))
            .map(|e| &e.value)
    }

    /// Every value of `name` in order, across repeated lines and comma-separated lists
    /// (commas inside quoted strings and `<>` do not split).
    pub fn get_all(&self, name: &str) -> impl Iterator<Item = &Bytes> {
        let name = NameRef::new(name);
        self.entries
            .iter()
            .filter(move |e| name.matches(&e.name))
            .map(|e| &e.value)
    }

    /// How many values `name` has.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Appends a value (a list value with commas is stored as its separate values).
    ///
    /// Names are expected to be tokens and values single-line: a name's non-token characters
    /// become `-` and CR/LF in a value become spaces, so application data can never inject
    /// header lines.
    pub fn push(&mut self, name: &str, value: impl Into<Bytes>) {
        let name = HeaderName::from_name(name);
        let value = sanitize_value(value.into());
        self.push_parsed(name, value);
    }

    /// Inserts a value before the first value of the same header (at the very top when there
    /// is none): how a proxy adds its Via or Record-Route.
    pub fn prepend(&mut self, name: &str, value: impl Into<Bytes>) {
        let name = HeaderName::from_name(name);
        let value = sanitize_value(value.into());
        let at = self
            .entries
            .iter()
            .position(|e| e.name.matches(&name))
            .unwrap_or(0);
        let mut values = Vec::new();
        split_values(&name, value, |v| values.push(v));
        for (i, value) in values.into_iter().enumerate() {
            self.entries.insert(
                at + i,
                Entry {
                    name: name.clone(),
                    value,
                },
            );
        }
    }

    /// Replaces every value of `name` with `value`, keeping the position of the first one.
    pub fn set(&mut self, name: &str, value: impl Into<Bytes>) {
        let name = HeaderName::from_name(name);
        let value = sanitize_value(value.into());
        match self.entries.iter().position(|e| e.name.matches(&name)) {
            Some(at) => {
                self.entries.retain(|e| !e.name.matches(&name));
                self.entries.insert(at, Entry { name, value });
            }
            None => self.entries.push(Entry { name, value }),
        }
    }

    /// Removes every value of `name`; returns how many there were.
    pub fn remove(&mut self, name: &str) -> usize {
        let name = NameRef::new(name);
        let before = self.entries.len();
        self.entries.retain(|e| !name.matches(&e.name));
        before - self.entries.len()
    }

    /// Removes the values of `name` for which `remove` says so; returns how many.
    pub fn remove_where(&mut self, name: &str, mut remove: impl FnMut(&Bytes) -> bool) -> usize {
        let name = NameRef::new(name);
        let before = self.entries.len();
        self.entries
            .retain(|e| !(name.matches(&e.name) && remove(&e.value)));
        before - self.entries.len()
    }

    /// Replaces, in place, each value of `name` for which `rewrite` gives a new one (CR and LF
    /// in it become spaces, as for [`Headers::push`]).
    pub fn rewrite(&mut self, name: &str, mut rewrite: impl FnMut(&Bytes) -> Option<Bytes>) {
        let name = NameRef::new(name);
        for entry in self.entries.iter_mut().filter(|e| name.matches(&e.name)) {
            if let Some(value) = rewrite(&entry.value) {
                entry.value = sanitize_value(value);
            }
        }
    }

    /// Removes and returns the first value of `name` (for Via: the top hop).
    pub fn remove_first(&mut self, name: &str) -> Option<Bytes> {
        let name = NameRef::new(name);
        let at = self.entries.iter().position(|e| name.matches(&e.name))?;
        Some(self.entries.remove(at).value)
    }

    /// Every value with its canonical header name, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.entries.iter().map(|e| (e.name.as_str(), &e.value))
    }

    /// Every value with its resolved name, in order.
    pub fn raw_iter(&self) -> impl Iterator<Item = (&HeaderName, &Bytes)> {
        self.entries.iter().map(|e| (&e.name, &e.value))
    }

    /// The first value of a known header, without resolving a name.
    pub fn get_known(&self, header: KnownHeader) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|e| e.name == HeaderName::Known(header))
            .map(|e| &e.value)
    }

    /// Every value of a known header, without resolving a name.
    pub fn all_known(&self, header: KnownHeader) -> impl Iterator<Item = &Bytes> {
        self.entries
            .iter()
            .filter(move |e| e.name == HeaderName::Known(header))
            .map(|e| &e.value)
    }

    /// Appends a value whose name is already resolved, splitting list values.
    pub(crate) fn push_parsed(&mut self, name: HeaderName, value: Bytes) {
        let entries = &mut self.entries;
        split_values(&name, value, |value| {
            entries.push(Entry {
                name: name.clone(),
                value,
            })
        });
    }

    /// Appends the printed header section (without the final blank line) to `out`.
    /// Content-Length is printed as `content_length` where the first one stood (at the end
    /// when there was none), so a stale value can never frame a body wrongly. Values of
    /// `Joined`-style list headers that follow each other share a line.
    pub(crate) fn encode_into(&self, out: &mut BytesMut, content_length: &[u8]) {
        const CONTENT_LENGTH: HeaderName = HeaderName::Known(KnownHeader::ContentLength);
        let mut length_written = false;
        let mut i = 0;
        while i < self.entries.len() {
            let entry = &self.entries[i];
            i += 1;
            if entry.name == CONTENT_LENGTH {
                if !length_written {
                    out.extend_from_slice(b"Content-Length: ");
                    out.extend_from_slice(content_length);
                    out.extend_from_slice(b"\r\n");
                    length_written = true;
                }
                continue;
            }
            out.extend_from_slice(entry.name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&entry.value);
            if entry.name.list_style() == ListStyle::Joined && joinable(&entry.value) {
                while let Some(next) = self.entries.get(i) {
                    if next.name != entry.name || !joinable(&next.value) {
                        break;
                    }
                    out.extend_from_slice(b", ");
                    out.extend_from_slice(&next.value);
                    i += 1;
                }
            }
            out.extend_from_slice(b"\r\n");
        }
        if !length_written {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(content_length);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Whether a list value can share a line with others and still split back into itself: not
/// empty, and without the quotes, brackets or commas an unbalanced value may carry.
fn joinable(value: &[u8]) -> bool {
    !value.is_empty() && !value.iter().any(|b| matches!(b, b'"' | b'<' | b'>' | b','))
}

/// Calls `f` with each value `value` holds for header `name`: the elements of a list header,
/// or the value itself. An empty or unsplittable (unbalanced quotes/brackets) value is kept
/// whole so that nothing received is silently lost.
fn split_values(name: &HeaderName, value: Bytes, mut f: impl FnMut(Bytes)) {
    if name.list_style() == ListStyle::Single || !value.contains(&b',') {
        f(value);
        return;
    }
    let mut emitted = false;
    let balanced = syntax::split_list(&value, |a, b| {
        emitted = true;
        f(value.slice(a..b));
    });
    if !balanced || !emitted {
        f(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_long_forms_are_the_same_header() {
        let mut h = Headers::new();
        h.push("i", "abc@host");
        h.push("v", "SIP/2.0/UDP a;branch=z9hG4bK1");
        assert_eq!(h.get("Call-ID").unwrap(), "abc@host");
        assert_eq!(h.get("call-id").unwrap(), "abc@host");
        assert_eq!(h.get("I").unwrap(), "abc@host");
        assert_eq!(h.get("VIA").unwrap(), "SIP/2.0/UDP a;branch=z9hG4bK1");
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Call-ID", "Via"]);
    }

    #[test]
    fn every_compact_form_resolves() {
        for (c, long) in [
            ('a', "Accept-Contact"),
            ('b', "Referred-By"),
            ('c', "Content-Type"),
            ('d', "Request-Disposition"),
            ('e', "Content-Encoding"),
            ('f', "From"),
            ('i', "Call-ID"),
            ('j', "Reject-Contact"),
            ('k', "Supported"),
            ('l', "Content-Length"),
            ('m', "Contact"),
            ('n', "Identity-Info"),
            ('o', "Event"),
            ('r', "Refer-To"),
            ('s', "Subject"),
            ('t', "To"),
            ('u', "Allow-Events"),
            ('v', "Via"),
            ('x', "Session-Expires"),
            ('y', "Identity"),
        ] {
            let h = KnownHeader::lookup(c.to_string().as_bytes()).unwrap();
            assert_eq!(h.name(), long, "compact form {c}");
            let h = KnownHeader::lookup(c.to_ascii_uppercase().to_string().as_bytes()).unwrap();
            assert_eq!(h.name(), long);
        }
        assert!(KnownHeader::lookup(b"q").is_none());
        assert!(KnownHeader::lookup(b"").is_none());
    }

    #[test]
    fn list_values_are_split_and_others_are_not() {
        let mut h = Headers::new();
        h.push(
            "Via",
            "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/TCP b;branch=z9hG4bK2",
        );
        h.push("Contact", r#""Doe, John" <sip:j@a>;q=0.5, <sip:x,y@b>"#);
        h.push("Date", "Sat, 15 Oct 2005 04:44:56 GMT");
        h.push("Authorization", r#"Digest username="a", realm="b""#);
        assert_eq!(h.count("Via"), 2);
        assert_eq!(h.get("Via").unwrap(), "SIP/2.0/UDP a;branch=z9hG4bK1");
        let contacts: Vec<_> = h.get_all("m").collect();
        assert_eq!(contacts, [r#""Doe, John" <sip:j@a>;q=0.5"#, "<sip:x,y@b>"]);
        assert_eq!(h.count("Date"), 1);
        assert_eq!(h.count("Authorization"), 1);
    }

    #[test]
    fn prepend_goes_before_the_first_of_its_kind() {
        let mut h = Headers::new();
        h.push("Call-ID", "c");
        h.push("Via", "SIP/2.0/UDP old");
        h.prepend("Via", "SIP/2.0/UDP new");
        h.prepend("Record-Route", "<sip:rr;lr>");
        let all: Vec<_> = h
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect();
        assert_eq!(
            all,
            [
                "Record-Route: <sip:rr;lr>",
                "Call-ID: c",
                "Via: SIP/2.0/UDP new",
                "Via: SIP/2.0/UDP old"
            ]
        );
        assert_eq!(h.remove_first("Via").unwrap(), "SIP/2.0/UDP new");
        assert_eq!(h.get("Via").unwrap(), "SIP/2.0/UDP old");
    }

    #[test]
    fn set_replaces_in_place_and_remove_counts() {
        let mut h = Headers::new();
        h.push("To", "a");
        h.push("Max-Forwards", "70");
        h.push("X-Foo", "1");
        h.push("x-foo", "2");
        h.set("max-forwards", "69");
        assert_eq!(
            h.iter().nth(1).unwrap(),
            ("Max-Forwards", &Bytes::from_static(b"69"))
        );
        h.set("X-FOO", "3");
        assert_eq!(h.get_all("X-Foo").collect::<Vec<_>>(), ["3"]);
        assert_eq!(h.remove("x-foo"), 1);
        assert_eq!(h.remove("x-foo"), 0);
        assert_eq!(h.remove_first("nothing"), None);
        h.set("Subject", "new");
        assert_eq!(h.iter().last().unwrap().0, "Subject");
    }

    #[test]
    fn values_are_rewritten_and_removed_one_by_one() {
        let mut h = Headers::new();
        h.push("Diversion", "<sip:100@a>;reason=busy");
        h.push("X-Keep", "k");
        h.push("diversion", "<sip:200@b>;reason=no-answer");
        h.rewrite("Diversion", |v| {
            v.starts_with(b"<sip:100")
                .then(|| Bytes::from_static(b"<sip:999@c>\r\nVia: x"))
        });
        assert_eq!(
            h.get_all("Diversion").collect::<Vec<_>>(),
            ["<sip:999@c>  Via: x", "<sip:200@b>;reason=no-answer"]
        );
        assert_eq!(
            h.remove_where("Diversion", |v| v.ends_with(b"no-answer")),
            1
        );
        assert_eq!(h.get_all("Diversion").count(), 1);
        assert_eq!(h.get("X-Keep").unwrap(), "k");
    }

    #[test]
    fn application_values_cannot_inject_lines() {
        let mut h = Headers::new();
        h.push("X-Evil", "a\r\nVia: forged");
        h.push("Bad Name:", "v");
        assert_eq!(h.get("X-Evil").unwrap(), "a  Via: forged");
        assert_eq!(h.iter().nth(1).unwrap().0, "Bad-Name-");
    }

    #[test]
    fn joined_lists_share_a_line_when_printed() {
        let mut h = Headers::new();
        h.push("Allow", "INVITE, ACK,BYE");
        h.push("Via", "SIP/2.0/UDP a, SIP/2.0/UDP b");
        let mut out = BytesMut::new();
        h.encode_into(&mut out, b"0");
        assert_eq!(
            &out[..],
            b"Allow: INVITE, ACK, BYE\r\nVia: SIP/2.0/UDP a\r\nVia: SIP/2.0/UDP b\r\nContent-Length: 0\r\n"
        );
        h.push("l", "99");
        h.push("Content-Length", "98");
        h.push("Subject", "s");
        out.clear();
        h.encode_into(&mut out, b"12");
        assert!(out.ends_with(b"Content-Length: 12\r\nSubject: s\r\n"));
    }
}
