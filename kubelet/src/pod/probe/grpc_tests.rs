use std::convert::Infallible;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;

use super::*;

/// A grpc health server on 127.0.0.1: "" and "web" serve, "db" does not, "slow" never
/// answers, "legacy" is answered as by a server without the health service.
async fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let connection = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(answer));
            tokio::spawn(connection);
        }
    });
    port
}

async fn answer(request: Request<Incoming>) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    assert_eq!(request.uri().path(), "/grpc.health.v1.Health/Check");
    assert_eq!(request.headers()["content-type"], "application/grpc");
    let body = request.into_body().collect().await.expect("request body").to_bytes();
    // The test names are short: one length byte after the field key.
    let service = String::from_utf8(body.get(7..).unwrap_or_default().to_vec()).expect("utf-8");
    let status = match service.as_str() {
        "" | "web" => 1,
        "db" => 2,
        "slow" => std::future::pending::<u8>().await,
        _ => {
            let response = Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "12")
                .header("grpc-message", "unknown service grpc.health.v1.Health")
                .body(Full::new(Bytes::new()).boxed())
                .expect("response");
            return Ok(response);
        }
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().expect("value"));
    let frames = vec![Ok(Frame::data(frame(&[0x08, status]))), Ok(Frame::trailers(trailers))];
    let body = StreamBody::new(futures::stream::iter(frames)).boxed();
    Ok(Response::builder().header("content-type", "application/grpc").body(body).expect("response"))
}

async fn run(port: u16, service: &str) -> Outcome {
    probe("127.0.0.1", port, service, Duration::from_millis(500)).await
}

#[tokio::test]
async fn serving_succeeds_and_not_serving_fails() {
    let port = serve().await;
    assert_eq!(run(port, "").await, Outcome::Success);
    assert_eq!(run(port, "web").await, Outcome::Success);
    assert_eq!(run(port, "db").await, Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into()));
}

#[tokio::test]
async fn servers_without_the_health_service_and_silent_ones_fail() {
    let port = serve().await;
    assert_eq!(
        run(port, "legacy").await,
        Outcome::Failure(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service grpc.health.v1.Health".into()
        )
    );
    assert_eq!(run(port, "slow").await, Outcome::Failure("timeout: health rpc did not complete within 500ms".into()));
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
    let Outcome::Failure(message) = run(closed, "").await else { panic!("a closed port succeeded") };
    assert!(message.starts_with(&format!("error: failed to connect service at \"127.0.0.1:{closed}\": ")), "{message}");
}

#[test]
fn messages_round_trip_through_the_wire_format() {
    assert_eq!(&encode_request("web")[..], [0x0a, 3, b'w', b'e', b'b']);
    assert!(encode_request("").is_empty());
    // An unknown field before the status is skipped.
    let response = frame(&[0x12, 2, b'h', b'i', 0x08, 0x01]);
    assert_eq!(decode_response(&response).expect("decoded"), SERVING);
    assert_eq!(decode_response(&frame(&[])).expect("decoded"), 0, "an empty message is UNKNOWN");
    assert!(decode_response(&[0, 0, 0, 0, 9, 0x08]).is_err());
}
