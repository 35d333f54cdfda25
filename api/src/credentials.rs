//! Digest credentials from Kubernetes Secrets.
//!
//! A Trunk's `inbound.auth.secretRef` and `outbound.auth.secretRef` name a Secret of the Trunk's
//! namespace holding two keys: `username` and `password` (UTF-8 text; `stringData` or base64
//! `data`). In the cluster the signaling pod watches Secrets; locally a `kind: Secret` manifest
//! in the configuration directory stands in for it. Nothing here prints a password: [`Password`]
//! and [`SecretData`] show `<redacted>` in Debug output.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;

/// The key holding the user name.
pub const USERNAME_KEY: &str = "username";
/// The key holding the password.
pub const PASSWORD_KEY: &str = "password";

/// A password, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    /// Wraps password bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    /// The password, for hashing.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DigestCredentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: Password,
}

impl fmt::Debug for DigestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DigestCredentials(<redacted>)")
    }
}

/// The keys and values of a Secret (`data` decoded, `stringData` merged over it as the API
/// server does), never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData(BTreeMap<String, Vec<u8>>);

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()?;
        f.write_str(" <values redacted>")
    }
}

impl SecretData {
    /// The data of `secret`.
    pub fn of(secret: &Secret) -> Self {
        let mut map: BTreeMap<String, Vec<u8>> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect();
        for (k, v) in secret.string_data.iter().flatten() {
            map.insert(k.clone(), v.clone().into_bytes());
        }
        Self(map)
    }

    /// The `username` and `password` keys, or why they cannot be used.
    pub fn digest_credentials(&self) -> Result<DigestCredentials, String> {
        let text = |key: &str| -> Result<String, String> {
            let value = self
                .0
                .get(key)
                .ok_or_else(|| format!("has no key {key:?}"))?;
            let value = String::from_utf8(value.clone())
                .map_err(|_| format!("key {key:?} is not UTF-8 text"))?;
            if value.is_empty() {
                return Err(format!("key {key:?} is empty"));
            }
            Ok(value)
        };
        let username = text(USERNAME_KEY)?;
        if username
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\')
        {
            return Err(format!(
                "key {USERNAME_KEY:?} holds a character a SIP header cannot carry"
            ));
        }
        Ok(DigestCredentials {
            username,
            password: Password::new(text(PASSWORD_KEY)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    #[test]
    fn string_data_wins_over_data_and_nothing_is_printed() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("username".into(), ByteString(b"alice".to_vec())),
                ("password".into(), ByteString(b"old".to_vec())),
            ])),
            string_data: Some(BTreeMap::from([("password".into(), "s3cret".into())])),
            ..Secret::default()
        };
        let data = SecretData::of(&secret);
        let creds = data.digest_credentials().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(creds.username, "alice");
        assert_eq!(creds.password.expose(), b"s3cret");
        for printed in [format!("{data:?}"), format!("{creds:?}")] {
            assert!(
                !printed.contains("s3cret") && !printed.contains("old"),
                "{printed}"
            );
        }
    }

    #[test]
    fn missing_or_unusable_keys_are_named() {
        let data = |pairs: &[(&str, &[u8])]| {
            SecretData(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                    .collect(),
            )
        };
        let problem = |d: SecretData| d.digest_credentials().err().unwrap_or_default();
        assert_eq!(
            problem(data(&[("username", b"a")])),
            "has no key \"password\""
        );
        assert_eq!(
            problem(data(&[("username", b""), ("password", b"p")])),
            "key \"username\" is empty"
        );
        assert_eq!(
            problem(data(&[("username", b"a"), ("password", b"\xff")])),
            "key \"password\" is not UTF-8 text"
        );
        assert!(problem(data(&[("username", b"a\"b"), ("password", b"p")])).contains("SIP"));
    }
}
