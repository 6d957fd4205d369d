"""TQL benchmark, deeplake 4.7.4's side: builds the same table and embedding datasets as
`bench-tql build` (same formulas), then times the queries `bench-tql build` wrote to
queries.json, each from a fresh read-only open. Prints one JSON object.

    python tql_peer.py build --out DIR --rows N --emb-rows M
    python tql_peer.py run --out DIR --queries QUERIES.json --reps R
"""

import argparse
import json
import os
import statistics
import time

import numpy as np

SEED = 20241129
WORDS = ["red", "green", "blue", "cat", "dog", "tree", "river", "stone"]
DIM = 512
M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix(x):
    """splitmix64 over a uint64 array (numpy wraps modulo 2^64)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit(h):
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def table_cols(start, end):
    i = np.arange(start, end, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = splitmix(np.uint64(SEED) + i)
    words = np.array(WORDS)[((h >> np.uint64(7)) % np.uint64(8)).astype(np.int64)]
    return {
        "id": i.astype(np.int64),
        "label": (h % np.uint64(100)).astype(np.int32),
        "score": unit(h).astype(np.float32),
        "grp": (i % np.uint64(10)).astype(np.int32),
        "text": [f"item {a} {w}" for a, w in zip(i.tolist(), words.tolist())],
    }


def build(out, rows, emb_rows):
    import deeplake

    t0 = time.perf_counter()
    path = os.path.join(out, "table")
    ds = deeplake.create(f"file://{path}")
    types = deeplake.types
    ds.add_column("id", types.Int64())
    ds.add_column("label", types.Int32())
    ds.add_column("score", types.Float32())
    ds.add_column("grp", types.Int32())
    ds.add_column("text", types.Text())
    for a in range(0, rows, 100_000):
        ds.append(table_cols(a, min(a + 100_000, rows)))
    ds.commit("base rows")
    ds.tag("v1")
    ds["score"][0:1000] = np.full(1000, 2.0, dtype=np.float32)
    ds.append(table_cols(rows, rows + 1000))
    ds.commit("1000 updated, 1000 appended")
    ds.tag("v2")
    table_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    epath = os.path.join(out, "emb")
    e = deeplake.create(f"file://{epath}")
    e.add_column("id", types.Int64())
    e.add_column("embedding", types.Embedding(DIM))
    for a in range(0, emb_rows, 10_000):
        b = min(a + 10_000, emb_rows)
        i = np.arange(a, b, dtype=np.uint64)[:, None]
        j = np.arange(DIM, dtype=np.uint64)[None, :]
        with np.errstate(over="ignore"):
            x = np.uint64((SEED * 31) & 0xFFFFFFFFFFFFFFFF) + i * np.uint64(DIM) + j
        v = (unit(splitmix(x)) * 2.0 - 1.0).astype(np.float32)
        e.append({"id": np.arange(a, b, dtype=np.int64), "embedding": v})
    e.commit("embeddings")
    return {"rows": rows, "emb_rows": emb_rows, "build_table_s": table_s,
            "build_emb_s": time.perf_counter() - t1}


def run(out, queries, reps):
    import deeplake

    res = {}
    for q in queries:
        if q["name"] == "version_diff":
            res[q["name"]] = {"skipped": "deeplake 4.7.4 has no row-diff query"}
            continue
        path = "file://" + os.path.join(out, q["dataset"])
        times = []
        rows = 0
        for rep in range(reps + 1):
            ds = deeplake.open_read_only(path)
            t = time.perf_counter()
            view = ds.query(q["query"])
            rows = len(view)
            s = time.perf_counter() - t
            if rep > 0:
                times.append(s)
        res[q["name"]] = {"median_s": statistics.median(times), "all_s": times, "rows": rows}
    return {"system": "dl4", "queries": res}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["build", "run"])
    p.add_argument("--out", required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--emb-rows", type=int, default=100_000)
    p.add_argument("--queries")
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    if a.cmd == "build":
        v = build(a.out, a.rows, a.emb_rows)
    else:
        v = run(a.out, json.load(open(a.queries)), a.reps)
    print(json.dumps(v))


if __name__ == "__main__":
    main()
