"""Loading and checking `cases.json`, and what its steps imply, without deeplake.

Shared by the writer (`dl3_write.py`) and the comparer (`compare.py`), so it imports
only the standard library. The format of `cases.json` is described in README.md.
"""

import json
import os

from fixtures import FILES as FIXTURE_FILES

TENSOR_KEYS = {
    "name",
    "htype",
    "dtype",
    "sample_compression",
    "chunk_compression",
    "max_chunk_size",
    "tiling_threshold",
    "class_names",
    "coords",
    "keypoints",
    "connections",
    "create_shape_tensor",
    "create_id_tensor",
    "create_sample_info_tensor",
    "verify",
}
SAMPLE_KINDS = {"array", "text", "json", "list", "label", "labels", "file", "link", "polygons", "sequence"}
STEP_KINDS = {"append", "update", "pop", "rename", "delete", "info"}
# Steps of histories (history_cases.json): a tensor made midway, and version control.
HISTORY_STEP_KINDS = {"create", "commit", "checkout", "merge"}
MERGE_POLICIES = {"none", "ours", "theirs"}

# File extension -> the compression name deeplake records for that format.
FILE_FORMATS = {
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".png": "png",
    ".wav": "wav",
    ".mp3": "mp3",
    ".flac": "flac",
    ".mp4": "mp4",
    ".las": "las",
    ".ply": "ply",
    ".dcm": "dcm",
    ".nii": "nii",
}
# Keys that qualify a sample rather than name its kind: an array's dtype, a file's shape.
QUALIFIERS = {"array": "dtype", "file": "shape", "link": "creds_key"}


class CaseError(ValueError):
    """cases.json does not follow the format."""


def load_cases(path):
    """Returns the list of cases in path, checked for shape (not for deeplake semantics)."""
    with open(path, encoding="utf-8") as f:
        cases = json.load(f)
    if not isinstance(cases, list):
        raise CaseError("cases.json must hold a list of cases")
    names = set()
    for case in cases:
        name = case.get("name")
        if not isinstance(name, str) or not name or "/" in name:
            raise CaseError(f"bad case name: {name!r}")
        if name in names:
            raise CaseError(f"duplicate case name: {name}")
        names.add(name)
        for tensor in case.get("tensors", []):
            unknown = set(tensor) - TENSOR_KEYS
            if unknown or "name" not in tensor or "htype" not in tensor:
                raise CaseError(
                    f"{name}: bad tensor spec {tensor} (needs name and htype; unknown keys {sorted(unknown)})"
                )
        if "known_differences" in case:
            raise CaseError(f"{name}: known_differences is not supported: every difference fails")
        for step in case.get("steps", []):
            if not isinstance(step, dict) or len(step) != 1 or next(iter(step)) not in STEP_KINDS | HISTORY_STEP_KINDS:
                raise CaseError(f"{name}: bad step {step}")
            for sample in step_samples(step):
                check_sample(name, sample)
            check_step(name, step)
    return cases


def find_case(cases, name):
    for case in cases:
        if case["name"] == name:
            return case
    raise CaseError(f"no case named {name}")


def check_step(case_name, step):
    """The bodies of the steps that create tensors or work on versions."""
    kind, body = next(iter(step.items()))
    if kind == "create":
        unknown = set(body) - TENSOR_KEYS
        if unknown or "name" not in body or "htype" not in body:
            raise CaseError(f"{case_name}: bad tensor spec {body} (unknown keys {sorted(unknown)})")
    elif kind == "commit" and not isinstance(body.get("message"), str):
        raise CaseError(f"{case_name}: commit needs a message: {step}")
    elif kind == "checkout" and not isinstance(body.get("branch"), str):
        raise CaseError(f"{case_name}: checkout needs a branch: {step}")
    elif kind == "merge" and (
        not isinstance(body.get("source"), str) or body.get("policy", "none") not in MERGE_POLICIES
    ):
        raise CaseError(f"{case_name}: merge needs a source and a policy of {sorted(MERGE_POLICIES)}: {step}")


def step_samples(step):
    kind, body = next(iter(step.items()))
    if kind == "append":
        return body["samples"]
    if kind == "update":
        return [body["sample"]]
    return []


def check_sample(case_name, sample):
    if sample is None:
        return
    if not isinstance(sample, dict) or len(sample) not in (1, 2):
        raise CaseError(f"{case_name}: bad sample {sample!r}")
    kind = sample_kind(sample)
    if kind not in SAMPLE_KINDS or (len(sample) == 2 and QUALIFIERS.get(kind) not in sample):
        raise CaseError(f"{case_name}: bad sample {sample!r}")
    if kind == "array" and "dtype" not in sample:
        raise CaseError(f"{case_name}: array sample without dtype: {sample!r}")
    shape = sample.get("shape") if kind == "file" else None
    if shape is not None and not (
        isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise CaseError(f"{case_name}: shape must be a list of sizes: {sample!r}")
    if kind == "sequence":
        for item in sample["sequence"]:
            check_sample(case_name, item)


def sample_kind(sample):
    if sample is None:
        return None
    return next((k for k in sample if k not in ("dtype", "shape", "creds_key")), None)


def creds_keys(case):
    """The creds keys of the case's link samples, in order of first use."""
    out = []

    def walk(v):
        if isinstance(v, dict):
            k = v.get("creds_key")
            if isinstance(k, str) and k not in out:
                out.append(k)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(case.get("steps", []))
    return out


def resolve_fixture(fixtures_dir, name):
    """Relative names are fixture files; absolute paths and URLs are kept as written."""
    if os.path.isabs(name) or "://" in name:
        return name
    return os.path.abspath(os.path.join(fixtures_dir, name))


def _is_empty_array(value):
    """True for nested lists that hold no number at all (shape with a zero)."""
    if isinstance(value, list):
        return all(_is_empty_array(v) for v in value)
    return False


def writer_encoded(sample, sample_compression, htype="image"):
    """Whether the stored bytes of this sample come out of the writer's own encoder.

    deeplake keeps the bytes of a file read with deeplake.read() when the file is already
    in the tensor's sample compression (and, for image.rgb / image.gray, has the right
    channels); arrays and other files are encoded by the writer, so another writer may store other bytes (and, for JPEG, other pixels).
    Empty samples store no bytes at all.
    """
    if sample_compression is None or sample is None:
        return False
    htype = htype[len("sequence[") : -1] if htype.startswith("sequence[") else htype
    kind = sample_kind(sample)
    if kind == "file":
        name = sample["file"]
        ext = os.path.splitext(name)[1].lower()
        if FILE_FORMATS.get(ext) != sample_compression:
            return True
        # image.rgb / image.gray convert files with other channels (and so re-encode them).
        mode = FIXTURE_FILES.get(name, (None,))[0]
        return (htype == "image.rgb" and mode != "RGB") or (htype == "image.gray" and mode != "L")
    if kind == "array":
        return not _is_empty_array(sample["array"])
    return True


def writer_encoded_cells(case):
    """Cells of the final dataset whose stored bytes depend on the writer's encoder.

    Replays the steps on a model of the rows. Returns a set of (tensor, row) and
    (tensor, row, item) tuples, the latter for items of sequence tensors.
    """
    specs = {t["name"]: t for t in case.get("tensors", [])}
    rows = {name: [] for name in specs}

    def cell(spec, sample):
        compression = spec.get("sample_compression")
        if spec.get("htype", "").startswith("link[") or compression is None:
            return False
        htype = spec.get("htype", "generic")
        if sample is not None and sample_kind(sample) == "sequence":
            return [writer_encoded(item, compression, htype) for item in sample["sequence"]]
        return writer_encoded(sample, compression, htype)

    for step in case.get("steps", []):
        kind, body = next(iter(step.items()))
        if kind == "append":
            rows[body["tensor"]].extend(cell(specs[body["tensor"]], s) for s in body["samples"])
        elif kind == "update":
            rows[body["tensor"]][body["index"]] = cell(specs[body["tensor"]], body["sample"])
        elif kind == "pop":
            targets = [rows[body["tensor"]]] if body.get("tensor") else rows.values()
            for values in targets:
                if body["index"] < len(values):
                    del values[body["index"]]
        elif kind == "rename":
            specs[body["to"]] = specs.pop(body["from"])
            rows[body["to"]] = rows.pop(body["from"])
        elif kind == "delete":
            del specs[body["tensor"]]
            del rows[body["tensor"]]
        elif kind == "create":
            specs[body["name"]] = body
            rows[body["name"]] = []
        elif kind in ("commit", "checkout", "merge"):
            raise CaseError(f"{case['name']}: writer_encoded_cells models one branch; {kind} is not supported")

    out = set()
    for name, values in rows.items():
        for i, value in enumerate(values):
            if isinstance(value, list):
                out.update((name, i, j) for j, v in enumerate(value) if v)
            elif value:
                out.add((name, i))
    return out
