use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::{read_limited, VerifiedBody};
use super::layer::{Config, VerifyLayer};
use super::{ResponseFuture, Scheme};
use crate::key_store::KeyStore;
use crate::psk::ArmorPsk;
use crate::rejection::Rejection;
use crate::replay::{Recorded, ReplayStoreError};

/// The service a [`VerifyLayer`] wraps around an inner service.
///
/// The inner service receives only requests whose signature verified, with the same method,
/// URI, headers and body bytes (as a [`VerifiedBody`]) and a
/// [`VerifiedKey`](super::VerifiedKey) in the extensions. Every other request gets a rejection
/// response from here.
pub struct Verify<S, Sch> {
    inner: S,
    config: Arc<Config<Sch>>,
}

/// The ARMOR-PSK verifier's service.
pub type VerifyPsk<S> = Verify<S, ArmorPsk>;

impl<S: Clone, Sch> Clone for Verify<S, Sch> {
    fn clone(&self) -> Self {
        Verify {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S> Verify<S, ArmorPsk> {
    /// Wraps `inner` in the ARMOR-PSK verifier, with secrets from `key_store` and the default
    /// settings.
    pub fn new(inner: S, key_store: impl KeyStore) -> Self {
        Verify::from_config(inner, VerifyLayer::new(key_store).config)
    }

    /// A [`VerifyPskLayer`](super::VerifyPskLayer) with secrets from `key_store`.
    pub fn layer(key_store: impl KeyStore) -> VerifyLayer<ArmorPsk> {
        VerifyLayer::new(key_store)
    }
}

impl<S, Sch> Verify<S, Sch> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<Sch>>) -> Self {
        Verify { inner, config }
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

impl<S: fmt::Debug, Sch: fmt::Debug> fmt::Debug for Verify<S, Sch> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verify")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, Sch, ReqBody, ResBody> Service<Request<ReqBody>> for Verify<S, Sch>
where
    Sch: Scheme,
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
        let now = config.clock.now_unix();
        let claim = match config.scheme.check(request.headers(), now) {
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
    enum Verifying<V, F, S, Sch> {
        Checking { #[pin] check: V, inner: S, config: Arc<Config<Sch>> },
        Calling { #[pin] call: F },
    }
}

impl<V, S, Sch, ResBody> std::future::Future for Verifying<V, S::Future, S, Sch>
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

/// The checks after the header. Takes the request in parts, and everything by value, so that
/// its future holds each once (rustc stores an `async fn`'s arguments apart from the locals
/// they would be moved into).
async fn verify<Sch: Scheme, B>(
    config: Arc<Config<Sch>>,
    claim: Sch::Claim,
    mut parts: http::request::Parts,
    body: B,
) -> Result<Request<VerifiedBody>, Rejection>
where
    B: Body,
    B::Error: fmt::Display,
{
    let scheme = &config.scheme;
    let key_id = scheme.key_id(&claim);
    let lookup = guarded(config.store_timeout, || {
        scheme.key_store(&claim).lookup(key_id)
    })
    .await;
    let secret = match lookup {
        Ok(Ok(Some(secret))) => secret,
        Ok(Ok(None)) => return Err(scheme.unknown_key(&claim)),
        Ok(Err(error)) => {
            tracing::warn!(%error, key_id, "key store lookup failed");
            return Err(Rejection::KeyStoreUnavailable);
        }
        Err(fault) => {
            tracing::error!(key_id, "key store lookup {fault}");
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

    let form = scheme.verify(&claim, &secret, &parts, &mut body)?;

    if let Some(record) = scheme.replay_record(&claim, config.clock.now_unix())? {
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
    }

    parts.extensions.insert(scheme.identity(claim, form));
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

fn respond<ResBody: From<Bytes>, Sch>(
    config: &Config<Sch>,
    rejection: Rejection,
) -> Response<ResBody> {
    crate::rejection::respond(&*config.on_rejection, rejection)
}
