//! Nothing secret reaches a log: every event the verifier (and axum, hyper and the signing
//! client around it) emits at every level down to TRACE, across accepted and refused requests,
//! is captured and searched for the secret, every signature sent, a session token and a
//! password; and `{:?}` of every public type that holds a secret or a signature is searched
//! the same way.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use armor_psk::clock::ManualClock;
use armor_psk::key_store::{FileKeyStore, KeyStore, KeyStoreError, MemoryKeyStore};
use armor_psk::psk::{Credential, HmacSha512, MAC_LEN};
use armor_psk::replay::{MokaReplayStore, Recorded, ReplayRecord, ReplayStore, ReplayStoreError};
use armor_psk::{Secret, SignRequestLayer, Signer, VerifiedKey, VerifyPskLayer};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::routing::any;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::Mac as _;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer as _, Service as _, ServiceBuilder, ServiceExt};
use tracing::Level;

const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
const SECRET: &str = "Zm9yLXRoZS1sb2ctdGVzdC1vbmx5-SECRET";
/// What a session token looks like (32 hex digits, protocol.md §5).
const SESSION_TOKEN: &str = "0f3c9a7be21d4c58a6e0b9d2f4a81c37";
const PASSWORD: &str = "correct-horse-battery-staple-PASSWORD";
const NOW: i64 = 1_700_000_000;

// --- Capturing tracing output. ----------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// --- What must never appear. --------------------------------------------------------------------

/// Every spelling of a secret value a log line could carry: as is, and for byte strings the
/// base64, hex and `Debug` forms of a prefix of it.
#[derive(Default)]
struct Forbidden(Vec<(String, String)>);

impl Forbidden {
    fn text(&mut self, what: &str, value: &str) {
        self.0.push((what.to_owned(), value.to_owned()));
    }

    fn mac(&mut self, what: &str, mac: &[u8; MAC_LEN]) {
        self.text(&format!("{what} (base64)"), &STANDARD.encode(mac));
        // A 16-character stretch of the base64 is as damning as the whole.
        self.text(
            &format!("{what} (base64 prefix)"),
            &STANDARD.encode(mac)[..16],
        );
        let hex: String = mac[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.text(&format!("{what} (hex)"), &hex);
        let debug = format!("{:?}", &mac[..6]);
        self.text(
            &format!("{what} (Debug bytes)"),
            debug.trim_end_matches(']'),
        );
    }

    fn header(&mut self, what: &str, header: &HeaderValue) {
        let credential = Credential::parse_bytes(header.as_bytes()).unwrap();
        self.mac(what, credential.mac());
    }

    fn assert_absent_from(&self, text: &str, context: &str) {
        for (what, value) in &self.0 {
            assert!(
                !text.contains(value.as_str()),
                "{what} ({value:?}) appears in {context}:\n{text}"
            );
        }
    }
}

fn forbidden_basics() -> Forbidden {
    let mut forbidden = Forbidden::default();
    forbidden.text("the secret", SECRET);
    forbidden.text("the secret (prefix)", &SECRET[..12]);
    let secret_bytes = format!("{:?}", &SECRET.as_bytes()[..6]);
    forbidden.text(
        "the secret (Debug bytes)",
        secret_bytes.trim_end_matches(']'),
    );
    forbidden.text("the session token", SESSION_TOKEN);
    forbidden.text("the password", PASSWORD);
    forbidden
}

// --- Stores that fail, so that their error paths log too. ---------------------------------------

struct FailingKeyStore;

#[armor_psk::async_trait]
impl KeyStore for FailingKeyStore {
    async fn lookup(&self, key_id: &str) -> Result<Option<Secret>, KeyStoreError> {
        match key_id {
            "error-key" => Err(KeyStoreError::new("database unreachable")),
            "panic-key" => panic!("key store panic (on purpose, in a test)"),
            "hang-key" => std::future::pending().await,
            KEY_ID => Ok(Some(Secret::from(SECRET))),
            _ => Ok(None),
        }
    }
}

struct FailingReplayStore(MokaReplayStore);

#[armor_psk::async_trait]
impl ReplayStore for FailingReplayStore {
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        match request.nonce {
            "replay-store-error" => Err(ReplayStoreError::Unavailable("down".into())),
            "replay-store-panic" => panic!("replay store panic (on purpose, in a test)"),
            _ => self.0.record(request).await,
        }
    }
}

// --- The requests. ------------------------------------------------------------------------------

async fn echo(key: VerifiedKey, request: Request) -> String {
    let body = request.into_body().collect().await.unwrap().to_bytes();
    format!("{} read {} bytes", key.key_id(), body.len())
}

fn app(clock: &ManualClock) -> Router {
    let layer = VerifyPskLayer::new(FailingKeyStore)
        .replay_store(FailingReplayStore(MokaReplayStore::default()))
        .clock(clock.clone())
        .body_limit(4096)
        .body_timeout(Duration::from_millis(50))
        .store_timeout(Duration::from_millis(50));
    Router::new()
        .route("/{*path}", any(echo))
        .layer(layer)
        .layer(tower_http::trace::TraceLayer::new_for_http())
}

fn signer() -> Signer {
    Signer::new(KEY_ID, SECRET)
        .unwrap()
        .clock(ManualClock::new(NOW))
}

fn request(method: Method, uri: &str, header: HeaderValue, body: Body) -> Request {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", header)
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

/// Sends `request` through `app` and returns the status.
async fn send(app: &Router, request: Request) -> StatusCode {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let _ = response.into_body().collect().await.unwrap();
    status
}

/// Drives the layer through every outcome it has, and returns what must not show in the logs.
async fn every_outcome() -> Forbidden {
    let mut forbidden = forbidden_basics();
    let clock = ManualClock::new(NOW);
    let app = app(&clock);
    let login = format!(r#"{{"username":"ann","password":"{PASSWORD}"}}"#);
    let expect = |status: StatusCode, wanted: u16, what: &str| {
        assert_eq!(status.as_u16(), wanted, "{what}");
    };

    // Accepted: a GET, and POSTs carrying a password under each signed body form.
    let get = signer()
        .authorization_with(&Method::GET, "/me", b"", "get-1", NOW)
        .unwrap();
    forbidden.header("an accepted GET's signature", &get);
    let status = send(
        &app,
        request(Method::GET, "/me", get.clone(), Body::empty()),
    )
    .await;
    expect(status, 200, "signed GET");
    for form in [
        armor_psk::psk::BodyForm::Digest,
        armor_psk::psk::BodyForm::Raw,
    ] {
        let header = signer()
            .body_form(form)
            .authorization_with(
                &Method::POST,
                "/auth/authorize",
                login.as_bytes(),
                form.as_str(),
                NOW,
            )
            .unwrap();
        forbidden.header("an accepted POST's signature", &header);
        let body = Body::from(login.clone());
        let status = send(&app, request(Method::POST, "/auth/authorize", header, body)).await;
        expect(status, 200, form.as_str());
    }

    // Refused: a replay, a tampered body, a wrong secret, out of the window, unknown key.
    let status = send(&app, request(Method::GET, "/me", get, Body::empty())).await;
    expect(status, 401, "replay");
    let tampered = signer()
        .authorization_with(&Method::POST, "/x", login.as_bytes(), "tampered", NOW)
        .unwrap();
    forbidden.header("a tampered request's signature", &tampered);
    let other_body = Body::from(login.replace("ann", "bob"));
    let status = send(&app, request(Method::POST, "/x", tampered, other_body)).await;
    expect(status, 401, "tampered");
    let wrong = Signer::new(KEY_ID, "not-the-secret")
        .unwrap()
        .authorization_with(&Method::GET, "/me", b"", "wrong", NOW)
        .unwrap();
    forbidden.header("a wrong secret's signature", &wrong);
    let status = send(&app, request(Method::GET, "/me", wrong, Body::empty())).await;
    expect(status, 401, "wrong secret");
    let late = signer()
        .authorization_with(&Method::GET, "/me", b"", "late", NOW - 301)
        .unwrap();
    forbidden.header("a late request's signature", &late);
    let status = send(&app, request(Method::GET, "/me", late, Body::empty())).await;
    expect(status, 401, "out of window");
    for (key_id, wanted) in [
        ("unknown-key", 401),
        ("error-key", 503),
        ("panic-key", 503),
        ("hang-key", 503),
    ] {
        let header = Signer::new(key_id, SECRET)
            .unwrap()
            .authorization_with(&Method::GET, "/me", b"", "n", NOW)
            .unwrap();
        forbidden.header(key_id, &header);
        let status = send(&app, request(Method::GET, "/me", header, Body::empty())).await;
        expect(status, wanted, key_id);
    }
    for nonce in ["replay-store-error", "replay-store-panic"] {
        let header = signer()
            .authorization_with(&Method::GET, "/me", b"", nonce, NOW)
            .unwrap();
        forbidden.header(nonce, &header);
        let status = send(&app, request(Method::GET, "/me", header, Body::empty())).await;
        expect(status, 503, nonce);
    }

    // Malformed: a header whose fields carry the secret and the password, a header of several
    // kilobytes, two headers, and another scheme carrying a session token.
    let signature = STANDARD.encode([7u8; MAC_LEN]);
    let malformed = [
        format!("ARMOR-PSK {KEY_ID}:{signature}:{SECRET}:{PASSWORD}"),
        format!("ARMOR-PSK {KEY_ID}:{SECRET}:{PASSWORD}:{NOW}"),
        format!("ARMOR-PSK {}{SECRET}", "x".repeat(4096)),
        format!("FH-AUTH {SESSION_TOKEN}"),
        format!("Bearer {SESSION_TOKEN}"),
    ];
    for value in &malformed {
        let header = HeaderValue::from_str(value).unwrap();
        let status = send(&app, request(Method::GET, "/me", header, Body::empty())).await;
        assert!(status.is_client_error(), "{value}: {status}");
    }
    let two = signer()
        .authorization_with(&Method::GET, "/me", b"", "two", NOW)
        .unwrap();
    forbidden.header("a doubled header's signature", &two);
    let mut doubled = request(Method::GET, "/me", two.clone(), Body::empty());
    doubled.headers_mut().append("authorization", two);
    expect(send(&app, doubled).await, 400, "two headers");

    // Bodies: too large, failing midway, too slow.
    let big = vec![b'a'; 5000];
    let header = signer()
        .authorization_with(&Method::POST, "/x", &big, "big", NOW)
        .unwrap();
    forbidden.header("a large body's signature", &header);
    let status = send(&app, request(Method::POST, "/x", header, Body::from(big))).await;
    expect(status, 413, "too large");
    let header = signer()
        .authorization_with(&Method::POST, "/x", login.as_bytes(), "broken", NOW)
        .unwrap();
    forbidden.header("a broken body's signature", &header);
    let frames: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from(login.clone())),
        // (The body's own error is logged as it is: hyper's say what failed, never the bytes.)
        Err(std::io::Error::other("connection reset")),
    ];
    let body = Body::from_stream(futures_util::stream::iter(frames));
    let status = send(&app, request(Method::POST, "/x", header, body)).await;
    expect(status, 400, "body read failed");
    let header = signer()
        .authorization_with(&Method::POST, "/x", login.as_bytes(), "slow", NOW)
        .unwrap();
    forbidden.header("a slow body's signature", &header);
    let stalled = futures_util::stream::pending::<Result<Bytes, Infallible>>();
    let status = send(
        &app,
        request(Method::POST, "/x", header, Body::from_stream(stalled)),
    )
    .await;
    expect(status, 408, "body timeout");

    forbidden
}

/// The same over a socket: hyper on both ends, the signing client's layer included.
async fn over_tcp(forbidden: &mut Forbidden) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let keys = MemoryKeyStore::builder().key(KEY_ID, SECRET).build();
    let router = Router::new()
        .route("/{*path}", any(echo))
        .layer(VerifyPskLayer::new(keys))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // The nonces are known, so that the signatures the client sends can be recomputed.
    let nonces = Arc::new(Mutex::new(0u32));
    let counter = Arc::clone(&nonces);
    let signer = Signer::new(KEY_ID, SECRET).unwrap().nonce_source(move || {
        let mut next = counter.lock().unwrap();
        *next += 1;
        format!("tcp-{next}")
    });
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut client = ServiceBuilder::new()
        .layer(SignRequestLayer::new(signer))
        .service(http);
    let login = format!(r#"{{"password":"{PASSWORD}"}}"#);
    for (method, body) in [(Method::GET, String::new()), (Method::POST, login)] {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://{address}/auth/authorize"))
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = ServiceExt::<http::Request<Full<Bytes>>>::ready(&mut client)
            .await
            .unwrap()
            .call(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.into_body().collect().await.unwrap();
    }
    // Recompute the two signatures the client sent, now that the test knows the time too.
    let sent = *nonces.lock().unwrap();
    assert_eq!(sent, 2);
    let now = armor_psk::clock::Clock::now_unix(&armor_psk::clock::SystemClock);
    let recompute = Signer::new(KEY_ID, SECRET).unwrap();
    for timestamp in now - 2..=now {
        let get = recompute
            .authorization_with(&Method::GET, "/auth/authorize", b"", "tcp-1", timestamp)
            .unwrap();
        forbidden.header("the client's GET signature", &get);
        let body = format!(r#"{{"password":"{PASSWORD}"}}"#);
        let post = recompute
            .authorization_with(
                &Method::POST,
                "/auth/authorize",
                body.as_bytes(),
                "tcp-2",
                timestamp,
            )
            .unwrap();
        forbidden.header("the client's POST signature", &post);
    }
}

#[test]
fn nothing_secret_is_logged_at_any_level() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .with_target(true)
        .finish();
    // The runtime is single-threaded, so every task it runs (hyper's connections included)
    // logs through this thread's default subscriber.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let forbidden = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let mut forbidden = every_outcome().await;
            over_tcp(&mut forbidden).await;
            forbidden
        })
    });
    drop(runtime);

    let logs = captured.text();
    // The capture works, and saw the verifier's own events at the levels it uses.
    for expected in [
        "request refused",
        "code=\"bad_signature\"",
        "code=\"replayed_nonce\"",
        "key store lookup failed",
        "key store lookup panicked",
        "key store lookup timed out",
        "replay store failed",
        "replay store panicked",
        "request body could not be read",
        "DEBUG",
        "WARN",
        "ERROR",
    ] {
        assert!(
            logs.contains(expected),
            "{expected:?} not in the logs:\n{logs}"
        );
    }
    forbidden.assert_absent_from(&logs, "the logs");
}

#[tokio::test]
async fn debug_of_every_public_type_holding_a_secret_hides_it() {
    let mut forbidden = forbidden_basics();
    let secret = Secret::from(SECRET);
    let signer = signer();
    let header = signer
        .authorization_with(&Method::POST, "/x", b"{}", "n", NOW)
        .unwrap();
    forbidden.header("a signature", &header);
    let credential = Credential::parse_bytes(header.as_bytes()).unwrap();
    let record = ReplayRecord::new(KEY_ID, "n", credential.mac(), NOW + 300, NOW);
    let memory = MemoryKeyStore::builder().key(KEY_ID, SECRET).build();
    let memory_builder = MemoryKeyStore::builder().key(KEY_ID, SECRET);

    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "[[keys]]\nid = \"{KEY_ID}\"\nsecret = \"{SECRET}\"").unwrap();
    let file_store = FileKeyStore::open(file.path()).unwrap();
    // A broken file's error must not quote the line holding the secret either.
    let mut broken = tempfile::NamedTempFile::new().unwrap();
    writeln!(broken, "[[keys]]\nid = \"{KEY_ID}\"\nsecret = \"{SECRET}").unwrap();
    let file_error = FileKeyStore::open(broken.path()).unwrap_err();

    let layer = VerifyPskLayer::new(memory.clone());
    let service = layer.layer(tower::service_fn(
        |_: http::Request<armor_psk::verify::VerifiedBody>| async {
            Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default()))
        },
    ));
    let sign_layer = SignRequestLayer::new(signer.clone());
    let sign_service = sign_layer.layer(tower::service_fn(|_: http::Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(())
    }));
    let keyed = HmacSha512::new_from_slice(SECRET.as_bytes()).unwrap();
    let lookup = memory.lookup(KEY_ID).await.unwrap();

    let views: Vec<(&str, String, String)> = vec![
        ("Secret", format!("{secret:?}"), format!("{secret:#?}")),
        (
            "Option<Secret>",
            format!("{lookup:?}"),
            format!("{lookup:#?}"),
        ),
        ("Signer", format!("{signer:?}"), format!("{signer:#?}")),
        (
            "Credential",
            format!("{credential:?}"),
            format!("{credential:#?}"),
        ),
        (
            "ReplayRecord",
            format!("{record:?}"),
            format!("{record:#?}"),
        ),
        (
            "MemoryKeyStore",
            format!("{memory:?}"),
            format!("{memory:#?}"),
        ),
        (
            "MemoryKeyStoreBuilder",
            format!("{memory_builder:?}"),
            format!("{memory_builder:#?}"),
        ),
        (
            "FileKeyStore",
            format!("{file_store:?}"),
            format!("{file_store:#?}"),
        ),
        (
            "FileKeyStoreError",
            format!("{file_error:?}"),
            format!("{file_error}"),
        ),
        (
            "VerifyPskLayer",
            format!("{layer:?}"),
            format!("{layer:#?}"),
        ),
        ("VerifyPsk", format!("{service:?}"), format!("{service:#?}")),
        (
            "SignRequestLayer",
            format!("{sign_layer:?}"),
            format!("{sign_layer:#?}"),
        ),
        (
            "SignRequest",
            format!("{sign_service:?}"),
            format!("{sign_service:#?}"),
        ),
        ("HmacSha512", format!("{keyed:?}"), format!("{keyed:#?}")),
        // The header value the signer returns is marked sensitive, so it prints redacted.
        ("HeaderValue", format!("{header:?}"), format!("{header:#?}")),
    ];
    for (name, debug, pretty) in &views {
        forbidden.assert_absent_from(debug, &format!("{name}'s Debug"));
        forbidden.assert_absent_from(pretty, &format!("{name}'s pretty Debug"));
    }
    // The views show something (a type that printed nothing would pass trivially).
    assert!(views.iter().any(|(_, debug, _)| debug.contains(KEY_ID)));
    assert!(format!("{signer:?}").contains("[redacted]"));
    assert!(format!("{credential:?}").contains("[redacted]"));
}

/// FH-AUTH: sign-ins (right and wrong password, JSON and form-encoded), code redemption,
/// requests with the token, reissue; nothing of the password, its hash, the code or the token
/// may reach the logs, nor `{:?}` of the session types.
#[cfg(feature = "session")]
#[test]
fn nothing_of_a_session_is_logged_at_any_level() {
    use armor_psk::session::{hash_password, ArmorAuthLayer, Identity, Sessions, User};
    use serde_json::{json, Value};

    const USER: &str = "ann@example.com";
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(Level::TRACE)
        .with_ansi(false)
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let hash = hash_password(PASSWORD).unwrap();
    let user = User::new(USER, hash.clone(), vec![42]).unwrap();
    let sessions = Sessions::builder([user.clone()].into_iter().collect())
        .clock(ManualClock::new(NOW))
        .build();
    let keys = MemoryKeyStore::builder().key(KEY_ID, SECRET).build();
    let psk = VerifyPskLayer::new(keys).clock(ManualClock::new(NOW));
    let app = Router::new()
        .fallback(|identity: Identity| async move { format!("{identity:?}") })
        .layer(ArmorAuthLayer::new(psk, sessions.clone()))
        .merge(sessions.router());

    let (mut forbidden, debugs) = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let mut forbidden = forbidden_basics();
            forbidden.text("the password hash", &hash.to_string());
            let call = |request: Request| {
                let app = app.clone();
                async move {
                    let response = app.oneshot(request).await.unwrap();
                    let status = response.status();
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    (
                        status,
                        serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null),
                    )
                }
            };
            let json = |path: &str, body: Value| {
                http::Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap()
            };
            let wrong = json(
                "/auth/authorize",
                json!({ "username": USER, "password": "not-the-PASSWORD-at-all" }),
            );
            forbidden.text("a wrong password", "not-the-PASSWORD-at-all");
            assert!(call(wrong).await.0.is_client_error());
            // A username with a line break in it, logged with the refusal.
            let forging = json(
                "/auth/authorize",
                json!({ "username": "x\nFORGED log line", "password": "p" }),
            );
            assert!(call(forging).await.0.is_client_error());
            let form = http::Request::post("/auth/authorize")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!("username={USER}&password={PASSWORD}")))
                .unwrap();
            assert_eq!(call(form).await.0, StatusCode::OK);
            let (status, body) = call(json(
                "/auth/authorize",
                json!({ "username": USER, "password": PASSWORD }),
            ))
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let code = body["code"].as_str().unwrap().to_owned();
            forbidden.text("the code", &code);
            let redeem = json!({ "code": code, "grant_type": "authorization_code" });
            let (status, body) = call(json("/auth/token", redeem.clone())).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            let token = body["access_token"].as_str().unwrap().to_owned();
            forbidden.text("the access token", &token);
            // The code again (good once), a request with the token, one with a wrong token,
            // and a reissue.
            assert!(call(json("/auth/token", redeem)).await.0.is_client_error());
            let with_token = |token: &str| {
                http::Request::get("/me")
                    .header("authorization", format!("FH-AUTH {token}"))
                    .header("x-account-context", "42")
                    .body(Body::empty())
                    .unwrap()
            };
            let (status, body) = call(with_token(&token)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(call(with_token(SESSION_TOKEN)).await.0.is_client_error());
            let (status, body) = call(json("/auth/token/reissue", json!({ "token": token }))).await;
            assert_eq!(status, StatusCode::OK, "{body}");

            let debugs = vec![
                ("User", format!("{user:?}")),
                ("Sessions", format!("{sessions:?}")),
                (
                    "ArmorAuthLayer",
                    format!(
                        "{:?}",
                        ArmorAuthLayer::new(
                            VerifyPskLayer::new(MemoryKeyStore::default()),
                            sessions.clone(),
                        )
                    ),
                ),
            ];
            (forbidden, debugs)
        })
    });
    drop(runtime);
    let hash_text = hash.to_string();
    forbidden.text("the hash's digest", &hash_text[hash_text.len() - 20..]);
    let logs = captured.text();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "nothing captured:\n{logs}"
    );
    forbidden.assert_absent_from(&logs, "the logs");
    assert!(
        logs.contains(r"x\nFORGED"),
        "the username is logged escaped:\n{logs}"
    );
    assert!(
        !logs.lines().any(|line| line.starts_with("FORGED")),
        "{logs}"
    );
    for (name, debug) in debugs {
        forbidden.assert_absent_from(&debug, &format!("{name}'s Debug"));
    }
}
