/* cublaslt.cpp — a reference cuBLASLt for the calls Moiré makes (cublasLt.h).
 *
 * Semantics (the cuBLASLt documentation): every matrix is column-major, element (i, j) of a
 * rows × cols layout with leading dimension ld at i + j·ld; op(X) is X or Xᵀ (TRANSA/TRANSB);
 *     D = alpha · op(A) · op(B) + beta · C, then + bias[i] on every row i (BIAS epilogues),
 *     then ReLU or GELU (tanh form) for the RELU/GELU epilogues,
 * with op(A) m × k, op(B) k × n, C and D m × n, for each of BATCH_COUNT matrices
 * STRIDED_BATCH_OFFSET elements apart. Products are accumulated in double and rounded once,
 * so this is a reference, more exact than the device.
 *
 * Checked like the library (CUBLAS_STATUS_INVALID_VALUE / NOT_SUPPORTED, with a message):
 * compute type 32F and scale type 32F; A and B both 32F or both 16BF, C and D 32F (or 16BF)
 * and alike; column order; shapes that chain; ld ≥ rows; the algorithm was chosen (heuristic)
 * for this problem; every operand entirely inside device memory (A, B, C when beta ≠ 0, D,
 * the bias, the workspace); A, B, C and D aligned to the preference's minimum alignments
 * (256 bytes when the preference does not lower them) and to their element size. */
#include "cublasLt.h"
#include "internal.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

struct cuda_emu_lt_handle {
    int magic = 0x17;
};
struct cuda_emu_lt_matmul_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    int transa = CUBLAS_OP_N, transb = CUBLAS_OP_N, transc = CUBLAS_OP_N;
    int epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = nullptr;
    int bias_type = -1; /* default: D's type */
};
struct cuda_emu_lt_layout {
    cudaDataType_t type;
    int order = CUBLASLT_ORDER_COL;
    uint64_t rows, cols;
    int64_t ld;
    int batch = 1;
    int64_t stride = 0;
};
struct cuda_emu_lt_preference {
    uint64_t workspace = 0;
    uint32_t align[4] = {256, 256, 256, 256};
};

using namespace cuda_emu;

namespace {

/* What an algorithm from the heuristic remembers (cublasLtMatmulAlgo_t.data). */
struct algo_record {
    uint64_t align[4];
    uint64_t m, n, k;
    uint64_t signature;
};
static_assert(sizeof(algo_record) == sizeof(cublasLtMatmulAlgo_t), "algo_record fills the algo");

size_t element_bytes(cudaDataType_t t)
{
    return t == CUDA_R_16BF || t == CUDA_R_16F ? 2 : t == CUDA_R_64F ? 8 : 4;
}

const char *type_name(cudaDataType_t t)
{
    return t == CUDA_R_32F    ? "CUDA_R_32F"
           : t == CUDA_R_16BF ? "CUDA_R_16BF"
           : t == CUDA_R_16F  ? "CUDA_R_16F"
                              : "another type";
}

bool has_bias(int e)
{
    return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_RELU_BIAS ||
           e == CUBLASLT_EPILOGUE_GELU_BIAS;
}

struct problem {
    uint64_t m, n, k;
};

cublasStatus_t check(const char *call, const cuda_emu_lt_matmul_desc *d,
                     const cuda_emu_lt_layout *a, const cuda_emu_lt_layout *b,
                     const cuda_emu_lt_layout *c, const cuda_emu_lt_layout *dl, problem *out)
{
    if (!d || !a || !b || !c || !dl) {
        complain("%s: a descriptor or layout is NULL", call);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if ((d->compute != CUBLAS_COMPUTE_32F && d->compute != CUBLAS_COMPUTE_32F_FAST_TF32 &&
         d->compute != CUBLAS_COMPUTE_32F_FAST_16BF) ||
        d->scale != CUDA_R_32F) {
        complain("%s: the reference supports compute type 32F with scale type CUDA_R_32F", call);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (a->type != b->type || (a->type != CUDA_R_32F && a->type != CUDA_R_16BF)) {
        complain("%s: A is %s and B is %s; supported: both CUDA_R_32F or both CUDA_R_16BF", call,
                 type_name(a->type), type_name(b->type));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (c->type != dl->type || (dl->type != CUDA_R_32F && dl->type != CUDA_R_16BF) ||
        (a->type == CUDA_R_32F && dl->type != CUDA_R_32F)) {
        complain("%s: C is %s and D is %s with %s inputs: not a supported combination", call,
                 type_name(c->type), type_name(dl->type), type_name(a->type));
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    for (const cuda_emu_lt_layout *l : {a, b, c, dl})
        if (l->order != CUBLASLT_ORDER_COL) {
            complain("%s: only column-major layouts are supported by the reference", call);
            return CUBLAS_STATUS_NOT_SUPPORTED;
        }
    if (d->transc != CUBLAS_OP_N || (d->transa != CUBLAS_OP_N && d->transa != CUBLAS_OP_T) ||
        (d->transb != CUBLAS_OP_N && d->transb != CUBLAS_OP_T)) {
        complain("%s: TRANSA/TRANSB must be N or T and TRANSC N", call);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const uint64_t m = dl->rows, n = dl->cols;
    const uint64_t am = d->transa == CUBLAS_OP_T ? a->cols : a->rows;
    const uint64_t ak = d->transa == CUBLAS_OP_T ? a->rows : a->cols;
    const uint64_t bk = d->transb == CUBLAS_OP_T ? b->cols : b->rows;
    const uint64_t bn = d->transb == CUBLAS_OP_T ? b->rows : b->cols;
    if (am != m || bn != n || ak != bk || c->rows != m || c->cols != n) {
        complain("%s: shapes do not chain: op(A) is %llux%llu (TRANSA=%s), op(B) %llux%llu "
                 "(TRANSB=%s), C %llux%llu, D %llux%llu",
                 call, (unsigned long long)am, (unsigned long long)ak, d->transa ? "T" : "N",
                 (unsigned long long)bk, (unsigned long long)bn, d->transb ? "T" : "N",
                 (unsigned long long)c->rows, (unsigned long long)c->cols, (unsigned long long)m,
                 (unsigned long long)n);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    const char *names = "ABCD";
    int i = 0;
    for (const cuda_emu_lt_layout *l : {a, b, c, dl}) {
        if (l->ld < (int64_t)l->rows || l->ld < 1) {
            complain("%s: the leading dimension of %c (%lld) is less than its rows (%llu): "
                     "layouts are column-major",
                     call, names[i], (long long)l->ld, (unsigned long long)l->rows);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (l->batch != dl->batch) {
            complain("%s: BATCH_COUNT of %c (%d) differs from D's (%d)", call, names[i], l->batch,
                     dl->batch);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        i++;
    }
    if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && d->epilogue != CUBLASLT_EPILOGUE_RELU &&
        d->epilogue != CUBLASLT_EPILOGUE_GELU && !has_bias(d->epilogue)) {
        complain("%s: epilogue %d is not supported by the reference", call, d->epilogue);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (has_bias(d->epilogue) && d->bias_type != -1 && d->bias_type != CUDA_R_32F &&
        d->bias_type != CUDA_R_16BF) {
        complain("%s: bias data type %d is not supported", call, d->bias_type);
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    *out = {m, n, ak};
    return CUBLAS_STATUS_SUCCESS;
}

uint64_t signature(const cuda_emu_lt_matmul_desc *d, const cuda_emu_lt_layout *a,
                   const cuda_emu_lt_layout *dl)
{
    return (uint64_t)d->transa | (uint64_t)d->transb << 2 | (uint64_t)a->type << 4 |
           (uint64_t)dl->type << 12 | (uint64_t)(has_bias(d->epilogue) ? 1 : 0) << 20 |
           (uint64_t)dl->batch << 24;
}

uint64_t span_elements(const cuda_emu_lt_layout *l)
{
    return (l->cols - 1) * (uint64_t)l->ld + l->rows +
           (uint64_t)(l->batch - 1) * (uint64_t)l->stride;
}

inline double load(const void *p, cudaDataType_t t, uint64_t i)
{
    if (t == CUDA_R_32F)
        return ((const float *)p)[i];
    const uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

inline void store(void *p, cudaDataType_t t, uint64_t i, double v)
{
    const float f = (float)v;
    if (t == CUDA_R_32F) {
        ((float *)p)[i] = f;
        return;
    }
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        u = (u | 0x00400000u);
    else
        u += 0x7fffu + ((u >> 16) & 1u);
    ((uint16_t *)p)[i] = (uint16_t)(u >> 16);
}

struct matmul_job {
    cuda_emu_lt_matmul_desc desc;
    cuda_emu_lt_layout a, b, c, d;
    const void *A, *B, *C;
    void *D;
    float alpha, beta;
    problem p;
};

void run_matmul(const matmul_job &j)
{
    const uint64_t m = j.p.m, n = j.p.n, k = j.p.k;
    const bool ta = j.desc.transa == CUBLAS_OP_T, tb = j.desc.transb == CUBLAS_OP_T;
    const cudaDataType_t bias_type =
        j.desc.bias_type == -1 ? j.d.type : (cudaDataType_t)j.desc.bias_type;
    std::vector<double> rowA(k * m), colB(k);
    for (int batch = 0; batch < j.d.batch; batch++) {
        const uint64_t oa = (uint64_t)batch * j.a.stride, ob = (uint64_t)batch * j.b.stride;
        const uint64_t oc = (uint64_t)batch * j.c.stride, od = (uint64_t)batch * j.d.stride;
        /* op(A) row i as contiguous doubles: rowA[i·k + l] = op(A)(i, l) */
        for (uint64_t i = 0; i < m; i++)
            for (uint64_t l = 0; l < k; l++)
                rowA[i * k + l] = load(j.A, j.a.type, oa + (ta ? l + i * j.a.ld : i + l * j.a.ld));
        for (uint64_t col = 0; col < n; col++) {
            for (uint64_t l = 0; l < k; l++)
                colB[l] = load(j.B, j.b.type, ob + (tb ? col + l * j.b.ld : l + col * j.b.ld));
            for (uint64_t i = 0; i < m; i++) {
                const double *ar = &rowA[i * k];
                double acc = 0;
                for (uint64_t l = 0; l < k; l++)
                    acc += ar[l] * colB[l];
                double v = (double)j.alpha * acc;
                if (j.beta != 0.0f)
                    v += (double)j.beta * load(j.C, j.c.type, oc + i + col * j.c.ld);
                if (has_bias(j.desc.epilogue))
                    v += load(j.desc.bias, bias_type, i);
                if (j.desc.epilogue == CUBLASLT_EPILOGUE_RELU ||
                    j.desc.epilogue == CUBLASLT_EPILOGUE_RELU_BIAS)
                    v = v > 0 ? v : 0;
                if (j.desc.epilogue == CUBLASLT_EPILOGUE_GELU ||
                    j.desc.epilogue == CUBLASLT_EPILOGUE_GELU_BIAS)
                    v = 0.5 * v *
                        (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
                store(j.D, j.d.type, od + i + col * j.d.ld, v);
            }
        }
    }
    const uint64_t in = element_bytes(j.a.type), out = element_bytes(j.d.type);
    count_bytes((m * k + k * n) * in * j.d.batch + (j.beta != 0.0f ? m * n * out * j.d.batch : 0),
                m * n * out * j.d.batch);
}

} // namespace

extern "C" {

const char *cublasGetStatusName(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    }
    return "CUBLAS_STATUS_UNKNOWN";
}

const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    case CUBLAS_STATUS_ALLOC_FAILED: return "resource allocation failed";
    default: return cublasGetStatusName(s);
    }
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle)
{
    *handle = new cuda_emu_lt_handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle)
{
    if (!handle)
        return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                        cudaDataType_t scale_type)
{
    *desc = new cuda_emu_lt_matmul_desc;
    (*desc)->compute = compute;
    (*desc)->scale = scale_type;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc)
{
    delete desc;
    return CUBLAS_STATUS_SUCCESS;
}

static cublasStatus_t read_int(const char *what, const void *buf, size_t size, int *out)
{
    if (size != sizeof(int32_t)) {
        complain("%s: expected %zu bytes, got %zu", what, sizeof(int32_t), size);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    int32_t v;
    memcpy(&v, buf, sizeof v);
    *out = v;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr, const void *buf,
                                              size_t size)
{
    if (!d || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return read_int("TRANSA", buf, size, &d->transa);
    case CUBLASLT_MATMUL_DESC_TRANSB: return read_int("TRANSB", buf, size, &d->transb);
    case CUBLASLT_MATMUL_DESC_TRANSC: return read_int("TRANSC", buf, size, &d->transc);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return read_int("EPILOGUE", buf, size, &d->epilogue);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE:
        return read_int("BIAS_DATA_TYPE", buf, size, &d->bias_type);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
        if (size != sizeof(void *))
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&d->bias, buf, sizeof(void *));
        return CUBLAS_STATUS_SUCCESS;
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: {
        int v = 0;
        cublasStatus_t s = read_int("COMPUTE_TYPE", buf, size, &v);
        d->compute = (cublasComputeType_t)v;
        return s;
    }
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: {
        int v = 0;
        cublasStatus_t s = read_int("SCALE_TYPE", buf, size, &v);
        d->scale = (cudaDataType_t)v;
        return s;
    }
    default:
        complain("cublasLtMatmulDescSetAttribute: attribute %d is not supported by the "
                 "reference",
                 (int)attr);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType_t type,
                                          uint64_t rows, uint64_t cols, int64_t ld)
{
    *layout = new cuda_emu_lt_layout;
    (*layout)->type = type;
    (*layout)->rows = rows;
    (*layout)->cols = cols;
    (*layout)->ld = ld;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout)
{
    delete layout;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size)
{
    if (!l || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    auto u64 = [&](uint64_t *out) {
        if (size != 8)
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(out, buf, 8);
        return CUBLAS_STATUS_SUCCESS;
    };
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: {
        int v = 0;
        cublasStatus_t s = read_int("TYPE", buf, size, &v);
        l->type = (cudaDataType_t)v;
        return s;
    }
    case CUBLASLT_MATRIX_LAYOUT_ORDER: return read_int("ORDER", buf, size, &l->order);
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return u64(&l->rows);
    case CUBLASLT_MATRIX_LAYOUT_COLS: return u64(&l->cols);
    case CUBLASLT_MATRIX_LAYOUT_LD: return u64((uint64_t *)&l->ld);
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return read_int("BATCH_COUNT", buf, size, &l->batch);
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return u64((uint64_t *)&l->stride);
    }
    return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref)
{
    *pref = new cuda_emu_lt_preference;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref)
{
    delete pref;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size)
{
    if (!p || !buf)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) {
        if (size != 8)
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&p->workspace, buf, 8);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES &&
        attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
        if (size != 4)
            return CUBLAS_STATUS_INVALID_VALUE;
        memcpy(&p->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES], buf, 4);
        return CUBLAS_STATUS_SUCCESS;
    }
    if (attr == CUBLASLT_MATMUL_PREF_SEARCH_MODE)
        return CUBLAS_STATUS_SUCCESS;
    return CUBLAS_STATUS_INVALID_VALUE;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *returned)
{
    *returned = 0;
    if (!handle || !pref || requested < 1 || !results)
        return CUBLAS_STATUS_INVALID_VALUE;
    problem p;
    cublasStatus_t s = check("cublasLtMatmulAlgoGetHeuristic", desc, a, b, c, d, &p);
    if (s != CUBLAS_STATUS_SUCCESS)
        return s;
    memset(results, 0, sizeof *results);
    algo_record r;
    for (int i = 0; i < 4; i++)
        r.align[i] = pref->align[i] ? pref->align[i] : 1;
    r.m = p.m, r.n = p.n, r.k = p.k;
    r.signature = signature(desc, a, d);
    memcpy(&results->algo, &r, sizeof r);
    results->workspaceSize = 0;
    results->state = CUBLAS_STATUS_SUCCESS;
    results->wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t a, const void *B,
                              cublasLtMatrixLayout_t b, const void *beta, const void *C,
                              cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_bytes, cudaStream_t stream)
{
    std::lock_guard<std::recursive_mutex> lock(api_lock());
    const char *call = "cublasLtMatmul";
    if (!handle || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    problem p;
    cublasStatus_t s = check(call, desc, a, b, c, d, &p);
    if (s != CUBLAS_STATUS_SUCCESS)
        return s;
    if (!algo) {
        complain("%s: algo is NULL (the reference needs one from cublasLtMatmulAlgoGetHeuristic)",
                 call);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    algo_record r;
    memcpy(&r, algo, sizeof r);
    if (r.m != p.m || r.n != p.n || r.k != p.k || r.signature != signature(desc, a, d)) {
        complain("%s: the algorithm was chosen for another problem (%llux%llux%llu) than this "
                 "one (%llux%llux%llu) or other types/transposes",
                 call, (unsigned long long)r.m, (unsigned long long)r.n, (unsigned long long)r.k,
                 (unsigned long long)p.m, (unsigned long long)p.n, (unsigned long long)p.k);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    float al, be;
    memcpy(&al, alpha, 4);
    memcpy(&be, beta, 4);
    /* Fault injection for the engine's known-answer check (tests/gpu/test_cuda_auto.c):
       CUDA_EMU_FAULT=matmul makes every product 10 % too large, as a broken driver or
       library would — wrong numbers, no error code. */
    const char *fault = getenv("CUDA_EMU_FAULT");
    if (fault && strcmp(fault, "matmul") == 0)
        al *= 1.1f;
    const void *ptrs[4] = {A, B, C, D};
    const cuda_emu_lt_layout *ls[4] = {a, b, c, d};
    const char *names = "ABCD";
    for (int i = 0; i < 4; i++) {
        if (i == 2 && be == 0.0f && !C)
            continue;
        const uintptr_t v = (uintptr_t)ptrs[i];
        const uint64_t need =
            r.align[i] > element_bytes(ls[i]->type) ? r.align[i] : element_bytes(ls[i]->type);
        if (v % need) {
            complain("%s: %c at %p is not aligned to %llu bytes (the algorithm was chosen for "
                     "that alignment: lower CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_%c_BYTES)",
                     call, names[i], ptrs[i], (unsigned long long)need, names[i]);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (i == 2 && be == 0.0f)
            continue; /* C is not read */
        const size_t bytes = span_elements(ls[i]) * element_bytes(ls[i]->type);
        if (!device_range(ptrs[i], bytes)) {
            complain("%s: %c (%p, %zu bytes for %llux%llu, ld %lld) is not entirely inside one "
                     "device allocation",
                     call, names[i], ptrs[i], bytes, (unsigned long long)ls[i]->rows,
                     (unsigned long long)ls[i]->cols, (long long)ls[i]->ld);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    if (has_bias(desc->epilogue)) {
        const cudaDataType_t bt = desc->bias_type == -1 ? d->type : (cudaDataType_t)desc->bias_type;
        if (!desc->bias || !device_range(desc->bias, p.m * element_bytes(bt))) {
            complain("%s: the bias epilogue needs BIAS_POINTER to %llu device elements (got %p)",
                     call, (unsigned long long)p.m, desc->bias);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
    }
    if (workspace_bytes && !device_range(workspace, workspace_bytes)) {
        complain("%s: the workspace (%p, %zu bytes) is not device memory", call, workspace,
                 workspace_bytes);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    auto job = std::make_shared<matmul_job>();
    *job = {*desc, *a, *b, *c, *d, A, B, C, D, al, be, p};
    const char *name = a->type == CUDA_R_16BF ? "cublasLtMatmul (bf16)" : "cublasLtMatmul (fp32)";
    cudaError_t e = enqueue(stream, {"cublasLtMatmul", [job, name] {
                                         kernel_stats &st = stats_for(name);
                                         st.launches++;
                                         totals.launches++;
                                         running_stats = &st;
                                         run_matmul(*job);
                                         running_stats = nullptr;
                                     }});
    if (e != cudaSuccess) {
        complain("%s: %s", call, cudaGetErrorString(e));
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    return CUBLAS_STATUS_SUCCESS;
}

} /* extern "C" */
