use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};

/// An authorization code waiting to be redeemed at `/auth/token`.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeGrant {
    /// Who signed in.
    pub username: String,
    /// The user's password when they signed in, as [`User::password_fingerprint`]: the code
    /// is refused once the password has changed.
    ///
    /// [`User::password_fingerprint`]: super::User::password_fingerprint
    pub password_fingerprint: String,
    /// The last Unix second the code may be redeemed.
    pub expires_at: i64,
}

/// A signed-in user's session, found by its access token.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Who signed in.
    pub username: String,
    /// The user's password when they signed in, as [`User::password_fingerprint`]: the
    /// session ends once the password has changed.
    ///
    /// [`User::password_fingerprint`]: super::User::password_fingerprint
    pub password_fingerprint: String,
    /// The last Unix second the token is good for.
    pub expires_at: i64,
}

impl fmt::Debug for CodeGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeGrant")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("username", &self.username)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A session store could not answer.
#[derive(Debug, thiserror::Error)]
#[error("session store unavailable: {0}")]
pub struct SessionStoreError(pub Box<dyn std::error::Error + Send + Sync>);

/// Where authorization codes and sessions live. [`Sessions`](super::Sessions) hands a store each
/// code and token as its SHA-256 (43 characters of URL-safe base64), never as issued, so that
/// one who can read the store (a shared database, its backups) finds no code or token there
/// to use. They are still the keys to live sessions' records: a store must not log them.
///
/// Every method takes the caller's `now` (Unix seconds), so expiry follows the injected clock.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Remembers a fresh code.
    async fn insert_code(
        &self,
        code: &str,
        grant: CodeGrant,
        now: i64,
    ) -> Result<(), SessionStoreError>;

    /// Takes a code out, so that it is good once: `None` when it is unknown, already redeemed
    /// or expired. Atomic: of concurrent calls for one code, at most one gets it.
    async fn redeem_code(
        &self,
        code: &str,
        now: i64,
    ) -> Result<Option<CodeGrant>, SessionStoreError>;

    /// Remembers a new session.
    async fn insert_session(
        &self,
        token: &str,
        session: SessionRecord,
        now: i64,
    ) -> Result<(), SessionStoreError>;

    /// The live session of `token`, if any.
    async fn session(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, SessionStoreError>;

    /// Moves a live session's expiry to `expires_at`; `None` when it is unknown or expired.
    async fn extend_session(
        &self,
        token: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Option<SessionRecord>, SessionStoreError>;
}

/// The store as [`Sessions`](super::Sessions) uses it: it is reached only through
/// [`DigestKeys::keyed`], so that every code and token passes through [`store_key`] on its way
/// in. Not a [`SessionStore`] itself, so that a call costs one dynamic call and one boxed
/// future, the store's.
pub(crate) struct DigestKeys(Arc<dyn SessionStore>);

/// What a store is given for a code or token: its SHA-256, in URL-safe base64. A code or token
/// holds 128 random bits or more, so its digest needs no salt or stretching.
fn store_key(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(secret.as_bytes()))
}

impl DigestKeys {
    pub(crate) fn new(store: Arc<dyn SessionStore>) -> Self {
        DigestKeys(store)
    }

    /// The store, and the key it holds `secret` (a code or an access token) under.
    pub(crate) fn keyed(&self, secret: &str) -> (&dyn SessionStore, String) {
        (&*self.0, store_key(secret))
    }
}

/// The default [`SessionStore`]: two moka caches with per-entry expiry, in this process.
#[derive(Clone)]
pub struct MokaSessionStore {
    codes: Cache<String, Timed<CodeGrant>>,
    sessions: Cache<String, Timed<SessionRecord>>,
}

impl fmt::Debug for MokaSessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MokaSessionStore")
            .field("codes", &self.codes.entry_count())
            .field("sessions", &self.sessions.entry_count())
            .finish()
    }
}

/// A value with the Unix second it expires, and how long moka keeps it from its insertion.
#[derive(Clone)]
struct Timed<V> {
    value: V,
    expires_at: i64,
    keep_secs: u64,
}

impl<V> Timed<V> {
    fn new(value: V, expires_at: i64, now: i64) -> Self {
        let keep_secs = u64::try_from(expires_at.saturating_sub(now)).unwrap_or(0) + 1;
        Timed {
            value,
            expires_at,
            keep_secs,
        }
    }

    fn is_live(&self, now: i64) -> bool {
        self.expires_at >= now
    }
}

struct KeepFor;

impl<K, V> Expiry<K, Timed<V>> for KeepFor {
    fn expire_after_create(&self, _: &K, value: &Timed<V>, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(value.keep_secs))
    }

    fn expire_after_update(
        &self,
        _: &K,
        value: &Timed<V>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(Duration::from_secs(value.keep_secs))
    }
}

impl Default for MokaSessionStore {
    fn default() -> Self {
        MokaSessionStore::new(100_000)
    }
}

impl MokaSessionStore {
    /// A store holding up to `capacity` codes and as many sessions. Past that, the least
    /// recently used go to make room: a user whose session went signs in again. (Not moka's
    /// default policy, which admits a new entry only if it is read more often than the one it
    /// would replace: a code is never read before it is redeemed, and a fresh token has not
    /// been read yet, so a full store would drop every new one, and anyone signing in often
    /// enough could keep it full.)
    pub fn new(capacity: u64) -> Self {
        MokaSessionStore {
            codes: cache_of(capacity),
            sessions: cache_of(capacity),
        }
    }
}

fn cache_of<V: Clone + Send + Sync + 'static>(capacity: u64) -> Cache<String, Timed<V>> {
    Cache::builder()
        .max_capacity(capacity)
        .eviction_policy(EvictionPolicy::lru())
        .expire_after(KeepFor)
        .build()
}

/// Expiry follows the caller's `now`; moka's own timer only frees the memory afterwards.
#[async_trait]
impl SessionStore for MokaSessionStore {
    async fn insert_code(
        &self,
        code: &str,
        grant: CodeGrant,
        now: i64,
    ) -> Result<(), SessionStoreError> {
        let expires_at = grant.expires_at;
        self.codes
            .insert(code.to_owned(), Timed::new(grant, expires_at, now));
        Ok(())
    }

    async fn redeem_code(
        &self,
        code: &str,
        now: i64,
    ) -> Result<Option<CodeGrant>, SessionStoreError> {
        Ok(self
            .codes
            .remove(code)
            .filter(|timed| timed.is_live(now))
            .map(|timed| timed.value))
    }

    async fn insert_session(
        &self,
        token: &str,
        session: SessionRecord,
        now: i64,
    ) -> Result<(), SessionStoreError> {
        let expires_at = session.expires_at;
        self.sessions
            .insert(token.to_owned(), Timed::new(session, expires_at, now));
        Ok(())
    }

    async fn session(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, SessionStoreError> {
        Ok(self
            .sessions
            .get(token)
            .filter(|timed| timed.is_live(now))
            .map(|timed| timed.value))
    }

    async fn extend_session(
        &self,
        token: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Option<SessionRecord>, SessionStoreError> {
        let outcome =
            self.sessions
                .entry(token.to_owned())
                .and_compute_with(|current| match current {
                    Some(entry) if entry.value().is_live(now) => {
                        let mut session = entry.into_value().value;
                        session.expires_at = expires_at;
                        Op::Put(Timed::new(session, expires_at, now))
                    }
                    _ => Op::Nop,
                });
        Ok(match outcome {
            CompResult::ReplacedWith(entry) => Some(entry.into_value().value),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_store_makes_room_for_new_codes_and_sessions() {
        let store = MokaSessionStore::new(4);
        let record = |n: i64| SessionRecord {
            username: format!("user-{n}"),
            password_fingerprint: "f".into(),
            expires_at: 1_900,
        };
        let grant = |n: i64| CodeGrant {
            username: format!("user-{n}"),
            password_fingerprint: "f".into(),
            expires_at: 1_120,
        };
        for n in 0..4 {
            let (token, code) = (format!("t{n}"), format!("c{n}"));
            store
                .insert_session(&token, record(n), 1_000)
                .await
                .unwrap();
            store.insert_code(&code, grant(n), 1_000).await.unwrap();
        }
        // The sessions in use are read often; the codes are never read before they are redeemed.
        for _ in 0..10 {
            for n in 1..4 {
                store.session(&format!("t{n}"), 1_000).await.unwrap();
            }
        }
        store.sessions.run_pending_tasks();
        store.insert_session("t4", record(4), 1_000).await.unwrap();
        store.insert_code("c4", grant(4), 1_000).await.unwrap();
        store.sessions.run_pending_tasks();
        store.codes.run_pending_tasks();
        // The newest are kept; the least recently used went to make room.
        assert_eq!(store.session("t4", 1_000).await.unwrap(), Some(record(4)));
        assert_eq!(
            store.redeem_code("c4", 1_000).await.unwrap(),
            Some(grant(4))
        );
        assert_eq!(store.session("t0", 1_000).await.unwrap(), None);
        assert_eq!(store.redeem_code("c0", 1_000).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_code_is_good_once_and_until_it_expires() {
        let store = MokaSessionStore::default();
        let grant = |expires_at| CodeGrant {
            username: "ann".into(),
            password_fingerprint: "f".into(),
            expires_at,
        };
        store.insert_code("c1", grant(1_120), 1_000).await.unwrap();
        assert_eq!(
            store.redeem_code("c1", 1_000).await.unwrap(),
            Some(grant(1_120))
        );
        assert_eq!(store.redeem_code("c1", 1_000).await.unwrap(), None);
        store.insert_code("c2", grant(1_120), 1_000).await.unwrap();
        assert_eq!(store.redeem_code("c2", 1_121).await.unwrap(), None);
        assert_eq!(store.redeem_code("nope", 1_000).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_session_can_be_extended_while_it_lives() {
        let store = MokaSessionStore::default();
        let record = SessionRecord {
            username: "ann".into(),
            password_fingerprint: "f".into(),
            expires_at: 1_900,
        };
        store
            .insert_session("t", record.clone(), 1_000)
            .await
            .unwrap();
        assert_eq!(store.session("t", 1_900).await.unwrap(), Some(record));
        let extended = store
            .extend_session("t", 2_800, 1_899)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(extended.expires_at, 2_800);
        assert!(store.session("t", 2_000).await.unwrap().is_some());
        assert_eq!(store.session("t", 2_801).await.unwrap(), None);
        assert_eq!(store.extend_session("t", 4_000, 2_801).await.unwrap(), None);
    }
}
