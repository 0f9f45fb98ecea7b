//! The admission baseline: the least a webhook server can do for a pod review on the same
//! TLS settings as ours (rustls with our server configuration, hyper with the same
//! protocols): parse the AdmissionReview, answer "allowed" with no patch.

use std::{borrow::Cow, convert::Infallible, net::SocketAddr, path::Path, sync::Arc};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use namespace_offloading::plumbing::https::tls;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    request: RequestIn<'a>,
}

#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
}

/// The answer to one review body: allowed, or HTTP 400 when it is not a review.
pub fn answer(body: &[u8]) -> Result<Vec<u8>, String> {
    let review: ReviewIn = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    serde_json::to_vec(&ReviewOut {
        api_version: &review.api_version,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: &review.request.uid,
            allowed: true,
        },
    })
    .map_err(|e| e.to_string())
}

/// How a server answers a review body.
pub type Answer = fn(&[u8]) -> Result<Vec<u8>, String>;

async fn handle(
    request: Request<Incoming>,
    answer: Answer,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Ok(status(400, e.to_string())),
    };
    Ok(match answer(&body) {
        Ok(out) => {
            let mut response = Response::new(Full::new(Bytes::from(out)));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => status(400, e),
    })
}

fn status(code: u16, message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = http::StatusCode::from_u16(code).unwrap_or_default();
    response
}

/// Serves until the process is stopped, each review answered by `answer`.
pub async fn serve(
    listen: SocketAddr,
    cert: &Path,
    key: &Path,
    answer: Answer,
) -> Result<(), String> {
    namespace_offloading::plumbing::crypto::install_crypto_provider();
    let certs = tls::FileCerts::new(cert, key).map_err(|e| e.to_string())?;
    // Our server's own TLS configuration (versions, ALPN, provider), same certificate.
    let acceptor = TlsAcceptor::from(tls::server_config(Arc::new(certs)));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => continue,
        };
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = builder
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |request| handle(request, answer)),
                )
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_answers_allowed_with_the_uid() {
        let body = crate::fixtures::pod_review("u-1", &crate::fixtures::pod("ns", 1));
        let out: serde_json::Value =
            serde_json::from_slice(&answer(&serde_json::to_vec(&body).unwrap()).unwrap()).unwrap();
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["allowed"], true);
        assert!(answer(b"{}").is_err());
    }
}
