//! Errors of a reconcile, and the label each one is counted under in
//! `tandem_operator_reconcile_errors_total`.

use super::gateway::build::BuildError;

/// Why a reconcile failed; the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks a name or namespace (the API server always sets them, so this is a
    /// watch of the wrong scope).
    #[error("object has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// A call to the API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing, e.g. "applying Deployment voice/edge-signaling".
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// A child could not be built (not a user error: those become conditions).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// An object could not be turned into a request body.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Wraps a client error with what the operator was doing.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// A short, bounded label for metrics.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "missing_metadata",
            Self::Kube { source, .. } => match source {
                kube::Error::Api(status) if status.code == 409 => "conflict",
                kube::Error::Api(status) if status.code == 403 => "forbidden",
                kube::Error::Api(status) if status.code == 404 => "not_found",
                kube::Error::Api(_) => "api_error",
                _ => "client_error",
            },
            Self::Build(_) => "build",
            Self::Serialize { .. } => "serialize",
        }
    }
}

/// Whether a client error is the API server's 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}
