//! The signed-Date scheme of seed 004 on the verifier's shared machinery, alone and beside
//! ARMOR-PSK on one route.

use std::time::Duration;

use armor_psk::clock::ManualClock;
use armor_psk::date_hmac::{DateHmac, DateHmacSigner};
use armor_psk::key_store::MemoryKeyStore;
use armor_psk::psk::{ArmorPsk, BodyForm, BodyForms};
use armor_psk::verify::{OneOf, Scheme, VerifyLayer};
use armor_psk::{Rejection, Signer, VerifiedKey};
use axum::body::{Body, Bytes};
use axum::routing::any;
use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The vendor's known answer (protocol.md §6).
const KEY: &str = "kw4qSnpSwXzgiv5yxYpZZmFEd9QAeiKTQ6OuyMja";
const DATE: &str = "Tue, 07 Jun 2011 20:51:35 GMT";
const DATE_UNIX: i64 = 1_307_479_895;
const SIGNATURE: &str = "UDysfR6MndUZReo07Y9r+vErn8vSxrnQ5ulit18iJ/Q=";
const API_KEY: &str = "license-key-1";

fn keys() -> MemoryKeyStore {
    MemoryKeyStore::builder().key(API_KEY, KEY).build()
}

fn router<Sch: Scheme>(layer: VerifyLayer<Sch>) -> Router {
    Router::new()
        .route(
            "/{*path}",
            any(|key: VerifiedKey| async move {
                format!("{} {} {}", key.scheme(), key.key_id(), key.body_form())
            }),
        )
        .layer(layer)
}

fn date_app(clock: &ManualClock) -> Router {
    router(VerifyLayer::with_scheme(DateHmac::new(keys())).clock(clock.clone()))
}

fn request(date: Option<&str>, authorization: Option<&str>) -> Request<Body> {
    let mut request = Request::post("/api/v4/activate_license");
    if let Some(date) = date {
        request = request.header("date", date);
    }
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    request.body(Body::from("{}")).unwrap()
}

fn vendor_header(api_key_param: &str, key: &str) -> String {
    format!(
        r#"algorithm="hmac-sha256",headers="date",signature="{SIGNATURE}",{api_key_param}="{key}""#
    )
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Bytes) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

async fn expect_code(app: &Router, request: Request<Body>, code: &str) {
    let (status, body) = send(app, request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{code}: {body:?}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], 400);
    assert!(body["message"].is_string());
}

#[tokio::test]
async fn the_vendors_known_answer_is_accepted_in_both_spellings() {
    let clock = ManualClock::new(DATE_UNIX);
    let app = date_app(&clock);
    for spelling in ["apikey", "apiKey"] {
        let header = vendor_header(spelling, API_KEY);
        let (status, body) = send(&app, request(Some(DATE), Some(&header))).await;
        assert_eq!(status, StatusCode::OK, "{spelling}: {body:?}");
        assert_eq!(body, "date-hmac license-key-1 empty");
    }
}

#[tokio::test]
async fn a_date_that_grows_too_old_while_the_body_is_read_is_refused() {
    let clock = ManualClock::new(DATE_UNIX + 899);
    let app = date_app(&clock);
    let header = vendor_header("apikey", API_KEY);
    let slow_body = |seconds| {
        let clock = clock.clone();
        Body::from_stream(futures_util::stream::once(async move {
            clock.advance(seconds);
            Ok::<_, std::convert::Infallible>(Bytes::from("{}"))
        }))
    };
    let with_body = |body| {
        Request::post("/api/v4/activate_license")
            .header("date", DATE)
            .header("authorization", &header)
            .body(body)
            .unwrap()
    };
    assert_eq!(send(&app, with_body(slow_body(1))).await.0, StatusCode::OK);
    // 899 s old when its header was checked, 901 s once its body had come.
    clock.set(DATE_UNIX + 899);
    expect_code(&app, with_body(slow_body(2)), "date_header_diff").await;
}

#[tokio::test]
async fn the_date_may_be_15_minutes_old_and_a_little_ahead() {
    let clock = ManualClock::new(DATE_UNIX);
    let app = date_app(&clock);
    let header = vendor_header("apikey", API_KEY);
    for (offset, accepted) in [(900, true), (901, false), (-60, true), (-61, false)] {
        clock.set(DATE_UNIX + offset);
        let (status, _) = send(&app, request(Some(DATE), Some(&header))).await;
        assert_eq!(
            status == StatusCode::OK,
            accepted,
            "server {offset} s from the Date"
        );
        if !accepted {
            expect_code(&app, request(Some(DATE), Some(&header)), "date_header_diff").await;
        }
    }
    clock.set(DATE_UNIX);
    let longer = router(
        VerifyLayer::with_scheme(DateHmac::new(keys()).max_age(Duration::from_secs(3600)))
            .clock(ManualClock::new(DATE_UNIX + 1800)),
    );
    assert_eq!(
        send(&longer, request(Some(DATE), Some(&header))).await.0,
        StatusCode::OK
    );
    // No limit at all: `Duration::MAX` does not wrap round to a negative one, either way.
    let decade = 10 * 365 * 86_400;
    for (limits, now) in [
        (
            DateHmac::new(keys()).max_age(Duration::MAX),
            DATE_UNIX + decade,
        ),
        (
            DateHmac::new(keys()).max_skew(Duration::MAX),
            DATE_UNIX - decade,
        ),
    ] {
        let unlimited = router(VerifyLayer::with_scheme(limits).clock(ManualClock::new(now)));
        assert_eq!(
            send(&unlimited, request(Some(DATE), Some(&header))).await.0,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn every_fault_has_the_vendors_code() {
    let clock = ManualClock::new(DATE_UNIX);
    let app = date_app(&clock);
    let good = vendor_header("apikey", API_KEY);
    let cases = [
        (Some(DATE), None, "authorization_missing_params"),
        (
            Some(DATE),
            Some(r#"algorithm="hmac-sha256",headers="date",apikey="k""#.to_owned()),
            "authorization_missing_params",
        ),
        (
            Some(DATE),
            Some(good.replace("hmac-sha256", "hmac-sha1")),
            "hmac_required",
        ),
        (
            Some(DATE),
            Some(good.replace(r#"headers="date""#, r#"headers="date digest""#)),
            "authorization_invalid_headers",
        ),
        (None, Some(good.clone()), "date_header_diff"),
        (
            Some("2011-06-07T20:51:35Z"),
            Some(good.clone()),
            "date_header_diff",
        ),
        (
            Some(DATE),
            Some(vendor_header("apikey", "unknown")),
            "invalid_api_key",
        ),
        (
            Some("Tue, 07 Jun 2011 20:51:36 GMT"),
            Some(good.clone()),
            "signature_mismatch",
        ),
    ];
    for (date, authorization, code) in cases {
        expect_code(&app, request(date, authorization.as_deref()), code).await;
    }
    // A date the parser would take but is not the date it says, and a second Date header.
    for date in [
        "Mon, 07 Jun 2011 20:51:35 GMT",
        "Tue, 07 Jun +2011 20:51:35 GMT",
    ] {
        expect_code(&app, request(Some(date), Some(&good)), "date_header_diff").await;
    }
    let mut twice = request(Some(DATE), Some(&good));
    twice
        .headers_mut()
        .append("date", http::HeaderValue::from_static(DATE));
    expect_code(&app, twice, "date_header_diff").await;
    // An API key a signer could not send: a `"` inside it.
    let quoted = vendor_header("apikey", r#"a"b"#);
    expect_code(
        &app,
        request(Some(DATE), Some(&quoted)),
        "authorization_missing_params",
    )
    .await;
}

#[tokio::test]
async fn nothing_but_the_date_is_signed_so_a_replay_passes() {
    // The scheme's own limit, kept visible: the same request twice, or with another path and
    // body, inside the window.
    let clock = ManualClock::new(DATE_UNIX);
    let app = date_app(&clock);
    let header = vendor_header("apikey", API_KEY);
    for _ in 0..2 {
        assert_eq!(
            send(&app, request(Some(DATE), Some(&header))).await.0,
            StatusCode::OK
        );
    }
    let other = Request::delete("/api/v4/anything")
        .header("date", DATE)
        .header("authorization", &header)
        .body(Body::from("another body"))
        .unwrap();
    assert_eq!(send(&app, other).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_signer_signs_what_the_verifier_accepts() {
    let clock = ManualClock::new(1_700_000_000);
    let app = date_app(&clock);
    let signer = DateHmacSigner::new(API_KEY, KEY)
        .unwrap()
        .clock(clock.clone());
    for unfit in ["", "a\"b", "a,b", "a b", "é"] {
        assert_eq!(
            DateHmacSigner::new(unfit, KEY).err(),
            Some(armor_psk::date_hmac::UnsendableApiKey),
            "{unfit:?}"
        );
    }
    let mut request = Request::get("/x").body(Body::empty()).unwrap();
    signer.sign(&mut request).unwrap();
    assert_eq!(request.headers()["date"], "Tue, 14 Nov 2023 22:13:20 GMT");
    // A clock no HTTP date can carry (milliseconds) is refused, and nothing is set.
    let millis = DateHmacSigner::new("key-1", KEY)
        .unwrap()
        .clock(ManualClock::new(1_700_000_000_000));
    let mut unsigned = Request::get("/x").body(Body::empty()).unwrap();
    assert_eq!(
        millis.sign(&mut unsigned),
        Err(armor_psk::date_hmac::UndatableClock(1_700_000_000_000))
    );
    assert!(unsigned.headers().is_empty());
    assert!(request.headers()["authorization"].is_sensitive());
    assert_eq!(send(&app, request).await.0, StatusCode::OK);
}

#[tokio::test]
async fn both_schemes_on_one_route() {
    let clock = ManualClock::new(DATE_UNIX);
    let scheme = OneOf::new(ArmorPsk::new(keys()), DateHmac::new(keys()));
    let app = router(VerifyLayer::with_scheme(scheme).clock(clock.clone()));

    let (status, body) = send(
        &app,
        request(Some(DATE), Some(&vendor_header("apikey", API_KEY))),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from("date-hmac license-key-1 empty"))
    );

    let signer = Signer::new(API_KEY, KEY).unwrap().clock(clock.clone());
    let mut psk = Request::post("/x").body(b"{}".to_vec()).unwrap();
    signer.sign(&mut psk).unwrap();
    let (status, body) = send(&app, psk.map(Body::from)).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::OK,
            Bytes::from("armor-psk license-key-1 digest")
        )
    );

    // A parameter of another scheme first: still the signed-Date scheme's header. An
    // ARMOR-PSK nonce may hold `,` and `=`: still ARMOR-PSK's.
    let realm_first = format!(r#"realm="x",{}"#, vendor_header("apikey", API_KEY));
    let (status, body) = send(&app, request(Some(DATE), Some(&realm_first))).await;
    assert_eq!(
        (status, body.clone()),
        (StatusCode::OK, Bytes::from("date-hmac license-key-1 empty")),
        "{body:?}"
    );
    let header = signer.authorization(&Method::GET, "/x", b"").unwrap();
    let odd_nonce = signer
        .clone()
        .nonce_source(|| "n,apikey=x".into())
        .authorization(&Method::GET, "/x", b"")
        .unwrap();
    let mut odd = http::HeaderMap::new();
    odd.insert("authorization", odd_nonce.clone());
    assert!(!DateHmac::new(keys()).recognizes(&odd));
    for header in [header, odd_nonce] {
        let request = Request::get("/x")
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        let (status, body) = send(&app, request).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        assert!(body.starts_with(b"armor-psk"), "{body:?}");
    }

    // No credentials: the first scheme answers, with its challenge.
    let response = app.clone().oneshot(request(None, None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "ARMOR-PSK");
}

#[tokio::test]
async fn a_combined_armor_psk_takes_its_own_settings() {
    let clock = ManualClock::new(DATE_UNIX);
    let psk = ArmorPsk::new(keys())
        .window(std::time::Duration::from_secs(30))
        .body_forms(BodyForms::only(BodyForm::Raw));
    let scheme = OneOf::new(psk, DateHmac::new(keys()));
    let app = router(VerifyLayer::with_scheme(scheme).clock(clock.clone()));
    let signer = Signer::new(API_KEY, KEY).unwrap().clock(clock.clone());
    let signed = |form| {
        let mut request = Request::post("/x").body(b"{}".to_vec()).unwrap();
        signer.clone().body_form(form).sign(&mut request).unwrap();
        request.map(Body::from)
    };

    let refusal = |body: Bytes| {
        let body: Value = serde_json::from_slice(&body).unwrap();
        body["error"]["code"].as_str().unwrap().to_owned()
    };
    // The digest form is not among the scheme's forms; the raw form is.
    let (status, body) = send(&app, signed(BodyForm::Digest)).await;
    assert_eq!(
        (status, refusal(body)),
        (StatusCode::UNAUTHORIZED, "bad_signature".into())
    );
    let (status, body) = send(&app, signed(BodyForm::Raw)).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Bytes::from("armor-psk license-key-1 raw"))
    );
    // 60 seconds late is outside its 30-second window.
    let late = signed(BodyForm::Raw);
    clock.advance(60);
    let (status, body) = send(&app, late).await;
    assert_eq!(
        (status, refusal(body)),
        (StatusCode::UNAUTHORIZED, "timestamp_out_of_window".into())
    );
}

#[tokio::test]
async fn the_rejection_response_is_replaceable_for_this_scheme_too() {
    let clock = ManualClock::new(DATE_UNIX);
    let layer = VerifyLayer::with_scheme(DateHmac::new(keys()))
        .clock(clock)
        .on_rejection(|rejection: &Rejection| {
            let mut response = http::Response::new(Bytes::from(rejection.code()));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        });
    let app = router(layer);
    let (status, body) = send(
        &app,
        request(Some(DATE), Some(&vendor_header("apikey", "nobody"))),
    )
    .await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, Bytes::from("invalid_api_key"))
    );
}
