use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::VerifyPsk;
use crate::clock::{Clock, SystemClock};
use crate::key_store::KeyStore;
use crate::psk::{BodyForm, BodyForms};
use crate::rejection::{JsonRejection, OnRejection};
use crate::replay::{MokaReplayStore, ReplayStore};

/// The default allowed distance between a request's timestamp and the server's clock.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

/// The default body limit: 2 MiB, as axum's `DefaultBodyLimit`.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The default time a client has to send its whole body.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a key store or replay store has to answer.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Verifies ARMOR-PSK signatures before the inner service sees a request.
///
/// Built with the key store, then configured with builder methods; every setting has a secure
/// default (see each method). Cloning is cheap: the settings are shared.
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
#[derive(Clone)]
#[must_use]
pub struct VerifyPskLayer {
    pub(crate) config: Arc<Config>,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) key_store: Arc<dyn KeyStore>,
    pub(crate) replay_store: Arc<dyn ReplayStore>,
    pub(crate) window_secs: u64,
    pub(crate) body_forms: BodyForms,
    pub(crate) unsigned_body: bool,
    pub(crate) unique_nonce: bool,
    pub(crate) body_limit: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) store_timeout: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) on_rejection: Arc<dyn OnRejection>,
}

impl Config {
    /// The forms a request may have been signed with, given whether it has a body.
    pub(crate) fn forms_for(&self, has_body: bool) -> BodyForms {
        if has_body && !self.unsigned_body {
            self.body_forms.without(BodyForm::Empty)
        } else {
            self.body_forms
        }
    }
}

impl VerifyPskLayer {
    /// A layer that looks secrets up in `key_store`, with every other setting at its default.
    pub fn new(key_store: impl KeyStore) -> Self {
        VerifyPskLayer {
            config: Arc::new(Config {
                key_store: Arc::new(key_store),
                replay_store: Arc::new(MokaReplayStore::default()),
                window_secs: DEFAULT_WINDOW.as_secs(),
                body_forms: BodyForms::ALL,
                unsigned_body: false,
                unique_nonce: true,
                body_limit: DEFAULT_BODY_LIMIT,
                body_timeout: DEFAULT_BODY_TIMEOUT,
                store_timeout: DEFAULT_STORE_TIMEOUT,
                clock: Arc::new(SystemClock),
                on_rejection: Arc::new(JsonRejection),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// Where accepted requests are remembered, to refuse their replays. Defaults to a
    /// [`MokaReplayStore`] with its default capacity, private to this layer and its clones.
    pub fn replay_store(self, store: impl ReplayStore) -> Self {
        self.with(|config| config.replay_store = Arc::new(store))
    }

    /// How far, either way, a request's timestamp may be from the server's clock. Defaults to
    /// 300 seconds (the Armor documents' five minutes); whole seconds count.
    pub fn window(self, window: Duration) -> Self {
        self.with(|config| config.window_secs = window.as_secs())
    }

    /// The body forms a signature may use. Defaults to all three: `digest`
    /// (base64(SHA-512(body))), `raw` and `empty`; `empty` counts for a request with a body
    /// only after [`insecure_accept_unsigned_body`](Self::insecure_accept_unsigned_body).
    ///
    /// For a request without a body, `raw` and `empty` sign the same bytes, and that is what
    /// every client in the field sends for a `GET`: keep one of them.
    pub fn body_forms(self, forms: BodyForms) -> Self {
        self.with(|config| config.body_forms = forms)
    }

    /// Accepts a request with a body whose signature leaves the body out (the `empty` form).
    ///
    /// **Insecure**: such a body is not covered by the signature, so anyone who sees one signed
    /// request can send its headers with another body (once, the replay rules still hold).
    /// Off by default; turn it on only for clients that cannot be changed.
    pub fn insecure_accept_unsigned_body(self) -> Self {
        self.with(|config| config.unsigned_body = true)
    }

    /// Whether two requests of one key may not share a nonce inside the window. Defaults to
    /// `true`, as the Armor documents require. Turn it off for clients that send
    /// nonce = timestamp more than once a second; the MAC rule still refuses every replay.
    pub fn unique_nonce(self, unique: bool) -> Self {
        self.with(|config| config.unique_nonce = unique)
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

impl<S> Layer<S> for VerifyPskLayer {
    type Service = VerifyPsk<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyPsk::from_config(inner, Arc::clone(&self.config))
    }
}

impl fmt::Debug for VerifyPskLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyPskConfig")
            .field("window_secs", &self.window_secs)
            .field("body_forms", &self.body_forms)
            .field("insecure_accept_unsigned_body", &self.unsigned_body)
            .field("unique_nonce", &self.unique_nonce)
            .field("body_limit", &self.body_limit)
            .field("body_timeout", &self.body_timeout)
            .field("store_timeout", &self.store_timeout)
            .finish_non_exhaustive()
    }
}
