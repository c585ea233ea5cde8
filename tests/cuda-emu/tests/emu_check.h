/* emu_check.h — the checks of the emulator's own tests: CHECK(cond, fmt, ...) counts and prints
 * a failure, and emu_check_summary() prints "<name>: checks: N, failures: M" (the line
 * tests/run-tests.sh counts) and gives the exit status. */
#ifndef CUDA_EMU_TEST_CHECK_H
#define CUDA_EMU_TEST_CHECK_H

#include <cstdio>

static int emu_checks, emu_failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        emu_checks++;                                                                              \
        if (!(cond)) {                                                                             \
            emu_failures++;                                                                        \
            printf("FAIL   %s:%d: ", __FILE__, __LINE__);                                          \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        }                                                                                          \
    } while (0)

#define CUDA_OK(stmt)                                                                              \
    do {                                                                                           \
        cudaError_t err_ = (stmt);                                                                 \
        CHECK(err_ == cudaSuccess, "%s: %s", #stmt, cudaGetErrorName(err_));                       \
    } while (0)

static inline int emu_check_summary(const char *name)
{
    printf("%s: checks: %d, failures: %d\n", name, emu_checks, emu_failures);
    return emu_failures ? 1 : 0;
}

#endif
