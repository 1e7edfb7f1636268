use std::fmt;
use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION, DATE};
use http::Request;

use super::credential::signature;
use crate::clock::{http_date, Clock, SystemClock};
use crate::key_store::Secret;

/// Signs requests with the signed-Date scheme: sets `Date` to the clock's time and
/// `Authorization: algorithm="hmac-sha256",headers="date",signature="…",apikey="…"`.
///
/// ```
/// use armor_psk::date_hmac::DateHmacSigner;
///
/// let signer = DateHmacSigner::new("key-1", "kw4qSnpSwXzgiv5yxYpZZmFEd9QAeiKTQ6OuyMja")?;
/// let header = signer.authorization("Tue, 07 Jun 2011 20:51:35 GMT");
/// assert!(header.to_str()?.contains(r#"signature="UDysfR6MndUZReo07Y9r+vErn8vSxrnQ5ulit18iJ/Q=""#));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DateHmacSigner {
    api_key: Arc<str>,
    key: Secret,
    clock: Arc<dyn Clock>,
}

/// An API key the signed-Date header cannot carry: empty, or with a character that is not
/// visible ASCII, or a `"` or `,` (which end its quoted parameter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot sign: an API key must be visible ASCII characters without '\"' or ','")]
pub struct UnsendableApiKey;

/// The clock read a time no HTTP date can carry (outside the years 1 to 9999: a clock that
/// counts milliseconds, say). Holds the reading, in what the clock calls seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot sign: the clock reads {0} s since 1970, which no HTTP date can carry")]
pub struct UndatableClock(pub i64);

impl DateHmacSigner {
    /// A signer for `api_key` with the shared `key` (its UTF-8 bytes key the HMAC). Fails for
    /// an API key the header cannot carry (see [`UnsendableApiKey`]).
    pub fn new(
        api_key: impl Into<String>,
        key: impl Into<Secret>,
    ) -> Result<Self, UnsendableApiKey> {
        let api_key = api_key.into();
        let carried = !api_key.is_empty()
            && api_key
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b',');
        if !carried {
            return Err(UnsendableApiKey);
        }
        Ok(DateHmacSigner {
            api_key: api_key.into(),
            key: key.into(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Where the `Date` comes from. Defaults to [`SystemClock`].
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The `Authorization` value for a request whose `Date` header is `date`, marked sensitive.
    pub fn authorization(&self, date: &str) -> HeaderValue {
        let value = format!(
            r#"algorithm="hmac-sha256",headers="date",signature="{}",apikey="{}""#,
            signature(self.key.expose_bytes(), date),
            self.api_key
        );
        // Visible ASCII throughout (the API key was checked by `new`): the fallback is never
        // taken.
        let mut value = HeaderValue::try_from(value)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid-api-key"));
        value.set_sensitive(true);
        value
    }

    /// Sets the request's `Date` (now) and `Authorization`. Fails, leaving the request as it
    /// was, when the clock reads a time an HTTP date cannot carry.
    pub fn sign<B>(&self, request: &mut Request<B>) -> Result<(), UndatableClock> {
        let now = self.clock.now_unix();
        let date = http_date(now).ok_or(UndatableClock(now))?;
        let authorization = self.authorization(&date);
        // An IMF-fixdate is visible ASCII: the error is never taken.
        let date = HeaderValue::try_from(date).map_err(|_| UndatableClock(now))?;
        request.headers_mut().insert(DATE, date);
        request.headers_mut().insert(AUTHORIZATION, authorization);
        Ok(())
    }
}

impl fmt::Debug for DateHmacSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DateHmacSigner")
            .field("api_key", &self.api_key)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}
