#!/usr/bin/env python3
"""The Python side of the loader benchmark (bench/run_stream.sh): one loader per process,
over the data of bench/gen_data.py, printing one JSON object.

    python bench/loaders.py --prepare FORMAT --data DATA --out DIR
    python bench/loaders.py --loader NAME --data DATA --src PATH [--epochs 3] [--batch 64]

Loaders (every one hands the training loop decoded uint8 arrays, batch by batch):

* ``torch_folder``: a plain torch DataLoader over the JPEG folder (Pillow decode), 2
  worker processes (the machine's cores);
* ``webdataset``: WebDataset tar shards through a torch DataLoader, 2 workers;
* ``lance``: a Lance dataset of JPEG bytes (pylance), fragments split over 2 DataLoader
  workers, Pillow decode;
* ``deeplake4``: deeplake 4.7.4's own prefetcher (``ds.batches``), run in its venv;
* ``ours_daemon``: the deeplake_rs client streaming from a ``deeplake serve`` (its PID
  is given, so its CPU time and memory count too).

Sources may be ``s3://`` URLs (ours, lance, deeplake4) on the S3 server named by the
``AWS_*`` environment.

CPU time covers the process, its reaped children (DataLoader workers) and the daemon;
peak memory is the largest resident set among them (plus the daemon's).
"""

import argparse
import io
import json
import os
import resource
import sys
import time

import numpy as np


def rows_of(data):
    with open(os.path.join(data, "meta.jsonl")) as f:
        return [json.loads(line) for line in f]


def pillow_decode(b):
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))


def proc_cpu(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def s3_options():
    """Lance/object_store options for the S3 server named by the AWS_* environment."""
    return {
        "access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "endpoint": os.environ["AWS_ENDPOINT"],
        "region": os.environ.get("AWS_REGION", "us-east-1"),
        "allow_http": "true",
    }


def dl4_creds():
    return {
        "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"],
        "endpoint_url": os.environ["AWS_ENDPOINT"],
        "aws_region": os.environ.get("AWS_REGION", "us-east-1"),
    }


def own_cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# ---------------------------------------------------------------- prepare (untimed)


def prepare(fmt, data, out):
    if fmt == "deeplake4_s3":
        rows = []
    else:
        rows = rows_of(data)
    if "://" not in out:
        os.makedirs(out, exist_ok=True)
    if fmt == "webdataset":
        import webdataset as wds

        with wds.ShardWriter(os.path.join(out, "shard-%04d.tar"), maxcount=1000, verbose=0) as w:
            for i, r in enumerate(rows):
                with open(os.path.join(data, r["file"]), "rb") as f:
                    w.write({"__key__": f"{i:08d}", "jpg": f.read(), "cls": str(r["label"]).encode()})
    elif fmt == "lance":
        import lance
        import pyarrow as pa

        images = []
        for r in rows:
            with open(os.path.join(data, r["file"]), "rb") as f:
                images.append(f.read())
        table = pa.table({"image": pa.array(images, pa.binary()), "label": pa.array([r["label"] for r in rows], pa.int32())})
        opts = s3_options() if out.startswith("s3://") else None
        lance.write_dataset(table, out, mode="overwrite", max_rows_per_file=max(1, len(rows) // 8),
                            storage_options=opts)
    elif fmt == "deeplake4_s3":
        import deeplake

        # `--data` names the local deeplake 4 dataset to copy.
        deeplake.copy(data, out, dst_creds=dl4_creds())
    else:
        sys.exit(f"unknown format {fmt}")


# ---------------------------------------------------------------- loaders


def torch_folder(args):
    import torch
    from torch.utils.data import DataLoader, Dataset

    rows = rows_of(args.data)

    class Folder(Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            with open(os.path.join(args.data, rows[i]["file"]), "rb") as f:
                return pillow_decode(f.read()), rows[i]["label"]

    def epoch(e):
        dl = DataLoader(Folder(), batch_size=args.batch, shuffle=True, num_workers=2,
                        generator=torch.Generator().manual_seed(e))
        for images, labels in dl:
            yield images.numpy(), labels.numpy()

    return epoch


def webdataset(args):
    import webdataset as wds
    from torch.utils.data import DataLoader

    shards = sorted(os.path.join(args.src, f) for f in os.listdir(args.src) if f.endswith(".tar"))

    def epoch(e):
        ds = (wds.WebDataset(shards, shardshuffle=len(shards), seed=e, empty_check=False)
              .shuffle(1000).decode("rgb8").to_tuple("jpg", "cls").batched(args.batch))
        for images, labels in DataLoader(ds, batch_size=None, num_workers=2):
            yield np.asarray(images), np.asarray(labels)

    return epoch


def _loader_arg():
    return sys.argv[sys.argv.index("--loader") + 1] if "--loader" in sys.argv[:-1] else None


# Only the Lance loader's spawned workers need torch's base class at import time (they
# find the class by name); other loaders must not pay torch's memory for it, and the
# deeplake 4 venv has no torch at all. Spawned workers see the parent's argv.
if _loader_arg() == "lance":
    from torch.utils.data import IterableDataset as _Iterable
else:
    _Iterable = object


class LanceFragments(_Iterable):
    """Lance fragments split over DataLoader workers, each opening the dataset itself:
    Lance's runtime does not survive a fork, so the workers are spawned."""

    def __init__(self, uri, batch, seed):
        self.uri, self.batch, self.seed = uri, batch, seed

    def __iter__(self):
        import lance
        from torch.utils.data import get_worker_info

        ds = lance.dataset(self.uri, storage_options=s3_options() if self.uri.startswith("s3://") else None)
        fragments = ds.get_fragments()
        info = get_worker_info()
        w, k = (info.id, info.num_workers) if info else (0, 1)
        order = np.random.default_rng(self.seed).permutation(len(fragments))
        for fi in order[w::k]:
            for rb in fragments[fi].to_batches(batch_size=self.batch):
                images = np.stack([pillow_decode(b) for b in rb.column("image").to_pylist()])
                yield images, rb.column("label").to_numpy()


def lance_loader(args):
    from torch.utils.data import DataLoader

    def epoch(e):
        dl = DataLoader(LanceFragments(args.src, args.batch, e), batch_size=None, num_workers=2,
                        multiprocessing_context="spawn")
        for images, labels in dl:
            yield np.asarray(images), np.asarray(labels)

    return epoch


def deeplake4(args):
    import deeplake

    if args.src.startswith("s3://"):
        ds = deeplake.open_read_only(args.src, creds=dl4_creds())
    else:
        ds = deeplake.open_read_only(args.src)

    def epoch(e):
        for b in ds.batches(args.batch):
            yield np.asarray(b["images"]), np.asarray(b["labels"])

    return epoch


def ours_daemon(args):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "client", "python", "src"))
    import deeplake_rs

    ds = deeplake_rs.Dataset(args.src)

    def epoch(e):
        for b in ds.stream(tensors=["images", "labels"], batch_size=args.batch, shuffle=True, seed=1, epoch=e):
            yield b["images"], b["labels"]

    return epoch


LOADERS = {
    "torch_folder": torch_folder,
    "webdataset": webdataset,
    "lance": lance_loader,
    "deeplake4": deeplake4,
    "ours_daemon": ours_daemon,
}


def measure(args):
    epoch = LOADERS[args.loader](args)
    n = len(rows_of(args.data))
    daemon = args.daemon_pid
    out = []
    for e in range(args.epochs):
        c0, d0, t0 = own_cpu(), proc_cpu(daemon) if daemon else 0.0, time.perf_counter()
        first = None
        images = 0
        pixels = 0
        for imgs, labels in epoch(e):
            if first is None:
                first = time.perf_counter() - t0
            assert imgs.dtype == np.uint8 and imgs.ndim == 4 and imgs.shape[-1] == 3, imgs.shape
            assert len(labels) == len(imgs)
            images += len(imgs)
            pixels += imgs.size
        secs = time.perf_counter() - t0
        cpu = own_cpu() - c0 + ((proc_cpu(daemon) - d0) if daemon else 0.0)
        if images != n:
            sys.exit(f"{args.loader}: epoch {e} delivered {images} of {n} images")
        out.append({
            "epoch": e, "images": images, "seconds": secs, "cpu_s": cpu,
            "images_per_s": images / secs, "images_per_cpu_s": images / cpu,
            "mb_per_s": pixels / secs / 1e6, "first_batch_s": first,
        })
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    peak = max(self_rss, child_rss) + (proc_hwm(daemon) if daemon else 0)
    return {"system": args.loader, "batch_size": args.batch, "epochs": out, "peak_rss_bytes": peak}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepare", choices=["webdataset", "lance", "deeplake4_s3"])
    ap.add_argument("--loader", choices=sorted(LOADERS))
    ap.add_argument("--data", required=True)
    ap.add_argument("--out")
    ap.add_argument("--src")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--daemon-pid", type=int, default=0)
    ap.add_argument("--name", help="the system name to report (default: the loader's)")
    args = ap.parse_args()
    if args.prepare:
        prepare(args.prepare, args.data, args.out)
        return
    out = measure(args)
    if args.name:
        out["system"] = args.name
    print(json.dumps(out))


if __name__ == "__main__":
    main()
