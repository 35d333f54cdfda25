//! ng requests: the typed command and the keys this implementation understands.
//!
//! Parsing follows rtpengine: keys are case-sensitive, a space and a hyphen are interchangeable
//! in key names and flag values (`received from` = `received-from`), and keys that are not
//! understood are ignored. Keys that *are* understood must have the right type; a wrong type is
//! reported instead of silently ignored.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::bencode::{Dictionary, Value};
use crate::error::NgError;
use crate::frame::{self, Cookie};

/// The ng commands served, named as rtpengine names them on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// Liveness check; answered with `pong`.
    Ping,
    /// SDP offer: anchor the offerer's media and rewrite the SDP for the other side.
    Offer,
    /// SDP answer: anchor the answerer's media and rewrite the SDP for the offerer.
    Answer,
    /// Tear a call down and free its ports.
    Delete,
    /// Report one call's state and counters.
    Query,
    /// List active call-ids.
    List,
    /// Report engine-wide counters.
    Statistics,
}

impl Command {
    /// Every command, for metrics initialisation and tests.
    pub const ALL: [Command; 7] = [
        Command::Ping,
        Command::Offer,
        Command::Answer,
        Command::Delete,
        Command::Query,
        Command::List,
        Command::Statistics,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
            Command::Query => "query",
            Command::List => "list",
            Command::Statistics => "statistics",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = NgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Command::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| NgError::UnknownCommand(s.to_owned()))
    }
}

/// Parts of the SDP the `replace` list asks to rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replace {
    /// The address in the `o=` line.
    Origin,
    /// The session-level `c=` line.
    SessionConnection,
    /// A value this implementation does not act on (kept so it can be logged or re-encoded).
    Other(String),
}

impl Replace {
    fn parse(s: &str) -> Self {
        match normalize(s).as_str() {
            "origin" => Replace::Origin,
            "session-connection" => Replace::SessionConnection,
            _ => Replace::Other(s.to_owned()),
        }
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Replace::Origin => "origin",
            Replace::SessionConnection => "session-connection",
            Replace::Other(s) => s,
        }
    }
}

/// The `ICE` key: what to do with ICE attributes in the SDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ice {
    /// Strip all ICE attributes.
    Remove,
    /// Strip and insert the relay as the only candidate.
    Force,
    /// Like `force` when the SDP has ICE, otherwise nothing.
    Default,
    /// Keep candidates and add the relay as a relay candidate.
    ForceRelay,
    /// Add the relay as a low-priority candidate.
    Optional,
    /// Any other value.
    Other(String),
}

impl Ice {
    fn parse(s: &str) -> Self {
        match normalize(s).as_str() {
            "remove" => Ice::Remove,
            "force" => Ice::Force,
            "default" => Ice::Default,
            "force-relay" | "force_relay" => Ice::ForceRelay,
            "optional" => Ice::Optional,
            _ => Ice::Other(s.to_owned()),
        }
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Ice::Remove => "remove",
            Ice::Force => "force",
            Ice::Default => "default",
            Ice::ForceRelay => "force-relay",
            Ice::Optional => "optional",
            Ice::Other(s) => s,
        }
    }
}

/// The `received-from` key: the address family and source address of the SIP message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedFrom {
    /// `IP4` or `IP6`.
    pub family: String,
    /// The address as text.
    pub address: String,
}

/// A parsed ng request. Optional keys are `None`/empty when absent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The command.
    pub command: Command,
    /// `call-id`: the SIP Call-ID.
    pub call_id: Option<String>,
    /// `from-tag`: the SIP From tag.
    pub from_tag: Option<String>,
    /// `to-tag`: the SIP To tag.
    pub to_tag: Option<String>,
    /// `via-branch`: the top Via branch.
    pub via_branch: Option<String>,
    /// `label`: a free-form name for the sending party.
    pub label: Option<String>,
    /// `sdp`: the SDP body.
    pub sdp: Option<Bytes>,
    /// `flags`: free-form flags, as sent.
    pub flags: Vec<String>,
    /// `replace`: which SDP parts to rewrite beyond the media addresses.
    pub replace: Vec<Replace>,
    /// `ICE`: ICE handling.
    pub ice: Option<Ice>,
    /// `direction`: the two logical interface names (sender side, receiver side).
    pub direction: Vec<String>,
    /// `received-from`: family and address of the SIP message's source.
    pub received_from: Option<ReceivedFrom>,
    /// `media-address`: an address overriding the SDP's.
    pub media_address: Option<String>,
    /// `limit`: the maximum number of calls in a `list` reply.
    pub limit: Option<i64>,
}

impl Request {
    /// A request for `command` with no other keys.
    pub fn new(command: Command) -> Self {
        Self {
            command,
            call_id: None,
            from_tag: None,
            to_tag: None,
            via_branch: None,
            label: None,
            sdp: None,
            flags: Vec::new(),
            replace: Vec::new(),
            ice: None,
            direction: Vec::new(),
            received_from: None,
            media_address: None,
            limit: None,
        }
    }

    /// `ping`.
    pub fn ping() -> Self {
        Self::new(Command::Ping)
    }

    /// `offer` for the party with `from_tag`, carrying its SDP.
    pub fn offer(
        call_id: impl Into<String>,
        from_tag: impl Into<String>,
        sdp: impl AsRef<[u8]>,
    ) -> Self {
        let mut r = Self::new(Command::Offer);
        r.call_id = Some(call_id.into());
        r.from_tag = Some(from_tag.into());
        r.sdp = Some(Bytes::copy_from_slice(sdp.as_ref()));
        r
    }

    /// `answer` from the party with `to_tag` to the offerer with `from_tag`.
    pub fn answer(
        call_id: impl Into<String>,
        from_tag: impl Into<String>,
        to_tag: impl Into<String>,
        sdp: impl AsRef<[u8]>,
    ) -> Self {
        let mut r = Self::new(Command::Answer);
        r.call_id = Some(call_id.into());
        r.from_tag = Some(from_tag.into());
        r.to_tag = Some(to_tag.into());
        r.sdp = Some(Bytes::copy_from_slice(sdp.as_ref()));
        r
    }

    /// `delete` of a call, optionally restricted by From tag.
    pub fn delete(call_id: impl Into<String>, from_tag: Option<String>) -> Self {
        let mut r = Self::new(Command::Delete);
        r.call_id = Some(call_id.into());
        r.from_tag = from_tag;
        r
    }

    /// `query` of a call.
    pub fn query(call_id: impl Into<String>) -> Self {
        let mut r = Self::new(Command::Query);
        r.call_id = Some(call_id.into());
        r
    }

    /// `list` of active calls.
    pub fn list() -> Self {
        Self::new(Command::List)
    }

    /// `statistics`.
    pub fn statistics() -> Self {
        Self::new(Command::Statistics)
    }

    /// Adds a flag.
    pub fn with_flag(mut self, flag: impl Into<String>) -> Self {
        self.flags.push(flag.into());
        self
    }

    /// Adds a `replace` item.
    pub fn with_replace(mut self, replace: Replace) -> Self {
        self.replace.push(replace);
        self
    }

    /// Sets the `to-tag`.
    pub fn with_to_tag(mut self, to_tag: impl Into<String>) -> Self {
        self.to_tag = Some(to_tag.into());
        self
    }

    /// Sets the `via-branch`.
    pub fn with_via_branch(mut self, branch: impl Into<String>) -> Self {
        self.via_branch = Some(branch.into());
        self
    }

    /// Sets `ICE`.
    pub fn with_ice(mut self, ice: Ice) -> Self {
        self.ice = Some(ice);
        self
    }

    /// Sets `received-from`.
    pub fn with_received_from(
        mut self,
        family: impl Into<String>,
        address: impl Into<String>,
    ) -> Self {
        self.received_from = Some(ReceivedFrom {
            family: family.into(),
            address: address.into(),
        });
        self
    }

    /// Sets `limit` (for `list`).
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Whether `flags` contains `name`, comparing case-insensitively and treating spaces and
    /// hyphens alike (`trust address` = `trust-address` = `Trust-Address`).
    pub fn has_flag(&self, name: &str) -> bool {
        let wanted = normalize(name);
        self.flags.iter().any(|f| normalize(f) == wanted)
    }

    /// Whether `replace` contains `item`.
    pub fn replaces(&self, item: &Replace) -> bool {
        self.replace.contains(item)
    }

    /// `call-id`, or rtpengine's error when it is missing.
    pub fn require_call_id(&self) -> Result<&str, NgError> {
        self.call_id
            .as_deref()
            .ok_or(NgError::MissingKey("call-id"))
    }

    /// `from-tag`, or rtpengine's error when it is missing.
    pub fn require_from_tag(&self) -> Result<&str, NgError> {
        self.from_tag
            .as_deref()
            .ok_or(NgError::MissingKey("from-tag"))
    }

    /// `to-tag`, or rtpengine's error when it is missing.
    pub fn require_to_tag(&self) -> Result<&str, NgError> {
        self.to_tag.as_deref().ok_or(NgError::MissingKey("to-tag"))
    }

    /// `sdp`, or rtpengine's error when it is missing.
    pub fn require_sdp(&self) -> Result<&Bytes, NgError> {
        self.sdp.as_ref().ok_or(NgError::MissingKey("sdp"))
    }

    /// Parses a request dictionary (as returned by [`frame::parse_datagram`]).
    pub fn from_value(value: &Value) -> Result<Self, NgError> {
        let dict = value.as_dictionary().ok_or(NgError::NotADictionary {
            found: value.type_name(),
        })?;
        Self::from_dictionary(dict)
    }

    /// Parses a request dictionary.
    pub fn from_dictionary(dict: &Dictionary) -> Result<Self, NgError> {
        let command = match lookup(dict, "command") {
            None => return Err(NgError::MissingCommand),
            Some(v) => {
                let bytes = v.as_bytes().ok_or(NgError::WrongType {
                    key: "command",
                    expected: "a string",
                    found: v.type_name(),
                })?;
                let name = std::str::from_utf8(bytes)
                    .map_err(|_| NgError::UnknownCommand(String::from_utf8_lossy(bytes).into()))?;
                name.parse::<Command>()?
            }
        };
        let mut r = Self::new(command);
        r.call_id = string_key(dict, "call-id")?;
        r.from_tag = string_key(dict, "from-tag")?;
        r.to_tag = string_key(dict, "to-tag")?;
        r.via_branch = string_key(dict, "via-branch")?;
        r.label = string_key(dict, "label")?;
        r.media_address = string_key(dict, "media-address")?;
        r.sdp = match lookup(dict, "sdp") {
            None => None,
            Some(v) => Some(v.as_bytes().cloned().ok_or(NgError::WrongType {
                key: "sdp",
                expected: "a string",
                found: v.type_name(),
            })?),
        };
        r.flags = string_list_key(dict, "flags")?;
        r.replace = string_list_key(dict, "replace")?
            .iter()
            .map(|s| Replace::parse(s))
            .collect();
        r.direction = string_list_key(dict, "direction")?;
        r.ice = string_key(dict, "ICE")?.map(|s| Ice::parse(&s));
        let received = string_list_key(dict, "received-from")?;
        r.received_from = match received.as_slice() {
            [] => None,
            [family, address] => Some(ReceivedFrom {
                family: family.clone(),
                address: address.clone(),
            }),
            _ => {
                return Err(NgError::InvalidValue {
                    key: "received-from",
                    reason: "expected a list of exactly two strings (family, address)",
                });
            }
        };
        r.limit = match lookup(dict, "limit") {
            None => None,
            Some(Value::Integer(i)) => Some(*i),
            // Some clients send numbers as strings; rtpengine accepts both.
            Some(v @ Value::Bytes(_)) => Some(
                v.as_str()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .ok_or(NgError::InvalidValue {
                        key: "limit",
                        reason: "not an integer",
                    })?,
            ),
            Some(v) => {
                return Err(NgError::WrongType {
                    key: "limit",
                    expected: "an integer",
                    found: v.type_name(),
                });
            }
        };
        Ok(r)
    }

    /// The request as a bencode dictionary, with rtpengine's key names.
    pub fn to_value(&self) -> Value {
        let mut d = Dictionary::new();
        let mut put = |k: &'static str, v: Value| {
            d.insert(Bytes::from_static(k.as_bytes()), v);
        };
        put("command", self.command.as_str().into());
        let strings = [
            ("call-id", &self.call_id),
            ("from-tag", &self.from_tag),
            ("to-tag", &self.to_tag),
            ("via-branch", &self.via_branch),
            ("label", &self.label),
            ("media-address", &self.media_address),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                put(k, v.as_str().into());
            }
        }
        if let Some(sdp) = &self.sdp {
            put("sdp", Value::Bytes(sdp.clone()));
        }
        let list =
            |items: &mut dyn Iterator<Item = &str>| Value::List(items.map(Value::from).collect());
        if !self.flags.is_empty() {
            put("flags", list(&mut self.flags.iter().map(String::as_str)));
        }
        if !self.replace.is_empty() {
            put(
                "replace",
                list(&mut self.replace.iter().map(Replace::as_str)),
            );
        }
        if !self.direction.is_empty() {
            put(
                "direction",
                list(&mut self.direction.iter().map(String::as_str)),
            );
        }
        if let Some(ice) = &self.ice {
            put("ICE", ice.as_str().into());
        }
        if let Some(rf) = &self.received_from {
            put(
                "received-from",
                Value::List(vec![rf.family.as_str().into(), rf.address.as_str().into()]),
            );
        }
        if let Some(limit) = self.limit {
            put("limit", Value::Integer(limit));
        }
        Value::Dictionary(d)
    }

    /// The request as a datagram with `cookie`.
    pub fn encode(&self, cookie: impl AsRef<[u8]>) -> Vec<u8> {
        frame::frame(cookie, &self.to_value())
    }

    /// Parses a request datagram into its cookie and request.
    pub fn decode(datagram: &[u8]) -> Result<(Cookie, Self), NgError> {
        let (cookie, value) = frame::parse_datagram(datagram)?;
        Ok((cookie, Self::from_value(&value)?))
    }
}

/// Folds ASCII case and maps spaces to hyphens, so that flag spellings rtpengine treats as
/// equal compare equal.
fn normalize(s: &str) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c == ' ' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Finds `key` in its hyphenated or its spaced spelling.
fn lookup<'a>(dict: &'a Dictionary, key: &str) -> Option<&'a Value> {
    dict.get(key.as_bytes()).or_else(|| {
        let spaced = key.replace('-', " ");
        dict.get(spaced.as_bytes())
    })
}

fn string_key(dict: &Dictionary, key: &'static str) -> Result<Option<String>, NgError> {
    match lookup(dict, key) {
        None => Ok(None),
        Some(v) => {
            let bytes = v.as_bytes().ok_or(NgError::WrongType {
                key,
                expected: "a string",
                found: v.type_name(),
            })?;
            let s = std::str::from_utf8(bytes).map_err(|_| NgError::NotUtf8(key))?;
            Ok(Some(s.to_owned()))
        }
    }
}

fn string_list_key(dict: &Dictionary, key: &'static str) -> Result<Vec<String>, NgError> {
    let Some(v) = lookup(dict, key) else {
        return Ok(Vec::new());
    };
    let items = v.as_list().ok_or(NgError::WrongType {
        key,
        expected: "a list of strings",
        found: v.type_name(),
    })?;
    items
        .iter()
        .map(|item| {
            let bytes = item.as_bytes().ok_or(NgError::WrongType {
                key,
                expected: "a list of strings",
                found: item.type_name(),
            })?;
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|_| NgError::NotUtf8(key))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bencode;

    fn parse(payload: &[u8]) -> Result<Request, NgError> {
        let (v, _) = bencode::decode(payload).unwrap();
        Request::from_value(&v)
    }

    #[test]
    fn parses_ping_fixture() {
        let r = parse(b"d7:command4:pinge").unwrap();
        assert_eq!(r, Request::ping());
    }

    #[test]
    fn ping_encodes_to_rtpengine_bytes() {
        assert_eq!(
            Request::ping().encode("5323_1"),
            b"5323_1 d7:command4:pinge"
        );
    }

    #[test]
    fn parses_a_kamailio_style_offer() {
        // Shaped like what Kamailio's rtpengine module sends: spaced keys, unknown keys,
        // flags and replace lists.
        let payload = b"d3:sdp21:v=0\r\no=- 1 1 IN IP4 x7:call-id5:abc@h8:from-tag2:ft\
            10:via-branch5:z9hG45:flagsl13:trust addresse7:replacel6:origin18:session-connectione\
            3:ICE6:remove13:received froml3:IP48:10.0.0.1e9:directionl4:priv3:pube\
            18:transport-protocol7:RTP/AVP7:command5:offere";
        let r = parse(payload).unwrap();
        assert_eq!(r.command, Command::Offer);
        assert_eq!(r.call_id.as_deref(), Some("abc@h"));
        assert_eq!(r.from_tag.as_deref(), Some("ft"));
        assert_eq!(r.via_branch.as_deref(), Some("z9hG4"));
        assert!(r.has_flag("trust-address"));
        assert!(r.has_flag("Trust Address"));
        assert!(!r.has_flag("asymmetric"));
        assert_eq!(r.replace, vec![Replace::Origin, Replace::SessionConnection]);
        assert_eq!(r.ice, Some(Ice::Remove));
        assert_eq!(
            r.received_from,
            Some(ReceivedFrom {
                family: "IP4".into(),
                address: "10.0.0.1".into()
            })
        );
        assert_eq!(r.direction, vec!["priv", "pub"]);
        assert_eq!(r.sdp.as_deref(), Some(&b"v=0\r\no=- 1 1 IN IP4 x"[..]));
    }

    #[test]
    fn builders_round_trip_through_the_wire() {
        let requests = [
            Request::ping(),
            Request::offer("c1", "f1", "v=0\r\n")
                .with_flag("trust-address")
                .with_replace(Replace::Origin)
                .with_ice(Ice::Remove)
                .with_via_branch("z9hG4bK1")
                .with_received_from("IP4", "192.0.2.1"),
            Request::answer("c1", "f1", "t1", "v=0\r\n"),
            Request::delete("c1", Some("f1".into())),
            Request::delete("c1", None),
            Request::query("c1"),
            Request::list().with_limit(5),
            Request::statistics(),
        ];
        for r in requests {
            let wire = r.encode("ck");
            let (cookie, back) = Request::decode(&wire).unwrap();
            assert_eq!(cookie, "ck");
            assert_eq!(back, r);
        }
    }

    #[test]
    fn offer_encoding_is_canonical() {
        let wire = Request::offer("c", "f", "s").encode("1");
        assert_eq!(
            wire,
            b"1 d7:call-id1:c7:command5:offer8:from-tag1:f3:sdp1:se"
        );
    }

    #[test]
    fn command_errors_match_rtpengine() {
        assert_eq!(parse(b"d4:call2:ide").unwrap_err(), NgError::MissingCommand);
        assert_eq!(
            parse(b"d7:command5:dancee").unwrap_err(),
            NgError::UnknownCommand("dance".into())
        );
        assert_eq!(
            parse(b"d7:commandi1ee").unwrap_err(),
            NgError::WrongType {
                key: "command",
                expected: "a string",
                found: "integer"
            }
        );
    }

    #[test]
    fn wrong_types_of_known_keys_are_reported() {
        assert!(matches!(
            parse(b"d7:command5:offer7:call-idi5ee").unwrap_err(),
            NgError::WrongType { key: "call-id", .. }
        ));
        assert!(matches!(
            parse(b"d7:command5:offer5:flags3:abce").unwrap_err(),
            NgError::WrongType { key: "flags", .. }
        ));
        assert!(matches!(
            parse(b"d7:command5:offer5:flagsli1eee").unwrap_err(),
            NgError::WrongType { key: "flags", .. }
        ));
        assert_eq!(
            parse(b"d7:command5:offer7:call-id2:\xff\xfee").unwrap_err(),
            NgError::NotUtf8("call-id")
        );
        assert!(matches!(
            parse(b"d7:command5:offer13:received-froml3:IP4ee").unwrap_err(),
            NgError::InvalidValue {
                key: "received-from",
                ..
            }
        ));
        assert!(matches!(
            parse(b"d7:command4:list5:limit3:abce").unwrap_err(),
            NgError::InvalidValue { key: "limit", .. }
        ));
    }

    #[test]
    fn limit_may_be_a_string() {
        let r = parse(b"d7:command4:list5:limit2:10e").unwrap();
        assert_eq!(r.limit, Some(10));
    }

    #[test]
    fn unknown_keys_and_values_are_kept_or_ignored() {
        let r = parse(b"d7:command5:offer7:replacel8:usernamee3:ICE5:weirde5:xyzzyi1ee").unwrap();
        assert_eq!(r.replace, vec![Replace::Other("username".into())]);
        assert_eq!(r.ice, Some(Ice::Other("weird".into())));
    }

    #[test]
    fn require_helpers_give_rtpengine_errors() {
        let r = Request::new(Command::Offer);
        assert_eq!(
            r.require_sdp().unwrap_err().to_string(),
            "No SDP body in message"
        );
        assert_eq!(
            r.require_call_id().unwrap_err().to_string(),
            "No call-id in message"
        );
        assert_eq!(
            r.require_from_tag().unwrap_err().to_string(),
            "No from-tag in message"
        );
        assert_eq!(
            r.require_to_tag().unwrap_err().to_string(),
            "No to-tag in message"
        );
    }
}
