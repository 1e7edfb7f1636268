use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::store::{CodeGrant, SessionRecord, SessionStoreError};
use super::{Sessions, CODE_LIFETIME_SECS, SESSION_LIFETIME_SECS};

/// Longest username a sign-in may give, in bytes.
const MAX_USERNAME_LEN: usize = 256;
/// Longest password a sign-in may give, in bytes.
const MAX_PASSWORD_LEN: usize = 1024;

/// Why an `/auth` endpoint refused a request. Answered as
/// `{"error":{"code":"…","message":"…"}}` with the status of [`code`](Self::code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthEndpointError {
    /// The body is neither JSON nor a form with the expected fields, or a sign-in's username
    /// is over 256 bytes or its password over 1,024. 400 `invalid_request`.
    #[error("the request body is not a valid {0} request")]
    InvalidRequest(&'static str),
    /// Unknown user or wrong password (one answer for both). 401 `invalid_credentials`.
    #[error("invalid username or password")]
    InvalidCredentials,
    /// Too many failed sign-ins for the username. 429 `too_many_attempts`, with `Retry-After`.
    #[error("too many failed sign-ins for this username; retry in {retry_after_secs} seconds")]
    TooManyAttempts {
        /// Seconds until the username may try again.
        retry_after_secs: i64,
    },
    /// `grant_type` is not `authorization_code`. 400 `unsupported_grant_type`.
    #[error("grant_type must be \"authorization_code\"")]
    UnsupportedGrantType,
    /// The code is unknown, already redeemed, or older than two minutes. 401 `invalid_grant`.
    #[error("the code is unknown, already used or expired")]
    InvalidGrant,
    /// The token is unknown or expired. 401 `invalid_token`.
    #[error("the access token is unknown or expired")]
    InvalidToken,
    /// The session store did not answer. 503 `session_store_unavailable`.
    #[error("the session store is unavailable")]
    StoreUnavailable,
}

impl AuthEndpointError {
    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthEndpointError::InvalidRequest(_) => "invalid_request",
            AuthEndpointError::InvalidCredentials => "invalid_credentials",
            AuthEndpointError::TooManyAttempts { .. } => "too_many_attempts",
            AuthEndpointError::UnsupportedGrantType => "unsupported_grant_type",
            AuthEndpointError::InvalidGrant => "invalid_grant",
            AuthEndpointError::InvalidToken => "invalid_token",
            AuthEndpointError::StoreUnavailable => "session_store_unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthEndpointError::InvalidRequest(_) | AuthEndpointError::UnsupportedGrantType => {
                StatusCode::BAD_REQUEST
            }
            AuthEndpointError::InvalidCredentials
            | AuthEndpointError::InvalidGrant
            | AuthEndpointError::InvalidToken => StatusCode::UNAUTHORIZED,
            AuthEndpointError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthEndpointError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<SessionStoreError> for AuthEndpointError {
    fn from(error: SessionStoreError) -> Self {
        tracing::warn!(%error, "session store failed");
        AuthEndpointError::StoreUnavailable
    }
}

impl IntoResponse for AuthEndpointError {
    fn into_response(self) -> Response {
        let body = crate::rejection::error_body(self.code(), &self.to_string());
        let mut response = (self.status(), body).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            AuthEndpointError::TooManyAttempts { retry_after_secs } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs.max(1)));
            }
            AuthEndpointError::InvalidToken => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("FH-AUTH"));
            }
            _ => {}
        }
        response
    }
}

impl Sessions {
    /// The `/auth` endpoints: `POST /auth/authorize`, `POST /auth/token` and
    /// `POST /auth/token/reissue`. They take JSON or form-encoded bodies.
    pub fn router<S>(&self) -> Router<S> {
        Router::new()
            .route("/auth/authorize", post(authorize))
            .route("/auth/token", post(token))
            .route("/auth/token/reissue", post(reissue))
            .with_state(self.clone())
    }
}

#[derive(Deserialize)]
struct AuthorizeRequest {
    #[serde(alias = "userName")]
    username: String,
    password: Zeroizing<String>,
}

/// Both fields required: with optional fields, a JSON body labelled as a form (`curl -d`)
/// would parse as an empty form and never be read as JSON.
#[derive(Deserialize)]
struct TokenRequest {
    code: String,
    grant_type: String,
}

#[derive(Deserialize)]
struct ReissueRequest {
    token: String,
}

/// JSON or a form (public clients send both). The declared `Content-Type` is tried first,
/// then the other: `curl -d '{...}'` labels JSON as a form.
fn parse_body<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
    what: &'static str,
) -> Result<T, AuthEndpointError> {
    let declared_form = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let json = || serde_json::from_slice(body).ok();
    let form = || serde_urlencoded::from_bytes(body).ok();
    let parsed = if declared_form {
        form().or_else(json)
    } else {
        json().or_else(form)
    };
    parsed.ok_or(AuthEndpointError::InvalidRequest(what))
}

async fn authorize(
    State(sessions): State<Sessions>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AuthEndpointError> {
    let request: AuthorizeRequest = parse_body(&headers, &body, "sign-in")?;
    drop(body);
    // Before the attempt is counted: the throttle keeps each username it counts.
    if request.username.len() > MAX_USERNAME_LEN || request.password.len() > MAX_PASSWORD_LEN {
        return Err(AuthEndpointError::InvalidRequest("sign-in"));
    }
    let throttle = &sessions.inner.throttle;
    let now = sessions.now();
    // Usernames are logged escaped (`?`): one with a line break would forge a log line.
    if let Err(retry_after_secs) = throttle.begin_attempt(&request.username, now) {
        tracing::info!(username = ?request.username, "sign-in throttled");
        return Err(AuthEndpointError::TooManyAttempts { retry_after_secs });
    }
    let user = sessions.users().get(&request.username).cloned();
    let checks = &sessions.inner.password_checks;
    let verified = checks.check(user.clone(), request.password).await;
    let Some(user) = user.filter(|_| verified) else {
        tracing::info!(username = ?request.username, "sign-in refused");
        return Err(AuthEndpointError::InvalidCredentials);
    };
    throttle.clear(&request.username);
    let code = STANDARD.encode(rand::random::<[u8; 32]>());
    let grant = CodeGrant {
        username: user.username().to_owned(),
        password_fingerprint: user.password_fingerprint().to_owned(),
        expires_at: now + CODE_LIFETIME_SECS,
    };
    sessions.inner.store.insert_code(&code, grant, now).await?;
    Ok(Json(
        json!({ "redirect_uri": null, "code": code, "success": true }),
    ))
}

async fn token(
    State(sessions): State<Sessions>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AuthEndpointError> {
    let request: TokenRequest = parse_body(&headers, &body, "token")?;
    if request.grant_type != "authorization_code" {
        return Err(AuthEndpointError::UnsupportedGrantType);
    }
    let now = sessions.now();
    let grant = sessions
        .inner
        .store
        .redeem_code(&request.code, now)
        .await?
        .ok_or(AuthEndpointError::InvalidGrant)?;
    let users = sessions.users();
    let user = users
        .signed_in(&grant.username, &grant.password_fingerprint)
        .ok_or(AuthEndpointError::InvalidGrant)?;
    // A UUID's 32 hex digits: the form a public PowerShell client checks for.
    let access_token = uuid::Uuid::new_v4().simple().to_string();
    let expires_at = now + SESSION_LIFETIME_SECS;
    let record = SessionRecord {
        username: user.username().to_owned(),
        password_fingerprint: user.password_fingerprint().to_owned(),
        expires_at,
    };
    sessions
        .inner
        .store
        .insert_session(&access_token, record, now)
        .await?;
    let claims = json!({
        "sub": user.username(),
        "accounts": user.accounts(),
        "iat": now,
        "exp": expires_at,
    });
    let id_token = STANDARD.encode(claims.to_string());
    Ok(Json(token_answer(&access_token, Some(id_token))))
}

async fn reissue(
    State(sessions): State<Sessions>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, AuthEndpointError> {
    let request: ReissueRequest = parse_body(&headers, &body, "reissue")?;
    let now = sessions.now();
    let record = sessions
        .inner
        .store
        .extend_session(&request.token, now + SESSION_LIFETIME_SECS, now)
        .await?
        .ok_or(AuthEndpointError::InvalidToken)?;
    // A session whose user is gone or has a new password is not reissued (extending it in the
    // store does no harm: every use checks the password again).
    let users = sessions.users();
    if users
        .signed_in(&record.username, &record.password_fingerprint)
        .is_none()
    {
        return Err(AuthEndpointError::InvalidToken);
    }
    Ok(Json(token_answer(&request.token, None)))
}

fn token_answer(access_token: &str, id_token: Option<String>) -> Value {
    json!({
        "access_token": access_token,
        "id_token": id_token,
        "expires_in": SESSION_LIFETIME_SECS / 60,
        "token_type": "Bearer",
    })
}
