//! FH-AUTH, the Armor API's other way in: username and password for a code, the code for an
//! access token, and `Authorization: FH-AUTH <token>` on each request.
//!
//! - [`Sessions`] holds the users, the code and session store, and the clock; its
//!   [`router`](Sessions::router) serves `POST /auth/authorize`, `POST /auth/token` and
//!   `POST /auth/token/reissue`.
//! - [`ArmorAuthLayer`] accepts both schemes on one router: ARMOR-PSK through a
//!   [`VerifyPskLayer`](crate::VerifyPskLayer), FH-AUTH through [`Sessions`]. It enforces the
//!   API-key [`RoutePolicy`](crate::policy::RoutePolicy) and `X-Account-Context`, and puts an
//!   [`Identity`] in the request's extensions.
//!
//! ```
//! use armor_psk::key_store::MemoryKeyStore;
//! use armor_psk::session::{hash_password, ArmorAuthLayer, Identity, Sessions, User};
//! use armor_psk::VerifyPskLayer;
//! use axum::{routing::get, Router};
//!
//! let users = [User::new("ann@example.com", hash_password("pw").unwrap(), vec![42]).unwrap()];
//! let sessions = Sessions::builder(users.into_iter().collect()).build();
//! let keys = MemoryKeyStore::builder().key("key-1", "secret").build();
//!
//! let api = Router::new()
//!     .route("/me", get(|who: Identity| async move { format!("{who:?}") }))
//!     .layer(ArmorAuthLayer::new(VerifyPskLayer::new(keys), sessions.clone()));
//! let app: Router = api.merge(sessions.router());
//! ```

mod auth;
mod routes;
mod store;
mod users;

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

pub use auth::{ArmorAuth, ArmorAuthLayer, Identity};
pub use routes::{
    username_fits, AuthEndpointError, MAX_AUTH_BODY, MAX_PASSWORD_LEN, MAX_USERNAME_LEN,
};
pub use store::{CodeGrant, MokaSessionStore, SessionRecord, SessionStore, SessionStoreError};
pub use users::{hash_password, InvalidPasswordHash, User, Users};

use crate::clock::{Clock, SystemClock};
use users::{PasswordChecks, Throttle};

/// How long an authorization code can be redeemed: two minutes.
pub const CODE_LIFETIME_SECS: i64 = 120;
/// How long an access token lives, and how far a reissue extends it: fifteen minutes.
pub const SESSION_LIFETIME_SECS: i64 = 900;
/// Failed sign-ins allowed per username within [`DEFAULT_THROTTLE_PERIOD_SECS`].
pub const DEFAULT_MAX_FAILURES: u32 = 5;
/// The period over which failed sign-ins are counted.
pub const DEFAULT_THROTTLE_PERIOD_SECS: i64 = 900;
/// Sign-ins that may wait for a password check; past them, `/auth/authorize` answers 503
/// `temporarily_unavailable` (see [`SessionsBuilder::max_waiting_sign_ins`]).
pub const DEFAULT_MAX_WAITING_SIGN_INS: usize = 64;

/// A signed-in user, as found from an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSession {
    /// The username.
    pub username: String,
    /// The account ids the user may act on.
    pub accounts: Vec<i64>,
    /// The last Unix second the token is good for.
    pub expires_at: i64,
}

/// The FH-AUTH side: users, codes and sessions. Cloning is cheap (shared).
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct Inner {
    users: RwLock<Arc<Users>>,
    store: store::DigestKeys,
    clock: Arc<dyn Clock>,
    throttle: Throttle,
    password_checks: PasswordChecks,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("users", &self.users().len())
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// A builder, with the default store, the system clock, the default throttle and the
    /// default sign-in queue.
    pub fn builder(users: Users) -> SessionsBuilder {
        SessionsBuilder {
            users,
            store: Arc::new(MokaSessionStore::default()),
            clock: Arc::new(SystemClock),
            max_failures: DEFAULT_MAX_FAILURES,
            throttle_period_secs: DEFAULT_THROTTLE_PERIOD_SECS,
            max_waiting_sign_ins: DEFAULT_MAX_WAITING_SIGN_INS,
        }
    }

    /// The users who may sign in now.
    pub fn users(&self) -> Arc<Users> {
        Arc::clone(
            &self
                .inner
                .users
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Replaces the users all at once (for a reload). Live sessions and codes of users who are
    /// no longer listed, or whose password changed, stop working at their next request, and
    /// cannot be reissued meanwhile: they end within the 15 minutes a session lives. A user
    /// listed again before then with the same password hash has them back (every replica that
    /// shares a session store reads the same file the same way); give them a new hash (each
    /// `hash-password` is salted afresh) to end them for good.
    pub fn set_users(&self, users: Users) {
        *self
            .inner
            .users
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(users);
    }

    pub(crate) fn now(&self) -> i64 {
        self.inner.clock.now_unix()
    }

    /// The live session of an access token, with the user's current accounts.
    pub async fn session(&self, token: &str) -> Result<Option<UserSession>, SessionStoreError> {
        let (store, key) = self.inner.store.keyed(token);
        let Some(record) = store.session(&key, self.now()).await? else {
            return Ok(None);
        };
        let users = self.users();
        let user = users.signed_in(&record.username, &record.password_fingerprint);
        Ok(user.map(|user| UserSession {
            username: user.username().to_owned(),
            accounts: user.accounts().to_vec(),
            expires_at: record.expires_at,
        }))
    }
}

/// Builds [`Sessions`].
#[must_use]
pub struct SessionsBuilder {
    users: Users,
    store: Arc<dyn SessionStore>,
    clock: Arc<dyn Clock>,
    max_failures: u32,
    throttle_period_secs: i64,
    max_waiting_sign_ins: usize,
}

impl fmt::Debug for SessionsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionsBuilder")
            .field("users", &self.users.len())
            .field("max_failures", &self.max_failures)
            .field("throttle_period_secs", &self.throttle_period_secs)
            .field("max_waiting_sign_ins", &self.max_waiting_sign_ins)
            .finish_non_exhaustive()
    }
}

impl SessionsBuilder {
    /// Where codes and sessions live. Defaults to a [`MokaSessionStore`].
    pub fn store(mut self, store: impl SessionStore) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// Where the time is read. Defaults to [`SystemClock`].
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// After `max_failures` failed sign-ins for one username in the `period_secs` from its
    /// first attempt, `/auth/authorize` answers 429 for that username until the period ends.
    /// Defaults to 5 failures in 900 seconds; at least 1 failure in 1 second is taken (0 or
    /// less would turn the throttle off).
    ///
    /// A success takes back its own attempt (in the period it was counted in); the failures
    /// before it still count. Every username, a user's or not, is counted alike (a 429 tells
    /// nothing of which usernames exist), in a fixed table of 65,536 counts picked by a keyed
    /// hash: a flood of made-up usernames resets no count, and two usernames that share a
    /// count are throttled together.
    /// So a flood can throttle usernames it never named (about 300,000 attempts at random
    /// usernames in a period fill half the table at the default limit): put a per-address rate
    /// limit in front of `/auth`.
    pub fn throttle(mut self, max_failures: u32, period_secs: i64) -> Self {
        self.max_failures = max_failures;
        self.throttle_period_secs = period_secs;
        self
    }

    /// At most `max` sign-ins wait for a password check (checks run one at a time per core,
    /// four at most); past them, `/auth/authorize` answers at once 503 `temporarily_unavailable`
    /// with `Retry-After: 1`, before the attempt is counted against the username or anything is
    /// hashed. A sign-in that is dropped while it waits (the client went away) gives back its
    /// place (its attempt still counts). With 0, a sign-in is refused unless a check is free.
    /// Defaults to [`DEFAULT_MAX_WAITING_SIGN_INS`] (64).
    ///
    /// ```
    /// use armor_psk::session::{hash_password, Sessions, User};
    ///
    /// let users = [User::new("ann@example.com", hash_password("pw").unwrap(), vec![42]).unwrap()];
    /// let sessions = Sessions::builder(users.into_iter().collect())
    ///     .max_waiting_sign_ins(16)
    ///     .build();
    /// ```
    pub fn max_waiting_sign_ins(mut self, max: usize) -> Self {
        self.max_waiting_sign_ins = max;
        self
    }

    /// The sessions.
    pub fn build(self) -> Sessions {
        Sessions {
            inner: Arc::new(Inner {
                users: RwLock::new(Arc::new(self.users)),
                store: store::DigestKeys::new(self.store),
                clock: self.clock,
                throttle: Throttle::new(self.max_failures, self.throttle_period_secs),
                password_checks: PasswordChecks::new(self.max_waiting_sign_ins),
            }),
        }
    }
}
