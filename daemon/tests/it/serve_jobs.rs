//! `deeplake serve` jobs: every job route and its scope, a gc job that deletes real
//! garbage, cancelling queued and running jobs, and graceful shutdown on a real socket
//! (jobs given their grace period, then cancelled).
//!
//! `steps` is a kind registered here only: it advances one step per `step_ms` until
//! `steps` are done or it is cancelled, so the timing of a running job is under the
//! test's control.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use deeplake_daemon::serve::auth::{Scope, TokenConfig, Tokens, hash_token};
use deeplake_daemon::serve::error::ApiError;
use deeplake_daemon::serve::jobs::{JobContext, JobFuture, JobKind, JobRun};
use deeplake_daemon::serve::{self, AppState, Limits};
use serde_json::{Map, Value, json};

use super::serve::{assert_error, call, call_as, demo, http_get, set_caption};

struct Steps;

impl JobKind for Steps {
    fn name(&self) -> &'static str {
        "steps"
    }

    fn scope(&self) -> Scope {
        Scope::Write
    }

    fn prepare(&self, params: &Map<String, Value>) -> Result<JobRun, ApiError> {
        let steps = params.get("steps").and_then(Value::as_u64).unwrap_or(1000);
        let step =
            Duration::from_millis(params.get("step_ms").and_then(Value::as_u64).unwrap_or(20));
        Ok(Box::new(move |ctx: JobContext| -> JobFuture {
            Box::pin(async move {
                ctx.control.start_stage(steps);
                for _ in 0..steps {
                    if ctx.control.is_cancelled() {
                        break;
                    }
                    tokio::time::sleep(step).await;
                    ctx.control.advance(1);
                }
                Ok(json!({"done": ctx.control.progress().0}))
            })
        }))
    }
}

/// A kind whose run panics: the job fails instead of staying `running`.
struct Panics;

impl JobKind for Panics {
    fn name(&self) -> &'static str {
        "panics"
    }

    fn scope(&self) -> Scope {
        Scope::Write
    }

    fn prepare(&self, _: &Map<String, Value>) -> Result<JobRun, ApiError> {
        Ok(Box::new(|_: JobContext| -> JobFuture {
            Box::pin(async { panic!("a bug in a job") })
        }))
    }
}

struct Fixture {
    root: tempfile::TempDir,
    state: AppState,
    app: axum::Router,
}

async fn fixture(tokens: Tokens) -> Fixture {
    let root = tempfile::tempdir().unwrap();
    demo(root.path(), "d").await;
    let state = AppState::new(&root.path().to_string_lossy(), Default::default(), tokens);
    state.jobs().register(Arc::new(Steps));
    state.jobs().register(Arc::new(Panics));
    Fixture {
        app: serve::router(state.clone(), &Limits::default()),
        state,
        root,
    }
}

/// Polls a job until `done(job)` holds (10 s at most).
async fn wait_for(app: &axum::Router, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_for_as(app, None, id, done).await
}

async fn wait_for_as(
    app: &axum::Router,
    token: Option<&str>,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let (st, v) = call_as(app, "GET", &format!("/jobs/{id}"), token, None).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        if done(&v) {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "job stuck: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn finished(v: &Value) -> bool {
    ["succeeded", "failed", "cancelled"].contains(&v["state"].as_str().unwrap())
}

async fn start(app: &axum::Router, body: Value) -> Value {
    let (st, v) = call(app, "POST", "/datasets/d/jobs", Some(body)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    v
}

fn exists(root: &std::path::Path, key: &str) -> bool {
    root.join("d").join(key).exists()
}

#[tokio::test]
async fn gc_job_lists_then_deletes_garbage() {
    let f = fixture(Tokens::default()).await;
    // A rewrite of a flushed row leaves its old chunk behind (as core's gc tests do).
    set_caption(f.root.path(), "main", 0, "rewritten").await;

    let job = start(&f.app, json!({"kind": "gc", "grace_s": 0, "delete": null})).await;
    assert_eq!(job["kind"], "gc");
    assert_eq!(job["dataset"], "d");
    assert_eq!(job["params"], json!({"grace_s": 0, "delete": null}));
    let id = job["id"].as_str().unwrap().to_owned();
    let first = id.clone();
    let dry = wait_for(&f.app, &id, finished).await;
    assert_eq!(dry["state"], "succeeded", "{dry}");
    assert_eq!(dry["result"]["deleted"], false);
    let listed: Vec<String> = dry["result"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_owned())
        .collect();
    assert!(!listed.is_empty(), "{dry}");
    assert!(
        dry["result"]["by_reason"]["unreferenced_chunk"]["objects"]
            .as_u64()
            .unwrap()
            >= 1,
        "{dry}"
    );
    assert!(
        listed.iter().all(|k| exists(f.root.path(), k)),
        "a dry run deletes nothing"
    );

    let job = start(&f.app, json!({"kind": "gc", "grace_s": 0, "delete": true})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let done = wait_for(&f.app, &id, finished).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["deleted"], true);
    assert_eq!(done["result"]["objects"], listed.len(), "{done}");
    let n = listed.len() as u64;
    assert_eq!(done["progress"], json!({"done": n, "total": n}));
    assert!(done["started_at"].as_f64() <= done["finished_at"].as_f64());
    assert!(listed.iter().all(|k| !exists(f.root.path(), k)), "{done}");
    // The dataset reads as before.
    let (st, v) = call(
        &f.app,
        "GET",
        "/datasets/d/tensors/captions/samples/0",
        None,
    )
    .await;
    assert_eq!((st, v), (StatusCode::OK, json!("rewritten")));
    let (st, v) = call(&f.app, "GET", "/datasets/d/tensors/images/samples/11", None).await;
    assert_eq!(st, StatusCode::OK, "{v}");

    // The default grace period (an hour) leaves what was just superseded alone.
    set_caption(f.root.path(), "main", 1, "again").await;
    let job = start(&f.app, json!({"kind": "gc", "delete": true})).await;
    let v = wait_for(&f.app, job["id"].as_str().unwrap(), finished).await;
    assert_eq!(v["result"]["grace_seconds"], 3600, "{v}");
    assert_eq!(v["result"]["objects"], 0, "{v}");

    let (st, v) = call(&f.app, "GET", "/jobs", None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["jobs"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["jobs"][0]["id"], json!(first), "oldest first");
}

#[tokio::test]
async fn bad_job_requests_answer_400_and_404() {
    let f = fixture(Tokens::default()).await;
    let app = &f.app;
    let (st, v) = call(
        app,
        "POST",
        "/datasets/d/jobs",
        Some(json!({"kind": "transform"})),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "invalid_input");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("\"transform\"") && msg.contains("gc, materialize, panics, steps"),
        "{msg}"
    );
    for body in [
        json!({}),
        json!({"kind": 1}),
        json!({"kind": "gc", "grace": 1}),
        json!({"kind": "gc", "delete": "yes"}),
        json!({"kind": "gc", "grace_s": -1}),
    ] {
        let (st, v) = call(app, "POST", "/datasets/d/jobs", Some(body.clone())).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_error(&v, "invalid_input");
    }
    let gc = Some(json!({"kind": "gc"}));
    let (st, v) = call(app, "POST", "/datasets/nope/jobs", gc.clone()).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    assert_error(&v, "not_found");
    let (st, _) = call(app, "POST", "/datasets/..%2Fd/jobs", gc).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    for method in ["GET", "DELETE"] {
        let (st, v) = call(app, method, "/jobs/nope", None).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{method}: {v}");
        assert_error(&v, "not_found");
    }
    let (_, v) = call(app, "GET", "/jobs", None).await;
    assert_eq!(v, json!({"jobs": []}));

    // A run that panics fails its job with an internal error (no detail to the client).
    let job = start(app, json!({"kind": "panics"})).await;
    let v = wait_for(app, job["id"].as_str().unwrap(), finished).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_error(&v, "internal");
    assert!(
        !v["error"]["message"].as_str().unwrap().contains("a bug"),
        "{v}"
    );
}

#[tokio::test]
async fn job_routes_need_the_kinds_scope_on_the_dataset() {
    let t = |tok: &str, scope: &str, datasets: Option<Vec<&str>>| -> TokenConfig {
        serde_json::from_value(json!({
            "sha256": hash_token(tok), "scope": scope, "datasets": datasets,
        }))
        .unwrap()
    };
    let tokens = Tokens::new(vec![
        t("r", "read", None),
        t("w", "write", None),
        t("a", "admin", None),
        t("a-e", "admin", Some(vec!["e"])),
    ])
    .unwrap();
    let f = fixture(tokens).await;
    let app = &f.app;
    let gc = json!({"kind": "gc"});
    let (st, v) = call_as(app, "POST", "/datasets/d/jobs", None, Some(gc.clone())).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_error(&v, "unauthorized");
    for tok in ["r", "w", "a-e"] {
        let (st, v) = call_as(app, "POST", "/datasets/d/jobs", Some(tok), Some(gc.clone())).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{tok}: {v}");
        assert_error(&v, "forbidden");
    }
    let (st, v) = call_as(app, "POST", "/datasets/d/jobs", Some("a"), Some(gc)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let gc_id = v["id"].as_str().unwrap().to_owned();
    // A kind may need less: `steps` needs write.
    let steps = json!({"kind": "steps", "steps": 1, "step_ms": 1});
    let (st, _) = call_as(
        app,
        "POST",
        "/datasets/d/jobs",
        Some("r"),
        Some(steps.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, v) = call_as(app, "POST", "/datasets/d/jobs", Some("w"), Some(steps)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let steps_id = v["id"].as_str().unwrap().to_owned();

    let uri = format!("/jobs/{gc_id}");
    let (st, _) = call_as(app, "GET", &uri, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    for tok in ["r", "w", "a-e"] {
        for method in ["GET", "DELETE"] {
            let (st, _) = call_as(app, method, &uri, Some(tok), None).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{tok} {method}");
        }
    }
    let (st, v) = call_as(app, "GET", &uri, Some("a"), None).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, _) = call_as(app, "GET", &format!("/jobs/{steps_id}"), Some("w"), None).await;
    assert_eq!(st, StatusCode::OK);

    let ids = |v: &Value| -> Vec<String> {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (st, _) = call_as(app, "GET", "/jobs", None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (_, v) = call_as(app, "GET", "/jobs", Some("r"), None).await;
    assert!(ids(&v).is_empty(), "{v}");
    let (_, v) = call_as(app, "GET", "/jobs", Some("w"), None).await;
    assert_eq!(ids(&v), vec![steps_id.clone()]);
    let (_, v) = call_as(app, "GET", "/jobs", Some("a-e"), None).await;
    assert!(ids(&v).is_empty(), "{v}");
    let (_, v) = call_as(app, "GET", "/jobs", Some("a"), None).await;
    assert_eq!(ids(&v), vec![gc_id.clone(), steps_id]);

    // Cancelling needs the scope too; a finished job answers 409.
    wait_for_as(app, Some("a"), &gc_id, finished).await;
    let (st, v) = call_as(app, "DELETE", &uri, Some("a"), None).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_error(&v, "conflict");
}

#[tokio::test]
async fn cancel_queued_and_running_jobs_then_rerun_gc() {
    let f = fixture(Tokens::default()).await;
    let app = &f.app;
    set_caption(f.root.path(), "main", 0, "rewritten").await;
    // Two long jobs take both slots; a gc waits behind them.
    let long = json!({"kind": "steps", "steps": 100_000, "step_ms": 5});
    let a = start(app, long.clone()).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = start(app, long).await["id"].as_str().unwrap().to_owned();
    for id in [&a, &b] {
        wait_for(app, id, |v| {
            v["state"] == "running" && v["progress"]["done"].as_u64() > Some(0)
        })
        .await;
    }
    let gc = start(app, json!({"kind": "gc", "grace_s": 0, "delete": true})).await;
    let gc = gc["id"].as_str().unwrap().to_owned();
    let (_, v) = call(app, "GET", &format!("/jobs/{gc}"), None).await;
    assert_eq!(v["state"], "queued", "{v}");

    let (st, v) = call(app, "DELETE", &format!("/jobs/{gc}"), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        v["state"], "cancelled",
        "a queued job is cancelled at once: {v}"
    );
    assert_eq!(v["cancel_requested"], true);

    let (st, v) = call(app, "DELETE", &format!("/jobs/{a}"), None).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["cancel_requested"], true);
    let v = wait_for(app, &a, finished).await;
    assert_eq!(v["state"], "cancelled", "{v}");
    let done = v["result"]["done"].as_u64().unwrap();
    assert!(done > 0 && done < 100_000, "stopped between steps: {v}");
    let (st, _) = call(app, "DELETE", &format!("/jobs/{a}"), None).await;
    assert_eq!(st, StatusCode::CONFLICT);
    call(app, "DELETE", &format!("/jobs/{b}"), None).await;
    assert_eq!(wait_for(app, &b, finished).await["state"], "cancelled");

    // The cancelled gc never ran; running it again collects the garbage.
    let v = wait_for(app, &gc, finished).await;
    assert!(v["started_at"].is_null(), "{v}");
    let job = start(app, json!({"kind": "gc", "grace_s": 0, "delete": true})).await;
    let v = wait_for(app, job["id"].as_str().unwrap(), finished).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert!(v["result"]["objects"].as_u64().unwrap() >= 1, "{v}");
}

/// Serves `f` on a real socket until the returned sender fires.
async fn serve_socket(
    f: &Fixture,
    grace_s: u64,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let limits = Limits {
        shutdown_grace_s: grace_s,
        ..Limits::default()
    };
    let state = f.state.clone();
    let task = tokio::spawn(async move {
        serve::serve(listener, state, &limits, async {
            let _ = rx.await;
        })
        .await
    });
    (addr, tx, task)
}

async fn http_post(addr: std::net::SocketAddr, path: &str, body: &Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = body.to_string();
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}

fn job_id(response: &str) -> String {
    assert!(response.starts_with("HTTP/1.1 202"), "{response}");
    let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let v: Value = serde_json::from_str(body).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn shutdown_waits_for_jobs_within_the_grace_period() {
    let f = fixture(Tokens::default()).await;
    let (addr, stop, server) = serve_socket(&f, 30).await;
    // About 0.3 s of work: well inside the grace period, so it finishes.
    let r = http_post(
        addr,
        "/datasets/d/jobs",
        &json!({"kind": "steps", "steps": 30, "step_ms": 10}),
    )
    .await;
    let id = job_id(&r);
    assert!(http_get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    let (_, v) = call(&f.app, "GET", &format!("/jobs/{id}"), None).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["done"], 30);
    // Closed for new jobs.
    let (st, v) = call(
        &f.app,
        "POST",
        "/datasets/d/jobs",
        Some(json!({"kind": "gc"})),
    )
    .await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_error(&v, "unavailable");
}

#[tokio::test]
async fn shutdown_cancels_jobs_past_the_grace_period() {
    let f = fixture(Tokens::default()).await;
    let (addr, stop, server) = serve_socket(&f, 1).await;
    let long = json!({"kind": "steps", "steps": 100_000, "step_ms": 5});
    let running = job_id(&http_post(addr, "/datasets/d/jobs", &long).await);
    let second = job_id(&http_post(addr, "/datasets/d/jobs", &long).await);
    let queued = job_id(&http_post(addr, "/datasets/d/jobs", &long).await);
    let started = Instant::now();
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "waited the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "then cancelled: {took:?}");
    for id in [&running, &second, &queued] {
        let (_, v) = call(&f.app, "GET", &format!("/jobs/{id}"), None).await;
        assert_eq!(v["state"], "cancelled", "{v}");
        assert_eq!(v["cancel_requested"], true);
    }
    let (_, v) = call(&f.app, "GET", &format!("/jobs/{queued}"), None).await;
    assert!(v["started_at"].is_null(), "{v}");
}

/// The materialize job through the router: a query to a new dataset (then read through
/// the server), a saved view in place, bad parameters, and `write` needed on the source
/// and on the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialize_job_writes_a_view_and_checks_scopes() {
    let t = |tok: &str, scope: &str, datasets: Option<Vec<&str>>| -> TokenConfig {
        serde_json::from_value(json!({
            "sha256": hash_token(tok), "scope": scope, "datasets": datasets,
        }))
        .unwrap()
    };
    let tokens = Tokens::new(vec![
        t("r", "read", None),
        t("w", "write", None),
        t("w-src", "write", Some(vec!["src"])),
    ])
    .unwrap();
    let f = fixture(tokens).await;
    let app = &f.app;
    let (src_url, _) = super::materialize::source(f.root.path(), 40).await;
    let body = json!({"kind": "materialize", "query": "SELECT * WHERE labels == 'a'",
        "to": "out", "order": "source", "memory_mb": 4});
    // Write on the source only, or read: refused.
    for tok in ["r", "w-src"] {
        let (st, v) = call_as(
            app,
            "POST",
            "/datasets/src/jobs",
            Some(tok),
            Some(body.clone()),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{tok}: {v}");
    }
    let (st, v) = call_as(app, "POST", "/datasets/src/jobs", Some("w"), Some(body)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["kind"], "materialize");
    let id = v["id"].as_str().unwrap().to_owned();
    let done = wait_for_as(app, Some("w"), &id, finished).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["rows_written"], 14, "{done}");
    assert_eq!(r["rows_skipped"], 0);
    assert_eq!(r["target"], "out");
    assert_eq!(r["cancelled"], false);
    assert_eq!(done["progress"], json!({"done": 14, "total": 14}));
    let (st, v) = call_as(
        app,
        "GET",
        "/datasets/out/tensors/caption/samples/1",
        Some("r"),
        None,
    )
    .await;
    assert_eq!((st, v), (StatusCode::OK, json!("row 3")));
    // A second run onto the finished target fails; the job says why.
    let again = json!({"kind": "materialize", "query": "SELECT * WHERE labels == 'a'",
        "to": "out", "order": "source"});
    let (_, v) = call_as(app, "POST", "/datasets/src/jobs", Some("w"), Some(again)).await;
    let v = wait_for_as(app, Some("w"), v["id"].as_str().unwrap(), finished).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert_error(&v, "conflict");

    // In place: the saved view becomes `.queries/<id>_OPTIMIZED`.
    let src = deeplake_core::Dataset::open(&src_url, Default::default())
        .await
        .unwrap();
    src.save_view("pick", &[7, 2, 30], None, None, &Default::default())
        .await
        .unwrap();
    let (st, v) = call_as(
        app,
        "POST",
        "/datasets/src/jobs",
        Some("w-src"),
        Some(json!({"kind": "materialize", "view": "pick", "in_place": true})),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let v = wait_for_as(app, Some("w-src"), v["id"].as_str().unwrap(), finished).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["target"], "src/.queries/pick_OPTIMIZED");
    assert_eq!(v["result"]["rows_written"], 3);
    let entry = src.list_views().await.unwrap().remove(0);
    assert!(!entry.is_virtual());
    assert_eq!(
        src.load_view("pick", &Default::default())
            .await
            .unwrap()
            .indices,
        [7, 2, 30]
    );

    // Bad parameters: 400 at the start, or a failed job naming the problem.
    for bad in [
        json!({"kind": "materialize"}),
        json!({"kind": "materialize", "in_place": true}),
        json!({"kind": "materialize", "to": "../x"}),
        json!({"kind": "materialize", "to": "o2", "in_place": true, "view": "pick"}),
        json!({"kind": "materialize", "to": "o2", "query": "SELECT *", "view": "pick"}),
        json!({"kind": "materialize", "to": "o2", "order": "random"}),
        json!({"kind": "materialize", "to": "o2", "on_link_error": "ignore"}),
        json!({"kind": "materialize", "to": "o2", "memory_mb": 0}),
        json!({"kind": "materialize", "to": "o2", "rows": [1]}),
    ] {
        let (st, v) = call_as(
            app,
            "POST",
            "/datasets/src/jobs",
            Some("w"),
            Some(bad.clone()),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_error(&v, "invalid_input");
    }
    for bad in [
        json!({"kind": "materialize", "to": "src"}),
        json!({"kind": "materialize", "to": "o3", "rows": [5, 400]}),
        json!({"kind": "materialize", "to": "o4", "tensors": ["nope"]}),
    ] {
        let (_, v) = call_as(
            app,
            "POST",
            "/datasets/src/jobs",
            Some("w"),
            Some(bad.clone()),
        )
        .await;
        let v = wait_for_as(app, Some("w"), v["id"].as_str().unwrap(), finished).await;
        assert_eq!(v["state"], "failed", "{bad}: {v}");
    }
}

/// On a real socket: start, watch progress, cancel mid-run (the result says what was
/// written), start again (it resumes) and read the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialize_job_on_a_socket_cancels_and_resumes() {
    let f = fixture(Tokens::default()).await;
    let (src_url, _) = super::materialize::source(f.root.path(), 3000).await;
    let src = deeplake_core::Dataset::open(&src_url, Default::default())
        .await
        .unwrap();
    let (addr, stop, server) = serve_socket(&f, 5).await;
    let body = json!({"kind": "materialize", "to": "big", "memory_mb": 1});
    let id = job_id(&http_post(addr, "/datasets/src/jobs", &body).await);
    let running = wait_for(&f.app, &id, |v| {
        v["progress"]["done"].as_u64().unwrap() > 0 || finished(v)
    })
    .await;
    assert_eq!(running["state"], "running", "{running}");
    assert_eq!(running["progress"]["total"], 3000);
    let r = http_delete(addr, &format!("/jobs/{id}")).await;
    assert!(r.starts_with("HTTP/1.1 202"), "{r}");
    let v = wait_for(&f.app, &id, finished).await;
    assert_eq!(v["state"], "cancelled", "{v}");
    assert_eq!(v["result"]["cancelled"], true, "{v}");
    let part = v["result"]["rows_written"].as_u64().unwrap();
    assert!(part > 0 && part < 3000, "{v}");

    let id = job_id(&http_post(addr, "/datasets/src/jobs", &body).await);
    let v = wait_for(&f.app, &id, finished).await;
    assert_eq!(v["state"], "succeeded", "{v}");
    assert_eq!(v["result"]["resumed_from"], part, "{v}");
    assert_eq!(v["result"]["rows_written"], 3000, "{v}");
    let got = http_get(addr, "/datasets/big/tensors/caption/samples/2999").await;
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("\"row 2999\""),
        "{got}"
    );
    let out = deeplake_core::Dataset::open(
        f.root.path().join("big").to_str().unwrap(),
        Default::default(),
    )
    .await
    .unwrap();
    for r in [0u64, 1234, 2999] {
        assert_eq!(
            out.read_stored("img", r).await.unwrap().1,
            bytes::Bytes::from(
                std::fs::read(f.root.path().join(format!("files/{r}.jpg"))).unwrap()
            )
        );
        assert_eq!(
            out.read("caption", r).await.unwrap(),
            src.read("caption", r).await.unwrap()
        );
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

async fn http_delete(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("DELETE {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).await.unwrap();
    out
}
