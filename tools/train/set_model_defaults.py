#!/usr/bin/env python3
"""set_model_defaults.py — rewrites the sampling defaults ("moire.defaults": sampler, steps,
CFG) of an exported model file, leaving its weights byte for byte as they are. The defaults of
the embedded model are chosen from `moire eval` figures after training (docs/EMBEDDED_MODEL.md);
this records that choice without retraining.

    /usr/bin/python3 tools/train/set_model_defaults.py data/models/moire-emoji.safetensors \
        --sampler euler-a --steps 40 --cfg 3

Only the given fields change. The file is rewritten beside itself and renamed over it, so an
interrupted run leaves the old file whole.
"""
import argparse
import json
import os
import struct
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--sampler")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--cfg", type=float)
    args = ap.parse_args()

    with open(args.model, "rb") as f:
        header_length = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_length))
        data = f.read()
    metadata = header.setdefault("__metadata__", {})
    defaults = json.loads(metadata.get("moire.defaults", "{}"))
    before = dict(defaults)
    for key in ("sampler", "steps", "cfg"):
        value = getattr(args, key)
        if value is not None:
            defaults[key] = value
    if defaults == before:
        sys.exit("nothing to change: give --sampler, --steps or --cfg")
    metadata["moire.defaults"] = json.dumps(defaults)

    # The data section must start 8-byte aligned: pad the header with spaces, as the format allows.
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = args.model + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)
    os.replace(tmp, args.model)
    print(f"{args.model}: moire.defaults {json.dumps(before)} -> {json.dumps(defaults)}")


if __name__ == "__main__":
    main()
