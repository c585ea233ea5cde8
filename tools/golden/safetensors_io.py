"""safetensors_io.py — a minimal safetensors writer/reader for the golden-file tools.

Debian's python3-torch has no `safetensors` package, and the format is small enough to
write directly: u64 header length, JSON header (sorted names, padded with spaces to a
multiple of 8), then the raw little-endian data.
"""
import json
import struct

import numpy as np

_DTYPES = {np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("int32"): "I32",
           np.dtype("int64"): "I64", np.dtype("uint8"): "U8"}
_NP = {v: k for k, v in _DTYPES.items()}


def save(path, tensors, metadata=None):
    """tensors: dict name -> np.ndarray (float32/float16/int32/int64/uint8, or 'BF16' tuple)."""
    header = {}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        value = tensors[name]
        if isinstance(value, tuple) and value[0] == "BF16":
            arr = np.ascontiguousarray(value[1], dtype=np.float32)
            bits = arr.view(np.uint32)
            # round to nearest even, as the C writer does
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            data, dtype, shape = rounded.tobytes(), "BF16", arr.shape
        else:
            arr = np.ascontiguousarray(value)
            data, dtype, shape = arr.astype(arr.dtype.newbyteorder("<")).tobytes(), _DTYPES[arr.dtype], arr.shape
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def load(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw[base + b:base + e], dtype="<u2").astype(np.uint32) << 16
            out[name] = bits.view(np.float32).reshape(info["shape"])
        else:
            out[name] = np.frombuffer(raw[base + b:base + e], dtype=_NP[info["dtype"]]).reshape(info["shape"])
    return out, meta
