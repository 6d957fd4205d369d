//! `deeplake-s3-faults`: a fault-injecting HTTP proxy in front of an S3-compatible server,
//! for soak runs of the real binaries (connector, daemon, CLI) over loopback.
//!
//! Contract:
//! * Listens on 127.0.0.1 only (an ephemeral port unless `--port`), prints
//!   `listening on http://127.0.0.1:PORT` on stdout once it accepts, and forwards each
//!   request byte-for-byte (method, origin-form URI, headers, body) to `--upstream` over
//!   one upstream connection per client connection. The `Host` header is not rewritten:
//!   a client signs (SigV4) for the proxy's address, and the upstream checks the
//!   signature against the `Host` it receives, so signed requests pass unchanged.
//! * Faults come from one seeded schedule (`--seed`): each request draws one outcome.
//!   `--error-rate`: answered by the proxy with an S3 `500 InternalError` or
//!   `503 SlowDown` XML error, never forwarded; `--reset-rate`: the connection is
//!   dropped, for a GET after half of a successful response body went out, otherwise
//!   before the request is forwarded; `--latency-rate`: `--latency-ms` added before
//!   forwarding. Faults never make the upstream apply a request whose answer the
//!   client does not see, except a GET cut mid-body (reads are idempotent).
//! * `GET /_faults/stats` answers the counters as JSON (never faulted); they are also
//!   written to `--stats-file` at exit.
//! * Stops by itself after `--max-seconds` (default 900), or on SIGINT/SIGTERM.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::io::Write as _;
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ProxyBody = BoxBody<Bytes, BoxError>;

struct Args {
    upstream: String,
    port: u16,
    seed: u64,
    error_rate: f64,
    reset_rate: f64,
    latency_rate: f64,
    latency_ms: u64,
    max_seconds: u64,
    stats_file: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        upstream: String::new(),
        port: 0,
        seed: 0,
        error_rate: 0.0,
        reset_rate: 0.0,
        latency_rate: 0.0,
        latency_ms: 200,
        max_seconds: 900,
        stats_file: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let rate = |v: &str| -> anyhow::Result<f64> {
            let r: f64 = v
                .parse()
                .with_context(|| format!("{flag}: not a number: {v}"))?;
            if !(0.0..=1.0).contains(&r) {
                bail!("{flag} must be within 0..1, got {r}");
            }
            Ok(r)
        };
        match flag.as_str() {
            "--upstream" => a.upstream = value,
            "--port" => a.port = value.parse().context("--port")?,
            "--seed" => a.seed = value.parse().context("--seed")?,
            "--error-rate" => a.error_rate = rate(&value)?,
            "--reset-rate" => a.reset_rate = rate(&value)?,
            "--latency-rate" => a.latency_rate = rate(&value)?,
            "--latency-ms" => a.latency_ms = value.parse().context("--latency-ms")?,
            "--max-seconds" => a.max_seconds = value.parse().context("--max-seconds")?,
            "--stats-file" => a.stats_file = Some(value),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.error_rate + a.reset_rate + a.latency_rate > 1.0 {
        bail!("the fault rates add up to more than 1");
    }
    let up = a
        .upstream
        .strip_prefix("http://")
        .with_context(|| format!("--upstream must be an http:// URL, got {:?}", a.upstream))?;
    a.upstream = up.trim_end_matches('/').to_string();
    if a.upstream.is_empty() {
        bail!("--upstream is required (http://HOST:PORT)");
    }
    Ok(a)
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    forwarded: AtomicU64,
    injected_500: AtomicU64,
    injected_503: AtomicU64,
    injected_latency: AtomicU64,
    reset_before_forward: AtomicU64,
    reset_mid_body: AtomicU64,
    upstream_errors: AtomicU64,
}

impl Stats {
    fn json(&self) -> serde_json::Value {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "requests": g(&self.requests),
            "forwarded": g(&self.forwarded),
            "injected_500": g(&self.injected_500),
            "injected_503": g(&self.injected_503),
            "injected_latency": g(&self.injected_latency),
            "reset_before_forward": g(&self.reset_before_forward),
            "reset_mid_body": g(&self.reset_mid_body),
            "upstream_errors": g(&self.upstream_errors),
        })
    }
}

enum Fault {
    None,
    Error(StatusCode),
    Reset,
    Latency,
}

struct Shared {
    args: Args,
    stats: Stats,
    rng: Mutex<ChaCha8Rng>,
}

impl Shared {
    fn draw(&self) -> Fault {
        let (u, coin) = match self.rng.lock() {
            Ok(mut r) => (r.random::<f64>(), r.random::<bool>()),
            Err(_) => return Fault::None,
        };
        let a = &self.args;
        if u < a.error_rate {
            Fault::Error(if coin {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            })
        } else if u < a.error_rate + a.reset_rate {
            Fault::Reset
        } else if u < a.error_rate + a.reset_rate + a.latency_rate {
            Fault::Latency
        } else {
            Fault::None
        }
    }
}

/// Passes `keep` bytes of the response body, then fails, which makes the server drop
/// the connection with the response incomplete.
struct CutBody {
    inner: Incoming,
    keep: u64,
}

impl Body for CutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.keep == 0 {
            return Poll::Ready(Some(Err("injected connection reset mid-body".into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let n = (data.len() as u64).min(self.keep);
                    self.keep -= n;
                    data.truncate(n as usize);
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn full(status: StatusCode, content_type: &str, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

fn s3_error(status: StatusCode, n: u64) -> Response<ProxyBody> {
    let (code, message) = if status == StatusCode::SERVICE_UNAVAILABLE {
        ("SlowDown", "Please reduce your request rate.")
    } else {
        (
            "InternalError",
            "We encountered an internal error. Please try again.",
        )
    };
    full(
        status,
        "application/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
             <Message>{message}</Message><RequestId>injected-{n}</RequestId></Error>"
        ),
    )
}

/// One client connection's upstream connection, opened on first use and again after
/// the upstream closed it.
struct Upstream {
    sender: tokio::sync::Mutex<Option<SendRequest<Incoming>>>,
}

async fn connect(addr: &str) -> Result<SendRequest<Incoming>, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection's end (an upstream close) only matters to the next request,
        // which then reconnects.
        let _ = conn.await;
    });
    Ok(sender)
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
) -> Result<Response<ProxyBody>, BoxError> {
    let stats = &shared.stats;
    if req.uri().path() == "/_faults/stats" {
        return Ok(full(
            StatusCode::OK,
            "application/json",
            stats.json().to_string(),
        ));
    }
    let n = stats.requests.fetch_add(1, Ordering::Relaxed);
    let is_get = req.method() == hyper::Method::GET;
    let fault = shared.draw();
    match fault {
        Fault::Error(status) => {
            // Read the body so the connection stays usable, as a real server does.
            let _ = req.into_body().collect().await;
            if status == StatusCode::SERVICE_UNAVAILABLE {
                stats.injected_503.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.injected_500.fetch_add(1, Ordering::Relaxed);
            }
            return Ok(s3_error(status, n));
        }
        Fault::Reset if !is_get => {
            stats.reset_before_forward.fetch_add(1, Ordering::Relaxed);
            return Err("injected connection reset".into());
        }
        Fault::Latency => {
            stats.injected_latency.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(shared.args.latency_ms)).await;
        }
        Fault::Reset | Fault::None => {}
    }
    let mut guard = upstream.sender.lock().await;
    let reusable = match guard.as_mut() {
        Some(s) => s.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        match connect(&shared.args.upstream).await {
            Ok(s) => *guard = Some(s),
            Err(e) => {
                stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                return Ok(full(
                    StatusCode::BAD_GATEWAY,
                    "text/plain",
                    format!("upstream connect failed: {e}"),
                ));
            }
        }
    }
    let Some(sender) = guard.as_mut() else {
        return Err("no upstream connection".into());
    };
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            *guard = None;
            stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            return Ok(full(
                StatusCode::BAD_GATEWAY,
                "text/plain",
                format!("upstream request failed: {e}"),
            ));
        }
    };
    drop(guard);
    stats.forwarded.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = resp.into_parts();
    let len = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let body = if matches!(fault, Fault::Reset) && parts.status.is_success() && len >= 2 {
        stats.reset_mid_body.fetch_add(1, Ordering::Relaxed);
        CutBody {
            inner: body,
            keep: len / 2,
        }
        .boxed()
    } else {
        body.map_err(BoxError::from).boxed()
    };
    Ok(Response::from_parts(parts, body))
}

fn write_stats(shared: &Shared) {
    if let Some(path) = &shared.args.stats_file {
        let text = shared.stats.json().to_string();
        if let Err(e) = std::fs::write(path, text) {
            let _ = writeln!(std::io::stderr(), "writing {path}: {e}");
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", args.port))
        .await
        .context("binding 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let max = Duration::from_secs(args.max_seconds);
    let shared = Arc::new(Shared {
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(args.seed)),
        args,
        stats: Stats::default(),
    });
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    let deadline = tokio::time::sleep(max);
    tokio::pin!(deadline);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let upstream = Arc::new(Upstream { sender: tokio::sync::Mutex::new(None) });
                    let service = hyper::service::service_fn(move |req| {
                        handle(req, shared.clone(), upstream.clone())
                    });
                    // An injected reset ends the connection with an error; nothing to report.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    write_stats(&shared);
    Ok::<(), anyhow::Error>(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(args));
    // In-flight connections are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
