#!/usr/bin/env python3
"""Writes the media files the interop cases refer to (`{"file": NAME}`, `{"link": NAME}`).

    python fixtures.py OUT_DIR

Deterministic: pixel content comes from a seeded generator, so two runs with the same
Pillow version write identical bytes. The pictures are smooth gradients plus mild noise:
real JPEG decoders (libjpeg-turbo, zune-jpeg, ...) differ only in the last bits on such
content, which keeps pixel comparisons across decoders meaningful with a small tolerance.

The other media (OPAQUE_FILES: audio, video, point cloud, mesh, DICOM, NIfTI) are tiny
synthetic files whose content is a formula of the sample index, and whose headers carry
fixed dates and identifiers, so the same package versions write the same bytes. The
cases store them as opaque blobs: only their stored bytes and the shapes 3.9.52 reads
from their headers are compared.

Writing needs numpy and Pillow (any of the test venvs has them) and, for OPAQUE_FILES,
the packages of scripts/requirements/deeplake3.txt (PyAV, laspy, pydicom, nibabel);
importing this module for FILES does not.
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

# name -> (writer, keyword arguments). The extension is the format (and the sample
# compression of the tensors that take the file); see the write_* functions.
OPAQUE_FILES = {
    "tone_mono.wav": ("wav", {"rate": 8000, "channels": 1, "frames": 400}),
    "tone_stereo.wav": ("wav", {"rate": 11025, "channels": 2, "frames": 300}),
    "tone_mono.mp3": ("audio", {"codec": "libmp3lame", "rate": 8000, "channels": 1, "frames": 2304}),
    "tone_stereo.mp3": ("audio", {"codec": "libmp3lame", "rate": 16000, "channels": 2, "frames": 3456}),
    "tone_mono.flac": ("audio", {"codec": "flac", "rate": 8000, "channels": 1, "frames": 1000}),
    "tone_stereo.flac": ("audio", {"codec": "flac", "rate": 11025, "channels": 2, "frames": 700}),
    "clip_4x16x16.mp4": ("video", {"frames": 4, "height": 16, "width": 16}),
    "clip_6x24x16.mp4": ("video", {"frames": 6, "height": 24, "width": 16}),
    "points_5.las": ("las", {"points": 5}),
    "points_9.las": ("las", {"points": 9}),
    "tetra_ascii.ply": ("ply", {"binary": False}),
    "tetra_binary.ply": ("ply", {"binary": True}),
    "gray_8x8.dcm": ("dicom", {"rows": 8, "columns": 8}),
    "gray_6x10.dcm": ("dicom", {"rows": 6, "columns": 10}),
    "volume_4x5x3.nii": ("nifti", {"shape": (4, 5, 3), "dtype": "int16"}),
    "volume_6x4x2.nii": ("nifti", {"shape": (6, 4, 2), "dtype": "int16"}),
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


def tone(rate, channels, frames):
    """A sine per channel (220 Hz, 330 Hz, ...) at half scale, as float32 (channels, frames)."""
    import numpy as np

    t = np.arange(frames, dtype=np.float64) / rate
    freqs = 220.0 * (1.0 + 0.5 * np.arange(channels, dtype=np.float64))[:, None]
    return (0.5 * np.sin(2.0 * np.pi * freqs * t[None, :])).astype(np.float32)


def write_wav(path, rate, channels, frames):
    """16-bit PCM WAV (the standard library's writer: no encoder version in the bytes)."""
    import wave

    import numpy as np

    pcm = np.rint(tone(rate, channels, frames).T * 32767.0).astype("<i2")
    with wave.open(path, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def write_audio(path, codec, rate, channels, frames):
    """Encodes the tone with PyAV's own FFmpeg: mp3 through libmp3lame, or flac."""
    import av
    import numpy as np

    samples = tone(rate, channels, frames)
    layout = "mono" if channels == 1 else "stereo"
    # bitexact: no encoder version strings, so the bytes depend only on the samples.
    with av.open(path, "w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        stream.codec_context.options = {"flags": "+bitexact"}
        # libmp3lame takes planar floats; the flac encoder interleaved 16-bit integers.
        for start in range(0, frames, 1152):
            part = samples[:, start : start + 1152]
            if codec == "flac":
                pcm = np.rint(part.T * 32767.0).astype("<i2").reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_video(path, frames, height, width):
    """MPEG-4 Part 2 in an MP4 container, 4 fps: gradients that move from frame to frame."""
    import av
    import numpy as np

    y = np.broadcast_to(np.linspace(0.0, 1.0, height)[:, None], (height, width))
    x = np.broadcast_to(np.linspace(0.0, 1.0, width)[None, :], (height, width))
    with av.open(path, "w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"flags": "+bitexact"}
        for k in range(frames):
            phase = k / frames
            rgb = 40.0 + 170.0 * np.stack([(x + phase) % 1.0, y, np.full_like(x, phase)], axis=-1)
            frame = av.VideoFrame.from_ndarray(np.rint(rgb).astype(np.uint8), format="rgb24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def write_las(path, points):
    """LAS 1.2, point format 0, with a fixed creation date (laspy defaults to today)."""
    import datetime

    import laspy
    import numpy as np

    header = laspy.LasHeader(point_format=0, version="1.2")
    header.creation_date = datetime.date(2024, 6, 11)
    header.scales = np.array([0.01, 0.01, 0.01])
    header.offsets = np.array([0.0, 0.0, 0.0])
    las = laspy.LasData(header)
    k = np.arange(points, dtype=np.float64)
    las.x, las.y, las.z = 1.5 * k, 10.0 - k, 0.25 * k * k
    las.intensity = (100 * k).astype(np.uint16)
    las.classification = (k % 3).astype(np.uint8)
    las.write(path)


# A tetrahedron with a colour per vertex.
PLY_VERTICES = [(0.0, 0.0, 0.0, 255, 0, 0), (1.0, 0.0, 0.0, 0, 255, 0), (0.0, 1.0, 0.0, 0, 0, 255), (0.0, 0.0, 1.0, 9, 9, 9)]
PLY_FACES = [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]


def write_ply(path, binary):
    """A PLY mesh (vertices with x, y, z and colour; triangle faces), ASCII or binary LE."""
    import struct

    header = [
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        f"element vertex {len(PLY_VERTICES)}",
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        f"element face {len(PLY_FACES)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        for v in PLY_VERTICES:
            if binary:
                f.write(struct.pack("<fffBBB", *v))
            else:
                f.write(f"{v[0]} {v[1]} {v[2]} {v[3]} {v[4]} {v[5]}\n".encode("ascii"))
        for face in PLY_FACES:
            if binary:
                f.write(struct.pack("<B3i", len(face), *face))
            else:
                f.write((f"{len(face)} " + " ".join(map(str, face)) + "\n").encode("ascii"))


def write_dicom(path, rows, columns):
    """A single-frame 16-bit MONOCHROME2 DICOM file (explicit VR little endian), fixed UIDs."""
    import numpy as np
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop_class = "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture Image Storage
    sop_instance = f"1.2.826.0.1.3680043.8.498.{rows}.{columns}"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
    ds.StudyInstanceUID = sop_instance + ".1"
    ds.SeriesInstanceUID = sop_instance + ".2"
    ds.PatientName, ds.PatientID, ds.Modality = "Interop^Fixture", "0", "OT"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    pixels = (np.arange(rows * columns, dtype=np.uint16) * 37 % 4096).reshape(rows, columns)
    ds.PixelData = pixels.astype("<u2").tobytes()
    pydicom.dcmwrite(path, ds, write_like_original=False)


def write_nifti(path, shape, dtype):
    """A NIfTI-1 single file (.nii) with an identity affine."""
    import nibabel
    import numpy as np

    data = (np.arange(np.prod(shape)).reshape(shape) * 3 - 7).astype(dtype)
    nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), path)


WRITERS = {
    "wav": write_wav,
    "audio": write_audio,
    "video": write_video,
    "las": write_las,
    "ply": write_ply,
    "dicom": write_dicom,
    "nifti": write_nifti,
}


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
    for name, (writer, options) in OPAQUE_FILES.items():
        path = os.path.join(out_dir, name)
        WRITERS[writer](path, **options)
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
