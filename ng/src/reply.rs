//! ng replies: `{"result": "ok" | "pong" | "error" | …, …}`.
//!
//! A reply is a dictionary with a `result`; errors carry `error-reason` and nothing else, `ok`
//! may carry a `warning` and command-specific keys (`sdp`, `calls`, query and statistics
//! reports). The typed accessors cover what clients need; everything else stays reachable
//! through [`Reply::get`].

use std::fmt;

use bytes::Bytes;

use crate::bencode::{Dictionary, Value};
use crate::error::NgError;
use crate::frame::{self, Cookie};

/// The `result` of a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyResult {
    /// The command succeeded.
    Ok,
    /// Answer to `ping`.
    Pong,
    /// The command failed; see [`Reply::error_reason`].
    Error,
    /// rtpengine's `load limit` result (only sent to clients that announce support for it).
    LoadLimit,
    /// Any other value.
    Other(String),
}

impl ReplyResult {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            ReplyResult::Ok => "ok",
            ReplyResult::Pong => "pong",
            ReplyResult::Error => "error",
            ReplyResult::LoadLimit => "load limit",
            ReplyResult::Other(s) => s,
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "ok" => ReplyResult::Ok,
            "pong" => ReplyResult::Pong,
            "error" => ReplyResult::Error,
            "load limit" => ReplyResult::LoadLimit,
            other => ReplyResult::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for ReplyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reply dictionary with typed access to its common keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    result: ReplyResult,
    body: Dictionary,
}

impl Reply {
    fn with_result(result: ReplyResult) -> Self {
        let mut body = Dictionary::new();
        body.insert(Bytes::from_static(b"result"), result.as_str().into());
        Self { result, body }
    }

    /// `{"result": "ok"}`.
    pub fn ok() -> Self {
        Self::with_result(ReplyResult::Ok)
    }

    /// `{"result": "pong"}`.
    pub fn pong() -> Self {
        Self::with_result(ReplyResult::Pong)
    }

    /// `{"result": "error", "error-reason": reason}`.
    pub fn error(reason: impl Into<String>) -> Self {
        Self::with_result(ReplyResult::Error).with("error-reason", reason.into())
    }

    /// Adds or replaces a key (builder style). Setting `result` is ignored: use the
    /// constructors.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.insert(key, value);
        self
    }

    /// Adds or replaces a key. Setting `result` is ignored: use the constructors.
    pub fn insert(&mut self, key: &str, value: impl Into<Value>) {
        if key != "result" {
            self.body
                .insert(Bytes::copy_from_slice(key.as_bytes()), value.into());
        }
    }

    /// Adds every entry of `entries` (e.g. a query report).
    pub fn extend(&mut self, entries: Dictionary) {
        for (k, v) in entries {
            if k.as_ref() != b"result" {
                self.body.insert(k, v);
            }
        }
    }

    /// The `result`.
    pub fn result(&self) -> &ReplyResult {
        &self.result
    }

    /// Whether `result` is `ok` or `pong`.
    pub fn is_success(&self) -> bool {
        matches!(self.result, ReplyResult::Ok | ReplyResult::Pong)
    }

    /// Whether `result` is `error`.
    pub fn is_error(&self) -> bool {
        self.result == ReplyResult::Error
    }

    /// `error-reason`, present on errors.
    pub fn error_reason(&self) -> Option<&str> {
        self.get("error-reason").and_then(Value::as_str)
    }

    /// `warning`, a non-fatal problem reported with `ok`.
    pub fn warning(&self) -> Option<&str> {
        self.get("warning").and_then(Value::as_str)
    }

    /// `sdp`, the rewritten body of an offer or answer reply.
    pub fn sdp(&self) -> Option<&[u8]> {
        self.get("sdp").and_then(Value::as_bytes).map(|b| &b[..])
    }

    /// `calls`, the call-ids of a `list` reply; empty when absent (entries that are not text
    /// are skipped).
    pub fn calls(&self) -> Vec<&str> {
        self.get("calls")
            .and_then(Value::as_list)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// Any key of the reply.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.body.get(key.as_bytes())
    }

    /// The whole reply dictionary.
    pub fn body(&self) -> &Dictionary {
        &self.body
    }

    /// The reply as a bencode value.
    pub fn to_value(&self) -> Value {
        Value::Dictionary(self.body.clone())
    }

    /// The reply as a datagram with `cookie`.
    pub fn encode(&self, cookie: impl AsRef<[u8]>) -> Vec<u8> {
        frame::frame(cookie, &Value::Dictionary(self.body.clone()))
    }

    /// Interprets a decoded dictionary as a reply.
    pub fn from_value(value: Value) -> Result<Self, NgError> {
        let found = value.type_name();
        let Value::Dictionary(body) = value else {
            return Err(NgError::NotADictionary { found });
        };
        let result = match body.get(&b"result"[..]) {
            None => return Err(NgError::MissingResult),
            Some(v) => {
                let s = v.as_str().ok_or(NgError::WrongType {
                    key: "result",
                    expected: "a string",
                    found: v.type_name(),
                })?;
                ReplyResult::parse(s)
            }
        };
        Ok(Self { result, body })
    }

    /// Parses a reply datagram into its cookie and reply.
    pub fn decode(datagram: &[u8]) -> Result<(Cookie, Self), NgError> {
        let (cookie, value) = frame::parse_datagram(datagram)?;
        Ok((cookie, Self::from_value(value)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pong_fixture() {
        assert_eq!(Reply::pong().encode("5323_1"), b"5323_1 d6:result4:ponge");
        let (cookie, r) = Reply::decode(b"5323_1 d6:result4:ponge").unwrap();
        assert_eq!(cookie, "5323_1");
        assert_eq!(r.result(), &ReplyResult::Pong);
        assert!(r.is_success());
    }

    #[test]
    fn error_shape_matches_rtpengine() {
        let wire = Reply::error("Unknown call-id").encode("x");
        assert_eq!(
            wire,
            b"x d12:error-reason15:Unknown call-id6:result5:errore"
        );
        let (_, r) = Reply::decode(&wire).unwrap();
        assert_eq!(r.result(), &ReplyResult::Error);
        assert_eq!(r.error_reason(), Some("Unknown call-id"));
        assert!(!r.is_success());
        assert!(r.is_error());
    }

    #[test]
    fn ok_with_sdp_and_calls() {
        let r = Reply::ok()
            .with("sdp", "v=0\r\n")
            .with("calls", vec![Value::from("a"), Value::from("b")]);
        let (_, back) = Reply::decode(&r.encode("1")).unwrap();
        assert_eq!(back.sdp(), Some(&b"v=0\r\n"[..]));
        assert_eq!(back.calls(), vec!["a", "b"]);
        assert!(Reply::ok().calls().is_empty());
        assert_eq!(back, r);
    }

    #[test]
    fn result_cannot_be_overwritten_by_insert() {
        let r = Reply::ok().with("result", "error");
        assert_eq!(r.get("result").and_then(Value::as_str), Some("ok"));
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert_eq!(
            Reply::decode(b"1 d3:sdp1:xe").unwrap_err(),
            NgError::MissingResult
        );
        assert!(matches!(
            Reply::decode(b"1 d6:resulti0ee").unwrap_err(),
            NgError::WrongType { key: "result", .. }
        ));
        assert_eq!(
            Reply::decode(b"1 i0e").unwrap_err(),
            NgError::NotADictionary { found: "integer" }
        );
        assert_eq!(
            Reply::decode(b"1 d6:result10:load limite")
                .unwrap()
                .1
                .result(),
            &ReplyResult::LoadLimit
        );
    }
}
