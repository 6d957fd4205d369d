#!/usr/bin/env python3
"""Compares two canonical dumps (README.md); exits 1 and prints the first differences.

    python compare.py EXPECTED ACTUAL [--subset] [--cases cases.json --case NAME]

Rules:
* ints, strings, bools, null, json values, shapes, dtypes, stored_sha256: exact;
  a bool never equals a number, and an int never equals a float;
* floats: relative tolerance 1e-6 (1e-3 in float16 tensors);
* decoded pixels of JPEG samples: max abs diff <= 8 and mean abs diff <= 1.0 (decoders
  differ in their last bits); other decoded data exact;
* opaque samples (audio, video, point cloud, mesh, DICOM, NIfTI: {"shape", "compression",
  "stored_sha256"}) are not decoded: their shape and stored bytes compare exactly.
Options:
* --cases/--case: the writers may differ in cells whose stored bytes come out of the
  writer's own encoder (arrays appended to an image or lz4 tensor, see cases.py): there
  stored_sha256 is not compared and re-encoded JPEG pixels get a wider bound (max abs
  diff <= 16, mean <= 3.0); decoded lossless data stays exact.
* --subset: ACTUAL is a deeplake 4.x dump (dump_dl4.py). Only what 4.x presents is
  compared: columns it marks not comparable, cells it cannot read, and the meta fields
  it does not have are skipped (and listed); null matches an empty expected sample;
  ints and floats compare by value; a plain array matches the data of an expected
  sample-compressed value (4.x shows lz4-compressed samples that way). Against an
  expected opaque sample, 4.x's {"stored_sha256"} compares the stored bytes, a decoded
  array (DICOM, NIfTI) its shape, and another decoded value (a mesh) is noted, not compared.
"""

import argparse
import json
import math
import sys

import cases as cases_mod

FLOAT_REL_TOL = 1e-6
FLOAT16_REL_TOL = 1e-3
JPEG_MAX_ABS, JPEG_MEAN_ABS = 8, 1.0
REENCODED_JPEG_MAX_ABS, REENCODED_JPEG_MEAN_ABS = 16, 3.0


def load_dump(path):
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f if line.strip()]
    if not lines or "__meta__" not in lines[0]:
        first = short(lines[0], 200) if lines else "nothing (empty dump)"
        raise ValueError(f"{path}: the first line must be the __meta__ object, got {first}")
    return lines[0]["__meta__"], lines[1:]


def is_blob(v):
    return isinstance(v, dict) and "shape" in v and "data" in v


OPAQUE_KEYS = {"shape", "compression", "stored_sha256"}


def is_opaque(v):
    """A sample of a codec the dumps do not decode (README: the canonical dump)."""
    return isinstance(v, dict) and set(v) == OPAQUE_KEYS


def nested_shape(v):
    """Shape of a nested list (rectangular, as numpy's tolist() writes it)."""
    shape = []
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    return shape


def is_dl4_error(v):
    return isinstance(v, dict) and "__dl4_error__" in v


def is_empty(v):
    """An empty sample in any presentation."""
    if v is None or v == "" or v == {} or v == [] or v == [None]:
        return True
    if is_blob(v):
        return 0 in v["shape"] or not v["shape"]
    if isinstance(v, list):
        return all(is_empty(x) for x in v) and all(isinstance(x, list) for x in v)
    return False


def flatten(v, out):
    if isinstance(v, list):
        for x in v:
            flatten(x, out)
    else:
        out.append(v)
    return out


def short(v, limit=160):
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


class Comparer:
    def __init__(self, expected_meta, actual_meta, subset=False, encoded_cells=(), max_diffs=20):
        self.subset = subset
        self.encoded = set(encoded_cells)
        self.max_diffs = max_diffs
        self.diffs = []
        self.notes = []
        self.emeta_tensors = expected_meta.get("tensors", {})
        self.ameta_tensors = actual_meta.get("tensors", {})

    # -- reporting -------------------------------------------------------
    def diff(self, where, message):
        self.diffs.append(f"{where}: {message}")

    def note(self, message):
        self.notes.append(message)

    # -- values ----------------------------------------------------------
    def tensor_info(self, tensor):
        meta = self.emeta_tensors.get(tensor) or self.ameta_tensors.get(tensor) or {}
        return meta.get("sample_compression"), meta.get("dtype")

    def value(self, exp, act, where, tensor, cell):
        if len(self.diffs) > self.max_diffs:
            return
        if is_dl4_error(exp) or is_dl4_error(act):
            if is_dl4_error(exp) and is_dl4_error(act):
                return
            if self.subset and is_dl4_error(act):
                self.note(f"{where}: 4.x cannot read this cell ({act['__dl4_error__']}: {act.get('message', '')[:80]})")
                return
            self.diff(where, f"expected {short(exp)}, got {short(act)}")
            return
        if self.subset and act is None and is_empty(exp):
            return
        if is_blob(exp) and is_blob(act):
            self.blob(exp, act, where, tensor, cell)
            return
        if self.subset and is_opaque(exp):
            self.opaque_subset(exp, act, where)
            return
        if self.subset and is_blob(exp) and isinstance(act, list):
            # 4.x presents non-image sample-compressed data (lz4) as a plain array.
            self.value(exp["data"], act, where, tensor, cell)
            return
        if isinstance(exp, bool) or isinstance(act, bool):
            if exp is not act:
                self.diff(where, f"expected {short(exp)}, got {short(act)}")
            return
        if isinstance(exp, (int, float)) and isinstance(act, (int, float)):
            self.number(exp, act, where, tensor)
            return
        if isinstance(exp, list) and isinstance(act, list):
            if len(exp) != len(act):
                self.diff(where, f"length {len(exp)} != {len(act)}: expected {short(exp)}, got {short(act)}")
                return
            for k, (e, a) in enumerate(zip(exp, act)):
                item_cell = cell + (k,) if len(cell) == 2 else cell
                self.value(e, a, f"{where}[{k}]", tensor, item_cell)
            return
        if isinstance(exp, dict) and isinstance(act, dict):
            if set(exp) != set(act):
                self.diff(where, f"keys {sorted(exp)} != {sorted(act)}")
                return
            for k in sorted(exp):
                self.value(exp[k], act[k], f"{where}.{k}", tensor, cell)
            return
        if type(exp) is not type(act) or exp != act:
            self.diff(where, f"expected {short(exp)}, got {short(act)}")

    def opaque_subset(self, exp, act, where):
        """An opaque expected sample against what 4.x presents for it."""
        if isinstance(act, dict) and set(act) == {"stored_sha256"}:
            if act["stored_sha256"] != exp["stored_sha256"]:
                self.diff(where, f"stored bytes differ: sha256 {exp['stored_sha256']} != {act['stored_sha256']}")
        elif isinstance(act, list):
            if nested_shape(act) != exp["shape"]:
                self.diff(where, f"4.x decodes shape {nested_shape(act)}, expected {exp['shape']}")
        else:
            self.note(f"{where}: 4.x decodes this {exp['compression']} sample into {short(act, 60)}; not compared")

    def number(self, exp, act, where, tensor):
        if isinstance(exp, int) and isinstance(act, int):
            if exp != act:
                self.diff(where, f"expected {exp}, got {act}")
            return
        if type(exp) is not type(act) and not self.subset:
            self.diff(where, f"expected {exp!r} ({type(exp).__name__}), got {act!r} ({type(act).__name__})")
            return
        _, dtype = self.tensor_info(tensor)
        tol = FLOAT16_REL_TOL if dtype == "float16" else FLOAT_REL_TOL
        if not math.isclose(exp, act, rel_tol=tol, abs_tol=0.0):
            self.diff(where, f"expected {exp!r}, got {act!r}")

    def blob(self, exp, act, where, tensor, cell):
        compression, _ = self.tensor_info(tensor)
        encoded = cell in self.encoded
        if exp["shape"] != act["shape"] or exp.get("dtype") != act.get("dtype"):
            self.diff(where, f"shape/dtype {exp['shape']}/{exp.get('dtype')} != {act['shape']}/{act.get('dtype')}")
            return
        keys_e, keys_a = set(exp), set(act)
        if keys_e != keys_a and not self.subset:
            self.diff(where, f"keys {sorted(keys_e)} != {sorted(keys_a)}")
            return
        if (
            "stored_sha256" in exp
            and "stored_sha256" in act
            and not encoded
            and exp["stored_sha256"] != act["stored_sha256"]
        ):
            self.diff(where, f"stored bytes differ: sha256 {exp['stored_sha256']} != {act['stored_sha256']}")
        e_flat, a_flat = flatten(exp["data"], []), flatten(act["data"], [])
        if len(e_flat) != len(a_flat):
            self.diff(where, f"data has {len(e_flat)} values, expected {len(a_flat)}")
            return
        # Two 4.x dumps do not say the compression: their decoded pixels get the JPEG bound.
        if compression not in ("jpeg", None):
            if e_flat != a_flat:
                first = next(k for k, (x, y) in enumerate(zip(e_flat, a_flat)) if x != y)
                self.diff(
                    where, f"decoded data differs (first at flat index {first}: {e_flat[first]} != {a_flat[first]})"
                )
            return
        if not e_flat:
            return
        diffs = [abs(x - y) for x, y in zip(e_flat, a_flat)]
        worst, mean = max(diffs), sum(diffs) / len(diffs)
        max_abs, mean_abs = (
            (REENCODED_JPEG_MAX_ABS, REENCODED_JPEG_MEAN_ABS) if encoded else (JPEG_MAX_ABS, JPEG_MEAN_ABS)
        )
        if worst > max_abs or mean > mean_abs:
            self.diff(
                where,
                f"decoded pixels differ beyond tolerance: max abs {worst} (<= {max_abs}), mean abs {mean:.3f} (<= {mean_abs})",
            )

    # -- dumps -----------------------------------------------------------
    def meta(self, exp, act):
        etens, atens = exp.get("tensors", {}), act.get("tensors", {})
        if self.subset:
            for name in sorted(set(etens) - set(atens)):
                self.note(f"tensor {name}: not presented by 4.x")
            for name in sorted(set(atens) - set(etens)):
                self.diff(f"meta.tensors.{name}", "present in 4.x but not in the expected dump")
            for name, m in sorted(atens.items()):
                if m.get("comparable") is False:
                    self.note(f"tensor {name}: skipped ({m.get('note', 'not comparable')})")
            return
        if set(etens) != set(atens):
            self.diff("meta.tensors", f"tensor names {sorted(etens)} != {sorted(atens)}")
        for key in sorted(set(exp) | set(act)):
            if key == "tensors":
                continue
            self.value(exp.get(key), act.get(key), f"meta.{key}", None, ())
        for name in sorted(set(etens) & set(atens)):
            self.value(etens[name], atens[name], f"meta.tensors.{name}", name, ())

    def rows(self, exp_rows, act_rows):
        skip = {n for n, m in self.ameta_tensors.items() if self.subset and m.get("comparable") is False}
        if len(exp_rows) != len(act_rows) and not self.subset:
            self.diff("rows", f"{len(exp_rows)} rows expected, got {len(act_rows)}")
        for i in range(max(len(exp_rows), len(act_rows))):
            erow = exp_rows[i] if i < len(exp_rows) else {}
            arow = act_rows[i] if i < len(act_rows) else {}
            if not self.subset and set(erow) != set(arow):
                self.diff(f"row {i}", f"tensors {sorted(erow)} != {sorted(arow)}")
            for name in sorted(set(erow) & set(arow) if not self.subset else arow):
                if name in skip:
                    continue
                if name not in erow:
                    if arow[name] is not None and name in self.emeta_tensors:
                        self.diff(
                            f"row {i} tensor {name}",
                            f"row past the tensor's end should be null, got {short(arow[name])}",
                        )
                    continue
                self.value(erow[name], arow[name], f"row {i} tensor {name}", name, (name, i))


def compare(expected, actual, subset=False, encoded_cells=(), max_diffs=20):
    """Compares two loaded dumps ((meta, rows) pairs). Returns (differences, notes)."""
    (emeta, erows), (ameta, arows) = expected, actual
    c = Comparer(emeta, ameta, subset=subset, encoded_cells=encoded_cells, max_diffs=max_diffs)
    c.meta(emeta, ameta)
    c.rows(erows, arows)
    return c.diffs, c.notes


def compare_files(expected_path, actual_path, subset=False, case=None, max_diffs=20):
    encoded = cases_mod.writer_encoded_cells(case) if case is not None else ()
    return compare(load_dump(expected_path), load_dump(actual_path), subset, encoded, max_diffs)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("expected")
    ap.add_argument("actual")
    ap.add_argument("--subset", action="store_true", help="ACTUAL is a deeplake 4.x dump")
    ap.add_argument("--cases", help="cases.json, with --case: allow writer-encoded cells to differ")
    ap.add_argument("--case")
    ap.add_argument("--max-diffs", type=int, default=20)
    args = ap.parse_args(argv)
    case = None
    if args.case:
        if not args.cases:
            ap.error("--case needs --cases")
        case = cases_mod.find_case(cases_mod.load_cases(args.cases), args.case)
    diffs, notes = compare_files(args.expected, args.actual, args.subset, case, args.max_diffs)
    label = f"[{args.case}] " if args.case else ""
    for n in notes:
        print(f"{label}note: {n}")
    if diffs:
        print(f"{label}{args.actual} differs from {args.expected}:")
        for d in diffs[: args.max_diffs]:
            print(f"{label}  {d}")
        if len(diffs) > args.max_diffs:
            print(f"{label}  ... and more")
        return 1
    print(f"{label}equal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
