/* fiber.cpp — the stack switch (see fiber.h). */
#include "fiber.h"
#include "internal.h"

#include <cstdint>
#include <cstring>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define CUDA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CUDA_EMU_ASAN 1
#endif
#endif
#ifdef CUDA_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if defined(__x86_64__)
extern "C" void cuda_emu_switch_stack(void **save_sp, void *load_sp);
asm(R"(
.text
.globl cuda_emu_switch_stack
.type cuda_emu_switch_stack,@function
cuda_emu_switch_stack:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size cuda_emu_switch_stack, .-cuda_emu_switch_stack
.section .note.GNU-stack,"",@progbits
.text
)");
#endif

namespace cuda_emu {

namespace {
#ifdef CUDA_EMU_ASAN
/* The stack the scheduler runs on, learned at the first switch into a fiber. */
const void *host_stack_bottom = nullptr;
size_t host_stack_size = 0;
#endif
fiber_context *arriving_from = nullptr;
} // namespace

char *fiber_stacks(size_t count, size_t size)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t span = size + page;
    char *m = (char *)mmap(nullptr, count * span, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        fatal("could not map %zu fiber stacks of %zu KB", count, size >> 10);
    for (size_t i = 0; i < count; i++)
        mprotect(m + i * span, page, PROT_NONE); /* overflow faults instead of corrupting */
    return m;
}

void fiber_prepare(fiber_context &f, void (*entry)())
{
#ifdef CUDA_EMU_ASAN
    /* The frames a finished thread never returned from (its entry function and the final
     * switch, at the top of the stack) left their redzones poisoned: clear them. Everything
     * below returned normally. Only the top is cleared: the whole stack for every thread of
     * every block would be most of the emulator's time under ASan. */
    const size_t dirty = f.stack_size < ((size_t)32 << 10) ? f.stack_size : (size_t)32 << 10;
    __asan_unpoison_memory_region(f.stack + f.stack_size - dirty, dirty);
#endif
    f.asan_fake_stack = nullptr;
#if defined(__x86_64__)
    uint64_t *top = (uint64_t *)(((uintptr_t)(f.stack + f.stack_size)) & ~(uintptr_t)15);
    top[-1] = 0;                          /* entry's return address: it never returns */
    top[-2] = (uint64_t)(uintptr_t)entry; /* where the switch's `ret` goes */
    for (int r = 3; r <= 8; r++)
        top[-r] = 0; /* rbp rbx r12..r15 */
    f.sp = top - 8;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = f.stack_size;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, entry, 0);
#endif
}

void fiber_switch(fiber_context &from, fiber_context &to, bool from_finished)
{
#ifdef CUDA_EMU_ASAN
    const bool to_host = to.stack == nullptr;
    __sanitizer_start_switch_fiber(from_finished ? nullptr : &from.asan_fake_stack,
                                   to_host ? host_stack_bottom : to.stack,
                                   to_host ? host_stack_size : to.stack_size);
#else
    (void)from_finished;
#endif
    arriving_from = &from;
#if defined(__x86_64__)
    cuda_emu_switch_stack(&from.sp, to.sp);
#else
    swapcontext(&from.uc, &to.uc);
#endif
    fiber_arrived(from);
}

void fiber_arrived(fiber_context &self)
{
#ifdef CUDA_EMU_ASAN
    const void *bottom = nullptr;
    size_t size = 0;
    __sanitizer_finish_switch_fiber(self.asan_fake_stack, &bottom, &size);
    if (self.stack != nullptr && arriving_from && arriving_from->stack == nullptr) {
        host_stack_bottom = bottom;
        host_stack_size = size;
    }
#else
    (void)self;
#endif
}

} // namespace cuda_emu
