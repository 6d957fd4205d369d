#!/usr/bin/env python3
"""One Python side of the transform benchmark (bench/run_transform.sh): the same
resize-and-relabel function over the same JPEG files, with T worker processes.

* ``--mode ours``: ``@deeplake_rs.compute`` with ``scheduler="processed"``; workers send
  their rows to a running daemon (``--daemon http://127.0.0.1:PORT``), one commit at the
  end.
* ``--mode dl3``: deeplake 3.9.52's ``@deeplake.compute`` with ``scheduler="processed"``
  into a local dataset (``--out``).
* ``--mode bare``: the function alone in a ``multiprocessing`` pool of T processes, each
  output image encoded as JPEG and dropped: no dataset, no framework. What any
  scheduler running this function on T processes costs at least.

The function: read the file, decode (Pillow), resize to SIZExSIZE (bilinear), label %
MOD; output tensors ``images`` (image, jpeg) and ``labels`` (class_label). Prints one
JSON object: seconds (the eval call, commit included), rows, samples/s.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import urllib.request

import numpy as np
from PIL import Image


def load_rows(data: str):
    rows = []
    with open(os.path.join(data, "meta.jsonl")) as f:
        for line in f:
            m = json.loads(line)
            rows.append((os.path.join(data, m["file"]), int(m["label"])))
    return rows


def resize_relabel_row(row, size, mod):
    path, label = row
    with open(path, "rb") as f:
        img = Image.open(io.BytesIO(f.read())).convert("RGB")
    img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img), label % mod


def run_ours(args, rows):
    import deeplake_rs

    name = f"bench_tf_{os.getpid()}"

    def call(method, path, body):
        req = urllib.request.Request(
            args.daemon + path, data=json.dumps(body).encode(), method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as r:
            return r.read()

    call("POST", "/datasets", {"name": name})
    call("POST", f"/datasets/{name}/tensors", {"name": "images", "htype": "image", "sample_compression": "jpeg"})
    call("POST", f"/datasets/{name}/tensors", {"name": "labels", "htype": "class_label"})
    call("POST", f"/datasets/{name}/commit", {"message": "tensors"})
    ds = deeplake_rs.Dataset(f"{args.daemon}/datasets/{name}")

    t0 = time.perf_counter()
    res = ours_fn(size=args.size, mod=args.mod).eval(
        rows, ds, num_workers=args.workers, scheduler="processed", progressbar=False
    )
    secs = time.perf_counter() - t0
    assert res["output_rows"] == len(rows), res
    return secs


def run_dl3(args, rows):
    import deeplake

    ds = deeplake.empty(args.out, overwrite=True)
    with ds:
        ds.create_tensor("images", htype="image", sample_compression="jpeg")
        ds.create_tensor("labels", htype="class_label")
    t0 = time.perf_counter()
    dl3_fn(size=args.size, mod=args.mod).eval(
        rows, ds, num_workers=args.workers, scheduler="processed", progressbar=False
    )
    secs = time.perf_counter() - t0
    assert len(ds) == len(rows), len(ds)
    return secs


def _bare_part(part):
    size, mod, rows = part
    n = 0
    for row in rows:
        img, _ = resize_relabel_row(row, size, mod)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=75)
        n += 1
    return n


def run_bare(args, rows):
    import multiprocessing as mp

    parts = [(args.size, args.mod, rows[i:i + 64]) for i in range(0, len(rows), 64)]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers) as pool:
        done = sum(pool.imap_unordered(_bare_part, parts))
    secs = time.perf_counter() - t0
    assert done == len(rows), done
    return secs


def _ours_body(sample_in, samples_out, size, mod):
    img, label = resize_relabel_row(sample_in, size, mod)
    samples_out.append({"images": img, "labels": label})


def _dl3_body(sample_in, samples_out, size, mod):
    img, label = resize_relabel_row(sample_in, size, mod)
    samples_out.images.append(img)
    samples_out.labels.append(np.uint32(label))


ours_fn = None
dl3_fn = None


def main():
    global ours_fn, dl3_fn
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=["ours", "dl3", "bare"], required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--mod", type=int, default=5)
    ap.add_argument("--daemon")
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = load_rows(args.data)
    if args.mode == "bare":
        secs = run_bare(args, rows)
    elif args.mode == "ours":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "client", "python", "src"))
        import deeplake_rs

        ours_fn = deeplake_rs.compute(_ours_body)
        secs = run_ours(args, rows)
    else:
        import deeplake

        dl3_fn = deeplake.compute(_dl3_body)
        secs = run_dl3(args, rows)
    import PIL

    print(json.dumps({"mode": args.mode, "rows": len(rows), "workers": args.workers,
                      "seconds": secs, "samples_per_s": len(rows) / secs,
                      "pillow": PIL.__version__, "numpy": np.__version__}))


if __name__ == "__main__":
    main()
