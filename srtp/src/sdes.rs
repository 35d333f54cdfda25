//! SDES keying (RFC 4568): the value of an `a=crypto` attribute,
//! `<tag> <suite> inline:<base64 key||salt>[|lifetime][|MKI:length] [session params]`.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

use crate::{MasterKey, Suite};

/// Base64 that accepts keys with or without padding (both are seen in the wild).
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One `a=crypto` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crypto {
    /// The tag the answer names to pick this line.
    pub tag: u32,
    /// Suite, key and salt.
    pub key: MasterKey,
}

/// Why an `a=crypto` line cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SdesError {
    /// Not `<tag> <suite> <key params>`.
    #[error("malformed crypto attribute")]
    Malformed,
    /// A suite this relay does not implement.
    #[error("unsupported crypto suite {0}")]
    UnsupportedSuite(String),
    /// A key parameter or session parameter this relay does not implement (MKI, a key
    /// derivation rate, unencrypted or unauthenticated SRTP).
    #[error("unsupported crypto parameter {0}")]
    UnsupportedParameter(String),
    /// The key is not base64 or has the wrong length for the suite.
    #[error("bad key for {0}")]
    BadKey(Suite),
}

impl Crypto {
    /// A fresh random key for `suite` under `tag`.
    pub fn generate(tag: u32, suite: Suite) -> Result<Self, getrandom::Error> {
        Ok(Self {
            tag,
            key: MasterKey::generate(suite)?,
        })
    }

    /// Parses the value of an `a=crypto` attribute.
    pub fn parse(value: &str) -> Result<Self, SdesError> {
        let mut fields = value.split_ascii_whitespace();
        let tag = fields
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or(SdesError::Malformed)?;
        let suite_name = fields.next().ok_or(SdesError::Malformed)?;
        let suite = Suite::from_name(suite_name)
            .ok_or_else(|| SdesError::UnsupportedSuite(suite_name.to_owned()))?;
        let key_params = fields.next().ok_or(SdesError::Malformed)?;
        for param in fields {
            let name = param.split('=').next().unwrap_or(param);
            match name.to_ascii_uppercase().as_str() {
                "KDR" if param.ends_with("=0") => {}
                "FEC_ORDER" | "FEC_KEY" | "WSH" => {}
                _ => return Err(SdesError::UnsupportedParameter(param.to_owned())),
            }
        }
        // Several keys (`;`-separated) are for MKI switching: the first is used.
        let first = key_params.split(';').next().unwrap_or(key_params);
        let inline = first.strip_prefix("inline:").ok_or(SdesError::Malformed)?;
        let mut parts = inline.split('|');
        let material = parts.next().ok_or(SdesError::Malformed)?;
        for extra in parts {
            // A lifetime is fine (rekeying never comes: calls end long before); an MKI is not.
            if extra.contains(':') {
                return Err(SdesError::UnsupportedParameter(extra.to_owned()));
            }
        }
        let bytes = LENIENT
            .decode(material)
            .map_err(|_| SdesError::BadKey(suite))?;
        let key = MasterKey::from_concatenated(suite, &bytes).ok_or(SdesError::BadKey(suite))?;
        Ok(Self { tag, key })
    }

    /// The attribute value.
    pub fn to_value(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.key.suite(),
            STANDARD.encode(self.key.concatenated())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_crypto_lines() {
        let c = Crypto::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20",
        )
        .unwrap();
        assert_eq!(c.tag, 1);
        assert_eq!(c.key.suite(), Suite::AesCm128HmacSha1_80);
        assert_eq!(
            c.to_value(),
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"
        );
        assert_eq!(Crypto::parse(&c.to_value()).unwrap(), c);
        for suite in Suite::ALL {
            let g = Crypto::generate(7, suite).unwrap();
            assert_eq!(Crypto::parse(&g.to_value()).unwrap(), g);
        }
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        assert_eq!(
            Crypto::parse("1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"),
            Err(SdesError::UnsupportedSuite("F8_128_HMAC_SHA1_80".into()))
        );
        assert!(matches!(
            Crypto::parse(
                "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"
            ),
            Err(SdesError::UnsupportedParameter(_))
        ));
        assert!(matches!(
            Crypto::parse(
                "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP"
            ),
            Err(SdesError::UnsupportedParameter(_))
        ));
        assert_eq!(
            Crypto::parse("1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ="),
            Err(SdesError::BadKey(Suite::AesCm128HmacSha1_80))
        );
        assert_eq!(Crypto::parse("x"), Err(SdesError::Malformed));
        assert_eq!(Crypto::parse(""), Err(SdesError::Malformed));
    }
}
