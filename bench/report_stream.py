#!/usr/bin/env python3
"""Summarises bench/run_stream.sh's runs: one JSON document (stdout), or with
--markdown FILE a table of medians, ratios and the goals, from that document."""

import glob
import json
import os
import statistics
import sys

ORDER = ["ours_inprocess", "ours_daemon", "deeplake4", "lance", "webdataset", "torch_folder",
         "ours_inprocess_s3", "ours_daemon_s3", "deeplake4_s3", "lance_s3"]


def summarise(runs_dir, n, load):
    decode = json.load(open(os.path.join(runs_dir, "decode.json")))["decode_only"]
    limit = decode["images_per_cpu_s"]
    systems = {}
    for name in ORDER:
        runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(runs_dir, f"{name}-*.json")))]
        if not runs:
            continue
        warm = [e for r in runs for e in r["epochs"][1:]] or [e for r in runs for e in r["epochs"]]
        med = lambda k, es=warm: statistics.median(e[k] for e in es)
        first = [r["epochs"][0]["first_batch_s"] for r in runs]
        later_first = [e["first_batch_s"] for r in runs for e in r["epochs"][1:]]
        systems[name] = {
            "runs": len(runs),
            "images_per_s": med("images_per_s"),
            "images_per_cpu_s": med("images_per_cpu_s"),
            "mb_per_s": med("mb_per_s"),
            "first_batch_s_cold": statistics.median(first),
            "first_batch_s_next_epochs": statistics.median(later_first) if later_first else None,
            "peak_rss_mb": statistics.median(r["peak_rss_bytes"] for r in runs) / 2**20,
        }
    peers = [s for k, s in systems.items() if not k.startswith("ours") and not k.endswith("_s3")]
    best_peer = max((p["images_per_cpu_s"] for p in peers), default=float("nan"))
    ours = systems.get("ours_daemon") or systems.get("ours_inprocess")
    goals = {
        "decode_limit_images_per_cpu_s": limit,
        "ours_daemon_fraction_of_limit": systems["ours_daemon"]["images_per_cpu_s"] / limit,
        "ours_inprocess_fraction_of_limit": systems["ours_inprocess"]["images_per_cpu_s"] / limit,
        "best_peer_fraction_of_limit": best_peer / limit,
        "daemon_vs_inprocess_images_per_s": systems["ours_daemon"]["images_per_s"] / systems["ours_inprocess"]["images_per_s"],
        "ours_first_batch_s": ours["first_batch_s_cold"],
    }
    goals["pass"] = {
        "fraction_of_limit_at_least_0.9": goals["ours_daemon_fraction_of_limit"] >= 0.9,
        "daemon_at_least_0.9_of_inprocess": goals["daemon_vs_inprocess_images_per_s"] >= 0.9,
        "first_batch_under_1s": goals["ours_first_batch_s"] < 1.0,
    }
    return {"n": int(n), "load_before": load, "decoder": decode.get("decoder"), "systems": systems, "goals": goals}


def markdown(doc):
    s = doc["systems"]
    base = s["ours_daemon"]["images_per_s"]
    print(f"N = {doc['n']}, JPEG-decode limit {doc['goals']['decode_limit_images_per_cpu_s']:.0f} images per CPU-second\n")
    print("| loader | images/s | images/CPU-s | MB/s | first batch (cold) | first batch (next epochs) | peak RSS MiB | ours-daemon / it |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for k, v in s.items():
        nxt = v["first_batch_s_next_epochs"]
        print(f"| {k} | {v['images_per_s']:.0f} | {v['images_per_cpu_s']:.0f} | {v['mb_per_s']:.0f} | "
              f"{v['first_batch_s_cold']:.3f} s | {'-' if nxt is None else f'{nxt:.3f} s'} | {v['peak_rss_mb']:.0f} | "
              f"{base / v['images_per_s']:.2f}x |")
    g = doc["goals"]
    print()
    for k, ok in g["pass"].items():
        print(f"- {k}: {'PASS' if ok else 'FAIL'}")
    print(f"- ours through the daemon: {g['ours_daemon_fraction_of_limit']:.2f} of the limit per CPU-second; "
          f"in-process {g['ours_inprocess_fraction_of_limit']:.2f}; best peer {g['best_peer_fraction_of_limit']:.2f}; "
          f"daemon/in-process {g['daemon_vs_inprocess_images_per_s']:.2f}")


if __name__ == "__main__":
    if sys.argv[1] == "--markdown":
        markdown(json.load(open(sys.argv[2])))
    else:
        print(json.dumps(summarise(sys.argv[1], sys.argv[2], sys.argv[3]), indent=1))
