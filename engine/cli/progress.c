/* progress.c — what a running command shows on stderr: generate's progress bar (tty) or
 * 10 % lines, eval's per-image progress line, and the engine's log messages. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

bool on_progress(const moire_progress *p, void *user_data)
{
    progress_state *state = user_data;
    if (g_interrupted)
        return false;
    if (state->quiet || p->step_count <= 0)
        return true;
    /* The engine may run several images of a batch together, so the label counts the
       batch rather than naming one image. */
    char image[48] = "";
    if (p->image_count > 1)
        snprintf(image, sizeof image, "%d images  ", p->image_count);
    if (state->tty) {
        if (state->drawn && p->step < p->step_count && p->elapsed_s - state->last_draw < 0.05)
            return true;
        state->last_draw = p->elapsed_s;
        enum { WIDTH = 30 };
        char bar[WIDTH + 1];
        int filled = (int)((long)p->step * WIDTH / p->step_count);
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < filled ? '#' : '.';
        bar[WIDTH] = '\0';
        char eta[32] = "";
        if (p->remaining_s >= 60)
            snprintf(eta, sizeof eta, "  %d min %02d s left", (int)(p->remaining_s / 60),
                     (int)p->remaining_s % 60);
        else if (p->remaining_s >= 0)
            snprintf(eta, sizeof eta, "  %.1f s left", p->remaining_s);
        fprintf(stderr, "\r%s[%s] step %d/%d%s\033[K", image, bar, p->step, p->step_count, eta);
        state->drawn = true;
    } else {
        int decile = (int)((long)p->step * 10 / p->step_count);
        if (p->image_index != state->last_image) { /* the next chunk of the batch */
            state->last_image = p->image_index;
            state->last_decile = -1;
        }
        if (decile != state->last_decile) {
            state->last_decile = decile;
            fprintf(stderr, "%sstep %d/%d\n", image, p->step, p->step_count);
        }
    }
    return true;
}

void end_progress(progress_state *state)
{
    if (state->drawn) {
        fputs("\r\033[K", stderr);
        state->drawn = false;
    }
}

/* Engine warnings (e.g. "latent model shown without the VAE") go to stderr; info and debug
 * messages only with MOIRE_VERBOSE set. */
void print_engine_log(moire_log_level level, const char *message, void *user_data)
{
    (void)user_data;
    if (level >= MOIRE_LOG_WARNING)
        fprintf(stderr, "moire: warning: %s\n", message);
    else if (getenv("MOIRE_VERBOSE"))
        fprintf(stderr, "moire: %s\n", message);
}

bool on_eval_progress(const moire_progress *p, void *user_data)
{
    eval_progress *state = user_data;
    if (g_interrupted)
        return false;
    if (p->nfe > state->nfe)
        state->nfe = p->nfe;
    if (state->quiet || !state->tty || p->step_count <= 0)
        return true;
    if (state->drawn && p->step < p->step_count && p->elapsed_s - state->last_draw < 0.05)
        return true;
    state->last_draw = p->elapsed_s;
    const char *phase = state->burning_in ? "burn-in " : "";
    if (p->image_count == 1)
        fprintf(stderr, "\rimage %d of %d: %sstep %d/%d\033[K", state->done + 1, state->total,
                phase, p->step, p->step_count);
    else
        fprintf(stderr, "\rimages %d-%d of %d: %sstep %d/%d\033[K", state->done + 1,
                state->done + p->image_count, state->total, phase, p->step, p->step_count);
    state->drawn = true;
    return true;
}

void end_progress_line(eval_progress *state)
{
    if (state->drawn) {
        fputs("\r\033[K", stderr);
        state->drawn = false;
    }
}

/* Engine messages as print_engine_log, but a warning that repeats the previous one is left
 * out: eval calls moire_generate once per batch, and each call would say it again. */
void print_engine_log_once(moire_log_level level, const char *message, void *user_data)
{
    static char last[1024];
    if (level >= MOIRE_LOG_WARNING && strncmp(message, last, sizeof last - 1) == 0)
        return;
    if (level >= MOIRE_LOG_WARNING)
        snprintf(last, sizeof last, "%s", message);
    print_engine_log(level, message, user_data);
}
