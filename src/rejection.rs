//! Why a request was refused, and the response it gets.
//!
//! Every refusal is a [`Rejection`]. It becomes a response (never an `Err` to the server, which
//! would close the connection without an answer) with its status and a JSON body:
//!
//! ```json
//! {"error":{"code":"bad_signature","message":"the signature does not match the request"}}
//! ```
//!
//! The `Rejection` itself is also put in the response's extensions, so outer layers (logging,
//! metrics) can read it. The response can be replaced with [`OnRejection`].

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, DATE, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use crate::clock::http_date;
use crate::psk::MalformedCredential;

/// The session scheme's name, as its `WWW-Authenticate` challenge gives it.
pub(crate) const FH_AUTH: &str = "FH-AUTH";

/// Why the verifier refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No `Authorization: ARMOR-PSK …` header. 401 `missing_credentials`.
    #[error("the request carries no ARMOR-PSK credentials")]
    MissingCredentials,
    /// The header is there but is not a well-formed credential. 400 `malformed_credentials`.
    #[error("malformed ARMOR-PSK credentials: {0}")]
    MalformedCredentials(MalformedCredential),
    /// No active key has this id. 401 `unknown_key`.
    #[error("unknown API key")]
    UnknownKey,
    /// The MAC matches no accepted body form. 401 `bad_signature`.
    #[error("the signature does not match the request")]
    BadSignature,
    /// The timestamp is too far from the server's clock. 401 `timestamp_out_of_window`.
    #[error(
        "the timestamp is more than {window_secs} seconds from the server's time, which is \
         {server_time} ({})",
        http_date(*server_time).unwrap_or_default()
    )]
    TimestampOutOfWindow {
        /// The server's Unix time when it checked.
        server_time: i64,
        /// The allowed distance, in seconds, either way.
        window_secs: u64,
    },
    /// An accepted request inside the window had the same MAC, or the same key id and nonce.
    /// 401 `replayed_nonce`.
    #[error("a request with this nonce or signature was already accepted")]
    ReplayedNonce,
    /// The body is longer than the limit. 413 `body_too_large`.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body could not be read to its end (the client went away, or sent less than its
    /// `Content-Length`). 400 `body_read_failed`.
    #[error("the request body could not be read")]
    BodyReadFailed,
    /// The body did not arrive within the body-read timeout. 408 `body_timeout`.
    #[error("the request body did not arrive within the {timeout_secs}-second timeout")]
    BodyTimeout {
        /// The timeout in seconds, rounded up to a whole one (a 300 ms timeout is 1).
        timeout_secs: u64,
    },
    /// The key store did not answer (it failed, timed out, or panicked).
    /// 503 `key_store_unavailable`.
    #[error("the key store is unavailable")]
    KeyStoreUnavailable,
    /// The replay store did not answer (it failed, timed out, or panicked).
    /// 503 `nonce_store_unavailable`.
    #[error("the nonce store is unavailable")]
    NonceStoreUnavailable,
    /// The replay store is at capacity. 503 `nonce_store_full`.
    #[error("the nonce store is full")]
    NonceStoreFull,
    /// An API key called a route that only a signed-in user may call (see
    /// [`RoutePolicy`](crate::policy::RoutePolicy)). 403 `forbidden_for_api_key`.
    #[error("Permission Denied to requested resource.")]
    ForbiddenForApiKey,
    /// An FH-AUTH access token is unknown, malformed or expired. 401 `invalid_token`.
    #[error("the FH-AUTH access token is unknown or expired")]
    InvalidToken,
    /// `X-Account-Context` names an account the caller may not act on. 403 `forbidden_account`.
    #[error("the account in X-Account-Context is not one of the caller's accounts")]
    ForbiddenAccount,
    /// `X-Account-Context` is not an integer. 400 `invalid_account_context`.
    #[error("X-Account-Context must be an integer account id")]
    InvalidAccountContext,
    /// The FH-AUTH session store did not answer. 503 `session_store_unavailable`.
    #[error("the session store is unavailable")]
    SessionStoreUnavailable,
    /// A signed-Date request was refused: 400 with the vendor's code and its body shape,
    /// `{"status":400,"code":"…","message":"…"}`.
    #[error("{0}")]
    DateHmac(crate::date_hmac::DateHmacError),
}

impl Rejection {
    /// The stable, machine-readable code sent in the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::MissingCredentials => "missing_credentials",
            Rejection::MalformedCredentials(_) => "malformed_credentials",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::TimestampOutOfWindow { .. } => "timestamp_out_of_window",
            Rejection::ReplayedNonce => "replayed_nonce",
            Rejection::BodyTooLarge { .. } => "body_too_large",
            Rejection::BodyReadFailed => "body_read_failed",
            Rejection::BodyTimeout { .. } => "body_timeout",
            Rejection::KeyStoreUnavailable => "key_store_unavailable",
            Rejection::NonceStoreUnavailable => "nonce_store_unavailable",
            Rejection::NonceStoreFull => "nonce_store_full",
            Rejection::ForbiddenForApiKey => "forbidden_for_api_key",
            Rejection::InvalidToken => "invalid_token",
            Rejection::ForbiddenAccount => "forbidden_account",
            Rejection::InvalidAccountContext => "invalid_account_context",
            Rejection::SessionStoreUnavailable => "session_store_unavailable",
            Rejection::DateHmac(error) => error.code(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::MissingCredentials
            | Rejection::UnknownKey
            | Rejection::BadSignature
            | Rejection::TimestampOutOfWindow { .. }
            | Rejection::ReplayedNonce
            | Rejection::InvalidToken => StatusCode::UNAUTHORIZED,
            Rejection::MalformedCredentials(_)
            | Rejection::BodyReadFailed
            | Rejection::InvalidAccountContext
            | Rejection::DateHmac(_) => StatusCode::BAD_REQUEST,
            Rejection::ForbiddenForApiKey | Rejection::ForbiddenAccount => StatusCode::FORBIDDEN,
            Rejection::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Rejection::KeyStoreUnavailable
            | Rejection::NonceStoreUnavailable
            | Rejection::NonceStoreFull
            | Rejection::SessionStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` challenge the response carries: `ARMOR-PSK` for the 401s and the
    /// 400 for malformed credentials, `FH-AUTH` for an invalid session token.
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Rejection::InvalidToken => Some(FH_AUTH),
            Rejection::MalformedCredentials(_) => Some(crate::psk::SCHEME),
            _ if self.status() == StatusCode::UNAUTHORIZED => Some(crate::psk::SCHEME),
            _ => None,
        }
    }

    /// The JSON body: `{"error":{"code":"…","message":"…"}}`, or for the signed-Date scheme
    /// the vendor's `{"status":400,"code":"…","message":"…"}`.
    pub fn json_body(&self) -> Bytes {
        if let Rejection::DateHmac(_) = self {
            let body = serde_json::json!({
                "status": self.status().as_u16(),
                "code": self.code(),
                "message": self.to_string(),
            });
            return Bytes::from(body.to_string());
        }
        error_body(self.code(), &self.to_string())
    }

    /// The default response: status, JSON body, the challenge where it applies, and for
    /// `timestamp_out_of_window` a `Date` header with the server's time.
    pub fn to_response(&self) -> Response<Bytes> {
        let mut response = Response::new(self.json_body());
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(challenge) = self.challenge() {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Rejection::TimestampOutOfWindow { server_time, .. } = self {
            if let Some(date) = http_date(*server_time).and_then(|d| HeaderValue::try_from(d).ok())
            {
                headers.insert(DATE, date);
            }
        }
        response
    }
}

/// The crate's error body, `{"error":{"code":"…","message":"…"}}`.
pub(crate) fn error_body(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    Bytes::from(body.to_string())
}

/// Builds the response for a refused request, in place of [`Rejection::to_response`].
///
/// Implemented for closures:
///
/// ```
/// use armor_psk::{key_store::MemoryKeyStore, Rejection, VerifyPskLayer};
/// use bytes::Bytes;
///
/// // Armor's own error shape, {"Message": "..."}.
/// let layer = VerifyPskLayer::new(MemoryKeyStore::default()).on_rejection(|rejection: &Rejection| {
///     let mut response = rejection.to_response();
///     *response.body_mut() = Bytes::from(
///         serde_json::json!({ "Message": rejection.to_string() }).to_string(),
///     );
///     response
/// });
/// ```
pub trait OnRejection: Send + Sync + 'static {
    /// The response for `rejection`. The rejection is added to its extensions afterwards.
    fn on_rejection(&self, rejection: &Rejection) -> Response<Bytes>;
}

impl<F> OnRejection for F
where
    F: Fn(&Rejection) -> Response<Bytes> + Send + Sync + 'static,
{
    fn on_rejection(&self, rejection: &Rejection) -> Response<Bytes> {
        self(rejection)
    }
}

/// The response `on_rejection` builds, with the rejection in its extensions.
pub(crate) fn respond<B: From<Bytes>>(
    on_rejection: &dyn OnRejection,
    rejection: Rejection,
) -> Response<B> {
    tracing::debug!(code = rejection.code(), "request refused");
    let mut response = on_rejection.on_rejection(&rejection).map(B::from);
    response.extensions_mut().insert(rejection);
    response
}

/// The default [`OnRejection`]: [`Rejection::to_response`].
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonRejection;

impl OnRejection for JsonRejection {
    fn on_rejection(&self, rejection: &Rejection) -> Response<Bytes> {
        rejection.to_response()
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for Rejection {
    fn into_response(self) -> axum::response::Response {
        let mut response = self.to_response().map(axum::body::Body::from);
        response.extensions_mut().insert(self);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status_code_and_challenge() {
        use Rejection::*;
        let cases = [
            (MissingCredentials, 401, "missing_credentials", true),
            (
                MalformedCredentials(MalformedCredential::FieldCount),
                400,
                "malformed_credentials",
                true,
            ),
            (UnknownKey, 401, "unknown_key", true),
            (BadSignature, 401, "bad_signature", true),
            (
                TimestampOutOfWindow {
                    server_time: 0,
                    window_secs: 300,
                },
                401,
                "timestamp_out_of_window",
                true,
            ),
            (ReplayedNonce, 401, "replayed_nonce", true),
            (BodyTooLarge { limit: 1 }, 413, "body_too_large", false),
            (BodyReadFailed, 400, "body_read_failed", false),
            (BodyTimeout { timeout_secs: 10 }, 408, "body_timeout", false),
            (KeyStoreUnavailable, 503, "key_store_unavailable", false),
            (NonceStoreUnavailable, 503, "nonce_store_unavailable", false),
            (NonceStoreFull, 503, "nonce_store_full", false),
            (ForbiddenForApiKey, 403, "forbidden_for_api_key", false),
            (InvalidToken, 401, "invalid_token", true),
            (ForbiddenAccount, 403, "forbidden_account", false),
            (InvalidAccountContext, 400, "invalid_account_context", false),
            (
                SessionStoreUnavailable,
                503,
                "session_store_unavailable",
                false,
            ),
        ];
        for (rejection, status, code, challenge) in cases {
            let response = rejection.to_response();
            assert_eq!(response.status().as_u16(), status, "{code}");
            let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
            assert_eq!(body["error"]["code"], code);
            assert_eq!(body["error"]["message"], rejection.to_string());
            assert_eq!(
                response.headers().contains_key(WWW_AUTHENTICATE),
                challenge,
                "{code}"
            );
            assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        }
    }

    #[test]
    fn out_of_window_tells_the_server_time() {
        let rejection = Rejection::TimestampOutOfWindow {
            server_time: 1_307_479_895,
            window_secs: 300,
        };
        let response = rejection.to_response();
        assert_eq!(response.headers()[DATE], "Tue, 07 Jun 2011 20:51:35 GMT");
        let message = rejection.to_string();
        assert!(message.contains("1307479895"), "{message}");
        assert!(
            message.contains("Tue, 07 Jun 2011 20:51:35 GMT"),
            "{message}"
        );
    }
}
