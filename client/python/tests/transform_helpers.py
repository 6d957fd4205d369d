"""Functions and helpers shared by the transform tests (importable by worker processes,
Ray tasks and the kill-test's child script)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Dict, List

import numpy as np

import deeplake_rs


def call(base: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        raw = r.read()
    return json.loads(raw) if raw else None


def new_dataset(base: str, name: str, tensors: List[Dict[str, Any]]) -> deeplake_rs.Dataset:
    """A dataset under the served root with `tensors`, committed (so its state is a
    commit a failed transform must leave in place)."""
    call(base, "POST", "/datasets", {"name": name})
    for t in tensors:
        call(base, "POST", f"/datasets/{name}/tensors", t)
    call(base, "POST", f"/datasets/{name}/commit", {"message": "tensors"})
    return deeplake_rs.Dataset(f"{base}/datasets/{name}")


IMAGE_TENSORS = [
    {"name": "images", "htype": "image", "dtype": "uint8", "sample_compression": "png"},
    {"name": "labels", "htype": "generic", "dtype": "int64"},
]


def picture(i: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(i)
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


@deeplake_rs.compute
def make_image(sample_in, samples_out, size=8):
    samples_out.append({"images": picture(int(sample_in), size), "labels": int(sample_in) * 7})


@deeplake_rs.compute
def fan_out(sample_in, samples_out):
    # One to many: row i gives i % 3 rows (none for multiples of 3).
    for k in range(int(sample_in["labels"]) % 3):
        img = np.ascontiguousarray(np.rot90(sample_in["images"], k))
        samples_out.images.append(img)
        samples_out.labels.append(int(sample_in["labels"]) * 10 + k)


@deeplake_rs.compute
def relabel(sample_in, samples_out, mod=5):
    samples_out.append({"images": sample_in["images"][::2, ::2], "labels": int(sample_in["labels"]) % mod})


@deeplake_rs.compute
def boom_at(sample_in, samples_out, at=13):
    if int(sample_in) == at:
        raise ValueError(f"sample {at} is cursed")
    samples_out.append({"images": picture(int(sample_in), 4), "labels": int(sample_in)})


@deeplake_rs.compute
def slow_image(sample_in, samples_out, delay=0.02):
    time.sleep(delay)
    samples_out.append({"images": picture(int(sample_in), 6), "labels": int(sample_in) % 4})


def read_all(ds: deeplake_rs.Dataset) -> Dict[str, list]:
    """Every row of images and labels, images cut to their own shapes."""
    out: Dict[str, list] = {"images": [], "labels": []}
    for b in ds.numpy(tensors=["images", "labels"], batch_size=64):
        for i in range(len(b["__row"])):
            shape = b["images.shape"][i]
            out["images"].append(b["images"][i][tuple(slice(0, int(d)) for d in shape)].tolist())
            out["labels"].append(int(np.asarray(b["labels"][i]).ravel()[0]))
    return out


def expected(stages, data) -> Dict[str, list]:
    """What a serial run in this process writes."""
    out: Dict[str, list] = {"images": [], "labels": []}
    for i, x in enumerate(data):
        for r in deeplake_rs.transform.run_stages(stages, x, i):
            out["images"].append(np.asarray(r["images"]).tolist())
            out["labels"].append(int(r["labels"]))
    return out
