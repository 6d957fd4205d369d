"""The Ray tests reuse the client tests' real daemons (../tests/conftest.py) and start
one local Ray instance (2 CPUs, no dashboard) for the session, shut down at the end."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

# The client tests' conftest, loaded under another name (this file is `conftest` too).
_spec = importlib.util.spec_from_file_location("client_conftest", TESTS / "conftest.py")
assert _spec is not None and _spec.loader is not None
_client = importlib.util.module_from_spec(_spec)
sys.modules["client_conftest"] = _client
_spec.loader.exec_module(_client)
REPO = _client.REPO
served = _client.served
url = _client.url


@pytest.fixture(scope="session")
def ray_local():
    import ray

    # Ray's workers are fresh processes: they find the client and the test helpers
    # through PYTHONPATH.
    path = os.pathsep.join([str(REPO / "client" / "python" / "src"), str(TESTS)])
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield ray
    finally:
        ray.shutdown()
