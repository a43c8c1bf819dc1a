/* tokenizer.h — the tokenizers of llama2.c and GGUF models:
 *   - SentencePiece-style BPE of Llama 2 / llama2.c (merge the best-scoring pair first, byte
 *     fallback to <0xXX> tokens, a leading space added to the text), from a llama2.c
 *     tokenizer.bin or from GGUF metadata (tokenizer.ggml.model = "llama");
 *   - byte-level BPE of GPT-2, Llama 3, Qwen2, SmolLM, StarCoder... (tokenizer.ggml.model =
 *     "gpt2": words cut by the pre-tokenizer tokenizer.ggml.pre names, bytes spelt in GPT-2's
 *     alphabet, merges in tokenizer.ggml.merges order);
 * with llama.cpp's rules for special tokens and BOS/EOS, so ids match llama-tokenize's.
 * Decoding streams: it only ever emits complete UTF-8 sequences. */
#ifndef KS_TOKENIZER_H
#define KS_TOKENIZER_H
#include <stddef.h>
#include <stdio.h>

#include "common.h"

struct ks_gguf;
typedef struct ks_tokenizer ks_tokenizer;

ks_status tokenizer_load_llama2c(ks_tokenizer **out, const char *path, int vocab_size);
ks_status tokenizer_from_gguf(ks_tokenizer **out, const struct ks_gguf *g);
void tokenizer_destroy(ks_tokenizer *t);

int tokenizer_vocab_size(const ks_tokenizer *t);
/* Special ids; -1 where the vocabulary has none (byte-level BPE vocabularies often lack unk). */
int tokenizer_bos(const ks_tokenizer *t);
int tokenizer_eos(const ks_tokenizer *t);
int tokenizer_unk(const ks_tokenizer *t);
/* Whether prompts should start with BOS / end with EOS (GGUF tokenizer.ggml.add_bos_token and
 * add_eos_token; when absent llama.cpp's defaults: BOS for SPM and the llama3-style byte-level
 * pre-tokenizers, no EOS; llama2.c: BOS). */
int tokenizer_add_bos(const ks_tokenizer *t);
int tokenizer_add_eos(const ks_tokenizer *t);
/* End of generation: EOS and the end-of-turn tokens llama.cpp recognises by their text
 * (<|eot_id|>, <|im_end|>, <|endoftext|>, <end_of_turn>, ...). */
int tokenizer_is_eog(const ks_tokenizer *t, int id);
/* "llama" (SPM from GGUF), "llama2.c" (tokenizer.bin) or "gpt2" (byte-level BPE); the
 * pre-tokenizer's canonical name for byte-level BPE ("llama3", "qwen2", ...), else NULL. */
const char *tokenizer_model_name(const ks_tokenizer *t);
const char *tokenizer_pre_name(const ks_tokenizer *t);
int tokenizer_n_merges(const ks_tokenizer *t); /* 0 unless byte-level BPE */
/* Longest piece in bytes. A tokenizer_decode buffer of 3 * this + 16 bytes never truncates. */
size_t tokenizer_max_piece_len(const ks_tokenizer *t);
/* The piece as stored (SPM: spaces as ' ', byte tokens as "<0xXX>"; byte-level BPE: in GPT-2's
 * alphabet, e.g. "\xC4\xA0the" for " the"). */
const char *tokenizer_piece(const ks_tokenizer *t, int id, size_t *len);

/* Merge score and token type as stored (0 undefined, 1 normal, 2 unknown, 3 control,
 * 4 user-defined, 5 unused, 6 byte). */
float tokenizer_score(const ks_tokenizer *t, int id);
int tokenizer_type(const ks_tokenizer *t, int id);

/* Flags of tokenizer_encode_ex. */
enum {
  KS_TOK_ADD_SPECIAL = 1,   /* BOS / EOS as tokenizer_add_bos / tokenizer_add_eos say */
  KS_TOK_PARSE_SPECIAL = 2, /* control and unknown tokens written in the text become those
                               tokens (GGUF only); user-defined tokens always do */
};
/* Encodes len bytes of text. Invalid UTF-8 is rejected with KS_ERR_ARG (message gives the byte
 * offset). *tokens is malloc'd; the caller frees it. */
ks_status tokenizer_encode_ex(const ks_tokenizer *t, const char *text, size_t len,
                              unsigned flags, int **tokens, int *n_tokens);
/* tokenizer_encode_ex with KS_TOK_ADD_SPECIAL if add_bos, never parsing control tokens. */
ks_status tokenizer_encode(const ks_tokenizer *t, const char *text, size_t len, int add_bos,
                           int **tokens, int *n_tokens);

/* Streaming decoder state; zero-initialise it, then call tokenizer_decode for each token. */
typedef struct {
  int prev;                 /* previous token id, -1 at start */
  unsigned char pend[4];    /* bytes of an incomplete UTF-8 character */
  int n_pend;
} ks_detok;
void detok_init(ks_detok *d);
/* Appends the text of `token` to out (capacity cap, always NUL-terminated) and returns the
 * number of bytes written. Bytes of a character split over several tokens are held back
 * until the character is complete; invalid sequences become U+FFFD. Control and unknown tokens
 * give no text; byte-level pieces give the bytes their GPT-2 alphabet characters stand for. */
size_t tokenizer_decode(const ks_tokenizer *t, ks_detok *d, int token, char *out, size_t cap);
/* Emits whatever is still held back (as U+FFFD). */
size_t detok_flush(ks_detok *d, char *out, size_t cap);

/* Prints tokens like llama.cpp's llama-tokenize: with ids_only one line "[1, 2, 3]", otherwise one
 * line per token "ID -> 'piece'" (the bytes the token stands for; control tokens as their
 * text). */
void tokenizer_print_tokens(const ks_tokenizer *t, const int *ids, int n, int ids_only, FILE *f);

/* 1 if the len bytes are valid UTF-8; else 0 and *bad_offset is the first bad byte. */
int ks_utf8_valid(const char *s, size_t len, size_t *bad_offset);

#endif
