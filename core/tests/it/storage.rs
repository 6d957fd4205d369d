//! The storage conformance suite on memory, local disk and the S3 test server.

use deeplake_core::store::{Store, StoreOptions};
use testkit::storage;

#[tokio::test]
async fn memory_backend() {
    let s = Store::open("memory://conformance/objects", &StoreOptions::default()).unwrap();
    storage::check_objects(&s).await;
    storage::check_create_if_absent(&s, 16).await;
    storage::check_dataset_round_trip("memory://conformance/ds", StoreOptions::default()).await;
}

#[tokio::test]
async fn local_backend() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("objects").to_string_lossy().into_owned();
    let s = Store::create(&url, &StoreOptions::default()).unwrap();
    storage::check_objects(&s).await;
    storage::check_create_if_absent(&s, 16).await;
    let ds = format!("file://{}", dir.path().join("ds").display());
    storage::check_dataset_round_trip(&ds, StoreOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backend() {
    let (url, opts) = storage::s3_url_and_options("conformance");
    let s = Store::open(&url, &opts).unwrap();
    storage::check_objects(&s).await;
    storage::check_create_if_absent(&s, 8).await;
    let (ds, opts) = storage::s3_url_and_options("conformance-ds");
    storage::check_dataset_round_trip(&ds, opts).await;
}

/// A listing cut midway is taken again, a few times: a listing of 30 keys under cuts
/// at a rate of one in two comes back whole, and one that is always cut fails after
/// its retries with the backend's error.
#[tokio::test]
async fn a_listing_cut_midway_is_taken_again() {
    use std::time::Duration;
    use testkit::faults::FaultPlan;
    let plan = |seed, partial_list| FaultPlan {
        seed,
        error: 0.0,
        error_after: 0.0,
        throttle: 0.0,
        partial_list,
        max_latency: Duration::ZERO,
        crash_after_bytes: None,
    };
    let url = "memory://list-retries/root";
    let s = Store::create(url, &StoreOptions::default()).unwrap();
    for i in 0..30 {
        s.put(&format!("k/{i:02}"), vec![i as u8]).await.unwrap();
    }
    let mut retried = 0;
    for seed in 0..20 {
        let (layer, log) = plan(seed, 0.5).layer();
        let faulty = Store::open(url, &StoreOptions::default().with_layer(layer)).unwrap();
        match faulty.list("k").await {
            Ok(keys) => {
                assert_eq!(keys.len(), 30, "seed {seed}: a listing came back partial");
                retried += log.counts().partial_lists;
            }
            // Four cuts in a row (one in sixteen) fail; the error names the cut.
            Err(e) => {
                assert_eq!(log.counts().partial_lists, 4, "seed {seed}: {e}");
                assert!(e.to_string().contains("listing cut short"), "{e}");
            }
        }
    }
    assert!(retried > 0, "no listing was cut and retried");
    let (layer, log) = plan(99, 1.0).layer();
    let always = Store::open(url, &StoreOptions::default().with_layer(layer)).unwrap();
    let e = always.list("k").await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert_eq!(
        log.counts().partial_lists,
        4,
        "one listing and three retries"
    );
}

/// Requests to one S3 bucket are capped per process: 48 reads at once, each slowed,
/// spread over two stores of the bucket, run at most `max_requests` at a time; with
/// a loose cap the same reads overlap far more. A cap that is not a positive integer
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_requests_in_flight_are_capped_per_bucket() {
    use deeplake_core::store::MAX_REQUESTS;
    use std::time::Duration;
    use testkit::faults::FaultPlan;
    let (url, _) = storage::s3_url_and_options("cap");
    let plain = Store::open(&url, &StoreOptions::default()).unwrap();
    for i in 0..48u8 {
        plain.put(&format!("k/{i:02}"), vec![i; 100]).await.unwrap();
    }
    let slow = FaultPlan {
        seed: 1,
        error: 0.0,
        error_after: 0.0,
        throttle: 0.0,
        partial_list: 0.0,
        max_latency: Duration::from_millis(20),
        crash_after_bytes: None,
    };
    let peak = |cap: usize| {
        let (url, slow) = (url.clone(), slow.clone());
        async move {
            let (layer, log) = slow.layer();
            let opts = StoreOptions::default()
                .with(MAX_REQUESTS, cap.to_string())
                .with_layer(layer);
            let stores = [
                Store::open(&url, &opts).unwrap(),
                Store::open(&url, &opts).unwrap(),
            ];
            let got = futures::future::try_join_all((0..48u8).map(|i| {
                let s = &stores[usize::from(i % 2)];
                async move { s.get(&format!("k/{i:02}")).await }
            }))
            .await
            .unwrap();
            for (i, g) in got.iter().enumerate() {
                assert_eq!(g.as_ref(), &[i as u8; 100][..]);
            }
            log.peak_in_flight()
        }
    };
    let capped = peak(4).await;
    assert!((2..=4).contains(&capped), "peak {capped} with a cap of 4");
    let loose = peak(1000).await;
    assert!(loose > 8, "peak {loose} without a tight cap");
    for bad in ["0", "-3", "many"] {
        let err = Store::open(&url, &StoreOptions::default().with(MAX_REQUESTS, bad))
            .err()
            .unwrap();
        assert!(err.to_string().contains(MAX_REQUESTS), "{err}");
    }
}
