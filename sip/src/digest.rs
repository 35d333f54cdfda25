//! SIP digest authentication (RFC 3261 §22, RFC 2617, RFC 8760): challenges and credentials
//! read from and printed to `WWW-Authenticate`/`Proxy-Authenticate` and
//! `Authorization`/`Proxy-Authorization`, responses for MD5 and SHA-256 (with or without
//! `qop=auth`), and the server's side: stateless nonces ([`NonceKey`]) and their replay
//! tracking ([`NonceCounts`]).
//!
//! Pure: the caller passes the time (seconds since the Unix epoch) and the client nonces.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// A digest algorithm (RFC 8760 §2; `-sess` variants hash the client nonce into HA1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5`, the default when a challenge names none.
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
}

impl Algorithm {
    /// The name as written in the `algorithm` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
        }
    }

    /// Reads an `algorithm` value (case-insensitive); `None` for one this crate cannot compute.
    pub fn parse(s: &str) -> Option<Algorithm> {
        [
            Algorithm::Md5,
            Algorithm::Md5Sess,
            Algorithm::Sha256,
            Algorithm::Sha256Sess,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }

    fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    /// The lower-case hex digest of `parts` joined by `:`.
    fn hash(self, parts: &[&[u8]]) -> String {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            hex(&d.finalize())
        }
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => run::<Md5>(parts),
            Algorithm::Sha256 | Algorithm::Sha256Sess => run::<Sha256>(parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why a digest header could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The scheme is not `Digest`.
    #[error("not a Digest header")]
    NotDigest,
    /// The parameter list is not `name=value, …`.
    #[error("malformed digest parameters at byte {0}")]
    Syntax(usize),
    /// A parameter the header needs is missing.
    #[error("digest parameter {0} missing")]
    Missing(&'static str),
    /// A parameter has a value that cannot be used.
    #[error("digest parameter {0} has an invalid value")]
    Invalid(&'static str),
    /// The algorithm is not one of MD5, MD5-sess, SHA-256, SHA-256-sess.
    #[error("digest algorithm {0:?} not supported")]
    Algorithm(String),
}

/// Reads `Digest name=value, name="quoted", …` into lower-case names and unquoted values.
fn parse_params(value: &[u8]) -> Result<BTreeMap<String, String>, DigestError> {
    let text = std::str::from_utf8(value).map_err(|e| DigestError::Syntax(e.valid_up_to()))?;
    let text = text.trim_start();
    let scheme_end = text
        .find(|c: char| c.is_ascii_whitespace())
        .unwrap_or(text.len());
    if !text[..scheme_end].eq_ignore_ascii_case("digest") {
        return Err(DigestError::NotDigest);
    }
    let bytes = text.as_bytes();
    let mut params = BTreeMap::new();
    let mut i = scheme_end;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || b"-_.".contains(&bytes[i])) {
            i += 1;
        }
        if i == start {
            return Err(DigestError::Syntax(i));
        }
        let name = text[start..i].to_ascii_lowercase();
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b'=') {
            return Err(DigestError::Syntax(i));
        }
        i += 1;
        skip_ws(&mut i);
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut v = String::new();
            loop {
                match bytes.get(i) {
                    None => return Err(DigestError::Syntax(i)),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        v.push(bytes[i + 1] as char);
                        i += 2;
                    }
                    Some(_) => {
                        // Copy one whole character (values may be UTF-8).
                        let c = text[i..].chars().next().ok_or(DigestError::Syntax(i))?;
                        v.push(c);
                        i += c.len_utf8();
                    }
                }
            }
            v
        } else {
            let start = i;
            while i < bytes.len() && bytes[i] != b',' && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == start {
                return Err(DigestError::Syntax(i));
            }
            text[start..i].to_string()
        };
        if params.insert(name, value).is_some() {
            // A repeated parameter makes the header ambiguous.
            return Err(DigestError::Syntax(i));
        }
        skip_ws(&mut i);
        match bytes.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(DigestError::Syntax(i)),
        }
    }
    Ok(params)
}

fn algorithm_of(params: &BTreeMap<String, String>) -> Result<Algorithm, DigestError> {
    match params.get("algorithm") {
        None => Ok(Algorithm::Md5),
        Some(a) => Algorithm::parse(a).ok_or_else(|| DigestError::Algorithm(a.clone())),
    }
}

fn quote(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, "{name}=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// A challenge (`WWW-Authenticate` / `Proxy-Authenticate`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The protection space.
    pub realm: String,
    /// The server's nonce.
    pub nonce: String,
    /// Returned unchanged by the client.
    pub opaque: Option<String>,
    /// The hash to use.
    pub algorithm: Algorithm,
    /// Whether `qop=auth` is offered (otherwise the RFC 2069 response without qop is used).
    pub qop_auth: bool,
    /// The previous nonce was valid but expired: retry with this one, no need to ask the user.
    pub stale: bool,
}

impl Challenge {
    /// Reads a challenge header value.
    pub fn parse(value: &[u8]) -> Result<Challenge, DigestError> {
        let mut p = parse_params(value)?;
        let algorithm = algorithm_of(&p)?;
        let qop_auth = match p.get("qop") {
            None => false,
            Some(q) => {
                if !q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) {
                    // Only auth-int is offered: this crate does not hash bodies.
                    return Err(DigestError::Invalid("qop"));
                }
                true
            }
        };
        Ok(Challenge {
            realm: p.remove("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: p.remove("nonce").ok_or(DigestError::Missing("nonce"))?,
            opaque: p.remove("opaque"),
            algorithm,
            qop_auth,
            stale: p
                .get("stale")
                .is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The header value, `Digest realm="…", nonce="…", …`.
    pub fn to_header_value(&self) -> String {
        let mut out = String::from("Digest ");
        quote(&mut out, "realm", &self.realm);
        out.push_str(", ");
        quote(&mut out, "nonce", &self.nonce);
        if let Some(opaque) = &self.opaque {
            out.push_str(", ");
            quote(&mut out, "opaque", opaque);
        }
        let _ = write!(out, ", algorithm={}", self.algorithm);
        if self.qop_auth {
            out.push_str(", qop=\"auth\"");
        }
        if self.stale {
            out.push_str(", stale=true");
        }
        out
    }

    /// The credentials answering this challenge for `method` to `uri`. `cnonce` is the client's
    /// fresh random nonce and `nc` how many times this nonce was used before, plus one; both are
    /// ignored when the challenge offers no qop.
    pub fn answer(
        &self,
        username: &str,
        password: &[u8],
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> Credentials {
        let qop = (self.qop_auth || self.algorithm.is_sess()).then(|| (nc, cnonce.to_string()));
        let mut creds = Credentials {
            username: username.to_string(),
            realm: self.realm.clone(),
            nonce: self.nonce.clone(),
            uri: uri.to_string(),
            response: String::new(),
            algorithm: self.algorithm,
            opaque: self.opaque.clone(),
            qop,
        };
        creds.response = creds.expected_response(password, method);
        creds
    }
}

/// The challenge a client answers among header values: the strongest hash offered (RFC 8760
/// §2.4); challenges that cannot be read or answered are skipped.
pub fn strongest_challenge<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Challenge> {
    values
        .into_iter()
        .filter_map(|value| Challenge::parse(value).ok())
        .min_by_key(|c| match c.algorithm {
            Algorithm::Sha256 | Algorithm::Sha256Sess => 0,
            Algorithm::Md5 | Algorithm::Md5Sess => 1,
        })
}

/// A client's count of the requests answering one server nonce: the `nc` of its credentials,
/// back to 1 for each new nonce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NonceUse(Option<(String, u32)>);

impl NonceUse {
    /// The `nc` of the next answer to `nonce`.
    pub fn next(&mut self, nonce: &str) -> u32 {
        match &mut self.0 {
            Some((last, count)) if last == nonce => {
                *count += 1;
                *count
            }
            slot => {
                *slot = Some((nonce.to_owned(), 1));
                1
            }
        }
    }
}

/// Credentials (`Authorization` / `Proxy-Authorization`).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Who claims to send.
    pub username: String,
    /// The realm of the challenge answered.
    pub realm: String,
    /// The server's nonce answered.
    pub nonce: String,
    /// The digest-uri (the Request-URI).
    pub uri: String,
    /// The hex response.
    pub response: String,
    /// The hash used.
    pub algorithm: Algorithm,
    /// The challenge's opaque, returned.
    pub opaque: Option<String>,
    /// With `qop=auth`: the nonce count and the client nonce.
    pub qop: Option<(u32, String)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The response is a password-equivalent for dictionary attacks: never printed.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithm)
            .field("response", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads a credentials header value.
    pub fn parse(value: &[u8]) -> Result<Credentials, DigestError> {
        let mut p = parse_params(value)?;
        let algorithm = algorithm_of(&p)?;
        let qop = match p.get("qop").map(String::as_str) {
            None => None,
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let nc = p.get("nc").ok_or(DigestError::Missing("nc"))?;
                if nc.len() != 8 {
                    return Err(DigestError::Invalid("nc"));
                }
                let nc = u32::from_str_radix(nc, 16).map_err(|_| DigestError::Invalid("nc"))?;
                let cnonce = p.remove("cnonce").ok_or(DigestError::Missing("cnonce"))?;
                Some((nc, cnonce))
            }
            Some(_) => return Err(DigestError::Invalid("qop")),
        };
        if algorithm.is_sess() && qop.is_none() {
            return Err(DigestError::Missing("cnonce"));
        }
        let response = p
            .remove("response")
            .ok_or(DigestError::Missing("response"))?;
        if response.is_empty() || !response.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DigestError::Invalid("response"));
        }
        Ok(Credentials {
            username: p
                .remove("username")
                .ok_or(DigestError::Missing("username"))?,
            realm: p.remove("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: p.remove("nonce").ok_or(DigestError::Missing("nonce"))?,
            uri: p.remove("uri").ok_or(DigestError::Missing("uri"))?,
            response: response.to_ascii_lowercase(),
            algorithm,
            opaque: p.remove("opaque"),
            qop,
        })
    }

    /// The header value, `Digest username="…", …`.
    pub fn to_header_value(&self) -> String {
        let mut out = String::from("Digest ");
        quote(&mut out, "username", &self.username);
        out.push_str(", ");
        quote(&mut out, "realm", &self.realm);
        out.push_str(", ");
        quote(&mut out, "nonce", &self.nonce);
        out.push_str(", ");
        quote(&mut out, "uri", &self.uri);
        out.push_str(", ");
        quote(&mut out, "response", &self.response);
        let _ = write!(out, ", algorithm={}", self.algorithm);
        if let Some(opaque) = &self.opaque {
            out.push_str(", ");
            quote(&mut out, "opaque", opaque);
        }
        if let Some((nc, cnonce)) = &self.qop {
            let _ = write!(out, ", qop=auth, nc={nc:08x}, ");
            quote(&mut out, "cnonce", cnonce);
        }
        out
    }

    /// The response these credentials must carry when sent with `method` by a user whose
    /// password is `password` (RFC 2617 §3.2.2.1, RFC 7616 §3.4.1).
    pub fn expected_response(&self, password: &[u8], method: &str) -> String {
        let alg = self.algorithm;
        let mut ha1 = alg.hash(&[self.username.as_bytes(), self.realm.as_bytes(), password]);
        if alg.is_sess() {
            let cnonce = self.qop.as_ref().map_or("", |(_, c)| c.as_str());
            ha1 = alg.hash(&[ha1.as_bytes(), self.nonce.as_bytes(), cnonce.as_bytes()]);
        }
        let ha2 = alg.hash(&[method.as_bytes(), self.uri.as_bytes()]);
        match &self.qop {
            Some((nc, cnonce)) => {
                let nc = format!("{nc:08x}");
                alg.hash(&[
                    ha1.as_bytes(),
                    self.nonce.as_bytes(),
                    nc.as_bytes(),
                    cnonce.as_bytes(),
                    b"auth",
                    ha2.as_bytes(),
                ])
            }
            None => alg.hash(&[ha1.as_bytes(), self.nonce.as_bytes(), ha2.as_bytes()]),
        }
    }

    /// Whether the response matches `password`, compared in constant time.
    pub fn verify(&self, password: &[u8], method: &str) -> bool {
        let expected = self.expected_response(password, method);
        expected.as_bytes().ct_eq(self.response.as_bytes()).into()
    }
}

/// A server's nonce: when it was issued, authenticated by an HMAC under the pod's secret key,
/// so that nonces need no state until a client answers one.
///
/// The nonce is `<issued, 16 hex digits><salt, 16 hex digits><HMAC-SHA-256(key, issued ‖ salt ‖
/// realm), first 16 bytes hex>`: the random salt makes each challenge's nonce its own, so that
/// two clients challenged in the same second never share a nonce (nor its nonce counts).
#[derive(Clone)]
pub struct NonceKey {
    key: [u8; 32],
    lifetime_secs: u64,
}

impl fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceKey")
            .field("key", &"<redacted>")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

/// What a nonce turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by this key for the realm and not expired; carries its issue time.
    Fresh(u64),
    /// Issued by this key but older than the lifetime: challenge again with `stale=true`.
    Stale,
    /// Not one of ours (forged, another realm, another key).
    Forged,
}

impl NonceKey {
    /// A key from 32 secret random bytes; nonces live `lifetime_secs` seconds.
    pub fn new(key: [u8; 32], lifetime_secs: u64) -> NonceKey {
        NonceKey { key, lifetime_secs }
    }

    /// How long a nonce stays fresh, in seconds.
    pub fn lifetime_secs(&self) -> u64 {
        self.lifetime_secs
    }

    fn tag(&self, issued: u64, salt: u64, realm: &str) -> String {
        // The key is 32 bytes: HMAC accepts any key length.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes keys of any length")
        };
        mac.update(&issued.to_be_bytes());
        mac.update(&salt.to_be_bytes());
        mac.update(realm.as_bytes());
        hex(&mac.finalize().into_bytes()[..16])
    }

    /// A new nonce for `realm` issued at `now` (seconds since the Unix epoch), made unique by
    /// `salt` (a fresh random number).
    pub fn issue(&self, realm: &str, now: u64, salt: u64) -> String {
        format!("{now:016x}{salt:016x}{}", self.tag(now, salt, realm))
    }

    /// Checks a nonce a client returned for `realm` at `now`.
    pub fn check(&self, nonce: &str, realm: &str, now: u64) -> NonceCheck {
        if nonce.len() != 64 || !nonce.is_ascii() {
            return NonceCheck::Forged;
        }
        let (Ok(issued), Ok(salt)) = (
            u64::from_str_radix(&nonce[..16], 16),
            u64::from_str_radix(&nonce[16..32], 16),
        ) else {
            return NonceCheck::Forged;
        };
        let tag = self.tag(issued, salt, realm);
        if !bool::from(tag.as_bytes().ct_eq(&nonce.as_bytes()[32..])) {
            return NonceCheck::Forged;
        }
        if issued > now.saturating_add(5) {
            // From the future (beyond clock steps): not ours to trust.
            NonceCheck::Forged
        } else if now - issued.min(now) >= self.lifetime_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh(issued)
        }
    }
}

/// The highest nonce count seen per nonce, so that a replayed request (same or lower `nc`) is
/// refused. Only fresh nonces are kept, and at most `capacity` of them: when full, the oldest
/// is forgotten, and a client still using it is challenged again with `stale=true`.
#[derive(Debug)]
pub struct NonceCounts {
    seen: HashMap<String, (u64, u32)>,
    capacity: usize,
}

/// Whether a nonce count may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountCheck {
    /// Higher than every count seen with this nonce: recorded.
    New,
    /// Not higher than one seen: a replay.
    Replayed,
}

impl NonceCounts {
    /// Tracks at most `capacity` nonces.
    pub fn new(capacity: usize) -> NonceCounts {
        NonceCounts {
            seen: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// How many nonces are tracked.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Records `nc` for a fresh `nonce` issued at `issued` (a request without qop counts as
    /// `nc=1`, so such a nonce serves once). Nonces older than `lifetime_secs` at `now` are
    /// forgotten first: the key reports them stale before they could be replayed.
    pub fn record(
        &mut self,
        nonce: &str,
        issued: u64,
        nc: u32,
        now: u64,
        lifetime_secs: u64,
    ) -> CountCheck {
        if let Some((_, last)) = self.seen.get_mut(nonce) {
            if nc <= *last {
                return CountCheck::Replayed;
            }
            *last = nc;
            return CountCheck::New;
        }
        if self.seen.len() >= self.capacity {
            self.seen
                .retain(|_, (at, _)| now.saturating_sub(*at) < lifetime_secs);
        }
        if self.seen.len() >= self.capacity
            && let Some(oldest) = self
                .seen
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(n, _)| n.clone())
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(nonce.to_string(), (issued, nc));
        CountCheck::New
    }

    /// Whether `nonce` is tracked (a nonce evicted while fresh must be refused as stale, since
    /// its past counts are lost).
    pub fn knows(&self, nonce: &str) -> bool {
        self.seen.contains_key(nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strongest_readable_challenge_is_answered_and_nonce_uses_are_counted() {
        let md5 = b"Digest realm=\"r\", nonce=\"n\", algorithm=MD5".as_slice();
        let sha = b"Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256".as_slice();
        let broken = b"Digest realm=\"r\"".as_slice();
        let chosen = strongest_challenge([md5, broken, sha]).unwrap();
        assert_eq!(chosen.algorithm, Algorithm::Sha256);
        assert_eq!(
            strongest_challenge([md5]).unwrap().algorithm,
            Algorithm::Md5
        );
        assert_eq!(strongest_challenge([broken]), None);

        let mut uses = NonceUse::default();
        assert_eq!(uses.next("a"), 1);
        assert_eq!(uses.next("a"), 2);
        assert_eq!(uses.next("b"), 1, "a new nonce starts again");
    }

    #[test]
    fn rfc2617_example() {
        // RFC 2617 §3.5.
        let creds = Credentials::parse(
            br#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("parses");
        assert_eq!(creds.algorithm, Algorithm::Md5);
        assert_eq!(creds.qop, Some((1, "0a4f113b".into())));
        assert!(creds.verify(b"Circle Of Life", "GET"));
        assert!(!creds.verify(b"Circle of Life", "GET"));
        assert!(!creds.verify(b"Circle Of Life", "POST"));
    }

    fn rfc7616_challenge(algorithm: Algorithm) -> Challenge {
        // RFC 7616 §3.9.1, the examples RFC 8760 builds on.
        Challenge {
            realm: "http-auth@example.org".into(),
            nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v".into(),
            opaque: Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS".into()),
            algorithm,
            qop_auth: true,
            stale: false,
        }
    }

    #[test]
    fn rfc7616_sha256_and_md5_examples() {
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        for (alg, expected) in [
            (Algorithm::Md5, "8ca523f5e9506fed4657c9700eebdbec"),
            (
                Algorithm::Sha256,
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let creds = rfc7616_challenge(alg).answer(
                "Mufasa",
                b"Circle of Life",
                "GET",
                "/dir/index.html",
                cnonce,
                1,
            );
            assert_eq!(creds.response, expected, "{alg}");
            // Printed and read back, it is the same and still verifies.
            let back = Credentials::parse(creds.to_header_value().as_bytes()).expect("reparses");
            assert_eq!(back, creds);
            assert!(back.verify(b"Circle of Life", "GET"));
        }
    }

    #[test]
    fn without_qop_the_rfc2069_response_is_used() {
        let challenge = Challenge::parse(br#"Digest realm="r", nonce="n""#).expect("parses");
        assert!(!challenge.qop_auth);
        let creds = challenge.answer("u", b"p", "INVITE", "sip:a@b", "ignored", 1);
        assert_eq!(creds.qop, None);
        // MD5(MD5("u:r:p") ":" "n" ":" MD5("INVITE:sip:a@b")), computed independently.
        assert_eq!(creds.response, "268f5a320f4c7be8a96bd7b8aa197d6b");
        assert!(creds.verify(b"p", "INVITE"));
        assert!(!creds.to_header_value().contains("qop"));
    }

    #[test]
    fn sess_variants_hash_the_cnonce_into_ha1() {
        let mut c = rfc7616_challenge(Algorithm::Sha256Sess);
        let a = c.answer("u", b"p", "INVITE", "sip:x", "c1", 1);
        let b = c.answer("u", b"p", "INVITE", "sip:x", "c2", 1);
        assert_ne!(a.response, b.response);
        assert!(a.verify(b"p", "INVITE"));
        c.algorithm = Algorithm::Md5Sess;
        assert!(
            c.answer("u", b"p", "BYE", "sip:x", "c", 3)
                .verify(b"p", "BYE")
        );
    }

    #[test]
    fn challenges_round_trip_and_accept_any_case_and_spacing() {
        let c = Challenge::parse(
            br#"digest   REALM = "a \"b\"" ,nonce="n1",algorithm=sha-256,qop="auth,auth-int",stale=TRUE, domain="sip:x""#,
        )
        .expect("parses");
        assert_eq!(c.realm, "a \"b\"");
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert!(c.qop_auth && c.stale);
        assert_eq!(
            Challenge::parse(c.to_header_value().as_bytes()).expect("reparses"),
            c
        );
    }

    #[test]
    fn malformed_headers_are_errors() {
        let cases: &[(&[u8], DigestError)] = &[
            (b"Basic realm=\"x\"", DigestError::NotDigest),
            (b"", DigestError::NotDigest),
            (b"Digest realm", DigestError::Syntax(12)),
            (b"Digest realm=\"x", DigestError::Syntax(15)),
            (b"Digest realm=\"x\" nonce=\"y\"", DigestError::Syntax(17)),
            (b"Digest realm=x, realm=y", DigestError::Syntax(23)),
            (b"Digest realm=\"x\"", DigestError::Missing("nonce")),
            (b"Digest ,", DigestError::Syntax(7)),
            (b"Digest realm=,", DigestError::Syntax(13)),
            (
                b"Digest realm=x, nonce=y, algorithm=SHA-512-256",
                DigestError::Algorithm("SHA-512-256".into()),
            ),
            (
                b"Digest realm=x, nonce=y, qop=auth-int",
                DigestError::Invalid("qop"),
            ),
            (b"Digest \xff", DigestError::Syntax(7)),
        ];
        for (input, error) in cases {
            assert_eq!(
                Challenge::parse(input).as_ref().err(),
                Some(error),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
        let creds: &[(&[u8], DigestError)] = &[
            (b"Digest username=u, realm=r, nonce=n, uri=x", DigestError::Missing("response")),
            (b"Digest username=u, realm=r, nonce=n, uri=x, response=zz", DigestError::Invalid("response")),
            (b"Digest username=u, realm=r, nonce=n, uri=x, response=ab, qop=auth, nc=1, cnonce=c", DigestError::Invalid("nc")),
            (b"Digest username=u, realm=r, nonce=n, uri=x, response=ab, qop=auth, nc=0000000g, cnonce=c", DigestError::Invalid("nc")),
            (b"Digest username=u, realm=r, nonce=n, uri=x, response=ab, qop=auth, nc=00000001", DigestError::Missing("cnonce")),
            (b"Digest username=u, realm=r, nonce=n, uri=x, response=ab, algorithm=MD5-sess", DigestError::Missing("cnonce")),
            (b"Digest realm=r, nonce=n, uri=x, response=ab", DigestError::Missing("username")),
        ];
        for (input, error) in creds {
            assert_eq!(
                Credentials::parse(input).as_ref().err(),
                Some(error),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let seed = br#"Digest username="u", realm="r", nonce="n", uri="sip:x", response="ab", qop=auth, nc=00000001, cnonce="c""#;
        for cut in 0..seed.len() {
            let _ = Credentials::parse(&seed[..cut]);
            let _ = Challenge::parse(&seed[..cut]);
            let mut flipped = seed.to_vec();
            flipped[cut] = flipped[cut].wrapping_add(0x80);
            let _ = Credentials::parse(&flipped);
        }
    }

    #[test]
    fn debug_output_hides_the_response_and_the_key() {
        let creds = rfc7616_challenge(Algorithm::Md5).answer("u", b"secret", "GET", "/", "c", 1);
        let printed = format!("{creds:?}");
        assert!(!printed.contains(&creds.response), "{printed}");
        let key = NonceKey::new([7; 32], 300);
        assert!(!format!("{key:?}").contains('7'));
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let key = NonceKey::new([1; 32], 300);
        let nonce = key.issue("realm", 1_000, 7);
        assert_eq!(key.check(&nonce, "realm", 1_000), NonceCheck::Fresh(1_000));
        assert_eq!(key.check(&nonce, "realm", 1_299), NonceCheck::Fresh(1_000));
        assert_eq!(key.check(&nonce, "realm", 1_300), NonceCheck::Stale);
        assert_eq!(key.check(&nonce, "other", 1_000), NonceCheck::Forged);
        let other = NonceKey::new([2; 32], 300);
        assert_eq!(other.check(&nonce, "realm", 1_000), NonceCheck::Forged);
        // A later time written into a nonce breaks its tag.
        let moved = format!("{:016x}{}", 1_200u64, &nonce[16..]);
        assert_eq!(key.check(&moved, "realm", 1_250), NonceCheck::Forged);
        assert_eq!(key.check("short", "realm", 1_000), NonceCheck::Forged);
        assert_eq!(
            key.check(&"é".repeat(32), "realm", 1_000),
            NonceCheck::Forged
        );
        // Another salt is another nonce, and a salt cannot be swapped under a tag.
        let sibling = key.issue("realm", 1_000, 8);
        assert_ne!(sibling, nonce);
        let swapped = format!("{}{}{}", &nonce[..16], &sibling[16..32], &nonce[32..]);
        assert_eq!(key.check(&swapped, "realm", 1_000), NonceCheck::Forged);
        // Issued in the future (clock far behind): refused.
        let future = key.issue("realm", 5_000, 7);
        assert_eq!(key.check(&future, "realm", 1_000), NonceCheck::Forged);
    }

    #[test]
    fn nonce_counts_refuse_replays_and_stay_bounded() {
        let mut counts = NonceCounts::new(3);
        assert_eq!(counts.record("a", 0, 1, 0, 300), CountCheck::New);
        assert_eq!(counts.record("a", 0, 1, 1, 300), CountCheck::Replayed);
        assert_eq!(counts.record("a", 0, 2, 2, 300), CountCheck::New);
        assert_eq!(counts.record("a", 0, 1, 3, 300), CountCheck::Replayed);
        counts.record("b", 10, 1, 10, 300);
        counts.record("c", 20, 1, 20, 300);
        // Full: the oldest nonce goes, and its counts with it.
        counts.record("d", 30, 1, 30, 300);
        assert_eq!(counts.len(), 3);
        assert!(!counts.knows("a"));
        assert!(counts.knows("d"));
        // Expired nonces are dropped first (b, issued at 10, is 305 s old).
        counts.record("e", 315, 1, 315, 300);
        assert!(counts.knows("e") && counts.knows("d") && counts.knows("c") && !counts.knows("b"));
        assert_eq!(counts.record("f", 600, 1, 600, 300), CountCheck::New);
        assert_eq!(counts.len(), 2);
    }
}
