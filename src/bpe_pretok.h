/* bpe_pretok.h — the pre-tokenizers of byte-level BPE vocabularies: how the text is cut into
 * words before merges, chosen by the GGUF key tokenizer.ggml.pre, with the rules llama.cpp
 * applies for each name (its list of patterns per pre type, applied one after the other, each
 * refining the segments of the one before). The GPT-2 and Llama 3 patterns run through
 * dedicated splitters, as in llama.cpp (whose hand-written versions those are; bpe_regex gives
 * the same cuts and is the tests' cross-check); every other pattern runs through bpe_regex.
 * Not the merges and not the byte-level encoding: tokenizer.c does those. */
#ifndef KS_BPE_PRETOK_H
#define KS_BPE_PRETOK_H
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct ks_pretok ks_pretok;

/* name: the value of tokenizer.ggml.pre; NULL or "" selects llama.cpp's "default" rules. An
 * unknown name fails with KS_ERR_UNSUPPORTED naming it. */
ks_status pretok_create(ks_pretok **out, const char *name);
void pretok_destroy(ks_pretok *p);

/* The canonical name of the rule set ("llama3" for "llama-bpe", ...). */
const char *pretok_name(const ks_pretok *p);
/* llama.cpp's per-type defaults: a word that is itself a token skips the merges (llama3,
 * tekken, ...); prompts start with BOS unless tokenizer.ggml.add_bos_token says otherwise;
 * the vocabulary has no BOS token at all (chatglm). */
int pretok_ignore_merges(const ks_pretok *p);
int pretok_add_bos(const ks_pretok *p);
int pretok_no_bos(const ks_pretok *p);

/* Cuts n code points into words: *n_words lengths (in code points, in order, summing to n) in
 * lens, which needs room for n entries. */
ks_status pretok_split(const ks_pretok *p, const uint32_t *cps, size_t n, size_t *lens,
                       size_t *n_words);

/* The two dedicated splitters, on one segment of n code points with their unicode_flags:
 * append word lengths to lens and return how many. Exposed for the tests. */
size_t pretok_split_gpt2(const uint32_t *cps, const uint16_t *flags, size_t n, size_t *lens);
size_t pretok_split_llama3(const uint32_t *cps, const uint16_t *flags, size_t n, size_t *lens);

/* The patterns llama.cpp gives these splitters (std::regex would give the same cuts). */
extern const char *const ks_pretok_gpt2_pattern;
extern const char *const ks_pretok_llama3_pattern;

#endif
