//! Benchmark helper for scripts/bench-proxy-datapath.sh (not a test): a minimal keep-alive
//! HTTP/1.1 server answering every request with a 2-byte body, so that the bench measures the
//! path to the server rather than the server.
//!
//!   http_server ADDR:PORT

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "0.0.0.0:8080".to_string());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("http_server: listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(stream));
    }
}

/// Answer each request (a header block ending in a blank line; bodies are not expected).
async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    loop {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        let mut start = 0;
        while let Some(end) = find_blank_line(&buf[start..filled]) {
            start += end;
            if stream.write_all(RESPONSE).await.is_err() {
                return;
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            return; // a header block larger than the buffer: not a client of this bench
        }
    }
}

/// The offset just past the first "\r\n\r\n".
fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}
