/* test_emu_host.cu — the emulator's host side keeps the device's rules: copies by where memory
 * really lives (direction checks, pageable staging, pinned copies that complete only at a
 * synchronisation), streams and events, graph capture (what a capture forbids, replay of the
 * captured work), the reference cuBLASLt against a naive GEMM (transposes, leading dimensions,
 * batches, bf16, bias epilogues, and the calls it must refuse), and the counters. */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda_emu.h"
#include "emu_check.h"
#include "launch.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

static __global__ void scale_kernel(float *y, const float *x, float s, int n)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = s * x[i];
}

static void test_copies()
{
    const int n = 1000;
    float *d, *d2, *pinned;
    CUDA_OK(cudaMalloc((void **)&d, n * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&d2, n * sizeof(float)));
    CUDA_OK(cudaMallocHost((void **)&pinned, n * sizeof(float)));
    std::vector<float> host(n, 1.0f), back(n, 0.0f);
    CHECK(cudaMemcpy(host.data(), d, 4, cudaMemcpyHostToDevice) == cudaErrorInvalidValue,
          "HostToDevice with a device source accepted");
    CHECK(cudaMemcpy(d, host.data(), 4, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue,
          "DeviceToHost into device memory accepted");
    CHECK(cudaMemcpy(d, host.data(), (n + 1) * sizeof(float), cudaMemcpyHostToDevice) ==
              cudaErrorInvalidValue,
          "a copy past the end of an allocation accepted");
    CHECK(cudaMemcpy(d2, d, 4, cudaMemcpyHostToDevice) == cudaErrorInvalidValue,
          "HostToDevice between device pointers accepted");
    CUDA_OK(cudaMemcpy(d, host.data(), n * sizeof(float), cudaMemcpyDefault));

    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    /* Pageable source: staged at the call, later host writes do not reach the device. */
    host[0] = 2.0f;
    CUDA_OK(cudaMemcpyAsync(d, host.data(), sizeof(float), cudaMemcpyHostToDevice, s));
    host[0] = 3.0f;
    /* Pinned destination: the copy completes at the synchronisation, not at the call. */
    pinned[0] = -1.0f;
    CUDA_OK(cudaMemcpyAsync(pinned, d, sizeof(float), cudaMemcpyDeviceToHost, s));
    CHECK(pinned[0] == -1.0f, "an async copy into pinned memory completed before the sync");
    cuda_emu_counters before, after;
    cuda_emu_counters_get(&before);
    CUDA_OK(cudaStreamSynchronize(s));
    CHECK(pinned[0] == 2.0f, "pinned copy after sync: %g (want the staged 2)", pinned[0]);
    /* Pageable destination: the call returns when the copy is done (a host synchronisation). */
    CUDA_OK(cudaMemcpyAsync(back.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    cuda_emu_counters_get(&after);
    CHECK(back[0] == 2.0f && back[1] == 1.0f, "pageable copy: %g %g", back[0], back[1]);
    CHECK(after.host_syncs == before.host_syncs + 2, "host syncs %llu → %llu (want +2)",
          (unsigned long long)before.host_syncs, (unsigned long long)after.host_syncs);

    /* Bytes a kernel touches: n floats read, n written. */
    cuda_emu_counters_reset();
    MK_LAUNCH((n + 127) / 128, 128, 0, s, scale_kernel)(d2, d, 2.0f, n);
    CUDA_OK(cudaStreamSynchronize(s));
    cuda_emu_counters_get(&after);
    CHECK(after.bytes_read == 4 * n && after.bytes_written == 4 * n && after.launches == 1,
          "scale_kernel counted %llu read, %llu written, %llu launches",
          (unsigned long long)after.bytes_read, (unsigned long long)after.bytes_written,
          (unsigned long long)after.launches);
    cuda_emu_kernel_counters rows[8];
    const int nrows = cuda_emu_kernel_counters_get(rows, 8);
    bool named = false;
    for (int i = 0; i < nrows && i < 8; i++)
        named |= !strcmp(rows[i].name, "scale_kernel") && rows[i].launches == 1 &&
                 rows[i].blocks == 8 && rows[i].threads == 1024;
    CHECK(named, "per-kernel row for scale_kernel");

    cudaEvent_t a, b;
    CUDA_OK(cudaEventCreate(&a));
    CUDA_OK(cudaEventCreate(&b));
    CUDA_OK(cudaEventRecord(a, s));
    MK_LAUNCH((n + 127) / 128, 128, 0, s, scale_kernel)(d2, d, 2.0f, n);
    CUDA_OK(cudaEventRecord(b, s));
    CUDA_OK(cudaEventSynchronize(b));
    float ms = -1;
    CUDA_OK(cudaEventElapsedTime(&ms, a, b));
    CHECK(ms >= 0, "event time %g", ms);
    CUDA_OK(cudaStreamQuery(s));
    CUDA_OK(cudaEventDestroy(a));
    CUDA_OK(cudaEventDestroy(b));
    CUDA_OK(cudaStreamDestroy(s));
    CUDA_OK(cudaFreeHost(pinned));
    CHECK(cudaFreeHost(host.data()) == cudaErrorInvalidValue, "cudaFreeHost of pageable memory");
    CUDA_OK(cudaFree(d));
    CUDA_OK(cudaFree(d2));
    CHECK(cudaFree(d) == cudaErrorInvalidValue, "double cudaFree accepted");
}

static void test_graphs()
{
    const int n = 256;
    float *x, *y, *pinned;
    CUDA_OK(cudaMalloc((void **)&x, n * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&y, n * sizeof(float)));
    CUDA_OK(cudaMallocHost((void **)&pinned, n * sizeof(float)));
    for (int i = 0; i < n; i++)
        pinned[i] = (float)i;
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

    /* What a capture forbids: it returns an error and invalidates the capture. */
    cudaGraph_t g = nullptr;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    MK_LAUNCH(1, n, 0, s, scale_kernel)(y, x, 2.0f, n);
    CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported, "sync during capture");
    cudaStreamCaptureStatus status;
    CUDA_OK(cudaStreamIsCapturing(s, &status));
    CHECK(status == cudaStreamCaptureStatusInvalidated, "capture not invalidated");
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g,
          "an invalidated capture gave a graph");
    void *p = nullptr;
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported, "cudaMalloc during capture");
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated, "after cudaMalloc");
    std::vector<float> pageable(n);
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CHECK(cudaMemcpyAsync(pageable.data(), y, 4, cudaMemcpyDeviceToHost, s) ==
              cudaErrorStreamCaptureUnsupported,
          "pageable copy during capture");
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated,
          "after a pageable copy");

    /* A good capture: upload (pinned), kernel, memset + kernel, download (pinned). */
    CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    CUDA_OK(cudaMemcpyAsync(x, pinned, n * sizeof(float), cudaMemcpyHostToDevice, s));
    MK_LAUNCH(2, n / 2, 0, s, scale_kernel)(y, x, 3.0f, n);
    CUDA_OK(cudaMemsetAsync(x, 0, sizeof(float), s));
    MK_LAUNCH(1, n, 0, s, scale_kernel)(y, y, 0.5f, n);
    CUDA_OK(cudaMemcpyAsync(pinned, y, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CUDA_OK(cudaStreamIsCapturing(s, &status));
    CHECK(status == cudaStreamCaptureStatusActive, "capturing");
    CUDA_OK(cudaStreamEndCapture(s, &g));
    CHECK(pinned[5] == 5.0f, "captured work ran during the capture");
    cudaGraphExec_t exec;
    CUDA_OK(cudaGraphInstantiate(&exec, g, 0));
    cuda_emu_counters_reset();
    CUDA_OK(cudaGraphLaunch(exec, s));
    CUDA_OK(cudaGraphLaunch(exec, s)); /* twice: each reads the previous result */
    cuda_emu_counters c;
    cuda_emu_counters_get(&c);
    CHECK(c.launches == 0, "graph launched before the sync: %llu", (unsigned long long)c.launches);
    CUDA_OK(cudaStreamSynchronize(s));
    cuda_emu_counters_get(&c);
    CHECK(pinned[5] == 5.0f * 1.5f * 1.5f && pinned[0] == 0.0f, "replay twice: %g %g", pinned[5],
          pinned[0]);
    CHECK(c.launches == 4 && c.graph_launches == 2 && c.host_syncs == 1 && c.device_allocs == 0,
          "replay counters: %llu launches, %llu graph launches, %llu syncs, %llu allocations",
          (unsigned long long)c.launches, (unsigned long long)c.graph_launches,
          (unsigned long long)c.host_syncs, (unsigned long long)c.device_allocs);
    CUDA_OK(cudaGraphExecDestroy(exec));
    CUDA_OK(cudaGraphDestroy(g));
    CUDA_OK(cudaStreamDestroy(s));
    CUDA_OK(cudaFreeHost(pinned));
    CUDA_OK(cudaFree(x));
    CUDA_OK(cudaFree(y));
}

/* ---- cuBLASLt ------------------------------------------------------------------------------ */

static float bf16_round(float f) { return __bfloat162float(__float2bfloat16_rn(f)); }

struct gemm_case {
    int m, n, k, lda_pad, ldb_pad, ldc_pad, batch;
    bool ta, tb, bf16, bias, relu;
    float beta;
};

/* D = alpha·op(A)·op(B) + beta·C (+ bias, relu), column-major, vs a naive loop. */
static void run_gemm_case(cublasLtHandle_t lt, const gemm_case &gc)
{
    const int m = gc.m, n = gc.n, k = gc.k;
    const int a_rows = gc.ta ? k : m, a_cols = gc.ta ? m : k;
    const int b_rows = gc.tb ? n : k, b_cols = gc.tb ? k : n;
    const int lda = a_rows + gc.lda_pad, ldb = b_rows + gc.ldb_pad, ldc = m + gc.ldc_pad;
    const long sa = (long)lda * a_cols, sb = (long)ldb * b_cols, sc = (long)ldc * n;
    const int batch = gc.batch;
    std::vector<float> A(sa * batch), B(sb * batch), C(sc * batch), bias(m);
    srand(m * 131 + n * 7 + k);
    for (auto &v : A)
        v = (float)(rand() % 200 - 100) / 64.0f;
    for (auto &v : B)
        v = (float)(rand() % 200 - 100) / 64.0f;
    for (auto &v : C)
        v = (float)(rand() % 200 - 100) / 64.0f;
    for (auto &v : bias)
        v = (float)(rand() % 200 - 100) / 16.0f;
    const size_t el = gc.bf16 ? 2 : 4;
    std::vector<uint16_t> A16(A.size()), B16(B.size());
    for (size_t i = 0; i < A.size(); i++)
        A16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(A[i])),
        A[i] = gc.bf16 ? bf16_round(A[i]) : A[i];
    for (size_t i = 0; i < B.size(); i++)
        B16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(B[i])),
        B[i] = gc.bf16 ? bf16_round(B[i]) : B[i];
    void *dA, *dB, *dBias;
    float *dC;
    CUDA_OK(cudaMalloc(&dA, A.size() * el));
    CUDA_OK(cudaMalloc(&dB, B.size() * el));
    CUDA_OK(cudaMalloc((void **)&dC, C.size() * 4));
    CUDA_OK(cudaMalloc(&dBias, m * 4));
    CUDA_OK(cudaMemcpy(dA, gc.bf16 ? (void *)A16.data() : (void *)A.data(), A.size() * el,
                       cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dB, gc.bf16 ? (void *)B16.data() : (void *)B.data(), B.size() * el,
                       cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dC, C.data(), C.size() * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dBias, bias.data(), m * 4, cudaMemcpyHostToDevice));

    const cudaDataType_t in = gc.bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const int32_t ta = gc.ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb = gc.tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta);
    cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb);
    if (gc.bias || gc.relu) {
        const int32_t ep = gc.bias
                               ? (gc.relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                               : CUBLASLT_EPILOGUE_RELU;
        const int32_t bt = CUDA_R_32F;
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &ep, sizeof ep);
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt);
        cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &dBias,
                                       sizeof dBias);
    }
    cublasLtMatrixLayoutCreate(&la, in, a_rows, a_cols, lda);
    cublasLtMatrixLayoutCreate(&lb, in, b_rows, b_cols, ldb);
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, m, n, ldc);
    if (batch > 1) {
        const int32_t count = batch;
        for (auto [l, stride] : {std::pair{la, sa}, std::pair{lb, sb}, std::pair{lc, sc}}) {
            const int64_t st = stride;
            cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                             sizeof count);
            cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &st,
                                             sizeof st);
        }
    }
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    const uint32_t align = 4;
    for (auto attr :
         {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
          CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
        cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof align);
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, la, lb, lc, lc, pref, 1, &result, &found) ==
                  CUBLAS_STATUS_SUCCESS &&
              found == 1,
          "heuristic");
    const float alpha = 1.5f, beta = gc.beta;
    CHECK(cublasLtMatmul(lt, desc, &alpha, dA, la, dB, lb, &beta, dC, lc, dC, lc, &result.algo,
                         nullptr, 0, 0) == CUBLAS_STATUS_SUCCESS,
          "matmul");
    std::vector<float> D(C.size());
    CUDA_OK(cudaMemcpy(D.data(), dC, D.size() * 4, cudaMemcpyDeviceToHost));
    double worst = 0;
    for (int bt = 0; bt < batch; bt++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double acc = 0;
                for (int l = 0; l < k; l++) {
                    const float a =
                        gc.ta ? A[bt * sa + l + (long)i * lda] : A[bt * sa + i + (long)l * lda];
                    const float b =
                        gc.tb ? B[bt * sb + j + (long)l * ldb] : B[bt * sb + l + (long)j * ldb];
                    acc += (double)a * b;
                }
                double want = alpha * acc + beta * C[bt * sc + i + (long)j * ldc];
                if (gc.bias)
                    want += bias[i];
                if (gc.relu && want < 0)
                    want = 0;
                const double err = fabs(D[bt * sc + i + (long)j * ldc] - want) / (1.0 + fabs(want));
                worst = err > worst ? err : worst;
            }
    CHECK(worst < 1e-5,
          "GEMM m=%d n=%d k=%d ta=%d tb=%d bf16=%d bias=%d relu=%d batch=%d beta=%g: "
          "error %.3g",
          m, n, k, gc.ta, gc.tb, gc.bf16, gc.bias, gc.relu, batch, beta, worst);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(desc);
    cudaFree(dA), cudaFree(dB), cudaFree(dC), cudaFree(dBias);
}

/* What the library refuses: a wrong leading dimension, shapes that do not chain, host
 * memory, misaligned pointers, an algo chosen for another problem. */
static void test_gemm_refusals(cublasLtHandle_t lt)
{
    float *d;
    CUDA_OK(cudaMalloc((void **)&d, 3 * 64 * 64 * sizeof(float)));
    float *A = d, *B = d + 4096, *C = d + 8192;
    cublasLtMatmulDesc_t desc;
    cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatrixLayout_t l64, lbad, l32;
    cublasLtMatrixLayoutCreate(&l64, CUDA_R_32F, 64, 64, 64);
    cublasLtMatrixLayoutCreate(&lbad, CUDA_R_32F, 64, 64, 32); /* ld < rows */
    cublasLtMatrixLayoutCreate(&l32, CUDA_R_32F, 32, 64, 32);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulHeuristicResult_t r;
    int found = 0;
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, lbad, l64, l64, l64, pref, 1, &r, &found) ==
              CUBLAS_STATUS_INVALID_VALUE,
          "ld < rows accepted");
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, l32, l32, l64, l64, pref, 1, &r, &found) ==
              CUBLAS_STATUS_INVALID_VALUE,
          "32x64 · 32x64 accepted");
    CHECK(cublasLtMatmulAlgoGetHeuristic(lt, desc, l64, l64, l64, l64, pref, 1, &r, &found) ==
              CUBLAS_STATUS_SUCCESS,
          "64³ refused");
    const float one = 1, zero = 0;
    std::vector<float> host(4096);
    CHECK(cublasLtMatmul(lt, desc, &one, host.data(), l64, B, l64, &zero, C, l64, C, l64, &r.algo,
                         nullptr, 0, 0) == CUBLAS_STATUS_INVALID_VALUE,
          "host A accepted");
    CHECK(cublasLtMatmul(lt, desc, &one, A + 1, l64, B, l64, &zero, C, l64, C, l64, &r.algo,
                         nullptr, 0, 0) == CUBLAS_STATUS_INVALID_VALUE,
          "A aligned to 4 bytes accepted by an algo for 256-byte alignment");
    CHECK(cublasLtMatmul(lt, desc, &one, A, l64, B, l64, &zero, d + 3 * 4096 - 64, l64,
                         d + 3 * 4096 - 64, l64, &r.algo, nullptr, 0,
                         0) == CUBLAS_STATUS_INVALID_VALUE,
          "D running past its allocation accepted");
    cublasLtMatrixLayout_t l16;
    cublasLtMatrixLayoutCreate(&l16, CUDA_R_32F, 64, 16, 64);
    CHECK(cublasLtMatmul(lt, desc, &one, A, l64, B, l16, &zero, C, l16, C, l16, &r.algo, nullptr, 0,
                         0) == CUBLAS_STATUS_INVALID_VALUE,
          "algo of another problem accepted");
    CHECK(cublasLtMatmul(lt, desc, &one, A, l64, B, l64, &zero, C, l64, C, l64, &r.algo, nullptr, 0,
                         0) == CUBLAS_STATUS_SUCCESS,
          "a good call refused");
    CUDA_OK(cudaDeviceSynchronize());
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(l64);
    cublasLtMatrixLayoutDestroy(lbad);
    cublasLtMatrixLayoutDestroy(l32);
    cublasLtMatrixLayoutDestroy(l16);
    cublasLtMatmulDescDestroy(desc);
    cudaFree(d);
}

int main()
{
    test_copies();
    test_graphs();
    cublasLtHandle_t lt;
    CHECK(cublasLtCreate(&lt) == CUBLAS_STATUS_SUCCESS, "cublasLtCreate");
    const gemm_case cases[] = {
        /* m, n, k, pads, batch, ta, tb, bf16, bias, relu, beta */
        {17, 9, 33, 0, 0, 0, 1, false, false, false, false, false, 0.0f},
        {17, 9, 33, 3, 5, 2, 1, true, false, false, false, false, 0.0f}, /* the project's T·N */
        {17, 9, 33, 1, 0, 0, 1, false, true, false, false, false, 0.5f},
        {8, 12, 5, 0, 2, 0, 1, true, true, false, true, false, 0.0f},
        {64, 3, 96, 0, 0, 0, 1, true, false, true, true, false, 0.0f},  /* bf16 with bias */
        {31, 7, 64, 0, 0, 4, 1, true, false, true, true, true, 0.0f},   /* bf16, relu + bias */
        {6, 5, 4, 2, 1, 3, 3, false, true, false, false, false, -1.0f}, /* batched */
    };
    for (const gemm_case &gc : cases)
        run_gemm_case(lt, gc);
    test_gemm_refusals(lt);
    cublasLtDestroy(lt);
    return emu_check_summary("cuda_emu_host");
}
