"""Interop tests between deeplake-rs and the reference implementations.

For every case of cases.json (see README.md):
  test_oracle_self_consistency  deeplake 3.9.52 writes it; its dump equals itself and
                                agrees with what deeplake 4.7.4 reads (Python only)
  test_cli_reads_reference      (1) our CLI's dump of the 3.9.52 dataset equals the reference
  test_writer_matches_reference (2) our writer's dataset, read by 3.9.52, equals the reference
  test_writer_readable_by_dl4   (3) deeplake 4.7.4 reads our dataset as it reads 3.9.52's
"""

import json
import os
import subprocess

import pytest

import cases as cases_mod
import compare as compare_mod
from harness import CASE_NAMES, CASES, DUMP_TIMEOUT_S, case_by_name, run

# What the cases must cover: every htype deeplake 3.9.52 writes, with the packages of
# scripts/requirements/deeplake3.txt.
REQUIRED_HTYPES = {
    "generic",
    "image",
    "image.rgb",
    "image.gray",
    "class_label",
    "bbox",
    "bbox.3d",
    "binary_mask",
    "segment_mask",
    "instance_label",
    "keypoints_coco",
    "point",
    "polygon",
    "intrinsics",
    "text",
    "json",
    "list",
    "tag",
    "embedding",
    "link[image]",
    "sequence[bbox]",
    "sequence[image]",
    "audio",
    "video",
    "point_cloud",
    "mesh",
    "dicom",
    "nifti",
}
REQUIRED_DTYPES = {
    "bool",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "int8",
    "int16",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
}
CLI_TIMEOUT_S = 300


def dump_or_fail(dumps, name, what):
    path, error = dumps[name]
    if error:
        pytest.fail(f"{what} failed for case {name}:\n{error[-3000:]}")
    return path


def assert_same(expected_path, actual_path, what, subset=False, case=None):
    """Fails on any difference."""
    diffs, notes = compare_mod.compare_files(expected_path, actual_path, subset=subset, case=case, max_diffs=25)
    for n in notes:
        print(f"note: {n}")
    if diffs:
        listing = "\n  ".join(diffs[:25])
        pytest.fail(f"{what}: {actual_path} differs from {expected_path}:\n  {listing}")


# ---------------------------------------------------------------------------
# Python only: must pass before any Rust code exists.
# ---------------------------------------------------------------------------


def test_cases_cover_every_writable_htype():
    htypes = {t.get("htype", "generic") for c in CASES for t in c["tensors"]}
    assert REQUIRED_HTYPES <= htypes, f"missing htypes: {sorted(REQUIRED_HTYPES - htypes)}"
    dtypes = {t.get("dtype") for c in CASES for t in c["tensors"]}
    assert REQUIRED_DTYPES <= dtypes, f"missing dtypes: {sorted(REQUIRED_DTYPES - dtypes)}"
    kinds = {next(iter(s)) for c in CASES for s in c["steps"]}
    assert kinds == cases_mod.STEP_KINDS


@pytest.mark.parametrize("name", CASE_NAMES)
def test_oracle_self_consistency(name, reference_dumps, dl4_dumps_of_dl3):
    case = case_by_name(name)
    ref = dump_or_fail(reference_dumps, name, "dump_dl3 of the deeplake 3.9.52 dataset")
    meta, rows = compare_mod.load_dump(ref)
    assert set(meta["tensors"]) == expected_tensor_names(case)
    assert len(rows) == max(t["length"] for t in meta["tensors"].values())
    assert_same(ref, ref, "reference vs itself")
    dl4 = dump_or_fail(dl4_dumps_of_dl3, name, "dump_dl4 of the deeplake 3.9.52 dataset")
    assert_same(ref, dl4, "deeplake 4.7.4 reading the 3.9.52 dataset", subset=True, case=case)


def expected_tensor_names(case):
    names = [t["name"] for t in case["tensors"]]
    for step in case["steps"]:
        kind, body = next(iter(step.items()))
        if kind == "rename":
            names[names.index(body["from"])] = body["to"]
        elif kind == "delete":
            names.remove(body["tensor"])
    return set(names)


def test_compare_detects_differences(reference_dumps):
    """The comparer must flag real differences, not only pass equal dumps."""
    meta, rows = compare_mod.load_dump(dump_or_fail(reference_dumps, "images", "dump_dl3"))

    def mutated(fn):
        m, r = json.loads(json.dumps(meta)), json.loads(json.dumps(rows))
        fn(m, r)
        return m, r

    def diffs(fn, **kw):
        return compare_mod.compare((meta, rows), mutated(fn), **kw)[0]

    assert diffs(lambda m, r: None) == []

    def pixel(delta):
        def fn(m, r):
            r[0]["jpeg_files"]["data"][0][0][0] += delta

        return fn

    assert diffs(pixel(3)) == []  # within the JPEG decoder tolerance
    assert diffs(pixel(40))
    r0_png = lambda m, r: r[0]["png_files"]["data"][0][0].__setitem__(0, r[0]["png_files"]["data"][0][0][0] ^ 1)
    assert diffs(r0_png)  # lossless: exact
    assert diffs(lambda m, r: r[0]["png_files"].__setitem__("stored_sha256", "0" * 64))
    assert diffs(lambda m, r: r[1]["jpeg_files"]["shape"].__setitem__(0, 99))
    assert diffs(lambda m, r: m["tensors"]["png_files"].__setitem__("sample_compression", "jpeg"))
    assert diffs(lambda m, r: r.pop())
    assert diffs(lambda m, r: r[2].pop("gray"))

    num_meta, num_rows = compare_mod.load_dump(dump_or_fail(reference_dumps, "numeric_dtypes", "dump_dl3"))
    n = (num_meta, num_rows)

    def ndiffs(fn, **kw):
        m, r = json.loads(json.dumps(num_meta)), json.loads(json.dumps(num_rows))
        fn(m, r)
        return compare_mod.compare(n, (m, r), **kw)[0]

    assert ndiffs(lambda m, r: r[0]["float32"].__setitem__(0, r[0]["float32"][0] * (1 + 1e-8))) == []
    assert ndiffs(lambda m, r: r[0]["float32"].__setitem__(0, r[0]["float32"][0] * (1 + 1e-4)))
    assert ndiffs(lambda m, r: r[0]["float16"].__setitem__(0, r[0]["float16"][0] * (1 + 1e-4))) == []
    assert ndiffs(lambda m, r: r[0]["int64"].__setitem__(0, r[0]["int64"][0] + 1))
    assert ndiffs(lambda m, r: r[0]["uint8"].__setitem__(0, 0.0))  # int vs float
    assert ndiffs(lambda m, r: r[0]["bool"].__setitem__(0, 1))  # bool vs int
    assert ndiffs(lambda m, r: r[0]["int64"].__setitem__(0, float(r[0]["int64"][0])), subset=True) == []

    ob = compare_mod.load_dump(dump_or_fail(reference_dumps, "opaque_blobs", "dump_dl3"))

    def odiffs(fn, **kw):
        m, r = json.loads(json.dumps(ob[0])), json.loads(json.dumps(ob[1]))
        fn(m, r)
        return compare_mod.compare(ob, (m, r), **kw)[0]

    assert odiffs(lambda m, r: None) == []
    assert odiffs(lambda m, r: r[0]["video"].__setitem__("stored_sha256", "0" * 64))
    assert odiffs(lambda m, r: r[0]["video"]["shape"].__setitem__(0, 5))
    assert odiffs(lambda m, r: r[0]["audio_wav"].__setitem__("compression", "mp3"))
    # What 4.x presents (--subset): stored bytes exactly, a decoded array by its shape.
    sha = ob[1][0]["audio_wav"]["stored_sha256"]
    assert odiffs(lambda m, r: r[0].__setitem__("audio_wav", {"stored_sha256": sha}), subset=True) == []
    assert odiffs(lambda m, r: r[0].__setitem__("audio_wav", {"stored_sha256": "0" * 64}), subset=True)
    assert ob[1][0]["dicom"]["shape"] == [8, 8, 1]
    pixels = [[[0]] * 8] * 8
    assert odiffs(lambda m, r: r[0].__setitem__("dicom", pixels), subset=True) == []
    assert odiffs(lambda m, r: r[0].__setitem__("dicom", pixels[:7]), subset=True)


# ---------------------------------------------------------------------------
# Against our Rust binaries.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASE_NAMES)
def test_cli_reads_reference(name, tools, workdir, dl3_datasets, reference_dumps):
    """(1) `deeplake dump PATH --full --stored` of the 3.9.52 dataset equals the reference."""
    ref = dump_or_fail(reference_dumps, name, "dump_dl3 of the deeplake 3.9.52 dataset")
    if not os.path.exists(tools.deeplake_bin):
        pytest.fail(f"deeplake CLI not found at {tools.deeplake_bin} (cargo build, or set DEEPLAKE_BIN)")
    out_dir = os.path.join(workdir, "cli")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, name + ".jsonl")
    cmd = [tools.deeplake_bin, "dump", dl3_datasets[name], "--full", "--stored", "--meta"]
    with open(out, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.PIPE, text=True, timeout=CLI_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    assert_same(ref, out, "our CLI reading the 3.9.52 dataset")


@pytest.mark.parametrize("name", CASE_NAMES)
def test_writer_matches_reference(name, reference_dumps, rust_datasets, dl3_dumps_of_rust):
    """(2) deeplake 3.9.52 reads our writer's dataset exactly as it reads its own."""
    ref = dump_or_fail(reference_dumps, name, "dump_dl3 of the deeplake 3.9.52 dataset")
    dump_or_fail(rust_datasets, name, "our fixture writer")
    ours = dump_or_fail(dl3_dumps_of_rust, name, "deeplake 3.9.52 reading our dataset")
    case = case_by_name(name)
    assert_same(ref, ours, "deeplake 3.9.52 reading our dataset", case=case)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_writer_readable_by_dl4(name, reference_dumps, dl4_dumps_of_dl3, rust_datasets, dl4_dumps_of_rust):
    """(3) deeplake 4.7.4 reads our dataset as it reads the 3.9.52 one (and as the reference)."""
    case = case_by_name(name)
    ref = dump_or_fail(reference_dumps, name, "dump_dl3 of the deeplake 3.9.52 dataset")
    theirs = dump_or_fail(dl4_dumps_of_dl3, name, "deeplake 4.7.4 reading the 3.9.52 dataset")
    dump_or_fail(rust_datasets, name, "our fixture writer")
    ours = dump_or_fail(dl4_dumps_of_rust, name, "deeplake 4.7.4 reading our dataset")
    assert_same(theirs, ours, "deeplake 4.7.4 reading our dataset vs the 3.9.52 one", case=case)
    assert_same(ref, ours, "deeplake 4.7.4 reading our dataset vs the reference", subset=True, case=case)


# ---------------------------------------------------------------------------
# Links: deeplake 3.9.52 resolves the links we write (creds keys included) to the
# same pixels as we do, and as it resolves its own.
# ---------------------------------------------------------------------------

LINK_CASES = [
    c["name"]
    for c in CASES
    if any(t.get("htype", "").startswith("link[") for t in c["tensors"])
]


def resolved_dump_dl3(tools, path, out):
    proc = run([tools.dl3_python, tools.script("dump_dl3.py"), "--resolve-links", path], DUMP_TIMEOUT_S, "dump_dl3.py --resolve-links")
    with open(out, "w", encoding="utf-8") as f:
        f.write(proc.stdout)
    return out


@pytest.mark.parametrize("name", LINK_CASES)
def test_links_resolve_alike(name, tools, workdir, dl3_datasets, rust_datasets):
    ours_path = dump_or_fail(rust_datasets, name, "our fixture writer")
    if not os.path.exists(tools.deeplake_bin):
        pytest.fail(f"deeplake CLI not found at {tools.deeplake_bin} (cargo build, or set DEEPLAKE_BIN)")
    out_dir = os.path.join(workdir, "resolved")
    os.makedirs(out_dir, exist_ok=True)
    # Link tensors of sequences are shown as paths by both dumpers: compare the rest.
    theirs_of_ours = resolved_dump_dl3(tools, ours_path, os.path.join(out_dir, name + ".dl3_of_rust.jsonl"))
    theirs_of_theirs = resolved_dump_dl3(tools, dl3_datasets[name], os.path.join(out_dir, name + ".dl3_of_dl3.jsonl"))
    ours = os.path.join(out_dir, name + ".rust.jsonl")
    cmd = [tools.deeplake_bin, "dump", ours_path, "--full", "--stored", "--meta", "--resolve-links"]
    with open(ours, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, check=False, stdout=f, stderr=subprocess.PIPE, text=True, timeout=CLI_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    case = case_by_name(name)
    assert_same(theirs_of_theirs, theirs_of_ours, "deeplake 3.9.52 resolving our links vs its own", case=case)
    assert_same(theirs_of_ours, ours, "our resolved links vs deeplake 3.9.52 resolving them", case=case)
    # The creds keys we wrote are the ones 3.x registers and reads back per row.
    keys = cases_mod.creds_keys(case)
    if keys:
        script = (
            "import sys, json, deeplake\n"
            "ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)\n"
            "[ds.populate_creds(k, {}) for k in ds.get_creds_keys()]\n"
            "t = [n for n in ds.tensors if ds[n].meta.is_link][0]\n"
            # get_creds_keys() is a set: its order changes with each process's hash seed.
            "print(json.dumps({'keys': sorted(ds.get_creds_keys()),"
            " 'rows': [ds[t].chunk_engine.creds_key(i) for i in range(len(ds[t]))]}))\n"
        )
        got = {}
        for which, path in (("ours", ours_path), ("theirs", dl3_datasets[name])):
            proc = run([tools.dl3_python, "-c", script, path], DUMP_TIMEOUT_S, "deeplake 3.9.52 reading creds keys")
            got[which] = json.loads(proc.stdout.strip().splitlines()[-1])
        assert got["ours"] == got["theirs"], got
        assert sorted(got["ours"]["keys"]) == sorted(keys), got
