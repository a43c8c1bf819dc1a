/* make_seeds.c — writes the seed corpus of tests/fuzz/corpus (run once; its output is checked
 * in, so this program documents where each seed came from):
 *   make_seeds OUT_DIR [SHARED_DIR]
 * gguf/: tiny llama models written with gguf_writer (F32; Q8_0 with an F16 output; Q4_0 tied,
 * 64-byte alignment, two layers; F16/BF16), a file with a key of every GGUF value type, and a
 * vocabulary-only file. llama2c/: tiny checkpoints (shared and separate classifier) and two
 * rejected headers. tokenizer_bin/: a small tokenizer.bin with and without an explicit
 * vocabulary size, and SHARED_DIR/models/tok512.bin when present. tokenize/: prompts, valid and
 * not (overlong, surrogate, truncated, out of range). cache_file/: a block written by
 * cache_file_write for the block the target asks for, the same from another model, a newer
 * format version, a truncated copy and one with a damaged payload. Files named valid-* must reach the
 * target's deepest level; the replay test enforces it. Weights come from a fixed LCG.
 * What it is not: a fuzz target (it is not linked with libFuzzer). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cache_file.h"
#include "fuzz.h"
#include "gguf.h"
#include "quant.h"

static uint32_t g_lcg = 12345;
static float rnd(float scale) {
  g_lcg = g_lcg * 1664525u + 1013904223u;
  return ((g_lcg >> 8) * (1.0f / 16777216.0f) - 0.5f) * 2.0f * scale;
}

static void die(const char *what) {
  fprintf(stderr, "make_seeds: %s: %s\n", what, errno ? strerror(errno) : ks_last_error());
  exit(1);
}

static void write_file(const char *dir, const char *sub, const char *name, const void *p, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, sub);
  mkdir(path, 0777);
  snprintf(path, sizeof path, "%s/%s/%s", dir, sub, name);
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) die(path);
  printf("%s (%zu bytes)\n", path, n);
}

/* A small SentencePiece-style vocabulary: specials, two byte tokens, pieces with U+2581. */
static const char *const k_pieces[] = {
    "<unk>", "<s>", "</s>", "<0x0A>", "<0x41>", "\xE2\x96\x81", "\xE2\x96\x81" "a", "a", "b",
    "c", "ab", "\xE2\x96\x81" "ab", "\xC3\xA9", "\xE6\x97\xA5", "\xE2\x96\x81the", "t", "h",
    "e", "th", "he"};
#define N_VOCAB ((int)(sizeof k_pieces / sizeof k_pieces[0]))

static void set_vocab(ks_gguf_writer *w) {
  size_t lens[N_VOCAB];
  float scores[N_VOCAB];
  int32_t types[N_VOCAB];
  for (int i = 0; i < N_VOCAB; i++) {
    lens[i] = strlen(k_pieces[i]);
    scores[i] = i < 5 ? 0.0f : -(float)i;
    types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 5 ? 6 : 1;
  }
  gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
  gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", k_pieces, lens, N_VOCAB);
  gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, N_VOCAB);
  gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, N_VOCAB);
  gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
  gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
  gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
  gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
}

/* Tensor bytes stay alive until the writer has written them. */
static void *g_keep[256];
static int g_n_keep;
static const void *keep(void *p) {
  if (!p || g_n_keep == 256) die("out of memory");
  g_keep[g_n_keep++] = p;
  return p;
}
static void free_kept(void) {
  while (g_n_keep) free(g_keep[--g_n_keep]);
}

static void add(ks_gguf_writer *w, const char *name, ks_type t, int64_t cols, int64_t rows,
                float scale, float bias) {
  size_t n = (size_t)(cols * rows);
  float *f = malloc(n * sizeof *f);
  if (!f) die("out of memory");
  for (size_t i = 0; i < n; i++) f[i] = bias + rnd(scale);
  if (t == KS_TYPE_F32) {
    gguf_writer_add_tensor(w, name, t, cols, rows, keep(f));
    return;
  }
  size_t rb = ks_type_row_bytes(t, cols);
  unsigned char *q = malloc(rb * (size_t)rows);
  if (!q) die("out of memory");
  if (t == KS_TYPE_BF16) {
    for (size_t i = 0; i < n; i++) {
      uint32_t bits;
      memcpy(&bits, &f[i], 4);
      uint16_t h = (uint16_t)(bits >> 16);
      memcpy(q + 2 * i, &h, 2);
    }
  } else {
    for (int64_t r = 0; r < rows; r++) ks_quant_row(t, f + r * cols, q + (size_t)r * rb, cols);
  }
  free(f);
  gguf_writer_add_tensor(w, name, t, cols, rows, keep(q));
}

typedef struct {
  const char *file;
  int dim, hidden, layers, heads, kv_heads;
  ks_type wtype, embd_type, out_type;
  int tied; /* no output.weight: the classifier is token_embd */
  uint32_t alignment;
} gguf_spec;

static void tiny_gguf(const char *dir, const gguf_spec *s) {
  ks_gguf_writer *w = gguf_writer_create();
  if (!w) die("out of memory");
  gguf_writer_set_str(w, "general.architecture", "llama");
  gguf_writer_set_str(w, "general.name", "kvscope fuzz seed");
  if (s->alignment) gguf_writer_set_u32(w, "general.alignment", s->alignment);
  gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)s->dim);
  gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)s->hidden);
  gguf_writer_set_u32(w, "llama.block_count", (uint32_t)s->layers);
  gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)s->heads);
  gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)s->kv_heads);
  gguf_writer_set_u32(w, "llama.context_length", 16);
  gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
  gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f);
  gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)(s->dim / s->heads));
  set_vocab(w);
  const int d = s->dim, h = s->hidden, kv = s->dim / s->heads * s->kv_heads;
  add(w, "token_embd.weight", s->embd_type, d, N_VOCAB, 0.5f, 0.0f);
  add(w, "output_norm.weight", KS_TYPE_F32, d, 1, 0.1f, 1.0f);
  if (!s->tied) add(w, "output.weight", s->out_type, d, N_VOCAB, 0.5f, 0.0f);
  for (int l = 0; l < s->layers; l++) {
    char name[64];
#define T(suffix, type, cols, rows, scale, bias)                     \
  snprintf(name, sizeof name, "blk.%d." suffix ".weight", l);        \
  add(w, name, type, cols, rows, scale, bias)
    T("attn_norm", KS_TYPE_F32, d, 1, 0.1f, 1.0f);
    T("attn_q", s->wtype, d, d, 0.3f, 0.0f);
    T("attn_k", s->wtype, d, kv, 0.3f, 0.0f);
    T("attn_v", s->wtype, d, kv, 0.3f, 0.0f);
    T("attn_output", s->wtype, d, d, 0.3f, 0.0f);
    T("ffn_norm", KS_TYPE_F32, d, 1, 0.1f, 1.0f);
    T("ffn_gate", s->wtype, d, h, 0.3f, 0.0f);
    T("ffn_down", s->wtype, h, d, 0.3f, 0.0f);
    T("ffn_up", s->wtype, d, h, 0.3f, 0.0f);
#undef T
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/gguf", dir);
  mkdir(path, 0777);
  snprintf(path, sizeof path, "%s/gguf/%s", dir, s->file);
  if (gguf_writer_write(w, path) != KS_OK) die(path);
  gguf_writer_destroy(w);
  free_kept();
  printf("%s\n", path);
}

static void other_ggufs(const char *dir) {
  /* a key of every value type, a 3-D tensor and an I32 tensor: opens, but is no model */
  ks_gguf_writer *w = gguf_writer_create();
  gguf_writer_set_u8(w, "t.u8", 200);
  gguf_writer_set_i8(w, "t.i8", -100);
  gguf_writer_set_u16(w, "t.u16", 60000);
  gguf_writer_set_i16(w, "t.i16", -30000);
  gguf_writer_set_u32(w, "t.u32", 4000000000u);
  gguf_writer_set_i32(w, "t.i32", -2000000000);
  gguf_writer_set_f32(w, "t.f32", 1.5f);
  gguf_writer_set_bool(w, "t.bool", 1);
  gguf_writer_set_str(w, "t.str", "h\xC3\xA9llo");
  gguf_writer_set_u64(w, "t.u64", 18000000000000000000ull);
  gguf_writer_set_i64(w, "t.i64", -9000000000000000000ll);
  gguf_writer_set_f64(w, "t.f64", -2.25);
  static const uint16_t a16[3] = {1, 2, 65535};
  static const double a64[2] = {0.5, -1e300};
  static const uint8_t a8[4] = {0, 1, 254, 255};
  gguf_writer_set_arr(w, "t.arr.u16", GGUF_T_UINT16, a16, 3);
  gguf_writer_set_arr(w, "t.arr.f64", GGUF_T_FLOAT64, a64, 2);
  gguf_writer_set_arr(w, "t.arr.bool", GGUF_T_BOOL, a8, 4);
  gguf_writer_set_arr(w, "t.arr.empty", GGUF_T_INT32, a8, 0);
  static const char *const strs[3] = {"", "x", "\xE2\x96\x81y"};
  static const size_t lens[3] = {0, 1, 4};
  gguf_writer_set_arr_str(w, "t.arr.str", strs, lens, 3);
  gguf_writer_set_u32(w, "general.alignment", 16);
  add(w, "a.f32", KS_TYPE_F32, 5, 3, 1.0f, 0.0f);
  add(w, "b.q8_0", KS_TYPE_Q8_0, 64, 2, 1.0f, 0.0f);
  char path[4096];
  snprintf(path, sizeof path, "%s/gguf/keys-all-types.gguf", dir);
  if (gguf_writer_write(w, path) != KS_OK) die(path);
  gguf_writer_destroy(w);
  free_kept();
  printf("%s\n", path);

  w = gguf_writer_create();
  gguf_writer_set_str(w, "general.architecture", "llama");
  set_vocab(w);
  snprintf(path, sizeof path, "%s/gguf/vocab-only.gguf", dir);
  if (gguf_writer_write(w, path) != KS_OK) die(path);
  gguf_writer_destroy(w);
  printf("%s\n", path);
}

/* llama2.c legacy checkpoint: 7 x i32 header, then f32 weights in run.c's order. */
static void tiny_l2c(const char *dir, const char *file, int dim, int hidden, int layers, int heads,
                     int kv_heads, int vocab, int seq) {
  int32_t hdr[7] = {dim, hidden, layers, heads, kv_heads, vocab, seq};
  const int V = vocab < 0 ? -vocab : vocab, head = dim / heads, kvd = head * kv_heads;
  size_t n = (size_t)V * dim + (size_t)layers * (dim + dim * dim + 2 * kvd * dim + dim * dim + dim +
                                                 3 * hidden * dim) +
             dim + (size_t)seq * head + (vocab < 0 ? (size_t)V * dim : 0);
  size_t bytes = 28 + n * 4;
  unsigned char *b = malloc(bytes);
  if (!b) die("out of memory");
  memcpy(b, hdr, 28);
  float *f = (float *)(b + 28);
  for (size_t i = 0; i < n; i++) f[i] = rnd(0.3f);
  write_file(dir, "llama2c", file, b, bytes);
  free(b);
}

/* tokenizer.bin: i32 max_token_length, then per token f32 score, i32 length, bytes. The fuzz
 * input starts with a u16 vocabulary size (0: read every entry). */
static void tokenizer_bins(const char *dir, const char *shared) {
  unsigned char b[4096];
  for (int explicit_size = 0; explicit_size < 2; explicit_size++) {
    size_t n = 0;
    uint16_t vs = explicit_size ? N_VOCAB : 0;
    memcpy(b, &vs, 2);
    n = 2;
    int32_t maxlen = 0;
    for (int i = 0; i < N_VOCAB; i++) maxlen = KS_MAX(maxlen, (int32_t)strlen(k_pieces[i]));
    memcpy(b + n, &maxlen, 4);
    n += 4;
    for (int i = 0; i < N_VOCAB; i++) {
      char piece[32];
      /* llama2.c pieces carry a plain space where SentencePiece has U+2581 */
      const char *p = k_pieces[i];
      size_t l = 0;
      while (*p) {
        if (!strncmp(p, "\xE2\x96\x81", 3)) { piece[l++] = ' '; p += 3; }
        else piece[l++] = *p++;
      }
      float sc = i < 3 ? 0.0f : -(float)i;
      int32_t l32 = (int32_t)l;
      memcpy(b + n, &sc, 4);
      memcpy(b + n + 4, &l32, 4);
      memcpy(b + n + 8, piece, l);
      n += 8 + l;
    }
    write_file(dir, "tokenizer_bin", explicit_size ? "valid-small-20.bin" : "valid-small-all.bin",
               b, n);
  }
  if (!shared) return;
  char path[4096];
  snprintf(path, sizeof path, "%s/models/tok512.bin", shared);
  FILE *f = fopen(path, "rb");
  if (!f) {
    printf("(no %s: skipped)\n", path);
    return;
  }
  static unsigned char big[1 << 16];
  big[0] = 512 & 0xff;
  big[1] = 512 >> 8;
  size_t n = fread(big + 2, 1, sizeof big - 2, f);
  fclose(f);
  write_file(dir, "tokenizer_bin", "valid-tok512.bin", big, n + 2);
}

static void texts(const char *dir) {
  static const struct { const char *name, *text; } t[] = {
      {"valid-ascii.txt", "Once upon a time, there was a little girl named Lily."},
      {"valid-utf8.txt", "Zo\xC3\xAB \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x99\x82 "
                         "na\xC3\xAFve caf\xC3\xA9 \xEF\xBF\xBD"},
      {"valid-spaces.txt", "  leading and  double   spaces\n\ttab\r\n"},
      {"valid-u2581.txt", "x\xE2\x96\x81y \xE2\x96\x81\xE2\x96\x81"},
      {"valid-piece-like.txt", "<0x41><s></s><unk> <0x0A>"},
      {"valid-empty.txt", ""},
      {"bad-overlong.txt", "ab\xC0\xAF"},
      {"bad-surrogate.txt", "x\xED\xA0\x80y"},
      {"bad-truncated.txt", "abc\xE6\x97"},
      {"bad-continuation.txt", "\x80" "abc"},
      {"bad-f5.txt", "ok \xF5\x80\x80\x80"},
      {"bad-above-10ffff.txt", "\xF4\x90\x80\x80"},
  };
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    write_file(dir, "tokenize", t[i].name, t[i].text, strlen(t[i].text));
}

/* The bytes of a block file written by cache_file_write (the real writer) for fingerprint fp. */
static unsigned char *block_bytes(const char *dir, uint64_t fp, size_t *n) {
  ks_block_header h;
  memset(&h, 0, sizeof h);
  h.model_fingerprint = fp;
  h.kv_format = KS_KV_FORMAT_F32;
  h.n_layer = KS_FUZZ_CACHE_LAYERS;
  h.kv_dim = KS_FUZZ_CACHE_KV_DIM;
  h.block_size = KS_FUZZ_CACHE_BLOCK;
  h.hash = KS_FUZZ_CACHE_HASH;
  h.parent_hash = 0x0102030405060708ull;
  for (uint32_t i = 0; i < h.block_size; i++) h.tokens[i] = (int32_t)(1 + 37 * i % 500);
  size_t pn = (size_t)cache_file_payload_bytes(&h);
  float *payload = malloc(pn);
  if (!payload) die("out of memory");
  for (size_t i = 0; i < pn / 4; i++) payload[i] = rnd(2.0f);
  char tmp[4096], path[4200];
  snprintf(tmp, sizeof tmp, "%s/tmp-cache", dir);
  if (cache_file_write(tmp, &h, payload) != KS_OK) die("cache_file_write");
  free(payload);
  cache_file_path(path, sizeof path, tmp, fp, h.hash);
  FILE *f = fopen(path, "rb");
  static unsigned char buf[1 << 16];
  if (!f) die(path);
  *n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  remove(path);
  snprintf(path, sizeof path, "%s/%016llx", tmp, (unsigned long long)fp);
  rmdir(path);
  rmdir(tmp);
  unsigned char *out = malloc(*n);
  if (!out) die("out of memory");
  memcpy(out, buf, *n);
  return out;
}

static void cache_blocks(const char *dir) {
  size_t n;
  unsigned char *b = block_bytes(dir, KS_FUZZ_CACHE_FP, &n);
  write_file(dir, "cache_file", "valid-block.kvb", b, n);
  write_file(dir, "cache_file", "truncated.kvb", b, n / 2);
  b[4] = 2; /* format version 2: from a newer kvscope */
  write_file(dir, "cache_file", "newer-version.kvb", b, n);
  b[4] = 1;
  b[400] ^= 0x10; /* one bit of the payload */
  write_file(dir, "cache_file", "bad-checksum.kvb", b, n);
  free(b);
  b = block_bytes(dir, KS_FUZZ_CACHE_FP ^ 1, &n);
  write_file(dir, "cache_file", "other-model.kvb", b, n);
  free(b);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s OUT_DIR [SHARED_DIR]\n", argv[0]);
    return 2;
  }
  const char *dir = argv[1];
  mkdir(dir, 0777);
  static const gguf_spec specs[] = {
      {"valid-f32.gguf", 8, 16, 1, 2, 1, KS_TYPE_F32, KS_TYPE_F32, KS_TYPE_F32, 0, 0},
      {"valid-q8_0.gguf", 32, 64, 1, 4, 2, KS_TYPE_Q8_0, KS_TYPE_Q8_0, KS_TYPE_F16, 0, 0},
      {"valid-q4_0-tied.gguf", 32, 32, 2, 2, 2, KS_TYPE_Q4_0, KS_TYPE_Q4_0, KS_TYPE_Q4_0, 1, 64},
      {"valid-f16-bf16.gguf", 8, 8, 1, 1, 1, KS_TYPE_F16, KS_TYPE_BF16, KS_TYPE_F16, 0, 0},
  };
  for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) tiny_gguf(dir, &specs[i]);
  other_ggufs(dir);
  tiny_l2c(dir, "valid-shared.bin", 8, 16, 1, 2, 1, N_VOCAB, 8);
  tiny_l2c(dir, "valid-separate.bin", 8, 12, 2, 2, 2, -N_VOCAB, 4);
  /* 0x616b3432 ("ak42" read as a little-endian u32), version 1 */
  static const unsigned char ak42[32] = {'2', '4', 'k', 'a', 1, 0, 0, 0};
  write_file(dir, "llama2c", "ak42-version1.bin", ak42, sizeof ak42);
  static const int32_t odd_head[7] = {12, 16, 1, 4, 1, 20, 8}; /* head size 3: odd */
  write_file(dir, "llama2c", "odd-head.bin", odd_head, sizeof odd_head);
  tokenizer_bins(dir, argc > 2 ? argv[2] : NULL);
  texts(dir);
  cache_blocks(dir);
  return 0;
}
