"""The client's retries of reads answered 503 + Retry-After, against a real HTTP server
on 127.0.0.1 that fails a set number of times before it answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deeplake_rs._http import DaemonError, Endpoint


class Flaky:
    """A server answering 503 (kind storage) to the first ``fail`` requests, then 200."""

    def __init__(self, fail: int, retry_after: str | None = "0") -> None:
        self.fail, self.retry_after, self.seen = fail, retry_after, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                outer.seen.append((self.command, self.path))
                if len(outer.seen) <= outer.fail:
                    body = json.dumps({"error": {"kind": "storage", "message": "storage is unavailable: slow down"}})
                    self.send_response(503)
                    if outer.retry_after is not None:
                        self.send_header("Retry-After", outer.retry_after)
                else:
                    body = json.dumps({"ok": True, "path": self.path})
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:  # noqa: D102 - quiet test server
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def flaky():
    servers = []

    def make(fail: int, retry_after: str | None = "0") -> Flaky:
        s = Flaky(fail, retry_after)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def test_a_read_is_retried_after_503_until_it_succeeds(flaky):
    s = flaky(2)
    assert Endpoint(s.base).json("GET", "/datasets/d") == {"ok": True, "path": "/datasets/d"}
    assert s.seen == [("GET", "/datasets/d")] * 3


def test_query_and_stream_routes_count_as_reads(flaky):
    s = flaky(1)
    assert Endpoint(s.base).json("POST", "/datasets/d/query", {"query": "SELECT *"})["ok"] is True
    assert [m for m, _ in s.seen] == ["POST", "POST"]
    s2 = flaky(1)
    with Endpoint(s2.base).stream("/datasets/d/stream", {"batch_size": 2}) as body:
        assert json.loads(body.read())["ok"] is True
    assert len(s2.seen) == 2


def test_a_write_is_not_retried(flaky):
    s = flaky(1)
    with pytest.raises(DaemonError) as e:
        Endpoint(s.base).json("POST", "/datasets/d/append", {"rows": []})
    assert e.value.status == 503 and e.value.kind == "storage"
    assert "slow down" in e.value.message
    assert s.seen == [("POST", "/datasets/d/append")]


def test_retries_are_bounded_and_the_last_error_is_raised(flaky):
    s = flaky(100)
    with pytest.raises(DaemonError) as e:
        Endpoint(s.base).json("GET", "/datasets")
    assert e.value.status == 503
    assert len(s.seen) == Endpoint.RETRIES + 1


def test_a_503_without_retry_after_is_not_retried(flaky):
    s = flaky(1, retry_after=None)
    with pytest.raises(DaemonError):
        Endpoint(s.base).json("GET", "/datasets")
    assert len(s.seen) == 1
