/* fuzz_tokenize.c — libFuzzer target for the tokenizer on arbitrary bytes, with the real
 * vocabulary of the default model (models/kvscope-tiny.gguf) in both of the tokenizer's modes:
 * as read from the GGUF (llama.cpp SPM rules) and the same pieces and scores written as a
 * llama2.c tokenizer.bin in memory (run.c rules). For every input:
 *  - invalid UTF-8 (judged by fuzz.h's own RFC 3629 check) is rejected with KS_ERR_ARG and a
 *    message naming the offset of the first bad byte, and nothing is returned;
 *  - valid UTF-8 encodes (ids inside the vocabulary, BOS first) and decodes back, streamed one
 *    token at a time, to exactly the input. Two documented differences are allowed for:
 *    llama.cpp reads a U+2581 in the text as a space (so it comes back as ' '), and a token
 *    decoding to nothing (<unk>) can only appear where the vocabulary has no byte fallback for
 *    some byte, which the real vocabulary always has (checked at start-up).
 * Depth: 1 valid UTF-8 that round-tripped in both modes (invalid input stays at 0). */
#include "fuzz.h"
#include "gguf.h"
#include "tokenizer.h"

const int ks_fuzz_full = 1;

#ifndef KS_SOURCE_DIR
#error "KS_SOURCE_DIR must name the source tree (models/kvscope-tiny.gguf)"
#endif

static ks_tokenizer *g_spm, *g_l2c; /* GGUF (llama.cpp rules), tokenizer.bin (llama2.c rules) */

/* The GGUF vocabulary as a tokenizer.bin: i32 max length, then (f32 score, i32 len, bytes). */
static ks_tokenizer *as_tokenizer_bin(const ks_tokenizer *t) {
  const int V = tokenizer_vocab_size(t);
  size_t cap = 4 + (size_t)V * 8 + 1, n = 0;
  for (int i = 0; i < V; i++) {
    size_t l;
    tokenizer_piece(t, i, &l);
    cap += l;
  }
  unsigned char *b = malloc(cap);
  KS_FUZZ_CHECK(b, "out of memory");
  int32_t maxlen = (int32_t)tokenizer_max_piece_len(t);
  memcpy(b, &maxlen, 4);
  n = 4;
  for (int i = 0; i < V; i++) {
    size_t l;
    const char *p = tokenizer_piece(t, i, &l);
    float sc = tokenizer_score(t, i);
    int32_t l32 = (int32_t)l;
    memcpy(b + n, &sc, 4);
    memcpy(b + n + 4, &l32, 4);
    memcpy(b + n + 8, p, l);
    n += 8 + l;
  }
  ks_tokenizer *out = NULL;
  ks_status st = tokenizer_load_llama2c(&out, ks_fuzz_path(b, n), V);
  KS_FUZZ_CHECK(st == KS_OK, "the vocabulary as tokenizer.bin does not load: %s", ks_last_error());
  free(b);
  return out;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *path = KS_SOURCE_DIR "/models/kvscope-tiny.gguf";
  ks_gguf *g = NULL;
  ks_status st = gguf_open(&g, path);
  KS_FUZZ_CHECK(st == KS_OK, "cannot open the default model: %s", ks_last_error());
  st = tokenizer_from_gguf(&g_spm, g);
  KS_FUZZ_CHECK(st == KS_OK, "cannot read its tokenizer: %s", ks_last_error());
  gguf_close(g);
  g_l2c = as_tokenizer_bin(g_spm);
  /* every byte has a fallback token, so <unk> never comes out of encoding */
  for (int b = 0; b < 256; b++) {
    char piece[8];
    snprintf(piece, sizeof piece, "<0x%02X>", b);
    int found = 0;
    for (int i = 0; i < tokenizer_vocab_size(g_spm) && !found; i++) {
      size_t l;
      const char *p = tokenizer_piece(g_spm, i, &l);
      found = l == 6 && memcmp(p, piece, 6) == 0 && tokenizer_type(g_spm, i) == 6;
    }
    KS_FUZZ_CHECK(found, "the vocabulary has no byte token %s", piece);
  }
  return 0;
}

/* Encodes and decodes text with t; `spm` selects the expected treatment of U+2581. */
static void round_trip(const ks_tokenizer *t, const unsigned char *text, size_t len, int spm) {
  int *ids = NULL, n = 0;
  ks_status st = tokenizer_encode(t, (const char *)text, len, 1, &ids, &n);
  KS_FUZZ_CHECK(st == KS_OK, "encoding %zu bytes of valid UTF-8 failed: %s", len, ks_last_error());
  const int V = tokenizer_vocab_size(t);
  KS_FUZZ_CHECK(n >= 1 && ids[0] == tokenizer_bos(t), "no BOS first");
  const size_t cap = 3 * tokenizer_max_piece_len(t) + 16;
  char *piece = malloc(cap), *got = malloc(cap * (size_t)(n + 1));
  unsigned char *want = malloc(len + 1);
  KS_FUZZ_CHECK(piece && got && want, "out of memory");
  size_t w = 0, e = 0;
  ks_detok d;
  detok_init(&d);
  for (int i = 0; i < n; i++) {
    KS_FUZZ_CHECK(ids[i] >= 0 && ids[i] < V, "token %d = %d outside the vocabulary", i, ids[i]);
    KS_FUZZ_CHECK(i == 0 || tokenizer_type(t, ids[i]) != 2, "<unk> at token %d", i);
    size_t k = tokenizer_decode(t, &d, ids[i], piece, cap);
    KS_FUZZ_CHECK(k < cap, "decode wrote %zu bytes into %zu", k, cap);
    memcpy(got + w, piece, k);
    w += k;
  }
  w += detok_flush(&d, got + w, cap);
  for (size_t i = 0; i < len;) {
    if (spm && i + 3 <= len && text[i] == 0xE2 && text[i + 1] == 0x96 && text[i + 2] == 0x81) {
      want[e++] = ' ';
      i += 3;
    } else {
      want[e++] = text[i++];
    }
  }
  if (w != e || memcmp(got, want, e) != 0) {
    fprintf(stderr, "round trip (%s rules) of %zu bytes gave %zu bytes back; tokens:",
            spm ? "llama.cpp" : "llama2.c", len, w);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
    KS_FUZZ_CHECK(0, "decode(encode(text)) != text");
  }
  free(piece);
  free(got);
  free(want);
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ks_fuzz_depth = 0;
  if (!g_spm) LLVMFuzzerInitialize(NULL, NULL);
  size_t bad = ks_fuzz_utf8_bad(data, size);
  if (bad < size) {
    const ks_tokenizer *both[2] = {g_spm, g_l2c};
    for (int k = 0; k < 2; k++) {
      int *ids = (int *)1, n = -1;
      ks_fuzz_clear_error();
      ks_status st = tokenizer_encode(both[k], (const char *)data, size, 1, &ids, &n);
      KS_FUZZ_CHECK(st == KS_ERR_ARG, "invalid UTF-8 (first bad byte at %zu) gave status %s", bad,
                    ks_status_name(st));
      KS_FUZZ_CHECK(ids == NULL && n == 0, "a rejected prompt returned tokens");
      const char *msg = ks_last_error(), *at = strstr(msg, "offset ");
      KS_FUZZ_CHECK(strstr(msg, "UTF-8") && at && strtoull(at + 7, NULL, 10) == bad,
                    "message does not name UTF-8 and offset %zu: %s", bad, msg);
    }
    return 0;
  }
  round_trip(g_spm, data, size, 1);
  round_trip(g_l2c, data, size, 0);
  ks_fuzz_depth = 1;
  return 0;
}
