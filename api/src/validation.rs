//! Client-side validation of the custom resources.
//!
//! The API server enforces the OpenAPI schema and the CEL rules of the CRDs, but the local
//! platform and the operator's pure `validate` step run without one. This module owns the error
//! types ([`FieldError`], [`ValidationErrors`]), the [`Validate`] trait and the field checks the
//! resource modules share, so that every rule written into the schema has a Rust twin that
//! reports the same field path (`spec.routes[2].match.calledPrefix: ...`).

use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;

use ipnet::IpNet;
use regex::Regex;

/// Pattern of an RFC 1123 DNS label (Kubernetes object names of Services, listener names).
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Pattern of an RFC 1123 DNS subdomain (most Kubernetes object names).
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Pattern of a dialled-number prefix: an optional leading `+` then digits; empty matches all.
pub const NUMBER_PREFIX_PATTERN: &str = r"^\+?[0-9]*$";

/// Pattern of a wall-clock time `HH:MM` (24-hour).
pub const CLOCK_TIME_PATTERN: &str = "^([01][0-9]|2[0-3]):[0-5][0-9]$";

/// Pattern of a SIP header field name (an RFC 3261 `token`).
pub const SIP_TOKEN_PATTERN: &str = r"^[A-Za-z0-9.!%*_+`'~-]+$";

/// Pattern of a Kubernetes extended resource name such as `intel.com/sriov_netdevice`.
pub const RESOURCE_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";

/// Pattern of a NetworkAttachmentDefinition reference: `name` or `namespace/name`.
pub const NETWORK_ATTACHMENT_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Pattern of a SIP reason phrase: printable text without line breaks, which would let the
/// phrase inject header lines into the status line.
pub const REASON_PHRASE_PATTERN: &str = r"^[^\r\n]*$";

/// Longest regular expression (in bytes) accepted in translations and number normalisation.
pub const MAX_PATTERN_LENGTH: usize = 256;

/// Upper bound on the compiled size of a user-supplied regular expression. Patterns run on every
/// call, so a pathological one must be refused at load time rather than slow down signaling.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Headers the B2BUA owns: rewriting them would break transactions, dialogs or framing, so header
/// rules may not touch them (long and compact forms, lower case).
pub const PROTECTED_HEADERS: &[&str] = &[
    "via",
    "v",
    "from",
    "f",
    "to",
    "t",
    "call-id",
    "i",
    "cseq",
    "contact",
    "m",
    "record-route",
    "route",
    "max-forwards",
    "content-length",
    "l",
    "content-type",
    "c",
    "authorization",
    "proxy-authorization",
    "rack",
    "rseq",
    "require",
    "supported",
    "k",
    "session-expires",
    "x",
    "min-se",
];

fn compile_constant(pattern: &str) -> Regex {
    // The patterns are constants of this module, covered by a unit test.
    #[allow(clippy::expect_used)]
    Regex::new(pattern).expect("constant pattern compiles")
}

static DNS_LABEL: LazyLock<Regex> = LazyLock::new(|| compile_constant(DNS_LABEL_PATTERN));
static DNS_SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| compile_constant(DNS_SUBDOMAIN_PATTERN));
static NUMBER_PREFIX: LazyLock<Regex> = LazyLock::new(|| compile_constant(NUMBER_PREFIX_PATTERN));
static CLOCK_TIME: LazyLock<Regex> = LazyLock::new(|| compile_constant(CLOCK_TIME_PATTERN));
static SIP_TOKEN: LazyLock<Regex> = LazyLock::new(|| compile_constant(SIP_TOKEN_PATTERN));
static RESOURCE_NAME: LazyLock<Regex> = LazyLock::new(|| compile_constant(RESOURCE_NAME_PATTERN));
static NETWORK_ATTACHMENT: LazyLock<Regex> =
    LazyLock::new(|| compile_constant(NETWORK_ATTACHMENT_PATTERN));
static REASON_PHRASE: LazyLock<Regex> = LazyLock::new(|| compile_constant(REASON_PHRASE_PATTERN));

/// A JSON-path-like location inside an object, e.g. `spec.routes[2].match.calledPrefix`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at a top-level field such as `spec` or `metadata`.
    pub fn root(field: &str) -> Self {
        Self(field.to_owned())
    }

    /// The path of a named child field.
    pub fn field(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }

    /// The path of a list element.
    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One violated rule: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Location of the offending field, e.g. `spec.signaling.listeners[1].tlsSecretRef`.
    pub path: String,
    /// Human-readable explanation.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every rule an object violates; validation never stops at the first problem so that a user
/// can fix a manifest in one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation at `path`.
    pub fn push(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.as_str().to_owned(),
            message: message.into(),
        });
    }

    /// Records `result`'s error, if any, at `path`.
    pub(crate) fn check(&mut self, path: &FieldPath, result: Result<(), String>) {
        if let Err(message) = result {
            self.push(path, message);
        }
    }

    /// Whether no violation was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Number of violations.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// The violations, in the order they were found.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// Consumes the collection, yielding its violations.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// `Ok(())` when empty, `Err(self)` otherwise.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl IntoIterator for ValidationErrors {
    type Item = FieldError;
    type IntoIter = std::vec::IntoIter<FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

/// Validation of a spec (or a whole object) beyond what deserialization guarantees: everything
/// the CRD schema and its CEL rules say, plus checks the API server cannot express (regexes
/// compile, CIDRs parse, time zones exist).
pub trait Validate {
    /// Returns every violated rule, each naming its field path.
    fn validate(&self) -> Result<(), ValidationErrors>;
}

/// Checks `metadata.name` of a Trunk or RoutePlan: present and a valid object name.
/// Runs a spec's checks rooted at `spec` and collects their errors.
pub(crate) fn validate_spec(
    check: impl FnOnce(&FieldPath, &mut ValidationErrors),
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check(&FieldPath::root("spec"), &mut errors);
    errors.into_result()
}

/// Checks an object's `metadata.name`, then runs its spec's checks.
pub(crate) fn validate_object(
    name: Option<&str>,
    check: impl FnOnce(&FieldPath, &mut ValidationErrors),
) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::new();
    check_metadata_name(name, &mut errors);
    check(&FieldPath::root("spec"), &mut errors);
    errors.into_result()
}

pub(crate) fn check_metadata_name(name: Option<&str>, errors: &mut ValidationErrors) {
    let path = FieldPath::root("metadata").field("name");
    match name {
        None => errors.push(&path, "is required"),
        Some(name) => errors.check(&path, object_name(name)),
    }
}

/// Checks an RFC 1123 DNS label.
pub(crate) fn dns_label(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!(
            "{value:?} is longer than 63 characters (a DNS label)"
        ));
    }
    if !DNS_LABEL.is_match(value) {
        return Err(format!(
            "{value:?} is not a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks an RFC 1123 DNS subdomain, the shape of most Kubernetes object names.
pub(crate) fn object_name(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > 253 {
        return Err(format!("{value:?} is longer than 253 characters"));
    }
    if !DNS_SUBDOMAIN.is_match(value) {
        return Err(format!(
            "{value:?} is not a valid object name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a DNS host name as used in SIP URIs and Via headers; unlike object names it may hold
/// upper-case letters.
pub(crate) fn hostname(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > 253 {
        return Err(format!("{value:?} is longer than 253 characters"));
    }
    let name = value.strip_suffix('.').unwrap_or(value);
    let valid = !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid {
        return Err(format!(
            "{value:?} is neither an IP address nor a host name"
        ));
    }
    Ok(())
}

/// Checks an IP address literal or a DNS host name.
pub(crate) fn host(value: &str) -> Result<(), String> {
    if value.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    // A dotted-quad that failed to parse as IPv4 is a mistyped address, not a host name.
    if value.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("{value:?} is not a valid IPv4 address"));
    }
    if value.contains(':') {
        return Err(format!(
            "{value:?} is not a valid IPv6 address (write it without brackets)"
        ));
    }
    hostname(value)
}

/// Parses a CIDR block, refusing host bits below the prefix: `10.0.0.1/8` is almost always a
/// typo for `10.0.0.0/8` or `10.0.0.1/32`, and an ACL should say what it means.
pub(crate) fn cidr(value: &str) -> Result<IpNet, String> {
    let net: IpNet = value.parse().map_err(|_| {
        format!("{value:?} is not a CIDR block (address/prefix-length, e.g. 192.0.2.0/24)")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "{value:?} has host bits set below the /{} prefix; did you mean {}?",
            net.prefix_len(),
            net.trunc()
        ));
    }
    Ok(net)
}

/// Checks a called/calling number prefix.
pub(crate) fn number_prefix(value: &str) -> Result<(), String> {
    if value.len() > 32 {
        return Err(format!("{value:?} is longer than 32 characters"));
    }
    if !NUMBER_PREFIX.is_match(value) {
        return Err(format!(
            "{value:?} is not a number prefix: an optional leading '+' followed by digits"
        ));
    }
    Ok(())
}

/// Parses `HH:MM` into minutes after midnight.
pub(crate) fn clock_time(value: &str) -> Result<u16, String> {
    if !CLOCK_TIME.is_match(value) {
        return Err(format!(
            "{value:?} is not a time of day in 24-hour HH:MM form"
        ));
    }
    let (hours, minutes) = value
        .split_once(':')
        .ok_or_else(|| format!("{value:?} is not a time of day in 24-hour HH:MM form"))?;
    let hours: u16 = hours
        .parse()
        .map_err(|_| format!("{value:?} has an invalid hour"))?;
    let minutes: u16 = minutes
        .parse()
        .map_err(|_| format!("{value:?} has an invalid minute"))?;
    Ok(hours * 60 + minutes)
}

/// Resolves an IANA time zone name against the bundled time zone database.
pub(crate) fn time_zone(value: &str) -> Result<jiff::tz::TimeZone, String> {
    jiff::tz::TimeZone::get(value)
        .map_err(|_| format!("{value:?} is not a known IANA time zone name (e.g. Europe/Paris)"))
}

/// Compiles a user-supplied regular expression with a bounded size.
pub(crate) fn user_regex(pattern: &str) -> Result<Regex, String> {
    if pattern.len() > MAX_PATTERN_LENGTH {
        return Err(format!(
            "pattern is longer than {MAX_PATTERN_LENGTH} characters"
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| match error {
            regex::Error::CompiledTooBig(_) => {
                format!("pattern {pattern:?} compiles to a too large automaton")
            }
            // The syntax error text spans several lines, drawing a caret under the offending
            // character; its last line says what is wrong, which fits a one-line report.
            regex::Error::Syntax(text) => {
                let reason = text
                    .lines()
                    .last()
                    .map(|line| line.trim_start_matches("error: "))
                    .unwrap_or("syntax error");
                format!("invalid regular expression {pattern:?}: {reason}")
            }
            other => format!("invalid regular expression {pattern:?}: {other}"),
        })
}

/// Checks that every group a replacement string refers to (`$1`, `${2}`, `$name`, `${name}`)
/// exists in `regex`. The regex crate silently substitutes an empty string for a missing group,
/// which would turn a typo into a number with digits missing.
pub(crate) fn replacement_groups(replacement: &str, regex: &Regex) -> Result<(), String> {
    let groups = regex.captures_len();
    let mut rest = replacement;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let group = if let Some(stripped) = rest.strip_prefix('$') {
            rest = stripped;
            continue;
        } else if let Some(braced) = rest.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                return Err(format!(
                    "replacement {replacement:?} has an unterminated '${{'"
                ));
            };
            let name = &braced[..end];
            rest = &braced[end + 1..];
            name
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            rest = &rest[end..];
            name
        };
        if group.is_empty() {
            return Err(format!(
                "replacement {replacement:?} has a '$' without a group; write '$$' for a literal dollar"
            ));
        }
        match group.parse::<usize>() {
            Ok(index) if index >= groups => {
                return Err(format!(
                    "replacement {replacement:?} refers to group ${index} but the pattern has only {} group(s)",
                    groups - 1
                ));
            }
            Ok(_) => {}
            Err(_) if regex.capture_names().flatten().any(|name| name == group) => {}
            Err(_) => {
                return Err(format!(
                    "replacement {replacement:?} refers to group {group:?}, which the pattern does not define (write ${{1}}x when digits or letters follow a group number)"
                ));
            }
        }
    }
    Ok(())
}

/// Checks a SIP header field name.
pub(crate) fn header_name(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 64 {
        return Err("must be 1 to 64 characters long".to_owned());
    }
    if !SIP_TOKEN.is_match(value) {
        return Err(format!("{value:?} is not a SIP header name"));
    }
    if PROTECTED_HEADERS.contains(&value.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{value} is managed by the gateway and cannot be rewritten"
        ));
    }
    Ok(())
}

/// Checks a header value: no line breaks, which would let a rule inject headers.
pub(crate) fn header_value(value: &str) -> Result<(), String> {
    if value.len() > 1024 {
        return Err("must be at most 1024 characters long".to_owned());
    }
    if value.contains(['\r', '\n']) {
        return Err("must not contain line breaks".to_owned());
    }
    Ok(())
}

/// Checks a SIP reason phrase.
pub(crate) fn reason_phrase(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 128 {
        return Err("must be 1 to 128 characters long".to_owned());
    }
    if !REASON_PHRASE.is_match(value) {
        return Err("must not contain line breaks".to_owned());
    }
    Ok(())
}

/// Checks a Kubernetes extended resource name (`vendor.domain/resource`).
pub(crate) fn resource_name(value: &str) -> Result<(), String> {
    if value.len() > 253 || !RESOURCE_NAME.is_match(value) {
        return Err(format!(
            "{value:?} is not an extended resource name such as intel.com/sriov_netdevice"
        ));
    }
    Ok(())
}

/// Checks a NetworkAttachmentDefinition reference (`name` or `namespace/name`).
pub(crate) fn network_attachment(value: &str) -> Result<(), String> {
    if value.len() > 253 || !NETWORK_ATTACHMENT.is_match(value) {
        return Err(format!(
            "{value:?} is not a NetworkAttachmentDefinition name (name or namespace/name)"
        ));
    }
    Ok(())
}

/// Checks a SIP or SIPS URI loosely: scheme, optional user part, a valid host and an optional
/// port. Parameters and headers are left to the SIP stack.
pub(crate) fn sip_uri(value: &str) -> Result<(), String> {
    let rest = value
        .strip_prefix("sip:")
        .or_else(|| value.strip_prefix("sips:"))
        .ok_or_else(|| format!("{value:?} is not a sip: or sips: URI"))?;
    let rest = rest.split([';', '?']).next().unwrap_or_default();
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let (host_part, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{value:?} has an unterminated IPv6 reference"))?;
        address
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{value:?} has an invalid IPv6 address"))?;
        let port = match after {
            "" => None,
            other => Some(
                other
                    .strip_prefix(':')
                    .ok_or_else(|| format!("{value:?} has junk after the IPv6 reference"))?,
            ),
        };
        (None, port)
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(host_port), None),
        }
    };
    if let Some(host_part) = host_part {
        host(host_part).map_err(|message| format!("{value:?}: {message}"))?;
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("{value:?} has an invalid port {port:?}")),
        }
    }
    Ok(())
}

/// Reports every value of `items` (keyed by `key`) that repeats an earlier one.
pub(crate) fn duplicates<'a, T, K: PartialEq + fmt::Display>(
    errors: &mut ValidationErrors,
    list: &FieldPath,
    items: &'a [T],
    key: impl Fn(&'a T) -> K,
    what: &str,
) {
    for (i, item) in items.iter().enumerate() {
        let k = key(item);
        if let Some(first) = items[..i].iter().position(|earlier| key(earlier) == k) {
            errors.push(
                &list.index(i),
                format!(
                    "duplicate {what} {k} (already used by {})",
                    list.index(first)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_patterns_compile() {
        for pattern in [
            DNS_LABEL_PATTERN,
            DNS_SUBDOMAIN_PATTERN,
            NUMBER_PREFIX_PATTERN,
            CLOCK_TIME_PATTERN,
            SIP_TOKEN_PATTERN,
            RESOURCE_NAME_PATTERN,
            NETWORK_ATTACHMENT_PATTERN,
            REASON_PHRASE_PATTERN,
        ] {
            Regex::new(pattern).unwrap();
        }
    }

    #[test]
    fn field_paths_render_like_kubectl() {
        let path = FieldPath::root("spec")
            .field("routes")
            .index(2)
            .field("match")
            .field("calledPrefix");
        assert_eq!(path.to_string(), "spec.routes[2].match.calledPrefix");
    }

    #[test]
    fn hosts() {
        assert!(host("127.0.0.1").is_ok());
        assert!(host("2001:db8::1").is_ok());
        assert!(host("sbc-1.carrier.example").is_ok());
        assert!(host("SBC.Example.COM.").is_ok());
        assert!(host("256.1.1.1").is_err());
        assert!(host("[::1]").is_err());
        assert!(host("bad_host").is_err());
        assert!(host("-leading.example").is_err());
        assert!(host("").is_err());
    }

    #[test]
    fn cidrs() {
        assert!(cidr("10.0.0.0/8").is_ok());
        assert!(cidr("2001:db8::/32").is_ok());
        assert!(cidr("192.0.2.7/32").is_ok());
        let err = cidr("10.0.0.1/8").unwrap_err();
        assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("10.0.0.0").is_err());
        assert!(cidr("ten/8").is_err());
    }

    #[test]
    fn clock_times() {
        assert_eq!(clock_time("00:00"), Ok(0));
        assert_eq!(clock_time("23:59"), Ok(23 * 60 + 59));
        assert!(clock_time("24:00").is_err());
        assert!(clock_time("7:30").is_err());
        assert!(clock_time("07:60").is_err());
    }

    #[test]
    fn replacement_group_references() {
        let re = user_regex(r"^0(\d+)$").unwrap();
        assert!(replacement_groups("+44$1", &re).is_ok());
        assert!(replacement_groups("+44${1}", &re).is_ok());
        assert!(replacement_groups("$$1", &re).is_ok());
        assert!(
            replacement_groups("$2", &re)
                .unwrap_err()
                .contains("only 1 group")
        );
        // `$1x` names the group "1x", which does not exist.
        assert!(replacement_groups("$1x", &re).is_err());
        assert!(replacement_groups("${1", &re).is_err());
        assert!(replacement_groups("cost $", &re).is_err());
        let named = user_regex(r"^00(?P<rest>\d+)$").unwrap();
        assert!(replacement_groups("+$rest", &named).is_ok());
        assert!(replacement_groups("+${rest}", &named).is_ok());
        assert!(replacement_groups("+$other", &named).is_err());
    }

    #[test]
    fn user_regexes_are_bounded() {
        assert_eq!(
            user_regex("(").unwrap_err(),
            "invalid regular expression \"(\": unclosed group"
        );
        assert!(user_regex(&"a".repeat(MAX_PATTERN_LENGTH + 1)).is_err());
        assert!(user_regex(r"\w{200}\w{200}").is_err());
    }

    #[test]
    fn sip_uris() {
        assert!(sip_uri("sip:registrar.carrier.example").is_ok());
        assert!(sip_uri("sips:user@registrar.carrier.example:5061;transport=tls").is_ok());
        assert!(sip_uri("sip:[2001:db8::1]:5060").is_ok());
        assert!(sip_uri("sip:192.0.2.1").is_ok());
        assert!(sip_uri("http://example.com").is_err());
        assert!(sip_uri("sip:").is_err());
        assert!(sip_uri("sip:host:0").is_err());
        assert!(sip_uri("sip:host:99999").is_err());
        assert!(sip_uri("sip:[::1").is_err());
    }

    #[test]
    fn header_names() {
        assert!(header_name("X-Customer-Id").is_ok());
        assert!(header_name("P-Asserted-Identity").is_ok());
        assert!(header_name("Via").is_err());
        assert!(header_name("call-id").is_err());
        assert!(header_name("Bad Header").is_err());
        assert!(header_value("a\r\nVia: x").is_err());
    }

    #[test]
    fn names() {
        assert!(dns_label("udp-5060").is_ok());
        assert!(dns_label("UDP").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(object_name("carrier.eu").is_ok());
        assert!(object_name("").is_err());
        assert!(resource_name("intel.com/sriov_netdevice").is_ok());
        assert!(resource_name("sriov_netdevice").is_err());
        assert!(network_attachment("sriov-net").is_ok());
        assert!(network_attachment("telco/sriov-net").is_ok());
        assert!(network_attachment("a/b/c").is_err());
    }

    #[test]
    fn time_zones_come_from_the_bundled_database() {
        assert!(time_zone("Europe/Paris").is_ok());
        assert!(time_zone("UTC").is_ok());
        assert!(time_zone("Mars/Olympus_Mons").is_err());
    }
}
