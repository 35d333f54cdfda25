//! The dereference step of the Gateway pipeline: everything the later steps read besides
//! the spec. It turns the watched object into a Gateway (or the reason it does not
//! deserialize) and looks up the latest call and session figures the poller collected from
//! the Gateway's pods.

use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use tandem_api::{Gateway, ObjectKey};

use crate::trunk_report::{GatewayActivity, ReportCache};

/// The inputs of one Gateway reconcile.
#[derive(Debug)]
pub struct Dereferenced<'a> {
    /// The Gateway.
    pub gateway: &'a Gateway,
    /// Its pods' figures, when known.
    pub activity: Option<GatewayActivity>,
}

/// Resolves the Gateway `key` watched as `object`.
pub fn dereference<'a>(
    object: &'a DeserializeGuard<Gateway>,
    key: &ObjectKey,
    reports: &ReportCache,
) -> Result<Dereferenced<'a>, &'a InvalidObject> {
    let gateway = object.0.as_ref()?;
    Ok(Dereferenced {
        gateway,
        activity: reports.gateway(key),
    })
}
