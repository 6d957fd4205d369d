"""`scheduler="ray"` on a local Ray instance (conftest.py): each task computes its part
and sends it to the daemon; the result equals a serial run value for value and lands
as one commit; a failing sample fails the run and leaves the dataset as it was."""

from __future__ import annotations

import uuid

import pytest

from deeplake_rs import Dataset, TransformError, compose
from transform_helpers import IMAGE_TENSORS, boom_at, call, expected, fan_out, make_image, new_dataset, read_all, relabel


def fresh() -> str:
    return "ray_" + uuid.uuid4().hex[:10]


def last_commit(base: str, name: str) -> str:
    return next(e for e in call(base, "GET", f"/datasets/{name}/log") if not e["is_head"])["commit_id"]


def test_ray_equals_a_serial_run(served, ray_local):
    base = served[1][0]
    data = list(range(30))
    pipeline = compose([make_image(size=5), fan_out(), relabel(mod=3)])
    name = fresh()
    ds = new_dataset(base, name, IMAGE_TENSORS)
    before = last_commit(base, name)
    res = pipeline.eval(data, ds, num_workers=2, scheduler="ray", batch_size=4)
    assert res["parts"] == 8 and res["fast_forward"] is True
    assert read_all(ds) == expected(pipeline.stages, data)
    log = [e for e in call(base, "GET", f"/datasets/{name}/log") if not e["is_head"]]
    assert log[0]["commit_id"] == res["commit"] and log[1]["commit_id"] == before


def test_ray_over_a_dataset_input(served, url, ray_local):
    base = served[1][0]
    src = Dataset(url)
    name = fresh()
    out = new_dataset(base, name, IMAGE_TENSORS)
    res = relabel(mod=7).eval(src, out, num_workers=2, scheduler="ray", batch_size=40)
    serial_name = fresh()
    serial = new_dataset(base, serial_name, IMAGE_TENSORS)
    relabel(mod=7).eval(src, serial, scheduler="serial", batch_size=40)
    assert res["input_rows"] == len(src)
    assert read_all(out) == read_all(serial)


def test_ray_failing_sample_leaves_the_dataset(served, ray_local):
    base = served[1][0]
    name = fresh()
    ds = new_dataset(base, name, IMAGE_TENSORS)
    before = last_commit(base, name)
    with pytest.raises(TransformError) as e:
        boom_at(at=9).eval(range(24), ds, num_workers=2, scheduler="ray", batch_size=3)
    assert "'boom_at'" in str(e.value) and "sample 9" in str(e.value)
    assert last_commit(base, name) == before
    assert len(ds) == 0
    assert list(call(base, "GET", f"/datasets/{name}/branches")["branches"]) == ["main"]
