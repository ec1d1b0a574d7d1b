//! Connections: the accept loop of `serve` (hyper's HTTP/1 server under the axum router),
//! with the limits that keep slow, idle or too many clients from holding the process.
//!
//! - At most `max_connections` connections are open at once: the loop takes a permit before
//!   it accepts, so further clients wait in the kernel's listen backlog (no descriptor, no
//!   task) until a connection closes.
//! - `header_timeout`: a request's head (request line and headers) must arrive within it,
//!   counted from when the connection starts waiting for it, so a keep-alive connection that
//!   stays idle that long is closed too (hyper's `header_read_timeout`).
//! - The body's own deadline is the handler's business (`HttpOptions::body_timeout`, 408):
//!   only routes that read a body read it, and a response streaming tokens is never cut.
//! - Shutdown: when `shutdown` resolves, the loop stops accepting and asks every connection
//!   to close gracefully (idle ones close at once, a request in flight is answered first);
//!   whatever is still open after `shutdown_grace` (a request whose client stopped sending
//!   it, a generation still running) is dropped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How connections are limited.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Most connections open at once (at least 1).
    pub max_connections: usize,
    /// Longest wait for a request's head, the idle time between requests included.
    pub header_timeout: Duration,
    /// Longest wait, once the shutdown began, for open connections to finish.
    pub shutdown_grace: Duration,
}

/// Pause after an accept error that is not the client's (e.g. out of descriptors), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` resolves, then closes the connections (at
/// once when idle, after their request otherwise) and returns once they are all closed or
/// `shutdown_grace` passed, whichever comes first.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    eprintln!("warning: cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        let service = TowerToHyperService::new(app.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        conns.spawn(async move {
            // A connection that fails (reset, header timeout) just ends.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        while conns.try_join_next().is_some() {}
        eprintln!(
            "closing {} connections still open after the grace period of {:?}",
            conns.len(),
            limits.shutdown_grace
        );
    }
    conns.shutdown().await;
}

/// Errors of one incoming connection (the client went away before it was accepted), after
/// which the loop goes on at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
