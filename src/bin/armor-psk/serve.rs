//! `armor-psk serve`: the Armor API test double.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use armor_psk::date_hmac::DateHmac;
use armor_psk::key_store::{FileKeyStore, KeyStore, MemoryKeyStore};
use armor_psk::psk::{ArmorPsk, Credential};
use armor_psk::session::{hash_password, ArmorAuthLayer, Identity, Sessions, User, Users};
use armor_psk::verify::{read_body, OneOf, VerifyLayer, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT};
use armor_psk::{Rejection, Signer, VerifiedKey};
use axum::body::{Body, Bytes};
use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use clap::Args;
use serde_json::{json, Value};

use crate::keys_file::users_of;
use crate::tools::{new_key, shell_quote};
use crate::Fatal;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The keys file: [[keys]] (id, secret, name, disabled, accounts, schemes) and [[users]]
    /// (username, password_hash, accounts). SIGHUP reloads it.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "demo",
        conflicts_with = "demo"
    )]
    keys: Option<PathBuf>,
    /// Make a demo key and user (no file needed), print them and lines ready to paste.
    /// Turns --explain on.
    #[arg(long)]
    demo: bool,
    /// Add to each bad_signature answer the signing string the server computed for each body
    /// form it tried (never the secret or the expected MAC), for client authors.
    #[arg(long)]
    explain: bool,
    /// Seconds to wait, once SIGINT or SIGTERM comes, for open connections to finish before
    /// closing them (a second signal closes them at once).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    shutdown_grace: u64,
}

pub(crate) fn run(args: ServeArgs) -> Result<(), Fatal> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| Fatal(format!("cannot start the runtime: {error}")))?;
    runtime.block_on(serve(args))
}

type KeyAccounts = Box<dyn Fn(&VerifiedKey) -> Option<Arc<[i64]>> + Send + Sync>;

/// Both signing schemes: ARMOR-PSK, and the signed-Date scheme for the keys that list it.
type Schemes = OneOf<ArmorPsk, DateHmac>;

/// What the server authenticates against, and how to reload it.
struct Directory {
    key_store: Box<dyn KeyStore>,
    date_key_store: Box<dyn KeyStore>,
    /// The accounts of each key; `None` for the layer's default, any account for every key.
    key_accounts: Option<KeyAccounts>,
    users: Users,
    file: Option<FileKeyStore>,
    demo: Option<Demo>,
}

struct Demo {
    key_id: String,
    secret: zeroize::Zeroizing<String>,
    username: String,
    password: zeroize::Zeroizing<String>,
}

fn open_file(path: PathBuf) -> Result<Directory, Fatal> {
    let (store, users) = FileKeyStore::open_with(&path, users_of)?;
    let accounts = store.clone();
    Ok(Directory {
        key_store: Box::new(store.clone()),
        date_key_store: Box::new(store.for_scheme(armor_psk::date_hmac::SCHEME_NAME)),
        key_accounts: Some(Box::new(move |key| {
            accounts.accounts(key.key_id(), key.scheme())
        })),
        users,
        file: Some(store),
        demo: None,
    })
}

fn make_demo() -> Result<Directory, Fatal> {
    let (key_id, secret) = new_key();
    let username = "demo@example.com".to_owned();
    let password =
        zeroize::Zeroizing::new(uuid::Uuid::new_v4().simple().to_string()[..20].to_owned());
    let user = User::new(
        username.clone(),
        hash_password(&password)?,
        vec![1001, 1002],
    )?;
    let keys = MemoryKeyStore::builder()
        .key(key_id.clone(), secret.as_str())
        .build();
    Ok(Directory {
        key_store: Box::new(keys.clone()),
        date_key_store: Box::new(keys),
        key_accounts: None,
        users: [user].into_iter().collect(),
        file: None,
        demo: Some(Demo {
            key_id,
            secret,
            username,
            password,
        }),
    })
}

async fn serve(args: ServeArgs) -> Result<(), Fatal> {
    // Before the keys file is read (and the demo's password hashed), which takes a while:
    // SIGHUP's default action would end the process meanwhile.
    let hangup = hangup_signal();
    let directory = match args.keys {
        Some(path) => open_file(path)?,
        None => make_demo()?,
    };
    let sessions = Sessions::builder(directory.users).build();
    let psk = VerifyLayer::with_scheme(OneOf::new(
        ArmorPsk::new(directory.key_store),
        DateHmac::new(directory.date_key_store),
    ));
    let mut auth = ArmorAuthLayer::new(psk.clone(), sessions.clone());
    if let Some(key_accounts) = directory.key_accounts {
        auth = auth.key_accounts(key_accounts);
    }
    let metrics = Metrics::default();

    let mut api = Router::new()
        // Only `GET /me` is special: any other method there is echoed, as every other route
        // (`any` first, so that no `Allow: GET,HEAD` goes with those answers).
        .route("/me", any(echo).get(me))
        .fallback(echo)
        .layer(middleware::from_fn(expose_identity))
        .layer(auth);
    if args.explain || args.demo {
        api = api.layer(middleware::from_fn_with_state(psk, explain_bad_signatures));
    }
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .with_state(metrics.clone())
        .merge(sessions.router())
        .merge(api)
        .layer(middleware::from_fn_with_state(metrics, observe))
        // The routes take their layers now rather than at the first connection (axum applies
        // a handler's layers when its state is given), so that the first request does not
        // wait while the verifier's replay store is built.
        .with_state(());

    listen_for_hangup(hangup, directory.file, sessions);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| Fatal(format!("cannot listen on {}: {error}", args.listen)))?;
    let address = listener
        .local_addr()
        .map_err(|error| Fatal(format!("cannot read the listening address: {error}")))?;
    println!("armor-psk: serving the Armor API test double on http://{address}");
    if let Some(demo) = &directory.demo {
        print_demo(demo, address)?;
    }
    tracing::info!(%address, "listening");
    // Listened for from now on, so that a second signal that comes at once is not missed.
    let mut signals = StopSignals::new();
    let (handover, handed) = tokio::sync::oneshot::channel();
    let first_signal = async move {
        signals.recv().await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = handover.send(signals);
    };
    // A connection that has sent part of a request keeps axum's graceful shutdown waiting for
    // good (it sets no header timeout): the wait is bounded.
    let grace = Duration::from_secs(args.shutdown_grace);
    let closing = async {
        let Ok(mut signals) = handed.await else {
            // The server ended without a signal.
            return std::future::pending().await;
        };
        tokio::select! {
            () = tokio::time::sleep(grace) => {}
            () = signals.recv() => {}
        }
    };
    tokio::select! {
        served = axum::serve(listener, app).with_graceful_shutdown(first_signal) => {
            served.map_err(|error| Fatal(format!("server error: {error}")))?;
        }
        () = closing => {
            tracing::warn!("closing the connections still open");
        }
    }
    tracing::info!("shut down");
    Ok(())
}

fn print_demo(demo: &Demo, address: SocketAddr) -> Result<(), Fatal> {
    let base = format!("http://{address}");
    let exe = std::env::current_exe()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "armor-psk".to_owned());
    let header = Signer::new(demo.key_id.as_str(), demo.secret.as_str())?.authorization(
        &Method::GET,
        "/me",
        b"",
    )?;
    let sign_in = json!({ "username": demo.username, "password": demo.password.as_str() });
    println!("demo key id:   {}", demo.key_id);
    println!("demo secret:   {}", demo.secret.as_str());
    println!("demo user:     {}", demo.username);
    println!("demo password: {}", demo.password.as_str());
    println!("Paste to try (a signature is good once, within 5 minutes):");
    println!(
        "  curl -sS {base}/me -H {}",
        shell_quote(&format!("Authorization: {}", header.to_str()?))
    );
    println!(
        "  ARMOR_PSK_SECRET={} {} sign --key-id {} --secret-env ARMOR_PSK_SECRET --curl GET {base}/me | sh",
        shell_quote(&demo.secret),
        shell_quote(&exe),
        demo.key_id
    );
    println!(
        "  curl -sS -X POST {base}/auth/authorize -H 'Content-Type: application/json' --data-binary {}",
        shell_quote(&sign_in.to_string())
    );
    Ok(())
}

/// SIGINT and SIGTERM, each listened for from when this is made.
struct StopSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            StopSignals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// The next SIGINT or SIGTERM (a signal that cannot be listened for never comes).
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.interrupt) => {}
                () = next(&mut self.terminate) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUP, caught from now on: one that comes before [`listen_for_hangup`] runs is answered
/// then. Caught also when there is no file (`--demo`): SIGHUP's default action ends the
/// process.
#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    let hangup = signal(SignalKind::hangup()).ok();
    if hangup.is_none() {
        tracing::warn!("cannot listen for SIGHUP: the keys file will not be reloaded");
    }
    hangup
}

#[cfg(not(unix))]
fn hangup_signal() {}

/// Reloads the keys file (keys and users) on each SIGHUP `hangup` yields.
#[cfg(unix)]
fn listen_for_hangup(
    hangup: Option<tokio::signal::unix::Signal>,
    store: Option<FileKeyStore>,
    sessions: Sessions,
) {
    let Some(mut hangup) = hangup else {
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let Some(store) = &store else {
                tracing::info!("SIGHUP: no keys file to reload (the demo's keys stay)");
                continue;
            };
            // One read for keys and users: if either part is broken, nothing is swapped.
            let outcome = store.reload_with(users_of).map(|(keys, users)| {
                let count = users.len();
                sessions.set_users(users);
                (keys, count)
            });
            match outcome {
                Ok((keys, users)) => {
                    tracing::info!(keys, users, "reloaded {}", store.path().display())
                }
                Err(error) => {
                    tracing::error!("reload failed, keeping the keys and users in use: {error}")
                }
            }
        }
    });
}

#[cfg(not(unix))]
fn listen_for_hangup(_: (), _: Option<FileKeyStore>, _: Sessions) {}

fn identity_json(identity: &Identity) -> Value {
    match identity {
        Identity::ApiKey { key, account } => json!({
            "scheme": key.scheme(),
            "key_id": key.key_id(),
            "account": account,
        }),
        Identity::User { session, account } => json!({
            "scheme": "FH-AUTH",
            "username": session.username,
            "accounts": accounts_json(&session.accounts),
            "account": account,
        }),
        _ => json!({}),
    }
}

fn accounts_json(accounts: &[i64]) -> Vec<Value> {
    accounts.iter().map(|id| json!({ "id": id })).collect()
}

async fn me(identity: Identity) -> Json<Value> {
    Json(match &identity {
        Identity::User { session, .. } => json!({
            "username": session.username,
            "accounts": accounts_json(&session.accounts),
        }),
        _ => json!({ "key_id": identity.key_id() }),
    })
}

async fn echo(
    identity: Identity,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, Rejection> {
    // A key's body was read by the verifier; a signed-in user's is read here, as the verifier
    // would.
    let body = read_body(&headers, body, DEFAULT_BODY_LIMIT, DEFAULT_BODY_TIMEOUT).await?;
    Ok(Json(json!({
        "identity": identity_json(&identity),
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "body_form": psk_body_form(&identity),
        "body_length": body.len(),
    })))
}

/// The body form an ARMOR-PSK request was signed with; `None` for a signed-in user, and for the
/// signed-Date scheme, which signs no body.
fn psk_body_form(identity: &Identity) -> Option<&'static str> {
    match identity {
        Identity::ApiKey { key, .. } if key.scheme() == armor_psk::psk::SCHEME_NAME => {
            Some(key.body_form().as_str())
        }
        _ => None,
    }
}

/// Adds the signing strings the verifier computed to a `bad_signature` answer. The body goes to
/// the verifier as it came, with a copy kept of what the verifier reads of it (so that it is
/// read only once the earlier checks passed, as without `--explain`).
async fn explain_bad_signatures(
    State(psk): State<VerifyLayer<Schemes>>,
    request: Request,
    next: Next,
) -> Response {
    // Only a request with a well-formed ARMOR-PSK credential can get a bad_signature to
    // explain: the rest go on as they came.
    let well_formed = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .is_some_and(|value| Credential::parse_bytes(value.as_bytes()).is_ok());
    if !well_formed {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let (method, uri, headers) = (
        parts.method.clone(),
        parts.uri.clone(),
        parts.headers.clone(),
    );
    let read = Arc::new(Mutex::new(Vec::new()));
    let declared = http_body::Body::size_hint(&body).exact().unwrap_or(0);
    let body = Body::new(Copied {
        body,
        read: Arc::clone(&read),
        declared: usize::try_from(declared)
            .map_or(DEFAULT_BODY_LIMIT, |length| length.min(DEFAULT_BODY_LIMIT)),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    if response.extensions().get::<Rejection>() != Some(&Rejection::BadSignature) {
        return response;
    }
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    // A MAC is checked only once the whole body has been read.
    let bytes = Bytes::from(std::mem::take(
        &mut *read.lock().unwrap_or_else(PoisonError::into_inner),
    ));
    let Some(explained) = psk
        .scheme()
        .first()
        .explain(&request.into_parts().0, &bytes)
    else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Rejection::BadSignature.into_response();
    };
    let mut answer: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
    answer["error"]["signing_strings"] = explained
        .iter()
        .map(|e| json!({ "form": e.form.as_str(), "signing_string": e.signing_string }))
        .collect();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(answer.to_string()))
}

pin_project_lite::pin_project! {
    /// A body that copies what is read from it into one buffer. Copied, not kept as `Bytes`
    /// handles: a body sent a byte at a chunk would hold a 32-byte handle, and a share of the
    /// connection's read buffer, for every byte (the verifier gathers small chunks for this).
    struct Copied {
        #[pin]
        body: Body,
        read: Arc<Mutex<Vec<u8>>>,
        // The room the copy takes: the length the body declares, up to the verifier's limit
        // (so that it does not grow by doubling).
        declared: usize,
    }
}

impl http_body::Body for Copied {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.body.poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
            let mut read = this.read.lock().unwrap_or_else(PoisonError::into_inner);
            if read.capacity() == 0 {
                // Taken once the verifier reads the body, not for a request refused before.
                read.reserve_exact((*this.declared).max(data.len()));
            }
            read.extend_from_slice(data);
        }
        std::task::Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Copies the caller's identity into the response, for the log line and the metrics outside.
async fn expose_identity(request: Request, next: Next) -> Response {
    let identity = request.extensions().get::<Identity>().cloned();
    let mut response = next.run(request).await;
    if let Some(identity) = identity {
        response.extensions_mut().insert(identity);
    }
    response
}

/// Counters for `/metrics`, by outcome code and by body form.
#[derive(Clone, Default)]
struct Metrics {
    counts: Arc<Mutex<BTreeMap<(&'static str, String), u64>>>,
}

impl Metrics {
    fn add(&self, family: &'static str, label: String) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        *counts.entry((family, label)).or_insert(0) += 1;
    }
}

const FAMILIES: [(&str, &str, &str); 3] = [
    (
        "armor_psk_requests_total",
        "outcome",
        "Authenticated routes' requests by outcome: ok, or the refusal code.",
    ),
    (
        "armor_psk_body_forms_total",
        "form",
        "Accepted ARMOR-PSK requests by the body form they were signed with.",
    ),
    (
        "armor_psk_responses_total",
        "status",
        "All responses by HTTP status.",
    ),
];

async fn render_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    let counts = metrics
        .counts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut text = String::new();
    for (family, label, help) in FAMILIES {
        text.push_str(&format!(
            "# HELP {family} {help}\n# TYPE {family} counter\n"
        ));
        for ((name, value), count) in counts.iter().filter(|((name, _), _)| *name == family) {
            text.push_str(&format!("{name}{{{label}=\"{value}\"}} {count}\n"));
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], text)
}

/// One log line per request, and the counters. Never the Authorization header: only its
/// outcome, the key id or username, and the request line without its query.
async fn observe(State(metrics): State<Metrics>, request: Request<Body>, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    let identity = response.extensions().get::<Identity>();
    let outcome = match (response.extensions().get::<Rejection>(), identity) {
        (Some(rejection), _) => Some(rejection.code()),
        (None, Some(_)) => Some("ok"),
        (None, None) => None,
    };
    if let Some(outcome) = outcome {
        metrics.add("armor_psk_requests_total", outcome.to_owned());
    }
    if let Some(form) = identity.and_then(psk_body_form) {
        metrics.add("armor_psk_body_forms_total", form.to_owned());
    }
    metrics.add("armor_psk_responses_total", status.as_u16().to_string());
    tracing::info!(
        %method,
        path,
        status = status.as_u16(),
        outcome = outcome.unwrap_or("-"),
        key_id = identity.and_then(Identity::key_id).unwrap_or("-"),
        username = identity.and_then(Identity::username).unwrap_or("-"),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!(%method, path, "internal error");
    }
    response
}
