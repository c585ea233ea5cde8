/* test_emu_moe_route.cu — kernels/moe.cu's dispatch (mk_moe_route) on the emulator where the
 * gpu suite does not reach: more than 1024 (token, expert) pairs, i.e. the multi-chunk path of
 * the stable placement, and experts that receive no pair, one pair, or every token. Checked
 * against a CPU stable grouping (experts in order, pairs in token order inside an expert):
 * offsets, tile_offsets, sorted_token, sorted_weight and slot_of_pair, exactly. */
#include <cuda_runtime.h>

#include "emu_check.h"
#include "kernels.h"

#include <cstring>
#include <random>
#include <vector>

static void check_route(int T, int E, int k, const std::vector<int32_t> &ids, const char *what)
{
    const int P = T * k;
    std::vector<float> w(P);
    for (int p = 0; p < P; p++)
        w[p] = 1.0f / (1 + p % 7);
    int32_t *d_ids, *off, *toff, *tok, *slot;
    float *d_w, *sw;
    cudaMalloc((void **)&d_ids, P * 4);
    cudaMalloc((void **)&d_w, P * 4);
    cudaMalloc((void **)&off, (E + 1) * 4);
    cudaMalloc((void **)&toff, (E + 1) * 4);
    cudaMalloc((void **)&tok, P * 4);
    cudaMalloc((void **)&slot, P * 4);
    cudaMalloc((void **)&sw, P * 4);
    cudaMemcpy(d_ids, ids.data(), P * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(d_w, w.data(), P * 4, cudaMemcpyHostToDevice);
    CUDA_OK(mk_moe_route(off, toff, tok, sw, slot, d_ids, d_w, T, k, E, 0));
    std::vector<int32_t> g_off(E + 1), g_toff(E + 1), g_tok(P), g_slot(P);
    std::vector<float> g_sw(P);
    cudaMemcpy(g_off.data(), off, (E + 1) * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(g_toff.data(), toff, (E + 1) * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(g_tok.data(), tok, P * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(g_slot.data(), slot, P * 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(g_sw.data(), sw, P * 4, cudaMemcpyDeviceToHost);

    std::vector<int32_t> want_off(E + 1), want_toff(E + 1), want_tok, want_slot(P);
    std::vector<float> want_sw;
    int tiles = 0;
    for (int e = 0; e < E; e++) {
        want_off[e] = (int32_t)want_tok.size();
        want_toff[e] = tiles;
        for (int p = 0; p < P; p++)
            if (ids[p] == e) {
                want_slot[p] = (int32_t)want_tok.size();
                want_tok.push_back(p / k);
                want_sw.push_back(w[p]);
            }
        tiles += ((int)want_tok.size() - want_off[e] + MK_MOE_TILE_M - 1) / MK_MOE_TILE_M;
    }
    want_off[E] = (int32_t)want_tok.size();
    want_toff[E] = tiles;
    int bad = 0;
    for (int e = 0; e <= E; e++)
        bad += g_off[e] != want_off[e] || g_toff[e] != want_toff[e];
    for (int i = 0; i < P; i++)
        bad += g_tok[i] != want_tok[i] || g_sw[i] != want_sw[i] || g_slot[i] != want_slot[i];
    CHECK(bad == 0, "route %s T=%d E=%d k=%d (%d pairs, %d chunks): %d mismatches", what, T, E, k,
          P, (P + 1023) / 1024, bad);
    if (!bad)
        printf("OK     route %-24s T=%-5d E=%-3d k=%d: %5d pairs, %d chunk(s)\n", what, T, E, k, P,
               (P + 1023) / 1024);
    cudaFree(d_ids), cudaFree(d_w), cudaFree(off), cudaFree(toff), cudaFree(tok);
    cudaFree(slot), cudaFree(sw);
}

int main()
{
    for (int T : {300, 513, 1000, 2048, 4096})
        for (int E : {8, 64}) {
            const int k = 2;
            std::mt19937 rng((unsigned)(T * 31 + E));
            std::vector<int32_t> ids(T * k);
            for (int t = 0; t < T; t++) {
                /* skewed: expert 0 is popular, the last two take every fifth token, expert 1
                 * gets nothing, expert 2 exactly one pair */
                int a = 3 + (int)(rng() % (E - 3)), b;
                do
                    b = rng() % 3 == 0 ? 0 : 3 + (int)(rng() % (E - 3));
                while (b == a);
                if (t % 5 == 0)
                    a = E - 1, b = E - 2;
                if (t == T / 2)
                    b = a == 2 ? 0 : 2;
                ids[t * k] = a, ids[t * k + 1] = b;
            }
            check_route(T, E, k, ids, "skewed, 0 and 1 pair");
        }
    /* every token to one expert (k = 1), and k = 4 of 8 with a full expert */
    for (int T : {1500, 4096}) {
        std::vector<int32_t> ids(T, 5);
        check_route(T, 8, 1, ids, "all tokens on one");
        std::vector<int32_t> ids4(T * 4);
        for (int t = 0; t < T; t++)
            for (int j = 0; j < 4; j++)
                ids4[t * 4 + j] = j == 0 ? 7 : (t + 2 * j) % 7;
        check_route(T, 8, 4, ids4, "k=4, one expert full");
    }
    return emu_check_summary("cuda_emu_moe_route");
}
