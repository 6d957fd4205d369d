//! The bodies of core's fuzz targets (fuzz/src/{format,meta,tql}.rs, built here as
//! modules: the fuzz crate is a workspace of its own for the nightly fuzzer) over their
//! seed corpora, with every prefix and byte flip of each seed, on stable and in the
//! main build. Crashes the fuzzer found stay in the corpora as regression cases.

#[path = "../../../fuzz/src/format.rs"]
mod format;
#[path = "../../../fuzz/src/meta.rs"]
mod meta;
#[path = "../../../fuzz/src/tql.rs"]
mod tql_body;

/// The files of the seed corpus of `name`.
pub fn corpus(name: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

/// Runs `body` on every seed, every prefix of it and every single-byte flip, as a
/// cheap stand-in for the fuzzer.
fn mutate_all(seeds: Vec<Vec<u8>>, body: fn(&[u8])) {
    for bytes in seeds {
        body(&bytes);
        for cut in 0..bytes.len() {
            body(&bytes[..cut]);
        }
        for k in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[k] ^= 0xff;
            body(&flipped);
        }
    }
}

#[test]
fn decode_format_seed_corpus_passes() {
    let seeds = corpus("decode_format");
    assert!(seeds.len() >= 18, "seed corpus has {} files", seeds.len());
    mutate_all(seeds, format::decode_format);
}

#[test]
fn meta_json_seed_corpus_passes() {
    let seeds = corpus("meta_json");
    assert!(seeds.len() >= 8, "seed corpus has {} files", seeds.len());
    mutate_all(seeds, meta::meta_json);
}

#[test]
fn parse_tql_seed_corpus_passes() {
    let seeds = corpus("parse_tql");
    assert!(seeds.len() >= 20, "seed corpus has {} files", seeds.len());
    for bytes in seeds {
        tql_body::parse_tql(&bytes);
        for cut in 0..bytes.len() {
            tql_body::parse_tql(&bytes[..cut]);
        }
    }
}
