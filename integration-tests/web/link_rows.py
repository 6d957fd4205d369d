"""Writes the inputs of the browser test's 1M-row dataset: 16 small PNG tiles of
distinct flat colours and a CSV of ROWS rows (`url`: a tile's absolute path, row r
linking tile r % 16; `label`: r % 7), for `deeplake import --from-urls`. Standard
library only, and fast: the CSV of 1M rows is written in about a second.

Usage: python3 link_rows.py DIR ROWS
"""

import os
import struct
import sys
import zlib

TILES = 16
SIDE = 16


def png(path, rgb):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(rgb) * SIDE for _ in range(SIDE))
    header = struct.pack(">IIBBBBB", SIDE, SIDE, 8, 2, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def main():
    out, rows = os.path.abspath(sys.argv[1]), int(sys.argv[2])
    os.makedirs(out, exist_ok=True)
    tiles = []
    for i in range(TILES):
        path = os.path.join(out, f"tile{i}.png")
        png(path, ((i * 16) % 256, (i * 71) % 256, 255 - (i * 16) % 256))
        tiles.append(path)
    with open(os.path.join(out, "rows.csv"), "w") as f:
        f.write("url,label\n")
        f.writelines(f"{tiles[r % TILES]},{r % 7}\n" for r in range(rows))


if __name__ == "__main__":
    main()
