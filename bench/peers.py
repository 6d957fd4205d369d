#!/usr/bin/env python3
"""The Python peers' side of the side-by-side benchmark (see bench/README.md).

Run once per peer, each in its own venv (``bench/run.sh`` does this):

    <deeplake3 venv>/bin/python bench/peers.py --peer dl3 --data DATA --out DS
    <deeplake4 venv>/bin/python bench/peers.py --peer dl4 --data DATA --out DS

It makes the same measurements as ``bench-ours`` on the same gen_data.py data set and
prints one JSON object with the same keys: ingest, full decoded read (wall and per
process CPU-second), cold random single-sample reads, bytes on disk. ``decode_only``
here is Pillow on one thread, given for reference only: the loader-efficiency ratio in
the report divides by our decode-only rate (same images), as the performance spec does.

Each peer uses its faster reasonable API, measured on this data:

* deeplake 3.9.52: ingest with ``ds.extend`` of ``deeplake.read(path)`` batches inside
  ``with ds:`` (JPEG bytes stored verbatim); read with
  ``ds.images[a:b].numpy(aslist=True)`` (batched, about 2x row-by-row ``ds.images[i]``);
  random reads with ``ds.images[i].numpy()``.
* deeplake 4.7.4: ingest with ``ds.append`` of column batches (file bytes into an
  ``Image(sample_compression="jpeg")`` column), then ``ds.commit()``; read by iterating
  rows (``for row in ds: row["images"]``), the per-row path its own PyTorch wrapper
  uses (column slices ``ds["images"][a:b]`` decode about 4x slower); random reads with
  ``ds[i]["images"]`` (a little faster than ``ds["images"][i]`` here).
"""

import argparse
import io
import json
import math
import os
import shutil
import sys
import time
import warnings

import numpy as np
from PIL import Image

MASK64 = (1 << 64) - 1


def random_indexes(seed, n, count):
    """splitmix64, reduced mod n: the same rows bench-ours reads."""
    state = seed & MASK64
    out = []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z ^= z >> 31
        out.append(z % n)
    return out


def percentile(values, q):
    """Nearest-rank percentile, as bench-ours computes it."""
    if not values:
        return float("nan")
    v = sorted(values)
    rank = min(max(math.ceil(q * len(v)), 1), len(v))
    return v[rank - 1]


def dir_size(path):
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def load_rows(data):
    with open(os.path.join(data, "meta.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_classes(data):
    with open(os.path.join(data, "manifest.json"), encoding="utf-8") as f:
        return json.load(f).get("classes", [])


def pillow_decode(b):
    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


def batches(n, size):
    for a in range(0, n, size):
        yield a, min(a + size, n)


class Dl3:
    """deeplake 3.9.52."""

    name = "deeplake 3.9.52"

    def __init__(self):
        warnings.filterwarnings("ignore")
        import deeplake

        self.dl = deeplake
        self.version = deeplake.__version__

    def write(self, out, data, rows, classes, batch):
        dl = self.dl
        ds = dl.empty(out, overwrite=True, verbose=False)
        with ds:
            ds.create_tensor("images", htype="image", sample_compression="jpeg")
            ds.create_tensor("labels", htype="class_label", class_names=classes)
            ds.create_tensor("boxes", htype="bbox", dtype="float32")
            ds.create_tensor("captions", htype="text")
            for a, b in batches(len(rows), batch):
                part = rows[a:b]
                ds.extend(
                    {
                        "images": [dl.read(os.path.join(data, r["file"])) for r in part],
                        "labels": np.array([r["label"] for r in part], dtype=np.uint32),
                        "boxes": np.array([r["box"] for r in part], dtype=np.float32),
                        "captions": [r["caption"] for r in part],
                    },
                    progressbar=False,
                )
        return "ds.extend({images: [deeplake.read(path)], ...}) per batch inside `with ds:`"

    def open(self, out):
        return self.dl.load(out, read_only=True, verbose=False)

    def full_epoch(self, ds, n, batch):
        count = 0
        for a, b in batches(n, batch):
            for img in ds.images[a:b].numpy(aslist=True):
                count += img.shape[0] > 0
        return count

    full_api = "ds.images[a:b].numpy(aslist=True) in batches, fresh load"

    def read_one(self, ds, i):
        return ds.images[int(i)].numpy()

    random_api = "ds.images[i].numpy(), one fresh load"

    def check(self, ds, rows):
        n = len(rows)
        lens = {t: len(ds[t]) for t in ("images", "labels", "boxes", "captions")}
        labels = ds.labels.numpy().reshape(-1)
        boxes = ds.boxes.numpy().reshape(n, 4)
        return lens, labels, boxes


class Dl4:
    """deeplake 4.7.4."""

    name = "deeplake 4.7.4"

    def __init__(self):
        import deeplake

        self.dl = deeplake
        self.version = deeplake.__version__

    def write(self, out, data, rows, classes, batch):
        dl = self.dl
        types = dl.types
        ds = dl.create(out)
        ds.add_column("images", types.Image(sample_compression="jpeg"))
        ds.add_column("labels", types.ClassLabel("uint32"))
        ds.add_column("boxes", types.BoundingBox("float32"))
        ds.add_column("captions", types.Text())
        ds["labels"].metadata["class_names"] = classes
        for a, b in batches(len(rows), batch):
            part = rows[a:b]
            images = []
            for r in part:
                with open(os.path.join(data, r["file"]), "rb") as f:
                    images.append(f.read())
            ds.append(
                {
                    "images": images,
                    "labels": np.array([r["label"] for r in part], dtype=np.uint32),
                    "boxes": np.array([r["box"] for r in part], dtype=np.float32),
                    "captions": [r["caption"] for r in part],
                }
            )
        ds.commit()
        return "ds.append({images: [file bytes], ...}) per batch, then ds.commit()"

    def open(self, out):
        return self.dl.open_read_only(out)

    def full_epoch(self, ds, n, batch):
        count = 0
        for row in ds:
            img = row["images"]
            count += img.shape[0] > 0
        return count

    full_api = 'for row in ds: row["images"] (row by row), fresh open'

    def read_one(self, ds, i):
        return ds[int(i)]["images"]

    random_api = 'ds[i]["images"], one fresh open'

    def check(self, ds, rows):
        n = len(rows)
        lens = {t: len(ds[t]) for t in ("images", "labels", "boxes", "captions")}
        labels = np.asarray(ds["labels"][0:n]).reshape(-1)
        boxes = np.asarray(ds["boxes"][0:n]).reshape(n, 4)
        return lens, labels, boxes


def decode_only(jpegs, min_cpu_s):
    c0, t0 = time.thread_time(), time.perf_counter()
    images = 0
    while True:
        for b in jpegs:
            pillow_decode(b)
            images += 1
        if time.thread_time() - c0 >= min_cpu_s:
            break
    cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
    return {
        "images": images,
        "seconds": wall,
        "cpu_s": cpu,
        "images_per_cpu_s": images / cpu,
        "images_per_s": images / wall,
        "decoder": f"Pillow {Image.__version__} (Image.open().convert('RGB') + asarray), one thread; reference only",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", choices=["dl3", "dl4"], required=True)
    ap.add_argument("--data", required=True, help="directory written by gen_data.py")
    ap.add_argument("--out", required=True, help="dataset directory to create (replaced)")
    ap.add_argument("--write-batch", type=int, default=256)
    ap.add_argument("--read-batch", type=int, default=64)
    ap.add_argument("--random-reads", type=int, default=500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--write-min-cpu-s", type=float, default=1.0)
    ap.add_argument("--read-min-cpu-s", type=float, default=2.0)
    ap.add_argument("--decode-min-cpu-s", type=float, default=2.0)
    ap.add_argument("--write-only", action="store_true", help="write the dataset once, untimed, and stop")
    args = ap.parse_args()

    peer = Dl3() if args.peer == "dl3" else Dl4()
    rows = load_rows(args.data)
    classes = load_classes(args.data)
    n = len(rows)
    if n == 0:
        sys.exit("no rows")
    if args.write_only:
        if os.path.exists(args.out):
            shutil.rmtree(args.out)
        peer.write(args.out, args.data, rows, classes, args.write_batch)
        print(json.dumps({"system": args.peer, "written": args.out, "n": n}))
        return

    # Ingest; the timed span includes reading the files, as for bench-ours. Repeated
    # into a fresh dataset (the old one deleted untimed) until enough CPU time is spent.
    walls, write_cpu = [], 0.0
    while True:
        if os.path.exists(args.out):
            shutil.rmtree(args.out)
        c0, t0 = time.process_time(), time.perf_counter()
        write_api = peer.write(args.out, args.data, rows, classes, args.write_batch)
        walls.append(time.perf_counter() - t0)
        write_cpu += time.process_time() - c0
        if write_cpu >= args.write_min_cpu_s:
            break
    write_s = percentile(walls, 0.5)
    jpegs = []
    for r in rows:
        with open(os.path.join(args.data, r["file"]), "rb") as f:
            jpegs.append(f.read())
    raw = sum(len(b) for b in jpegs)
    disk = dir_size(args.out)

    # Full decoded read: whole epochs, each from a fresh open, until enough CPU time.
    c0, t0 = time.process_time(), time.perf_counter()
    images = epochs = 0
    while True:
        ds = peer.open(args.out)
        got = peer.full_epoch(ds, n, args.read_batch)
        if got != n:
            sys.exit(f"full read returned {got} images, expected {n}")
        images += got
        epochs += 1
        del ds
        if time.process_time() - c0 >= args.read_min_cpu_s:
            break
    read_cpu, read_wall = time.process_time() - c0, time.perf_counter() - t0

    dec = decode_only(jpegs, args.decode_min_cpu_s)

    # Cold random access.
    idx = random_indexes(args.seed, n, args.random_reads)
    t0 = time.perf_counter()
    ds = peer.open(args.out)
    open_ms = (time.perf_counter() - t0) * 1e3
    lat, got = [], []
    for i in idx:
        t = time.perf_counter()
        a = peer.read_one(ds, i)
        lat.append((time.perf_counter() - t) * 1e3)
        got.append(a)
    dec_ms, shape_bad, max_diff = [], 0, 0
    for i, a in zip(idx, got):
        t = time.perf_counter()
        ref = pillow_decode(jpegs[i])
        dec_ms.append((time.perf_counter() - t) * 1e3)
        if a.shape != ref.shape:
            shape_bad += 1
        else:
            max_diff = max(max_diff, int(np.abs(a.astype(np.int16) - ref.astype(np.int16)).max()))

    lens, labels, boxes = peer.check(ds, rows)
    want_labels = np.array([r["label"] for r in rows])
    want_boxes = np.array([r["box"] for r in rows], dtype=np.float32)
    bad = int(np.sum((labels != want_labels) | np.any(boxes != want_boxes, axis=1)))
    if any(v != n for v in lens.values()) or bad:
        sys.exit(f"check failed: lengths {lens}, {bad} rows with wrong label or box")

    report = {
        "system": args.peer,
        "version": peer.version,
        "n": n,
        "jpeg_bytes": raw,
        "write": {
            "repeats": len(walls),
            "seconds": write_s,
            "seconds_all": walls,
            "samples_per_s": n / write_s,
            "mb_per_s": raw / 1e6 / write_s,
            "cpu_s": write_cpu,
            "samples_per_cpu_s": n * len(walls) / write_cpu,
            "batch": args.write_batch,
            "api": write_api,
        },
        "full_read": {
            "images": images,
            "epochs": epochs,
            "seconds": read_wall,
            "images_per_s": images / read_wall,
            "cpu_s": read_cpu,
            "images_per_cpu_s": images / read_cpu,
            "batch": args.read_batch,
            "api": peer.full_api,
        },
        "decode_only": dec,
        "random": {
            "reads": len(idx),
            "seed": args.seed,
            "open_ms": open_ms,
            "p50_ms": percentile(lat, 0.50),
            "p99_ms": percentile(lat, 0.99),
            "mean_ms": sum(lat) / len(lat),
            "decode_p50_ms": percentile(dec_ms, 0.50),
            "decoder": "Pillow",
            "shape_mismatches": shape_bad,
            "max_abs_diff_vs_pillow": max_diff,
            "api": peer.random_api,
        },
        "disk": {"dataset_bytes": disk, "raw_jpeg_bytes": raw, "ratio": disk / raw},
        "checks": {"rows": n, "label_box_mismatches": bad},
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
