//! A bounded end-to-end load run on loopback: `cargo run --release --example load`.
//!
//! Four servers, each a child process of this binary pinned to CPU 0 (`taskset -c 0`), serving
//! `GET /accounts/2` with `hello` on a single-threaded tokio runtime, taking turns:
//!
//! - `bare`: axum alone;
//! - `floor`: axum behind a middleware that does only the irreducible work: parse the header,
//!   one HMAC-SHA512 with a precomputed keyed state, compare (a tower layer of the fewest moving
//!   parts; `--servers floor-from-fn` adds the same work in `axum::middleware::from_fn`, to
//!   compare: its boxed future and service clone cost nothing measurable here);
//! - `full-moka`: axum behind `VerifyPskLayer` with its default settings (the moka replay store);
//! - `full-compact`: the same with `CompactReplayStore`;
//! - `full-null` (only when named in `--servers`): the same with a replay store that records
//!   nothing, to tell the layer's own cost from its store's (it refuses no replay).
//!
//! The load generator runs in this process, pinned to CPU 1 (it re-executes itself under
//! `taskset -c 1`), with a fixed number of keep-alive connections, each sending one request at a
//! time. Every request is freshly signed (a new UUID nonce and the current time) by the crate's
//! `Signer`, so the replay store does real work: the requests for one server are signed into a
//! pool just before it is measured (signing in the loop would make the generator, not the
//! server, the bottleneck). Every response must be a 200. The server's CPU time per request is
//! read from `/proc/<pid>/stat`.
//!
//! The servers are started together and run to the end (a full server's replay store keeps
//! what it recorded, as a server's would; it has the default capacity, 1,200,000 entries, unless
//! the run records more than that, two entries a request, warm-up included: then it is sized
//! for the run, since a full store refuses requests); each is warmed up once. Then, in each round,
//! each server in turn gets a fixed number of measured requests, stopping early at a time cap:
//! the run always ends by itself. Servers listen on 127.0.0.1 only and exit when this process
//! closes their stdin, or at the latest when every turn of the run could have reached its cap
//! and ten minutes more have passed.
//!
//! Options: `--requests N` (measured requests per server and round, default 100000),
//! `--warmup N` (per server, default 10000), `--connections N` (default 32), `--cap-secs N`
//! (per server and round, default 30), `--rounds N` (default 3: the servers take turns, in the
//! opposite order every other round; the summary gives each figure's median, and each server's
//! throughput ratio and p99 added beside the floor's turn in the same round, as the median over
//! the rounds and the lowest to highest), `--servers a,b` (default all four), `--rate N` (see
//! below).
//!
//! With `--rate N` the measured requests are sent at a fixed pace of N a second in all (open
//! loop, as wrk2 does), not as fast as the server answers: request `i` is due `i / N` seconds
//! after the start, and its latency is counted from when it was due, so a request that had to
//! wait for a free connection counts that wait too. The latencies are then those of a server
//! at that load (choose N below every server's throughput), rather than the queue of 32
//! requests a saturated server always has; the throughput ratios mean nothing in this mode.

#[path = "support/null_store.rs"]
mod null_store;
#[path = "support/percentile.rs"]
mod percentile;

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use armor_psk::key_store::MemoryKeyStore;
use armor_psk::psk::{mac_matches, Credential, HmacSha512, SigningString};
use armor_psk::replay::{CompactReplayStore, MokaReplayStore, DEFAULT_CAPACITY};
use armor_psk::{Signer, VerifyPskLayer};
use axum::http::Request;
use axum::http::{header::AUTHORIZATION, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::future::{ready, Either, Ready};
use hmac::Mac as _;
use http::Method;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use null_store::NullStore;

const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
const SECRET: &str = "Qm9ndXMgZGVtbyBzZWNyZXQgZm9yIHRoZSBsb2FkIHJ1bg";
const PATH: &str = "/accounts/2";
const SERVERS: [&str; 4] = ["bare", "floor", "full-moka", "full-compact"];
/// Added to the time a run's turns may take at most, for a server's lifetime: signing the
/// requests between turns, starting and stopping.
const SERVER_SLACK: Duration = Duration::from_secs(600);
/// Set in the re-executed generator, so that it does not re-execute itself again.
const PINNED: &str = "ARMOR_PSK_LOAD_PINNED";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(kind) = option(&args, "--serve") {
        let lifetime = number(&args, "--lifetime-secs", SERVER_SLACK.as_secs());
        let entries = number(&args, "--entries", 0);
        return match lifetime.and_then(|lifetime| Ok((lifetime, entries?))) {
            Ok((lifetime, entries)) => serve(&kind, Duration::from_secs(lifetime), entries),
            Err(message) => {
                eprintln!("error: {message}");
                ExitCode::FAILURE
            }
        };
    }
    if std::env::var_os(PINNED).is_none() && taskset_works() {
        // Re-run this generator pinned to CPU 1; the servers go to CPU 0.
        let status = Command::new("taskset")
            .args(["-c", "1"])
            .arg(&args[0])
            .args(&args[1..])
            .env(PINNED, "1")
            .status();
        return match status {
            Ok(status) if status.success() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(error) => {
                eprintln!("error: cannot run taskset: {error}");
                ExitCode::FAILURE
            }
        };
    }
    match generate(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn option(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|arg| arg == name)
        .and_then(|at| args.get(at + 1).cloned())
}

fn number(args: &[String], name: &str, default: u64) -> Result<u64, String> {
    option(args, name).map_or(Ok(default), |value| {
        value
            .parse()
            .map_err(|_| format!("{name} takes a number, not {value:?}"))
    })
}

fn taskset_works() -> bool {
    Command::new("taskset")
        .args(["-c", "0", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

// --- The servers. --------------------------------------------------------------------------------

/// Serves until this process's stdin is closed (the generator is done, or gone), or at the
/// latest after `lifetime`; a replay store is sized for the `entries` the run records.
fn serve(kind: &str, lifetime: Duration, entries: u64) -> ExitCode {
    let app = match app(kind, entries) {
        Some(app) => app,
        None => {
            eprintln!(
                "error: unknown server {kind:?} (expected one of {SERVERS:?}, or floor-from-fn)"
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: no tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("PORT {}", listener.local_addr()?.port());
        let stop = async move {
            // The parent closes our stdin when it is done with us (or dies).
            let closed = tokio::task::spawn_blocking(|| {
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
            });
            let _ = tokio::time::timeout(lifetime, closed).await;
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: server {kind}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The replay stores keep their default capacity (1,200,000 entries, as a server would) unless
/// the run records more than that: a full store refuses requests (503 `nonce_store_full`).
fn app(kind: &str, entries: u64) -> Option<Router> {
    let hello = Router::new().route(PATH, get(|| async { "hello" }));
    let keys = || MemoryKeyStore::builder().key(KEY_ID, SECRET).build();
    let capacity = DEFAULT_CAPACITY.max(entries.saturating_add(entries / 8));
    let router = match kind {
        "bare" => hello,
        "floor" => hello.layer(FloorLayer::new()?),
        "floor-from-fn" => {
            let floor = FloorLayer::new()?;
            hello.layer(axum::middleware::from_fn(move |request, next| {
                floor_from_fn(floor.clone(), request, next)
            }))
        }
        "full-moka" if capacity == DEFAULT_CAPACITY => hello.layer(VerifyPskLayer::new(keys())),
        "full-moka" => hello.layer(
            VerifyPskLayer::new(keys())
                .replay_store(MokaReplayStore::builder().capacity(capacity).build()),
        ),
        "full-compact" => hello.layer(
            VerifyPskLayer::new(keys())
                .replay_store(CompactReplayStore::builder().capacity(capacity).build()),
        ),
        "full-null" => hello.layer(VerifyPskLayer::new(keys()).replay_store(NullStore)),
        _ => return None,
    };
    // Layers applied (the default store built) now, not at each connection.
    Some(router.with_state(()))
}

/// The irreducible work of any verifier, as a tower layer of the fewest moving parts (the
/// inner service's future or a ready 401, no allocation): parse the header, one HMAC-SHA512
/// over the signing string with a precomputed keyed state, compare. No window, no key lookup,
/// no replay record.
#[derive(Clone)]
struct FloorLayer {
    keyed: Arc<HmacSha512>,
}

impl FloorLayer {
    fn new() -> Option<Self> {
        let keyed = HmacSha512::new_from_slice(SECRET.as_bytes()).ok()?;
        Some(FloorLayer {
            keyed: Arc::new(keyed),
        })
    }

    fn verifies<B>(&self, request: &Request<B>) -> bool {
        request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| Credential::parse_bytes(value.as_bytes()).ok())
            .is_some_and(|credential| {
                let signing = SigningString {
                    key_id: credential.key_id(),
                    method: request.method().as_str(),
                    path: request.uri().path(),
                    nonce: credential.nonce(),
                    timestamp: credential.timestamp(),
                };
                mac_matches(signing.keyed_prefix(&self.keyed), credential.mac())
            })
    }
}

impl<S> tower_layer::Layer<S> for FloorLayer {
    type Service = Floor<S>;

    fn layer(&self, inner: S) -> Floor<S> {
        Floor {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
struct Floor<S> {
    inner: S,
    layer: FloorLayer,
}

impl<S, B> tower_service::Service<Request<B>> for Floor<S>
where
    S: tower_service::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.layer.verifies(&request) {
            Either::Right(self.inner.call(request))
        } else {
            Either::Left(ready(Ok(StatusCode::UNAUTHORIZED.into_response())))
        }
    }
}

/// The same work in `axum::middleware::from_fn` (`--servers floor-from-fn`), to compare its
/// plumbing (a boxed future and a clone of the inner service a request) with the floor's.
async fn floor_from_fn(floor: FloorLayer, request: axum::extract::Request, next: Next) -> Response {
    if floor.verifies(&request) {
        next.run(request).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

// --- The load generator. -------------------------------------------------------------------------

struct Settings {
    rounds: u64,
    requests: u64,
    warmup: u64,
    connections: u64,
    cap: Duration,
    /// Requests a second to send the measured part at; as fast as answered when `None`.
    rate: Option<f64>,
}

struct Outcome {
    completed: u64,
    elapsed: Duration,
    /// Latencies of the measured requests, in nanoseconds, sorted.
    latencies: Vec<u64>,
    /// Server CPU time (user and system) over the measured part.
    server_cpu: Duration,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&self, percent: f64) -> f64 {
        percentile::percentile(&self.latencies, percent).map_or(f64::NAN, |ns| ns as f64 / 1_000.0)
    }
}

fn generate(args: &[String]) -> Result<(), String> {
    let settings = Settings {
        rounds: number(args, "--rounds", 3)?.max(1),
        requests: number(args, "--requests", 100_000)?,
        warmup: number(args, "--warmup", 10_000)?,
        connections: number(args, "--connections", 32)?.max(1),
        cap: Duration::from_secs(number(args, "--cap-secs", 30)?),
        rate: match number(args, "--rate", 0)? {
            0 => None,
            rate => Some(rate as f64),
        },
    };
    let servers: Vec<String> = option(args, "--servers").map_or_else(
        || SERVERS.map(String::from).to_vec(),
        |list| list.split(',').map(String::from).collect(),
    );
    let pinned = std::env::var_os(PINNED).is_some();
    println!(
        "load: {} measured requests per server after {} warm-up, {} connections, {}, cap {} s; \
         servers pinned to CPU 0 and generator to CPU 1: {}",
        settings.requests,
        settings.warmup,
        settings.connections,
        settings.rate.map_or_else(
            || "each sent when the last on its connection was answered".to_owned(),
            |rate| format!("sent at {rate} a second")
        ),
        settings.cap.as_secs(),
        if pinned {
            "yes"
        } else {
            "no (taskset unavailable)"
        }
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("no tokio runtime: {error}"))?;

    // Every server runs for the whole run, as a server would (its replay store keeps what it
    // recorded), and is warmed up once. Rounds interleave the servers, in the opposite order
    // every other round, so that the machine's drift (its speed moves by tens of percent within
    // seconds) lands on all of them alike: many short rounds follow it closer than a few long
    // ones. Each ratio is taken within its round, the floor's turn beside the server's, and the
    // summary gives the median of those ratios and their range.
    // Each turn, warm-up included, stops at the cap: a server outlives the longest run.
    let turns = (settings.rounds + 1).saturating_mul(servers.len() as u64);
    let lifetime = settings
        .cap
        .saturating_mul(u32::try_from(turns).unwrap_or(u32::MAX))
        .saturating_add(SERVER_SLACK);
    // Two entries a request (both replay rules), warm-up included.
    let entries = (settings.rounds.saturating_mul(settings.requests))
        .saturating_add(settings.warmup)
        .saturating_mul(2);
    let mut results = Vec::new();
    for kind in &servers {
        let server = Server::start(kind, pinned, lifetime, entries)?;
        runtime
            .block_on(warm_up(server.port, &settings))
            .map_err(|error| format!("{kind}, warming up: {error}"))?;
        results.push((kind.clone(), server, Vec::new()));
    }
    for round in 1..=settings.rounds {
        println!("round {round} of {}:", settings.rounds);
        let mut order: Vec<&mut (String, Server, Vec<Outcome>)> = results.iter_mut().collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for (kind, server, outcomes) in order {
            let outcome = runtime
                .block_on(measure(server.port, server.pid(), &settings))
                .map_err(|error| format!("{kind}: {error}"))?;
            println!(
                "  {kind:<13} {:>8} req in {:>6.2} s: {:>9.0} req/s, p50 {:>7.1} µs, \
                 p99 {:>7.1} µs, server CPU {:>5.1} µs/req",
                outcome.completed,
                outcome.elapsed.as_secs_f64(),
                outcome.rate(),
                outcome.percentile_us(50.0),
                outcome.percentile_us(99.0),
                cpu_per_request_us(std::slice::from_ref(&outcome)),
            );
            outcomes.push(outcome);
        }
    }
    let results: Vec<(String, Vec<Outcome>)> = results
        .into_iter()
        .map(|(kind, mut server, outcomes)| {
            server.stop();
            (kind, outcomes)
        })
        .collect();
    print_summary(&results, settings.rate.is_some());
    Ok(())
}

/// Each server's medians over the rounds and, beside the floor's run of the same round, its
/// throughput ratio and p99 added: the median over the rounds, and the lowest to highest.
fn print_summary(results: &[(String, Vec<Outcome>)], paced: bool) {
    let floor = results
        .iter()
        .find(|(kind, _)| kind == "floor")
        .map(|(_, outcomes)| outcomes);
    let rounds = results.first().map_or(0, |(_, outcomes)| outcomes.len());
    println!(
        "\nover {rounds} rounds (medians, and CPU over all of them; the range is the lowest to \
         highest round):"
    );
    println!(
        "  {:<13} {:>9} {:>9} {:>9} {:>12} {:>10} {:>17} {:>11} {:>17}",
        "server",
        "req/s",
        "p50 µs",
        "p99 µs",
        "CPU µs/req",
        "vs floor",
        "range",
        "p99 added",
        "range"
    );
    for (kind, outcomes) in results {
        let figure = |of: &dyn Fn(&Outcome) -> f64| Spread::of(outcomes.iter().map(of));
        let beside_floor = |of: &dyn Fn(&Outcome, &Outcome) -> f64| {
            floor.map(|floor| {
                Spread::of(
                    outcomes
                        .iter()
                        .zip(floor)
                        .map(|(own, floor)| of(own, floor)),
                )
            })
        };
        // At a fixed pace every server was sent the same rate: it says nothing of throughput.
        let ratio = beside_floor(&|own, floor| 100.0 * own.rate() / floor.rate())
            .filter(|_| !paced)
            .map(|ratio| ratio.columns(|percent| format!("{percent:.1}%")));
        let added = beside_floor(&|own, floor| own.percentile_us(99.0) - floor.percentile_us(99.0))
            .map(|added| added.columns(|us| format!("{us:+.0}")));
        let dash = || ["-".to_owned(), "-".to_owned()];
        let [ratio, ratio_range] = ratio.unwrap_or_else(dash);
        let [added, added_range] = added.unwrap_or_else(dash);
        println!(
            "  {kind:<13} {:>9.0} {:>9.1} {:>9.1} {:>12.1} {:>10} {:>17} {:>11} {:>17}",
            figure(&Outcome::rate).median,
            figure(&|outcome| outcome.percentile_us(50.0)).median,
            figure(&|outcome| outcome.percentile_us(99.0)).median,
            cpu_per_request_us(outcomes),
            ratio,
            ratio_range,
            added,
            added_range,
        );
    }
}

/// The server's CPU time a request over `outcomes` (the summary takes every round: one round's
/// is read in 10 ms ticks, which a short round's requests share).
fn cpu_per_request_us(outcomes: &[Outcome]) -> f64 {
    let cpu: Duration = outcomes.iter().map(|outcome| outcome.server_cpu).sum();
    let requests: u64 = outcomes.iter().map(|outcome| outcome.completed).sum();
    cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
}

/// The median, lowest and highest of some figures (one a round).
struct Spread {
    median: f64,
    lowest: f64,
    highest: f64,
}

impl Spread {
    fn of(figures: impl Iterator<Item = f64>) -> Self {
        let mut figures: Vec<f64> = figures.collect();
        figures.sort_by(f64::total_cmp);
        let at = |percent| percentile::percentile(&figures, percent).unwrap_or(f64::NAN);
        Spread {
            median: at(50.0),
            lowest: at(0.0),
            highest: at(100.0),
        }
    }

    /// The median, and the range from lowest to highest, each figure written by `write`.
    fn columns(&self, write: impl Fn(f64) -> String) -> [String; 2] {
        let range = format!("{} to {}", write(self.lowest), write(self.highest));
        [write(self.median), range]
    }
}

/// A server child process, killed (by its pid) if it is still running when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(kind: &str, pinned: bool, lifetime: Duration, entries: u64) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|error| format!("own path: {error}"))?;
        let mut command = if pinned {
            let mut command = Command::new("taskset");
            command.args(["-c", "0"]).arg(exe);
            command
        } else {
            Command::new(exe)
        };
        let mut child = command
            .args(["--serve", kind])
            .args(["--lifetime-secs", &lifetime.as_secs().to_string()])
            .args(["--entries", &entries.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot start server {kind}: {error}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or("the server's stdout is not piped")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|error| format!("server {kind}: {error}"))?;
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|port| port.parse().ok())
            .ok_or_else(|| format!("server {kind} did not tell its port (said {line:?})"))?;
        Ok(Server { child, port })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(&mut self) {
        // Closing stdin asks the server to shut down; it exits at once, as it has no
        // connection left.
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// User plus system CPU time of process `pid`, from `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|at| fields.get(*at)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// The server's caches and allocator warm; not measured.
async fn warm_up(port: u16, settings: &Settings) -> Result<(), String> {
    let warmup = sign_pool(settings.warmup)?;
    let streams = connect(port, settings.connections).await?;
    drive(streams, warmup, settings.cap, None).await.map(drop)
}

/// One server's turn in a round. Its connections are made before the clock starts and the
/// server's CPU time is read: a turn measures requests, not connecting.
async fn measure(port: u16, pid: u32, settings: &Settings) -> Result<Outcome, String> {
    let pool = sign_pool(settings.requests)?;
    let streams = connect(port, settings.connections).await?;
    let cpu_before = cpu_time(pid);
    let started = Instant::now();
    let pace = settings.rate.map(|rate| (started, rate));
    let mut latencies = drive(streams, pool, settings.cap, pace).await?;
    let elapsed = started.elapsed();
    let server_cpu = cpu_time(pid).saturating_sub(cpu_before);
    latencies.sort_unstable();
    Ok(Outcome {
        completed: latencies.len() as u64,
        elapsed,
        latencies,
        server_cpu,
    })
}

/// `count` requests, each signed with a fresh nonce and the current time.
fn sign_pool(count: u64) -> Result<Arc<Vec<Vec<u8>>>, String> {
    let signer = Signer::new(KEY_ID, SECRET).map_err(|error| error.to_string())?;
    let pool = (0..count)
        .map(|_| {
            let authorization = signer
                .authorization(&Method::GET, PATH, b"")
                .map_err(|error| error.to_string())?;
            let authorization = authorization.to_str().map_err(|error| error.to_string())?;
            Ok(format!(
                "GET {PATH} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
                 authorization: {authorization}\r\n\r\n"
            )
            .into_bytes())
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Arc::new(pool))
}

/// `connections` keep-alive connections to the server.
async fn connect(port: u16, connections: u64) -> Result<Vec<TcpStream>, String> {
    let mut streams = Vec::new();
    for _ in 0..connections {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|error| format!("connect: {error}"))?;
        stream
            .set_nodelay(true)
            .map_err(|error| error.to_string())?;
        streams.push(stream);
    }
    Ok(streams)
}

/// Sends every request of `pool` over `streams`, one at a time on each, until done or `cap`
/// passes: as soon as a connection is free, or with `pace` (a start and a rate a second) each
/// when it is due, its latency counted from then. The latencies of the answered ones; an error
/// when any was not answered 200.
async fn drive(
    streams: Vec<TcpStream>,
    pool: Arc<Vec<Vec<u8>>>,
    cap: Duration,
    pace: Option<(Instant, f64)>,
) -> Result<Vec<u64>, String> {
    let tickets = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + cap;
    let mut tasks = tokio::task::JoinSet::new();
    for mut stream in streams {
        let pool = Arc::clone(&pool);
        let tickets = Arc::clone(&tickets);
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failed = (0, None);
            let mut buffer = Vec::with_capacity(4096);
            loop {
                let ticket = tickets.fetch_add(1, Ordering::Relaxed);
                let Some(request) = pool.get(ticket as usize) else {
                    break;
                };
                if Instant::now() >= deadline {
                    break;
                }
                let sent = match pace {
                    Some((start, rate)) => {
                        let due = start + Duration::from_secs_f64(ticket as f64 / rate);
                        wait_until(due).await;
                        due
                    }
                    None => Instant::now(),
                };
                stream
                    .write_all(request)
                    .await
                    .map_err(|error| format!("write: {error}"))?;
                let status = read_response(&mut stream, &mut buffer).await?;
                latencies.push(sent.elapsed().as_nanos() as u64);
                if status != 200 {
                    failed = (failed.0 + 1, failed.1.or(Some(status)));
                }
            }
            Ok::<_, String>((latencies, failed))
        });
    }
    let mut latencies = Vec::new();
    let mut failed = (0, None);
    while let Some(joined) = tasks.join_next().await {
        let (some, (count, first)) =
            joined.map_err(|error| format!("a connection task: {error}"))??;
        latencies.extend(some);
        failed = (failed.0 + count, failed.1.or(first));
    }
    match failed {
        (_, None) => Ok(latencies),
        (count, Some(status)) => Err(format!(
            "{count} requests were not answered 200 (one was answered {status})"
        )),
    }
}

/// Returns at `due`, or at once if it has passed. tokio's timers fire to the millisecond: the
/// last two milliseconds are waited by yielding, which keeps this core busy (it is the
/// generator's own) and the other connections served.
async fn wait_until(due: Instant) {
    if let Some(near) = due.checked_sub(Duration::from_millis(2)) {
        tokio::time::sleep_until(near.into()).await;
    }
    while Instant::now() < due {
        tokio::task::yield_now().await;
    }
}

/// Reads one HTTP/1.1 response with a `content-length` off `stream`; its status code.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<u16, String> {
    buffer.clear();
    loop {
        if let Some(head_end) = find(buffer, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buffer[..head_end])
                .map_err(|_| "a response head that is not UTF-8".to_owned())?;
            let status = head
                .get(9..12)
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| format!("a response without a status: {head:?}"))?;
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            let total = head_end + 4 + length;
            while buffer.len() < total {
                read_more(stream, buffer).await?;
            }
            return Ok(status);
        }
        read_more(stream, buffer).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let read = stream
        .read(&mut chunk)
        .await
        .map_err(|error| format!("read: {error}"))?;
    if read == 0 {
        return Err("the server closed the connection".to_owned());
    }
    buffer.extend_from_slice(&chunk[..read]);
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
