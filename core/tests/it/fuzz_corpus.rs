//! The fuzz targets' bodies (fuzz/src/lib.rs, built here as a module: the fuzz crate is
//! a workspace of its own for the nightly fuzzer) over their seed corpora, with every
//! prefix and byte flip of each seed, on stable and in the main build.

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod bodies;

fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn decode_format_seed_corpus_passes() {
    let seeds = corpus("decode_format");
    assert!(seeds.len() >= 5, "seed corpus has {} files", seeds.len());
    for bytes in seeds {
        bodies::decode_format(&bytes);
        // Every prefix and a few byte flips, as a cheap stand-in for the fuzzer.
        for cut in 0..bytes.len() {
            bodies::decode_format(&bytes[..cut]);
        }
        for k in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[k] ^= 0xff;
            bodies::decode_format(&flipped);
        }
    }
}

#[test]
fn parse_tql_seed_corpus_passes() {
    let seeds = corpus("parse_tql");
    assert!(seeds.len() >= 20, "seed corpus has {} files", seeds.len());
    for bytes in seeds {
        bodies::parse_tql(&bytes);
        for cut in 0..bytes.len() {
            bodies::parse_tql(&bytes[..cut]);
        }
    }
}
