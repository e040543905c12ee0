//! The HTTPS listener: TLS with optional client certificates, HTTP/1.1 and HTTP/2, one task
//! per connection, all ended by a cancellation token.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::authn::{user_from_certificate, UserInfo};
use super::handlers;
use super::state::ServerState;
use super::tls::certificate_subject;

/// Accept connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<ServerState>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                tracing::warn!(%error, "accepting a connection");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
            };
            let cert_user: Option<UserInfo> = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| certificate_subject(leaf.as_ref()))
                .and_then(|subject| user_from_certificate(&subject));
            let service = service_fn(move |request: Request<Incoming>| {
                let state = state.clone();
                let cert_user = cert_user.clone();
                async move { Ok::<_, Infallible>(handlers::handle(state, cert_user, request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, %peer, "connection ended");
                    }
                }
            }
        });
    }
}
