"""The connector's container image is real: it lints, builds and runs.

hadolint must pass the Dockerfile as it is. metadata.yaml must be a registry entry whose
tag and repository agree with the image's labels and the workspace version. Then the
image is built with Podman around the (stripped) debug binary built here (`--target prebuilt`,
base image from scripts/podman.sh, since no registry can be pulled from), and `spec`,
`check` and a small `write` run inside it with no network, writing to a mounted folder.

Run it with the python of the hadolint venv (scripts/lib.sh `hadolint_venv`, which
holds hadolint, pytest and PyYAML); DEEPLAKE_DL3_PYTHON names a python with deeplake
3.9.52, which opens the dataset the container wrote. Every tool missing is a failure,
never a skip: scripts/setup.sh installs them all.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRBYTE_HARNESS = REPO.parent / "shared" / "airbyte"
BIN_NAME = "destination-deeplake"
BIN_IN_IMAGE = f"/usr/local/bin/{BIN_NAME}"
RUN_TIMEOUT = 180


def run(cmd, *, env=None, stdin=None, timeout=RUN_TIMEOUT, check=True, cwd=REPO):
    """Runs cmd and returns the CompletedProcess; a failure shows everything it printed."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-8000:]}\n--- stderr\n{proc.stderr[-8000:]}"
        )
    return proc


def messages(stdout):
    """Parses a connector's stdout: every line must be one JSON object."""
    out = []
    for n, line in enumerate(stdout.splitlines(), 1):
        assert line.strip(), f"line {n} of stdout is empty"
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as e:
            pytest.fail(f"line {n} of stdout is not JSON ({e}): {line[:500]}")
        assert isinstance(msg, dict) and "type" in msg, f"line {n} is not a message: {line[:500]}"
        out.append(msg)
    return out


def dockerfile_labels():
    text = (REPO / "Dockerfile").read_text()
    return dict(re.findall(r'(io\.airbyte\.[a-z]+)="([^"]*)"', text))


def workspace_version():
    with open(REPO / "Cargo.toml", "rb") as f:
        return tomllib.load(f)["workspace"]["package"]["version"]


def metadata():
    with open(REPO / "metadata.yaml") as f:
        return yaml.safe_load(f)


# ---- static checks -------------------------------------------------------------------


def test_hadolint_passes_the_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), (
        f"no hadolint next to {sys.executable}: run this test with the python of the "
        "hadolint venv (source scripts/lib.sh; $(hadolint_venv)/bin/python -m pytest ...)"
    )
    proc = run([hadolint, "--version"])
    assert "2.15" in proc.stdout, proc.stdout
    # Default failure threshold: any finding, down to style and info, fails.
    run([hadolint, "Dockerfile"])


def test_metadata_is_a_registry_entry_agreeing_with_the_image():
    meta = metadata()
    assert meta["metadataSpecVersion"] == "1.0"
    data = meta["data"]
    for key in (
        "name",
        "definitionId",
        "connectorType",
        "dockerRepository",
        "dockerImageTag",
        "license",
        "documentationUrl",
        "githubIssueLabel",
        "connectorSubtype",
        "releaseStage",
    ):
        assert data.get(key), f"metadata.yaml: data.{key} is required"
    assert str(uuid.UUID(data["definitionId"])) == data["definitionId"], "definitionId is not a UUID"
    assert data["connectorType"] == "destination"
    assert data["connectorSubtype"] in {
        "api", "database", "datalake", "file", "custom", "message_queue", "unknown", "vectorstore"
    }
    assert data["releaseStage"] in {"alpha", "beta", "generally_available", "custom"}
    assert data["supportLevel"] in {"community", "certified", "archived"}
    assert data["supportsRefreshes"] is True
    assert isinstance(data["tags"], list) and data["tags"]

    # One version and one name, written in four places.
    version = workspace_version()
    labels = dockerfile_labels()
    assert data["dockerImageTag"] == version, "metadata.yaml dockerImageTag != Cargo.toml version"
    assert labels.get("io.airbyte.version") == version, "Dockerfile io.airbyte.version != Cargo.toml version"
    assert labels.get("io.airbyte.name") == data["dockerRepository"]
    with open(REPO / "Cargo.toml", "rb") as f:
        assert data["license"] == tomllib.load(f)["workspace"]["package"]["license"]


# ---- the image -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman_env():
    for tool in ("podman", "runc", "debootstrap"):
        assert shutil.which(tool), f"{tool} is not installed: run scripts/setup.sh (or scripts/podman.sh setup)"
    base = run(["bash", "scripts/podman.sh", "setup"], timeout=900).stdout.strip()
    conf = run(["bash", "-c", 'eval "$(bash scripts/podman.sh env)"; printf %s "$CONTAINERS_CONF"']).stdout
    assert base and Path(conf).is_file(), (base, conf)
    return dict(os.environ, CONTAINERS_CONF=conf), base


@pytest.fixture(scope="module")
def host_binary():
    meta = json.loads(run(["cargo", "metadata", "--format-version", "1", "--no-deps"]).stdout)
    target = Path(meta["target_directory"]).resolve()
    # `--target prebuilt` copies a host binary (build arg BINARY) from the build context,
    # the repository: the debug build the test run makes anyway, stripped. A release
    # build would add many minutes on a fresh clone; the default target makes one.
    assert target == REPO / "target", (
        f"the cargo target dir is {target}; the image build needs it at {REPO / 'target'} "
        "(unset CARGO_TARGET_DIR for this test)"
    )
    run(
        # The workspace build the other test steps make: the same features, no rebuild.
        ["cargo", "build", "--workspace", "--bins"],
        timeout=None,
    )
    built = target / "debug" / BIN_NAME
    assert built.is_file()
    # Without its debug info (hundreds of MB) the binary makes a small image layer.
    binary = target / "image-test" / BIN_NAME
    binary.parent.mkdir(exist_ok=True)
    assert shutil.which("strip"), "strip (binutils) is not installed"
    run(["strip", "-o", str(binary), str(built)])
    return binary


@pytest.fixture(scope="module")
def image(podman_env, host_binary):
    env, base = podman_env
    # Per-process tag: two checkouts testing at once do not replace each other's image.
    tag = f"localhost/deeplake-rs/{BIN_NAME}:image-test-{os.getpid()}"
    run(
        [
            "podman", "build", "--network=none", "--target", "prebuilt",
            "--build-arg", f"BASE={base}", "--build-arg", f"CERTS_IMAGE={base}",
            "--build-arg", f"BINARY=target/image-test/{BIN_NAME}",
            "-t", tag, ".",
        ],
        env=env,
        timeout=600,
    )
    yield tag
    run(["podman", "rmi", "--force", tag], env=env, check=False)


def podman_run(env, image, args, *, mounts=(), stdin=None, entrypoint=None, check=True):
    cmd = ["podman", "run", "--rm", "-i", "--network=none"]
    for host, container, mode in mounts:
        cmd += ["-v", f"{host}:{container}:{mode}"]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    return run(cmd + [image] + list(args), env=env, stdin=stdin, check=check)


def test_image_config(podman_env, image):
    env, _ = podman_env
    info = json.loads(run(["podman", "image", "inspect", image], env=env).stdout)[0]
    config = info["Config"]
    assert config["Entrypoint"] == [BIN_IN_IMAGE], "ENTRYPOINT must be the exec form of the binary"
    envs = dict(e.split("=", 1) for e in config.get("Env", []))
    assert envs.get("AIRBYTE_ENTRYPOINT") == " ".join(config["Entrypoint"])
    data = metadata()["data"]
    labels = config.get("Labels") or {}
    assert labels.get("io.airbyte.name") == data["dockerRepository"]
    assert labels.get("io.airbyte.version") == data["dockerImageTag"]
    user = config.get("User", "")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"the image must run as a numeric non-root user, not {user!r}"

    # Really not root at run time, and the CA bundle for S3 over TLS is there.
    assert podman_run(env, image, ["-u"], entrypoint="id").stdout.strip() == uid
    podman_run(env, image, ["-s", "/etc/ssl/certs/ca-certificates.crt"], entrypoint="test")


def test_spec_in_the_container_is_the_host_spec(podman_env, image, host_binary):
    env, _ = podman_env
    inside = messages(podman_run(env, image, ["spec"]).stdout)
    assert len(inside) == 1 and inside[0]["type"] == "SPEC", inside
    host = messages(run([host_binary, "spec"]).stdout)
    assert inside == host
    # The registry entry and the spec send users to the same page.
    assert inside[0]["spec"].get("documentationUrl") == metadata()["data"]["documentationUrl"]


@pytest.fixture
def data_dir(tmp_path):
    # The container runs as a non-root user; the mounted folder must be writable to it.
    d = tmp_path / "data"
    d.mkdir()
    d.chmod(0o777)
    return d


@pytest.fixture
def config_dir(tmp_path):
    d = tmp_path / "config"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"destination": {"path": "/data/out"}}))
    return d


def test_check_in_the_container(podman_env, image, data_dir, config_dir):
    env, _ = podman_env
    proc = podman_run(
        env,
        image,
        ["check", "--config", "/config/config.json"],
        mounts=[(data_dir, "/data", "rw"), (config_dir, "/config", "ro")],
    )
    msgs = [m for m in messages(proc.stdout) if m["type"] != "LOG"]
    assert len(msgs) == 1 and msgs[0]["type"] == "CONNECTION_STATUS", proc.stdout
    status = msgs[0]["connectionStatus"]
    assert status["status"] == "SUCCEEDED", status


RECORDS = 25
STATE_EVERY = 10


def test_write_in_the_container(podman_env, image, data_dir, config_dir, tmp_path):
    env, _ = podman_env
    gen = AIRBYTE_HARNESS / "gen_messages.py"
    assert gen.is_file(), f"{gen} not found (the shared Airbyte harness beside the repository)"
    input_file = tmp_path / "messages.jsonl"
    run([
        sys.executable, gen, "--records", RECORDS, "--streams", "images",
        "--state-every", STATE_EVERY, "--platform-ids", "--complete-status",
        "--out", input_file, "--catalog-out", config_dir / "catalog.json",
    ])
    sent = [json.loads(line) for line in input_file.read_text().splitlines()]
    sent_states = [m["state"] for m in sent if m["type"] == "STATE"]
    assert len(sent_states) == RECORDS // STATE_EVERY + 1

    with open(input_file) as stdin:
        proc = podman_run(
            env,
            image,
            ["write", "--config", "/config/config.json", "--catalog", "/config/catalog.json"],
            mounts=[(data_dir, "/data", "rw"), (config_dir, "/config", "ro")],
            stdin=stdin,
        )
    out = messages(proc.stdout)
    assert {m["type"] for m in out} <= {"STATE", "LOG", "TRACE"}, proc.stdout
    errors = [m for m in out if m["type"] == "TRACE" and m["trace"].get("type") == "ERROR"]
    assert not errors, errors

    # States come back in order, unchanged but for destinationStats, the last one included,
    # and together they account for every record sent.
    echoed = [m["state"] for m in out if m["type"] == "STATE"]
    assert echoed, f"no STATE echoed\n{proc.stdout}\n{proc.stderr[-4000:]}"
    stripped = [{k: v for k, v in s.items() if k != "destinationStats"} for s in echoed]
    it = iter(sent_states)
    assert all(any(s == t for t in it) for s in stripped), "echoed states are not the sent ones, in order"
    assert stripped[-1] == sent_states[-1], "the last STATE was not echoed"
    assert sum(s["destinationStats"]["recordCount"] for s in echoed) == RECORDS

    # The dataset is in the mounted folder, and deeplake 3.9.52 reads the records back.
    datasets = sorted(p.parent for p in data_dir.rglob("dataset_meta.json"))
    images = [p for p in datasets if "images" in p.name]
    listing = "\n".join(str(p.relative_to(data_dir)) for p in sorted(data_dir.rglob("*")))
    assert len(images) == 1, f"expected one dataset for stream 'images' under the mount:\n{listing}"
    dl3 = os.environ.get("DEEPLAKE_DL3_PYTHON")
    assert dl3, "set DEEPLAKE_DL3_PYTHON to the python of the deeplake 3.9.52 venv (scripts/lib.sh dl3_venv)"
    script = (
        "import json, sys, deeplake\n"
        "ds = deeplake.load(sys.argv[1], read_only=True, verbose=False)\n"
        "print(json.dumps({'len': len(ds), 'id': sorted(int(x) for x in ds['id'].numpy().reshape(-1))}))\n"
    )
    got = json.loads(run([dl3, "-c", script, images[0]], timeout=300).stdout.strip().splitlines()[-1])
    assert got == {"len": RECORDS, "id": list(range(RECORDS))}, got
