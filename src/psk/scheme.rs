use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::request::Parts;
use http::HeaderMap;

use super::{
    names_scheme, verify_forms, BodyForm, BodyForms, Credential, MalformedCredential,
    SigningString, MAC_LEN,
};
use crate::key_store::{KeyStore, Secret};
use crate::rejection::Rejection;
use crate::replay::{LazyNonceKey, ReplayRecord};
use crate::verify::{KeyAndNonce, Scheme, VerifiedBody, VerifiedKey};

/// The default allowed distance between a request's timestamp and the server's clock.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// The ARMOR-PSK scheme, as the verifier runs it: where its keys are, its window, the body forms
/// it accepts and its nonce rule. [`VerifyPskLayer`](crate::VerifyPskLayer)'s builder methods
/// set these; build one directly to combine it with another scheme
/// ([`OneOf`](crate::verify::OneOf)).
#[derive(Clone)]
pub struct ArmorPsk {
    key_store: Arc<dyn KeyStore>,
    pub(crate) window_secs: u64,
    pub(crate) body_forms: BodyForms,
    pub(crate) unsigned_body: bool,
    pub(crate) unique_nonce: bool,
}

impl ArmorPsk {
    /// The scheme with its secrets in `key_store` and the defaults: a 300-second window, all
    /// three body forms (the empty one only for a request without a body), one nonce per key.
    pub fn new(key_store: impl KeyStore) -> Self {
        ArmorPsk {
            key_store: Arc::new(key_store),
            window_secs: DEFAULT_WINDOW.as_secs(),
            body_forms: BodyForms::ALL,
            unsigned_body: false,
            unique_nonce: true,
        }
    }

    /// [`VerifyPskLayer::window`](crate::VerifyPskLayer::window), for a scheme built directly
    /// (to combine it with another in [`OneOf`](crate::verify::OneOf)).
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window_secs = window.as_secs();
        self
    }

    /// [`VerifyPskLayer::body_forms`](crate::VerifyPskLayer::body_forms), for a scheme built
    /// directly.
    #[must_use]
    pub fn body_forms(mut self, forms: BodyForms) -> Self {
        self.body_forms = forms;
        self
    }

    /// [`VerifyPskLayer::insecure_accept_unsigned_body`](crate::VerifyPskLayer::insecure_accept_unsigned_body),
    /// for a scheme built directly. **Insecure**: read that method's warning.
    #[must_use]
    pub fn insecure_accept_unsigned_body(mut self) -> Self {
        self.unsigned_body = true;
        self
    }

    /// [`VerifyPskLayer::unique_nonce`](crate::VerifyPskLayer::unique_nonce), for a scheme
    /// built directly.
    #[must_use]
    pub fn unique_nonce(mut self, unique: bool) -> Self {
        self.unique_nonce = unique;
        self
    }

    /// The body forms the scheme accepts for a request with or without a body.
    pub fn accepted_forms(&self, has_body: bool) -> BodyForms {
        if has_body && !self.unsigned_body {
            self.body_forms.without(BodyForm::Empty)
        } else {
            self.body_forms
        }
    }

    /// Refuses a timestamp further than the window from `now`.
    fn check_window(&self, timestamp: i64, now: i64) -> Result<(), Rejection> {
        if now.abs_diff(timestamp) > self.window_secs {
            return Err(Rejection::TimestampOutOfWindow {
                server_time: now,
                window_secs: self.window_secs,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for ArmorPsk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmorPsk")
            .field("window_secs", &self.window_secs)
            .field("body_forms", &self.body_forms)
            .field("insecure_accept_unsigned_body", &self.unsigned_body)
            .field("unique_nonce", &self.unique_nonce)
            .finish_non_exhaustive()
    }
}

/// What an ARMOR-PSK header claims, owned, once it has parsed and its timestamp is in the
/// window. `Debug` leaves the MAC out: it is good until the timestamp leaves the window.
pub struct PskClaim {
    ids: KeyAndNonce,
    timestamp: i64,
    mac: [u8; MAC_LEN],
    /// Rule 2's replay key, hashed when a store first asks for it (for its hint or its
    /// record) and kept for the next.
    nonce_key: LazyNonceKey,
}

impl fmt::Debug for PskClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PskClaim")
            .field("key_id", &self.ids.key_id())
            .field("nonce", &self.ids.nonce())
            .field("timestamp", &self.timestamp)
            .field("mac", &"[redacted]")
            .finish()
    }
}

impl Scheme for ArmorPsk {
    type Claim = PskClaim;

    fn recognizes(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(AUTHORIZATION)
            .iter()
            .any(|value| names_scheme(value.as_bytes()))
    }

    fn check(&self, headers: &HeaderMap, now: i64) -> Result<PskClaim, Rejection> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let value = values.next().ok_or(Rejection::MissingCredentials)?;
        if values.next().is_some() {
            return Err(Rejection::MalformedCredentials(
                MalformedCredential::MultipleHeaders,
            ));
        }
        // Another scheme's header is a missing credential, not a malformed one; asked only of
        // a value that did not parse (one that did names the scheme).
        let credential = Credential::parse_bytes(value.as_bytes()).map_err(|fault| {
            if names_scheme(value.as_bytes()) {
                Rejection::MalformedCredentials(fault)
            } else {
                Rejection::MissingCredentials
            }
        })?;
        self.check_window(credential.timestamp(), now)?;
        Ok(PskClaim {
            ids: KeyAndNonce::new(credential.key_id(), credential.nonce()),
            timestamp: credential.timestamp(),
            mac: *credential.mac(),
            nonce_key: LazyNonceKey::default(),
        })
    }

    fn key_id<'c>(&self, claim: &'c PskClaim) -> &'c str {
        claim.ids.key_id()
    }

    fn key_store(&self, _: &PskClaim) -> &dyn KeyStore {
        &*self.key_store
    }

    fn unknown_key(&self, _: &PskClaim) -> Rejection {
        Rejection::UnknownKey
    }

    fn verify(
        &self,
        claim: &PskClaim,
        secret: &Secret,
        parts: &Parts,
        body: &mut VerifiedBody,
    ) -> Result<BodyForm, Rejection> {
        let signing = SigningString {
            key_id: claim.ids.key_id(),
            method: parts.method.as_str(),
            path: signed_path(parts),
            nonce: claim.ids.nonce(),
            timestamp: claim.timestamp,
        };
        let forms = self.accepted_forms(!body.is_empty());
        verify_forms(
            secret.hmac_sha512(),
            &signing,
            forms,
            body.chunks(),
            &claim.mac,
        )
        .ok_or(Rejection::BadSignature)
    }

    fn replay_record<'c>(
        &self,
        claim: &'c PskClaim,
        now: i64,
    ) -> Result<Option<ReplayRecord<'c>>, Rejection> {
        // Reading the body took time: the timestamp must still be inside the window, so that the
        // entry recorded now outlives every copy of the request that could still be accepted.
        self.check_window(claim.timestamp, now)?;
        let expires_at = claim.timestamp.saturating_add_unsigned(self.window_secs);
        let record = ReplayRecord::new(
            claim.ids.key_id(),
            claim.ids.nonce(),
            &claim.mac,
            expires_at,
            now,
        );
        // The kept key is asked for only while rule 2 is on.
        Ok(Some(
            record
                .unique_nonce(self.unique_nonce)
                .with_nonce_key(&claim.nonce_key),
        ))
    }

    fn identity(&self, claim: PskClaim, form: BodyForm) -> VerifiedKey {
        VerifiedKey::with_ids(super::SCHEME_NAME, claim.ids, claim.timestamp, form)
    }
}

/// The path as the client sent it. Behind axum's `nest`, the URI the route sees has lost its
/// prefix; axum keeps the original in the extensions.
pub(crate) fn signed_path(parts: &Parts) -> &str {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(uri)) = parts.extensions.get() {
        return uri.path();
    }
    parts.uri.path()
}
