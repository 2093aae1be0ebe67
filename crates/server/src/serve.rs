//! The HTTP listener: accepts connections under a cap, with timeouts, so
//! that idle or half-sent connections cannot hold the server.
//!
//! - A connection must send a complete request head within
//!   [`ConnectionLimits::header_timeout`]; the same bound ends a keep-alive
//!   connection left idle between requests (hyper counts both as waiting for
//!   a head).
//! - A request body that stops arriving for [`ConnectionLimits::body_timeout`]
//!   is cut off (the handler sees a read error and answers it).
//! - At most [`ConnectionLimits::max_connections`] connections are open, and
//!   never more than the process's file limit leaves room for. At the cap,
//!   the oldest connection with nothing in flight (no request being handled,
//!   no answer being streamed) is closed to make room; only when every
//!   connection is busy is the newcomer turned away. So a crowd of idle
//!   sockets cannot keep `/healthz` or anyone else out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower::ServiceExt;

/// Connection limits, set per deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(15),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// File descriptors kept out of the connection cap: the database's
/// connections, spooled uploads, logs.
const RESERVED_FILES: u64 = 64;

/// The cap in force: the configured one, lowered to what the process's
/// soft file limit leaves room for.
pub fn effective_cap(configured: usize) -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    if !ok || limit.rlim_cur == libc::RLIM_INFINITY {
        return configured.max(1);
    }
    let room = limit.rlim_cur.saturating_sub(RESERVED_FILES).max(8);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1)
}

/// One open connection: how many requests or answers it has in flight, and
/// the handle that closes it.
struct Open {
    id: u64,
    busy: Arc<AtomicUsize>,
    abort: tokio::task::AbortHandle,
}

#[derive(Default)]
struct Table {
    open: VecDeque<Open>,
    next_id: u64,
}

impl Table {
    /// Makes room for one more connection under `cap`: true if there is
    /// room (closing the oldest idle connection if needed).
    fn make_room(&mut self, cap: usize) -> bool {
        if self.open.len() < cap {
            return true;
        }
        match self.open.iter().position(|c| c.busy.load(Ordering::SeqCst) == 0) {
            Some(i) => {
                if let Some(c) = self.open.remove(i) {
                    c.abort.abort();
                }
                true
            }
            None => false,
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(i) = self.open.iter().position(|c| c.id == id) {
            self.open.remove(i);
        }
    }
}

/// Counts a request (and then its answer's body) as in flight on its
/// connection until the answer is sent or dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::SeqCst);
        InFlight(busy.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An answer's body that keeps its connection counted busy while it streams.
struct CountedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for CountedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then waits up to
/// `drain` for requests in flight before closing what is left.
pub async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let cap = effective_cap(limits.max_connections);
    let table = Arc::new(Mutex::new(Table::default()));
    let service = tower::ServiceBuilder::new()
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout))
        .service(app);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it
                // was taken: wait a moment instead of spinning.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let busy = Arc::new(AtomicUsize::new(0));
        let id = {
            let Ok(mut t) = table.lock() else {
                tracing::error!("the connection table is poisoned; stopping");
                break;
            };
            if !t.make_room(cap) {
                tracing::warn!(cap, "every connection is busy; turning one away");
                continue;
            }
            t.next_id += 1;
            t.next_id
        };
        let per_request = {
            let busy = busy.clone();
            let service = service.clone();
            hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                // Who connected (the console slows repeated failed sign-ins per address).
                req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                let in_flight = InFlight::new(&busy);
                let service = service.clone();
                async move {
                    let resp: Response = match service.oneshot(req).await {
                        Ok(r) => r,
                        Err(e) => match e {},
                    };
                    Ok::<_, Infallible>(resp.map(|inner| {
                        Body::new(CountedBody {
                            inner,
                            _in_flight: in_flight,
                        })
                    }))
                }
            })
        };
        let builder = builder.clone();
        let done_table = table.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(stream), per_request).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            if let Ok(mut t) = done_table.lock() {
                t.remove(id);
            }
        });
        if let Ok(mut t) = table.lock() {
            if !task.is_finished() {
                t.open.push_back(Open {
                    id,
                    busy,
                    abort: task.abort_handle(),
                });
            }
        }
    }
    drop(listener);
    // Let requests in flight finish (bounded), then close every connection.
    let deadline = tokio::time::Instant::now() + drain;
    loop {
        let busy = table
            .lock()
            .map(|t| t.open.iter().filter(|c| c.busy.load(Ordering::SeqCst) > 0).count())
            .unwrap_or(0);
        if busy == 0 || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Ok(t) = table.lock() {
        for c in &t.open {
            c.abort.abort();
        }
    }
    Ok(())
}
