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
    /// Stop relaying RFC 4733 events of a call or of one party.
    BlockDtmf,
    /// Undo `block DTMF`.
    UnblockDtmf,
    /// Stop relaying media (everything but RFC 4733 events) of a call or of one party.
    BlockMedia,
    /// Undo `block media`.
    UnblockMedia,
    /// Start recording a call.
    StartRecording,
    /// Stop recording a call.
    StopRecording,
    /// Pause recording a call, keeping its files open.
    PauseRecording,
    /// Start forwarding a call's media to a recording service.
    StartForwarding,
    /// Stop forwarding a call's media.
    StopForwarding,
    /// Inject an RFC 4733 event into a party's stream.
    PlayDtmf,
}

impl Command {
    /// Every command, for metrics initialisation and tests.
    pub const ALL: [Command; 17] = [
        Command::Ping,
        Command::Offer,
        Command::Answer,
        Command::Delete,
        Command::Query,
        Command::List,
        Command::Statistics,
        Command::BlockDtmf,
        Command::UnblockDtmf,
        Command::BlockMedia,
        Command::UnblockMedia,
        Command::StartRecording,
        Command::StopRecording,
        Command::PauseRecording,
        Command::StartForwarding,
        Command::StopForwarding,
        Command::PlayDtmf,
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
            Command::BlockDtmf => "block DTMF",
            Command::UnblockDtmf => "unblock DTMF",
            Command::BlockMedia => "block media",
            Command::UnblockMedia => "unblock media",
            Command::StartRecording => "start recording",
            Command::StopRecording => "stop recording",
            Command::PauseRecording => "pause recording",
            Command::StartForwarding => "start forwarding",
            Command::StopForwarding => "stop forwarding",
            Command::PlayDtmf => "play DTMF",
        }
    }

    /// Whether the command acts on one call (and so needs a `call-id`).
    pub fn is_call_command(self) -> bool {
        !matches!(self, Command::Ping | Command::List | Command::Statistics)
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
            .find(|c| c.as_str() == s || normalize(c.as_str()) == normalize(s))
            .ok_or_else(|| NgError::UnknownCommand(s.to_owned()))
    }
}

/// Parts of the SDP the `replace` list asks to rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replace {
    /// The address (and, for topology hiding, the username) in the `o=` line.
    Origin,
    /// The whole `o=` line: the relay's own username, session id and version.
    OriginFull,
    /// The session-level `c=` line.
    SessionConnection,
    /// The `o=` username.
    Username,
    /// The `o=` session version, increased whenever the SDP sent changes.
    SdpVersion,
    /// Increase the `o=` session version on every SDP sent.
    ForceIncrementSdpVersion,
    /// The `s=` line.
    SessionName,
    /// A zero (`0.0.0.0`) connection address.
    ZeroAddress,
    /// A value this implementation does not know (kept so it can be reported).
    Other(String),
}

impl Replace {
    /// Reads one `replace` item (any spelling rtpengine accepts).
    pub fn parse(s: &str) -> Self {
        match normalize(s).as_str() {
            "origin" => Replace::Origin,
            "origin-full" => Replace::OriginFull,
            "session-connection" | "session-c-address" => Replace::SessionConnection,
            "username" => Replace::Username,
            "sdp-version" | "session-version" => Replace::SdpVersion,
            "force-increment-sdp-ver" => Replace::ForceIncrementSdpVersion,
            "session-name" => Replace::SessionName,
            "zero-address" => Replace::ZeroAddress,
            _ => Replace::Other(s.to_owned()),
        }
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Replace::Origin => "origin",
            Replace::OriginFull => "origin-full",
            Replace::SessionConnection => "session-connection",
            Replace::Username => "username",
            Replace::SdpVersion => "SDP-version",
            Replace::ForceIncrementSdpVersion => "force-increment-sdp-ver",
            Replace::SessionName => "session-name",
            Replace::ZeroAddress => "zero-address",
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
    /// `transport protocol`: the protocol to put in the `m=` lines sent on.
    pub transport_protocol: Option<String>,
    /// `rtcp-mux`: `offer`, `demux`, `accept`, `reject`, `require`.
    pub rtcp_mux: Vec<String>,
    /// `SDES`: SDES-SRTP options.
    pub sdes: Vec<String>,
    /// `codec`: codec manipulations, as (operation, codec) pairs of the `codec` dictionary
    /// (see [`Request::codec_operations`] for those sent as flags too).
    pub codec: Vec<(String, String)>,
    /// `address family`: `IP4` or `IP6`.
    pub address_family: Option<String>,
    /// `set-label`: the label to give the party selected by `from-tag`.
    pub set_label: Option<String>,
    /// `to-label`: selects the receiving party by label.
    pub to_label: Option<String>,
    /// `delete delay`: seconds a `delete` waits before removing the call.
    pub delete_delay: Option<i64>,
    /// `record call`: `yes`, `no`, `on` or `off`.
    pub record_call: Option<String>,
    /// `metadata`: a free-form string kept with the call.
    pub metadata: Option<String>,
    /// `all`: `all`, `none`, `offer-answer`, `except-offer-answer` or `flows`.
    pub all: Option<String>,
    /// `address`: selects a party by its SDP media address (blocking commands).
    pub address: Option<String>,
    /// `code` or `digit`: the event of `play DTMF`.
    pub code: Option<String>,
    /// `duration`: milliseconds of the `play DTMF` event.
    pub duration: Option<i64>,
    /// `volume`: dB below the maximum of the `play DTMF` event.
    pub volume: Option<i64>,
    /// `dtmf-log-dest`: `host:port` where the call's DTMF events are reported, one JSON
    /// datagram per event (rtpengine's option of the same name, per call).
    pub dtmf_log_dest: Option<String>,
    /// Keys present in the request that this implementation does not know, in their sent
    /// spelling, so that a reply can name them.
    pub unknown_keys: Vec<String>,
}

/// Keys understood by [`Request::from_dictionary`], in hyphenated spelling, and keys known to
/// carry nothing to act on (`supports` announces client features, the SIP message details
/// are informational).
const KNOWN_KEYS: &[&str] = &[
    "command",
    "call-id",
    "from-tag",
    "to-tag",
    "via-branch",
    "label",
    "from-label",
    "set-label",
    "to-label",
    "sdp",
    "flags",
    "replace",
    "direction",
    "ICE",
    "received-from",
    "media-address",
    "limit",
    "transport-protocol",
    "rtcp-mux",
    "SDES",
    "codec",
    "address-family",
    "delete-delay",
    "record-call",
    "metadata",
    "all",
    "address",
    "code",
    "digit",
    "duration",
    "volume",
    "dtmf-log-dest",
    "supports",
    "SIP-message-type",
    "SIP-code",
    "rtpp-flags",
    "rtpp_flags",
];

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
            transport_protocol: None,
            rtcp_mux: Vec::new(),
            sdes: Vec::new(),
            codec: Vec::new(),
            address_family: None,
            set_label: None,
            to_label: None,
            delete_delay: None,
            record_call: None,
            metadata: None,
            dtmf_log_dest: None,
            all: None,
            address: None,
            code: None,
            duration: None,
            volume: None,
            unknown_keys: Vec::new(),
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

    /// Every codec manipulation as (operation in lower case, codec): the `codec` dictionary's
    /// and the `codec-<operation>-<codec>` flags'.
    pub fn codec_operations(&self) -> Vec<(String, String)> {
        let mut operations = self.codec.clone();
        for flag in &self.flags {
            let lower = flag.to_ascii_lowercase();
            if let Some(rest) = lower.strip_prefix("codec-")
                && let Some((operation, _)) = rest.split_once('-')
                && let Some(codec) = flag.get("codec-".len() + operation.len() + 1..)
            {
                operations.push((operation.to_owned(), codec.to_owned()));
            }
        }
        operations
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
        // Flags sent as one string for the engine to parse (`rtpp_flags`) mean what the same
        // keys and flags sent as bencode mean; keys sent as bencode win.
        let merged;
        let dict = match dict
            .get(&b"rtpp_flags"[..])
            .or_else(|| lookup(dict, "rtpp-flags"))
        {
            None => dict,
            Some(v) => {
                let text = v.as_str().ok_or(NgError::WrongType {
                    key: "rtpp_flags",
                    expected: "a string",
                    found: v.type_name(),
                })?;
                merged = merge_rtpp_flags(dict, text)?;
                &merged
            }
        };
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
        r.label = match string_key(dict, "label")? {
            Some(label) => Some(label),
            None => string_key(dict, "from-label")?,
        };
        r.set_label = string_key(dict, "set-label")?;
        r.to_label = string_key(dict, "to-label")?;
        r.transport_protocol = string_key(dict, "transport-protocol")?;
        r.address_family = string_key(dict, "address-family")?;
        r.record_call = string_key(dict, "record-call")?;
        r.metadata = string_key(dict, "metadata")?;
        r.dtmf_log_dest = string_key(dict, "dtmf-log-dest")?;
        r.all = string_key(dict, "all")?;
        r.address = string_key(dict, "address")?;
        r.rtcp_mux = string_or_list_key(dict, "rtcp-mux")?;
        r.sdes = string_or_list_key(dict, "SDES")?;
        r.code = match lookup(dict, "code").or_else(|| lookup(dict, "digit")) {
            None => None,
            Some(Value::Integer(i)) => Some(i.to_string()),
            Some(v) => Some(
                v.as_str()
                    .ok_or(NgError::WrongType {
                        key: "code",
                        expected: "a string or an integer",
                        found: v.type_name(),
                    })?
                    .to_owned(),
            ),
        };
        r.delete_delay = integer_key(dict, "delete-delay")?;
        r.duration = integer_key(dict, "duration")?;
        r.volume = integer_key(dict, "volume")?;
        r.codec = codec_key(dict)?;
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
        let mut ice = string_or_list_key(dict, "ICE")?.into_iter();
        r.ice = ice.next().map(|s| Ice::parse(&s));
        r.unknown_keys
            .extend(ice.map(|extra| format!("ICE={extra}")));
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
        r.limit = integer_key(dict, "limit")?;
        r.unknown_keys.extend(
            dict.keys()
                .filter(|k| {
                    let key = String::from_utf8_lossy(k).replace(' ', "-");
                    !KNOWN_KEYS
                        .iter()
                        .any(|known| known.eq_ignore_ascii_case(&key))
                })
                .map(|k| String::from_utf8_lossy(k).into_owned()),
        );
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
        for (k, v) in [
            ("delete-delay", self.delete_delay),
            ("duration", self.duration),
            ("volume", self.volume),
        ] {
            if let Some(v) = v {
                put(k, Value::Integer(v));
            }
        }
        let more = [
            ("set-label", &self.set_label),
            ("to-label", &self.to_label),
            ("transport-protocol", &self.transport_protocol),
            ("address-family", &self.address_family),
            ("record-call", &self.record_call),
            ("metadata", &self.metadata),
            ("dtmf-log-dest", &self.dtmf_log_dest),
            ("all", &self.all),
            ("address", &self.address),
            ("code", &self.code),
        ];
        for (k, v) in more {
            if let Some(v) = v {
                put(k, v.as_str().into());
            }
        }
        for (k, items) in [("rtcp-mux", &self.rtcp_mux), ("SDES", &self.sdes)] {
            if !items.is_empty() {
                put(k, list(&mut items.iter().map(String::as_str)));
            }
        }
        if !self.codec.is_empty() {
            let mut codec = Dictionary::new();
            for (operation, name) in &self.codec {
                let entry = codec
                    .entry(Bytes::from(operation.clone()))
                    .or_insert_with(|| Value::List(Vec::new()));
                if let Value::List(names) = entry {
                    names.push(name.as_str().into());
                }
            }
            put("codec", Value::Dictionary(codec));
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

/// `dict` with the keys and flags of an `rtpp_flags` string added: space-separated items, each
/// a flag (`replace-origin`), `key=value`, or `key=[item …]` where items may nest
/// (`codec=[strip=[PCMA G729] offer=[PCMU]]`).
fn merge_rtpp_flags(dict: &Dictionary, text: &str) -> Result<Dictionary, NgError> {
    const INVALID: NgError = NgError::InvalidValue {
        key: "rtpp_flags",
        reason: "unbalanced brackets",
    };
    /// Parses items until the end or a closing bracket.
    fn items<'a>(
        tokens: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
        nested: bool,
    ) -> Result<Vec<(Option<String>, Value)>, NgError> {
        let mut out = Vec::new();
        while let Some(token) = tokens.next() {
            match token {
                "]" if nested => return Ok(out),
                "]" | "[" => return Err(INVALID),
                _ => {}
            }
            match token.split_once('=') {
                Some((key, "")) if tokens.peek() == Some(&"[") => {
                    tokens.next();
                    let inner = items(tokens, true)?;
                    let value = if inner.iter().all(|(k, _)| k.is_none()) {
                        Value::List(inner.into_iter().map(|(_, v)| v).collect())
                    } else {
                        Value::Dictionary(
                            inner
                                .into_iter()
                                .map(|(k, v)| (Bytes::from(k.unwrap_or_default()), v))
                                .collect(),
                        )
                    };
                    out.push((Some(key.to_owned()), value));
                }
                Some((key, value)) => out.push((Some(key.to_owned()), value.into())),
                None => out.push((None, token.into())),
            }
        }
        if nested { Err(INVALID) } else { Ok(out) }
    }
    // Brackets are tokens of their own.
    let spaced = text.replace('[', " [ ").replace(']', " ] ");
    let mut tokens = spaced.split_whitespace().peekable();
    let mut merged = dict.clone();
    let mut flags: Vec<Value> = match merged.remove(&b"flags"[..]) {
        Some(Value::List(list)) => list,
        Some(other) => vec![other],
        None => Vec::new(),
    };
    for (key, value) in items(&mut tokens, false)? {
        match key {
            None => flags.push(value),
            Some(key) => {
                let spaced_key = Bytes::from(key.replace('-', " "));
                let hyphen_key = Bytes::from(key.replace(' ', "-"));
                if !merged.contains_key(&spaced_key) && !merged.contains_key(&hyphen_key) {
                    merged.insert(hyphen_key, value);
                }
            }
        }
    }
    if !flags.is_empty() {
        merged.insert(Bytes::from_static(b"flags"), Value::List(flags));
    }
    merged.remove(&b"rtpp_flags"[..]);
    merged.remove(&b"rtpp-flags"[..]);
    merged.remove(&b"rtpp flags"[..]);
    Ok(merged)
}

/// An integer key; some clients send numbers as strings, and rtpengine accepts both.
fn integer_key(dict: &Dictionary, key: &'static str) -> Result<Option<i64>, NgError> {
    match lookup(dict, key) {
        None => Ok(None),
        Some(Value::Integer(i)) => Ok(Some(*i)),
        Some(v @ Value::Bytes(_)) => v
            .as_str()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(Some)
            .ok_or(NgError::InvalidValue {
                key,
                reason: "not an integer",
            }),
        Some(v) => Err(NgError::WrongType {
            key,
            expected: "an integer",
            found: v.type_name(),
        }),
    }
}

/// A key that may hold one string or a list of strings (rtpengine accepts both for `ICE`,
/// `rtcp-mux`, `SDES` and the codec lists).
fn string_or_list_key(dict: &Dictionary, key: &'static str) -> Result<Vec<String>, NgError> {
    match lookup(dict, key) {
        Some(Value::Bytes(_)) => Ok(string_key(dict, key)?.into_iter().collect()),
        _ => string_list_key(dict, key),
    }
}

/// The `codec` dictionary: `{<operation>: [<codec>, …] | <codec>}`.
fn codec_key(dict: &Dictionary) -> Result<Vec<(String, String)>, NgError> {
    let Some(v) = lookup(dict, "codec") else {
        return Ok(Vec::new());
    };
    let codec = v.as_dictionary().ok_or(NgError::WrongType {
        key: "codec",
        expected: "a dictionary",
        found: v.type_name(),
    })?;
    let mut operations = Vec::new();
    for operation in codec.keys() {
        let name = std::str::from_utf8(operation).map_err(|_| NgError::NotUtf8("codec"))?;
        let items = match codec.get(operation) {
            Some(Value::Bytes(b)) => vec![
                std::str::from_utf8(b)
                    .map_err(|_| NgError::NotUtf8("codec"))?
                    .to_owned(),
            ],
            Some(Value::List(list)) => list
                .iter()
                .map(|item| {
                    item.as_str().map(str::to_owned).ok_or(NgError::WrongType {
                        key: "codec",
                        expected: "lists of strings",
                        found: item.type_name(),
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(NgError::WrongType {
                    key: "codec",
                    expected: "lists of strings",
                    found: other.type_name(),
                });
            }
            None => Vec::new(),
        };
        operations.extend(items.into_iter().map(|c| (name.to_ascii_lowercase(), c)));
    }
    Ok(operations)
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
            {
                let mut r = Request::offer("c2", "f2", "v=0\r\n");
                r.transport_protocol = Some("RTP/AVP".into());
                r.rtcp_mux = vec!["offer".into(), "demux".into()];
                r.sdes = vec!["off".into()];
                r.codec = vec![
                    ("mask".into(), "opus".into()),
                    ("strip".into(), "PCMA".into()),
                    ("strip".into(), "G722".into()),
                ];
                r.address_family = Some("IP4".into());
                r.set_label = Some("s".into());
                r.to_label = Some("t".into());
                r.delete_delay = Some(0);
                r.record_call = Some("no".into());
                r.metadata = Some("m".into());
                r.dtmf_log_dest = Some("10.0.0.7:5095".into());
                r.all = Some("all".into());
                r.address = Some("192.0.2.1".into());
                r.code = Some("5".into());
                r.duration = Some(300);
                r.volume = Some(10);
                r
            },
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
    fn unknown_keys_and_values_are_kept_to_be_reported() {
        let r =
            parse(b"d7:command5:offer7:replacel5:bogus8:usernamee3:ICE5:weird5:xyzzyi1ee").unwrap();
        assert_eq!(
            r.replace,
            vec![Replace::Other("bogus".into()), Replace::Username]
        );
        assert_eq!(r.ice, Some(Ice::Other("weird".into())));
        assert_eq!(r.unknown_keys, vec!["xyzzy"]);
        // Known keys in either spelling, and informational keys, are not unknown.
        let r = parse(b"d7:command5:offer8:supportsl10:load limite12:delete delayi5e18:transport-protocol7:RTP/AVPe")
            .unwrap();
        assert!(r.unknown_keys.is_empty(), "{:?}", r.unknown_keys);
        assert_eq!(r.delete_delay, Some(5));
        assert_eq!(r.transport_protocol.as_deref(), Some("RTP/AVP"));
    }

    #[test]
    fn parses_the_offer_options_of_kamailio_and_opensips() {
        let payload = b"d7:command5:offer3:ICEl5:force5:lite-e8:rtcp-muxl5:demuxe\
            4:SDESl3:offe5:codecd5:stripl4:PCMA4:G729e5:offer4:PCMU9:transcodel3:G72ee\
            14:address family3:IP69:set-label1:x8:to-label1:y11:record call3:yes\
            8:metadata3:k:v3:all3:all7:address8:10.0.0.14:code1:#\
            5:flagsl15:codec-mask-opus13:strict sourceee";
        let r = parse(payload).unwrap();
        assert_eq!(r.ice, Some(Ice::Force));
        assert_eq!(r.unknown_keys, vec!["ICE=lite-"]);
        assert_eq!(r.rtcp_mux, vec!["demux"]);
        assert_eq!(r.sdes, vec!["off"]);
        assert_eq!(r.address_family.as_deref(), Some("IP6"));
        assert_eq!(r.set_label.as_deref(), Some("x"));
        assert_eq!(r.to_label.as_deref(), Some("y"));
        assert_eq!(r.record_call.as_deref(), Some("yes"));
        assert_eq!(r.metadata.as_deref(), Some("k:v"));
        assert_eq!(r.all.as_deref(), Some("all"));
        assert_eq!(r.address.as_deref(), Some("10.0.0.1"));
        assert_eq!(r.code.as_deref(), Some("#"));
        let ops = r.codec_operations();
        let pairs: Vec<(&str, &str)> = ops.iter().map(|(o, c)| (o.as_str(), c.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("offer", "PCMU"),
                ("strip", "PCMA"),
                ("strip", "G729"),
                ("transcode", "G72"),
                ("mask", "opus"),
            ]
        );
        assert!(r.has_flag("strict-source"));
        // `from-label` is `label`; integers may be digits in a string.
        let r = parse(b"d7:command5:offer10:from-label1:a12:delete-delay1:7e").unwrap();
        assert_eq!(r.label.as_deref(), Some("a"));
        assert_eq!(r.delete_delay, Some(7));
        assert!(matches!(
            parse(b"d7:command5:offer5:codecl1:xee").unwrap_err(),
            NgError::WrongType { key: "codec", .. }
        ));
        let r = parse(b"d7:command10:block DTMF4:codei3ee").unwrap();
        assert_eq!(r.command, Command::BlockDtmf);
        assert_eq!(r.code.as_deref(), Some("3"));
    }

    #[test]
    fn rtpp_flags_mean_what_the_same_keys_mean() {
        let flags = "replace-origin via-branch=auto-next strict-source label=callee \
            transport-protocol=RTP/AVP address-family=IP4 ICE=remove rtcp-mux=[demux] \
            codec=[strip=[PCMA G729] offer=[PCMU]]";
        let payload = format!(
            "d7:command5:offer5:flagsl13:trust-addresse10:rtpp_flags{}:{flags}5:label3:ownee",
            flags.len()
        );
        let r = parse(payload.as_bytes()).unwrap();
        assert!(r.unknown_keys.is_empty(), "{:?}", r.unknown_keys);
        assert_eq!(
            r.flags,
            vec!["trust-address", "replace-origin", "strict-source"]
        );
        assert_eq!(r.via_branch.as_deref(), Some("auto-next"));
        assert_eq!(r.label.as_deref(), Some("own"), "bencode keys win");
        assert_eq!(r.transport_protocol.as_deref(), Some("RTP/AVP"));
        assert_eq!(r.address_family.as_deref(), Some("IP4"));
        assert_eq!(r.ice, Some(Ice::Remove));
        assert_eq!(r.rtcp_mux, vec!["demux"]);
        let codec: Vec<(&str, &str)> = r
            .codec
            .iter()
            .map(|(o, c)| (o.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            codec,
            vec![("offer", "PCMU"), ("strip", "PCMA"), ("strip", "G729")]
        );
        let bad = "d7:command5:offer10:rtpp_flags9:codec=[a=e";
        assert!(matches!(
            parse(bad.as_bytes()).unwrap_err(),
            NgError::InvalidValue {
                key: "rtpp_flags",
                ..
            }
        ));
        let bad = "d7:command5:offer10:rtpp_flags2:a]e";
        assert!(parse(bad.as_bytes()).is_err());
    }

    #[test]
    fn every_command_round_trips_its_wire_name() {
        for command in Command::ALL {
            assert_eq!(command.as_str().parse::<Command>().unwrap(), command);
        }
        assert_eq!(
            "Block-Media".parse::<Command>().unwrap(),
            Command::BlockMedia
        );
        assert!(!Command::List.is_call_command());
        assert!(Command::PlayDtmf.is_call_command());
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
