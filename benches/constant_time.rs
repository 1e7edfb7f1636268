//! A dudect-style test of the MAC comparison: `cargo bench --bench constant_time`.
//!
//! Each bench times one operation on inputs of two classes, interleaved at random, and runs
//! Welch's t-test on the two distributions of run times (cropped at several percentiles; the
//! largest |t| is reported). |t| above 5 says the time depends on the class: a leak. Below 5
//! says none was found with this many samples (not a proof).
//!
//! - `mac_equal_vs_first_byte` and `mac_equal_vs_last_byte`: the comparison the verifier makes
//!   (the keyed HMAC-SHA512 state finalised and compared by `psk::mac_matches`, as in
//!   `src/psk/signing.rs`), with
//!   the received tag equal to the right one against one differing in its first or last byte;
//! - `layer_first_vs_last_byte`: a whole request through `VerifyPsk` whose MAC differs from
//!   the right one in a random bit of the first byte against one of the last byte (both
//!   refused `bad_signature`): what a forger measuring response times could learn about how
//!   much of a guess was right. Each sample has a header of its own: reusing one value per
//!   class made the classes differ in where their bytes sat in memory, and that alone gave
//!   |t| ≈ 10;
//! - `control_naive_eq_first_vs_last_byte`: `==` on the same tags, which stops at the first
//!   difference. It is not constant-time, and shows the test can tell.
//!
//! Options: `--filter NAME` runs the benches whose name contains NAME; `--continuous NAME` runs
//! the first match until interrupted, printing t as the samples grow; `--out FILE` writes the
//! raw times as CSV; `--samples N` sets the samples per bench (default 1,000,000).

use std::cell::RefCell;
use std::convert::Infallible;
use std::hint::black_box;

use armor_psk::clock::ManualClock;
use armor_psk::key_store::MemoryKeyStore;
use armor_psk::psk::{mac_matches, BodyForm, Credential, HmacSha512, SigningString, MAC_LEN};
use armor_psk::verify::VerifiedBody;
use armor_psk::VerifyPskLayer;
use bytes::Bytes;
use dudect_bencher::ctbench::{run_benches_console, BenchMetadata, BenchName, BenchOpts};
use dudect_bencher::rand::RngExt as _;
use dudect_bencher::{BenchRng, Class, CtRunner};
use hmac::Mac as _;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use tower::{Layer as _, Service as _};

const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
const SECRET: &str = "Qm9ndXMgZGVtbyBzZWNyZXQgZm9yIHRoZSBiZW5jaGVz";
const NOW: i64 = 1_528_140_529;
const PARTS: SigningString<'static> = SigningString {
    key_id: KEY_ID,
    method: "GET",
    path: "/accounts/2",
    nonce: "8jbj872s2h",
    timestamp: NOW,
};

static SAMPLES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn samples() -> usize {
    *SAMPLES.get().unwrap_or(&1_000_000)
}

fn keyed() -> HmacSha512 {
    HmacSha512::new_from_slice(SECRET.as_bytes()).expect("HMAC takes any key")
}

/// The right tag, and a copy with one bit of byte `at` flipped.
fn tags(at: usize) -> ([u8; MAC_LEN], [u8; MAC_LEN]) {
    let right = PARTS.sign(&keyed(), BodyForm::Empty, &[b""]);
    let mut wrong = right;
    wrong[at] ^= 0x01;
    (right, wrong)
}

/// The verifier's comparison: the keyed state over the signing string, then `mac_matches`.
fn verify(prefix: &HmacSha512, tag: &[u8; MAC_LEN]) -> bool {
    mac_matches(prefix.clone(), black_box(tag))
}

fn classes(rng: &mut BenchRng) -> Vec<Class> {
    (0..samples())
        .map(|_| {
            if rng.random::<bool>() {
                Class::Left
            } else {
                Class::Right
            }
        })
        .collect()
}

fn equal_vs(at: usize, runner: &mut CtRunner, rng: &mut BenchRng) {
    let prefix = PARTS.keyed_prefix(&keyed());
    let (right, wrong) = tags(at);
    assert!(verify(&prefix, &right) && !verify(&prefix, &wrong));
    for class in classes(rng) {
        let tag = match class {
            Class::Left => right,
            Class::Right => wrong,
        };
        runner.run_one(class, || verify(&prefix, &tag));
    }
}

fn mac_equal_vs_first_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    equal_vs(0, runner, rng);
}

fn mac_equal_vs_last_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    equal_vs(MAC_LEN - 1, runner, rng);
}

fn control_naive_eq_first_vs_last_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    let (right, first) = tags(0);
    let (_, last) = tags(MAC_LEN - 1);
    for class in classes(rng) {
        let tag = match class {
            Class::Left => first,
            Class::Right => last,
        };
        runner.run_one(class, || black_box(&right)[..] == black_box(&tag)[..]);
    }
}

fn layer_first_vs_last_byte(runner: &mut CtRunner, rng: &mut BenchRng) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let keys = MemoryKeyStore::builder().key(KEY_ID, SECRET).build();
    let service = VerifyPskLayer::new(keys)
        .clock(ManualClock::new(NOW))
        .layer(tower::service_fn(|_: Request<VerifiedBody>| async {
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }));
    let service = RefCell::new(service);
    let header = |tag: [u8; MAC_LEN]| {
        let credential = Credential::new(KEY_ID, tag, PARTS.nonce, NOW).expect("a credential");
        HeaderValue::try_from(credential.to_string()).expect("a header value")
    };
    let right = tags(0).0;
    for class in classes(rng) {
        // A fresh header per sample (so that neither class always reads the same memory),
        // with a random bit of the first or the last byte flipped.
        let mut tag = right;
        let at = match class {
            Class::Left => 0,
            Class::Right => MAC_LEN - 1,
        };
        tag[at] ^= 1 << rng.random_range(0..8u32);
        let value = header(tag);
        // Built outside the timed part; `run_one` takes a `Fn`, so the request is taken out.
        let request = RefCell::new(Some(
            Request::get(PARTS.path)
                .header("authorization", value)
                .body(Full::<Bytes>::default())
                .expect("a request"),
        ));
        runner.run_one(class, || {
            let request = request.borrow_mut().take().expect("timed once");
            let future = service.borrow_mut().call(request);
            let response = runtime.block_on(future).expect("infallible");
            debug_assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
            response
        });
    }
}

fn main() -> std::io::Result<()> {
    let mut opts = BenchOpts::default();
    // `cargo bench` passes `--bench`; everything else is ours.
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--filter" => opts.filter = args.next(),
            "--continuous" => {
                opts.continuous = true;
                opts.filter = args.next();
            }
            "--out" => opts.file_out = args.next().map(Into::into),
            "--samples" => {
                let samples = args.next().and_then(|n| n.parse().ok());
                SAMPLES.set(samples.expect("--samples takes a number")).ok();
            }
            other if !other.starts_with('-') && opts.filter.is_none() => {
                opts.filter = Some(other.to_owned());
            }
            other => panic!("unknown option {other:?}"),
        }
    }
    let benches = [
        (
            "mac_equal_vs_first_byte",
            mac_equal_vs_first_byte as fn(&mut CtRunner, &mut BenchRng),
        ),
        ("mac_equal_vs_last_byte", mac_equal_vs_last_byte),
        ("layer_first_vs_last_byte", layer_first_vs_last_byte),
        (
            "control_naive_eq_first_vs_last_byte",
            control_naive_eq_first_vs_last_byte,
        ),
    ];
    let benches = benches
        .into_iter()
        .map(|(name, benchfn)| BenchMetadata {
            name: BenchName(name),
            seed: None,
            benchfn,
        })
        .collect();
    run_benches_console(opts, benches)
}
