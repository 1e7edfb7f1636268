//! Where secrets come from: the [`KeyStore`] trait and the stores that ship with the crate.
//!
//! - [`MemoryKeyStore`]: a fixed set, built in code (tests, embedded use).
//! - [`FileKeyStore`]: a TOML file, reloaded atomically on demand.
//!
//! Any other source (a database, a secrets manager) implements [`KeyStore`]:
//!
//! ```
//! use armor_psk::key_store::{KeyStore, KeyStoreError};
//! use armor_psk::Secret;
//!
//! struct FromEnv;
//!
//! #[armor_psk::async_trait]
//! impl KeyStore for FromEnv {
//!     async fn lookup(&self, key_id: &str) -> Result<Option<Secret>, KeyStoreError> {
//!         // One variable per key id, and one key id per variable: an id that would need
//!         // respelling (`a-b` as `a_b`, which another id may be) is unknown.
//!         if !key_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
//!             return Ok(None);
//!         }
//!         let name = format!("ARMOR_SECRET_{key_id}");
//!         Ok(std::env::var(name).ok().map(Secret::from))
//!     }
//! }
//! ```

mod file;
mod memory;
mod secret;

use std::sync::Arc;

use async_trait::async_trait;

pub use file::{FileKeyStore, FileKeyStoreError, SchemeKeys, DEFAULT_SCHEME};
pub use memory::{MemoryKeyStore, MemoryKeyStoreBuilder};
pub use secret::Secret;

/// Looks up the secret of an API key by its id.
///
/// `Ok(None)` means the key is unknown (or revoked or disabled): the request gets the scheme's
/// refusal of an unknown key (401 `unknown_key` for ARMOR-PSK, 400 `invalid_api_key` for
/// date-hmac). `Err` means the store could not answer: the request gets 503
/// `key_store_unavailable`, and the error is logged (it must not hold a secret). So does an
/// empty secret: an HMAC keyed by nothing is one anyone can compute, so a store that answers
/// one (a secret read from a variable that is set but empty, say) is taken as failing.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// The secret of `key_id`, or `None` when there is no such active key.
    async fn lookup(&self, key_id: &str) -> Result<Option<Secret>, KeyStoreError>;

    /// The answer [`lookup`](KeyStore::lookup) would give, when the store has it at hand
    /// (an in-memory store); `None` when it would have to wait, and the verifier awaits
    /// `lookup` instead.
    ///
    /// A request whose stores both answer at once is verified inside the service's `call`,
    /// with no future allocated. Defaults to `None`. An implementation must not block, and
    /// must agree with `lookup`.
    fn lookup_now(&self, key_id: &str) -> Option<Result<Option<Secret>, KeyStoreError>> {
        let _ = key_id;
        None
    }
}

/// Implements [`KeyStore`] for an in-memory store whose `$find(&self, key_id)` gives the
/// secret at once: `lookup` and `lookup_now` then give the same answer by construction.
macro_rules! key_store_at_once {
    ($store:ty, $find:ident) => {
        #[async_trait::async_trait]
        impl $crate::key_store::KeyStore for $store {
            async fn lookup(
                &self,
                key_id: &str,
            ) -> Result<Option<$crate::Secret>, $crate::key_store::KeyStoreError> {
                Ok(self.$find(key_id))
            }

            fn lookup_now(
                &self,
                key_id: &str,
            ) -> Option<Result<Option<$crate::Secret>, $crate::key_store::KeyStoreError>> {
                Some(Ok(self.$find(key_id)))
            }
        }
    };
}
use key_store_at_once;

/// A key store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("key store unavailable: {source}")]
pub struct KeyStoreError {
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl KeyStoreError {
    /// Wraps the store's own error, which is logged but never sent to the client.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        KeyStoreError {
            source: source.into(),
        }
    }
}

#[async_trait]
impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    async fn lookup(&self, key_id: &str) -> Result<Option<Secret>, KeyStoreError> {
        (**self).lookup(key_id).await
    }

    fn lookup_now(&self, key_id: &str) -> Option<Result<Option<Secret>, KeyStoreError>> {
        (**self).lookup_now(key_id)
    }
}

#[async_trait]
impl KeyStore for Box<dyn KeyStore> {
    async fn lookup(&self, key_id: &str) -> Result<Option<Secret>, KeyStoreError> {
        (**self).lookup(key_id).await
    }

    fn lookup_now(&self, key_id: &str) -> Option<Result<Option<Secret>, KeyStoreError>> {
        (**self).lookup_now(key_id)
    }
}
