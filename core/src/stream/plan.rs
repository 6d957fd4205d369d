//! The order plan of a stream: which view positions an epoch yields, in which order,
//! to which rank and worker, and where a resumed epoch starts.
//!
//! Contract:
//! * Sequential order is the view's order. A shuffled epoch is a permutation of the
//!   view's positions that depends only on (seed, epoch, the positions' chunks): chunks
//!   are shuffled as whole runs, then rows pass through a bounded shuffle buffer, so a
//!   reader touches few chunks at a time and memory stays bounded.
//! * The random numbers come from ChaCha8 and the shuffles are written here, so an order
//!   is the same on every machine and in every later version: a cursor saved by one
//!   process resumes in another.
//! * Sharding splits an epoch's order into `world` contiguous blocks (sizes differ by at
//!   most one), then each block into workers the same way: the parts are disjoint and
//!   cover the epoch. `even` pads the short parts by wrapping around, so every rank of a
//!   data-parallel job yields the same number of rows (collective ops would otherwise
//!   wait forever for the rank with fewer batches).
//! * A [`Cursor`] names an epoch and how many rows of this part were yielded; resuming
//!   from it yields exactly the rest.

use std::ops::Range;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// How rows are ordered within an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Sequential,
    /// Chunk runs shuffled, then rows through a buffer of `buffer` rows (at least 1).
    Shuffle {
        seed: u64,
        buffer: usize,
    },
}

/// One part of `count` (a rank of a job, or a worker of a rank).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub index: u32,
    pub count: u32,
}

impl Part {
    pub const WHOLE: Part = Part { index: 0, count: 1 };

    pub fn new(index: u32, count: u32) -> Result<Part> {
        if count == 0 || index >= count {
            return Err(Error::invalid(format!(
                "part {index} of {count}: the index must be below the count, and the count at least 1"
            )));
        }
        Ok(Part { index, count })
    }

    /// This part's block of `0..n`: contiguous, sizes differing by at most one.
    fn block(self, n: usize) -> Range<usize> {
        let (i, c) = (self.index as usize, self.count as usize);
        (n * i / c)..(n * (i + 1) / c)
    }

    /// The largest block any part of `n` gets.
    fn max_block(self, n: usize) -> usize {
        n.div_ceil(self.count as usize)
    }
}

/// Where an epoch's part resumes: rows already yielded in `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cursor {
    pub epoch: u64,
    pub offset: u64,
}

impl Cursor {
    /// The text form clients keep: `<epoch>:<offset>`.
    pub fn to_token(self) -> String {
        format!("{}:{}", self.epoch, self.offset)
    }

    pub fn parse(token: &str) -> Result<Cursor> {
        let bad = || {
            Error::invalid(format!(
                "cursor {token:?}: expected <epoch>:<offset>, two whole numbers"
            ))
        };
        let (e, o) = token.split_once(':').ok_or_else(bad)?;
        Ok(Cursor {
            epoch: e.parse().map_err(|_| bad())?,
            offset: o.parse().map_err(|_| bad())?,
        })
    }
}

/// The positions of a view grouped by the chunk their rows live in (of the stream's
/// primary tensor), in view order.
#[derive(Clone, Debug)]
pub struct Plan {
    len: usize,
    /// Runs of consecutive view positions whose rows share a chunk.
    runs: Vec<Range<usize>>,
}

impl Plan {
    /// `chunk_of[p]` is an id of the chunk holding view position `p`'s row (any value
    /// that is equal for rows in one chunk).
    pub fn new(chunk_of: &[u64]) -> Plan {
        let mut runs = Vec::new();
        let mut start = 0;
        for p in 1..=chunk_of.len() {
            if p == chunk_of.len() || chunk_of[p] != chunk_of[p - 1] {
                runs.push(start..p);
                start = p;
            }
        }
        Plan {
            len: chunk_of.len(),
            runs,
        }
    }

    /// A plan that knows no chunks: every position is its own run.
    pub fn unchunked(len: usize) -> Plan {
        Plan {
            len,
            runs: (0..len).map(|p| p..p + 1).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole epoch's order of view positions, before sharding.
    pub fn epoch_order(&self, order: Order, epoch: u64) -> Vec<usize> {
        match order {
            Order::Sequential => (0..self.len).collect(),
            Order::Shuffle { seed, buffer } => {
                let mut rng = epoch_rng(seed, epoch);
                let mut runs: Vec<&Range<usize>> = self.runs.iter().collect();
                shuffle(&mut runs, &mut rng);
                let buffer = buffer.max(1);
                let mut out = Vec::with_capacity(self.len);
                let mut pool: Vec<usize> = Vec::with_capacity(buffer.min(self.len));
                for p in runs.into_iter().flat_map(|r| r.clone()) {
                    if pool.len() < buffer {
                        pool.push(p);
                        continue;
                    }
                    let k = below(&mut rng, pool.len());
                    out.push(std::mem::replace(&mut pool[k], p));
                }
                shuffle(&mut pool, &mut rng);
                out.extend(pool);
                out
            }
        }
    }

    /// The positions `rank` (of the job) and `worker` (of the rank) yield in `epoch`,
    /// from the cursor's offset on. With `even`, every part of the same level has the
    /// same length (short parts wrap around to their epoch's start).
    pub fn part(
        &self,
        order: Order,
        rank: Part,
        worker: Part,
        even: bool,
        cursor: Cursor,
    ) -> Result<Vec<usize>> {
        let all = self.epoch_order(order, cursor.epoch);
        let mut mine = slice_part(&all, rank, even);
        mine = slice_part(&mine, worker, even);
        let offset = usize::try_from(cursor.offset).unwrap_or(usize::MAX);
        if offset > mine.len() {
            return Err(Error::invalid(format!(
                "cursor {}: this part of epoch {} has only {} rows",
                cursor.to_token(),
                cursor.epoch,
                mine.len()
            )));
        }
        mine.drain(..offset);
        Ok(mine)
    }
}

fn slice_part(order: &[usize], part: Part, even: bool) -> Vec<usize> {
    let block = part.block(order.len());
    let mut out = order[block].to_vec();
    if even && !order.is_empty() {
        let want = part.max_block(order.len());
        let mut k = 0;
        while out.len() < want {
            out.push(order[k % order.len()]);
            k += 1;
        }
    }
    out
}

/// The generator of one epoch: the seed and the epoch mixed, so epochs differ and each
/// can be made without the ones before it.
fn epoch_rng(seed: u64, epoch: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&epoch.to_le_bytes());
    key[16..].copy_from_slice(b"deeplake-stream\0");
    ChaCha8Rng::from_seed(key)
}

/// A uniform integer in `0..n` (n >= 1), by rejection so no value is favoured.
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    let n = n as u64;
    let zone = u64::MAX - (u64::MAX % n);
    loop {
        let x = rng.next_u64();
        if x < zone {
            return (x % n) as usize;
        }
    }
}

/// Fisher-Yates, written here so that orders never change with a dependency's version.
fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = below(rng, i + 1);
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunks(n: usize, per: usize) -> Vec<u64> {
        (0..n).map(|p| (p / per) as u64).collect()
    }

    #[test]
    fn sequential_is_the_view_order() {
        let p = Plan::new(&chunks(10, 4));
        assert_eq!(
            p.epoch_order(Order::Sequential, 3),
            (0..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_shuffle_is_a_seeded_permutation_that_changes_by_epoch() {
        let p = Plan::new(&chunks(1000, 50));
        let o = Order::Shuffle {
            seed: 7,
            buffer: 64,
        };
        let a = p.epoch_order(o, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(a, p.epoch_order(o, 0));
        assert_ne!(a, p.epoch_order(o, 1));
        assert_ne!(
            a,
            p.epoch_order(
                Order::Shuffle {
                    seed: 8,
                    buffer: 64
                },
                0
            )
        );
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_shuffle_stays_near_few_chunks_at_a_time() {
        // With a buffer of one chunk, any window of 50 rows draws from few chunks.
        let p = Plan::new(&chunks(5000, 50));
        let o = p.epoch_order(
            Order::Shuffle {
                seed: 1,
                buffer: 50,
            },
            0,
        );
        let worst = o
            .chunks(50)
            .map(|w| {
                let mut c: Vec<usize> = w.iter().map(|p| p / 50).collect();
                c.sort_unstable();
                c.dedup();
                c.len()
            })
            .max()
            .unwrap();
        assert!(worst <= 12, "a window of 50 rows spans {worst} chunks");
    }

    #[test]
    fn the_order_is_stable_across_versions() {
        // Cursors saved by clients depend on this exact order: it was recorded when the
        // plan was written, and a change to the generator or the shuffles that moves it
        // breaks every saved cursor, so it must fail here first.
        let p = Plan::new(&chunks(12, 3));
        let got = p.epoch_order(
            Order::Shuffle {
                seed: 42,
                buffer: 4,
            },
            5,
        );
        assert_eq!(got, vec![8, 6, 7, 0, 1, 2, 4, 5, 3, 10, 11, 9]);
    }

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        let c = Cursor {
            epoch: 3,
            offset: 17,
        };
        assert_eq!(Cursor::parse(&c.to_token()).unwrap(), c);
        for bad in ["", "3", "3:", ":4", "a:1", "1:-2", "1:2:3"] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
        assert!(Part::new(2, 2).is_err());
        assert!(Part::new(0, 0).is_err());
    }

    proptest! {
        #[test]
        fn parts_are_disjoint_and_cover_the_epoch(
            n in 0usize..300, per in 1usize..40, world in 1u32..6, workers in 1u32..4,
            seed in any::<u64>(), shuffled in any::<bool>(),
        ) {
            let p = Plan::new(&chunks(n, per));
            let order = if shuffled { Order::Shuffle { seed, buffer: 16 } } else { Order::Sequential };
            let mut seen = Vec::new();
            for r in 0..world {
                for w in 0..workers {
                    let part = p.part(order, Part::new(r, world).unwrap(), Part::new(w, workers).unwrap(), false, Cursor::default()).unwrap();
                    seen.extend(part);
                }
            }
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }

        #[test]
        fn even_parts_have_one_length(n in 1usize..300, world in 1u32..8) {
            let p = Plan::unchunked(n);
            let lens: Vec<usize> = (0..world)
                .map(|r| p.part(Order::Sequential, Part::new(r, world).unwrap(), Part::WHOLE, true, Cursor::default()).unwrap().len())
                .collect();
            prop_assert!(lens.iter().all(|&l| l == lens[0]), "{:?}", lens);
            prop_assert!(lens[0] * world as usize >= n);
        }

        #[test]
        fn a_resumed_part_yields_exactly_the_rest(n in 0usize..200, cut in 0usize..200, seed in any::<u64>()) {
            let p = Plan::new(&chunks(n, 7));
            let order = Order::Shuffle { seed, buffer: 8 };
            let rank = Part::new(1, 3).unwrap();
            let whole = p.part(order, rank, Part::WHOLE, false, Cursor { epoch: 2, offset: 0 }).unwrap();
            let cut = cut.min(whole.len());
            let rest = p.part(order, rank, Part::WHOLE, false, Cursor { epoch: 2, offset: cut as u64 }).unwrap();
            prop_assert_eq!(&whole[cut..], &rest[..]);
            let past = Cursor { epoch: 2, offset: whole.len() as u64 + 1 };
            prop_assert!(p.part(order, rank, Part::WHOLE, false, past).is_err());
        }
    }
}
