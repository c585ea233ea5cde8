/* vocabulary.c — what a text-conditioned (EC-DiT) model understands, for the hosts' prompt
 * fields: its words (completion) and, for a prompt being typed, which words it does not
 * know (underlined as you type, instead of a warning after a whole generation).
 *
 * The words are split exactly as the engine's tokenizer splits them (ecdit_is_word_byte,
 * ASCII lower-casing, ecdit_vocab_lookup), so "unknown" here is precisely "becomes [UNK]". */
#include <string.h>

#include "ecdit.h"
#include "model.h"
#include "moire.h"

/* The first four vocabulary entries are [PAD] [BOS] [EOS] [UNK]: not words anyone types. */
#define FIRST_WORD 4

int moire_model_vocabulary_size(const moire_model *model)
{
    if (!model || model->family != MOIRE_FAMILY_EC_DIT || !model->ecdit)
        return 0;
    int size = model->ecdit->vocab.size - FIRST_WORD;
    return size > 0 ? size : 0;
}

const char *moire_model_vocabulary_word(const moire_model *model, int index)
{
    if (index < 0 || index >= moire_model_vocabulary_size(model))
        return NULL;
    return model->ecdit->vocab.words[FIRST_WORD + index];
}

int moire_model_check_prompt(const moire_model *model, const char *prompt,
                             moire_prompt_word *words, int max_words)
{
    if (!model || !prompt || moire_model_vocabulary_size(model) == 0)
        return 0;
    const ecdit_vocab *vocab = &model->ecdit->vocab;
    int count = 0;
    const char *c = prompt;
    char word[256];
    while (*c) {
        if (!ecdit_is_word_byte((unsigned char)*c)) {
            c++;
            continue;
        }
        const char *start = c;
        size_t length = 0;
        bool too_long = false;
        for (; ecdit_is_word_byte((unsigned char)*c); c++) {
            if (length < sizeof word)
                word[length++] = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
            else
                too_long = true;
        }
        bool known = !too_long && ecdit_vocab_lookup(vocab, word, length) != ECDIT_TOKEN_UNK;
        if (count < max_words && words)
            words[count] = (moire_prompt_word){(size_t)(start - prompt), (size_t)(c - start),
                                               known};
        count++;
    }
    return count;
}
