//! A small real HTTP/1.1 file server for link tests and benches.
//!
//! Contract:
//! * Listens on 127.0.0.1 on an ephemeral port, on its own thread and runtime, so it
//!   serves while a test blocks (on a child process, say). Dropping the server stops it.
//! * Serves GET and HEAD of the files given with [`HttpServer::put`] (keep-alive, a
//!   `Content-Length` on every response); anything else is a 404.
//! * Faults, per path: a status (503, ...) for the next N requests; a connection reset
//!   after half the body for the next N requests; a delay before every response (all
//!   paths, or one).
//! * Observes: requests per path (HEAD and GET alike), and the most requests in flight
//!   at once (from the request line read to the response written).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct State {
    files: Mutex<HashMap<String, (Bytes, String)>>,
    /// path -> (status, times left)
    fail: Mutex<HashMap<String, (u16, usize)>>,
    /// path -> resets left
    reset: Mutex<HashMap<String, usize>>,
    delay_all: Mutex<Duration>,
    delay: Mutex<HashMap<String, Duration>>,
    counts: Mutex<HashMap<String, usize>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// See the module docs.
pub struct HttpServer {
    addr: std::net::SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        acc = listener.accept() => {
                            if let Ok((sock, _)) = acc {
                                let st = st.clone();
                                tokio::spawn(async move {
                                    let _ = serve_conn(sock, st).await;
                                });
                            }
                        }
                    }
                }
            });
            rt.shutdown_background();
        });
        HttpServer {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Serves `bytes` at `path` (no leading slash needed) with a content type from the
    /// extension.
    pub fn put(&self, path: &str, bytes: impl Into<Bytes>) {
        let p = norm(path);
        let ct = match p.rsplit('.').next() {
            Some("jpg" | "jpeg") => "image/jpeg",
            Some("png") => "image/png",
            _ => "application/octet-stream",
        };
        self.state
            .files
            .lock()
            .unwrap()
            .insert(p, (bytes.into(), ct.to_owned()));
    }

    /// The next `times` requests of `path` get `status` (then it is served again).
    pub fn fail_times(&self, path: &str, status: u16, times: usize) {
        self.state
            .fail
            .lock()
            .unwrap()
            .insert(norm(path), (status, times));
    }

    /// The next `times` GETs of `path` drop the connection after half the body.
    pub fn reset_times(&self, path: &str, times: usize) {
        self.state.reset.lock().unwrap().insert(norm(path), times);
    }

    /// Every response waits `d` first.
    pub fn set_delay(&self, d: Duration) {
        *self.state.delay_all.lock().unwrap() = d;
    }

    /// Responses for `path` wait `d` first (on top of [`HttpServer::set_delay`]).
    pub fn delay_path(&self, path: &str, d: Duration) {
        self.state.delay.lock().unwrap().insert(norm(path), d);
    }

    /// Requests seen for `path`.
    pub fn requests(&self, path: &str) -> usize {
        *self
            .state
            .counts
            .lock()
            .unwrap()
            .get(&norm(path))
            .unwrap_or(&0)
    }

    pub fn total_requests(&self) -> usize {
        self.state.counts.lock().unwrap().values().sum()
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn reset_counters(&self) {
        self.state.counts.lock().unwrap().clear();
        self.state.max_in_flight.store(0, Ordering::SeqCst);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn norm(path: &str) -> String {
    let p = path.split(['?', '#']).next().unwrap_or_default();
    format!("/{}", p.trim_start_matches('/'))
}

struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve_conn(mut sock: TcpStream, st: Arc<State>) -> std::io::Result<()> {
    // Head and body go out in two writes: without this, Nagle's algorithm holds the body
    // until the client's delayed ACK, adding tens of milliseconds to every response.
    sock.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    loop {
        // Read one request head (GET and HEAD carry no body).
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 64 << 10 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut parts = head.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = norm(parts.next().unwrap_or("/"));
        let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        st.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _guard = InFlight(&st);
        *st.counts.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
        let delay = *st.delay_all.lock().unwrap()
            + st.delay
                .lock()
                .unwrap()
                .get(&path)
                .copied()
                .unwrap_or_default();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let fail = {
            let mut f = st.fail.lock().unwrap();
            match f.get_mut(&path) {
                Some((status, left)) if *left > 0 => {
                    *left -= 1;
                    Some(*status)
                }
                _ => None,
            }
        };
        if let Some(status) = fail {
            let body = format!("injected {status}\n");
            let resp = format!(
                "HTTP/1.1 {status} Injected\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{}",
                body.len(),
                if method == "HEAD" { "" } else { &body }
            );
            sock.write_all(resp.as_bytes()).await?;
            continue;
        }
        let file = st.files.lock().unwrap().get(&path).cloned();
        let Some((bytes, ct)) = file else {
            let resp = "HTTP/1.1 404 Not Found\r\ncontent-length: 10\r\ncontent-type: text/plain\r\n\r\nnot found\n";
            let resp = if method == "HEAD" {
                resp.trim_end_matches("not found\n")
            } else {
                resp
            };
            sock.write_all(resp.as_bytes()).await?;
            continue;
        };
        if method != "GET" && method != "HEAD" {
            sock.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                .await?;
            continue;
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: {ct}\r\n\r\n",
            bytes.len()
        );
        sock.write_all(head.as_bytes()).await?;
        if method == "HEAD" {
            continue;
        }
        let reset = {
            let mut r = st.reset.lock().unwrap();
            match r.get_mut(&path) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    true
                }
                _ => false,
            }
        };
        if reset {
            sock.write_all(&bytes[..bytes.len() / 2]).await?;
            sock.flush().await?;
            // Closing with the body half sent: the client sees the connection drop.
            return Ok(());
        }
        sock.write_all(&bytes).await?;
    }
}
