//! One direction's SRTP/SRTCP keys and per-SSRC state.

use aes::{Aes128, Aes256};
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, Nonce, Tag};
use ctr::cipher::{InnerIvInit, KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha1::Sha1;

use crate::replay::{ReplayWindow, RtpIndex};
use crate::{Error, MasterKey, Suite};

type Ctr128 = ctr::Ctr128BE<Aes128>;
type Ctr256 = ctr::Ctr128BE<Aes256>;
type HmacSha1 = Hmac<Sha1>;

/// SSRCs tracked per direction; beyond that the oldest is forgotten.
const MAX_STREAMS: usize = 16;
/// SRTCP authentication tag of the AES-CM suites (80 bits for both).
const RTCP_CM_TAG: usize = 10;
const GCM_TAG: usize = 16;

/// Key derivation labels (RFC 3711 §4.3.2).
const LABEL_RTP_CIPHER: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_CIPHER: u8 = 3;
const LABEL_RTCP_AUTH: u8 = 4;
const LABEL_RTCP_SALT: u8 = 5;

/// Session keys of RTP or of RTCP.
#[derive(Clone)]
enum Keys {
    Cm {
        aes: Aes128,
        auth: HmacSha1,
        salt: [u8; 14],
    },
    Gcm128 {
        aead: Aes128Gcm,
        salt: [u8; 12],
    },
    Gcm256 {
        aead: Aes256Gcm,
        salt: [u8; 12],
    },
}

impl Keys {
    /// Derives the session keys for `labels` (cipher, auth, salt) from `master`, key
    /// derivation rate 0.
    fn derive(master: &MasterKey, labels: [u8; 3]) -> Self {
        let [cipher_label, auth_label, salt_label] = labels;
        let mut key = vec![0u8; master.suite.key_len()];
        derive(master, cipher_label, &mut key);
        match master.suite {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => {
                let mut auth = [0u8; 20];
                derive(master, auth_label, &mut auth);
                let mut salt = [0u8; 14];
                derive(master, salt_label, &mut salt);
                Keys::Cm {
                    aes: Aes128::new(aes::cipher::generic_array::GenericArray::from_slice(&key)),
                    auth: <HmacSha1 as Mac>::new_from_slice(&auth)
                        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length")),
                    salt,
                }
            }
            Suite::AeadAes128Gcm => {
                let mut salt = [0u8; 12];
                derive(master, salt_label, &mut salt);
                Keys::Gcm128 {
                    aead: Aes128Gcm::new(aes_gcm::Key::<Aes128Gcm>::from_slice(&key)),
                    salt,
                }
            }
            Suite::AeadAes256Gcm => {
                let mut salt = [0u8; 12];
                derive(master, salt_label, &mut salt);
                Keys::Gcm256 {
                    aead: Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(&key)),
                    salt,
                }
            }
        }
    }

    /// AES-GCM encryption of `body` with `nonce`, returning the tag.
    fn seal(&self, nonce: &[u8; 12], aad: &[u8], body: &mut [u8]) -> Result<Tag, Error> {
        let nonce = Nonce::from_slice(nonce);
        match self {
            Keys::Gcm128 { aead, .. } => aead.encrypt_in_place_detached(nonce, aad, body),
            Keys::Gcm256 { aead, .. } => aead.encrypt_in_place_detached(nonce, aad, body),
            Keys::Cm { .. } => return Err(Error::Malformed),
        }
        .map_err(|_| Error::Malformed)
    }

    /// AES-GCM decryption of `body` in place, checking `tag`.
    fn open(&self, nonce: &[u8; 12], aad: &[u8], body: &mut [u8], tag: &[u8]) -> Result<(), Error> {
        let nonce = Nonce::from_slice(nonce);
        let tag = Tag::from_slice(tag);
        match self {
            Keys::Gcm128 { aead, .. } => aead.decrypt_in_place_detached(nonce, aad, body, tag),
            Keys::Gcm256 { aead, .. } => aead.decrypt_in_place_detached(nonce, aad, body, tag),
            Keys::Cm { .. } => return Err(Error::Malformed),
        }
        .map_err(|_| Error::Auth)
    }

    fn gcm_salt(&self) -> [u8; 12] {
        match self {
            Keys::Gcm128 { salt, .. } | Keys::Gcm256 { salt, .. } => *salt,
            Keys::Cm { .. } => [0; 12],
        }
    }
}

/// The AES-CM PRF of RFC 3711 §4.3.1: `out` gets the keystream of the master key at
/// `(master_salt XOR label << 48) * 2^16`. A 12-byte (GCM) salt is padded with zeros.
fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..master.salt.len()].copy_from_slice(&master.salt);
    iv[7] ^= label;
    out.fill(0);
    if master.key.len() == 32 {
        Ctr256::new(master.key.as_slice().into(), &iv.into()).apply_keystream(out);
    } else {
        Ctr128::new(master.key.as_slice().into(), &iv.into()).apply_keystream(out);
    }
}

/// AES-CM encryption (or decryption) of `data` for `ssrc` and `index` (RFC 3711 §4.1.1):
/// IV = salt * 2^16 XOR SSRC * 2^64 XOR index * 2^16.
fn cm_apply(aes: &Aes128, salt: &[u8; 14], ssrc: [u8; 4], index: u64, data: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc) {
        *b ^= s;
    }
    let index = index.to_be_bytes();
    for (b, i) in iv[8..14].iter_mut().zip(&index[2..8]) {
        *b ^= i;
    }
    Ctr128::from_core(ctr::CtrCore::inner_iv_init(aes.clone(), &iv.into())).apply_keystream(data);
}

/// The RTP header length (fixed part, CSRCs, extension), if `packet` is RTP version 2.
fn rtp_header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    if first >> 6 != 2 || packet.len() < 12 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= packet.len()).then_some(len)
}

fn ssrc_at(packet: &[u8], at: usize) -> [u8; 4] {
    let mut ssrc = [0u8; 4];
    if let Some(bytes) = packet.get(at..at + 4) {
        ssrc.copy_from_slice(bytes);
    }
    ssrc
}

#[derive(Clone, Copy, Debug, Default)]
struct RtcpState {
    /// Next index to send.
    next: u32,
    window: ReplayWindow,
}

/// A small map of per-SSRC state, the oldest forgotten first.
#[derive(Clone, Debug)]
struct Streams<T> {
    entries: Vec<(u32, T)>,
}

impl<T: Default + Copy> Streams<T> {
    fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    fn get(&self, ssrc: u32) -> T {
        self.entries
            .iter()
            .find(|(s, _)| *s == ssrc)
            .map(|(_, t)| *t)
            .unwrap_or_default()
    }

    fn set(&mut self, ssrc: u32, value: T) {
        if let Some(entry) = self.entries.iter_mut().find(|(s, _)| *s == ssrc) {
            entry.1 = value;
            return;
        }
        if self.entries.len() >= MAX_STREAMS {
            self.entries.remove(0);
        }
        self.entries.push((ssrc, value));
    }
}

/// One direction of SRTP and SRTCP under one master key: either the packets a party sends
/// (unprotect) or the packets sent to it (protect).
#[derive(Clone)]
pub struct Context {
    suite: Suite,
    rtp: Keys,
    rtcp: Keys,
    rtp_streams: Streams<RtpIndex>,
    rtcp_streams: Streams<RtcpState>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("suite", &self.suite)
            .field("ssrcs", &self.rtp_streams.entries.len())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Derives the session keys from `master`.
    pub fn new(master: &MasterKey) -> Self {
        Self {
            suite: master.suite,
            rtp: Keys::derive(master, [LABEL_RTP_CIPHER, LABEL_RTP_AUTH, LABEL_RTP_SALT]),
            rtcp: Keys::derive(
                master,
                [LABEL_RTCP_CIPHER, LABEL_RTCP_AUTH, LABEL_RTCP_SALT],
            ),
            rtp_streams: Streams::new(),
            rtcp_streams: Streams::new(),
        }
    }

    /// The suite in use.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Turns the RTP packet `buf[..len]` into SRTP in place; returns the new length. `buf`
    /// needs [`Suite::rtp_overhead`] bytes of room after `len`. A sequence number already
    /// protected is refused, so a keystream is never used twice.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let tag_len = self.suite.rtp_overhead();
        let packet = buf.get(..len).ok_or(Error::Malformed)?;
        let header = rtp_header_len(packet).ok_or(Error::Malformed)?;
        if buf.len() < len + tag_len {
            return Err(Error::Malformed);
        }
        let ssrc = ssrc_at(buf, 8);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let mut state = self.rtp_streams.get(u32::from_be_bytes(ssrc));
        let index = state.estimate(seq).ok_or(Error::Replay)?;
        if !state.fresh(index) {
            return Err(Error::Replay);
        }
        let roc = ((index >> 16) as u32).to_be_bytes();
        match &self.rtp {
            Keys::Cm { aes, auth, salt } => {
                cm_apply(aes, salt, ssrc, index, &mut buf[header..len]);
                let mut mac = auth.clone();
                mac.update(&buf[..len]);
                mac.update(&roc);
                let tag = mac.finalize().into_bytes();
                buf[len..len + tag_len].copy_from_slice(&tag[..tag_len]);
            }
            keys => {
                let nonce = rtp_nonce(keys.gcm_salt(), ssrc, roc, seq);
                let (head, rest) = buf.split_at_mut(header);
                let tag = keys.seal(&nonce, head, &mut rest[..len - header])?;
                buf[len..len + tag_len].copy_from_slice(&tag);
            }
        }
        state.accept(index);
        self.rtp_streams.set(u32::from_be_bytes(ssrc), state);
        Ok(len + tag_len)
    }

    /// Checks and decrypts the SRTP packet `buf[..len]` in place; returns the RTP length.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let tag_len = self.suite.rtp_overhead();
        let body = len.checked_sub(tag_len).ok_or(Error::Malformed)?;
        let packet = buf.get(..body).ok_or(Error::Malformed)?;
        let header = rtp_header_len(packet).ok_or(Error::Malformed)?;
        let ssrc = ssrc_at(buf, 8);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let mut state = self.rtp_streams.get(u32::from_be_bytes(ssrc));
        let index = state.estimate(seq).ok_or(Error::Replay)?;
        if !state.fresh(index) {
            return Err(Error::Replay);
        }
        let roc = ((index >> 16) as u32).to_be_bytes();
        match &self.rtp {
            Keys::Cm { aes, auth, salt } => {
                let mut mac = auth.clone();
                mac.update(&buf[..body]);
                mac.update(&roc);
                mac.verify_truncated_left(&buf[body..len])
                    .map_err(|_| Error::Auth)?;
                cm_apply(aes, salt, ssrc, index, &mut buf[header..body]);
            }
            keys => {
                let nonce = rtp_nonce(keys.gcm_salt(), ssrc, roc, seq);
                let (head, rest) = buf.split_at_mut(header);
                let (ciphertext, tag) = rest[..len - header].split_at_mut(body - header);
                keys.open(&nonce, head, ciphertext, tag)?;
            }
        }
        state.accept(index);
        self.rtp_streams.set(u32::from_be_bytes(ssrc), state);
        Ok(body)
    }

    /// Turns the RTCP (compound) packet `buf[..len]` into SRTCP in place, encrypted; returns
    /// the new length. `buf` needs [`Suite::rtcp_overhead`] bytes of room after `len`.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let overhead = self.suite.rtcp_overhead();
        if len < 8 || buf.len() < len + overhead || buf[0] >> 6 != 2 {
            return Err(Error::Malformed);
        }
        let ssrc = ssrc_at(buf, 4);
        let mut state = self.rtcp_streams.get(u32::from_be_bytes(ssrc));
        let index = state.next & 0x7fff_ffff;
        state.next = (index + 1) & 0x7fff_ffff;
        let e_index = (0x8000_0000 | index).to_be_bytes();
        match &self.rtcp {
            Keys::Cm { aes, auth, salt } => {
                cm_apply(aes, salt, ssrc, u64::from(index), &mut buf[8..len]);
                buf[len..len + 4].copy_from_slice(&e_index);
                let mut mac = auth.clone();
                mac.update(&buf[..len + 4]);
                let tag = mac.finalize().into_bytes();
                buf[len + 4..len + 4 + RTCP_CM_TAG].copy_from_slice(&tag[..RTCP_CM_TAG]);
            }
            keys => {
                let nonce = rtcp_nonce(keys.gcm_salt(), ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&e_index);
                let tag = keys.seal(&nonce, &aad, &mut buf[8..len])?;
                buf[len..len + GCM_TAG].copy_from_slice(&tag);
                buf[len + GCM_TAG..len + GCM_TAG + 4].copy_from_slice(&e_index);
            }
        }
        self.rtcp_streams.set(u32::from_be_bytes(ssrc), state);
        Ok(len + overhead)
    }

    /// Checks (and, when its E flag says so, decrypts) the SRTCP packet `buf[..len]` in
    /// place; returns the RTCP length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, Error> {
        let overhead = self.suite.rtcp_overhead();
        let body = len.checked_sub(overhead).ok_or(Error::Malformed)?;
        if body < 8 || buf.len() < len || buf[0] >> 6 != 2 {
            return Err(Error::Malformed);
        }
        let ssrc = ssrc_at(buf, 4);
        let (e_at, tag_at) = if self.suite.is_aead() {
            (len - 4, body)
        } else {
            (body, body + 4)
        };
        let mut e_index = [0u8; 4];
        e_index.copy_from_slice(&buf[e_at..e_at + 4]);
        let word = u32::from_be_bytes(e_index);
        let encrypted = word & 0x8000_0000 != 0;
        let index = word & 0x7fff_ffff;
        let mut state = self.rtcp_streams.get(u32::from_be_bytes(ssrc));
        if !state.window.fresh(u64::from(index)) {
            return Err(Error::Replay);
        }
        match &self.rtcp {
            Keys::Cm { aes, auth, salt } => {
                let mut mac = auth.clone();
                mac.update(&buf[..tag_at]);
                mac.verify_truncated_left(&buf[tag_at..len])
                    .map_err(|_| Error::Auth)?;
                if encrypted {
                    cm_apply(aes, salt, ssrc, u64::from(index), &mut buf[8..body]);
                }
            }
            keys => {
                let nonce = rtcp_nonce(keys.gcm_salt(), ssrc, index);
                let mut tag = [0u8; GCM_TAG];
                tag.copy_from_slice(&buf[tag_at..tag_at + GCM_TAG]);
                if encrypted {
                    let mut aad = [0u8; 12];
                    aad[..8].copy_from_slice(&buf[..8]);
                    aad[8..].copy_from_slice(&e_index);
                    keys.open(&nonce, &aad, &mut buf[8..body], &tag)?;
                } else {
                    // Authenticated only: the whole packet and the index are the AAD.
                    let mut aad = buf[..body].to_vec();
                    aad.extend_from_slice(&e_index);
                    keys.open(&nonce, &aad, &mut [], &tag)?;
                }
            }
        }
        state.window.accept(u64::from(index));
        self.rtcp_streams.set(u32::from_be_bytes(ssrc), state);
        Ok(body)
    }
}

/// The GCM IV of an SRTP packet (RFC 7714 §8.1): `00 00 || SSRC || ROC || SEQ` XOR salt.
fn rtp_nonce(salt: [u8; 12], ssrc: [u8; 4], roc: [u8; 4], seq: u16) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc);
    iv[6..10].copy_from_slice(&roc);
    iv[10..12].copy_from_slice(&seq.to_be_bytes());
    xor(iv, salt)
}

/// The GCM IV of an SRTCP packet (RFC 7714 §9.1): `00 00 || SSRC || 00 00 || 0 || index`
/// XOR salt.
fn rtcp_nonce(salt: [u8; 12], ssrc: [u8; 4], index: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc);
    iv[8..12].copy_from_slice(&index.to_be_bytes());
    xor(iv, salt)
}

fn xor(mut a: [u8; 12], b: [u8; 12]) -> [u8; 12] {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 3711 appendix B.3.
    fn b3_master() -> MasterKey {
        MasterKey::new(
            Suite::AesCm128HmacSha1_80,
            &hex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &hex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap()
    }

    #[test]
    fn key_derivation_matches_rfc_3711_b3() {
        let master = b3_master();
        let mut key = [0u8; 16];
        derive(&master, LABEL_RTP_CIPHER, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        derive(&master, LABEL_RTP_SALT, &mut salt);
        assert_eq!(salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 20];
        derive(&master, LABEL_RTP_AUTH, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    /// RFC 3711 appendix B.2: the AES-CM keystream for SSRC 0 and index 0.
    #[test]
    fn keystream_matches_rfc_3711_b2() {
        let key = hex("2B7E151628AED2A6ABF7158809CF4F3C");
        let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
        let aes = Aes128::new(aes::cipher::generic_array::GenericArray::from_slice(&key));
        let mut stream = [0u8; 32];
        cm_apply(&aes, &salt, [0; 4], 0, &mut stream);
        assert_eq!(
            stream.to_vec(),
            hex("E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB")
        );
    }

    /// A context whose session keys are the RFC 7714 §16 ones (given directly there, not
    /// derived).
    fn rfc7714_context() -> Context {
        let key = hex("000102030405060708090a0b0c0d0e0f");
        let salt: [u8; 12] = hex("517569642070726f2071756f").try_into().unwrap();
        let keys = || Keys::Gcm128 {
            aead: Aes128Gcm::new(aes_gcm::Key::<Aes128Gcm>::from_slice(&key)),
            salt,
        };
        Context {
            suite: Suite::AeadAes128Gcm,
            rtp: keys(),
            rtcp: keys(),
            rtp_streams: Streams::new(),
            rtcp_streams: Streams::new(),
        }
    }

    const RFC7714_RTP: &str = "8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e697320646976697361\
        20696e207061727465732074726573";
    const RFC7714_SRTP: &str = "8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e\
        6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce";
    const RFC7714_RTCP: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeef\
        deadbeefdeadbeefdeadbeefdeadbeef";
    const RFC7714_SRTCP: &str = "81c8000d4d61727363e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1\
        730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf87245d9eade800005d4";
    const RFC7714_SRTCP_AUTH_ONLY: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e930\
        4c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef841dd9683dd78ec92ae58790125f62b3000005d4";

    #[test]
    fn gcm_rtp_matches_rfc_7714() {
        let plain = hex(RFC7714_RTP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 64, 0);
        let len = rfc7714_context()
            .protect_rtp(&mut buf, plain.len())
            .unwrap();
        assert_eq!(buf[..len].to_vec(), hex(RFC7714_SRTP));
        let len = rfc7714_context().unprotect_rtp(&mut buf, len).unwrap();
        assert_eq!(buf[..len].to_vec(), plain);
    }

    #[test]
    fn gcm_rtcp_matches_rfc_7714() {
        let plain = hex(RFC7714_RTCP);
        let mut buf = plain.clone();
        buf.resize(plain.len() + 64, 0);
        let mut sender = rfc7714_context();
        sender.rtcp_streams.set(
            0x4d61_7273,
            RtcpState {
                next: 0x5d4,
                ..RtcpState::default()
            },
        );
        let len = sender.protect_rtcp(&mut buf, plain.len()).unwrap();
        assert_eq!(buf[..len].to_vec(), hex(RFC7714_SRTCP));
        let len = rfc7714_context().unprotect_rtcp(&mut buf, len).unwrap();
        assert_eq!(buf[..len].to_vec(), plain);

        let mut tagged = hex(RFC7714_SRTCP_AUTH_ONLY);
        let total = tagged.len();
        let len = rfc7714_context()
            .unprotect_rtcp(&mut tagged, total)
            .unwrap();
        assert_eq!(tagged[..len].to_vec(), plain);
    }

    /// Packets protected by libsrtp 2 under master keys `01 02 03 ...`: the key derivation,
    /// the ROC in the HMAC, the GCM salt padding and SRTCP agree with it (the plaintexts
    /// are a 32-byte counting payload behind SSRC cafebabe, sequence 0x0102 then 0xfffe,
    /// and a 20-byte one behind an RTCP sender report header; libsrtp's first SRTCP index
    /// is 1).
    const LIBSRTP: [(Suite, &str, &str, &str, &str); 4] = [
        (
            Suite::AesCm128HmacSha1_80,
            "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e",
            "80000102000000a0cafebabee80acf184400a43e2ba5958680b4023ca777fcdc54f7ab133c224018ae8631769ace08255773aa045c8c",
            "8000fffe000000a0cafebabea5510e8b9361cd9bf4dd35bce8e50cc93495703a84b0b6228f9c7cebebc1a1e5f09ba6b1054690184b9a",
            "81c80006cafebabea85a0b5b3178bbfa3990190d8f7c76dec32d24ea800000016f268382c6a3b94565e8",
        ),
        (
            Suite::AesCm128HmacSha1_32,
            "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e",
            "80000102000000a0cafebabee80acf184400a43e2ba5958680b4023ca777fcdc54f7ab133c224018ae8631769ace0825",
            "8000fffe000000a0cafebabea5510e8b9361cd9bf4dd35bce8e50cc93495703a84b0b6228f9c7cebebc1a1e5f09ba6b1",
            "81c80006cafebabea85a0b5b3178bbfa3990190d8f7c76dec32d24ea800000016f268382c6a3b94565e8",
        ),
        (
            Suite::AeadAes128Gcm,
            "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c",
            "80000102000000a0cafebabe7d602f2f2787a388c9f780c07253b8b4bbde315b93030b00a99dd585c2e6549ccca9311bf4e559d9ab9fac7affe2c96a",
            "8000fffe000000a0cafebabe3ad0111e0495bebe44d125cc6f5288a35adf3efd7efa2c0c85b8328c4416a05f038e6628a15598ce31041296295d7509",
            "81c80006cafebabe70d6ca1cdc9589f3b811ae674dcde02c03cb990a43d610f1d7bbe6b77ddb9f35384efa1e80000001",
        ),
        (
            Suite::AeadAes256Gcm,
            "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c",
            "80000102000000a0cafebabeb0403e51eed03c59f2555e878e9e7c0441ecca87bf98575967e3bbb2d753c3581dd3b7d211bf28da77993063ce70d838",
            "8000fffe000000a0cafebabe8cdcdc092961cb9d29dc4542836f1d040069b8ed3938508284f94e95a758246ba0c9058535186809d1e14ed775678a58",
            "81c80006cafebabe2e5248a31db55796bb9ee0519ee154981db743585420eb93607c4c305aa999600110bbec80000001",
        ),
    ];

    #[test]
    fn interoperates_with_libsrtp() {
        let counting = |n: u8| (0..n).collect::<Vec<u8>>();
        for (suite, master, rtp, rtp2, rtcp) in LIBSRTP {
            let master = MasterKey::from_concatenated(suite, &hex(master)).unwrap();
            for (seq, srtp) in [(0x0102u16, rtp), (0xfffe, rtp2)] {
                // Each the first of its stream (ROC 0).
                let (mut tx, mut rx) = (Context::new(&master), Context::new(&master));
                let plain = [rtp_header(seq), counting(32)].concat();
                let mut buf = plain.clone();
                buf.resize(256, 0);
                let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
                assert_eq!(buf[..len].to_vec(), hex(srtp), "{suite} protect");
                let len = rx.unprotect_rtp(&mut buf, len).unwrap();
                assert_eq!(buf[..len].to_vec(), plain, "{suite} unprotect");
            }
            let (mut tx, mut rx) = (Context::new(&master), Context::new(&master));
            let plain = [hex("81c80006cafebabe"), counting(20)].concat();
            let mut buf = plain.clone();
            buf.resize(256, 0);
            tx.rtcp_streams.set(
                0xcafe_babe,
                RtcpState {
                    next: 1,
                    ..RtcpState::default()
                },
            );
            let len = tx.protect_rtcp(&mut buf, plain.len()).unwrap();
            assert_eq!(buf[..len].to_vec(), hex(rtcp), "{suite} protect rtcp");
            let len = rx.unprotect_rtcp(&mut buf, len).unwrap();
            assert_eq!(buf[..len].to_vec(), plain, "{suite} unprotect rtcp");
        }
    }

    fn rtp_header(seq: u16) -> Vec<u8> {
        [
            vec![0x80, 0x00],
            seq.to_be_bytes().to_vec(),
            hex("000000a0cafebabe"),
        ]
        .concat()
    }

    fn rtp_packet(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0x00];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 160, 0xca, 0xfe, 0xba, 0xbe]);
        p.extend_from_slice(payload);
        p
    }

    fn round_trip(suite: Suite) {
        let master = MasterKey::generate(suite).unwrap();
        let (mut tx, mut rx) = (Context::new(&master), Context::new(&master));
        for seq in [65_534u16, 65_535, 0, 1, 2] {
            let plain = rtp_packet(seq, &[seq as u8; 160]);
            let mut buf = plain.clone();
            buf.resize(2048, 0);
            let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
            assert_eq!(len, plain.len() + suite.rtp_overhead());
            assert_ne!(buf[12..plain.len()], plain[12..], "payload is encrypted");
            let mut replay = buf.clone();
            let out = rx.unprotect_rtp(&mut buf, len).unwrap();
            assert_eq!(buf[..out], plain[..], "{suite} seq {seq}");
            assert_eq!(rx.unprotect_rtp(&mut replay, len), Err(Error::Replay));
        }
        // A sequence number the sender already protected is refused.
        let mut again = rtp_packet(2, &[0; 20]);
        let n = again.len();
        again.resize(2048, 0);
        assert_eq!(tx.protect_rtp(&mut again, n), Err(Error::Replay));

        // A flipped bit anywhere fails authentication.
        let plain = rtp_packet(3, &[7; 160]);
        let mut buf = plain.clone();
        buf.resize(2048, 0);
        let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
        for at in [1, 12, len - 1] {
            let mut bad = buf.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                rx.unprotect_rtp(&mut bad, len),
                Err(Error::Auth),
                "bit at {at}"
            );
        }
        assert_eq!(rx.unprotect_rtp(&mut buf, len), Ok(plain.len()));

        // RTCP both ways, replay refused, tampering refused.
        let rtcp = hex(RFC7714_RTCP);
        for _ in 0..3 {
            let mut buf = rtcp.clone();
            buf.resize(2048, 0);
            let len = tx.protect_rtcp(&mut buf, rtcp.len()).unwrap();
            assert_eq!(len, rtcp.len() + suite.rtcp_overhead());
            let mut replay = buf.clone();
            let mut bad = buf.clone();
            bad[10] ^= 0x80;
            assert_eq!(rx.unprotect_rtcp(&mut bad, len), Err(Error::Auth));
            assert_eq!(rx.unprotect_rtcp(&mut buf, len), Ok(rtcp.len()));
            assert_eq!(buf[..rtcp.len()], rtcp[..]);
            assert_eq!(rx.unprotect_rtcp(&mut replay, len), Err(Error::Replay));
        }
        // A different key does not authenticate.
        let mut other = Context::new(&MasterKey::generate(suite).unwrap());
        let plain = rtp_packet(4, &[1; 20]);
        let mut buf = plain.clone();
        buf.resize(2048, 0);
        let len = tx.protect_rtp(&mut buf, plain.len()).unwrap();
        assert_eq!(other.unprotect_rtp(&mut buf, len), Err(Error::Auth));
    }

    #[test]
    fn every_suite_round_trips_and_refuses_replays_and_forgeries() {
        for suite in Suite::ALL {
            round_trip(suite);
        }
    }

    #[test]
    fn short_and_garbage_packets_are_malformed_not_panics() {
        for suite in Suite::ALL {
            let mut ctx = Context::new(&MasterKey::generate(suite).unwrap());
            for len in 0..40 {
                let mut buf = vec![0x80u8; 64];
                buf[0] = 0x9f; // CSRC count 15 and an extension: longer than the packet.
                let _ = ctx.unprotect_rtp(&mut buf, len);
                let _ = ctx.unprotect_rtcp(&mut buf, len);
                let _ = ctx.protect_rtp(&mut buf, len);
                let _ = ctx.protect_rtcp(&mut buf, len);
            }
            let mut small = [0x80u8; 12];
            assert_eq!(ctx.protect_rtp(&mut small, 12), Err(Error::Malformed));
            assert_eq!(ctx.unprotect_rtp(&mut small, 100), Err(Error::Malformed));
        }
    }
}
