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
