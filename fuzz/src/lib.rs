//! The bodies of the fuzz targets, as plain functions: the main workspace's tests
//! (`core/tests/it/fuzz_corpus.rs`) run them over the seed corpora on stable, without
//! libFuzzer.
//!
//! Contract checked for every input: no decoder panics; when one succeeds, every lookup on
//! the result is safe to call, and decode -> encode -> decode gives the same value.

use bytes::Bytes;
use deeplake_core::Dtype;
use deeplake_core::format::chunk::{Chunk, ChunkBuilder};
use deeplake_core::format::diff::{CommitDiff, DatasetDiff};
use deeplake_core::format::encoders::{
    ChunkIdEncoder, CredsEncoder, PadEncoder, SequenceEncoder, TileEncoder,
};
use deeplake_core::format::polygon;

/// Lookups per decoded value: enough to cover every row of a small input, bounded so that
/// a run-length row claiming four billion samples does not stall the fuzzer.
const MAX_LOOKUPS: u64 = 1024;

/// Parses `data` as a TQL query: any text gives a query or an error, never a panic, and
/// an error names a position inside the text.
pub fn parse_tql(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(deeplake_core::Error::Query { pos: Some(p), .. }) =
        deeplake_core::tql::parser::parse(text)
    {
        assert!(p <= text.chars().count(), "error position {p} past the end");
    }
}

/// Runs `data` through every decoder; panics only on a broken contract.
pub fn decode_format(data: &[u8]) {
    chunk(data);
    chunk_ids(data);
    tiles(data);
    sequences(data);
    creds(data);
    pads(data);
    diffs(data);
    polygons(data);
}

fn chunk(data: &[u8]) {
    let Ok(c) = Chunk::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let n = c.num_samples();
    for i in 0..n.min(MAX_LOOKUPS as usize) + 1 {
        let _ = (c.shape(i), c.byte_range(i), c.sample_data(i));
    }
    let again = Chunk::decode(Bytes::from(c.encode())).expect("re-encoded chunk decodes");
    assert_eq!(again, c, "chunk round trip");

    let mut b =
        ChunkBuilder::from_parts(c.shapes.clone(), c.byte_positions.clone(), c.data.to_vec());
    let rank = c.shapes.first().map_or(1, |r| r.len().saturating_sub(1));
    let _ = b.clone().remove(n / 2);
    let _ = b.replace(n / 2, &vec![1; rank], &[1, 2, 3]);
    let _ = b.try_push(&vec![2; rank], &[4]);
    let _ = (
        b.nbytes(),
        b.num_samples(),
        b.encode_with_data(&b.data.contiguous()),
    );
}

fn chunk_ids(data: &[u8]) {
    let Ok(e) = ChunkIdEncoder::decode(data) else {
        return;
    };
    for i in 0..e.num_samples().min(MAX_LOOKUPS) + 1 {
        let _ = (e.locate(i), e.rows_of(i), e.first_index(i as usize));
    }
    assert_eq!(
        ChunkIdEncoder::decode(&e.encode()).as_ref(),
        Ok(&e),
        "chunk ids round trip"
    );
}

fn tiles(data: &[u8]) {
    let Ok(mut e) = TileEncoder::decode(data) else {
        return;
    };
    for t in e.entries.values() {
        let _ = (t.grid(), t.num_tiles());
    }
    assert_eq!(
        TileEncoder::decode(&e.encode()).as_ref(),
        Ok(&e),
        "tiles round trip"
    );
    e.remove(0);
}

fn sequences(data: &[u8]) {
    let Ok(mut e) = SequenceEncoder::decode(data) else {
        return;
    };
    for i in 0..e.num_sequences().min(MAX_LOOKUPS) + 1 {
        let _ = e.items(i);
    }
    assert_eq!(
        SequenceEncoder::decode(&e.encode()).as_ref(),
        Ok(&e),
        "sequences round trip"
    );
    e.push(3);
}

fn creds(data: &[u8]) {
    let Ok(mut e) = CredsEncoder::decode(data) else {
        return;
    };
    let n = e.num_samples();
    for i in 0..n.min(MAX_LOOKUPS) + 1 {
        let _ = e.get(i);
    }
    assert_eq!(
        CredsEncoder::decode(&e.encode()).as_ref(),
        Ok(&e),
        "creds round trip"
    );
    let _ = e.set(n / 2, 1);
    let _ = e.remove(n / 3);
    e.push(2);
}

fn pads(data: &[u8]) {
    let Ok(mut e) = PadEncoder::decode(data) else {
        return;
    };
    for i in 0..MAX_LOOKUPS {
        let _ = e.is_padded(i);
    }
    assert_eq!(
        PadEncoder::decode(&e.encode()).as_ref(),
        Ok(&e),
        "pads round trip"
    );
    e.unpad(1);
    e.add(3, 9);
}

fn diffs(data: &[u8]) {
    if let Ok(d) = CommitDiff::decode(data) {
        assert_eq!(
            CommitDiff::decode(&d.encode()).as_ref(),
            Ok(&d),
            "commit_diff round trip"
        );
    }
    if let Ok(d) = DatasetDiff::decode(data) {
        assert_eq!(
            DatasetDiff::decode(&d.encode()).as_ref(),
            Ok(&d),
            "dataset_diff round trip"
        );
    }
}

fn polygons(data: &[u8]) {
    // The whole input as float32 2-D points (the common case), then with the dtype and
    // ndim taken from the first two bytes.
    let mut cases = vec![(data, Dtype::F32, 2)];
    if let [d, n, rest @ ..] = data {
        cases.push((
            rest,
            Dtype::ALL[usize::from(*d) % Dtype::ALL.len()],
            usize::from(*n % 5),
        ));
    }
    for (bytes, dtype, ndim) in cases {
        let Ok(polys) = polygon::decode(bytes, dtype, ndim) else {
            continue;
        };
        let (again, shape) = polygon::encode(&polys).expect("decoded polygons re-encode");
        assert_eq!(shape.len(), 3);
        let round = polygon::decode(&again, dtype, ndim).expect("re-encoded polygons decode");
        assert_eq!(round, polys, "polygon round trip");
    }
}
