#!/usr/bin/env python3
"""make_hostile_files.py — writes the reproducers of issue 19 (hostile and broken inputs) into
a directory, standard library only. tests/cli_hostile.sh makes them and checks that `moire`
refuses each one quickly, with a message, in bounded memory; tools/fuzz.sh seeds from the
small ones (tests/fuzz/corpus/).

Usage: make_hostile_files.py OUT_DIR
"""
import os
import struct
import sys
import zlib


def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png(width, height, texts=(), idat=None, color_type=2, raw_chunks=()):
    """An 8-bit PNG; `texts` are (chunk type, data) pairs placed before IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    if idat is None:
        channels = {0: 1, 2: 3, 6: 4}[color_type]
        raw = b"".join(b"\x00" + bytes(width * channels) for _ in range(height))
        idat = zlib.compress(raw, 9)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for kind, data in texts:
        out += chunk(kind, data)
    for raw_chunk in raw_chunks:
        out += raw_chunk
    return out + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def ztxt(key, text):
    return (b"zTXt", key + b"\x00\x00" + zlib.compress(text, 9))


def itxt(key, text, compressed=False):
    body = zlib.compress(text, 9) if compressed else text
    return (b"iTXt", key + b"\x00" + (b"\x01" if compressed else b"\x00") + b"\x00\x00\x00" + body)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)

    def write(name, data):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)

    # 1. nested JSON: a safetensors header of 100,000 '[' (the reproducer) …
    header = b"[" * 100000 + b"]" * 100000
    write("deep.safetensors", struct.pack("<Q", len(header)) + header)
    # … the same as a PNG's "moire" settings (the studio's restore parses it)
    write("deep_moire_json.png", png(8, 8, [itxt(b"moire", b"[" * 100000 + b"]" * 100000, True)]))
    # duplicate tensor names
    header = (b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
              b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}')
    write("duplicate.safetensors", struct.pack("<Q", len(header)) + header + bytes(4))
    # … and the headers that cost json-glib the most per byte: 1 MB of empty objects (~100 MB
    # of tree: over the budget) and 1 MB of zeros (~37 MB: within it, then refused as no object)
    header = b"[" + b"{}," * 349524 + b"{}]"
    write("empty_objects.safetensors", struct.pack("<Q", len(header)) + header)
    header = b"[" + b"0," * 524287 + b"0]"
    write("zeros.safetensors", struct.pack("<Q", len(header)) + header)
    # 8. a shape of 2^64 - 1 (read as -1 before)
    header = b'{"w": {"dtype": "F32", "shape": [18446744073709551615], "data_offsets": [0, 4]}}'
    write("shape_2_64.safetensors", struct.pack("<Q", len(header)) + header + bytes(4))

    # 2. quadratic parameters: a zTXt inflating to 1 M words with no ':' (each start position
    # rescanned the line) and one of unterminated quoted values
    words = b"prompt\n" + b"Steps: 20, " + b"word " * 200000 + b"\n" + b"a b " * 200000
    write("params_words.png", png(8, 8, [ztxt(b"parameters", words)]))
    quotes = b"prompt\nSteps: 20, Seed: 1, Size: 8x8, " + b'k: "x\\"' * 150000
    write("params_quotes.png", png(8, 8, [ztxt(b"parameters", quotes)]))
    # the 1,181-byte shape of the original: a 256 KiB last line of key-less runs
    write("params_256k.png", png(8, 8, [ztxt(b"parameters", b"x\n" + b"a-" * 131072)]))

    # 3. gigabytes from kilobytes: a text chunk declaring 2 GB in a tiny file …
    huge = struct.pack(">I", 0x7FFFFFF0) + b"iCCP" + b"icc\x00\x00" + bytes(64)
    write("declared_2g_chunk.png", png(8, 8, raw_chunks=[huge]))
    # … a zTXt inflating past 1 MiB (a 64 MiB bomb, ~64 KB of file)
    write("ztxt_bomb.png", png(8, 8, [ztxt(b"parameters", b"a" * (64 << 20))]))
    # … a PNG declaring 16384 x 16384 (1 GiB of RGBA if decoded) with almost no data
    write("declares_16384.png", png(16384, 16384, [itxt(b"parameters", b"a\nSteps: 1, Seed: 2, Size: 8x8")],
                                    idat=zlib.compress(b"\x00" * 1000)))
    # … 60,000 small text chunks (libpng cached every one)
    write("many_texts.png", png(8, 8, [(b"tEXt", b"k%d\x00v" % i) for i in range(60000)]))
    # … a valid small PNG with every text kind (a seed for the fuzzer)
    write("texts.png", png(4, 4, [(b"tEXt", b"parameters\x00a cat\nSteps: 20, Sampler: Euler, "
                                           b"CFG scale: 7, Seed: 1, Size: 4x4"),
                                  ztxt(b"comment", b"zlib text"),
                                  itxt(b"moire", b'{"sampler": "dmcmc", "dmcmc": {"eta": 0.5}}', True)],
                           color_type=6))


if __name__ == "__main__":
    main()
