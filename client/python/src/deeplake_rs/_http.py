"""HTTP calls to a deeplake daemon, with the daemon's errors raised as DaemonError.

A daemon answers 503 (or 429) with ``Retry-After`` when its storage failed for a while
(S3 throttling, a dropped connection). Reads (GET, and the query and stream routes,
which write nothing) are retried after the advised delay, a few times within a
bounded wait; writes are not, since their effect may have landed before the failure.

Only the standard library: the client's sole dependencies are numpy and pyarrow.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, BinaryIO, Optional


class DaemonError(Exception):
    """An error answered by a daemon: its HTTP status, error kind and message."""

    def __init__(self, status: int, kind: str, message: str, url: str = "") -> None:
        super().__init__(f"{message} (HTTP {status}, {kind}{', ' + url if url else ''})")
        self.status = status
        self.kind = kind
        self.message = message
        self.url = url


class StreamError(Exception):
    """A stream that ended before the rows its daemon announced had arrived."""


class Endpoint:
    """One daemon: its base address (``http://host:port``) and an optional token."""

    #: Retries of a read answered 503/429, and the most seconds one wait may take.
    RETRIES = 4
    MAX_WAIT_S = 10.0

    def __init__(self, base: str, token: Optional[str] = None, timeout: float = 300.0) -> None:
        parsed = urllib.parse.urlparse(base)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"daemon address {base!r}: expected http(s)://host:port")
        self.base = f"{parsed.scheme}://{parsed.netloc}"
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Endpoint({self.base!r})"

    def _request(self, method: str, path: str, body: Any = None) -> urllib.request.Request:
        data = None
        headers = {"Accept": "application/json, application/vnd.apache.arrow.stream"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return urllib.request.Request(self.base + path, data=data, headers=headers, method=method)

    def _open(self, req: urllib.request.Request) -> BinaryIO:
        path = urllib.parse.urlparse(req.full_url).path
        reads = req.get_method() == "GET" or path.endswith(("/query", "/stream"))
        attempt = 0
        while True:
            try:
                return urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310 (http(s) only)
            except urllib.error.HTTPError as e:
                wait = _retry_after(e)
                if reads and e.code in (429, 503) and attempt < self.RETRIES and wait is not None:
                    e.close()
                    attempt += 1
                    time.sleep(min(wait, self.MAX_WAIT_S))
                    continue
                raise _daemon_error(e, req.full_url) from None
            except urllib.error.URLError as e:
                raise ConnectionError(f"cannot reach the daemon at {self.base}: {e.reason}") from None

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """Calls a JSON route and returns the decoded answer."""
        with self._open(self._request(method, path, body)) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def post_bytes(self, path: str, data: bytes, content_type: str) -> Any:
        """POSTs raw bytes (an Arrow IPC stream, say) and returns the decoded JSON answer."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method="POST")
        with self._open(req) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def stream(self, path: str, body: Any) -> BinaryIO:
        """Opens a streaming route; the caller reads (and closes) the body."""
        return self._open(self._request("POST", path, body))


def _daemon_error(e: urllib.error.HTTPError, url: str) -> DaemonError:
    try:
        payload = json.loads(e.read() or b"{}")
        err = payload.get("error", {})
        return DaemonError(e.code, err.get("kind", "http"), err.get("message", str(e)), url)
    except (ValueError, AttributeError):
        return DaemonError(e.code, "http", str(e), url)


def _retry_after(e: urllib.error.HTTPError) -> Optional[float]:
    """The delay a 503/429 advises (``Retry-After`` in seconds), or None if it gives none."""
    value = e.headers.get("Retry-After") if e.headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
