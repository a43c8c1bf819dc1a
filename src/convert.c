/* convert.c — a loaded model (either format) written back out as a llama GGUF: the metadata
 * llama.cpp's llama loader expects, the vocabulary (from a llama2.c tokenizer.bin, or copied
 * from a GGUF model), and every weight tensor converted row by row to the requested type; and
 * random-weight models of real shapes with a synthetic vocabulary, for benchmarks.
 * Not a tokenizer: it only moves vocabulary entries between the two file formats. */
#include "convert.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "gguf.h"

#define TOK_MAX_PIECE (1 << 16) /* longest piece a sane tokenizer.bin holds */

/* SentencePiece token types, as llama.cpp's llama_token_type numbers them */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_BYTE = 6 };

/* ---------------------------------------------------------------- llama2.c tokenizer.bin */

typedef struct {
  int n;
  char **pieces; /* GGUF form: spaces as U+2581 */
  size_t *lens;
  float *scores;
  int32_t *types;
} vocab;

static void vocab_free(vocab *v) {
  for (int i = 0; v->pieces && i < v->n; i++) free(v->pieces[i]);
  free(v->pieces);
  free(v->lens);
  free(v->scores);
  free(v->types);
  memset(v, 0, sizeof *v);
}

static int is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

/* llama2.c's export writes BOS/EOS as "\n<s>\n" / "\n</s>\n" and spaces as ' '; GGUF keeps
 * SentencePiece's own pieces. */
static ks_status gguf_piece(const char *raw, size_t len, char **out, size_t *out_len, int32_t *type) {
  if (len == 5 && !memcmp(raw, "\n<s>\n", 5)) raw = "<s>", len = 3;
  else if (len == 6 && !memcmp(raw, "\n</s>\n", 6)) raw = "</s>", len = 4;
  size_t spaces = 0;
  for (size_t i = 0; i < len; i++) spaces += raw[i] == ' ';
  char *p = malloc(len + 2 * spaces + 1);
  if (!p) return KS_ERR_NOMEM;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (raw[i] == ' ') {
      memcpy(p + o, "\xe2\x96\x81", 3);
      o += 3;
    } else {
      p[o++] = raw[i];
    }
  }
  p[o] = 0;
  if (o == 5 && !memcmp(p, "<unk>", 5)) *type = TT_UNKNOWN;
  else if ((o == 3 && !memcmp(p, "<s>", 3)) || (o == 4 && !memcmp(p, "</s>", 4))) *type = TT_CONTROL;
  else if (o == 6 && !memcmp(p, "<0x", 3) && is_hex(p[3]) && is_hex(p[4]) && p[5] == '>')
    *type = TT_BYTE;
  else *type = TT_NORMAL;
  *out = p;
  *out_len = o;
  return KS_OK;
}

static ks_status read_tokenizer_bin(vocab *v, const char *path, int vocab_size) {
  memset(v, 0, sizeof *v);
  FILE *f = fopen(path, "rb");
  if (!f) return ks_fail(KS_ERR_IO, "cannot open tokenizer '%s': %s", path, strerror(errno));
  ks_status st = KS_OK;
  char *raw = NULL;
  int32_t max_len;
  v->pieces = calloc((size_t)vocab_size, sizeof *v->pieces);
  v->lens = calloc((size_t)vocab_size, sizeof *v->lens);
  v->scores = calloc((size_t)vocab_size, sizeof *v->scores);
  v->types = calloc((size_t)vocab_size, sizeof *v->types);
  raw = malloc(TOK_MAX_PIECE);
  if (!v->pieces || !v->lens || !v->scores || !v->types || !raw) {
    st = ks_fail(KS_ERR_NOMEM, "out of memory reading tokenizer '%s'", path);
    goto done;
  }
  if (fread(&max_len, 4, 1, f) != 1) {
    st = ks_fail(KS_ERR_FORMAT, "tokenizer '%s' is empty or truncated (no header)", path);
    goto done;
  }
  for (int i = 0; i < vocab_size; i++) {
    float score;
    int32_t len;
    if (fread(&score, 4, 1, f) != 1 || fread(&len, 4, 1, f) != 1) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer '%s' ends after %d tokens but the model's vocabulary "
                   "has %d: wrong tokenizer for this model?", path, i, vocab_size);
      goto done;
    }
    if (len < 0 || len >= TOK_MAX_PIECE) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer '%s': token %d has length %d (corrupt file)", path,
                   i, (int)len);
      goto done;
    }
    if (fread(raw, 1, (size_t)len, f) != (size_t)len) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer '%s' is truncated inside token %d", path, i);
      goto done;
    }
    v->scores[i] = score;
    if (gguf_piece(raw, (size_t)len, &v->pieces[i], &v->lens[i], &v->types[i])) {
      st = ks_fail(KS_ERR_NOMEM, "out of memory reading tokenizer '%s'", path);
      goto done;
    }
    v->n = i + 1;
  }
  if (fgetc(f) != EOF)
    st = ks_fail(KS_ERR_ARG, "tokenizer '%s' has more than the model's %d tokens: it belongs to "
                 "another model (stories260K uses tok512.bin, the Llama 2 models tokenizer.bin)",
                 path, vocab_size);
done:
  free(raw);
  fclose(f);
  if (st) vocab_free(v);
  return st;
}

/* ---------------------------------------------------------------- weights */

typedef struct {
  void **bufs; /* converted tensor bytes, alive until the file is written */
  int n, cap;
  uint64_t done, total; /* source bytes converted so far, for the progress line */
} buflist;

static void *buflist_alloc(buflist *b, size_t n) {
  if (b->n == b->cap) {
    int cap = b->cap ? 2 * b->cap : 64;
    void **p = realloc(b->bufs, (size_t)cap * sizeof *p);
    if (!p) return NULL;
    b->bufs = p;
    b->cap = cap;
  }
  void *q = malloc(n ? n : 1);
  if (q) b->bufs[b->n++] = q;
  return q;
}

static void buflist_free(buflist *b) {
  for (int i = 0; i < b->n; i++) free(b->bufs[i]);
  free(b->bufs);
}

/* Adds tensor t as `name` in type `want` (norms: F32), converting row by row if needed. */
static ks_status add_tensor(ks_gguf_writer *w, buflist *bl, const char *name, const ks_tensor *t,
                            ks_type want) {
  if (!t->data)
    return ks_fail(KS_ERR_ARG, "cannot convert: the model has no tensor '%s'", name);
  if (!ks_type_known(t->type))
    return ks_fail(KS_ERR_UNSUPPORTED, "cannot convert tensor '%s' from type %s", name,
                   ks_type_name(t->type));
  const int64_t cols = t->ne[0], rows = t->ne[1];
  if (ks_type_block_elems(want) > 1 && cols % ks_type_block_elems(want)) {
    fprintf(stderr, "convert: %s has rows of %lld values, not a multiple of %d: writing it as "
            "F16 instead of %s\n", name, (long long)cols, ks_type_block_elems(want),
            ks_type_name(want));
    want = KS_TYPE_F16;
  }
  bl->done += t->nbytes;
  ks_progress("converting", bl->done, bl->total);
  if (t->type == want) {
    gguf_writer_add_tensor(w, name, want, cols, rows, t->data);
    return KS_OK;
  }
  size_t in_rb = ks_type_row_bytes(t->type, cols), out_rb = ks_type_row_bytes(want, cols);
  unsigned char *out = buflist_alloc(bl, out_rb * (size_t)rows);
  float *row = malloc((size_t)cols * sizeof *row);
  if (!out || !row) {
    free(row);
    return ks_fail(KS_ERR_NOMEM, "out of memory converting tensor '%s'", name);
  }
  const unsigned char *in = t->data;
  for (int64_t r = 0; r < rows; r++) {
    ks_dequant_row(t->type, in + (size_t)r * in_rb, row, cols);
    ks_quant_row(want, row, out + (size_t)r * out_rb, cols);
  }
  free(row);
  gguf_writer_add_tensor(w, name, want, cols, rows, out);
  return KS_OK;
}

static uint32_t llama_ftype(ks_type t) {
  switch (t) { /* llama.cpp's llama_ftype */
  case KS_TYPE_F32: return 0;
  case KS_TYPE_F16: return 1;
  case KS_TYPE_Q4_0: return 2;
  case KS_TYPE_Q8_0: return 7;
  case KS_TYPE_BF16: return 32;
  }
  return 0;
}

static void model_name(const char *path, char *out, size_t cap) {
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  snprintf(out, cap, "%s", *b ? b : "model");
  char *dot = strrchr(out, '.');
  if (dot && dot != out) *dot = 0;
}

ks_status convert_to_gguf(const ks_model *m, const char *tokenizer_bin, const char *out_path,
                          ks_type wtype) {
  if (wtype != KS_TYPE_F32 && wtype != KS_TYPE_F16 && wtype != KS_TYPE_BF16 &&
      wtype != KS_TYPE_Q8_0 && wtype != KS_TYPE_Q4_0)
    return ks_fail(KS_ERR_ARG, "cannot convert to %s: choose F32, F16, BF16, Q8_0 or Q4_0",
                   ks_type_name(wtype));
  const ks_config *c = &m->cfg;
  if (!m->layers || c->n_layer <= 0)
    return ks_fail(KS_ERR_ARG, "cannot convert: no model loaded");
  ks_gguf_writer *w = gguf_writer_create();
  if (!w) return ks_fail(KS_ERR_NOMEM, "out of memory converting to '%s'", out_path);
  vocab v = {0};
  buflist bl = {0};
  ks_status st = KS_OK;

  char name[sizeof m->path];
  model_name(m->path, name, sizeof name);
  gguf_writer_set_str(w, "general.architecture", "llama");
  gguf_writer_set_str(w, "general.name", name);
  gguf_writer_set_u32(w, "general.file_type", llama_ftype(wtype));
  gguf_writer_set_u32(w, "general.quantization_version", 2);
  gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)c->vocab_size);
  gguf_writer_set_u32(w, "llama.context_length", (uint32_t)c->n_ctx);
  gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)c->dim);
  gguf_writer_set_u32(w, "llama.block_count", (uint32_t)c->n_layer);
  gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
  gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim);
  gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_head);
  gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_head);
  gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
  gguf_writer_set_f32(w, "llama.rope.freq_base", c->rope_base);

  if (tokenizer_bin) {
    if ((st = read_tokenizer_bin(&v, tokenizer_bin, c->vocab_size))) goto done;
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.pieces, v.lens,
                            (uint64_t)v.n);
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", v.scores, (uint64_t)v.n);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", v.types, (uint64_t)v.n);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
  } else if (m->gguf && gguf_find_key(m->gguf, "tokenizer.ggml.model") >= 0) {
    for (int i = 0; i < gguf_n_keys(m->gguf); i++)
      if (!strncmp(gguf_key_name(m->gguf, i), "tokenizer.", 10))
        gguf_writer_copy_key(w, m->gguf, i);
  } else {
    fprintf(stderr, "convert: no tokenizer given (-z tokenizer.bin): '%s' will have no "
            "vocabulary, and kvscope run will need -z to use it\n", out_path);
  }

  bl.total = model_weight_bytes(m);
  if ((st = add_tensor(w, &bl, "token_embd.weight", &m->tok_embd, wtype))) goto done;
  for (int l = 0; l < c->n_layer; l++) {
    const ks_layer *L = &m->layers[l];
    const struct {
      const char *suffix;
      const ks_tensor *t;
      int norm;
    } ts[] = {
        {"attn_norm", &L->attn_norm, 1}, {"attn_q", &L->wq, 0},       {"attn_k", &L->wk, 0},
        {"attn_v", &L->wv, 0},           {"attn_output", &L->wo, 0},  {"ffn_norm", &L->ffn_norm, 1},
        {"ffn_gate", &L->w_gate, 0},     {"ffn_down", &L->w_down, 0}, {"ffn_up", &L->w_up, 0},
    };
    for (size_t k = 0; k < KS_ARRAY_LEN(ts); k++) {
      char tn[96];
      snprintf(tn, sizeof tn, "blk.%d.%s.weight", l, ts[k].suffix);
      if ((st = add_tensor(w, &bl, tn, ts[k].t, ts[k].norm ? KS_TYPE_F32 : wtype))) goto done;
    }
  }
  if ((st = add_tensor(w, &bl, "output_norm.weight", &m->output_norm, KS_TYPE_F32))) goto done;
  if (!m->tied_output && (st = add_tensor(w, &bl, "output.weight", &m->output, wtype)))
    goto done;
  st = gguf_writer_write(w, out_path);
done:
  buflist_free(&bl);
  vocab_free(&v);
  gguf_writer_destroy(w);
  return st;
}

/* ================================================================ random-weight models
 * gguf.c's writer takes every tensor's bytes before it writes; a 7B model must not sit in
 * memory, so this part serialises the GGUF header itself (the few value types it needs) and
 * streams the tensors chunk by chunk, each chunk's rows generated by a pool of threads while
 * the previous chunk is written. */

typedef struct {
  const char *name;
  int dim, ffn, layers, heads, kv, vocab, ctx;
  float rope_base, eps;
  int tied;
  const char *note;
} shape_row;

/* The real models' published configurations (config.json of each). */
static const shape_row k_shapes[] = {
    {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, 1e-5f, 0, ""},
    {"llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, 8192, 500000.0f, 1e-5f, 1,
     "context written as 8192: the real 131072 needs Llama 3.1 rope scaling, not written"},
    {"qwen2.5-0.5b", 896, 4864, 24, 14, 2, 151936, 32768, 1000000.0f, 1e-6f, 1,
     "written as a llama model without qwen2's q/k/v biases (kvscope runs llama only)"},
    {"llama-2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f, 1e-5f, 0, ""},
    {"small", 256, 640, 4, 8, 4, 1024, 512, 10000.0f, 1e-5f, 0, "test shape (kvscope-tiny's)"},
    {"tiny", 64, 160, 2, 4, 2, 320, 256, 10000.0f, 1e-5f, 0, "test shape"},
};

#define RANDOM_MIN_VOCAB (3 + 256 + 1) /* specials, byte tokens, at least one piece */
#define RANDOM_CHUNK_BYTES (32u << 20)
#define RANDOM_MAX_THREADS 256
#define RANDOM_ALIGN 32 /* GGUF default alignment: no general.alignment key needed */

void convert_random_shapes_print(FILE *f) {
  fprintf(f, "shapes (kvscope convert --random SHAPE[:key=value,...] OUT.gguf):\n");
  for (size_t i = 0; i < KS_ARRAY_LEN(k_shapes); i++) {
    const shape_row *s = &k_shapes[i];
    fprintf(f, "  %-15s dim %d, ffn %d, %d layers, %d heads, %d kv heads, vocab %d, ctx %d%s%s%s\n",
            s->name, s->dim, s->ffn, s->layers, s->heads, s->kv, s->vocab, s->ctx,
            s->tied ? ", tied output" : "", s->note[0] ? "; " : "", s->note);
  }
  fprintf(f, "override keys: dim, ffn, layers, heads, kv, vocab, ctx, tied (0/1), e.g. "
             "tinyllama-1.1b:layers=2\n");
}

ks_status convert_random_shape(const char *spec, ks_random_shape *out) {
  memset(out, 0, sizeof *out);
  if (!spec || !*spec) return ks_fail(KS_ERR_ARG, "no shape given: name one of tinyllama-1.1b, "
                                      "llama-3.2-1b, qwen2.5-0.5b, llama-2-7b, small, tiny");
  const char *colon = strchr(spec, ':');
  size_t nlen = colon ? (size_t)(colon - spec) : strlen(spec);
  const shape_row *s = NULL;
  for (size_t i = 0; i < KS_ARRAY_LEN(k_shapes); i++)
    if (strlen(k_shapes[i].name) == nlen && !strncasecmp(k_shapes[i].name, spec, nlen))
      s = &k_shapes[i];
  if (!s)
    return ks_fail(KS_ERR_ARG, "unknown shape '%.*s': choose tinyllama-1.1b, llama-3.2-1b, "
                   "qwen2.5-0.5b, llama-2-7b, small or tiny ('kvscope convert --random list' "
                   "shows them)", (int)KS_MIN(nlen, 64), spec);
  int v[8] = {s->dim, s->ffn, s->layers, s->heads, s->kv, s->vocab, s->ctx, s->tied};
  static const char *const keys[8] = {"dim", "ffn", "layers", "heads", "kv", "vocab", "ctx", "tied"};
  static const int hi[8] = {1 << 16, 1 << 18, 1024, 1024, 1024, 1 << 22, 1 << 22, 1};
  for (const char *p = colon ? colon + 1 : NULL; p && *p;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    const char *eq = memchr(p, '=', len);
    int k = -1;
    for (int i = 0; eq && i < 8; i++)
      if (strlen(keys[i]) == (size_t)(eq - p) && !strncmp(keys[i], p, (size_t)(eq - p))) k = i;
    char num[32];
    size_t nl = eq ? len - (size_t)(eq - p) - 1 : 0;
    char *e = NULL;
    long val = -1;
    if (k >= 0 && nl > 0 && nl < sizeof num) {
      memcpy(num, eq + 1, nl);
      num[nl] = 0;
      errno = 0;
      val = strtol(num, &e, 10);
      if (errno || *e) val = -1;
    }
    if (k < 0 || val < (k == 7 ? 0 : 1) || val > hi[k])
      return ks_fail(KS_ERR_ARG, "shape '%s': bad override '%.*s' (keys dim, ffn, layers, heads, "
                     "kv, vocab, ctx, tied; positive integers, tied 0 or 1)", spec,
                     (int)KS_MIN(len, 64), p);
    v[k] = (int)val;
    p = end ? end + 1 : NULL;
  }
  ks_config *c = &out->cfg;
  snprintf(c->arch, sizeof c->arch, "llama");
  c->dim = v[0], c->hidden_dim = v[1], c->n_layer = v[2], c->n_head = v[3], c->n_kv_head = v[4];
  c->vocab_size = v[5], c->n_ctx = v[6];
  c->norm_eps = s->eps, c->rope_base = s->rope_base, c->rope_neox = 0;
  out->tied_output = v[7];
  out->note = s->note;
  snprintf(out->name, sizeof out->name, "%s", s->name);
  if (c->dim % c->n_head || c->n_head % c->n_kv_head || (c->dim / c->n_head) % 2)
    return ks_fail(KS_ERR_ARG, "shape '%s': dim %d, heads %d, kv heads %d: dim must be a multiple "
                   "of heads, heads of kv heads, and the head size even", spec, c->dim,
                   c->n_head, c->n_kv_head);
  if (c->vocab_size < RANDOM_MIN_VOCAB)
    return ks_fail(KS_ERR_ARG, "shape '%s': vocab %d is under %d (3 special and 256 byte tokens "
                   "come first)", spec, c->vocab_size, RANDOM_MIN_VOCAB);
  c->head_dim = c->dim / c->n_head;
  return KS_OK;
}

/* ---------------------------------------------------------------- header serialisation */

typedef struct {
  unsigned char *p;
  size_t n, cap;
  int oom;
  uint64_t count; /* keys (or tensor infos) written */
} blob;

static void blob_put(blob *b, const void *src, size_t n) {
  if (b->oom) return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n) cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, src, n);
  b->n += n;
}
static void blob_u32(blob *b, uint32_t v) {
  unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                        (unsigned char)(v >> 24)};
  blob_put(b, x, 4);
}
static void blob_u64(blob *b, uint64_t v) {
  blob_u32(b, (uint32_t)v);
  blob_u32(b, (uint32_t)(v >> 32));
}
static void blob_f32(blob *b, float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  blob_u32(b, u);
}
static void blob_str(blob *b, const char *s, size_t n) {
  blob_u64(b, n);
  blob_put(b, s, n);
}
static void key_head(blob *b, const char *key, gguf_vtype t) {
  blob_str(b, key, strlen(key));
  blob_u32(b, (uint32_t)t);
  b->count++;
}
static void key_u32(blob *b, const char *key, uint32_t v) {
  key_head(b, key, GGUF_T_UINT32);
  blob_u32(b, v);
}
static void key_f32(blob *b, const char *key, float v) {
  key_head(b, key, GGUF_T_FLOAT32);
  blob_f32(b, v);
}
static void key_bool(blob *b, const char *key, int v) {
  key_head(b, key, GGUF_T_BOOL);
  unsigned char x = v ? 1 : 0;
  blob_put(b, &x, 1);
}
static void key_str(blob *b, const char *key, const char *v) {
  key_head(b, key, GGUF_T_STRING);
  blob_str(b, v, strlen(v));
}

#define SPM_SPACE "\xe2\x96\x81" /* U+2581, SentencePiece's space */

/* Generated piece k: "▁", then for L = 1, 2, ... every string s of L lowercase letters as "▁s"
 * and "s". All distinct, and each piece longer than one letter splits into two shorter pieces
 * that come before it, so a merge-by-score BPE can reach every one. */
static size_t gen_piece(uint64_t k, char *out) {
  if (k == 0) {
    memcpy(out, SPM_SPACE, 3);
    return 3;
  }
  k--;
  uint64_t count = 26;
  int L = 1;
  while (k >= 2 * count) {
    k -= 2 * count;
    count *= 26;
    L++;
  }
  size_t o = 0;
  if (k % 2 == 0) {
    memcpy(out, SPM_SPACE, 3);
    o = 3;
  }
  uint64_t idx = k / 2;
  for (int i = L - 1; i >= 0; i--, idx /= 26) out[o + (size_t)i] = (char)('a' + idx % 26);
  return o + (size_t)L;
}

/* tokenizer.ggml.* keys of a synthetic SentencePiece vocabulary of n tokens. */
static void synth_vocab(blob *b, int n) {
  char piece[64];
  key_str(b, "tokenizer.ggml.model", "llama");
  key_head(b, "tokenizer.ggml.tokens", GGUF_T_ARRAY);
  blob_u32(b, GGUF_T_STRING);
  blob_u64(b, (uint64_t)n);
  for (int i = 0; i < n; i++) {
    size_t len;
    if (i == 0) len = (size_t)snprintf(piece, sizeof piece, "<unk>");
    else if (i == 1) len = (size_t)snprintf(piece, sizeof piece, "<s>");
    else if (i == 2) len = (size_t)snprintf(piece, sizeof piece, "</s>");
    else if (i < 3 + 256) len = (size_t)snprintf(piece, sizeof piece, "<0x%02X>", i - 3);
    else len = gen_piece((uint64_t)(i - 259), piece);
    blob_str(b, piece, len);
  }
  key_head(b, "tokenizer.ggml.scores", GGUF_T_ARRAY);
  blob_u32(b, GGUF_T_FLOAT32);
  blob_u64(b, (uint64_t)n);
  /* earlier generated pieces merge first, as SentencePiece scores frequent pieces higher */
  for (int i = 0; i < n; i++) blob_f32(b, i < 259 ? 0.0f : -(float)(i - 259));
  key_head(b, "tokenizer.ggml.token_type", GGUF_T_ARRAY);
  blob_u32(b, GGUF_T_INT32);
  blob_u64(b, (uint64_t)n);
  for (int i = 0; i < n; i++)
    blob_u32(b, (uint32_t)(i == 0 ? TT_UNKNOWN : i < 3 ? TT_CONTROL : i < 259 ? TT_BYTE : TT_NORMAL));
  key_u32(b, "tokenizer.ggml.bos_token_id", 1);
  key_u32(b, "tokenizer.ggml.eos_token_id", 2);
  key_u32(b, "tokenizer.ggml.unknown_token_id", 0);
  key_bool(b, "tokenizer.ggml.add_bos_token", 1);
  key_bool(b, "tokenizer.ggml.add_eos_token", 0);
}

/* ---------------------------------------------------------------- weight generation */

typedef struct {
  char name[64];
  ks_type type;
  int64_t ne0, ne1; /* row length, rows */
  int norm;         /* all ones */
  size_t row_bytes;
  uint64_t off;     /* in the data section */
} rtensor;

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static uint64_t splitmix64(uint64_t *s) { return mix64(*s += 0x9E3779B97F4A7C15ull); }

typedef struct {
  const rtensor *t;
  uint32_t tensor_id;
  uint64_t seed;
  int64_t row0, rows;
  unsigned char *out; /* rows * t->row_bytes */
  float *scratch;     /* t->ne0 floats */
} gen_job;

/* Each row has its own generator seeded from (seed, tensor, row): the bytes do not depend on how
 * rows are split between threads. Values uniform in [-1, 1) / sqrt(row length). */
static void gen_rows(const gen_job *j) {
  const rtensor *t = j->t;
  const int64_t cols = t->ne0;
  const float scale = 1.0f / sqrtf((float)cols) / 8388608.0f; /* 24-bit signed ints -> [-1, 1) */
  for (int64_t r = 0; r < j->rows; r++) {
    float *x = j->scratch;
    if (t->norm) {
      for (int64_t i = 0; i < cols; i++) x[i] = 1.0f;
    } else {
      /* hashed start: rows begin at unrelated points of the generator's sequence */
      uint64_t s = mix64(j->seed ^ mix64(((uint64_t)j->tensor_id << 40) ^ (uint64_t)(j->row0 + r)));
      for (int64_t i = 0; i < cols; i += 2) {
        uint64_t z = splitmix64(&s);
        x[i] = (float)((int32_t)((uint32_t)z >> 8) - 8388608) * scale;
        if (i + 1 < cols) x[i + 1] = (float)((int32_t)((uint32_t)(z >> 32) >> 8) - 8388608) * scale;
      }
    }
    ks_quant_row(t->type, x, j->out + (size_t)r * t->row_bytes, cols);
  }
}

static void *gen_thread(void *arg) {
  gen_rows(arg);
  return NULL;
}

typedef struct {
  FILE *f;
  const char *path;
  uint64_t done, total;
  int err; /* errno of the first failed write */
} rwriter;

static void rw_put(rwriter *w, const void *p, size_t n) {
  if (w->err || !n) return;
  if (fwrite(p, 1, n, w->f) != n) w->err = errno ? errno : EIO;
  w->done += n;
  ks_progress("writing random weights", w->done, w->total);
}
static void rw_zeros(rwriter *w, size_t n) {
  static const unsigned char z[RANDOM_ALIGN];
  rw_put(w, z, n);
}

static int online_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static void plan_add(rtensor *ts, int *n, const char *name, int layer, int64_t cols, int64_t rows,
                     int norm, ks_type wtype) {
  rtensor *t = &ts[(*n)++];
  if (layer >= 0) snprintf(t->name, sizeof t->name, "blk.%d.%s.weight", layer, name);
  else snprintf(t->name, sizeof t->name, "%s.weight", name);
  t->ne0 = cols;
  t->ne1 = rows;
  t->norm = norm;
  t->type = norm ? KS_TYPE_F32 : wtype;
}

/* Builds the tensor list (convert_to_gguf's order) with offsets; returns the count. */
static int plan_tensors(const ks_random_shape *sh, ks_type wtype, rtensor *ts) {
  const ks_config *c = &sh->cfg;
  const int64_t dim = c->dim, hid = c->hidden_dim, vocab = c->vocab_size;
  const int64_t qd = (int64_t)c->n_head * c->head_dim, kvd = (int64_t)c->n_kv_head * c->head_dim;
  int n = 0;
  plan_add(ts, &n, "token_embd", -1, dim, vocab, 0, wtype);
  for (int l = 0; l < c->n_layer; l++) {
    plan_add(ts, &n, "attn_norm", l, dim, 1, 1, wtype);
    plan_add(ts, &n, "attn_q", l, dim, qd, 0, wtype);
    plan_add(ts, &n, "attn_k", l, dim, kvd, 0, wtype);
    plan_add(ts, &n, "attn_v", l, dim, kvd, 0, wtype);
    plan_add(ts, &n, "attn_output", l, qd, dim, 0, wtype);
    plan_add(ts, &n, "ffn_norm", l, dim, 1, 1, wtype);
    plan_add(ts, &n, "ffn_gate", l, dim, hid, 0, wtype);
    plan_add(ts, &n, "ffn_down", l, hid, dim, 0, wtype);
    plan_add(ts, &n, "ffn_up", l, dim, hid, 0, wtype);
  }
  plan_add(ts, &n, "output_norm", -1, dim, 1, 1, wtype);
  if (!sh->tied_output) plan_add(ts, &n, "output", -1, dim, vocab, 0, wtype);
  int warned = 0;
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    rtensor *t = &ts[i];
    int be = ks_type_block_elems(t->type);
    if (be > 1 && t->ne0 % be) {
      if (!warned++)
        fprintf(stderr, "convert: rows of %lld values (%s) are not a multiple of %d: such "
                "matrices are written as F16 instead of %s\n", (long long)t->ne0, t->name, be,
                ks_type_name(t->type));
      t->type = KS_TYPE_F16;
    }
    t->row_bytes = ks_type_row_bytes(t->type, t->ne0);
    t->off = off;
    off += t->row_bytes * (uint64_t)t->ne1;
    off += (RANDOM_ALIGN - off % RANDOM_ALIGN) % RANDOM_ALIGN;
  }
  return n;
}

ks_status convert_random_gguf(const char *spec, const char *out_path, ks_type wtype,
                              uint64_t seed, int n_threads, uint64_t *bytes_written) {
  if (bytes_written) *bytes_written = 0;
  if (wtype != KS_TYPE_F32 && wtype != KS_TYPE_F16 && wtype != KS_TYPE_Q8_0 &&
      wtype != KS_TYPE_Q4_0)
    return ks_fail(KS_ERR_ARG, "cannot write random %s weights: choose F32, F16, Q8_0 or Q4_0",
                   ks_type_name(wtype));
  ks_random_shape sh;
  ks_status st = convert_random_shape(spec, &sh);
  if (st) return st;
  const ks_config *c = &sh.cfg;
  int T = n_threads > 0 ? n_threads : online_cpus();
  if (T > RANDOM_MAX_THREADS) T = RANDOM_MAX_THREADS;

  blob meta = {0}, infos = {0};
  rtensor *ts = calloc((size_t)c->n_layer * 9 + 3, sizeof *ts);
  unsigned char *bufs[2] = {NULL, NULL};
  float *scratch = NULL;
  gen_job *jobs = calloc((size_t)T, sizeof *jobs);
  pthread_t *tids = calloc((size_t)T, sizeof *tids);
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out_path, (long)getpid());
  rwriter w = {.path = tmp};
  if (!ts || !jobs || !tids) {
    st = ks_fail(KS_ERR_NOMEM, "out of memory planning '%s'", out_path);
    goto done;
  }
  int nt = plan_tensors(&sh, wtype, ts);

  char desc[256];
  snprintf(desc, sizeof desc, "random weights for benchmarking (kvscope convert --random %s "
           "--seed %llu): not a trained model", spec, (unsigned long long)seed);
  key_str(&meta, "general.architecture", "llama");
  key_str(&meta, "general.name", sh.name);
  key_str(&meta, "general.description", desc);
  key_u32(&meta, "general.file_type", llama_ftype(wtype));
  key_u32(&meta, "general.quantization_version", 2);
  key_u32(&meta, "llama.vocab_size", (uint32_t)c->vocab_size);
  key_u32(&meta, "llama.context_length", (uint32_t)c->n_ctx);
  key_u32(&meta, "llama.embedding_length", (uint32_t)c->dim);
  key_u32(&meta, "llama.block_count", (uint32_t)c->n_layer);
  key_u32(&meta, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
  key_u32(&meta, "llama.rope.dimension_count", (uint32_t)c->head_dim);
  key_u32(&meta, "llama.attention.head_count", (uint32_t)c->n_head);
  key_u32(&meta, "llama.attention.head_count_kv", (uint32_t)c->n_kv_head);
  key_f32(&meta, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
  key_f32(&meta, "llama.rope.freq_base", c->rope_base);
  synth_vocab(&meta, c->vocab_size);

  int64_t max_cols = 0;
  size_t max_rb = 0;
  for (int i = 0; i < nt; i++) {
    const rtensor *t = &ts[i];
    blob_str(&infos, t->name, strlen(t->name));
    uint32_t n_dims = t->ne1 == 1 ? 1 : 2;
    blob_u32(&infos, n_dims);
    blob_u64(&infos, (uint64_t)t->ne0);
    if (n_dims == 2) blob_u64(&infos, (uint64_t)t->ne1);
    blob_u32(&infos, (uint32_t)t->type);
    blob_u64(&infos, t->off);
    max_cols = KS_MAX(max_cols, t->ne0);
    max_rb = KS_MAX(max_rb, t->row_bytes);
  }
  if (meta.oom || infos.oom) {
    st = ks_fail(KS_ERR_NOMEM, "out of memory building the header of '%s'", out_path);
    goto done;
  }
  size_t head = 24 + meta.n + infos.n;
  size_t head_pad = (RANDOM_ALIGN - head % RANDOM_ALIGN) % RANDOM_ALIGN;
  const rtensor *last = &ts[nt - 1];
  uint64_t data_bytes = last->off + last->row_bytes * (uint64_t)last->ne1;
  data_bytes += (RANDOM_ALIGN - data_bytes % RANDOM_ALIGN) % RANDOM_ALIGN;
  w.total = head + head_pad + data_bytes;

  size_t chunk_cap = RANDOM_CHUNK_BYTES + max_rb;
  bufs[0] = malloc(chunk_cap);
  bufs[1] = malloc(chunk_cap);
  scratch = malloc((size_t)T * (size_t)max_cols * sizeof *scratch);
  if (!bufs[0] || !bufs[1] || !scratch) {
    st = ks_fail(KS_ERR_NOMEM, "out of memory for %.0f MiB of generation buffers",
                 (2.0 * chunk_cap + (double)T * max_cols * 4) / 1048576.0);
    goto done;
  }
  w.f = fopen(tmp, "wb");
  if (!w.f) {
    st = ks_fail(KS_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    goto done;
  }
  unsigned char hdr[24] = {'G', 'G', 'U', 'F', 3, 0, 0, 0};
  for (int i = 0; i < 8; i++) {
    hdr[8 + i] = (unsigned char)((uint64_t)nt >> (8 * i));
    hdr[16 + i] = (unsigned char)(meta.count >> (8 * i));
  }
  rw_put(&w, hdr, sizeof hdr);
  rw_put(&w, meta.p, meta.n);
  rw_put(&w, infos.p, infos.n);
  rw_zeros(&w, head_pad);

  /* Chunk i is generated while chunk i-1 (possibly of the previous tensor) is written. */
  int cur = 0, have_prev = 0;
  size_t prev_bytes = 0, prev_pad = 0;
  for (int ti = 0; ti < nt && !w.err; ti++) {
    const rtensor *t = &ts[ti];
    int64_t per_chunk = (int64_t)KS_MAX((size_t)1, RANDOM_CHUNK_BYTES / t->row_bytes);
    for (int64_t r0 = 0; r0 < t->ne1 && !w.err; r0 += per_chunk) {
      int64_t rows = KS_MIN(per_chunk, t->ne1 - r0);
      int nj = (int)KS_MIN((int64_t)T, rows);
      int started[RANDOM_MAX_THREADS] = {0};
      for (int j = 0; j < nj; j++) {
        int64_t a = rows * j / nj, b = rows * (j + 1) / nj;
        gen_job job = {t, (uint32_t)ti, seed, r0 + a, b - a,
                       bufs[cur] + (size_t)a * t->row_bytes, scratch + (size_t)j * max_cols};
        jobs[j] = job;
        /* the last share runs on this thread once the previous chunk is written */
        if (j < nj - 1 && pthread_create(&tids[j], NULL, gen_thread, &jobs[j]) == 0)
          started[j] = 1;
      }
      if (have_prev) {
        rw_put(&w, bufs[cur ^ 1], prev_bytes);
        rw_zeros(&w, prev_pad);
      }
      gen_rows(&jobs[nj - 1]);
      for (int j = 0; j < nj - 1; j++) {
        if (started[j]) pthread_join(tids[j], NULL);
        else gen_rows(&jobs[j]);
      }
      int last_chunk = r0 + rows >= t->ne1;
      size_t bytes = (size_t)rows * t->row_bytes;
      have_prev = 1;
      prev_bytes = bytes;
      prev_pad = 0;
      if (last_chunk) {
        uint64_t end = t->off + t->row_bytes * (uint64_t)t->ne1;
        prev_pad = (RANDOM_ALIGN - end % RANDOM_ALIGN) % RANDOM_ALIGN;
      }
      cur ^= 1;
    }
  }
  if (have_prev) {
    rw_put(&w, bufs[cur ^ 1], prev_bytes);
    rw_zeros(&w, prev_pad);
  }
  int e = w.err;
  if (fclose(w.f) != 0 && !e) e = errno ? errno : EIO;
  w.f = NULL;
  if (e) {
    unlink(tmp);
    st = ks_fail(KS_ERR_IO, "cannot write '%s': %s (%.1f GiB were needed)", tmp, strerror(e),
                 w.total / 1073741824.0);
    goto done;
  }
  if (rename(tmp, out_path) != 0) {
    e = errno;
    unlink(tmp);
    st = ks_fail(KS_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, out_path, strerror(e));
    goto done;
  }
  if (bytes_written) *bytes_written = w.total;
done:
  if (w.f) {
    fclose(w.f);
    unlink(tmp);
  }
  free(meta.p);
  free(infos.p);
  free(ts);
  free(bufs[0]);
  free(bufs[1]);
  free(scratch);
  free(jobs);
  free(tids);
  return st;
}

/* ---------------------------------------------------------------- the CLI */

static int random_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "kvscope: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'kvscope convert --random --help'.\n");
  return 2;
}

int convert_random_main(int argc, char **argv) {
  const char *spec = NULL, *out = NULL;
  ks_type type = KS_TYPE_F16;
  uint64_t seed = 1;
  int threads = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("Usage: kvscope convert --random SHAPE OUT.gguf [--type f32|f16|q8_0|q4_0] [--seed S]\n"
             "                       [--threads N]\n"
             "Writes a GGUF of the shape with random weights (uniform, +-1/sqrt(row length);\n"
             "norms 1.0) and a synthetic SentencePiece vocabulary, loadable by kvscope and\n"
             "llama.cpp: a benchmark model, not a trained one. --type: matrices (default f16);\n"
             "--seed: same seed, same bytes (default 1); --threads: generator threads (default:\n"
             "one per CPU). 'kvscope convert --random list' prints the shapes.\n\n");
      convert_random_shapes_print(stdout);
      return 0;
    }
    if (!strcmp(a, "--random")) {
      if (!v) return random_usage("%s", "--random needs a SHAPE ('list' shows them)");
      spec = v;
      i++;
    } else if (!strcmp(a, "--type") || !strcmp(a, "-t")) {
      if (!v) return random_usage("option %s needs a value", a);
      i++;
      if (!strcasecmp(v, "f32")) type = KS_TYPE_F32;
      else if (!strcasecmp(v, "f16")) type = KS_TYPE_F16;
      else if (!strcasecmp(v, "q8_0")) type = KS_TYPE_Q8_0;
      else if (!strcasecmp(v, "q4_0")) type = KS_TYPE_Q4_0;
      else return random_usage("unknown type '%s' (f32, f16, q8_0, q4_0)", v);
    } else if (!strcmp(a, "--seed") || !strcmp(a, "-s") || !strcmp(a, "--threads")) {
      if (!v) return random_usage("option %s needs a value", a);
      i++;
      char *end;
      errno = 0;
      unsigned long long n = strtoull(v, &end, 10);
      if (errno || *end || end == v || v[0] == '-' ||
          (!strcmp(a, "--threads") && (n < 1 || n > RANDOM_MAX_THREADS)))
        return random_usage("bad value '%s'", v);
      if (!strcmp(a, "--threads")) threads = (int)n;
      else seed = n;
    } else if (a[0] == '-' && a[1]) {
      return random_usage("unknown option '%s'", a);
    } else if (!out) {
      out = a;
    } else {
      return random_usage("unexpected argument '%s'", a);
    }
  }
  if (spec && !strcmp(spec, "list")) {
    convert_random_shapes_print(stdout);
    return 0;
  }
  if (!spec || !out) return random_usage("%s", "convert --random needs a SHAPE and OUT.gguf");
  ks_random_shape sh;
  if (convert_random_shape(spec, &sh)) {
    fprintf(stderr, "kvscope: %s\n", ks_last_error());
    return 2;
  }
  double t0 = ks_now_sec();
  uint64_t bytes = 0;
  if (convert_random_gguf(spec, out, type, seed, threads, &bytes)) {
    fprintf(stderr, "kvscope: cannot write the random model: %s\n", ks_last_error());
    return 1;
  }
  const ks_config *c = &sh.cfg;
  double per_layer = (double)c->dim * c->head_dim * (2.0 * c->n_head + 2.0 * c->n_kv_head) +
                     3.0 * c->dim * c->hidden_dim;
  double params = per_layer * c->n_layer + (sh.tied_output ? 1.0 : 2.0) * c->dim * c->vocab_size;
  fprintf(stderr, "kvscope: wrote %s: shape %s, %s, %.3g %s parameters, %.3g GB, seed %llu, in "
          "%.1f s%s%s\n", out, sh.name, ks_type_name(type), params >= 1e9 ? params / 1e9 : params / 1e6,
          params >= 1e9 ? "billion" : "million", bytes / 1e9,
          (unsigned long long)seed, ks_now_sec() - t0, sh.note[0] ? "; note: " : "", sh.note);
  return 0;
}
