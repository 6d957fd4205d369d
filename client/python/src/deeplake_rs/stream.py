"""Batches from daemons' ``/stream`` routes as numpy arrays, fanned in from one or more
daemons, with the cursors that resume them.

Each daemon serves one part of the epoch (its own rank within the job), so the parts
are disjoint and together cover the view. Batches are taken from the daemons in turn,
each read ahead by a thread, so the order is the same on every run with the same seed.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, BinaryIO, Dict, Iterator, List, Optional

import numpy as np
import pyarrow as pa

from ._http import Endpoint, StreamError

Batch = Dict[str, Any]

_END = object()


def batch_to_numpy(rb: pa.RecordBatch) -> Batch:
    """A record batch of the stream wire form as a dict of numpy arrays, without copies
    where Arrow's layout allows.

    Array tensors become one ``(rows, *shape)`` array (rows of a smaller shape are
    zero-padded; ``"<t>.shape"`` gives each row's own shape), scalar tensors a 1-d
    array, text a list of str, json a list of values, stored bytes a list of bytes.
    """
    out: Batch = {}
    names = rb.schema.names
    n = rb.num_rows
    for i, name in enumerate(names):
        field = rb.schema.field(i)
        md = {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
        col = rb.column(i)
        if "deeplake.shape_of" in md:
            continue
        kind = md.get("deeplake.kind")
        if name == "__row":
            out[name] = col.to_numpy(zero_copy_only=True)
        elif name == "__cursor":
            out[name] = col.to_pylist()
        elif kind == "array":
            shapes = _shapes(rb.column(names.index(name + ".shape")), n)
            out[name + ".shape"] = shapes
            out[name] = _array(col, shapes, n)
        elif kind == "scalar":
            out[name] = col.to_numpy(zero_copy_only=col.null_count == 0)
        elif kind == "json":
            out[name] = [None if v is None else json.loads(v) for v in col.to_pylist()]
        elif kind == "binary":
            out[name] = col.to_pylist()
            if name + ".shape" in names:
                out[name + ".shape"] = _shapes(rb.column(names.index(name + ".shape")), n)
        else:
            out[name] = col.to_pylist()
    return out


def _shapes(col: pa.Array, n: int) -> np.ndarray:
    lens = np.diff(col.offsets.to_numpy()) if n else np.zeros(0, dtype=np.int32)
    ndim = int(lens.max()) if n else 0
    if n and (lens == ndim).all():
        return col.flatten().to_numpy(zero_copy_only=False).reshape(n, ndim).astype(np.int64)
    # Rows without a shape (empty samples) count as all zeros.
    shapes = np.zeros((n, ndim), dtype=np.int64)
    for r, s in enumerate(col.to_pylist()):
        if s:
            shapes[r, : len(s)] = s
    return shapes


def _array(col: pa.Array, shapes: np.ndarray, n: int) -> Any:
    if n == 0:
        return np.zeros((0,) * (1 + shapes.shape[1]), dtype=col.type.value_type.to_pandas_dtype())
    if col.null_count:
        # Empty samples: rows of their own shapes, as a list.
        return [None if v is None else np.asarray(v).reshape(s) for v, s in zip(col.to_pylist(), shapes)]
    full = tuple(int(d) for d in shapes.max(axis=0))
    values = col.flatten()
    zero_copy = values.null_count == 0 and not pa.types.is_boolean(values.type)
    flat = values.to_numpy(zero_copy_only=zero_copy)
    return flat.reshape((n,) + full)


class _PooledBody:
    """The file-like view of a stream's HTTP body that Arrow's reader reads from.

    Large reads (the batches' data) land in reused buffers instead of fresh ones: a
    fresh buffer of a few megabytes per batch costs a page fault, and the kernel's
    zeroing, for every 4 KiB of it, which is as much CPU as the copy out of the
    socket. A buffer is reused only once nothing views it any more (a buffer still
    viewed by a batch's arrays cannot be resized, which is how that is told), so
    arrays a caller keeps are never overwritten.
    """

    _LARGE = 64 << 10
    _KEEP = 8

    def __init__(self, resp: BinaryIO) -> None:
        self._resp = resp
        self._pool: List[bytearray] = []

    @staticmethod
    def _unviewed(buf: bytearray) -> bool:
        try:
            buf.append(0)
        except BufferError:
            return False
        buf.pop()
        return True

    def _take(self, n: int) -> bytearray:
        for buf in self._pool:
            if len(buf) >= n and self._unviewed(buf):
                return buf
        buf = bytearray(n)
        self._pool.append(buf)
        if len(self._pool) > self._KEEP:
            # Forget the oldest; its memory goes when the last view of it does.
            self._pool.pop(0)
        return buf

    def read(self, n: int = -1) -> Any:
        if n is None or n < self._LARGE:
            return self._resp.read(n)
        view = memoryview(self._take(n))[:n]
        got = 0
        while got < n:
            k = self._resp.readinto(view[got:])
            if not k:
                break
            got += k
        return view[:got]

    @property
    def closed(self) -> bool:
        return self._resp.closed

    def close(self) -> None:
        self._resp.close()


class _Source:
    """One daemon's part: reads its stream ahead on a thread into a small queue."""

    def __init__(self, endpoint: Endpoint, dataset: str, request: Dict[str, Any], ahead: int) -> None:
        self.endpoint = endpoint
        self.request = request
        self.path = f"/datasets/{dataset}/stream"
        self.cursor: Optional[str] = request.get("cursor")
        # Rows of this part yielded before this stream started (resumed from a cursor).
        self.offset = int(self.cursor.split(":")[1]) if self.cursor else 0
        self.rows_total: Optional[int] = None
        self.rows = 0
        self._q: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, ahead))
        self._stop = threading.Event()
        self._resp = endpoint.stream(self.path, request)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            reader = pa.ipc.open_stream(_PooledBody(self._resp))
            md = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
            self.rows_total = int(md.get("deeplake.rows_total", "-1"))
            while not self._stop.is_set():
                try:
                    rb = reader.read_next_batch()
                except StopIteration:
                    break
                self._put(rb)
            self._put(_END)
        except Exception as e:  # handed to the consumer's thread
            self._put(e)
        finally:
            self._resp.close()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next(self) -> Optional[pa.RecordBatch]:
        item = self._q.get()
        if item is _END:
            if self.rows_total is not None and 0 <= self.rows_total != self.rows:
                raise StreamError(
                    f"the stream from {self.endpoint.base} ended after {self.rows} of "
                    f"{self.rows_total} rows (see the daemon's log)"
                )
            return None
        if isinstance(item, Exception):
            raise StreamError(f"reading the stream from {self.endpoint.base} failed: {item}") from item
        self.rows += item.num_rows
        return item

    def close(self) -> None:
        self._stop.set()
        try:
            self._resp.close()
        except Exception:  # closing a half-read response may raise; nothing to recover
            pass
        # The reader must be gone before the caller moves on: a thread still inside
        # Arrow's reader when the interpreter exits is stopped there, and the C++ runtime
        # aborts the process ("terminate called without an active exception").
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)


class Stream:
    """One epoch of batches from one or more daemons (see the module docs).

    Iterate it for dicts of numpy arrays. ``state_dict()`` at any point, given back to a
    new stream as ``cursors``, resumes right after the last batch yielded.
    """

    def __init__(
        self,
        endpoints: List[Endpoint],
        dataset: str,
        request: Dict[str, Any],
        rank: int = 0,
        world_size: int = 1,
        cursors: Optional[List[Optional[str]]] = None,
        ahead: int = 2,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world size {world_size}")
        if cursors is not None and len(cursors) != len(endpoints):
            raise ValueError(
                f"{len(cursors)} cursors for {len(endpoints)} daemons: resume with the same daemons"
            )
        self.epoch = int(request.get("epoch", 0))
        self._sources: List[_Source] = []
        d = len(endpoints)
        try:
            for i, ep in enumerate(endpoints):
                req = dict(request)
                req["rank"] = rank * d + i
                req["world_size"] = world_size * d
                if cursors is not None and cursors[i] is not None:
                    req["cursor"] = cursors[i]
                self._sources.append(_Source(ep, dataset, req, ahead))
        except BaseException:
            self.close()
            raise
        self._live = list(range(d))

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        while self._live:
            # The part with the fewest rows yielded goes next (ties: the first daemon):
            # round-robin while batches are full, and the same choice after a resume,
            # since it depends only on the cursors.
            k = min(self._live, key=lambda i: (self._sources[i].offset, i))
            src = self._sources[k]
            rb = src.next()
            if rb is None:
                self._live.remove(k)
                continue
            batch = batch_to_numpy(rb)
            if batch["__cursor"]:
                src.cursor = batch["__cursor"][-1]
            src.offset += rb.num_rows
            return batch
        self.close()
        raise StopIteration

    @property
    def rows_total(self) -> int:
        """Rows this stream yields in all (known once every daemon answered)."""
        return sum(max(s.rows_total or 0, 0) for s in self._sources)

    def cursors(self) -> List[Optional[str]]:
        """Each daemon's cursor after the last batch yielded (None: not started)."""
        return [s.cursor for s in self._sources]

    def close(self) -> None:
        for s in self._sources:
            s.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
