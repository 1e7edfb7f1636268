use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tower_layer::Layer;

use super::{Scheme, Verify};
use crate::clock::{Clock, SystemClock};
use crate::key_store::KeyStore;
use crate::psk::{ArmorPsk, BodyForms};
use crate::rejection::{JsonRejection, OnRejection};
use crate::replay::{MokaReplayStore, ReplayStore};

pub use crate::psk::DEFAULT_WINDOW;

/// The default body limit: 2 MiB, as axum's `DefaultBodyLimit`.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The default time a client has to send its whole body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a key store or replay store has to answer.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Verifies signatures of a [`Scheme`] before the inner service sees a request.
///
/// [`VerifyPskLayer`] (`VerifyLayer<ArmorPsk>`) is the ARMOR-PSK verifier. Every setting has a
/// secure default (see each method). Cloning is cheap: the settings are shared. Its default
/// replay store is built with the first service made from it; on an axum `Router` of
/// handlers, call `.with_state(())` before serving, else that is at the first connection (see
/// [`replay_store`](VerifyLayer::replay_store)).
///
/// ```
/// use std::time::Duration;
/// use armor_psk::{key_store::MemoryKeyStore, replay::MokaReplayStore, VerifyPskLayer};
///
/// let keys = MemoryKeyStore::builder().key("key-1", "secret").build();
/// let layer = VerifyPskLayer::new(keys)
///     .replay_store(MokaReplayStore::builder().capacity(200_000).build())
///     .window(Duration::from_secs(120))
///     .body_limit(64 * 1024);
/// ```
#[must_use]
pub struct VerifyLayer<Sch> {
    pub(crate) config: Arc<Config<Sch>>,
}

/// The ARMOR-PSK verifier.
pub type VerifyPskLayer = VerifyLayer<ArmorPsk>;

impl<Sch> Clone for VerifyLayer<Sch> {
    fn clone(&self) -> Self {
        VerifyLayer {
            config: Arc::clone(&self.config),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Config<Sch> {
    pub(crate) scheme: Sch,
    pub(crate) replay_store: ReplayStoreChoice,
    pub(crate) body_limit: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) on_rejection: Arc<dyn OnRejection>,
}

/// The replay store a layer records into.
#[derive(Clone)]
pub(crate) enum ReplayStoreChoice {
    /// A [`MokaReplayStore`] with the default capacity, shared by the layer's clones and the
    /// services made from them. Built with the first service rather than with the layer, so
    /// that a layer then given another store does not size (about 30 ms) and drop a table it
    /// never uses; and not on the first request, which would wait for it (though a service
    /// may be made for the first connection: see [`VerifyLayer::replay_store`]).
    Default(Arc<OnceLock<MokaReplayStore>>),
    Given(Arc<dyn ReplayStore>),
}

impl ReplayStoreChoice {
    pub(crate) fn get(&self) -> &dyn ReplayStore {
        match self {
            ReplayStoreChoice::Default(store) => store.get_or_init(build_default_store),
            ReplayStoreChoice::Given(store) => &**store,
        }
    }
}

/// How many default replay stores this process has built.
static DEFAULT_STORES_BUILT: AtomicUsize = AtomicUsize::new(0);

/// A layer's default store. The second one in a process is logged: layers built apart (a
/// router's two parts, or a `VerifyPsk::new` for each connection) refuse only the replays
/// their own store saw, which is seldom what was meant.
fn build_default_store() -> MokaReplayStore {
    if DEFAULT_STORES_BUILT.fetch_add(1, Ordering::Relaxed) == 1 {
        second_default_store();
    }
    MokaReplayStore::default()
}

#[cold]
#[inline(never)]
fn second_default_store() {
    tracing::warn!(
        "a second default replay store was built: layers built apart accept a request once \
         each, as each refuses only the replays its own store saw; build one layer and clone \
         it, or give every layer the same store with .replay_store(store.clone())"
    );
}

impl VerifyLayer<ArmorPsk> {
    /// The ARMOR-PSK verifier, with secrets from `key_store` and every other setting at its
    /// default.
    pub fn new(key_store: impl KeyStore) -> Self {
        VerifyLayer::with_scheme(ArmorPsk::new(key_store))
    }

    /// How far, either way, a request's timestamp may be from the server's clock. Defaults to
    /// 300 seconds (the Armor documents' five minutes); whole seconds count.
    pub fn window(self, window: Duration) -> Self {
        self.map_scheme(|scheme| scheme.window(window))
    }

    /// The body forms a signature may use. Defaults to all three: `digest`
    /// (base64(SHA-512(body))), `raw` and `empty`; `empty` counts for a request with a body
    /// only after [`insecure_accept_unsigned_body`](Self::insecure_accept_unsigned_body).
    ///
    /// For a request without a body, `raw` and `empty` sign the same bytes, and that is what
    /// every client in the field sends for a `GET`: keep one of them.
    pub fn body_forms(self, forms: BodyForms) -> Self {
        self.map_scheme(|scheme| scheme.body_forms(forms))
    }

    /// Accepts a request with a body whose signature leaves the body out (the `empty` form).
    ///
    /// **Insecure**: such a body is not covered by the signature, so anyone who sees one signed
    /// request can send its headers with another body (once, the replay rules still hold).
    /// Off by default; turn it on only for clients that cannot be changed.
    pub fn insecure_accept_unsigned_body(self) -> Self {
        self.map_scheme(ArmorPsk::insecure_accept_unsigned_body)
    }

    /// Whether two requests of one key may not share a nonce inside the window. Defaults to
    /// `true`, as the Armor documents require. Turn it off for clients that send
    /// nonce = timestamp more than once a second; the MAC rule still refuses every replay.
    pub fn unique_nonce(self, unique: bool) -> Self {
        self.map_scheme(|scheme| scheme.unique_nonce(unique))
    }

    /// The body forms this layer accepts for a request with or without a body.
    pub fn accepted_forms(&self, has_body: bool) -> BodyForms {
        self.scheme().accepted_forms(has_body)
    }

    /// The scheme's settings, through its own builder methods.
    fn map_scheme(self, change: impl FnOnce(ArmorPsk) -> ArmorPsk) -> Self {
        self.with(|config| config.scheme = change(config.scheme.clone()))
    }
}

impl<Sch: Clone> VerifyLayer<Sch> {
    /// A verifier for `scheme`, with the shared settings at their defaults.
    pub fn with_scheme(scheme: Sch) -> Self {
        VerifyLayer {
            config: Arc::new(Config {
                scheme,
                replay_store: ReplayStoreChoice::Default(Arc::default()),
                body_limit: DEFAULT_BODY_LIMIT,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                store_timeout: DEFAULT_STORE_TIMEOUT,
                clock: Arc::new(SystemClock),
                on_rejection: Arc::new(JsonRejection),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config<Sch>)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// The scheme.
    pub fn scheme(&self) -> &Sch {
        &self.config.scheme
    }

    /// Where accepted requests are remembered, to refuse their replays. Defaults to a
    /// [`MokaReplayStore`] with its default capacity, private to this layer and its clones,
    /// built with the first service made from the layer (so a layer given another store never
    /// builds it). Building it takes about 30 ms. An axum `Router` whose routes are handlers
    /// makes its services when it is given its state, which `axum::serve` does at each
    /// connection: call `.with_state(())` on the router before serving it, and the store is
    /// built then rather than by the first connection's first request.
    ///
    /// [`MokaReplayStore`]: crate::replay::MokaReplayStore
    pub fn replay_store(self, store: impl ReplayStore) -> Self {
        self.with(|config| config.replay_store = ReplayStoreChoice::Given(Arc::new(store)))
    }

    /// The largest body, in bytes, the verifier reads. Defaults to 2 MiB. A request with a
    /// larger `Content-Length` is refused before its body is read, and a body without one is
    /// refused as soon as it passes the limit: 413 `body_too_large`.
    pub fn body_limit(self, bytes: usize) -> Self {
        self.with(|config| config.body_limit = bytes)
    }

    /// How long a client has to send its whole body, from when the verifier starts reading it.
    /// Defaults to 10 seconds; a slower body gets 408 `body_timeout`. Needs a tokio runtime
    /// with the time driver, as axum's server has.
    pub fn body_timeout(self, timeout: Duration) -> Self {
        self.with(|config| config.body_timeout = timeout)
    }

    /// How long the key store and the replay store each have to answer. Defaults to 5 seconds;
    /// a store that takes longer (or fails, or panics) gets the request a 503.
    pub fn store_timeout(self, timeout: Duration) -> Self {
        self.with(|config| config.store_timeout = timeout)
    }

    /// Where the verifier reads the time. Defaults to [`SystemClock`]; tests use
    /// [`ManualClock`](crate::clock::ManualClock).
    pub fn clock(self, clock: impl Clock) -> Self {
        self.with(|config| config.clock = Arc::new(clock))
    }

    /// Builds the response for a refused request. Defaults to [`JsonRejection`].
    pub fn on_rejection(self, on_rejection: impl OnRejection) -> Self {
        self.with(|config| config.on_rejection = Arc::new(on_rejection))
    }
}

impl<S, Sch: Scheme> Layer<S> for VerifyLayer<Sch> {
    type Service = Verify<S, Sch>;

    fn layer(&self, inner: S) -> Self::Service {
        Verify::from_config(inner, Arc::clone(&self.config))
    }
}

impl<Sch: fmt::Debug> fmt::Debug for VerifyLayer<Sch> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}

impl<Sch: fmt::Debug> fmt::Debug for Config<Sch> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyConfig")
            .field("scheme", &self.scheme)
            .field("body_limit", &self.body_limit)
            .field("body_timeout", &self.body_timeout)
            .field("store_timeout", &self.store_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key_store::MemoryKeyStore;

    #[test]
    fn the_default_replay_store_is_built_with_the_first_service_only() {
        let keys = || MemoryKeyStore::builder().key("key-1", "secret").build();
        let layer = VerifyLayer::new(keys());
        let ReplayStoreChoice::Default(store) = &layer.config.replay_store else {
            panic!("a new layer records into the default store");
        };
        assert!(store.get().is_none());
        let _service = layer.clone().body_limit(1024).layer(());
        assert!(store.get().is_some());

        // None for a scheme that records nothing, before or after a request.
        let date = VerifyLayer::with_scheme(crate::date_hmac::DateHmac::new(keys()));
        let ReplayStoreChoice::Default(store) = &date.config.replay_store else {
            panic!("a new layer records into the default store");
        };
        let service = date.clone().layer(tower::service_fn(|_| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(bytes::Bytes::new()))
        }));
        let mut request = http::Request::get("/")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        crate::date_hmac::DateHmacSigner::new("key-1", "secret")
            .unwrap()
            .sign(&mut request)
            .unwrap();
        let response = tower::ServiceExt::oneshot(service, request);
        let response = futures_util::FutureExt::now_or_never(response).expect("ready at once");
        assert_eq!(response.unwrap().status(), http::StatusCode::OK);
        assert!(store.get().is_none());

        let given = VerifyLayer::new(keys()).replay_store(MokaReplayStore::builder().build());
        assert!(matches!(
            given.config.replay_store,
            ReplayStoreChoice::Given(_)
        ));
    }
}
