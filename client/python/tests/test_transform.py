"""`@deeplake_rs.compute` against real daemons (conftest.py): every scheduler gives what a
serial run gives, value for value; a failing sample leaves the dataset as it was; a
SIGKILLed parent leaves it at its previous commit and a re-run completes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

import deeplake_rs
from deeplake_rs import Dataset, TransformError, compose

from conftest import REPO, ROWS
from transform_helpers import (
    IMAGE_TENSORS,
    boom_at,
    call,
    expected,
    fan_out,
    make_image,
    new_dataset,
    read_all,
    relabel,
)


def fresh(base: str) -> str:
    return "tf_" + uuid.uuid4().hex[:10]


def last_commit(base: str, name: str) -> dict:
    return next(e for e in call(base, "GET", f"/datasets/{name}/log") if not e["is_head"])


@pytest.mark.parametrize("scheduler", ["serial", "threaded", "processed"])
def test_schedulers_equal_a_serial_run(served, scheduler):
    base = served[1][0]
    data = list(range(40))
    pipeline = compose([make_image(size=6), fan_out(), relabel(mod=4)])
    name = fresh(base)
    ds = new_dataset(base, name, IMAGE_TENSORS)
    before = last_commit(base, name)
    res = pipeline.eval(data, ds, num_workers=3, scheduler=scheduler, batch_size=6)
    want = expected(pipeline.stages, data)
    assert len(want["labels"]) == sum(i * 7 % 3 for i in data)
    assert res["input_rows"] == 40 and res["output_rows"] == len(want["labels"])
    assert res["parts"] == 7 and res["fast_forward"] is True
    assert read_all(ds) == want
    # One commit on top of the previous one, with the lineage.
    log = [e for e in call(base, "GET", f"/datasets/{name}/log") if not e["is_head"]]
    assert log[0]["commit_id"] == res["commit"] and log[1]["commit_id"] == before["commit_id"]
    assert "make_image -> fan_out -> relabel" in log[0]["message"]
    assert list(call(base, "GET", f"/datasets/{name}/branches")["branches"]) == ["main"]


def test_one_to_one_over_a_dataset_input(served, url):
    base = served[1][0]
    src = Dataset(url)
    name = fresh(base)
    out = new_dataset(base, name, IMAGE_TENSORS)
    res = relabel(mod=3).eval(src, out, num_workers=2, scheduler="processed", batch_size=25)
    assert res["input_rows"] == ROWS and res["output_rows"] == ROWS
    got = read_all(out)
    rows = []
    for b in src.numpy(tensors=["images", "labels"], batch_size=64):
        for i in range(len(b["__row"])):
            rows.append({"images": b["images"][i], "labels": b["labels"][i]})
    assert got["labels"] == [int(np.asarray(r["labels"]).ravel()[0]) % 3 for r in rows]
    assert got["images"] == [r["images"][::2, ::2].tolist() for r in rows]
    info = call(base, "GET", f"/datasets/{name}")
    assert info["length"] == ROWS
    lin = call(base, "GET", f"/datasets/{name}/log")
    src_commit = src.info()["commit"]
    assert f"from demo at {src_commit}" in next(e for e in lin if not e["is_head"])["message"]


@pytest.mark.parametrize("scheduler", ["serial", "threaded", "processed"])
def test_a_failing_sample_names_it_and_leaves_the_dataset(served, scheduler):
    base = served[1][0]
    name = fresh(base)
    ds = new_dataset(base, name, IMAGE_TENSORS)
    make_image(size=4).eval(range(5), ds, scheduler="serial")
    before = last_commit(base, name)
    with pytest.raises(TransformError) as e:
        boom_at(at=13).eval(range(30), ds, num_workers=3, scheduler=scheduler, batch_size=4)
    msg = str(e.value)
    assert "'boom_at'" in msg and "sample 13" in msg and "cursed" in msg, msg
    assert last_commit(base, name)["commit_id"] == before["commit_id"]
    assert len(ds) == 5
    assert list(call(base, "GET", f"/datasets/{name}/branches")["branches"]) == ["main"]


CHILD = """
import sys
sys.path[:0] = [{src!r}, {tests!r}]
from transform_helpers import slow_image
import deeplake_rs
ds = deeplake_rs.Dataset({url!r})
slow_image(delay=0.05).eval(range(80), ds, num_workers=2, scheduler="processed", batch_size=4, job="killme")
"""


def test_a_killed_parent_leaves_the_previous_commit_and_a_rerun_completes(served, tmp_path):
    base = served[1][0]
    name = fresh(base)
    ds = new_dataset(base, name, IMAGE_TENSORS)
    before = last_commit(base, name)
    script = tmp_path / "child.py"
    script.write_text(
        CHILD.format(
            src=str(REPO / "client" / "python" / "src"),
            tests=str(REPO / "client" / "python" / "tests"),
            url=f"{base}/datasets/{name}",
        )
    )
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline:
        jobs = [j for j in call(base, "GET", "/jobs")["jobs"] if j["params"].get("job") == "killme" and j["dataset"] == name]
        if jobs and jobs[-1]["progress"]["done"] >= 3:
            done = jobs[-1]["progress"]["done"]
            break
        assert child.poll() is None, child.stderr.read().decode()
        time.sleep(0.02)
    assert done >= 3, "no part was staged in time"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    # The pool's workers (orphans now) finish the part in hand and exit.
    time.sleep(1.0)
    assert last_commit(base, name)["commit_id"] == before["commit_id"]
    assert len(ds) == 0
    branches = list(call(base, "GET", f"/datasets/{name}/branches")["branches"])
    assert any(b.startswith("transform-") for b in branches), branches

    from transform_helpers import slow_image

    res = slow_image(delay=0.0).eval(range(80), ds, num_workers=2, scheduler="processed", batch_size=4, job="killme")
    assert res["resumed_parts"] >= 3, res
    assert res["input_rows"] == 80 and res["output_rows"] == 80
    serial_name = fresh(base)
    serial = new_dataset(base, serial_name, IMAGE_TENSORS)
    slow_image(delay=0.0).eval(range(80), serial, scheduler="serial", batch_size=4)
    assert read_all(ds) == read_all(serial)
    assert list(call(base, "GET", f"/datasets/{name}/branches")["branches"]) == ["main"]


def test_progress_is_on_the_daemons_job(served):
    base = served[1][0]
    name = fresh(base)
    ds = new_dataset(base, name, IMAGE_TENSORS)
    res = make_image(size=4).eval(range(20), ds, scheduler="threaded", num_workers=2, batch_size=5, job="progress-1")
    job = [j for j in call(base, "GET", "/jobs")["jobs"] if j["params"].get("job") == "progress-1"][-1]
    assert job["kind"] == "transform" and job["state"] == "succeeded"
    assert job["progress"] == {"done": 4, "total": 4}
    assert job["result"]["commit"] == res["commit"]


def test_bad_output_is_refused_with_a_clear_error(served):
    base = served[1][0]
    name = fresh(base)
    ds = new_dataset(base, name, IMAGE_TENSORS)

    @deeplake_rs.compute
    def wrong_tensor(sample_in, samples_out):
        samples_out.append({"images": np.zeros((2, 2, 3), np.uint8), "labels": 1, "nope": 3})

    with pytest.raises(TransformError, match="nope"):
        wrong_tensor().eval(range(3), ds, scheduler="serial")
    assert len(ds) == 0
    assert list(call(base, "GET", f"/datasets/{name}/branches")["branches"]) == ["main"]
