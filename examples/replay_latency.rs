//! How long single replay records take once a store is in its steady state, where entries
//! expire as fast as new ones come: `cargo run --release --example replay_latency`.
//!
//! Records fresh requests (both rules, so two entries each) into one store at a fixed rate, each
//! timed alone, for a fixed time; a request's entries live `--lifetime` seconds. After the first
//! lifetime (plus two seconds) the store is as full as it gets and expires entries as fast as it
//! takes them: the records from then on are summed up (percentiles, the longest, how many took
//! over 20 ms), and every record over 20 ms is printed as it happens, as is every time the moka
//! store counts its entries again (when its running count reaches the capacity). The run ends
//! by itself.
//!
//! The times are the records' own: one thread records, so a request that would have queued
//! behind a slow record in a server is not counted as waiting.
//!
//! Options: `--store moka|compact` (default `moka`; each at its default capacity),
//! `--rate N` (requests a second, default 10000, at most 1000000), `--lifetime S` (seconds,
//! default 20, at most 86400; a server with the default window keeps an entry about 300),
//! `--secs S` (default 60; more than the lifetime plus two).
//!
//! A store's steady state is not what a short load run sees: there, nothing has expired yet.

#[path = "support/percentile.rs"]
mod percentile;

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use armor_psk::psk::MAC_LEN;
use armor_psk::replay::{CompactReplayStore, MokaReplayStore, Recorded, ReplayRecord, ReplayStore};

/// A record that took longer than this is printed, and counted: a hundred times a moka
/// record's p99, and longer than most clients wait without noticing.
const SLOW: Duration = Duration::from_millis(20);
const MAX_RATE: u64 = 1_000_000;
const MAX_LIFETIME_SECS: u64 = 86_400;
const USAGE: &str =
    "usage: replay_latency [--store moka|compact] [--rate N] [--lifetime S] [--secs S]";

#[derive(Clone, Copy, PartialEq)]
enum StoreKind {
    Moka,
    Compact,
}

struct Options {
    store: StoreKind,
    rate: u64,
    lifetime_secs: u64,
    secs: u64,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        store: StoreKind::Moka,
        rate: 10_000,
        lifetime_secs: 20,
        secs: 60,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = |max: u64| match value.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("{flag}: a number from 1 to {max}")),
        };
        match (flag.as_str(), value.as_str()) {
            ("--store", "moka") => options.store = StoreKind::Moka,
            ("--store", "compact") => options.store = StoreKind::Compact,
            ("--rate", _) => options.rate = number(MAX_RATE)?,
            ("--lifetime", _) => options.lifetime_secs = number(MAX_LIFETIME_SECS)?,
            ("--secs", _) => options.secs = number(u64::MAX)?,
            _ => return Err(format!("unknown option or value: {flag} {value}")),
        }
    }
    if options.secs <= options.lifetime_secs + 2 {
        return Err(
            "--secs must be more than --lifetime plus two: the steady state comes after".into(),
        );
    }
    Ok(options)
}

fn unix_now() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

/// The MAC of the `n`th request: distinct for every `n`, spread over its first 16 bytes (the
/// part rule 1 keys on).
fn mac_of(n: u64) -> [u8; MAC_LEN] {
    let mut mac = [0u8; MAC_LEN];
    mac[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    mac[8..16].copy_from_slice(
        &(n ^ 0x5DEE_CE66)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .to_le_bytes(),
    );
    mac
}

fn percentile(sorted: &[Duration], percent: f64) -> Duration {
    percentile::percentile(sorted, percent).unwrap_or_default()
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("replay_latency: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The moka store kept apart too, to watch its running count.
    let moka = (options.store == StoreKind::Moka).then(MokaReplayStore::default);
    let store: Box<dyn ReplayStore> = match &moka {
        Some(moka) => Box::new(moka.clone()),
        None => Box::new(CompactReplayStore::default()),
    };
    // At most 86,400 (checked above): no overflow anywhere below.
    let lifetime = options.lifetime_secs as i64;
    let steady_after = Duration::from_secs(options.lifetime_secs + 2);
    let started = Instant::now();
    let mut recorded: u64 = 0;
    let mut steady = Vec::new();
    let (mut slow_before, mut slow) = (0u64, 0u64);
    let mut moka_count = 0;
    while started.elapsed() < Duration::from_secs(options.secs) {
        let due = (started.elapsed().as_secs_f64() * options.rate as f64) as u64;
        if recorded >= due {
            // Ahead of the rate: wait a little rather than spin, leaving the core to the
            // store's own work as a server between requests would.
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        // Read once per batch: after a slow record a batch's lifetimes may end up to a second
        // early, which changes nothing measured.
        let now = unix_now();
        while recorded < due {
            let mac = mac_of(recorded);
            let nonce = format!("nonce-{recorded}");
            // `expires_at` is the last second remembered: the stores keep it through that second.
            let record = ReplayRecord::new("key", &nonce, &mac, now + lifetime - 1, now);
            let timer = Instant::now();
            let outcome = store.record_now(&record);
            let took = timer.elapsed();
            if !matches!(outcome, Some(Ok(Recorded::Fresh))) {
                eprintln!("replay_latency: request {recorded} was recorded as {outcome:?}");
                return ExitCode::FAILURE;
            }
            recorded += 1;
            let at = started.elapsed();
            let in_steady_state = at >= steady_after;
            if took > SLOW {
                *(if in_steady_state {
                    &mut slow
                } else {
                    &mut slow_before
                }) += 1;
                println!("  at {:6.1} s a record took {took:?}", at.as_secs_f64());
            }
            if in_steady_state {
                steady.push(took);
            }
            if let Some(moka) = &moka {
                let count = moka.live_entries();
                if count < moka_count {
                    println!(
                        "  at {:6.1} s the moka store counted its entries again: {moka_count} -> {count}",
                        at.as_secs_f64()
                    );
                }
                moka_count = count;
            }
        }
    }
    steady.sort_unstable();
    let store_name = match options.store {
        StoreKind::Moka => "moka",
        StoreKind::Compact => "compact",
    };
    println!(
        "{store_name}: {} requests/s, entries living {} s, {} s: {} records in the steady state",
        options.rate,
        options.lifetime_secs,
        options.secs,
        steady.len()
    );
    println!(
        "  p50 {:?}  p99 {:?}  p99.9 {:?}  p99.99 {:?}  longest {:?}  over {SLOW:?}: {slow} (and {slow_before} before)",
        percentile(&steady, 50.0),
        percentile(&steady, 99.0),
        percentile(&steady, 99.9),
        percentile(&steady, 99.99),
        steady.last().copied().unwrap_or_default(),
    );
    ExitCode::SUCCESS
}
