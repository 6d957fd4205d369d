"""The numpy side of the client against real daemons (conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import sys
import urllib.request

import numpy as np
import pytest

import deeplake_rs
from deeplake_rs import DaemonError, Dataset

from conftest import REPO, ROWS


def slice_json(url: str, tensor: str, start: int, end: int) -> list:
    with urllib.request.urlopen(f"{url}/tensors/{tensor}/samples?start={start}&end={end}") as r:
        return json.loads(r.read())["samples"]


def rows_of(batches) -> list:
    return [int(r) for b in batches for r in b["__row"]]


def test_values_equal_the_datasets(url):
    ds = Dataset(url)
    assert len(ds) == ROWS
    batches = list(ds.stream(tensors=["images", "labels", "boxes", "captions"], batch_size=16))
    assert [len(b["__row"]) for b in batches] == [16] * 7 + [8]
    assert rows_of(batches) == list(range(ROWS))
    images = np.concatenate([b["images"] for b in batches])
    assert images.dtype == np.uint8 and images.shape == (ROWS, 16, 16, 3)
    want = slice_json(url, "images", 0, ROWS)
    for r in range(ROWS):
        assert images[r].tolist() == want[r]["data"], f"row {r}"
    labels = np.concatenate([b["labels"] for b in batches])
    assert labels.tolist() == [s["data"][0] for s in slice_json(url, "labels", 0, ROWS)]
    boxes = np.concatenate([b["boxes"] for b in batches])
    assert boxes.shape == (ROWS, 1, 4)
    assert boxes.tolist() == [s["data"] for s in slice_json(url, "boxes", 0, ROWS)]
    captions = [c for b in batches for c in b["captions"]]
    assert captions == slice_json(url, "captions", 0, ROWS)


def test_values_equal_deeplake_3_9_52s_reading(served, url):
    py = os.environ.get("DEEPLAKE_DL3_PYTHON")
    if not py:
        pytest.fail("DEEPLAKE_DL3_PYTHON is not set: scripts/test.sh sets it to deeplake 3.9.52's venv")
    root, _ = served
    script = (
        "import deeplake, json, sys\n"
        "ds = deeplake.load(sys.argv[1], read_only=True)\n"
        "print(json.dumps({'labels': ds.labels.numpy().reshape(-1).tolist(),"
        " 'boxes': ds.boxes.numpy().tolist(), 'captions': [str(x) for x in ds.captions.numpy().reshape(-1)],"
        " 'shapes': ds.images.shapes().tolist()}))\n"
    )
    out = subprocess.run([py, "-c", script, str(root / "demo")], check=True, capture_output=True, text=True)
    want = json.loads(out.stdout.strip().splitlines()[-1])
    batches = list(Dataset(url).stream(tensors=["images", "labels", "boxes", "captions"], batch_size=50))
    assert np.concatenate([b["labels"] for b in batches]).tolist() == want["labels"]
    got_boxes = np.concatenate([b["boxes"] for b in batches])
    np.testing.assert_allclose(got_boxes, np.array(want["boxes"], dtype=np.float32))
    assert [c for b in batches for c in b["captions"]] == want["captions"]
    assert np.concatenate([b["images.shape"] for b in batches]).tolist() == want["shapes"]


def test_shuffle_is_a_seeded_permutation(url):
    ds = Dataset(url)
    a = rows_of(ds.stream(tensors=["labels"], batch_size=10, shuffle=True, seed=4, shuffle_buffer=16))
    b = rows_of(ds.stream(tensors=["labels"], batch_size=10, shuffle=True, seed=4, shuffle_buffer=16))
    c = rows_of(ds.stream(tensors=["labels"], batch_size=10, shuffle=True, seed=5, shuffle_buffer=16))
    e1 = rows_of(ds.stream(tensors=["labels"], batch_size=10, shuffle=True, seed=4, epoch=1, shuffle_buffer=16))
    assert a == b
    assert sorted(a) == list(range(ROWS))
    assert a != sorted(a) and a != c and a != e1


def test_shards_are_disjoint_and_cover(url):
    ds = Dataset(url)
    parts = [
        rows_of(ds.stream(tensors=["labels"], batch_size=7, shuffle=True, seed=1, rank=r, world_size=3))
        for r in range(3)
    ]
    assert all(parts)
    seen = [r for p in parts for r in p]
    assert sorted(seen) == list(range(ROWS))
    even = [
        len(rows_of(ds.stream(tensors=["labels"], batch_size=7, rank=r, world_size=7, even=True)))
        for r in range(7)
    ]
    assert len(set(even)) == 1 and even[0] * 7 >= ROWS


def test_resume_mid_epoch_yields_exactly_the_rest(url):
    ds = Dataset(url)
    kw = dict(tensors=["labels"], batch_size=8, shuffle=True, seed=9)
    whole = rows_of(ds.stream(**kw))
    s = ds.stream(**kw)
    first = [next(s) for _ in range(5)]
    cursors = s.cursors()
    s.close()
    rest = rows_of(ds.stream(cursors=cursors, **kw))
    assert rows_of(first) + rest == whole


def test_two_daemons_fan_in_and_resume(urls):
    ds = Dataset(urls)
    kw = dict(tensors=["labels"], batch_size=6, shuffle=True, seed=2)
    whole = rows_of(ds.stream(**kw))
    assert sorted(whole) == list(range(ROWS))
    assert whole == rows_of(ds.stream(**kw))
    s = ds.stream(**kw)
    head = [next(s) for _ in range(7)]
    cursors = s.cursors()
    assert len(cursors) == 2 and all(cursors)
    s.close()
    assert rows_of(head) + rows_of(ds.stream(cursors=cursors, **kw)) == whole
    with pytest.raises(ValueError, match="same daemons"):
        Dataset(urls[0]).stream(cursors=cursors, **kw)


def test_queries_views_and_transforms(url):
    ds = Dataset(url)
    q = ds.query("SELECT * WHERE labels == 2", limit=1000)
    want = [r["__row"] for r in q.rows]
    assert len(q) == len(want) > 0
    assert rows_of(q.stream(tensors=["labels"], batch_size=5)) == want
    body = json.dumps({"id": "twos", "query": "SELECT * WHERE labels == 2"}).encode()
    req = urllib.request.Request(url + "/views", data=body, headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req).read()
    assert rows_of(ds.stream(tensors=["labels"], view="twos")) == want
    b = next(iter(ds.stream(
        tensors=["images"], rows=[5, 0, 7], batch_size=3,
        transforms={"images": [{"center_crop": {"height": 8, "width": 8}},
                               {"normalize": {"mean": [0.5 * 255], "std": [255.0]}}]},
    )))
    assert b["images"].shape == (3, 8, 8, 3) and b["images"].dtype == np.float32
    full = slice_json(url, "images", 5, 6)[0]["data"]
    want_px = (np.array(full, dtype=np.float32)[4:12, 4:12] - 127.5) / 255.0
    np.testing.assert_allclose(b["images"][0], want_px, rtol=1e-6)


def test_errors_are_exceptions_with_the_servers_message(url, served):
    ds = Dataset(url)
    with pytest.raises(DaemonError) as e:
        next(iter(ds.stream(tensors=["nope"])))
    assert e.value.status == 404 and "nope" in e.value.message
    with pytest.raises(DaemonError) as e:
        ds.stream(tensors=["images"], transforms={"images": [{"resize": {"height": 0, "width": 4}}]})
    assert e.value.status == 400 and "resize" in e.value.message
    with pytest.raises(DaemonError) as e:
        ds.query("SELECT * WHERE")
    assert e.value.status == 400
    with pytest.raises(DaemonError) as e:
        Dataset(served[1][0] + "/datasets/missing").info()
    assert e.value.status == 404
    with pytest.raises(ValueError):
        Dataset("ftp://x/datasets/y")
    with pytest.raises(ConnectionError):
        Dataset("http://127.0.0.1:1/datasets/demo").info()


def test_pip_installs_the_package(tmp_path):
    import shutil

    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    src = tmp_path / "client"
    shutil.copytree(REPO / "client" / "python", src, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(src)],
        check=True,
    )
    out = subprocess.run(
        [sys.executable, "-c", "import deeplake_rs, sys; print(deeplake_rs.__file__, deeplake_rs.Dataset)"],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    assert str(target) in out.stdout
    assert deeplake_rs.__version__ == "0.1.0"


def test_a_killed_daemon_is_a_clear_error_not_a_hang(served, tmp_path):
    from conftest import _bin, _serve

    root, _ = served
    proc, addr = _serve(_bin(), root, tmp_path / "victim.log")
    try:
        ds = Dataset(addr + "/datasets/demo", timeout=30)
        # Large rows and a small prefetch budget: the daemon is still writing when killed.
        s = ds.stream(tensors=["images"], batch_size=2, prefetch_mb=1,
                      transforms={"images": [{"resize": {"height": 256, "width": 256}}]})
        first = next(s)
        assert first["images"].shape == (2, 256, 256, 3)
        proc.kill()
        proc.wait(timeout=10)
        started = time.time()
        with pytest.raises(deeplake_rs.StreamError, match="ended after|failed"):
            for _ in s:
                pass
        assert time.time() - started < 20
        with pytest.raises(ConnectionError, match="cannot reach"):
            ds.info()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_batches_kept_by_the_caller_are_never_overwritten(url, monkeypatch):
    # The reader reuses its buffers only once no array views them: batches kept while
    # the stream goes on keep their values.
    from deeplake_rs import stream as stream_mod

    taken = []
    real_take = stream_mod._PooledBody._take

    def take(self, n):
        buf = real_take(self, n)
        taken.append(id(buf))
        return buf

    monkeypatch.setattr(stream_mod._PooledBody, "_take", take)
    ds = Dataset(url)
    kept = []
    copies = []
    resize = {"images": [{"resize": {"height": 96, "width": 96}}]}
    for b in ds.stream(tensors=["images", "labels"], batch_size=8, shuffle=True, seed=3, transforms=resize):
        kept.append(b)
        copies.append((b["images"].copy(), b["labels"].copy()))
        if len(kept) > 3:
            kept.pop(0)  # a dropped batch frees its buffer for reuse
            copies.pop(0)
        for k, (imgs, labels) in zip(kept, copies):
            assert np.array_equal(k["images"], imgs) and np.array_equal(k["labels"], labels)
    assert len(taken) == ROWS // 8, "each batch's pixels were read into a pooled buffer"
    assert len(set(taken)) < len(taken), "buffers were reused"
