//! The verifier in front of an axum Router, driven with `oneshot`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use armor_psk::clock::ManualClock;
use armor_psk::key_store::{FileKeyStore, KeyStore, KeyStoreError, MemoryKeyStore};
use armor_psk::psk::{BodyForm, BodyForms};
use armor_psk::replay::{MokaReplayStore, Recorded, ReplayRecord, ReplayStore, ReplayStoreError};
use armor_psk::{Rejection, Secret, Signer, VerifiedKey, VerifyPskLayer};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::routing::{any, get};
use axum::Router;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const NOW: i64 = 1_700_000_000;
const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
const SECRET: &str = "s3cr3t-for-tests";

fn keys() -> MemoryKeyStore {
    MemoryKeyStore::builder().key(KEY_ID, SECRET).build()
}

fn layer(clock: &ManualClock) -> VerifyPskLayer {
    VerifyPskLayer::new(keys()).clock(clock.clone())
}

/// Echoes what the handler received: identity, method, URI, one header and the body.
async fn echo(key: VerifiedKey, request: Request) -> axum::Json<Value> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    axum::Json(serde_json::json!({
        "key_id": key.key_id(),
        "nonce": key.nonce(),
        "timestamp": key.timestamp(),
        "form": key.body_form().as_str(),
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "x_custom": parts.headers.get("x-custom").and_then(|v| v.to_str().ok()),
        "body": String::from_utf8_lossy(&body),
    }))
}

fn router(layer: VerifyPskLayer) -> Router {
    Router::new().route("/{*path}", any(echo)).layer(layer)
}

fn signer() -> Signer {
    Signer::new(KEY_ID, SECRET)
        .unwrap()
        .clock(ManualClock::new(NOW))
}

fn signed(method: Method, uri: &str, body: &str, signer: &Signer) -> Request {
    let mut request = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("x-custom", "kept")
        .body(body.as_bytes().to_vec())
        .unwrap();
    signer.sign(&mut request).unwrap();
    request.map(Body::from)
}

fn signed_at(timestamp: i64, nonce: &str) -> Request {
    let header = signer()
        .authorization_with(&Method::GET, "/accounts/2", b"", nonce, timestamp)
        .unwrap();
    with_header("/accounts/2", header)
}

fn with_header(uri: &str, header: HeaderValue) -> Request {
    http::Request::get(uri)
        .header("authorization", header)
        .body(Body::empty())
        .unwrap()
}

async fn send(app: &Router, request: Request) -> (StatusCode, http::HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, headers, json)
}

async fn expect_refusal(app: &Router, request: Request, status: u16, code: &str) -> Value {
    let (got, headers, body) = send(app, request).await;
    assert_eq!(got.as_u16(), status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let challenge = headers.get("www-authenticate").map(|v| v.to_str().unwrap());
    let expect_challenge = status == 401 || code == "malformed_credentials";
    assert_eq!(challenge, expect_challenge.then_some("ARMOR-PSK"), "{code}");
    body
}

#[tokio::test]
async fn a_signed_request_reaches_the_handler_unchanged() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    let request = signed(
        Method::POST,
        "/accounts/2/items?page=3",
        r#"{"a":1}"#,
        &signer(),
    );
    let (status, _, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["key_id"], KEY_ID);
    assert_eq!(body["form"], "digest");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["uri"], "/accounts/2/items?page=3");
    assert_eq!(body["x_custom"], "kept");
    assert_eq!(body["body"], r#"{"a":1}"#);
    assert_eq!(body["timestamp"], NOW);
}

#[tokio::test]
async fn every_body_form_is_accepted_by_default() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    for form in [BodyForm::Digest, BodyForm::Raw] {
        let signer = signer().body_form(form);
        let (status, _, body) = send(&app, signed(Method::PUT, "/x", "payload", &signer)).await;
        assert_eq!(status, StatusCode::OK, "{form}: {body}");
        assert_eq!(body["form"], form.as_str());
    }
    let (status, _, body) = send(&app, signed(Method::GET, "/x", "", &signer())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["form"], "empty");
}

#[tokio::test]
async fn an_unsigned_body_needs_the_insecure_opt_in() {
    let clock = ManualClock::new(NOW);
    let sign_without_body = |nonce: &str| {
        let header = signer()
            .authorization_with(&Method::POST, "/x", b"", nonce, NOW)
            .unwrap();
        http::Request::post("/x")
            .header("authorization", header)
            .body(Body::from("a body the signature does not cover"))
            .unwrap()
    };
    let strict = router(layer(&clock));
    expect_refusal(&strict, sign_without_body("n1"), 401, "bad_signature").await;

    let lenient = router(layer(&clock).insecure_accept_unsigned_body());
    let (status, _, body) = send(&lenient, sign_without_body("n2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["form"], "empty");
}

#[tokio::test]
async fn only_the_configured_forms_are_accepted() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock).body_forms(BodyForms::only(BodyForm::Digest)));
    let raw = signer().body_form(BodyForm::Raw);
    expect_refusal(
        &app,
        signed(Method::POST, "/x", "b", &raw),
        401,
        "bad_signature",
    )
    .await;
    let (status, _, _) = send(&app, signed(Method::POST, "/x", "b", &signer())).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn header_faults_are_refused_with_their_code() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    let good = signer()
        .authorization_with(&Method::GET, "/a", b"", "n", NOW)
        .unwrap();
    let good = good.to_str().unwrap();

    let none = http::Request::get("/a").body(Body::empty()).unwrap();
    expect_refusal(&app, none, 401, "missing_credentials").await;
    let bearer = with_header("/a", HeaderValue::from_static("Bearer abc"));
    expect_refusal(&app, bearer, 401, "missing_credentials").await;

    let malformed = [
        "ARMOR-PSK",
        "ARMOR-PSK a:b:c",
        "ARMOR-PSK key:not-base64:n:1700000000",
        &good.replace(":1700000000", ":01700000000"),
        &good.replacen(":n:", "::", 1),
    ];
    for value in malformed {
        let request = with_header("/a", HeaderValue::from_str(value).unwrap());
        expect_refusal(&app, request, 400, "malformed_credentials").await;
    }
    let non_ascii = with_header(
        "/a",
        HeaderValue::from_bytes(b"ARMOR-PSK k\xe9y:x:n:1").unwrap(),
    );
    expect_refusal(&app, non_ascii, 400, "malformed_credentials").await;

    let mut twice = with_header("/a", HeaderValue::from_str(good).unwrap());
    twice
        .headers_mut()
        .append("authorization", HeaderValue::from_str(good).unwrap());
    let body = expect_refusal(&app, twice, 400, "malformed_credentials").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("more than one"));

    let unknown = Signer::new("no-such-key", SECRET).unwrap();
    let request = with_header(
        "/a",
        unknown
            .authorization_with(&Method::GET, "/a", b"", "n", NOW)
            .unwrap(),
    );
    expect_refusal(&app, request, 401, "unknown_key").await;

    let wrong_secret = Signer::new(KEY_ID, "not the secret").unwrap();
    let request = with_header(
        "/a",
        wrong_secret
            .authorization_with(&Method::GET, "/a", b"", "n", NOW)
            .unwrap(),
    );
    expect_refusal(&app, request, 401, "bad_signature").await;
}

#[tokio::test]
async fn signed_parts_cannot_be_changed() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    let header = signer()
        .authorization_with(&Method::POST, "/accounts/2", b"{}", "n", NOW)
        .unwrap();
    let send_with = |method: Method, uri: &str, body: &'static str| {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", header.clone())
            .body(Body::from(body))
            .unwrap()
    };
    for request in [
        send_with(Method::PUT, "/accounts/2", "{}"),
        send_with(Method::POST, "/accounts/3", "{}"),
        send_with(Method::POST, "/accounts/2/", "{}"),
        send_with(Method::POST, "/accounts/2", "{ }"),
    ] {
        expect_refusal(&app, request, 401, "bad_signature").await;
    }
    // The query string is not signed: the documents cut it off.
    let (status, _, _) = send(&app, send_with(Method::POST, "/accounts/2?extra=1", "{}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_window_is_300_seconds_either_way() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    for (offset, accepted) in [
        (-301, false),
        (-299, true),
        (299, true),
        (301, false),
        (-300, true),
        (300, true),
    ] {
        let request = signed_at(NOW + offset, &format!("nonce{offset}"));
        if accepted {
            let (status, _, body) = send(&app, request).await;
            assert_eq!(status, StatusCode::OK, "{offset}: {body}");
        } else {
            let (_, headers, body) = send(&app, request).await;
            assert_eq!(body["error"]["code"], "timestamp_out_of_window", "{offset}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(&NOW.to_string()), "{message}");
            assert_eq!(headers["date"], "Tue, 14 Nov 2023 22:13:20 GMT");
        }
    }
    let narrow = router(layer(&clock).window(Duration::from_secs(10)));
    expect_refusal(
        &narrow,
        signed_at(NOW - 11, "w"),
        401,
        "timestamp_out_of_window",
    )
    .await;
}

#[tokio::test]
async fn a_replay_is_refused_and_the_nonce_rule_can_be_relaxed() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    let (status, _, _) = send(&app, signed_at(NOW, "once")).await;
    assert_eq!(status, StatusCode::OK);
    expect_refusal(&app, signed_at(NOW, "once"), 401, "replayed_nonce").await;
    // Same nonce, another timestamp: another MAC, but the nonce was used.
    expect_refusal(&app, signed_at(NOW + 1, "once"), 401, "replayed_nonce").await;

    // nonce = timestamp, twice in one second with different paths (as the C# sample does).
    let relaxed = router(layer(&clock).unique_nonce(false));
    let nonce = NOW.to_string();
    for path in ["/a", "/b"] {
        let header = signer()
            .authorization_with(&Method::GET, path, b"", &nonce, NOW)
            .unwrap();
        let (status, _, _) = send(&relaxed, with_header(path, header)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let header = signer()
        .authorization_with(&Method::GET, "/a", b"", &nonce, NOW)
        .unwrap();
    expect_refusal(&relaxed, with_header("/a", header), 401, "replayed_nonce").await;
}

#[tokio::test]
async fn every_service_made_from_a_layer_and_its_clones_shares_the_default_replay_store() {
    let clock = ManualClock::new(NOW);
    let layer = layer(&clock);
    // A clone changed afterwards has settings of its own, and still the layer's replay store.
    let first = router(layer.clone().body_limit(1024));
    let second = router(layer);
    let (status, _, _) = send(&first, signed_at(NOW, "shared")).await;
    assert_eq!(status, StatusCode::OK);
    expect_refusal(&second, signed_at(NOW, "shared"), 401, "replayed_nonce").await;
}

/// A store that answers only when awaited: it does not forward `lookup_now`/`record_now`, so
/// the verifier takes its awaited path.
struct Awaited<T>(T);

#[armor_psk::async_trait]
impl<T: KeyStore> KeyStore for Awaited<T> {
    async fn lookup(&self, key_id: &str) -> Result<Option<Secret>, KeyStoreError> {
        self.0.lookup(key_id).await
    }
}

#[armor_psk::async_trait]
impl<T: ReplayStore> ReplayStore for Awaited<T> {
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        self.0.record(request).await
    }
}

/// [`Awaited`], counting how often it was asked to answer at once.
struct CountsAskingAtOnce {
    store: Awaited<MokaReplayStore>,
    asked_at_once: AtomicUsize,
}

#[armor_psk::async_trait]
impl ReplayStore for CountsAskingAtOnce {
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        self.store.record(request).await
    }

    fn record_now(&self, request: &ReplayRecord<'_>) -> Option<Result<Recorded, ReplayStoreError>> {
        self.asked_at_once.fetch_add(1, Ordering::Relaxed);
        self.store.record_now(request)
    }
}

#[tokio::test]
async fn a_store_that_cannot_answer_at_once_is_asked_so_once_a_request() {
    let store = Arc::new(CountsAskingAtOnce {
        store: Awaited(MokaReplayStore::default()),
        asked_at_once: AtomicUsize::new(0),
    });
    let clock = ManualClock::new(NOW);
    // Keys at hand and no body: the record is asked for at once, then awaited.
    let app = router(
        VerifyPskLayer::new(keys())
            .replay_store(Arc::clone(&store))
            .clock(clock),
    );
    let (status, _, body) = send(&app, signed_at(NOW, "n1")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(store.asked_at_once.load(Ordering::Relaxed), 1);
}

/// A replay store whose record takes a second, by the verifier's clock: meanwhile, another
/// request a second later may have let go of every entry whose timestamp left the window.
struct SlowToRecord {
    store: MokaReplayStore,
    clock: ManualClock,
}

#[armor_psk::async_trait]
impl ReplayStore for SlowToRecord {
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        self.clock.advance(1);
        self.store.record(request).await
    }

    fn record_now(&self, request: &ReplayRecord<'_>) -> Option<Result<Recorded, ReplayStoreError>> {
        self.clock.advance(1);
        self.store.record_now(request)
    }
}

#[tokio::test]
async fn a_request_whose_timestamp_leaves_the_window_while_it_is_recorded_is_refused() {
    let clock = ManualClock::new(NOW);
    let slow = || SlowToRecord {
        store: MokaReplayStore::default(),
        clock: clock.clone(),
    };
    let layers = [
        ("at-once", layer(&clock).replay_store(slow())),
        ("awaited", layer(&clock).replay_store(Awaited(slow()))),
    ];
    for (answers, layer) in layers {
        let app = router(layer);
        clock.set(NOW);
        // At the window's edge when it arrives, a second past it once recorded: its original's
        // entries may be gone by then, so it must not pass as fresh.
        let edge = signed_at(NOW - 300, &format!("edge-{answers}"));
        let body = expect_refusal(&app, edge, 401, "timestamp_out_of_window").await;
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&(NOW + 1).to_string()),
            "{answers}: {body}"
        );
        clock.set(NOW);
        let inside = signed_at(NOW - 299, &format!("inside-{answers}"));
        let (status, _, body) = send(&app, inside).await;
        assert_eq!(status, StatusCode::OK, "{answers}: {body}");
    }
}

#[tokio::test]
async fn stores_that_answer_at_once_or_only_when_awaited_give_the_same_answers() {
    let clock = ManualClock::new(NOW);
    let layers = [
        ("both at once", VerifyPskLayer::new(keys())),
        (
            "keys awaited",
            VerifyPskLayer::new(Awaited(keys())).replay_store(MokaReplayStore::default()),
        ),
        (
            "record awaited",
            VerifyPskLayer::new(keys()).replay_store(Awaited(MokaReplayStore::default())),
        ),
        (
            "both awaited",
            VerifyPskLayer::new(Awaited(keys())).replay_store(Awaited(MokaReplayStore::default())),
        ),
    ];
    for (stores, layer) in layers {
        let app = router(layer.clock(clock.clone()));
        let (status, _, body) = send(&app, signed_at(NOW, "n1")).await;
        assert_eq!(status, StatusCode::OK, "{stores}: {body}");
        assert_eq!(body["nonce"], "n1", "{stores}");
        // The same request again (same MAC), and a new one reusing the nonce.
        expect_refusal(&app, signed_at(NOW, "n1"), 401, "replayed_nonce").await;
        expect_refusal(&app, signed_at(NOW + 1, "n1"), 401, "replayed_nonce").await;
        let forged = signed_at(NOW, "n2")
            .headers()
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .replace(KEY_ID, "unknown-key");
        let request = with_header("/accounts/2", HeaderValue::from_str(&forged).unwrap());
        expect_refusal(&app, request, 401, "unknown_key").await;
        let tampered = with_header(
            "/accounts/3",
            signed_at(NOW, "n3").headers()["authorization"].clone(),
        );
        expect_refusal(&app, tampered, 401, "bad_signature").await;
        // A refused request was not recorded: its nonce is still free.
        let (status, _, _) = send(&app, signed_at(NOW, "n3")).await;
        assert_eq!(status, StatusCode::OK, "{stores}");
        let (status, _, _) = send(&app, signed(Method::POST, "/x", "{}", &signer())).await;
        assert_eq!(status, StatusCode::OK, "{stores}");
    }
}

#[tokio::test]
async fn a_boundary_shift_is_a_replay() {
    // "/accounts/2" + nonce "3f9c" signs the same bytes as "/accounts/23" + nonce "f9c".
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock).unique_nonce(false));
    let header = signer()
        .authorization_with(&Method::GET, "/accounts/2", b"", "3f9c", NOW)
        .unwrap();
    let (status, _, _) = send(&app, with_header("/accounts/2", header.clone())).await;
    assert_eq!(status, StatusCode::OK);
    let shifted = header.to_str().unwrap().replace(":3f9c:", ":f9c:");
    let request = with_header("/accounts/23", HeaderValue::from_str(&shifted).unwrap());
    expect_refusal(&app, request, 401, "replayed_nonce").await;
}

#[tokio::test]
async fn a_refused_request_is_not_remembered() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    // Too old: refused before anything is recorded; with the clock moved back it is fine.
    let request = || signed_at(NOW - 400, "late");
    expect_refusal(&app, request(), 401, "timestamp_out_of_window").await;
    clock.set(NOW - 400);
    let (status, _, _) = send(&app, request()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn of_32_concurrent_copies_exactly_one_is_accepted() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    let header = signer()
        .authorization_with(&Method::GET, "/x", b"", "race", NOW)
        .unwrap();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let app = app.clone();
            let request = with_header("/x", header.clone());
            tokio::spawn(async move { app.oneshot(request).await.unwrap().status() })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        let status = task.await.unwrap();
        assert!(status == StatusCode::OK || status == StatusCode::UNAUTHORIZED);
        accepted += usize::from(status == StatusCode::OK);
    }
    assert_eq!(accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_32_concurrent_copies_exactly_one_is_accepted_on_two_threads() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    for round in 0..20 {
        let header = signer()
            .authorization_with(&Method::GET, "/x", b"", &format!("race{round}"), NOW)
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(32));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (app, barrier) = (app.clone(), Arc::clone(&barrier));
                let request = with_header("/x", header.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    app.oneshot(request).await.unwrap().status()
                })
            })
            .collect();
        let mut accepted = 0;
        for task in tasks {
            accepted += usize::from(task.await.unwrap() == StatusCode::OK);
        }
        assert_eq!(accepted, 1, "round {round}");
    }
}

#[tokio::test]
async fn the_body_limit_holds_with_and_without_content_length() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock).body_limit(16));
    let signer = signer();
    let (status, _, _) = send(&app, signed(Method::POST, "/x", &"a".repeat(16), &signer)).await;
    assert_eq!(status, StatusCode::OK);

    // Declared too large: refused from the header, before the body is read.
    let mut declared = signed(Method::POST, "/x", "small", &signer);
    declared
        .headers_mut()
        .insert("content-length", HeaderValue::from_static("1000000"));
    expect_refusal(&app, declared, 413, "body_too_large").await;
    // The same declared length on a body that has already ended (checked on the path that
    // verifies at once, too).
    let mut empty = signed_at(NOW, "declared-empty");
    empty
        .headers_mut()
        .insert("content-length", HeaderValue::from_static("1000000"));
    expect_refusal(&app, empty, 413, "body_too_large").await;

    // Streamed without a length, in chunks.
    let header = signer
        .authorization_with(&Method::POST, "/x", &[b'a'; 40], "chunked", NOW)
        .unwrap();
    let chunks: Vec<Result<Bytes, Infallible>> =
        (0..4).map(|_| Ok(Bytes::from(vec![b'a'; 10]))).collect();
    let request = http::Request::post("/x")
        .header("authorization", header)
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap();
    expect_refusal(&app, request, 413, "body_too_large").await;
}

#[tokio::test]
async fn a_chunked_body_within_the_limit_is_verified_from_its_chunks() {
    let clock = ManualClock::new(NOW);
    let app = router(layer(&clock));
    for form in [BodyForm::Digest, BodyForm::Raw] {
        let body = b"first chunk|second chunk|third";
        let header = signer()
            .body_form(form)
            .authorization_with(&Method::POST, "/x", body, form.as_str(), NOW)
            .unwrap();
        let chunks: Vec<Result<Bytes, Infallible>> = body
            .split_inclusive(|b| *b == b'|')
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        let request = http::Request::post("/x")
            .header("authorization", header)
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        let (status, _, echoed) = send(&app, request).await;
        assert_eq!(status, StatusCode::OK, "{echoed}");
        assert_eq!(echoed["body"], "first chunk|second chunk|third");
    }
}

struct DownKeyStore;

#[armor_psk::async_trait]
impl KeyStore for DownKeyStore {
    async fn lookup(&self, _: &str) -> Result<Option<Secret>, KeyStoreError> {
        Err(KeyStoreError::new("connection refused"))
    }
}

#[tokio::test]
async fn a_key_store_that_is_down_gives_503() {
    let clock = ManualClock::new(NOW);
    let app = router(VerifyPskLayer::new(DownKeyStore).clock(clock));
    let body = expect_refusal(&app, signed_at(NOW, "n"), 503, "key_store_unavailable").await;
    assert!(!body.to_string().contains("connection refused"), "{body}");
}

#[tokio::test]
async fn a_key_store_that_answers_an_empty_secret_gives_503() {
    use armor_psk::psk::{Credential, HmacSha512, SigningString};
    use hmac::Mac;
    // What anyone can compute for a key whose secret is empty.
    let unkeyed = <HmacSha512 as Mac>::new_from_slice(b"").unwrap();
    let signing = SigningString {
        key_id: "k",
        method: "GET",
        path: "/accounts/2",
        nonce: "n",
        timestamp: NOW,
    };
    let mac = signing.sign(&unkeyed, BodyForm::Empty, &[b""]);
    let header = Credential::new("k", mac, "n", NOW).unwrap().to_string();
    let keys = MemoryKeyStore::builder().key("k", "").build();
    let app = router(VerifyPskLayer::new(keys).clock(ManualClock::new(NOW)));
    let request = with_header("/accounts/2", HeaderValue::try_from(header).unwrap());
    expect_refusal(&app, request, 503, "key_store_unavailable").await;
}

#[tokio::test]
async fn a_full_nonce_store_gives_503_and_keeps_what_it_holds() {
    let clock = ManualClock::new(NOW);
    let store = MokaReplayStore::builder().capacity(4).build();
    let app = router(layer(&clock).replay_store(store.clone()));
    for nonce in ["a", "b"] {
        let (status, _, _) = send(&app, signed_at(NOW, nonce)).await;
        assert_eq!(status, StatusCode::OK);
    }
    expect_refusal(&app, signed_at(NOW, "c"), 503, "nonce_store_full").await;
    expect_refusal(&app, signed_at(NOW, "a"), 401, "replayed_nonce").await;
    assert_eq!(store.live_entries(), 4);
}

#[tokio::test]
async fn reloading_the_key_file_takes_effect_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    std::fs::write(
        &path,
        format!("[[keys]]\nid = \"{KEY_ID}\"\nsecret = \"{SECRET}\"\n"),
    )
    .unwrap();
    let store = FileKeyStore::open(&path).unwrap();
    let clock = ManualClock::new(NOW);
    let app = router(VerifyPskLayer::new(store.clone()).clock(clock));
    let (status, _, _) = send(&app, signed_at(NOW, "before")).await;
    assert_eq!(status, StatusCode::OK);

    std::fs::write(&path, "[[keys]]\nid = \"other\"\nsecret = \"x\"\n").unwrap();
    store.reload().unwrap();
    expect_refusal(&app, signed_at(NOW, "after"), 401, "unknown_key").await;

    std::fs::write(&path, "[[keys]\nbroken").unwrap();
    assert!(store.reload().is_err());
    let other = Signer::new("other", "x").unwrap();
    let header = other
        .authorization_with(&Method::GET, "/a", b"", "n", NOW)
        .unwrap();
    let (status, _, _) = send(&app, with_header("/a", header)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_key_revoked_while_its_request_body_comes_in_is_refused() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.toml");
    let keys = |id: &str| format!("[[keys]]\nid = \"{id}\"\nsecret = \"{SECRET}\"\n");
    std::fs::write(&path, keys(KEY_ID)).unwrap();
    let store = FileKeyStore::open(&path).unwrap();
    let app = router(VerifyPskLayer::new(store.clone()).clock(ManualClock::new(NOW)));
    let header = signer()
        .authorization_with(&Method::POST, "/x", b"first|last", "n", NOW)
        .unwrap();
    // The body's first chunk says that the verifier has looked the key up and is reading; the
    // rest waits for the key's revocation.
    let (reading, read_started) = tokio::sync::oneshot::channel::<()>();
    let (revoked, revocation) = tokio::sync::oneshot::channel::<()>();
    let first = futures_util::stream::once(async move {
        let _ = reading.send(());
        Ok::<_, Infallible>(Bytes::from_static(b"first|"))
    });
    let last = futures_util::stream::once(async move {
        let _ = revocation.await;
        Ok(Bytes::from_static(b"last"))
    });
    let request = http::Request::post("/x")
        .header("authorization", header)
        .body(Body::from_stream(first.chain(last)))
        .unwrap();
    let answer = tokio::spawn(async move { send(&app, request).await });
    read_started.await.unwrap();
    std::fs::write(&path, keys("other")).unwrap();
    store.reload().unwrap();
    revoked.send(()).unwrap();
    let (status, _, body) = answer.await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unknown_key");
}

#[tokio::test]
async fn the_rejection_can_be_replaced_and_is_in_the_extensions() {
    let clock = ManualClock::new(NOW);
    let layer = layer(&clock).on_rejection(|rejection: &Rejection| {
        let body = serde_json::json!({ "Message": rejection.to_string() }).to_string();
        let mut response = http::Response::new(Bytes::from(body));
        *response.status_mut() = rejection.status();
        response
    });
    let app = router(layer);
    let response = app
        .oneshot(http::Request::get("/a").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.extensions().get::<Rejection>(),
        Some(&Rejection::MissingCredentials)
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["Message"],
        "the request carries no ARMOR-PSK credentials"
    );
}

#[tokio::test]
async fn the_extractor_fails_closed_without_the_layer() {
    let app = Router::new()
        .route(
            "/strict",
            get(|key: VerifiedKey| async move { key.key_id().to_owned() }),
        )
        .route(
            "/optional",
            get(|key: Option<VerifiedKey>| async move { format!("{}", key.is_some()) }),
        );
    let (status, _, body) = send(
        &app,
        http::Request::get("/strict").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "missing_credentials");
    let response = app
        .oneshot(http::Request::get("/optional").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "false"
    );
}

#[tokio::test]
async fn behind_nest_the_original_path_is_verified() {
    let clock = ManualClock::new(NOW);
    let inner = Router::new().route(
        "/{id}",
        get(|key: VerifiedKey| async move { key.key_id().to_owned() }),
    );
    let app = Router::new().nest("/accounts", inner.layer(layer(&clock)));
    let header = signer()
        .authorization_with(&Method::GET, "/accounts/2", b"", "nested", NOW)
        .unwrap();
    let (status, _, body) = send(&app, with_header("/accounts/2", header)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn nothing_reaches_the_handler_when_refused() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let clock = ManualClock::new(NOW);
    let app = Router::new()
        .route(
            "/x",
            any(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { "called" }
            }),
        )
        .layer(layer(&clock));
    let wrong = Signer::new(KEY_ID, "wrong")
        .unwrap()
        .clock(ManualClock::new(NOW));
    for request in [
        http::Request::get("/x").body(Body::empty()).unwrap(),
        signed(Method::GET, "/x", "", &wrong),
        signed_at(NOW + 1000, "late"),
    ] {
        let (status, _, _) = send(&app, request).await;
        assert_ne!(status, StatusCode::OK);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let (status, _, _) = send(&app, signed(Method::GET, "/x", "", &signer())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_inner_service_sees_the_authorization_header_marked_sensitive() {
    let clock = ManualClock::new(NOW);
    let app = Router::new()
        .route(
            "/x",
            get(|request: Request| async move {
                format!("{}", request.headers()["authorization"].is_sensitive())
            }),
        )
        .layer(layer(&clock));
    // Built from a plain string, as hyper builds it: not marked on the way in.
    let header = signer()
        .authorization_with(&Method::GET, "/x", b"", "sensitive", NOW)
        .unwrap();
    let request = with_header(
        "/x",
        HeaderValue::from_str(header.to_str().unwrap()).unwrap(),
    );
    assert!(!request.headers()["authorization"].is_sensitive());
    let body = app
        .oneshot(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(body.to_bytes(), "true");
}

/// A replay store that logs what the verifier asks of it, and records with moka.
#[derive(Clone, Default)]
struct Logged {
    store: MokaReplayStore,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Logged {
    fn note(&self, call: &str, request: &ReplayRecord<'_>) {
        let entry = format!("{call} {}", request.nonce);
        self.log.lock().unwrap().push(entry);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.log.lock().unwrap())
    }
}

#[armor_psk::async_trait]
impl ReplayStore for Logged {
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        self.note("record", request);
        self.store.record(request).await
    }

    fn record_now(&self, request: &ReplayRecord<'_>) -> Option<Result<Recorded, ReplayStoreError>> {
        self.note("record", request);
        self.store.record_now(request)
    }

    fn prefetch(&self, request: &ReplayRecord<'_>) {
        self.note("prefetch", request);
    }
}

#[tokio::test]
async fn the_replay_store_hears_of_a_request_before_its_mac_is_checked_and_records_it_after() {
    let clock = ManualClock::new(NOW);
    let store = Logged::default();
    let app = router(layer(&clock).replay_store(store.clone()));

    let (status, _, _) = send(&app, signed_at(NOW, "get")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(store.take(), ["prefetch get", "record get"]);

    // A MAC that does not verify: the store was told, and recorded nothing.
    let header = signer()
        .authorization_with(&Method::GET, "/accounts/2", b"", "forged", NOW)
        .unwrap();
    expect_refusal(
        &app,
        with_header("/accounts/3", header),
        401,
        "bad_signature",
    )
    .await;
    assert_eq!(store.take(), ["prefetch forged"]);
    let (status, _, _) = send(&app, signed_at(NOW, "forged")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the forged request's nonce is still free"
    );
    store.take();

    // Refused before its MAC is computed (an unknown key): the store hears nothing.
    let stranger = Signer::new("unknown", SECRET)
        .unwrap()
        .clock(ManualClock::new(NOW));
    let header = stranger
        .authorization_with(&Method::GET, "/accounts/2", b"", "stranger", NOW)
        .unwrap();
    expect_refusal(&app, with_header("/accounts/2", header), 401, "unknown_key").await;
    assert!(store.take().is_empty());

    // A request with a body takes the awaited path: the same order.
    let signer = signer();
    let request = signed(Method::POST, "/accounts", "{}", &signer);
    let (status, _, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::OK);
    let nonce = body["nonce"].as_str().unwrap();
    assert_eq!(
        store.take(),
        [format!("prefetch {nonce}"), format!("record {nonce}")]
    );
}
