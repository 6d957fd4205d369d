//! Body of `decode_format`: every binary decoder of the 3.x format (chunks, the
//! chunk-id, tile, sequence, creds and pad encoders, commit and dataset diffs, polygon
//! samples) and the sample codecs (lz4 blocks and frames, jpeg and png headers and
//! pixels).
//!
//! Contract checked for every input: no decoder panics; when one succeeds, every lookup on
//! the result is safe to call, and decode -> encode -> decode gives the same value; an
//! image's header shape is the shape its pixels decode to; lz4 never yields more than
//! the limit it is given.

use bytes::Bytes;
use deeplake_core::Dtype;
use deeplake_core::format::chunk::{Chunk, ChunkBuilder};
use deeplake_core::format::compression::{self, Compression};
use deeplake_core::format::diff::{CommitDiff, DatasetDiff};
use deeplake_core::format::encoders::{
    ChunkIdEncoder, CredsEncoder, PadEncoder, SequenceEncoder, TileEncoder,
};
use deeplake_core::format::polygon;

/// Lookups per decoded value: enough to cover every row of a small input, bounded so that
/// a run-length row claiming four billion samples does not stall the fuzzer.
const MAX_LOOKUPS: u64 = 1024;

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
    samples(data);
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

/// The most pixels decoded per input: bigger headers are checked but not decoded, so a
/// claimed 10000x10000 image does not stall the fuzzer (the codec limit is tested
/// elsewhere).
const MAX_PIXELS: usize = 1 << 22;

/// The most bytes an lz4 input may decode to here.
const MAX_LZ4: usize = 1 << 20;

fn samples(data: &[u8]) {
    if let Ok(out) = compression::lz4_decompress(data, MAX_LZ4) {
        assert!(out.len() <= MAX_LZ4, "lz4 decoded past its limit");
    }
    let packed = compression::lz4_compress(data);
    let back = compression::lz4_decompress(&packed, data.len()).expect("own lz4 block decodes");
    assert_eq!(back, data, "lz4 round trip");

    for codec in [Compression::Jpeg, Compression::Png] {
        let Ok(shape) = compression::image_shape(data, &codec) else {
            continue;
        };
        let Some(pixels) = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)) else {
            continue;
        };
        if pixels > MAX_PIXELS {
            continue;
        }
        let Ok(arr) = compression::decode_sample(data, &codec, Dtype::U8, &shape) else {
            continue;
        };
        assert_eq!(
            arr.shape,
            shape,
            "{} header shape vs decoded shape",
            codec.name()
        );
        assert_eq!(arr.data.len(), pixels, "{} pixel count", codec.name());
        if codec == Compression::Jpeg {
            let mut out = vec![0u8; pixels];
            if let Ok(true) =
                compression::decode_sample_into(data, &codec, Dtype::U8, &shape, &mut out)
            {
                assert_eq!(out, arr.data, "jpeg decoded in place vs decoded");
            }
        }
        // The per-thread buffer lends what a plain decode returns, whatever it held
        // (a zero-sized header is answered without decoding, so it has nothing to lend).
        if pixels > 0 {
            let lent = compression::with_decoded_image(data, &codec, Dtype::U8, |px, s| {
                Ok((s.to_vec(), px.to_vec()))
            })
            .expect("decodes when decode_sample does");
            assert_eq!(
                (lent.0, &lent.1[..]),
                (arr.shape.clone(), &arr.data[..]),
                "{} lent vs decoded",
                codec.name()
            );
        }
        if pixels > 0 {
            // PNG is lossless: the decoded pixels survive a re-encode exactly.
            let png = compression::encode_sample(&arr, &Compression::Png)
                .expect("decoded pixels encode as png");
            let again = compression::decode_sample(&png, &Compression::Png, Dtype::U8, &shape)
                .expect("own png decodes");
            assert_eq!(again, arr, "png round trip of {} pixels", codec.name());
        }
    }
}
