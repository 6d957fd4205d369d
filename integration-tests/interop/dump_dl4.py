#!/usr/bin/env python3
"""Prints the canonical dump (README.md) of a 3.x dataset as deeplake 4.7.4 reads it.

    python dump_dl4.py PATH              dump to stdout
    python dump_dl4.py --to DIR PATH...  dump each PATH to DIR/<basename>.jsonl
                                         (DIR/<basename>.error if it cannot be read)

Runs in the deeplake 4.7.4 venv. It reads through `deeplake.query('SELECT * FROM
"file://PATH"')`, the route 4.x's own converter takes for 3.x datasets.

4.x is a second reader, not the reference, and some of its reads of 3.x data fail: a
cell can raise, hang, or abort the process (seen with empty link, list and tag samples).
So the cells are read by a worker process (this script with --worker) that reports one
cell at a time; the driver gives each cell a time limit, records a cell that hangs or
kills the worker as an error, and starts a new worker after it. A cell that 4.x cannot
read is written as {"__dl4_error__": KIND, "message": ...}.

Differences from the 3.x dump, normalized where reasonable:
* the meta line has, per column, only what 4.x tells: {"dl4_type": ..., "comparable": ...};
* rows run to the longest column; a column shorter than that reads as null there;
* empty samples often read as null (text, images, links);
* image-like cells become {"shape", "dtype", "data"} (4.x does not expose stored bytes);
* numbers inside json read as floats, and 0-d arrays are unwrapped;
* link columns read as the decoded target, not the stored path: "comparable": false;
* audio, video and point cloud samples (codecs 4.x does not know) read as the stored
  bytes, a scalar or the undecoded container bytes (padded with uninitialised memory):
  all three are presented as {"stored_sha256": ...} of `column.get_bytes(i)`, the blob
  as stored; decoded DICOM frames and NIfTI volumes come in a layout of 4.x's own,
  which is undone (see unmangle_medical).
"""

import argparse
import hashlib
import json
import math
import os
import re
import selectors
import subprocess
import sys
import tempfile
import traceback
import warnings

# Reading one cell takes milliseconds; a silent cell is a 4.x hang.
CELL_TIMEOUT_S = float(os.environ.get("DEEPLAKE_DL4_CELL_TIMEOUT_S", "8"))
OPEN_TIMEOUT_S = 60.0
MAX_WORKERS = 40


# ---------------------------------------------------------------------------
# Worker: reads cells with deeplake 4.x and streams them as JSON lines.
# ---------------------------------------------------------------------------


def kind_of(type_str):
    """Presentation of a column, from the text of its 4.x type."""
    t = type_str.strip()
    if t.startswith("kind=link"):
        return "link"
    if t.startswith("sequence["):
        return "sequence_image" if "kind=image" in t else "sequence"
    if t.startswith("kind=image"):
        return "image"
    if t.startswith("polygon"):
        return "polygon"
    return "plain"


def plain(value):
    import numpy as np

    if type(value).__name__ == "Dict" and hasattr(value, "keys"):  # 4.x's own mapping type
        return {str(k): plain(value[k]) for k in value.keys()}  # noqa: SIM118
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def blob(value):
    import numpy as np

    if value is None:
        return None
    arr = np.asarray(value)
    return {"shape": list(arr.shape), "dtype": str(arr.dtype), "data": plain(arr)}


# Container magics at the start of a sample that 4.x hands back undecoded as array data
# (mp4 `ftyp` box at offset 4; RIFF for avi; EBML for mkv).
UNDECODED_MAGICS = ((4, b"ftyp"), (0, b"RIFF"), (0, b"\x1a\x45\xdf\xa3"))


def column_ndim(type_str):
    """Number of dimensions of a 4.x `array(dtype=..., shape=(None, None))` type, or None."""
    m = re.search(r"shape=\(([^)]*)\)", type_str)
    if not type_str.startswith("array(") or m is None:
        return None
    return len([d for d in m.group(1).split(",") if d.strip()])


def stored(column, i):
    return {"stored_sha256": hashlib.sha256(column.get_bytes(i)).hexdigest()}


def undecoded(type_str, value):
    """Whether 4.x returned a sample of a codec it does not know instead of decoding it."""
    import numpy as np

    if isinstance(value, (bytes, bytearray)):
        return True
    ndim = column_ndim(type_str)
    if ndim is None or not isinstance(value, np.ndarray):
        return False
    if value.ndim == 0:
        return ndim > 0  # e.g. flac, las: 4.x logs "unknown compression" and gives a number
    head = np.ascontiguousarray(value).view(np.uint8).reshape(-1)[:8].tobytes()
    return any(head[at : at + len(magic)] == magic for at, magic in UNDECODED_MAGICS)


def items(value):
    """A sequence (or polygon set) cell: 4.x gives a list, or one stacked array."""
    if value is None:
        return None
    return [v for v in value]


def present_cell(kind, type_str, column, i):
    value = column[i]
    if value is None:
        return None
    if kind == "plain" and undecoded(type_str, value):
        return stored(column, i)
    if kind == "plain" and "compressione: " in type_str:
        value = unmangle_medical(type_str, value)
    return present(kind, value)


def unmangle_medical(type_str, value):
    """Undoes 4.7.4's layout of decoded medical images (checked against pydicom and
    nibabel on the fixtures): a NIfTI volume (X, Y, Z) comes as its transpose with a
    channel axis, (Z, Y, X, 1); a DICOM frame of R rows and C columns comes as the pixels
    in reverse row order of a (C, R, 1) reshape."""
    import numpy as np

    arr = np.asarray(value)
    if "compressione: nii" in type_str and arr.ndim >= 2 and arr.shape[-1] == 1:
        return arr[..., 0].T
    if "compressione: dcm" in type_str and arr.ndim == 3:
        return arr[::-1].reshape(arr.shape[1], arr.shape[0], arr.shape[2])
    return value


def present(kind, value):
    if kind in ("image", "link"):
        return blob(value)
    if kind == "sequence_image":
        seq = items(value)
        return None if seq is None else [blob(v) for v in seq]
    if kind in ("sequence", "polygon"):
        seq = items(value)
        return None if seq is None else [plain(v) for v in seq]
    return plain(value)


def emit(obj):
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def worker(path, start_col, start_row):
    warnings.simplefilter("ignore")
    import deeplake

    view = deeplake.query(f'SELECT * FROM "file://{os.path.abspath(path)}"')
    columns = [(c.name, str(c.dtype)) for c in view.schema.columns]
    emit({"columns": columns, "rows": len(view)})
    for c, (name, type_str) in enumerate(columns):
        if c < start_col:
            continue
        kind = kind_of(type_str)
        column = view[name]
        for i in range(start_row if c == start_col else 0, len(view)):
            emit({"begin": [c, i]})
            try:
                value = present_cell(kind, type_str, column, i)
                emit({"cell": [c, i], "value": value})
            except Exception as e:  # noqa: BLE001 (a read 4.x cannot do: record it, go on)
                emit({"cell": [c, i], "error": type(e).__name__, "message": str(e)[:300]})
    emit({"done": True})


# ---------------------------------------------------------------------------
# Driver: runs workers, survives their hangs and crashes, writes the dump.
# ---------------------------------------------------------------------------


class WorkerStopped(Exception):
    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


# 4.x prints this when a read fails on one of its internal threads, and then hangs.
HANG_MARKER = b"Unexpected error on main queue"
TICK_S = 0.25


def read_lines(proc, errfile, first_timeout, timeout):
    """Yields the worker's JSON lines. Raises WorkerStopped when it exits, stays silent
    longer than the timeout (first_timeout until its first line: import and open), or
    reports the internal error after which 4.x hangs."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    fd = proc.stdout.fileno()
    limit = first_timeout
    silent = 0.0
    try:
        while True:
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                limit, silent = timeout, 0.0
                yield json.loads(line)
            if not sel.select(TICK_S):
                silent += TICK_S
                errfile.seek(0)
                if HANG_MARKER in errfile.read():
                    raise WorkerStopped("internal error in 4.x")
                if silent >= limit:
                    raise WorkerStopped(f"no answer within {limit:.0f}s (hang)")
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise WorkerStopped("worker exited")
            buf += chunk
    finally:
        sel.close()


def stop(proc, errfile):
    """Ends the worker; returns the tail of what it wrote to stderr."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdout.close()
    errfile.seek(0)
    err = errfile.read().decode("utf-8", "replace")[-2000:]
    errfile.close()
    return err


def next_cell(cell, rows):
    c, i = cell
    return (c, i + 1) if i + 1 < rows else (c + 1, 0)


def collect(path):
    """Returns (columns, rows, cells) where cells maps (col, row) -> value or error dict."""
    cells = {}
    columns, rows = [], 0
    start = (0, 0)
    for _ in range(MAX_WORKERS):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", path, "--start", f"{start[0]},{start[1]}"]
        # stderr goes to a file: a pipe nobody reads could fill up and block the worker.
        errfile = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile)
        opened, current, last_done = False, None, None
        try:
            for msg in read_lines(proc, errfile, OPEN_TIMEOUT_S, CELL_TIMEOUT_S):
                if "columns" in msg:
                    opened, columns, rows = True, msg["columns"], msg["rows"]
                elif "begin" in msg:
                    current = tuple(msg["begin"])
                elif "cell" in msg:
                    key = tuple(msg["cell"])
                    if "error" in msg:
                        cells[key] = {"__dl4_error__": msg["error"], "message": msg["message"]}
                    else:
                        cells[key] = msg["value"]
                    current, last_done = None, key
                elif msg.get("done"):
                    stop(proc, errfile)
                    return columns, rows, cells
        except WorkerStopped as e:
            err = stop(proc, errfile)
            if current is not None:
                last_err = err.strip().splitlines()[-1] if err.strip() else ""
                cells[current] = {"__dl4_error__": "WorkerStopped", "message": f"{e.reason} {last_err}"[:300]}
                start = next_cell(current, rows)
            elif opened and last_done is not None:
                start = next_cell(last_done, rows)  # stopped between two cells
            else:
                raise RuntimeError(f"deeplake 4.x could not open {path}: {e.reason}\n{err}") from None
            if start[0] >= len(columns):
                return columns, rows, cells
        except BaseException:
            stop(proc, errfile)
            raise
    raise RuntimeError(f"deeplake 4.x kept failing on {path}: gave up after {MAX_WORKERS} workers")


def dump(path, out):
    columns, rows, cells = collect(path)
    meta = {}
    for name, type_str in columns:
        entry = {"dl4_type": type_str, "comparable": kind_of(type_str) != "link"}
        if not entry["comparable"]:
            entry["note"] = "4.x returns the decoded link target, not the stored path"
        meta[name] = entry
    write_line(out, {"__meta__": {"length": rows, "tensors": meta}})
    for i in range(rows):
        write_line(out, {name: cells.get((c, i)) for c, (name, _t) in enumerate(columns)})


def write_line(out, obj):
    out.write(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
    out.write("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--to", help="write DIR/<basename of PATH>.jsonl for each PATH")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--start", default="0,0", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        col, row = (int(x) for x in args.start.split(","))
        worker(args.paths[0], col, row)
        return 0
    if args.to is None:
        if len(args.paths) != 1:
            ap.error("give one PATH, or --to DIR")
        dump(args.paths[0], sys.stdout)
        return 0
    # One failing dataset must not hide the others: its error goes to <basename>.error.
    os.makedirs(args.to, exist_ok=True)
    failed = 0
    for path in args.paths:
        base = os.path.join(args.to, os.path.basename(os.path.normpath(path)))
        try:
            with open(base + ".jsonl", "w", encoding="utf-8") as f:
                dump(path, f)
        except Exception:  # noqa: BLE001 (reported in the .error file)
            failed += 1
            os.remove(base + ".jsonl")
            with open(base + ".error", "w", encoding="utf-8") as f:
                f.write(traceback.format_exc())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
