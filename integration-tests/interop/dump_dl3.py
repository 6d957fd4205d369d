#!/usr/bin/env python3
"""Prints the canonical dump (README.md) of a dataset as deeplake 3.9.52 reads it.

    python dump_dl3.py PATH              dump to stdout
    python dump_dl3.py --to DIR PATH...  dump each PATH to DIR/<basename>.jsonl (one process;
                                         DIR/<basename>.error if it cannot be read)

The dataset is opened read-only at its current head.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import traceback
import warnings

warnings.simplefilter("ignore")

import deeplake
import numpy as np

TEXT_LIKE = ("text", "json", "list", "tag")
# Audio, video, point cloud, mesh and medical codecs: compared as stored blobs with their
# shapes, not decoded (decoders of these formats differ, and ours has none).
OPAQUE_CODECS = ("wav", "mp3", "flac", "mp4", "mkv", "avi", "las", "ply", "stl", "dcm", "nii", "nii.gz")


def plain(value):
    """numpy scalars and arrays inside JSON-ish values -> plain Python values."""
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


def sample_blob(array, stored):
    """Value of one sample of a sample-compressed tensor."""
    array = np.asarray(array)
    return {
        "shape": list(array.shape),
        "dtype": str(array.dtype),
        "stored_sha256": hashlib.sha256(stored).hexdigest(),
        "data": plain(array),
    }


def opaque_value(tensor, i):
    """Value of one sample of an opaque codec: its shape and the digest of its stored bytes.

    The shape is the one the chunk records; the shape tensor (what `t[i].shape` reads)
    must agree. An empty sample has no bytes and takes the empty form of every
    sample-compressed tensor (3.9.52 cannot call numpy() on it).
    """
    stored = tensor[i].tobytes()
    shape = [int(d) for d in tensor.chunk_engine.read_shape_for_sample(i)]
    if list(tensor[i].shape) != shape:
        raise ValueError(f"{tensor.key}[{i}]: shape tensor says {list(tensor[i].shape)}, chunk says {shape}")
    digest = hashlib.sha256(stored).hexdigest()
    if not stored:
        return {"shape": shape, "dtype": tensor.meta.dtype, "stored_sha256": digest, "data": []}
    return {"shape": shape, "compression": tensor.meta.sample_compression, "stored_sha256": digest}


def stored_item_bytes(chunk_engine, flat_index):
    """Stored bytes of one item of a sequence tensor (items are stored flattened)."""
    enc = chunk_engine.chunk_id_encoder
    chunk_id = enc[flat_index][0]
    chunk = chunk_engine.get_chunk_from_chunk_id(chunk_id)
    local = enc.translate_index_relative_to_chunks(flat_index)
    start, end = chunk.byte_positions_encoder[local]
    return chunk.memoryview_data[start:end].tobytes()


def polygons_value(value):
    if isinstance(value, np.ndarray) and value.size == 0:
        return []
    return [plain(p) for p in value]


def item_value(tensor, sample_array):
    base = tensor.base_htype
    if base == "polygon":
        return polygons_value(sample_array)
    return plain(sample_array)


def resolved_link(sample, path):
    """A link's target as the dump shows an image: its decoded pixels and the SHA-256 of
    the target's bytes (local targets only; others without stored_sha256)."""
    if not path:
        return None
    arr = sample.numpy()
    out = {"shape": list(arr.shape), "dtype": str(arr.dtype), "data": plain(arr)}
    if "://" not in path or path.startswith("file://"):
        with open(path[len("file://"):] if path.startswith("file://") else path, "rb") as f:
            out["stored_sha256"] = hashlib.sha256(f.read()).hexdigest()
    return out


RESOLVE_LINKS = False


def cell_value(tensor, i):
    meta = tensor.meta
    base = tensor.base_htype
    sample = tensor[i]
    if meta.is_link:
        paths = sample.path()
        path = str(paths[0]) if len(paths) else ""
        if RESOLVE_LINKS and not meta.is_sequence:
            return resolved_link(sample, path)
        return path
    if meta.is_sequence:
        items = sample.numpy(aslist=True)
        if meta.sample_compression:
            start, _end = tensor.chunk_engine.sequence_encoder[i]
            return [sample_blob(a, stored_item_bytes(tensor.chunk_engine, start + j)) for j, a in enumerate(items)]
        if base in TEXT_LIKE:
            return [plain(a) for a in items]
        return [item_value(tensor, a) for a in items]
    if base in TEXT_LIKE:
        return plain(sample.data()["value"])
    if meta.sample_compression in OPAQUE_CODECS:
        return opaque_value(tensor, i)
    if meta.sample_compression:
        return sample_blob(sample.numpy(), sample.tobytes())
    if base == "polygon":
        return polygons_value(sample.numpy())
    return plain(sample.numpy())


def tensor_meta(tensor):
    meta = tensor.meta
    info = plain(dict(tensor.info))
    out = {
        "htype": tensor.htype,
        "dtype": meta.dtype,
        "sample_compression": meta.sample_compression,
        "chunk_compression": meta.chunk_compression,
        "length": len(tensor),
        "info": info,
    }
    if tensor.base_htype == "class_label":
        out["class_names"] = list(info.get("class_names", []))
    return out


def dump(path, out):
    ds = deeplake.load(path, read_only=True, verbose=False)
    # Secrets are never stored; the cases' links are local files, which need none.
    for key in ds.get_creds_keys():
        ds.populate_creds(key, {})
    names = sorted(ds.tensors)
    tensors = {name: ds[name] for name in names}
    header = {
        "length": len(ds),
        "info": plain(dict(ds.info)),
        "tensors": {name: tensor_meta(t) for name, t in tensors.items()},
    }
    write_line(out, {"__meta__": header})
    rows = max((len(t) for t in tensors.values()), default=0)
    for i in range(rows):
        write_line(out, {name: cell_value(t, i) for name, t in tensors.items() if i < len(t)})


def write_line(out, obj):
    out.write(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
    out.write("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--to", help="write DIR/<basename of PATH>.jsonl for each PATH")
    ap.add_argument(
        "--resolve-links",
        action="store_true",
        help="show link targets (decoded, with the SHA-256 of their bytes) instead of paths",
    )
    args = ap.parse_args(argv)
    global RESOLVE_LINKS
    RESOLVE_LINKS = args.resolve_links
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
