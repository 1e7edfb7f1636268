use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::Either;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::{check_declared_length, read_limited, VerifiedBody};
use super::layer::{Config, VerifyLayer};
use super::{ResponseFuture, Scheme};
use crate::key_store::{KeyStore, KeyStoreError, Secret};
use crate::psk::{ArmorPsk, BodyForm};
use crate::rejection::Rejection;
use crate::replay::{Recorded, ReplayRecord, ReplayStore, ReplayStoreError};

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
    /// settings, a replay store of its own among them: a `Verify` made apart from this one
    /// (one per connection, say) does not see the requests this one accepted. Make one and
    /// clone it, or build a [`VerifyPskLayer`](crate::VerifyPskLayer) once and give it one
    /// store.
    pub fn new(inner: S, key_store: impl KeyStore) -> Self {
        Verify::from_config(inner, VerifyLayer::new(key_store).config)
    }

    /// A [`VerifyPskLayer`](super::VerifyPskLayer) with secrets from `key_store`.
    pub fn layer(key_store: impl KeyStore) -> VerifyLayer<ArmorPsk> {
        VerifyLayer::new(key_store)
    }
}

impl<S, Sch> Verify<S, Sch> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<Sch>>) -> Self
    where
        Sch: Scheme,
    {
        // The default replay store is built now, not by the first request (and not at all for
        // a scheme that records nothing).
        if config.scheme.records_replays() {
            config.replay_store.get();
        }
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
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let now = config.clock.now_unix();
        let claim = match config.scheme.check(request.headers(), now) {
            Ok(claim) => claim,
            Err(rejection) => return ResponseFuture::refused(Ok(respond(config, rejection))),
        };
        let (parts, body) = request.into_parts();
        let checking = if body.is_end_stream() {
            // Nothing to wait for but, perhaps, the stores.
            match verify_now(config, claim, parts, now) {
                Now::Admitted(request) => return ResponseFuture::called(self.inner.call(request)),
                Now::Refused(rejection) => {
                    return ResponseFuture::refused(Ok(respond(config, rejection)))
                }
                Now::Wait(rest) => Either::Right(rest),
            }
        } else {
            Either::Left(verify(Arc::clone(config), claim, parts, body, now))
        };
        // The service that was polled ready goes with this request; a fresh clone stays behind
        // (tower-service docs, "Be careful when cloning inner services").
        let fresh = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, fresh);
        ResponseFuture::verifying(Box::pin(Verifying::Checking {
            check: checking,
            inner,
            config: Arc::clone(config),
        }))
    }
}

/// Where [`verify_now`] got to.
// Returned by value and taken apart at once: boxing the request would cost the allocation
// this path exists to avoid.
#[allow(clippy::large_enum_variant)]
enum Now<FromLookup, FromRecord> {
    /// Verified and recorded: the request for the inner service.
    Admitted(Request<VerifiedBody>),
    Refused(Rejection),
    /// A store has to be awaited: the rest of the checks, from the key lookup or from the
    /// replay record on.
    Wait(Either<FromLookup, FromRecord>),
}

/// The checks after the header for a request whose body has arrived (it has none left to
/// read), done at once when the stores answer at once: no future is allocated then.
fn verify_now<Sch: Scheme>(
    config: &Arc<Config<Sch>>,
    claim: Sch::Claim,
    parts: http::request::Parts,
    now: i64,
) -> Now<impl Checks, impl Checks> {
    let scheme = &config.scheme;
    let lookup = guarded_now(|| scheme.key_store(&claim).lookup_now(scheme.key_id(&claim)));
    let secret = match lookup.map(|answer| secret_or_refusal(config, &claim, answer)) {
        Some(Ok(secret)) => secret,
        Some(Err(rejection)) => return Now::Refused(rejection),
        None => {
            let rest = verify(
                Arc::clone(config),
                claim,
                parts,
                VerifiedBody::default(),
                now,
            );
            return Now::Wait(Either::Left(rest));
        }
    };
    if let Err(rejection) = check_declared_length(&parts.headers, config.body_limit) {
        return Now::Refused(rejection);
    }
    // No time has passed since the header was checked: `now` still holds. The record is made
    // before the MAC for the store's hint; a refusal of it still comes after the MAC's.
    // The store is fetched once, and only for a record: a scheme that records nothing never
    // builds the default store.
    let record = scheme
        .replay_record(&claim, now)
        .map(|record| record.map(|record| (record, config.replay_store.get())));
    if let Ok(Some((record, store))) = &record {
        hint_replay_store(*store, record);
    }
    let mut body = VerifiedBody::default();
    let form = match scheme.verify(&claim, &secret, &parts, &mut body) {
        Ok(form) => form,
        Err(rejection) => return Now::Refused(rejection),
    };
    let recorded = match record {
        Ok(Some((record, store))) => guarded_now(|| store.record_now(&record))
            .map(|outcome| record_outcome(outcome).and_then(|()| still_in_window(config, &claim))),
        Ok(None) => Some(Ok(())),
        Err(rejection) => Some(Err(rejection)),
    };
    match recorded {
        Some(Ok(())) => Now::Admitted(admit(config, claim, form, parts, body)),
        Some(Err(rejection)) => Now::Refused(rejection),
        None => {
            // The store has just said it cannot answer at once: it is not asked so again.
            let rest = record_and_admit(Arc::clone(config), claim, form, parts, body, Ask::Await);
            Now::Wait(Either::Right(rest))
        }
    }
}

/// The checks after the header, as a future.
trait Checks: Future<Output = Result<Request<VerifiedBody>, Rejection>> + Send {}

impl<F: Future<Output = Result<Request<VerifiedBody>, Rejection>> + Send> Checks for F {}

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

/// The checks after the header, checked at `checked_at`. Takes the request in parts, and
/// everything by value, so that its future holds each once (rustc stores an `async fn`'s
/// arguments apart from the locals they would be moved into).
async fn verify<Sch: Scheme, B>(
    config: Arc<Config<Sch>>,
    claim: Sch::Claim,
    parts: http::request::Parts,
    body: B,
    checked_at: i64,
) -> Result<Request<VerifiedBody>, Rejection>
where
    B: Body,
    B::Error: fmt::Display,
{
    let scheme = &config.scheme;
    let key_id = scheme.key_id(&claim);
    let key_store = scheme.key_store(&claim);
    // At once where the store can answer so (no boxed future), else awaited.
    let lookup = match guarded_now(|| key_store.lookup_now(key_id)) {
        Some(answer) => answer,
        None => guarded(config.store_timeout, || key_store.lookup(key_id)).await,
    };
    let secret = secret_or_refusal(&config, &claim, lookup)?;

    let mut body = read_body(&parts.headers, body, config.body_limit, config.body_timeout).await?;
    // A key revoked or rotated while the body came in (for up to the body timeout) is asked
    // for again where the store answers at once. A store that must be awaited was awaited
    // before the body, so that no body is read for an unknown key, and is not awaited twice.
    let secret = match guarded_now(|| key_store.lookup_now(key_id)) {
        Some(answer) => secret_or_refusal(&config, &claim, answer)?,
        None => secret,
    };

    // Only for the hint, which wants the keys alone: the clock of the header's check does.
    // The record itself is made after the MAC, with the clock read again (reading and hashing
    // a large body takes time, and the window is checked once more).
    if let Ok(Some(record)) = scheme.replay_record(&claim, checked_at) {
        hint_replay_store(config.replay_store.get(), &record);
    }
    let form = scheme.verify(&claim, &secret, &parts, &mut body)?;

    record_and_admit(config, claim, form, parts, body, Ask::AtOnceFirst).await
}

/// A request's body as the verifier reads it: refused at once when its `Content-Length` passes
/// `limit` (413 `body_too_large`), else read to its end under `limit` and within `timeout`
/// (408 `body_timeout`; 400 `body_read_failed` for a body that breaks off), its runs of small
/// chunks copied together. For a route the verifier does not read the body of (a signed-in user's):
/// nothing about the body is verified, though it comes as a [`VerifiedBody`]. A body not there
/// at once is waited for with a tokio timer: it needs a tokio runtime with time enabled.
///
/// ```
/// use armor_psk::verify::{read_body, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT};
/// use armor_psk::Rejection;
///
/// async fn body_length(request: http::Request<axum::body::Body>) -> Result<u64, Rejection> {
///     let (parts, body) = request.into_parts();
///     let body = read_body(&parts.headers, body, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT).await?;
///     Ok(body.len())
/// }
/// ```
pub async fn read_body<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<VerifiedBody, Rejection>
where
    B: Body,
    B::Error: fmt::Display,
{
    check_declared_length(headers, limit)?;
    within(timeout, read_limited(body, limit))
        .await
        .map_err(|_| Rejection::BodyTimeout {
            // Rounded up: a 300 ms timeout is not "0 seconds".
            timeout_secs: timeout
                .as_secs()
                .saturating_add(u64::from(timeout.subsec_nanos() > 0)),
        })?
}

/// How [`record_and_admit`] asks the replay store.
#[derive(Clone, Copy)]
enum Ask {
    /// To answer at once first (a store that cannot says so at once), then awaited.
    AtOnceFirst,
    /// Awaited only: it was asked to answer at once already, and could not.
    Await,
}

/// Records the verified request against replays, then hands it over. The clock is read here:
/// reading the body, or waiting to be polled, took time.
async fn record_and_admit<Sch: Scheme>(
    config: Arc<Config<Sch>>,
    claim: Sch::Claim,
    form: BodyForm,
    parts: http::request::Parts,
    body: VerifiedBody,
    ask: Ask,
) -> Result<Request<VerifiedBody>, Rejection> {
    let now = config.clock.now_unix();
    if let Some(record) = config.scheme.replay_record(&claim, now)? {
        let store = config.replay_store.get();
        let at_once = match ask {
            Ask::AtOnceFirst => guarded_now(|| store.record_now(&record)),
            Ask::Await => None,
        };
        let outcome = match at_once {
            Some(outcome) => outcome,
            None => guarded(config.store_timeout, || store.record(&record)).await,
        };
        record_outcome(outcome)?;
        still_in_window(&config, &claim)?;
    }
    Ok(admit(&config, claim, form, parts, body))
}

/// The window checked again, on a clock read after the store recorded the request. A store
/// lets an entry go once its timestamp has left the window by the clock of whichever request
/// comes along, and that clock can be ahead of the one this request was checked with (another
/// thread's, a second later; or this request waited for the store): a replay of a request at
/// the window's edge would then find its original's entries gone, and be recorded as fresh.
/// Its timestamp has left the window by now, so it is refused as such.
fn still_in_window<Sch: Scheme>(config: &Config<Sch>, claim: &Sch::Claim) -> Result<(), Rejection> {
    config
        .scheme
        .replay_record(claim, config.clock.now_unix())
        .map(drop)
}

/// Tells the replay store what it may be asked to record once the MAC is computed, so that
/// the memory the record touches is loaded meanwhile (a large table's lines are cache misses).
/// A hint: a store that panics on it is logged, and asked again to record.
fn hint_replay_store(store: &dyn ReplayStore, record: &ReplayRecord<'_>) {
    let hint = std::panic::AssertUnwindSafe(|| store.prefetch(record));
    if std::panic::catch_unwind(hint).is_err() {
        prefetch_panicked();
    }
}

#[cold]
#[inline(never)]
fn prefetch_panicked() {
    tracing::error!("replay store prefetch panicked");
}

/// The secret a key store answered with, or the request's refusal.
fn secret_or_refusal<Sch: Scheme>(
    config: &Config<Sch>,
    claim: &Sch::Claim,
    lookup: Result<Result<Option<Secret>, KeyStoreError>, StoreFault>,
) -> Result<Secret, Rejection> {
    let failure = match lookup {
        Ok(Ok(Some(secret))) if !secret.expose_bytes().is_empty() => return Ok(secret),
        Ok(Ok(Some(_))) => return Err(empty_secret(config.scheme.key_id(claim))),
        Ok(Ok(None)) => return Err(config.scheme.unknown_key(claim)),
        Ok(Err(error)) => Ok(error),
        Err(fault) => Err(fault),
    };
    Err(key_store_unavailable(config.scheme.key_id(claim), failure))
}

/// Refuses, and logs, a key whose store answered an empty secret: an HMAC keyed by nothing is
/// one anyone can compute, so this is a store fault (a secret from a variable that is set but
/// empty, say), not a key.
#[cold]
#[inline(never)]
fn empty_secret(key_id: &str) -> Rejection {
    tracing::error!(
        key_id,
        "key store answered an empty secret, which anyone could sign with: refused"
    );
    Rejection::KeyStoreUnavailable
}

/// Logs a key store's failure. Out of line, as the other refusals' logging and responses are:
/// the code every accepted request runs stays together, in fewer cache lines.
#[cold]
#[inline(never)]
fn key_store_unavailable(key_id: &str, failure: Result<KeyStoreError, StoreFault>) -> Rejection {
    match failure {
        Ok(error) => tracing::warn!(%error, key_id, "key store lookup failed"),
        Err(fault) => tracing::error!(key_id, "key store lookup {fault}"),
    }
    Rejection::KeyStoreUnavailable
}

/// What a replay store's answer means for the request.
fn record_outcome(
    outcome: Result<Result<Recorded, ReplayStoreError>, StoreFault>,
) -> Result<(), Rejection> {
    match outcome {
        Ok(Ok(Recorded::Fresh)) => Ok(()),
        Ok(Ok(_)) => Err(Rejection::ReplayedNonce),
        Ok(Err(error)) => Err(replay_store_failed(Ok(error))),
        Err(fault) => Err(replay_store_failed(Err(fault))),
    }
}

/// Logs a replay store's failure (out of line, as [`key_store_unavailable`]).
#[cold]
#[inline(never)]
fn replay_store_failed(failure: Result<ReplayStoreError, StoreFault>) -> Rejection {
    match failure {
        Ok(ReplayStoreError::Full { capacity }) => {
            tracing::warn!(capacity, "replay store is full: refusing requests");
            Rejection::NonceStoreFull
        }
        Ok(error) => {
            tracing::warn!(%error, "replay store failed");
            Rejection::NonceStoreUnavailable
        }
        Err(fault) => {
            tracing::error!("replay store {fault}");
            Rejection::NonceStoreUnavailable
        }
    }
}

/// The verified request, as the inner service gets it.
fn admit<Sch: Scheme>(
    config: &Config<Sch>,
    claim: Sch::Claim,
    form: BodyForm,
    mut parts: http::request::Parts,
    body: VerifiedBody,
) -> Request<VerifiedBody> {
    parts.extensions.insert(config.scheme.identity(claim, form));
    hide_credentials(&mut parts.headers);
    Request::from_parts(parts, body)
}

/// Marks an accepted request's `Authorization` header sensitive. hyper does not: an inner layer
/// that logs headers must not print a signature or a session token.
pub(crate) fn hide_credentials(headers: &mut HeaderMap) {
    if let Some(authorization) = headers.get_mut(AUTHORIZATION) {
        authorization.set_sensitive(true);
    }
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

/// A store call that answers at once, with a panic inside it turned into an error (as
/// [`guarded`] does for the calls that are awaited).
fn guarded_now<T>(call: impl FnOnce() -> Option<T>) -> Option<Result<T, StoreFault>> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(answer) => answer.map(Ok),
        Err(_panic) => Some(Err(StoreFault::Panicked)),
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

/// The response to a refused request (out of line, as [`key_store_unavailable`]).
#[cold]
#[inline(never)]
fn respond<ResBody: From<Bytes>, Sch>(
    config: &Config<Sch>,
    rejection: Rejection,
) -> Response<ResBody> {
    crate::rejection::respond(&*config.on_rejection, rejection)
}
