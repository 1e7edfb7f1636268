//! Properties of signing and verifying: what the signer signs the layer accepts, any change
//! to a signed part is refused, and the credential parser never panics.

use armor_psk::clock::ManualClock;
use armor_psk::key_store::MemoryKeyStore;
use armor_psk::psk::{BodyForm, Credential, HmacSha512, SigningString};
use armor_psk::{Signer, VerifiedKey, VerifyPskLayer};
use axum::body::Body;
use axum::Router;
use hmac::Mac as _;
use http::header::AUTHORIZATION;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::BodyExt as _;
use proptest::prelude::*;
use tower::ServiceExt as _;

const KEY_ID: &str = "20a37099-4a0b-432f-bf46-5fa690a0405c";
static METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

/// Visible ASCII a path may carry as is: no `?` or `#` (they end the path), and not `<`, `>`
/// or `` ` ``, which `http::Uri` refuses in a request target.
fn path_char(byte: u8) -> bool {
    byte.is_ascii_graphic() && !b"?#<>`".contains(&byte)
}

fn nonce_char(byte: u8) -> bool {
    byte.is_ascii_graphic() && byte != b':'
}

fn chars_where(allowed: fn(u8) -> bool) -> Vec<char> {
    (0u8..=127)
        .filter(|byte| allowed(*byte))
        .map(char::from)
        .collect()
}

fn text_of(allowed: fn(u8) -> bool, len: std::ops::RangeInclusive<usize>) -> BoxedStrategy<String> {
    proptest::collection::vec(proptest::sample::select(chars_where(allowed)), len)
        .prop_map(String::from_iter)
        .boxed()
}

fn method() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&METHODS[..])
}

/// `/` and 0 to 63 more path characters (1..64 in all).
fn path() -> impl Strategy<Value = String> {
    text_of(path_char, 0..=62).prop_map(|rest| format!("/{rest}"))
}

fn nonce() -> impl Strategy<Value = String> {
    text_of(nonce_char, 1..=128)
}

fn secret() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 1..64).prop_map(String::from_iter)
}

fn form() -> impl Strategy<Value = BodyForm> {
    proptest::sample::select(BodyForm::ALL.to_vec())
}

/// One request to sign and send.
#[derive(Debug, Clone)]
struct Signed {
    method: &'static str,
    path: String,
    nonce: String,
    timestamp: i64,
    body: Vec<u8>,
    form: BodyForm,
    secret: String,
}

impl Signed {
    fn authorization(&self) -> String {
        Signer::new(KEY_ID, self.secret.as_str())
            .expect("a valid key id")
            .body_form(self.form)
            .authorization_with(
                &Method::from_bytes(self.method.as_bytes()).expect("a valid method"),
                &self.path,
                &self.body,
                &self.nonce,
                self.timestamp,
            )
            .expect("every generated part is acceptable")
            .to_str()
            .expect("ASCII")
            .to_owned()
    }

    /// The form the signer used: a request without a body is signed with the empty form.
    fn signed_form(&self) -> BodyForm {
        if self.body.is_empty() {
            BodyForm::Empty
        } else {
            self.form
        }
    }

    /// Whether the body is covered by the signature (so changing it must be refused).
    fn body_is_signed(&self) -> bool {
        self.signed_form() != BodyForm::Empty
    }
}

fn request() -> impl Strategy<Value = Signed> {
    (
        method(),
        path(),
        nonce(),
        0..=4_000_000_000i64,
        proptest::collection::vec(any::<u8>(), 0..512),
        form(),
        secret(),
    )
        .prop_map(
            |(method, path, nonce, timestamp, body, form, secret)| Signed {
                method,
                path,
                nonce,
                timestamp,
                body,
                form,
                secret,
            },
        )
}

/// A fresh verifier (clock at `now`, one key) in front of a handler answering with the form
/// it verified.
fn app(secret: &str, now: i64, unsigned_body: bool) -> Router {
    let keys = MemoryKeyStore::builder().key(KEY_ID, secret).build();
    let mut layer = VerifyPskLayer::new(keys).clock(ManualClock::new(now));
    if unsigned_body {
        layer = layer.insecure_accept_unsigned_body();
    }
    Router::new()
        .fallback(|key: VerifiedKey| async move { key.body_form().as_str().to_owned() })
        .layer(layer)
}

/// Sends one request through `app` and returns the status and the body text.
async fn send(
    app: Router,
    method: &str,
    path: &str,
    authorization: &str,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let uri: Uri = path
        .parse()
        .expect("a generated path is a valid request target");
    assert_eq!(uri.path(), path, "http::Uri changed the path");
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(AUTHORIZATION, authorization)
        .body(Body::from(body))
        .expect("a valid request");
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body collects")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

fn code_of(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("<not a JSON rejection: {body}>"))
}

/// `text` with the byte at `index` replaced by the next allowed character (never itself).
fn change_byte(text: &str, index: usize, allowed: fn(u8) -> bool) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let original = bytes[index];
    let mut replacement = original;
    loop {
        replacement = if replacement >= 0x7e {
            0x21
        } else {
            replacement + 1
        };
        if allowed(replacement) {
            break;
        }
    }
    assert_ne!(replacement, original);
    bytes[index] = replacement;
    String::from_utf8(bytes).expect("ASCII")
}

/// A request whose parts were changed after signing, and what was changed.
struct Tampered {
    what: &'static str,
    method: &'static str,
    path: String,
    authorization: String,
    body: Vec<u8>,
}

/// Every single-part change of `signed` that must change the signed bytes.
fn tamperings(signed: &Signed, authorization: &str, pick: usize) -> Vec<Tampered> {
    let credential = Credential::parse(authorization).expect("the signer's header parses");
    let header = |nonce: &str, timestamp: i64, mac: [u8; 64]| {
        Credential::new(KEY_ID, mac, nonce, timestamp)
            .expect("valid parts")
            .to_string()
    };
    let mac = *credential.mac();
    let same = |what, method, path: String, authorization: String, body: Vec<u8>| Tampered {
        what,
        method,
        path,
        authorization,
        body,
    };
    let mut out = Vec::new();

    let other_method = METHODS
        .iter()
        .copied()
        .cycle()
        .skip_while(|m| *m != signed.method)
        .nth(1 + pick % (METHODS.len() - 1))
        .expect("cycle");
    out.push(same(
        "method",
        other_method,
        signed.path.clone(),
        authorization.to_owned(),
        signed.body.clone(),
    ));

    let path = if signed.path.len() > 1 {
        change_byte(&signed.path, 1 + pick % (signed.path.len() - 1), path_char)
    } else {
        "/a".to_owned()
    };
    out.push(same(
        "path",
        signed.method,
        path,
        authorization.to_owned(),
        signed.body.clone(),
    ));

    let nonce = change_byte(&signed.nonce, pick % signed.nonce.len(), nonce_char);
    out.push(same(
        "nonce",
        signed.method,
        signed.path.clone(),
        header(&nonce, signed.timestamp, mac),
        signed.body.clone(),
    ));

    out.push(same(
        "timestamp",
        signed.method,
        signed.path.clone(),
        header(&signed.nonce, signed.timestamp + 1, mac),
        signed.body.clone(),
    ));

    if signed.body_is_signed() {
        let mut body = signed.body.clone();
        let index = pick % body.len();
        body[index] ^= 1 << (pick % 8);
        out.push(same(
            "body",
            signed.method,
            signed.path.clone(),
            authorization.to_owned(),
            body,
        ));
    }

    let mut flipped = mac;
    flipped[pick % 64] ^= 1 << (pick % 8);
    out.push(same(
        "signature",
        signed.method,
        signed.path.clone(),
        header(&signed.nonce, signed.timestamp, flipped),
        signed.body.clone(),
    ));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// What the signer signs, the layer accepts, reporting the form used; a body left out of
    /// the signature (the empty form) is accepted only when the operator opts in.
    #[test]
    fn the_layer_accepts_what_the_signer_signs(signed in request()) {
        let authorization = signed.authorization();
        let rt = runtime();
        let unsigned_body = !signed.body.is_empty() && signed.form == BodyForm::Empty;

        let (status, body) = rt.block_on(send(
            app(&signed.secret, signed.timestamp, false),
            signed.method,
            &signed.path,
            &authorization,
            signed.body.clone(),
        ));
        if unsigned_body {
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "{}", body);
            prop_assert_eq!(code_of(&body), "bad_signature");
        } else {
            prop_assert_eq!(status, StatusCode::OK, "{}", body);
            prop_assert_eq!(body, signed.signed_form().as_str());
        }

        let (status, body) = rt.block_on(send(
            app(&signed.secret, signed.timestamp, true),
            signed.method,
            &signed.path,
            &authorization,
            signed.body.clone(),
        ));
        prop_assert_eq!(status, StatusCode::OK, "{}", body);
        prop_assert_eq!(body, signed.signed_form().as_str());
    }

    /// The header the signer writes parses back to its parts, and its MAC is the one
    /// `SigningString::sign` computes over the path without its query.
    #[test]
    fn the_signer_header_carries_the_mac_of_the_parts(
        signed in request(),
        query in text_of(path_char, 0..=20),
    ) {
        let mut with_query = signed.clone();
        with_query.path = format!("{}?{query}", signed.path);
        let authorization = with_query.authorization();
        prop_assert_eq!(&authorization, &signed.authorization());

        let credential = Credential::parse(&authorization).expect("the signer's header parses");
        prop_assert_eq!(credential.key_id(), KEY_ID);
        prop_assert_eq!(credential.nonce(), signed.nonce.as_str());
        prop_assert_eq!(credential.timestamp(), signed.timestamp);
        prop_assert_eq!(credential.to_string(), authorization.clone());

        let keyed = HmacSha512::new_from_slice(signed.secret.as_bytes()).expect("any key length");
        let parts = SigningString {
            key_id: KEY_ID,
            method: signed.method,
            path: &signed.path,
            nonce: &signed.nonce,
            timestamp: signed.timestamp,
        };
        let mac = parts.sign(&keyed, signed.signed_form(), &[&signed.body]);
        prop_assert_eq!(credential.mac(), &mac);
        for other in BodyForm::ALL {
            let differs = other != signed.signed_form()
                && !(signed.body.is_empty() && other != BodyForm::Digest);
            if differs {
                prop_assert_ne!(credential.mac(), &parts.sign(&keyed, other, &[&signed.body]));
            }
        }
    }

    /// Changing any one signed part after signing (method, a path byte, a nonce byte, the
    /// timestamp by one second, a bit of a signed body, a bit of the signature) is refused
    /// with `bad_signature`; the refusals leave nothing behind, so the original is accepted
    /// afterwards by the same layer.
    #[test]
    fn any_change_to_a_signed_part_is_refused(signed in request(), pick in any::<usize>()) {
        let authorization = signed.authorization();
        let unsigned_body = !signed.body.is_empty() && signed.form == BodyForm::Empty;
        let rt = runtime();
        let app = app(&signed.secret, signed.timestamp, unsigned_body);

        let changes = tamperings(&signed, &authorization, pick);
        prop_assert!(changes.len() >= 5);
        for change in changes {
            let (status, body) = rt.block_on(send(
                app.clone(),
                change.method,
                &change.path,
                &change.authorization,
                change.body,
            ));
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "{} changed: {}", change.what, body);
            prop_assert_eq!(code_of(&body), "bad_signature", "{} changed", change.what);
        }

        let (status, body) = rt.block_on(send(
            app,
            signed.method,
            &signed.path,
            &authorization,
            signed.body.clone(),
        ));
        prop_assert_eq!(status, StatusCode::OK, "{}", body);
        prop_assert_eq!(body, signed.signed_form().as_str());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any string parses or is refused, without a panic; what parses prints back to a
    /// header that parses to the same credential, with parts taken from the input.
    #[test]
    fn parse_never_panics(value in any::<String>()) {
        check_parse(&value)?;
    }

    #[test]
    fn parse_never_panics_after_the_scheme(rest in any::<String>()) {
        check_parse(&format!("ARMOR-PSK {rest}"))?;
    }

    #[test]
    fn parse_never_panics_on_near_credentials(
        rest in "[A-Za-z0-9+/=: ]{0,40}:[A-Za-z0-9+/=]{86,90}:[ -~]{0,130}:[0-9+ -]{0,21}",
    ) {
        check_parse(&format!("ARMOR-PSK {rest}"))?;
    }

    /// Every credential built from valid parts parses back to those parts.
    #[test]
    fn well_formed_credentials_parse(
        key_id in text_of(nonce_char, 1..=256),
        mac in proptest::collection::vec(any::<u8>(), 64),
        nonce in nonce(),
        timestamp in 0..=i64::MAX,
        scheme in proptest::sample::select(vec!["ARMOR-PSK", "armor-psk", "Armor-Psk"]),
        spaces in 1..4usize,
    ) {
        let mac: [u8; 64] = mac.try_into().expect("64 bytes");
        let header = Credential::new(&key_id, mac, &nonce, timestamp)
            .expect("valid parts")
            .to_string();
        let value = format!("{scheme}{}{}", " ".repeat(spaces), &header["ARMOR-PSK ".len()..]);
        let credential = Credential::parse(&value);
        prop_assert!(credential.is_ok(), "{:?} refused: {:?}", value, credential);
        let credential = credential.expect("checked");
        prop_assert_eq!(credential.key_id(), key_id.as_str());
        prop_assert_eq!(credential.mac(), &mac);
        prop_assert_eq!(credential.nonce(), nonce.as_str());
        prop_assert_eq!(credential.timestamp(), timestamp);
        prop_assert_eq!(credential.to_string(), header);
    }
}

fn check_parse(value: &str) -> Result<(), TestCaseError> {
    if let Ok(credential) = Credential::parse(value) {
        prop_assert!(value.contains(credential.key_id()));
        prop_assert!(value.contains(credential.nonce()));
        let printed = credential.to_string();
        let again = Credential::parse(&printed);
        prop_assert_eq!(
            again.as_ref(),
            Ok(&credential),
            "{:?} -> {:?}",
            value,
            printed
        );
    }
    Ok(())
}
