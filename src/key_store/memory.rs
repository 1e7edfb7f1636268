use std::collections::HashMap;
use std::fmt;

use super::Secret;
use crate::hashing::KeyHashing;

/// A fixed set of keys held in memory.
///
/// Key ids are hashed with a fast keyed hash, not SipHash: clients only look keys up, so
/// whatever ids they send cannot crowd the table. Build it from key ids you issue (a UUID each,
/// say), not from many ids chosen by others.
///
/// ```
/// use armor_psk::key_store::MemoryKeyStore;
///
/// let store = MemoryKeyStore::builder()
///     .key("20a37099-4a0b-432f-bf46-5fa690a0405c", "my secret")
///     .build();
/// let from_pairs: MemoryKeyStore = [("key-1", "secret one"), ("key-2", "secret two")]
///     .into_iter()
///     .collect();
/// assert_eq!(from_pairs.len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct MemoryKeyStore {
    keys: HashMap<String, Secret, KeyHashing>,
}

impl MemoryKeyStore {
    /// A builder, to add keys one by one.
    pub fn builder() -> MemoryKeyStoreBuilder {
        MemoryKeyStoreBuilder::default()
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The secret of `key_id`, without going through the async trait.
    pub fn get(&self, key_id: &str) -> Option<&Secret> {
        self.keys.get(key_id)
    }
}

impl<K: Into<String>, S: Into<Secret>> FromIterator<(K, S)> for MemoryKeyStore {
    fn from_iter<I: IntoIterator<Item = (K, S)>>(keys: I) -> Self {
        MemoryKeyStore {
            keys: keys
                .into_iter()
                .map(|(id, secret)| (id.into(), secret.into()))
                .collect(),
        }
    }
}

/// Lists the key ids only.
impl fmt::Debug for MemoryKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryKeyStore")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl MemoryKeyStore {
    fn find(&self, key_id: &str) -> Option<Secret> {
        self.keys.get(key_id).cloned()
    }
}

super::key_store_at_once!(MemoryKeyStore, find);

/// Builds a [`MemoryKeyStore`].
#[derive(Debug, Default)]
#[must_use]
pub struct MemoryKeyStoreBuilder {
    store: MemoryKeyStore,
}

impl MemoryKeyStoreBuilder {
    /// Adds (or replaces) a key. An empty secret is taken, and its requests refused (503
    /// `key_store_unavailable`): an HMAC keyed by nothing is one anyone can compute.
    pub fn key(mut self, key_id: impl Into<String>, secret: impl Into<Secret>) -> Self {
        self.store.keys.insert(key_id.into(), secret.into());
        self
    }

    /// The store.
    pub fn build(self) -> MemoryKeyStore {
        self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyStore;

    #[tokio::test]
    async fn finds_known_keys_only() {
        let store = MemoryKeyStore::builder().key("a", "secret-a").build();
        assert_eq!(
            store.lookup("a").await.unwrap(),
            Some(Secret::from("secret-a"))
        );
        assert_eq!(store.lookup("b").await.unwrap(), None);
        let boxed: Box<dyn KeyStore> = Box::new(store.clone());
        assert!(boxed.lookup("a").await.unwrap().is_some());
        let shared = std::sync::Arc::new(store);
        assert!(shared.lookup("a").await.unwrap().is_some());
        assert!(!format!("{shared:?}").contains("secret-a"));
    }
}
