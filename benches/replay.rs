//! Benchmarks of the replay stores: `cargo bench --bench replay`.
//!
//! - `replay_insert/{threads}/{store}`: fresh requests (both rules, so two entries each)
//!   recorded per second into [`MokaReplayStore`] and [`CompactReplayStore`], side by side, from
//!   one thread and from two;
//! - memory: before criterion starts, each store is filled with 1,000,000 fresh requests in a
//!   child process of its own (so that neither allocator reuse nor another store's heap skews
//!   it), and the resident memory before and after is printed, with the bytes per request.
//!
//! Each store is sized so that nothing is refused during a run; every record is checked to be
//! `Fresh` (a bench of refusals would measure nothing).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use armor_psk::replay::{CompactReplayStore, MokaReplayStore, Recorded, ReplayRecord, ReplayStore};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};

const NOW: i64 = 1_700_000_000;
/// Requests of the memory measurement.
const MEMORY_REQUESTS: u64 = 1_000_000;
/// The environment variable that makes this binary a memory-measuring child.
const CHILD: &str = "ARMOR_PSK_REPLAY_MEMORY_CHILD";

#[derive(Clone, Copy)]
enum Kind {
    Moka,
    Compact,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Moka, Kind::Compact];

    fn name(self) -> &'static str {
        match self {
            Kind::Moka => "moka",
            Kind::Compact => "compact",
        }
    }

    fn store(self, entries: u64) -> Arc<dyn ReplayStore> {
        match self {
            Kind::Moka => Arc::new(MokaReplayStore::builder().capacity(entries).build()),
            Kind::Compact => Arc::new(CompactReplayStore::builder().capacity(entries).build()),
        }
    }
}

/// A fresh request's MAC and nonce: distinct for every `(thread, i)`, spread like real ones.
struct Request {
    mac: [u8; 64],
    nonce: String,
}

impl Request {
    fn new(thread: u64, i: u64) -> Self {
        let mut state = thread << 48 ^ i;
        let mut mac = [0u8; 64];
        for chunk in mac.chunks_exact_mut(8) {
            chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
        }
        let id = u128::from(thread) << 64 | u128::from(i);
        let nonce = format!("{id:032x}");
        Request { mac, nonce }
    }

    fn record(&self, store: &dyn ReplayStore) -> Recorded {
        let record = ReplayRecord::new(
            "20a37099-4a0b-432f-bf46-5fa690a0405c",
            &self.nonce,
            &self.mac,
            NOW + 300,
            NOW,
        );
        // As the verifier records into a store that answers at once: `record`, the awaited
        // form, would add a boxed future a call.
        store
            .record_now(&record)
            .expect("an in-memory store answers at once")
            .expect("room for every request")
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Records `iters` fresh requests split over `threads` threads; the wall time of the whole.
/// Each thread makes its requests before the clock starts: the time is the store's alone.
fn record_many(store: &Arc<dyn ReplayStore>, threads: u64, iters: u64, run: u64) -> Duration {
    let start = Arc::new(Barrier::new(threads as usize + 1));
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let store = Arc::clone(store);
            let start = Arc::clone(&start);
            let count = iters / threads + u64::from(thread < iters % threads);
            std::thread::spawn(move || {
                let tag = run << 8 | thread;
                let requests: Vec<Request> = (0..count).map(|i| Request::new(tag, i)).collect();
                start.wait();
                for request in &requests {
                    let recorded = request.record(&*store);
                    assert_eq!(black_box(recorded), Recorded::Fresh);
                }
                // Freed once the clock has stopped.
                requests
            })
        })
        .collect();
    start.wait();
    let began = Instant::now();
    let requests: Vec<Vec<Request>> = workers
        .into_iter()
        .map(|worker| worker.join().expect("a worker thread"))
        .collect();
    let took = began.elapsed();
    drop(requests);
    took
}

fn replay_insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay_insert");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .throughput(Throughput::Elements(1));
    for threads in [1u64, 2] {
        for kind in Kind::ALL {
            let mut run = 0;
            group.bench_function(BenchmarkId::new(kind.name(), threads), |b| {
                b.iter_custom(|iters| {
                    // A fresh store per sample, so every sample starts from the same state and
                    // a long run does not hold millions of entries.
                    let store = kind.store(iters.saturating_mul(2).max(1_000));
                    run += 1;
                    let took = record_many(&store, threads, iters, run);
                    drop(store);
                    took
                })
            });
        }
    }
    group.finish();
}

/// Resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages in statm");
    // 4 KiB pages: the only size this Linux x86_64 bench runs on.
    pages * 4096
}

/// In a child: fill one store with a million requests and print what it cost.
fn measure_memory(kind: Kind) {
    let before = resident_bytes();
    let store = kind.store(MEMORY_REQUESTS * 2);
    for i in 0..MEMORY_REQUESTS {
        assert_eq!(Request::new(0, i).record(&*store), Recorded::Fresh);
    }
    let after = resident_bytes();
    let per_request = (after - before) as f64 / MEMORY_REQUESTS as f64;
    println!(
        "replay_memory/{:<8} {MEMORY_REQUESTS} requests (both rules, capacity {} entries): \
         resident {:.1} MB -> {:.1} MB, {per_request:.1} bytes per request",
        kind.name(),
        MEMORY_REQUESTS * 2,
        before as f64 / 1e6,
        after as f64 / 1e6,
    );
    black_box(store);
}

fn memory_in_children() {
    let exe = std::env::current_exe().expect("this bench's path");
    for kind in Kind::ALL {
        let status = std::process::Command::new(&exe)
            .env(CHILD, kind.name())
            .status()
            .expect("the memory child ran");
        assert!(status.success(), "the {} memory child failed", kind.name());
    }
}

criterion_group!(benches, replay_insert);

fn main() {
    if let Ok(name) = std::env::var(CHILD) {
        let kind = Kind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .expect("a known store");
        measure_memory(kind);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` runs the binary without it, and
    // then the million-request fills are skipped, as they are under a profiler
    // (`--profile-time`).
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|arg| arg == "--bench") && !args.iter().any(|arg| arg == "--profile-time") {
        memory_in_children();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
