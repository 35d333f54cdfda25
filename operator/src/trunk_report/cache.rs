//! The latest figures per Gateway, shared by the poller (writer) and the Gateway and Trunk
//! reconcilers (readers).

use std::collections::BTreeMap;
use std::sync::RwLock;

use tandem_api::ObjectKey;

use super::aggregate::{GatewayActivity, TrunkTotals};

/// Latest [`GatewayActivity`] per Gateway (namespace and name).
#[derive(Debug, Default)]
pub struct ReportCache {
    gateways: RwLock<BTreeMap<ObjectKey, GatewayActivity>>,
}

impl ReportCache {
    /// An empty cache: nothing polled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The figures of a Gateway, if it was polled.
    pub fn gateway(&self, gateway: &ObjectKey) -> Option<GatewayActivity> {
        self.read().get(gateway).cloned()
    }

    /// The figures of a Trunk of `gateway`: zero when the Gateway's pods answered but none
    /// reported the trunk, `None` when the figures are unknown (never polled, e.g. after an
    /// operator restart, or no pod answered), in which case the status keeps what it has.
    pub fn trunk(&self, gateway: &ObjectKey, trunk: &ObjectKey) -> Option<TrunkTotals> {
        let gateways = self.read();
        let trunks = gateways.get(gateway)?.trunks.as_ref()?;
        Some(trunks.get(trunk).cloned().unwrap_or_default())
    }

    /// Stores the figures of a Gateway; returns the previous ones when they differ (or
    /// `Some(default)` for a first report), `None` when nothing changed.
    pub fn update(&self, gateway: ObjectKey, activity: GatewayActivity) -> Option<GatewayActivity> {
        let mut gateways = self
            .gateways
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match gateways.insert(gateway, activity.clone()) {
            Some(previous) if previous == activity => None,
            Some(previous) => Some(previous),
            None => Some(GatewayActivity::default()),
        }
    }

    /// Forgets the Gateways not in `existing` (deleted ones).
    pub fn retain(&self, existing: &std::collections::BTreeSet<ObjectKey>) {
        self.gateways
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|key, _| existing.contains(key));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ObjectKey, GatewayActivity>> {
        // A panic while holding the lock cannot leave the map half-written: every write is
        // a single insert.
        self.gateways
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_gateways_keep_statuses_and_known_ones_default_to_zero() {
        let cache = ReportCache::new();
        let gateway = ObjectKey::new("voice", "edge");
        let trunk = ObjectKey::new("voice", "carrier");
        assert_eq!(cache.trunk(&gateway, &trunk), None);

        let activity = GatewayActivity {
            active_calls: Some(3),
            active_sessions: Some(1),
            trunks: Some(BTreeMap::new()),
        };
        assert_eq!(
            cache.update(gateway.clone(), activity.clone()),
            Some(GatewayActivity::default())
        );
        assert_eq!(cache.trunk(&gateway, &trunk), Some(TrunkTotals::default()));
        assert_eq!(cache.update(gateway.clone(), activity.clone()), None);
        let busier = GatewayActivity {
            active_calls: Some(4),
            ..activity.clone()
        };
        assert_eq!(cache.update(gateway.clone(), busier), Some(activity));

        let unknown = GatewayActivity::default();
        cache.update(gateway.clone(), unknown);
        assert_eq!(cache.trunk(&gateway, &trunk), None, "no pod answered");

        cache.retain(&std::collections::BTreeSet::new());
        assert_eq!(cache.gateway(&gateway), None);
    }
}
