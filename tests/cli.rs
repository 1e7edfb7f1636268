//! End to end: the real `armor-psk` binary on a free port, driven with the crate's signer.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use armor_psk::session::hash_password;
use armor_psk::Signer;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_armor-psk");
const KEY_ID: &str = "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f";
const SECRET: &str = "cli-test-secret-0123456789";
const ACCOUNT_KEY_ID: &str = "key-for-account-7";
const DATE_KEY_ID: &str = "license-key-for-date-hmac";
const USER: &str = "ann@example.com";
const PASSWORD: &str = "correct horse battery staple";

/// A running server; killed on drop. Its stderr is collected for the log checks.
struct Server {
    child: Child,
    base: String,
    stdout_lines: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(args: &[&str], stdout_lines: usize) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "trace")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        for _ in 0..stdout_lines {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            lines.push(line.trim_end().to_owned());
        }
        let base = lines[0]
            .rsplit_once(' ')
            .map(|(_, url)| url.to_owned())
            .expect("the first line names the address");
        assert!(base.starts_with("http://127.0.0.1:"), "{lines:?}");
        Server {
            child,
            base,
            stdout_lines: lines,
            stderr,
        }
    }

    /// What the server printed after `prefix` at the start of one of the lines it was started
    /// to print.
    fn printed(&self, prefix: &str) -> String {
        let lines = &self.stdout_lines;
        lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {lines:#?}"))
            .trim()
            .to_owned()
    }

    /// One of the server's memory figures from `/proc/<pid>/status` (`VmRSS:`, `VmHWM:`), in
    /// bytes.
    #[cfg(target_os = "linux")]
    fn memory(&self, field: &str) -> usize {
        let value = proc_status(&self.child, field).expect("the field is there");
        let kib: usize = value.split_whitespace().next().unwrap().parse().unwrap();
        kib * 1024
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The logs once the server has exited and said it shut down (its stderr is read on
    /// another thread, to its end), or after five seconds.
    fn logs_after_shutdown(&self) -> String {
        let started = std::time::Instant::now();
        while !self.logs().contains("shut down") && started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.logs()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> (StatusCode, Value) {
        let (status, _, body) = self.respond(method, path, headers, body).await;
        (status, body)
    }

    /// [`Server::send`], with the response's headers.
    async fn respond(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> (StatusCode, http::HeaderMap, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let response = client.request(request).await.expect("the server answers");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
        )
    }

    async fn signed(
        &self,
        key_id: &str,
        method: Method,
        path: &str,
        body: &str,
        extra: &[(&str, String)],
    ) -> (StatusCode, Value) {
        let headers = signed_headers(key_id, &method, path, body, extra);
        self.send(method, path, &headers, body).await
    }

    async fn sign_in(&self) -> String {
        let (status, body) = self
            .send(
                Method::POST,
                "/auth/authorize",
                &[("content-type", "application/json".into())],
                &json!({ "username": USER, "password": PASSWORD }).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let code = body["code"].as_str().unwrap();
        let (status, body) = self
            .send(
                Method::POST,
                "/auth/token",
                &[("content-type", "application/json".into())],
                &json!({ "code": code, "grant_type": "authorization_code" }).to_string(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }
}

fn keys_file(dir: &Path) -> std::path::PathBuf {
    let hash = hash_password(PASSWORD).unwrap();
    let path = dir.join("keys.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[keys]]
id = "{KEY_ID}"
secret = "{SECRET}"
name = "ci"

[[keys]]
id = "{ACCOUNT_KEY_ID}"
secret = "{SECRET}"
accounts = [7]

[[keys]]
id = "{DATE_KEY_ID}"
secret = "{SECRET}"
schemes = ["date-hmac"]

[[keys]]
id = "disabled-key"
secret = "{SECRET}"
disabled = true

[[users]]
username = "{USER}"
password_hash = "{hash}"
accounts = [42, 43]
"#
        ),
    )
    .unwrap();
    path
}

/// `extra` and the `Authorization` header of a request `key_id` signed with ARMOR-PSK, now.
fn signed_headers<'a>(
    key_id: &str,
    method: &Method,
    path: &str,
    body: &str,
    extra: &[(&'a str, String)],
) -> Vec<(&'a str, String)> {
    let header = Signer::new(key_id, SECRET)
        .unwrap()
        .authorization(method, path, body.as_bytes())
        .unwrap();
    let mut headers = vec![("authorization", header.to_str().unwrap().to_owned())];
    headers.extend(extra.iter().cloned());
    headers
}

/// The `Date` and `Authorization` headers of a request `key_id` signed with the signed-Date
/// scheme, now.
fn date_signed(key_id: &str) -> Vec<(&'static str, String)> {
    let mut dated = axum::http::Request::new(());
    armor_psk::date_hmac::DateHmacSigner::new(key_id, SECRET)
        .unwrap()
        .sign(&mut dated)
        .unwrap();
    ["date", "authorization"]
        .into_iter()
        .map(|name| (name, dated.headers()[name].to_str().unwrap().to_owned()))
        .collect()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn serves_both_schemes_the_policy_and_the_echo() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--keys", keys_file(dir.path()).to_str().unwrap()], 1);

    let (status, body) = server.signed(KEY_ID, Method::GET, "/me", "", &[]).await;
    assert_eq!(
        (status, &body),
        (StatusCode::OK, &json!({ "key_id": KEY_ID }))
    );

    let payload = r#"{"name":"web-1"}"#;
    let (status, body) = server
        .signed(
            KEY_ID,
            Method::POST,
            "/core/vms?page=2",
            payload,
            &[("x-account-context", "55".into())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["identity"]["key_id"], KEY_ID);
    assert_eq!(body["identity"]["account"], 55);
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/core/vms");
    assert_eq!(body["query"], "page=2");
    assert_eq!(body["body_form"], "digest");
    assert_eq!(body["body_length"], payload.len());

    // The signed-Date scheme signs no body: no body form is echoed, or counted.
    let headers = date_signed(DATE_KEY_ID);
    let (status, body) = server.send(Method::POST, "/core/x", &headers, "{}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["identity"]["key_id"], DATE_KEY_ID);
    assert_eq!(body["body_form"], Value::Null);
    assert_eq!(body["body_length"], 2);

    // Each scheme finds only its own keys: an ARMOR-PSK key may not sign a replayable Date.
    let (status, body) = server
        .send(Method::GET, "/x", &date_signed(KEY_ID), "")
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_api_key"))
    );
    let (status, body) = server.signed(DATE_KEY_ID, Method::GET, "/x", "", &[]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unknown_key")
    );

    // `sign --scheme date-hmac` prints the two header lines such a request needs, and the
    // server takes them; it has no nonce to set.
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let sign_date = |extra: &[&str]| {
        Command::new(BIN)
            .args(["sign", "--scheme", "date-hmac", "--key-id", DATE_KEY_ID])
            .arg("--secret-file")
            .arg(&secret_file)
            .args(extra)
            .args(["GET", "http://h/x"])
            .output()
            .unwrap()
    };
    let output = sign_date(&[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    let headers: Vec<(&str, String)> = printed
        .lines()
        .map(|line| line.split_once(": ").unwrap())
        .map(|(name, value)| {
            (
                if name == "Date" {
                    "date"
                } else {
                    "authorization"
                },
                value.to_owned(),
            )
        })
        .collect();
    assert_eq!(printed.lines().count(), 2, "{printed}");
    assert!(printed.starts_with("Date: "), "{printed}");
    assert!(
        printed
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(r#"Authorization: algorithm="hmac-sha256",headers="date",signature=""#),
        "{printed}"
    );
    let (status, body) = server.send(Method::GET, "/x", &headers, "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["identity"]["scheme"], "date-hmac");
    assert_eq!(sign_date(&["--nonce", "n"]).status.code(), Some(2));
    let refused = sign_date(&["--form", "raw"]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("--form does not apply to date-hmac"),
        "{stderr}"
    );

    // Only GET /me answers the identity; another method there is echoed (and not told that
    // only GET is allowed).
    let headers = signed_headers(KEY_ID, &Method::POST, "/me", "{}", &[]);
    let (status, answer_headers, body) = server.respond(Method::POST, "/me", &headers, "{}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(answer_headers.get("allow"), None);
    assert_eq!(
        (&body["method"], &body["path"]),
        (&json!("POST"), &json!("/me"))
    );

    let (status, body) = server
        .signed("disabled-key", Method::GET, "/me", "", &[])
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unknown_key")
    );

    // The route policy: keys are refused after authentication, users pass.
    let token = server.sign_in().await;
    let fh = vec![("authorization", format!("FH-AUTH {token}"))];
    for (method, path) in [
        (Method::GET, "/users/12/keys"),
        (Method::DELETE, "/users/12/keys/abc"),
        (Method::POST, "/users/12/keys"),
        (Method::GET, "/users/12/ActivationCode"),
        (Method::POST, "/users/resetpassword"),
        (Method::POST, "/users/setpassword"),
        (Method::PUT, "/users/12"),
        (Method::POST, "/users/status"),
        (Method::POST, "/users/"),
        (Method::POST, "/users"),
        (Method::POST, "/users/12/invite"),
        (Method::GET, "/users/LockedOut/1/a@b.c"),
        (Method::POST, "/users/unlock/1/a@b.c"),
        (Method::DELETE, "/users/softDelete"),
        (Method::PUT, "/usersecurity/challengephrase"),
        (Method::GET, "/usersecurity/securityinformation/ref"),
        (Method::POST, "/usersecurity/securityinformation/ref"),
        (
            Method::POST,
            "/usersecurity/securityinformation/existing/ref",
        ),
        (Method::GET, "/usersecurity/challengephrase/12"),
        (Method::POST, "/usersecurity/validatemfaphone"),
        (Method::POST, "/usersecurity/securityinformation/1/12"),
        (Method::POST, "/usersecurity/validatephoneapppin"),
    ] {
        let (status, body) = server.signed(KEY_ID, method.clone(), path, "", &[]).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::FORBIDDEN, "forbidden_for_api_key"),
            "{method} {path}"
        );
        let (status, body) = server.send(method.clone(), path, &fh, "").await;
        assert_eq!(status, StatusCode::OK, "{method} {path} as a user: {body}");
        assert_eq!(body["identity"]["username"], USER);
    }
    // {id:int} takes digits only; the method must match.
    assert_eq!(
        server
            .signed(KEY_ID, Method::PUT, "/users/me", "", &[])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server
            .signed(KEY_ID, Method::GET, "/users/12", "", &[])
            .await
            .0,
        StatusCode::OK
    );

    let (status, body) = server.send(Method::GET, "/me", &fh, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "username": USER, "accounts": [{ "id": 42 }, { "id": 43 }] })
    );

    // X-Account-Context: one of the user's accounts, or 403; not an integer, 400.
    let with_account = |account: &str| {
        let mut headers = fh.clone();
        headers.push(("x-account-context", account.to_owned()));
        headers
    };
    assert_eq!(
        server
            .send(Method::GET, "/x", &with_account("43"), "")
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = server
        .send(Method::GET, "/x", &with_account("44"), "")
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden_account")
    );
    let (status, body) = server
        .send(Method::GET, "/x", &with_account("abc"), "")
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_account_context")
    );
    // A key that lists accounts is checked like a user.
    let account = |value: &str| [("x-account-context", value.to_owned())];
    assert_eq!(
        server
            .signed(ACCOUNT_KEY_ID, Method::GET, "/x", "", &account("7"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server
            .signed(ACCOUNT_KEY_ID, Method::GET, "/x", "", &account("8"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // A code is good once over HTTP too (its two-minute expiry is tested with an injected clock
    // in tests/session.rs).
    let json_header = [("content-type", "application/json".to_owned())];
    let sign_in = json!({ "username": USER, "password": PASSWORD }).to_string();
    let (_, body) = server
        .send(Method::POST, "/auth/authorize", &json_header, &sign_in)
        .await;
    let redeem = json!({ "code": body["code"], "grant_type": "authorization_code" }).to_string();
    assert_eq!(
        server
            .send(Method::POST, "/auth/token", &json_header, &redeem)
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = server
        .send(Method::POST, "/auth/token", &json_header, &redeem)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "invalid_grant")
    );

    // Reissue over HTTP answers the same token.
    let (status, body) = server
        .send(
            Method::POST,
            "/auth/token/reissue",
            &[("content-type", "application/json".into())],
            &json!({ "token": token }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["access_token"], token.as_str());
    assert_eq!(body["id_token"], Value::Null);

    // Metrics count outcomes and body forms.
    let (status, metrics) = server.send(Method::GET, "/metrics", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(
        metrics.contains(r#"armor_psk_requests_total{outcome="forbidden_for_api_key"} 22"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"armor_psk_requests_total{outcome="unknown_key"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"armor_psk_requests_total{outcome="invalid_api_key"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"armor_psk_body_forms_total{form="digest"} 2"#),
        "{metrics}"
    );
    // The keys' bodiless requests; the signed-Date one is not among them.
    assert!(
        metrics.contains(r#"armor_psk_body_forms_total{form="empty"} 4"#),
        "{metrics}"
    );

    // One line per request, and never a secret, a signature or a token in the logs.
    let logs = server.logs();
    assert!(logs.contains("path=\"/core/vms\""), "{logs}");
    for secret in [SECRET, token.as_str(), PASSWORD] {
        assert!(!logs.contains(secret), "the logs hold a secret: {secret}");
    }
    let header_prefix = format!("{KEY_ID}:");
    let leaked: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains(&header_prefix))
        .collect();
    assert!(
        leaked.is_empty(),
        "the logs hold an Authorization header: {leaked:#?}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_keys_file_and_a_broken_file_keeps_the_old_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = keys_file(dir.path());
    let server = Server::start(&["--keys", path.to_str().unwrap()], 1);
    assert_eq!(
        server.signed(KEY_ID, Method::GET, "/me", "", &[]).await.0,
        StatusCode::OK
    );

    std::fs::write(
        &path,
        format!("[[keys]]\nid = \"new-key\"\nsecret = \"{SECRET}\"\n"),
    )
    .unwrap();
    hang_up(&server.child);
    let mut accepted = false;
    for _ in 0..100 {
        if server
            .signed("new-key", Method::GET, "/me", "", &[])
            .await
            .0
            == StatusCode::OK
        {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(accepted, "the new key was not loaded: {}", server.logs());
    let (status, body) = server.signed(KEY_ID, Method::GET, "/me", "", &[]).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unknown_key")
    );

    // A broken file, then good keys with a broken [[users]]: each time nothing is swapped.
    let good_keys_bad_users = format!(
        "[[keys]]\nid = \"third-key\"\nsecret = \"{SECRET}\"\n\
         [[users]]\nusername = \"u\"\npassword_hash = \"plain\"\n"
    );
    for (failures, text) in [(1, "[[keys]\nid = ".to_owned()), (2, good_keys_bad_users)] {
        std::fs::write(&path, text).unwrap();
        hang_up(&server.child);
        let mut logged = false;
        for _ in 0..100 {
            if server.logs().matches("reload failed").count() == failures {
                logged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(logged, "{}", server.logs());
        assert_eq!(
            server
                .signed("new-key", Method::GET, "/me", "", &[])
                .await
                .0,
            StatusCode::OK
        );
    }
    let (status, body) = server
        .signed("third-key", Method::GET, "/me", "", &[])
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unknown_key")
    );
}

/// Whether `child` has a handler for SIGHUP (signal 1: the lowest bit of its caught mask).
fn catches_hangup(child: &Child) -> bool {
    proc_status(child, "SigCgt:")
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 != 0)
}

/// What follows `field` (`VmRSS:`, `SigCgt:`) in the child's `/proc/<pid>/status`, if it is
/// there (Linux).
fn proc_status(child: &Child, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .map(|value| value.trim().to_owned())
}

/// The child's exit status, once it has exited; a panic if it is still running after `limit`.
fn exit_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn hang_up(child: &Child) {
    send_signal(child, "HUP");
}

fn send_signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigint_and_sigterm_shut_the_server_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path());
    for signal in ["INT", "TERM"] {
        let mut server = Server::start(&["--keys", keys.to_str().unwrap()], 1);
        assert_eq!(
            server.signed(KEY_ID, Method::GET, "/me", "", &[]).await.0,
            StatusCode::OK
        );
        send_signal(&server.child, signal);
        let status = exit_within(&mut server.child, Duration::from_secs(10));
        assert!(status.success(), "SIG{signal}: {status}");
        let logs = server.logs_after_shutdown();
        assert!(logs.contains("shut down"), "SIG{signal}: {logs}");
    }
}

#[tokio::test]
async fn a_connection_with_half_a_request_does_not_hold_the_shutdown() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path());
    // A grace the first server outlasts; then a second signal, which closes at once.
    for (grace, signals) in [("1", &["TERM"][..]), ("600", &["TERM", "INT"][..])] {
        let keys = keys.to_str().unwrap();
        let mut server = Server::start(&["--keys", keys, "--shutdown-grace", grace], 1);
        let address = server.base.trim_start_matches("http://").to_owned();
        let mut stalled = std::net::TcpStream::connect(&address).unwrap();
        stalled
            .write_all(b"GET /me HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        let mut signalled = std::time::Instant::now();
        for signal in signals {
            std::thread::sleep(Duration::from_millis(300));
            signalled = std::time::Instant::now();
            send_signal(&server.child, signal);
        }
        let status = exit_within(&mut server.child, Duration::from_secs(15));
        assert!(status.success(), "grace {grace}: {status}");
        // The grace was waited out (the first), or cut short by the second signal.
        let waited = signalled.elapsed();
        if signals.len() == 1 {
            assert!(waited >= Duration::from_millis(900), "{waited:?}");
        } else {
            assert!(waited < Duration::from_secs(5), "{waited:?}");
        }
        let logs = server.logs_after_shutdown();
        assert!(
            logs.contains("closing the connections still open"),
            "{logs}"
        );
        assert!(logs.contains("shut down"), "{logs}");
        drop(stalled);
    }
}

#[test]
fn a_hangup_while_the_keys_file_loads_does_not_end_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    // Three to four seconds to load in a debug build: the hangup comes while it does.
    let text: String = (0..80_000)
        .map(|n| format!("[[keys]]\nid = \"k{n}\"\nsecret = \"s{n}\"\n"))
        .collect();
    std::fs::write(&keys, text).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--keys"])
        .arg(&keys)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    // Sent once the server catches SIGHUP, or after two seconds: a server that catches it only
    // once its keys are loaded is still loading them then, and ends.
    let started = std::time::Instant::now();
    while !catches_hangup(&child) && started.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(2));
    }
    hang_up(&child);
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    let _ = child.kill();
    let status = child.wait().unwrap();
    assert!(
        line.starts_with("armor-psk: serving"),
        "{read:?} {line:?} {status}"
    );
}

#[test]
fn a_missing_or_malformed_keys_file_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[[keys]]\nid = \"a\"\nsecret = \"topsecret\nname = 1\n",
    )
    .unwrap();
    let bad_hash = dir.path().join("bad-hash.toml");
    std::fs::write(
        &bad_hash,
        "[[users]]\nusername = \"u\"\npassword_hash = \"plain\"\n",
    )
    .unwrap();
    // A value of the wrong type is not quoted (serde would: "invalid type: integer `…`").
    let hash_of_wrong_type = dir.path().join("hash-of-wrong-type.toml");
    std::fs::write(
        &hash_of_wrong_type,
        "[[users]]\nusername = \"u\"\npassword_hash = 8675309123\n",
    )
    .unwrap();
    // A misspelt table: the server would start without its users.
    let misspelt_table = dir.path().join("misspelt-table.toml");
    std::fs::write(
        &misspelt_table,
        "[[keys]]\nid = \"a\"\nsecret = \"topsecret\"\n\n[[user]]\nusername = \"u\"\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.toml");
    // Caught while it was being rewritten: it would start the server with no keys.
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    for path in [
        &broken,
        &bad_hash,
        &hash_of_wrong_type,
        &misspelt_table,
        &missing,
        &empty,
    ] {
        let output = exited_within(
            Command::new(BIN)
                .args(["serve", "--listen", "127.0.0.1:0", "--keys"])
                .arg(path),
            Duration::from_secs(30),
        );
        assert_eq!(output.status.code(), Some(2), "{path:?}");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("armor-psk: error: "), "{stderr}");
        assert!(stderr.contains(&path.display().to_string()), "{stderr}");
        assert!(
            !stderr.contains("panicked")
                && !stderr.contains("topsecret")
                && !stderr.contains("8675309123"),
            "{stderr}"
        );
    }
}

/// What `command` printed and how it exited; fails the test, and kills it, if it still runs
/// after `limit` (a server that started where it should have refused to).
fn exited_within(command: &mut Command, limit: Duration) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    exit_within(&mut child, limit);
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn demo_prints_lines_that_work() {
    let server = Server::start(&["--demo"], 9);
    let lines = &server.stdout_lines;
    let field = |prefix: &str| server.printed(prefix);
    let key_id = field("demo key id:");
    let secret = field("demo secret:");
    assert_eq!(field("demo user:"), "demo@example.com");
    let password = field("demo password:");
    assert!(uuid::Uuid::parse_str(&key_id).is_ok(), "{key_id}");
    assert_eq!(secret.len(), 44, "32 bytes of base64: {secret}");
    assert_eq!(
        lines[5],
        "Paste to try (a signature is good once, within 5 minutes):"
    );
    let curl = lines[6].trim();
    assert!(
        curl.starts_with(&format!(
            "curl -sS {}/me -H 'Authorization: ARMOR-PSK {key_id}:",
            server.base
        )),
        "{curl}"
    );
    let sign = lines[7].trim();
    assert!(sign.starts_with("ARMOR_PSK_SECRET='"), "{sign}");
    assert!(
        sign.ends_with(&format!(
            "sign --key-id {key_id} --secret-env ARMOR_PSK_SECRET --curl GET {}/me | sh",
            server.base
        )),
        "{sign}"
    );
    let authorize = lines[8].trim();
    assert!(
        authorize.contains(&format!("-X POST {}/auth/authorize", server.base)),
        "{authorize}"
    );
    assert!(authorize.contains(&password), "{authorize}");

    // Each line, pasted into a shell, works.
    let run = |line: &str| {
        let output = Command::new("sh").args(["-c", line]).output().unwrap();
        assert!(
            output.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap_or(Value::Null)
    };
    assert_eq!(run(curl), json!({ "key_id": key_id }));
    assert_eq!(
        run(curl)["error"]["code"],
        "replayed_nonce",
        "a pasted header is good once"
    );
    assert_eq!(run(sign), json!({ "key_id": key_id }));
    // A path with dot segments goes as it was signed (curl would resolve them otherwise).
    let dotted = sign.replace(
        &format!("GET {}/me", server.base),
        &format!("GET {}/core/../x", server.base),
    );
    let echoed = run(&dotted);
    assert_eq!(echoed["path"], "/core/../x", "{echoed}");
    // Brackets and braces go as written (curl would expand them as patterns otherwise).
    let globbed = sign.replace(
        &format!("GET {}/me", server.base),
        &format!("GET '{}/x?filter[name]={{a,b}}'", server.base),
    );
    assert_eq!(run(&globbed)["path"], "/x");
    let authorized = run(authorize);
    assert_eq!(authorized["success"], true, "{authorized}");

    // --demo turns --explain on: a bad signature comes back with the server's signing strings.
    let wrong = Signer::new(key_id.as_str(), "not the secret").unwrap();
    let header = wrong
        .authorization_with(
            &Method::POST,
            "/core/x",
            b"{}",
            "n1",
            armor_psk::clock::Clock::now_unix(&armor_psk::clock::SystemClock),
        )
        .unwrap();
    let (status, body) = server
        .send(
            Method::POST,
            "/core/x?q=1",
            &[("authorization", header.to_str().unwrap().to_owned())],
            "{}",
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "bad_signature")
    );
    let explained = body["error"]["signing_strings"]
        .as_array()
        .expect("signing strings");
    let forms: Vec<&str> = explained
        .iter()
        .map(|e| e["form"].as_str().unwrap())
        .collect();
    assert_eq!(forms, ["digest", "raw"]);
    let raw = explained[1]["signing_string"].as_str().unwrap();
    assert!(
        raw.starts_with(&format!("{key_id}POST/core/xn1")) && raw.ends_with("{}"),
        "{raw}"
    );
    assert!(!body.to_string().contains(&secret));

    // A body cut short under --explain is a read failure, not a body too large.
    let address = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /core/x HTTP/1.1\r\nhost: {address}\r\nauthorization: {}\r\ncontent-length: 100\r\n\r\n0123456789",
        header.to_str().unwrap()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("body_read_failed"), "{answer}");

    // --explain reads no body before the verifier's earlier checks: an unknown key with a body
    // over the limit is 401 unknown_key (not 413), and its body is never waited for.
    let stranger = Signer::new("no-such-key", "whatever").unwrap();
    let header = stranger
        .authorization_with(
            &Method::POST,
            "/core/x",
            b"",
            "n2",
            armor_psk::clock::Clock::now_unix(&armor_psk::clock::SystemClock),
        )
        .unwrap();
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let head = format!(
        "POST /core/x HTTP/1.1\r\nhost: {address}\r\nauthorization: {}\r\ncontent-length: 3145728\r\n\r\n",
        header.to_str().unwrap()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = [0u8; 4096];
    let read = stream.read(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("unknown_key"), "{answer}");

    // SIGHUP has no file to reload in demo mode, and does not end the server.
    hang_up(&server.child);
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = server.send(Method::GET, "/metrics", &[], "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        server.logs().contains("no keys file to reload"),
        "{}",
        server.logs()
    );
}

/// The verifier's replay store (about 34 MB of table) is built as the server starts, not by
/// the first request, which would wait for it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_replay_store_is_built_before_the_first_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&["--keys", keys_file(dir.path()).to_str().unwrap()], 1);
    let before = server.memory("VmRSS:");
    let (status, body) = server.signed(KEY_ID, Method::GET, "/me", "", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let grown = server.memory("VmRSS:").saturating_sub(before);
    assert!(grown < 8 << 20, "the first request added {grown} bytes");
}

/// `--explain` keeps a copy of the body it may explain: one copy, however many chunks the body
/// came in (a handle for each would take 32 bytes for each byte of a body sent a byte a chunk).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn explain_keeps_a_body_sent_a_byte_a_chunk_in_one_copy() {
    const BODY_BYTES: usize = 1 << 18;
    let server = Server::start(&["--demo"], 9);
    let key_id = server.printed("demo key id:");
    let peak_memory = || server.memory("VmHWM:");
    // Sends a body of BODY_BYTES in chunks of `chunk` bytes, with a signature that fails.
    let send_in_chunks = |chunk: usize, nonce: &str| {
        let header = Signer::new(key_id.as_str(), "not the secret")
            .unwrap()
            .authorization_with(
                &Method::POST,
                "/x",
                b"",
                nonce,
                armor_psk::clock::Clock::now_unix(&armor_psk::clock::SystemClock),
            )
            .unwrap();
        let mut wire = format!(
            "POST /x HTTP/1.1\r\nhost: h\r\nconnection: close\r\nauthorization: {}\r\n\
             transfer-encoding: chunked\r\n\r\n",
            header.to_str().unwrap()
        )
        .into_bytes();
        for _ in 0..BODY_BYTES / chunk {
            wire.extend_from_slice(format!("{chunk:x}\r\n").as_bytes());
            wire.extend(std::iter::repeat_n(b'a', chunk));
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let address = server.base.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream.write_all(&wire).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "{}",
            &answer[..answer.len().min(300)]
        );
        assert!(answer.contains("signing_strings"));
    };
    // The same body in large chunks first: what explaining one takes at all.
    send_in_chunks(64 * 1024, "large-chunks");
    let before = peak_memory();
    send_in_chunks(1, "one-byte-chunks");
    let grown = peak_memory() - before;
    assert!(grown < 16 * BODY_BYTES, "peak memory grew by {grown} bytes");
}

#[test]
fn keygen_sign_and_hash_password() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    for name in ["first", "second"] {
        let output = Command::new(BIN)
            .args(["keygen", "--keys"])
            .arg(&keys)
            .args(["--name", name])
            .output()
            .unwrap();
        assert!(output.status.success());
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(stdout.contains("secret: "), "{stdout}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&keys).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let store = armor_psk::key_store::FileKeyStore::open(&keys).unwrap();
    assert_eq!(store.len(), 2);
    #[cfg(unix)]
    {
        // Through a symlink, to a file others may read: the link stays, the mode is kept,
        // and keygen says what it found. Nothing is left beside the file.
        use std::os::unix::fs::PermissionsExt;
        let shared = dir.path().join("shared.toml");
        std::fs::write(&shared, "[[keys]]\nid = \"old\"\nsecret = \"s\"").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        let output = Command::new(BIN)
            .args(["keygen", "--keys"])
            .arg(&link)
            .output()
            .unwrap();
        assert!(output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("mode 0644") && stderr.contains("chmod"),
            "{stderr}"
        );
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        let shared = armor_psk::key_store::FileKeyStore::open(&link).unwrap();
        assert_eq!(shared.len(), 2);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{names:?}");
        // A symlink to nothing is refused, and left as it is.
        let dangling = dir.path().join("dangling.toml");
        std::os::unix::fs::symlink(dir.path().join("nowhere.toml"), &dangling).unwrap();
        let output = Command::new(BIN)
            .args(["keygen", "--keys"])
            .arg(&dangling)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        assert!(std::fs::symlink_metadata(&dangling).unwrap().is_symlink());
        assert!(!dir.path().join("nowhere.toml").exists());
    }
    let text = std::fs::read_to_string(&keys).unwrap();
    let table: toml::Value = toml::from_str(&text).unwrap();
    let first = &table["keys"][0];
    let (key_id, secret) = (
        first["id"].as_str().unwrap(),
        first["secret"].as_str().unwrap(),
    );
    assert_eq!(first["name"].as_str(), Some("first"));
    assert!(secret.len() >= 43);

    // sign: the header it prints verifies against the same key.
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let output = Command::new(BIN)
        .args(["sign", "--key-id", key_id, "--secret-file"])
        .arg(&secret_file)
        .args([
            "--form",
            "raw",
            "--nonce",
            "fixed-nonce",
            "POST",
            "http://h/core/x?y=1",
            "--data",
            "{}",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let header = String::from_utf8(output.stdout).unwrap();
    let credential = armor_psk::psk::Credential::parse(header.trim()).unwrap();
    assert_eq!(credential.key_id(), key_id);
    assert_eq!(credential.nonce(), "fixed-nonce");
    let expected = Signer::new(key_id, secret)
        .unwrap()
        .body_form(armor_psk::psk::BodyForm::Raw)
        .authorization_with(
            &Method::POST,
            "/core/x",
            b"{}",
            "fixed-nonce",
            credential.timestamp(),
        )
        .unwrap();
    assert_eq!(header.trim(), expected.to_str().unwrap());

    let output = Command::new(BIN)
        .args([
            "sign",
            "--key-id",
            key_id,
            "--secret-env",
            "NO_SUCH_VARIABLE_SET",
            "GET",
            "http://h/",
        ])
        .env_remove("NO_SUCH_VARIABLE_SET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let output = Command::new(BIN)
        .args(["sign", "--key-id", key_id, "GET", "http://h/"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a secret source is required");
    let sign = |args: &[&str]| {
        Command::new(BIN)
            .args(["sign", "--key-id", key_id, "--secret-file"])
            .arg(&secret_file)
            .args(args)
            .output()
            .unwrap()
    };
    // The method goes into --curl's command unquoted: letters only.
    let output = sign(&["--curl", "GET|id", "http://h/"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    // A HEAD goes by curl's -I: with -X HEAD, curl waits for the body the answer announces.
    let output = sign(&["--curl", "head", "http://h/me"]);
    assert!(output.status.success());
    let command = String::from_utf8_lossy(&output.stdout);
    assert!(
        command.starts_with("curl -sS -g --path-as-is -I 'http://h/me' "),
        "{command}"
    );
    assert!(!command.contains("-X"), "{command}");
    let output = sign(&["--curl", "HEAD", "http://h/me", "--data", "x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    // curl needs a host; the header alone does not.
    let output = sign(&["--curl", "GET", "/me"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(sign(&["GET", "/me"]).status.success());
    // A path that is not ASCII would be sent percent-encoded, not as signed.
    let output = sign(&["GET", "http://h/\u{e9}"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("percent-encode"), "{stderr}");
    // The empty form signs no body: said, but signed.
    let output = sign(&["--form", "empty", "POST", "http://h/x", "--data", "{}"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("signs no body"), "{stderr}");

    // hash-password: one line from stdin, without its line ending.
    let spawn_hash_password = || {
        Command::new(BIN)
            .arg("hash-password")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let hash_password = |input: Vec<u8>| {
        let mut child = spawn_hash_password();
        let mut stdin = child.stdin.take().unwrap();
        // Written beside the reading, and its error ignored: the tool may stop reading first.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        output
    };
    let output = hash_password(b"pass word\r\n".to_vec());
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap();
    let user = armor_psk::session::User::new("u", hash.trim(), vec![]).unwrap();
    assert_eq!(user.username(), "u");
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    // The longest password a sign-in takes, with either line ending.
    let longest = "p".repeat(armor_psk::session::MAX_PASSWORD_LEN);
    for ending in ["\n", "\r\n"] {
        let output = hash_password(format!("{longest}{ending}").into_bytes());
        assert!(output.status.success(), "{ending:?}");
    }
    // A password no sign-in would take is refused.
    let output = hash_password(format!("{longest}p\n").into_bytes());
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("over 1024 bytes"), "{stderr}");
    // So is a line that goes on, without waiting for its end: stdin stays open here.
    let mut child = spawn_hash_password();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[b'p'; 2048]).unwrap();
    let status = exit_within(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    drop(stdin);
}
