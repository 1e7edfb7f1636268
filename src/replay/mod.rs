//! Refusing replays: the [`ReplayStore`] trait and its in-memory stores, [`MokaReplayStore`]
//! (the default) and [`CompactReplayStore`] (a smaller, faster second choice).
//!
//! Two rules (see the README's security notes):
//!
//! 1. No two accepted requests share a MAC while their timestamps are inside the window. Always
//!    on: it refuses every true replay, and the boundary shifts that the separator-less signing
//!    string allows (`/accounts/2` + nonce `3f…` and `/accounts/23` + nonce `f…` sign the same
//!    bytes).
//! 2. No two accepted requests of one key share a nonce inside the window. On by default; it
//!    can be switched off for clients that send nonce = timestamp more than once a second.
//!
//! A request is recorded only after every other check passed, and each entry is kept until its
//! own timestamp leaves the window, not for a window counted from its arrival. (The verifier
//! checks the window once more after the record, on a fresh clock read: a request refused
//! there leaves entries that have expired by that clock, and go with the next sweep.)

mod compact;
#[cfg(test)]
mod conformance;
mod keys;
mod moka;

use async_trait::async_trait;

pub use self::compact::{CompactReplayStore, CompactReplayStoreBuilder, TableTooLarge};
use self::keys::nonce_key;
pub(crate) use self::keys::LazyNonceKey;
pub use self::moka::{MokaReplayStore, MokaReplayStoreBuilder};
use crate::psk::MAC_LEN;

/// The in-memory stores' capacity unless told otherwise, in entries: 1,000 requests a second
/// over the 600 seconds an entry can live under the default ±300 s window (a timestamp 300 s
/// ahead, remembered until 300 s after it), two entries a request.
pub const DEFAULT_CAPACITY: u64 = 1_000 * 600 * 2;

/// What a replay store is asked to remember about one accepted request.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub struct ReplayRecord<'a> {
    /// The API key id.
    pub key_id: &'a str,
    /// The request's nonce.
    pub nonce: &'a str,
    /// The request's MAC.
    pub mac: &'a [u8; MAC_LEN],
    /// The last Unix second the entries must be remembered through (the request's timestamp
    /// plus the window): the request is still inside the window during that second, so a store
    /// may forget them only once its clock has passed it.
    pub expires_at: i64,
    /// The verifier's current Unix time.
    pub now: i64,
    /// Whether rule 2 (one nonce per key) applies.
    pub unique_nonce: bool,
    /// Rule 2's key, kept by the verifier for its request, with the key id and nonce it is
    /// the key of: it holds only while the fields above still borrow those.
    hashed: Option<KeptNonceKey<'a>>,
}

/// Where one request's rule-2 key is kept, and what it is the key of.
#[derive(Clone, Copy)]
struct KeptNonceKey<'a> {
    key_id: &'a str,
    nonce: &'a str,
    key: &'a LazyNonceKey,
}

impl<'a> ReplayRecord<'a> {
    /// A record of a request; `unique_nonce` is on.
    pub fn new(
        key_id: &'a str,
        nonce: &'a str,
        mac: &'a [u8; MAC_LEN],
        expires_at: i64,
        now: i64,
    ) -> Self {
        ReplayRecord {
            key_id,
            nonce,
            mac,
            expires_at,
            now,
            unique_nonce: true,
            hashed: None,
        }
    }

    /// A record whose rule-2 key is kept in `key`, so that the hint and the record of one
    /// request do not hash it again each. `key` must belong to this key id and nonce alone:
    /// every record given it must carry the same two (the verifier keeps one per claim), since
    /// it is filled from whichever record asks first.
    pub(crate) fn with_nonce_key(mut self, key: &'a LazyNonceKey) -> Self {
        self.hashed = Some(KeptNonceKey {
            key_id: self.key_id,
            nonce: self.nonce,
            key,
        });
        self
    }

    /// Rule 2's key: the kept one, while the key id and nonce are still the slices it is the
    /// key of (a `&str` borrowed for `'a` cannot change under it, and the fields are public),
    /// else hashed now.
    pub(crate) fn nonce_key(&self) -> u128 {
        match self.hashed {
            Some(kept)
                if std::ptr::eq(kept.key_id, self.key_id)
                    && std::ptr::eq(kept.nonce, self.nonce) =>
            {
                kept.key.get(self.key_id, self.nonce)
            }
            _ => nonce_key(self.key_id, self.nonce),
        }
    }

    /// Sets whether rule 2 (one nonce per key) applies.
    #[must_use]
    pub fn unique_nonce(mut self, unique: bool) -> Self {
        self.unique_nonce = unique;
        self
    }
}

/// The MAC is left out of `Debug`.
impl std::fmt::Debug for ReplayRecord<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayRecord")
            .field("key_id", &self.key_id)
            .field("nonce", &self.nonce)
            .field("expires_at", &self.expires_at)
            .field("now", &self.now)
            .field("unique_nonce", &self.unique_nonce)
            .finish_non_exhaustive()
    }
}

/// The outcome of [`ReplayStore::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// The request was new, and is now remembered.
    Fresh,
    /// An accepted request inside the window already had this MAC (rule 1).
    ReplayedMac,
    /// An accepted request of this key inside the window already had this nonce (rule 2).
    ReplayedNonce,
}

/// A replay store could not record a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayStoreError {
    /// The store holds as many live entries as its capacity allows. Nothing live is evicted
    /// (an evicted entry is a replay hole), so new requests are refused until entries expire.
    #[error("replay store is full ({capacity} live entries)")]
    Full {
        /// The capacity, in entries.
        capacity: u64,
    },
    /// The store could not answer (for example, a network store is down).
    #[error("replay store unavailable: {0}")]
    Unavailable(Box<dyn std::error::Error + Send + Sync>),
}

/// Remembers accepted requests and refuses their replays.
///
/// `record` must be atomic: of any number of concurrent calls for one request, at most one
/// returns [`Recorded::Fresh`] (none may, when the store fills meanwhile: a copy refused as a
/// replay while its original is refused as `Full`). When it returns anything but `Fresh`,
/// nothing of the request may stay remembered.
///
/// `record`'s future may be dropped before it is done: the verifier drops it when the store
/// timeout passes (503 `nonce_store_unavailable`), and a request's whole future goes when
/// its client does. A store whose record takes more than one step (two round trips to a
/// server, one a key) must leave nothing of the request when cut off between them (make it
/// one atomic step: a script, a transaction); otherwise the client's retry of the request is
/// refused as a replay of a request that was never accepted.
#[async_trait]
pub trait ReplayStore: Send + Sync + 'static {
    /// Records `request` unless an earlier accepted request shares its MAC or (when
    /// [`ReplayRecord::unique_nonce`] is set) its key id and nonce.
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError>;

    /// What [`record`](ReplayStore::record) would do, done now, when the store can without
    /// waiting (an in-memory store); `None` when it would have to wait, and the verifier
    /// awaits `record` instead (nothing is recorded then).
    ///
    /// Defaults to `None`. An implementation must not block, and follows the same rules as
    /// `record`.
    fn record_now(&self, request: &ReplayRecord<'_>) -> Option<Result<Recorded, ReplayStoreError>> {
        let _ = request;
        None
    }

    /// A hint, given before the request's MAC is computed, that `request` may be recorded
    /// next: an in-memory store can start loading the memory the record will touch, so that it
    /// arrives while the MAC is computed rather than after. The request is not verified yet:
    /// nothing may be recorded, and a hint that is never followed by `record` must do no harm.
    ///
    /// Defaults to nothing. An implementation must be quick and must not block.
    fn prefetch(&self, request: &ReplayRecord<'_>) {
        let _ = request;
    }
}

#[async_trait]
impl<T: ReplayStore + ?Sized> ReplayStore for std::sync::Arc<T> {
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        (**self).record(request).await
    }

    fn record_now(&self, request: &ReplayRecord<'_>) -> Option<Result<Recorded, ReplayStoreError>> {
        (**self).record_now(request)
    }

    fn prefetch(&self, request: &ReplayRecord<'_>) {
        (**self).prefetch(request);
    }
}

#[async_trait]
impl ReplayStore for Box<dyn ReplayStore> {
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        (**self).record(request).await
    }

    fn record_now(&self, request: &ReplayRecord<'_>) -> Option<Result<Recorded, ReplayStoreError>> {
        (**self).record_now(request)
    }

    fn prefetch(&self, request: &ReplayRecord<'_>) {
        (**self).prefetch(request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_nonce_key_is_taken_only_for_the_slices_it_is_the_key_of() {
        const CARRIED: u128 = 42 | 1 << 127;
        let kept = LazyNonceKey::holding(CARRIED);
        let mac = [1u8; MAC_LEN];
        let ids = String::from("key-1n1");
        let (key_id, nonce) = ids.split_at(5);
        let carried = ReplayRecord::new(key_id, nonce, &mac, 10, 0).with_nonce_key(&kept);
        assert_eq!(carried.nonce_key(), CARRIED);
        for changed in [
            ReplayRecord {
                key_id: &ids[..4],
                ..carried
            },
            ReplayRecord {
                nonce: &ids[5..6],
                ..carried
            },
            ReplayRecord {
                nonce: "n1",
                ..carried
            },
        ] {
            assert_eq!(
                changed.nonce_key(),
                nonce_key(changed.key_id, changed.nonce)
            );
        }
        assert_eq!(
            ReplayRecord::new(key_id, nonce, &mac, 10, 0).nonce_key(),
            nonce_key("key-1", "n1")
        );
    }
}
