//! Run with: ARMOR_PSK_KEY_ID=<keyId> ARMOR_PSK_SECRET=<secret> cargo run --example client
//!
//! against `cargo run --example axum_server`, which prints the key id and secret to use (or
//! start the server with `ARMOR_PSK_DEMO_KEY_ID` and `ARMOR_PSK_DEMO_SECRET` set to a key of
//! your choice). The client signs `GET /me` and `POST /echo` (a JSON body) with
//! [`armor_psk::SignRequestLayer`] around a hyper client, and prints each status and body.
//!
//! Environment (the secret is read from the environment only, never from the command line):
//!
//! - `ARMOR_PSK_URL`: the server (default `http://127.0.0.1:3000`);
//! - `ARMOR_PSK_KEY_ID`: the API key id (required);
//! - `ARMOR_PSK_SECRET`: its secret (required).
//!
//! Exits with 2 when the configuration is missing or wrong, 1 when a request fails or answers
//! with a status other than 2xx, 0 otherwise.

use std::process::ExitCode;

use armor_psk::{BoxError, SignRequestLayer, Signer};
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Service, ServiceBuilder, ServiceExt};

const DEFAULT_URL: &str = "http://127.0.0.1:3000";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (base, signer) = match configuration() {
        Ok(configuration) => configuration,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut service = ServiceBuilder::new()
        .layer(SignRequestLayer::new(signer))
        .service(client);

    let echo_body = serde_json::json!({ "hello": "armor", "numbers": [1, 2, 3] }).to_string();
    let requests = [
        (Method::GET, "/me", Bytes::new()),
        (Method::POST, "/echo", Bytes::from(echo_body)),
    ];
    let mut all_ok = true;
    for (method, path, body) in requests {
        match send(&mut service, &base, method.clone(), path, body).await {
            Ok(ok) => all_ok &= ok,
            Err(error) => {
                eprintln!("{method} {path}: request failed: {error}");
                all_ok = false;
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The server's base URL and a signer, from the environment.
fn configuration() -> Result<(String, Signer), String> {
    let base = std::env::var("ARMOR_PSK_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned());
    let base = base.trim_end_matches('/').to_owned();
    let key_id = required("ARMOR_PSK_KEY_ID")?;
    let secret = required("ARMOR_PSK_SECRET")?;
    let signer =
        Signer::new(key_id, secret).map_err(|error| format!("ARMOR_PSK_KEY_ID: {error}"))?;
    Ok((base, signer))
}

fn required(name: &str) -> Result<String, String> {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => Err(format!("{name} is empty")),
        Err(std::env::VarError::NotPresent) => Err(format!(
            "{name} is not set (set ARMOR_PSK_KEY_ID and ARMOR_PSK_SECRET in the environment; \
             the axum_server example prints them)"
        )),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{name} is not valid UTF-8")),
    }
}

/// Sends one signed request and prints its status and body. `Ok(true)` for a 2xx status.
async fn send<S>(
    service: &mut S,
    base: &str,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<bool, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>>,
    S::Error: Into<BoxError>,
{
    // Public Armor clients send this on every request, a GET too.
    let request = Request::builder()
        .method(method.clone())
        .uri(format!("{base}{path}"))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(body))?;
    let response = service
        .ready()
        .await
        .map_err(Into::into)?
        .call(request)
        .await
        .map_err(Into::into)?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!("{method} {path} -> {status}");
    println!("{}", String::from_utf8_lossy(&body));
    Ok(status.is_success())
}
