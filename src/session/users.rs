use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

/// A user who may sign in with FH-AUTH.
#[derive(Clone)]
pub struct User {
    username: String,
    password_hash: String,
    password_fingerprint: String,
    accounts: Vec<i64>,
}

/// A password hash that is not an argon2 PHC string any password could match: no salt (or one
/// under argon2's 8 bytes), no hash, or costs argon2 refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "user {username:?}: the password hash is not an argon2 PHC string that a password could \
     match, as `armor-psk hash-password` prints ($argon2id$v=19$m=...)"
)]
pub struct InvalidPasswordHash {
    username: String,
}

impl User {
    /// A user with an argon2 PHC `password_hash` (as `armor-psk hash-password` prints) and the
    /// account ids they may act on. A hash no password could match is refused here, not at
    /// every sign-in.
    pub fn new(
        username: impl Into<String>,
        password_hash: impl Into<String>,
        accounts: Vec<i64>,
    ) -> Result<Self, InvalidPasswordHash> {
        let (username, password_hash) = (username.into(), password_hash.into());
        let checkable =
            PasswordHash::new(&password_hash).is_ok_and(|hash| Argon2Check::of(&hash).is_some());
        if !checkable {
            return Err(InvalidPasswordHash { username });
        }
        let digest = Sha512::digest(password_hash.as_bytes());
        let password_fingerprint = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        Ok(User {
            username,
            password_hash,
            password_fingerprint,
            accounts,
        })
    }

    /// Which password the user has: 32 hex digits of SHA-512 over the password hash (whose
    /// salt is new with each password). Codes and sessions carry it from the sign-in, and stop
    /// working once it changes: a new password (after a reload) ends every earlier session.
    pub fn password_fingerprint(&self) -> &str {
        &self.password_fingerprint
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
#[derive(Clone)]
pub struct Users {
    by_name: HashMap<String, User>,
    /// What an unknown username's password is checked against: see [`stand_in_hash`].
    stand_in: Arc<str>,
}

impl Default for Users {
    fn default() -> Self {
        Users::from_iter([])
    }
}

impl Users {
    /// The user named `username`.
    pub fn get(&self, username: &str) -> Option<&User> {
        self.by_name.get(&username.to_ascii_lowercase())
    }

    /// The user named `username`, if they still have the password whose fingerprint a code or
    /// session carries.
    pub(crate) fn signed_in(&self, username: &str, password_fingerprint: &str) -> Option<&User> {
        self.get(username)
            .filter(|user| user.password_fingerprint == password_fingerprint)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The hash an unknown username's password is checked against.
    pub(crate) fn stand_in(&self) -> Arc<str> {
        Arc::clone(&self.stand_in)
    }
}

impl FromIterator<User> for Users {
    fn from_iter<I: IntoIterator<Item = User>>(users: I) -> Self {
        let by_name: HashMap<String, User> = users
            .into_iter()
            .map(|user| (user.username.to_ascii_lowercase(), user))
            .collect();
        let stand_in = stand_in_hash(by_name.values()).into();
        Users { by_name, stand_in }
    }
}

/// A stand-in for an unknown username's hash, so that its check takes the time a user's takes:
/// the argon2 costs (variant, version, memory, passes, lanes, output length) that most of
/// `users`' hashes have (of equal counts, the least costs in [`Costs`]'s order), or
/// `hash-password`'s when no user has a usable hash. It has a salt of its own and an all-zero
/// output, and no other parameter: it copies nothing of any user's hash, and no password is
/// expected to match it (the check's answer for an unknown username is no, whatever it
/// computes).
fn stand_in_hash<'a>(users: impl Iterator<Item = &'a User>) -> String {
    let mut counts: HashMap<Costs, usize> = HashMap::new();
    for user in users {
        if let Some(costs) = PasswordHash::new(&user.password_hash)
            .ok()
            .and_then(|hash| Costs::of(&hash))
        {
            *counts.entry(costs).or_default() += 1;
        }
    }
    let costs = counts
        .into_iter()
        .max_by(|(a, a_count), (b, b_count)| a_count.cmp(b_count).then_with(|| b.cmp(a)))
        .map_or_else(Costs::of_hash_password, |(costs, _)| costs);
    costs.stand_in()
}

/// 16 bytes of salt (`stand-in salt 16`), in the PHC string's base64, as `hash-password`'s
/// salts are long.
const STAND_IN_SALT: &str = "c3RhbmQtaW4gc2FsdCAxNg";

/// What checking a password against an argon2 hash takes, as argon2 reads it from the PHC
/// string (parameters in any order, the version 0x13 when left out).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Costs {
    algorithm: &'static str,
    version: u32,
    memory_kib: u32,
    passes: u32,
    lanes: u32,
    output_len: usize,
}

impl Costs {
    fn of(hash: &PasswordHash<'_>) -> Option<Self> {
        let (algorithm, version, params) = argon2_of(hash)?;
        Some(Costs::new(algorithm, version, &params, hash.hash?.len()))
    }

    fn of_hash_password() -> Self {
        let default = Argon2::default();
        Costs::new(
            Algorithm::default(),
            Version::default(),
            default.params(),
            Params::DEFAULT_OUTPUT_LEN,
        )
    }

    fn new(algorithm: Algorithm, version: Version, params: &Params, output_len: usize) -> Self {
        Costs {
            algorithm: algorithm.as_str(),
            version: version.into(),
            memory_kib: params.m_cost(),
            passes: params.t_cost(),
            lanes: params.p_cost(),
            output_len,
        }
    }

    /// A PHC string with these costs, the stand-in salt and an all-zero output.
    fn stand_in(self) -> String {
        let output = "A".repeat((self.output_len * 4).div_ceil(3));
        format!(
            "${}$v={}$m={},t={},p={}${STAND_IN_SALT}${output}",
            self.algorithm, self.version, self.memory_kib, self.passes, self.lanes,
        )
    }
}

/// The variant, version and parameters argon2 takes from `hash`.
fn argon2_of(hash: &PasswordHash<'_>) -> Option<(Algorithm, Version, Params)> {
    let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
    let version = hash.version.map(Version::try_from).transpose().ok()?;
    let params = Params::try_from(hash).ok()?;
    Some((algorithm, version.unwrap_or_default(), params))
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

/// Checks `password` against `user`'s hash, or, for an unknown user, against `stand_in` (a
/// hash of the costs most users' hashes have: [`Users::stand_in`]), so that both answers take
/// about the same time. `memory` is argon2's working memory, grown to the hash's cost and kept
/// for the next check.
pub(crate) fn verify_password(
    user: Option<&User>,
    stand_in: &str,
    password: &str,
    memory: &mut Vec<Block>,
) -> bool {
    let hash = user.map_or(stand_in, |user| user.password_hash.as_str());
    let matches =
        PasswordHash::new(hash).is_ok_and(|hash| hash_matches(password.as_bytes(), &hash, memory));
    matches && user.is_some()
}

/// What `PasswordVerifier::verify_password` does, with argon2's blocks from `memory` rather
/// than a fresh 19 MiB allocation: allocated and freed on every check, glibc kept hundreds of
/// megabytes of them (250 MB after 40 sign-ins, one at a time).
fn hash_matches(password: &[u8], hash: &PasswordHash<'_>, memory: &mut Vec<Block>) -> bool {
    Argon2Check::of(hash).is_some_and(|check| check.matches(password, memory))
}

/// What checking a password against an argon2 PHC hash takes.
struct Argon2Check {
    argon2: Argon2<'static>,
    salt: [u8; 64],
    salt_len: usize,
    expected: argon2::password_hash::Output,
}

impl Argon2Check {
    /// `None` when no password could match `hash`: not argon2, no salt (or one argon2 refuses
    /// as too short), no hash, or costs argon2 refuses or that ask for more than
    /// [`MAX_MEMORY_KIB`] or [`MAX_WORK_KIB`]. (The PHC parser takes hashes of 10 to 64 bytes
    /// only, which argon2 can all make.)
    fn of(hash: &PasswordHash<'_>) -> Option<Self> {
        let (salt, expected) = (hash.salt?, hash.hash?);
        let (algorithm, version, params) = argon2_of(hash)?;
        let work_kib = u64::from(params.m_cost()) * u64::from(params.t_cost());
        (params.m_cost() <= MAX_MEMORY_KIB && work_kib <= MAX_WORK_KIB).then_some(())?;
        let mut salt_bytes = [0u8; 64];
        let salt_len = salt.decode_b64(&mut salt_bytes).ok()?.len();
        (salt_len >= argon2::MIN_SALT_LEN).then_some(())?;
        Some(Argon2Check {
            argon2: Argon2::new(algorithm, version, params),
            salt: salt_bytes,
            salt_len,
            expected,
        })
    }

    fn matches(&self, password: &[u8], memory: &mut Vec<Block>) -> bool {
        // An `Output` holds at most `MAX_LENGTH` bytes: the slice is always in bounds.
        let mut computed = Zeroizing::new([0u8; Output::MAX_LENGTH]);
        let computed = &mut computed[..self.expected.len()];
        let blocks = self.argon2.params().block_count();
        // Up to `MAX_MEMORY_KIB` a check, and several checks at once: a machine without that
        // much fails the sign-in (and says so) rather than abort the process.
        if memory
            .try_reserve_exact(blocks.saturating_sub(memory.len()))
            .is_err()
        {
            tracing::error!(
                memory_kib = self.argon2.params().m_cost(),
                "no memory for a password check"
            );
            return false;
        }
        memory.resize(blocks, Block::default());
        let salt = &self.salt[..self.salt_len];
        self.argon2
            .hash_password_into_with_memory(password, salt, computed, &mut memory[..])
            .is_ok()
            && bool::from(computed.ct_eq(self.expected.as_bytes()))
    }
}

/// The most working memory a password hash may ask argon2 for: 2 GiB, the first (and
/// largest) of RFC 9106's recommended costs. A hash asking for more (a typo's 4 TiB) is refused
/// when the users are loaded, not at a sign-in that could not allocate it.
const MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;

/// The most memory a password hash may ask argon2 to pass over in all (its memory times its
/// passes, `t`): four passes over 2 GiB, four times RFC 9106's largest recommended work, and
/// about 430 passes at the `hash-password` default of 19 MiB. A hash asking for more (a typo's
/// `t=4294967295`) would hold a check slot for hours, and an unknown username's stand-in takes
/// the most common costs: it is refused when the users are loaded.
const MAX_WORK_KIB: u64 = 4 * MAX_MEMORY_KIB as u64;

/// Most password checks at once, however many cores: each keeps argon2's working memory.
const MAX_CONCURRENT_PASSWORD_CHECKS: usize = 4;

/// Password checks, one at a time per core (at most [`MAX_CONCURRENT_PASSWORD_CHECKS`]): each
/// holds argon2's working memory (19 MiB at `hash-password`'s cost), and tries spread over many
/// usernames are not slowed by the per-username throttle. Each turn reuses the memory of an
/// earlier one. At most `max_waiting` sign-ins wait for a turn: past them,
/// [`enter`](Self::enter) refuses at once.
pub(crate) struct PasswordChecks {
    turns: Arc<Semaphore>,
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
    /// The sign-ins waiting for a turn, never more than `max_waiting`: each place in the queue
    /// counts itself out when its turn comes or it is dropped.
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Every sign-in that may wait for a turn is already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

/// A sign-in's place for a password check, from [`PasswordChecks::enter`]: a turn already, or
/// a place in the queue for one. Dropping it gives back the turn, or the place.
pub(crate) struct Place<'a> {
    checks: &'a PasswordChecks,
    ticket: Ticket<'a>,
}

enum Ticket<'a> {
    Turn(OwnedSemaphorePermit),
    Waiting(Waiting<'a>),
}

/// One of the counted places in the queue; counted out when dropped (its turn came, or the
/// request was dropped while it waited).
struct Waiting<'a> {
    waiting: &'a AtomicUsize,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordChecks {
    /// Checks one at a time per core, four at most, and at most `max_waiting` sign-ins waiting.
    pub(crate) fn new(max_waiting: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        PasswordChecks {
            turns: Arc::new(Semaphore::new(cores.min(MAX_CONCURRENT_PASSWORD_CHECKS))),
            memory: Arc::default(),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// A turn if one is free, else a place in the queue if there are fewer than `max_waiting`
    /// sign-ins waiting, else [`QueueFull`]. Taken before the attempt is counted or anything
    /// hashed, so that a refused sign-in costs nothing.
    pub(crate) fn enter(&self) -> Result<Place<'_>, QueueFull> {
        if let Ok(turn) = Arc::clone(&self.turns).try_acquire_owned() {
            let ticket = Ticket::Turn(turn);
            return Ok(Place {
                checks: self,
                ticket,
            });
        }
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < self.max_waiting).then_some(waiting + 1)
            })
            .map_err(|_| QueueFull)?;
        let ticket = Ticket::Waiting(Waiting {
            waiting: &self.waiting,
        });
        Ok(Place {
            checks: self,
            ticket,
        })
    }

    /// How many sign-ins wait for a turn.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The turns, for tests to hold.
    #[cfg(test)]
    pub(crate) fn turns(&self) -> Arc<Semaphore> {
        Arc::clone(&self.turns)
    }
}

impl Place<'_> {
    /// [`verify_password`] off the async workers, once the turn comes (the place in the queue is
    /// given back then, or when the request is dropped meanwhile). The turn is given back when
    /// the check ends, even if the request was dropped meanwhile, and the memory before it.
    pub(crate) async fn check(
        self,
        user: Option<User>,
        stand_in: Arc<str>,
        password: Zeroizing<String>,
    ) -> bool {
        let turn = match self.ticket {
            Ticket::Turn(turn) => turn,
            Ticket::Waiting(place) => {
                // The semaphore is never closed: a turn always comes.
                let turn = Arc::clone(&self.checks.turns).acquire_owned().await;
                drop(place);
                let Ok(turn) = turn else {
                    return false;
                };
                turn
            }
        };
        let pool = Arc::clone(&self.checks.memory);
        tokio::task::spawn_blocking(move || {
            let buffers = || pool.lock().unwrap_or_else(PoisonError::into_inner);
            let mut memory = buffers().pop().unwrap_or_default();
            let verified = verify_password(user.as_ref(), &stand_in, &password, &mut memory);
            buffers().push(memory);
            drop(turn);
            verified
        })
        .await
        .unwrap_or(false)
    }
}

/// Counts sign-in tries per username (a success takes its own back); past the limit, refuses
/// further tries until the period that started with the first try is over.
///
/// Every username, a user's or not, is counted the same way (so that a 429 tells nothing of
/// which usernames exist), in a table of [`THROTTLE_COUNTS`] counts picked by a keyed hash of
/// the username: however many usernames are tried, the table does not grow and no count is
/// forgotten before its period ends (a cache that evicts would let a flood of made-up usernames
/// reset a real one's). Two usernames may share a count, and are then throttled together; a
/// success takes back only its own try, so sharing is never looser.
pub(crate) struct Throttle {
    counts: Mutex<Box<[Tries]>>,
    hashing: RandomState,
    max_failures: u32,
    period_secs: i64,
}

/// How many counts the throttle keeps: 16 bytes each, 1 MiB in all. About 300,000 tries at
/// random usernames within a period (fewer with a lower limit) fill half the counts to the
/// default limit of 5: a flood can throttle usernames it does not know.
const THROTTLE_COUNTS: usize = 1 << 16;

/// A try [`Throttle::begin_attempt`] counted: where its count is, and the last second of the
/// period it was counted in.
// Not `Copy`: `succeeded` takes it, so that one success takes back one try.
pub(crate) struct Attempt {
    at: usize,
    period: i64,
}

/// The tries in the current period, and the period's last second.
#[derive(Clone, Copy)]
struct Tries {
    count: u32,
    until: i64,
}

impl Throttle {
    /// At least one try in a period of at least a second.
    pub(crate) fn new(max_failures: u32, period_secs: i64) -> Self {
        let unused = Tries {
            count: 0,
            until: i64::MIN,
        };
        Throttle {
            counts: Mutex::new(vec![unused; THROTTLE_COUNTS].into_boxed_slice()),
            hashing: RandomState::new(),
            max_failures: max_failures.max(1),
            period_secs: period_secs.max(1),
        }
    }

    /// Counts one more try for `username` before its password is checked, so that concurrent
    /// guesses cannot all pass a check made before any of them failed; a success takes its try
    /// back ([`succeeded`](Self::succeeded)). The try, or `Err(seconds to wait)` when the tries
    /// of this period are used up.
    pub(crate) fn begin_attempt(&self, username: &str, now: i64) -> Result<Attempt, i64> {
        let at = self.count_of(username);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let (next, wait) = self.count(counts[at], now);
        counts[at] = next;
        match wait {
            Some(wait) => Err(wait),
            None => Ok(Attempt {
                at,
                period: next.until,
            }),
        }
    }

    /// The sign-in `attempt` succeeded: its own try is taken back, and the failures before it
    /// still count. Nothing is taken back once another period has begun: that count is of
    /// other tries. (Clearing the count would clear it for every username that shares it: one
    /// user signing in often would give a guesser at another fresh tries.)
    pub(crate) fn succeeded(&self, attempt: Attempt) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let tries = &mut counts[attempt.at];
        if tries.until == attempt.period {
            tries.count = tries.count.saturating_sub(1);
        }
    }

    /// Where `username`'s count is, whatever its case.
    fn count_of(&self, username: &str) -> usize {
        let hash = self.hashing.hash_one(username.to_ascii_lowercase());
        (hash % THROTTLE_COUNTS as u64) as usize
    }

    /// The tries after one more at `now`, and the seconds to wait when it is refused.
    fn count(&self, tries: Tries, now: i64) -> (Tries, Option<i64>) {
        if tries.until < now {
            let first = Tries {
                count: 1,
                until: now.saturating_add(self.period_secs),
            };
            (first, None)
        } else if tries.count >= self.max_failures {
            (tries, Some(tries.until - now + 1))
        } else {
            let count = tries.count + 1;
            (Tries { count, ..tries }, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_passwords_and_refuses_unknown_users() {
        let hash = hash_password("correct horse").unwrap();
        let user = User::new("Ann@Example.com", hash, vec![1]).unwrap();
        let memory = &mut Vec::new();
        let users: Users = [user.clone()].into_iter().collect();
        let stand_in = &users.stand_in();
        assert!(verify_password(
            Some(&user),
            stand_in,
            "correct horse",
            memory
        ));
        assert!(!verify_password(Some(&user), stand_in, "wrong", memory));
        assert!(!verify_password(None, stand_in, "correct horse", memory));
        // The memory is kept at the hash's cost, and reused.
        assert_eq!(memory.len(), Params::DEFAULT_M_COST as usize);
        assert!(verify_password(
            Some(&user),
            stand_in,
            "correct horse",
            memory
        ));
        assert!(users.get("ann@example.com").is_some());
        assert!(!format!("{users:?}").contains("argon2"));
    }

    /// A user whose password `password` is hashed with argon2id at `memory_kib` of memory.
    fn user_at_cost(name: &str, password: &str, memory_kib: u32) -> User {
        let params = Params::new(memory_kib, 1, 1, None).unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let hash = argon2.hash_password(password.as_bytes(), &salt).unwrap();
        User::new(name, hash.to_string(), vec![1]).unwrap()
    }

    #[test]
    fn an_unknown_username_is_checked_at_the_costs_most_users_hashes_have() {
        let users: Users = [
            user_at_cost("ann", "ann's password", 64),
            user_at_cost("bob", "bob's password", 64),
            user_at_cost("cy", "cy's password", 32),
        ]
        .into_iter()
        .collect();
        let stand_in = users.stand_in();
        let parsed = PasswordHash::new(&stand_in).unwrap();
        let ann = PasswordHash::new(&users.get("ann").unwrap().password_hash).unwrap();
        assert_eq!(parsed.algorithm, ann.algorithm);
        assert_eq!(parsed.version, ann.version);
        assert_eq!(parsed.params, ann.params);
        assert_eq!(parsed.hash.unwrap().len(), ann.hash.unwrap().len());
        // Its own salt and output: no user's.
        for user in ["ann", "bob", "cy"] {
            let hash = PasswordHash::new(&users.get(user).unwrap().password_hash).unwrap();
            assert_ne!(parsed.salt, hash.salt);
            assert_ne!(parsed.hash, hash.hash);
        }
        // The check runs at those costs (its memory grows to them), and says no even to a
        // user's password.
        let memory = &mut Vec::new();
        assert!(!verify_password(None, &stand_in, "ann's password", memory));
        assert_eq!(memory.len(), 64);

        // Of equal counts, the least costs, whatever order the users came in (and the map
        // holds them in).
        let (small, large) = (user_at_cost("a", "p", 32), user_at_cost("b", "p", 64));
        for users in [[&small, &large], [&large, &small]].repeat(4) {
            let users: Users = users.into_iter().cloned().collect();
            let stand_in = users.stand_in();
            let memory_kib = PasswordHash::new(&stand_in)
                .unwrap()
                .params
                .get_decimal("m");
            assert_eq!(memory_kib, Some(32));
        }
    }

    #[test]
    fn hashes_of_the_same_costs_count_together_however_they_are_spelled() {
        let ann = user_at_cost("ann", "ann's password", 64);
        // Bob's hash at the same costs with associated data, its parameters then put in
        // another order and the version left out (argon2 takes 0x13): argon2 does the same
        // work for it.
        let params = argon2::ParamsBuilder::new()
            .m_cost(64)
            .t_cost(1)
            .p_cost(1)
            .data(argon2::AssociatedData::new(b"some data").unwrap())
            .build()
            .unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let hash = argon2.hash_password(b"bob's password", &salt).unwrap();
        let hash = hash.to_string();
        let (head, tail) = hash.split_once("$v=19$m=64,t=1,p=1,").unwrap();
        let (data, tail) = tail.split_once('$').unwrap();
        let respelled = format!("{head}${data},t=1,p=1,m=64${tail}");
        let bob = User::new("bob", respelled, vec![1]).unwrap();
        assert!(verify_password(
            Some(&bob),
            "",
            "bob's password",
            &mut Vec::new()
        ));
        let cy = user_at_cost("cy", "cy's password", 32);
        let users: Users = [ann, bob, cy].into_iter().collect();
        let stand_in = users.stand_in();
        let stand_in = PasswordHash::new(&stand_in).unwrap();
        assert_eq!(stand_in.params.get_decimal("m"), Some(64));
        // Nothing of bob's hash but its costs.
        assert_eq!(stand_in.params.get_str("data"), None);
    }

    #[test]
    fn without_users_the_stand_in_has_hash_passwords_costs() {
        let made = hash_password("pw").unwrap();
        let made = PasswordHash::new(&made).unwrap();
        let stand_in = Users::default().stand_in();
        let stand_in = PasswordHash::new(&stand_in).unwrap();
        assert_eq!(stand_in.algorithm, made.algorithm);
        assert_eq!(stand_in.version, made.version);
        assert_eq!(stand_in.params, made.params);
        assert_eq!(stand_in.hash.unwrap().len(), made.hash.unwrap().len());
        assert_eq!(stand_in.salt.unwrap().len(), made.salt.unwrap().len());
    }

    #[test]
    fn checks_every_argon2_variant_as_the_argon2_crate_does() {
        use argon2::password_hash::PasswordVerifier;
        let salt = SaltString::generate(&mut OsRng);
        let variants = [
            (
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(64, 1, 1, None),
            ),
            (
                Algorithm::Argon2i,
                Version::V0x13,
                Params::new(32, 2, 2, Some(64)),
            ),
            (
                Algorithm::Argon2d,
                Version::V0x10,
                Params::new(16, 3, 1, Some(12)),
            ),
        ];
        let memory = &mut Vec::new();
        for (algorithm, version, params) in variants {
            let argon2 = Argon2::new(algorithm, version, params.unwrap());
            let phc = argon2.hash_password(b"pw", &salt).unwrap().to_string();
            let hash = PasswordHash::new(&phc).unwrap();
            for (password, right) in [(&b"pw"[..], true), (b"pW", false), (b"", false)] {
                assert_eq!(hash_matches(password, &hash, memory), right, "{phc}");
                let reference = Argon2::default().verify_password(password, &hash).is_ok();
                assert_eq!(reference, right, "{phc}");
            }
            // The same hash with one character of its output changed.
            let (head, output) = phc.rsplit_once('$').unwrap();
            let flipped = if output.starts_with('A') { 'B' } else { 'A' };
            let tampered = format!("{head}${flipped}{}", &output[1..]);
            let tampered = PasswordHash::new(&tampered).unwrap();
            assert!(!hash_matches(b"pw", &tampered, memory), "{phc}");
        }
    }

    #[test]
    fn refuses_hashes_that_are_not_argon2() {
        assert!(User::new("u", "plain text", vec![]).is_err());
        assert!(User::new("u", "$pbkdf2-sha256$i=1$c2FsdA$aGFzaA", vec![]).is_err());
    }

    #[test]
    fn refuses_argon2_hashes_no_password_could_match() {
        let good = hash_password("pw").unwrap();
        assert!(User::new("u", good.as_str(), vec![]).is_ok());
        let (head, _) = good.rsplit_once('$').unwrap();
        let salt = head.rsplit_once('$').unwrap().1;
        for hash in [
            "$argon2id$".to_owned(),
            format!("$argon2id$v=19$m=19456,t=2,p=1${salt}"),
            good.replacen("$argon2id$", "$argon2x$", 1),
            good.replacen("t=2", "t=0", 1),
            // More memory than RFC 9106 recommends at most (2 GiB): refused at load.
            good.replacen("m=19456", "m=2097153", 1),
            good.replacen("m=19456", "m=4294967295", 1),
            // More passes over its memory than four over 2 GiB: refused at load.
            good.replacen("t=2", "t=4294967295", 1),
            good.replacen("m=19456,t=2", "m=2097152,t=5", 1),
            // A salt of 6 bytes: argon2 takes 8 or more.
            good.replacen(salt, "AAAAAAAA", 1),
            // Hashes of 66 and 2 bytes: argon2 makes 4 to 2^32, the PHC string holds 10 to 64.
            format!("{head}${}", "A".repeat(88)),
            format!("{head}$AAA"),
        ] {
            assert!(User::new("u", hash.as_str(), vec![]).is_err(), "{hash}");
        }
        // 2 GiB itself is taken, and four passes over it (not checked here: that would take
        // the 2 GiB).
        for largest in [
            good.replacen("m=19456", "m=2097152", 1),
            good.replacen("m=19456,t=2", "m=2097152,t=4", 1),
            good.replacen("t=2", "t=431", 1),
        ] {
            assert!(
                User::new("u", largest.as_str(), vec![]).is_ok(),
                "{largest}"
            );
        }
    }

    #[test]
    fn throttles_after_the_limit_until_the_period_ends() {
        let throttle = Throttle::new(3, 900);
        assert_eq!(tries_left(&throttle, "Ann", 1_000, 1_900), 3);
        assert_eq!(begin(&throttle, "ann", 1_500), Err(401));
        assert_eq!(begin(&throttle, "ann", 1_901), Ok(2_801));
    }

    /// A try of `name` at `now`: the period it was counted in, or the seconds to wait.
    fn begin(throttle: &Throttle, name: &str, now: i64) -> Result<i64, i64> {
        throttle
            .begin_attempt(name, now)
            .map(|attempt| attempt.period)
    }

    /// The tries `name` has left at `now`, each counted in the period ending at `period`, and
    /// the refusal after them asking to wait until the period is over.
    fn tries_left(throttle: &Throttle, name: &str, now: i64, period: i64) -> usize {
        let mut left = 0;
        loop {
            match begin(throttle, name, now) {
                Ok(counted_in) => assert_eq!(counted_in, period),
                Err(wait) => {
                    assert_eq!(wait, period - now + 1);
                    return left;
                }
            }
            left += 1;
        }
    }

    #[test]
    fn a_success_takes_back_its_own_try_only() {
        let throttle = Throttle::new(3, 900);
        assert_eq!(begin(&throttle, "ann", 1_000), Ok(1_900));
        let attempt = throttle.begin_attempt("ann", 1_000).unwrap();
        throttle.succeeded(attempt);
        // One failure counted, and the success's try taken back: two more, then 429.
        assert_eq!(tries_left(&throttle, "ann", 1_001, 1_900), 2);
    }

    #[test]
    fn a_success_takes_nothing_back_from_a_later_period() {
        let throttle = Throttle::new(3, 900);
        let attempt = throttle.begin_attempt("ann", 1_000).unwrap();
        // The check took the period's end: a guess opens the next period meanwhile.
        assert_eq!(begin(&throttle, "ann", 1_901), Ok(2_801));
        throttle.succeeded(attempt);
        assert_eq!(tries_left(&throttle, "ann", 1_901, 2_801), 2);
    }

    #[test]
    fn a_flood_of_usernames_resets_no_count() {
        // Known or not, a username's count holds however many others are tried (a bounded
        // cache let a flood push counts out: more guesses for a real username, and a test
        // for which usernames are real, whose counts a flood could not push out).
        let throttle = Throttle::new(3, 900);
        // Two names of two counts (any two share one in 65,536 runs otherwise).
        let other = (0..)
            .map(|n| format!("no-such-user-{n}"))
            .find(|name| throttle.count_of(name) != throttle.count_of("ann"))
            .unwrap();
        for name in ["ann", other.as_str()] {
            for _ in 0..3 {
                assert_eq!(begin(&throttle, name, 1_000), Ok(1_900));
            }
        }
        for name in 0..150_000 {
            let _ = begin(&throttle, &format!("junk{name}"), 1_000);
        }
        for name in ["ann", other.as_str()] {
            assert_eq!(begin(&throttle, name, 1_001), Err(900), "{name}");
        }
    }

    #[test]
    fn nonsense_limits_still_throttle() {
        // A period of 0 (or less) would restart the count at every try; a limit of 0 still
        // let one try through.
        let throttle = Throttle::new(0, 0);
        assert_eq!(begin(&throttle, "ann", 1_000), Ok(1_001));
        assert_eq!(begin(&throttle, "ann", 1_000), Err(2));
        assert_eq!(begin(&throttle, "ann", 1_001), Err(1));
        assert_eq!(begin(&throttle, "ann", 1_002), Ok(1_003));
    }
}
