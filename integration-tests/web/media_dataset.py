"""Writes the browser test's `media` dataset with deeplake 3.x itself: a link[image]
tensor whose targets are PNG files written beside the dataset (absolute paths), an
audio tensor of WAV samples and a video tensor of MP4 samples (H.264, encoded with
the PyAV that deeplake's venv carries), one of each per row.

Usage: python media_dataset.py DATASET_DIR FILES_DIR [ROWS]
Each row's image is one flat colour (listed in FILES_DIR/colours.json) so that a test
can check the thumbnail's pixels against the linked file.
"""

import json
import math
import os
import struct
import sys
import warnings
import wave

# deeplake warns about newer releases on import; the output should show only errors.
warnings.simplefilter("ignore")

import av  # noqa: E402
import deeplake  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

# Far apart from each other and from the page's background.
COLOURS = [(220, 40, 40), (40, 180, 60), (40, 90, 220), (230, 200, 30), (200, 60, 200), (30, 200, 200)]


def write_wav(path, seconds, freq, rate=8000):
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * i / rate)))
        for i in range(int(seconds * rate))
    )
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


def write_mp4(path, colour, frames=12, fps=8, size=32):
    with av.open(path, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = size
        stream.height = size
        stream.pix_fmt = "yuv420p"
        for k in range(frames):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            img[:, :] = colour
            # A bar that moves, so that frames differ.
            x = (k * 3) % size
            img[:, x : x + 3] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main():
    ds_dir, files_dir = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    os.makedirs(files_dir, exist_ok=True)
    colours = [COLOURS[i % len(COLOURS)] for i in range(rows)]
    ds = deeplake.empty(ds_dir, overwrite=True)
    with ds:
        ds.create_tensor("linked", htype="link[image]", sample_compression="png")
        ds.create_tensor("audio", htype="audio", sample_compression="wav")
        ds.create_tensor("video", htype="video", sample_compression="mp4")
        for i, c in enumerate(colours):
            png = os.path.join(files_dir, f"image{i}.png")
            Image.new("RGB", (48, 32), c).save(png)
            wav = os.path.join(files_dir, f"audio{i}.wav")
            write_wav(wav, 0.5 + 0.25 * i, 220 * (i + 1))
            mp4 = os.path.join(files_dir, f"video{i}.mp4")
            write_mp4(mp4, c)
            ds.linked.append(deeplake.link(png))
            ds.audio.append(deeplake.read(wav))
            ds.video.append(deeplake.read(mp4))
        ds.commit("media rows")
    with open(os.path.join(files_dir, "colours.json"), "w") as f:
        json.dump(colours, f)


if __name__ == "__main__":
    main()
