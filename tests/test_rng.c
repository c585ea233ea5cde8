/* test_rng.c — Philox4x32-10 known answers (Random123 KAT), fixed normals that
 * tools/golden/rng_ref.py prints (so C and Python agree), offset consistency, speed and
 * moments. */
#include "rng.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

static void check_philox(uint32_t k0, uint32_t k1, const uint32_t ctr[4], const uint32_t want[4])
{
    const uint32_t key[2] = {k0, k1};
    uint32_t got[4];
    rng_philox4x32(key, ctr, got);
    for (int i = 0; i < 4; i++)
        CHECK(got[i] == want[i], "philox key (%08x,%08x) word %d: got %08x want %08x", k0, k1,
              i, got[i], want[i]);
}

typedef struct normal_case {
    uint64_t seed, stream, offset;
    int count;
    float want[8];
} normal_case;

/* Printed by `python3 tools/golden/rng_ref.py`. */
static const normal_case normal_cases[] = {
    {0, MOIRE_RNG_STREAM_INIT, 0, 8,
     {9.911376834e-01f, -9.246625900e-01f, -6.176089644e-01f, -4.820685983e-01f,
      -1.536382288e-01f, 1.808259040e-01f, 8.317351341e-01f, 1.974397153e-01f}},
    {42, MOIRE_RNG_STREAM_INIT, 5, 6,
     {1.391374916e-01f, -1.106665015e+00f, 3.266829550e-01f, -3.369618654e-01f,
      -5.187487006e-01f, 1.485669762e-01f}},
    {UINT64_C(0x123456789abcdef0), MOIRE_RNG_STREAM_STEP + 17, 1001, 5,
     {9.294355661e-02f, 4.791319072e-01f, -1.382108569e+00f, 1.451715529e-01f,
      -8.416352272e-01f}},
    {7, MOIRE_RNG_STREAM_IMG2IMG, (UINT64_C(1) << 33) + 3, 4,
     {-6.006684303e-01f, -1.126922965e+00f, 1.717440605e+00f, -7.635500431e-01f}},
    {UINT64_MAX, MOIRE_RNG_STREAM_MASK + 3, 0, 4,
     {3.690586388e-01f, -1.604060531e-01f, -9.658834338e-01f, 1.584863663e+00f}},
};

int main(void)
{
    /* Random123 known-answer vectors for philox4x32_10. */
    check_philox(0, 0, (const uint32_t[4]){0, 0, 0, 0},
                 (const uint32_t[4]){0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
    check_philox(0xffffffff, 0xffffffff,
                 (const uint32_t[4]){0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                 (const uint32_t[4]){0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
    check_philox(0xa4093822, 0x299f31d0,
                 (const uint32_t[4]){0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                 (const uint32_t[4]){0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});

    /* Fixed normals shared with the Python reference: within 2 float ulps (libm vs NumPy
     * may round the double sin/cos/log differently in the last bit). */
    for (size_t c = 0; c < sizeof normal_cases / sizeof normal_cases[0]; c++) {
        const normal_case *nc = &normal_cases[c];
        float got[8];
        rng_normal(nc->seed, nc->stream, nc->offset, got, nc->count);
        for (int i = 0; i < nc->count; i++)
            CHECK(fabsf(got[i] - nc->want[i]) <= 2.5e-7f * fmaxf(1.0f, fabsf(nc->want[i])),
                  "case %zu element %d: got %.9g want %.9g", c, i, got[i], nc->want[i]);
    }

    /* Offset consistency: any window equals the same elements of a draw from 0. */
    float full[64], part[64];
    rng_normal(1234, MOIRE_RNG_STREAM_STEP + 3, 0, full, 64);
    for (uint64_t off = 0; off < 9; off++) {
        for (int count = 0; count <= 13; count++) {
            rng_normal(1234, MOIRE_RNG_STREAM_STEP + 3, off, part, count);
            int bad = 0;
            for (int i = 0; i < count; i++)
                bad += part[i] != full[off + (uint64_t)i];
            CHECK(bad == 0, "offset %llu count %d: %d elements differ", (unsigned long long)off,
                  count, bad);
        }
    }
    rng_normal(1234, MOIRE_RNG_STREAM_STEP + 3, 7, part, 10);
    int same = 1;
    for (int i = 0; i < 10; i++)
        same &= part[i] == full[7 + i];
    CHECK(same, "10 from offset 7 differ from elements 7..16");

    /* Different seeds and streams give different noise. */
    float a[8], b[8];
    rng_normal(1, 0, 0, a, 8);
    rng_normal(2, 0, 0, b, 8);
    CHECK(test_max_abs_diff(a, b, 8) > 0.1, "seeds 1 and 2 give the same noise");
    rng_normal(1, MOIRE_RNG_STREAM_IMG2IMG, 0, b, 8);
    CHECK(test_max_abs_diff(a, b, 8) > 0.1, "streams 0 and 2^32 give the same noise");

    /* Moments over 10^6 samples (and a speed figure). */
    const int64_t count = 1000000;
    float *big = malloc((size_t)count * sizeof *big);
    CHECK(big != NULL, "out of memory");
    if (big) {
        struct timespec t0, t1;
        timespec_get(&t0, TIME_UTC);
        rng_normal(99, MOIRE_RNG_STREAM_INIT, 3, big, count);
        timespec_get(&t1, TIME_UTC);
        double seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        double sum = 0.0, sum2 = 0.0, sum4 = 0.0;
        int finite = 1;
        for (int64_t i = 0; i < count; i++) {
            double x = big[i];
            finite &= isfinite(big[i]);
            sum += x;
            sum2 += x * x;
            sum4 += x * x * x * x;
        }
        double mean = sum / (double)count, var = sum2 / (double)count - mean * mean;
        double kurt = sum4 / (double)count;
        printf("rng: 1e6 normals in %.3f s (%.1f M/s); mean %.5f var %.5f E[x^4] %.4f\n",
               seconds, 1e-6 * (double)count / seconds, mean, var, kurt);
        CHECK(finite, "non-finite normal");
        CHECK(fabs(mean) < 0.005, "mean %g", mean);     /* 5 standard errors */
        CHECK(fabs(var - 1.0) < 0.007, "variance %g", var);
        CHECK(fabs(kurt - 3.0) < 0.05, "fourth moment %g (3 for a normal)", kurt);
        free(big);
    }
    return test_finish("rng");
}
