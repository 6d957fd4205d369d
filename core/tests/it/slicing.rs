//! Property test: any sequence of appends, updates and pops, on small chunks, reads
//! back (whole, by slices, one by one, and after a reopen) like a naive in-memory model.

use deeplake_core::{Dataset, Dtype, NdArray, OpenOptions, Sample, TensorOptions};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Vec<i32>>),
    Update(usize, Vec<i32>),
    Pop(usize),
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let sample = prop::collection::vec(any::<i32>(), 0..40);
    prop_oneof![
        4 => prop::collection::vec(sample.clone(), 1..30).prop_map(Op::Append),
        2 => (any::<usize>(), sample).prop_map(|(i, s)| Op::Update(i, s)),
        1 => any::<usize>().prop_map(Op::Pop),
        1 => Just(Op::Flush),
    ]
}

fn arr(v: &[i32]) -> Sample {
    Sample::Array(NdArray::from_slice(vec![v.len()], v).unwrap())
}

fn values(s: &Sample) -> Vec<i32> {
    match s {
        Sample::Array(a) => a.to_f64_vec().into_iter().map(|x| x as i32).collect(),
        other => panic!("not an array: {other:?}"),
    }
}

async fn check(ds: &Dataset, model: &[Vec<i32>], probe: (usize, usize)) {
    let n = model.len() as u64;
    assert_eq!(ds.tensor_len("x").unwrap(), n);
    let all = ds.read_range("x", 0..n).await.unwrap();
    let got: Vec<Vec<i32>> = all.iter().map(values).collect();
    assert_eq!(got, model);
    if n > 0 {
        let a = (probe.0 % model.len()) as u64;
        let b = a + (probe.1 % (model.len() - a as usize + 1)) as u64;
        let slice: Vec<Vec<i32>> = ds
            .read_range("x", a..b)
            .await
            .unwrap()
            .iter()
            .map(values)
            .collect();
        assert_eq!(slice, model[a as usize..b as usize]);
        assert_eq!(values(&ds.read("x", a).await.unwrap()), model[a as usize]);
        assert_eq!(
            ds.shape("x", a).await.unwrap(),
            vec![model[a as usize].len() as u64]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn reads_match_a_naive_model(ops in prop::collection::vec(op(), 1..12), probe in (any::<usize>(), any::<usize>())) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let url = format!("memory://slicing-{:016x}", rand::random::<u64>());
            let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
            let mut o = TensorOptions::new("generic").dtype(Dtype::I32);
            o.max_chunk_size = Some(1024);
            ds.create_tensor("x", o).await.unwrap();
            let mut model: Vec<Vec<i32>> = Vec::new();
            for op in ops {
                match op {
                    Op::Append(samples) => {
                        ds.extend("x", samples.iter().map(|s| arr(s)).collect()).await.unwrap();
                        model.extend(samples);
                    }
                    Op::Update(i, s) if !model.is_empty() => {
                        let i = i % model.len();
                        ds.update("x", i as u64, arr(&s)).await.unwrap();
                        model[i] = s;
                    }
                    Op::Pop(i) if !model.is_empty() => {
                        let i = i % model.len();
                        ds.pop(Some(i as u64)).await.unwrap();
                        model.remove(i);
                    }
                    Op::Flush => ds.flush().await.unwrap(),
                    _ => {}
                }
                check(&ds, &model, probe).await;
            }
            ds.flush().await.unwrap();
            drop(ds);
            let ds = Dataset::open(&url, OpenOptions::default()).await.unwrap();
            check(&ds, &model, probe).await;
        });
    }
}

/// A chunk read (and cached) between a pop and an append that grows it again must
/// not be served stale afterwards.
#[tokio::test]
async fn read_between_pop_and_append_sees_fresh_chunks() {
    let url = format!("memory://slicing-r-{:016x}", rand::random::<u64>());
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    let mut o = TensorOptions::new("generic").dtype(Dtype::I32);
    o.max_chunk_size = Some(1024);
    ds.create_tensor("x", o).await.unwrap();
    let mut model: Vec<Vec<i32>> = Vec::new();
    let batches: [&[usize]; 2] = [&[8, 18, 16, 38, 37], &[23, 15, 36, 23, 3, 39]];
    for (b, lens) in batches.iter().enumerate() {
        let s: Vec<Vec<i32>> = lens
            .iter()
            .map(|&l| vec![b as i32 * 100 + l as i32; l])
            .collect();
        ds.extend("x", s.iter().map(|v| arr(v)).collect())
            .await
            .unwrap();
        model.extend(s);
        check(&ds, &model, (0, 0)).await;
    }
    ds.pop(Some(10)).await.unwrap();
    model.remove(10);
    check(&ds, &model, (3, 5)).await;
    let s: Vec<Vec<i32>> = [15usize, 10, 24, 23, 32, 7, 36, 26]
        .iter()
        .map(|&l| vec![l as i32; l])
        .collect();
    ds.extend("x", s.iter().map(|v| arr(v)).collect())
        .await
        .unwrap();
    model.extend(s);
    check(&ds, &model, (8, 4)).await;
    ds.flush().await.unwrap();
    check(&ds, &model, (1, 9)).await;
}

#[tokio::test]
async fn whole_columns_stack_into_one_array() {
    let url = format!("memory://slicing-col-{:016x}", rand::random::<u64>());
    let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
    ds.create_tensor("b", TensorOptions::new("bbox"))
        .await
        .unwrap();
    let rows: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32, 1.0, 2.0, 3.5]).collect();
    let samples = rows
        .iter()
        .map(|r| Sample::Array(NdArray::from_slice(vec![1, 4], r).unwrap()))
        .collect();
    ds.extend("b", samples).await.unwrap();
    let a = ds.read_array("b", 2..7).await.unwrap();
    assert_eq!(a.shape, vec![5, 1, 4]);
    assert_eq!(a.dtype, Dtype::F32);
    let want: Vec<f64> = rows[2..7].iter().flatten().map(|&v| v as f64).collect();
    assert_eq!(a.to_f64_vec(), want);
    ds.append(
        "b",
        Sample::Array(NdArray::from_slice(vec![2, 4], &[0f32; 8]).unwrap()),
    )
    .await
    .unwrap();
    let e = ds.read_array("b", 0..11).await.unwrap_err();
    assert!(e.to_string().contains("ragged"), "{e}");
}

#[derive(Clone, Debug)]
enum TileOp {
    Append(Vec<(usize, usize, u8)>),
    Update(usize, (usize, usize, u8)),
    Pop(usize),
    Flush,
}

fn grid(h: usize, w: usize, seed: u8) -> Vec<u8> {
    (0..h * w)
        .map(|k| (k as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn tile_op() -> impl Strategy<Value = TileOp> {
    let sample = (1usize..13, 1usize..13, any::<u8>());
    prop_oneof![
        3 => prop::collection::vec(sample.clone(), 1..8).prop_map(TileOp::Append),
        3 => (any::<usize>(), sample).prop_map(|(i, s)| TileOp::Update(i, s)),
        1 => any::<usize>().prop_map(TileOp::Pop),
        1 => Just(TileOp::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    /// Samples over the tiling threshold (64 bytes here) are tiled; updates move samples
    /// in and out of tiles and split chunks around them.
    #[test]
    fn tiled_samples_update_and_pop_like_a_model(ops in prop::collection::vec(tile_op(), 1..14)) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async {
            let url = format!("memory://tiles-{:016x}", rand::random::<u64>());
            let mut ds = Dataset::create(&url, OpenOptions::default()).await.unwrap();
            let mut o = TensorOptions::new("generic").dtype(Dtype::U8);
            o.max_chunk_size = Some(1024);
            o.tiling_threshold = Some(64);
            ds.create_tensor("g", o).await.unwrap();
            let mut model: Vec<(Vec<usize>, Vec<u8>)> = Vec::new();
            let mk = |(h, w, seed): (usize, usize, u8)| (vec![h, w], grid(h, w, seed));
            let sample = |(shape, data): &(Vec<usize>, Vec<u8>)| {
                Sample::Array(NdArray::new(Dtype::U8, shape.clone(), data.clone()).unwrap())
            };
            for op in ops {
                match op {
                    TileOp::Append(v) => {
                        let v: Vec<_> = v.into_iter().map(mk).collect();
                        ds.extend("g", v.iter().map(sample).collect()).await.unwrap();
                        model.extend(v);
                    }
                    TileOp::Update(i, s) if !model.is_empty() => {
                        let i = i % model.len();
                        let s = mk(s);
                        ds.update("g", i as u64, sample(&s)).await.unwrap();
                        model[i] = s;
                    }
                    TileOp::Pop(i) if !model.is_empty() => {
                        let i = i % model.len();
                        ds.pop(Some(i as u64)).await.unwrap();
                        model.remove(i);
                    }
                    TileOp::Flush => ds.flush().await.unwrap(),
                    _ => {}
                }
                let got = ds.read_range("g", 0..model.len() as u64).await.unwrap();
                for (k, (g, (shape, data))) in got.iter().zip(&model).enumerate() {
                    let Sample::Array(a) = g else { panic!("row {k} not an array") };
                    assert_eq!((&a.shape, a.data.as_ref()), (shape, data.as_slice()), "row {k}");
                }
                assert_eq!(got.len(), model.len());
            }
            ds.flush().await.unwrap();
            drop(ds);
            let ds = Dataset::open(&url, OpenOptions::default()).await.unwrap();
            for (k, (shape, data)) in model.iter().enumerate() {
                let Sample::Array(a) = ds.read("g", k as u64).await.unwrap() else { panic!() };
                assert_eq!((&a.shape, a.data.as_ref()), (shape, data.as_slice()), "row {k} after reopen");
            }
        });
    }
}
