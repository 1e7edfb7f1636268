//! The verifier: a tower [`Layer`](tower_layer::Layer) that checks ARMOR-PSK signatures.
//!
//! For each request, in this order:
//!
//! 1. parse the `Authorization` header (400 `malformed_credentials`, 401 `missing_credentials`);
//! 2. check the timestamp against the window (401 `timestamp_out_of_window`);
//! 3. look the key up (401 `unknown_key`; 503 `key_store_unavailable` when the store fails,
//!    panics or passes its timeout);
//! 4. read the body under the limit and the timeout (413 `body_too_large`, from
//!    `Content-Length` before reading, and while a body without one streams; 408
//!    `body_timeout`; 400 `body_read_failed`);
//! 5. verify the MAC in constant time against the accepted body forms (401 `bad_signature`);
//! 6. record the request against replays (401 `replayed_nonce`, 503 `nonce_store_full` or
//!    `nonce_store_unavailable`), then check the window once more on a fresh clock read;
//! 7. call the inner service with a [`VerifiedKey`] in the request's extensions.
//!
//! ```
//! use armor_psk::{key_store::MemoryKeyStore, VerifiedKey, VerifyPskLayer};
//! use axum::{routing::get, Router};
//!
//! let keys = MemoryKeyStore::builder().key("key-1", "secret").build();
//! let app: Router = Router::new()
//!     .route("/accounts/{id}", get(|key: VerifiedKey| async move { key.key_id().to_owned() }))
//!     .layer(VerifyPskLayer::new(keys));
//! ```

mod body;
mod explain;
mod future;
mod identity;
mod layer;
mod scheme;
mod service;

pub use body::VerifiedBody;
pub use explain::SigningStringFor;
pub use future::ResponseFuture;
pub(crate) use identity::KeyAndNonce;
pub use identity::VerifiedKey;
pub use layer::{
    VerifyLayer, VerifyPskLayer, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT, DEFAULT_STORE_TIMEOUT,
    DEFAULT_WINDOW,
};
pub use scheme::{OneOf, OneOfClaim, Scheme};
#[cfg(feature = "session")]
pub(crate) use service::hide_credentials;
pub use service::read_body;
pub use service::{Verify, VerifyPsk};
