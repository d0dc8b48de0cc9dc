//! Open connections and what each may cost while it says nothing.
//!
//! A client that opens sockets and sends nothing, or sends its request head a byte at a time
//! (slowloris), holds a file descriptor and a task for free; enough of them and the server cannot
//! accept anyone. So every connection here is watched:
//! - its request head must be complete within the header timeout, counted from its first byte;
//! - between requests it may sit idle for the idle timeout, then it is closed. A request that is
//!   being answered (a held long-poll, an event stream) is not idle, however long it takes;
//! - an answer the peer does not read is: when the socket has taken none of it for the idle
//!   timeout, the connection is closed, so a stream whose reader stopped holds its buffers (the
//!   kernel's and the server's) only that long (docs/security.md, "Streams that are not read");
//! - a peer address may hold so many connections, everyone together so many more; a connection
//!   beyond either cap is answered 503 and closed.
//!
//! Requests are served by hyper's HTTP/1 connection with the axum router as its service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::IpAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use http_body::{Frame, SizeHint};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::ServiceExt as _;

/// The connection limits of the server (each has a `serve` flag).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request head must be complete this long after its first byte.
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Open connections from one peer address.
    pub max_per_peer: usize,
    /// Open connections in total.
    pub max_total: usize,
    /// After shutdown, how long open connections get to finish their requests before the
    /// server stops without them.
    pub shutdown_grace: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_per_peer: 512,
            max_total: 4096,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Refusals being written at once; beyond this a connection over the cap is just closed.
const MAX_REFUSING: usize = 256;

/// How long a refused connection gets to take its 503.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// Raises the soft limit of open files to the hard limit, so the connection caps (not the
/// process's default of often 1024 descriptors) decide when connections are refused; returns
/// the soft limit now in force.
pub fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "could not raise the open files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}

/// Serves the router on the listener within the limits until `shutdown` completes, then lets
/// every open connection finish its requests.
///
/// # Errors
/// The listener's address cannot be read.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let counts = Arc::new(Counts::default());
    let (closing, close) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or a connection reset before it was accepted: wait a
                    // moment instead of spinning on the error.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        match counts.admit(peer.ip(), &limits) {
            Ok(slot) => {
                let connection = Connection {
                    router: router.clone(),
                    limits,
                    close: close.clone(),
                    _slot: slot,
                };
                tokio::spawn(connection.serve(stream));
            }
            Err(cap) => {
                if counts.refusing.fetch_add(1, Ordering::SeqCst) < MAX_REFUSING {
                    let counts = Arc::clone(&counts);
                    tokio::spawn(async move {
                        refuse(stream, &cap).await;
                        counts.refusing.fetch_sub(1, Ordering::SeqCst);
                    });
                } else {
                    counts.refusing.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }
    drop(close);
    let _ = closing.send(true);
    // Every connection holds a receiver: this returns when the last one has closed.
    let open = counts.total.load(Ordering::SeqCst);
    if tokio::time::timeout(limits.shutdown_grace, closing.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = counts.total.load(Ordering::SeqCst),
            grace = ?limits.shutdown_grace,
            "connections still open after the shutdown grace; stopping without them"
        );
    } else {
        tracing::info!(closed = open, "every connection finished");
    }
    Ok(())
}

/// Open connections, by peer address and in total.
#[derive(Debug, Default)]
struct Counts {
    by_peer: Mutex<HashMap<IpAddr, usize>>,
    total: AtomicUsize,
    refusing: AtomicUsize,
}

/// One admitted connection's place in the counts, given back when it closes.
struct Slot {
    counts: Arc<Counts>,
    peer: IpAddr,
}

impl Counts {
    /// A place for a new connection from `peer`, or which cap it is over.
    fn admit(self: &Arc<Self>, peer: IpAddr, limits: &ConnectionLimits) -> Result<Slot, String> {
        let mut by_peer = self
            .by_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = by_peer.get(&peer).copied().unwrap_or(0);
        if open >= limits.max_per_peer {
            return Err(format!(
                "{peer} has {open} connections open, the most one address may hold; close some \
                 or reuse them"
            ));
        }
        if self.total.load(Ordering::SeqCst) >= limits.max_total {
            return Err(format!(
                "the relay holds {} open connections, its limit; retry shortly",
                limits.max_total
            ));
        }
        by_peer.insert(peer, open + 1);
        self.total.fetch_add(1, Ordering::SeqCst);
        Ok(Slot {
            counts: Arc::clone(self),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_peer = self
            .counts
            .by_peer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = by_peer.get_mut(&self.peer) {
            *open -= 1;
            if *open == 0 {
                by_peer.remove(&self.peer);
            }
        }
        self.counts.total.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers a connection over a cap with 503 and closes it, reading what the client sent so the
/// close does not reset the answer away.
async fn refuse(mut stream: TcpStream, cap: &str) {
    let body = serde_json::json!({ "error": { "code": "overloaded", "message": cap } }).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        // Answer once the request has begun: an HTTP client that connects first and writes its
        // request after reads an answer that comes before it as a broken connection.
        let mut sink = [0_u8; 4096];
        if stream.read(&mut sink).await? == 0 {
            return Ok(());
        }
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// An admitted connection.
struct Connection {
    router: Router,
    limits: ConnectionLimits,
    /// Turns true when the server shuts down.
    close: watch::Receiver<bool>,
    _slot: Slot,
}

impl Connection {
    async fn serve(mut self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: Arc::clone(&activity),
        });
        let router = self.router.clone();
        let watched = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = watched.begin_request();
            let router = router.clone();
            async move {
                let response = router
                    .oneshot(request.map(Body::new))
                    .await
                    .unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(response.map(|body| Answer { body, _busy: busy }))
            }
        });
        let mut http = hyper::server::conn::http1::Builder::new();
        // The head's timeout is the watch below (hyper's own would also close idle keep-alive
        // connections at the head's deadline).
        http.header_read_timeout(None::<Duration>);
        let mut connection = pin!(http.serve_connection(io, service));
        let tick = (self.limits.header_timeout.min(self.limits.idle_timeout) / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut ticks = tokio::time::interval(tick);
        let mut closing = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                _ = ticks.tick() => {
                    if let Some(reason) = activity.overdue(&self.limits) {
                        tracing::debug!(reason, "connection closed");
                        return;
                    }
                }
                changed = self.close.changed(), if !closing => {
                    closing = true;
                    if changed.is_ok() {
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
        }
    }
}

/// When a connection last did what: times are milliseconds since it was accepted.
struct Activity {
    accepted: Instant,
    /// Requests whose answer is not yet fully sent.
    in_flight: AtomicUsize,
    /// When it last had no request in flight (accepted, or its last answer ended).
    idle_since: AtomicU64,
    /// One more than when the first byte of a request head arrived; 0 when none is arriving.
    head_since: AtomicU64,
    /// One more than when a write found the socket full; 0 while writes go through.
    blocked_since: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            blocked_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Bytes arrived: without a request in flight they start a request head.
    fn received(&self) {
        if self.in_flight.load(Ordering::SeqCst) == 0 && self.head_since.load(Ordering::SeqCst) == 0
        {
            self.head_since.store(self.now() + 1, Ordering::SeqCst);
        }
    }

    /// A request head is complete: the request is in flight until its answer is sent.
    fn begin_request(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.head_since.store(0, Ordering::SeqCst);
        Busy(Arc::clone(self))
    }

    /// A write found the socket full (the peer is not reading).
    fn write_blocked(&self) {
        let _ = self.blocked_since.compare_exchange(
            0,
            self.now() + 1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// A write went through.
    fn wrote(&self) {
        self.blocked_since.store(0, Ordering::SeqCst);
    }

    /// Why the connection should be closed now, if it should.
    fn overdue(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        let now = self.now();
        let millis = |limit: Duration| u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        let blocked = self.blocked_since.load(Ordering::SeqCst);
        if blocked > 0 && now.saturating_sub(blocked - 1) >= millis(limits.idle_timeout) {
            return Some("the peer read none of its answer for the idle timeout");
        }
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::SeqCst) {
            0 => (now.saturating_sub(self.idle_since.load(Ordering::SeqCst))
                >= millis(limits.idle_timeout))
            .then_some("idle for the idle timeout"),
            started => (now.saturating_sub(started - 1) >= millis(limits.header_timeout))
                .then_some("request head not complete within the header timeout"),
        }
    }
}

/// A request in flight on its connection.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            activity.idle_since.store(activity.now(), Ordering::SeqCst);
        }
    }
}

/// An answer's body, keeping its request in flight until hyper has sent it all (or dropped it).
struct Answer {
    body: Body,
    _busy: Busy,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting when bytes arrive and when writes stall.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    fn written(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Pending => self.activity.write_blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.activity.wrote(),
            Poll::Ready(_) => {}
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.written(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_over_its_cap_is_refused_and_its_slots_come_back() {
        let counts = Arc::new(Counts::default());
        let limits = ConnectionLimits {
            max_per_peer: 2,
            max_total: 3,
            ..ConnectionLimits::default()
        };
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let first = counts.admit(a, &limits).expect("first of a");
        let _second = counts.admit(a, &limits).expect("second of a");
        assert!(
            counts.admit(a, &limits).is_err(),
            "a third from a is over its cap"
        );
        let _third = counts.admit(b, &limits).expect("b has its own cap");
        assert!(counts.admit(b, &limits).is_err(), "the total cap holds");
        drop(first);
        assert!(
            counts.admit(a, &limits).is_ok(),
            "a closed slot is given back"
        );
    }
}
