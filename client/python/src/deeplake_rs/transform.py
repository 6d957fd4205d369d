"""Transforms: user functions over samples, run in parallel, landing as one commit.

    @deeplake_rs.compute
    def resize(sample_in, samples_out, size=128):
        samples_out.append({"images": small(sample_in["images"], size), "labels": ...})

    resize(size=64).eval(data_in, ds_out, num_workers=4, scheduler="processed")
    deeplake_rs.compose([decode(), resize(size=64)]).eval(data_in, ds_out)

``data_in`` is any sequence or iterable (file paths, records, ...) or a
:class:`deeplake_rs.Dataset` (each worker then streams its own rows from the daemon).
``ds_out`` is a :class:`deeplake_rs.Dataset` whose tensors exist. The input is cut into
numbered parts; each worker (a thread, a process, a Ray task, or the caller for
``serial``) runs the functions over its part and sends the output rows to the daemon
itself, as an Arrow IPC stream. The daemon's one writer appends the parts in order on a
staging branch and, when all arrived, makes them one commit of ``ds_out``'s branch
with the lineage (function names, source and its commit). Until then readers see the
previous commit; a run killed midway is resumed by running it again (the daemon says
which parts are durable); a function that raises fails the run with
:class:`TransformError` naming the function and the sample, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from ._http import DaemonError, Endpoint

ARROW = "application/vnd.apache.arrow.stream"
SCHEDULERS = ("serial", "threaded", "processed", "ray")


class TransformError(Exception):
    """A user function failed on one input sample (the message names both)."""


class Row(dict):
    """A sample between functions: a dict of tensor name -> value, also read as
    attributes (``row.images``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Column:
    def __init__(self, out: "SamplesOut", name: str) -> None:
        self._out, self._name = out, name

    def append(self, value: Any) -> None:
        self._out._cols.setdefault(self._name, []).append(value)

    def extend(self, values: Iterable[Any]) -> None:
        for v in values:
            self.append(v)


class SamplesOut:
    """Where a function puts its outputs: ``samples_out.append({...})`` per row, or
    ``samples_out.<tensor>.append(value)`` per tensor (as deeplake's)."""

    def __init__(self) -> None:
        self._rows: List[Row] = []
        self._cols: Dict[str, List[Any]] = {}

    def append(self, row: Dict[str, Any]) -> None:
        self._rows.append(Row(row))

    def __getattr__(self, name: str) -> _Column:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Column(self, name)

    def _finish(self) -> List[Row]:
        if self._cols:
            lens = {k: len(v) for k, v in self._cols.items()}
            if len(set(lens.values())) != 1:
                raise ValueError(f"tensors got different numbers of samples: {lens}")
            n = next(iter(lens.values()))
            self._rows.extend(Row({k: v[i] for k, v in self._cols.items()}) for i in range(n))
            self._cols = {}
        return self._rows


class ComputeFunction:
    """A decorated function with its extra arguments bound: one stage."""

    def __init__(self, func: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> None:
        self.func, self.args, self.kwargs = func, args, kwargs
        self.name = getattr(func, "__name__", "function")

    def __repr__(self) -> str:
        return f"{self.name}(*{self.args!r}, **{self.kwargs!r})"

    def __getstate__(self) -> Dict[str, Any]:
        # The decorator puts its binder where the function was, so pickle's lookup by
        # name finds the binder: ship the name and find the function through it.
        state = dict(self.__dict__)
        mod = sys.modules.get(getattr(self.func, "__module__", ""), None)
        bound = getattr(mod, getattr(self.func, "__qualname__", ""), None) if mod else None
        if getattr(bound, "__wrapped__", None) is self.func:
            state["func"] = ("__by_name__", self.func.__module__, self.func.__qualname__)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        f = state.get("func")
        if isinstance(f, tuple) and len(f) == 3 and f[0] == "__by_name__":
            import importlib

            state["func"] = getattr(importlib.import_module(f[1]), f[2]).__wrapped__
        self.__dict__.update(state)

    def eval(self, data_in: Any, ds_out: Any, **kwargs: Any) -> Dict[str, Any]:
        """Runs this function alone; see :meth:`Pipeline.eval`."""
        return Pipeline([self]).eval(data_in, ds_out, **kwargs)


def compute(func: Callable[..., Any]) -> Callable[..., ComputeFunction]:
    """Decorates ``func(sample_in, samples_out, *args, **kwargs)``; calling the result
    with the extra arguments gives a stage with ``.eval(...)``."""

    def bind(*args: Any, **kwargs: Any) -> ComputeFunction:
        return ComputeFunction(func, args, kwargs)

    bind.__name__ = getattr(func, "__name__", "compute")
    bind.__doc__ = func.__doc__
    bind.__wrapped__ = func  # type: ignore[attr-defined]
    return bind


def compose(stages: Sequence[ComputeFunction]) -> "Pipeline":
    """Stacks stages: each output row of one is an input sample of the next."""
    return Pipeline(list(stages))


def run_stages(stages: Sequence[ComputeFunction], sample: Any, index: int) -> List[Row]:
    """Every stage over one input sample; ``index`` names it in errors."""
    rows: List[Any] = [sample]
    for st in stages:
        out: List[Row] = []
        for r in rows:
            so = SamplesOut()
            try:
                st.func(r, so, *st.args, **st.kwargs)
                out.extend(so._finish())
            except Exception as e:  # noqa: BLE001 (any failure of user code)
                raise TransformError(
                    f"transform function {st.name!r} failed on sample {index}: {type(e).__name__}: {e}"
                ) from None
        rows = out
    return rows


# The daemon's JPEG quality for arrays it encodes itself (core's JPEG_QUALITY).
JPEG_QUALITY = 75


def _encode_images(values: List[Any], compression: Optional[str]) -> Optional[List[Optional[bytes]]]:
    """Images encoded here, in the worker, when the tensor stores jpeg or png and Pillow
    is installed: the part is then a tenth of the size and the daemon stores the bytes
    as they are. None: send the arrays (the daemon encodes them)."""
    if compression not in ("jpeg", "png"):
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    out: List[Optional[bytes]] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        a = np.asarray(v)
        if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
            return None
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        if compression == "jpeg" and a.ndim == 3 and a.shape[2] == 4:
            return None
        import io

        buf = io.BytesIO()
        img = Image.fromarray(np.ascontiguousarray(a))
        if compression == "jpeg":
            img.save(buf, format="JPEG", quality=JPEG_QUALITY)
        else:
            img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _column(values: List[Any], spec: Dict[str, Any]) -> Tuple[pa.Array, Optional[pa.Array]]:
    """One tensor's values as an Arrow column (+ its shape column), in the daemon's
    append mapping."""
    htype = spec.get("htype") or "generic"
    dtype = spec.get("dtype")
    if htype in ("text",):
        return pa.array([None if v is None else str(v) for v in values], pa.string()), None
    if htype in ("json", "list", "tag"):
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string()), None
    if any(isinstance(v, (bytes, bytearray)) for v in values):
        return pa.array([None if v is None else bytes(v) for v in values], pa.binary()), None
    encoded = _encode_images(values, spec.get("sample_compression"))
    if encoded is not None:
        return pa.array(encoded, pa.binary()), None
    arrs = [None if v is None else np.asarray(v, dtype=dtype) for v in values]
    if all(a is None or a.ndim == 0 for a in arrs) and any(a is not None for a in arrs):
        dt = next(a.dtype for a in arrs if a is not None)
        return pa.array([None if a is None else a.item() for a in arrs], pa.from_numpy_dtype(dt)), None
    present = [a for a in arrs if a is not None]
    dt = present[0].dtype if present else np.dtype(dtype or "float64")
    offsets = [0]
    flat = []
    for a in arrs:
        if a is not None:
            flat.append(np.ascontiguousarray(a, dtype=dt).ravel())
            offsets.append(offsets[-1] + a.size)
        else:
            offsets.append(offsets[-1])
    values_arr = pa.array(np.concatenate(flat) if flat else np.zeros(0, dt))
    mask = pa.array([a is None for a in arrs])
    col = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values_arr, mask=mask)
    shapes = pa.array([None if a is None else [int(d) for d in a.shape] for a in arrs], pa.list_(pa.uint32()))
    return col, shapes


def encode_rows(rows: List[Dict[str, Any]], specs: Dict[str, Dict[str, Any]]) -> bytes:
    """Output rows as an Arrow IPC stream for the daemon (empty bytes: no rows)."""
    if not rows:
        return b""
    names: List[str] = []
    arrays: List[pa.Array] = []
    for t in sorted({k for r in rows for k in r}):
        if t not in specs:
            raise TransformError(f"an output row names tensor {t!r}, which the dataset lacks")
        col, shapes = _column([r.get(t) for r in rows], specs[t])
        names.append(t)
        arrays.append(col)
        if shapes is not None:
            names.append(t + ".shape")
            arrays.append(shapes)
    batch = pa.RecordBatch.from_arrays(arrays, names=names)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _dataset_rows(ctx: Dict[str, Any], start: int, end: int) -> List[Row]:
    """Rows start..end of the input dataset, streamed from its daemon."""
    from .dataset import Dataset

    src = Dataset(ctx["source_url"], token=ctx["token"])
    rows: List[Row] = []
    for b in src.numpy(rows=list(range(start, end)), batch_size=max(1, end - start), ragged="pad", ref=ctx.get("source_ref")):
        n = len(b["__row"]) if "__row" in b else 0
        for i in range(n):
            r = Row()
            for k, v in b.items():
                if k.startswith("__") or k.endswith(".shape"):
                    continue
                val = v[i]
                shapes = b.get(k + ".shape")
                if shapes is not None and isinstance(val, np.ndarray):
                    val = val[tuple(slice(0, int(d)) for d in shapes[i])]
                r[k] = val
            rows.append(r)
    return rows


def run_part(ctx: Dict[str, Any], index: int, start: int, items: Optional[List[Any]]) -> int:
    """One worker's part: inputs -> functions -> rows sent to the daemon. Returns the
    output rows sent. ``items`` None: read rows start.. of the input dataset."""
    if items is None:
        inputs: List[Any] = _dataset_rows(ctx, start, start + ctx["part_len"][index])
    else:
        inputs = items
    rows: List[Row] = []
    for k, item in enumerate(inputs):
        rows.extend(run_stages(ctx["stages"], item, start + k))
    body = encode_rows(rows, ctx["specs"])
    path = ctx["path"] + f"/parts/{index}?input_rows={len(inputs)}"
    Endpoint(ctx["base"], ctx["token"], ctx["timeout"]).post_bytes(path, body, ARROW)
    return len(rows)


def _run_part_star(a: Tuple[Any, ...]) -> int:
    return run_part(*a)


class _Progress:
    """A bar on a terminal (stderr), nothing otherwise (the daemon's job has progress)."""

    def __init__(self, total: int, done: int, show: bool) -> None:
        self.total, self.done = total, done
        self.show = show and sys.stderr.isatty()
        self.t0 = time.time()

    def step(self) -> None:
        self.done += 1
        if self.show:
            w = 30
            f = self.done / max(1, self.total)
            rate = self.done / max(1e-9, time.time() - self.t0)
            sys.stderr.write(f"\rtransform [{'#' * int(f * w):<{w}}] {self.done}/{self.total} parts ({rate:.1f}/s)")
            sys.stderr.flush()

    def close(self) -> None:
        if self.show:
            sys.stderr.write("\n")


class Pipeline:
    """Stages run one after the other on every input sample."""

    def __init__(self, stages: List[ComputeFunction]) -> None:
        if not stages:
            raise ValueError("a pipeline needs at least one function")
        self.stages = stages

    def __repr__(self) -> str:
        return f"compose({self.stages!r})"

    def eval(
        self,
        data_in: Any,
        ds_out: Any,
        num_workers: int = 0,
        scheduler: str = "threaded",
        batch_size: Optional[int] = None,
        job: Optional[str] = None,
        branch: Optional[str] = None,
        progressbar: bool = True,
        timeout: float = 600.0,
    ) -> Dict[str, Any]:
        """Runs the pipeline over ``data_in`` into ``ds_out`` (module docs) and returns
        the daemon's result: ``commit``, ``input_rows``, ``output_rows``, ``parts``,
        ``fast_forward``. ``num_workers`` 0 means one per core (serial ignores it);
        ``batch_size`` is the input samples per part; ``job`` names the run (default:
        derived from the functions, the input and the target, so that running the same
        call again resumes it)."""
        from .dataset import Dataset

        if scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler {scheduler!r}: use one of {', '.join(SCHEDULERS)}")
        if not isinstance(ds_out, Dataset):
            raise TypeError("ds_out must be a deeplake_rs.Dataset (a daemon URL)")
        workers = num_workers or os.cpu_count() or 1
        ep = ds_out.endpoints[0]
        info = ep.json("GET", ds_out._path + ("?" + urllib.parse.urlencode({"ref": branch}) if branch else ""))
        specs = {t["name"]: t for t in info["tensors"]}
        if isinstance(data_in, Dataset):
            src_info = data_in.info()
            n = int(src_info["length"])
            items: Optional[List[Any]] = None
            source = data_in.name
            source_commit = src_info.get("commit")
            source_url = data_in.endpoints[0].base + data_in._path
        else:
            items = list(data_in)
            n = len(items)
            source, source_commit, source_url = None, None, None
        size = batch_size or max(1, min(64, math.ceil(n / (workers * 4)) if n else 1))
        bounds = [(s, min(n, s + size)) for s in range(0, n, size)]
        names = [repr(s) for s in self.stages]
        if job is None:
            h = hashlib.sha1()
            ident = [names, n, ds_out.name, branch, size, source, source_commit]
            if items is not None:
                ident += [repr(items[:3]), repr(items[-3:])]
            h.update(json.dumps(ident, default=str).encode())
            job = "py-" + h.hexdigest()[:20]
        path = ds_out._path + "/transforms/" + urllib.parse.quote(job, safe="")
        begun = ep.json(
            "POST",
            ds_out._path + "/transforms",
            {
                "job": job,
                "functions": [s.name for s in self.stages],
                "branch": branch,
                "source": source,
                "source_commit": source_commit,
                "parts": len(bounds),
            },
        )
        done = int(begun["parts_done"])
        ctx = {
            "stages": self.stages,
            "specs": specs,
            "base": ep.base,
            "token": ep.token,
            "timeout": timeout,
            "path": path,
            "source_url": source_url,
            "source_ref": source_commit,
            "part_len": [b - a for a, b in bounds],
        }
        tasks = [
            (ctx, i, a, None if items is None else items[a:b]) for i, (a, b) in enumerate(bounds) if i >= done
        ]
        progress = _Progress(len(bounds), done, progressbar)
        try:
            self._run(tasks, scheduler, workers, progress)
        except BaseException:
            # Nothing of a failed run may become visible: its staging branch goes.
            try:
                ep.json("DELETE", path)
                _wait_job(ep, begun["job_id"], timeout)
            except (DaemonError, ConnectionError, TimeoutError):
                pass
            raise
        finally:
            progress.close()
        ep.json("POST", path + "/commit", {"parts": len(bounds)})
        result = _wait_job(ep, begun["job_id"], timeout)
        result["job"] = job
        result["resumed_parts"] = done
        return result

    def _run(self, tasks: List[Tuple[Any, ...]], scheduler: str, workers: int, progress: _Progress) -> None:
        if scheduler == "serial" or not tasks:
            for t in tasks:
                run_part(*t)
                progress.step()
        elif scheduler == "threaded":
            from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

            with ThreadPoolExecutor(max_workers=workers) as pool:
                futs = [pool.submit(run_part, *t) for t in tasks]
                pending = set(futs)
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for f in finished:
                        f.result()
                        progress.step()
        elif scheduler == "processed":
            import multiprocessing as mp

            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            with mp.get_context(method).Pool(workers) as pool:
                for _ in pool.imap_unordered(_run_part_star, tasks):
                    progress.step()
        else:
            import ray

            if not ray.is_initialized():
                ray.init(num_cpus=workers)
            remote = ray.remote(run_part)
            refs = [remote.remote(*t) for t in tasks]
            try:
                while refs:
                    ready, refs = ray.wait(refs, num_returns=1)
                    try:
                        ray.get(ready[0])
                    except ray.exceptions.RayTaskError as e:
                        cause = e.as_instanceof_cause()
                        raise (cause if isinstance(cause, TransformError) else TransformError(str(e))) from None
                    progress.step()
            finally:
                for r in refs:
                    ray.cancel(r, force=True)


def _wait_job(ep: Endpoint, job_id: str, timeout: float) -> Dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        j = ep.json("GET", "/jobs/" + urllib.parse.quote(job_id, safe=""))
        if j["state"] == "succeeded":
            return dict(j.get("result") or {})
        if j["state"] in ("failed", "cancelled"):
            err = j.get("error") or {}
            raise DaemonError(500 if j["state"] == "failed" else 409, err.get("kind", j["state"]),
                              err.get("message", f"the transform job was {j['state']}"))
        if time.time() > deadline:
            raise TimeoutError(f"the transform job {job_id} did not finish in {timeout} s")
        time.sleep(0.05)
