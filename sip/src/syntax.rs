//! RFC 3261 §25 character classes and the small scanners shared by the message, header and URI
//! parsers: tokens, linear white space, quoted strings, numbers.
//!
//! Everything works on byte slices and positions so callers can cut zero-copy `Bytes` slices
//! out of the original buffer.

/// Builds a 256-entry membership table: ASCII letters and digits (when `alnum`) plus `extra`.
const fn table(alnum: bool, extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    if alnum {
        let mut c = b'0';
        while c <= b'9' {
            t[c as usize] = true;
            c += 1;
        }
        let mut c = b'a';
        while c <= b'z' {
            t[c as usize] = true;
            t[(c - 32) as usize] = true;
            c += 1;
        }
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// `token` (RFC 3261 §25.1).
static TOKEN: [bool; 256] = table(true, b"-.!%*_+`'~");
/// `user` characters other than escapes: unreserved / user-unreserved.
static USER: [bool; 256] = table(true, b"-_.!~*'()&=+$,;?/");
/// `password` characters other than escapes.
static PASSWORD: [bool; 256] = table(true, b"-_.!~*'()&=+$,");
/// `paramchar` other than escapes: param-unreserved / unreserved.
static PARAM: [bool; 256] = table(true, b"-_.!~*'()[]/:&+$");
/// `hname` / `hvalue` characters other than escapes: hnv-unreserved / unreserved.
static HNV: [bool; 256] = table(true, b"-_.!~*'()[]/?:+$");
/// Host name characters; `_` is not in the grammar but common enough in the wild to accept.
static HOST: [bool; 256] = table(true, b"-._");
/// Characters of a generic parameter value that is not quoted: token / host (IPv6 included).
static GEN_VALUE: [bool; 256] = table(true, b"-.!%*_+`'~:[]");
/// Characters of `word` (Call-ID).
static WORD: [bool; 256] = table(true, b"-.!%*_+`'~()<>:\\\"/[]?{}");

/// Whether `b` may appear in a `token`.
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

/// Whether `b` may appear unescaped in the user part of a SIP URI.
#[inline]
pub(crate) fn is_user_char(b: u8) -> bool {
    USER[usize::from(b)]
}

/// Whether `b` may appear unescaped in the password part of a SIP URI.
#[inline]
pub(crate) fn is_password_char(b: u8) -> bool {
    PASSWORD[usize::from(b)]
}

/// Whether `b` may appear unescaped in a URI parameter.
#[inline]
pub(crate) fn is_param_char(b: u8) -> bool {
    PARAM[usize::from(b)]
}

/// Whether `b` may appear unescaped in a URI header name or value.
#[inline]
pub(crate) fn is_hnv_char(b: u8) -> bool {
    HNV[usize::from(b)]
}

/// Whether `b` may appear in a host name or IPv4 address.
#[inline]
pub(crate) fn is_host_char(b: u8) -> bool {
    HOST[usize::from(b)]
}

/// Whether `b` may appear in an unquoted generic parameter value.
#[inline]
pub(crate) fn is_gen_value_char(b: u8) -> bool {
    GEN_VALUE[usize::from(b)]
}

/// Whether `b` may appear in a Call-ID `word`.
#[inline]
pub(crate) fn is_word_char(b: u8) -> bool {
    WORD[usize::from(b)]
}

/// Space or horizontal tab.
#[inline]
pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether every byte of a non-empty slice is a token character.
pub(crate) fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// Skips spaces and tabs from `i`.
#[inline]
pub(crate) fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

/// The end of the token starting at `i` (equal to `i` when there is none).
#[inline]
pub(crate) fn scan_token(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_token(s[i]) {
        i += 1;
    }
    i
}

/// Trims spaces and tabs from both ends of `start..end` of `s`.
pub(crate) fn trim_range(s: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && is_ws(s[start]) {
        start += 1;
    }
    while end > start && is_ws(s[end - 1]) {
        end -= 1;
    }
    (start, end)
}

/// Given `s[i] == '"'`, the position just after the closing quote, honouring `\` escapes.
/// `None` when the string is not terminated.
pub(crate) fn scan_quoted(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// Parses a run of ASCII digits as a `u64`; `None` when empty, not all digits, or overflowing.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Whether `s[i..]` starts with a `%HH` escape.
#[inline]
pub(crate) fn is_escape_at(s: &[u8], i: usize) -> bool {
    i + 2 < s.len() && s[i] == b'%' && s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit()
}

/// Splits `value` at commas that are outside quoted strings and angle brackets, calling `f`
/// with each trimmed, non-empty element range. Returns `false` (having called `f` for nothing)
/// when quotes or brackets are unbalanced, so the caller can keep the value whole.
pub(crate) fn split_list(value: &[u8], mut f: impl FnMut(usize, usize)) -> bool {
    // First pass validates balance so that nothing is emitted for a malformed value.
    let mut i = 0;
    let mut angle = false;
    let mut commas = 0usize;
    while i < value.len() {
        match value[i] {
            b'"' => match scan_quoted(value, i) {
                Some(end) => {
                    i = end;
                    continue;
                }
                None => return false,
            },
            b'<' if !angle => angle = true,
            b'>' if angle => angle = false,
            b',' if !angle => commas += 1,
            _ => {}
        }
        i += 1;
    }
    if angle {
        return false;
    }
    if commas == 0 {
        let (a, b) = trim_range(value, 0, value.len());
        if a < b {
            f(a, b);
        }
        return true;
    }
    let mut start = 0;
    let mut i = 0;
    let mut angle = false;
    while i < value.len() {
        match value[i] {
            b'"' => {
                i = scan_quoted(value, i).unwrap_or(value.len());
                continue;
            }
            b'<' if !angle => angle = true,
            b'>' if angle => angle = false,
            b',' if !angle => {
                let (a, b) = trim_range(value, start, i);
                if a < b {
                    f(a, b);
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let (a, b) = trim_range(value, start, value.len());
    if a < b {
        f(a, b);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(v: &str) -> Option<Vec<&str>> {
        let mut out = Vec::new();
        let ok = split_list(v.as_bytes(), |a, b| out.push(&v[a..b]));
        ok.then_some(out)
    }

    #[test]
    fn splits_at_top_level_commas_only() {
        assert_eq!(split("a, b ,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            split(r#""Doe, J" <sip:a@b>;q=1, <sip:c,d@e>"#).unwrap(),
            [r#""Doe, J" <sip:a@b>;q=1"#, "<sip:c,d@e>"]
        );
        assert_eq!(
            split(r#""a \", b" <sip:x>"#).unwrap(),
            [r#""a \", b" <sip:x>"#]
        );
        assert_eq!(split(" , a,,").unwrap(), ["a"]);
        assert!(split("").unwrap().is_empty());
    }

    #[test]
    fn unbalanced_values_are_not_split() {
        assert!(split(r#""open, b"#).is_none());
        assert!(split("<sip:a, b").is_none());
    }

    #[test]
    fn quoted_strings_honour_escapes() {
        assert_eq!(scan_quoted(br#""a\"b" x"#, 0), Some(6));
        assert_eq!(scan_quoted(br#""abc"#, 0), None);
        assert_eq!(scan_quoted(br#""abc\"#, 0), None);
    }

    #[test]
    fn numbers_reject_overflow_and_signs() {
        assert_eq!(parse_u64(b"0068"), Some(68));
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"36893488147419103232"), None);
    }

    #[test]
    fn escapes_need_two_hex_digits() {
        assert!(is_escape_at(b"%4A", 0));
        assert!(!is_escape_at(b"%4", 0));
        assert!(!is_escape_at(b"%ZZ", 0));
    }
}
