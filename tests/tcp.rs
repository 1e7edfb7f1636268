//! The verifier over a real TCP socket, driven by a hyper client wearing the SignRequestLayer.

use std::net::SocketAddr;

use armor_psk::key_store::MemoryKeyStore;
use armor_psk::psk::BodyForm;
use armor_psk::{BoxError, SignRequestLayer, Signer, VerifiedKey, VerifyPskLayer};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{Service, ServiceBuilder, ServiceExt};

const KEY_ID: &str = "5b0cbd9e-8d3c-4c7e-9a55-0e1f2d3c4b5a";
const SECRET: &str = "tcp-test-secret";

async fn serve() -> SocketAddr {
    let keys = MemoryKeyStore::builder().key(KEY_ID, SECRET).build();
    let app = Router::new()
        .route(
            "/me",
            get(|key: VerifiedKey| async move { key.key_id().to_owned() }),
        )
        .route(
            "/echo",
            post(|key: VerifiedKey, body: Bytes| async move {
                axum::Json(serde_json::json!({
                    "form": key.body_form().as_str(),
                    "length": body.len(),
                }))
            }),
        )
        .layer(VerifyPskLayer::new(keys).body_limit(1024));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

async fn call<S>(client: &mut S, request: Request<Full<Bytes>>) -> (StatusCode, Bytes)
where
    S: Service<
        Request<Full<Bytes>>,
        Response = http::Response<hyper::body::Incoming>,
        Error = BoxError,
    >,
{
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn a_signing_client_talks_to_the_verifying_server() {
    let address = serve().await;
    let signer = Signer::new(KEY_ID, SECRET).unwrap();
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut client = ServiceBuilder::new()
        .layer(SignRequestLayer::new(signer.clone()))
        .service(http.clone());

    let me = Request::get(format!("http://{address}/me?verbose=1"))
        .body(Full::default())
        .unwrap();
    let (status, body) = call(&mut client, me).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, KEY_ID);

    for form in [BodyForm::Digest, BodyForm::Raw] {
        let mut client = ServiceBuilder::new()
            .layer(SignRequestLayer::new(signer.clone().body_form(form)))
            .service(http.clone());
        let echo = Request::post(format!("http://{address}/echo"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(br#"{"hello":"world"}"#)))
            .unwrap();
        let (status, body) = call(&mut client, echo).await;
        assert_eq!(status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["form"], form.as_str());
        assert_eq!(body["length"], 17);
    }

    // Without the signing layer the same client is refused.
    let mut unsigned = ServiceBuilder::new().map_err(BoxError::from).service(http);
    let me = Request::get(format!("http://{address}/me"))
        .body(Full::default())
        .unwrap();
    let (status, body) = call(&mut unsigned, me).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("missing_credentials"));
}

#[tokio::test]
async fn an_oversized_chunked_body_is_refused_on_the_wire() {
    let address = serve().await;
    let signer = Signer::new(KEY_ID, SECRET).unwrap();
    let body = vec![b'x'; 4000];
    let header = signer
        .authorization(&http::Method::POST, "/echo", &body)
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "POST /echo HTTP/1.1\r\nhost: {address}\r\nauthorization: {}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        header.to_str().unwrap()
    )
    .into_bytes();
    for chunk in body.chunks(500) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("body_too_large"), "{response}");
}
