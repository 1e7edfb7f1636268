use crate::psk::BodyForm;

/// Who signed an accepted request. The verifier puts it in the request's extensions.
///
/// With the `axum` feature it is also an extractor, which answers 401 `missing_credentials`
/// when the route is not behind the verifier (so a route that forgot the layer fails closed);
/// `Option<VerifiedKey>` extracts `None` there instead.
///
/// ```
/// use armor_psk::VerifiedKey;
///
/// async fn handler(key: VerifiedKey) -> String {
///     format!("hello, {} (body form {})", key.key_id(), key.body_form())
/// }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    scheme: &'static str,
    ids: KeyAndNonce,
    timestamp: i64,
    body_form: BodyForm,
}

/// A key id and a nonce, in one allocation (the verifier makes one of these per request).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct KeyAndNonce {
    joined: String,
    key_id_len: usize,
}

impl KeyAndNonce {
    pub(crate) fn new(key_id: &str, nonce: &str) -> Self {
        let mut joined = String::with_capacity(key_id.len() + nonce.len());
        joined.push_str(key_id);
        KeyAndNonce::appending(joined, nonce)
    }

    /// `nonce` appended to `key_id`'s own buffer.
    fn appending(mut key_id: String, nonce: &str) -> Self {
        let key_id_len = key_id.len();
        key_id.push_str(nonce);
        KeyAndNonce {
            joined: key_id,
            key_id_len,
        }
    }

    pub(crate) fn key_id(&self) -> &str {
        &self.joined[..self.key_id_len]
    }

    pub(crate) fn nonce(&self) -> &str {
        &self.joined[self.key_id_len..]
    }
}

impl std::fmt::Debug for VerifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedKey")
            .field("scheme", &self.scheme)
            .field("key_id", &self.key_id())
            .field("nonce", &self.nonce())
            .field("timestamp", &self.timestamp)
            .field("body_form", &self.body_form)
            .finish()
    }
}

impl VerifiedKey {
    /// The identity a [`Scheme`](super::Scheme) reports for a request it verified: the
    /// scheme's name, the key id, the nonce (empty for a scheme without one), the request's
    /// time in Unix seconds, and the body form its signature covers.
    pub fn new(
        scheme: &'static str,
        key_id: String,
        nonce: String,
        timestamp: i64,
        body_form: BodyForm,
    ) -> Self {
        let ids = KeyAndNonce::appending(key_id, &nonce);
        VerifiedKey::with_ids(scheme, ids, timestamp, body_form)
    }

    pub(crate) fn with_ids(
        scheme: &'static str,
        ids: KeyAndNonce,
        timestamp: i64,
        body_form: BodyForm,
    ) -> Self {
        VerifiedKey {
            scheme,
            ids,
            timestamp,
            body_form,
        }
    }

    /// The scheme the request was signed with: `armor-psk` or `date-hmac`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// The API key id.
    pub fn key_id(&self) -> &str {
        self.ids.key_id()
    }

    /// The request's nonce (empty for a scheme without one).
    pub fn nonce(&self) -> &str {
        self.ids.nonce()
    }

    /// The request's timestamp (its `Date` for `date-hmac`), in Unix seconds.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The body form the signature was made with (`empty` when the scheme signs no body).
    pub fn body_form(&self) -> BodyForm {
        self.body_form
    }
}

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use http::request::Parts;

    use super::VerifiedKey;
    use crate::rejection::Rejection;

    impl<S: Send + Sync> FromRequestParts<S> for VerifiedKey {
        type Rejection = Rejection;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Rejection> {
            parts
                .extensions
                .get::<VerifiedKey>()
                .cloned()
                .ok_or_else(|| {
                    tracing::warn!(
                        path = parts.uri.path(),
                        "VerifiedKey extracted on a route without the ARMOR-PSK layer"
                    );
                    Rejection::MissingCredentials
                })
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for VerifiedKey {
        type Rejection = std::convert::Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<VerifiedKey>().cloned())
        }
    }
}
