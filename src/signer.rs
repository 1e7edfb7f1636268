//! The client side: sign requests the way the verifier checks them.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION};
use http::{Method, Request};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower_layer::Layer;
use tower_service::Service;

use crate::clock::{Clock, SystemClock};
use crate::key_store::Secret;
use crate::psk::{BodyForm, Credential, MalformedCredential, SigningString};

type NonceSource = Arc<dyn Fn() -> String + Send + Sync>;

/// Signs requests with one API key.
///
/// A request with a body is signed with the configured [`BodyForm`] (`digest` by default, as
/// the Python sample and the public Go client do); a request without one is signed with the
/// empty body part, as every client in the field does for a `GET`. The nonce is a fresh UUID v4
/// unless another source is set; the timestamp comes from the clock.
///
/// ```
/// use armor_psk::Signer;
/// use http::Method;
///
/// let signer = Signer::new("20a37099-4a0b-432f-bf46-5fa690a0405c", "my secret").unwrap();
/// let header = signer.authorization(&Method::GET, "/accounts/2?page=1", b"").unwrap();
/// assert!(header.to_str().unwrap().starts_with("ARMOR-PSK 20a37099-"));
/// assert!(header.is_sensitive());
/// ```
#[derive(Clone)]
pub struct Signer {
    key_id: Arc<str>,
    secret: Secret,
    body_form: BodyForm,
    nonces: NonceSource,
    clock: Arc<dyn Clock>,
}

/// A request could not be signed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The key id or a nonce from the nonce source is not acceptable in the header.
    #[error("cannot sign: {0}")]
    Credential(#[from] MalformedCredential),
    /// The request body could not be read.
    #[error("cannot sign: the request body could not be read")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The secret is empty: an HMAC keyed by nothing is one anyone can compute, and verifiers
    /// refuse it.
    #[error("cannot sign: the secret is empty")]
    EmptySecret,
    /// The path is neither an absolute path (`/accounts/2`) nor an `http` or `https` URL, so
    /// what the server signs cannot be known. Holds the path as given.
    #[error("cannot sign: {0:?} is neither a path starting with '/' nor an http(s) URL")]
    Path(String),
    /// The request body ends with trailers, which [`SignRequestLayer`] cannot send on: the
    /// inner service is given a [`Full`] body.
    #[error("cannot sign: the request body has trailers, which SignRequestLayer cannot send")]
    Trailers,
}

impl Signer {
    /// A signer for `key_id` with `secret` (its UTF-8 bytes key the HMAC). Fails when the key
    /// id is not 1 to 256 visible ASCII characters without `:`, or the secret is empty.
    pub fn new(key_id: impl Into<String>, secret: impl Into<Secret>) -> Result<Self, SignError> {
        let key_id = key_id.into();
        Credential::new(&key_id, [0; 64], "n", 0)?;
        let secret = secret.into();
        if secret.expose_bytes().is_empty() {
            return Err(SignError::EmptySecret);
        }
        Ok(Signer {
            key_id: key_id.into(),
            secret,
            body_form: BodyForm::Digest,
            nonces: Arc::new(|| uuid::Uuid::new_v4().to_string()),
            clock: Arc::new(SystemClock),
        })
    }

    /// The body form used for requests with a body. Defaults to [`BodyForm::Digest`].
    ///
    /// [`BodyForm::Empty`] leaves the body out of the signature: a verifier refuses such a
    /// request (401 `bad_signature`) unless it was built with
    /// [`insecure_accept_unsigned_body`](crate::VerifyPskLayer::insecure_accept_unsigned_body).
    #[must_use]
    pub fn body_form(mut self, form: BodyForm) -> Self {
        self.body_form = form;
        self
    }

    /// Where nonces come from. Defaults to a random UUID v4 per request. Each nonce must be 1
    /// to 128 visible ASCII characters without `:`.
    #[must_use]
    pub fn nonce_source(mut self, source: impl Fn() -> String + Send + Sync + 'static) -> Self {
        self.nonces = Arc::new(source);
        self
    }

    /// Where the timestamp comes from. Defaults to [`SystemClock`].
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The `Authorization` value for a request, with a fresh nonce and the current time.
    ///
    /// `path` is the request's path, which may carry a query string (only the part before `?`
    /// is signed, as the server does), or its whole `http` or `https` URL, of which the path
    /// is signed. Anything else (`accounts/2`, an empty string) is refused with
    /// [`SignError::Path`]: the server would sign another path, and answer `bad_signature`.
    ///
    /// ```
    /// use armor_psk::Signer;
    /// use http::Method;
    ///
    /// let signer = Signer::new("key-1", "secret")?;
    /// let url = "https://api.armor.com/accounts/2?page=1";
    /// let (path, nonce, time) = ("/accounts/2", "n-1", 1_528_140_529);
    /// assert_eq!(
    ///     signer.authorization_with(&Method::GET, url, b"", nonce, time)?,
    ///     signer.authorization_with(&Method::GET, path, b"", nonce, time)?,
    /// );
    /// assert!(signer.authorization(&Method::GET, "accounts/2", b"").is_err());
    /// # Ok::<(), armor_psk::SignError>(())
    /// ```
    pub fn authorization(
        &self,
        method: &Method,
        path: &str,
        body: &[u8],
    ) -> Result<HeaderValue, SignError> {
        let nonce = (self.nonces)();
        self.authorization_with(method, path, body, &nonce, self.clock.now_unix())
    }

    /// The `Authorization` value for a request with the given nonce and timestamp; `path` as
    /// for [`Signer::authorization`].
    pub fn authorization_with(
        &self,
        method: &Method,
        path: &str,
        body: &[u8],
        nonce: &str,
        timestamp: i64,
    ) -> Result<HeaderValue, SignError> {
        self.authorization_chunks(method, signed_path(path)?, &[body], nonce, timestamp)
    }

    /// The header for a request to `path`, exactly as signed.
    fn authorization_chunks<B: AsRef<[u8]>>(
        &self,
        method: &Method,
        path: &str,
        body: &[B],
        nonce: &str,
        timestamp: i64,
    ) -> Result<HeaderValue, SignError> {
        let has_body = body.iter().any(|chunk| !chunk.as_ref().is_empty());
        let form = if has_body {
            self.body_form
        } else {
            BodyForm::Empty
        };
        let signing = SigningString {
            key_id: &self.key_id,
            method: method.as_str(),
            path,
            nonce,
            timestamp,
        };
        let mac = signing.sign(self.secret.hmac_sha512(), form, body);
        let credential = Credential::new(&self.key_id, mac, nonce, timestamp)?;
        let mut value = HeaderValue::try_from(credential.to_string())
            .map_err(|_| SignError::Credential(MalformedCredential::NotAscii))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Signs `request` in place: sets its `Authorization` header (marked sensitive).
    pub fn sign<B: AsRef<[u8]>>(&self, request: &mut Request<B>) -> Result<(), SignError> {
        let value = self.header_for(request, &[request.body().as_ref()])?;
        request.headers_mut().insert(AUTHORIZATION, value);
        Ok(())
    }

    /// The header for `request`, whose body is given in `chunks` (never joined).
    fn header_for<B, C: AsRef<[u8]>>(
        &self,
        request: &Request<B>,
        chunks: &[C],
    ) -> Result<HeaderValue, SignError> {
        let nonce = (self.nonces)();
        // The path as it goes on the wire (a URI's path holds no query), under the rule of
        // every other way in: an authority-form (`CONNECT`) or asterisk-form (`OPTIONS *`)
        // target has no path a server would sign.
        self.authorization_chunks(
            request.method(),
            signed_path(request.uri().path())?,
            chunks,
            &nonce,
            self.clock.now_unix(),
        )
    }
}

/// The part of `path` the server signs: the path of an origin-form target (before its query,
/// or a fragment, which is never sent) or of an `http(s)` URL.
fn signed_path(path: &str) -> Result<&str, SignError> {
    let before_query = |target: &str| target.find(['?', '#']).unwrap_or(target.len());
    if path.starts_with('/') {
        return Ok(&path[..before_query(path)]);
    }
    let after_scheme = ["http://", "https://"].iter().find_map(|scheme| {
        let head = path.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &path[scheme.len()..])
    });
    let Some(rest) = after_scheme else {
        return Err(SignError::Path(path.to_owned()));
    };
    // The authority runs to the first `/`, `?` or `#`; a URL without a path is sent, and
    // signed, as `/`.
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_end == 0 {
        return Err(SignError::Path(path.to_owned()));
    }
    let target = &rest[authority_end..];
    if target.starts_with('/') {
        Ok(&target[..before_query(target)])
    } else {
        Ok("/")
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("secret", &self.secret)
            .field("body_form", &self.body_form)
            .finish_non_exhaustive()
    }
}

/// Signs every request of a tower client with a [`Signer`].
///
/// The body is read into memory to be signed (the signature goes in a header, ahead of the
/// body), then sent on as a [`Full`] body: the layer holds as much memory as the body. A body
/// that ends with trailers is refused ([`SignError::Trailers`]) rather than sent without them.
///
/// The inner service was made ready before the body is read, and stays reserved for this
/// request until the whole body has arrived: put a concurrency limit or a `Buffer` outside this
/// layer, not inside it, or a slow upload holds a permit all along.
///
/// ```
/// use armor_psk::{SignRequestLayer, Signer};
/// use tower::ServiceBuilder;
///
/// let signer = Signer::new("key-1", "secret").unwrap();
/// let layer = ServiceBuilder::new().layer(SignRequestLayer::new(signer));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SignRequestLayer {
    signer: Signer,
}

impl SignRequestLayer {
    /// A layer that signs with `signer`.
    pub fn new(signer: Signer) -> Self {
        SignRequestLayer { signer }
    }
}

impl<S> Layer<S> for SignRequestLayer {
    type Service = SignRequest<S>;

    fn layer(&self, inner: S) -> SignRequest<S> {
        SignRequest {
            inner,
            signer: self.signer.clone(),
        }
    }
}

/// The service of [`SignRequestLayer`].
#[derive(Debug, Clone)]
pub struct SignRequest<S> {
    inner: S,
    signer: Signer,
}

impl<S> SignRequest<S> {
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

/// The boxed error of [`SignRequest`]: a [`SignError`] or the inner service's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> Service<Request<B>> for SignRequest<S>
where
    S: Service<Request<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let signer = self.signer.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let collected = body
                .collect()
                .await
                .map_err(|error| SignError::Body(error.into()))?;
            if collected
                .trailers()
                .is_some_and(|trailers| !trailers.is_empty())
            {
                return Err(SignError::Trailers.into());
            }
            let body = collected.to_bytes();
            let mut request = Request::from_parts(parts, Full::new(body.clone()));
            let value = signer.header_for(&request, &[body])?;
            request.headers_mut().insert(AUTHORIZATION, value);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_path_without_its_query() {
        let signer = Signer::new("key", "secret").unwrap();
        let with_query = signer
            .authorization_with(&Method::GET, "/a/b?x=1", b"", "n", 100)
            .unwrap();
        let without = signer
            .authorization_with(&Method::GET, "/a/b", b"", "n", 100)
            .unwrap();
        assert_eq!(with_query, without);
    }

    #[test]
    fn signs_the_path_the_server_sees() {
        let signer = Signer::new("key", "secret").unwrap();
        let header = |path: &str| signer.authorization_with(&Method::GET, path, b"", "n", 100);
        for (given, sent) in [
            ("/a/b#top", "/a/b"),
            ("https://api.armor.com/a/b?x=1", "/a/b"),
            ("HTTP://127.0.0.1:8080/a/b", "/a/b"),
            ("http://h", "/"),
            ("http://h?x=1", "/"),
            ("http://h#f", "/"),
            ("http://h/%7Ea", "/%7Ea"),
        ] {
            assert_eq!(header(given).unwrap(), header(sent).unwrap(), "{given}");
        }
        for refused in [
            "",
            "a/b",
            "accounts/2",
            "ftp://h/a",
            "http://",
            "http:///a",
            "*",
        ] {
            assert!(
                matches!(header(refused), Err(SignError::Path(ref path)) if path == refused),
                "{refused}"
            );
        }
    }

    #[test]
    fn sign_refuses_a_target_without_a_path() {
        let signer = Signer::new("key", "secret").unwrap();
        let mut asterisk = Request::options("*").body(Vec::<u8>::new()).unwrap();
        assert!(matches!(
            signer.sign(&mut asterisk),
            Err(SignError::Path(ref path)) if path == "*"
        ));
        let mut origin = Request::get("/a/b?x=1").body(Vec::<u8>::new()).unwrap();
        signer.sign(&mut origin).unwrap();
    }

    #[test]
    fn refuses_bad_key_ids_and_nonces() {
        assert!(Signer::new("a:b", "s").is_err());
        assert!(Signer::new("", "s").is_err());
        assert!(matches!(Signer::new("k", ""), Err(SignError::EmptySecret)));
        let signer = Signer::new("key", "s")
            .unwrap()
            .nonce_source(|| "a:b".into());
        assert!(signer.authorization(&Method::GET, "/", b"").is_err());
    }

    /// What a [`SignRequest`] around an echo of the signed request answers for `body`.
    fn sign_through<B>(body: B) -> Result<Request<Full<Bytes>>, BoxError>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let echo = tower::service_fn(|request: Request<Full<Bytes>>| async move {
            Ok::<_, std::convert::Infallible>(request)
        });
        let signer = Signer::new("key", "secret").unwrap();
        let service = SignRequestLayer::new(signer).layer(echo);
        let request = Request::post("/x").body(body).unwrap();
        let answer = tower::ServiceExt::oneshot(service, request);
        futures_util::FutureExt::now_or_never(answer).expect("ready at once")
    }

    #[test]
    fn the_layer_refuses_trailers_rather_than_dropping_them() {
        use http_body::Frame;
        let frames = |trailers: bool| {
            let mut frames = vec![Ok::<_, std::io::Error>(Frame::data(Bytes::from("x")))];
            if trailers {
                let mut map = http::HeaderMap::new();
                map.insert("x-checksum", HeaderValue::from_static("1"));
                frames.push(Ok(Frame::trailers(map)));
            }
            http_body_util::StreamBody::new(futures_util::stream::iter(frames))
        };
        let signed = sign_through(frames(false)).unwrap();
        assert!(signed.headers().contains_key(AUTHORIZATION));
        // A trailers frame with no field carries nothing to lose.
        let empty = futures_util::stream::iter([
            Ok::<_, std::io::Error>(Frame::data(Bytes::from("x"))),
            Ok(Frame::trailers(http::HeaderMap::new())),
        ]);
        assert!(sign_through(http_body_util::StreamBody::new(empty)).is_ok());
        let refused = sign_through(frames(true)).unwrap_err();
        assert!(
            matches!(refused.downcast_ref(), Some(SignError::Trailers)),
            "{refused}"
        );
    }

    #[test]
    fn a_body_error_is_the_sign_errors_source() {
        let failing = http_body_util::StreamBody::new(futures_util::stream::iter([Err::<
            http_body::Frame<Bytes>,
            _,
        >(
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        )]));
        let refused = sign_through(failing).unwrap_err();
        let Some(body @ SignError::Body(_)) = refused.downcast_ref::<SignError>() else {
            panic!("{refused}");
        };
        let source = std::error::Error::source(body).expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the body's error");
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    }

    #[test]
    fn debug_hides_the_secret() {
        let signer = Signer::new("key", "hunter2-secret").unwrap();
        let debug = format!("{signer:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn a_request_without_body_uses_the_empty_form() {
        let signer = Signer::new("key", "secret").unwrap();
        let empty = signer
            .authorization_with(&Method::GET, "/", b"", "n", 1)
            .unwrap();
        let raw = signer
            .clone()
            .body_form(BodyForm::Raw)
            .authorization_with(&Method::GET, "/", b"", "n", 1)
            .unwrap();
        assert_eq!(empty, raw);
    }
}
