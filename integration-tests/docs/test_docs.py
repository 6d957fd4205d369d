"""The user docs run: every fenced ``sh`` and ``python`` block of each page in PAGES
runs, in order, in one scratch folder per page, and must succeed.

The rule for every fenced block of every ``docs/*.md`` page (enforced below):

* Each fence names its language.
* On a page in PAGES, ``sh``/``bash``/``python`` blocks run. One may be left out only
  with a reason, in an HTML comment on the line before it: ``<!-- not run: why -->``
  (for what truly cannot run here: a real Airbyte platform, a container build, AWS).
* Any other block (``text``, ``json``, ``rust``, ...) carries one of these comments on
  the line before it:

  - ``<!-- output -->``: what the run block just above printed; compared with its
    stdout. ``text``: line by line, where ``...`` inside a line matches any text and
    a line that is only ``...`` matches any number of lines. ``json``: the printed
    JSON must contain the block's JSON (objects: these keys at least; arrays: the
    same length; the string ``"..."``: any value).
  - ``<!-- file: NAME -->``: the block is written to NAME in the scratch folder, where
    the blocks after it use it (configs, catalogs, message files).
  - ``<!-- illustrative: what it shows -->``: a diagram, a synopsis or a sketch that is
    not a command; on pages outside PAGES, blocks may only be illustrative or not run.

* ``json`` blocks parse, whatever their marker.

Shell blocks run with ``bash -euo pipefail``; Python blocks with this interpreter (the
client's venv: numpy, pyarrow, torch, Pillow). The ``deeplake`` CLI is the one
DEEPLAKE_BIN names, its folder (which holds ``destination-deeplake`` too) put first on
PATH; the client package is imported from the source tree; PORT and PORT2 are free
loopback ports for pages that serve. Processes a page starts in the background write
their pid to ``*.pid`` in the scratch folder and are stopped at the end if the page
did not stop them. The S3 page needs the S3 test server's ``AWS_*`` environment
(``eval "$(bash scripts/s3.sh env)"``; scripts/test.sh exports it).

Beyond running the blocks: the Airbyte page's table of settings must list exactly the
fields of spec/connector-spec.json with their defaults; every ``METHOD /path`` a page
names must be a route of spec/openapi.json; every ``--flag`` given to a ``deeplake``
subcommand anywhere in the docs must be one its ``--help`` lists.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [
    "docs/quickstart.md",
    "docs/rest.md",
    "docs/python.md",
    "docs/TQL.md",
    "docs/airbyte.md",
    "docs/operations.md",
    "docs/transforms.md",
    "docs/install.md",
]
RUN = ("sh", "bash", "python")
FENCE = re.compile(r"^```(\S*)\s*$")
MARK = re.compile(r"^<!--\s*(not run|illustrative|file|output)\s*(?::\s*(\S.*?))?\s*-->\s*$")


class Block:
    def __init__(self, page: str, lang: str, code: str, line: int, mark: str | None, arg: str | None):
        self.page, self.lang, self.code, self.line, self.mark, self.arg = page, lang, code, line, mark, arg

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(page: str) -> list[Block]:
    lines = (REPO / page).read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start = i + 1
        j = start
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if j == len(lines):
            raise AssertionError(f"{page}:{i + 1}: unclosed code fence")
        mark = MARK.match(lines[i - 1]) if i else None
        out.append(Block(page, m.group(1), "\n".join(lines[start:j]) + "\n", i + 1,
                         mark.group(1) if mark else None, mark.group(2) if mark else None))
        i = j + 1
    return out


def all_pages() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deeplake_bin() -> Path:
    b = Path(os.environ.get("DEEPLAKE_BIN") or REPO / "target" / "debug" / "deeplake")
    if not os.access(b, os.X_OK):
        pytest.fail(f"the deeplake CLI is not at {b}: build it or set DEEPLAKE_BIN")
    return b.resolve()


def stop_started(work: Path) -> None:
    for pidfile in work.glob("*.pid"):
        try:
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        except (ValueError, ProcessLookupError):
            pass


def text_matches(expected: str, actual: str) -> bool:
    """Line by line; ``...`` inside a line is any text, a line of ``...`` any lines."""
    exp = expected.rstrip("\n").split("\n")
    act = actual.rstrip("\n").split("\n")

    def line_re(e: str) -> re.Pattern:
        return re.compile("^" + ".*".join(re.escape(p) for p in e.rstrip().split("...")) + r"\s*$")

    def go(i: int, j: int) -> bool:
        if i == len(exp):
            return j == len(act)
        if exp[i].strip() == "...":
            return any(go(i + 1, k) for k in range(j, len(act) + 1))
        return j < len(act) and bool(line_re(exp[i]).match(act[j])) and go(i + 1, j + 1)

    return go(0, 0)


def json_contains(expected, actual, path="$") -> str | None:
    """None when ``actual`` holds ``expected`` (module docs), else where it does not."""
    if expected == "...":
        return None
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {actual!r}"
        for k, v in expected.items():
            if k not in actual:
                return f"{path}.{k}: missing"
            err = json_contains(v, actual[k], f"{path}.{k}")
            if err:
                return err
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{path}: expected {len(expected)} items, got {actual!r}"
        for n, (e, a) in enumerate(zip(expected, actual)):
            err = json_contains(e, a, f"{path}[{n}]")
            if err:
                return err
        return None
    if isinstance(expected, float) or isinstance(actual, float):
        ok = isinstance(actual, (int, float)) and abs(float(expected) - float(actual)) <= 1e-6 * max(1.0, abs(expected))
        return None if ok else f"{path}: expected {expected!r}, got {actual!r}"
    return None if expected == actual else f"{path}: expected {expected!r}, got {actual!r}"


def page_env(tools: Path) -> dict:
    bins = [deeplake_bin().parent]
    conn = os.environ.get("DEEPLAKE_CONNECTOR_BIN")
    if conn:
        bins.insert(0, Path(conn).resolve().parent)
    # The AWS CLI of the operations page, alone in a folder so that its venv's python
    # does not shadow the system's.
    aws = os.environ.get("DEEPLAKE_AWS_BIN")
    if aws:
        link = tools / "aws"
        if not link.exists():
            link.symlink_to(Path(aws).absolute())
        bins.append(tools)
    return {
        **os.environ,
        "PATH": os.pathsep.join([*map(str, bins), os.environ.get("PATH", "")]),
        "PYTHONPATH": str(REPO / "client" / "python" / "src"),
        "PORT": str(free_port()),
        "PORT2": str(free_port()),
        # The CI runner's own settings; a page sets what it needs.
        "DEEPLAKE_LOG": "warn",
    }


@pytest.mark.parametrize("page", PAGES)
def test_every_block_of_the_page_runs(page, tmp_path, tmp_path_factory):
    found = blocks(page)
    runnable = [b for b in found if b.lang in RUN and b.mark != "not run"]
    assert runnable, f"{page} has no code blocks that run"
    env = page_env(tmp_path_factory.mktemp("tools"))
    last = None
    ran = 0
    try:
        for b in found:
            if b.mark == "file":
                (tmp_path / b.arg).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / b.arg).write_text(b.code)
                continue
            if b.mark == "output":
                assert last is not None, f"{b.where()}: an output block needs a run block before it"
                if b.lang == "json":
                    try:
                        got = json.loads(last.stdout)
                    except json.JSONDecodeError as e:
                        raise AssertionError(f"{b.where()}: the block above did not print JSON ({e}):\n{last.stdout}")
                    err = json_contains(json.loads(b.code), got)
                    assert err is None, f"{b.where()}: the printed JSON differs: {err}\n--- printed\n{last.stdout}"
                else:
                    assert text_matches(b.code, last.stdout), (
                        f"{b.where()}: the block above printed something else\n--- page\n{b.code}--- printed\n{last.stdout}"
                    )
                continue
            if b.lang not in RUN or b.mark == "not run":
                continue
            cmd = ["bash", "-euo", "pipefail", "-c", b.code] if b.lang in ("sh", "bash") else [sys.executable, "-c", b.code]
            start = time.monotonic()
            p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            # Shown with `pytest -s`: where a page's time goes.
            print(f"{b.where()}: {b.lang} block, {time.monotonic() - start:.1f} s")
            assert p.returncode == 0, (
                f"{b.where()}: the {b.lang} block failed ({p.returncode})\n{b.code}\n"
                f"--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}"
            )
            last = p
            ran += 1
    finally:
        stop_started(tmp_path)
    assert ran == len(runnable)


@pytest.mark.parametrize("page", all_pages())
def test_every_block_runs_or_is_marked(page):
    """The rule of the module docs, for every page of docs/."""
    run_page = page in PAGES
    for b in blocks(page):
        assert b.lang, f"{b.where()}: name the fence's language (```sh, ```text, ...)"
        if b.mark in ("not run", "illustrative"):
            assert b.arg and len(b.arg) > 10, f"{b.where()}: give a real reason in <!-- {b.mark}: ... -->"
        if b.lang == "json":
            try:
                json.loads(b.code)
            except json.JSONDecodeError as e:
                raise AssertionError(f"{b.where()}: the json block does not parse: {e}")
        if b.lang in RUN:
            assert b.mark in (None, "not run"), f"{b.where()}: a {b.lang} block runs, or is <!-- not run: why -->"
            assert run_page or b.mark == "not run", (
                f"{b.where()}: {page} is not in PAGES, so its {b.lang} block never runs: add the page or mark the block"
            )
        else:
            assert b.mark in ("illustrative", "output", "file"), (
                f"{b.where()}: a {b.lang} block is <!-- output -->, <!-- file: NAME --> or <!-- illustrative: why -->"
            )
            assert run_page or b.mark == "illustrative", f"{b.where()}: output and file blocks need a page in PAGES"


def spec_fields(schema: dict, prefix: str = "") -> dict:
    """Every settable field of the connector spec, dotted (``tensors[].htype``), with its default."""
    out = {}
    for name, prop in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        if prop.get("type") == "object" and "properties" in prop and name != "bbox_coords":
            out.update(spec_fields(prop, key + "."))
        elif prop.get("type") == "array" and prop.get("items", {}).get("type") == "object":
            out.update(spec_fields(prop["items"], key + "[]."))
        else:
            out[key] = prop.get("default")
    return out


def test_airbyte_settings_table_matches_the_spec():
    spec = json.loads((REPO / "spec" / "connector-spec.json").read_text())
    fields = spec_fields(spec["connectionSpecification"])
    rows = {}
    for line in (REPO / "docs" / "airbyte.md").read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z0-9_.\[\]]+)`\s*\|([^|]*)\|([^|]*)\|", line)
        if m and m.group(1) not in ("append", "overwrite", "append_dedup"):
            rows[m.group(1)] = m.group(3).strip()
    assert set(rows) == set(fields), (
        f"docs/airbyte.md's settings table and spec/connector-spec.json differ: "
        f"missing {sorted(set(fields) - set(rows))}, not in the spec {sorted(set(rows) - set(fields))}"
    )
    for key, default in fields.items():
        shown = rows[key].strip("`")
        want = "" if default is None else json.dumps(default)
        assert shown.replace(" ", "") == want.replace(" ", ""), (
            f"docs/airbyte.md: `{key}` shows default {rows[key]!r}, the spec has {want!r}"
        )


def openapi_routes() -> list[tuple[str, re.Pattern]]:
    spec = json.loads((REPO / "spec" / "openapi.json").read_text())
    out = []
    for path, ops in spec["paths"].items():
        rx = re.compile("^" + re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(path)) + "$")
        out += [(m.upper(), rx) for m in ops]
    return out


def test_documented_routes_are_in_the_openapi_document():
    routes = openapi_routes()
    seen = 0
    for page in all_pages():
        text = (REPO / page).read_text()
        for m in re.finditer(r"\b(GET|POST|DELETE|PUT|PATCH)\s+(/[A-Za-z0-9_{}/.-]*)", text):
            method, path = m.group(1), m.group(2).rstrip(".")
            if path.startswith("/viz/") or path == "/":
                continue  # the visualizer's own assets, not API routes
            assert any(method == rm and rx.match(path) for rm, rx in routes), (
                f"{page}: `{method} {path}` is not a route of spec/openapi.json"
            )
            seen += 1
    assert seen > 40, f"only {seen} routes named in the docs"


def cli_flags() -> dict:
    """Subcommand -> the long flags its --help lists."""
    exe = str(deeplake_bin())
    top = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    subs = re.findall(r"^  ([a-z]+)\s{2,}", top.split("Commands:")[1].split("Options:")[0], re.M)
    out = {}
    for sub in subs:
        if sub == "help":
            continue
        h = subprocess.run([exe, sub, "--help"], capture_output=True, text=True, check=True).stdout
        out[sub] = set(re.findall(r"--[a-z][a-z0-9-]*", h))
        if "Commands:" in h:
            for inner in re.findall(r"^  ([a-z]+)\s{2,}", h.split("Commands:")[1].split("Options:")[0], re.M):
                if inner == "help":
                    continue
                hh = subprocess.run([exe, sub, inner, "--help"], capture_output=True, text=True, check=True).stdout
                out[f"{sub} {inner}"] = set(re.findall(r"--[a-z][a-z0-9-]*", hh))
    return out


def test_documented_cli_flags_exist():
    flags = cli_flags()
    checked = 0
    for page in all_pages() + ["README.md"]:
        text = (REPO / page).read_text()
        # Commands in code blocks and in inline code: `deeplake SUB ... --flag`, up to
        # the end of the line, a pipe, a `;` or the closing backtick.
        for m in re.finditer(r"\bdeeplake ([a-z]+)(?: ([a-z]+))?([^`|;\n]*)", text):
            sub = m.group(1)
            if sub not in flags:
                continue
            key = f"{sub} {m.group(2)}" if m.group(2) and f"{sub} {m.group(2)}" in flags else sub
            for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", m.group(3)):
                assert flag in flags[key], f"{page}: `deeplake {key}` has no flag {flag}"
                checked += 1
    assert checked > 40, f"only {checked} flags checked"
