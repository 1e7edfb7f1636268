//! `sign`, `keygen` and `hash-password`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use armor_psk::date_hmac::DateHmacSigner;
use armor_psk::psk::BodyForm;
use armor_psk::Signer;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use clap::Args;
use http::header::{AUTHORIZATION, DATE};
use http::Method;
use zeroize::Zeroizing;

use crate::{Fatal, SecretSource};

#[derive(Args)]
pub(crate) struct SignArgs {
    /// The API key id.
    #[arg(long)]
    key_id: String,
    #[command(flatten)]
    secret: SecretSource,
    /// The signing scheme: ARMOR-PSK, or the License API's signed Date header (which prints
    /// a `Date` line too, and signs no method, path or body).
    #[arg(long, default_value = "armor-psk", value_parser = ["armor-psk", "date-hmac"])]
    scheme: String,
    /// How the body enters the signature (ARMOR-PSK; default: digest).
    #[arg(long, value_parser = ["digest", "raw", "empty"])]
    form: Option<String>,
    /// The nonce (ARMOR-PSK; default: a random UUID v4).
    #[arg(long)]
    nonce: Option<String>,
    /// Print a whole curl command rather than the header value.
    #[arg(long)]
    curl: bool,
    /// The request body: a string, or @FILE to read it from a file.
    #[arg(long)]
    data: Option<String>,
    /// The request method (GET, POST, ...).
    method: String,
    /// The request URL (scheme, host and query are not signed).
    url: String,
}

#[derive(Args)]
pub(crate) struct KeygenArgs {
    /// Append the key to this keys file (created with mode 0600 if missing).
    #[arg(long, value_name = "FILE")]
    keys: Option<PathBuf>,
    /// A name for the key, for people and logs.
    #[arg(long)]
    name: Option<String>,
}

pub(crate) fn read_secret(source: &SecretSource) -> Result<Zeroizing<String>, Fatal> {
    let secret = match (&source.secret_env, &source.secret_file) {
        (Some(var), _) => std::env::var(var).map_err(|_| {
            Fatal(format!(
                "environment variable {var} is not set (or not UTF-8)"
            ))
        })?,
        (None, Some(path)) => {
            let mut text = std::fs::read_to_string(path)
                .map_err(|error| Fatal(format!("{}: {error}", path.display())))?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            text
        }
        (None, None) => return Err(Fatal("give --secret-env or --secret-file".into())),
    };
    if secret.is_empty() {
        return Err(Fatal("the secret is empty".into()));
    }
    Ok(Zeroizing::new(secret))
}

pub(crate) fn sign(args: SignArgs) -> Result<(), Fatal> {
    let secret = read_secret(&args.secret)?;
    // Letters only: the method goes into --curl's command line unquoted.
    let method = Some(args.method.to_ascii_uppercase())
        .filter(|method| !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()))
        .and_then(|method| Method::from_bytes(method.as_bytes()).ok())
        .ok_or_else(|| Fatal(format!("{:?} is not an HTTP method", args.method)))?;
    // curl, and clients generally, percent-encode what is not ASCII, and the server checks
    // the path as sent: a path signed as typed would not be the one that arrives.
    if !args.url.is_ascii() {
        return Err(Fatal(format!(
            "{:?} is not ASCII: percent-encode it (é is %C3%A9), and sign that",
            args.url
        )));
    }
    let uri: http::Uri = args
        .url
        .parse()
        .map_err(|error| Fatal(format!("{:?} is not a URL: {error}", args.url)))?;
    if args.curl && uri.host().is_none() {
        return Err(Fatal(format!(
            "{:?} names no host for curl to send to: give the whole URL (http://host/path)",
            args.url
        )));
    }
    if method == Method::HEAD && args.data.is_some() {
        return Err(Fatal(
            "a HEAD request carries no body: drop --data (curl would refuse -I with it)".into(),
        ));
    }
    let body = match args.data.as_deref() {
        None => Vec::new(),
        Some(data) => match data.strip_prefix('@') {
            Some(path) => std::fs::read(path).map_err(|error| Fatal(format!("{path}: {error}")))?,
            None => data.as_bytes().to_vec(),
        },
    };
    let headers = if args.scheme == armor_psk::date_hmac::SCHEME_NAME {
        for (flag, given) in [
            ("--nonce", args.nonce.is_some()),
            ("--form", args.form.is_some()),
        ] {
            if given {
                return Err(Fatal(format!(
                    "{flag} does not apply to date-hmac, which signs only the Date"
                )));
            }
        }
        let mut request = http::Request::new(());
        DateHmacSigner::new(args.key_id, secret.as_str())?.sign(&mut request)?;
        let header = |name: http::header::HeaderName| -> Result<String, Fatal> {
            let value = request.headers().get(&name);
            let value = value.ok_or_else(|| Fatal(format!("no {name} header")))?;
            Ok(value.to_str()?.to_owned())
        };
        vec![
            ("Date", header(DATE)?),
            ("Authorization", header(AUTHORIZATION)?),
        ]
    } else {
        let form: BodyForm = args.form.as_deref().unwrap_or("digest").parse()?;
        if form == BodyForm::Empty && !body.is_empty() {
            eprintln!(
                "warning: --form empty signs no body: a server refuses this request \
                 (bad_signature) unless it accepts unsigned bodies"
            );
        }
        let signer = Signer::new(args.key_id, secret.as_str())?.body_form(form);
        let path = uri.path();
        let header = match &args.nonce {
            Some(nonce) => {
                let now = armor_psk::clock::Clock::now_unix(&armor_psk::clock::SystemClock);
                signer.authorization_with(&method, path, &body, nonce, now)?
            }
            None => signer.authorization(&method, path, &body)?,
        };
        vec![("Authorization", header.to_str()?.to_owned())]
    };
    if !args.curl {
        match headers.as_slice() {
            [(_, authorization)] => println!("{authorization}"),
            _ => headers
                .iter()
                .for_each(|(name, value)| println!("{name}: {value}")),
        }
        return Ok(());
    }
    // --path-as-is: curl would otherwise resolve `.` and `..` segments, and send another path
    // than the one signed; -g: it would expand `[1-3]` and `{a,b}` in the URL. A HEAD goes
    // by -I: with `-X HEAD` curl waits for the body the answer's Content-Length announces.
    let method = match method {
        Method::HEAD => "-I".to_owned(),
        method => format!("-X {method}"),
    };
    let mut command = format!(
        "curl -sS -g --path-as-is {method} {}",
        shell_quote(&args.url)
    );
    for (name, value) in &headers {
        command.push_str(&format!(" -H {}", shell_quote(&format!("{name}: {value}"))));
    }
    command.push_str(" -H 'Content-Type: application/json'");
    if let Some(data) = &args.data {
        let data = match data.strip_prefix('@') {
            Some(path) => format!("@{path}"),
            None => data.clone(),
        };
        command.push_str(&format!(" --data-binary {}", shell_quote(&data)));
    }
    println!("{command}");
    Ok(())
}

/// Single-quotes `text` for a POSIX shell.
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A new key: a UUID v4 id and 32 random bytes of secret, in standard base64.
pub(crate) fn new_key() -> (String, Zeroizing<String>) {
    let id = uuid::Uuid::new_v4().to_string();
    let secret = Zeroizing::new(STANDARD.encode(rand::random::<[u8; 32]>()));
    (id, secret)
}

pub(crate) fn keygen(args: KeygenArgs) -> Result<(), Fatal> {
    let (id, secret) = new_key();
    let mut table = format!(
        "[[keys]]\nid = {}\nsecret = {}\n",
        toml_string(&id),
        toml_string(&secret)
    );
    if let Some(name) = &args.name {
        table.push_str(&format!("name = {}\n", toml_string(name)));
    }
    let Some(path) = &args.keys else {
        print!("{table}");
        return Ok(());
    };
    add_to_keys_file(path, &table)
        .map_err(|error| Fatal(format!("{}: {error}", path.display())))?;
    println!("key id: {id}");
    println!(
        "secret: {} (shown once: it is in {} and nowhere else)",
        secret.as_str(),
        path.display()
    );
    Ok(())
}

/// Adds `table` to the keys file at `path` (through a symlink, to its target): a new file with
/// the old text and the table is written beside it and renamed over it, so that a server that
/// reads the file (at start, or on SIGHUP) finds the old whole or the new whole, and a write
/// that fails leaves the old in place. The new file gets the old one's mode (0600 for a file
/// that is made), owner and group; where the process cannot give it those, the old file is
/// left as it was and the error says why. Two runs at once may lose one's key: run one at a
/// time.
fn add_to_keys_file(path: &std::path::Path, table: &str) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    let target = match std::fs::canonicalize(path) {
        Ok(target) => target,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok_and(|link| link.is_symlink()) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    "a symlink to a file that does not exist",
                ));
            }
            path.to_owned()
        }
        Err(error) => return Err(error),
    };
    let old = match std::fs::read(&target) {
        Ok(text) => Some((Zeroizing::new(text), std::fs::metadata(&target)?)),
        Err(error) if error.kind() == ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let mut text = Zeroizing::new(Vec::new());
    if let Some((old_text, metadata)) = &old {
        warn_if_open_to_others(path, metadata);
        text.extend_from_slice(old_text);
        if !text.is_empty() {
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.push(b'\n');
        }
    }
    text.extend_from_slice(table.as_bytes());

    // A name of its own (a process id alone repeats, as 1 in a container), made new: a file of
    // that name that is there already is someone else's, and is not touched.
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let temporary = target.with_file_name(format!(".{name}.{}.new", uuid::Uuid::new_v4()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    let replaced = (|| {
        file.write_all(&text)?;
        if let Some((_, metadata)) = &old {
            keep_access(&file, metadata)?;
        }
        file.sync_all()?;
        std::fs::rename(&temporary, &target)
    })();
    if replaced.is_err() {
        let _ = std::fs::remove_file(&temporary);
        return replaced;
    }
    // The rename itself, made durable where the platform allows a directory to be synced.
    let directory = match target.parent() {
        Some(directory) if !directory.as_os_str().is_empty() => directory,
        _ => std::path::Path::new("."),
    };
    let _ = std::fs::File::open(directory).and_then(|dir| dir.sync_all());
    Ok(())
}

/// Gives `file` the mode, owner and group of the file it replaces (a root that runs keygen
/// keeps the file the service's), or an error where the process cannot: a file the service
/// could not read would otherwise take the old one's place.
fn keep_access(file: &std::fs::File, old: &std::fs::Metadata) -> std::io::Result<()> {
    file.set_permissions(old.permissions())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{fchown, MetadataExt};
        // The group alone where the owner cannot be given (a member of the file's group).
        if fchown(file, Some(old.uid()), Some(old.gid())).is_err() {
            let _ = fchown(file, None, Some(old.gid()));
        }
        let new = file.metadata()?;
        if (new.uid(), new.gid()) != (old.uid(), old.gid()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "cannot give the new file the old one's owner and group ({}:{}): run \
                     keygen as its owner, or as root",
                    old.uid(),
                    old.gid()
                ),
            ));
        }
    }
    Ok(())
}

/// Warns, on stderr, of a keys file every user may read or write, or its group write, as the
/// server does when it loads one.
fn warn_if_open_to_others(path: &std::path::Path, metadata: &std::fs::Metadata) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o026 != 0 {
            eprintln!(
                "warning: {} (mode {mode:04o}) is open to other users, and holds every secret: \
                 take their access away (chmod o-rw,g-w)",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, metadata);
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

pub(crate) fn hash_password() -> Result<(), Fatal> {
    use std::io::Read as _;
    let max = armor_psk::session::MAX_PASSWORD_LEN;
    // Room for the longest password, its line ending and one byte more, taken at once: the
    // line never outgrows it (a grown buffer would leave a copy of the password unzeroed),
    // and input without a line ending (the wrong file) stops there.
    let room = max + 3;
    let mut line = Zeroizing::new(Vec::with_capacity(room));
    std::io::stdin()
        .lock()
        .take(room as u64)
        .read_until(b'\n', &mut line)
        .map_err(|error| Fatal(format!("cannot read the password from stdin: {error}")))?;
    let password = line.strip_suffix(b"\n").unwrap_or(&line);
    let password = password.strip_suffix(b"\r").unwrap_or(password);
    if password.is_empty() {
        return Err(Fatal("the password is empty".into()));
    }
    if password.len() > max {
        return Err(Fatal(format!(
            "the password is over {max} bytes: a sign-in with it would be refused"
        )));
    }
    let password =
        std::str::from_utf8(password).map_err(|_| Fatal("the password is not UTF-8".into()))?;
    println!("{}", armor_psk::session::hash_password(password)?);
    Ok(())
}
