//! The location service: where the registrar keeps bindings and calls find them.
//!
//! One trait, [`LocationStore`], two stores: [`MemoryStore`] in the process (the single-replica
//! local platform's default) and, for replicas that share registrations, Redis
//! (docs/registrar.md). Bindings carry their own expiry time; a store drops them once past it
//! (the memory store on read, Redis by the key's TTL and on read).

use std::collections::HashMap;
use std::sync::Mutex;

use futures::future::BoxFuture;

use crate::registrar::{Binding, Change};

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("location store: {0}")]
pub struct StoreError(pub String);

/// Bindings by address-of-record (`user@domain`).
pub trait LocationStore: Send + Sync + std::fmt::Debug {
    /// The bindings of `aor` in force at `now` (seconds since the epoch), in any order.
    fn bindings<'a>(
        &'a self,
        aor: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Vec<Binding>, StoreError>>;

    /// Applies `changes` to the bindings of `aor`.
    fn apply<'a>(
        &'a self,
        aor: &'a str,
        changes: &'a [Change],
        now: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Bindings in this process only.
#[derive(Debug, Default)]
pub struct MemoryStore {
    by_aor: Mutex<HashMap<String, Vec<Binding>>>,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Binding>>> {
        self.by_aor.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LocationStore for MemoryStore {
    fn bindings<'a>(
        &'a self,
        aor: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Vec<Binding>, StoreError>> {
        let found = self
            .lock()
            .get(aor)
            .map(|all| all.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default();
        Box::pin(async move { Ok(found) })
    }

    fn apply<'a>(
        &'a self,
        aor: &'a str,
        changes: &'a [Change],
        now: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut by_aor = self.lock();
        let bindings = by_aor.entry(aor.to_owned()).or_default();
        bindings.retain(|b| b.expires_at > now);
        for change in changes {
            match change {
                Change::Upsert(binding) => {
                    bindings.retain(|b| b.contact != binding.contact);
                    bindings.push(binding.clone());
                }
                Change::Remove(contact) => bindings.retain(|b| &b.contact != contact),
            }
        }
        if bindings.is_empty() {
            by_aor.remove(aor);
        }
        Box::pin(async { Ok(()) })
    }
}
