//! ICE-lite (RFC 8445 §2.5) for `ICE=force`: the relay advertises itself as the only host
//! candidate of a media section, with credentials of its own, and answers the connectivity
//! checks (STUN Binding requests, RFC 8489) that the party's full ICE agent sends to it. A lite
//! agent never sends checks and is always controlled, so answering is all there is. Pure:
//! the worker sends the responses.

use std::net::{IpAddr, SocketAddr};

use rand::Rng;
use ring::hmac;

/// The STUN magic cookie.
const MAGIC_COOKIE: u32 = 0x2112_a442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const USERNAME: u16 = 0x0006;
const MESSAGE_INTEGRITY: u16 = 0x0008;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;
/// XORed into the CRC-32 of a FINGERPRINT.
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// The relay's ICE credentials towards one party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `a=ice-ufrag`.
    pub ufrag: String,
    /// `a=ice-pwd`.
    pub pwd: String,
}

impl Credentials {
    /// Fresh random credentials (8 and 24 characters of the ICE alphabet).
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut rng = rand::rng();
        let mut pick = |n: usize| -> String {
            (0..n)
                .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
                .collect()
        };
        Self {
            ufrag: pick(8),
            pwd: pick(24),
        }
    }
}

/// Whether `datagram` looks like a STUN message (RFC 7983 demultiplexing: first byte 0-3,
/// then the magic cookie).
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] < 4 && datagram[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// The Binding success response to `request` from `source`, if it is a Binding request for
/// `credentials` (its USERNAME starts with our ufrag and its MESSAGE-INTEGRITY verifies with
/// our password). Anything else gets no answer.
pub fn binding_response(
    request: &[u8],
    source: SocketAddr,
    credentials: &Credentials,
) -> Option<Vec<u8>> {
    if !is_stun(request) || u16::from_be_bytes([request[0], request[1]]) != BINDING_REQUEST {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([request[2], request[3]]));
    let message = request.get(..20 + length)?;
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        credentials.pwd.as_bytes(),
    );
    let mut username_ok = false;
    let mut integrity_ok = false;
    let mut at = 20;
    while let Some(header) = message.get(at..at + 4) {
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let value = message.get(at + 4..at + 4 + len)?;
        match kind {
            USERNAME => {
                username_ok = value
                    .strip_prefix(credentials.ufrag.as_bytes())
                    .is_some_and(|rest| rest.first() == Some(&b':'));
            }
            MESSAGE_INTEGRITY => {
                // The HMAC covers the message up to this attribute, with the length field
                // counting up to its end.
                let mut covered = message.get(..at)?.to_vec();
                let end = u16::try_from(at + 4 + len - 20).ok()?;
                covered[2..4].copy_from_slice(&end.to_be_bytes());
                integrity_ok = hmac::verify(&key, &covered, value).is_ok();
                break;
            }
            _ => {}
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    if !(username_ok && integrity_ok) {
        return None;
    }
    let mut response = Vec::with_capacity(80);
    response.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    response.extend_from_slice(&[0, 0]);
    response.extend_from_slice(&request[4..20]);
    // XOR-MAPPED-ADDRESS: where the request came from.
    let port = source.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let mut transaction = [0u8; 16];
    transaction.copy_from_slice(&request[4..20]);
    match source.ip() {
        IpAddr::V4(ip) => {
            attribute(&mut response, XOR_MAPPED_ADDRESS, &{
                let mut v = vec![0, 1];
                v.extend_from_slice(&port.to_be_bytes());
                let x = u32::from(ip) ^ MAGIC_COOKIE;
                v.extend_from_slice(&x.to_be_bytes());
                v
            });
        }
        IpAddr::V6(ip) => {
            attribute(&mut response, XOR_MAPPED_ADDRESS, &{
                let mut v = vec![0, 2];
                v.extend_from_slice(&port.to_be_bytes());
                v.extend(ip.octets().iter().zip(transaction).map(|(a, b)| a ^ b));
                v
            });
        }
    }
    // MESSAGE-INTEGRITY over everything so far, the length counting it in.
    set_length(&mut response, 24);
    let tag = hmac::sign(&key, &response);
    attribute(&mut response, MESSAGE_INTEGRITY, tag.as_ref());
    // FINGERPRINT over everything so far, the length counting it in.
    set_length(&mut response, 8);
    let crc = crc32(&response) ^ FINGERPRINT_XOR;
    attribute(&mut response, FINGERPRINT, &crc.to_be_bytes());
    Some(response)
}

fn attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().div_ceil(4) * 4, 0);
}

/// Sets the header length to the attributes present plus `coming` bytes.
fn set_length(message: &mut [u8], coming: usize) {
    let length = u16::try_from(message.len() - 20 + coming).unwrap_or(u16::MAX);
    message[2..4].copy_from_slice(&length.to_be_bytes());
}

/// CRC-32 (ISO-HDLC, as in STUN's FINGERPRINT).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A Binding request as a full ICE agent sends it: USERNAME, PRIORITY, ICE-CONTROLLING,
    /// MESSAGE-INTEGRITY, FINGERPRINT.
    pub fn request(username: &str, pwd: &str) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(&[7; 12]);
        attribute(&mut m, USERNAME, username.as_bytes());
        attribute(&mut m, 0x0024, &0x6e00_01ffu32.to_be_bytes());
        attribute(&mut m, 0x802a, &[1; 8]);
        set_length(&mut m, 24);
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, pwd.as_bytes());
        let tag = hmac::sign(&key, &m);
        attribute(&mut m, MESSAGE_INTEGRITY, tag.as_ref());
        set_length(&mut m, 8);
        let crc = crc32(&m) ^ FINGERPRINT_XOR;
        attribute(&mut m, FINGERPRINT, &crc.to_be_bytes());
        m
    }

    fn ours() -> Credentials {
        Credentials {
            ufrag: "relayufr".into(),
            pwd: "relaypasswordrelaypassw0".into(),
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn answers_a_valid_check_with_a_verifiable_response() {
        let source: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let req = request("relayufr:peer", &ours().pwd);
        assert!(is_stun(&req));
        let resp = binding_response(&req, source, &ours()).unwrap();
        assert_eq!(&resp[0..2], &BINDING_SUCCESS.to_be_bytes());
        assert_eq!(&resp[4..20], &req[4..20], "same transaction");
        assert_eq!(
            usize::from(u16::from_be_bytes([resp[2], resp[3]])),
            resp.len() - 20
        );
        // XOR-MAPPED-ADDRESS decodes to the source.
        assert_eq!(&resp[20..22], &XOR_MAPPED_ADDRESS.to_be_bytes());
        let port = u16::from_be_bytes([resp[26], resp[27]]) ^ 0x2112;
        let ip = u32::from_be_bytes([resp[28], resp[29], resp[30], resp[31]]) ^ MAGIC_COOKIE;
        assert_eq!(
            SocketAddr::new(std::net::Ipv4Addr::from(ip).into(), port),
            source
        );
        // Its integrity verifies with our password and its fingerprint with CRC-32.
        let mi = 32;
        assert_eq!(&resp[mi..mi + 2], &MESSAGE_INTEGRITY.to_be_bytes());
        let mut covered = resp[..mi].to_vec();
        covered[2..4].copy_from_slice(&u16::try_from(mi + 24 - 20).unwrap().to_be_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, ours().pwd.as_bytes());
        assert!(hmac::verify(&key, &covered, &resp[mi + 4..mi + 24]).is_ok());
        let fp = mi + 24;
        let crc = u32::from_be_bytes([resp[fp + 4], resp[fp + 5], resp[fp + 6], resp[fp + 7]]);
        assert_eq!(crc, crc32(&resp[..fp]) ^ FINGERPRINT_XOR);
    }

    #[test]
    fn ignores_checks_for_others_and_forgeries() {
        let source: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert!(
            binding_response(&request("otherufr:peer", &ours().pwd), source, &ours()).is_none()
        );
        assert!(binding_response(&request("relayufr:peer", "wrong"), source, &ours()).is_none());
        let mut truncated = request("relayufr:peer", &ours().pwd);
        truncated.truncate(30);
        assert!(binding_response(&truncated, source, &ours()).is_none());
        assert!(!is_stun(b"\x80\x00rtp packet....."));
        // IPv6 sources are answered too.
        assert!(
            binding_response(&request("relayufr:peer", &ours().pwd), source, &ours()).is_some()
        );
    }

    #[test]
    fn generated_credentials_follow_the_ice_grammar() {
        let c = Credentials::generate();
        assert_eq!((c.ufrag.len(), c.pwd.len()), (8, 24));
        assert_ne!(c, Credentials::generate());
    }
}
