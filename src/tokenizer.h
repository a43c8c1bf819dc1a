/* tokenizer.h — the SentencePiece-style BPE of Llama 2 / llama2.c (merge the best-scoring pair
 * first, byte fallback to <0xXX> tokens, optional BOS, a leading space added to non-empty text),
 * loaded from a llama2.c tokenizer.bin or from GGUF metadata (tokenizer.ggml.model = "llama").
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
int tokenizer_bos(const ks_tokenizer *t);
int tokenizer_eos(const ks_tokenizer *t);
/* Whether prompts should start with BOS (GGUF tokenizer.ggml.add_bos_token; 1 for llama2.c). */
int tokenizer_add_bos(const ks_tokenizer *t);
/* Longest piece in bytes. A tokenizer_decode buffer of 3 * this + 16 bytes never truncates. */
size_t tokenizer_max_piece_len(const ks_tokenizer *t);
/* The piece as stored (spaces as ' ', byte tokens as "<0xXX>"). */
const char *tokenizer_piece(const ks_tokenizer *t, int id, size_t *len);

/* Merge score and SentencePiece token type (1 normal, 2 unknown, 3 control, 6 byte). */
float tokenizer_score(const ks_tokenizer *t, int id);
int tokenizer_type(const ks_tokenizer *t, int id);

/* Encodes len bytes of text. Invalid UTF-8 is rejected with KS_ERR_ARG (message gives the byte
 * offset). *tokens is malloc'd; the caller frees it. */
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
 * number of bytes written. Bytes of a character split over several byte tokens are held back
 * until the character is complete; invalid sequences become U+FFFD. */
size_t tokenizer_decode(const ks_tokenizer *t, ks_detok *d, int token, char *out, size_t cap);
/* Emits whatever is still held back (as U+FFFD). */
size_t detok_flush(ks_detok *d, char *out, size_t cap);

/* Prints tokens like llama.cpp's llama-tokenize: with ids_only one line "[1, 2, 3]", otherwise one
 * line per token "ID -> 'piece'" (byte tokens as their raw byte). */
void tokenizer_print_tokens(const ks_tokenizer *t, const int *ids, int n, int ids_only, FILE *f);

/* 1 if the len bytes are valid UTF-8; else 0 and *bad_offset is the first bad byte. */
int ks_utf8_valid(const char *s, size_t len, size_t *bad_offset);

#endif
