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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    scheme: &'static str,
    key_id: String,
    nonce: String,
    timestamp: i64,
    body_form: BodyForm,
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
        VerifiedKey {
            scheme,
            key_id,
            nonce,
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
        &self.key_id
    }

    /// The request's nonce (empty for a scheme without one).
    pub fn nonce(&self) -> &str {
        &self.nonce
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
