//! grpc probes: one `grpc.health.v1.Health/Check` call over cleartext HTTP/2, as kubelet
//! makes it; SERVING is a success. The call is small enough to write by hand on hyper (two
//! protobuf fields), which keeps tonic and prost out of the agent.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper::header::HeaderMap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::tcp::join_host_port;
use super::{Outcome, USER_AGENT};

/// grpc status codes kubelet tells apart.
const CODE_OK: u32 = 0;
const CODE_DEADLINE_EXCEEDED: u32 = 4;
const CODE_UNIMPLEMENTED: u32 = 12;
/// HealthCheckResponse.ServingStatus.SERVING.
const SERVING: u64 = 1;

pub async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let address = join_host_port(host, port);
    let deadline = Instant::now() + timeout;
    let stream = match timeout_at(deadline, TcpStream::connect((host, port))).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Outcome::Failure(format!("error: failed to connect service at {address:?}: {error}")),
        Err(_) => {
            return Outcome::Failure(format!("timeout: failed to connect service {address:?} within {timeout:?}"))
        }
    };
    match timeout_at(deadline, call(stream, &address, service)).await {
        Ok(Ok(status)) => judge(status),
        Ok(Err(RpcError { code: CODE_UNIMPLEMENTED, message })) => Outcome::Failure(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
        )),
        Ok(Err(RpcError { code: CODE_DEADLINE_EXCEEDED, .. })) | Err(_) => {
            Outcome::Failure(format!("timeout: health rpc did not complete within {timeout:?}"))
        }
        Ok(Err(RpcError { code, message })) => Outcome::Failure(format!(
            "error: health rpc probe failed: rpc error: code = {} desc = {message}",
            code_name(code)
        )),
    }
}

fn judge(status: u64) -> Outcome {
    if status == SERVING {
        return Outcome::Success;
    }
    let name = match status {
        0 => "UNKNOWN".to_string(),
        2 => "NOT_SERVING".to_string(),
        3 => "SERVICE_UNKNOWN".to_string(),
        other => other.to_string(),
    };
    Outcome::Failure(format!("service unhealthy (responded with {name:?})"))
}

/// A failed call: a grpc status code other than OK and its message.
#[derive(Debug)]
struct RpcError {
    code: u32,
    message: String,
}

impl RpcError {
    /// Transport failures, as grpc-go reports them.
    fn unavailable(error: impl std::fmt::Display) -> RpcError {
        RpcError { code: 14, message: error.to_string() }
    }
}

/// Make the call; the serving status the server answered.
async fn call(stream: TcpStream, address: &str, service: &str) -> Result<u64, RpcError> {
    let (mut sender, connection) =
        http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.map_err(RpcError::unavailable)?;
    let request = hyper::Request::post(format!("http://{address}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", USER_AGENT)
        .body(Full::new(frame(&encode_request(service))))
        .map_err(RpcError::unavailable)?;
    let exchange = async {
        let response = sender.send_request(request).await.map_err(RpcError::unavailable)?;
        if response.status() != hyper::StatusCode::OK {
            return Err(RpcError {
                code: 2,
                message: format!("unexpected HTTP status code received from server: {}", response.status().as_u16()),
            });
        }
        let (parts, body) = response.into_parts();
        let collected = body.collect().await.map_err(RpcError::unavailable)?;
        // A trailers-only answer carries its status in the headers.
        let trailers = collected.trailers().cloned().unwrap_or_else(|| parts.headers.clone());
        check_status(&trailers)?;
        decode_response(&collected.to_bytes())
    };
    // The connection is driven beside the call and dropped with it: nothing outlives a probe.
    tokio::select! {
        result = exchange => result,
        closed = connection => Err(RpcError::unavailable(match closed {
            Ok(()) => "connection closed before the answer".to_string(),
            Err(error) => error.to_string(),
        })),
    }
}

fn check_status(trailers: &HeaderMap) -> Result<(), RpcError> {
    let text = |name: &str| trailers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(code) = text("grpc-status") else {
        return Err(RpcError { code: 13, message: "server closed the stream without sending trailers".into() });
    };
    match code.parse::<u32>() {
        Ok(CODE_OK) => Ok(()),
        Ok(code) => Err(RpcError { code, message: text("grpc-message").unwrap_or_default() }),
        Err(_) => Err(RpcError { code: 2, message: format!("invalid grpc-status {code:?}") }),
    }
}

/// HealthCheckRequest { string service = 1; }; the empty name is the whole server.
fn encode_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a);
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    message.freeze()
}

/// A gRPC length-prefixed message, uncompressed.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// HealthCheckResponse { ServingStatus status = 1; } out of one framed message.
fn decode_response(data: &[u8]) -> Result<u64, RpcError> {
    let malformed = |what: &str| RpcError { code: 13, message: format!("malformed HealthCheckResponse: {what}") };
    let (flag, rest) = data.split_first().ok_or_else(|| malformed("no message"))?;
    if *flag != 0 {
        return Err(malformed("compressed"));
    }
    let (length, mut message) = rest.split_at_checked(4).ok_or_else(|| malformed("short frame"))?;
    let length = u32::from_be_bytes(length.try_into().map_err(|_| malformed("short frame"))?) as usize;
    message = message.get(..length).ok_or_else(|| malformed("short frame"))?;
    let mut status = 0;
    while !message.is_empty() {
        let key = take_varint(&mut message).ok_or_else(|| malformed("bad field key"))?;
        let value = match key & 7 {
            0 => take_varint(&mut message),
            1 => take(&mut message, 8).map(|_| 0),
            2 => take_varint(&mut message).and_then(|n| take(&mut message, usize::try_from(n).ok()?)).map(|_| 0),
            5 => take(&mut message, 4).map(|_| 0),
            _ => None,
        }
        .ok_or_else(|| malformed("bad field"))?;
        if key == 0x08 {
            status = value;
        }
    }
    Ok(status)
}

fn put_varint(buffer: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buffer.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    buffer.put_u8(value as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(input: &mut &'a [u8], count: usize) -> Option<&'a [u8]> {
    let (taken, rest) = input.split_at_checked(count)?;
    *input = rest;
    Some(taken)
}

/// grpc-go's names of the status codes, as its errors print them.
fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code).ok().and_then(|i| NAMES.get(i)).map_or_else(|| format!("Code({code})"), |n| n.to_string())
}

#[cfg(test)]
#[path = "grpc_tests.rs"]
mod tests;
