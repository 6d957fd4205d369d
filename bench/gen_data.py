#!/usr/bin/env python3
"""Deterministic synthetic image-classification data for the side-by-side benchmark.

Writes N rows to DIR:

* ``DIR/images/000000.jpg`` ...: 256x256 RGB JPEGs (Pillow, quality 90, 4:2:0, baseline),
  smooth coloured noise with one filled shape drawn on top;
* ``DIR/meta.jsonl``: one JSON object per row, in row order:
  ``{"file": "images/000000.jpg", "label": 3, "box": [x, y, w, h], "caption": "..."}``;
  the label (10 classes) picks the shape and its colour, the box (float32 pixels) is
  the shape's bounding box;
* ``DIR/manifest.json``: N, the seed, library versions, total JPEG bytes and a sha256
  over every file's bytes, so two runs can check they measured the same data.

Row i depends only on (seed, i), so a larger N extends a smaller one. Output is
byte-identical for the same Pillow/libjpeg and numpy versions.

Needs numpy and Pillow (the deeplake 3 venv has both).
"""

import argparse
import hashlib
import io
import json
import os
import sys

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFilter

SIZE = 256
CLASSES = [
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "bar",
    "diamond",
    "star",
    "ellipse",
    "frame",
]
COLOURS = [
    ("red", (220, 40, 40)),
    ("green", (40, 180, 60)),
    ("blue", (40, 70, 220)),
    ("yellow", (230, 210, 40)),
    ("purple", (150, 50, 190)),
    ("orange", (240, 140, 30)),
    ("cyan", (40, 200, 210)),
    ("white", (240, 240, 240)),
    ("black", (15, 15, 15)),
    ("pink", (240, 120, 180)),
]


def background(rng):
    """Smooth colour noise plus fine grain: compresses like a natural photo (about 25 KiB at q90)."""
    coarse = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    img = Image.fromarray(coarse, "RGB").resize((SIZE, SIZE), Image.BILINEAR)
    img = img.filter(ImageFilter.GaussianBlur(radius=2))
    arr = np.asarray(img, dtype=np.int16)
    grain = rng.normal(0.0, 7.0, size=(SIZE, SIZE, 1)).astype(np.int16)
    return Image.fromarray(np.clip(arr + grain, 0, 255).astype(np.uint8), "RGB")


def draw_shape(img, rng, label):
    """Draws the class's shape at a random place and size; returns its box (x, y, w, h)."""
    d = ImageDraw.Draw(img)
    w = int(rng.integers(48, 140))
    h = w if label not in (5, 8) else int(rng.integers(24, 120))
    x = int(rng.integers(0, SIZE - w))
    y = int(rng.integers(0, SIZE - h))
    x1, y1 = x + w - 1, y + h - 1
    colour = COLOURS[label][1]
    cx, cy = x + w / 2, y + h / 2
    if label == 0:
        d.ellipse([x, y, x1, y1], fill=colour)
    elif label == 1:
        d.rectangle([x, y, x1, y1], fill=colour)
    elif label == 2:
        d.polygon([(cx, y), (x1, y1), (x, y1)], fill=colour)
    elif label == 3:
        t = max(w // 5, 4)
        d.rectangle([cx - t, y, cx + t, y1], fill=colour)
        d.rectangle([x, cy - t, x1, cy + t], fill=colour)
    elif label == 4:
        d.ellipse([x, y, x1, y1], outline=colour, width=max(w // 8, 3))
    elif label == 5:
        d.rectangle([x, y, x1, y1], fill=colour)
    elif label == 6:
        d.polygon([(cx, y), (x1, cy), (cx, y1), (x, cy)], fill=colour)
    elif label == 7:
        pts = []
        for k in range(10):
            r = (w / 2) if k % 2 == 0 else (w / 5)
            a = np.pi / 2 + k * np.pi / 5
            pts.append((cx + r * np.cos(a), cy - r * np.sin(a)))
        d.polygon(pts, fill=colour)
    elif label == 8:
        d.ellipse([x, y, x1, y1], fill=colour)
    else:
        d.rectangle([x, y, x1, y1], outline=colour, width=max(w // 10, 3))
    return [float(x), float(y), float(w), float(h)]


def make_row(seed, i):
    rng = np.random.default_rng([seed, i])
    label = int(rng.integers(0, len(CLASSES)))
    img = background(rng)
    box = draw_shape(img, rng, label)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90, subsampling=2, optimize=False, progressive=False)
    caption = f"a {COLOURS[label][0]} {CLASSES[label]} on a noisy background"
    # float32 round trip, so every reader sees exactly these values.
    box = [float(np.float32(v)) for v in box]
    return buf.getvalue(), label, box, caption


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, required=True, help="number of rows")
    ap.add_argument("--out", required=True, help="output directory (created; must be empty or absent)")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()
    if args.n <= 0:
        ap.error("--n must be positive")
    images = os.path.join(args.out, "images")
    os.makedirs(images, exist_ok=True)
    digest = hashlib.sha256()
    total = 0
    with open(os.path.join(args.out, "meta.jsonl"), "w", encoding="utf-8") as meta:
        for i in range(args.n):
            jpeg, label, box, caption = make_row(args.seed, i)
            name = f"images/{i:06d}.jpg"
            with open(os.path.join(args.out, name), "wb") as f:
                f.write(jpeg)
            digest.update(jpeg)
            total += len(jpeg)
            row = {"file": name, "label": label, "box": box, "caption": caption}
            line = json.dumps(row, separators=(",", ":"))
            digest.update(line.encode())
            meta.write(line + "\n")
    manifest = {
        "n": args.n,
        "seed": args.seed,
        "size": [SIZE, SIZE, 3],
        "jpeg_quality": 90,
        "subsampling": "4:2:0",
        "classes": CLASSES,
        "jpeg_bytes": total,
        "mean_jpeg_bytes": total / args.n,
        "sha256": digest.hexdigest(),
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    # Written last: its presence marks a complete data set.
    with open(os.path.join(args.out, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
