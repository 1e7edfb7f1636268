use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::sync::Cache;
use moka::Expiry;

use super::keys::{self, Insert, KeyTable, Padded};
use super::ReplayRecord;
use crate::hashing::KeyHashing;

/// Locks that make "look the key up, insert it if absent" atomic per key. Two requests wait for
/// each other only when their keys fall on one lock, and then for well under a microsecond.
const STRIPES: usize = 64;
/// The most entries moka's table is sized for when the store is built: 64 segments of 2^17
/// slots (67 MB). Moka adds room for its write log (384 entries) and doubles, then rounds each
/// segment up to a power of two, so 2^22 itself would double the table.
const PRESIZE_LIMIT: usize = (1 << 22) - 384;

/// The in-memory replay store, built on a [`moka`] cache of compact 128-bit keys with
/// per-entry expiry.
///
/// Each accepted request costs one entry for its MAC and, while the one-nonce-per-key rule is
/// on, one for its key id and nonce. An entry is 16 bytes of key and 16 of expiry, plus moka's
/// own bookkeeping: about 370 bytes in all with moka 0.12, so about 740 bytes per request.
///
/// The capacity is a hard limit on live entries. When it is reached, new requests are refused
/// with 503 `nonce_store_full` until entries expire: evicting a live entry would open a replay
/// hole. The default, 1,200,000 entries, holds about 1,000 requests a second for the 600
/// seconds an entry can live under the default window (both rules; moka keeps each two seconds
/// more), about 440 MB at full occupancy. The
/// store counts entries in as it inserts them and, when the count reaches the capacity, sets it
/// to moka's own count of the entries still held (expired ones removed) before it refuses.
///
/// Moka's table of keys is sized for the capacity when the store is built (34 MB for the
/// default capacity, under a tenth of what the entries take when the store is full; at most
/// 67 MB), so that it does not stop to grow while the store first fills: growing from empty
/// to a million entries, it held single requests for up to 5 ms. Later, as entries expire and
/// others come, moka shrinks and regrows the table on its own, as it would without this.
///
/// Once entries expire as fast as new ones come, moka now and then does a large piece of its
/// own upkeep inside whichever record comes along, and the record waits for it: on the machine
/// BENCHMARKS.md describes, about once a second at 10,000 requests a second (up to 321 ms),
/// and up to 123 ms, in bursts, at 1,000 a second with the default window (the compact store's
/// longest: 0.22 ms); see the `replay_latency` example. Pick [`CompactReplayStore`] where tail
/// latency matters.
///
/// [`CompactReplayStore`]: super::CompactReplayStore
///
/// Entries expire on moka's monotonic clock, with a lifetime taken from the verifier's clock
/// when they are inserted (two seconds more than their request has left in the window: the
/// verifier reads whole seconds of a clock that runs up to a kernel tick behind). If the wall
/// clock is stepped back by some seconds, an entry can
/// expire that many seconds before its request leaves the window. `CompactReplayStore`
/// expires entries on the verifier's clock alone, so its entries outlive their requests'
/// windows as that clock reads them; but no store helps once the clock is stepped back after
/// an entry was let go, which brings its request into the window again (SECURITY.md, "Not
/// protected").
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
    /// An upper bound on the entries moka holds: counted in on insert, and set to moka's own
    /// count when the store looks full (see [`MokaReplayStore::reconcile`]).
    live: AtomicU64,
    /// The clock second of the last reconciling.
    reconciled_at: AtomicI64,
    capacity: u64,
    /// Picks a key's stripe, with seeds of its own.
    stripe_hashing: KeyHashing,
    stripes: Box<[Padded<Mutex<()>>]>,
}

#[derive(Clone, Copy)]
pub(super) struct Expiring {
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
            capacity: super::DEFAULT_CAPACITY,
        }
    }

    /// The hard limit on live entries.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// An upper bound on the live entries: entries are counted in as they are inserted, and
    /// the count is set to moka's own (expired entries removed) when the store looks full.
    pub fn live_entries(&self) -> u64 {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Inserts `key` unless a live entry holds it. Atomic per key. When the store looks full,
    /// counts its entries again (see [`MokaReplayStore::reconcile`]; at most once per clock
    /// second) and tries again.
    fn insert_key(&self, key: u128, entry: Expiring, now: i64) -> Insert {
        match self.try_insert(key, entry, now) {
            Insert::Full if keys::first_in_second(&self.inner.reconciled_at, now) => {
                self.reconcile();
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
        let _stripe = lock(&inner.stripes[stripe].0);
        // `contains_key` first: unlike `get`, it records no read for moka's housekeeping, and
        // nearly every key is new.
        if inner.cache.contains_key(&key)
            && inner
                .cache
                .get(&key)
                .is_some_and(|existing| existing.expires_at >= now)
        {
            return Insert::Present;
        }
        if !self.claim_slot() {
            return Insert::Full;
        }
        // Replacing an expired entry of the same key counts it twice until the next
        // reconciling: the count stays an upper bound.
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

    /// Sets the count of live entries to moka's own, once its housekeeping has applied every
    /// pending write and removed the expired entries.
    ///
    /// Counting removals as they happen would take an eviction listener, and with one moka
    /// locks every key it inserts or removes (about a third of a record's cost). Instead the
    /// count only goes up, until the store looks full: then, with every stripe held (so that no
    /// insert is under way between moka's count and ours), it is set to moka's. That stops every
    /// insert while moka's upkeep runs, which can take long (see the type's docs), so a full
    /// store does it at most once per clock second, and refuses the other requests of that
    /// second at once.
    fn reconcile(&self) {
        let inner = &*self.inner;
        let _stripes: Vec<_> = inner.stripes.iter().map(|stripe| lock(&stripe.0)).collect();
        inner.cache.run_pending_tasks();
        inner
            .live
            .store(inner.cache.entry_count(), Ordering::Release);
    }
}

fn lock(stripe: &Mutex<()>) -> std::sync::MutexGuard<'_, ()> {
    stripe.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What an entry's lifetime adds to its request's time left in the window. The verifier's
/// clock is whole seconds of a coarse clock, which runs up to a kernel tick (1 to 10 ms)
/// behind: `now` may be up to a second and a tick behind the moment of the insert, from which
/// moka counts. One second would let an entry recorded just after a second turned expire a
/// few milliseconds before a replay still read as inside the window.
const CLOCK_SLACK_SECS: u64 = 2;

impl KeyTable for MokaReplayStore {
    /// The entry, and the verifier's clock second for the request.
    type Entry = (Expiring, i64);

    fn entry(&self, request: &ReplayRecord<'_>) -> (Expiring, i64) {
        let entry = Expiring {
            expires_at: request.expires_at,
            ttl_secs: u64::try_from(request.expires_at.saturating_sub(request.now))
                .unwrap_or(0)
                .saturating_add(CLOCK_SLACK_SECS),
        };
        (entry, request.now)
    }

    fn insert(&self, key: u128, (entry, now): (Expiring, i64)) -> Insert {
        self.insert_key(key, entry, now)
    }

    /// Counted out at the next reconciling.
    fn remove(&self, key: u128, _: (Expiring, i64)) {
        self.inner.cache.invalidate(&key);
    }

    fn capacity(&self) -> u64 {
        self.inner.capacity
    }
}

keys::replay_store_at_once!(MokaReplayStore);

/// Builds a [`MokaReplayStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MokaReplayStoreBuilder {
    capacity: u64,
}

impl MokaReplayStoreBuilder {
    /// The hard limit on live entries (two per request while the one-nonce-per-key rule is on).
    /// Defaults to [`DEFAULT_CAPACITY`](super::DEFAULT_CAPACITY), 1,200,000: about 1,000
    /// requests a second over the 600 seconds a request can be replayed in under the default
    /// window (its entries live two seconds more).
    pub fn capacity(mut self, entries: u64) -> Self {
        self.capacity = entries;
        self
    }

    /// Sizes the capacity for `requests_per_second` over the `window_secs` either side of the
    /// server's clock, with both replay rules on: two entries a request, each living up to
    /// twice the window and the two seconds moka keeps it more.
    pub fn capacity_for_rate(self, requests_per_second: u64, window_secs: u64) -> Self {
        let lifetime = window_secs
            .saturating_mul(2)
            .saturating_add(CLOCK_SLACK_SECS);
        self.capacity(requests_per_second.saturating_mul(lifetime.saturating_mul(2)))
    }

    /// The store.
    pub fn build(self) -> MokaReplayStore {
        let presized = usize::try_from(self.capacity)
            .map_or(PRESIZE_LIMIT, |entries| entries.min(PRESIZE_LIMIT));
        let cache = Cache::builder()
            .expire_after(PerEntryExpiry)
            .initial_capacity(presized)
            .build_with_hasher(KeyHashing::new());
        MokaReplayStore {
            inner: Arc::new(Inner {
                cache,
                live: AtomicU64::new(0),
                reconciled_at: AtomicI64::new(keys::NEVER_RUN),
                capacity: self.capacity,
                stripe_hashing: KeyHashing::new(),
                stripes: (0..STRIPES).map(|_| Padded(Mutex::new(()))).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, TestStore};
    use super::super::{Recorded, ReplayStoreError};
    use super::*;

    /// Moka counts an entry's life from its insert; the verifier's second may be up to a
    /// second and a kernel tick behind it.
    #[test]
    fn an_entry_lives_two_seconds_past_its_requests_window() {
        let store = MokaReplayStore::default();
        let mac = [0u8; 64];
        let (entry, _) = store.entry(&ReplayRecord::new("k", "n", &mac, 1_300, 1_000));
        assert_eq!(entry.ttl_secs, 302);
        let (entry, _) = store.entry(&ReplayRecord::new("k", "n", &mac, 1_000, 1_000));
        assert_eq!(entry.ttl_secs, 2);
    }

    #[test]
    fn a_capacity_for_a_rate_holds_its_entries_lifetimes() {
        let store = MokaReplayStore::builder()
            .capacity_for_rate(1_000, 300)
            .build();
        assert_eq!(store.capacity(), 1_000 * 2 * 602);
    }

    impl TestStore for MokaReplayStore {
        fn with_capacity(entries: u64) -> Self {
            MokaReplayStore::builder().capacity(entries).build()
        }

        fn live_entries(&self) -> u64 {
            self.reconcile();
            MokaReplayStore::live_entries(self)
        }
    }

    conformance::suite!(MokaReplayStore);

    const NOW: i64 = conformance::NOW;

    fn record<'a>(mac: &'a [u8; 64], nonce: &'a str, expires_at: i64) -> ReplayRecord<'a> {
        ReplayRecord::new("key", nonce, mac, expires_at, NOW)
    }

    #[test]
    fn a_refused_requests_entry_is_counted_out_when_the_store_looks_full() {
        let store = MokaReplayStore::builder().capacity(4).build();
        let record_now = |record| keys::record_in(&store, &record);
        let (a, b, c) = ([1u8; 64], [2u8; 64], [3u8; 64]);
        assert!(matches!(
            record_now(record(&a, "n1", NOW + 300)),
            Ok(Recorded::Fresh)
        ));
        assert!(matches!(
            record_now(record(&b, "n1", NOW + 300)),
            Ok(Recorded::ReplayedNonce)
        ));
        // b's MAC entry went in and out: the count says 3 until it is reconciled.
        assert_eq!(store.live_entries(), 3);
        assert!(matches!(
            record_now(record(&c, "n2", NOW + 300)),
            Ok(Recorded::Fresh)
        ));
        assert_eq!(store.live_entries(), 4);
        assert!(matches!(
            record_now(record(&[4u8; 64], "n3", NOW + 300)),
            Err(ReplayStoreError::Full { capacity: 4 })
        ));
    }

    #[test]
    fn threads_filling_the_store_never_pass_its_capacity() {
        let store = MokaReplayStore::builder().capacity(1_000).build();
        let accepted: usize = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4u8)
                .map(|thread| {
                    let store = &store;
                    scope.spawn(move || {
                        let fresh = |i: u32| {
                            let mut mac = [thread; 64];
                            mac[1..5].copy_from_slice(&i.to_le_bytes());
                            let nonce = format!("{thread}-{i}");
                            let recorded = keys::record_in(store, &record(&mac, &nonce, NOW + 300));
                            matches!(recorded, Ok(Recorded::Fresh))
                        };
                        (0..1_000).filter(|i| fresh(*i)).count()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().unwrap())
                .sum()
        });
        // Two entries a request.
        assert!(accepted <= 500, "{accepted} requests accepted");
        assert!(accepted > 0);
        store.inner.cache.run_pending_tasks();
        assert!(store.inner.cache.entry_count() <= 1_000);
        assert!(store.live_entries() >= store.inner.cache.entry_count());
    }

    #[test]
    fn a_full_store_takes_requests_again_once_its_entries_expired() {
        let store = MokaReplayStore::builder().capacity(2).build();
        // Expiring at `NOW`: moka keeps the entries two seconds.
        let expiring = record(&[1u8; 64], "n1", NOW);
        assert!(matches!(
            keys::record_in(&store, &expiring),
            Ok(Recorded::Fresh)
        ));
        let next = record(&[2u8; 64], "n2", NOW + 300);
        assert!(matches!(
            keys::record_in(&store, &next),
            Err(ReplayStoreError::Full { capacity: 2 })
        ));
        std::thread::sleep(Duration::from_millis(2_100));
        // A later second on the verifier's clock too: the store counts its entries again.
        let a_second_later = ReplayRecord::new("key", "n2", &[2u8; 64], NOW + 300, NOW + 1);
        assert!(matches!(
            keys::record_in(&store, &a_second_later),
            Ok(Recorded::Fresh)
        ));
        assert_eq!(store.live_entries(), 2);
    }
}
