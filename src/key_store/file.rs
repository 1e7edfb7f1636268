use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde::Deserialize;

use super::Secret;
use crate::hashing::KeyHashing;
use crate::psk::MAX_KEY_ID_LEN;

/// Keys read from a TOML file, swapped atomically by [`FileKeyStore::reload`].
///
/// ```toml
/// [[keys]]
/// id = "20a37099-4a0b-432f-bf46-5fa690a0405c"
/// secret = "the secret exactly as the portal showed it"
/// name = "billing service"      # optional, for people and logs
///
/// [[keys]]
/// id = "0c3f0a1e-9d35-4c1e-8f2b-5b8e3f6c2d11"
/// secret = "..."
/// disabled = true               # optional: the key is refused as unknown
/// accounts = [1234, 5678]       # optional: the accounts the key may act on
/// schemes = ["date-hmac"]       # optional: the schemes it may sign with ("armor-psk" if absent)
/// ```
///
/// As a [`KeyStore`](super::KeyStore) it answers for the keys that may sign with ARMOR-PSK;
/// [`for_scheme`](FileKeyStore::for_scheme) gives the keys of another scheme. Give the
/// signed-Date scheme `store.for_scheme("date-hmac")`, never the store itself: that would let
/// every ARMOR-PSK key sign with a scheme whose requests can be replayed.
///
/// The store holds each key's `accounts`; it does not enforce them. An
/// [`ArmorAuthLayer`](crate::session::ArmorAuthLayer) does, once told where they are:
/// `.key_accounts(move |key| store.accounts(key.key_id(), key.scheme()))`.
///
/// Other top-level tables are ignored, so the file can carry settings of other tools; inside a
/// `[[keys]]` table an unknown field is an error (a misspelt `disabled` must not pass unnoticed).
/// A file that holds nothing at all (empty, or only comments) is refused: it is most likely one
/// caught while it was being written, and a reload of it would revoke every key. Change the
/// file by writing a new one and renaming it into place (a file caught half written may
/// parse, and hold fewer keys than meant).
/// Key ids must be unique, 1 to 256 visible ASCII characters without `:`; secrets must not be
/// empty, nor an `accounts` list (a key without one may act on every account).
///
/// ```no_run
/// # async fn run() -> Result<(), armor_psk::key_store::FileKeyStoreError> {
/// use armor_psk::key_store::FileKeyStore;
///
/// let store = FileKeyStore::open("keys.toml")?;
/// // later, e.g. on SIGHUP: a broken file keeps the old keys and returns the error.
/// store.reload()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FileKeyStore {
    path: Arc<PathBuf>,
    keys: Arc<RwLock<Arc<KeySet>>>,
    /// Held by a reload from its read of the file to its swap: of two reloads at once, the
    /// one that read an older version of the file must not swap it in last.
    reloading: Arc<Mutex<()>>,
}

type KeySet = HashMap<String, KeyRecord, KeyHashing>;

struct KeyRecord {
    secret: Secret,
    accounts: Arc<[i64]>,
    schemes: Vec<String>,
}

impl KeyRecord {
    fn may_sign_with(&self, scheme: &str) -> bool {
        self.schemes.iter().any(|listed| listed == scheme)
    }
}

/// The scheme a key may sign with when its table names none.
pub const DEFAULT_SCHEME: &str = crate::psk::SCHEME_NAME;

/// Why a keys file could not be loaded. The message names the file and the fault, never a
/// secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileKeyStoreError {
    /// The file could not be read.
    #[error("{path}: cannot read the keys file: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where (line and column).
        message: String,
    },
    /// The file parses, but the application's own tables in it are refused (see
    /// [`FileKeyStore::open_with`]).
    #[error("{path}: {message}")]
    InvalidTables {
        /// The file.
        path: PathBuf,
        /// What the application's check said.
        message: String,
    },
    /// The file holds nothing: no `[[keys]]` and no other table. Taken for a file caught while
    /// it was being written (truncated, then filled), whose load would revoke every key.
    #[error(
        "{path}: the keys file is empty (to change it, write a new file and rename it into place)"
    )]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file parses, but a key in it is not acceptable.
    #[error("{path}: key #{index}: {message}")]
    InvalidKey {
        /// The file.
        path: PathBuf,
        /// The position of the `[[keys]]` table, from 1.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

#[derive(Deserialize)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    /// Zeroed when dropped: a key the loop has not reached when another is refused goes too.
    secret: zeroize::Zeroizing<String>,
    #[serde(default)]
    #[allow(dead_code)] // read for validation of the shape; shown by tools, not used here
    name: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    accounts: Option<Vec<i64>>,
    #[serde(default)]
    schemes: Option<Vec<String>>,
}

impl FileKeyStore {
    /// Reads `path`. Fails if the file is missing or malformed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, FileKeyStoreError> {
        let path = path.into();
        let keys = load(&path)?;
        Ok(FileKeyStore::holding(path, keys))
    }

    fn holding(path: PathBuf, keys: KeySet) -> Self {
        FileKeyStore {
            path: Arc::new(path),
            keys: Arc::new(RwLock::new(Arc::new(keys))),
            reloading: Arc::new(Mutex::new(())),
        }
    }

    /// Reads the file again and swaps in its keys all at once, so a request sees either the
    /// old set or the new one. On error the old set stays in place and the error is returned.
    /// Returns the number of active keys now loaded. Reloads (of this store and its clones)
    /// run one at a time, so the last to finish holds the file as it was last read.
    pub fn reload(&self) -> Result<usize, FileKeyStoreError> {
        self.reload_from(|path| Ok((load(path)?, ())))
            .map(|(count, ())| count)
    }

    /// Loads the file with `load` and swaps its keys in, one reload at a time.
    fn reload_from<U>(
        &self,
        load: impl FnOnce(&Path) -> Result<(KeySet, U), FileKeyStoreError>,
    ) -> Result<(usize, U), FileKeyStoreError> {
        let _one_at_a_time = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (keys, tables) = load(&self.path)?;
        let count = keys.len();
        let old = std::mem::replace(
            &mut *self.keys.write().unwrap_or_else(PoisonError::into_inner),
            Arc::new(keys),
        );
        // Freed (and its secrets zeroed) after the write lock is let go: lookups wait on it.
        drop(old);
        Ok((count, tables))
    }

    /// [`open`](FileKeyStore::open), and the file's tables of the application's own beside its
    /// `[[keys]]` (the `armor-psk` binary keeps its `[[users]]` there), read as `T` and
    /// checked by `check`, from the same read of the file: the keys and the tables are of one
    /// version of it. The tables get the keys' care: the text, which holds every secret, is
    /// zeroed once parsed, and a parse error names the file, line and column but quotes no
    /// value of the file. An error of `check` is [`FileKeyStoreError::InvalidTables`], with
    /// `check`'s message as it is (keep secrets out of it).
    ///
    /// ```
    /// use armor_psk::key_store::FileKeyStore;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Tables {
    ///     owners: Vec<String>,
    /// }
    ///
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("keys.toml");
    /// std::fs::write(&path, "owners = [\"ann\"]\n[[keys]]\nid = \"k\"\nsecret = \"s\"\n")?;
    /// let (store, owners) = FileKeyStore::open_with(&path, |tables: Tables| match &tables.owners[..] {
    ///     [] => Err("no owner"),
    ///     _ => Ok(tables.owners),
    /// })?;
    /// assert_eq!((store.len(), &owners[..]), (1, &["ann".to_owned()][..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open_with<T, U, E>(
        path: impl Into<PathBuf>,
        check: impl FnOnce(T) -> Result<U, E>,
    ) -> Result<(Self, U), FileKeyStoreError>
    where
        T: serde::de::DeserializeOwned,
        E: fmt::Display,
    {
        let path = path.into();
        let (keys, tables) = load_with(&path, check)?;
        Ok((FileKeyStore::holding(path, keys), tables))
    }

    /// [`reload`](FileKeyStore::reload), with the tables of
    /// [`open_with`](FileKeyStore::open_with) from the same read: the keys are swapped in only
    /// if the tables parse and pass `check` too. Returns the number of active keys and what
    /// `check` made of the tables.
    ///
    /// `check` runs while other reloads of this store (and its clones) wait, and once it
    /// passes the keys are swapped in. Where reloads may run at once (a file watcher and a
    /// signal handler), apply the tables inside `check`: applied after this returns, they may
    /// land after a later reload's, and the keys and the tables be of two versions of the file.
    pub fn reload_with<T, U, E>(
        &self,
        check: impl FnOnce(T) -> Result<U, E>,
    ) -> Result<(usize, U), FileKeyStoreError>
    where
        T: serde::de::DeserializeOwned,
        E: fmt::Display,
    {
        self.reload_from(|path| load_with(path, check))
    }

    /// The file this store reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many active (not disabled) keys are loaded.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether no active key is loaded.
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// The accounts a key may act on when it signs with `scheme` (its `accounts` list; empty
    /// when it has none), or `None` when the file as last loaded has no active key of that id
    /// that lists `scheme`: one that answered a request before a reload may not any more.
    pub fn accounts(&self, key_id: &str, scheme: &str) -> Option<Arc<[i64]>> {
        self.with_key(key_id, scheme, |record| Arc::clone(&record.accounts))
    }

    /// A view of this store that finds only the keys whose `schemes` list `scheme`. It follows
    /// reloads.
    pub fn for_scheme(&self, scheme: impl Into<String>) -> SchemeKeys {
        SchemeKeys {
            store: self.clone(),
            scheme: scheme.into(),
        }
    }

    /// A key that may sign with the default scheme: what the store answers as a key store.
    fn find_default(&self, key_id: &str) -> Option<Secret> {
        self.find(key_id, DEFAULT_SCHEME)
    }

    fn find(&self, key_id: &str, scheme: &str) -> Option<Secret> {
        self.with_key(key_id, scheme, |record| record.secret.clone())
    }

    /// `read` of the active key `key_id` if it may sign with `scheme`, under the read lock.
    fn with_key<R>(
        &self,
        key_id: &str,
        scheme: &str,
        read: impl FnOnce(&KeyRecord) -> R,
    ) -> Option<R> {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.get(key_id)
            .filter(|record| record.may_sign_with(scheme))
            .map(read)
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for FileKeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileKeyStore")
            .field("path", &self.path)
            .field("active_keys", &self.len())
            .finish()
    }
}

super::key_store_at_once!(FileKeyStore, find_default);

/// The keys of a [`FileKeyStore`] that may sign with one scheme; see
/// [`FileKeyStore::for_scheme`].
#[derive(Debug, Clone)]
pub struct SchemeKeys {
    store: FileKeyStore,
    scheme: String,
}

impl SchemeKeys {
    fn find(&self, key_id: &str) -> Option<Secret> {
        self.store.find(key_id, &self.scheme)
    }
}

super::key_store_at_once!(SchemeKeys, find);

/// The schemes a keys file may name.
const KNOWN_SCHEMES: [&str; 2] = [DEFAULT_SCHEME, crate::date_hmac::SCHEME_NAME];

fn load(path: &Path) -> Result<KeySet, FileKeyStoreError> {
    let (text, access) = read_text(path)?;
    let keys = keys_of(path, &text)?;
    access.warn_if_open_to_others(path);
    Ok(keys)
}

/// The keys, and the application's tables as `check` makes them, from one read of the file.
fn load_with<T, U, E>(
    path: &Path,
    check: impl FnOnce(T) -> Result<U, E>,
) -> Result<(KeySet, U), FileKeyStoreError>
where
    T: serde::de::DeserializeOwned,
    E: fmt::Display,
{
    let (text, access) = read_text(path)?;
    let keys = keys_of(path, &text)?;
    let tables = check(parse(path, &text)?).map_err(|error| FileKeyStoreError::InvalidTables {
        path: path.to_owned(),
        message: error.to_string(),
    })?;
    access.warn_if_open_to_others(path);
    Ok((keys, tables))
}

fn keys_of(path: &Path, text: &str) -> Result<KeySet, FileKeyStoreError> {
    // Read from the text, before it is parsed: serde would keep copies of the other tables'
    // values to find that there are some.
    let blank = text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#')
    });
    if blank {
        return Err(FileKeyStoreError::Empty {
            path: path.to_owned(),
        });
    }
    let file: KeysFile = parse(path, text)?;
    let mut keys = KeySet::with_capacity_and_hasher(file.keys.len(), KeyHashing::new());
    let mut seen = std::collections::HashSet::new();
    for (position, mut entry) in file.keys.into_iter().enumerate() {
        let invalid = |message: &str| FileKeyStoreError::InvalidKey {
            path: path.to_owned(),
            index: position + 1,
            message: message.to_owned(),
        };
        let id_ok = !entry.id.is_empty()
            && entry.id.len() <= MAX_KEY_ID_LEN
            && entry.id.bytes().all(|b| b.is_ascii_graphic() && b != b':');
        if !id_ok {
            return Err(invalid(
                "the id must be 1 to 256 visible ASCII characters without ':'",
            ));
        }
        if entry.secret.is_empty() {
            return Err(invalid("the secret is empty"));
        }
        if !seen.insert(entry.id.clone()) {
            return Err(invalid(&format!(
                "the id {:?} appears more than once",
                entry.id
            )));
        }
        // No list lets the key act on every account; an empty one would too, which is not what
        // someone who emptied a key's list meant.
        if entry.accounts.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                "accounts is empty: list at least one account, or leave it out for every account",
            ));
        }
        let schemes = entry
            .schemes
            .unwrap_or_else(|| vec![DEFAULT_SCHEME.to_owned()]);
        // Not quoted: a value in the wrong place may be a secret.
        if schemes.iter().any(|s| !KNOWN_SCHEMES.contains(&s.as_str())) {
            return Err(invalid(&format!(
                "a scheme is not one of {KNOWN_SCHEMES:?}"
            )));
        }
        let record = KeyRecord {
            secret: Secret::new(std::mem::take(&mut *entry.secret).into_bytes()),
            accounts: entry.accounts.unwrap_or_default().into(),
            schemes,
        };
        if !entry.disabled {
            keys.insert(entry.id, record);
        }
    }
    Ok(keys)
}

/// The file's text, zeroed on drop: it holds every secret.
/// The file's text, and who may read or write it.
fn read_text(path: &Path) -> Result<(zeroize::Zeroizing<String>, Access), FileKeyStoreError> {
    use std::io::Read;
    let io_error = |source| FileKeyStoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let access = Access::of(&file);
    let mut text = zeroize::Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(io_error)?;
    Ok((text, access))
}

/// The permission bits of a keys file, where the platform has them.
struct Access {
    mode: Option<u32>,
}

impl Access {
    fn of(file: &std::fs::File) -> Self {
        #[cfg(unix)]
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            file.metadata()
                .ok()
                .map(|metadata| metadata.permissions().mode() & 0o777)
        };
        #[cfg(not(unix))]
        let mode = {
            let _ = file;
            None
        };
        Access { mode }
    }

    /// Logs a warning, for a file that loaded, when every user may read or write it, or its
    /// group may write it: it holds every secret. (ssh refuses such a private key file; this
    /// only says so, as a file mounted from a secret store may not be the operator's to
    /// change.) A group that may read it is the usual way to give it to a service that does
    /// not own it, and is not warned of. A file that does not load gets its error alone.
    fn warn_if_open_to_others(&self, path: &Path) {
        if let Some(mode) = self.mode.filter(|mode| mode & 0o026 != 0) {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:04o}"),
                "the keys file, which holds every secret, is open to other users: \
                 take their access away (chmod o-rw,g-w)"
            );
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, FileKeyStoreError> {
    toml::from_str(text).map_err(|error| FileKeyStoreError::Syntax {
        path: path.to_owned(),
        message: describe_toml_error(text, &error),
    })
}

/// The parser's message with its position, on one line (a syntax error's "expected …" comes
/// on a line of its own), but without the quoted source line and without the value serde names
/// (either may be a secret: `secret = 12345` is "invalid type: integer `12345`").
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = redact_value(error.message())
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

fn redact_value(message: &str) -> String {
    // serde names the offending value after "invalid type: ", "invalid value: " and "unknown
    // variant " (an integer in backticks, a string in double quotes), up to ", expected": it is
    // cut out, whatever its shape, and so is all after the prefix when there is no ", expected"
    // (the last one is taken: a string may hold one). Other messages (a missing field, a
    // syntax error, a wrong length) name no value, and are kept.
    let Some(prefix) = ["invalid type: ", "invalid value: ", "unknown variant "]
        .into_iter()
        .find(|prefix| message.starts_with(prefix))
    else {
        return message.to_owned();
    };
    let expected = message.rfind(", expected ").map_or("", |at| &message[at..]);
    format!("{prefix}…{expected}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeyStore;
    use std::io::Write;

    fn write(file: &mut tempfile::NamedTempFile, text: &str) {
        file.as_file_mut().set_len(0).unwrap();
        std::fs::write(file.path(), text).unwrap();
        file.flush().unwrap();
    }

    const TWO_KEYS: &str = r#"
        [[keys]]
        id = "key-1"
        secret = "secret-one"
        name = "first"
        accounts = [7, 8]

        [[keys]]
        id = "key-2"
        secret = "secret-two"
        disabled = true

        [[users]]
        username = "ignored by the key store"
    "#;

    #[tokio::test]
    async fn loads_active_keys_and_skips_disabled_ones() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write(&mut file, TWO_KEYS);
        let store = FileKeyStore::open(file.path()).unwrap();
        assert_eq!(
            store.lookup("key-1").await.unwrap(),
            Some(Secret::from("secret-one"))
        );
        assert_eq!(store.lookup("key-2").await.unwrap(), None);
        assert_eq!(store.len(), 1);
        assert_eq!(
            store.accounts("key-1", DEFAULT_SCHEME).as_deref(),
            Some(&[7, 8][..])
        );
        // Not a scheme the key lists, disabled, not there.
        assert_eq!(store.accounts("key-1", crate::date_hmac::SCHEME_NAME), None);
        assert_eq!(store.accounts("key-2", DEFAULT_SCHEME), None);
        assert_eq!(store.accounts("key-3", DEFAULT_SCHEME), None);
    }

    #[tokio::test]
    async fn keys_are_found_for_the_schemes_they_list() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write(
            &mut file,
            "[[keys]]\nid = \"psk\"\nsecret = \"a\"\n\
             [[keys]]\nid = \"date\"\nsecret = \"b\"\nschemes = [\"date-hmac\"]\n\
             [[keys]]\nid = \"both\"\nsecret = \"c\"\nschemes = [\"armor-psk\", \"date-hmac\"]\n",
        );
        let store = FileKeyStore::open(file.path()).unwrap();
        let date = store.for_scheme(crate::date_hmac::SCHEME_NAME);
        for (id, psk, date_hmac) in [
            ("psk", true, false),
            ("date", false, true),
            ("both", true, true),
        ] {
            assert_eq!(store.lookup(id).await.unwrap().is_some(), psk, "{id}");
            assert_eq!(date.lookup(id).await.unwrap().is_some(), date_hmac, "{id}");
        }
        write(
            &mut file,
            "[[keys]]\nid = \"x\"\nsecret = \"a\"\nschemes = [\"basic\"]\n",
        );
        assert!(store
            .reload()
            .unwrap_err()
            .to_string()
            .contains("a scheme is not one of"));
    }

    #[tokio::test]
    async fn reload_swaps_and_a_broken_file_keeps_the_old_keys() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write(&mut file, TWO_KEYS);
        let store = FileKeyStore::open(file.path()).unwrap();

        write(&mut file, "[[keys]]\nid = \"key-3\"\nsecret = \"s3\"\n");
        assert_eq!(store.reload().unwrap(), 1);
        assert!(store.lookup("key-1").await.unwrap().is_none());
        assert!(store.lookup("key-3").await.unwrap().is_some());

        write(
            &mut file,
            "[[keys]]\nid = \"key-4\"\nsecret = \"top secret value\n",
        );
        let error = store.reload().unwrap_err();
        assert!(matches!(error, FileKeyStoreError::Syntax { .. }), "{error}");
        assert!(!error.to_string().contains("top secret value"), "{error}");
        assert!(store.lookup("key-3").await.unwrap().is_some());
    }

    #[test]
    fn a_value_serde_names_is_cut_out_whatever_its_shape() {
        for (message, redacted) in [
            (
                "invalid type: string \"hunter2\", expected a boolean",
                "invalid type: …, expected a boolean",
            ),
            (
                "invalid value: integer `98765`, expected u8",
                "invalid value: …, expected u8",
            ),
            ("invalid type: string \"hunter2\"", "invalid type: …"),
            (
                "invalid type: string \"a, expected b\", expected a boolean",
                "invalid type: …, expected a boolean",
            ),
            (
                "unknown variant `hunter2`, expected `a` or `b`",
                "unknown variant …, expected `a` or `b`",
            ),
            // Messages that name no value are kept whole.
            (
                "invalid length 3, expected an array of 2",
                "invalid length 3, expected an array of 2",
            ),
            (
                "invalid escape sequence\nexpected `b`, `f`, `n`",
                "invalid escape sequence\nexpected `b`, `f`, `n`",
            ),
            ("missing field `secret`", "missing field `secret`"),
        ] {
            assert_eq!(redact_value(message), redacted);
        }
    }

    #[test]
    fn invalid_files_are_refused_with_a_reason() {
        let cases = [
            ("[[keys]]\nid = \"a\"\n", "secret"),
            ("[[keys]]\nid = \"a\"\nsecret = \"\"\n", "secret is empty"),
            ("[[keys]]\nid = \"a:b\"\nsecret = \"s\"\n", "visible ASCII"),
            ("[[keys]]\nid = \"\"\nsecret = \"s\"\n", "visible ASCII"),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"s\"\ndisable = true\n",
                "disable",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"s\"\n[[keys]]\nid = \"a\"\nsecret = \"t\"\n",
                "more than once",
            ),
            ("keys = 5", "invalid type"),
            (
                "[[keys]]\nid = \"a\"\nsecret = 98765432123\n",
                "invalid type",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"s\"\ndisabled = \"hunter2-topsecret\"\n",
                "invalid type: …, expected a boolean",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"s\"\nschemes = [\"hunter2-secret\"]\n",
                "a scheme is not one of",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = \"s\"\naccounts = []\n",
                "accounts is empty",
            ),
            (
                "[[keys]]\nid = \"a\"\nsecret = hunter2\n",
                "line 3, column 10: invalid string; expected",
            ),
        ];
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for (text, expected) in cases {
            write(&mut file, text);
            let error = FileKeyStore::open(file.path()).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(!error.contains('\n'), "{text:?}: {error}");
            assert!(!error.contains("98765432123"), "{error}");
            assert!(!error.contains("hunter2"), "{error}");
            assert!(
                error.contains(&file.path().display().to_string()),
                "{error}"
            );
        }
        let missing = FileKeyStore::open("/nonexistent/keys.toml").unwrap_err();
        assert!(matches!(missing, FileKeyStoreError::Io { .. }));
    }

    #[cfg(unix)]
    #[test]
    fn a_file_open_to_other_users_is_loaded_with_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write(&mut file, "[[keys]]\nid = \"k\"\nsecret = \"s\"\n");
        let logged_at = |mode: u32| {
            std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish();
            tracing::subscriber::with_default(subscriber, || {
                let _ = FileKeyStore::open(file.path());
            });
            let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
            text
        };
        for closed in [0o600, 0o700, 0o640, 0o440] {
            assert_eq!(logged_at(closed), "", "{closed:o}");
        }
        for open in [0o604, 0o602, 0o620, 0o644, 0o666] {
            let text = logged_at(open);
            assert!(text.contains("WARN"), "{open:o}: {text}");
            assert!(text.contains(&format!("mode={open:04o}")), "{text}");
            assert!(text.contains("chmod o-rw,g-w"), "{text}");
        }
        // A file that does not load gets its error alone.
        std::fs::write(file.path(), "[[keys]\n").unwrap();
        assert_eq!(logged_at(0o644), "");
    }

    #[test]
    fn an_empty_file_is_refused_and_a_reload_of_one_keeps_the_keys() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        for empty in ["", "\n  \n", "# being rewritten\n"] {
            write(&mut file, empty);
            let refused = FileKeyStore::open(file.path()).err();
            assert!(
                matches!(refused, Some(FileKeyStoreError::Empty { .. })),
                "{empty:?}"
            );
        }
        write(&mut file, "[[keys]]\nid = \"k\"\nsecret = \"s\"\n");
        let store = FileKeyStore::open(file.path()).unwrap();
        write(&mut file, "");
        assert!(matches!(
            store.reload(),
            Err(FileKeyStoreError::Empty { .. })
        ));
        assert_eq!(store.len(), 1);
        // A file of other tables alone holds no key, and says so by what it holds; so does one
        // that revokes every key in so many words.
        write(&mut file, "[settings]\nlevel = 1\n");
        assert_eq!(store.reload().unwrap(), 0);
        write(&mut file, "  # none\nkeys = []\n");
        assert_eq!(store.reload().unwrap(), 0);
    }

    #[test]
    fn of_two_reloads_at_once_the_later_read_is_swapped_in_last() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write(&mut file, "[[keys]]\nid = \"old\"\nsecret = \"s\"\n");
        let store = FileKeyStore::open(file.path()).unwrap();
        let (has_read, read) = std::sync::mpsc::channel();
        let slow = {
            let store = store.clone();
            std::thread::spawn(move || {
                store.reload_with(|_: serde::de::IgnoredAny| {
                    has_read.send(()).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    Ok::<(), String>(())
                })
            })
        };
        // The slow reload holds the version with "old"; the key is revoked meanwhile.
        read.recv().unwrap();
        write(&mut file, "[[keys]]\nid = \"new\"\nsecret = \"s\"\n");
        store.reload().unwrap();
        slow.join().unwrap().unwrap();
        assert_eq!(store.with_key("old", DEFAULT_SCHEME, |_| ()), None);
        assert_eq!(store.with_key("new", DEFAULT_SCHEME, |_| ()), Some(()));
    }

    #[test]
    fn other_tables_are_read_with_the_keys_and_the_same_care() {
        #[derive(Debug, Deserialize)]
        struct Users {
            users: Vec<UserEntry>,
        }
        #[derive(Debug, Deserialize)]
        struct UserEntry {
            password_hash: String,
        }
        let check = |tables: Users| match tables.users.len() {
            0 => Err("no user"),
            _ => Ok(tables.users[0].password_hash.clone()),
        };
        let keys = "[[keys]]\nid = \"k\"\nsecret = \"s\"\n";
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write(
            &mut file,
            &format!("{keys}[[users]]\npassword_hash = \"$argon2id$v=19$x\"\n"),
        );
        let (store, hash) = FileKeyStore::open_with(file.path(), check).unwrap();
        assert_eq!((store.len(), hash.as_str()), (1, "$argon2id$v=19$x"));

        // A broken table, or one its check refuses, keeps the keys in use: nothing is swapped.
        for text in [
            "[[users]]\npassword_hash = 8675309123\n".to_owned(),
            "[[keys]]\nid = \"k\"\nsecret = \"unterminated 8675309123\n".to_owned(),
        ] {
            write(&mut file, &text);
            let error = store.reload_with(check).unwrap_err();
            let message = error.to_string();
            assert!(!message.contains("8675309123"), "{message}");
            assert!(
                message.contains(&file.path().display().to_string()),
                "{message}"
            );
            assert_eq!(store.len(), 1, "{message}");
        }
        write(&mut file, "users = []\n");
        let refused = store.reload_with(check).unwrap_err();
        assert!(
            matches!(refused, FileKeyStoreError::InvalidTables { .. }),
            "{refused}"
        );
        assert!(refused.to_string().ends_with(": no user"), "{refused}");
        assert_eq!(store.len(), 1);

        write(
            &mut file,
            "[[keys]]\nid = \"k2\"\nsecret = \"s2\"\n[[users]]\npassword_hash = \"h\"\n",
        );
        let (count, hash) = store.reload_with(check).unwrap();
        assert_eq!((count, hash.as_str()), (1, "h"));
        assert!(store.current().get("k2").is_some());
    }
}
