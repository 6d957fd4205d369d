#!/usr/bin/env python3
"""Builds the datasets of cases.json with deeplake 3.9.52 (the reference writer).

    python dl3_write.py --cases cases.json --fixtures DIR --out DIR [--case NAME]

Each case becomes the dataset OUT/<case name> (replaced if present). The step and sample
semantics are those of README.md; the Rust fixture writer implements the same ones.
"""

import argparse
import os
import shutil
import sys
import warnings

import cases as cases_mod

warnings.simplefilter("ignore")

import deeplake
import numpy as np


def build_sample(sample, fixtures):
    """Turns a JSON sample of cases.json into what deeplake 3.x's append/update accept."""
    kind = cases_mod.sample_kind(sample)
    if kind is None:
        return None
    value = sample[kind]
    if kind == "array":
        return np.array(value, dtype=sample["dtype"])
    if kind in ("text", "json", "list", "label", "labels"):
        return value
    if kind == "file":
        read = deeplake.read(cases_mod.resolve_fixture(fixtures, value))
        # The shape a case gives is what our writer stores; it must be 3.x's own reading.
        if "shape" in sample and list(read.shape) != sample["shape"]:
            raise cases_mod.CaseError(
                f"{value}: cases.json gives shape {sample['shape']}, deeplake reads {list(read.shape)}"
            )
        return read
    if kind == "link":
        return deeplake.link(cases_mod.resolve_fixture(fixtures, value), creds_key=sample.get("creds_key"))
    if kind == "polygons":
        return [np.array(points, dtype=np.float32) for points in value]
    if kind == "sequence":
        return [build_sample(item, fixtures) for item in value]
    raise cases_mod.CaseError(f"unknown sample kind {kind}")


def create_tensor(ds, spec):
    kwargs = {k: v for k, v in spec.items() if k != "name"}
    kwargs.setdefault("htype", "generic")
    ds.create_tensor(spec["name"], verbose=False, **kwargs)


def run_step(ds, step, fixtures):
    kind, body = next(iter(step.items()))
    if kind == "append":
        tensor = ds[body["tensor"]]
        for sample in body["samples"]:
            tensor.append(build_sample(sample, fixtures))
    elif kind == "update":
        ds[body["tensor"]][body["index"]] = build_sample(body["sample"], fixtures)
    elif kind == "pop":
        if body.get("tensor"):
            ds[body["tensor"]].pop(body["index"])
        else:
            ds.pop(body["index"])
    elif kind == "rename":
        ds.rename_tensor(body["from"], body["to"])
    elif kind == "delete":
        ds.delete_tensor(body["tensor"], large_ok=True)
    elif kind == "info":
        target = ds[body["tensor"]] if body.get("tensor") else ds
        target.info.update(body["set"])
    elif kind == "create":
        create_tensor(ds, body)
    elif kind == "commit":
        ds.commit(body["message"])
    elif kind == "checkout":
        ds.checkout(body["branch"], create=body.get("create", False))
    elif kind == "merge":
        policy = body.get("policy", "none")
        ds.merge(
            body["source"],
            conflict_resolution=None if policy == "none" else policy,
            delete_removed_tensors=body.get("delete_removed_tensors", False),
        )
    else:
        raise cases_mod.CaseError(f"unknown step {kind}")


def describe_step(step):
    kind, body = next(iter(step.items()))
    return f"{kind} " + ", ".join(f"{k}={v}" for k, v in body.items() if k not in ("samples", "sample", "set"))


def root_cause(e):
    while e.__cause__ is not None:
        e = e.__cause__
    return f"{type(e).__name__}: {e}"


def build_case(case, fixtures, out_dir):
    path = os.path.join(out_dir, case["name"])
    if os.path.exists(path):
        shutil.rmtree(path)
    ds = deeplake.empty(path, overwrite=True, verbose=False)
    with ds:
        for spec in case.get("tensors", []):
            create_tensor(ds, spec)
        for key in cases_mod.creds_keys(case):
            # Only the name is stored; the cases link local files, which need no secrets.
            ds.add_creds_key(key)
            ds.populate_creds(key, {})
        for i, step in enumerate(case.get("steps", [])):
            try:
                run_step(ds, step, fixtures)
            except Exception as e:
                raise RuntimeError(
                    f"case {case['name']}: step {i} ({describe_step(step)}) failed: {root_cause(e)}"
                ) from e
    ds.flush()
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--case", help="build only this case")
    args = ap.parse_args(argv)
    cases = cases_mod.load_cases(args.cases)
    if args.case:
        cases = [cases_mod.find_case(cases, args.case)]
    os.makedirs(args.out, exist_ok=True)
    for case in cases:
        print(build_case(case, os.path.abspath(args.fixtures), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
