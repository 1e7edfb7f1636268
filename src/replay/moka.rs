use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::sync::Cache;
use moka::Expiry;

use super::keys::{self, KeyHashing, NonceKeys, Padded};
use super::{Recorded, ReplayRecord, ReplayStore, ReplayStoreError};

/// Requests per second the default capacity is sized for.
const DEFAULT_RATE: u64 = 1_000;
/// Locks that make "look the key up, insert it if absent" atomic per key. Two requests wait for
/// each other only when their keys fall on one lock, and then for well under a microsecond.
const STRIPES: usize = 64;
/// The longest an entry can live under the default ±300 s window: a timestamp 300 s ahead,
/// remembered until 300 s after it.
const DEFAULT_LIFETIME_SECS: u64 = 600;

/// The in-memory replay store, built on a [`moka`] cache of compact 128-bit keys with
/// per-entry expiry.
///
/// Each accepted request costs one entry for its MAC and, while the one-nonce-per-key rule is
/// on, one for its key id and nonce. An entry is 16 bytes of key and 16 of expiry, plus moka's
/// own bookkeeping: about 350 bytes in all with moka 0.12, so about 700 bytes per request.
///
/// The capacity is a hard limit on live entries. When it is reached, new requests are refused
/// with 503 `nonce_store_full` until entries expire: evicting a live entry would open a replay
/// hole. The default, 1,200,000 entries, holds 1,000 requests a second for the 600 seconds an
/// entry can live under the default window (both rules), about 420 MB at full occupancy.
///
/// Entries expire on moka's monotonic clock, with a lifetime taken from the verifier's clock
/// when they are inserted. If the wall clock is stepped back by some seconds, an entry can
/// expire that many seconds before its request leaves the window; `CompactReplayStore`, which
/// expires entries on the verifier's clock alone, has no such gap.
///
/// Entries live in this process only: replicas behind a load balancer each keep their own, so a
/// request replayed to another replica is not caught. Share a store across replicas for that.
///
/// ```
/// use armor_psk::replay::MokaReplayStore;
///
/// let store = MokaReplayStore::builder().capacity(100_000).build();
/// assert_eq!(store.capacity(), 100_000);
/// ```
#[derive(Clone)]
pub struct MokaReplayStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Hashed with one multiply rather than SipHash: the keys are uniform already.
    cache: Cache<u128, Expiring, KeyHashing>,
    /// Entries inserted and not yet removed (moka's own count lags behind).
    live: Arc<AtomicU64>,
    capacity: u64,
    nonce_keys: NonceKeys,
    /// Picks a key's stripe, with seeds of its own.
    stripe_hashing: KeyHashing,
    stripes: Box<[Padded<Mutex<()>>]>,
}

#[derive(Clone, Copy)]
struct Expiring {
    /// The last Unix second the entry must be remembered.
    expires_at: i64,
    /// Seconds moka keeps it: from insertion to the end of `expires_at`.
    ttl_secs: u64,
}

struct PerEntryExpiry;

impl Expiry<u128, Expiring> for PerEntryExpiry {
    fn expire_after_create(&self, _: &u128, entry: &Expiring, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(entry.ttl_secs))
    }

    fn expire_after_update(
        &self,
        _: &u128,
        entry: &Expiring,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Duration::from_secs(entry.ttl_secs))
    }
}

impl Default for MokaReplayStore {
    fn default() -> Self {
        MokaReplayStore::builder().build()
    }
}

impl std::fmt::Debug for MokaReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MokaReplayStore")
            .field("live_entries", &self.live_entries())
            .field("capacity", &self.inner.capacity)
            .finish()
    }
}

impl MokaReplayStore {
    /// A builder; the defaults are those of [`MokaReplayStore::default`].
    pub fn builder() -> MokaReplayStoreBuilder {
        MokaReplayStoreBuilder {
            capacity: DEFAULT_RATE * DEFAULT_LIFETIME_SECS * 2,
        }
    }

    /// The hard limit on live entries.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// Entries inserted and not yet removed. Expired entries count until moka's housekeeping
    /// removes them, which a full store runs before refusing a request.
    pub fn live_entries(&self) -> u64 {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Inserts `key` unless a live entry holds it. Atomic per key. When the store looks full,
    /// runs moka's housekeeping once (expired entries are counted out only when it removes
    /// them) and tries again.
    fn insert(&self, key: u128, entry: Expiring, now: i64) -> Insert {
        match self.try_insert(key, entry, now) {
            Insert::Full => {
                self.inner.cache.run_pending_tasks();
                self.try_insert(key, entry, now)
            }
            done => done,
        }
    }

    fn try_insert(&self, key: u128, entry: Expiring, now: i64) -> Insert {
        let inner = &*self.inner;
        let stripe = keys::reduce(inner.stripe_hashing.hash(key), inner.stripes.len());
        // Moka's own atomic `and_compute_with` costs a waiter-map insert and removal (with an
        // allocation) per call, more than the lookup and insert themselves: a plain lookup and
        // insert under a striped lock is atomic per key at a fraction of that. Moka makes an
        // insert visible to lookups before it returns.
        let _stripe = inner.stripes[stripe]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if inner
            .cache
            .get(&key)
            .is_some_and(|existing| existing.expires_at >= now)
        {
            return Insert::Present;
        }
        if !self.claim_slot() {
            return Insert::Full;
        }
        // Replacing an expired entry of the same key: the eviction listener counts the old
        // one out.
        inner.cache.insert(key, entry);
        Insert::Inserted
    }

    /// Counts one more live entry, unless that would pass the capacity.
    fn claim_slot(&self) -> bool {
        let capacity = self.inner.capacity;
        self.inner
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (live < capacity).then_some(live + 1)
            })
            .is_ok()
    }

    fn full(&self) -> ReplayStoreError {
        ReplayStoreError::Full {
            capacity: self.inner.capacity,
        }
    }
}

enum Insert {
    Inserted,
    Present,
    Full,
}

#[async_trait]
impl ReplayStore for MokaReplayStore {
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        let entry = Expiring {
            expires_at: request.expires_at,
            ttl_secs: u64::try_from(request.expires_at.saturating_sub(request.now))
                .unwrap_or(0)
                .saturating_add(1),
        };
        let mac_key = keys::mac_key(request.mac);
        match self.insert(mac_key, entry, request.now) {
            Insert::Inserted => {}
            Insert::Present => return Ok(Recorded::ReplayedMac),
            Insert::Full => return Err(self.full()),
        }
        if request.unique_nonce {
            let nonce_key = self.inner.nonce_keys.key(request.key_id, request.nonce);
            let refused = match self.insert(nonce_key, entry, request.now) {
                Insert::Inserted => None,
                Insert::Present => Some(Ok(Recorded::ReplayedNonce)),
                Insert::Full => Some(Err(self.full())),
            };
            if let Some(refused) = refused {
                // Nothing of a refused request stays; the eviction listener counts it out.
                self.inner.cache.invalidate(&mac_key);
                return refused;
            }
        }
        Ok(Recorded::Fresh)
    }
}

/// Builds a [`MokaReplayStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MokaReplayStoreBuilder {
    capacity: u64,
}

impl MokaReplayStoreBuilder {
    /// The hard limit on live entries (two per request while the one-nonce-per-key rule is on).
    /// Defaults to `1_200_000`: 1,000 requests a second over the 600 seconds an entry can live
    /// under the default window.
    pub fn capacity(mut self, entries: u64) -> Self {
        self.capacity = entries;
        self
    }

    /// Sizes the capacity for `requests_per_second` over the `window_secs` either side of the
    /// server's clock, with both replay rules on.
    pub fn capacity_for_rate(self, requests_per_second: u64, window_secs: u64) -> Self {
        self.capacity(requests_per_second.saturating_mul(window_secs.saturating_mul(4)))
    }

    /// The store.
    pub fn build(self) -> MokaReplayStore {
        let live = Arc::new(AtomicU64::new(0));
        let counted_out = Arc::clone(&live);
        let cache = Cache::builder()
            .expire_after(PerEntryExpiry)
            .eviction_listener(move |_, _, _| {
                counted_out.fetch_sub(1, Ordering::AcqRel);
            })
            .build_with_hasher(KeyHashing::new());
        MokaReplayStore {
            inner: Arc::new(Inner {
                cache,
                live,
                capacity: self.capacity,
                nonce_keys: NonceKeys::new(),
                stripe_hashing: KeyHashing::new(),
                stripes: (0..STRIPES).map(|_| Padded(Mutex::new(()))).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, TestStore};
    use super::*;

    impl TestStore for MokaReplayStore {
        fn with_capacity(entries: u64) -> Self {
            MokaReplayStore::builder().capacity(entries).build()
        }

        fn live_entries(&self) -> u64 {
            // Removals are counted out by moka's eviction listener, in its housekeeping.
            self.inner.cache.run_pending_tasks();
            MokaReplayStore::live_entries(self)
        }
    }

    conformance::suite!(MokaReplayStore);
}
