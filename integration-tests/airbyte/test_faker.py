"""A real Airbyte source into the connector: `source-faker read | destination-deeplake write`.

Every line the connector prints passes shared/airbyte/validate_messages.py, each
stream's dataset holds exactly the records the source sent, and deeplake 3.9.52 opens
the datasets and reads the same rows.

Environment (scripts/test.sh sets all of them; a missing one fails the test):
  DEEPLAKE_CONNECTOR_BIN   the destination-deeplake binary
  DEEPLAKE_FAKER_BIN       source-faker from the airbyte-faker venv (scripts/lib.sh faker_venv)
  DEEPLAKE_PROTO_PYTHON    python of the airbyte-proto venv (scripts/lib.sh proto_venv)
  DEEPLAKE_DL3_PYTHON      python of the deeplake 3.9.52 venv (scripts/lib.sh dl3_venv)
"""
import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO.parent / "shared" / "airbyte"


def need(name):
    value = os.environ.get(name)
    assert value, f"set {name} (see the docstring of {__file__}; scripts/test.sh sets it)"
    return value


@pytest.fixture(scope="module")
def tools():
    assert (HARNESS / "validate_messages.py").is_file(), f"the Airbyte harness is missing: {HARNESS}"
    return {
        "dest": need("DEEPLAKE_CONNECTOR_BIN"),
        "faker": need("DEEPLAKE_FAKER_BIN"),
        "proto": need("DEEPLAKE_PROTO_PYTHON"),
        "dl3": need("DEEPLAKE_DL3_PYTHON"),
    }


def catalog(tools, tmp, faker_cfg, *extra):
    disc = tmp / "discover.jsonl"
    with open(disc, "w") as f:
        subprocess.run([tools["faker"], "discover", "--config", str(faker_cfg)], stdout=f, check=True, timeout=300)
    cat = tmp / f"catalog{len(extra)}.json"
    with open(cat, "w") as f:
        subprocess.run(["python3", str(HARNESS / "make_catalog.py"), str(disc), *extra], stdout=f, check=True)
    return cat


def sync(tools, tmp, tag, faker_cfg, cat, dest_cfg):
    """Runs the pipe; returns (messages the destination read, what it printed)."""
    inp, out = tmp / f"in-{tag}.jsonl", tmp / f"out-{tag}.jsonl"
    script = (
        f'set -euo pipefail; "{tools["faker"]}" read --config "{faker_cfg}" --catalog "{cat}"'
        f' | tee "{inp}" | "{tools["dest"]}" write --config "{dest_cfg}" --catalog "{cat}" > "{out}"'
    )
    subprocess.run(["bash", "-c", script], check=True, timeout=900)
    v = subprocess.run(
        [tools["proto"], str(HARNESS / "validate_messages.py"), "--mode", "write", str(out),
         "--input", str(inp), "--catalog", str(cat)],
        capture_output=True, text=True, timeout=300,
    )
    assert v.returncode == 0, v.stdout + v.stderr
    return inp, out


def records(path):
    by_stream = defaultdict(list)
    for line in open(path):
        if not line.startswith("{"):
            continue
        m = json.loads(line)
        if m.get("type") == "RECORD":
            by_stream[m["record"]["stream"]].append(m["record"]["data"])
    return by_stream


DUMP = r"""
import json, sys
import deeplake
out = {}
for path in sys.argv[1:]:
    ds = deeplake.load(path, read_only=True)
    out[path] = {
        "len": len(ds),
        "id": [int(x) for x in ds["id"].numpy().reshape(-1)],
        "raw_id": [str(x) for x in ds["_airbyte_raw_id"].numpy().reshape(-1)],
        "tensors": sorted(ds.tensors),
        "updated_at": [str(x) for x in ds["updated_at"].numpy().reshape(-1)],
    }
print(json.dumps(out))
"""


def dump_dl3(tools, paths):
    r = subprocess.run([tools["dl3"], "-c", DUMP, *map(str, paths)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def check_datasets(tools, root, sent):
    paths = {s: root / s for s in sent}
    got = dump_dl3(tools, paths.values())
    for stream, rows in sent.items():
        d = got[str(paths[stream])]
        assert d["len"] == len(rows), stream
        assert sorted(d["id"]) == sorted(r["id"] for r in rows), f"{stream}: exactly the records sent"
        by_id = {r["id"]: r for r in rows}
        for i, upd in zip(d["id"], d["updated_at"]):
            assert upd == by_id[i]["updated_at"], f"{stream} row {i}"
        assert len(set(d["raw_id"])) == len(rows)
        for meta in ("_airbyte_raw_id", "_airbyte_extracted_at", "_airbyte_generation_id", "_airbyte_meta"):
            assert meta in d["tensors"], meta


def test_faker_append_then_refresh(tools, tmp_path):
    faker_cfg = tmp_path / "faker.json"
    faker_cfg.write_text(json.dumps({"count": 1500, "seed": 11, "parallelism": 1, "records_per_slice": 250}))
    root = tmp_path / "lake"
    dest_cfg = tmp_path / "dest.json"
    dest_cfg.write_text(json.dumps({"destination": {"path": str(root)}, "flush_records": 500}))

    cat = catalog(tools, tmp_path, faker_cfg, "--sync-mode", "incremental", "--dest-mode", "append")
    inp, _ = sync(tools, tmp_path, "append", faker_cfg, cat, dest_cfg)
    sent = records(inp)
    assert set(sent) == {"users", "products", "purchases"} and all(sent.values())
    check_datasets(tools, root, sent)

    # A truncating refresh (generation 2 == minimum 2) with another seed and count:
    # afterwards the datasets hold exactly the second sync's records.
    faker_cfg.write_text(json.dumps({"count": 700, "seed": 12, "parallelism": 1, "records_per_slice": 100}))
    cat2 = catalog(tools, tmp_path, faker_cfg, "--sync-mode", "full_refresh", "--dest-mode", "append",
                   "--generation-id", "2", "--minimum-generation-id", "2", "--sync-id", "2")
    inp2, _ = sync(tools, tmp_path, "refresh", faker_cfg, cat2, dest_cfg)
    check_datasets(tools, root, records(inp2))


def test_faker_append_dedup(tools, tmp_path):
    faker_cfg = tmp_path / "faker.json"
    faker_cfg.write_text(json.dumps({"count": 600, "seed": 5, "parallelism": 1, "records_per_slice": 200}))
    root = tmp_path / "lake"
    dest_cfg = tmp_path / "dest.json"
    dest_cfg.write_text(json.dumps({"destination": {"path": str(root)}, "commits": "per_state"}))
    cat = catalog(tools, tmp_path, faker_cfg, "--streams", "users,products", "--sync-mode", "full_refresh",
                  "--dest-mode", "append_dedup")
    sync(tools, tmp_path, "one", faker_cfg, cat, dest_cfg)
    inp, _ = sync(tools, tmp_path, "two", faker_cfg, cat, dest_cfg)
    # The same records twice: one row per primary key.
    check_datasets(tools, root, records(inp))
