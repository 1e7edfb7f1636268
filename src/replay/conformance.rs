//! The rules every in-memory [`ReplayStore`] of the crate must keep, as one test suite run
//! against each store (`suite!(StoreType)` in the store's own test module).

use super::{Recorded, ReplayRecord, ReplayStore, ReplayStoreError};

/// The clock second the suite's records are made at.
pub(super) const NOW: i64 = 1_700_000_000;

/// What the suite needs from a store besides the trait.
pub(super) trait TestStore: ReplayStore + Clone + Default {
    /// A store holding at most `entries` live entries.
    fn with_capacity(entries: u64) -> Self;
    /// Live entries, once the store's pending housekeeping has run.
    fn live_entries(&self) -> u64;
}

fn record<'a>(mac: &'a [u8; 64], nonce: &'a str) -> ReplayRecord<'a> {
    ReplayRecord::new("key", nonce, mac, NOW + 300, NOW)
}

async fn fresh<S: TestStore>(store: &S, record: &ReplayRecord<'_>) -> Recorded {
    match store.record(record).await {
        Ok(recorded) => recorded,
        Err(error) => panic!("the store failed: {error}"),
    }
}

pub(super) async fn refuses_a_repeated_mac_and_a_repeated_nonce<S: TestStore>() {
    let store = S::default();
    let (a, b) = ([1u8; 64], [2u8; 64]);
    assert_eq!(fresh(&store, &record(&a, "n1")).await, Recorded::Fresh);
    assert_eq!(
        fresh(&store, &record(&a, "n2")).await,
        Recorded::ReplayedMac
    );
    assert_eq!(
        fresh(&store, &record(&b, "n1")).await,
        Recorded::ReplayedNonce
    );
    // Another key may use the same nonce.
    let other_key = ReplayRecord::new("other", "n1", &b, NOW + 300, NOW);
    assert_eq!(fresh(&store, &other_key).await, Recorded::Fresh);
}

pub(super) async fn a_refused_request_leaves_nothing_behind<S: TestStore>() {
    let store = S::default();
    let (a, b) = ([1u8; 64], [2u8; 64]);
    fresh(&store, &record(&a, "n1")).await;
    assert_eq!(
        fresh(&store, &record(&b, "n1")).await,
        Recorded::ReplayedNonce
    );
    assert_eq!(store.live_entries(), 2);
    // b's MAC was not kept: under a fresh nonce it is accepted.
    assert_eq!(fresh(&store, &record(&b, "n2")).await, Recorded::Fresh);
}

pub(super) async fn nonce_rule_can_be_off<S: TestStore>() {
    let store = S::default();
    let (a, b) = ([1u8; 64], [2u8; 64]);
    let loose = |mac| record(mac, "1700000000").unique_nonce(false);
    assert_eq!(fresh(&store, &loose(&a)).await, Recorded::Fresh);
    assert_eq!(fresh(&store, &loose(&b)).await, Recorded::Fresh);
    assert_eq!(fresh(&store, &loose(&a)).await, Recorded::ReplayedMac);
    assert_eq!(store.live_entries(), 2);
}

pub(super) async fn an_entry_lives_until_its_own_expiry<S: TestStore>() {
    let store = S::default();
    let mac = [3u8; 64];
    let early = ReplayRecord::new("key", "n", &mac, NOW + 10, NOW);
    assert_eq!(fresh(&store, &early).await, Recorded::Fresh);
    let at_expiry = ReplayRecord::new("key", "n", &mac, NOW + 10, NOW + 10);
    assert_eq!(fresh(&store, &at_expiry).await, Recorded::ReplayedMac);
    let after = ReplayRecord::new("key", "n", &mac, NOW + 20, NOW + 11);
    assert_eq!(fresh(&store, &after).await, Recorded::Fresh);
}

pub(super) async fn a_full_store_refuses_and_evicts_nothing<S: TestStore>() {
    let store = S::with_capacity(4);
    for i in 0..2u8 {
        let mac = [i; 64];
        let nonce = i.to_string();
        assert_eq!(fresh(&store, &record(&mac, &nonce)).await, Recorded::Fresh);
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
        fresh(&store, &record(&first, "x")).await,
        Recorded::ReplayedMac
    );
    assert_eq!(store.live_entries(), 4);
}

pub(super) async fn a_prefetched_request_is_not_recorded<S: TestStore>() {
    let store = S::default();
    let mac = [4u8; 64];
    store.prefetch(&record(&mac, "n"));
    assert_eq!(store.live_entries(), 0);
    assert_eq!(fresh(&store, &record(&mac, "n")).await, Recorded::Fresh);
    store.prefetch(&record(&mac, "n"));
    assert_eq!(
        fresh(&store, &record(&mac, "n")).await,
        Recorded::ReplayedMac
    );
    assert_eq!(store.live_entries(), 2);
}

/// A store records the rule-2 key a record carries (the verifier's, kept for its request),
/// which is the one the store would hash, and hashes anew when a field it came from was
/// changed.
pub(super) async fn a_kept_nonce_key_meets_its_own_hash<S: TestStore>() {
    let store = S::default();
    let (a, b, c, d) = ([5u8; 64], [6u8; 64], [8u8; 64], [9u8; 64]);
    let kept_n1 = super::LazyNonceKey::default();
    let hashed = |mac| record(mac, "n1").with_nonce_key(&kept_n1);
    // A kept key is what the store records: one kept for "x" is "x"'s.
    let kept_x = super::LazyNonceKey::holding(super::nonce_key("key", "x"));
    let carried_x = record(&d, "n0").with_nonce_key(&kept_x);
    assert_eq!(fresh(&store, &carried_x).await, Recorded::Fresh);
    let e = [10u8; 64];
    assert_eq!(
        fresh(&store, &record(&e, "x")).await,
        Recorded::ReplayedNonce
    );
    assert_eq!(fresh(&store, &hashed(&a)).await, Recorded::Fresh);
    assert_eq!(
        fresh(&store, &record(&b, "n1")).await,
        Recorded::ReplayedNonce
    );
    let mut changed = hashed(&c);
    changed.nonce = "n2";
    assert_eq!(fresh(&store, &changed).await, Recorded::Fresh);
    let f = [11u8; 64];
    assert_eq!(
        fresh(&store, &record(&f, "n2")).await,
        Recorded::ReplayedNonce
    );
}

/// 32 copies of one request, and 32 requests sharing one nonce, on two worker threads.
pub(super) async fn concurrent_copies_are_accepted_once<S: TestStore>() {
    let store = S::default();
    let copies = (0..32u8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { fresh(&store, &record(&[7u8; 64], "same")).await })
    });
    let same_nonce = (0..32u8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move { fresh(&store, &record(&[100 + i; 64], "shared")).await })
    });
    for tasks in [copies.collect::<Vec<_>>(), same_nonce.collect()] {
        let mut accepted = 0;
        for task in tasks {
            accepted += usize::from(task.await.expect("no panic") == Recorded::Fresh);
        }
        assert_eq!(accepted, 1);
    }
    // One request of each batch stays; the refused ones left nothing behind.
    assert_eq!(store.live_entries(), 4);
}

/// The suite, as `#[tokio::test]`s for one store type.
macro_rules! suite {
    ($store:ty) => {
        mod conformance_suite {
            use super::*;

            #[tokio::test]
            async fn refuses_a_repeated_mac_and_a_repeated_nonce() {
                conformance::refuses_a_repeated_mac_and_a_repeated_nonce::<$store>().await
            }

            #[tokio::test]
            async fn a_refused_request_leaves_nothing_behind() {
                conformance::a_refused_request_leaves_nothing_behind::<$store>().await
            }

            #[tokio::test]
            async fn nonce_rule_can_be_off() {
                conformance::nonce_rule_can_be_off::<$store>().await
            }

            #[tokio::test]
            async fn an_entry_lives_until_its_own_expiry() {
                conformance::an_entry_lives_until_its_own_expiry::<$store>().await
            }

            #[tokio::test]
            async fn a_full_store_refuses_and_evicts_nothing() {
                conformance::a_full_store_refuses_and_evicts_nothing::<$store>().await
            }

            #[tokio::test]
            async fn a_prefetched_request_is_not_recorded() {
                conformance::a_prefetched_request_is_not_recorded::<$store>().await
            }

            #[tokio::test]
            async fn a_kept_nonce_key_meets_its_own_hash() {
                conformance::a_kept_nonce_key_meets_its_own_hash::<$store>().await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_copies_are_accepted_once() {
                conformance::concurrent_copies_are_accepted_once::<$store>().await
            }
        }
    };
}

pub(super) use suite;
