"""Version history written by deeplake 3.9.52, read by our CLI.

dl3_history.py builds a dataset with commits, a branch, a pop, a rename, a delete, a
merge and uncommitted changes, and records what 3.9.52 reads of it (history.json). Our
CLI must read the same:

  test_dump_at_every_node     `deeplake dump PATH@ref` equals 3.9.52's dump after
                              `ds.checkout(ref)`, for every node and branch
  test_log                    `deeplake log PATH[@ref] --json` lists the same chain
  test_diff                   `deeplake diff PATH [A] [B] --json` equals `ds.diff(A, B,
                              as_dict=True)`
  test_diff_rows              `deeplake diff ... --rows --json` equals the ids 3.9.52
                              shows added, deleted and changed at each side
  test_info_at_ref            `deeplake info PATH@ref` reports the node it opened

The other way round, history_cases.json's `merge_history` (commits, a branch with a pop,
updates, a rename, a delete and a new tensor, uncommitted changes that the merge commits
on the source branch, a conflict resolved with "theirs", a second merge) is built by our
fixture writer and by 3.9.52 (dl3_write.py), and `dl3_history.py --read` records what
3.9.52 reads of each:

  test_dl3_reads_our_history_at_every_node
                              3.9.52's dump of our dataset after `ds.checkout(node)`
                              equals our CLI's `dump PATH@node`, for every node and branch
  test_our_merges_match_dl3s  node by node along each branch's log, our dataset reads as
                              the one 3.9.52 built with its own merge
  test_our_merge_commits_record_their_parent
                              our merge commits carry `merge_parent` (which 3.9.52
                              ignores), shown by `deeplake log --json`
"""

import re

import json
import os
import subprocess

import pytest

import cases as cases_mod
import compare as compare_mod
from harness import HERE, WRITE_TIMEOUT_S, run

CLI_TIMEOUT_S = 300
# The commits dl3_history.py labels, and its branches; with the two heads this must be
# every node of the tree (test_reference_covers_the_tree).
COMMIT_LABELS = ["c1", "c2", "c3", "c4", "c5", "merge", "alt1", "alt2"]
BRANCHES = ["main", "alt"]
REFS = COMMIT_LABELS + BRANCHES + ["head:main", "head:alt"]
# Keys of a log record that 3.9.52 has too.
LOG_KEYS = ("commit_id", "branch", "message", "author", "date", "is_head")
# Entries of DIFF_ARGS in dl3_history.py.
N_DIFFS = 11


@pytest.fixture(scope="module")
def history(tools, workdir):
    """(dataset path, reference dict) built by deeplake 3.9.52."""
    out = os.path.join(workdir, "history")
    run(
        [tools.dl3_python, tools.script("dl3_history.py"), "--out", out],
        WRITE_TIMEOUT_S,
        "deeplake 3.9.52 history writer",
    )
    with open(os.path.join(out, "history.json"), encoding="utf-8") as f:
        return os.path.join(out, "history"), json.load(f)


def node_of(ref, label):
    """The node id (or branch name) a test label stands for."""
    if label.startswith("head:"):
        return ref["branches"][label[len("head:") :]]
    return ref["commits"].get(label, label)


def cli(tools, *args):
    if not os.path.exists(tools.deeplake_bin):
        pytest.fail(f"deeplake CLI not found at {tools.deeplake_bin} (cargo build, or set DEEPLAKE_BIN)")
    cmd = [tools.deeplake_bin, *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stdout


def test_reference_covers_the_tree(history):
    _, ref = history
    labelled = {node_of(ref, label) for label in REFS if label not in BRANCHES}
    assert labelled == set(ref["nodes"]), "every node of the tree is dumped"
    assert set(ref["branches"]) == set(BRANCHES)
    assert set(ref["dumps"]) == set(ref["nodes"]) | set(BRANCHES)
    assert len(ref["diffs"]) == len(ref["rows"]) == N_DIFFS
    merge = ref["nodes"][ref["commits"]["merge"]]
    assert merge["message"].startswith("Merge "), merge


@pytest.mark.parametrize("label", REFS)
def test_dump_at_every_node(label, history, tools, workdir):
    path, ref = history
    node = node_of(ref, label)
    expected = ref["dumps"][node]
    out_dir = os.path.join(workdir, "history_cli")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, label.replace(":", "_") + ".jsonl")
    with open(out, "w", encoding="utf-8") as f:
        f.write(cli(tools, "dump", f"{path}@{node}", "--full", "--stored", "--meta"))
    diffs, notes = compare_mod.compare((expected["meta"], expected["rows"]), compare_mod.load_dump(out))
    for n in notes:
        print(f"note: {n}")
    if diffs:
        listing = "\n  ".join(diffs[:25])
        pytest.fail(f"our dump of {label} ({node}) differs from 3.9.52's:\n  {listing}")


def test_log(history, tools):
    path, ref = history
    for branch in BRANCHES:
        for arg in ([path] if branch == "main" else []) + [f"{path}@{branch}"]:
            ours = [{k: r[k] for k in LOG_KEYS} for r in json.loads(cli(tools, "log", arg, "--json"))]
            assert ours == ref["log"][branch], arg
    # From a commit: the tail of main's log that starts there.
    c3 = ref["commits"]["c3"]
    ours = [r["commit_id"] for r in json.loads(cli(tools, "log", f"{path}@{c3}", "--json"))]
    theirs = [r["commit_id"] for r in ref["log"]["main"]]
    assert ours == theirs[theirs.index(c3) :]
    text = cli(tools, "log", path)
    for r in ref["log"]["main"]:
        assert r["commit_id"] in text
        if r["message"]:
            assert r["message"] in text


@pytest.mark.parametrize("case", range(N_DIFFS))
def test_diff(case, history, tools):
    path, ref = history
    entry = ref["diffs"][case]
    ours = json.loads(cli(tools, "diff", path, *entry["args"], "--json"))
    assert ours == entry["result"], f"diff {entry['args']}"
    text = cli(tools, "diff", path, *entry["args"])
    assert text.strip()


@pytest.mark.parametrize("case", range(N_DIFFS))
def test_diff_rows(case, history, tools):
    path, ref = history
    entry = ref["rows"][case]
    ours = json.loads(cli(tools, "diff", path, *entry["args"], "--rows", "--json"))
    assert ours == entry["result"], f"diff --rows {entry['args']}"
    cli(tools, "diff", path, *entry["args"], "--rows")


def test_diff_from_a_ref(history, tools):
    """`PATH@ref A` diffs the node `ref` against A, as 3.9.52 does after checkout(ref)."""
    path, ref = history
    alt = json.loads(cli(tools, "diff", f"{path}@alt", ref["commits"]["c4"], "--json"))
    swapped = next(d for d in ref["diffs"] if d["args"] == [ref["commits"]["c4"], "alt"])
    # diff(c4, alt) lists c4's side first; from alt the sides swap.
    assert alt["dataset"] == swapped["result"]["dataset"][::-1]
    assert alt["tensor"] == swapped["result"]["tensor"][::-1]


def test_info_at_ref(history, tools):
    path, ref = history
    c1 = ref["commits"]["c1"]
    info = json.loads(cli(tools, "info", f"{path}@{c1}", "--json"))
    assert info["head"] == c1
    assert info["length"] == ref["dumps"][c1]["meta"]["length"] == 4
    assert info["branch"] == "main"
    info = json.loads(cli(tools, "info", f"{path}@alt", "--json"))
    assert info["head"] == ref["branches"]["alt"]
    assert info["branch"] == "alt"
    assert info["length"] == ref["dumps"]["alt"]["meta"]["length"]


HISTORY_CASES = os.path.join(HERE, "history_cases.json")
MERGE_CASE = "merge_history"


def read_by_dl3(tools, path, out):
    run(
        [tools.dl3_python, tools.script("dl3_history.py"), "--read", path, "--out", out],
        WRITE_TIMEOUT_S,
        "deeplake 3.9.52 history reader",
    )
    with open(out, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def merge_histories(tools, workdir, fixtures_dir):
    """{"ours": (path, reading), "dl3": (path, reading)}: the merge case built by our
    writer and by 3.9.52, each with what 3.9.52 reads of it."""
    if not os.path.exists(tools.fixture_writer):
        pytest.fail(f"fixture writer not found at {tools.fixture_writer} (cargo build, or set DEEPLAKE_FIXTURE_WRITER)")
    out = {}
    for who, cmd in [
        ("ours", [tools.fixture_writer]),
        ("dl3", [tools.dl3_python, tools.script("dl3_write.py")]),
    ]:
        base = os.path.join(workdir, f"merge_history_{who}")
        args = ["--cases", HISTORY_CASES, "--fixtures", fixtures_dir, "--out", base, "--case", MERGE_CASE]
        run(cmd + args, WRITE_TIMEOUT_S, f"{who} writer of {MERGE_CASE}")
        path = os.path.join(base, MERGE_CASE)
        out[who] = (path, read_by_dl3(tools, path, base + ".json"))
    return out


def our_dump(tools, workdir, path, node):
    out_dir = os.path.join(workdir, "merge_history_cli")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, node + ".jsonl")
    with open(out, "w", encoding="utf-8") as f:
        f.write(cli(tools, "dump", f"{path}@{node}", "--full", "--stored", "--meta"))
    return compare_mod.load_dump(out)


def assert_dumps_equal(expected, actual, what):
    diffs, notes = compare_mod.compare((expected["meta"], expected["rows"]), actual)
    for n in notes:
        print(f"note: {n}")
    if diffs:
        listing = "\n  ".join(diffs[:25])
        pytest.fail(f"{what}:\n  {listing}")


def test_history_cases_use_every_history_step():
    cases = cases_mod.load_cases(HISTORY_CASES)
    kinds = {next(iter(s)) for c in cases for s in c["steps"]}
    assert cases_mod.HISTORY_STEP_KINDS <= kinds


def test_dl3_reads_our_history_at_every_node(merge_histories, tools, workdir):
    path, ref = merge_histories["ours"]
    assert set(ref["branches"]) == {"main", "alt"}
    assert len(ref["nodes"]) == 11, sorted(n["message"] or "" for n in ref["nodes"].values())
    for node in list(ref["nodes"]) + list(ref["branches"]):
        ours = our_dump(tools, workdir, path, node)
        assert_dumps_equal(ref["dumps"][node], ours, f"3.9.52 reads our dataset at {node} otherwise than we do")


def normalized_messages(log):
    """Log messages with the commit id of merge messages taken out (ids are random)."""
    return [re.sub(r"^Merge [0-9a-f]{40} into ", "Merge <id> into ", r["message"] or "") for r in log]


def test_our_merges_match_dl3s(merge_histories):
    ours_path, ours = merge_histories["ours"]
    _, theirs = merge_histories["dl3"]
    for branch in ("main", "alt"):
        a, b = ours["log"][branch], theirs["log"][branch]
        assert normalized_messages(a) == normalized_messages(b), branch
        assert [r["is_head"] for r in a] == [r["is_head"] for r in b]
        for x, y in zip(a, b):
            assert_dumps_equal(
                theirs["dumps"][y["commit_id"]],
                (ours["dumps"][x["commit_id"]]["meta"], ours["dumps"][x["commit_id"]]["rows"]),
                f"{branch} at {x['message']!r}: our dataset reads otherwise than 3.9.52's",
            )
    merges = [m for m in normalized_messages(ours["log"]["main"]) if m.startswith("Merge ")]
    assert len(merges) == 2
    assert "Auto commit before merging into main" in normalized_messages(ours["log"]["alt"])


def test_our_merge_commits_record_their_parent(merge_histories, tools):
    path, ref = merge_histories["ours"]
    with open(os.path.join(path, "version_control_info.json"), encoding="utf-8") as f:
        tree = json.load(f)
    records = json.loads(cli(tools, "log", path, "--json"))
    merges = [r for r in records if (r["message"] or "").startswith("Merge ")]
    assert len(merges) == 2
    for r in merges:
        merged = r["message"].split()[1]
        assert tree["commits"][r["commit_id"]]["merge_parent"] == merged
        assert r["merge_parent"] == merged
        assert ref["nodes"][merged]["branch"] == "alt"
    assert all(r["merge_parent"] is None for r in records if r not in merges)
