use http::request::Parts;
use http::HeaderMap;

use super::{VerifiedBody, VerifiedKey};
use crate::key_store::{KeyStore, Secret};
use crate::psk::BodyForm;
use crate::rejection::Rejection;
use crate::replay::ReplayRecord;

/// A shared-key HMAC scheme, run by the verifier's shared machinery.
///
/// The verifier asks the scheme to parse the request's credential and check its time (before
/// anything is read or looked up), looks the key up in the scheme's key store, reads the body
/// under the limit and the timeout, asks the scheme to verify the MAC, records what the scheme
/// says to record against replays, and puts a [`VerifiedKey`](super::VerifiedKey) in the
/// request's extensions. [`ArmorPsk`](crate::psk::ArmorPsk) and
/// [`DateHmac`](crate::date_hmac::DateHmac) implement it; [`OneOf`] accepts either on one
/// route.
pub trait Scheme: Clone + Send + Sync + 'static {
    /// What a request's credential claims, once parsed and checked against the clock.
    type Claim: Send + Sync + 'static;

    /// Whether the request's `Authorization` header is addressed to this scheme.
    fn recognizes(&self, headers: &HeaderMap) -> bool;

    /// Parses the credential and checks its time against `now` (Unix seconds).
    fn check(&self, headers: &HeaderMap, now: i64) -> Result<Self::Claim, Rejection>;

    /// The key id to look up.
    fn key_id<'c>(&self, claim: &'c Self::Claim) -> &'c str;

    /// Where the claim's key is looked up.
    fn key_store(&self, claim: &Self::Claim) -> &dyn KeyStore;

    /// The refusal for a key the store does not know.
    fn unknown_key(&self, claim: &Self::Claim) -> Rejection;

    /// Verifies the claim's MAC over the request with `secret`, in constant time; on success,
    /// the body form the signature covers.
    fn verify(
        &self,
        claim: &Self::Claim,
        secret: &Secret,
        parts: &Parts,
        body: &mut VerifiedBody,
    ) -> Result<BodyForm, Rejection>;

    /// What to remember of an accepted request against its replays, if the scheme can refuse
    /// replays at all.
    ///
    /// A scheme that returns a record must refuse a claim whose timestamp is out of its window
    /// at `now`: the verifier calls this with the clock read after the body, and once more
    /// after the store recorded the request, on a fresh clock read (a store may have let the
    /// original's entries of a replay go by then, on a later clock; this check is what refuses
    /// it). It may be called up to three times a request, so it must have no side effects. A
    /// scheme that records nothing may still refuse here: it is asked after the body too, so
    /// a claim whose time ran out while the body came is refused
    /// ([`DateHmac`](crate::date_hmac::DateHmac) checks its `Date` again).
    fn replay_record<'c>(
        &self,
        claim: &'c Self::Claim,
        now: i64,
    ) -> Result<Option<ReplayRecord<'c>>, Rejection>;

    /// The identity of an accepted request, signed with body form `form`.
    fn identity(&self, claim: Self::Claim, form: BodyForm) -> VerifiedKey;

    /// Whether [`replay_record`](Scheme::replay_record) may return a record. A layer whose
    /// scheme never does builds no default replay store. Defaults to `true`.
    fn records_replays(&self) -> bool {
        true
    }
}

/// Either of two schemes on one route: a request goes to the second when its `Authorization`
/// header is addressed to the second and not to the first, else to the first (which then
/// answers for a request with no credentials).
///
/// ```
/// use armor_psk::date_hmac::DateHmac;
/// use armor_psk::key_store::MemoryKeyStore;
/// use armor_psk::psk::ArmorPsk;
/// use armor_psk::verify::{OneOf, VerifyLayer};
///
/// // Each scheme its own keys: a key of the replayable signed-Date scheme is no ARMOR-PSK key.
/// let psk_keys = MemoryKeyStore::builder().key("key-1", "secret").build();
/// let date_keys = MemoryKeyStore::builder().key("license-key", "shared key").build();
/// let schemes = OneOf::new(ArmorPsk::new(psk_keys), DateHmac::new(date_keys));
/// let layer = VerifyLayer::with_scheme(schemes);
/// ```
#[derive(Debug, Clone)]
pub struct OneOf<A, B> {
    first: A,
    second: B,
}

impl<A, B> OneOf<A, B> {
    /// `first`, or `second` for the requests addressed to it.
    pub fn new(first: A, second: B) -> Self {
        OneOf { first, second }
    }

    /// The first scheme.
    pub fn first(&self) -> &A {
        &self.first
    }

    /// The second scheme.
    pub fn second(&self) -> &B {
        &self.second
    }
}

/// The claim of a [`OneOf`] scheme.
#[derive(Debug)]
pub enum OneOfClaim<A, B> {
    /// A claim of the first scheme.
    First(A),
    /// A claim of the second scheme.
    Second(B),
}

impl<A: Scheme, B: Scheme> Scheme for OneOf<A, B> {
    type Claim = OneOfClaim<A::Claim, B::Claim>;

    fn recognizes(&self, headers: &HeaderMap) -> bool {
        self.first.recognizes(headers) || self.second.recognizes(headers)
    }

    fn check(&self, headers: &HeaderMap, now: i64) -> Result<Self::Claim, Rejection> {
        if self.second.recognizes(headers) && !self.first.recognizes(headers) {
            self.second.check(headers, now).map(OneOfClaim::Second)
        } else {
            self.first.check(headers, now).map(OneOfClaim::First)
        }
    }

    fn key_id<'c>(&self, claim: &'c Self::Claim) -> &'c str {
        match claim {
            OneOfClaim::First(claim) => self.first.key_id(claim),
            OneOfClaim::Second(claim) => self.second.key_id(claim),
        }
    }

    fn key_store(&self, claim: &Self::Claim) -> &dyn KeyStore {
        match claim {
            OneOfClaim::First(claim) => self.first.key_store(claim),
            OneOfClaim::Second(claim) => self.second.key_store(claim),
        }
    }

    fn unknown_key(&self, claim: &Self::Claim) -> Rejection {
        match claim {
            OneOfClaim::First(claim) => self.first.unknown_key(claim),
            OneOfClaim::Second(claim) => self.second.unknown_key(claim),
        }
    }

    fn verify(
        &self,
        claim: &Self::Claim,
        secret: &Secret,
        parts: &Parts,
        body: &mut VerifiedBody,
    ) -> Result<BodyForm, Rejection> {
        match claim {
            OneOfClaim::First(claim) => self.first.verify(claim, secret, parts, body),
            OneOfClaim::Second(claim) => self.second.verify(claim, secret, parts, body),
        }
    }

    fn replay_record<'c>(
        &self,
        claim: &'c Self::Claim,
        now: i64,
    ) -> Result<Option<ReplayRecord<'c>>, Rejection> {
        match claim {
            OneOfClaim::First(claim) => self.first.replay_record(claim, now),
            OneOfClaim::Second(claim) => self.second.replay_record(claim, now),
        }
    }

    fn identity(&self, claim: Self::Claim, form: BodyForm) -> VerifiedKey {
        match claim {
            OneOfClaim::First(claim) => self.first.identity(claim, form),
            OneOfClaim::Second(claim) => self.second.identity(claim, form),
        }
    }

    fn records_replays(&self) -> bool {
        self.first.records_replays() || self.second.records_replays()
    }
}
