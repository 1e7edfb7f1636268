//! How long single replay records take once a store is in its steady state, where entries
//! expire as fast as new ones come: `cargo run --release --example replay_latency`.
//!
//! Records fresh requests (both rules, so two entries each) into one store at a fixed rate, each
//! timed alone, for a fixed time; a request's entries live `--lifetime` seconds. After the first
//! lifetime (plus two seconds) the store is as full as it gets and expires entries as fast as it
//! takes them: the records from then on are summed up (percentiles, the longest, how many took
//! over 20 ms), and every record over 20 ms is printed as it happens. The run ends by itself.
//!
//! Options: `--store moka|compact` (default `moka`; each at its default capacity),
//! `--rate N` (requests a second, default 10000), `--lifetime S` (seconds, default 20; a server
//! with the default window keeps an entry about 300), `--secs S` (default 60).
//!
//! A store's steady state is not what a short load run sees: there, nothing has expired yet.

use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use armor_psk::psk::MAC_LEN;
use armor_psk::replay::{CompactReplayStore, MokaReplayStore, Recorded, ReplayRecord, ReplayStore};

/// A record that took longer than this is printed, and counted.
const SLOW: Duration = Duration::from_millis(20);

struct Options {
    store: String,
    rate: u64,
    lifetime_secs: i64,
    secs: u64,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        store: "moka".into(),
        rate: 10_000,
        lifetime_secs: 20,
        secs: 60,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--store" if value == "moka" || value == "compact" => options.store = value.clone(),
            "--rate" => options.rate = number()?.max(1),
            "--lifetime" => options.lifetime_secs = i64::try_from(number()?.max(1)).unwrap_or(1),
            "--secs" => options.secs = number()?,
            _ => return Err(format!("unknown option or value: {flag} {value}")),
        }
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
    let last = sorted.len().saturating_sub(1);
    sorted
        .get((last as f64 * percent / 100.0).round() as usize)
        .copied()
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("replay_latency: {error}");
            return ExitCode::FAILURE;
        }
    };
    let store: Box<dyn ReplayStore> = match options.store.as_str() {
        "compact" => Box::new(CompactReplayStore::default()),
        _ => Box::new(MokaReplayStore::default()),
    };
    let steady_after = Duration::from_secs(options.lifetime_secs.unsigned_abs() + 2);
    let started = Instant::now();
    let mut recorded: u64 = 0;
    let mut steady = Vec::new();
    let mut slow = 0u64;
    while started.elapsed() < Duration::from_secs(options.secs) {
        let due = (started.elapsed().as_secs_f64() * options.rate as f64) as u64;
        if recorded >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let now = unix_now();
        while recorded < due {
            let mac = mac_of(recorded);
            let nonce = format!("nonce-{recorded}");
            // A request stamped now: its entries are kept until `lifetime` seconds from now.
            let record =
                ReplayRecord::new("key", &nonce, &mac, now + options.lifetime_secs - 1, now);
            let timer = Instant::now();
            let outcome = store.record_now(&record);
            let took = timer.elapsed();
            if !matches!(outcome, Some(Ok(Recorded::Fresh))) {
                eprintln!("replay_latency: request {recorded} was not recorded as fresh");
                return ExitCode::FAILURE;
            }
            recorded += 1;
            if took > SLOW {
                slow += 1;
                println!(
                    "  at {:6.1} s a record took {took:?}",
                    started.elapsed().as_secs_f64()
                );
            }
            if started.elapsed() >= steady_after {
                steady.push(took);
            }
        }
    }
    steady.sort_unstable();
    println!(
        "{}: {} requests/s, entries living {} s, {} s: {} records in the steady state",
        options.store,
        options.rate,
        options.lifetime_secs,
        options.secs,
        steady.len()
    );
    println!(
        "  p50 {:?}  p99 {:?}  p99.9 {:?}  p99.99 {:?}  longest {:?}  over {SLOW:?}: {slow}",
        percentile(&steady, 50.0),
        percentile(&steady, 99.0),
        percentile(&steady, 99.9),
        percentile(&steady, 99.99),
        steady.last().copied().unwrap_or_default(),
    );
    ExitCode::SUCCESS
}
