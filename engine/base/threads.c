/* threads.c — how libmoire's worker threads wait: they sleep, they never spin.
 *
 * The CPU backend splits each operation over OpenMP threads (ops_cpu.c). Between two
 * parallel regions libgomp's workers spin for a while (about 3 ms with OMP_WAIT_POLICY
 * unset, forever with "active") before they sleep. A generation runs thousands of short
 * regions, so on a machine where anything else is busy — GIMP, a browser, a build — the
 * spinning workers burn the core that their sibling thread or the other program needs, and
 * a 24-step image takes twice as long as it should (issue 18). "passive" makes the workers
 * sleep on a futex at once.
 *
 * Why this runs from .preinit_array and re-executes the program: libgomp reads
 * OMP_WAIT_POLICY and GOMP_SPINCOUNT exactly once, in its own ELF constructor, which the
 * dynamic loader runs before any constructor of the executable (libgomp is a dependency of
 * the executable, and dependencies are initialised first). Setting the variable in a
 * constructor or in moire_ctx_new does nothing. The one hook that runs earlier is the
 * executable's DT_PREINIT_ARRAY — but at that point libc is not initialised either: environ
 * is still NULL, and libc's own initialiser later sets it to the kernel's environment array,
 * so a setenv() made there is lost (tried: getenv sees nothing afterwards). What does work:
 * the preinit function, which gets the kernel's envp, re-executes the same program
 * (/proc/self/exe, same argv, same open file descriptors, same pid) with
 * OMP_WAIT_POLICY=passive added. Nothing has run yet — no library constructor, no main — so
 * the second start is the first one that does anything; it costs one extra exec (a few ms).
 * MOIRE_WAIT_POLICY_SET=libmoire marks the second start, so it happens once, and lets
 * moire_thread_wait_policy() say who chose the policy.
 *
 * libmoire is a static library linked into every executable that uses it (CLI, studio,
 * plug-in, tests), so this object's .preinit_array entry becomes the executable's;
 * engine/meson.build makes every client link this object (-Wl,--undefined=...). A
 * .preinit_array is not allowed in a shared library: a future shared libmoire would need
 * its hosts to set the variable.
 *
 * Nothing happens — the program starts once, as before — when the user set OMP_WAIT_POLICY
 * or GOMP_SPINCOUNT (their choice wins), for set-uid programs, when the program was started
 * through the dynamic loader by hand (/proc/self/exe is then ld.so, not the program), or when
 * /proc is missing (the exec fails and the start simply goes on).
 * OpenBLAS is called single-threaded (context.c), so its own pool never waits for work. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/auxv.h>
#include <unistd.h>

#include "moire.h"

#define MARKER "MOIRE_WAIT_POLICY_SET=libmoire"

static bool policy_set_by_library;

static bool has_variable(char **envp, const char *name_eq)
{
    size_t length = strlen(name_eq);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name_eq, length) == 0)
            return true;
    return false;
}

/* Runs before libc and libgomp are initialised (see above): only the kernel's argv/envp,
 * malloc, readlink and execve. On any failure it returns and the program starts normally. */
static void set_passive_wait_policy(int argc, char **argv, char **envp)
{
    (void)argc;
    if (has_variable(envp, MARKER) && has_variable(envp, "OMP_WAIT_POLICY=passive")) {
        policy_set_by_library = true; /* the second start (or a child of a moire program) */
        return;
    }
    if (!argv || !envp || has_variable(envp, "OMP_WAIT_POLICY=") ||
        has_variable(envp, "GOMP_SPINCOUNT=") || getauxval(AT_SECURE))
        return;
    char self[4096];
    ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
    if (length <= 0)
        return;
    self[length] = '\0';
    const char *base = strrchr(self, '/');
    base = base ? base + 1 : self;
    if (strncmp(base, "ld-", 3) == 0 || strstr(base, ".so"))
        return; /* started as `ld.so PROGRAM`: re-executing /proc/self/exe would lose PROGRAM */
    size_t count = 0;
    while (envp[count])
        count++;
    char **env = malloc((count + 3) * sizeof *env);
    if (!env)
        return;
    memcpy(env, envp, count * sizeof *env);
    env[count] = "OMP_WAIT_POLICY=passive";
    env[count + 1] = MARKER;
    env[count + 2] = NULL;
    execve("/proc/self/exe", argv, env);
    free(env); /* the exec failed: start once, with OpenMP's default */
}

__attribute__((used, section(".preinit_array")))
static void (*const moire_preinit_wait_policy)(int, char **, char **) = set_passive_wait_policy;

const char *moire_thread_wait_policy(void)
{
    if (policy_set_by_library)
        return "passive (set by libmoire)";
    const char *policy = getenv("OMP_WAIT_POLICY");
    const char *spin = getenv("GOMP_SPINCOUNT");
    if (policy && (strcasecmp(policy, "passive") == 0))
        return "passive (OMP_WAIT_POLICY)";
    if (policy && strcasecmp(policy, "active") == 0)
        return "active: threads spin (OMP_WAIT_POLICY)";
    if (spin)
        return "spin count from GOMP_SPINCOUNT";
    return "OpenMP default: threads spin about 3 ms (libmoire's setting did not run)";
}
