//! The compact keys both in-memory stores remember, the hashing that places them, and the two
//! rules over them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::LazyLock;

use siphasher::sip128::{Hasher128, SipHasher13};

use super::{Recorded, ReplayRecord, ReplayStoreError};
use crate::psk::MAC_LEN;

/// What an in-memory store does with one 128-bit key; [`record_in`] applies the two rules
/// with it.
pub(super) trait KeyTable {
    /// What the store keeps beside a key, made once per request.
    type Entry: Copy;

    /// The entry for `request`'s keys.
    fn entry(&self, request: &ReplayRecord<'_>) -> Self::Entry;

    /// Inserts `key` unless a live entry holds it; atomic per key.
    fn insert(&self, key: u128, entry: Self::Entry) -> Insert;

    /// Removes `key`, which this request's `entry` was just inserted under.
    fn remove(&self, key: u128, entry: Self::Entry);

    /// Inserts a request's MAC key and nonce key under the two rules: both, or neither. The
    /// default inserts them one at a time, taking the MAC's key out again when the nonce's is
    /// refused.
    fn insert_both(
        &self,
        mac: u128,
        nonce: u128,
        entry: Self::Entry,
    ) -> Result<Recorded, StoreFull> {
        one_at_a_time(self, mac, Some(nonce), entry)
    }

    /// [`ReplayStore::prefetch`](super::ReplayStore::prefetch); the default does nothing.
    fn prefetch(&self, request: &ReplayRecord<'_>) {
        let _ = request;
    }

    /// The hard limit on live entries.
    fn capacity(&self) -> u64;
}

/// The outcome of [`KeyTable::insert`].
pub(super) enum Insert {
    Inserted,
    Present,
    Full,
}

/// Records `request` in `table` under rule 1 and, when it applies, rule 2; nothing of a
/// refused request stays.
pub(super) fn record_in<T: KeyTable>(
    table: &T,
    request: &ReplayRecord<'_>,
) -> Result<Recorded, ReplayStoreError> {
    let entry = table.entry(request);
    let (mac_key, nonce_key) = request_keys(request);
    let recorded = match nonce_key {
        Some(nonce_key) => table.insert_both(mac_key, nonce_key, entry),
        None => one_at_a_time(table, mac_key, None, entry),
    };
    recorded.map_err(|StoreFull| ReplayStoreError::Full {
        capacity: table.capacity(),
    })
}

/// The two rules over [`KeyTable::insert`] and [`KeyTable::remove`], one key at a time.
pub(super) fn one_at_a_time<T: KeyTable + ?Sized>(
    table: &T,
    mac: u128,
    nonce: Option<u128>,
    entry: T::Entry,
) -> Result<Recorded, StoreFull> {
    apply_rules(
        &mut (),
        mac,
        nonce,
        |(), _, key| table.insert(key, entry),
        |(), key| table.remove(key, entry),
    )
}

/// Rule 1's key of `request` and, when rule 2 applies, rule 2's.
pub(super) fn request_keys(request: &ReplayRecord<'_>) -> (u128, Option<u128>) {
    let nonce_key = request.unique_nonce.then(|| request.nonce_key());
    (mac_key(request.mac), nonce_key)
}

/// Asks the processor to start loading the cache line at `address` and go on; it is there
/// (or on its way) when it is read. Nothing is read: any address will do, and none faults.
#[allow(unsafe_code)]
pub(super) fn prefetch_line(address: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is part of SSE, which every x86-64 processor has; it is a hint
    // that reads nothing into the program, and it does not fault on any address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(address as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// `len` default values (at least: the allocator may give more room, which is filled too,
/// so that the slice keeps the allocation), in memory the kernel is asked to back with
/// transparent huge pages, so that a table of tens of megabytes read at random costs a cache
/// miss a read rather than also a TLB miss and a page walk. Linux only, and only where the
/// administrator has not turned transparent huge pages off (`never` in
/// `/sys/kernel/mm/transparent_hugepage/enabled`: a collapse would override that); on an error
/// (an older kernel) the memory is as it would have been. The advice stays on the memory after
/// it is freed, if the allocator keeps it for other uses.
pub(super) fn in_huge_pages<T: Default>(
    len: usize,
) -> Result<Box<[T]>, std::collections::TryReserveError> {
    let mut values = Vec::new();
    values.try_reserve_exact(len)?;
    let advise = cfg!(target_os = "linux") && !transparent_huge_pages_off();
    if advise {
        // Fresh memory takes huge pages as it is first written.
        madvise_huge_pages(values.as_ptr(), values.capacity(), Advice::HugePage);
    }
    values.resize_with(values.capacity(), T::default);
    if advise {
        // Memory the allocator had handed out before was written in small pages: moved now.
        madvise_huge_pages(values.as_ptr(), values.len(), Advice::Collapse);
    }
    Ok(values.into_boxed_slice())
}

#[derive(Clone, Copy)]
enum Advice {
    /// `MADV_HUGEPAGE`: huge pages as the memory is first written, and the kernel's background
    /// thread may collapse it later.
    HugePage,
    /// `MADV_COLLAPSE` (Linux 6.1 on): what is written moves into huge pages now.
    Collapse,
}

/// `madvise` over the whole huge pages among `len` values from `start` (one allocation of this
/// crate's). Does nothing off Linux.
#[allow(unsafe_code)]
fn madvise_huge_pages<T>(start: *const T, len: usize, advice: Advice) {
    #[cfg(target_os = "linux")]
    {
        // The x86-64 and 4 KiB-page ARM size. Where huge pages are larger (64 KiB-page ARM),
        // the kernel takes the whole huge pages inside the range, if any.
        const HUGE_PAGE: usize = 2 << 20;
        // libc has no MADV_COLLAPSE for every Linux target; the kernel's number.
        const MADV_COLLAPSE: libc::c_int = 25;
        let first = start as usize;
        let end = first.saturating_add(len.saturating_mul(std::mem::size_of::<T>()));
        // Only the whole huge pages inside the allocation: the memory either side of it may be
        // someone else's.
        let from = first.next_multiple_of(HUGE_PAGE);
        let to = end - end % HUGE_PAGE;
        let advice = match advice {
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::Collapse => MADV_COLLAPSE,
        };
        if to > from {
            // SAFETY: `madvise` with these two kinds of advice changes only how the kernel
            // backs pages (a collapse copies their contents into a huge page as they are), not
            // what they hold, and these pages lie inside one allocation this crate owns,
            // rounded inwards to whole huge pages, which nothing else uses meanwhile. An error
            // changes nothing, and is ignored.
            let _ = unsafe { libc::madvise(from as *mut libc::c_void, to - from, advice) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, len, advice);
}

/// Whether the administrator turned transparent huge pages off (`[never]`); not when the
/// setting cannot be read.
fn transparent_huge_pages_off() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|setting| setting.contains("[never]"))
}

/// Which rule a key is for.
#[derive(Clone, Copy)]
pub(super) enum Rule {
    Mac,
    Nonce,
}

/// No room for a request's keys.
pub(super) struct StoreFull;

/// The two rules over a request's keys, in one place for every way of inserting them: rule 1's
/// key first, then rule 2's (`nonce`, when the rule is on); when rule 2 refuses the request,
/// rule 1's key is taken out again, so that nothing of a refused request stays. `insert`
/// and `remove_mac` work on `state` (the locks a store holds, or nothing).
pub(super) fn apply_rules<S>(
    state: &mut S,
    mac: u128,
    nonce: Option<u128>,
    mut insert: impl FnMut(&mut S, Rule, u128) -> Insert,
    remove_mac: impl FnOnce(&mut S, u128),
) -> Result<Recorded, StoreFull> {
    match insert(state, Rule::Mac, mac) {
        Insert::Inserted => {}
        Insert::Present => return Ok(Recorded::ReplayedMac),
        Insert::Full => return Err(StoreFull),
    }
    let Some(nonce) = nonce else {
        return Ok(Recorded::Fresh);
    };
    let refused = match insert(state, Rule::Nonce, nonce) {
        Insert::Inserted => return Ok(Recorded::Fresh),
        Insert::Present => Ok(Recorded::ReplayedNonce),
        Insert::Full => Err(StoreFull),
    };
    remove_mac(state, mac);
    refused
}

/// Implements [`ReplayStore`](super::ReplayStore) for a [`KeyTable`] store, which answers at
/// once whether it is awaited or not.
macro_rules! replay_store_at_once {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::replay::ReplayStore for $store {
            async fn record(
                &self,
                request: &$crate::replay::ReplayRecord<'_>,
            ) -> Result<$crate::replay::Recorded, $crate::replay::ReplayStoreError> {
                $crate::replay::keys::record_in(self, request)
            }

            fn record_now(
                &self,
                request: &$crate::replay::ReplayRecord<'_>,
            ) -> Option<Result<$crate::replay::Recorded, $crate::replay::ReplayStoreError>> {
                Some($crate::replay::keys::record_in(self, request))
            }

            fn prefetch(&self, request: &$crate::replay::ReplayRecord<'_>) {
                $crate::replay::keys::KeyTable::prefetch(self, request);
            }
        }
    };
}
pub(super) use replay_store_at_once;

/// The top bit of a key: set for a nonce key, clear for a MAC key, so the two never meet.
const NONCE_KEY: u128 = 1 << 127;

/// Rule 1's key: the first 16 bytes of the MAC (uniform, and unknown before the request is
/// signed), top bit cleared.
pub(super) fn mac_key(mac: &[u8; MAC_LEN]) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&mac[..16]);
    u128::from_le_bytes(first) & !NONCE_KEY
}

/// Rule 2's key: a keyed 128-bit hash of key id and nonce, top bit set. One key for the
/// process, so that the verifier can hash a request's ids once, whichever store records it.
pub(crate) fn nonce_key(key_id: &str, nonce: &str) -> u128 {
    /// SipHash-1-3 with 128-bit output, under random keys: one pass over key id and nonce, and
    /// collisions an outsider cannot aim for.
    static HASHER: LazyLock<SipHasher13> = LazyLock::new(|| {
        let state = RandomState::new();
        SipHasher13::new_with_keys(state.hash_one(0u8), state.hash_one(1u8))
    });
    let mut hasher = *HASHER;
    // The key id's length first, so that no two (key id, nonce) pairs feed the same bytes.
    hasher.write_usize(key_id.len());
    hasher.write(key_id.as_bytes());
    hasher.write(nonce.as_bytes());
    u128::from(hasher.finish128()) | NONCE_KEY
}

/// Rule 2's key of one request, hashed the first time a store asks for it and kept for the
/// next: a store that keys by it hashes once for its hint and its record, and a store that
/// does not (a shared store, or none) pays nothing.
///
/// Not a `OnceLock`: its state change is a locked compare-and-swap on every request. Threads
/// that race here store the same key ([`nonce_key`] is a function of its inputs under the
/// process's one key), so no compare-and-swap is needed, and on x86 these loads and stores
/// are plain moves. A rule-2 key has its top bit set, so a high word of 0 means "not hashed
/// yet".
#[derive(Default)]
pub(crate) struct LazyNonceKey {
    low: AtomicU64,
    /// Stored after `low`, with release: a reader that sees it non-zero sees `low` too.
    high: AtomicU64,
}

impl LazyNonceKey {
    /// The key of `key_id` and `nonce`, which must be the same every call.
    pub(crate) fn get(&self, key_id: &str, nonce: &str) -> u128 {
        let high = self.high.load(Ordering::Acquire);
        if high != 0 {
            return u128::from(high) << 64 | u128::from(self.low.load(Ordering::Relaxed));
        }
        let key = nonce_key(key_id, nonce);
        self.keep(key);
        key
    }

    fn keep(&self, key: u128) {
        debug_assert_ne!(key & NONCE_KEY, 0, "a rule-2 key has its top bit set");
        self.low.store(key as u64, Ordering::Relaxed);
        self.high.store((key >> 64) as u64, Ordering::Release);
    }

    /// One that holds `key` already, whatever it is asked.
    #[cfg(test)]
    pub(crate) fn holding(key: u128) -> Self {
        let lazy = LazyNonceKey::default();
        lazy.keep(key);
        lazy
    }
}

/// Keeps two locks off one cache line, so that two threads locking different shards (or
/// stripes) do not contend for a line.
#[repr(align(64))]
pub(super) struct Padded<T>(pub(super) T);

/// How far behind the last second of a once-a-second piece of work a request's second may be
/// and still count as done: a request records on the clock it read when it came, and may have
/// waited since (for a lock, or for a core under load). Further back is taken for the clock
/// stepped back; a full store stepped back by less waits for the clock to catch up (at most
/// this long) before it sweeps or recounts again, which an overloaded server that re-ran them
/// for every late request would pay far more for.
const LATE_SECS: i64 = 30;

/// What a [`first_in_second`] second starts at: never run.
pub(super) const NEVER_RUN: i64 = i64::MIN;

/// Whether this is the first call in clock second `now` of the work `last` keeps the second of
/// (a full store's whole sweep or recount), and if so marks it done. A second up to
/// [`LATE_SECS`] behind it is taken as done; one further back is the clock stepped back, and
/// the work runs again (else a full store would wait until the clock caught up).
pub(super) fn first_in_second(last: &AtomicI64, now: i64) -> bool {
    let mut seen = last.load(Ordering::Acquire);
    loop {
        if (0..=LATE_SECS).contains(&seen.saturating_sub(now)) {
            return false;
        }
        match last.compare_exchange_weak(seen, now, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(current) => seen = current,
        }
    }
}

/// Maps `hash` onto `0..len` (multiply-shift, no division).
pub(super) fn reduce(hash: u64, len: usize) -> usize {
    ((u128::from(hash) * len as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    #[test]
    fn once_a_second_takes_late_seconds_as_done_and_steps_back_as_new() {
        let last = AtomicI64::new(NEVER_RUN);
        assert!(first_in_second(&last, 100));
        assert!(!first_in_second(&last, 100));
        // Seconds up to thirty late: done already.
        assert!(!first_in_second(&last, 99));
        assert!(!first_in_second(&last, 70));
        assert!(first_in_second(&last, 101));
        // Further back: the clock was stepped back, and the work runs again there.
        assert!(first_in_second(&last, 70));
        assert!(!first_in_second(&last, 70));
        assert!(first_in_second(&last, 71));
    }

    use super::*;

    #[test]
    fn mac_and_nonce_keys_never_meet() {
        assert_eq!(mac_key(&[0xff; MAC_LEN]) & NONCE_KEY, 0);
        assert_ne!(nonce_key("k", "n") & NONCE_KEY, 0);
        assert_ne!(nonce_key("k", "n"), nonce_key("kn", ""));
        assert_eq!(nonce_key("k", "n"), nonce_key("k", "n"));
    }

    #[test]
    fn a_lazy_nonce_key_hashes_on_first_asking_and_keeps_it() {
        let lazy = LazyNonceKey::default();
        assert_eq!(lazy.get("k", "n"), nonce_key("k", "n"));
        // Kept: what it is asked next is not hashed (the verifier asks with the same ids).
        assert_eq!(lazy.get("other", "ids"), nonce_key("k", "n"));
        let held = 7 | NONCE_KEY;
        assert_eq!(LazyNonceKey::holding(held).get("k", "n"), held);
    }

    #[test]
    fn reduce_stays_in_range() {
        assert!(reduce(u64::MAX, 10) < 10);
        assert_eq!(reduce(0, 10), 0);
    }
}
