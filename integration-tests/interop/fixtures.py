#!/usr/bin/env python3
"""Writes the media files the interop cases refer to (`{"file": NAME}`, `{"link": NAME}`).

    python fixtures.py OUT_DIR

Deterministic: pixel content comes from a seeded generator, so two runs with the same
Pillow version write identical bytes. The pictures are smooth gradients plus mild noise:
real JPEG decoders (libjpeg-turbo, zune-jpeg, ...) differ only in the last bits on such
content, which keeps pixel comparisons across decoders meaningful with a small tolerance.
Writing needs numpy and Pillow (any of the test venvs has them); importing this module
for FILES does not.
"""

import argparse
import os
import sys

SEED = 20240611

# name -> (Pillow mode, height, width, save options). The mode matters to the cases:
# deeplake converts a file whose channels do not fit image.rgb / image.gray.
FILES = {
    "rgb_16x20.jpg": ("RGB", 16, 20, {"quality": 90}),
    "rgb_24x20.jpg": ("RGB", 24, 20, {"quality": 90}),
    "rgb_32x48.jpg": ("RGB", 32, 48, {"quality": 85}),
    "rgb_20x16_444.jpg": ("RGB", 20, 16, {"quality": 95, "subsampling": 0}),
    "gray_16x20.jpg": ("L", 16, 20, {"quality": 90}),
    "gray_24x12.jpg": ("L", 24, 12, {"quality": 90}),
    "rgb_12x10.png": ("RGB", 12, 10, {}),
    "rgb_9x14.png": ("RGB", 9, 14, {}),
    "gray_8x8.png": ("L", 8, 8, {}),
    "gray_6x11.png": ("L", 6, 11, {}),
    "rgba_10x6.png": ("RGBA", 10, 6, {}),
}


def picture(rng, mode, height, width):
    """Smooth per-channel gradients with a little noise, as uint8 (H, W[, C])."""
    import numpy as np

    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    phase = rng.uniform(0.0, 1.0, size=(1, 1, channels))
    base = 40.0 + 170.0 * (0.5 * y + 0.5 * ((x + phase) % 1.0))
    noise = rng.normal(0.0, 4.0, size=(height, width, channels))
    arr = np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)
    if mode == "RGBA":
        arr[..., 3] = np.linspace(255, 64, width, dtype=np.float64).astype(np.uint8)[None, :]
    return arr[..., 0] if channels == 1 else arr


def write_fixtures(out_dir):
    """Writes every fixture file into out_dir and returns their paths by name."""
    import numpy as np
    from PIL import Image

    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(SEED)
    paths = {}
    for name, (mode, height, width, options) in FILES.items():
        arr = picture(rng, mode, height, width)
        path = os.path.join(out_dir, name)
        fmt = "JPEG" if name.endswith(".jpg") else "PNG"
        Image.fromarray(arr, mode=mode).save(path, format=fmt, **options)
        paths[name] = path
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    args = ap.parse_args(argv)
    for path in write_fixtures(args.out_dir).values():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
