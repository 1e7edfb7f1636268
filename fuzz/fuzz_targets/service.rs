//! The whole verifier (`VerifyPsk`) on a sequence of arbitrary requests sharing one layer:
//! arbitrary methods, paths, headers, bodies (that may fail midway, or declare a length they do
//! not have) and `Authorization` values, where a structured variant carries a valid signature
//! (then perhaps tampered with, replayed, or sent out of the window) so that the deep paths are
//! reached.
//!
//! The oracle is an independent verifier written here from protocol.md: a request is accepted
//! exactly when it carries one well-formed credential of a known key, inside the window, with a
//! body within the limit that reads to its end, whose MAC matches one of the accepted body forms
//! over what was actually sent, and whose MAC (and, under the nonce rule, key and nonce) no
//! earlier accepted request had. Zero false accepts, zero false rejects; and every refusal is a
//! response whose status agrees with its `Rejection`.
#![no_main]

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};

use arbitrary::Arbitrary;
use armor_psk::clock::ManualClock;
use armor_psk::key_store::MemoryKeyStore;
use armor_psk::psk::{BodyForm, BodyForms, Credential, HmacSha512, SigningString, MAC_LEN};
use armor_psk::replay::MokaReplayStore;
use armor_psk::verify::VerifiedBody;
use armor_psk::{Rejection, VerifiedKey, VerifyPskLayer};
use bytes::Bytes;
use hmac::Mac as _;
use http::header::{AUTHORIZATION, CONTENT_LENGTH};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use libfuzzer_sys::fuzz_target;
use tower::{Layer as _, Service as _};

const NOW: i64 = 1_700_000_000;
const KEYS: [(&str, &str); 2] = [
    ("20a37099-4a0b-432f-bf46-5fa690a0405c", "first secret"),
    ("k", "a second secret, longer than the 128-byte block of SHA-512 so that HMAC hashes it first ....................................................."),
];
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
const HEADER_NAMES: [&str; 5] = [
    "content-type",
    "x-account-context",
    "authorization",
    "date",
    "transfer-encoding",
];
const MAX_REQUESTS: usize = 16;

#[derive(Arbitrary, Debug)]
struct Input {
    unique_nonce: bool,
    unsigned_body: bool,
    forms: u8,
    body_limit: u8,
    window: u16,
    requests: Vec<Req>,
}

#[derive(Arbitrary, Debug)]
struct Req {
    method: MethodChoice,
    path: String,
    query: Option<String>,
    headers: Vec<(u8, Vec<u8>)>,
    auth: Auth,
    chunks: Vec<Vec<u8>>,
    fails: bool,
    content_length: Option<u16>,
}

#[derive(Arbitrary, Debug)]
enum MethodChoice {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Auth {
    None,
    Raw(Vec<u8>),
    Signed {
        key: u8,
        form: u8,
        nonce: String,
        skew: i16,
        tamper: Tamper,
    },
    /// The same method, URI, header and body as an earlier request of this input.
    Replay(u8),
}

#[derive(Arbitrary, Debug)]
enum Tamper {
    None,
    Method(u8),
    Path(String),
    Body(Vec<u8>),
    Nonce(String),
    Timestamp(i16),
    MacBit(u16),
}

/// A request as it goes on the wire, kept for replays.
#[derive(Clone)]
struct Sent {
    method: Method,
    uri: Uri,
    authorization: Option<HeaderValue>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

fn form_of(choice: u8) -> BodyForm {
    BodyForm::ALL[usize::from(choice) % BodyForm::ALL.len()]
}

fn method_of(choice: &MethodChoice) -> Method {
    match choice {
        MethodChoice::Known(i) => {
            Method::from_bytes(METHODS[usize::from(*i) % METHODS.len()].as_bytes()).unwrap()
        }
        MethodChoice::Other(name) => Method::from_bytes(name.as_bytes()).unwrap_or(Method::GET),
    }
}

fn uri_of(path: &str, query: Option<&str>) -> Uri {
    let text = match query {
        Some(query) => format!("/{path}?{query}"),
        None => format!("/{path}"),
    };
    text.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

fn mac_of(key: usize, parts: &SigningString<'_>, form: BodyForm, body: &[u8]) -> [u8; MAC_LEN] {
    let keyed = HmacSha512::new_from_slice(KEYS[key].1.as_bytes()).unwrap();
    parts.sign(&keyed, form, &[body])
}

/// The independent verdict: the key, nonce and MAC of a request that must be accepted unless
/// an earlier accepted request took its MAC or nonce; `None` for one that must be refused.
fn must_verify(
    input: &Input,
    forms: BodyForms,
    method: &Method,
    uri: &Uri,
    authorizations: &[HeaderValue],
    body: &[u8],
    fails: bool,
    content_length: Option<u16>,
) -> Option<(String, String, [u8; MAC_LEN])> {
    let [value] = authorizations else { return None };
    let credential = Credential::parse_bytes(value.as_bytes()).ok()?;
    let key = KEYS.iter().position(|(id, _)| *id == credential.key_id())?;
    if NOW.abs_diff(credential.timestamp()) > u64::from(input.window) {
        return None;
    }
    let limit = usize::from(input.body_limit);
    if fails || body.len() > limit || content_length.is_some_and(|l| usize::from(l) > limit) {
        return None;
    }
    let forms = if !body.is_empty() && !input.unsigned_body {
        forms.without(BodyForm::Empty)
    } else {
        forms
    };
    let parts = SigningString {
        key_id: credential.key_id(),
        method: method.as_str(),
        path: uri.path(),
        nonce: credential.nonce(),
        timestamp: credential.timestamp(),
    };
    forms
        .iter()
        .any(|form| mac_of(key, &parts, form, body) == *credential.mac())
        .then(|| {
            (
                credential.key_id().to_owned(),
                credential.nonce().to_owned(),
                *credential.mac(),
            )
        })
}

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn body_of(chunks: &[Vec<u8>], fails: bool) -> Body {
    let mut frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = chunks
        .iter()
        .map(|chunk| Ok(http_body::Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    if fails {
        frames.push(Err(std::io::Error::other("the client went away")));
    }
    StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
}

fuzz_target!(|input: Input| {
    let forms = BodyForms::from_iter(
        BodyForm::ALL
            .into_iter()
            .enumerate()
            .filter(|(i, _)| input.forms & (1 << i) != 0)
            .map(|(_, form)| form),
    );
    let mut layer = VerifyPskLayer::new(KEYS.into_iter().collect::<MemoryKeyStore>())
        .replay_store(
            MokaReplayStore::builder()
                .capacity(4 * MAX_REQUESTS as u64)
                .build(),
        )
        .clock(ManualClock::new(NOW))
        .window(std::time::Duration::from_secs(u64::from(input.window)))
        .body_forms(forms)
        .body_limit(usize::from(input.body_limit))
        .unique_nonce(input.unique_nonce);
    if input.unsigned_body {
        layer = layer.insecure_accept_unsigned_body();
    }
    let seen: Arc<Mutex<Option<(VerifiedKey, Bytes)>>> = Arc::default();
    let handler_saw = Arc::clone(&seen);
    let mut service = layer.layer(tower::service_fn(move |request: Request<VerifiedBody>| {
        let handler_saw = Arc::clone(&handler_saw);
        async move {
            let key = request
                .extensions()
                .get::<VerifiedKey>()
                .cloned()
                .expect("a VerifiedKey");
            let body = request.into_body().collect().await.unwrap().to_bytes();
            *handler_saw.lock().unwrap() = Some((key, body));
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
        }
    }));

    let mut sent: Vec<(Sent, Vec<u8>)> = Vec::new();
    let mut accepted_macs: HashSet<[u8; MAC_LEN]> = HashSet::new();
    let mut accepted_nonces: HashSet<(String, String)> = HashSet::new();

    for req in input.requests.iter().take(MAX_REQUESTS) {
        let mut method = method_of(&req.method);
        let mut uri = uri_of(&req.path, req.query.as_deref());
        let mut chunks = req.chunks.clone();
        let authorization = match &req.auth {
            Auth::None => None,
            Auth::Raw(bytes) => HeaderValue::from_bytes(bytes).ok(),
            Auth::Replay(index) => {
                if sent.is_empty() {
                    None
                } else {
                    let (earlier, body) = &sent[usize::from(*index) % sent.len()];
                    method = earlier.method.clone();
                    uri = earlier.uri.clone();
                    chunks = vec![body.clone()];
                    earlier.authorization.clone()
                }
            }
            Auth::Signed {
                key,
                form,
                nonce,
                skew,
                tamper,
            } => {
                let key = usize::from(*key) % (KEYS.len() + 1);
                let key_id = KEYS.get(key).map_or("unknown-key", |(id, _)| id);
                let mut timestamp = NOW + i64::from(*skew);
                let body: Vec<u8> = chunks.concat();
                let signing = SigningString {
                    key_id,
                    method: method.as_str(),
                    path: uri.path(),
                    nonce,
                    timestamp,
                };
                let mut mac = mac_of(key.min(KEYS.len() - 1), &signing, form_of(*form), &body);
                let mut nonce = nonce.as_str();
                match tamper {
                    Tamper::None => {}
                    Tamper::Method(i) => method = method_of(&MethodChoice::Known(*i)),
                    Tamper::Path(path) => uri = uri_of(path, req.query.as_deref()),
                    Tamper::Body(body) => chunks = vec![body.clone()],
                    Tamper::Nonce(other) => nonce = other,
                    Tamper::Timestamp(by) => timestamp += i64::from(*by),
                    Tamper::MacBit(bit) => {
                        let bit = usize::from(*bit) % (MAC_LEN * 8);
                        mac[bit / 8] ^= 1 << (bit % 8);
                    }
                }
                Credential::new(key_id, mac, nonce, timestamp)
                    .ok()
                    .and_then(|credential| HeaderValue::try_from(credential.to_string()).ok())
            }
        };

        let body: Vec<u8> = chunks.concat();
        let mut builder = Request::builder().method(method.clone()).uri(uri.clone());
        let mut authorizations: Vec<HeaderValue> = authorization.iter().cloned().collect();
        if let Some(value) = &authorization {
            builder = builder.header(AUTHORIZATION, value.clone());
        }
        for (name, value) in &req.headers {
            let name =
                HeaderName::from_static(HEADER_NAMES[usize::from(*name) % HEADER_NAMES.len()]);
            let Ok(value) = HeaderValue::from_bytes(value) else {
                continue;
            };
            if name == AUTHORIZATION {
                authorizations.push(value.clone());
            }
            builder = builder.header(name, value);
        }
        if let Some(length) = req.content_length {
            builder = builder.header(CONTENT_LENGTH, length);
        }
        let request = builder
            .body(body_of(&chunks, req.fails))
            .expect("a request");

        let verdict = must_verify(
            &input,
            forms,
            &method,
            &uri,
            &authorizations,
            &body,
            req.fails,
            req.content_length,
        )
        .filter(|(key_id, nonce, mac)| {
            !accepted_macs.contains(mac)
                && !(input.unique_nonce
                    && accepted_nonces.contains(&(key_id.clone(), nonce.clone())))
        });

        let response = runtime().block_on(service.call(request)).unwrap();
        let status = response.status();
        let handled = seen.lock().unwrap().take();
        match (&verdict, status) {
            (Some((key_id, nonce, mac)), StatusCode::OK) => {
                let (key, received) = handled.expect("the handler ran");
                assert_eq!(key.key_id(), key_id);
                assert_eq!(key.nonce(), nonce);
                assert_eq!(received[..], body[..], "the handler got the body as sent");
                accepted_macs.insert(*mac);
                accepted_nonces.insert((key_id.clone(), nonce.clone()));
            }
            (None, StatusCode::OK) => panic!("false accept: {req:?}"),
            (Some(_), status) => {
                let rejection = response.extensions().get::<Rejection>();
                panic!("false reject ({status}, {rejection:?}): {req:?}");
            }
            (None, status) => {
                assert!(handled.is_none(), "the handler ran for a refused request");
                let rejection = response
                    .extensions()
                    .get::<Rejection>()
                    .expect("a refusal carries its Rejection");
                assert_eq!(rejection.status(), status);
                assert!(
                    !matches!(
                        rejection,
                        Rejection::KeyStoreUnavailable
                            | Rejection::NonceStoreUnavailable
                            | Rejection::NonceStoreFull
                            | Rejection::BodyTimeout { .. }
                    ),
                    "{rejection:?}"
                );
            }
        }
        sent.push((
            Sent {
                method,
                uri,
                authorization,
            },
            body,
        ));
    }
});
