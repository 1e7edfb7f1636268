//! Benchmarks of the verifier: `cargo bench --bench verify`.
//!
//! - `parse`: parsing an `Authorization` header;
//! - `verify_small`: a signed `GET /accounts/2` without a body through the whole layer, with
//!   each replay store (`layer_moka`, the default; `layer_compact`; `layer_null_store`, a store
//!   that remembers nothing, to show what the layer costs apart from its store), against the
//!   floor of any verifier (one base64 decode and one HMAC-SHA512, `floor`) and against a peer:
//!   the `hawk` crate's server-side check of one request header (`hawk_sha512`, `hawk_sha256`:
//!   parse the header, recompute its MAC, compare, check the timestamp; hawk records no nonce,
//!   it leaves that to its caller); in the interleaved run also `bare_service`, the same
//!   requests through the same harness to the no-op service without the layer (building the
//!   response and dropping the request), so that the layer's own cost can be read apart from
//!   the harness's ("net of bare_service");
//! - `clock`: one read of `SystemClock` (the layer's clock, which reads twice a bodiless
//!   request), beside one read of the precise wall clock it replaced (`SystemTime::now`);
//! - `verify_body`: 1 KiB, 64 KiB and 1 MiB bodies through the layer, with only the `digest`
//!   form configured, and with every form while the request was signed `raw` (so the digest is
//!   tried first, then the raw form), against the floor of one SHA-512 pass over the body.
//!
//! Each request through the layer carries a fresh signature (a distinct nonce), else it would
//! be refused as a replay: the setup of `iter_batched` signs it, outside the timed part.

#[path = "../examples/support/null_store.rs"]
mod null_store;
#[path = "../examples/support/percentile.rs"]
mod percentile;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use armor_psk::clock::{Clock, SystemClock};
use armor_psk::key_store::MemoryKeyStore;
use armor_psk::psk::{mac_matches, BodyForm, BodyForms, Credential, SigningString, MAC_LEN};
use armor_psk::replay::{CompactReplayStore, MokaReplayStore, ReplayStore, DEFAULT_CAPACITY};
use armor_psk::verify::VerifiedBody;
use armor_psk::{Signer, VerifyPskLayer};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, BatchSize, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use sha2::{Digest, Sha512};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt};

use null_store::NullStore;

const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
const SECRET: &str = "Qm9ndXMgZGVtbyBzZWNyZXQgZm9yIHRoZSBiZW5jaGVz";
const PATH: &str = "/accounts/2";
const NONCE: &str = "8jbj872s2h";
const TIMESTAMP: i64 = 1_528_140_529;

/// Live entries the benches' replay stores may hold: every accepted request stays remembered
/// (two entries) for as long as a bench runs, and the default capacity (1,200,000) could fill
/// up during a run and refuse requests with 503. Room for 3,000,000 requests, more than a run
/// of one bench sends (about 4 s at 1 to 6 µs each), and not so much more that the compact
/// store's table (allocated up front, 25 bytes an entry) dwarfs what a server would use.
/// Each bench checks after its run that the layer still accepts a request.
const REPLAY_CAPACITY: u64 = 6_000_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn short(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
}

/// The verifier over one demo key, with a moka replay store large enough for a whole bench.
fn layer() -> VerifyPskLayer {
    layer_with(MokaReplayStore::builder().capacity(REPLAY_CAPACITY).build())
}

fn layer_with(store: impl ReplayStore) -> VerifyPskLayer {
    let keys = MemoryKeyStore::builder().key(KEY_ID, SECRET).build();
    VerifyPskLayer::new(keys).replay_store(store)
}

/// The `hawk` crate's server side: parse the `Authorization` header's parameters, rebuild the
/// request, recompute the MAC and compare, check the timestamp. Returns whether it verified.
struct Hawk {
    credentials: hawk::Credentials,
}

impl Hawk {
    fn new(algorithm: hawk::DigestAlgorithm) -> Self {
        let credentials = hawk::Credentials {
            id: KEY_ID.to_owned(),
            key: hawk::Key::new(SECRET, algorithm).expect("a hawk key"),
        };
        Hawk { credentials }
    }

    /// A freshly made `Authorization` header (a new nonce and the time now), as a client
    /// sends one: each request's is new, as each of the layer's is.
    fn header(&self) -> String {
        let header = hawk::RequestBuilder::new("GET", "127.0.0.1", 3000, PATH)
            .request()
            .make_header(&self.credentials)
            .expect("a hawk header");
        format!("Hawk {header}")
    }

    fn verify(&self, authorization: &str) -> bool {
        let Some(params) = authorization.strip_prefix("Hawk ") else {
            return false;
        };
        let Ok(header) = params.parse::<hawk::Header>() else {
            return false;
        };
        let request = hawk::RequestBuilder::new("GET", "127.0.0.1", 3000, PATH).request();
        // The header was made when the bench started: a skew that covers any run.
        request.validate_header(&header, &self.credentials.key, Duration::from_secs(86_400))
    }
}

/// A service that does nothing: the layer's inner service, and alone the `bare_service`
/// contestant (what the bench's own handling of a request costs without the layer).
fn no_op<B: Send + 'static>(
) -> impl Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
       + Clone
       + Send
       + 'static {
    tower::service_fn(|_req: Request<B>| async {
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
    })
}

fn signer() -> Signer {
    Signer::new(KEY_ID, SECRET).expect("a valid key id")
}

fn signed_get(signer: &Signer) -> Request<Empty<Bytes>> {
    let authorization = signer
        .authorization(&Method::GET, PATH, b"")
        .expect("signed");
    Request::get(PATH)
        .header(AUTHORIZATION, authorization)
        .body(Empty::new())
        .expect("a request")
}

fn signed_post(signer: &Signer, body: &Bytes) -> Request<Full<Bytes>> {
    let authorization = signer
        .authorization(&Method::POST, PATH, body)
        .expect("signed");
    Request::post(PATH)
        .header(AUTHORIZATION, authorization)
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
        .expect("a request")
}

/// Panics unless the service accepts `request`: a bench of refusals would measure nothing.
fn assert_accepted<S, B>(runtime: &Runtime, service: &S, request: Request<B>)
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone,
{
    let response = runtime
        .block_on(service.clone().oneshot(request))
        .unwrap_or_else(|never| match never {});
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the layer refused a signed request"
    );
}

fn parse(c: &mut Criterion) {
    let header = signer()
        .authorization_with(&Method::GET, PATH, b"", NONCE, TIMESTAMP)
        .expect("signed");
    let header = header.to_str().expect("ASCII").to_owned();
    assert!(Credential::parse(&header).is_ok());

    let mut group = c.benchmark_group("parse");
    short(&mut group);
    group.bench_function("credential", |b| {
        b.iter(|| Credential::parse(black_box(&header)))
    });
    group.finish();
}

fn clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("clock");
    short(&mut group);
    group.bench_function("system_clock", |b| b.iter(|| SystemClock.now_unix()));
    group.bench_function("precise", |b| {
        b.iter(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|since| since.as_secs())
        })
    });
    group.finish();
}

/// The floor of any verifier: decode the signature, one HMAC-SHA512 over the signing string
/// from a precomputed keyed state, compare in constant time as the layer does
/// (`psk::mac_matches`; `psk::macs_equal`'s docs say what `hmac`'s `verify_slice` costs).
struct Floor {
    keyed: Hmac<Sha512>,
}

impl Floor {
    // Never inlined, so that callgrind can count it by name (`verify_small/callgrind`).
    #[inline(never)]
    fn verify(&self, signature: &str, signing: &str) -> bool {
        let mut decoded = [0u8; 66];
        let length = STANDARD
            .decode_slice(signature, &mut decoded)
            .expect("base64");
        let mut mac = self.keyed.clone();
        mac.update(signing.as_bytes());
        let sent: &[u8; MAC_LEN] = decoded[..length].try_into().expect("64 bytes");
        mac_matches(mac, sent)
    }

    /// The signature and signing string of a freshly signed `GET`.
    fn input(signer: &Signer) -> (String, String) {
        let nonce = uuid::Uuid::new_v4().to_string();
        let timestamp = TIMESTAMP;
        let header = signer
            .authorization_with(&Method::GET, PATH, b"", &nonce, timestamp)
            .expect("signed");
        let header = header.to_str().expect("ASCII");
        let signature = header.split(':').nth(1).expect("a signature field");
        assert_eq!(signature.len(), 88);
        let signing = SigningString {
            key_id: KEY_ID,
            method: "GET",
            path: PATH,
            nonce: &nonce,
            timestamp,
        }
        .to_text::<&[u8]>(BodyForm::Empty, &[]);
        (signature.to_owned(), signing)
    }
}

/// Everything `verify_small` compares.
struct Contestants<S> {
    floor: Floor,
    hawk_sha512: Hawk,
    hawk_sha256: Hawk,
    /// The layer with a store that records nothing, `CompactReplayStore`, and the default
    /// `MokaReplayStore`.
    layers: [(&'static str, S); 3],
}

/// The contestants, each checked to accept a request unless `counted` (callgrind counts every
/// request that goes through a layer, and the check's three would be counted in every run).
fn contestants(
    runtime: &Runtime,
    signer: &Signer,
    replay_capacity: u64,
    counted: bool,
) -> Contestants<
    impl Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone,
> {
    let floor = Floor {
        keyed: Hmac::<Sha512>::new_from_slice(SECRET.as_bytes()).expect("any key length"),
    };
    let (signature, signing) = Floor::input(signer);
    assert!(
        counted || floor.verify(&signature, &signing),
        "the floor does not verify"
    );

    let hawk_sha512 = Hawk::new(hawk::DigestAlgorithm::Sha512);
    let hawk_sha256 = Hawk::new(hawk::DigestAlgorithm::Sha256);
    assert!(hawk_sha512.verify(&hawk_sha512.header()));
    assert!(hawk_sha256.verify(&hawk_sha256.header()));

    let compact = CompactReplayStore::builder()
        .capacity(replay_capacity)
        .build();
    let moka = MokaReplayStore::builder().capacity(replay_capacity).build();
    let layers = [
        (
            "layer_null_store",
            layer_with(NullStore).layer(no_op::<VerifiedBody>()),
        ),
        (
            "layer_compact",
            layer_with(compact).layer(no_op::<VerifiedBody>()),
        ),
        (
            "layer_moka",
            layer_with(moka).layer(no_op::<VerifiedBody>()),
        ),
    ];
    if !counted {
        for (_, service) in &layers {
            assert_accepted(runtime, service, signed_get(signer));
        }
    }
    Contestants {
        floor,
        hawk_sha512,
        hawk_sha256,
        layers,
    }
}

fn verify_small(c: &mut Criterion) {
    let runtime = runtime();
    let signer = signer();
    let contestants = contestants(&runtime, &signer, REPLAY_CAPACITY, false);
    let (signature, signing) = Floor::input(&signer);

    let mut group = c.benchmark_group("verify_small");
    short(&mut group);
    group.bench_function("floor", |b| {
        b.iter(|| {
            contestants
                .floor
                .verify(black_box(&signature), black_box(&signing))
        })
    });
    for (name, hawk) in [
        ("hawk_sha512", &contestants.hawk_sha512),
        ("hawk_sha256", &contestants.hawk_sha256),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || hawk.header(),
                |header| hawk.verify(black_box(&header)),
                BatchSize::SmallInput,
            )
        });
    }
    for (name, service) in &contestants.layers {
        group.bench_function(*name, |b| {
            b.to_async(&runtime).iter_batched(
                || signed_get(&signer),
                |request| service.clone().oneshot(request),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    for (_, service) in &contestants.layers {
        assert_accepted(&runtime, service, signed_get(&signer));
    }
}

/// One contestant of an interleaved run: given `n`, prepares `n` fresh inputs (untimed), and
/// returns how long it took to verify them.
type Contestant<'a> = (&'static str, Box<dyn FnMut(usize) -> Duration + 'a>);

/// Runs `contestants` in turn, `block` inputs each, for `rounds` rounds (the order reversed
/// every other round), and prints each one's median time per input and its median ratio to
/// the first contestant (the floor) in the same round. With `net_of`, the name of a contestant
/// that does the harness's part of the work alone, it also prints each one's time less that
/// contestant's, as a ratio to the floor (again the median of the rounds' ratios).
///
/// criterion measures each bench in a stretch of time of its own, and on a shared machine a
/// noisy stretch can fall on a layer and not on its floor; taking turns in short blocks puts
/// the noise on both sides of each ratio.
fn interleave(
    title: &str,
    rounds: usize,
    block: usize,
    contestants: &mut [Contestant<'_>],
    net_of: Option<&str>,
) {
    // Nanoseconds per input, by contestant, by round.
    let mut times = vec![Vec::with_capacity(rounds); contestants.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..contestants.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let elapsed = (contestants[index].1)(block);
            times[index].push(elapsed.as_secs_f64() * 1e9 / block as f64);
        }
    }
    // Each round's time less the harness's in the same round, for the harness and the
    // contestants after it (which go through it).
    let harness = net_of.and_then(|name| contestants.iter().position(|(named, _)| *named == name));
    println!("{title}: {rounds} rounds of {block} each, interleaved; medians over the rounds");
    println!(
        "  {:<28} {:>12} {:>14} {:>22} {:>18}",
        "contestant",
        "ns/request",
        "ratio to floor",
        "ratio, 10th-90th pct",
        net_of.map_or(String::new(), |name| format!("net of {name}")),
    );
    for (index, (name, _)) in contestants.iter().enumerate() {
        // Each round's time against the floor's in the same round.
        let against_floor = |less: &[f64]| -> Vec<f64> {
            (0..rounds)
                .map(|round| (times[index][round] - less[round]) / times[0][round])
                .collect()
        };
        let ratios = against_floor(&vec![0.0; rounds]);
        let net = harness
            .filter(|harness| index >= *harness)
            .map_or_else(String::new, |harness| {
                format!("{:.2}", percentile(&against_floor(&times[harness]), 50.0))
            });
        println!(
            "  {:<28} {:>12.0} {:>14.2} {:>13.2} - {:.2} {:>18}",
            name,
            percentile(&times[index], 50.0),
            percentile(&ratios, 50.0),
            percentile(&ratios, 10.0),
            percentile(&ratios, 90.0),
            net,
        );
    }
}

/// Times `requests` through `service`, and checks that every one was accepted.
fn time_layer<S, B>(runtime: &Runtime, service: &S, requests: Vec<Request<B>>) -> Duration
where
    S: Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone,
{
    // Drained rather than consumed, so that the vector's buffer is freed after the clock stops:
    // freeing half a megabyte (unmapped, or the heap trimmed) took about 30 ns a request.
    let mut requests = requests;
    let mut responses = Vec::with_capacity(requests.len());
    let started = Instant::now();
    runtime.block_on(async {
        for request in requests.drain(..) {
            responses.push(service.clone().oneshot(request).await);
        }
    });
    let elapsed = started.elapsed();
    assert!(responses
        .iter()
        .all(|response| matches!(response, Ok(r) if r.status() == StatusCode::OK)));
    elapsed
}

/// Times `n` freshly signed `GET`s through `service` (see [`time_layer`]).
fn timed_gets<'a, S>(
    runtime: &'a Runtime,
    signer: &'a Signer,
    service: &'a S,
) -> impl FnMut(usize) -> Duration + 'a
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone,
{
    move |n: usize| {
        let requests = (0..n).map(|_| signed_get(signer)).collect();
        time_layer(runtime, service, requests)
    }
}

/// `verify_small`, interleaved (see [`interleave`]), with the stores at their default
/// capacity (1,200,000 entries), as a server would have them.
fn verify_small_interleaved() {
    let runtime = runtime();
    let signer = signer();
    let contestants = contestants(&runtime, &signer, DEFAULT_CAPACITY, false);
    let floor = |n: usize| {
        let inputs: Vec<_> = (0..n).map(|_| Floor::input(&signer)).collect();
        let started = Instant::now();
        let verified = inputs
            .iter()
            .filter(|(signature, signing)| {
                contestants
                    .floor
                    .verify(black_box(signature), black_box(signing))
            })
            .count();
        let elapsed = started.elapsed();
        assert_eq!(verified, n);
        elapsed
    };
    let hawk = |hawk: &'static str| {
        let hawk = match hawk {
            "sha512" => &contestants.hawk_sha512,
            _ => &contestants.hawk_sha256,
        };
        move |n: usize| {
            let headers: Vec<String> = (0..n).map(|_| hawk.header()).collect();
            let started = Instant::now();
            let verified = headers
                .iter()
                .filter(|header| hawk.verify(black_box(header)))
                .count();
            let elapsed = started.elapsed();
            assert_eq!(verified, n);
            elapsed
        }
    };
    let bare = no_op::<Empty<Bytes>>();
    let mut timed: Vec<Contestant<'_>> = vec![
        ("floor", Box::new(floor)),
        ("hawk_sha512", Box::new(hawk("sha512"))),
        ("hawk_sha256", Box::new(hawk("sha256"))),
    ];
    timed.push((
        "bare_service",
        Box::new(timed_gets(&runtime, &signer, &bare)),
    ));
    for (name, service) in &contestants.layers {
        timed.push((name, Box::new(timed_gets(&runtime, &signer, service))));
    }
    interleave(
        "verify_small/interleaved",
        61,
        2_000,
        &mut timed,
        Some("bare_service"),
    );
}

/// `verify_body`, interleaved (see [`interleave`]), at 64 KiB and 1 MiB.
fn verify_body_interleaved() {
    let runtime = runtime();
    let layers = body_layers();
    for (label, size, block) in [("64KiB", 64 * 1024, 100), ("1MiB", 1024 * 1024, 8)] {
        let body = body_of(size);
        let (runtime, body) = (&runtime, &body);
        let floor = move |n: usize| {
            let started = Instant::now();
            (0..n).for_each(|_| {
                black_box(Sha512::digest(black_box(body)));
            });
            started.elapsed()
        };
        let layer = |service, signer| {
            move |n: usize| {
                let requests = (0..n).map(|_| signed_post(signer, body)).collect();
                time_layer(runtime, service, requests)
            }
        };
        let mut timed: Vec<Contestant<'_>> = vec![
            ("sha512_floor", Box::new(floor)),
            (
                "layer_digest_only",
                Box::new(layer(&layers.digest_only, &layers.digest_signer)),
            ),
            (
                "layer_all_forms_signed_raw",
                Box::new(layer(&layers.all_forms, &layers.raw_signer)),
            ),
        ];
        interleave(
            &format!("verify_body/{label}/interleaved"),
            31,
            block,
            &mut timed,
            None,
        );
    }
}

/// Requests each `verify_small/callgrind/…` run sends, in one block.
const CALLGRIND_REQUESTS: usize = 20_000;
/// Requests in each block of a `verify_small/callgrind/…` run given `VERIFY_SMALL_BLOCKS`, as
/// in the interleaved runs.
const PROFILED_BLOCK: usize = 2_000;

/// `verify_small/callgrind/{floor,bare_service,layer_null_store,layer_compact,layer_moka}`: one
/// contestant verifies `CALLGRIND_REQUESTS` fresh requests, made before it starts, untimed, for
/// valgrind to count the instructions (the same on a quiet machine and a busy one). Only with
/// that exact filter:
///
/// ```text
/// valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*Oneshot*poll*' \
///     target/release/deps/verify-… --bench verify_small/callgrind/layer_compact
/// valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*Floor*verify*' \
///     target/release/deps/verify-… --bench verify_small/callgrind/floor
/// ```
///
/// and divide the instructions collected by `CALLGRIND_REQUESTS`. With `VERIFY_SMALL_BLOCKS=N`
/// it sends N blocks of `PROFILED_BLOCK` instead, each made just before it is sent: enough, for
/// N in the hundreds, for a sampling profiler (`perf record`) to see where a contestant's
/// time goes (the stores hold 600,000 requests: N up to 300 for them). (Counted that way, the
/// allocator's work differs: `bare_service` about 260 instructions more a request, the layers
/// about 10.)
fn verify_small_callgrind(contestant: &str) {
    let runtime = runtime();
    let signer = signer();
    let contestants = contestants(&runtime, &signer, DEFAULT_CAPACITY, true);
    let (blocks, block) = match std::env::var("VERIFY_SMALL_BLOCKS") {
        Ok(blocks) => (blocks.parse().expect("a number of blocks"), PROFILED_BLOCK),
        Err(_) => (1, CALLGRIND_REQUESTS),
    };
    for _ in 0..blocks {
        if contestant == "floor" {
            let inputs: Vec<_> = (0..block).map(|_| Floor::input(&signer)).collect();
            let verified = inputs
                .iter()
                .filter(|(signature, signing)| contestants.floor.verify(signature, signing))
                .count();
            assert_eq!(verified, block);
        } else if contestant == "bare_service" {
            count_gets(&runtime, &signer, &no_op::<Empty<Bytes>>(), block);
        } else {
            let Some((_, service)) = contestants
                .layers
                .iter()
                .find(|(name, _)| *name == contestant)
            else {
                panic!("no contestant named {contestant}");
            };
            count_gets(&runtime, &signer, service, block);
        }
    }
}

/// `count` freshly signed `GET`s through `service`, each of which must be accepted.
fn count_gets<S>(runtime: &Runtime, signer: &Signer, service: &S, count: usize)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone,
{
    let requests: Vec<_> = (0..count).map(|_| signed_get(signer)).collect();
    let accepted = runtime.block_on(async {
        let mut accepted = 0;
        for request in requests {
            let response = service.clone().oneshot(request).await;
            accepted += usize::from(matches!(response, Ok(r) if r.status() == StatusCode::OK));
        }
        accepted
    });
    assert_eq!(accepted, count);
}

/// The `percent`th percentile of `values` (which stay in their order); NaN when there are none.
fn percentile(values: &[f64], percent: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile::percentile(&sorted, percent).unwrap_or(f64::NAN)
}

/// A JSON-ish body of `size` bytes.
fn body_of(size: usize) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| b"{\"armor\": \"psk\"}\n"[i % 17])
            .collect::<Vec<u8>>(),
    )
}

/// What `verify_body` compares besides the floor: the layer with only the digest form, and
/// with every form while the client signs `raw`.
struct BodyLayers<S> {
    digest_signer: Signer,
    raw_signer: Signer,
    digest_only: S,
    all_forms: S,
}

fn body_layers() -> BodyLayers<
    impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone,
> {
    BodyLayers {
        digest_signer: signer(),
        raw_signer: signer().body_form(BodyForm::Raw),
        digest_only: layer()
            .body_forms(BodyForms::only(BodyForm::Digest))
            .layer(no_op()),
        all_forms: layer().layer(no_op()),
    }
}

fn verify_body(c: &mut Criterion) {
    let runtime = runtime();
    let layers = body_layers();

    let mut group = c.benchmark_group("verify_body");
    short(&mut group);
    for (label, size) in [("1KiB", 1024), ("64KiB", 64 * 1024), ("1MiB", 1024 * 1024)] {
        let body = body_of(size);
        assert_accepted(
            &runtime,
            &layers.digest_only,
            signed_post(&layers.digest_signer, &body),
        );
        assert_accepted(
            &runtime,
            &layers.all_forms,
            signed_post(&layers.raw_signer, &body),
        );

        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("sha512_floor", label), &body, |b, body| {
            b.iter(|| Sha512::digest(black_box(body)))
        });
        group.bench_with_input(
            BenchmarkId::new("layer_digest_only", label),
            &body,
            |b, body| {
                b.to_async(&runtime).iter_batched(
                    || signed_post(&layers.digest_signer, body),
                    |request| layers.digest_only.clone().oneshot(request),
                    BatchSize::SmallInput,
                )
            },
        );
        group.bench_with_input(
            BenchmarkId::new("layer_all_forms_signed_raw", label),
            &body,
            |b, body| {
                b.to_async(&runtime).iter_batched(
                    || signed_post(&layers.raw_signer, body),
                    |request| layers.all_forms.clone().oneshot(request),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, parse, clock, verify_small, verify_body);

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-') && arg != "bench");
    if let Some(contestant) = filter
        .as_deref()
        .and_then(|filter| filter.strip_prefix("verify_small/callgrind/"))
    {
        verify_small_callgrind(contestant);
        return;
    }
    benches();
    let wanted = |name: &str| {
        filter
            .as_deref()
            .map_or(true, |filter| name.contains(filter))
    };
    if wanted("verify_small/interleaved") {
        verify_small_interleaved();
    }
    if wanted("verify_body/interleaved") {
        verify_body_interleaved();
    }
    Criterion::default().configure_from_args().final_summary();
}
