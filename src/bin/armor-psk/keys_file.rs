//! The parts of the keys file the key store does not read: the `[[users]]` tables.

use armor_psk::session::{username_fits, User, Users, MAX_USERNAME_LEN};
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

/// The `[[users]]` of the keys file, checked (argon2 PHC hashes, unique usernames a sign-in
/// can give: 1 to [`MAX_USERNAME_LEN`] bytes); read with
/// its keys by [`FileKeyStore::open_with`](armor_psk::key_store::FileKeyStore::open_with) and
/// `reload_with`, so that keys and users are of one version of the file.
pub(crate) fn users_of(file: UsersFile) -> Result<Users, String> {
    let mut seen = std::collections::HashSet::new();
    let mut users = Vec::with_capacity(file.users.len());
    for entry in file.users {
        if !username_fits(&entry.username) {
            // A user no sign-in could name: not quoted, as it may be a value out of place.
            return Err(format!(
                "a username must be 1 to {MAX_USERNAME_LEN} bytes (a sign-in takes no other)"
            ));
        }
        if !seen.insert(entry.username.to_ascii_lowercase()) {
            return Err(format!("user {:?} appears more than once", entry.username));
        }
        let user = User::new(entry.username, entry.password_hash, entry.accounts)
            .map_err(|error| error.to_string())?;
        users.push(user);
    }
    Ok(users.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(text: &str) -> Result<Users, String> {
        users_of(toml::from_str(text).map_err(|error| error.to_string())?)
    }

    #[test]
    fn refuses_users_no_sign_in_could_name() {
        let hash = armor_psk::session::hash_password("pw").unwrap();
        let user =
            |name: &str| format!("[[users]]\nusername = {name:?}\npassword_hash = {hash:?}\n");
        assert!(users(&user("ann@example.com")).is_ok());
        assert!(users(&user(&"a".repeat(MAX_USERNAME_LEN))).is_ok());
        for name in [String::new(), "a".repeat(MAX_USERNAME_LEN + 1)] {
            let error = users(&user(&name)).err().unwrap_or_default();
            assert!(
                error.contains("a username must be 1 to 256 bytes"),
                "{name:?}: {error}"
            );
        }
    }
}
