use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, DATE};
use http::request::Parts;
use http::HeaderMap;

use super::credential::{parse_http_date, DateHmacCredential, DateHmacError, TAG_LEN};
use crate::clock::http_date;
use crate::key_store::{KeyStore, Secret};
use crate::psk::BodyForm;
use crate::rejection::Rejection;
use crate::replay::ReplayRecord;
use crate::verify::{Scheme, VerifiedBody, VerifiedKey};

/// The scheme's name in keys files, logs and [`VerifiedKey::scheme`].
pub const SCHEME_NAME: &str = "date-hmac";

/// How old a `Date` may be by default: the vendor's 15 minutes.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(15 * 60);

/// How far ahead of the server's clock a `Date` may be by default.
pub const DEFAULT_MAX_SKEW: Duration = Duration::from_secs(60);

/// The signed-Date scheme, as the verifier runs it.
///
/// Its refusals are 400s with the vendor's codes (`authorization_missing_params`,
/// `hmac_required`, `authorization_invalid_headers`, `date_header_diff`, `invalid_api_key`,
/// `signature_mismatch`) through the verifier's replaceable rejection response. It records
/// nothing against replays: with nothing but the `Date` signed, two honest requests in one
/// second carry the same signature, so a captured request can be replayed inside the window.
///
/// ```
/// use armor_psk::date_hmac::DateHmac;
/// use armor_psk::key_store::MemoryKeyStore;
/// use armor_psk::verify::VerifyLayer;
///
/// let keys = MemoryKeyStore::builder().key("key-1", "shared key").build();
/// let layer = VerifyLayer::with_scheme(DateHmac::new(keys));
/// ```
#[derive(Clone)]
pub struct DateHmac {
    key_store: Arc<dyn KeyStore>,
    max_age_secs: u64,
    max_skew_secs: u64,
}

impl DateHmac {
    /// The scheme with its shared keys in `key_store`, a `Date` up to 15 minutes old and up to
    /// 60 seconds ahead. Give it keys of its own: a store shared with ARMOR-PSK would let every
    /// ARMOR-PSK key sign requests that can be replayed (with a
    /// [`FileKeyStore`](crate::key_store::FileKeyStore), `store.for_scheme("date-hmac")`).
    pub fn new(key_store: impl KeyStore) -> Self {
        DateHmac {
            key_store: Arc::new(key_store),
            max_age_secs: DEFAULT_MAX_AGE.as_secs(),
            max_skew_secs: DEFAULT_MAX_SKEW.as_secs(),
        }
    }

    /// How old a `Date` may be. Defaults to 15 minutes.
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age_secs = age.as_secs();
        self
    }

    /// How far ahead of the server's clock a `Date` may be. Defaults to 60 seconds.
    #[must_use]
    pub fn max_skew(mut self, skew: Duration) -> Self {
        self.max_skew_secs = skew.as_secs();
        self
    }

    /// Refuses a `Date` more than the maximum age behind `now` or the skew ahead of it.
    fn check_date(&self, date_unix: i64, now: i64) -> Result<(), Rejection> {
        // Compared as unsigned: a limit over i64::MAX (`Duration::MAX`) must not wrap.
        let beyond = |distance: i64, limit: u64| u64::try_from(distance).is_ok_and(|d| d > limit);
        let too_old = beyond(now.saturating_sub(date_unix), self.max_age_secs);
        let too_new = beyond(date_unix.saturating_sub(now), self.max_skew_secs);
        if too_old || too_new {
            return Err(date_diff(now));
        }
        Ok(())
    }
}

impl fmt::Debug for DateHmac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DateHmac")
            .field("max_age_secs", &self.max_age_secs)
            .field("max_skew_secs", &self.max_skew_secs)
            .finish_non_exhaustive()
    }
}

/// What a signed-Date request claims, once parsed and its `Date` in the window. `Debug`
/// leaves the tag out.
pub struct DateHmacClaim {
    api_key: String,
    tag: [u8; TAG_LEN],
    date: String,
    date_unix: i64,
}

impl fmt::Debug for DateHmacClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DateHmacClaim")
            .field("api_key", &self.api_key)
            .field("date", &self.date)
            .field("tag", &"[redacted]")
            .finish()
    }
}

fn refuse(error: DateHmacError) -> Rejection {
    Rejection::DateHmac(error)
}

/// The refusal of a `Date` that is missing, unreadable or out of bounds at `now`.
fn date_diff(now: i64) -> Rejection {
    refuse(DateHmacError::DateHeaderDiff {
        server_date: http_date(now).unwrap_or_default(),
    })
}

impl Scheme for DateHmac {
    type Claim = DateHmacClaim;

    /// A header of `name="value"` parameters, one of them the scheme's, with no scheme token
    /// before the first.
    fn recognizes(&self, headers: &HeaderMap) -> bool {
        let known = |name: &str| {
            ["algorithm", "headers", "signature", "apikey"]
                .iter()
                .any(|known| name.trim().eq_ignore_ascii_case(known))
        };
        headers.get_all(AUTHORIZATION).iter().any(|value| {
            let value = value.to_str().unwrap_or_default();
            // A scheme's header (`ARMOR-PSK k:…`, whose nonce may hold `,` and `=`) has a space
            // before its first `=`; a parameter's name has none.
            let parameters_first = value
                .split_once('=')
                .is_some_and(|(name, _)| !name.trim().contains(' '));
            parameters_first
                && value.split(',').any(|parameter| {
                    parameter
                        .split_once('=')
                        .is_some_and(|(name, _)| known(name))
                })
        })
    }

    fn check(&self, headers: &HeaderMap, now: i64) -> Result<DateHmacClaim, Rejection> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(refuse(DateHmacError::MissingParams));
        };
        let value = value
            .to_str()
            .map_err(|_| refuse(DateHmacError::MissingParams))?;
        let credential = DateHmacCredential::parse(value).map_err(refuse)?;
        // One Date: a reader downstream that takes another than the one checked would see
        // another time.
        let mut dates = headers.get_all(DATE).iter();
        let date = match (dates.next(), dates.next()) {
            (Some(date), None) => date.to_str().ok(),
            _ => None,
        }
        .ok_or_else(|| date_diff(now))?;
        let date_unix = parse_http_date(date).ok_or_else(|| date_diff(now))?;
        self.check_date(date_unix, now)?;
        Ok(DateHmacClaim {
            api_key: credential.api_key().to_owned(),
            tag: *credential.tag(),
            date: date.to_owned(),
            date_unix,
        })
    }

    fn key_id<'c>(&self, claim: &'c DateHmacClaim) -> &'c str {
        &claim.api_key
    }

    fn key_store(&self, _: &DateHmacClaim) -> &dyn KeyStore {
        &*self.key_store
    }

    fn unknown_key(&self, _: &DateHmacClaim) -> Rejection {
        refuse(DateHmacError::InvalidApiKey)
    }

    fn verify(
        &self,
        claim: &DateHmacClaim,
        secret: &Secret,
        _: &Parts,
        _: &mut VerifiedBody,
    ) -> Result<BodyForm, Rejection> {
        let credential = DateHmacCredential::from_parts(&claim.api_key, claim.tag);
        if credential.verify(secret.expose_bytes(), &claim.date) {
            Ok(BodyForm::Empty)
        } else {
            Err(refuse(DateHmacError::SignatureMismatch))
        }
    }

    /// Nothing to record (the scheme signs no nonce), but the `Date` is checked again: the
    /// verifier asks after the body, which may have taken its time.
    fn replay_record<'c>(
        &self,
        claim: &'c DateHmacClaim,
        now: i64,
    ) -> Result<Option<ReplayRecord<'c>>, Rejection> {
        self.check_date(claim.date_unix, now).map(|()| None)
    }

    fn records_replays(&self) -> bool {
        false
    }

    fn identity(&self, claim: DateHmacClaim, form: BodyForm) -> VerifiedKey {
        VerifiedKey::new(
            SCHEME_NAME,
            claim.api_key,
            String::new(),
            claim.date_unix,
            form,
        )
    }
}
