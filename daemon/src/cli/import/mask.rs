//! Binary masks from COCO segmentations: a polygon rasterizer and the two COCO
//! run-length encodings.
//!
//! A mask plane is `height × width` booleans in row-major order.
//!
//! * Polygons are filled with the even-odd rule, sampled at pixel centres: pixel
//!   `(row, col)` is set when a ray from `(col + 0.5, row + 0.5)` towards +x crosses the
//!   polygon's edges an odd number of times. Edges take their lower end point and not
//!   their upper one, so a centre exactly on a left edge is inside and on a right edge
//!   outside, and shared vertices are not counted twice. Several polygons of one object
//!   are united. Points outside the image are allowed; only pixels inside are set.
//! * RLE (`{"counts", "size": [h, w]}`) lists alternating runs of 0s and 1s, starting
//!   with 0s, over the pixels in column-major order. `counts` is either a list of
//!   integers or pycocotools' compressed string: each count is a signed little-endian
//!   base-32 number written 5 bits per character (`'0' + bits`, bit `0x20` = more
//!   characters follow, bit `0x10` of the last one = sign), and from the fourth count on
//!   it is stored as the difference to the count two places before. The runs must cover
//!   the image exactly.
//!
//! Nothing here panics or allocates by an unchecked size: decoders return errors.

/// Sets the pixels of `plane` inside the polygon `coords` (`x0, y0, x1, y1, ...`). Fewer
/// than three points fill nothing; a trailing odd coordinate is ignored.
pub(crate) fn fill_polygon(plane: &mut [bool], height: usize, width: usize, coords: &[f64]) {
    let points: Vec<(f64, f64)> = coords.chunks_exact(2).map(|p| (p[0], p[1])).collect();
    if points.len() < 3 || plane.len() != height.saturating_mul(width) {
        return;
    }
    let (ymin, ymax) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    // Rows whose centre y = r + 0.5 lies in [ymin, ymax).
    let first = to_index((ymin - 0.5).ceil(), height);
    let last = to_index((ymax - 0.5).ceil(), height);
    let edges: Vec<((f64, f64), (f64, f64))> = points
        .iter()
        .zip(points.iter().cycle().skip(1))
        .map(|(a, b)| (*a, *b))
        .collect();
    let mut xs: Vec<f64> = Vec::new();
    for row in first..last {
        let y = row as f64 + 0.5;
        xs.clear();
        for &((x0, y0), (x1, y1)) in &edges {
            if (y0 <= y) != (y1 <= y) {
                xs.push(x0 + (y - y0) * (x1 - x0) / (y1 - y0));
            }
        }
        xs.sort_by(f64::total_cmp);
        let Some(line) = plane.get_mut(row * width..(row + 1) * width) else {
            return;
        };
        for pair in xs.chunks_exact(2) {
            // Centres c + 0.5 in [a, b): columns ceil(a - 0.5) .. ceil(b - 0.5).
            let from = to_index((pair[0] - 0.5).ceil(), width);
            let to = to_index((pair[1] - 0.5).ceil(), width);
            if let Some(span) = line.get_mut(from..to.max(from)) {
                span.fill(true);
            }
        }
    }
}

/// Clamps a float pixel coordinate to `0..=limit`; NaN becomes 0.
fn to_index(v: f64, limit: usize) -> usize {
    if v.is_nan() || v <= 0.0 {
        0
    } else if v >= limit as f64 {
        limit
    } else {
        v as usize
    }
}

/// Decodes pycocotools' compressed RLE string into run lengths.
pub(crate) fn decode_rle_string(s: &str) -> Result<Vec<u32>, String> {
    let bytes = s.as_bytes();
    // Every count takes at least one character, so this bounds the allocation.
    let mut counts: Vec<i64> = Vec::with_capacity(bytes.len());
    let mut pos = 0usize;
    while pos < bytes.len() {
        let start = pos;
        let mut x: i64 = 0;
        let mut shift = 0u32;
        loop {
            let Some(&b) = bytes.get(pos) else {
                return Err(format!(
                    "compressed RLE ends inside the count that starts at character {start}"
                ));
            };
            if !(48..48 + 64).contains(&b) {
                return Err(format!(
                    "compressed RLE has an invalid character {:?} at {pos}",
                    char::from(b)
                ));
            }
            // Twelve characters hold 60 bits, far more than any run length needs.
            if shift > 55 {
                return Err(format!(
                    "compressed RLE count at character {start} is too long"
                ));
            }
            let c = i64::from(b - 48);
            x |= (c & 0x1f) << shift;
            shift += 5;
            pos += 1;
            if c & 0x20 == 0 {
                if c & 0x10 != 0 {
                    x |= -1i64 << shift;
                }
                break;
            }
        }
        if counts.len() > 2 {
            let base = counts.get(counts.len() - 2).copied().unwrap_or(0);
            x = x
                .checked_add(base)
                .ok_or_else(|| format!("compressed RLE count at character {start} overflows"))?;
        }
        counts.push(x);
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            u32::try_from(c)
                .map_err(|_| format!("compressed RLE run {i} has an invalid length {c}"))
        })
        .collect()
}

/// Checks that `runs` cover a `height × width` image exactly.
pub(crate) fn check_runs(height: usize, width: usize, runs: &[u32]) -> Result<(), String> {
    let total: u64 = runs.iter().map(|&r| u64::from(r)).sum();
    let pixels = (height as u64).saturating_mul(width as u64);
    if total != pixels {
        return Err(format!(
            "RLE runs cover {total} pixels, a {height}x{width} image has {pixels}"
        ));
    }
    Ok(())
}

/// Sets the pixels of `plane` that `runs` (column-major, 0s first) mark as 1.
pub(crate) fn paint_runs(
    plane: &mut [bool],
    height: usize,
    width: usize,
    runs: &[u32],
) -> Result<(), String> {
    check_runs(height, width, runs)?;
    if plane.len() != height.saturating_mul(width) {
        return Err(format!(
            "mask plane of {} pixels for a {height}x{width} image",
            plane.len()
        ));
    }
    let mut pos = 0usize;
    for (i, &run) in runs.iter().enumerate() {
        let end = pos + run as usize;
        if i % 2 == 1 {
            for q in pos..end {
                let (col, row) = (q / height, q % height);
                if let Some(px) = plane.get_mut(row * width + col) {
                    *px = true;
                }
            }
        }
        pos = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders a plane as rows of '0'/'1' for readable assertions.
    fn rows(plane: &[bool], width: usize) -> Vec<String> {
        plane
            .chunks(width)
            .map(|r| r.iter().map(|&b| if b { '1' } else { '0' }).collect())
            .collect()
    }

    fn fill(height: usize, width: usize, polys: &[&[f64]]) -> Vec<String> {
        let mut plane = vec![false; height * width];
        for p in polys {
            fill_polygon(&mut plane, height, width, p);
        }
        rows(&plane, width)
    }

    /// pycocotools' `rleToString`, for round trips.
    fn encode_rle_string(counts: &[u32]) -> String {
        let mut s = String::new();
        for (i, &c) in counts.iter().enumerate() {
            let mut x = i64::from(c);
            if i > 2 {
                x -= i64::from(counts[i - 2]);
            }
            loop {
                let mut ch = x & 0x1f;
                x >>= 5;
                let more = if ch & 0x10 != 0 { x != -1 } else { x != 0 };
                if more {
                    ch |= 0x20;
                }
                s.push(char::from((ch + 48) as u8));
                if !more {
                    break;
                }
            }
        }
        s
    }

    #[test]
    fn rectangle_fills_centres_inside() {
        assert_eq!(
            fill(5, 6, &[&[1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0]]),
            ["000000", "011100", "011100", "000000", "000000"]
        );
    }

    #[test]
    fn triangle_by_hand() {
        // Hypotenuse x = 6 - 1.2 y; at row centres 0.5..4.5 it is 5.4, 4.2, 3.0, 1.8, 0.6.
        assert_eq!(
            fill(5, 6, &[&[0.0, 0.0, 6.0, 0.0, 0.0, 5.0]]),
            ["111110", "111100", "111000", "110000", "100000"]
        );
    }

    #[test]
    fn even_odd_leaves_a_hole() {
        // Outer ring, a cut to the inner ring and back: the inner square is a hole.
        let ring = [
            0.0, 0.0, 6.0, 0.0, 6.0, 5.0, 0.0, 5.0, 0.0, 0.0, 2.0, 1.0, 4.0, 1.0, 4.0, 4.0, 2.0,
            4.0, 2.0, 1.0,
        ];
        assert_eq!(
            fill(5, 6, &[&ring]),
            ["111111", "110011", "110011", "110011", "111111"]
        );
    }

    #[test]
    fn self_intersecting_bow_tie() {
        // Two triangles meeting at (3, 2.5); the crossing edges swap order at that row.
        let bow = [0.0, 0.0, 6.0, 5.0, 6.0, 0.0, 0.0, 5.0];
        assert_eq!(
            fill(5, 6, &[&bow]),
            ["100001", "110011", "111111", "110011", "100001"]
        );
    }

    #[test]
    fn centres_on_edges_follow_the_half_open_rule() {
        // x in [0.5, 2.5), y in [0.5, 1.5): centres on the left/top edges are inside.
        assert_eq!(
            fill(3, 4, &[&[0.5, 0.5, 2.5, 0.5, 2.5, 1.5, 0.5, 1.5]]),
            ["1100", "0000", "0000"]
        );
    }

    #[test]
    fn polygons_unite_and_clip_to_the_image() {
        let a: &[f64] = &[-10.0, -10.0, 1.0, -10.0, 1.0, 10.0, -10.0, 10.0];
        let b: &[f64] = &[5.0, 4.0, 100.0, 4.0, 100.0, 100.0, 5.0, 100.0];
        assert_eq!(
            fill(5, 6, &[a, b]),
            ["100000", "100000", "100000", "100000", "100001"]
        );
    }

    #[test]
    fn degenerate_polygons_fill_nothing() {
        let nan = f64::NAN;
        for p in [
            &[1.0, 1.0, 4.0, 4.0][..],
            &[][..],
            &[nan, nan, 1.0, 2.0, 3.0, nan][..],
            &[0.0, 0.0, 5.0, 0.0, 9.0, 0.0][..],
        ] {
            assert!(fill(5, 6, &[p]).iter().all(|r| r == "000000"), "{p:?}");
        }
        // A plane of the wrong size is left alone rather than indexed out of bounds.
        let mut small = vec![false; 3];
        fill_polygon(&mut small, 5, 6, &[0.0, 0.0, 6.0, 0.0, 0.0, 5.0]);
        assert_eq!(small, vec![false; 3]);
    }

    #[test]
    fn compressed_rle_by_hand() {
        // 3 ('3'), 2 ('2'), 25 = 0b11001: low 5 bits 25 with the sign bit set, so a
        // continuation ('0' + 25 + 32 = 'i') and a zero ('0').
        assert_eq!(decode_rle_string("32i0").unwrap(), vec![3, 2, 25]);
        assert_eq!(encode_rle_string(&[3, 2, 25]), "32i0");
        assert_eq!(decode_rle_string("").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn compressed_rle_round_trips_with_deltas() {
        let cases: [&[u32]; 4] = [
            &[0, 30],
            &[5, 100, 3, 2, 50, 1, 70_000, 16, 15, 17],
            &[1_000_000, 1, 999_999],
            &[31, 32, 33, 0, 1, 2, 4_000_000_000],
        ];
        for counts in cases {
            let s = encode_rle_string(counts);
            assert_eq!(decode_rle_string(&s).unwrap(), counts, "{s}");
        }
    }

    #[test]
    fn bad_compressed_rle_is_an_error() {
        assert!(
            decode_rle_string("3 2")
                .unwrap_err()
                .contains("invalid character")
        );
        assert!(
            decode_rle_string("3~")
                .unwrap_err()
                .contains("invalid character")
        );
        // 'P' = '0' + 0x20: a continuation with nothing after it.
        assert!(decode_rle_string("3P").unwrap_err().contains("ends inside"));
        // '?' = '0' + 15 ... and '@' = '0' + 16: a lone sign bit makes -16.
        assert!(
            decode_rle_string("@")
                .unwrap_err()
                .contains("invalid length -16")
        );
        assert!(
            decode_rle_string(&"o".repeat(20))
                .unwrap_err()
                .contains("too long")
        );
        // A delta that makes a later count negative.
        let s = format!("{}{}", encode_rle_string(&[1, 5, 1]), "C");
        assert!(decode_rle_string(&s).is_err());
    }

    #[test]
    fn runs_are_column_major() {
        // 2 rows, 3 columns: pixels in order (0,0) (1,0) (0,1) (1,1) (0,2) (1,2).
        let mut plane = vec![false; 6];
        paint_runs(&mut plane, 2, 3, &[1, 2, 3]).unwrap();
        assert_eq!(rows(&plane, 3), ["010", "100"]);
        let mut plane = vec![false; 6];
        paint_runs(&mut plane, 2, 3, &[0, 6]).unwrap();
        assert_eq!(rows(&plane, 3), ["111", "111"]);
    }

    #[test]
    fn runs_must_cover_the_image() {
        let mut plane = vec![false; 6];
        assert!(
            paint_runs(&mut plane, 2, 3, &[1, 2])
                .unwrap_err()
                .contains("cover 3 pixels")
        );
        assert!(
            paint_runs(&mut plane, 2, 3, &[1, 2, 4])
                .unwrap_err()
                .contains("cover 7 pixels")
        );
        assert!(paint_runs(&mut [false; 5], 2, 3, &[6]).is_err());
        assert_eq!(plane, vec![false; 6]);
    }
}
