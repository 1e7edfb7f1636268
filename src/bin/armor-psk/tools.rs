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
    let mut options = std::fs::OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|error| Fatal(format!("{}: {error}", path.display())))?;
    let separator = if file.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
        "\n"
    } else {
        ""
    };
    file.write_all(format!("{separator}{table}").as_bytes())
        .map_err(|error| Fatal(format!("{}: {error}", path.display())))?;
    println!("key id: {id}");
    println!(
        "secret: {} (shown once: it is in {} and nowhere else)",
        secret.as_str(),
        path.display()
    );
    Ok(())
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

pub(crate) fn hash_password() -> Result<(), Fatal> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| Fatal(format!("cannot read the password from stdin: {error}")))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(Fatal("the password is empty".into()));
    }
    let max = armor_psk::session::MAX_PASSWORD_LEN;
    if password.len() > max {
        return Err(Fatal(format!(
            "the password is over {max} bytes: a sign-in with it would be refused"
        )));
    }
    println!("{}", armor_psk::session::hash_password(password)?);
    Ok(())
}
