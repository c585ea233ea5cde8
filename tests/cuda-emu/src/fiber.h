/* fiber.h — the stack switch under the emulator's CUDA threads: save the callee-saved
 * registers on the current stack, store its stack pointer, load another's, restore. x86-64
 * has a 10-instruction switch (fiber.cpp); other machines use ucontext. Under
 * AddressSanitizer every switch is announced (__sanitizer_start/finish_switch_fiber) so its
 * stack bookkeeping follows the fibers. */
#ifndef CUDA_EMU_FIBER_H
#define CUDA_EMU_FIBER_H

#include <cstddef>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace cuda_emu {

struct fiber_context {
#if defined(__x86_64__)
    void *sp = nullptr;
#else
    ucontext_t uc;
#endif
    char *stack = nullptr; /* lowest usable address (a guard page lies below) */
    size_t stack_size = 0;
    void *asan_fake_stack = nullptr;
};

/* Prepares `f` to start `entry()` on its own stack at the next switch to it. */
void fiber_prepare(fiber_context &f, void (*entry)());
/* Saves the current context in `from` and continues `to`. */
void fiber_switch(fiber_context &from, fiber_context &to, bool from_finished = false);
/* Called first thing on a fiber's stack after every switch into it. */
void fiber_arrived(fiber_context &self);
/* Stack memory for `count` fibers of `size` bytes each, a guard page under each. */
char *fiber_stacks(size_t count, size_t size);

} // namespace cuda_emu

#endif
