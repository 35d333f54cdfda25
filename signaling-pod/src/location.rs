//! The location service: where the registrar keeps bindings and calls find them.
//!
//! One trait, [`LocationStore`], two stores: [`MemoryStore`] in the process (the single-replica
//! local platform's default) and, for replicas that share registrations, [`RedisStore`]
//! (`--location-redis-url`; docs/registrar.md). Bindings carry their own expiry time; a store drops them once past it
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

/// Bindings in Redis, shared by every replica: a hash per address-of-record (contact → binding
/// as JSON) under `tandem:location:<aor>`, expiring with its last binding.
#[derive(Clone)]
pub struct RedisStore {
    connection: redis::aio::ConnectionManager,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisStore")
    }
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://host:port/db`); reconnects by itself later.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(redis_error)?;
        let connection = redis::aio::ConnectionManager::new(client)
            .await
            .map_err(redis_error)?;
        Ok(Self { connection })
    }

    fn key(aor: &str) -> String {
        format!("tandem:location:{aor}")
    }
}

fn redis_error(error: redis::RedisError) -> StoreError {
    StoreError(error.to_string())
}

impl LocationStore for RedisStore {
    fn bindings<'a>(
        &'a self,
        aor: &'a str,
        now: u64,
    ) -> BoxFuture<'a, Result<Vec<Binding>, StoreError>> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            let values: Vec<String> = redis::cmd("HVALS")
                .arg(Self::key(aor))
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            Ok(values
                .iter()
                .filter_map(|v| serde_json::from_str::<Binding>(v).ok())
                .filter(|b| b.expires_at > now)
                .collect())
        })
    }

    fn apply<'a>(
        &'a self,
        aor: &'a str,
        changes: &'a [Change],
        now: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let mut connection = self.connection.clone();
        Box::pin(async move {
            if changes.is_empty() {
                return Ok(());
            }
            let key = Self::key(aor);
            let mut pipe = redis::pipe();
            pipe.atomic();
            for change in changes {
                match change {
                    Change::Upsert(binding) => {
                        let json = serde_json::to_string(binding)
                            .map_err(|e| StoreError(e.to_string()))?;
                        pipe.cmd("HSET").arg(&key).arg(&binding.contact).arg(json);
                    }
                    Change::Remove(contact) => {
                        pipe.cmd("HDEL").arg(&key).arg(contact);
                    }
                }
            }
            pipe.cmd("HVALS").arg(&key);
            let (values,): (Vec<String>,) = {
                // The HSET/HDEL replies are dropped; the last reply is every binding left.
                let replies: Vec<redis::Value> = pipe
                    .query_async(&mut connection)
                    .await
                    .map_err(redis_error)?;
                let last = replies.last().cloned().unwrap_or(redis::Value::Nil);
                (redis::from_redis_value(&last).map_err(redis_error)?,)
            };
            // The hash lives as long as its longest binding; lapsed ones go with the next write.
            let bindings: Vec<Binding> = values
                .iter()
                .filter_map(|v| serde_json::from_str(v).ok())
                .collect();
            let lapsed: Vec<&str> = bindings
                .iter()
                .filter(|b| b.expires_at <= now)
                .map(|b| b.contact.as_str())
                .collect();
            let mut tidy = redis::pipe();
            if !lapsed.is_empty() {
                tidy.cmd("HDEL").arg(&key).arg(lapsed);
            }
            match bindings.iter().map(|b| b.expires_at).max() {
                Some(last) if last > now => tidy.cmd("EXPIREAT").arg(&key).arg(last),
                _ => tidy.cmd("DEL").arg(&key),
            };
            tidy.query_async::<()>(&mut connection)
                .await
                .map_err(redis_error)
        })
    }
}
