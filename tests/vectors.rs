//! Known-answer vectors from an independent Python implementation (`tests/vectors/generate.py`,
//! which writes `tests/vectors/armor_psk.json`). Every case is checked against the signing
//! string, the client signer, the credential parser and the verifying layer.

use armor_psk::clock::ManualClock;
use armor_psk::key_store::MemoryKeyStore;
use armor_psk::psk::{BodyForm, Credential, HmacSha512, SigningString};
use armor_psk::{Signer, VerifiedKey, VerifyPskLayer};
use axum::body::Body;
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::Mac as _;
use http::header::AUTHORIZATION;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

const VECTORS: &str = include_str!("vectors/armor_psk.json");

/// One known-answer case, as the generator writes it.
#[derive(Debug)]
struct Case {
    name: String,
    key_id: String,
    secret: String,
    method: String,
    url: String,
    signed_path: String,
    nonce: String,
    timestamp: i64,
    body: String,
    form: BodyForm,
    signing_string: String,
    signature: String,
    authorization: String,
}

impl Case {
    fn from_json(value: &Value) -> Case {
        let text = |field: &str| -> String {
            value[field]
                .as_str()
                .unwrap_or_else(|| panic!("field {field:?} missing or not a string in {value}"))
                .to_owned()
        };
        let form = text("form");
        Case {
            name: text("name"),
            key_id: text("key_id"),
            secret: text("secret"),
            method: text("method"),
            url: text("url"),
            signed_path: text("signed_path"),
            nonce: text("nonce"),
            timestamp: value["timestamp"]
                .as_i64()
                .unwrap_or_else(|| panic!("timestamp missing in {value}")),
            body: text("body"),
            form: form
                .parse()
                .unwrap_or_else(|error| panic!("case {}: {error}", text("name"))),
            signing_string: text("signing_string"),
            signature: text("signature"),
            authorization: text("authorization"),
        }
    }

    fn method(&self) -> Method {
        Method::from_bytes(self.method.as_bytes()).expect("a valid method")
    }

    fn parts(&self) -> SigningString<'_> {
        SigningString {
            key_id: &self.key_id,
            method: &self.method,
            path: &self.signed_path,
            nonce: &self.nonce,
            timestamp: self.timestamp,
        }
    }

    /// Whether the default verifier must accept the case: the empty form leaves a body out
    /// of the signature, which is refused unless the operator opts in.
    fn accepted_by_default(&self) -> bool {
        self.body.is_empty() || self.form != BodyForm::Empty
    }

    /// The form the verifier reports: an empty body signed raw or empty is reported as empty.
    fn reported_form(&self) -> BodyForm {
        if self.body.is_empty() && self.form == BodyForm::Raw {
            BodyForm::Empty
        } else {
            self.form
        }
    }
}

fn cases() -> Vec<Case> {
    let json: Value = serde_json::from_str(VECTORS).expect("armor_psk.json is valid JSON");
    let cases: Vec<Case> = json
        .as_array()
        .expect("armor_psk.json holds a list")
        .iter()
        .map(Case::from_json)
        .collect();
    assert!(!cases.is_empty(), "no vectors");
    cases
}

/// A fresh verifier for one key, its clock at `now`, in front of a handler that answers with
/// the body form it verified.
fn app(case: &Case, now: i64) -> Router {
    let keys = MemoryKeyStore::builder()
        .key(case.key_id.as_str(), case.secret.as_str())
        .build();
    Router::new()
        // Read from the extensions, not extracted: the extractor needs the `axum` feature.
        .fallback(|request: Request<Body>| async move {
            request
                .extensions()
                .get::<VerifiedKey>()
                .map_or_else(String::new, |key| key.body_form().as_str().to_owned())
        })
        .layer(VerifyPskLayer::new(keys).clock(ManualClock::new(now)))
}

async fn send(case: &Case, authorization: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(case.method())
        .uri(case.url.as_str())
        .header(AUTHORIZATION, authorization)
        .header("content-type", "application/json")
        .body(Body::from(case.body.clone()))
        .expect("a valid request");
    let response = app(case, case.timestamp)
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the body collects")
        .to_bytes();
    let body = String::from_utf8(body.to_vec()).expect("a UTF-8 response");
    (status, body)
}

fn assert_bad_signature(case: &Case, status: StatusCode, body: &str) {
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "case {}: {body}",
        case.name
    );
    let json: Value = serde_json::from_str(body)
        .unwrap_or_else(|error| panic!("case {}: not JSON ({error}): {body}", case.name));
    assert_eq!(
        json["error"]["code"], "bad_signature",
        "case {}: {body}",
        case.name
    );
}

/// The header with the first signature character replaced by another base64 digit (the first
/// six bits of the tag change; the spelling stays canonical).
fn with_changed_signature(case: &Case) -> String {
    let mut signature = case.signature.clone().into_bytes();
    signature[0] = if signature[0] == b'A' { b'B' } else { b'A' };
    let signature = String::from_utf8(signature).expect("ASCII");
    assert_ne!(signature, case.signature);
    format!(
        "ARMOR-PSK {}:{}:{}:{}",
        case.key_id, signature, case.nonce, case.timestamp
    )
}

#[test]
fn the_cases_are_consistent_with_themselves() {
    for case in cases() {
        let path = case
            .url
            .split_once('?')
            .map_or(case.url.as_str(), |(path, _)| path);
        assert_eq!(case.signed_path, path, "case {}", case.name);
        assert_eq!(
            case.authorization,
            format!(
                "ARMOR-PSK {}:{}:{}:{}",
                case.key_id, case.signature, case.nonce, case.timestamp
            ),
            "case {}",
            case.name
        );
        assert!(
            !(case.body.is_empty() && case.form == BodyForm::Digest),
            "case {}: the signer never signs an empty body with the digest form",
            case.name
        );
    }
}

#[test]
fn the_cases_cover_the_required_shapes() {
    let cases = cases();
    let has = |what: &str, test: &dyn Fn(&Case) -> bool| {
        assert!(cases.iter().any(test), "no vector for {what}");
    };
    for form in BodyForm::ALL {
        has(form.as_str(), &|c| {
            c.method == "POST" && c.body.starts_with('{') && c.form == form
        });
    }
    has("a GET without a body", &|c| {
        c.method == "GET" && c.body.is_empty() && c.form == BodyForm::Empty
    });
    has("a non-ASCII secret", &|c| !c.secret.is_ascii());
    has("a percent-encoded path", &|c| c.signed_path.contains('%'));
    has("a query string", &|c| c.url.contains('?'));
    has("the documented sample's header", &|c| {
        c.key_id == "20a37099-4a0b-432f-bf46-5fa690a0405c"
            && c.nonce == "8jbj872s2h"
            && c.timestamp == 1528140529
    });
    has("nonce = timestamp", &|c| c.nonce == c.timestamp.to_string());
    has("a non-ASCII raw body", &|c| {
        !c.body.is_ascii() && c.form == BodyForm::Raw
    });
    has("a 128-character nonce", &|c| c.nonce.len() == 128);
}

#[test]
fn signing_strings_match() {
    for case in cases() {
        let text = case.parts().to_text(case.form, &[case.body.as_bytes()]);
        assert_eq!(text, case.signing_string, "case {}", case.name);
    }
}

#[test]
fn macs_match() {
    for case in cases() {
        let keyed = HmacSha512::new_from_slice(case.secret.as_bytes()).expect("any key length");
        let mac = case
            .parts()
            .sign(&keyed, case.form, &[case.body.as_bytes()]);
        assert_eq!(STANDARD.encode(mac), case.signature, "case {}", case.name);
    }
}

#[test]
fn the_signer_reproduces_the_authorization() {
    for case in cases() {
        let header = Signer::new(case.key_id.as_str(), case.secret.as_str())
            .expect("a valid key id")
            .body_form(case.form)
            .authorization_with(
                &case.method(),
                &case.url,
                case.body.as_bytes(),
                &case.nonce,
                case.timestamp,
            )
            .unwrap_or_else(|error| panic!("case {}: {error}", case.name));
        assert_eq!(
            header.to_str().expect("ASCII"),
            case.authorization,
            "case {}",
            case.name
        );
        assert!(header.is_sensitive(), "case {}", case.name);
    }
}

#[test]
fn credentials_round_trip() {
    for case in cases() {
        let credential = Credential::parse(&case.authorization)
            .unwrap_or_else(|error| panic!("case {}: {error}", case.name));
        assert_eq!(
            credential.to_string(),
            case.authorization,
            "case {}",
            case.name
        );
        assert_eq!(credential.key_id(), case.key_id, "case {}", case.name);
        assert_eq!(credential.nonce(), case.nonce, "case {}", case.name);
        assert_eq!(credential.timestamp(), case.timestamp, "case {}", case.name);
        assert_eq!(
            STANDARD.encode(credential.mac()),
            case.signature,
            "case {}",
            case.name
        );
    }
}

#[tokio::test]
async fn the_verifier_accepts_each_vector() {
    for case in cases() {
        let (status, body) = send(&case, &case.authorization).await;
        if case.accepted_by_default() {
            assert_eq!(status, StatusCode::OK, "case {}: {body}", case.name);
            assert_eq!(body, case.reported_form().as_str(), "case {}", case.name);
        } else {
            // A body the signature leaves out is refused unless the operator opts in.
            assert_bad_signature(&case, status, &body);
        }
    }
}

#[tokio::test]
async fn the_verifier_refuses_a_changed_signature() {
    for case in cases() {
        let (status, body) = send(&case, &with_changed_signature(&case)).await;
        assert_bad_signature(&case, status, &body);
    }
}
