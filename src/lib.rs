//! Verify (and sign) the Armor API's **ARMOR-PSK** request signatures, as a tower layer.
//!
//! ```text
//! Authorization: ARMOR-PSK {keyId}:{base64 HMAC-SHA512}:{nonce}:{unixTimestamp}
//! ```
//!
//! [`VerifyPskLayer`] parses the header, looks the secret up through a [`KeyStore`], recomputes
//! the HMAC in constant time over `keyId + METHOD + path + nonce + timestamp + bodyPart`,
//! enforces the five-minute window and refuses replays. A refused request gets a JSON
//! [`Rejection`] response; an accepted one reaches the inner service with a [`VerifiedKey`] in
//! its extensions. [`Signer`] and [`SignRequestLayer`] sign requests the same way, for clients
//! and tests.
//!
//! # Example
//!
//! ```
//! use armor_psk::{key_store::MemoryKeyStore, Signer, VerifiedKey, VerifyPskLayer};
//! use axum::{body::Body, routing::get, Router};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let keys = MemoryKeyStore::builder()
//!     .key("20a37099-4a0b-432f-bf46-5fa690a0405c", "my secret")
//!     .build();
//! let app = Router::new()
//!     .route("/me", get(|key: VerifiedKey| async move { format!("key {}", key.key_id()) }))
//!     .layer(VerifyPskLayer::new(keys));
//!
//! // A client signs with the same key id and secret.
//! let signer = Signer::new("20a37099-4a0b-432f-bf46-5fa690a0405c", "my secret").unwrap();
//! let mut request = Request::get("/me").body(Vec::new()).unwrap();
//! signer.sign(&mut request).unwrap();
//!
//! let response = app.clone().oneshot(request.map(Body::from)).await.unwrap();
//! assert_eq!(response.status(), StatusCode::OK);
//!
//! // An unsigned request is refused.
//! let response = app.oneshot(Request::get("/me").body(Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//! # }
//! ```
//!
//! # Modules
//!
//! - [`psk`]: the scheme itself (header parsing and formatting, the signing string, body forms);
//! - [`verify`]: the layer, its service and future, the [`Scheme`](verify::Scheme) trait, and
//!   [`VerifiedKey`];
//! - [`key_store`]: the [`KeyStore`] trait, [`Secret`], in-memory and TOML file stores;
//! - [`replay`]: the [`ReplayStore`](replay::ReplayStore) trait, the moka store (the default)
//!   and the compact store;
//! - [`rejection`]: [`Rejection`], its statuses and codes, and [`OnRejection`](rejection::OnRejection);
//! - [`clock`]: the system clock and a manual one for tests;
//! - [`date_hmac`]: a second scheme on the same machinery, the License API's signed `Date`
//!   header (it signs nothing else: see its docs);
//! - `policy` and `session` (feature `session`): the routes an API key may not call, and
//!   FH-AUTH sign-in with the layer that accepts both ways in.
//!
//! # Features
//!
//! - `axum` (default): [`VerifiedKey`] is an axum extractor, [`Rejection`] implements
//!   `IntoResponse`, and the path is read from axum's `OriginalUri` behind `nest`.
//! - `session` (default, through `cli`): FH-AUTH sessions (`session`) and the API-key route
//!   policy (`policy`).
//! - `cli` (default): the `armor-psk` binary.

#![cfg_attr(docsrs, feature(doc_auto_cfg))]
#![deny(unsafe_code, unreachable_pub)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod clock;
pub mod date_hmac;
mod hashing;
pub mod key_store;
#[cfg(feature = "session")]
pub mod policy;
pub mod psk;
pub mod rejection;
pub mod replay;
#[cfg(feature = "session")]
pub mod session;
mod signer;
pub mod verify;

/// Re-exported so that key and replay stores can be written without naming the crate.
pub use async_trait::async_trait;
pub use key_store::{KeyStore, Secret};
pub use rejection::Rejection;
pub use signer::{BoxError, SignError, SignRequest, SignRequestLayer, Signer};
pub use verify::{VerifiedKey, VerifyPsk, VerifyPskLayer};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
