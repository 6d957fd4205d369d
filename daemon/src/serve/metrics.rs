//! Request counts and latency histograms per route, in Prometheus text format.
//!
//! Routes are labelled by their matched pattern (`/datasets/{name}`), never by the raw
//! path, so label sets stay bounded whatever clients send; unmatched requests share the
//! label `unmatched`. The shared chunk cache's counters are rendered with them, and
//! the async runtime's live task count, so a leak of tasks shows as a climbing gauge.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use super::state::AppState;
use deeplake_core::dataset::CacheStats;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Data {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<(String, String), Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    data: Mutex<Data>,
}

impl Metrics {
    fn observe(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        *d.requests
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        let h = d
            .latency
            .entry((method.to_owned(), route.to_owned()))
            .or_default();
        for (k, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[k] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// The Prometheus text exposition of every series, of `cache`'s counters and of the
    /// current async runtime's gauges.
    pub fn render(&self, cache: &CacheStats) -> String {
        let d = self.data.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let (tasks, workers, queued) =
            tokio::runtime::Handle::try_current().map_or((0, 0, 0), |h| {
                let m = h.metrics();
                (
                    m.num_alive_tasks() as u64,
                    m.num_workers() as u64,
                    m.global_queue_depth() as u64,
                )
            });
        for (name, kind, help, v) in [
            (
                "deeplake_runtime_alive_tasks",
                "gauge",
                "Tasks alive on the async runtime (requests, streams, jobs, store connections).",
                tasks,
            ),
            (
                "deeplake_runtime_workers",
                "gauge",
                "Worker threads of the async runtime.",
                workers,
            ),
            (
                "deeplake_runtime_global_queue_depth",
                "gauge",
                "Tasks waiting in the async runtime's global queue.",
                queued,
            ),
            (
                "deeplake_chunk_cache_hits_total",
                "counter",
                "Chunk cache lookups that found their chunk or chunk header.",
                cache.hits,
            ),
            (
                "deeplake_chunk_cache_misses_total",
                "counter",
                "Chunk cache lookups that went to storage.",
                cache.misses,
            ),
            (
                "deeplake_chunk_cache_evictions_total",
                "counter",
                "Chunks evicted to stay within the cache budget.",
                cache.evictions,
            ),
            (
                "deeplake_chunk_cache_bytes",
                "gauge",
                "Bytes held by the chunk cache.",
                cache.bytes,
            ),
            (
                "deeplake_chunk_cache_entries",
                "gauge",
                "Chunks and chunk headers held by the chunk cache.",
                cache.entries,
            ),
            (
                "deeplake_chunk_reads_total",
                "counter",
                "Reads of chunk objects from storage (whole chunks, headers, sample ranges).",
                cache.reads,
            ),
            (
                "deeplake_chunk_read_bytes_total",
                "counter",
                "Bytes of chunk objects read from storage.",
                cache.read_bytes,
            ),
            (
                "deeplake_chunk_cache_budget_bytes",
                "gauge",
                "The chunk cache's byte budget.",
                cache.budget,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP deeplake_http_requests_total HTTP requests answered."
        );
        let _ = writeln!(out, "# TYPE deeplake_http_requests_total counter");
        for ((m, r, s), n) in &d.requests {
            let _ = writeln!(
                out,
                "deeplake_http_requests_total{{method=\"{m}\",route=\"{}\",status=\"{s}\"}} {n}",
                escape(r)
            );
        }
        let _ = writeln!(
            out,
            "# HELP deeplake_http_request_duration_seconds Time to answer HTTP requests."
        );
        let _ = writeln!(
            out,
            "# TYPE deeplake_http_request_duration_seconds histogram"
        );
        for ((m, r), h) in &d.latency {
            let r = escape(r);
            for (k, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "deeplake_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"{b}\"}} {}",
                    h.counts[k]
                );
            }
            let _ = writeln!(
                out,
                "deeplake_http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "deeplake_http_request_duration_seconds_sum{{method=\"{m}\",route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "deeplake_http_request_duration_seconds_count{{method=\"{m}\",route=\"{r}\"}} {}",
                h.count
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Middleware recording each request's route, status and latency.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    state.inner.metrics.observe(
        &method,
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}
