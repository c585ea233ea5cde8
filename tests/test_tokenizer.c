/* test_tokenizer.c — EC-DiT's word-level tokenizer and vocabulary (engine/tokenizer.c):
 * splitting, case, UTF-8 words, [UNK], truncation, padding, and the vocabulary checks
 * (special tokens first, no duplicates, the size the config promises). The golden suite
 * checks the same rules against tools/golden/ecdit_ref.py. */
#include "ecdit.h"
#include "internal.h"
#include "test_util.h"

#include <string.h>

static const char *vocab_json =
    "[\"[PAD]\", \"[BOS]\", \"[EOS]\", \"[UNK]\", \"red\", \"apple\", \"a\", \"caf\xc3\xa9\", "
    "\"2nd\", \"s\"]";

static void expect(const ecdit_vocab *vocab, const char *text, int max_tokens,
                   const int32_t *want, int unknown, int dropped)
{
    int32_t ids[16];
    ecdit_token_info info;
    ecdit_tokenize(vocab, text, max_tokens, ids, &info);
    bool same = true;
    for (int i = 0; i < max_tokens; i++)
        same &= ids[i] == want[i];
    CHECK(same, "tokenize \"%s\": ids differ", text);
    CHECK(info.unknown_words == unknown && info.dropped_words == dropped,
          "tokenize \"%s\": %d unknown, %d dropped (want %d, %d)", text, info.unknown_words,
          info.dropped_words, unknown, dropped);
}

static void expect_load_failure(const char *json, int size, const char *words)
{
    ecdit_vocab vocab;
    moire_status status = ecdit_vocab_load(&vocab, json, size, "m.safetensors");
    CHECK(status == MOIRE_ERROR_FORMAT, "vocab %s loaded", json ? json : "(none)");
    CHECK(strstr(moire_last_error(), words) != NULL, "message \"%s\" lacks \"%s\"",
          moire_last_error(), words);
}

int main(void)
{
    ecdit_vocab vocab;
    CHECK(ecdit_vocab_load(&vocab, vocab_json, 10, "m.safetensors") == MOIRE_OK, "%s",
          moire_last_error());
    expect(&vocab, "red apple", 6, (const int32_t[]){1, 4, 5, 2, 0, 0}, 0, 0);
    expect(&vocab, "", 4, (const int32_t[]){1, 2, 0, 0}, 0, 0);
    expect(&vocab, NULL, 2, (const int32_t[]){1, 2}, 0, 0);
    expect(&vocab, "  RED,,Apple!! ", 6, (const int32_t[]){1, 4, 5, 2, 0, 0}, 0, 0);
    expect(&vocab, "a red-apple's 2nd", 8, (const int32_t[]){1, 6, 4, 5, 9, 8, 2, 0}, 0, 0);
    expect(&vocab, "CAF\xc3\xa9 zebra", 5, (const int32_t[]){1, 7, 3, 2, 0}, 1, 0);
    /* UTF-8 bytes are not lowercased: "CAFÉ" is not "café" */
    expect(&vocab, "CAF\xc3\x89", 4, (const int32_t[]){1, 3, 2, 0}, 1, 0);
    expect(&vocab, "red red red red", 4, (const int32_t[]){1, 4, 4, 2}, 0, 2);
    expect(&vocab, "redapple reda", 4, (const int32_t[]){1, 3, 3, 2}, 2, 0);
    CHECK(ecdit_vocab_lookup(&vocab, "apples", 5) == 5, "prefix lookup");
    CHECK(ecdit_vocab_lookup(&vocab, "[PAD]", 5) == 0, "special tokens are vocabulary words");
    ecdit_vocab_free(&vocab);

    expect_load_failure(NULL, 4, "missing");
    expect_load_failure("{}", 4, "JSON array");
    expect_load_failure("[\"[PAD]\", \"[BOS]\", \"[EOS]\", \"[UNK]\"]", 5, "has 4 words");
    expect_load_failure("[\"[BOS]\", \"[PAD]\", \"[EOS]\", \"[UNK]\", \"x\"]", 5, "must be [PAD]");
    expect_load_failure("[\"[PAD]\", \"[BOS]\", \"[EOS]\", \"[UNK]\", \"x\", \"x\"]", 6, "twice");
    expect_load_failure("[\"[PAD]\", \"[BOS]\", \"[EOS]\", \"[UNK]\", \"\"]", 5, "non-empty");
    expect_load_failure("[\"[PAD]\", \"[BOS]\", \"[EOS]\", \"[UNK]\", 7]", 5, "non-empty");
    return test_finish("tokenizer");
}
