//! `;name=value` parameter lists, shared by header values (Via, From/To, Contact, Content-Type)
//! and URIs, and the two grammars that produce them: header `generic-param` (LWS allowed around
//! `;` and `=`, quoted values) and URI `uri-parameter` (no LWS, `%HH` escapes).

use std::fmt;

use bytes::Bytes;

use crate::syntax;

/// One parameter. Names compare case-insensitively; a quoted value keeps its quotes so it
/// prints back unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// The parameter name.
    pub name: Bytes,
    /// The value, if the parameter has one (`;lr` has none).
    pub value: Option<Bytes>,
}

/// An ordered parameter list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    list: Vec<Param>,
}

impl Params {
    /// An empty list.
    pub fn new() -> Params {
        Params::default()
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The parameter called `name` (any case).
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.list
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The value of `name`; `None` when absent or valueless.
    pub fn value(&self, name: &str) -> Option<&Bytes> {
        self.get(name).and_then(|p| p.value.as_ref())
    }

    /// Whether `name` is present (with or without a value).
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All parameters in order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.list.iter()
    }

    /// Sets `name` to `value` (replacing an existing one in place, or appending).
    pub fn set(&mut self, name: &str, value: Option<Bytes>) {
        match self
            .list
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name.as_bytes()))
        {
            Some(p) => p.value = value,
            None => self.list.push(Param {
                name: Bytes::copy_from_slice(name.as_bytes()),
                value,
            }),
        }
    }

    /// Removes `name`; returns whether it was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.list.len();
        self.list
            .retain(|p| !p.name.eq_ignore_ascii_case(name.as_bytes()));
        before != self.list.len()
    }

    pub(crate) fn push(&mut self, param: Param) {
        self.list.push(param);
    }
}

impl fmt::Display for Params {
    /// `;name=value;flag` — empty when there are no parameters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.list {
            write!(f, ";{}", String::from_utf8_lossy(&p.name))?;
            if let Some(v) = &p.value {
                write!(f, "={}", String::from_utf8_lossy(v))?;
            }
        }
        Ok(())
    }
}

/// Parses header parameters (`*( SEMI generic-param )`) of `src` starting at `i`. Stops at
/// the first byte that does not continue the list and returns its position, so the caller
/// decides whether anything may follow.
pub(crate) fn parse_header_params(
    src: &Bytes,
    mut i: usize,
) -> Result<(Params, usize), &'static str> {
    let s = &src[..];
    let mut params = Params::new();
    loop {
        let j = syntax::skip_ws(s, i);
        if j >= s.len() || s[j] != b';' {
            return Ok((params, j));
        }
        i = syntax::skip_ws(s, j + 1);
        let name_end = syntax::scan_token(s, i);
        if name_end == i {
            return Err("empty or invalid parameter name");
        }
        let name = src.slice(i..name_end);
        i = syntax::skip_ws(s, name_end);
        let mut value = None;
        if i < s.len() && s[i] == b'=' {
            i = syntax::skip_ws(s, i + 1);
            let end = if i < s.len() && s[i] == b'"' {
                syntax::scan_quoted(s, i).ok_or("unterminated quoted parameter value")?
            } else {
                let mut e = i;
                while e < s.len() && syntax::is_gen_value_char(s[e]) {
                    e += 1;
                }
                e
            };
            if end == i {
                return Err("empty parameter value");
            }
            value = Some(src.slice(i..end));
            i = end;
        } else {
            i = name_end;
        }
        params.push(Param { name, value });
    }
}

/// Scans URI parameter characters (`paramchar`, escapes included) from `i`; returns the end.
fn scan_uri_param(s: &[u8], mut i: usize, end: usize) -> Result<usize, &'static str> {
    while i < end {
        let b = s[i];
        if b == b'%' {
            if !syntax::is_escape_at(&s[..end], i) {
                return Err("invalid %-escape in URI parameter");
            }
            i += 3;
        } else if syntax::is_param_char(b) {
            i += 1;
        } else {
            break;
        }
    }
    Ok(i)
}

/// Parses URI parameters (`*( ";" uri-parameter )`) of `src[i..end]`; returns where they stop.
pub(crate) fn parse_uri_params(
    src: &Bytes,
    mut i: usize,
    end: usize,
) -> Result<(Params, usize), &'static str> {
    let s = &src[..];
    let mut params = Params::new();
    while i < end && s[i] == b';' {
        let name_start = i + 1;
        let name_end = scan_uri_param(s, name_start, end)?;
        if name_end == name_start {
            return Err("empty URI parameter name");
        }
        let name = src.slice(name_start..name_end);
        i = name_end;
        let mut value = None;
        if i < end && s[i] == b'=' {
            let value_end = scan_uri_param(s, i + 1, end)?;
            if value_end == i + 1 {
                return Err("empty URI parameter value");
            }
            value = Some(src.slice(i + 1..value_end));
            i = value_end;
        }
        params.push(Param { name, value });
    }
    Ok((params, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_params_allow_lws_and_quotes() {
        let src = Bytes::from_static(br#" ;  tag = 1918 ; q=0.33;lr;x="a;b""#);
        let (p, end) = parse_header_params(&src, 0).unwrap();
        assert_eq!(end, src.len());
        assert_eq!(p.value("TAG").unwrap(), "1918");
        assert_eq!(p.value("q").unwrap(), "0.33");
        assert!(p.contains("lr") && p.value("lr").is_none());
        assert_eq!(p.value("x").unwrap(), r#""a;b""#);
        assert_eq!(p.to_string(), r#";tag=1918;q=0.33;lr;x="a;b""#);
    }

    #[test]
    fn header_params_reject_empty_pieces() {
        for bad in [";;", "; ;x", ";x=", r#";x="open"#, ";=v"] {
            let src = Bytes::copy_from_slice(bad.as_bytes());
            assert!(parse_header_params(&src, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_params_stop_at_foreign_bytes() {
        let src = Bytes::from_static(b";a=1 >rest");
        let (p, end) = parse_header_params(&src, 0).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(&src[end..], b">rest");
    }

    #[test]
    fn uri_params_check_escapes() {
        let src = Bytes::from_static(b";%6C%72;n%61me=v%61lue%25%34%31?h=v");
        let (p, end) = parse_uri_params(&src, 0, src.len()).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(&src[end..], b"?h=v");
        let bad = Bytes::from_static(b";a=%G1");
        assert!(parse_uri_params(&bad, 0, bad.len()).is_err());
    }

    #[test]
    fn set_and_remove() {
        let mut p = Params::new();
        p.set("rport", None);
        p.set("received", Some(Bytes::from_static(b"192.0.2.1")));
        p.set("RPORT", Some(Bytes::from_static(b"5060")));
        assert_eq!(p.to_string(), ";rport=5060;received=192.0.2.1");
        assert!(p.remove("Received"));
        assert!(!p.remove("received"));
        assert_eq!(p.len(), 1);
    }
}
