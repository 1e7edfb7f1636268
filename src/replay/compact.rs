use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::keys::{self, Insert, KeyTable, Padded, Rule, StoreFull};
use super::{Recorded, ReplayRecord};
use crate::hashing::KeyHashing;

/// Most shards a store is split into: enough that two threads seldom wait for one lock and
/// that sweeping one shard is a short pause, few enough that a small store stays in one.
const MAX_SHARDS: u64 = 256;
/// Entries a shard is given at least before the store is split further.
const MIN_SHARD_ENTRIES: u64 = 4_096;
/// How full (in percent of its slots) a table is when the store holds its capacity. Keys
/// spread over the shards at random, so some shards hold more than their share: the rest is
/// their room, and keeps probe sequences short.
const LOAD_PERCENT: u64 = 85;
/// Clock seconds between two sweeps of one shard: expired entries linger at most this long
/// (plus until the shard is next used), a few percent of the 300 to 600 seconds they live, and
/// in the meantime their slots are reused by new entries that probe past them.
const SWEEP_EVERY_SECS: u32 = 16;
/// Most claims a shard takes from the store-wide count at once (see `Shard::reserve`).
const MAX_CHUNK: u64 = 32;
/// The expiry of an empty slot; stored expiries are at least 1.
const EMPTY: u32 = 0;
/// Slots in one bucket: three 20-byte slots and a 4-byte counter fill a 64-byte cache line.
const SLOTS: usize = 3;

/// A compact in-memory replay store: sharded open-addressing tables of 128-bit keys and
/// expiry seconds, swept as the clock passes, with an exact capacity.
///
/// Behind the same [`ReplayStore`](super::ReplayStore) trait and with the same rules as
/// [`MokaReplayStore`], at a fraction of its memory and cost. An entry is a 16-byte key and a
/// 4-byte expiry second; three fit a 64-byte cache line, and the tables are allocated up front
/// for the capacity at 85 % load: about 25 bytes an entry, 50 bytes a request with both rules.
/// Recording a request locks the shard of each of its keys and usually reads one cache line a
/// key, with no allocation. On Linux the tables (one allocation) are asked of the kernel in
/// transparent huge pages, so that where those are available, the reads are seldom TLB misses
/// too.
///
/// Expired entries are swept out of a shard once its clock has moved on 16 seconds since its
/// last sweep, and from every shard (at most once per clock second) before a request is
/// refused as full; until then a new entry may take an expired entry's slot. A request that
/// finds the store full while another thread's sweep of every shard is under way does not
/// wait for that sweep (records run on the runtime's threads, and a sweep of a large store
/// takes milliseconds): it tries again with what the sweep has freed so far, and may be
/// refused. Expiry follows
/// the [`ReplayRecord::now`] the verifier passes in, not a clock of the store's own, so a
/// [`ManualClock`](crate::clock::ManualClock) moves it in tests.
///
/// The capacity is a hard limit on live entries, as with moka: when it is reached, new requests
/// are refused with 503 `nonce_store_full` until entries expire, and nothing live is evicted.
/// Entries live in this process only.
///
/// ```
/// use armor_psk::replay::CompactReplayStore;
///
/// // 2,000 requests a second under the default ±300 s window.
/// let store = CompactReplayStore::builder().capacity_for_rate(2_000, 300).build();
/// assert_eq!(store.capacity(), 2_400_000);
/// ```
///
/// [`MokaReplayStore`]: super::MokaReplayStore
#[derive(Clone)]
pub struct CompactReplayStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Padded<Mutex<Shard>>]>,
    /// Entries stored (expired or not) plus the shards' reserves: never more than `capacity`.
    claimed: AtomicU64,
    /// Whether a shard may hold a reserve, so that a store that looks full collects them only
    /// when there is something to collect.
    reserves_out: AtomicU64,
    /// Held by a collection of the reserves from before it looks at the flag to its end: a
    /// thread that finds the flag down then knows no collection is still under way (whose
    /// give-backs it would otherwise miss, and refuse a request with room in the store).
    collecting: Mutex<()>,
    /// How many claims a shard takes at once.
    chunk: u64,
    capacity: u64,
    /// The clock second a sweep of every shard last began in, so that a full store does not sweep itself again for every
    /// refused request within one second.
    swept_all_at: AtomicI64,
    hashing: KeyHashing,
    /// Every shard's table, one after the other in one allocation (so that the kernel can back
    /// it with huge pages: a random bucket of a 30 MB table is then seldom a TLB miss too).
    /// Shard `i` owns `buckets[i * buckets_per_table..][..buckets_per_table]`, and reads or
    /// writes them only under its lock.
    buckets: Box<[Bucket]>,
    buckets_per_table: usize,
}

struct Shard {
    /// Which shard this is: its table is the `index`th of [`Inner::buckets`].
    index: usize,
    /// Entries stored, expired or not.
    len: u64,
    /// Claims on the capacity this shard holds for entries to come. Taking them a chunk at a
    /// time keeps two threads from fighting over one counter's cache line on every insert; a
    /// store that looks full collects them before refusing, so the capacity stays exact.
    reserve: u64,
    /// The clock second of this shard's last sweep.
    swept_at: u32,
}

/// A 128-bit key (see [`keys`]), as four `u32`s rather than a `u128` so that a key and its
/// `u32` expiry pack into 20 bytes (a `u128` would align the pair to 32).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Key([u32; 4]);

impl From<u128> for Key {
    fn from(key: u128) -> Self {
        Key([0, 32, 64, 96].map(|shift| (key >> shift) as u32))
    }
}

impl From<Key> for u128 {
    fn from(key: Key) -> u128 {
        key.0
            .iter()
            .rev()
            .fold(0, |folded, word| folded << 32 | u128::from(*word))
    }
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: Key,
    /// The last clock second the entry is live, or [`EMPTY`].
    expires: u32,
}

/// A [`Slot`] in a table. The shards' tables share one allocation, so their words are atomics;
/// every access is made under the shard's lock, which orders them, and is relaxed (a plain
/// load or store on the processors this runs on).
#[derive(Default)]
#[repr(C)]
struct SlotCell {
    key: [AtomicU32; 4],
    expires: AtomicU32,
}

impl SlotCell {
    fn expires(&self) -> u32 {
        self.expires.load(Ordering::Relaxed)
    }

    fn key(&self) -> Key {
        Key(self.key.each_ref().map(|word| word.load(Ordering::Relaxed)))
    }

    fn load(&self) -> Slot {
        Slot {
            key: self.key(),
            expires: self.expires(),
        }
    }

    fn store(&self, slot: Slot) {
        for (word, value) in self.key.iter().zip(slot.key.0) {
            word.store(value, Ordering::Relaxed);
        }
        self.expires.store(slot.expires, Ordering::Relaxed);
    }
}

/// One cache line of a table.
#[derive(Default)]
#[repr(C, align(64))]
struct Bucket {
    slots: [SlotCell; SLOTS],
    /// How many entries whose probe sequence starts at or before this bucket are stored past
    /// it. A lookup stops at the first bucket where this is zero, and an entry can be removed
    /// by emptying its slot (no tombstones), after counting itself out of the buckets it
    /// passed.
    overflow: AtomicU32,
}

impl Bucket {
    fn overflow(&self) -> u32 {
        self.overflow.load(Ordering::Relaxed)
    }

    fn set_overflow(&self, overflow: u32) {
        self.overflow.store(overflow, Ordering::Relaxed);
    }
}

/// Linear probing over buckets, with per-bucket overflow counts (as in folly's F14 tables):
/// one shard's table, used under its lock.
struct Table<'a> {
    buckets: &'a [Bucket],
}

/// Where an entry is: bucket and slot.
type At = (usize, usize);

/// The buckets of a table that holds `entries` at [`LOAD_PERCENT`] of its slots.
fn buckets_for(entries: u64) -> usize {
    let slots = entries.saturating_mul(100).div_ceil(LOAD_PERCENT).max(1);
    usize::try_from(slots.div_ceil(SLOTS as u64)).unwrap_or(usize::MAX)
}

impl Table<'_> {
    /// The bucket a probe for `key` starts at.
    fn home(&self, key: Key, hashing: &KeyHashing) -> usize {
        home_bucket(key, hashing, self.buckets.len())
    }

    fn next(&self, bucket: usize) -> usize {
        if bucket + 1 == self.buckets.len() {
            0
        } else {
            bucket + 1
        }
    }

    /// Where `key` is stored, live or expired.
    #[inline]
    fn find(&self, key: Key, home: usize) -> Option<At> {
        let mut at = home;
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[at];
            if let Some(slot) = bucket
                .slots
                .iter()
                .position(|slot| slot.expires() != EMPTY && slot.key() == key)
            {
                return Some((at, slot));
            }
            if bucket.overflow() == 0 {
                return None;
            }
            at = self.next(at);
        }
        None
    }

    /// The first slot from `home` on that is empty or holds an entry expired before `now`.
    fn free_slot(&self, home: usize, now: u32) -> Option<At> {
        let mut at = home;
        for _ in 0..self.buckets.len() {
            if let Some(slot) = self.buckets[at]
                .slots
                .iter()
                .map(SlotCell::expires)
                .position(|expires| expires < now || expires == EMPTY)
            {
                return Some((at, slot));
            }
            at = self.next(at);
        }
        None
    }

    fn slot(&self, (bucket, slot): At) -> &SlotCell {
        &self.buckets[bucket].slots[slot]
    }

    /// Stores `slot` at `at`, an empty slot, counting it into the buckets from `home` it passed.
    fn put(&self, home: usize, at: At, slot: Slot) {
        let mut passed = home;
        while passed != at.0 {
            let bucket = &self.buckets[passed];
            bucket.set_overflow(bucket.overflow() + 1);
            passed = self.next(passed);
        }
        self.slot(at).store(slot);
    }

    /// Empties the slot at `at`, counting its entry out of the buckets from `home` it passed.
    fn take(&self, home: usize, at: At) {
        let mut passed = home;
        while passed != at.0 {
            let bucket = &self.buckets[passed];
            bucket.set_overflow(bucket.overflow().saturating_sub(1));
            passed = self.next(passed);
        }
        self.slot(at).store(Slot::default());
    }
}

/// The bucket a probe for `key` starts at, in a table of `buckets`.
fn home_bucket(key: Key, hashing: &KeyHashing, buckets: usize) -> usize {
    keys::reduce(hashing.hash(key.into()), buckets)
}

/// Unix seconds as stored: clamped into `1..=u32::MAX` (good until 2106; 0 marks an empty
/// slot). Clamping keeps the order of any two times, so an entry is never taken for expired
/// earlier than it is.
fn stored_second(unix: i64) -> u32 {
    unix.clamp(1, i64::from(u32::MAX)) as u32
}

impl Default for CompactReplayStore {
    fn default() -> Self {
        CompactReplayStore::builder().build()
    }
}

impl std::fmt::Debug for CompactReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactReplayStore")
            .field("live_entries", &self.live_entries())
            .field("capacity", &self.inner.capacity)
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

impl CompactReplayStore {
    /// A builder; the defaults are those of [`CompactReplayStore::default`].
    pub fn builder() -> CompactReplayStoreBuilder {
        CompactReplayStoreBuilder {
            capacity: super::DEFAULT_CAPACITY,
        }
    }

    /// The hard limit on live entries.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// Entries inserted and not yet removed. Expired entries count until a sweep removes them
    /// (or a new entry takes their slot); a full store sweeps before refusing a request.
    /// Takes every shard's lock in turn.
    pub fn live_entries(&self) -> u64 {
        (0..self.inner.shards.len())
            .map(|index| self.lock(index).len)
            .sum()
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // Nothing inside the lock panics but an index bug; a poisoned shard is still
        // consistent enough to refuse replays, and refusing service is worse.
        self.inner.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn shard_of(&self, key: Key) -> usize {
        let shards = self.inner.shards.len();
        keys::reduce(self.inner.hashing.other_hash(key.into()), shards)
    }

    /// Where `key`'s shard lock and the first table line it is looked for in are, found
    /// without taking the lock.
    fn lines_of(&self, key: Key) -> [usize; 2] {
        let inner = &*self.inner;
        let shard = self.shard_of(key);
        let home = home_bucket(key, &inner.hashing, inner.buckets_per_table);
        // Addresses only: nothing of the table is read, so the lock is not needed.
        let bucket = inner.first_bucket(shard) + home;
        [
            std::ptr::from_ref(&inner.shards[shard]) as usize,
            inner.buckets.as_ptr() as usize + bucket * std::mem::size_of::<Bucket>(),
        ]
    }

    /// The table of `shard`, whose lock the caller holds (and keeps while it uses the table:
    /// the borrow is of the store, not of the guard).
    fn table(&self, shard: &Shard) -> Table<'_> {
        self.inner.table(shard.index)
    }

    fn lock_for(&self, key: Key) -> MutexGuard<'_, Shard> {
        self.lock(self.shard_of(key))
    }

    /// Both keys of a request (rule 1's and rule 2's), or neither. Both shards are locked (in
    /// index order: nothing else holds two) and both keys' first table lines read before
    /// either key is probed, so that their cache misses overlap instead of following one
    /// another. `None`, with nothing inserted, when the store looks full.
    fn try_insert_both(&self, mac: u128, nonce: u128, expires: u32, now: u32) -> Option<Recorded> {
        let (mac_key, nonce_key) = (Key::from(mac), Key::from(nonce));
        let (at_mac, at_nonce) = (self.shard_of(mac_key), self.shard_of(nonce_key));
        if at_mac == at_nonce {
            let mut shard = self.lock(at_mac);
            self.touch(&shard, mac_key);
            self.touch(&shard, nonce_key);
            return self.insert_pair(&mut shard, None, mac, nonce, expires, now);
        }
        let low = self.lock(at_mac.min(at_nonce));
        let high = self.lock(at_mac.max(at_nonce));
        let (mut mac_shard, mut nonce_shard) = if at_mac < at_nonce {
            (low, high)
        } else {
            (high, low)
        };
        self.touch(&mac_shard, mac_key);
        self.touch(&nonce_shard, nonce_key);
        self.insert_pair(
            &mut mac_shard,
            Some(&mut nonce_shard),
            mac,
            nonce,
            expires,
            now,
        )
    }

    /// Reads the first table line `key` is looked for in.
    #[inline]
    fn touch(&self, shard: &Shard, key: Key) {
        let table = self.table(shard);
        std::hint::black_box(table.buckets[table.home(key, &self.inner.hashing)].overflow());
    }

    /// [`CompactReplayStore::try_insert_both`] with the shards locked; `nonce_shard` is `None`
    /// when the nonce's shard is the MAC's.
    fn insert_pair(
        &self,
        mac_shard: &mut Shard,
        nonce_shard: Option<&mut Shard>,
        mac: u128,
        nonce: u128,
        expires: u32,
        now: u32,
    ) -> Option<Recorded> {
        let mut shards = (mac_shard, nonce_shard);
        keys::apply_rules(
            &mut shards,
            mac,
            Some(nonce),
            |(mac_shard, nonce_shard), rule, key| {
                let shard = match (rule, nonce_shard) {
                    (Rule::Nonce, Some(nonce_shard)) => nonce_shard,
                    _ => mac_shard,
                };
                self.try_insert_in(shard, Key::from(key), expires, now)
            },
            |(mac_shard, _), key| self.remove_in(mac_shard, Key::from(key), expires),
        )
        .ok()
    }

    /// Inserts `key` unless a live entry holds it. Atomic per key (under its shard's lock).
    /// When the store looks full, sweeps every shard (once per clock second), collects the
    /// shards' reserves, and tries again.
    fn insert_key(&self, key: Key, expires: u32, now: u32) -> Insert {
        let mut outcome = self.try_insert(key, expires, now);
        if matches!(outcome, Insert::Full) {
            self.sweep_all(now);
            // Other threads may take chunks again while this one collects: retry while some
            // shard may hold a reserve (a few times, so that a store at its capacity refuses
            // in bounded time).
            for _ in 0..8 {
                self.collect_reserves();
                outcome = self.try_insert(key, expires, now);
                let reserves_out = self.inner.reserves_out.load(Ordering::Acquire) != 0;
                if !matches!(outcome, Insert::Full) || !reserves_out {
                    break;
                }
            }
        }
        outcome
    }

    fn try_insert(&self, key: Key, expires: u32, now: u32) -> Insert {
        self.try_insert_in(&mut self.lock_for(key), key, expires, now)
    }

    /// [`CompactReplayStore::try_insert`] in `shard`, which is `key`'s, locked.
    fn try_insert_in(&self, shard: &mut Shard, key: Key, expires: u32, now: u32) -> Insert {
        let inner = &*self.inner;
        if now >= shard.swept_at.saturating_add(SWEEP_EVERY_SECS) {
            shard.sweep(now, inner);
        }
        let table = self.table(shard);
        let home = table.home(key, &inner.hashing);
        if let Some(at) = table.find(key, home) {
            let stored = &table.slot(at).expires;
            if stored.load(Ordering::Relaxed) >= now {
                return Insert::Present;
            }
            // An expired entry of the same key, not swept yet: reused, and already counted.
            stored.store(expires, Ordering::Relaxed);
            return Insert::Inserted;
        }
        // Every slot of the shard holding a live entry is a full store too (the tables are
        // sized so that, with keys spread at random, the capacity is reached long before).
        let Some(at) = table.free_slot(home, now) else {
            return Insert::Full;
        };
        let expired = table.slot(at).load();
        if expired.expires != EMPTY {
            // An expired entry of another key gives up its slot, and its claim.
            table.take(table.home(expired.key, &inner.hashing), at);
            shard.len -= 1;
            shard.reserve += 1;
        }
        if shard.reserve == 0 {
            shard.reserve = self.claim_chunk();
            if shard.reserve == 0 {
                return Insert::Full;
            }
        }
        shard.reserve -= 1;
        shard.len += 1;
        table.put(home, at, Slot { key, expires });
        Insert::Inserted
    }

    /// Removes `key` if it still holds the entry this request put there.
    fn remove_key(&self, key: Key, expires: u32) {
        self.remove_in(&mut self.lock_for(key), key, expires);
    }

    /// [`CompactReplayStore::remove_key`] in `shard`, which is `key`'s, locked.
    fn remove_in(&self, shard: &mut Shard, key: Key, expires: u32) {
        let inner = &*self.inner;
        let table = self.table(shard);
        let home = table.home(key, &inner.hashing);
        if let Some(at) = table.find(key, home) {
            if table.slot(at).expires() == expires {
                table.take(home, at);
                shard.len -= 1;
                // Given straight back to the store-wide count, not kept as this shard's
                // reserve: a request taken back out of a full store leaves nothing to collect.
                inner.claimed.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Gives every shard's reserve back to the store-wide count. Only a store that looks full
    /// collects, and a collection is a few microseconds: waiting for another's is short.
    fn collect_reserves(&self) {
        let _one_at_a_time = self
            .inner
            .collecting
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.inner.reserves_out.swap(0, Ordering::AcqRel) == 0 {
            return;
        }
        for index in 0..self.inner.shards.len() {
            let mut shard = self.lock(index);
            self.inner
                .claimed
                .fetch_sub(std::mem::take(&mut shard.reserve), Ordering::AcqRel);
        }
    }

    /// Sweeps every shard, unless that was done (or begun, by another thread) in this clock
    /// second already (nothing has expired since; see [`keys::first_in_second`]).
    fn sweep_all(&self, now: u32) {
        if !keys::first_in_second(&self.inner.swept_all_at, i64::from(now)) {
            return;
        }
        for index in 0..self.inner.shards.len() {
            self.lock(index).sweep(now, &self.inner);
        }
    }

    /// Claims up to a chunk of the capacity for a shard's reserve; how much (0 when full).
    fn claim_chunk(&self) -> u64 {
        let inner = &*self.inner;
        // Near the capacity a claim takes a small share of what is left, not a whole chunk:
        // otherwise a thread that has just collected the reserves can find another shard has
        // claimed all of it again, time after time, and refuse a request below the capacity.
        let shards = inner.shards.len() as u64;
        let share = |claimed: u64| {
            let left = inner.capacity - claimed;
            inner.chunk.min(left / (2 * shards)).max(1)
        };
        // The caller uses one at once: only a claim of more leaves a reserve to collect, and
        // only such a claim raises the flag, before the compare-and-swap that makes it (a
        // thread that collects reserves either sees it, or waits for this shard's lock and
        // collects the chunk). A refused claim, or one of the last claims near the capacity,
        // raises none, so that a request refused by a full store does not collect every
        // shard's reserve again and again for nothing. (A swap that fails and is retried may
        // have raised it for nothing, which costs one collection.)
        inner
            .claimed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |claimed| {
                (claimed < inner.capacity).then(|| {
                    let share = share(claimed);
                    if share > 1 {
                        inner.reserve_grows();
                    }
                    claimed + share
                })
            })
            .map_or(0, share)
    }
}

impl Inner {
    /// Says that a shard's reserve has grown, by a claim or a sweep, under that shard's lock: a
    /// thread that collects reserves either sees this, or waits for the shard's lock and
    /// collects what it grew by.
    fn reserve_grows(&self) {
        self.reserves_out.store(1, Ordering::Release);
    }

    /// The table of shard `index`; only the holder of its lock reads or writes it.
    fn table(&self, index: usize) -> Table<'_> {
        Table {
            buckets: &self.buckets[self.first_bucket(index)..][..self.buckets_per_table],
        }
    }

    /// Where shard `index`'s table starts in [`Inner::buckets`].
    fn first_bucket(&self, index: usize) -> usize {
        index * self.buckets_per_table
    }
}

impl Shard {
    /// Removes the entries that expired before `now`, in place. An empty shard (every shard
    /// of a new store, at its first insert) is not walked: a sweep of it would read its whole
    /// table, a few microseconds, to find nothing.
    fn sweep(&mut self, now: u32, inner: &Inner) {
        self.swept_at = now;
        if self.len == 0 {
            return;
        }
        let table = inner.table(self.index);
        let mut removed = 0;
        for bucket in 0..table.buckets.len() {
            for slot in 0..SLOTS {
                let cell = table.slot((bucket, slot));
                let expires = cell.expires();
                if expires != EMPTY && expires < now {
                    table.take(table.home(cell.key(), &inner.hashing), (bucket, slot));
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            inner.reserve_grows();
        }
        self.len -= removed;
        self.reserve += removed;
        self.trim_reserve(inner);
    }

    /// Gives back to the store-wide count what this shard holds beyond two chunks, so that
    /// claims freed here (by a sweep) reach the other shards.
    fn trim_reserve(&mut self, inner: &Inner) {
        if self.reserve > 2 * inner.chunk {
            let excess = self.reserve - inner.chunk;
            inner.claimed.fetch_sub(excess, Ordering::AcqRel);
            self.reserve = inner.chunk;
        }
    }
}

impl KeyTable for CompactReplayStore {
    /// The entry's last live second and the clock second of the request.
    type Entry = (u32, u32);

    fn entry(&self, request: &ReplayRecord<'_>) -> (u32, u32) {
        // Never before `now`: a record that expired on arrival is still remembered a second.
        let expires = stored_second(request.expires_at.max(request.now));
        (expires, stored_second(request.now))
    }

    fn insert(&self, key: u128, (expires, now): (u32, u32)) -> Insert {
        self.insert_key(Key::from(key), expires, now)
    }

    /// Under both shards' locks; when the store looks full, one key at a time after all: making
    /// room (sweeping every shard, collecting their reserves) needs the locks released, and
    /// the MAC's key, once in, keeps its claim on the capacity while the nonce's makes room.
    fn insert_both(
        &self,
        mac: u128,
        nonce: u128,
        entry: (u32, u32),
    ) -> Result<Recorded, StoreFull> {
        let (expires, now) = entry;
        match self.try_insert_both(mac, nonce, expires, now) {
            Some(recorded) => Ok(recorded),
            None => keys::one_at_a_time(self, mac, Some(nonce), entry),
        }
    }

    fn remove(&self, key: u128, (expires, _): (u32, u32)) {
        self.remove_key(Key::from(key), expires);
    }

    /// Each key's shard lock and first table line.
    fn prefetch(&self, request: &ReplayRecord<'_>) {
        let (mac, nonce) = keys::request_keys(request);
        for key in std::iter::once(mac).chain(nonce).map(Key::from) {
            self.lines_of(key).into_iter().for_each(keys::prefetch_line);
        }
    }

    fn capacity(&self) -> u64 {
        self.inner.capacity
    }
}

keys::replay_store_at_once!(CompactReplayStore);

/// Builds a [`CompactReplayStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct CompactReplayStoreBuilder {
    capacity: u64,
}

impl CompactReplayStoreBuilder {
    /// The hard limit on live entries (two per request while the one-nonce-per-key rule is on).
    /// Defaults to [`DEFAULT_CAPACITY`](super::DEFAULT_CAPACITY), 1,200,000: 1,000 requests a
    /// second over the 600 seconds an entry can live under the default window. The tables are
    /// allocated for it when the store is built: about 25 bytes an entry (30 MB for the
    /// default).
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
    ///
    /// # Panics
    ///
    /// When its table (about 25 bytes an entry, allocated up front) cannot be allocated: a
    /// capacity of `u64::MAX` as "unlimited", say. [`try_build`](Self::try_build) answers an
    /// error instead.
    pub fn build(self) -> CompactReplayStore {
        self.try_build().unwrap_or_else(|error| panic!("{error}"))
    }

    /// The store, or an error when its table cannot be allocated (see
    /// [`build`](Self::build)). A table the allocator grants may still be more than the
    /// machine holds: it is written through when built.
    ///
    /// ```
    /// use armor_psk::replay::CompactReplayStore;
    ///
    /// let unlimited = CompactReplayStore::builder().capacity(u64::MAX).try_build();
    /// assert!(unlimited.is_err());
    /// ```
    pub fn try_build(self) -> Result<CompactReplayStore, TableTooLarge> {
        let shards = shard_count(self.capacity);
        let share = self.capacity.div_ceil(shards as u64);
        let buckets_per_table = buckets_for(share);
        let too_large = TableTooLarge {
            capacity: self.capacity,
        };
        let len = buckets_per_table
            .checked_mul(shards)
            .filter(|len| len.checked_mul(std::mem::size_of::<Bucket>()).is_some())
            .ok_or(too_large)?;
        // Perhaps longer than asked; only the first `shards * buckets_per_table` are used.
        let buckets = keys::in_huge_pages(len).map_err(|_| too_large)?;
        let shards = (0..shards)
            .map(|index| {
                Padded(Mutex::new(Shard {
                    index,
                    len: 0,
                    reserve: 0,
                    swept_at: 0,
                }))
            })
            .collect();
        Ok(CompactReplayStore {
            inner: Arc::new(Inner {
                shards,
                buckets,
                buckets_per_table,
                claimed: AtomicU64::new(0),
                reserves_out: AtomicU64::new(0),
                collecting: Mutex::new(()),
                // Small enough that reserves are a small part of each shard's share.
                chunk: (share / 64).clamp(1, MAX_CHUNK),
                capacity: self.capacity,
                swept_all_at: AtomicI64::new(keys::NEVER_RUN),
                hashing: KeyHashing::new(),
            }),
        })
    }
}

/// A [`CompactReplayStore`]'s table could not be allocated for its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a compact replay store of {capacity} entries needs a table of about 25 bytes an entry, \
     which cannot be allocated"
)]
pub struct TableTooLarge {
    /// The capacity asked for.
    pub capacity: u64,
}

/// How many shards hold `capacity` entries: one per [`MIN_SHARD_ENTRIES`], at most
/// [`MAX_SHARDS`]. A shard's share is large enough that the spread of random keys over the
/// shards stays well inside the room its table keeps.
fn shard_count(capacity: u64) -> usize {
    (capacity / MIN_SHARD_ENTRIES).clamp(1, MAX_SHARDS) as usize
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, TestStore};
    use super::super::{ReplayStore, ReplayStoreError, DEFAULT_CAPACITY};
    use super::*;

    impl TestStore for CompactReplayStore {
        fn with_capacity(entries: u64) -> Self {
            CompactReplayStore::builder().capacity(entries).build()
        }

        fn live_entries(&self) -> u64 {
            CompactReplayStore::live_entries(self)
        }
    }

    conformance::suite!(CompactReplayStore);

    const NOW: i64 = conformance::NOW;

    /// A reserve that grows without a claim (by a sweep, or a removal) raises the flag that a
    /// full store's refused claim no longer raises, so that the next request finding the store
    /// full collects it rather than being refused below the capacity.
    #[test]
    fn a_reserve_freed_by_a_sweep_is_collected_when_the_store_is_full() {
        use futures_util::FutureExt as _;
        let store = CompactReplayStore::builder().capacity(40_000).build();
        assert!(store.inner.shards.len() > 1);
        let record = |i: u32, expires_at: i64, now: i64| {
            let mut mac = [0u8; 64];
            mac[..4].copy_from_slice(&i.to_le_bytes());
            let nonce = i.to_string();
            let record = ReplayRecord::new("key", &nonce, &mac, expires_at, now);
            store.record(&record).now_or_never().expect("ready at once")
        };
        for i in 0..100 {
            assert!(matches!(record(i, NOW + 10, NOW), Ok(Recorded::Fresh)));
        }
        // As full as a store gets: every claim taken, no reserve held, no flag up.
        store.collect_reserves();
        store.inner.claimed.store(40_000, Ordering::Release);
        store.inner.reserves_out.store(0, Ordering::Release);
        store.sweep_all(stored_second(NOW + 20));
        assert_eq!(store.inner.reserves_out.load(Ordering::Acquire), 1);
        // The 200 entries' room, spread over the shards' reserves, takes 100 new requests
        // wherever they land: those whose shards hold none are given what the others hold.
        for i in 100..200 {
            assert!(
                matches!(record(i, NOW + 300, NOW + 20), Ok(Recorded::Fresh)),
                "request {i}"
            );
        }
        assert!(matches!(
            record(200, NOW + 300, NOW + 20),
            Err(ReplayStoreError::Full { .. })
        ));
    }

    /// A request refused by a store with one claim left (its MAC's entry in, its nonce's
    /// refused, the MAC's taken back out) leaves the claim in the store-wide count and no flag
    /// up: the next refusal has nothing to collect, and does not walk every shard for it.
    #[test]
    fn a_request_refused_by_a_nearly_full_store_leaves_nothing_to_collect() {
        use futures_util::FutureExt as _;
        let store = CompactReplayStore::builder().capacity(40_000).build();
        store.inner.claimed.store(39_999, Ordering::Release);
        store.inner.reserves_out.store(0, Ordering::Release);
        let record = ReplayRecord::new("key", "nonce", &[7; 64], NOW + 300, NOW);
        let refused = store.record(&record).now_or_never().expect("ready at once");
        assert!(matches!(refused, Err(ReplayStoreError::Full { .. })));
        assert_eq!(store.live_entries(), 0);
        assert_eq!(store.inner.claimed.load(Ordering::Acquire), 39_999);
        assert_eq!(store.inner.reserves_out.load(Ordering::Acquire), 0);
        // The one claim left still takes a request that needs one entry.
        let mac_only = record.unique_nonce(false);
        let accepted = store
            .record(&mac_only)
            .now_or_never()
            .expect("ready at once");
        assert!(matches!(accepted, Ok(Recorded::Fresh)));
    }

    /// A full store sweeps itself whole at most once a second, also when requests come with
    /// seconds out of order (each records on the clock it read when it came), and again at
    /// once after the clock is stepped back.
    #[test]
    fn a_whole_store_sweep_is_not_repeated_for_an_earlier_second() {
        let store = CompactReplayStore::builder().capacity(40_000).build();
        let swept_at = |store: &CompactReplayStore| -> Vec<u32> {
            let shards = store.inner.shards.iter();
            shards
                .map(|shard| shard.0.lock().unwrap().swept_at)
                .collect()
        };
        store.sweep_all(100);
        assert!(swept_at(&store).iter().all(|&second| second == 100));
        for earlier_or_same in [99, 100] {
            store.sweep_all(earlier_or_same);
            assert!(swept_at(&store).iter().all(|&second| second == 100));
        }
        store.sweep_all(101);
        assert!(swept_at(&store).iter().all(|&second| second == 101));
        // A clock stepped back (by more than a late request's second could be): a full store
        // sweeps again at once, not once the clock has caught up.
        store.sweep_all(60);
        assert!(swept_at(&store).iter().all(|&second| second == 60));
        store.sweep_all(60);
        store.sweep_all(61);
        assert!(swept_at(&store).iter().all(|&second| second == 61));
    }

    #[tokio::test]
    async fn expired_entries_give_up_their_room() {
        let store = CompactReplayStore::builder().capacity(4).build();
        let macs = [[0u8; 64], [1; 64], [5; 64], [6; 64], [7; 64]];
        let nonces = ["a", "b", "c", "d", "e"];
        let record =
            |i: usize, now: i64| ReplayRecord::new("key", nonces[i], &macs[i], now + 10, now);
        for i in 0..2 {
            assert_eq!(
                store.record(&record(i, NOW)).await.unwrap(),
                Recorded::Fresh
            );
        }
        assert!(store.record(&record(2, NOW)).await.is_err());
        // Once the clock passes their expiry, the entries make room: reused or swept out.
        let later = NOW + 11;
        for i in 2..4 {
            assert_eq!(
                store.record(&record(i, later)).await.unwrap(),
                Recorded::Fresh
            );
        }
        assert!(store.record(&record(4, later)).await.is_err());
        assert_eq!(store.live_entries(), 4);
        // The new entries are the live ones.
        assert_eq!(
            store.record(&record(2, later)).await.unwrap(),
            Recorded::ReplayedMac
        );
    }

    #[tokio::test]
    async fn a_large_store_spreads_over_shards_and_counts_exactly() {
        let store = CompactReplayStore::builder().capacity(200_000).build();
        assert!(store.inner.shards.len() > 1);
        for i in 0..10_000u32 {
            let mut mac = [0u8; 64];
            mac[..4].copy_from_slice(&i.to_le_bytes());
            mac[8..12].copy_from_slice(&i.to_be_bytes());
            let nonce = i.to_string();
            let record = ReplayRecord::new("key", &nonce, &mac, NOW + 300, NOW);
            assert_eq!(store.record(&record).await.unwrap(), Recorded::Fresh);
            assert_eq!(
                store.record(&record).await.unwrap(),
                Recorded::ReplayedMac,
                "{i}"
            );
        }
        assert_eq!(store.live_entries(), 20_000);
        let held: usize = store
            .inner
            .shards
            .iter()
            .map(|shard| {
                let shard = shard.0.lock().unwrap();
                let table = store.table(&shard);
                let slots = table.buckets.iter().flat_map(|bucket| &bucket.slots);
                slots.filter(|slot| slot.expires() != EMPTY).count()
            })
            .sum();
        assert_eq!(held, 20_000);
    }

    /// Two threads fill a store with many shards to exactly its capacity: every request is
    /// accepted (the shards' reserves are collected when the count runs out), and then the
    /// next one is refused.
    #[test]
    fn the_capacity_is_exact_across_shards_and_threads() {
        use futures_util::FutureExt as _;
        let record = |store: &CompactReplayStore, thread: u8, i: u32| {
            let mut mac = [thread; 64];
            mac[..4].copy_from_slice(&i.to_le_bytes());
            let nonce = format!("{thread}-{i}");
            let record = ReplayRecord::new("key", &nonce, &mac, NOW + 300, NOW);
            store.record(&record).now_or_never().expect("ready at once")
        };
        let store = CompactReplayStore::builder().capacity(40_000).build();
        assert!(store.inner.shards.len() > 1);
        let threads: Vec<_> = (0..2u8)
            .map(|thread| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..10_000).all(|i| matches!(record(&store, thread, i), Ok(Recorded::Fresh)))
                })
            })
            .collect();
        for thread in threads {
            assert!(
                thread.join().unwrap(),
                "a request was refused below capacity"
            );
        }
        assert_eq!(store.live_entries(), 40_000);
        assert!(matches!(
            record(&store, 9, 0),
            Err(ReplayStoreError::Full { capacity: 40_000 })
        ));
        assert_eq!(store.live_entries(), 40_000);
    }

    /// Near the capacity a shard's claim leaves most of what is left to the others, so that a
    /// thread that collected the reserves finds room unless the store is really full.
    #[test]
    fn a_claim_near_the_capacity_leaves_the_rest_for_other_shards() {
        let store = CompactReplayStore::builder().capacity(40_000).build();
        assert!(store.inner.shards.len() > 1);
        for left in [40, 10, 2, 1] {
            store.inner.claimed.store(40_000 - left, Ordering::Release);
            let taken = store.claim_chunk();
            assert!((1..=left.div_ceil(2)).contains(&taken), "{taken} of {left}");
            assert_eq!(
                store.inner.claimed.load(Ordering::Acquire),
                40_000 - left + taken
            );
        }
        // A full store's refused claim raises no flag: the next refusal would collect every
        // shard's reserve again for nothing, eight times over.
        store.inner.claimed.store(40_000, Ordering::Release);
        store.inner.reserves_out.store(0, Ordering::Release);
        assert_eq!(store.claim_chunk(), 0);
        assert_eq!(store.inner.reserves_out.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_tables_hold_the_capacity_with_room() {
        for capacity in [0, 1, 4, 1_000, DEFAULT_CAPACITY, 2_000_000, 50_000_000] {
            let shards = shard_count(capacity);
            assert!((1..=MAX_SHARDS as usize).contains(&shards));
            let share = capacity.div_ceil(shards as u64);
            let slots = buckets_for(share) * SLOTS;
            assert!(slots as u64 * LOAD_PERCENT >= share * 100, "{capacity}");
        }
        assert_eq!(shard_count(4), 1);
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn the_prefetched_lines_are_the_lock_and_first_bucket_a_record_reads() {
        for capacity in [10, 10_000, DEFAULT_CAPACITY] {
            let store = CompactReplayStore::builder().capacity(capacity).build();
            let hashing = &store.inner.hashing;
            for i in 0..2_000u128 {
                let key = Key::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834));
                let shard = store.shard_of(key);
                let guard = store.lock(shard);
                let table = store.table(&guard);
                let bucket = &table.buckets[table.home(key, hashing)];
                let lock = &store.inner.shards[shard];
                assert_eq!(
                    store.lines_of(key),
                    [
                        std::ptr::from_ref(lock) as usize,
                        std::ptr::from_ref(bucket) as usize
                    ],
                    "{capacity}"
                );
            }
        }
    }

    #[test]
    fn keys_pack_and_unpack() {
        let key = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128;
        assert_eq!(u128::from(Key::from(key)), key);
    }

    #[test]
    fn entries_are_found_past_full_buckets_and_removed_cleanly() {
        let buckets: Vec<Bucket> = (0..buckets_for(30)).map(|_| Bucket::default()).collect();
        let table = Table { buckets: &buckets };
        let keys: Vec<Key> = (0..30u32).map(|i| Key([i, 0, 0, 0])).collect();
        // Every key probes from bucket 0: the table fills as one long sequence.
        for key in &keys {
            let at = table.free_slot(0, 10).unwrap();
            table.put(
                0,
                at,
                Slot {
                    key: *key,
                    expires: 20,
                },
            );
        }
        for key in &keys {
            assert!(table.find(*key, 0).is_some());
        }
        // Removing the first entries keeps the later ones reachable.
        for key in &keys[..10] {
            let at = table.find(*key, 0).unwrap();
            table.take(0, at);
        }
        for key in &keys[10..] {
            assert!(table.find(*key, 0).is_some());
        }
        assert!(table.find(keys[0], 0).is_none());
    }

    #[test]
    fn stored_seconds_keep_their_order() {
        assert_eq!(stored_second(-5), 1);
        assert_eq!(stored_second(i64::MAX), u32::MAX);
        assert_eq!(stored_second(1_700_000_000), 1_700_000_000);
    }
}
