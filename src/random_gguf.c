/* random_gguf.c — see random_gguf.h. Every tensor is generated as f32 from a seeded generator,
 * converted row by row to its type, and handed to the GGUF writer; the buffers live until the
 * file is written (the writer copies at write time). */
#include "random_gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

void random_gguf_spec_init(random_gguf_spec *s, const char *arch) {
  memset(s, 0, sizeof *s);
  int qwen = arch && !strcmp(arch, "qwen2");
  s->arch = arch ? arch : "llama";
  s->dim = 256;
  s->hidden_dim = 512;
  s->n_layer = 2;
  s->n_head = 4;
  s->n_kv_head = 2;
  s->vocab_size = 300;
  s->n_ctx = 256;
  s->rope_base = qwen ? 1000000.0f : 10000.0f;
  s->norm_eps = qwen ? 1e-6f : 1e-5f;
  s->wtype = KS_TYPE_F32;
  s->embd_type = KS_TYPE_F32;
  s->tied = qwen;
  s->qkv_bias = qwen;
  s->vocab_key = !qwen;
  s->rope = RANDOM_ROPE_NONE;
  s->rope_factor = 8.0f;
  s->rope_low_ff = 1.0f;
  s->rope_high_ff = 4.0f;
  s->rope_orig_ctx = 64;
  s->seed = 1;
}

/* splitmix64: tiny, seedable, good enough for weights */
static uint64_t next_u64(uint64_t *st) {
  uint64_t z = (*st += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
/* uniform in [-1, 1) */
static float next_unit(uint64_t *st) {
  return (float)((double)(next_u64(st) >> 11) * 0x1p-53 * 2.0 - 1.0);
}

typedef struct {
  ks_gguf_writer *w;
  void **bufs;
  int n, cap;
  uint64_t rng;
  const char *path;
} writer;

static void *keep(writer *wr, size_t n) {
  if (wr->n == wr->cap) {
    int cap = wr->cap ? 2 * wr->cap : 64;
    void **p = realloc(wr->bufs, (size_t)cap * sizeof *p);
    if (!p) return NULL;
    wr->bufs = p;
    wr->cap = cap;
  }
  void *q = malloc(n ? n : 1);
  if (q) wr->bufs[wr->n++] = q;
  return q;
}

/* Adds `name` (rows x cols, type t) with values center + scale * uniform(-1, 1). */
static ks_status add_random(writer *wr, const char *name, ks_type t, int64_t cols, int64_t rows,
                            float center, float scale) {
  size_t rb = ks_type_row_bytes(t, cols);
  if (rb == 0)
    return ks_fail(KS_ERR_ARG, "random GGUF '%s': tensor '%s' has rows of %lld values, not a "
                   "whole number of %s blocks (%d values)", wr->path, name, (long long)cols,
                   ks_type_name(t), ks_type_block_elems(t));
  unsigned char *out = keep(wr, rb * (size_t)rows);
  float *row = malloc((size_t)cols * sizeof *row);
  if (!out || !row) {
    free(row);
    return ks_fail(KS_ERR_NOMEM, "random GGUF '%s': out of memory for '%s'", wr->path, name);
  }
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t j = 0; j < cols; j++) row[j] = center + scale * next_unit(&wr->rng);
    ks_quant_row(t, row, out + (size_t)r * rb, cols);
  }
  free(row);
  gguf_writer_add_tensor(wr->w, name, t, cols, rows, out);
  return KS_OK;
}

static const char *key(const random_gguf_spec *s, const char *rest) {
  static _Thread_local char b[128];
  snprintf(b, sizeof b, "%s.%s", s->arch, rest);
  return b;
}

ks_status random_gguf_write(const random_gguf_spec *s, const char *path) {
  if (s->dim <= 0 || s->n_head <= 0 || s->n_kv_head <= 0 || s->dim % s->n_head ||
      s->n_head % s->n_kv_head || s->n_layer <= 0 || s->hidden_dim <= 0 || s->vocab_size <= 0 ||
      s->n_ctx <= 0)
    return ks_fail(KS_ERR_ARG, "random GGUF '%s': inconsistent shape (dim %d, heads %d/%d, "
                   "layers %d, ffn %d, vocab %d, ctx %d)", path, s->dim, s->n_head, s->n_kv_head,
                   s->n_layer, s->hidden_dim, s->vocab_size, s->n_ctx);
  const int head_dim = s->dim / s->n_head;
  if (s->rope == RANDOM_ROPE_TENSOR && !s->rope_freqs)
    return ks_fail(KS_ERR_ARG, "random GGUF '%s': RANDOM_ROPE_TENSOR needs rope_freqs", path);
  writer wr = {.w = gguf_writer_create(), .rng = s->seed * 0x2545f4914f6cdd1dull + 1, .path = path};
  if (!wr.w) return ks_fail(KS_ERR_NOMEM, "random GGUF '%s': out of memory", path);
  ks_gguf_writer *w = wr.w;
  gguf_writer_set_str(w, "general.architecture", s->arch);
  gguf_writer_set_str(w, "general.name", "kvscope random test model");
  gguf_writer_set_u32(w, key(s, "context_length"), (uint32_t)s->n_ctx);
  gguf_writer_set_u32(w, key(s, "embedding_length"), (uint32_t)s->dim);
  gguf_writer_set_u32(w, key(s, "block_count"), (uint32_t)s->n_layer);
  gguf_writer_set_u32(w, key(s, "feed_forward_length"), (uint32_t)s->hidden_dim);
  gguf_writer_set_u32(w, key(s, "attention.head_count"), (uint32_t)s->n_head);
  gguf_writer_set_u32(w, key(s, "attention.head_count_kv"), (uint32_t)s->n_kv_head);
  gguf_writer_set_f32(w, key(s, "attention.layer_norm_rms_epsilon"), s->norm_eps);
  gguf_writer_set_f32(w, key(s, "rope.freq_base"), s->rope_base);
  gguf_writer_set_u32(w, key(s, "rope.dimension_count"), (uint32_t)head_dim);
  if (s->vocab_key) gguf_writer_set_u32(w, key(s, "vocab_size"), (uint32_t)s->vocab_size);
  if (s->rope_type) gguf_writer_set_str(w, key(s, "rope.scaling.type"), s->rope_type);
  if (s->rope == RANDOM_ROPE_LLAMA3 || s->rope == RANDOM_ROPE_LINEAR) {
    if (!s->rope_type)
      gguf_writer_set_str(w, key(s, "rope.scaling.type"),
                          s->rope == RANDOM_ROPE_LLAMA3 ? "llama3" : "linear");
    gguf_writer_set_f32(w, key(s, "rope.scaling.factor"), s->rope_factor);
  }
  if (s->rope == RANDOM_ROPE_LLAMA3) {
    gguf_writer_set_f32(w, key(s, "rope.scaling.low_freq_factor"), s->rope_low_ff);
    gguf_writer_set_f32(w, key(s, "rope.scaling.high_freq_factor"), s->rope_high_ff);
    gguf_writer_set_u32(w, key(s, "rope.scaling.original_context_length"),
                        (uint32_t)s->rope_orig_ctx);
  }

  const int64_t dim = s->dim, hid = s->hidden_dim, vocab = s->vocab_size;
  const int64_t qd = (int64_t)s->n_head * head_dim, kvd = (int64_t)s->n_kv_head * head_dim;
  const float a_dim = sqrtf(3.0f / (float)dim), a_q = sqrtf(3.0f / (float)qd),
              a_hid = sqrtf(3.0f / (float)hid);
  ks_status st = KS_OK;
  if ((st = add_random(&wr, "token_embd.weight", s->embd_type, dim, vocab, 0.0f, 1.0f))) goto done;
  if (s->rope == RANDOM_ROPE_TENSOR) {
    float *f = keep(&wr, (size_t)head_dim / 2 * sizeof *f);
    if (!f) {
      st = ks_fail(KS_ERR_NOMEM, "random GGUF '%s': out of memory", path);
      goto done;
    }
    memcpy(f, s->rope_freqs, (size_t)head_dim / 2 * sizeof *f);
    gguf_writer_add_tensor(w, "rope_freqs.weight", KS_TYPE_F32, head_dim / 2, 1, f);
  }
  for (int l = 0; l < s->n_layer && st == KS_OK; l++) {
    const struct {
      const char *name;
      int64_t cols, rows;
      int norm;
      float scale;
    } ts[] = {
        {"attn_norm.weight", dim, 1, 1, 0.1f},  {"attn_q.weight", dim, qd, 0, a_dim},
        {"attn_k.weight", dim, kvd, 0, a_dim},  {"attn_v.weight", dim, kvd, 0, a_dim},
        {"attn_output.weight", qd, dim, 0, a_q}, {"ffn_norm.weight", dim, 1, 1, 0.1f},
        {"ffn_gate.weight", dim, hid, 0, a_dim}, {"ffn_down.weight", hid, dim, 0, a_hid},
        {"ffn_up.weight", dim, hid, 0, a_dim},
    };
    for (size_t k = 0; k < KS_ARRAY_LEN(ts) && st == KS_OK; k++) {
      char name[96];
      snprintf(name, sizeof name, "blk.%d.%s", l, ts[k].name);
      st = add_random(&wr, name, ts[k].norm ? KS_TYPE_F32 : s->wtype, ts[k].cols, ts[k].rows,
                      ts[k].norm ? 1.0f : 0.0f, ts[k].scale);
    }
    if (s->qkv_bias) {
      const struct {
        const char *name;
        int64_t n;
      } bs[] = {{"attn_q.bias", qd}, {"attn_k.bias", kvd}, {"attn_v.bias", kvd}};
      for (size_t k = 0; k < KS_ARRAY_LEN(bs) && st == KS_OK; k++) {
        char name[96];
        snprintf(name, sizeof name, "blk.%d.%s", l, bs[k].name);
        st = add_random(&wr, name, KS_TYPE_F32, bs[k].n, 1, 0.0f, 0.5f);
      }
    }
  }
  if (st == KS_OK)
    st = add_random(&wr, "output_norm.weight", KS_TYPE_F32, dim, 1, 1.0f, 0.1f);
  if (st == KS_OK && !s->tied)
    st = add_random(&wr, "output.weight", s->embd_type, dim, vocab, 0.0f, a_dim);
  if (st == KS_OK && s->extra_tensor)
    st = add_random(&wr, s->extra_tensor, KS_TYPE_F32, dim, 1, 0.0f, 0.5f);
  if (st == KS_OK) st = gguf_writer_write(w, path);
done:
  for (int i = 0; i < wr.n; i++) free(wr.bufs[i]);
  free(wr.bufs);
  gguf_writer_destroy(w);
  return st;
}
