//! Load with attacks mixed in: 1,000,000 requests through the layer from 2 tasks, of which 10%
//! replay an earlier accepted request (an exact copy, or a boundary shift of its path and
//! nonce, protocol.md §2), 5% are tampered with after signing, and 5% are signed outside the
//! window. Zero false accepts, zero false rejects, and the nonce store stays within its bound.
//!
//! It runs in release mode, by `.ci/run`:
//!
//! ```sh
//! cargo test --release --test attacks -- --ignored --nocapture
//! ATTACK_REQUESTS=100000 cargo test --release --test attacks -- --ignored --nocapture
//! ```
//!
//! It stops by itself: after the requests are sent, or after 60 seconds, whichever is first
//! (then it says so, and checks what it sent).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use armor_psk::clock::{Clock, SystemClock};
use armor_psk::key_store::MemoryKeyStore;
use armor_psk::psk::{BodyForm, Credential};
use armor_psk::replay::MokaReplayStore;
use armor_psk::verify::VerifiedBody;
use armor_psk::{Rejection, Signer, VerifiedKey, VerifyPskLayer};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tower::{Layer as _, Service as _, ServiceExt};

const TASKS: u64 = 2;
const KEYS: u64 = 4;
const DEADLINE: Duration = Duration::from_secs(60);
/// Accepted requests kept for the replays to pick from (shared by both tasks).
const RECENT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Legit,
    Replay,
    BoundaryShift,
    Tampered,
    OutOfWindow,
}

/// A request as it went on the wire, to send again.
#[derive(Clone)]
struct Wire {
    method: Method,
    path: String,
    authorization: HeaderValue,
    body: Bytes,
}

impl Wire {
    fn request(&self) -> Request<Full<Bytes>> {
        Request::builder()
            .method(self.method.clone())
            .uri(&self.path)
            .header("authorization", self.authorization.clone())
            .header("content-type", "application/json")
            .body(Full::new(self.body.clone()))
            .unwrap()
    }
}

#[derive(Default)]
struct Tally {
    /// (kind, outcome code or "accepted") -> count
    outcomes: BTreeMap<(Kind, &'static str), u64>,
    false_accepts: u64,
    false_rejects: u64,
    /// Refused, but with another code than the attack calls for.
    wrong_code: u64,
    sent: u64,
}

fn signers() -> Vec<Signer> {
    (0..KEYS)
        .map(|key| Signer::new(format!("key-{key}"), format!("secret number {key}")).unwrap())
        .collect()
}

/// A legitimate request: a GET, or a POST with a small JSON body under the digest or raw form.
fn legit(rng: &mut StdRng, signers: &[Signer], nonce: &str, skew: i64) -> Wire {
    let signer = &signers[rng.gen_range(0..signers.len())];
    let account = rng.gen_range(1..10_000);
    let (method, path, body) = if rng.gen_bool(0.3) {
        let body = format!(r#"{{"account":{account},"note":"load test {nonce}"}}"#);
        (Method::POST, format!("/accounts/{account}/items"), body)
    } else {
        (Method::GET, format!("/accounts/{account}"), String::new())
    };
    let form = if rng.gen_bool(0.5) {
        BodyForm::Digest
    } else {
        BodyForm::Raw
    };
    let timestamp = SystemClock.now_unix() + skew;
    let authorization = signer
        .clone()
        .body_form(form)
        .authorization_with(&method, &path, body.as_bytes(), nonce, timestamp)
        .unwrap();
    Wire {
        method,
        path,
        authorization,
        body: Bytes::from(body),
    }
}

/// The same signed bytes, with the last path character moved to the front of the nonce
/// (`/accounts/23` + `f9c…` becomes `/accounts/2` + `3f9c…`).
fn boundary_shift(wire: &Wire) -> Option<Wire> {
    let credential = Credential::parse_bytes(wire.authorization.as_bytes()).ok()?;
    let last = wire.path.chars().last().filter(|c| *c != '/')?;
    let path = wire.path[..wire.path.len() - 1].to_owned();
    let nonce = format!("{last}{}", credential.nonce());
    let shifted = Credential::new(
        credential.key_id(),
        *credential.mac(),
        &nonce,
        credential.timestamp(),
    )
    .ok()?;
    Some(Wire {
        path,
        authorization: HeaderValue::try_from(shifted.to_string()).ok()?,
        ..wire.clone()
    })
}

/// A signed request changed afterwards in one of the signed parts.
fn tampered(rng: &mut StdRng, signers: &[Signer], nonce: &str) -> Wire {
    let skew = rng.gen_range(-200..=200);
    let mut wire = legit(rng, signers, nonce, skew);
    let credential = Credential::parse_bytes(wire.authorization.as_bytes()).unwrap();
    let reissue = |mac: [u8; 64], nonce: &str, timestamp: i64| {
        let credential = Credential::new(credential.key_id(), mac, nonce, timestamp).unwrap();
        HeaderValue::try_from(credential.to_string()).unwrap()
    };
    match rng.gen_range(0..6) {
        0 => wire.method = Method::PUT,
        1 => wire.path.push('0'),
        2 => wire.body = Bytes::from(format!("{}!", String::from_utf8_lossy(&wire.body))),
        3 => {
            let other = format!("{}x", credential.nonce());
            wire.authorization = reissue(*credential.mac(), &other, credential.timestamp());
        }
        4 => {
            let later = credential.timestamp() + 1;
            wire.authorization = reissue(*credential.mac(), credential.nonce(), later);
        }
        _ => {
            let mut mac = *credential.mac();
            let bit = rng.gen_range(0..512);
            mac[bit / 8] ^= 1 << (bit % 8);
            wire.authorization = reissue(mac, credential.nonce(), credential.timestamp());
        }
    }
    wire
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a load test: run in release mode by .ci/run"]
async fn a_million_requests_with_attacks_mixed_in() {
    let total: u64 = std::env::var("ATTACK_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let keys: MemoryKeyStore = (0..KEYS)
        .map(|key| (format!("key-{key}"), format!("secret number {key}")))
        .collect();
    // Room for every accepted request of the run (two entries each), and no more: the bound
    // the store must hold.
    let capacity = total * 2;
    let store = MokaReplayStore::builder().capacity(capacity).build();
    let service = VerifyPskLayer::new(keys)
        .replay_store(store.clone())
        .layer(tower::service_fn(
            |request: Request<VerifiedBody>| async move {
                let key = request.extensions().get::<VerifiedKey>().cloned();
                assert!(
                    key.is_some(),
                    "the handler got a request without a VerifiedKey"
                );
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            },
        ));
    let recent: Arc<Mutex<Vec<Wire>>> = Arc::default();
    let started = Instant::now();

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let mut service = service.clone();
            let recent = Arc::clone(&recent);
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(0x5EED + task);
                let signers = signers();
                let mut tally = Tally::default();
                for i in 0..total / TASKS {
                    if i % 1024 == 0 && started.elapsed() > DEADLINE {
                        break;
                    }
                    let nonce = format!("t{task}-{i}");
                    let roll = rng.gen_range(0..100);
                    let earlier = (roll < 10)
                        .then(|| {
                            let recent = recent.lock().unwrap();
                            (!recent.is_empty())
                                .then(|| recent[rng.gen_range(0..recent.len())].clone())
                        })
                        .flatten();
                    let (kind, wire) = match (roll, earlier) {
                        (0..=6, Some(earlier)) => (Kind::Replay, earlier),
                        (7..=9, Some(earlier)) => match boundary_shift(&earlier) {
                            Some(shifted) => (Kind::BoundaryShift, shifted),
                            None => (Kind::Replay, earlier),
                        },
                        (10..=14, _) => (Kind::Tampered, tampered(&mut rng, &signers, &nonce)),
                        (15..=19, _) => {
                            let skew = rng.gen_range(320..100_000);
                            let skew = if rng.gen_bool(0.5) { skew } else { -skew };
                            (Kind::OutOfWindow, legit(&mut rng, &signers, &nonce, skew))
                        }
                        _ => {
                            let skew = rng.gen_range(-280..=280);
                            (Kind::Legit, legit(&mut rng, &signers, &nonce, skew))
                        }
                    };

                    let response = ServiceExt::<Request<Full<Bytes>>>::ready(&mut service)
                        .await
                        .unwrap()
                        .call(wire.request())
                        .await
                        .unwrap();
                    let outcome = match response.extensions().get::<Rejection>() {
                        None if response.status() == StatusCode::OK => "accepted",
                        None => panic!("a {} without a Rejection", response.status()),
                        Some(rejection) => rejection.code(),
                    };
                    let expected: &[&str] = match kind {
                        Kind::Legit => &["accepted"],
                        // An old copy may have left the window meanwhile.
                        Kind::Replay | Kind::BoundaryShift => {
                            &["replayed_nonce", "timestamp_out_of_window"]
                        }
                        Kind::Tampered => &["bad_signature"],
                        Kind::OutOfWindow => &["timestamp_out_of_window"],
                    };
                    if !expected.contains(&outcome) {
                        if outcome == "accepted" {
                            tally.false_accepts += 1;
                        } else if kind == Kind::Legit {
                            tally.false_rejects += 1;
                        } else {
                            tally.wrong_code += 1;
                        }
                        if tally.false_accepts + tally.false_rejects + tally.wrong_code <= 5 {
                            eprintln!("unexpected: a {kind:?} request got {outcome}");
                        }
                    }
                    *tally.outcomes.entry((kind, outcome)).or_default() += 1;
                    tally.sent += 1;
                    if outcome == "accepted" && kind == Kind::Legit {
                        let mut recent = recent.lock().unwrap();
                        if recent.len() < RECENT {
                            recent.push(wire);
                        } else {
                            let slot = rng.gen_range(0..RECENT);
                            recent[slot] = wire;
                        }
                    }
                }
                tally
            })
        })
        .collect();

    let mut tally = Tally::default();
    for task in tasks {
        let part = task.await.unwrap();
        tally.sent += part.sent;
        tally.false_accepts += part.false_accepts;
        tally.false_rejects += part.false_rejects;
        tally.wrong_code += part.wrong_code;
        for (key, count) in part.outcomes {
            *tally.outcomes.entry(key).or_default() += count;
        }
    }
    let elapsed = started.elapsed();

    let accepted: u64 = tally
        .outcomes
        .iter()
        .filter(|((_, outcome), _)| *outcome == "accepted")
        .map(|(_, count)| count)
        .sum();
    println!(
        "attack load: {} requests from {TASKS} tasks in {:.1} s ({:.0} requests/s)",
        tally.sent,
        elapsed.as_secs_f64(),
        tally.sent as f64 / elapsed.as_secs_f64()
    );
    println!("{:<15} {:<25} {:>9}", "kind", "outcome", "count");
    for ((kind, outcome), count) in &tally.outcomes {
        println!("{:<15} {:<25} {:>9}", format!("{kind:?}"), outcome, count);
    }
    let live = store.live_entries();
    println!(
        "accepted {accepted}; false accepts {}; false rejects {}; replay store {live} live \
         entries of {} (capacity)",
        tally.false_accepts,
        tally.false_rejects,
        store.capacity()
    );
    if tally.sent < total {
        println!(
            "stopped at the {}-second deadline after {} of {total} requests",
            DEADLINE.as_secs(),
            tally.sent
        );
    }

    assert_eq!(tally.false_accepts, 0, "false accepts");
    assert_eq!(tally.false_rejects, 0, "false rejects");
    assert_eq!(
        tally.wrong_code, 0,
        "attacks refused with another code than expected"
    );
    let count = |kind| -> u64 {
        tally
            .outcomes
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, count)| count)
            .sum()
    };
    // Every kind of attack was tried, in about its share.
    let share = |kind| count(kind) as f64 / tally.sent as f64;
    assert!((0.75..0.85).contains(&share(Kind::Legit)), "legit share");
    assert!(
        (0.08..0.12).contains(&(share(Kind::Replay) + share(Kind::BoundaryShift))),
        "replay share"
    );
    assert!(count(Kind::BoundaryShift) > 0);
    assert!(
        (0.04..0.06).contains(&share(Kind::Tampered)),
        "tampered share"
    );
    assert!(
        (0.04..0.06).contains(&share(Kind::OutOfWindow)),
        "out-of-window share"
    );
    // The store holds two entries per accepted request at most (fewer once some expire), and
    // never more than its capacity.
    assert!(
        live <= 2 * accepted,
        "{live} live entries for {accepted} accepted"
    );
    assert!(live <= store.capacity());
}
