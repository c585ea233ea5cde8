/* rng.c — Philox4x32-10 and Box-Muller normals, exactly as rng.h specifies.
 *
 * Every normal is a pure function of (seed, stream, index), so the samplers' noise does not
 * depend on threads, batch size or backend. tools/golden/rng_ref.py is the NumPy twin of this
 * file; tests/test_rng.c checks the two agree and checks the Random123 known-answer vectors.
 *
 * The Box-Muller transform runs in double and is rounded to float once, so a libm that is
 * off by an ulp in double still gives the same float almost always (the Python reference is
 * compared with a tolerance of a few float ulps, not bit for bit).
 */
#include "rng.h"

#include <math.h>

#define PHILOX_M0 UINT32_C(0xD2511F53)
#define PHILOX_M1 UINT32_C(0xCD9E8D57)
#define PHILOX_W0 UINT32_C(0x9E3779B9)
#define PHILOX_W1 UINT32_C(0xBB67AE85)
#define PHILOX_ROUNDS 10

static const double two_pi = 6.283185307179586476925286766559;
static const double inv_2_32 = 1.0 / 4294967296.0;

void rng_philox4x32(const uint32_t key[2], const uint32_t counter[4], uint32_t out[4])
{
    uint32_t k0 = key[0], k1 = key[1];
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    for (int round = 0; round < PHILOX_ROUNDS; round++) {
        if (round > 0) { /* the key is bumped between rounds, not before the first */
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The four normals of one Philox block: lanes (w0, w1) → z0, z1 and (w2, w3) → z2, z3. */
static void normal_block(const uint32_t key[2], uint64_t block, uint64_t stream, float z[4])
{
    const uint32_t counter[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                                 (uint32_t)(stream >> 32)};
    uint32_t w[4];
    rng_philox4x32(key, counter, w);
    for (int pair = 0; pair < 2; pair++) {
        double u1 = ((double)w[2 * pair] + 1.0) * inv_2_32; /* (0, 1]: log never sees 0 */
        double u2 = (double)w[2 * pair + 1] * inv_2_32;      /* [0, 1)                   */
        double radius = sqrt(-2.0 * log(u1));
        double angle = two_pi * u2;
        z[2 * pair] = (float)(radius * cos(angle));
        z[2 * pair + 1] = (float)(radius * sin(angle));
    }
}

void rng_normal(uint64_t seed, uint64_t stream, uint64_t offset, float *out,
                int64_t count)
{
    if (count <= 0)
        return;
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint64_t index = offset;
    int64_t j = 0;
    float z[4];

    /* Leading partial block when offset is not a multiple of 4. */
    if (index % 4 != 0) {
        normal_block(key, index / 4, stream, z);
        for (unsigned lane = (unsigned)(index % 4); lane < 4 && j < count; lane++, j++)
            out[j] = z[lane];
        index = offset + (uint64_t)j;
    }
    /* Whole blocks straight into the output. */
    for (; count - j >= 4; j += 4, index += 4)
        normal_block(key, index / 4, stream, out + j);
    /* Trailing partial block. */
    if (j < count) {
        normal_block(key, index / 4, stream, z);
        for (unsigned lane = 0; j < count; lane++, j++)
            out[j] = z[lane];
    }
}
