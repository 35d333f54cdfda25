//! Errors of the ng protocol layer: framing, message shape and missing keys.
//!
//! Where rtpengine has a fixed wording for a problem (`No call-id in message`, `Unknown
//! call-id`, …) the `Display` text uses it, because ng clients log or match these strings and
//! the text goes back verbatim as the reply's `error-reason`.

use crate::bencode::BencodeError;

/// Everything that can be wrong with an ng datagram or message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NgError {
    /// The cookie is not UTF-8 text.
    #[error("Invalid data (cookie is not UTF-8)")]
    CookieNotUtf8,
    /// No space separates a cookie from the payload, or the cookie is empty.
    #[error("Invalid data (no cookie)")]
    MissingCookie,
    /// The cookie is implausibly long (it is echoed and cached, so it is bounded).
    #[error("Invalid data (cookie longer than {max} bytes)")]
    CookieTooLong {
        /// The limit.
        max: usize,
    },
    /// Nothing follows the cookie.
    #[error("Invalid data (no payload)")]
    EmptyPayload,
    /// The payload is not valid bencode.
    #[error("Could not decode dictionary: {0}")]
    Bencode(#[from] BencodeError),
    /// The payload is valid bencode but not a dictionary.
    #[error("Could not decode dictionary: message is a {found}, not a dictionary")]
    NotADictionary {
        /// Type of the value that was found.
        found: &'static str,
    },
    /// The request dictionary lacks `command`.
    #[error("Dictionary contains no key \"command\"")]
    MissingCommand,
    /// `command` names something this implementation does not serve.
    #[error("Unrecognized command \"{0}\"")]
    UnknownCommand(String),
    /// A key the command requires is absent.
    #[error("{}", missing_key_text(.0))]
    MissingKey(&'static str),
    /// A key has a value of the wrong type.
    #[error("Key \"{key}\" must be {expected}, not a {found}")]
    WrongType {
        /// The key.
        key: &'static str,
        /// The expected shape, e.g. "a string".
        expected: &'static str,
        /// The type that was found.
        found: &'static str,
    },
    /// A key holds bytes that are not UTF-8 where text is required.
    #[error("Key \"{0}\" is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A key has a value outside its allowed range.
    #[error("Invalid value for key \"{key}\": {reason}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A reply without a `result` key.
    #[error("Reply contains no key \"result\"")]
    MissingResult,
}

fn missing_key_text(key: &str) -> String {
    match key {
        "sdp" => "No SDP body in message".to_owned(),
        other => format!("No {other} in message"),
    }
}

impl NgError {
    /// A short, bounded label for metrics (never contains input data).
    pub fn reason_label(&self) -> &'static str {
        match self {
            NgError::MissingCookie
            | NgError::CookieTooLong { .. }
            | NgError::CookieNotUtf8
            | NgError::EmptyPayload
            | NgError::Bencode(_)
            | NgError::NotADictionary { .. } => "malformed",
            NgError::MissingCommand | NgError::UnknownCommand(_) => "unknown_command",
            NgError::MissingKey(_) => "missing_key",
            NgError::WrongType { .. } | NgError::NotUtf8(_) | NgError::InvalidValue { .. } => {
                "invalid_value"
            }
            NgError::MissingResult => "malformed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_use_rtpengine_wording() {
        assert_eq!(
            NgError::MissingKey("call-id").to_string(),
            "No call-id in message"
        );
        assert_eq!(
            NgError::MissingKey("sdp").to_string(),
            "No SDP body in message"
        );
        assert_eq!(
            NgError::MissingCommand.to_string(),
            "Dictionary contains no key \"command\""
        );
    }
}
