//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2, and the one fault the router cannot
//! express itself: dropping a connection without an answer.

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::app::DropConnection;

#[derive(Debug, thiserror::Error)]
#[error("connection dropped by the reset fault")]
struct ConnectionDropped;

pub fn spawn(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            let (router, tls, shutdown) = (router.clone(), tls.clone(), shutdown.clone());
            tokio::spawn(async move {
                // Small JSON answers must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                match tls {
                    None => serve_connection(TokioIo::new(stream), router, shutdown).await,
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(stream) => {
                            serve_connection(TokioIo::new(stream), router, shutdown).await
                        }
                        Err(error) => tracing::debug!(%error, "TLS handshake failed"),
                    },
                }
            });
        }
    });
}

async fn serve_connection<I>(io: I, router: Router, shutdown: CancellationToken)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let router = router.clone();
        async move {
            let response = router
                .oneshot(request.map(Body::new))
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            if response.extensions().get::<DropConnection>().is_some() {
                // An error from the service makes hyper close the connection without a response.
                return Err(ConnectionDropped);
            }
            Ok(response)
        }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::select! {
        _ = builder.serve_connection(io, service) => {}
        () = shutdown.cancelled() => {}
    }
}
