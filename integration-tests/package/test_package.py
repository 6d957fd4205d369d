"""What a user installs is real: the two binaries through `cargo install`, the Python
client as a wheel and an sdist, and one version everywhere it is written.

- `cargo install --locked --offline --debug --path daemon` (and `--path connector`) into a
  scratch root, with the repository's target folder (CARGO_TARGET_DIR) so that a second
  run reuses the first's build; the installed `deeplake` and `destination-deeplake` print
  their version and the connector its spec. Debug keeps it minutes, not tens of minutes;
  what is checked (the lock file suffices, each package builds on its own feature set,
  the binaries have the right names) does not depend on the profile.
- client/python is copied away from the checkout (so no build/ or egg-info lands in it)
  and built by the PEP 517 frontend without isolation (no index needed): an sdist, then
  a wheel from that sdist. The wheel goes into a fresh venv with no index and no
  dependencies; numpy and pyarrow come from this venv through a .pth file, so the
  package imported is the wheel's and nothing else.

Run it with the python of the package venv (scripts/lib.sh `package_venv`).
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / "client" / "python"
TIMEOUT = 1800


def run(cmd, *, env=None, cwd=REPO, timeout=TIMEOUT):
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-8000:]}\n--- stderr\n{proc.stderr[-8000:]}"
        )
    return proc


def toml(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def workspace_version():
    return toml(REPO / "Cargo.toml")["workspace"]["package"]["version"]


def module_version(path):
    """The value of `__version__ = "..."` in a module, read without importing it."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    pytest.fail(f"{path} sets no __version__")


# ---- one version --------------------------------------------------------------------


def test_one_version_everywhere():
    version = workspace_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    for member in toml(REPO / "Cargo.toml")["workspace"]["members"]:
        package = toml(REPO / member / "Cargo.toml")["package"]
        assert package.get("version") == {"workspace": True}, f"{member}: version must be version.workspace = true"

    written = {
        "client/python/pyproject.toml": toml(CLIENT / "pyproject.toml")["project"]["version"],
        "deeplake_rs.__version__": module_version(CLIENT / "src" / "deeplake_rs" / "__init__.py"),
        "metadata.yaml dockerImageTag": yaml.safe_load((REPO / "metadata.yaml").read_text())["data"]["dockerImageTag"],
    }
    for dockerfile in ("Dockerfile", "daemon/Dockerfile"):
        for label in re.findall(r'(?:io\.airbyte|org\.opencontainers\.image)\.version="([^"]*)"',
                                (REPO / dockerfile).read_text()):
            written.setdefault(f"{dockerfile} version labels", label)
            assert label == written[f"{dockerfile} version labels"]
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if "build" in svc:
            written[f"compose.yaml {name} image tag"] = svc["image"].rsplit(":", 1)[1]
    # The newest release in the changelog is this one.
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert releases, "CHANGELOG.md has no release heading (## [X.Y.Z] - date)"
    written["CHANGELOG.md newest release"] = releases[0]

    assert len(written) == 8, written
    wrong = {k: v for k, v in written.items() if v != version}
    assert not wrong, f"these differ from the workspace version {version}: {wrong}"


def test_install_metadata_of_the_binaries():
    meta = json.loads(run(["cargo", "metadata", "--offline", "--format-version", "1", "--no-deps"]).stdout)
    packages = {p["name"]: p for p in meta["packages"]}
    for name, binary in (("deeplake-daemon", "deeplake"), ("deeplake-connector", "destination-deeplake")):
        p = packages[name]
        assert [t["name"] for t in p["targets"] if "bin" in t["kind"]] == [binary]
        assert p["description"] and p["license"] == "Apache-2.0"
        assert p["repository"] is None or "example" not in p["repository"], p["repository"]
        assert p["publish"] == [], f"{name} is installed from the checkout, not published"


# ---- cargo install ------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    root = tmp_path_factory.mktemp("cargo-root")
    env = dict(os.environ, CARGO_TARGET_DIR=str(REPO / "target"))
    env.setdefault("CARGO_INCREMENTAL", "0")
    took = {}
    for path in ("daemon", "connector"):
        start = time.monotonic()
        run(["cargo", "install", "--locked", "--offline", "--debug", "--path", path, "--root", root],
            env=env)
        took[path] = time.monotonic() - start
    # Shown with -rA or on failure: what the step costs on this machine.
    sys.stderr.write(f"cargo install took {', '.join(f'{k} {v:.0f}s' for k, v in took.items())}\n")
    return root / "bin"


def test_cargo_install_gives_the_two_binaries(installed):
    assert sorted(p.name for p in installed.iterdir()) == ["deeplake", "destination-deeplake"]
    version = workspace_version()
    assert run([installed / "deeplake", "--version"]).stdout == f"deeplake {version}\n"
    assert run([installed / "destination-deeplake", "--version"]).stdout == f"destination-deeplake {version}\n"
    out = run([installed / "destination-deeplake", "spec"]).stdout.splitlines()
    assert len(out) == 1
    assert json.loads(out[0]) == {"type": "SPEC", "spec": json.loads((REPO / "spec" / "connector-spec.json").read_text())}
    # The installed CLI works on its own: the help lists the daemon command.
    assert "serve" in run([installed / "deeplake", "--help"]).stdout


# ---- the Python client --------------------------------------------------------------


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    work = tmp_path_factory.mktemp("client")
    src = work / "python"
    shutil.copytree(CLIENT, src, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    out = work / "dist"
    # sdist first, then the wheel built from the unpacked sdist (build's default order).
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src])
    files = sorted(p.name for p in out.iterdir())
    return out, files


def test_the_client_builds_an_sdist_and_a_wheel(dists):
    out, files = dists
    version = workspace_version()
    wheel, sdist = f"deeplake_rs-{version}-py3-none-any.whl", f"deeplake_rs-{version}.tar.gz"
    assert files == [wheel, sdist], files

    modules = sorted(p.name for p in (CLIENT / "src" / "deeplake_rs").iterdir()
                     if p.suffix == ".py" or p.name == "py.typed")
    with zipfile.ZipFile(out / wheel) as z:
        names = z.namelist()
        assert sorted(n.split("/", 1)[1] for n in names if n.startswith("deeplake_rs/")) == modules
        meta = z.read(f"deeplake_rs-{version}.dist-info/METADATA").decode()
    assert f"Version: {version}" in meta.splitlines()
    assert {line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")} >= {
        "numpy>=1.24", "pyarrow>=14"}
    with tarfile.open(out / sdist) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
    assert "pyproject.toml" in members
    assert {f"src/deeplake_rs/{m}" for m in modules} <= members


def test_the_wheel_installs_and_imports_in_a_fresh_venv(dists, tmp_path):
    out, files = dists
    version = workspace_version()
    venv = tmp_path / "fresh"
    run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    run([py, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check",
         out / next(f for f in files if f.endswith(".whl"))])
    # The runtime dependencies from this venv (no index here); the package itself must
    # not be importable from it, or the check below would prove nothing.
    assert subprocess.run([sys.executable, "-c", "import deeplake_rs"], capture_output=True).returncode != 0
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "_runtime_deps.pth").write_text(ours + "\n")
    run([py, "-m", "pip", "check", "--disable-pip-version-check"])

    probe = (
        "import json, importlib.metadata as md, deeplake_rs\n"
        "print(json.dumps({'file': deeplake_rs.__file__, 'version': deeplake_rs.__version__,\n"
        "    'dist': md.version('deeplake-rs'), 'api': sorted(deeplake_rs.__all__)}))\n"
    )
    got = json.loads(run([py, "-c", probe], cwd=tmp_path).stdout)
    assert Path(got["file"]).is_relative_to(site), got["file"]
    assert got["version"] == got["dist"] == version, got
    assert {"Dataset", "Stream", "compute"} <= set(got["api"])
