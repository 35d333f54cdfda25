//! Bencode: the value model, a bounded decoder and a canonical encoder.
//!
//! The ng protocol carries one bencoded dictionary per datagram. The decoder is strict about the
//! grammar (no leading zeros, no `-0`, byte-string keys) but, like rtpengine, does not insist that
//! dictionary keys arrive sorted. It refuses input that would cost unbounded memory or stack: a
//! nesting limit stops "list bomb" payloads such as `llllllll…` and a size limit caps the input.
//! The encoder always writes dictionary keys in sorted order, so equal values encode to equal
//! bytes.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

/// A bencoded dictionary. Keys are raw byte strings; the map keeps them sorted, which is the
/// order bencode requires on the wire.
pub type Dictionary = BTreeMap<Bytes, Value>;

/// One bencode value.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// A byte string (`4:spam`). Not necessarily UTF-8.
    Bytes(Bytes),
    /// A signed 64-bit integer (`i42e`).
    Integer(i64),
    /// A list (`l…e`).
    List(Vec<Value>),
    /// A dictionary (`d…e`).
    Dictionary(Dictionary),
}

impl Value {
    /// A byte string value holding `s`.
    pub fn string(s: impl Into<String>) -> Self {
        Value::Bytes(Bytes::from(s.into()))
    }

    /// An empty dictionary value.
    pub fn dictionary() -> Self {
        Value::Dictionary(Dictionary::new())
    }

    /// The name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Bytes(_) => "string",
            Value::Integer(_) => "integer",
            Value::List(_) => "list",
            Value::Dictionary(_) => "dictionary",
        }
    }

    /// The raw bytes of a byte string.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// A byte string as UTF-8 text; `None` for other types or invalid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The value of an integer.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Value::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    /// The entries of a dictionary.
    pub fn as_dictionary(&self) -> Option<&Dictionary> {
        match self {
            Value::Dictionary(d) => Some(d),
            _ => None,
        }
    }

    /// Looks `key` up when this value is a dictionary.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_dictionary()
            .and_then(|d| d.get(key.as_bytes() as &[u8]))
    }

    /// Encodes this value into a fresh buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode(self, &mut out);
        out
    }
}

impl fmt::Debug for Value {
    // Byte strings print as text when they are text: ng messages are mostly ASCII and raw byte
    // arrays make test failures unreadable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bytes(b) => match std::str::from_utf8(b) {
                Ok(s) => write!(f, "{s:?}"),
                Err(_) => write!(f, "{b:?}"),
            },
            Value::Integer(i) => write!(f, "{i}"),
            Value::List(l) => f.debug_list().entries(l).finish(),
            Value::Dictionary(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (String::from_utf8_lossy(k), v)))
                .finish(),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Bytes(Bytes::from(s))
    }
}

impl From<Bytes> for Value {
    fn from(b: Bytes) -> Self {
        Value::Bytes(b)
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Bytes(Bytes::copy_from_slice(b))
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Integer(i)
    }
}

impl From<u16> for Value {
    fn from(i: u16) -> Self {
        Value::Integer(i64::from(i))
    }
}

impl From<u32> for Value {
    fn from(i: u32) -> Self {
        Value::Integer(i64::from(i))
    }
}

impl From<u64> for Value {
    /// Saturates at `i64::MAX`: bencode integers in the ng protocol are signed 64-bit.
    fn from(i: u64) -> Self {
        Value::Integer(i64::try_from(i).unwrap_or(i64::MAX))
    }
}

impl From<Vec<Value>> for Value {
    fn from(l: Vec<Value>) -> Self {
        Value::List(l)
    }
}

impl From<Dictionary> for Value {
    fn from(d: Dictionary) -> Self {
        Value::Dictionary(d)
    }
}

/// Bounds applied while decoding untrusted input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of lists and dictionaries accepted (the top-level value is depth 1).
    pub max_depth: usize,
    /// Largest input accepted, in bytes.
    pub max_input: usize,
}

impl Default for Limits {
    /// 32 levels (ng messages use 5 at most) and 1 MiB (a UDP datagram is below 64 KiB; TCP or
    /// HTTP transports may carry more).
    fn default() -> Self {
        Self {
            max_depth: 32,
            max_input: 1 << 20,
        }
    }
}

/// What went wrong while decoding, and at which byte offset of the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct BencodeError {
    /// Offset into the input where the problem was found.
    pub offset: usize,
    /// The problem.
    pub kind: BencodeErrorKind,
}

/// The kinds of bencode decoding failures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BencodeErrorKind {
    /// The input ended inside a value.
    #[error("input ends inside {inside}")]
    UnexpectedEnd {
        /// What was being decoded.
        inside: &'static str,
    },
    /// A byte that cannot start or continue the value being decoded.
    #[error("unexpected byte {found:?} in {inside}")]
    UnexpectedByte {
        /// The offending byte, shown as a character where printable.
        found: char,
        /// What was being decoded.
        inside: &'static str,
    },
    /// An integer or string length without digits.
    #[error("missing digits in {inside}")]
    NoDigits {
        /// What was being decoded.
        inside: &'static str,
    },
    /// A number with a superfluous leading zero (`i03e`, `03:abc`).
    #[error("leading zero in {inside}")]
    LeadingZero {
        /// What was being decoded.
        inside: &'static str,
    },
    /// The integer `-0`, which bencode forbids.
    #[error("negative zero integer")]
    NegativeZero,
    /// An integer that does not fit in 64 bits.
    #[error("integer out of the 64-bit range")]
    IntegerOverflow,
    /// A string length that does not fit in memory.
    #[error("string length out of range")]
    LengthOverflow,
    /// A string whose declared length runs past the end of the input.
    #[error("string length {declared} exceeds the {remaining} bytes remaining")]
    StringTooLong {
        /// The declared length.
        declared: usize,
        /// Bytes left after the `:`.
        remaining: usize,
    },
    /// Lists and dictionaries nested deeper than [`Limits::max_depth`].
    #[error("nesting deeper than {limit} levels")]
    TooDeep {
        /// The configured limit.
        limit: usize,
    },
    /// Input larger than [`Limits::max_input`].
    #[error("input of {len} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// Input length.
        len: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A dictionary key that is not a byte string.
    #[error("dictionary key is not a string")]
    NonStringKey,
    /// The same key twice in one dictionary.
    #[error("duplicate dictionary key {0:?}")]
    DuplicateKey(String),
    /// Bytes left after a complete top-level value where none were expected.
    #[error("{0} unexpected bytes after the value")]
    TrailingData(usize),
    /// Empty input.
    #[error("empty input")]
    Empty,
}

/// Decodes one value from the start of `input` with the default [`Limits`].
///
/// Returns the value and the number of bytes it occupied; anything after it is left to the
/// caller.
pub fn decode(input: &[u8]) -> Result<(Value, usize), BencodeError> {
    decode_with(input, Limits::default())
}

/// Decodes one value from the start of `input` within `limits`.
pub fn decode_with(input: &[u8], limits: Limits) -> Result<(Value, usize), BencodeError> {
    if input.len() > limits.max_input {
        return Err(BencodeError {
            offset: 0,
            kind: BencodeErrorKind::TooLarge {
                len: input.len(),
                limit: limits.max_input,
            },
        });
    }
    if input.is_empty() {
        return Err(BencodeError {
            offset: 0,
            kind: BencodeErrorKind::Empty,
        });
    }
    let mut decoder = Decoder {
        input,
        pos: 0,
        limits,
    };
    let value = decoder.value(1)?;
    Ok((value, decoder.pos))
}

/// Decodes `input`, which must hold exactly one value (trailing ASCII whitespace is tolerated,
/// as some senders end datagrams with a newline).
pub fn decode_exact(input: &[u8], limits: Limits) -> Result<Value, BencodeError> {
    let (value, used) = decode_with(input, limits)?;
    let rest = input.get(used..).unwrap_or_default();
    if rest.iter().all(u8::is_ascii_whitespace) {
        Ok(value)
    } else {
        Err(BencodeError {
            offset: used,
            kind: BencodeErrorKind::TrailingData(rest.len()),
        })
    }
}

struct Decoder<'a> {
    input: &'a [u8],
    pos: usize,
    limits: Limits,
}

impl Decoder<'_> {
    fn err(&self, kind: BencodeErrorKind) -> BencodeError {
        BencodeError {
            offset: self.pos,
            kind,
        }
    }

    fn peek(&self, inside: &'static str) -> Result<u8, BencodeError> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err(BencodeErrorKind::UnexpectedEnd { inside }))
    }

    fn value(&mut self, depth: usize) -> Result<Value, BencodeError> {
        match self.peek("a value")? {
            b'i' => {
                self.pos += 1;
                self.integer().map(Value::Integer)
            }
            b'0'..=b'9' => self.byte_string().map(Value::Bytes),
            b'l' => {
                self.enter(depth)?;
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek("a list")? == b'e' {
                        self.pos += 1;
                        return Ok(Value::List(items));
                    }
                    items.push(self.value(depth + 1)?);
                }
            }
            b'd' => {
                self.enter(depth)?;
                self.pos += 1;
                let mut dict = Dictionary::new();
                loop {
                    let b = self.peek("a dictionary")?;
                    if b == b'e' {
                        self.pos += 1;
                        return Ok(Value::Dictionary(dict));
                    }
                    if !b.is_ascii_digit() {
                        return Err(self.err(BencodeErrorKind::NonStringKey));
                    }
                    let key_at = self.pos;
                    let key = self.byte_string()?;
                    let value = self.value(depth + 1)?;
                    if dict.contains_key(&key) {
                        return Err(BencodeError {
                            offset: key_at,
                            kind: BencodeErrorKind::DuplicateKey(
                                String::from_utf8_lossy(&key).into_owned(),
                            ),
                        });
                    }
                    dict.insert(key, value);
                }
            }
            other => Err(self.err(BencodeErrorKind::UnexpectedByte {
                found: char::from(other),
                inside: "a value",
            })),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), BencodeError> {
        if depth > self.limits.max_depth {
            Err(self.err(BencodeErrorKind::TooDeep {
                limit: self.limits.max_depth,
            }))
        } else {
            Ok(())
        }
    }

    /// Parses `[-]digits e` after the `i`.
    fn integer(&mut self) -> Result<i64, BencodeError> {
        const INSIDE: &str = "an integer";
        let negative = self.peek(INSIDE)? == b'-';
        if negative {
            self.pos += 1;
        }
        let digits_at = self.pos;
        // Accumulate negatively so that i64::MIN is representable.
        let mut value: i64 = 0;
        loop {
            let b = self.peek(INSIDE)?;
            match b {
                b'0'..=b'9' => {
                    if self.pos > digits_at && self.input.get(digits_at) == Some(&b'0') {
                        return Err(BencodeError {
                            offset: digits_at,
                            kind: BencodeErrorKind::LeadingZero { inside: INSIDE },
                        });
                    }
                    value = value
                        .checked_mul(10)
                        .and_then(|v| v.checked_sub(i64::from(b - b'0')))
                        .ok_or_else(|| self.err(BencodeErrorKind::IntegerOverflow))?;
                    self.pos += 1;
                }
                b'e' => {
                    if self.pos == digits_at {
                        return Err(self.err(BencodeErrorKind::NoDigits { inside: INSIDE }));
                    }
                    self.pos += 1;
                    if negative {
                        if value == 0 {
                            return Err(BencodeError {
                                offset: digits_at,
                                kind: BencodeErrorKind::NegativeZero,
                            });
                        }
                        return Ok(value);
                    }
                    return value
                        .checked_neg()
                        .ok_or_else(|| self.err(BencodeErrorKind::IntegerOverflow));
                }
                other => {
                    return Err(self.err(BencodeErrorKind::UnexpectedByte {
                        found: char::from(other),
                        inside: INSIDE,
                    }));
                }
            }
        }
    }

    /// Parses `length:bytes`.
    fn byte_string(&mut self) -> Result<Bytes, BencodeError> {
        const INSIDE: &str = "a string length";
        let digits_at = self.pos;
        let mut len: usize = 0;
        loop {
            let b = self.peek(INSIDE)?;
            match b {
                b'0'..=b'9' => {
                    if self.pos > digits_at && self.input.get(digits_at) == Some(&b'0') {
                        return Err(BencodeError {
                            offset: digits_at,
                            kind: BencodeErrorKind::LeadingZero { inside: INSIDE },
                        });
                    }
                    len = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(usize::from(b - b'0')))
                        .ok_or_else(|| self.err(BencodeErrorKind::LengthOverflow))?;
                    self.pos += 1;
                }
                b':' => {
                    if self.pos == digits_at {
                        return Err(self.err(BencodeErrorKind::NoDigits { inside: INSIDE }));
                    }
                    self.pos += 1;
                    break;
                }
                other => {
                    return Err(self.err(BencodeErrorKind::UnexpectedByte {
                        found: char::from(other),
                        inside: INSIDE,
                    }));
                }
            }
        }
        let remaining = self.input.len() - self.pos;
        if len > remaining {
            return Err(BencodeError {
                offset: digits_at,
                kind: BencodeErrorKind::StringTooLong {
                    declared: len,
                    remaining,
                },
            });
        }
        let bytes = Bytes::copy_from_slice(&self.input[self.pos..self.pos + len]);
        self.pos += len;
        Ok(bytes)
    }
}

/// Appends the bencoding of `value` to `out`. Dictionary keys come out sorted.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bytes(b) => encode_bytes(b, out),
        Value::Integer(i) => {
            out.push(b'i');
            out.extend_from_slice(i.to_string().as_bytes());
            out.push(b'e');
        }
        Value::List(items) => {
            out.push(b'l');
            for item in items {
                encode(item, out);
            }
            out.push(b'e');
        }
        Value::Dictionary(dict) => {
            out.push(b'd');
            for (key, item) in dict {
                encode_bytes(key, out);
                encode(item, out);
            }
            out.push(b'e');
        }
    }
}

fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(entries: &[(&str, Value)]) -> Value {
        Value::Dictionary(
            entries
                .iter()
                .map(|(k, v)| (Bytes::copy_from_slice(k.as_bytes()), v.clone()))
                .collect(),
        )
    }

    fn kind_of(input: &[u8]) -> BencodeErrorKind {
        decode(input).unwrap_err().kind
    }

    #[test]
    fn decodes_each_type() {
        assert_eq!(decode(b"4:spam").unwrap(), (Value::from("spam"), 6));
        assert_eq!(decode(b"0:").unwrap(), (Value::from(""), 2));
        assert_eq!(decode(b"i42e").unwrap(), (Value::Integer(42), 4));
        assert_eq!(decode(b"i-42e").unwrap(), (Value::Integer(-42), 5));
        assert_eq!(decode(b"i0e").unwrap(), (Value::Integer(0), 3));
        assert_eq!(
            decode(b"l4:spami7ee").unwrap().0,
            Value::List(vec![Value::from("spam"), Value::Integer(7)])
        );
        assert_eq!(
            decode(b"d3:cow3:moo4:spam4:eggse").unwrap().0,
            dict(&[("cow", "moo".into()), ("spam", "eggs".into())])
        );
    }

    #[test]
    fn decodes_integer_extremes() {
        assert_eq!(
            decode(b"i9223372036854775807e").unwrap().0,
            Value::Integer(i64::MAX)
        );
        assert_eq!(
            decode(b"i-9223372036854775808e").unwrap().0,
            Value::Integer(i64::MIN)
        );
    }

    #[test]
    fn reports_consumed_length_and_leaves_the_rest() {
        let (v, used) = decode(b"i1ei2e").unwrap();
        assert_eq!(v, Value::Integer(1));
        assert_eq!(used, 3);
    }

    #[test]
    fn accepts_unsorted_keys_like_rtpengine() {
        let v = decode(b"d4:spam4:eggs3:cow3:mooe").unwrap().0;
        assert_eq!(v.get("cow").and_then(Value::as_str), Some("moo"));
    }

    #[test]
    fn encodes_keys_sorted() {
        let v = decode(b"d4:spam4:eggs3:cow3:mooe").unwrap().0;
        assert_eq!(v.to_vec(), b"d3:cow3:moo4:spam4:eggse");
    }

    #[test]
    fn round_trips_nested_values() {
        let v = dict(&[
            ("command", "offer".into()),
            (
                "flags",
                Value::List(vec!["trust-address".into(), "symmetric".into()]),
            ),
            ("n", Value::Integer(-17)),
            (
                "nested",
                dict(&[("inner", Value::List(vec![Value::dictionary()]))]),
            ),
            ("bin", Value::from(&[0u8, 255, 10, 13][..])),
        ]);
        let bytes = v.to_vec();
        assert_eq!(decode(&bytes).unwrap(), (v, bytes.len()));
    }

    #[test]
    fn truncated_input_is_an_error_with_position() {
        let e = decode(b"d7:command4:pin").unwrap_err();
        assert_eq!(e.offset, 10);
        assert!(matches!(
            e.kind,
            BencodeErrorKind::StringTooLong {
                declared: 4,
                remaining: 3
            }
        ));
        assert!(e.to_string().contains("at byte 10"), "{e}");
        assert!(matches!(
            kind_of(b"d7:command4:ping"),
            BencodeErrorKind::UnexpectedEnd {
                inside: "a dictionary"
            }
        ));
        assert!(matches!(
            kind_of(b"l"),
            BencodeErrorKind::UnexpectedEnd { .. }
        ));
        assert!(matches!(
            kind_of(b"i12"),
            BencodeErrorKind::UnexpectedEnd { .. }
        ));
        assert!(matches!(
            kind_of(b"12"),
            BencodeErrorKind::UnexpectedEnd { .. }
        ));
        assert_eq!(kind_of(b""), BencodeErrorKind::Empty);
    }

    #[test]
    fn bad_lengths_and_integers_are_errors() {
        assert!(matches!(
            kind_of(b"99999:abc"),
            BencodeErrorKind::StringTooLong {
                declared: 99999,
                remaining: 3
            }
        ));
        assert_eq!(
            kind_of(b"99999999999999999999999999:x"),
            BencodeErrorKind::LengthOverflow
        );
        assert!(matches!(
            kind_of(b"03:abc"),
            BencodeErrorKind::LeadingZero { .. }
        ));
        assert!(matches!(
            kind_of(b":abc"),
            BencodeErrorKind::UnexpectedByte { .. }
        ));
        assert!(matches!(
            kind_of(b"3x:abc"),
            BencodeErrorKind::UnexpectedByte { .. }
        ));
        assert!(matches!(
            kind_of(b"i03e"),
            BencodeErrorKind::LeadingZero { .. }
        ));
        assert!(matches!(kind_of(b"ie"), BencodeErrorKind::NoDigits { .. }));
        assert!(matches!(kind_of(b"i-e"), BencodeErrorKind::NoDigits { .. }));
        assert_eq!(kind_of(b"i-0e"), BencodeErrorKind::NegativeZero);
        assert!(matches!(
            kind_of(b"i1.5e"),
            BencodeErrorKind::UnexpectedByte { .. }
        ));
        assert_eq!(
            kind_of(b"i9223372036854775808e"),
            BencodeErrorKind::IntegerOverflow
        );
        assert_eq!(
            kind_of(b"i99999999999999999999999e"),
            BencodeErrorKind::IntegerOverflow
        );
        assert!(matches!(
            kind_of(b"x"),
            BencodeErrorKind::UnexpectedByte { found: 'x', .. }
        ));
    }

    #[test]
    fn dictionary_keys_must_be_unique_strings() {
        assert_eq!(kind_of(b"di1e1:ae"), BencodeErrorKind::NonStringKey);
        assert_eq!(
            kind_of(b"d1:ai1e1:ai2ee"),
            BencodeErrorKind::DuplicateKey("a".into())
        );
    }

    #[test]
    fn nesting_bomb_is_refused_without_overflowing_the_stack() {
        let bomb = vec![b'l'; 100_000];
        assert_eq!(kind_of(&bomb), BencodeErrorKind::TooDeep { limit: 32 });
        let mut dict_bomb = Vec::new();
        for _ in 0..1000 {
            dict_bomb.extend_from_slice(b"d1:a");
        }
        assert_eq!(kind_of(&dict_bomb), BencodeErrorKind::TooDeep { limit: 32 });
        // Exactly at the limit is fine.
        let mut ok = vec![b'l'; 32];
        ok.extend(vec![b'e'; 32]);
        assert!(decode(&ok).is_ok());
        let mut over = vec![b'l'; 33];
        over.extend(vec![b'e'; 33]);
        assert!(decode(&over).is_err());
    }

    #[test]
    fn oversized_input_is_refused() {
        let limits = Limits {
            max_depth: 4,
            max_input: 8,
        };
        assert_eq!(
            decode_with(b"10:0123456789", limits).unwrap_err().kind,
            BencodeErrorKind::TooLarge { len: 13, limit: 8 }
        );
    }

    #[test]
    fn decode_exact_rejects_trailing_garbage_but_not_a_newline() {
        let limits = Limits::default();
        assert_eq!(decode_exact(b"i1e\n", limits).unwrap(), Value::Integer(1));
        assert_eq!(
            decode_exact(b"i1exyz", limits).unwrap_err(),
            BencodeError {
                offset: 3,
                kind: BencodeErrorKind::TrailingData(3)
            }
        );
    }

    #[test]
    fn accessors_match_types() {
        let v = Value::from("x");
        assert_eq!(v.as_str(), Some("x"));
        assert_eq!(v.as_integer(), None);
        assert_eq!(v.type_name(), "string");
        assert_eq!(Value::from(u64::MAX), Value::Integer(i64::MAX));
        assert_eq!(Value::from(&[0xffu8][..]).as_str(), None);
    }

    /// Deterministic xorshift, so the mutation test is reproducible without a dependency.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn mutated_messages_never_panic() {
        let seed = b"d7:command5:offer5:flagsl13:trust-addresse3:sdp8:v=0\r\no=-1:ni-42ee";
        assert!(decode(seed).is_ok());
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet = b"dile:0123456789-xabc";
        for _ in 0..20_000 {
            let mut input = seed.to_vec();
            for _ in 0..(xorshift(&mut state) % 4 + 1) {
                let at = (xorshift(&mut state) as usize) % input.len();
                let byte = alphabet[(xorshift(&mut state) as usize) % alphabet.len()];
                match xorshift(&mut state) % 3 {
                    0 => input[at] = byte,
                    1 => input.insert(at, byte),
                    _ => input.truncate(at.max(1)),
                }
            }
            if let Ok((value, used)) = decode(&input) {
                // Whatever decodes re-encodes to something that decodes to the same value.
                assert!(used <= input.len());
                assert_eq!(decode(&value.to_vec()).map(|(v, _)| v), Ok(value));
            }
        }
    }
}
