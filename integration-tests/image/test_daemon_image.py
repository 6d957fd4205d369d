"""The daemon's image and compose.yaml, checked with the images built here.

daemon/Dockerfile must pass hadolint and build (`--target prebuilt`, around the stripped
debug `deeplake`, base image from scripts/podman.sh: nothing is pulled). compose.yaml is
read as data: its services, ports and environment must agree with the images this test
builds, with the store's bucket and keys, and with the AWS_* variables core reads.
No compose tool runs (none is installed, and the store's image cannot be pulled), so the
stack runs as compose would wire it, with the host's test S3 server (scripts/s3.sh) in
place of the `s3` service: the connector image checks and writes into it, then the
daemon image serves what it wrote, passes its own health check and answers a query.

Run it like test_image.py (the hadolint venv's python); it needs the test S3 server's
environment (eval "$(scripts/s3.sh env)").
"""

import hashlib
import json
import os
import re
import secrets
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from test_image import (  # noqa: F401 (fixtures shared with the connector's test)
    AIRBYTE_HARNESS,
    REPO,
    host_binary,
    image,
    messages,
    metadata,
    podman_env,
    run,
    workspace_version,
)

DAEMON = "deeplake"
DAEMON_IN_IMAGE = f"/usr/local/bin/{DAEMON}"
DAEMON_DOCKERFILE = "daemon/Dockerfile"
DAEMON_REPOSITORY = "deeplake-rs/deeplake"
S3_ENV_KEYS = (
    "AWS_ENDPOINT",
    "AWS_ALLOW_HTTP",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_COPY_IF_NOT_EXISTS",
)


def compose():
    with open(REPO / "compose.yaml") as f:
        return yaml.safe_load(f)


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def interpolate(value, env):
    """Compose's variable syntax: ${X}, ${X:-default}, ${X:?error}, and $$ for $."""

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == "?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == "-" else ""

    return _VAR.sub(sub, value)


def resolved_env(service, env):
    return {k: interpolate(str(v), env) for k, v in (service.get("environment") or {}).items()}


def test_hadolint_passes_the_daemon_dockerfile():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), f"no hadolint next to {sys.executable} (use the hadolint venv)"
    run([hadolint, DAEMON_DOCKERFILE])


def test_both_dockerfiles_label_the_workspace_version():
    version = workspace_version()
    for path in ("Dockerfile", DAEMON_DOCKERFILE):
        text = (REPO / path).read_text()
        found = re.findall(r'org\.opencontainers\.image\.version="([^"]*)"', text)
        assert found == [version], f"{path}: org.opencontainers.image.version {found} != {version}"


@pytest.fixture(scope="module")
def daemon_binary(host_binary):
    # host_binary has built the workspace's binaries; the daemon's is stripped the same way.
    built = REPO / "target" / "debug" / DAEMON
    assert built.is_file()
    binary = REPO / "target" / "image-test" / DAEMON
    run(["strip", "-o", binary, built])
    return binary


@pytest.fixture(scope="module")
def daemon_image(podman_env, daemon_binary):
    env, base = podman_env
    tag = f"localhost/{DAEMON_REPOSITORY}:image-test-{os.getpid()}"
    run(
        [
            # The docker format keeps HEALTHCHECK (OCI image configs have no field for it).
            "podman", "build", "--format", "docker", "--network=none",
            "-f", DAEMON_DOCKERFILE, "--target", "prebuilt",
            "--build-arg", f"BASE={base}", "--build-arg", f"CERTS_IMAGE={base}",
            "--build-arg", f"BINARY=target/image-test/{DAEMON}",
            "-t", tag, ".",
        ],
        env=env,
        timeout=600,
    )
    yield tag
    run(["podman", "rmi", "--force", tag], env=env, check=False)


def inspect(env, tag):
    return json.loads(run(["podman", "image", "inspect", tag], env=env).stdout)[0]


def test_daemon_image_config(podman_env, daemon_image):
    env, _ = podman_env
    info = inspect(env, daemon_image)
    config = info["Config"]
    assert config["Entrypoint"] == [DAEMON_IN_IMAGE]
    assert config["Cmd"] == ["serve", "--root", "/data", "--bind", "0.0.0.0:7400"]
    assert "7400/tcp" in (config.get("ExposedPorts") or {})
    labels = config.get("Labels") or {}
    assert labels.get("org.opencontainers.image.version") == workspace_version()
    uid = config.get("User", "").split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"the image must run as a numeric non-root user, not {config.get('User')!r}"
    health = info.get("Healthcheck") or {}
    assert health.get("Test", [None])[0] == "CMD" and "/healthz" in " ".join(health["Test"]), health
    envs = dict(e.split("=", 1) for e in config.get("Env", []))
    assert envs.get("DEEPLAKE_HEALTHCHECK_PORT") == "7400"

    # The binary inside is this workspace's, and runs as that user with /data writable.
    proc = run(["podman", "run", "--rm", "--network=none", daemon_image, "--version"], env=env)
    assert proc.stdout.strip() == f"deeplake {workspace_version()}"
    probe = "touch /data/probe && id -u && test -s /etc/ssl/certs/ca-certificates.crt"
    proc = run(["podman", "run", "--rm", "--network=none", "--entrypoint", "bash", daemon_image, "-c", probe], env=env)
    assert proc.stdout.strip() == uid


def test_compose_file_agrees_with_the_images_and_the_store():
    c = compose()
    services = c["services"]
    assert set(services) == {"s3", "daemon", "connector"}
    version = workspace_version()
    data = metadata()["data"]

    # Every image compose names but the store's is one this test (or test_image.py) builds.
    daemon, connector, s3 = services["daemon"], services["connector"], services["s3"]
    assert daemon["image"] == f"{DAEMON_REPOSITORY}:{version}"
    assert daemon["build"] == {"context": ".", "dockerfile": DAEMON_DOCKERFILE}
    assert connector["image"] == f"{data['dockerRepository']}:{data['dockerImageTag']}"
    assert connector["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    assert "build" not in s3 and s3["image"].split("/")[-1].startswith("seaweedfs:")
    # Airbyte runs the connector per command: it is not started by `up`.
    assert connector.get("profiles") == ["connector"]
    assert "profiles" not in daemon and "profiles" not in s3

    # The store: SeaweedFS's all-in-one server with a bucket made at startup.
    args = dict(a.lstrip("-").split("=", 1) for a in s3["command"][1:])
    assert s3["command"][0] == "mini"
    s3_port = args["s3.port"]
    assert s3["ports"] == [f"127.0.0.1:{s3_port}:{s3_port}"]
    bucket = args["bucket"]

    # The daemon and the connector reach it with the variables core reads (the ones the
    # test suite's S3 server needs, scripts/s3.sh env), with the store's own keys.
    user_env = {}  # as a user with nothing exported but the required token list
    store_env = resolved_env(s3, user_env)
    for name, svc in (("daemon", daemon), ("connector", connector)):
        if name == "daemon":
            with pytest.raises(KeyError, match="DEEPLAKE_TOKENS"):
                resolved_env(svc, user_env)
            svc_env = resolved_env(svc, {"DEEPLAKE_TOKENS": "[]"})
        else:
            svc_env = resolved_env(svc, user_env)
        missing = [k for k in S3_ENV_KEYS if not svc_env.get(k)]
        assert not missing, f"{name}: no {missing}"
        assert svc_env["AWS_ENDPOINT"] == f"http://s3:{s3_port}", name
        assert svc_env["AWS_ALLOW_HTTP"] == "true", name
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert svc_env[k] == store_env[k], f"{name}: {k} differs from the store's"
    # Overriding the keys moves all three together.
    custom = {"S3_ACCESS_KEY_ID": "k2", "S3_SECRET_ACCESS_KEY": "s2", "DEEPLAKE_TOKENS": "[]"}
    assert {resolved_env(services[n], custom)["AWS_ACCESS_KEY_ID"] for n in services} == {"k2"}

    # The daemon serves the folder the connector writes, on the port its health check asks.
    cmd = daemon["command"]
    assert cmd[0] == "serve"
    root = cmd[cmd.index("--root") + 1]
    bind = cmd[cmd.index("--bind") + 1]
    assert root.startswith(f"s3://{bucket}/"), root
    assert daemon["ports"] == [f"127.0.0.1:{bind.rsplit(':', 1)[1]}:{bind.rsplit(':', 1)[1]}"]
    assert bind.rsplit(":", 1)[1] == "7400"  # DEEPLAKE_HEALTHCHECK_PORT's default in the image
    mounts = [v.split(":") for v in connector["volumes"]]
    assert mounts == [["./compose", "/config", "ro"]]
    config = json.loads((REPO / "compose" / "config.json").read_text())
    assert config["destination"]["path"].rstrip("/") == root.rstrip("/")
    assert "s3" not in config["destination"], "keys belong in the environment, not the config file"


# ---- the stack, with the host's test S3 server as the store ---------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_s3_env():
    missing = [k for k in S3_ENV_KEYS + ("DEEPLAKE_TEST_S3_BUCKET",) if not os.environ.get(k)]
    assert not missing, f"{missing} unset: eval \"$(bash scripts/s3.sh env)\" (the test S3 server)"
    return {k: os.environ[k] for k in S3_ENV_KEYS}


def env_args(env):
    out = []
    for k, v in env.items():
        out += ["-e", f"{k}={v}"]
    return out


def http(method, url, *, token=None, body=None):
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


RECORDS = 30


def test_the_stack_writes_serves_and_answers_a_query(podman_env, image, daemon_image, tmp_path):
    env, _ = podman_env
    s3 = host_s3_env()
    bucket = os.environ["DEEPLAKE_TEST_S3_BUCKET"]
    root = f"s3://{bucket}/image-test/{uuid.uuid4().hex}"

    # The connector, as compose runs it: its environment, the config mounted at /config,
    # and the destination path of compose/config.json moved to this run's prefix.
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"destination": {"path": root}}))
    gen = AIRBYTE_HARNESS / "gen_messages.py"
    assert gen.is_file(), f"{gen} not found (the shared Airbyte harness beside the repository)"
    input_file = tmp_path / "messages.jsonl"
    run([
        sys.executable, gen, "--records", RECORDS, "--streams", "images", "--state-every", 10,
        "--platform-ids", "--complete-status", "--out", input_file,
        "--catalog-out", config_dir / "catalog.json",
    ])
    connector = ["podman", "run", "--rm", "-i", "--network=host", *env_args(s3),
                 "-v", f"{config_dir}:/config:ro", image]

    proc = run(connector + ["check", "--config", "/config/config.json"], env=env)
    status = [m for m in messages(proc.stdout) if m["type"] == "CONNECTION_STATUS"]
    assert [m["connectionStatus"]["status"] for m in status] == ["SUCCEEDED"], proc.stdout
    with open(input_file) as stdin:
        proc = run(connector + ["write", "--config", "/config/config.json", "--catalog", "/config/catalog.json"],
                   env=env, stdin=stdin)
    out = messages(proc.stdout)
    errors = [m for m in out if m["type"] == "TRACE" and m["trace"].get("type") == "ERROR"]
    assert not errors and any(m["type"] == "STATE" for m in out), proc.stdout

    # The daemon, as compose runs it but on loopback (tests listen on 127.0.0.1 only),
    # with a token as compose requires.
    token = secrets.token_hex(16)
    tokens = json.dumps([{"sha256": hashlib.sha256(token.encode()).hexdigest(), "scope": "admin"}])
    port = free_port()
    name = f"deeplake-image-test-{os.getpid()}-{port}"
    run(["podman", "run", "-d", "--name", name, "--network=host", *env_args(s3),
         "-e", f"DEEPLAKE_TOKENS={tokens}", "-e", f"DEEPLAKE_HEALTHCHECK_PORT={port}",
         daemon_image, "serve", "--root", root, "--bind", f"127.0.0.1:{port}"], env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", f"{base}/healthz") == (200, {"status": "ok"}):
                    break
            except OSError:
                pass
            state = run(["podman", "inspect", "--format", "{{.State.Running}}", name], env=env).stdout.strip()
            if state != "true" or time.monotonic() > deadline:
                logs = run(["podman", "logs", name], env=env, check=False)
                pytest.fail(f"the daemon did not answer /healthz (running: {state})\n{logs.stdout}\n{logs.stderr}")
            time.sleep(0.2)

        # The image's own health check passes now; the same check against a port
        # nothing listens on fails, so it is a real probe.
        assert run(["podman", "healthcheck", "run", name], env=env, check=False).returncode == 0
        closed = free_port()
        probe = run(["podman", "exec", "-e", f"DEEPLAKE_HEALTHCHECK_PORT={closed}", name,
                     *inspect(env, daemon_image)["Healthcheck"]["Test"][1:]], env=env, check=False)
        assert probe.returncode != 0, "the health check passed against a closed port"

        assert http("GET", f"{base}/datasets")[0] == 401
        assert http("GET", f"{base}/datasets", token="not-" + token)[0] == 401
        code, listing = http("GET", f"{base}/datasets", token=token)
        assert code == 200, listing
        names = [d if isinstance(d, str) else d.get("name") for d in listing["datasets"]]
        images = [n for n in names if "images" in n]
        assert len(images) == 1, listing

        sent = [json.loads(line) for line in input_file.read_text().splitlines()]
        records = [m["record"]["data"] for m in sent if m["type"] == "RECORD"]
        assert len(records) == RECORDS
        want = sorted(r["id"] for r in records if r["label"] == 3)
        assert want
        code, page = http("POST", f"{base}/datasets/{images[0]}/query?format=json", token=token,
                          body={"query": "SELECT * WHERE label == 3"})
        assert code == 200, page
        # A sample as JSON: {"data": [...], "dtype", "shape"}.
        got = sorted(v for r in page["rows"] for v in r["id"]["data"])
        assert page["total"] == len(want) and got == want, page

        # Cleaning up goes through the API too.
        code, body = http("DELETE", f"{base}/datasets/{images[0]}", token=token)
        assert code in (200, 204), body
        assert http("GET", f"{base}/datasets/{images[0]}", token=token)[0] == 404
    finally:
        run(["podman", "stop", "-t", "10", name], env=env, check=False)
        run(["podman", "rm", "-f", name], env=env, check=False)
