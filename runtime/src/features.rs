//! The optional parts of a build. The container image has them all; the local build of
//! `make run` leaves them out to build faster. A process whose configuration asks for a part its
//! build lacks says so at start-up, with how to get it, instead of ignoring the request.

use std::fmt;

/// A part of the binaries that a build may leave out (a cargo feature of the pods).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// The Kubernetes configuration source: the API client and its watches.
    Kubernetes,
    /// OpenTelemetry span export over OTLP/HTTP.
    Otlp,
}

impl Feature {
    /// The cargo feature's name.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Kubernetes => "kubernetes",
            Feature::Otlp => "otlp",
        }
    }

    /// Whether this build has it.
    pub fn is_built(self) -> bool {
        match self {
            Feature::Kubernetes => cfg!(feature = "kubernetes"),
            Feature::Otlp => cfg!(feature = "otlp"),
        }
    }

    /// Succeeds when this build has the feature; otherwise the error that `binary` gives when
    /// `asked_by` (a flag or variable) asks for it.
    pub fn require(self, binary: &'static str, asked_by: &'static str) -> Result<(), Missing> {
        if self.is_built() {
            Ok(())
        } else {
            Err(Missing {
                feature: self,
                binary,
                asked_by,
            })
        }
    }
}

/// A configuration asks for a feature this build left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The feature left out.
    pub feature: Feature,
    /// The binary (and package) that lacks it.
    pub binary: &'static str,
    /// What asked for it: a flag or an environment variable.
    pub asked_by: &'static str,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Missing {
            feature,
            binary,
            asked_by,
        } = self;
        let feature = feature.name();
        write!(
            f,
            "{asked_by} needs the `{feature}` feature, which this build of {binary} leaves out \
             (the local build of `make run` does). Build with it: `make run FULL=1`, or \
             `cargo build --release -p {binary} --features {feature}`; the container image has it"
        )
    }
}

impl std::error::Error for Missing {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_feature_names_what_asked_for_it_and_how_to_build_it() {
        let missing = Missing {
            feature: Feature::Otlp,
            binary: "media-pod",
            asked_by: "OTEL_EXPORTER_OTLP_ENDPOINT",
        };
        let text = missing.to_string();
        assert!(text.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT needs the `otlp` feature"));
        assert!(text.contains("this build of media-pod leaves out"));
        assert!(text.contains("cargo build --release -p media-pod --features otlp"));
        assert!(text.contains("make run FULL=1"));
    }

    #[test]
    fn require_follows_the_build() {
        for feature in [Feature::Kubernetes, Feature::Otlp] {
            let result = feature.require("signaling-pod", "--flag");
            assert_eq!(result.is_ok(), feature.is_built(), "{feature:?}");
            if let Err(missing) = result {
                assert_eq!(missing.feature, feature);
            }
        }
        assert_eq!(Feature::Kubernetes.is_built(), cfg!(feature = "kubernetes"));
        assert_eq!(Feature::Otlp.is_built(), cfg!(feature = "otlp"));
    }
}
