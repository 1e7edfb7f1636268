use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use futures_util::future::Either;
use tower_layer::Layer;
use tower_service::Service;

use super::{Sessions, UserSession};
use crate::policy::RoutePolicy;
use crate::psk::ArmorPsk;
use crate::rejection::{respond, OnRejection, Rejection, FH_AUTH};
use crate::verify::{Scheme, VerifiedBody, Verify, VerifyLayer};
use crate::VerifiedKey;

const ACCOUNT_CONTEXT: &str = "x-account-context";

/// Who made a request that [`ArmorAuthLayer`] accepted, and for which account.
///
/// In the request's extensions, and an axum extractor (401 `missing_credentials` on a route
/// without the layer).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// A request signed with an API key (ARMOR-PSK).
    ApiKey {
        /// The verified key.
        key: VerifiedKey,
        /// The `X-Account-Context` account: checked against the key's accounts when it lists
        /// some, passed through as sent (if an integer) when it lists none.
        account: Option<i64>,
    },
    /// A request with a signed-in user's FH-AUTH token.
    User {
        /// The user's session.
        session: UserSession,
        /// The `X-Account-Context` account, one of the user's.
        account: Option<i64>,
    },
}

impl Identity {
    /// The account the request acts on, from `X-Account-Context`.
    ///
    /// `None` when the request named none (no header, as `GET /me` is sent to learn a user's
    /// accounts): nothing was checked then, even for a key that lists accounts. A handler that
    /// acts on a default account without the header must take one the caller may act on (one
    /// of the user's [`accounts`](UserSession::accounts), or of the key's list), not the
    /// backend's own default.
    pub fn account(&self) -> Option<i64> {
        match self {
            Identity::ApiKey { account, .. } | Identity::User { account, .. } => *account,
        }
    }

    /// The API key id, for a signed request.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Identity::ApiKey { key, .. } => Some(key.key_id()),
            Identity::User { .. } => None,
        }
    }

    /// The username, for a signed-in user.
    pub fn username(&self) -> Option<&str> {
        match self {
            Identity::User { session, .. } => Some(&session.username),
            Identity::ApiKey { .. } => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .ok_or(Rejection::MissingCredentials)
    }
}

/// `Option<Identity>`: `None` on a route without [`ArmorAuthLayer`] (one open to everyone).
impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<Identity>().cloned())
    }
}

type KeyAccounts = Arc<dyn Fn(&VerifiedKey) -> Option<Arc<[i64]>> + Send + Sync>;

#[derive(Clone)]
struct Shared {
    sessions: Sessions,
    policy: RoutePolicy,
    key_accounts: KeyAccounts,
    on_rejection: Arc<dyn OnRejection>,
}

/// Accepts both of the Armor API's schemes on one router: `Authorization: ARMOR-PSK …`
/// through the given [`VerifyPskLayer`](crate::VerifyPskLayer), `Authorization: FH-AUTH <token>` through
/// [`Sessions`]. A request with neither gets 401 `missing_credentials` with a
/// `WWW-Authenticate` challenge for each (FH-AUTH's is added to the 401 the signing layer's
/// `on_rejection` made for `missing_credentials`, unless that names it already). A signing
/// layer whose scheme answers otherwise is left to: a [`OneOf`](crate::verify::OneOf) answers
/// as its first scheme does, and the signed-Date scheme with 400 when it comes first.
///
/// After authentication it refuses, with 403 `forbidden_for_api_key`, an API key calling a
/// route of the [`RoutePolicy`] (the Armor list by default; users may call them); it checks
/// `X-Account-Context` (400 `invalid_account_context` when not an integer, 403
/// `forbidden_account` when not one of the caller's accounts); and it puts an [`Identity`] in
/// the request's extensions. Refusals use the verifier's rejection response.
///
/// The signing side is any [`VerifyLayer`]: ARMOR-PSK's by default, or one that also accepts
/// the signed-Date scheme ([`OneOf`](crate::verify::OneOf)).
#[must_use]
pub struct ArmorAuthLayer<Sch = ArmorPsk> {
    psk: VerifyLayer<Sch>,
    shared: Arc<Shared>,
}

impl<Sch> Clone for ArmorAuthLayer<Sch> {
    fn clone(&self) -> Self {
        ArmorAuthLayer {
            psk: self.psk.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Sch> ArmorAuthLayer<Sch> {
    /// Both ways in, the Armor route policy, and no account list for keys.
    pub fn new(psk: VerifyLayer<Sch>, sessions: Sessions) -> Self
    where
        Sch: Clone,
    {
        let on_rejection = Arc::clone(&psk.config.on_rejection);
        let psk = psk.on_rejection(NamingFhAuth(Arc::clone(&on_rejection)));
        // One empty list for every key, shared: an `Arc` of nothing still allocates.
        let every_account: Arc<[i64]> = Arc::from([]);
        ArmorAuthLayer {
            psk,
            shared: Arc::new(Shared {
                sessions,
                policy: RoutePolicy::armor_default(),
                key_accounts: Arc::new(move |_| Some(Arc::clone(&every_account))),
                on_rejection,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Shared)) -> Self {
        change(Arc::make_mut(&mut self.shared));
        self
    }

    /// The routes API keys may not call. Defaults to [`RoutePolicy::armor_default`].
    pub fn route_policy(self, policy: RoutePolicy) -> Self {
        self.with(|shared| shared.policy = policy)
    }

    /// The accounts each verified key may act on: `Some` of its list, where an empty list
    /// passes `X-Account-Context` through unchecked (field clients send it with every
    /// request); `None` for a key that may no longer sign with the scheme it used (gone,
    /// disabled, or its schemes changed), which is refused with 401 `unknown_key`. A key
    /// revoked while its request's body was read verified against the secret it had, and is
    /// asked about here afterwards: an answer of "no list" for it would lift its limit.
    /// Defaults to any account for every key.
    ///
    /// ```
    /// use armor_psk::key_store::MemoryKeyStore;
    /// use armor_psk::session::{ArmorAuthLayer, Sessions, Users};
    /// use armor_psk::VerifyPskLayer;
    ///
    /// let keys = MemoryKeyStore::builder().key("key-1", "secret").build();
    /// let auth = ArmorAuthLayer::new(VerifyPskLayer::new(keys), Sessions::builder(Users::default()).build())
    ///     .key_accounts(|key| match key.key_id() {
    ///         "key-1" => Some(vec![1001]),
    ///         _ => None,
    ///     });
    /// ```
    ///
    /// The list may be any `Into<Arc<[i64]>>`: a `Vec`, or an `Arc<[i64]>` shared with the
    /// key's record (as [`FileKeyStore::accounts`](crate::key_store::FileKeyStore::accounts)
    /// answers), which costs no copy per request.
    pub fn key_accounts<A: Into<Arc<[i64]>>>(
        self,
        accounts: impl Fn(&VerifiedKey) -> Option<A> + Send + Sync + 'static,
    ) -> Self {
        self.with(|shared| shared.key_accounts = Arc::new(move |key| accounts(key).map(Into::into)))
    }
}

impl<Sch: fmt::Debug> fmt::Debug for ArmorAuthLayer<Sch> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmorAuthLayer")
            .field("psk", &self.psk)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, Sch: Scheme> Layer<S> for ArmorAuthLayer<Sch> {
    type Service = ArmorAuth<S, Sch>;

    fn layer(&self, inner: S) -> ArmorAuth<S, Sch> {
        let key_stage = KeyStage {
            inner: inner.clone(),
            shared: Arc::clone(&self.shared),
        };
        ArmorAuth {
            psk: self.psk.layer(key_stage),
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service of [`ArmorAuthLayer`].
pub struct ArmorAuth<S, Sch = ArmorPsk> {
    psk: Verify<KeyStage<S>, Sch>,
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone, Sch> Clone for ArmorAuth<S, Sch> {
    fn clone(&self) -> Self {
        ArmorAuth {
            psk: self.psk.clone(),
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, Sch> fmt::Debug for ArmorAuth<S, Sch> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArmorAuth").finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, Sch: Scheme> Service<Request<Body>> for ArmorAuth<S, Sch>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    /// Always ready: the service that handles a request is made ready inside its future.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let Some(token) = fh_auth_token(request.headers()).map(str::to_owned) else {
            return Box::pin(call_when_ready(self.psk.clone(), request));
        };
        let (inner, shared) = (self.inner.clone(), Arc::clone(&self.shared));
        Box::pin(async move {
            match sign_in_user(&shared, &token, request.headers()).await {
                Ok(identity) => {
                    request.extensions_mut().insert(identity);
                    crate::verify::hide_credentials(request.headers_mut());
                    call_when_ready(inner, request).await
                }
                Err(rejection) => Ok(respond(&*shared.on_rejection, rejection)),
            }
        })
    }
}

/// The signing layer's refusals, as its own `on_rejection` makes them, but with FH-AUTH named
/// beside the signing scheme when a request brought neither credential: the other way in.
struct NamingFhAuth(Arc<dyn OnRejection>);

impl OnRejection for NamingFhAuth {
    fn on_rejection(&self, rejection: &Rejection) -> Response<Bytes> {
        let mut response = self.0.on_rejection(rejection);
        let missing = matches!(rejection, Rejection::MissingCredentials)
            && response.status() == StatusCode::UNAUTHORIZED;
        let challenges = response.headers().get_all(WWW_AUTHENTICATE);
        if missing && !challenges.iter().any(names_fh_auth) {
            let challenge = HeaderValue::from_static(FH_AUTH);
            response.headers_mut().append(WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// Whether a `WWW-Authenticate` value holds an FH-AUTH challenge (among others, separated by
/// commas, perhaps with parameters).
fn names_fh_auth(value: &HeaderValue) -> bool {
    let value = String::from_utf8_lossy(value.as_bytes());
    value.split(',').any(|element| {
        let scheme = element.split_whitespace().next();
        scheme.is_some_and(|scheme| scheme.eq_ignore_ascii_case(FH_AUTH))
    })
}

async fn call_when_ready<S, R>(mut service: S, request: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    futures_util::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}

/// The token of a single `Authorization: FH-AUTH <token>` header.
fn fh_auth_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next()?.to_str().ok()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case(FH_AUTH)
        .then(|| token.trim_start_matches(' '))
}

async fn sign_in_user(
    shared: &Shared,
    token: &str,
    headers: &HeaderMap,
) -> Result<Identity, Rejection> {
    let well_formed = token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(Rejection::InvalidToken);
    }
    let session = match shared.sessions.session(token).await {
        Ok(Some(session)) => session,
        Ok(None) => return Err(Rejection::InvalidToken),
        Err(error) => {
            tracing::warn!(%error, "session lookup failed");
            return Err(Rejection::SessionStoreUnavailable);
        }
    };
    let account = account_context(headers, Some(&session.accounts))?;
    Ok(Identity::User { session, account })
}

/// The `X-Account-Context` account. With `allowed`, it must be one of them; without, a value
/// that is not an integer is passed over.
fn account_context(headers: &HeaderMap, allowed: Option<&[i64]>) -> Result<Option<i64>, Rejection> {
    let mut values = headers.get_all(ACCOUNT_CONTEXT).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // One value, of plain digits: a second one, or a spelling another reader would take
    // differently (`+42`, ` 42`), could name another account downstream.
    let digits = value.as_bytes();
    let plain = !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
    if allowed.is_some() && (values.next().is_some() || !plain) {
        return Err(Rejection::InvalidAccountContext);
    }
    let account = if plain {
        value.to_str().ok().and_then(|v| v.parse::<i64>().ok())
    } else {
        None
    };
    match (allowed, account) {
        (None, account) => Ok(account),
        (Some(_), None) => Err(Rejection::InvalidAccountContext),
        (Some(allowed), Some(account)) if allowed.contains(&account) => Ok(Some(account)),
        (Some(_), Some(_)) => Err(Rejection::ForbiddenAccount),
    }
}

/// Runs inside the verifier, after a signature verified: the route policy, the account, the
/// identity; then the inner service with the body as axum's.
#[derive(Clone)]
struct KeyStage<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<VerifiedBody>> for KeyStage<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<VerifiedBody>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        match self.identify(&parts) {
            Ok(identity) => {
                parts.extensions.insert(identity);
                Either::Right(self.inner.call(Request::from_parts(parts, Body::new(body))))
            }
            Err(rejection) => {
                Either::Left(ready(Ok(respond(&*self.shared.on_rejection, rejection))))
            }
        }
    }
}

impl<S> KeyStage<S> {
    fn identify(&self, parts: &Parts) -> Result<Identity, Rejection> {
        let key = parts
            .extensions
            .get::<VerifiedKey>()
            .cloned()
            .ok_or(Rejection::MissingCredentials)?;
        // Both the path the routes see (behind `nest`, without its prefix) and the path as sent:
        // a rule written for either must hold.
        let routed = parts.uri.path();
        let sent = crate::psk::signed_path(parts);
        let policy = &self.shared.policy;
        let paths: &[&str] = if sent == routed {
            &[routed]
        } else {
            &[routed, sent]
        };
        let forbidden = policy.forbids_request(&parts.method, &parts.headers, paths);
        if forbidden {
            tracing::info!(
                key_id = key.key_id(),
                path = sent,
                "route not open to API keys"
            );
            return Err(Rejection::ForbiddenForApiKey);
        }
        let Some(accounts) = (self.shared.key_accounts)(&key) else {
            tracing::info!(
                key_id = key.key_id(),
                "key gone since its request was verified"
            );
            return Err(Rejection::UnknownKey);
        };
        let allowed = (!accounts.is_empty()).then_some(&accounts[..]);
        let account = account_context(&parts.headers, allowed)?;
        Ok(Identity::ApiKey { key, account })
    }
}
