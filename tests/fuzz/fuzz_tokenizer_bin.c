/* fuzz_tokenizer_bin.c — libFuzzer target for the llama2.c tokenizer.bin reader
 * (tokenizer_load_llama2c). Input: a little-endian u16 vocabulary size (0: read every entry),
 * then the tokenizer.bin bytes. Properties beyond "no crash, no sanitizer report": every
 * failure records a message; a loaded vocabulary has the requested size, every piece is
 * readable and no longer than tokenizer_max_piece_len; encoding valid UTF-8 (a fixed text, and
 * the input's own tail when that is valid) succeeds with ids inside the vocabulary; decoding any
 * ids, valid or not, yields valid UTF-8 and stays inside the buffer the header promises.
 * Depth: 1 loaded, 2 encoded and decoded. */
#include "fuzz.h"
#include "tokenizer.h"

const int ks_fuzz_full = 2;

static void encode_decode(const ks_tokenizer *t, const char *text, size_t len) {
  int *ids = NULL, n = 0;
  ks_status st = tokenizer_encode(t, text, len, 1, &ids, &n);
  KS_FUZZ_CHECK(st == KS_OK, "encoding %zu bytes of valid UTF-8 failed: %s", len, ks_last_error());
  const int V = tokenizer_vocab_size(t);
  KS_FUZZ_CHECK(n >= 1 && n <= (int)len + 2, "%d tokens for %zu bytes", n, len);
  const size_t cap = 3 * tokenizer_max_piece_len(t) + 16;
  char *piece = malloc(cap), *all = malloc(cap * ((size_t)n + 2));
  KS_FUZZ_CHECK(piece && all, "out of memory");
  size_t w = 0;
  ks_detok d;
  detok_init(&d);
  for (int i = 0; i < n + 1; i++) {
    /* the encoded ids, then one id out of range, which must decode to nothing */
    int id = i < n ? ids[i] : V;
    if (i < n) KS_FUZZ_CHECK(id >= 0 && id < V, "token %d = %d outside the vocabulary", i, id);
    size_t k = tokenizer_decode(t, &d, id, piece, cap);
    KS_FUZZ_CHECK(k < cap && piece[k] == 0, "decode wrote %zu bytes into %zu", k, cap);
    if (i == n) KS_FUZZ_CHECK(k == 0, "id %d (out of range) decoded to %zu bytes", id, k);
    memcpy(all + w, piece, k);
    w += k;
  }
  w += detok_flush(&d, all + w, cap);
  KS_FUZZ_CHECK(ks_fuzz_utf8_ok((const unsigned char *)all, w), "decoded text is not UTF-8");
  free(piece);
  free(all);
  free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ks_fuzz_depth = 0;
  if (size < 2) return 0;
  int vocab = data[0] | data[1] << 8;
  const char *path = ks_fuzz_path(data + 2, size - 2);
  ks_tokenizer *t = NULL;
  ks_fuzz_clear_error();
  ks_status st = tokenizer_load_llama2c(&t, path, vocab);
  if (st) {
    ks_fuzz_check_failure(st, "tokenizer_load_llama2c");
    KS_FUZZ_CHECK(t == NULL, "a failed load returned a tokenizer");
    return 0;
  }
  const int V = tokenizer_vocab_size(t);
  KS_FUZZ_CHECK(V >= 3 && (vocab == 0 || V == vocab), "vocabulary %d, asked for %d", V, vocab);
  KS_FUZZ_CHECK(tokenizer_bos(t) >= 0 && tokenizer_bos(t) < V && tokenizer_eos(t) >= 0 &&
                    tokenizer_eos(t) < V, "bos/eos outside the vocabulary");
  size_t maxlen = 0;
  for (int i = 0; i < V; i++) {
    size_t l = 0;
    const char *p = tokenizer_piece(t, i, &l);
    KS_FUZZ_CHECK(p != NULL, "piece %d missing", i);
    ks_fuzz_touch(p, l);
    if (l > maxlen) maxlen = l;
  }
  KS_FUZZ_CHECK(maxlen == tokenizer_max_piece_len(t), "max piece length %zu, header says %zu",
                maxlen, tokenizer_max_piece_len(t));
  ks_fuzz_depth = 1;
  static const char text[] = "Once upon a time, Zo\xC3\xAB saw \xE6\x97\xA5\xE6\x9C\xAC "
                             "\xF0\x9F\x99\x82 <0x41> <s>\n\t  x\xE2\x96\x81y";
  encode_decode(t, text, sizeof text - 1);
  /* the last bytes of the input: strings that resemble the vocabulary's own pieces */
  size_t tail = size - 2 < 48 ? size - 2 : 48;
  const char *tp = (const char *)data + size - tail;
  if (ks_fuzz_utf8_ok((const unsigned char *)tp, tail)) encode_decode(t, tp, tail);
  tokenizer_destroy(t);
  ks_fuzz_depth = 2;
  return 0;
}
