//! The body of the `airbyte_messages` fuzz target (fuzz/src/airbyte.rs, built here as a module:
//! the fuzz crate is a workspace of its own for the nightly fuzzer) over its seed
//! corpus, with every prefix and byte flip of each seed, on stable and in the main
//! build. Crashes the fuzzer found stay in the corpus as regression cases.

#[path = "../../../fuzz/src/airbyte.rs"]
mod body;

#[test]
fn airbyte_messages_seed_corpus_passes() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/airbyte_messages");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(seeds.len() >= 6, "seed corpus has {} files", seeds.len());
    for bytes in seeds {
        body::airbyte_messages(&bytes);
        for cut in 0..bytes.len() {
            body::airbyte_messages(&bytes[..cut]);
        }
        for k in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[k] ^= 0xff;
            body::airbyte_messages(&flipped);
        }
    }
}
