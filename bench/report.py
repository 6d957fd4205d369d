#!/usr/bin/env python3
"""Folds the per-run JSON objects of bench-ours and peers.py into one report.

    python3 bench/report.py --manifest DATA/manifest.json --out bench/results/latest.json RUN.json...

Each RUN.json is one object printed by ``bench-ours`` or ``bench/peers.py`` (its
``system`` key says which). Per system and metric the report takes the median over the
repetitions, computes the ratios ours/peer and checks the targets, writes everything
(raw runs included) to ``--out`` and prints a Markdown table on stdout. Only the
standard library is used, so any python3 runs it.
"""

import argparse
import datetime
import json
import os
import platform
import statistics

SYSTEMS = ["ours", "dl3", "dl4"]
PEERS = ["dl3", "dl4"]
LABELS = {"ours": "ours", "dl3": "deeplake 3.9.52", "dl4": "deeplake 4.7.4"}

# (key, path in a run's JSON, label, unit, higher is better)
METRICS = [
    ("write_samples_per_s", ("write", "samples_per_s"), "write", "samples/s", True),
    ("write_mb_per_s", ("write", "mb_per_s"), "write", "MB/s of JPEG", True),
    ("write_no_fsync_samples_per_s", ("write_no_fsync", "samples_per_s"), "write, no fsync (peers' durability)", "samples/s", True),
    ("write_samples_per_cpu_s", ("write", "samples_per_cpu_s"), "write", "samples per CPU-s", True),
    ("read_images_per_s", ("full_read", "images_per_s"), "full read, decoded", "img/s wall", True),
    ("read_images_per_cpu_s", ("full_read", "images_per_cpu_s"), "full read, decoded", "img per CPU-s", True),
    ("decode_images_per_cpu_s", ("decode_only", "images_per_cpu_s"), "decode only, 1 thread (*)", "img per CPU-s", True),
    ("random_p50_ms", ("random", "p50_ms"), "random read p50", "ms", False),
    ("random_p99_ms", ("random", "p99_ms"), "random read p99", "ms", False),
    ("decode_p50_ms", ("random", "decode_p50_ms"), "one decode p50 (*)", "ms", False),
    ("disk_ratio", ("disk", "ratio"), "disk / raw JPEG bytes", "ratio", False),
]


def dig(obj, path):
    for k in path:
        obj = obj[k]
    return float(obj)


def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--env", default=None, help="JSON file with extra run context (load averages, ...)")
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()

    with open(args.manifest, encoding="utf-8") as f:
        manifest = json.load(f)
    runs = {s: [] for s in SYSTEMS}
    for p in args.runs:
        with open(p, encoding="utf-8") as f:
            r = json.load(f)
        # The peers never fsync (see bench/README.md): their one write is already the
        # no-fsync write that ours also measures with `durability=none`.
        if r["system"] != "ours" and "write_no_fsync" not in r:
            r["write_no_fsync"] = r["write"]
        runs[r["system"]].append(r)
    missing = [s for s in SYSTEMS if not runs[s]]
    if missing:
        raise SystemExit(f"no runs for {missing}")

    med = {s: {k: statistics.median(dig(r, path) for r in runs[s]) for k, path, *_ in METRICS} for s in SYSTEMS}
    # Loader efficiency divides every system's full-read rate by our decode-only rate:
    # same images, same decoder as our reader (the performance spec's definition).
    ceiling = med["ours"]["decode_images_per_cpu_s"]
    for s in SYSTEMS:
        med[s]["loader_efficiency"] = med[s]["read_images_per_cpu_s"] / ceiling
        med[s]["random_p50_over_decode"] = med[s]["random_p50_ms"] / med[s]["decode_p50_ms"]

    rows = [(k, label, unit, hib) for k, _p, label, unit, hib in METRICS]
    rows.insert(7, ("loader_efficiency", "loader efficiency = full read ÷ our decode-only", "per CPU-s", True))
    rows.insert(11, ("random_p50_over_decode", "random p50 ÷ one decode (own decoder)", "ratio", False))

    ratios = {}
    for k, *_ in rows:
        ratios[k] = {p: (med["ours"][k] / med[p][k] if med[p][k] else None) for p in PEERS}

    o = med["ours"]
    best_peer_cpu = max(med[p]["read_images_per_cpu_s"] for p in PEERS)
    targets = [
        ("write ≥ 10x deeplake 3.9.52 (samples/s), ours fsyncing", ratios["write_samples_per_s"]["dl3"], ">=", 10.0),
        ("write ≥ 1.5x deeplake 4.7.4 (samples/s), ours fsyncing", ratios["write_samples_per_s"]["dl4"], ">=", 1.5),
        ("write ≥ 10x deeplake 3.9.52 (samples/s), same durability", ratios["write_no_fsync_samples_per_s"]["dl3"], ">=", 10.0),
        ("write ≥ 1.5x deeplake 4.7.4 (samples/s), same durability", ratios["write_no_fsync_samples_per_s"]["dl4"], ">=", 1.5),
        ("disk within 2% of raw JPEG bytes", o["disk_ratio"], "<=", 1.02),
        ("full read ≥ 0.8 of decode-only (per CPU-s)", o["loader_efficiency"], ">=", 0.8),
        ("random p50 ≤ 2x one decode", o["random_p50_over_decode"], "<=", 2.0),
        ("random p50 below deeplake 3.9.52", ratios["random_p50_ms"]["dl3"], "<", 1.0),
        ("random p50 below deeplake 4.7.4", ratios["random_p50_ms"]["dl4"], "<", 1.0),
        ("full read ≥ 1.5x best peer per CPU-s (spec §4.1)", o["read_images_per_cpu_s"] / best_peer_cpu, ">=", 1.5),
    ]
    checked = []
    for name, value, op, bound in targets:
        ok = {"<=": value <= bound, ">=": value >= bound, "<": value < bound}[op]
        checked.append({"target": name, "value": value, "op": op, "bound": bound, "pass": ok})

    env = {}
    if args.env and os.path.exists(args.env):
        with open(args.env, encoding="utf-8") as f:
            env = json.load(f)
    report = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), **env},
        "data": manifest,
        "repetitions": {s: len(runs[s]) for s in SYSTEMS},
        "apis": {s: {ph: runs[s][0][ph].get("api") for ph in ("write", "full_read", "random")} for s in SYSTEMS},
        "medians": med,
        "ratios_ours_over_peer": ratios,
        "targets": checked,
        "runs": runs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)
        f.write("\n")

    reps = ", ".join(f"{LABELS[s]} x{len(runs[s])}" for s in SYSTEMS)
    out = [
        f"N = {manifest['n']} JPEGs {manifest['size'][0]}x{manifest['size'][1]} q{manifest['jpeg_quality']} "
        f"({manifest['jpeg_bytes'] / 1e6:.1f} MB, mean {manifest['mean_jpeg_bytes'] / 1024:.1f} KiB); "
        f"medians of {reps}; {os.cpu_count()} CPUs"
        + (f"; load avg {env['load_before']} → {env['load_after']}" if "load_before" in env else ""),
        "",
        "| metric | unit | ours | dl3 | dl4 | ours/dl3 | ours/dl4 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for k, label, unit, hib in rows:
        r = ratios[k]
        out.append(
            f"| {label} | {unit}{'' if hib else ', lower is better'} | {fmt(med['ours'][k])} | {fmt(med['dl3'][k])} "
            f"| {fmt(med['dl4'][k])} | {fmt(r['dl3'])} | {fmt(r['dl4'])} |"
        )
    out += [
        "",
        "(*) ours: zune-jpeg, the decoder our reader uses; dl3/dl4: Pillow, for reference. "
        "Loader efficiency divides every system's full-read rate by our decode-only rate.",
        "",
        "| target | value | bound | result |",
        "| --- | ---: | ---: | --- |",
    ]
    for t in checked:
        out.append(f"| {t['target']} | {fmt(t['value'])} | {t['op']} {fmt(t['bound'])} | {'PASS' if t['pass'] else 'FAIL'} |")
    out.append("")
    out.append(f"Full report: {args.out}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
