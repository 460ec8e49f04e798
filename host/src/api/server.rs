//! The HTTP server: an accept loop over hyper's HTTP/1 connections that
//! bounds what one client may hold (ARCHITECTURE.md section 11): the time it
//! has to send a request's headers and its body, the time a kept-alive
//! connection may wait for its next request, and how many connections are
//! open at once. Slow or idle clients cannot starve the others.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::ApiError;

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to send a request's headers: from the connection's start, or on
    /// a kept-alive connection from the first byte of the next request.
    pub header_timeout: Duration,
    /// Time to send a request's whole body, from the end of its headers.
    pub body_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once; more wait in the listen backlog.
    pub max_connections: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes; then stops
/// accepting, lets every connection finish the request it is answering, and
/// returns once all of them are closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    // One permit per open connection. Without a free one the loop does not
    // accept, so further connections wait in the kernel's backlog while the
    // open ones go on being served.
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let closing = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let tcp = tokio::select! {
            biased;
            () = &mut shutdown => break,
            tcp = accept(&listener) => tcp,
        };
        let router = router.clone();
        let closing = closing.clone();
        tokio::spawn(async move {
            connection(tcp, router, limits, closing).await;
            drop(slot);
        });
    }
    drop(listener);
    closing.cancel();
    // Every connection gives its permit back when it ends.
    let _all_closed = slots.acquire_many(limits.max_connections).await;
}

/// The next connection; errors of one connection are skipped, and errors of
/// the listener (out of file descriptors) retried after a pause.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => return tcp,
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot accept connections; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection until it ends, the client is too slow, or the
/// server shuts down (then after the request it is answering).
async fn connection(tcp: TcpStream, router: Router, limits: Limits, closing: CancellationToken) {
    // Small answers (an event, a 202) go out at once instead of waiting for
    // the client's delayed acknowledgement.
    let _ = tcp.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        tcp,
        activity: activity.clone(),
        limits,
        timer: Box::pin(sleep_until(Instant::now() + limits.header_timeout)),
    });
    let service = hyper::service::service_fn(move |request| {
        respond(
            request,
            router.clone(),
            activity.clone(),
            limits.body_timeout,
        )
    });
    let mut conn = pin!(
        hyper::server::conn::http1::Builder::new()
            // hyper's header timer also runs while a kept-alive connection
            // waits for its next request, which would cut idle connections
            // at the header timeout; `Watched` keeps both deadlines instead.
            .header_read_timeout(None)
            .serve_connection(io, service)
    );
    let mut asked_to_close = false;
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break ended,
            () = closing.cancelled(), if !asked_to_close => {
                asked_to_close = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// Answers one request with `router`, its body cut off at `body_timeout`.
async fn respond(
    request: Request<Incoming>,
    router: Router,
    activity: Arc<Activity>,
    body_timeout: Duration,
) -> Result<Response<Answer>, Infallible> {
    let busy = activity.begin();
    let timed_out = BodyTimedOut::default();
    let deadline = Instant::now() + body_timeout;
    let mut request = request.map(|inner| {
        axum::body::Body::new(TimedBody {
            inner,
            deadline,
            timer: None,
            timed_out: timed_out.clone(),
        })
    });
    request.extensions_mut().insert(timed_out.clone());
    let response = match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // Whatever the handler made of the error its body gave it, the client
    // hears that it was too slow.
    let response = if timed_out.happened() {
        body_timeout_response(body_timeout)
    } else {
        response
    };
    Ok(response.map(|body| Answer { body, _busy: busy }))
}

fn body_timeout_response(limit: Duration) -> Response<axum::body::Body> {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        format!(
            "the request body did not arrive within {}",
            humantime::format_duration(limit)
        ),
    )
    .into_response();
    // The rest of the body may still be on its way: the connection cannot
    // carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Set on a request whose body did not arrive within the body timeout; in
/// the request's extensions, so that metrics count the 408 it is answered with.
#[derive(Debug, Clone, Default)]
pub struct BodyTimedOut(Arc<AtomicBool>);

impl BodyTimedOut {
    /// Whether the request's body ran out of time.
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A request body that fails once its deadline has passed.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    /// Made the first time the body has to wait, so that bodies which are
    /// already complete cost no timer.
    timer: Option<Pin<Box<Sleep>>>,
    timed_out: BodyTimedOut,
}

/// The error a [`TimedBody`] gives past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimeout;

impl TimedBody {
    fn expire(&mut self) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        self.timed_out.0.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(BodyTimeout.into())))
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.timed_out.happened() {
            return this.expire();
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            // A body trickling in never has to wait long for its next frame,
            // so the deadline is also checked on every frame.
            Poll::Ready(Some(Ok(_))) if Instant::now() >= this.deadline => this.expire(),
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => this.expire(),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body; the connection counts as answering a request until
/// hyper has sent it all (or given up) and dropped it.
struct Answer {
    body: axum::body::Body,
    _busy: Busy,
}

impl Body for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Where a connection is between requests, for its read deadline.
struct Activity(Mutex<Phase>);

struct Phase {
    /// Requests being answered (hyper answers one at a time).
    answering: usize,
    /// Whether a request has been answered on this connection.
    served: bool,
    /// When the connection started or last finished an answer.
    since: Instant,
    /// When the first byte of the next request's headers came.
    head_started: Option<Instant>,
}

/// Marks a connection as answering a request while it lives.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        phase.answering -= 1;
        if phase.answering == 0 {
            phase.since = Instant::now();
        }
    }
}

impl Activity {
    fn new() -> Self {
        Self(Mutex::new(Phase {
            answering: 0,
            served: false,
            since: Instant::now(),
            head_started: None,
        }))
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// hyper has read a request's headers and asks for its answer.
    fn begin(self: &Arc<Self>) -> Busy {
        let mut phase = self.phase();
        phase.answering += 1;
        phase.served = true;
        phase.head_started = None;
        Busy(self.clone())
    }

    /// Bytes came from the client.
    fn read_some(&self) {
        let mut phase = self.phase();
        if phase.answering == 0 && phase.head_started.is_none() {
            phase.head_started = Some(Instant::now());
        }
    }

    /// When the connection is closed if nothing more comes, and which limit
    /// that is; `None` while a request is answered (its body has a deadline
    /// of its own).
    fn deadline(&self, limits: &Limits) -> Option<(Instant, &'static str)> {
        let phase = self.phase();
        if phase.answering > 0 {
            None
        } else if let Some(started) = phase.head_started {
            Some((started + limits.header_timeout, "request headers too slow"))
        } else if !phase.served {
            Some((
                phase.since + limits.header_timeout,
                "no request headers in time",
            ))
        } else {
            Some((phase.since + limits.idle_timeout, "idle"))
        }
    }
}

/// A client's socket that fails a read waiting past the connection's deadline.
struct Watched {
    tcp: TcpStream,
    activity: Arc<Activity>,
    limits: Limits,
    timer: Pin<Box<Sleep>>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.read_some();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((deadline, why)) = this.activity.deadline(&this.limits) else {
                    return Poll::Pending;
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Raises this process's soft limit of open files to its hard limit, so that
/// `--max-connections` connections fit; returns the limit now in force.
#[cfg(unix)]
#[allow(
    clippy::unnecessary_cast,
    reason = "rlim_t is u64 on most targets, not all"
)]
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given. Where it
        // refuses (macOS caps the soft limit below an unlimited hard one),
        // the current limit stays in force.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(if limit.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        limit.rlim_cur as u64
    })
}

/// Open-file limits are a Unix notion; elsewhere nothing is raised.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> io::Result<u64> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no open-files limit on this platform",
    ))
}
