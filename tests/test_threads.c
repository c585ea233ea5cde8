/* test_threads.c — libmoire makes OpenMP threads sleep instead of spin (engine/threads.c),
 * and it really takes effect inside libgomp.
 *
 * The test runs itself twice as a child process, each time measuring how much CPU time the
 * process burns while its main thread sleeps between many tiny two-thread parallel regions:
 *   1. with OMP_WAIT_POLICY and GOMP_SPINCOUNT removed from the environment: libmoire must
 *      have set "passive" before libgomp started, and the idle worker must not spin
 *      (CPU time well under the wall time);
 *   2. with OMP_WAIT_POLICY=active: the worker spins through every pause (CPU time close to
 *      the wall time) — this proves the measurement can tell the two apart, and that a
 *      user's own setting is left alone.
 * (The meson test environment sets OMP_WAIT_POLICY=PASSIVE itself, so without removing it
 * the first case would prove nothing.) */
#include <errno.h>
#include <omp.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "moire.h"
#include "test_util.h"

extern char **environ;

static double seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Child: 150 rounds of a tiny 2-thread region then a 2 ms sleep of the main thread (shorter
 * than libgomp's default 3 ms spin, so a spinning worker spins through the whole pause).
 * Prints "ratio <cpu/wall> policy <moire_thread_wait_policy()>". */
static int measure(void)
{
    volatile double sink = 0.0;
    const struct timespec pause = {0, 2000000};
    /* the first region starts the worker thread; not measured */
#pragma omp parallel num_threads(2)
    sink += omp_get_thread_num();
    double wall0 = seconds(CLOCK_MONOTONIC), cpu0 = seconds(CLOCK_PROCESS_CPUTIME_ID);
    for (int round = 0; round < 150; round++) {
#pragma omp parallel num_threads(2)
        {
            double local = 0.0;
            for (int i = 0; i < 1000; i++)
                local += i * 1e-9;
#pragma omp atomic
            sink += local;
        }
        nanosleep(&pause, NULL);
    }
    double wall = seconds(CLOCK_MONOTONIC) - wall0;
    double cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    printf("ratio %.3f policy %s\n", cpu / wall, moire_thread_wait_policy());
    return 0;
}

/* Runs this program with `--measure` in an environment without OMP_WAIT_POLICY and
 * GOMP_SPINCOUNT, plus `extra` ("NAME=value") when given; parses the child's line. */
static int run_child(const char *self, const char *extra, double *ratio, char *policy,
                     size_t policy_size)
{
    char *env[512];
    int n = 0;
    for (char **e = environ; *e && n < 500; e++)
        if (strncmp(*e, "OMP_WAIT_POLICY=", 16) != 0 && strncmp(*e, "GOMP_SPINCOUNT=", 15) != 0)
            env[n++] = *e;
    if (extra)
        env[n++] = (char *)extra;
    env[n] = NULL;
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    char *argv[] = {(char *)self, "--measure", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, self, &actions, NULL, argv, env);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    if (rc != 0) {
        close(fds[0]);
        fprintf(stderr, "cannot run %s: %s\n", self, strerror(rc));
        return -1;
    }
    char line[512] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof line - 1 && (r = read(fds[0], line + got, sizeof line - 1 - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    line[strcspn(line, "\n")] = '\0';
    const char *p = strstr(line, " policy ");
    if (sscanf(line, "ratio %lf", ratio) != 1 || !p || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child said \"%s\"\n", line);
        return -1;
    }
    snprintf(policy, policy_size, "%s", p + 8);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--measure") == 0)
        return measure();

    double passive = 0.0, active = 0.0;
    char passive_policy[256] = "", active_policy[256] = "";
    CHECK(run_child("/proc/self/exe", NULL, &passive, passive_policy, sizeof passive_policy) == 0,
          "child without OMP_WAIT_POLICY failed");
    CHECK(run_child("/proc/self/exe", "OMP_WAIT_POLICY=active", &active, active_policy,
                    sizeof active_policy) == 0,
          "child with OMP_WAIT_POLICY=active failed");
    printf("CPU time / wall time while idle between regions: libmoire's default %.2f (%s), "
           "OMP_WAIT_POLICY=active %.2f (%s)\n",
           passive, passive_policy, active, active_policy);
    CHECK(strcmp(passive_policy, "passive (set by libmoire)") == 0,
          "the library did not set its policy before libgomp started: \"%s\"", passive_policy);
    CHECK(strncmp(active_policy, "active", 6) == 0,
          "the user's OMP_WAIT_POLICY=active was not kept: \"%s\"", active_policy);
    /* Sleeping workers: almost no CPU while the main thread sleeps (measured 0.02).
     * Spinning ones: as much of a core as the scheduler gives them — 0.6 on a quiet shared
     * 2-core machine, 0.24 at a load average of 20 — so the control asks only for clearly
     * more than the sleeping case. */
    CHECK(passive < 0.3, "idle OpenMP threads still burn %.2f of a core", passive);
    CHECK(active > 0.1 && active > 4 * passive,
          "the measurement cannot tell spinning threads (%.2f) from sleeping ones (%.2f)", active,
          passive);
    return test_finish("threads");
}
