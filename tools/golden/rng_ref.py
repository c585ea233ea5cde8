"""rng_ref.py — NumPy twin of engine/rng.c (the spec is engine/rng.h and docs/SAMPLERS.md).

Counter-based Philox4x32-10 with Box-Muller in float64, rounded to float32:

    key     = (seed & 0xffffffff, seed >> 32)
    counter = (block & 0xffffffff, block >> 32, stream & 0xffffffff, stream >> 32),
              block = index // 4
    u1 = (w0 + 1) / 2**32, u2 = w1 / 2**32   (and likewise w2, w3)
    z  = sqrt(-2 ln u1) * (cos, sin)(2 pi u2)
    element index -> lane index % 4

Usage:  normal(seed, stream, offset, count) -> np.ndarray float32
Run as a script to print the constants that tests/test_rng.c checks.
"""
import numpy as np

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = 0x9E3779B9
W1 = 0xBB67AE85
MASK32 = np.uint64(0xFFFFFFFF)

STREAM_INIT = 0
STREAM_STEP = 1
STREAM_IMG2IMG = 0x100000000
STREAM_MASK = 0x200000000


def philox4x32(key, counter):
    """Philox4x32-10. key: (k0, k1); counter: 4 arrays (or scalars) of uint32 words.
    Returns four np.uint32 arrays."""
    k0 = np.uint64(key[0] & 0xFFFFFFFF)
    k1 = np.uint64(key[1] & 0xFFFFFFFF)
    c = [np.asarray(w, dtype=np.uint64) & MASK32 for w in counter]
    c0, c1, c2, c3 = np.broadcast_arrays(*c)
    c0, c1, c2, c3 = (x.copy() for x in (c0, c1, c2, c3))
    for r in range(10):
        if r > 0:
            k0 = np.uint64((int(k0) + W0) & 0xFFFFFFFF)
            k1 = np.uint64((int(k1) + W1) & 0xFFFFFFFF)
        p0 = M0 * c0  # < 2**64: exact in uint64
        p1 = M1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return tuple(x.astype(np.uint32) for x in (c0, c1, c2, c3))


def normal(seed, stream, offset, count):
    """Normal samples offset .. offset+count-1 of (seed, stream), as float32."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    stream = int(stream) & 0xFFFFFFFFFFFFFFFF
    offset = int(offset)
    count = int(count)
    if count <= 0:
        return np.zeros(0, dtype=np.float32)
    first = offset // 4
    last = (offset + count - 1) // 4
    blocks = np.arange(first, last + 1, dtype=np.uint64)
    key = (seed & 0xFFFFFFFF, seed >> 32)
    counter = (blocks & MASK32, blocks >> np.uint64(32),
               np.uint64(stream & 0xFFFFFFFF), np.uint64(stream >> 32))
    w = philox4x32(key, counter)
    z = np.empty((blocks.size, 4), dtype=np.float32)
    for pair in range(2):
        u1 = (w[2 * pair].astype(np.float64) + 1.0) / 4294967296.0
        u2 = w[2 * pair + 1].astype(np.float64) / 4294967296.0
        radius = np.sqrt(-2.0 * np.log(u1))
        angle = 2.0 * np.pi * u2
        z[:, 2 * pair] = (radius * np.cos(angle)).astype(np.float32)
        z[:, 2 * pair + 1] = (radius * np.sin(angle)).astype(np.float32)
    flat = z.reshape(-1)
    start = offset - first * 4
    return flat[start:start + count].copy()


if __name__ == "__main__":
    kat = [((0, 0), (0, 0, 0, 0)),
           ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF,) * 4),
           ((0xA4093822, 0x299F31D0), (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344))]
    for key, ctr in kat:
        print("philox", [hex(int(x)) for x in philox4x32(key, ctr)])
    cases = [(0, 0, 0, 8), (42, STREAM_INIT, 5, 6), (0x123456789ABCDEF0, STREAM_STEP + 17, 1001, 5),
             (7, STREAM_IMG2IMG, (1 << 33) + 3, 4), (2**64 - 1, STREAM_MASK + 3, 0, 4)]
    for seed, stream, off, cnt in cases:
        vals = normal(seed, stream, off, cnt)
        print("normal", hex(seed), hex(stream), off, ", ".join("%.9ef" % v for v in vals))
