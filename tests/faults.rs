//! Faults: stores that fail, hang or panic; clients that send their body too slowly, an
//! oversized `Authorization` header, a body shorter than its `Content-Length`. Each must cost
//! the one request a clean refusal, never the server, the connection's other requests, or
//! memory in proportion to what the client sent.
//!
//! The tests on `oneshot` run on tokio's paused clock, so "after the timeout" is exact and
//! costs no wall time; the tests over a real socket (`axum::serve`) use short real timeouts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use armor_psk::clock::ManualClock;
use armor_psk::key_store::{KeyStore, KeyStoreError, MemoryKeyStore};
use armor_psk::psk::{Credential, MalformedCredential};
use armor_psk::replay::{
    CompactReplayStore, MokaReplayStore, Recorded, ReplayRecord, ReplayStore, ReplayStoreError,
};
use armor_psk::{Rejection, Secret, Signer, VerifiedKey, VerifyPskLayer};
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::routing::any;
use axum::Router;
use futures_util::FutureExt as _;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tower::{Layer as _, Service as _, ServiceExt as _};

const NOW: i64 = 1_700_000_000;
const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
const SECRET: &str = "fault-test-secret";

// --- A counting allocator: bytes allocated by this thread while counting is on. -------------

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    // `try_with`: an allocation during thread teardown must not panic the allocator.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATED.try_with(|total| total.set(total.get() + bytes));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, and returns what it returned with the bytes this thread allocated meanwhile.
fn allocated_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    ALLOCATED.with(|total| total.set(0));
    COUNTING.with(|on| on.set(true));
    let value = f();
    COUNTING.with(|on| on.set(false));
    (value, ALLOCATED.with(Cell::get))
}

// --- Stores that misbehave on demand. ---------------------------------------------------------

/// `SECRET`, made once: its keyed HMAC state is then computed once, as a real store's is.
static SECRET_KEY: std::sync::LazyLock<Secret> = std::sync::LazyLock::new(|| Secret::from(SECRET));

/// Answers for `KEY_ID`; errors, hangs or panics for the key ids that say so. `AT_ONCE` also
/// answers through `lookup_now` (the verifier's path that allocates no future) for every key
/// but the hanging one, which it leaves to `lookup`; `AWAITED` answers through `lookup` only.
#[derive(Clone, Copy)]
struct FaultyKeyStore {
    at_once: bool,
}

impl FaultyKeyStore {
    const AWAITED: FaultyKeyStore = FaultyKeyStore { at_once: false };
    const AT_ONCE: FaultyKeyStore = FaultyKeyStore { at_once: true };

    /// The answer for `key_id`, or `None` for the key whose lookup hangs.
    fn answer(key_id: &str) -> Option<Result<Option<Secret>, KeyStoreError>> {
        match key_id {
            KEY_ID => Some(Ok(Some(SECRET_KEY.clone()))),
            "error-key" => Some(Err(KeyStoreError::new("connection refused by db-7"))),
            "hang-key" => None,
            "panic-key" => panic!("the key store panicked (on purpose, in a test)"),
            _ => Some(Ok(None)),
        }
    }
}

#[armor_psk::async_trait]
impl KeyStore for FaultyKeyStore {
    async fn lookup(&self, key_id: &str) -> Result<Option<Secret>, KeyStoreError> {
        match FaultyKeyStore::answer(key_id) {
            Some(answer) => answer,
            None => std::future::pending().await,
        }
    }

    fn lookup_now(&self, key_id: &str) -> Option<Result<Option<Secret>, KeyStoreError>> {
        self.at_once
            .then(|| FaultyKeyStore::answer(key_id))
            .flatten()
    }
}

/// Records in a moka store, except for the nonces that ask it to error, hang or panic; with
/// `at_once`, through `record_now` too (but for the hanging nonce).
struct FaultyReplayStore {
    store: MokaReplayStore,
    at_once: bool,
}

impl FaultyReplayStore {
    /// The outcome for `request`, or `None` for the nonce whose record hangs.
    fn answer(&self, request: &ReplayRecord<'_>) -> Option<Result<Recorded, ReplayStoreError>> {
        match request.nonce {
            "error" => Some(Err(ReplayStoreError::Unavailable("redis is down".into()))),
            "hang" => None,
            "panic" => panic!("the replay store panicked (on purpose, in a test)"),
            _ => self.store.record_now(request),
        }
    }
}

#[armor_psk::async_trait]
impl ReplayStore for FaultyReplayStore {
    async fn record(&self, request: &ReplayRecord<'_>) -> Result<Recorded, ReplayStoreError> {
        match self.answer(request) {
            Some(outcome) => outcome,
            None => std::future::pending().await,
        }
    }

    fn record_now(&self, request: &ReplayRecord<'_>) -> Option<Result<Recorded, ReplayStoreError>> {
        self.at_once.then(|| self.answer(request)).flatten()
    }

    fn prefetch(&self, request: &ReplayRecord<'_>) {
        assert_ne!(
            request.nonce, "panic-in-prefetch",
            "(on purpose, in a test)"
        );
    }
}

/// A key store written without `async_trait`, that panics in `lookup` itself, before it
/// returns its future (nothing in the trait stops an implementation from doing so): the
/// verifier must guard the call that makes the future, not only the future.
struct PanicsBeforeItsFuture;

impl KeyStore for PanicsBeforeItsFuture {
    fn lookup<'a, 'b, 'f>(
        &'a self,
        _key_id: &'b str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Secret>, KeyStoreError>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        panic!("the key store panicked before returning its future (on purpose, in a test)")
    }
}

// --- Helpers. -----------------------------------------------------------------------------------

fn signer(key_id: &str) -> Signer {
    Signer::new(key_id, SECRET)
        .unwrap()
        .clock(ManualClock::new(NOW))
}

fn get(key_id: &str, nonce: &str) -> Request {
    let header = signer(key_id)
        .authorization_with(&Method::GET, "/x", b"", nonce, NOW)
        .unwrap();
    http::Request::get("/x")
        .header("authorization", header)
        .body(Body::empty())
        .unwrap()
}

async fn echo(key: VerifiedKey, request: Request) -> String {
    let body = request.into_body().collect().await.unwrap().to_bytes();
    format!("{} {}", key.key_id(), String::from_utf8_lossy(&body))
}

fn router(layer: VerifyPskLayer) -> Router {
    Router::new().route("/{*path}", any(echo)).layer(layer)
}

fn layer(key_store: impl KeyStore) -> VerifyPskLayer {
    VerifyPskLayer::new(key_store).clock(ManualClock::new(NOW))
}

async fn send(app: &Router, request: Request) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn expect(app: &Router, request: Request, status: u16, code: &str) -> Value {
    let (got, body) = send(app, request).await;
    assert_eq!(
        (got.as_u16(), body["error"]["code"].as_str()),
        (status, Some(code))
    );
    body
}

async fn expect_ok(app: &Router, request: Request) {
    let (status, body) = send(app, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// --- Key store and replay store faults. -------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_key_store_that_errors_hangs_or_panics_costs_one_request_a_503() {
    let timeout = Duration::from_millis(50);
    for keys in [FaultyKeyStore::AWAITED, FaultyKeyStore::AT_ONCE] {
        let app = router(layer(keys).store_timeout(timeout));
        for (round, key_id) in ["error-key", "hang-key", "panic-key"].iter().enumerate() {
            let started = tokio::time::Instant::now();
            let body = expect(&app, get(key_id, "n"), 503, "key_store_unavailable").await;
            // The store's own error is logged, never sent.
            assert!(!body.to_string().contains("db-7"), "{body}");
            if *key_id == "hang-key" {
                assert!(started.elapsed() >= timeout);
            }
            // The same service keeps serving.
            expect_ok(&app, get(KEY_ID, &format!("after-{round}"))).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_hanging_key_store_is_cut_off_at_the_default_five_seconds() {
    let app = router(layer(FaultyKeyStore::AWAITED));
    let started = tokio::time::Instant::now();
    expect(&app, get("hang-key", "n"), 503, "key_store_unavailable").await;
    assert!(started.elapsed() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_replay_store_that_errors_hangs_or_panics_costs_one_request_a_503() {
    // Every mix of stores that answer at once and stores that are awaited.
    for keys in [FaultyKeyStore::AWAITED, FaultyKeyStore::AT_ONCE] {
        for at_once in [false, true] {
            let store = FaultyReplayStore {
                store: MokaReplayStore::default(),
                at_once,
            };
            let app = router(
                layer(keys)
                    .replay_store(store)
                    .store_timeout(Duration::from_millis(50)),
            );
            for nonce in ["error", "hang", "panic"] {
                let body = expect(&app, get(KEY_ID, nonce), 503, "nonce_store_unavailable").await;
                assert!(!body.to_string().contains("redis"), "{body}");
                let after = format!("after-{nonce}");
                expect_ok(&app, get(KEY_ID, &after)).await;
                expect(&app, get(KEY_ID, &after), 401, "replayed_nonce").await;
            }
        }
    }
}

#[tokio::test]
async fn a_replay_store_that_panics_on_the_prefetch_hint_still_records_the_request() {
    for (keys, at_once) in [
        (FaultyKeyStore::AT_ONCE, true),
        (FaultyKeyStore::AWAITED, false),
    ] {
        let store = FaultyReplayStore {
            store: MokaReplayStore::default(),
            at_once,
        };
        let app = router(layer(keys).replay_store(store));
        expect_ok(&app, get(KEY_ID, "panic-in-prefetch")).await;
        expect(
            &app,
            get(KEY_ID, "panic-in-prefetch"),
            401,
            "replayed_nonce",
        )
        .await;
    }
}

#[tokio::test]
async fn a_key_store_that_panics_before_returning_its_future_gets_a_503() {
    let app = router(layer(PanicsBeforeItsFuture));
    let outcome = std::panic::AssertUnwindSafe(send(&app, get("any-key", "n")))
        .catch_unwind()
        .await;
    let (status, body) = outcome.expect("the key store's panic escaped the verifier");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "key_store_unavailable");
}

// --- The path without a future. ----------------------------------------------------------------

/// Bytes allocated while a verified `GET` goes through the service: `call` and one poll.
async fn allocated_for_a_get(keys: FaultyKeyStore, nonce: &str) -> usize {
    let inner = tower::service_fn(|_: http::Request<armor_psk::verify::VerifiedBody>| async {
        Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default()))
    });
    let store = CompactReplayStore::builder().capacity(1_000).build();
    let mut service = layer(keys).replay_store(store).layer(inner);
    // A first request warms what is made once (the key's HMAC state, lazily built statics).
    let warm_up = get(KEY_ID, &format!("{nonce}-warm-up"));
    let response = tower::ServiceExt::<Request>::oneshot(&mut service, warm_up).await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    let request = get(KEY_ID, nonce);
    let ready = tower::ServiceExt::<Request>::ready(&mut service)
        .await
        .unwrap();
    let (response, bytes) = allocated_during(|| ready.call(request).now_or_never());
    let response = response.expect("answered on the first poll").unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    bytes
}

#[tokio::test]
async fn a_get_whose_stores_answer_at_once_is_verified_without_a_future() {
    let at_once = allocated_for_a_get(FaultyKeyStore::AT_ONCE, "at-once").await;
    let awaited = allocated_for_a_get(FaultyKeyStore::AWAITED, "awaited").await;
    // The identity and the extensions map that holds it, nothing more: the awaited path
    // allocates its future (the request's parts, the claim, the inner service) on top.
    assert!(at_once < 400, "{at_once} bytes");
    assert!(awaited > at_once + 400, "{awaited} against {at_once} bytes");
}

// --- Bodies that arrive too slowly, or not at all. -------------------------------------------

/// A body that sends `chunks` one-byte chunks, `every` apart, then ends (or stalls for good
/// when `stall` is set).
fn trickle(chunks: usize, every: Duration, stall: bool) -> Body {
    let stream = futures_util::stream::unfold(0, move |sent| async move {
        if sent == chunks {
            if stall {
                std::future::pending::<()>().await;
            }
            return None;
        }
        if sent > 0 {
            tokio::time::sleep(every).await;
        }
        Some((Ok::<_, Infallible>(Bytes::from_static(b"a")), sent + 1))
    });
    Body::from_stream(stream)
}

fn post(nonce: &str, body_bytes: &[u8], body: Body) -> Request {
    let header = signer(KEY_ID)
        .authorization_with(&Method::POST, "/x", body_bytes, nonce, NOW)
        .unwrap();
    http::Request::post("/x")
        .header("authorization", header)
        .body(body)
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_gets_408_after_the_default_ten_seconds() {
    let app = router(layer(FaultyKeyStore::AWAITED));
    let started = tokio::time::Instant::now();
    let body = expect(
        &app,
        post("stall", b"a", trickle(1, Duration::ZERO, true)),
        408,
        "body_timeout",
    )
    .await;
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("10-second timeout"));
    expect_ok(&app, post("after", b"a", Body::from("a"))).await;
}

#[tokio::test(start_paused = true)]
async fn the_body_timeout_is_configurable_and_bounds_the_whole_body() {
    // Five bytes, one a second: each arrives well within any idle timeout, the whole in 4 s.
    let strict = router(layer(FaultyKeyStore::AWAITED).body_timeout(Duration::from_secs(2)));
    let started = tokio::time::Instant::now();
    let body = expect(
        &strict,
        post("slow", b"aaaaa", trickle(5, Duration::from_secs(1), false)),
        408,
        "body_timeout",
    )
    .await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2-second timeout"));

    // The default (10 s) lets the same body through, and the signature holds over its chunks.
    let default = router(layer(FaultyKeyStore::AWAITED));
    let request = post("slow", b"aaaaa", trickle(5, Duration::from_secs(1), false));
    let response = default.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, format!("{KEY_ID} aaaaa"));
}

#[tokio::test]
async fn a_body_that_fails_midway_gets_400_body_read_failed() {
    let app = router(layer(FaultyKeyStore::AWAITED));
    let frames: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"half")),
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "peer went away",
        )),
    ];
    let request = post(
        "broken",
        b"half and more",
        Body::from_stream(futures_util::stream::iter(frames)),
    );
    let body = expect(&app, request, 400, "body_read_failed").await;
    assert!(!body.to_string().contains("peer went away"), "{body}");
}

// --- An oversized Authorization header. --------------------------------------------------------

/// The bytes allocated while the layer answers a request whose `Authorization` is `header`,
/// and the rejection it gave. The service and the request are built before counting starts,
/// and the service is dropped after it stops (dropping the last handle on a moka store frees
/// garbage that other tests left, which would be counted here).
fn allocated_answering(header: &[u8]) -> (Option<Rejection>, usize) {
    let mut service = layer(MemoryKeyStore::builder().key(KEY_ID, SECRET).build()).layer(
        tower::service_fn(|_: http::Request<armor_psk::verify::VerifiedBody>| async {
            Ok::<_, Infallible>(http::Response::new(Full::<Bytes>::default()))
        }),
    );
    let request = http::Request::get("/x")
        .header("authorization", HeaderValue::from_bytes(header).unwrap())
        .body(Full::<Bytes>::default())
        .unwrap();
    let outcome = allocated_during(|| {
        // A request refused on its header is answered at once: one poll finishes it.
        let response = service.call(request).now_or_never();
        let response = response.expect("answered at once").unwrap();
        let rejection = response.extensions().get::<Rejection>().cloned();
        drop(response);
        rejection
    });
    drop(service);
    outcome
}

#[test]
fn a_64_kib_authorization_header_is_refused_without_an_allocation_in_proportion() {
    let long = format!("ARMOR-PSK {}", "k".repeat(64 * 1024)).into_bytes();

    let (parsed, bytes) = allocated_during(|| Credential::parse_bytes(&long).map(|_| ()));
    assert_eq!(parsed, Err(MalformedCredential::TooLong));
    assert_eq!(bytes, 0, "parsing allocated");

    // Through the layer: the same answer as for a short malformed header, give or take the
    // length of the message, and nothing like the header's size.
    // (The first answer pays for one-off set-up, such as registering tracing call sites.)
    allocated_answering(b"ARMOR-PSK a:b:c");
    let (short_rejection, short_bytes) = allocated_answering(b"ARMOR-PSK a:b:c");
    let (long_rejection, long_bytes) = allocated_answering(&long);
    assert_eq!(
        short_rejection,
        Some(Rejection::MalformedCredentials(
            MalformedCredential::FieldCount
        ))
    );
    assert_eq!(
        long_rejection,
        Some(Rejection::MalformedCredentials(
            MalformedCredential::TooLong
        ))
    );
    assert!(
        long_bytes <= short_bytes + 512,
        "a 64 KiB header cost {long_bytes} bytes, a short one {short_bytes}"
    );
    assert!(long_bytes < 8 * 1024, "{long_bytes} bytes");

    // Of a valid length but not visible ASCII: refused without copying either.
    let mut obs_text = b"ARMOR-PSK ".to_vec();
    obs_text.extend(std::iter::repeat_n(0xE9u8, 1000));
    let (rejection, bytes) = allocated_answering(&obs_text);
    assert_eq!(
        rejection,
        Some(Rejection::MalformedCredentials(
            MalformedCredential::NotAscii
        ))
    );
    assert!(bytes <= short_bytes + 512, "{bytes} bytes");
}

// --- Over a real socket. -----------------------------------------------------------------------

async fn serve(layer: VerifyPskLayer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(layer);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

/// Reads one HTTP/1.1 response with a `Content-Length` body: its status, headers and body.
async fn read_response(stream: &mut BufReader<TcpStream>) -> (u16, String, String) {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let read = stream.read_line(&mut line).await.unwrap();
        assert!(
            read > 0,
            "the connection closed before a response: {head:?}"
        );
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let status = head[9..12].parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

fn raw_get(key_id: &str, nonce: &str, timestamp: i64) -> String {
    let header = Signer::new(key_id, SECRET)
        .unwrap()
        .authorization_with(&Method::GET, "/x", b"", nonce, timestamp)
        .unwrap();
    format!(
        "GET /x HTTP/1.1\r\nhost: test\r\nauthorization: {}\r\n\r\n",
        header.to_str().unwrap()
    )
}

fn unix_now() -> i64 {
    armor_psk::clock::Clock::now_unix(&armor_psk::clock::SystemClock)
}

#[tokio::test]
async fn over_tcp_store_faults_cost_one_request_not_the_connection() {
    let address = serve(
        VerifyPskLayer::new(FaultyKeyStore::AT_ONCE)
            .replay_store(FaultyReplayStore {
                store: MokaReplayStore::default(),
                at_once: true,
            })
            .store_timeout(Duration::from_millis(100)),
    )
    .await;
    let now = unix_now();
    let mut stream = BufReader::new(TcpStream::connect(address).await.unwrap());
    let requests = [
        (raw_get("error-key", "n", now), 503, "key_store_unavailable"),
        (raw_get("hang-key", "n", now), 503, "key_store_unavailable"),
        (raw_get("panic-key", "n", now), 503, "key_store_unavailable"),
        (
            raw_get(KEY_ID, "error", now),
            503,
            "nonce_store_unavailable",
        ),
        (raw_get(KEY_ID, "hang", now), 503, "nonce_store_unavailable"),
        (
            raw_get(KEY_ID, "panic", now),
            503,
            "nonce_store_unavailable",
        ),
        (raw_get(KEY_ID, "fine", now), 200, KEY_ID),
    ];
    // One keep-alive connection carries them all, one after another.
    for (request, status, expected) in requests {
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let (got, head, body) = read_response(&mut stream).await;
        assert_eq!(got, status, "{head}{body}");
        assert!(body.contains(expected), "{body}");
    }
}

#[tokio::test]
async fn over_tcp_a_slow_body_gets_408_and_the_server_keeps_serving() {
    let address = serve(
        VerifyPskLayer::new(FaultyKeyStore::AT_ONCE).body_timeout(Duration::from_millis(300)),
    )
    .await;
    let header = Signer::new(KEY_ID, SECRET)
        .unwrap()
        .authorization(&Method::POST, "/x", b"0123456789")
        .unwrap();
    let mut stream = BufReader::new(TcpStream::connect(address).await.unwrap());
    let head = format!(
        "POST /x HTTP/1.1\r\nhost: test\r\nauthorization: {}\r\ncontent-length: 10\r\n\r\n012",
        header.to_str().unwrap()
    );
    stream.get_mut().write_all(head.as_bytes()).await.unwrap();
    // ...and the other seven bytes never come.
    let (status, _, body) = read_response(&mut stream).await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("body_timeout"), "{body}");
    // 300 ms is said as the whole second it rounds up to, not as a 0-second timeout.
    assert!(body.contains("within the 1-second timeout"), "{body}");

    let mut fresh = BufReader::new(TcpStream::connect(address).await.unwrap());
    let request = raw_get(KEY_ID, "next", unix_now());
    fresh.get_mut().write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut fresh).await.0, 200);
}

#[tokio::test]
async fn over_tcp_a_64_kib_authorization_header_gets_400() {
    let address = serve(VerifyPskLayer::new(FaultyKeyStore::AT_ONCE)).await;
    let mut stream = BufReader::new(TcpStream::connect(address).await.unwrap());
    let request = format!(
        "GET /x HTTP/1.1\r\nhost: test\r\nauthorization: ARMOR-PSK {}\r\n\r\n",
        "k".repeat(64 * 1024)
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let (status, head, body) = read_response(&mut stream).await;
    assert_eq!(status, 400, "{head}{body}");
    assert!(body.contains("malformed_credentials"), "{body}");
    assert!(body.contains("1024 bytes"), "{body}");
    // The connection is still good for a proper request.
    let request = raw_get(KEY_ID, "after-long", unix_now());
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
}

#[tokio::test]
async fn over_tcp_a_body_shorter_than_its_content_length_gets_400_and_a_clean_close() {
    let address = serve(VerifyPskLayer::new(FaultyKeyStore::AT_ONCE)).await;
    let header = Signer::new(KEY_ID, SECRET)
        .unwrap()
        .authorization(&Method::POST, "/x", b"0123456789")
        .unwrap();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!(
        "POST /x HTTP/1.1\r\nhost: test\r\nauthorization: {}\r\ncontent-length: 100\r\n\r\n\
         0123456789",
        header.to_str().unwrap()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The client is done sending: 10 bytes of the 100 it announced.
    stream.shutdown().await.unwrap();

    // The server answers, then closes its side: the read ends in EOF, not a reset.
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("the connection ends cleanly");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 400 "), "{response:?}");
    assert!(response.contains("body_read_failed"), "{response:?}");

    // And serves the next connection.
    let mut fresh = BufReader::new(TcpStream::connect(address).await.unwrap());
    let request = raw_get(KEY_ID, "after-short", unix_now());
    fresh.get_mut().write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut fresh).await.0, 200);
}
