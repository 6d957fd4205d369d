#!/usr/bin/env python3
"""Throughput and memory of the Airbyte destination on a replayed message file.

  connector.py --bin target/release/destination-deeplake --work DIR --out RESULT.json

Standard library only. Message files come from shared/airbyte/gen_messages.py (one
per shape, cached in DIR), so the source is never the bottleneck: the file is replayed
from the page cache into `destination-deeplake write`. Measured:

  tabular      600-byte tabular records (the generator's fields plus a text payload),
               a STATE every 10,000 records, flush_records 10,000: every STATE is a
               durable flush (fsync) before it is echoed. records/s and MB/s of messages.
  image_urls   the generator's plain records, whose image_url field becomes a
               link[image] tensor; links are not fetched (links.verify false).
  memory       peak RSS of the connector for several batch sizes at one sync size, and
               for one batch size at two sync sizes (bounded by the batch, not the sync).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GEN = REPO.parent / "shared" / "airbyte" / "gen_messages.py"


def messages(work, name, records, payload, streams="images"):
    path = work / f"{name}.jsonl"
    cat = work / f"{name}.catalog.json"
    if not path.exists():
        tmp = work / f"{name}.tmp"
        subprocess.run([sys.executable, str(GEN), "--records", str(records), "--streams", streams,
                        "--state-every", "10000", "--payload-bytes", str(payload), "--platform-ids",
                        "--out", str(tmp), "--catalog-out", str(cat)], check=True)
        tmp.rename(path)
    return path, cat


def run(binary, work, msgs, cat, config, tag):
    """One `write` of `msgs`; returns wall seconds, CPU seconds and peak RSS (MiB)."""
    # Every run writes a new folder, and all of them are deleted only at the end: ext4
    # delays reusing inodes freed in the last minutes and scans past them for every file
    # it creates, which took a fifth of a run's CPU time when each run began right after
    # the previous one's dataset was deleted. A real sync does not follow a mass delete.
    root = work / "lake" / f"{tag}-{time.time_ns()}"
    cfg = work / f"{tag}.config.json"
    cfg.write_text(json.dumps(dict(config, destination={"path": str(root)})))
    # Warm the page cache so the replay costs nothing.
    with open(msgs, "rb") as f:
        while f.read(1 << 24):
            pass
    start = time.perf_counter()
    with open(msgs, "rb") as stdin:
        p = subprocess.Popen([binary, "write", "--config", str(cfg), "--catalog", str(cat)],
                             stdin=stdin, stdout=subprocess.PIPE)
        out = p.stdout.read()
        # wait4: this child's own CPU time and peak RSS.
        _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    p.returncode = code
    if code != 0:
        raise SystemExit(f"destination-deeplake failed ({code}) on {msgs}")
    states = sum(1 for line in out.splitlines() if b'"type":"STATE"' in line)
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "states_echoed": states,
    }


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    # Datasets that an earlier, interrupted run left behind.
    subprocess.run(["rm", "-rf", str(work / "lake")], check=True)
    n = a.records
    base = {"flush_records": 10_000, "batch_size": 10_000}

    # ~600-byte RECORD lines: the generator's fields are about 330 bytes.
    tab, tab_cat = messages(work, f"tabular-{n}", n, 280)
    size = tab.stat().st_size
    lines = sum(1 for _ in open(tab, "rb"))
    rec_bytes = size / lines
    tab_runs = [run(a.bin, work, tab, tab_cat, base, f"tab{i}") for i in range(a.reps)]
    w = median([r["wall_s"] for r in tab_runs])

    img, img_cat = messages(work, f"image-urls-{n}", n, 0)
    img_size = img.stat().st_size
    img_runs = [run(a.bin, work, img, img_cat, base, f"img{i}") for i in range(a.reps)]
    wi = median([r["wall_s"] for r in img_runs])

    # Peak memory: batch sizes at one sync size, then the sync doubled.
    mem = []
    small, small_cat = messages(work, f"tabular-{n // 4}", n // 4, 280)
    for batch in (1_000, 10_000, 50_000):
        r = run(a.bin, work, small, small_cat, dict(base, batch_size=batch), f"mem{batch}")
        mem.append({"records": n // 4, "batch_size": batch, "peak_rss_mib": r["peak_rss_mib"]})
    for records, (msgs, cat) in ((n // 2, messages(work, f"tabular-{n // 2}", n // 2, 280)),
                                 (n, (tab, tab_cat))):
        r = run(a.bin, work, msgs, cat, dict(base, batch_size=50_000), f"memsync{records}")
        mem.append({"records": records, "batch_size": 50_000, "peak_rss_mib": r["peak_rss_mib"]})

    result = {
        "machine": {"cpus": os.cpu_count(), "loadavg_start": open("/proc/loadavg").read().split()[:3]},
        "tabular": {
            "records": n,
            "bytes_per_message_line": round(rec_bytes, 1),
            "flush_every_records": 10_000,
            "durable": "every STATE (every 10,000 records) is fsynced before it is echoed",
            "runs": tab_runs,
            "median_wall_s": w,
            "records_per_s": n / w,
            "mb_per_s": size / w / 1e6,
            "target": "records_per_s >= 100000 or mb_per_s >= 60",
            "pass": n / w >= 100_000 or size / w / 1e6 >= 60,
        },
        "image_urls": {
            "records": n,
            "bytes_per_message_line": round(img_size / sum(1 for _ in open(img, "rb")), 1),
            "links_fetched": False,
            "runs": img_runs,
            "median_wall_s": wi,
            "records_per_s": n / wi,
            "mb_per_s": img_size / wi / 1e6,
        },
        "memory": mem,
    }
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    subprocess.run(["rm", "-rf", str(work / "lake")], check=True)
    t, i = result["tabular"], result["image_urls"]
    print(f"tabular: {t['records_per_s']:,.0f} records/s, {t['mb_per_s']:.1f} MB/s "
          f"({'PASS' if t['pass'] else 'FAIL'} vs 100k records/s or 60 MB/s)")
    print(f"image URLs (not fetched): {i['records_per_s']:,.0f} records/s, {i['mb_per_s']:.1f} MB/s")
    for m in mem:
        print(f"peak RSS {m['peak_rss_mib']:.0f} MiB at {m['records']:,} records, batch {m['batch_size']:,}")


if __name__ == "__main__":
    main()
