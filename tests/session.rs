//! FH-AUTH and the combined layer, driven through axum with an injected clock.

use std::time::Duration;

use armor_psk::clock::ManualClock;
use armor_psk::key_store::MemoryKeyStore;
use armor_psk::policy::RoutePolicy;
use armor_psk::session::{
    hash_password, ArmorAuthLayer, Identity, MokaSessionStore, SessionStore, Sessions, User, Users,
};
use armor_psk::{Signer, VerifyPskLayer};
use axum::body::Body;
use axum::extract::Path;
use axum::routing::{get, put};
use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const NOW: i64 = 1_700_000_000;
const KEY_ID: &str = "key-with-accounts";
const OPEN_KEY_ID: &str = "key-without-accounts";
/// A key the signature verifies with, and the accounts lookup no longer knows: revoked while its
/// request was on its way.
const GONE_KEY_ID: &str = "key-revoked-in-flight";
const SECRET: &str = "session-test-secret";
const USER: &str = "ann@example.com";
const PASSWORD: &str = "correct horse battery staple";

struct TestApp {
    router: Router,
    clock: ManualClock,
    sessions: Sessions,
}

fn test_app() -> TestApp {
    test_app_storing(MokaSessionStore::default())
}

/// [`test_app`], its codes and sessions in `store`.
fn test_app_storing(store: impl SessionStore) -> TestApp {
    let clock = ManualClock::new(NOW);
    let user = User::new(USER, hash_password(PASSWORD).unwrap(), vec![42, 43]).unwrap();
    let sessions = Sessions::builder([user].into_iter().collect())
        .store(store)
        .clock(clock.clone())
        .throttle(3, 900)
        .build();
    let keys = MemoryKeyStore::builder()
        .key(KEY_ID, SECRET)
        .key(OPEN_KEY_ID, SECRET)
        .key(GONE_KEY_ID, SECRET)
        .build();
    let psk = VerifyPskLayer::new(keys).clock(clock.clone());
    let auth = ArmorAuthLayer::new(psk, sessions.clone()).key_accounts(|key| match key.key_id() {
        KEY_ID => Some(vec![7]),
        OPEN_KEY_ID => Some(Vec::new()),
        _ => None,
    });
    let api = Router::new()
        .fallback(|identity: Identity, headers: http::HeaderMap| async move {
            axum::Json(json!({
                "key_id": identity.key_id(),
                "username": identity.username(),
                "account": identity.account(),
                // An inner layer that logs headers must not print the token or the signature.
                "authorization_sensitive": headers["authorization"].is_sensitive(),
            }))
        })
        .layer(auth);
    TestApp {
        router: api.merge(sessions.router()),
        clock,
        sessions,
    }
}

impl TestApp {
    async fn respond(&self, request: Request<Body>) -> http::Response<Body> {
        self.router.clone().oneshot(request).await.unwrap()
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.respond(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(posted(path, "application/json", body.to_string()))
            .await
    }

    async fn code(&self) -> String {
        let (status, body) = self
            .post_json(
                "/auth/authorize",
                json!({ "username": USER, "password": PASSWORD }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["success"], true);
        assert_eq!(body["redirect_uri"], Value::Null);
        body["code"].as_str().unwrap().to_owned()
    }

    async fn redeem(&self, code: &str) -> (StatusCode, Value) {
        self.post_json(
            "/auth/token",
            json!({ "code": code, "grant_type": "authorization_code" }),
        )
        .await
    }

    /// Checks that `token`'s session and `code` no longer work.
    async fn assert_ended(&self, token: &str, code: &str) {
        let (status, body) = self.as_user(Method::GET, "/x", token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, body) = self.redeem(code).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_grant"))
        );
    }

    async fn token(&self) -> String {
        let code = self.code().await;
        let (status, body) = self.redeem(&code).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn as_user(
        &self,
        method: Method,
        path: &str,
        token: &str,
        account: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("FH-AUTH {token}"));
        if let Some(account) = account {
            request = request.header("x-account-context", account);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn as_key(
        &self,
        key_id: &str,
        method: Method,
        path: &str,
        account: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.signed(key_id, SECRET, method, path);
        if let Some(account) = account {
            request
                .headers_mut()
                .insert("x-account-context", account.parse().unwrap());
        }
        self.send(request).await
    }

    /// A request without a body, signed with `secret` on this app's clock.
    fn signed(&self, key_id: &str, secret: &str, method: Method, path: &str) -> Request<Body> {
        let signer = Signer::new(key_id, secret)
            .unwrap()
            .clock(self.clock.clone());
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(Vec::new())
            .unwrap();
        signer.sign(&mut request).unwrap();
        request.map(Body::from)
    }
}

#[tokio::test]
async fn an_optional_identity_is_none_on_an_open_route_and_some_behind_the_layer() {
    let app = test_app();
    let who = |identity: Option<Identity>| async move {
        identity.map_or("nobody".to_owned(), |identity| {
            format!("{:?}", identity.key_id())
        })
    };
    let open: Router = Router::new().route("/open", axum::routing::get(who));
    let response = open
        .oneshot(Request::get("/open").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"nobody");
    let guarded = Router::new()
        .route("/guarded", axum::routing::get(who))
        .layer(ArmorAuthLayer::new(
            VerifyPskLayer::new(MemoryKeyStore::builder().key(KEY_ID, SECRET).build())
                .clock(app.clock.clone()),
            app.sessions.clone(),
        ));
    let request = app.signed(KEY_ID, SECRET, Method::GET, "/guarded");
    let response = guarded.oneshot(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, format!("Some({KEY_ID:?})"));
}

/// What the session store is given for a code or token: its SHA-256, in URL-safe base64.
fn digest(secret: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(secret))
}

#[tokio::test]
async fn the_session_store_is_never_given_a_code_or_token_as_issued() {
    let store = MokaSessionStore::default();
    let app = test_app_storing(store.clone());
    let code = app.code().await;
    // Not there as issued (so this takes nothing out); there as its digest, as redeeming shows.
    assert_eq!(store.redeem_code(&code, NOW).await.unwrap(), None);
    let (status, body) = app.redeem(&code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(store.session(token, NOW).await.unwrap(), None);
    let record = store.session(&digest(token), NOW).await.unwrap();
    assert_eq!(record.map(|record| record.username), Some(USER.to_owned()));
    assert_eq!(
        app.as_user(Method::GET, "/x", token, None).await.0,
        StatusCode::OK
    );
}

/// A `POST` of `body` to `path`, labelled `content_type`.
fn posted(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

#[tokio::test]
async fn the_whole_sign_in_flow() {
    let app = test_app();
    let code = app.code().await;
    let (status, body) = app.redeem(&code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token.len(), 32);
    assert!(token
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(body["expires_in"], 15);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["id_token"].is_string());

    let (status, body) = app
        .as_user(Method::GET, "/accounts/42", token, Some("42"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["username"], USER);
    assert_eq!(body["account"], 42);
    assert_eq!(body["authorization_sensitive"], true);

    let (status, body) = app
        .as_key(KEY_ID, Method::GET, "/accounts/7", Some("7"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["authorization_sensitive"], true);
}

#[tokio::test]
async fn authorize_takes_json_form_and_user_name() {
    let app = test_app();
    let (status, body) = app
        .post_json(
            "/auth/authorize",
            json!({ "userName": USER, "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let form = posted(
        "/auth/authorize",
        "application/x-www-form-urlencoded",
        format!(
            "username={}&password={}",
            "ann%40example.com",
            PASSWORD.replace(' ', "+")
        ),
    );
    let (status, body) = app.send(form).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .post_json("/auth/authorize", json!({ "user": USER }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_request");
    // JSON after a byte-order mark, and as an array of the fields in order, as serde reads it.
    for body in [
        format!(
            "\u{feff}{}",
            json!({ "username": USER, "password": PASSWORD })
        ),
        json!([USER, PASSWORD]).to_string(),
    ] {
        let request = posted("/auth/authorize", "application/json", body.clone());
        let (status, answer) = app.send(request).await;
        assert_eq!(status, StatusCode::OK, "{body}: {answer}");
    }
}

#[tokio::test]
async fn a_wrong_user_and_a_wrong_password_get_the_same_answer_then_429() {
    let app = test_app();
    let (wrong_password_status, wrong_password) = app
        .post_json(
            "/auth/authorize",
            json!({ "username": USER, "password": "nope" }),
        )
        .await;
    let (wrong_user_status, wrong_user) = app
        .post_json(
            "/auth/authorize",
            json!({ "username": "bob@example.com", "password": PASSWORD }),
        )
        .await;
    assert_eq!(wrong_password_status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (wrong_password_status, &wrong_password),
        (wrong_user_status, &wrong_user)
    );
    assert_eq!(wrong_password["error"]["code"], "invalid_credentials");

    for _ in 0..2 {
        app.post_json(
            "/auth/authorize",
            json!({ "username": USER, "password": "nope" }),
        )
        .await;
    }
    // Three failures: the right password is refused too, until the period ends, which
    // Retry-After names.
    app.clock.advance(100);
    let right = json!({ "username": USER, "password": PASSWORD });
    let response = app
        .respond(posted(
            "/auth/authorize",
            "application/json",
            right.to_string(),
        ))
        .await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "801");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "too_many_attempts");
    app.clock.advance(801);
    app.code().await;
}

#[tokio::test]
async fn a_code_is_good_once_and_for_two_minutes() {
    let app = test_app();
    let code = app.code().await;
    assert_eq!(app.redeem(&code).await.0, StatusCode::OK);
    let (status, body) = app.redeem(&code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_grant");

    let code = app.code().await;
    app.clock.advance(121);
    assert_eq!(app.redeem(&code).await.0, StatusCode::UNAUTHORIZED);

    let code = app.code().await;
    app.clock.advance(120);
    assert_eq!(app.redeem(&code).await.0, StatusCode::OK);

    let (status, body) = app
        .post_json(
            "/auth/token",
            json!({ "code": "x", "grant_type": "password" }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "unsupported_grant_type");
    let (status, _) = app.redeem("never-issued").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn another_method_than_post_on_an_auth_endpoint_is_405_in_the_crates_error_shape() {
    let app = test_app();
    for path in ["/auth/authorize", "/auth/token", "/auth/token/reissue"] {
        let response = app
            .respond(Request::get(path).body(Body::empty()).unwrap())
            .await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(response.headers()["allow"], "POST");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{path}");
    }
}

#[tokio::test]
async fn a_token_request_without_the_code_grant_is_unsupported_and_one_without_a_code_invalid() {
    let app = test_app();
    let code = app.code().await;
    const JSON: &str = "application/json";
    const FORM: &str = "application/x-www-form-urlencoded";
    let (unsupported, invalid) = ("unsupported_grant_type", "invalid_request");
    for (content_type, body, expected) in [
        // Another grant's fields (no code), JSON and form, and a code without a grant type.
        (JSON, json!({ "code": code }).to_string(), unsupported),
        (
            JSON,
            json!({ "grant_type": "password" }).to_string(),
            unsupported,
        ),
        (
            FORM,
            format!("grant_type=password&username={USER}&password=x"),
            unsupported,
        ),
        (FORM, format!("code={code}"), unsupported),
        // A code is needed; and a body with neither field is no token request.
        (
            JSON,
            json!({ "grant_type": "authorization_code" }).to_string(),
            invalid,
        ),
        (JSON, "{}".to_owned(), invalid),
        (JSON, String::new(), invalid),
        (FORM, "username=ann".to_owned(), invalid),
    ] {
        let request = posted("/auth/token", content_type, body.clone());
        let (status, answer) = app.send(request).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(expected)),
            "{body:?}"
        );
    }
    // None of these used the code.
    assert_eq!(app.redeem(&code).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_token_lives_15_minutes_and_reissue_extends_it() {
    let app = test_app();
    let token = app.token().await;
    app.clock.advance(14 * 60);
    let (status, body) = app
        .post_json("/auth/token/reissue", json!({ "token": token }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["access_token"], token.as_str());
    assert_eq!(body["id_token"], Value::Null);
    assert_eq!(body["expires_in"], 15);

    // 15 minutes from the reissue, not from the sign-in.
    app.clock.advance(15 * 60);
    assert_eq!(
        app.as_user(Method::GET, "/x", &token, None).await.0,
        StatusCode::OK
    );
    app.clock.advance(1);
    let (status, body) = app.as_user(Method::GET, "/x", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "invalid_token");
    let (status, _) = app
        .post_json("/auth/token/reissue", json!({ "token": token }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, _) = app.as_user(Method::GET, "/x", "not-a-token", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// The account check, as the route policy, is decided once the request is authenticated: the
/// refused request has used its nonce and MAC, so that one who captured it cannot send it
/// again with another (unsigned) account.
#[tokio::test]
async fn a_request_refused_for_its_account_cannot_be_sent_again_with_another() {
    let app = test_app();
    let mut request = app.signed(KEY_ID, SECRET, Method::GET, "/x");
    let mut again = Request::get("/x").body(Body::empty()).unwrap();
    *again.headers_mut() = request.headers().clone();
    request
        .headers_mut()
        .insert("x-account-context", "8".parse().unwrap());
    again
        .headers_mut()
        .insert("x-account-context", "7".parse().unwrap());
    assert_eq!(app.send(request).await.0, StatusCode::FORBIDDEN);
    let (status, body) = app.send(again).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("replayed_nonce"))
    );
}

#[tokio::test]
async fn the_account_context_is_checked() {
    let app = test_app();
    let token = app.token().await;
    let cases = [
        (Some("43"), StatusCode::OK),
        (Some("44"), StatusCode::FORBIDDEN),
        (Some("forty-two"), StatusCode::BAD_REQUEST),
        (None, StatusCode::OK),
    ];
    for (account, expected) in cases {
        let (status, body) = app.as_user(Method::GET, "/x", &token, account).await;
        assert_eq!(status, expected, "{account:?}: {body}");
    }
    // A key that lists accounts is checked the same way.
    assert_eq!(
        app.as_key(KEY_ID, Method::GET, "/x", Some("7")).await.0,
        StatusCode::OK
    );
    let (status, body) = app.as_key(KEY_ID, Method::GET, "/x", Some("8")).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden_account"))
    );
    assert_eq!(
        app.as_key(KEY_ID, Method::GET, "/x", Some("x")).await.0,
        StatusCode::BAD_REQUEST
    );
    // One that lists none passes the header through.
    let (status, body) = app.as_key(OPEN_KEY_ID, Method::GET, "/x", Some("99")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["account"], 99);
    assert_eq!(
        app.as_key(OPEN_KEY_ID, Method::GET, "/x", Some("x"))
            .await
            .0,
        StatusCode::OK
    );
    // One the accounts lookup no longer knows is refused, not let act on any account.
    for account in [Some("99"), None] {
        let (status, body) = app.as_key(GONE_KEY_ID, Method::GET, "/x", account).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::UNAUTHORIZED, json!("unknown_key")),
            "{account:?}"
        );
    }
}

#[tokio::test]
async fn api_keys_may_not_call_the_user_routes_but_users_may() {
    let app = test_app();
    let token = app.token().await;
    for (method, path) in [
        (Method::GET, "/users/5/keys"),
        (Method::POST, "/users"),
        (Method::POST, "/users/"),
        (Method::PUT, "/users/5"),
        (Method::POST, "/usersecurity/validatemfaphone"),
    ] {
        let (status, body) = app.as_key(OPEN_KEY_ID, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(body["error"]["code"], "forbidden_for_api_key");
        assert_eq!(
            body["error"]["message"],
            "Permission Denied to requested resource."
        );
        let (status, _) = app.as_user(method.clone(), path, &token, None).await;
        assert_eq!(status, StatusCode::OK, "{method} {path} as a user");
    }
    assert_eq!(
        app.as_key(OPEN_KEY_ID, Method::PUT, "/users/me", None)
            .await
            .0,
        StatusCode::OK
    );
    // Nor as a method another method asks to be taken for: a backend may route on the override.
    for (header, value) in [
        ("x-http-method-override", "PUT"),
        ("x-http-method", "put"),
        ("x-method-override", "PATCH, PUT"),
    ] {
        let mut request = app.signed(OPEN_KEY_ID, SECRET, Method::POST, "/users/5");
        request
            .headers_mut()
            .insert(header, http::HeaderValue::from_static(value));
        let (status, body) = app.send(request).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (StatusCode::FORBIDDEN, json!("forbidden_for_api_key")),
            "{header}: {value}"
        );
    }

    // Refused for a bad signature before the policy is looked at: no one learns the list.
    let wrong = app.signed(OPEN_KEY_ID, "wrong", Method::GET, "/users/5/keys");
    let (status, body) = app.send(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "bad_signature");
}

#[tokio::test]
async fn a_request_with_neither_credential_is_told_both_ways_in() {
    let app = test_app();
    let challenges = |authorization: Option<&str>| {
        let mut request = Request::get("/accounts/2");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = app.respond(request.body(Body::empty()).unwrap());
        async move { challenges_of(&response.await) }
    };
    for neither in [None, Some("Bearer abc")] {
        let (status, named) = challenges(neither).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(named, ["ARMOR-PSK", "FH-AUTH"], "{neither:?}");
    }
    // A credential of one scheme that failed is that scheme's alone.
    let malformed = challenges(Some("ARMOR-PSK nonsense")).await;
    assert_eq!(
        malformed,
        (StatusCode::BAD_REQUEST, vec!["ARMOR-PSK".to_owned()])
    );
    let unknown_token = challenges(Some("FH-AUTH no-such-token")).await;
    assert_eq!(
        unknown_token,
        (StatusCode::UNAUTHORIZED, vec!["FH-AUTH".to_owned()])
    );
    // A signed request refused with a 401 of its own names its scheme alone too.
    let wrong = app.signed(OPEN_KEY_ID, "wrong", Method::GET, "/accounts/2");
    assert_eq!(
        challenges_of(&app.respond(wrong).await),
        (StatusCode::UNAUTHORIZED, vec!["ARMOR-PSK".to_owned()])
    );
}

/// A response's status and its `WWW-Authenticate` challenges, in order.
fn challenges_of<B>(response: &http::Response<B>) -> (StatusCode, Vec<String>) {
    let values = response.headers().get_all("www-authenticate").iter();
    let named = values.map(|value| value.to_str().unwrap().to_owned());
    (response.status(), named.collect())
}

#[tokio::test]
async fn a_refusal_that_names_fh_auth_already_is_not_given_a_second_challenge() {
    let sessions = Sessions::builder(Default::default()).build();
    let keys = MemoryKeyStore::builder().key(KEY_ID, SECRET).build();
    let psk = VerifyPskLayer::new(keys).on_rejection(|rejection: &armor_psk::Rejection| {
        let mut response = rejection.to_response();
        response.headers_mut().append(
            "www-authenticate",
            http::HeaderValue::from_static("Bearer realm=\"x\", fh-auth"),
        );
        response
    });
    let app = Router::new()
        .fallback(|| async { "hello" })
        .layer(ArmorAuthLayer::new(psk, sessions));
    let request = Request::get("/accounts/2").body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    let named = ["ARMOR-PSK", "Bearer realm=\"x\", fh-auth"].map(str::to_owned);
    assert_eq!(
        challenges_of(&response),
        (StatusCode::UNAUTHORIZED, named.to_vec())
    );
}

#[tokio::test]
async fn a_routes_own_missing_credentials_is_left_as_it_is() {
    let clock = ManualClock::new(NOW);
    let sessions = Sessions::builder(Default::default()).build();
    let keys = MemoryKeyStore::builder().key(KEY_ID, SECRET).build();
    let psk = VerifyPskLayer::new(keys).clock(clock.clone());
    let app = Router::new()
        .fallback(|| async { armor_psk::Rejection::MissingCredentials })
        .layer(ArmorAuthLayer::new(psk, sessions));
    let signer = Signer::new(KEY_ID, SECRET).unwrap().clock(clock);
    let mut request = Request::get("/accounts/2").body(Vec::new()).unwrap();
    signer.sign(&mut request).unwrap();
    let response = app.oneshot(request.map(Body::from)).await.unwrap();
    assert_eq!(
        challenges_of(&response),
        (StatusCode::UNAUTHORIZED, vec!["ARMOR-PSK".to_owned()])
    );
}

#[tokio::test]
async fn the_policy_is_configurable() {
    let clock = ManualClock::new(NOW);
    let sessions = Sessions::builder(Default::default()).build();
    let keys = MemoryKeyStore::builder().key(OPEN_KEY_ID, SECRET).build();
    let policy = RoutePolicy::empty()
        .deny(Method::GET, "/reports/{id:int}")
        .unwrap();
    let auth = ArmorAuthLayer::new(
        VerifyPskLayer::new(keys).clock(clock.clone()),
        sessions.clone(),
    )
    .route_policy(policy);
    let app = TestApp {
        router: Router::new()
            .route("/{*rest}", get(|| async { "{}" }))
            .layer(auth),
        clock,
        sessions,
    };
    assert_eq!(
        app.as_key(OPEN_KEY_ID, Method::GET, "/reports/3", None)
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.as_key(OPEN_KEY_ID, Method::GET, "/users/5/keys", None)
            .await
            .0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_guesses_cannot_pass_the_throttle() {
    let app = test_app();
    let guesses: Vec<_> = (0..10)
        .map(|i| {
            let router = app.router.clone();
            tokio::spawn(async move {
                let body = json!({ "username": USER, "password": format!("guess {i}") });
                let request = posted("/auth/authorize", "application/json", body.to_string());
                router.oneshot(request).await.unwrap().status()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, throttled), (3, 7), "{statuses:?}");
}

#[tokio::test]
async fn the_policy_holds_behind_nest_for_head_and_for_odd_spellings() {
    let clock = ManualClock::new(NOW);
    let sessions = Sessions::builder(Default::default()).build();
    let keys = MemoryKeyStore::builder().key(OPEN_KEY_ID, SECRET).build();
    let auth = ArmorAuthLayer::new(
        VerifyPskLayer::new(keys).clock(clock.clone()),
        sessions.clone(),
    );
    let api = Router::new()
        .route("/users/{id}/keys", get(|| async { "keys listed" }))
        .route(
            "/users/{id}",
            put(|Path(id): Path<u64>| async move { format!("updated user {id}") }),
        )
        .layer(auth);
    let app = TestApp {
        router: Router::new().nest("/api", api.clone()).merge(api),
        clock,
        sessions,
    };
    for (method, path) in [
        (Method::GET, "/api/users/7/keys"),
        (Method::HEAD, "/users/7/keys"),
        (Method::HEAD, "/api/users/7/keys"),
        // axum routes these to /users/{id}/keys with `..`, `.` or nothing as the id...
        (Method::GET, "/users/../keys"),
        (Method::GET, "/users//keys"),
        (Method::GET, "/users/%2e%2e/keys"),
        (Method::GET, "/users/./keys"),
        // ... and parses `+7` as the u64 7.
        (Method::PUT, "/users/+7"),
        (Method::PUT, "/users/%2B7"),
        (Method::PUT, "/api/users/+7"),
    ] {
        let (status, _) = app.as_key(OPEN_KEY_ID, method.clone(), path, None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    // ... as the same routes without the layer show.
    let open = Router::new().route("/users/{id}/keys", get(|| async { "keys listed" }));
    for path in ["/users/../keys", "/users//keys", "/users/%2e%2e/keys"] {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = open.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn the_account_context_is_one_plain_integer() {
    let app = test_app();
    let token = app.token().await;
    for spelling in ["+42", " 42", "42 ", "0x2a"] {
        let (status, _) = app.as_user(Method::GET, "/x", &token, Some(spelling)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{spelling:?}");
    }
    let request = Request::get("/x")
        .header("authorization", format!("FH-AUTH {token}"))
        .header("x-account-context", "42")
        .header("x-account-context", "99")
        .body(Body::empty())
        .unwrap();
    let (status, body) = app.send(request).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_account_context"))
    );
}

#[tokio::test]
async fn a_session_a_reload_ends_is_not_kept_alive_by_reissues() {
    let store = MokaSessionStore::default();
    let app = test_app_storing(store.clone());
    let token = app.token().await;
    let code = app.code().await;
    let ann = app.sessions.users().get(USER).cloned().unwrap();
    // A reload that changes nothing of ann's keeps her session.
    app.sessions.set_users((*app.sessions.users()).clone());
    assert_eq!(
        app.as_user(Method::GET, "/x", &token, None).await.0,
        StatusCode::OK
    );

    app.sessions.set_users(Users::default());
    app.assert_ended(&token, &code).await;
    // A reissue is refused, and does not keep the session alive meanwhile.
    app.clock.advance(60);
    let (status, _) = app
        .post_json("/auth/token/reissue", json!({ "token": token }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let record = store.session(&digest(&token), NOW + 60).await.unwrap();
    assert_eq!(record.map(|record| record.expires_at), Some(NOW + 900));

    // Listed again with the same hash, as documented, she has it back; but only until it
    // expires as issued.
    app.sessions.set_users([ann].into_iter().collect());
    assert_eq!(
        app.as_user(Method::GET, "/x", &token, None).await.0,
        StatusCode::OK
    );
    app.clock.set(NOW + 901);
    let (status, body) = app.as_user(Method::GET, "/x", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn a_new_password_ends_the_sessions_and_codes_of_the_old_one() {
    let app = test_app();
    let token = app.token().await;
    let code = app.code().await;
    let sessions_before = app.as_user(Method::GET, "/x", &token, None).await.0;
    assert_eq!(sessions_before, StatusCode::OK);

    // A reload gives ann a new password.
    let new_hash = hash_password("a new password").unwrap();
    let user = User::new(USER, new_hash, vec![42, 43]).unwrap();
    app.sessions.set_users([user].into_iter().collect());
    app.assert_ended(&token, &code).await;
    let (status, body) = app
        .post_json("/auth/token/reissue", json!({ "token": token }))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    // The old password no longer signs in; the new one does.
    let (status, _) = app
        .post_json(
            "/auth/authorize",
            json!({ "username": USER, "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = app
        .post_json(
            "/auth/authorize",
            json!({ "username": USER, "password": "a new password" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn an_empty_or_oversized_username_or_password_is_refused_before_it_is_counted_or_hashed() {
    let app = test_app();
    let long_name = format!("{}@example.com", "a".repeat(250));
    let long_password = "p".repeat(1025);
    for (username, password) in [
        (long_name.as_str(), PASSWORD),
        ("", PASSWORD),
        (USER, long_password.as_str()),
    ] {
        for _ in 0..4 {
            let (status, body) = app
                .post_json(
                    "/auth/authorize",
                    json!({ "username": username, "password": password }),
                )
                .await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_request"))
            );
        }
    }
    // Not counted: ann (three failures allowed) still signs in.
    app.code().await;
}

#[tokio::test]
async fn an_auth_body_over_16_kib_is_413_in_the_crates_error_shape() {
    let app = test_app();
    let padding = "x".repeat(armor_psk::session::MAX_AUTH_BODY);
    let (status, body) = app
        .post_json(
            "/auth/authorize",
            json!({ "username": USER, "password": PASSWORD, "padding": padding }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );
    // A declared length over the limit is refused before a byte is read.
    let request = Request::post("/auth/authorize")
        .header("content-type", "application/json")
        .header("content-length", "1000000000")
        .body(Body::from("{}"))
        .unwrap();
    let (status, body) = app.send(request).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );
}

#[tokio::test(start_paused = true)]
async fn an_auth_body_that_does_not_arrive_is_408() {
    let app = test_app();
    // A body whose first bytes come and whose rest never does.
    let (sender, body) = {
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
        let stream = tokio_stream_of(receiver);
        (sender, Body::from_stream(stream))
    };
    sender.try_send(Ok(b"{\"username\":".to_vec())).unwrap();
    let request = posted("/auth/authorize", "application/json", body);
    let started = tokio::time::Instant::now();
    // Bounded, so that a missing timeout fails the test instead of hanging it.
    let answer = tokio::time::timeout(Duration::from_secs(11), app.send(request)).await;
    let (status, body) = answer.expect("answered within the body timeout");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::REQUEST_TIMEOUT, Some("body_timeout"))
    );
    assert_eq!(started.elapsed(), armor_psk::verify::DEFAULT_BODY_TIMEOUT);
    drop(sender);
}

/// `receiver` as a stream (what tokio-stream's `ReceiverStream` does).
fn tokio_stream_of<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

#[tokio::test]
async fn a_code_is_url_safe_and_survives_an_unencoded_form() {
    let app = test_app();
    let code = app.code().await;
    assert!(
        code.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{code}"
    );
    // As `curl -d "code=$CODE&grant_type=authorization_code"` sends it: not encoded.
    let request = posted(
        "/auth/token",
        "application/x-www-form-urlencoded",
        format!("code={code}&grant_type=authorization_code"),
    );
    let (status, body) = app.send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_token_request_sent_as_json_but_labelled_a_form_is_read_as_json() {
    let app = test_app();
    let code = app.code().await;
    let body = json!({ "code": code, "grant_type": "authorization_code" });
    let request = posted(
        "/auth/token",
        "application/x-www-form-urlencoded",
        body.to_string(),
    );
    let (status, body) = app.send(request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
}
