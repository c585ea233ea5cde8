/* rng.h — the documented, seeded noise source of every sampler.
 *
 * Counter-based Philox4x32-10 (Salmon et al. 2011), so each noise element is a pure function
 * of (seed, stream, index): results do not depend on threads, batch composition or backend.
 *
 *   key     = (seed & 0xffffffff, seed >> 32)
 *   counter = (block & 0xffffffff, block >> 32, stream & 0xffffffff, stream >> 32),
 *             block = index / 4, giving four 32-bit words w0..w3
 *   Box-Muller in double on the pairs (w0, w1) and (w2, w3):
 *     u1 = (a + 1) / 2^32   (in (0, 1], never 0)
 *     u2 = b / 2^32
 *     z_even = sqrt(-2 ln u1) · cos(2π u2),  z_odd = sqrt(-2 ln u1) · sin(2π u2)
 *   element index ↦ word lane index % 4; result rounded to float.
 *
 * Streams used by the samplers (per image, with that image's own seed):
 *   MOIRE_RNG_STREAM_INIT      the starting noise x_T
 *   MOIRE_RNG_STREAM_STEP + i  noise injected at step i (ancestral samplers, DDPM)
 *   MOIRE_RNG_STREAM_IMG2IMG   the noise that takes an init image to its starting σ
 *   MOIRE_RNG_STREAM_MASK + i  the noise that re-noises the known region at step i
 * tools/golden/rng_ref.py implements the same in NumPy; tests/ check them against each other.
 */
#ifndef MOIRE_RNG_H
#define MOIRE_RNG_H

#include <stdint.h>

#define MOIRE_RNG_STREAM_INIT    UINT64_C(0)
#define MOIRE_RNG_STREAM_STEP    UINT64_C(1)
#define MOIRE_RNG_STREAM_IMG2IMG UINT64_C(0x100000000)
#define MOIRE_RNG_STREAM_MASK    UINT64_C(0x200000000)

/* The raw Philox4x32-10 block for (key, counter). */
void rng_philox4x32(const uint32_t key[2], const uint32_t counter[4], uint32_t out[4]);

/* out[j] = normal sample number (offset + j) of (seed, stream), j < count. */
void rng_normal(uint64_t seed, uint64_t stream, uint64_t offset, float *out,
                int64_t count);

#endif /* MOIRE_RNG_H */
