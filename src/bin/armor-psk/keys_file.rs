//! The parts of the keys file the key store does not read: the `[[users]]` tables.

use armor_psk::session::{User, Users};
use serde::Deserialize;

/// The tables of the keys file the key store does not read. Any table but these two is an
/// error: a misspelt `[[user]]` must not start a server without its users.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
    /// The key store's; skipped here.
    #[serde(default, rename = "keys")]
    _keys: serde::de::IgnoredAny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: String,
    password_hash: String,
    #[serde(default)]
    accounts: Vec<i64>,
}

/// The `[[users]]` of the keys file, checked (argon2 PHC hashes, unique usernames); read with
/// its keys by [`FileKeyStore::open_with`](armor_psk::key_store::FileKeyStore::open_with) and
/// `reload_with`, so that keys and users are of one version of the file.
pub(crate) fn users_of(file: UsersFile) -> Result<Users, String> {
    let mut seen = std::collections::HashSet::new();
    let mut users = Vec::with_capacity(file.users.len());
    for entry in file.users {
        if !seen.insert(entry.username.to_ascii_lowercase()) {
            return Err(format!("user {:?} appears more than once", entry.username));
        }
        let user = User::new(entry.username, entry.password_hash, entry.accounts)
            .map_err(|error| error.to_string())?;
        users.push(user);
    }
    Ok(users.into_iter().collect())
}
