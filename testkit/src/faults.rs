//! Seeded fault injection for object stores: [`FaultStore`] wraps any backend and, by a
//! schedule drawn from a seed, makes requests fail before or after they take effect,
//! answer slowly, be throttled, list partially, or stop for good once a byte budget
//! of writes is spent (a crash: nothing after it reaches storage).
//!
//! Use it through `StoreOptions::with_layer(plan.layer())`: every store the dataset
//! opens then goes through it. The same seed gives the same decisions in the same
//! order of requests, so a failing schedule can be replayed. [`FaultLog::heal`] ends
//! the schedule: later requests pass through untouched (an outage that is over), so a
//! test can check what a long-lived process does once storage is well again.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How often each fault happens (probabilities per request) and the crash point.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub seed: u64,
    /// The request fails without taking effect (a 500).
    pub error: f64,
    /// A write takes effect, then the caller still sees an error (a timeout after
    /// the server applied it): the ambiguous outcome retries must survive.
    pub error_after: f64,
    /// The request is refused as throttled (a 503 SlowDown).
    pub throttle: f64,
    /// A listing yields part of its entries, then fails.
    pub partial_list: f64,
    /// Extra latency, up to this, on a request (drawn per request).
    pub max_latency: Duration,
    /// After this many bytes of writes, the store is gone: the write that crosses it
    /// and every later request fail (a killed process or pod).
    pub crash_after_bytes: Option<u64>,
}

impl FaultPlan {
    /// A schedule of moderate faults drawn from `seed`: its rates, latency and crash
    /// point vary with the seed, so many seeds cover many shapes of trouble.
    pub fn seeded(seed: u64) -> FaultPlan {
        let mut r = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_fa17);
        // Most schedules are mild and some severe: a run of a few hundred requests
        // then completes often enough, and fails often enough, to test both ends.
        let severity = r.random::<f64>().powi(3);
        let mut rate = |max: f64| severity * r.random_range(0.0..max);
        let (error, error_after, throttle, partial_list) =
            (rate(0.03), rate(0.03), rate(0.03), rate(0.2));
        FaultPlan {
            seed,
            error,
            error_after,
            throttle,
            partial_list,
            max_latency: Duration::from_micros(r.random_range(0..300)),
            crash_after_bytes: r.random_bool(0.3).then(|| r.random_range(0..48u64 << 10)),
        }
    }

    /// The layer to give `StoreOptions::with_layer`, sharing one [`FaultLog`].
    #[allow(clippy::type_complexity)]
    pub fn layer(
        &self,
    ) -> (
        impl Fn(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> + Send + Sync + 'static,
        FaultLog,
    ) {
        let state = Arc::new(Mutex::new(State {
            rng: ChaCha8Rng::seed_from_u64(self.seed),
            plan: self.clone(),
            written: 0,
            crashed: false,
            healed: false,
            log: Counts::default(),
            in_flight: 0,
            peak_in_flight: 0,
        }));
        let log = FaultLog(state.clone());
        (
            move |inner: Arc<dyn ObjectStore>| -> Arc<dyn ObjectStore> {
                Arc::new(FaultStore {
                    inner,
                    state: state.clone(),
                })
            },
            log,
        )
    }
}

/// What a schedule did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub errors: u64,
    pub errors_after: u64,
    pub throttled: u64,
    pub partial_lists: u64,
    pub crashed: bool,
}

/// The counts of a plan's stores (all stores opened through one layer share them).
#[derive(Clone)]
pub struct FaultLog(Arc<Mutex<State>>);

impl FaultLog {
    pub fn counts(&self) -> Counts {
        self.0.lock().map(|s| s.log).unwrap_or_default()
    }

    /// The most requests (reads, writes, copies) these stores had in flight at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.0.lock().map(|s| s.peak_in_flight).unwrap_or_default()
    }

    /// Ends the faults of this plan's stores: every later request goes straight to
    /// the backend, without latency (a crash is over too).
    pub fn heal(&self) {
        if let Ok(mut s) = self.0.lock() {
            s.healed = true;
        }
    }
}

struct State {
    rng: ChaCha8Rng,
    plan: FaultPlan,
    written: u64,
    crashed: bool,
    healed: bool,
    log: Counts,
    in_flight: u64,
    peak_in_flight: u64,
}

/// Counts one request as in flight until dropped.
struct InFlight(Arc<Mutex<State>>);

impl InFlight {
    fn new(state: &Arc<Mutex<State>>) -> InFlight {
        if let Ok(mut s) = state.lock() {
            s.in_flight += 1;
            s.peak_in_flight = s.peak_in_flight.max(s.in_flight);
        }
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.in_flight -= 1;
        }
    }
}

/// An object store that misbehaves as its plan says (module docs).
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Ok,
    Fail(&'static str),
    FailAfter,
    PartialList(usize),
}

fn injected(what: &str, location: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "faults",
        source: format!("injected fault: {what} ({location})").into(),
    }
}

impl FaultStore {
    /// Draws the fate of a request writing `bytes` (0 for reads), and its latency.
    fn fate(&self, bytes: u64, write: bool, list: bool) -> (Fate, Duration) {
        let Ok(mut s) = self.state.lock() else {
            return (Fate::Fail("poisoned"), Duration::ZERO);
        };
        s.log.requests += 1;
        if s.healed {
            return (Fate::Ok, Duration::ZERO);
        }
        let max = s.plan.max_latency.as_micros() as u64;
        let latency = Duration::from_micros(if max > 0 {
            s.rng.random_range(0..=max)
        } else {
            0
        });
        if s.crashed {
            return (Fate::Fail("the store crashed earlier"), latency);
        }
        if write {
            s.written += bytes;
            if s.plan
                .crash_after_bytes
                .is_some_and(|limit| s.written > limit)
            {
                s.crashed = true;
                s.log.crashed = true;
                return (Fate::Fail("crash"), latency);
            }
        }
        let (e, ea, th, pl) = (
            s.plan.error,
            s.plan.error_after,
            s.plan.throttle,
            s.plan.partial_list,
        );
        let x: f64 = s.rng.random();
        let fate = if x < e {
            s.log.errors += 1;
            Fate::Fail("500 internal error")
        } else if x < e + th {
            s.log.throttled += 1;
            Fate::Fail("503 slow down")
        } else if write && x < e + th + ea {
            s.log.errors_after += 1;
            Fate::FailAfter
        } else if list && x < e + th + pl {
            s.log.partial_lists += 1;
            Fate::PartialList(s.rng.random_range(0..4))
        } else {
            Fate::Ok
        };
        (fate, latency)
    }

    async fn gate(&self, bytes: u64, write: bool, location: &Path) -> object_store::Result<Fate> {
        let (fate, latency) = self.fate(bytes, write, false);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fate {
            Fate::Fail(what) => Err(injected(what, location.as_ref())),
            other => Ok(other),
        }
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let _busy = InFlight::new(&self.state);
        let fate = self
            .gate(payload.content_length() as u64, true, location)
            .await?;
        let r = self.inner.put_opts(location, payload, opts).await?;
        if fate == Fate::FailAfter {
            return Err(injected("timeout after the write", location.as_ref()));
        }
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // Parts are counted when the upload completes: multipart writes go through
        // the same crash budget only at their start.
        self.gate(0, true, location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let _busy = InFlight::new(&self.state);
        self.gate(0, false, location).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        let _busy = InFlight::new(&self.state);
        self.gate(0, false, location).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let (fate, _) = self.fate(0, true, false);
        match fate {
            Fate::Fail(what) => {
                futures::stream::once(async move { Err(injected(what, "delete")) }).boxed()
            }
            _ => self.inner.delete_stream(locations),
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let (fate, _) = self.fate(0, false, true);
        let where_ = prefix.map(|p| p.to_string()).unwrap_or_default();
        match fate {
            Fate::Fail(what) => {
                futures::stream::once(async move { Err(injected(what, &where_)) }).boxed()
            }
            Fate::PartialList(n) => self
                .inner
                .list(prefix)
                .take(n)
                .chain(futures::stream::once(async move {
                    Err(injected("listing cut short", &where_))
                }))
                .boxed(),
            _ => self.inner.list(prefix),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let (fate, latency) = self.fate(0, false, false);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Fate::Fail(what) = fate {
            return Err(injected(
                what,
                &prefix.map(|p| p.to_string()).unwrap_or_default(),
            ));
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let _busy = InFlight::new(&self.state);
        let fate = self.gate(0, true, to).await?;
        self.inner.copy_opts(from, to, options).await?;
        if fate == Fate::FailAfter {
            return Err(injected("timeout after the copy", to.as_ref()));
        }
        Ok(())
    }
}

/// Outcomes of many schedules added up by kind ("committed", "failed", ...).
pub type Tally = std::collections::BTreeMap<&'static str, u64>;

/// Adds up the `(kind, count)` pairs that schedules report.
pub fn tally<I: IntoIterator<Item = (&'static str, u64)>>(outcomes: I) -> Tally {
    let mut t = Tally::new();
    for (k, n) in outcomes {
        *t.entry(k).or_default() += n;
    }
    t
}

/// Panics unless each of `kinds` happened at least once: a schedule set that never
/// fails, or never succeeds, tests nothing.
#[allow(clippy::panic)]
pub fn saw_each(suite: &str, tally: &Tally, kinds: &[&str]) {
    for k in kinds {
        if tally.get(k).copied().unwrap_or(0) == 0 {
            panic!("{suite}: no {k}: {tally:?}");
        }
    }
}
