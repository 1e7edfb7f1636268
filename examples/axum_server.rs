//! Run with: cargo run --example axum_server
//!
//! At start it prints a demo key (id and secret) and a signed `curl` line for `GET /me`. Then,
//! in another shell:
//!
//! ```text
//! # the line the server printed (a signature is good once, within 5 minutes):
//! curl -i http://127.0.0.1:3000/me -H 'Authorization: ARMOR-PSK <keyId>:<signature>:<nonce>:<timestamp>'
//! # run it again: 401 replayed_nonce; without the header: 401 missing_credentials
//! curl -i http://127.0.0.1:3000/me
//! # the client example signs every request itself (the line is printed too):
//! ARMOR_PSK_KEY_ID=<keyId> ARMOR_PSK_SECRET=<secret> cargo run --example client
//! ```
//!
//! Environment:
//!
//! - `ARMOR_PSK_LISTEN`: the address to listen on (default `127.0.0.1:3000`);
//! - `ARMOR_PSK_DEMO_KEY_ID` and `ARMOR_PSK_DEMO_SECRET`: a fixed demo key instead of a random
//!   one (set both or neither);
//! - `RUST_LOG`: the log filter (default `info`).
//!
//! Stop it with Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use armor_psk::key_store::MemoryKeyStore;
use armor_psk::{Signer, VerifiedKey, VerifyPskLayer};
use axum::body::Bytes;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;
use tracing_subscriber::EnvFilter;

const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let (key_id, secret) = match demo_key() {
        Ok(key) => key,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    let listen = std::env::var("ARMOR_PSK_LISTEN").unwrap_or_else(|_| DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = match listen.parse() {
        Ok(address) => address,
        Err(error) => {
            eprintln!("error: ARMOR_PSK_LISTEN={listen:?} is not an address like {DEFAULT_LISTEN}: {error}");
            return ExitCode::from(2);
        }
    };

    // A signed request for the banner, made before the server serves, with the same key.
    let signer = match Signer::new(key_id.clone(), secret.as_str()) {
        Ok(signer) => signer,
        Err(error) => {
            eprintln!("error: ARMOR_PSK_DEMO_KEY_ID: {error}");
            return ExitCode::from(2);
        }
    };
    let authorization = signer
        .authorization(&http::Method::GET, "/me", b"")
        .expect("the demo key id was accepted by Signer::new");

    let keys = MemoryKeyStore::builder()
        .key(key_id.clone(), secret.as_str())
        .build();
    let app = Router::new()
        .route("/me", get(me))
        .route("/echo", post(echo))
        .layer(VerifyPskLayer::new(keys))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        // Layers applied (and the replay store built) now, not at the first connection.
        .with_state(());

    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(listen);
    let base = format!("http://{local}");
    let header = authorization
        .to_str()
        .expect("an ARMOR-PSK header is visible ASCII");

    println!("ARMOR-PSK demo server listening on {base}");
    println!();
    println!("  key id: {key_id}");
    println!("  secret: {secret}");
    println!();
    println!("A signed GET /me (works once, within 5 minutes of now):");
    println!();
    println!(
        "  curl -i {base}/me -H {}",
        shell_quote(&format!("Authorization: {header}"))
    );
    println!();
    println!("The client example, which signs each request itself:");
    println!();
    println!(
        "  ARMOR_PSK_URL={base} ARMOR_PSK_KEY_ID={} ARMOR_PSK_SECRET={} cargo run --example client",
        shell_quote(&key_id),
        shell_quote(&secret),
    );
    println!();
    println!("Ctrl-C to stop.");

    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
            tracing::info!("Ctrl-C: shutting down");
        })
        .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: server failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The key from `ARMOR_PSK_DEMO_KEY_ID` and `ARMOR_PSK_DEMO_SECRET`, or a fresh random one: a
/// UUID v4 id and 32 random bytes in base64 as the secret (whose UTF-8 bytes key the HMAC).
fn demo_key() -> Result<(String, String), String> {
    let id = std::env::var("ARMOR_PSK_DEMO_KEY_ID").ok();
    let secret = std::env::var("ARMOR_PSK_DEMO_SECRET").ok();
    match (id, secret) {
        (Some(id), Some(secret)) if !secret.is_empty() => Ok((id, secret)),
        (Some(_), Some(_)) => Err("ARMOR_PSK_DEMO_SECRET is empty".into()),
        (None, None) => Ok((
            uuid::Uuid::new_v4().to_string(),
            STANDARD.encode(rand::random::<[u8; 32]>()),
        )),
        _ => Err("set both ARMOR_PSK_DEMO_KEY_ID and ARMOR_PSK_DEMO_SECRET, or neither".into()),
    }
}

/// `GET /me`: who signed the request.
async fn me(key: VerifiedKey) -> Json<Value> {
    Json(json!({ "key_id": key.key_id() }))
}

/// `POST /echo`: who signed, with which body form, and how long the body was.
async fn echo(key: VerifiedKey, body: Bytes) -> Json<Value> {
    Json(json!({
        "key_id": key.key_id(),
        "body_form": key.body_form().as_str(),
        "body_length": body.len(),
    }))
}

/// `value` quoted for a POSIX shell, so that the printed lines paste as they are.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}
