use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use moka::ops::compute::Op;
use moka::sync::Cache;

/// A user who may sign in with FH-AUTH.
#[derive(Clone)]
pub struct User {
    username: String,
    password_hash: String,
    accounts: Vec<i64>,
}

/// A password hash that is not an argon2 PHC string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user {username:?}: the password hash is not an argon2 PHC string ($argon2id$...)")]
pub struct InvalidPasswordHash {
    username: String,
}

impl User {
    /// A user with an argon2 PHC `password_hash` (as `armor-psk hash-password` prints) and the
    /// account ids they may act on.
    pub fn new(
        username: impl Into<String>,
        password_hash: impl Into<String>,
        accounts: Vec<i64>,
    ) -> Result<Self, InvalidPasswordHash> {
        let (username, password_hash) = (username.into(), password_hash.into());
        let is_argon2 = PasswordHash::new(&password_hash)
            .is_ok_and(|hash| hash.algorithm.as_str().starts_with("argon2"));
        if !is_argon2 {
            return Err(InvalidPasswordHash { username });
        }
        Ok(User {
            username,
            password_hash,
            accounts,
        })
    }

    /// The username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The account ids the user may act on.
    pub fn accounts(&self) -> &[i64] {
        &self.accounts
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("username", &self.username)
            .field("password_hash", &"[redacted]")
            .field("accounts", &self.accounts)
            .finish()
    }
}

/// The users who may sign in, by username (matched without regard to ASCII case, as the
/// e-mail addresses they usually are).
#[derive(Clone, Default)]
pub struct Users {
    by_name: HashMap<String, User>,
}

impl Users {
    /// The user named `username`.
    pub fn get(&self, username: &str) -> Option<&User> {
        self.by_name.get(&username.to_ascii_lowercase())
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

impl FromIterator<User> for Users {
    fn from_iter<I: IntoIterator<Item = User>>(users: I) -> Self {
        Users {
            by_name: users
                .into_iter()
                .map(|user| (user.username.to_ascii_lowercase(), user))
                .collect(),
        }
    }
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_name.values()).finish()
    }
}

/// Hashes `password` with argon2id (the argon2 crate's defaults) and a random salt, as a PHC
/// string.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks `password` against `user`'s hash, or, for an unknown user, against a hash of the same
/// cost, so that both answers take about the same time.
pub(crate) fn verify_password(user: Option<&User>, password: &str) -> bool {
    static STAND_IN: OnceLock<String> = OnceLock::new();
    let stand_in =
        STAND_IN.get_or_init(|| hash_password("a password no one has").unwrap_or_default());
    let hash = user.map_or(stand_in.as_str(), |user| user.password_hash.as_str());
    let matches = PasswordHash::new(hash).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    });
    matches && user.is_some()
}

/// Counts failed sign-ins per username; past the limit, refuses further tries until the period
/// that started with the first failure is over.
#[derive(Clone)]
pub(crate) struct Throttle {
    failures: Cache<String, (u32, i64)>,
    max_failures: u32,
    period_secs: i64,
}

impl Throttle {
    pub(crate) fn new(max_failures: u32, period_secs: i64) -> Self {
        Throttle {
            failures: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(
                    u64::try_from(period_secs).unwrap_or(0) + 1,
                ))
                .build(),
            max_failures,
            period_secs,
        }
    }

    /// Counts one more try for `username` before its password is checked, so that concurrent
    /// guesses cannot all pass a check made before any of them failed; a success clears the
    /// count. `Err(seconds to wait)` when the tries of this period are used up.
    pub(crate) fn begin_attempt(&self, username: &str, now: i64) -> Result<(), i64> {
        let (max, period) = (self.max_failures, self.period_secs);
        let mut wait = None;
        self.failures
            .entry(username.to_ascii_lowercase())
            .and_compute_with(|current| match current.map(|entry| entry.into_value()) {
                Some((count, until)) if until >= now && count >= max => {
                    wait = Some(until - now + 1);
                    Op::Nop
                }
                Some((count, until)) if until >= now => Op::Put((count + 1, until)),
                _ => Op::Put((1, now + period)),
            });
        wait.map_or(Ok(()), Err)
    }

    pub(crate) fn clear(&self, username: &str) {
        self.failures.invalidate(&username.to_ascii_lowercase());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_passwords_and_refuses_unknown_users() {
        let hash = hash_password("correct horse").unwrap();
        let user = User::new("Ann@Example.com", hash, vec![1]).unwrap();
        assert!(verify_password(Some(&user), "correct horse"));
        assert!(!verify_password(Some(&user), "wrong"));
        assert!(!verify_password(None, "a password no one has"));
        let users: Users = [user].into_iter().collect();
        assert!(users.get("ann@example.com").is_some());
        assert!(!format!("{users:?}").contains("argon2"));
    }

    #[test]
    fn refuses_hashes_that_are_not_argon2() {
        assert!(User::new("u", "plain text", vec![]).is_err());
        assert!(User::new("u", "$pbkdf2-sha256$i=1$c2FsdA$aGFzaA", vec![]).is_err());
    }

    #[test]
    fn throttles_after_the_limit_until_the_period_ends() {
        let throttle = Throttle::new(3, 900);
        for _ in 0..3 {
            assert_eq!(throttle.begin_attempt("Ann", 1_000), Ok(()));
        }
        assert_eq!(throttle.begin_attempt("ann", 1_000), Err(901));
        assert_eq!(throttle.begin_attempt("ann", 1_500), Err(401));
        assert_eq!(throttle.begin_attempt("ann", 1_901), Ok(()));
        throttle.clear("ann");
        assert_eq!(throttle.begin_attempt("ann", 1_901), Ok(()));
    }
}
