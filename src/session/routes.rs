use axum::body::Body;
use axum::extract::State;
use axum::http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::store::{CodeGrant, SessionRecord, SessionStoreError};
use super::{Sessions, CODE_LIFETIME_SECS, SESSION_LIFETIME_SECS};
use crate::rejection::{Rejection, FH_AUTH};
use crate::verify::{read_body, DEFAULT_BODY_TIMEOUT};

/// Longest username a sign-in may give, in bytes.
pub const MAX_USERNAME_LEN: usize = 256;

/// Whether a sign-in may give `username`: 1 to [`MAX_USERNAME_LEN`] bytes. A user whose name
/// does not fit can never sign in.
///
/// ```
/// use armor_psk::session::{username_fits, MAX_USERNAME_LEN};
///
/// assert!(username_fits("ann@example.com"));
/// assert!(!username_fits(""));
/// assert!(!username_fits(&"a".repeat(MAX_USERNAME_LEN + 1)));
/// ```
pub fn username_fits(username: &str) -> bool {
    (1..=MAX_USERNAME_LEN).contains(&username.len())
}
/// Longest password a sign-in may give, in bytes (`armor-psk hash-password` refuses longer).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// The most an `/auth` request body may hold: far more than a username and password, a code or
/// a token take in any encoding.
pub const MAX_AUTH_BODY: usize = 16 * 1024;

/// Why an `/auth` endpoint refused a request. Answered as
/// `{"error":{"code":"…","message":"…"}}` with the status of [`code`](Self::code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthEndpointError {
    /// The body is neither JSON nor a form with the expected fields, a sign-in's username is
    /// empty or over 256 bytes or its password over 1,024, or a token request has
    /// `grant_type=authorization_code` and no code, or neither field. 400 `invalid_request`.
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
    /// A token request's `grant_type` is missing (while it has a `code`) or not
    /// `authorization_code`. 400 `unsupported_grant_type`.
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
    /// The body passed [`MAX_AUTH_BODY`]. 413 `body_too_large`.
    #[error("the request body is larger than {MAX_AUTH_BODY} bytes")]
    BodyTooLarge,
    /// The body did not arrive within the verifier's default body timeout
    /// ([`DEFAULT_BODY_TIMEOUT`](crate::verify::DEFAULT_BODY_TIMEOUT), 10 s). 408
    /// `body_timeout`.
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// The body could not be read (the client went away mid-body). 400 `body_read_failed`.
    #[error("the request body could not be read")]
    BodyReadFailed,
    /// An `/auth` endpoint was called with another method than `POST`. 405
    /// `method_not_allowed`, with `Allow: POST`.
    #[error("this endpoint takes POST only")]
    MethodNotAllowed,
    /// Too many sign-ins are already waiting for a password check (see
    /// [`SessionsBuilder::max_waiting_sign_ins`](super::SessionsBuilder::max_waiting_sign_ins)).
    /// 503 `temporarily_unavailable`, with `Retry-After: 1`.
    #[error("too many sign-ins are waiting; retry in a second")]
    TemporarilyUnavailable,
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
            AuthEndpointError::TemporarilyUnavailable => "temporarily_unavailable",
            AuthEndpointError::BodyTooLarge => "body_too_large",
            AuthEndpointError::BodyTimeout => "body_timeout",
            AuthEndpointError::BodyReadFailed => "body_read_failed",
            AuthEndpointError::MethodNotAllowed => "method_not_allowed",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthEndpointError::InvalidRequest(_)
            | AuthEndpointError::UnsupportedGrantType
            | AuthEndpointError::BodyReadFailed => StatusCode::BAD_REQUEST,
            AuthEndpointError::InvalidCredentials
            | AuthEndpointError::InvalidGrant
            | AuthEndpointError::InvalidToken => StatusCode::UNAUTHORIZED,
            AuthEndpointError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            AuthEndpointError::StoreUnavailable | AuthEndpointError::TemporarilyUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AuthEndpointError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AuthEndpointError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            AuthEndpointError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
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
            AuthEndpointError::TemporarilyUnavailable => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            AuthEndpointError::InvalidToken => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(FH_AUTH));
            }
            AuthEndpointError::MethodNotAllowed => {
                headers.insert(ALLOW, HeaderValue::from_static("POST"));
            }
            _ => {}
        }
        response
    }
}

impl Sessions {
    /// The `/auth` endpoints: `POST /auth/authorize`, `POST /auth/token` and
    /// `POST /auth/token/reissue`. They take JSON or form-encoded bodies; another method is
    /// 405 `method_not_allowed`.
    pub fn router<S>(&self) -> Router<S> {
        Router::new()
            .route("/auth/authorize", post(authorize))
            .route("/auth/token", post(token))
            .route("/auth/token/reissue", post(reissue))
            .method_not_allowed_fallback(|| async { AuthEndpointError::MethodNotAllowed })
            .with_state(self.clone())
    }
}

#[derive(Deserialize)]
struct AuthorizeRequest {
    #[serde(alias = "userName")]
    username: String,
    password: Zeroizing<String>,
}

/// Both fields optional, so that a request that lacks one is told which: `grant_type` first
/// (a client asking for another grant sends no code).
#[derive(Deserialize)]
struct TokenRequest {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    grant_type: Option<String>,
}

#[derive(Deserialize)]
struct ReissueRequest {
    token: String,
}

/// Reads an `/auth` request's body as the verifier reads a signed request's, under
/// [`MAX_AUTH_BODY`] (a `Content-Length` over it is refused before a byte is read) and a fixed
/// timeout, the verifier's default ([`DEFAULT_BODY_TIMEOUT`]); then parses it as JSON or a
/// form (public clients send both), told apart by the body itself rather than its declared
/// `Content-Type`: `curl -d '{...}'` labels JSON as a form, and a form parser reads JSON as
/// one field of an unknown name. JSON is an object or array (after a byte-order mark, if
/// any). The body's copy made here (it holds a sign-in's password) is zeroed when dropped; the
/// buffers it was read into are not.
async fn read_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
    what: &'static str,
) -> Result<T, AuthEndpointError> {
    let body = match read_body(headers, body, MAX_AUTH_BODY, DEFAULT_BODY_TIMEOUT).await {
        Ok(mut body) => Zeroizing::new(body.chunks().concat()),
        Err(Rejection::BodyTooLarge { .. }) => return Err(AuthEndpointError::BodyTooLarge),
        Err(Rejection::BodyTimeout { .. }) => return Err(AuthEndpointError::BodyTimeout),
        Err(_) => return Err(AuthEndpointError::BodyReadFailed),
    };
    let text = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body);
    let parsed = if matches!(text.trim_ascii_start().first(), Some(b'{' | b'[')) {
        serde_json::from_slice(text).ok()
    } else {
        serde_urlencoded::from_bytes(text).ok()
    };
    parsed.ok_or(AuthEndpointError::InvalidRequest(what))
}

async fn authorize(
    State(sessions): State<Sessions>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, AuthEndpointError> {
    let request: AuthorizeRequest = read_request(&headers, body, "sign-in").await?;
    // Before the attempt is counted: the throttle keeps each username it counts.
    if !username_fits(&request.username) || request.password.len() > MAX_PASSWORD_LEN {
        return Err(AuthEndpointError::InvalidRequest("sign-in"));
    }
    // A place in the queue for a password check before the attempt is counted: a sign-in
    // refused here costs the username nothing, and hashes nothing. (So in a flood a throttled
    // username is answered 503, not 429: either way nothing of it is checked.)
    let Ok(place) = sessions.inner.password_checks.enter() else {
        tracing::warn!("sign-in refused: too many sign-ins waiting for a password check");
        return Err(AuthEndpointError::TemporarilyUnavailable);
    };
    let throttle = &sessions.inner.throttle;
    let now = sessions.now();
    // Usernames are logged escaped (`?`): one with a line break would forge a log line.
    let attempt = match throttle.begin_attempt(&request.username, now) {
        Ok(attempt) => attempt,
        Err(retry_after_secs) => {
            tracing::info!(username = ?request.username, "sign-in throttled");
            return Err(AuthEndpointError::TooManyAttempts { retry_after_secs });
        }
    };
    let (user, stand_in) = {
        let users = sessions.users();
        (users.get(&request.username).cloned(), users.stand_in())
    };
    let verified = place.check(user.clone(), stand_in, request.password).await;
    let Some(user) = user.filter(|_| verified) else {
        tracing::info!(username = ?request.username, "sign-in refused");
        return Err(AuthEndpointError::InvalidCredentials);
    };
    throttle.succeeded(attempt);
    // URL-safe: a client that puts the code in a form without encoding it (`curl -d
    // "code=…"`) would send a `+` as a space.
    let code = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let grant = CodeGrant {
        username: user.username().to_owned(),
        password_fingerprint: user.password_fingerprint().to_owned(),
        expires_at: now + CODE_LIFETIME_SECS,
    };
    let (store, key) = sessions.inner.store.keyed(&code);
    store.insert_code(&key, grant, now).await?;
    Ok(Json(
        json!({ "redirect_uri": null, "code": code, "success": true }),
    ))
}

async fn token(
    State(sessions): State<Sessions>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, AuthEndpointError> {
    let request: TokenRequest = read_request(&headers, body, "token").await?;
    if request.code.is_none() && request.grant_type.is_none() {
        // Not a token request at all (an empty body, or another's fields).
        return Err(AuthEndpointError::InvalidRequest("token"));
    }
    if request.grant_type.as_deref() != Some("authorization_code") {
        return Err(AuthEndpointError::UnsupportedGrantType);
    }
    let code = request
        .code
        .ok_or(AuthEndpointError::InvalidRequest("token"))?;
    let now = sessions.now();
    let (store, key) = sessions.inner.store.keyed(&code);
    let grant = store
        .redeem_code(&key, now)
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
    let (store, key) = sessions.inner.store.keyed(&access_token);
    store.insert_session(&key, record, now).await?;
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
    body: Body,
) -> Result<Json<Value>, AuthEndpointError> {
    let request: ReissueRequest = read_request(&headers, body, "reissue").await?;
    let now = sessions.now();
    // One digest of the token for both calls.
    let (store, key) = sessions.inner.store.keyed(&request.token);
    let record = store
        .session(&key, now)
        .await?
        .ok_or(AuthEndpointError::InvalidToken)?;
    // A session whose user is gone or has a new password is not reissued, nor kept alive in the
    // store: it ends when it expires, whatever a later reload brings back.
    let users = sessions.users();
    if users
        .signed_in(&record.username, &record.password_fingerprint)
        .is_none()
    {
        return Err(AuthEndpointError::InvalidToken);
    }
    store
        .extend_session(&key, now + SESSION_LIFETIME_SECS, now)
        .await?
        .ok_or(AuthEndpointError::InvalidToken)?;
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

#[cfg(test)]
mod tests {
    //! The queue of sign-ins waiting for a password check, with the turns held by the test so
    //! that sign-ins wait exactly where a flood would leave them.

    use std::io::{Read, Seek, SeekFrom};
    use std::sync::Arc;
    use std::time::Duration;

    use argon2::password_hash::rand_core::OsRng;
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tokio::sync::OwnedSemaphorePermit;
    use tokio::task::JoinHandle;
    use tower::ServiceExt;

    use super::*;
    use crate::session::User;

    const USER: &str = "ann@example.com";
    const PASSWORD: &str = "correct horse";

    /// Sessions with one user, at most `max_waiting` sign-ins waiting, and `max_failures`.
    fn sessions(max_waiting: usize, max_failures: u32) -> Sessions {
        // A cheap hash: these tests are about the queue, not argon2's cost.
        let params = Params::new(8, 1, 1, None).unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let hash = argon2.hash_password(PASSWORD.as_bytes(), &salt).unwrap();
        let user = User::new(USER, hash.to_string(), vec![42]).unwrap();
        Sessions::builder([user].into_iter().collect())
            .throttle(max_failures, 900)
            .max_waiting_sign_ins(max_waiting)
            .build()
    }

    /// Every turn for a password check, until dropped: sign-ins then wait.
    async fn hold_turns(sessions: &Sessions) -> OwnedSemaphorePermit {
        let turns = sessions.inner.password_checks.turns();
        let all = u32::try_from(turns.available_permits()).unwrap();
        assert!(all >= 1);
        turns.acquire_many_owned(all).await.unwrap()
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Value,
    }

    /// A sign-in through the router, answered within 10 s (only a broken queue takes longer).
    async fn sign_in(sessions: &Sessions, username: &str, password: &str) -> Answer {
        let request = Request::post("/auth/authorize")
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({ "username": username, "password": password }).to_string(),
            ))
            .unwrap();
        let router: Router = sessions.router();
        let response = tokio::time::timeout(Duration::from_secs(10), router.oneshot(request))
            .await
            .expect("the sign-in was answered")
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A sign-in on its own task (the test's runtime has one thread: it runs when the test
    /// yields).
    fn spawn_sign_in(sessions: &Sessions, username: &str) -> JoinHandle<StatusCode> {
        let (sessions, username) = (sessions.clone(), username.to_owned());
        tokio::spawn(async move { sign_in(&sessions, &username, "wrong").await.status })
    }

    /// Yields until exactly `count` sign-ins wait for a turn.
    async fn until_waiting(sessions: &Sessions, count: usize) {
        let checks = &sessions.inner.password_checks;
        for _ in 0..10_000 {
            if checks.waiting() == count {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{} sign-ins waiting, not {count}", checks.waiting());
    }

    /// Two sign-ins waiting, as a flood of wrong ones (random usernames) would leave them.
    async fn fill_queue(sessions: &Sessions) -> Vec<JoinHandle<StatusCode>> {
        let flood = vec![
            spawn_sign_in(sessions, "flood-1@example.com"),
            spawn_sign_in(sessions, "flood-2@example.com"),
        ];
        until_waiting(sessions, 2).await;
        flood
    }

    /// Gives the turns back, and waits for the waiting (wrong) sign-ins to be refused.
    async fn release(turns: OwnedSemaphorePermit, flood: Vec<JoinHandle<StatusCode>>) {
        drop(turns);
        for sign_in in flood {
            assert_eq!(sign_in.await.unwrap(), StatusCode::UNAUTHORIZED);
        }
    }

    /// Sessions (two places in the queue, `max_failures`) with every turn held, and the two
    /// sign-ins waiting in the queue.
    async fn flooded(
        max_failures: u32,
    ) -> (Sessions, OwnedSemaphorePermit, Vec<JoinHandle<StatusCode>>) {
        let sessions = sessions(2, max_failures);
        let turns = hold_turns(&sessions).await;
        let flood = fill_queue(&sessions).await;
        (sessions, turns, flood)
    }

    fn assert_temporarily_unavailable(answer: &Answer) {
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers[RETRY_AFTER], "1");
        assert_eq!(answer.headers[CONTENT_TYPE], "application/json");
        assert_eq!(answer.body["error"]["code"], "temporarily_unavailable");
        assert!(answer.body["error"]["message"].is_string());
    }

    #[tokio::test]
    async fn sign_in_past_a_full_queue_is_answered_503_at_once() {
        let (sessions, turns, flood) = flooded(5).await;

        let answer = sign_in(&sessions, "flood-3@example.com", "wrong").await;
        assert_temporarily_unavailable(&answer);
        let answer = sign_in(&sessions, USER, PASSWORD).await;
        assert_temporarily_unavailable(&answer);
        assert_eq!(sessions.inner.password_checks.waiting(), 2);

        release(turns, flood).await;
    }

    #[tokio::test]
    async fn sign_in_with_a_free_turn_does_not_wait_in_the_queue() {
        // No place in the queue at all: only a sign-in that finds a turn free goes on.
        let sessions = sessions(0, 5);
        assert_eq!(
            sign_in(&sessions, USER, PASSWORD).await.status,
            StatusCode::OK
        );
        let turns = hold_turns(&sessions).await;
        assert_temporarily_unavailable(&sign_in(&sessions, USER, PASSWORD).await);
        drop(turns);
        assert_eq!(
            sign_in(&sessions, USER, PASSWORD).await.status,
            StatusCode::OK
        );
        assert_eq!(sessions.inner.password_checks.waiting(), 0);
    }

    #[tokio::test]
    async fn sign_in_succeeds_once_the_queue_drains() {
        let (sessions, turns, flood) = flooded(5).await;
        assert_temporarily_unavailable(&sign_in(&sessions, USER, PASSWORD).await);

        release(turns, flood).await;
        assert_eq!(sessions.inner.password_checks.waiting(), 0);
        let answer = sign_in(&sessions, USER, PASSWORD).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body["code"].is_string());
    }

    #[tokio::test]
    async fn sign_ins_dropped_while_waiting_give_back_their_places() {
        let (sessions, turns, flood) = flooded(5).await;
        for sign_in in flood {
            // The client went away: the request's future is dropped while it waits.
            sign_in.abort();
            assert!(sign_in.await.unwrap_err().is_cancelled());
        }
        assert_eq!(sessions.inner.password_checks.waiting(), 0);

        // Both places can be taken again, and no more.
        let flood = fill_queue(&sessions).await;
        assert_temporarily_unavailable(&sign_in(&sessions, USER, PASSWORD).await);
        release(turns, flood).await;
        assert_eq!(sessions.inner.password_checks.waiting(), 0);
    }

    #[tokio::test]
    async fn sign_in_refused_503_is_not_counted_by_the_throttle() {
        // One failure allowed: a second counted attempt would be 429.
        let (sessions, turns, flood) = flooded(1).await;
        for _ in 0..3 {
            assert_temporarily_unavailable(&sign_in(&sessions, USER, "wrong").await);
        }

        release(turns, flood).await;
        let answer = sign_in(&sessions, USER, PASSWORD).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }

    #[tokio::test]
    async fn sign_in_refused_503_is_logged_once_at_warn_without_the_username() {
        // A file, as `&File` writes: tracing-subscriber then needs no writer of ours.
        let captured = Arc::new(tempfile::tempfile().unwrap());
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(Arc::clone(&captured))
            .finish();
        // The runtime has one thread: the spawned sign-ins log here too. Other tests hit the
        // same callsite on other threads, without a subscriber; while one dispatcher is
        // registered, tracing asks only the registering thread's default, and a callsite first
        // hit there would be cached as never enabled. With a second, idle dispatcher every
        // registration asks ours too; the rebuild covers a callsite registered before.
        let _idle = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let _default = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();

        let (sessions, turns, flood) = flooded(5).await;
        assert_temporarily_unavailable(&sign_in(&sessions, USER, PASSWORD).await);
        assert_temporarily_unavailable(&sign_in(&sessions, "bob@example.com", "pw2").await);
        drop(turns);
        for sign_in in flood {
            sign_in.await.unwrap();
        }

        let mut log = String::new();
        let mut file = &*captured;
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_string(&mut log).unwrap();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("too many sign-ins waiting"))
            .collect();
        assert_eq!(refusals.len(), 2, "{log}");
        for line in refusals {
            assert!(line.contains("WARN"), "{line}");
            for secret in [USER, PASSWORD, "bob@example.com", "pw2"] {
                assert!(!line.contains(secret), "{line}");
            }
        }
    }
}
