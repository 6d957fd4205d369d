//! The body of the `http_bodies` fuzz target (fuzz/src/http.rs, built here as a module:
//! the fuzz crate is a workspace of its own for the nightly fuzzer) over its seed
//! corpus, with every prefix and byte flip of each seed, on stable and in the main
//! build. Crashes the fuzzer found stay in the corpus as regression cases.

#[path = "../../../fuzz/src/http.rs"]
mod body;

#[test]
fn http_bodies_seed_corpus_passes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/http_bodies");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(seeds.len() >= 10, "seed corpus has {} files", seeds.len());
    for bytes in seeds {
        body::http_bodies(&bytes);
        for cut in 0..bytes.len() {
            body::http_bodies(&bytes[..cut]);
        }
        for k in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[k] ^= 0xff;
            body::http_bodies(&flipped);
        }
    }
}
