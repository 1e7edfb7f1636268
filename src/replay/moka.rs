use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::ops::compute::{CompResult, Op};
use moka::sync::Cache;
use moka::Expiry;

use super::{Recorded, ReplayRecord, ReplayStore, ReplayStoreError};

/// Requests per second the default capacity is sized for.
const DEFAULT_RATE: u64 = 1_000;
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
    cache: Cache<u128, Expiring>,
    /// Entries inserted and not yet removed (moka's own count lags behind).
    live: Arc<AtomicU64>,
    capacity: u64,
    /// Two independently keyed SipHash states: together a keyed 128-bit hash of key id and
    /// nonce, whose collisions an outsider cannot aim for.
    nonce_hashers: [std::collections::hash_map::RandomState; 2],
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

    fn mac_key(mac: &[u8]) -> u128 {
        let mut first = [0u8; 16];
        first.copy_from_slice(&mac[..16]);
        // The top bit tells MAC keys from nonce keys.
        u128::from_le_bytes(first) & (u128::MAX >> 1)
    }

    fn nonce_key(&self, key_id: &str, nonce: &str) -> u128 {
        let [low, high] = &self.inner.nonce_hashers;
        let low = low.hash_one((key_id, nonce));
        let high = high.hash_one((key_id, nonce));
        (u128::from(high) << 64 | u128::from(low)) | (1 << 127)
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
        let mut full = false;
        let outcome = self
            .inner
            .cache
            .entry(key)
            .and_compute_with(|existing| match existing {
                Some(existing) if existing.value().expires_at >= now => Op::Nop,
                _ if self.claim_slot() => Op::Put(entry),
                _ => {
                    full = true;
                    Op::Nop
                }
            });
        match outcome {
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) => Insert::Inserted,
            _ if full => Insert::Full,
            _ => Insert::Present,
        }
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
        let mac_key = Self::mac_key(request.mac);
        match self.insert(mac_key, entry, request.now) {
            Insert::Inserted => {}
            Insert::Present => return Ok(Recorded::ReplayedMac),
            Insert::Full => return Err(self.full()),
        }
        if request.unique_nonce {
            let nonce_key = self.nonce_key(request.key_id, request.nonce);
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
            .build();
        MokaReplayStore {
            inner: Arc::new(Inner {
                cache,
                live,
                capacity: self.capacity,
                nonce_hashers: Default::default(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn record<'a>(mac: &'a [u8; 64], nonce: &'a str) -> ReplayRecord<'a> {
        ReplayRecord::new("key", nonce, mac, NOW + 300, NOW)
    }

    #[tokio::test]
    async fn refuses_a_repeated_mac_and_a_repeated_nonce() {
        let store = MokaReplayStore::default();
        let (a, b) = ([1u8; 64], [2u8; 64]);
        assert_eq!(
            store.record(&record(&a, "n1")).await.unwrap(),
            Recorded::Fresh
        );
        assert_eq!(
            store.record(&record(&a, "n2")).await.unwrap(),
            Recorded::ReplayedMac
        );
        assert_eq!(
            store.record(&record(&b, "n1")).await.unwrap(),
            Recorded::ReplayedNonce
        );
        // Another key may use the same nonce.
        let other_key = ReplayRecord::new("other", "n1", &b, NOW + 300, NOW);
        assert_eq!(store.record(&other_key).await.unwrap(), Recorded::Fresh);
    }

    #[tokio::test]
    async fn a_refused_request_leaves_nothing_behind() {
        let store = MokaReplayStore::default();
        let (a, b) = ([1u8; 64], [2u8; 64]);
        store.record(&record(&a, "n1")).await.unwrap();
        assert_eq!(
            store.record(&record(&b, "n1")).await.unwrap(),
            Recorded::ReplayedNonce
        );
        store.inner.cache.run_pending_tasks();
        assert_eq!(store.live_entries(), 2);
        // b's MAC was not kept: under a fresh nonce it is accepted.
        assert_eq!(
            store.record(&record(&b, "n2")).await.unwrap(),
            Recorded::Fresh
        );
    }

    #[tokio::test]
    async fn nonce_rule_can_be_off() {
        let store = MokaReplayStore::default();
        let (a, b) = ([1u8; 64], [2u8; 64]);
        let loose = |mac| record(mac, "1700000000").unique_nonce(false);
        assert_eq!(store.record(&loose(&a)).await.unwrap(), Recorded::Fresh);
        assert_eq!(store.record(&loose(&b)).await.unwrap(), Recorded::Fresh);
        assert_eq!(
            store.record(&loose(&a)).await.unwrap(),
            Recorded::ReplayedMac
        );
        assert_eq!(store.live_entries(), 2);
    }

    #[tokio::test]
    async fn an_entry_lives_until_its_own_expiry() {
        let store = MokaReplayStore::default();
        let mac = [3u8; 64];
        let early = ReplayRecord::new("key", "n", &mac, NOW + 10, NOW);
        assert_eq!(store.record(&early).await.unwrap(), Recorded::Fresh);
        let at_expiry = ReplayRecord::new("key", "n", &mac, NOW + 10, NOW + 10);
        assert_eq!(
            store.record(&at_expiry).await.unwrap(),
            Recorded::ReplayedMac
        );
        let after = ReplayRecord::new("key", "n", &mac, NOW + 20, NOW + 11);
        assert_eq!(store.record(&after).await.unwrap(), Recorded::Fresh);
    }

    #[tokio::test]
    async fn a_full_store_refuses_and_evicts_nothing() {
        let store = MokaReplayStore::builder().capacity(4).build();
        for i in 0..2u8 {
            let mac = [i; 64];
            let nonce = i.to_string();
            assert_eq!(
                store.record(&record(&mac, &nonce)).await.unwrap(),
                Recorded::Fresh
            );
        }
        let mac = [9u8; 64];
        assert!(matches!(
            store.record(&record(&mac, "9")).await,
            Err(ReplayStoreError::Full { capacity: 4 })
        ));
        let loose = record(&mac, "9").unique_nonce(false);
        assert!(matches!(
            store.record(&loose).await,
            Err(ReplayStoreError::Full { .. })
        ));
        // The live entries are all still there.
        let first = [0u8; 64];
        assert_eq!(
            store.record(&record(&first, "x")).await.unwrap(),
            Recorded::ReplayedMac
        );
        assert_eq!(store.live_entries(), 4);
    }

    #[tokio::test]
    async fn concurrent_copies_are_accepted_once() {
        let store = MokaReplayStore::default();
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mac = [7u8; 64];
                    store.record(&record(&mac, "same")).await.unwrap()
                })
            })
            .collect();
        let mut fresh = 0;
        for task in tasks {
            fresh += usize::from(task.await.unwrap() == Recorded::Fresh);
        }
        assert_eq!(fresh, 1);
    }
}
