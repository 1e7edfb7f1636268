use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::{read_limited, VerifiedBody};
use super::layer::{Config, VerifyPskLayer};
use super::{ResponseFuture, VerifiedKey};
use crate::key_store::KeyStore;
use crate::psk::{
    names_scheme, verify_forms, Credential, MalformedCredential, SigningString, MAC_LEN,
};
use crate::rejection::Rejection;
use crate::replay::{Recorded, ReplayRecord, ReplayStoreError};

/// The service [`VerifyPskLayer`] wraps around an inner service.
///
/// The inner service receives only requests whose ARMOR-PSK signature verified, with the same
/// method, URI, headers and body bytes (as a [`VerifiedBody`]) and a [`VerifiedKey`] in the
/// extensions. Every other request gets a rejection response from here.
#[derive(Clone)]
pub struct VerifyPsk<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> VerifyPsk<S> {
    /// Wraps `inner`, with secrets from `key_store` and the default settings.
    pub fn new(inner: S, key_store: impl KeyStore) -> Self {
        VerifyPskLayer::new(key_store).layer_service(inner)
    }

    /// A [`VerifyPskLayer`] with secrets from `key_store`.
    pub fn layer(key_store: impl KeyStore) -> VerifyPskLayer {
        VerifyPskLayer::new(key_store)
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        VerifyPsk { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl VerifyPskLayer {
    fn layer_service<S>(&self, inner: S) -> VerifyPsk<S> {
        VerifyPsk::from_config(inner, Arc::clone(&self.config))
    }
}

impl<S: fmt::Debug> fmt::Debug for VerifyPsk<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyPsk")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for VerifyPsk<S>
where
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: fmt::Display,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<Result<Response<ResBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let config = Arc::clone(&self.config);
        let claim = match check_header(&config, request.headers()) {
            Ok(claim) => claim,
            Err(rejection) => return ResponseFuture::refused(Ok(respond(&config, rejection))),
        };
        // The service that was polled ready goes with this request; a fresh clone stays behind
        // (tower-service docs, "Be careful when cloning inner services").
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        let (parts, body) = request.into_parts();
        ResponseFuture::verifying(Box::pin(Verifying::Checking {
            check: verify(Arc::clone(&config), claim, parts, body),
            inner,
            config,
        }))
    }
}

pin_project_lite::pin_project! {
    /// The work after the header: the checks (`verify`), then the inner service's call.
    ///
    /// Written out rather than as an `async` block: rustc keeps an `async` block's captures
    /// beside the futures it awaits, so the request (and the claim) would be stored twice in
    /// every request's allocation.
    #[project = VerifyingProj]
    enum Verifying<V, F, S> {
        Checking { #[pin] check: V, inner: S, config: Arc<Config> },
        Calling { #[pin] call: F },
    }
}

impl<V, S, ResBody> std::future::Future for Verifying<V, S::Future, S>
where
    V: std::future::Future<Output = Result<Request<VerifiedBody>, Rejection>>,
    S: Service<Request<VerifiedBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let call = match self.as_mut().project() {
                VerifyingProj::Checking {
                    check,
                    inner,
                    config,
                } => match std::task::ready!(check.poll(cx)) {
                    // The polled-ready service makes the call, and is dropped with this state
                    // (as the `async` block dropped it).
                    Ok(request) => inner.call(request),
                    Err(rejection) => return Poll::Ready(Ok(respond(config, rejection))),
                },
                VerifyingProj::Calling { call } => return call.poll(cx),
            };
            self.set(Verifying::Calling { call });
        }
    }
}

/// What the header claims, owned, once it has parsed and its timestamp is in the window.
struct Claim {
    key_id: String,
    nonce: String,
    timestamp: i64,
    mac: [u8; MAC_LEN],
}

fn check_header(config: &Config, headers: &HeaderMap) -> Result<Claim, Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(Rejection::MissingCredentials)?;
    if values.next().is_some() {
        return Err(Rejection::MalformedCredentials(
            MalformedCredential::MultipleHeaders,
        ));
    }
    if !names_scheme(value.as_bytes()) {
        return Err(Rejection::MissingCredentials);
    }
    let credential =
        Credential::parse_bytes(value.as_bytes()).map_err(Rejection::MalformedCredentials)?;
    check_window(config, credential.timestamp())?;
    Ok(Claim {
        key_id: credential.key_id().to_owned(),
        nonce: credential.nonce().to_owned(),
        timestamp: credential.timestamp(),
        mac: *credential.mac(),
    })
}

/// Refuses a timestamp further than the window from the server's clock; returns the time.
fn check_window(config: &Config, timestamp: i64) -> Result<i64, Rejection> {
    let now = config.clock.now_unix();
    if now.abs_diff(timestamp) > config.window_secs {
        return Err(Rejection::TimestampOutOfWindow {
            server_time: now,
            window_secs: config.window_secs,
        });
    }
    Ok(now)
}

/// The checks after the header. Takes the request in parts, and everything by value, so that
/// its future holds each once (rustc stores an `async fn`'s arguments apart from the locals
/// they would be moved into).
async fn verify<B>(
    config: Arc<Config>,
    claim: Claim,
    mut parts: http::request::Parts,
    body: B,
) -> Result<Request<VerifiedBody>, Rejection>
where
    B: Body,
    B::Error: fmt::Display,
{
    // Called on the trait object itself: through `Arc<dyn KeyStore>`'s own impl, the call
    // would box a second future around the store's.
    let lookup = guarded(config.store_timeout, || {
        (*config.key_store).lookup(&claim.key_id)
    })
    .await;
    let secret = match lookup {
        Ok(Ok(Some(secret))) => secret,
        Ok(Ok(None)) => return Err(Rejection::UnknownKey),
        Ok(Err(error)) => {
            tracing::warn!(%error, key_id = %claim.key_id, "key store lookup failed");
            return Err(Rejection::KeyStoreUnavailable);
        }
        Err(fault) => {
            tracing::error!(key_id = %claim.key_id, "key store lookup {fault}");
            return Err(Rejection::KeyStoreUnavailable);
        }
    };

    if declared_length(&parts.headers).is_some_and(|length| length > config.body_limit as u64) {
        return Err(Rejection::BodyTooLarge {
            limit: config.body_limit,
        });
    }
    let mut body = within(config.body_timeout, read_limited(body, config.body_limit))
        .await
        .map_err(|_| Rejection::BodyTimeout {
            timeout_secs: config.body_timeout.as_secs(),
        })??;

    let signing = SigningString {
        key_id: &claim.key_id,
        method: parts.method.as_str(),
        path: signed_path(&parts),
        nonce: &claim.nonce,
        timestamp: claim.timestamp,
    };
    let forms = config.forms_for(!body.is_empty());
    let form = verify_forms(
        secret.hmac_sha512(),
        &signing,
        forms,
        body.chunks(),
        &claim.mac,
    )
    .ok_or(Rejection::BadSignature)?;

    // Reading the body took time: the timestamp must still be inside the window, so that the
    // entry recorded now outlives every copy of the request that could still be accepted.
    let now = check_window(&config, claim.timestamp)?;
    let expires_at = claim.timestamp.saturating_add_unsigned(config.window_secs);
    let record = ReplayRecord::new(&claim.key_id, &claim.nonce, &claim.mac, expires_at, now)
        .unique_nonce(config.unique_nonce);
    match guarded(config.store_timeout, || {
        (*config.replay_store).record(&record)
    })
    .await
    {
        Ok(Ok(Recorded::Fresh)) => {}
        Ok(Ok(_)) => return Err(Rejection::ReplayedNonce),
        Ok(Err(ReplayStoreError::Full { capacity })) => {
            tracing::warn!(capacity, "replay store is full: refusing requests");
            return Err(Rejection::NonceStoreFull);
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "replay store failed");
            return Err(Rejection::NonceStoreUnavailable);
        }
        Err(fault) => {
            tracing::error!("replay store {fault}");
            return Err(Rejection::NonceStoreUnavailable);
        }
    }

    parts.extensions.insert(VerifiedKey::new(
        claim.key_id,
        claim.nonce,
        claim.timestamp,
        form,
    ));
    // hyper does not mark it: an inner layer that logs headers must not print the signature.
    if let Some(authorization) = parts.headers.get_mut(AUTHORIZATION) {
        authorization.set_sensitive(true);
    }
    Ok(Request::from_parts(parts, body))
}

/// How a store call can fail besides its own error.
#[derive(Debug)]
enum StoreFault {
    TimedOut(std::time::Duration),
    Panicked,
}

impl fmt::Display for StoreFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreFault::TimedOut(after) => write!(f, "timed out after {after:?}"),
            StoreFault::Panicked => f.write_str("panicked"),
        }
    }
}

/// Runs a store call under `timeout`, and turns a panic inside it into an error: one broken
/// store call must cost one request a 503, not the connection or the worker. `call` makes the
/// store's future, and is guarded too: a store may panic before it returns its future.
async fn guarded<F: std::future::Future>(
    timeout: std::time::Duration,
    call: impl FnOnce() -> F,
) -> Result<F::Output, StoreFault> {
    use futures_util::FutureExt as _;
    let Ok(call) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) else {
        return Err(StoreFault::Panicked);
    };
    let call = std::panic::AssertUnwindSafe(call).catch_unwind();
    match within(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_panic)) => Err(StoreFault::Panicked),
        Err(TimedOut) => Err(StoreFault::TimedOut(timeout)),
    }
}

/// A future given `limit` to finish: `tokio::time::timeout`, with the timer armed (and boxed)
/// only if the future is not ready on its first poll. In-memory stores and bodies that arrived
/// with their headers are ready at once, and arming a timer (reading the clock, reaching the
/// runtime's timer through its thread-local handle) costs more than such a store call; an
/// unarmed timer also keeps its room out of every request's future. As with
/// `tokio::time::timeout`, a future that is ready is never timed out.
fn within<F: std::future::Future>(limit: std::time::Duration, future: F) -> Within<F> {
    Within {
        future,
        limit,
        timer: None,
    }
}

/// The future's time ran out.
#[derive(Debug)]
struct TimedOut;

pin_project_lite::pin_project! {
    struct Within<F> {
        #[pin]
        future: F,
        limit: std::time::Duration,
        timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F: std::future::Future> std::future::Future for Within<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let limit = *this.limit;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        timer.as_mut().poll(cx).map(|()| Err(TimedOut))
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The path as the client sent it. Behind axum's `nest`, the URI the route sees has lost its
/// prefix; axum keeps the original in the extensions.
fn signed_path(parts: &http::request::Parts) -> &str {
    #[cfg(feature = "axum")]
    if let Some(axum::extract::OriginalUri(uri)) = parts.extensions.get() {
        return uri.path();
    }
    parts.uri.path()
}

fn respond<ResBody: From<Bytes>>(config: &Config, rejection: Rejection) -> Response<ResBody> {
    crate::rejection::respond(&*config.on_rejection, rejection)
}
