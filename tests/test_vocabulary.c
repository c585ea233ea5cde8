/* test_vocabulary.c — the prompt-field API of text-conditioned models (engine/vocabulary.c):
 * the vocabulary without its special tokens, and words split and looked up exactly as the
 * tokenizer does (case, punctuation, UTF-8), with the byte ranges a GUI underlines. */
#include <string.h>

#include "moire.h"
#include "test_util.h"

int main(void)
{
    moire_model *ecdit = NULL, *dit = NULL;
    CHECK(moire_model_load(test_data_path("golden/tiny_ecdit.safetensors"), &ecdit) == MOIRE_OK,
          "%s", moire_last_error());
    CHECK(moire_model_load(test_data_path("golden/tiny_qkv.safetensors"), &dit) == MOIRE_OK,
          "%s", moire_last_error());
    if (!ecdit || !dit)
        return test_finish("vocabulary");

    /* tiny_ecdit ships 32 entries: [PAD] [BOS] [EOS] [UNK] and 28 words, "a" first */
    int size = moire_model_vocabulary_size(ecdit);
    CHECK(size == 28, "vocabulary size %d, want 28", size);
    CHECK(moire_model_vocabulary_word(ecdit, 0) && strcmp(moire_model_vocabulary_word(ecdit, 0), "a") == 0,
          "first word %s", moire_model_vocabulary_word(ecdit, 0));
    CHECK(moire_model_vocabulary_word(ecdit, size) == NULL, "past the end is NULL");
    CHECK(moire_model_vocabulary_word(ecdit, -1) == NULL, "negative is NULL");
    for (int i = 0; i < size; i++)
        CHECK(moire_model_vocabulary_word(ecdit, i)[0] != '[', "special token %d listed", i);

    /* "A Red  apple, zzqx!café" → a, red, apple, zzqx (unknown), café (UTF-8, known) */
    const char *prompt = "A Red  apple, zzqx!caf\xc3\xa9";
    moire_prompt_word words[8];
    int n = moire_model_check_prompt(ecdit, prompt, words, 8);
    CHECK(n == 5, "%d words, want 5", n);
    if (n == 5) {
        static const size_t starts[5] = {0, 2, 7, 14, 19}, lengths[5] = {1, 3, 5, 4, 5};
        static const bool known[5] = {true, true, true, false, true};
        for (int i = 0; i < 5; i++)
            CHECK(words[i].start == starts[i] && words[i].length == lengths[i] &&
                      words[i].known == known[i],
                  "word %d: start %zu length %zu known %d", i, words[i].start, words[i].length,
                  words[i].known);
    }
    /* fewer slots than words: the count is still the whole prompt's */
    CHECK(moire_model_check_prompt(ecdit, prompt, words, 2) == 5, "count with 2 slots");
    CHECK(moire_model_check_prompt(ecdit, "", words, 8) == 0, "empty prompt");

    /* class-conditional: no vocabulary, nothing to check word by word */
    CHECK(moire_model_vocabulary_size(dit) == 0, "DiT-MoE has no vocabulary");
    CHECK(moire_model_vocabulary_word(dit, 0) == NULL, "DiT-MoE word 0 is NULL");
    CHECK(moire_model_check_prompt(dit, "goldfish", words, 8) == 0, "DiT-MoE prompt not split");

    moire_model_free(ecdit);
    moire_model_free(dit);
    return test_finish("vocabulary");
}
