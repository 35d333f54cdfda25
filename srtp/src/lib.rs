//! Sans-IO SRTP and SRTCP (RFC 3711, and the AES-GCM suites of RFC 7714) with SDES keying
//! (RFC 4568).
//!
//! A [`Context`] holds one direction of one party's keys: the relay unprotects what a party
//! sends with the key the party announced, and protects what it sends the party with a key
//! of its own. Packets are transformed in place in a caller-owned buffer; the primitives
//! (AES, AES-CTR, AES-GCM, HMAC-SHA1) come from the RustCrypto crates.

mod context;
mod replay;
pub mod sdes;

pub use context::Context;

/// The SRTP protection profiles (crypto suites) supported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Suite {
    /// AES-128 counter mode, HMAC-SHA1 with an 80-bit tag (RFC 4568).
    AesCm128HmacSha1_80,
    /// AES-128 counter mode, HMAC-SHA1 with a 32-bit tag on SRTP (80-bit on SRTCP).
    AesCm128HmacSha1_32,
    /// AES-128 GCM with a 128-bit tag (RFC 7714).
    AeadAes128Gcm,
    /// AES-256 GCM with a 128-bit tag (RFC 7714).
    AeadAes256Gcm,
}

impl Suite {
    /// Every supported suite, in the order the relay offers them.
    pub const ALL: [Suite; 4] = [
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes256Gcm,
        Suite::AeadAes128Gcm,
    ];

    /// The SDES name (RFC 4568, RFC 7714).
    pub const fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    /// The suite named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Suite> {
        Suite::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// Master key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Suite::AeadAes256Gcm => 32,
            _ => 16,
        }
    }

    /// Master salt length in bytes.
    pub const fn salt_len(self) -> usize {
        if self.is_aead() { 12 } else { 14 }
    }

    /// Whether the suite is an AEAD (GCM) one.
    pub const fn is_aead(self) -> bool {
        matches!(self, Suite::AeadAes128Gcm | Suite::AeadAes256Gcm)
    }

    /// Bytes an SRTP packet grows by.
    pub const fn rtp_overhead(self) -> usize {
        match self {
            Suite::AesCm128HmacSha1_80 => 10,
            Suite::AesCm128HmacSha1_32 => 4,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => 16,
        }
    }

    /// Bytes an SRTCP packet grows by (tag and the E flag with the index).
    pub const fn rtcp_overhead(self) -> usize {
        if self.is_aead() { 16 + 4 } else { 10 + 4 }
    }
}

impl std::fmt::Display for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A suite with its master key and salt: what an `a=crypto` line carries.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    suite: Suite,
    key: Vec<u8>,
    salt: Vec<u8>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never log keying material.
        f.debug_struct("MasterKey")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A key from its parts; `None` when a length does not fit the suite.
    pub fn new(suite: Suite, key: &[u8], salt: &[u8]) -> Option<Self> {
        (key.len() == suite.key_len() && salt.len() == suite.salt_len()).then(|| Self {
            suite,
            key: key.to_vec(),
            salt: salt.to_vec(),
        })
    }

    /// A key from `key || salt` (the SDES inline form).
    pub fn from_concatenated(suite: Suite, material: &[u8]) -> Option<Self> {
        if material.len() != suite.key_len() + suite.salt_len() {
            return None;
        }
        let (key, salt) = material.split_at(suite.key_len());
        Self::new(suite, key, salt)
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate(suite: Suite) -> Result<Self, getrandom::Error> {
        let mut material = vec![0u8; suite.key_len() + suite.salt_len()];
        getrandom::fill(&mut material)?;
        let salt = material.split_off(suite.key_len());
        Ok(Self {
            suite,
            key: material,
            salt,
        })
    }

    /// The suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// `key || salt`.
    pub fn concatenated(&self) -> Vec<u8> {
        let mut out = self.key.clone();
        out.extend_from_slice(&self.salt);
        out
    }
}

/// Why a packet could not be protected or unprotected. Bounded: used as a metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// Too short, not RTP/RTCP, or no room for the tag.
    #[error("malformed packet")]
    Malformed,
    /// The authentication tag did not verify.
    #[error("authentication failed")]
    Auth,
    /// The index was seen already or is too old for the replay window.
    #[error("replayed or too old")]
    Replay,
}

impl Error {
    /// The metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Error::Malformed => "malformed",
            Error::Auth => "auth",
            Error::Replay => "replay",
        }
    }
}
