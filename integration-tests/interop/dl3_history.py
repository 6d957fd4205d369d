#!/usr/bin/env python3
"""Builds a dataset with history using deeplake 3.9.52 and writes what 3.9.52 reads of it.

    python dl3_history.py --out DIR
    python dl3_history.py --read PATH --out FILE

The second form builds nothing: it writes FILE with what 3.9.52 reads of the dataset at
PATH, whoever wrote it: `nodes`, `branches`, `log` and `dumps` as below, for every node.

Writes DIR/history (the dataset) and DIR/history.json (the reference):

* `nodes`: every node of the commit tree: {id: {branch, parent, message, is_head}};
* `branches`: {branch: head node id};
* `commits`: {label: commit id} for the commits this script made (c1, c2, ...);
* `dumps`: {ref: {"meta": ..., "rows": [...]}}: the canonical dump (README.md) as of
  `ds.checkout(ref)`, for every node id and every branch name;
* `log`: {branch: [records]}: the first-parent chain from the branch head to the root,
  newest first, as `ds.log()` walks it: {commit_id, branch, message, author, date,
  is_head};
* `diffs`: a list of {"args": [a, b], "result": ds.diff(a, b, as_dict=True)} with sets as
  sorted lists and tuples as lists (`args` may be shorter: [] or [a], meaning the
  current node is the head of main);
* `rows`: for the same pairs, the row-level diff as ids: per side, per visible tensor,
  `added` = ids at the side not at the common ancestor, `deleted` = ids at the common
  ancestor not at the side, `updated` = ids at both whose row values differ.

Commit dates are rendered by 3.9.52 in local time: run with TZ=UTC (the script sets it)
so that they compare with readers that render UTC.

The history: three commits on main; a branch `alt` with updates, appends and a
dataset-level pop over two commits; on main a conflicting update, then a rename and a
delete; a merge of alt into main with conflict_resolution "theirs"; and uncommitted
changes on the head of main.
"""

import argparse
import json
import os
import shutil
import sys
import time
import warnings

os.environ["TZ"] = "UTC"
time.tzset()
warnings.simplefilter("ignore")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import deeplake
import numpy as np

from deeplake.util.bugout_reporter import deeplake_reporter
from humbug.consent import HumbugConsent

# Usage reports of commit, merge, diff, ... go to the network in a thread pool that the
# interpreter waits for at exit (about a minute when there is no network).
deeplake_reporter.consent = HumbugConsent(False)

from dump_dl3 import cell_value, plain, tensor_meta

# Pairs of diff arguments; labels of commits (c1, ...) are replaced by their ids.
DIFF_ARGS = [
    [],
    ["alt"],
    ["c1", "c3"],
    ["c3", "c1"],
    ["main", "alt"],
    ["alt", "main"],
    ["c2", "merge"],
    ["alt1", "c5"],
    ["c4", "alt2"],
    ["c4", "alt"],
    ["merge", "merge"],
]


def arr(values, dtype):
    return np.array(values, dtype=dtype)


def pixels(seed, h=6, w=5):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def build(path):
    """Writes the history; returns {label: commit id}."""
    if os.path.exists(path):
        shutil.rmtree(path)
    ds = deeplake.empty(path, overwrite=True, verbose=False)
    commits = {}
    with ds:
        ds.create_tensor("labels", htype="class_label", class_names=["cat", "dog"], verbose=False)
        # Small chunks so that updates copy old chunks into later commits.
        ds.create_tensor("nums", htype="generic", dtype="int64", max_chunk_size=2000, verbose=False)
        ds.create_tensor("text", htype="text", verbose=False)
        ds.create_tensor("img", htype="image", sample_compression="png", verbose=False)
        ds.create_tensor("vec", htype="embedding", dtype="float32", verbose=False)
        ds.create_tensor("gone", htype="generic", dtype="int32", verbose=False)
        for i in range(4):
            ds.labels.append(i % 2)
            ds.nums.append(arr(list(range(i, i + 60)), "int64"))
            ds.text.append(f"row {i}")
            ds.img.append(pixels(i))
            ds.vec.append(arr([i, i + 0.5, -i], "float32"))
            ds.gone.append(arr([i], "int32"))
    commits["c1"] = ds.commit("c1: four rows")

    with ds:
        for i in range(4, 6):
            ds.labels.append("bird" if i == 5 else "cat")
            ds.nums.append(arr(list(range(i, i + 60)), "int64"))
            ds.text.append(f"row {i}")
            ds.img.append(pixels(i))
            ds.vec.append(arr([i, i + 0.5, -i], "float32"))
            ds.gone.append(arr([i], "int32"))
        ds.nums[1] = arr([100, 101], "int64")
        ds.labels[2] = 1
    commits["c2"] = ds.commit("c2: two rows and updates")

    with ds:
        ds.info.update({"description": "history case"})
        ds.labels.info.update({"note": "relabelled"})
        ds.text[0] = "row zero"
    commits["c3"] = ds.commit("c3: info and a text update")

    ds.checkout("alt", create=True)
    with ds:
        ds.labels[2] = 0
        ds.labels[0] = 1
        ds.img[3] = pixels(33)
        for i in range(6, 8):
            ds.labels.append("fish")
            ds.nums.append(arr([i] * 3, "int64"))
            ds.text.append(f"alt row {i}")
            ds.img.append(pixels(i))
            ds.vec.append(arr([i, i, i], "float32"))
            ds.gone.append(arr([i], "int32"))
    commits["alt1"] = ds.commit("alt1: relabel and two rows")

    with ds:
        ds.pop(1)
        ds.nums[3] = arr([7, 7, 7, 7], "int64")
        ds.labels.append("cat")
        ds.nums.append(arr([42], "int64"))
        ds.text.append("alt row last")
        ds.img.append(pixels(99))
        ds.vec.append(arr([9, 9, 9], "float32"))
        ds.gone.append(arr([9], "int32"))
    commits["alt2"] = ds.commit("alt2: pop and append")

    ds.checkout("main")
    with ds:
        ds.labels[2] = 0
        ds.text[5] = "row five on main"
        ds.labels.append("dog")
        ds.nums.append(arr([5, 5], "int64"))
        ds.text.append("main row 6")
        ds.img.append(pixels(66))
        ds.vec.append(arr([6, 6, 6], "float32"))
        ds.gone.append(arr([6], "int32"))
    commits["c4"] = ds.commit("c4: conflicting relabel and a row")

    with ds:
        ds.rename_tensor("vec", "vectors")
        ds.delete_tensor("gone", large_ok=True)
    commits["c5"] = ds.commit("c5: rename vec, delete gone")

    ds.merge("alt", conflict_resolution="theirs")
    commits["merge"] = ds.commit_id

    with ds:
        ds.nums[0] = arr([-1], "int64")
        ds.text.append("uncommitted row")
        ds.labels.append("dog")
        ds.nums.append(arr([0], "int64"))
        ds.img.append(pixels(123))
        ds.vectors.append(arr([1, 2, 3], "float32"))
    ds.flush()
    return commits


def dump_checked_out(ds):
    """The canonical dump of `ds` at its current node, as (meta, rows)."""
    names = sorted(ds.tensors)
    tensors = {name: ds[name] for name in names}
    meta = {
        "length": len(ds),
        "info": plain(dict(ds.info)),
        "tensors": {name: tensor_meta(t) for name, t in tensors.items()},
    }
    n = max((len(t) for t in tensors.values()), default=0)
    rows = [{name: cell_value(t, i) for name, t in tensors.items() if i < len(t)} for i in range(n)]
    return {"meta": meta, "rows": rows}


def normalize(value):
    """Sets -> sorted lists, tuples -> lists, numpy -> plain values."""
    if isinstance(value, (set, frozenset)):
        return sorted(normalize(v) for v in value)
    if isinstance(value, dict):
        return {str(k): normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    return plain(value)


def log_of(ds, branch):
    nodes = ds.version_state["commit_node_map"]
    node = nodes[ds.version_state["branch_commit_map"][branch]]
    out = []
    while node is not None:
        out.append(
            {
                "commit_id": node.commit_id,
                "branch": node.branch,
                "message": node.commit_message,
                "author": node.commit_user_name,
                "date": str(node.commit_time)[:-7] if node.commit_time else None,
                "is_head": node.is_head_node,
            }
        )
        node = node.parent
    return out


def id_tensor_values(ds, name):
    """{sample id: canonical cell value} of a visible tensor at the checked-out node."""
    tensor = ds[name]
    id_key = next((k for k, v in tensor.meta.links.items() if v["extend"] == "extend_id"), None)
    if id_key is None:
        return None
    ids_tensor = ds[[n for n, k in ds.meta.tensor_names.items() if k == id_key][0]]
    ids = [int(x) for x in ids_tensor.numpy().reshape(-1)]
    return {sid: cell_value(tensor, i) for i, sid in enumerate(ids)}


def rows_side(ds, node, lca):
    ds.checkout(lca)
    before = {n: id_tensor_values(ds, n) for n in ds.tensors}
    ds.checkout(node)
    out = {}
    for name in sorted(ds.tensors):
        after = id_tensor_values(ds, name)
        if after is None:
            continue
        key = ds.meta.tensor_names[name]
        # Match the tensor at the ancestor by key: a rename keeps the key.
        old = None
        ds.checkout(lca)
        for n, k in ds.meta.tensor_names.items():
            if k == key and n in before:
                old = before[n]
        ds.checkout(node)
        old = old or {}
        out[name] = {
            "added": sorted(set(after) - set(old)),
            "deleted": sorted(set(old) - set(after)),
            "updated": sorted(s for s in set(after) & set(old) if after[s] != old[s]),
        }
    return out


def lca_of(ds, a, b):
    nodes = ds.version_state["commit_node_map"]
    chain_a, chain_b = [], set()
    node = nodes[a]
    while node is not None:
        chain_a.append(node.commit_id)
        node = node.parent
    node = nodes[b]
    while node is not None:
        chain_b.add(node.commit_id)
        node = node.parent
    return next(c for c in chain_a if c in chain_b)


def resolve(ds, address):
    if address in ds.version_state["commit_node_map"]:
        return address
    return ds.version_state["branch_commit_map"][address]


def read_reference(path):
    """The tree, each branch's log and the dump at every node and branch, as 3.9.52 reads them."""
    ds = deeplake.load(path, read_only=True, verbose=False)
    nodes = ds.version_state["commit_node_map"]
    branches = dict(ds.version_state["branch_commit_map"])
    out = {
        "branches": branches,
        "nodes": {
            cid: {
                "branch": n.branch,
                "parent": n.parent.commit_id if n.parent else None,
                "message": n.commit_message,
                "is_head": n.is_head_node,
            }
            for cid, n in nodes.items()
        },
        "log": {b: log_of(ds, b) for b in branches},
        "dumps": {},
    }
    for ref in list(nodes) + list(branches):
        ds.checkout(ref)
        out["dumps"][ref] = dump_checked_out(ds)
    return out


def reference(path, commits):
    ds = deeplake.load(path, read_only=True, verbose=False)
    nodes = ds.version_state["commit_node_map"]
    branches = dict(ds.version_state["branch_commit_map"])
    out = {
        "commits": commits,
        "branches": branches,
        "nodes": {
            cid: {
                "branch": n.branch,
                "parent": n.parent.commit_id if n.parent else None,
                "message": n.commit_message,
                "is_head": n.is_head_node,
            }
            for cid, n in nodes.items()
        },
        "log": {b: log_of(ds, b) for b in branches},
        "dumps": {},
        "diffs": [],
        "rows": [],
    }
    for ref in list(nodes) + list(branches):
        ds.checkout(ref)
        out["dumps"][ref] = dump_checked_out(ds)
    for args in DIFF_ARGS:
        args = [commits.get(a, a) for a in args]
        ds.checkout("main")
        result = ds.diff(*args, as_dict=True)
        out["diffs"].append({"args": args, "result": normalize(result)})
        current = branches["main"]
        if not args:
            sides = [current]
            lca = nodes[current].parent.commit_id
        else:
            sides = [current, resolve(ds, args[0])] if len(args) == 1 else [resolve(ds, a) for a in args]
            lca = lca_of(ds, sides[0], sides[1])
        rows = {"lca": lca, "sides": [{"node": s, "tensors": rows_side(ds, s, lca)} for s in sides]}
        out["rows"].append({"args": args, "result": rows})
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--read", metavar="PATH", help="only read the dataset at PATH; --out names the JSON file")
    args = ap.parse_args(argv)
    if args.read:
        ref = read_reference(args.read)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(ref, f, sort_keys=True, ensure_ascii=False)
        return 0
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "history")
    commits = build(path)
    ref = reference(path, commits)
    with open(os.path.join(args.out, "history.json"), "w", encoding="utf-8") as f:
        json.dump(ref, f, sort_keys=True, ensure_ascii=False)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
