//! The parts of the keys file the key store does not read: the `[[users]]` tables.

use std::path::Path;

use armor_psk::key_store::FileKeyStore;
use armor_psk::session::{User, Users};
use serde::Deserialize;

#[derive(Deserialize)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    username: String,
    password_hash: String,
    #[serde(default)]
    accounts: Vec<i64>,
}

/// The `[[users]]` of the keys file, checked (argon2 PHC hashes, unique usernames).
pub(crate) fn load_users(path: &Path) -> Result<Users, String> {
    let file: UsersFile = FileKeyStore::read_tables(path).map_err(|error| error.to_string())?;
    let mut seen = std::collections::HashSet::new();
    let mut users = Vec::with_capacity(file.users.len());
    for entry in file.users {
        if !seen.insert(entry.username.to_ascii_lowercase()) {
            return Err(format!(
                "{}: user {:?} appears more than once",
                path.display(),
                entry.username
            ));
        }
        let user = User::new(entry.username, entry.password_hash, entry.accounts)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        users.push(user);
    }
    Ok(users.into_iter().collect())
}
