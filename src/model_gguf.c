/* model_gguf.c — maps a `llama` GGUF (as llama.cpp writes it) onto ks_model: the llama.* keys
 * into ks_config, the named tensors into views of the mapping, each checked for shape and type
 * against the configuration. The container itself is validated by gguf.c; the tokenizer keys
 * are read by tokenizer.c. Not handled: other architectures, 3-D tensors, rope scaling. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"

/* Upper bounds far above any Llama-family model; they keep every product below far from
 * overflow and reject garbage before it is used as a size. */
#define MAX_DIM (1 << 20)
#define MAX_HIDDEN (1 << 22)
#define MAX_LAYERS 4096
#define MAX_HEADS 4096
#define MAX_VOCAB (1 << 24)
#define MAX_CTX (1 << 24)

static ks_status fail(ks_model *m, ks_status st) {
  model_deinit(m); /* closes the GGUF; the message is already recorded */
  return st;
}

/* A required or optional integer key within [lo, hi]. */
static ks_status get_int(const ks_gguf *g, const char *path, const char *key, int required,
                         int dflt, int lo, int hi, int *out) {
  int i = gguf_find_key(g, key);
  if (i < 0) {
    if (required)
      return ks_fail(KS_ERR_FORMAT, "GGUF model '%s' has no '%s' key: a llama model needs it",
                     path, key);
    *out = dflt;
    return KS_OK;
  }
  gguf_vtype t = gguf_key_type(g, i);
  if (t == GGUF_T_STRING || t == GGUF_T_ARRAY || t == GGUF_T_BOOL || t == GGUF_T_FLOAT32 ||
      t == GGUF_T_FLOAT64)
    return ks_fail(KS_ERR_FORMAT, "GGUF model '%s': key '%s' should be an integer", path, key);
  int64_t v = gguf_get_int(g, key, INT64_MIN);
  if (v < lo || v > hi)
    return ks_fail(KS_ERR_FORMAT, "GGUF model '%s': key '%s' = %lld is outside [%d, %d]", path,
                   key, (long long)v, lo, hi);
  *out = (int)v;
  return KS_OK;
}

static ks_status get_float(const ks_gguf *g, const char *path, const char *key, double dflt,
                           double lo, double hi, float *out) {
  int i = gguf_find_key(g, key);
  if (i < 0) {
    *out = (float)dflt;
    return KS_OK;
  }
  gguf_vtype t = gguf_key_type(g, i);
  if (t != GGUF_T_FLOAT32 && t != GGUF_T_FLOAT64)
    return ks_fail(KS_ERR_FORMAT, "GGUF model '%s': key '%s' should be a float", path, key);
  double v = gguf_get_float(g, key, dflt);
  if (!(v >= lo && v <= hi))
    return ks_fail(KS_ERR_FORMAT, "GGUF model '%s': key '%s' = %g is outside [%g, %g]", path, key,
                   v, lo, hi);
  *out = (float)v;
  return KS_OK;
}

/* Looks up `name`, checks it is (rows, cols) (ne[0] = cols) and of a usable type. */
static ks_status get_tensor(const ks_gguf *g, const char *path, const char *name, int64_t cols,
                            int64_t rows, int is_norm, ks_tensor *t) {
  int i = gguf_find_tensor(g, name);
  if (i < 0)
    return ks_fail(KS_ERR_FORMAT, "GGUF model '%s' has no tensor '%s': a llama model needs it",
                   path, name);
  uint32_t type;
  int n_dims;
  int64_t ne[4];
  ks_status st = gguf_tensor_info(g, i, &type, &n_dims, ne);
  if (st) return st;
  if (ne[0] != cols || ne[1] != rows || ne[2] != 1 || ne[3] != 1)
    return ks_fail(KS_ERR_FORMAT, "GGUF model '%s': tensor '%s' has shape [%lld, %lld, %lld, "
                   "%lld] (ne0 = row length), expected [%lld, %lld] from the model's metadata",
                   path, name, (long long)ne[0], (long long)ne[1], (long long)ne[2],
                   (long long)ne[3], (long long)cols, (long long)rows);
  if (is_norm && type != KS_TYPE_F32)
    return ks_fail(KS_ERR_UNSUPPORTED, "GGUF model '%s': norm tensor '%s' is %s; kvscope needs "
                   "norm weights in F32", path, name, ks_type_name(type));
  if (!ks_type_known(type))
    return ks_fail(KS_ERR_UNSUPPORTED, "GGUF model '%s': tensor '%s' has type %s, which kvscope "
                   "cannot compute with (supported: F32, F16, BF16, Q8_0, Q4_0); re-quantise "
                   "the model to one of those", path, name, ks_type_name(type));
  return gguf_tensor(g, i, t);
}

ks_status model_load_gguf(ks_model *m, const char *path) {
  memset(m, 0, sizeof *m);
  ks_gguf *g = NULL;
  ks_status st = gguf_open(&g, path);
  if (st) return st;
  m->gguf = g;
  m->format = KS_FMT_GGUF;
  snprintf(m->path, sizeof m->path, "%s", path);
  size_t size;
  m->map = (void *)gguf_file_data(g, &size);
  m->map_size = size;

  const char *arch = gguf_get_str(g, "general.architecture");
  if (!arch)
    return fail(m, ks_fail(KS_ERR_FORMAT, "GGUF file '%s' has no general.architecture string: "
                           "it is not a model file (a vocabulary-only GGUF?)", path));
  if (strcmp(arch, "llama") != 0)
    return fail(m, ks_fail(KS_ERR_UNSUPPORTED, "unsupported architecture '%.64s' in %s: kvscope "
                           "runs llama", arch, path));

  ks_config *c = &m->cfg;
  snprintf(c->arch, sizeof c->arch, "llama");
  if ((st = get_int(g, path, "llama.embedding_length", 1, 0, 1, MAX_DIM, &c->dim)) ||
      (st = get_int(g, path, "llama.feed_forward_length", 1, 0, 1, MAX_HIDDEN, &c->hidden_dim)) ||
      (st = get_int(g, path, "llama.block_count", 1, 0, 1, MAX_LAYERS, &c->n_layer)) ||
      (st = get_int(g, path, "llama.attention.head_count", 1, 0, 1, MAX_HEADS, &c->n_head)) ||
      (st = get_int(g, path, "llama.attention.head_count_kv", 0, c->n_head, 1, MAX_HEADS,
                    &c->n_kv_head)) ||
      (st = get_int(g, path, "llama.context_length", 1, 0, 1, MAX_CTX, &c->n_ctx)) ||
      (st = get_float(g, path, "llama.attention.layer_norm_rms_epsilon", 1e-5, 0.0, 1.0,
                      &c->norm_eps)) ||
      (st = get_float(g, path, "llama.rope.freq_base", 10000.0, 1e-3, 1e12, &c->rope_base)))
    return fail(m, st);
  if (c->dim % c->n_head)
    return fail(m, ks_fail(KS_ERR_FORMAT, "GGUF model '%s': embedding_length %d is not a multiple "
                           "of head_count %d", path, c->dim, c->n_head));
  if (c->n_head % c->n_kv_head)
    return fail(m, ks_fail(KS_ERR_FORMAT, "GGUF model '%s': head_count %d is not a multiple of "
                           "head_count_kv %d", path, c->n_head, c->n_kv_head));
  c->head_dim = c->dim / c->n_head;
  if (c->head_dim % 2)
    return fail(m, ks_fail(KS_ERR_FORMAT, "GGUF model '%s': head size %d is odd; RoPE needs "
                           "pairs", path, c->head_dim));
  int kl, vl, rd;
  if ((st = get_int(g, path, "llama.attention.key_length", 0, c->head_dim, 1, MAX_DIM, &kl)) ||
      (st = get_int(g, path, "llama.attention.value_length", 0, c->head_dim, 1, MAX_DIM, &vl)) ||
      (st = get_int(g, path, "llama.rope.dimension_count", 0, c->head_dim, 1, MAX_DIM, &rd)))
    return fail(m, st);
  if (kl != c->head_dim || vl != c->head_dim || rd != c->head_dim)
    return fail(m, ks_fail(KS_ERR_UNSUPPORTED, "GGUF model '%s': key/value length %d/%d or rope "
                           "dimension %d differs from embedding_length / head_count = %d; kvscope "
                           "supports only the standard llama head layout", path, kl, vl, rd,
                           c->head_dim));
  c->rope_neox = 0; /* llama GGUFs store Q/K permuted for adjacent-pair rotation */
  if (gguf_find_tensor(g, "rope_freqs.weight") >= 0)
    return fail(m, ks_fail(KS_ERR_UNSUPPORTED, "GGUF model '%s' has per-dimension RoPE "
                           "frequencies (rope_freqs.weight, Llama 3.1 rope scaling), which "
                           "kvscope does not implement", path));

  /* vocabulary size: explicit key, else the tokenizer, else the embedding's rows */
  int ti = gguf_find_tensor(g, "token_embd.weight");
  if (ti < 0)
    return fail(m, ks_fail(KS_ERR_FORMAT, "GGUF model '%s' has no tensor 'token_embd.weight': a "
                           "llama model needs it", path));
  int64_t emb_ne[4];
  if ((st = gguf_tensor_info(g, ti, NULL, NULL, emb_ne))) return fail(m, st);
  gguf_vtype tok_t;
  uint64_t n_tok = gguf_arr_len(g, "tokenizer.ggml.tokens", &tok_t);
  if (gguf_find_key(g, "llama.vocab_size") >= 0) {
    if ((st = get_int(g, path, "llama.vocab_size", 1, 0, 1, MAX_VOCAB, &c->vocab_size)))
      return fail(m, st);
  } else if (n_tok > 0) {
    if (n_tok > MAX_VOCAB)
      return fail(m, ks_fail(KS_ERR_FORMAT, "GGUF model '%s': tokenizer.ggml.tokens has %llu "
                             "entries (limit %d)", path, (unsigned long long)n_tok, MAX_VOCAB));
    c->vocab_size = (int)n_tok;
  } else {
    if (emb_ne[1] < 1 || emb_ne[1] > MAX_VOCAB)
      return fail(m, ks_fail(KS_ERR_FORMAT, "GGUF model '%s': token_embd.weight has %lld rows, "
                             "not a vocabulary size in [1, %d]", path, (long long)emb_ne[1],
                             MAX_VOCAB));
    c->vocab_size = (int)emb_ne[1];
  }
  if (n_tok > 0 && n_tok != (uint64_t)c->vocab_size)
    return fail(m, ks_fail(KS_ERR_FORMAT, "GGUF model '%s': tokenizer.ggml.tokens has %llu "
                           "entries but the vocabulary size is %d", path,
                           (unsigned long long)n_tok, c->vocab_size));

  const int64_t dim = c->dim, hid = c->hidden_dim, vocab = c->vocab_size;
  const int64_t q_dim = (int64_t)c->n_head * c->head_dim, kv_dim = (int64_t)c->n_kv_head * c->head_dim;
  if ((st = get_tensor(g, path, "token_embd.weight", dim, vocab, 0, &m->tok_embd)) ||
      (st = get_tensor(g, path, "output_norm.weight", dim, 1, 1, &m->output_norm)))
    return fail(m, st);
  if (gguf_find_tensor(g, "output.weight") >= 0) {
    if ((st = get_tensor(g, path, "output.weight", dim, vocab, 0, &m->output))) return fail(m, st);
  } else {
    m->output = m->tok_embd;
    m->tied_output = 1;
  }

  m->layers = calloc((size_t)c->n_layer, sizeof *m->layers);
  if (!m->layers)
    return fail(m, ks_fail(KS_ERR_NOMEM, "out of memory loading '%s' (%d layers)", path,
                           c->n_layer));
  for (int l = 0; l < c->n_layer; l++) {
    ks_layer *L = &m->layers[l];
    struct {
      const char *suffix;
      int64_t cols, rows;
      int norm;
      ks_tensor *t;
    } want[] = {
        {"attn_norm", dim, 1, 1, &L->attn_norm},   {"attn_q", dim, q_dim, 0, &L->wq},
        {"attn_k", dim, kv_dim, 0, &L->wk},        {"attn_v", dim, kv_dim, 0, &L->wv},
        {"attn_output", q_dim, dim, 0, &L->wo},    {"ffn_norm", dim, 1, 1, &L->ffn_norm},
        {"ffn_gate", dim, hid, 0, &L->w_gate},     {"ffn_down", hid, dim, 0, &L->w_down},
        {"ffn_up", dim, hid, 0, &L->w_up},
    };
    for (size_t k = 0; k < KS_ARRAY_LEN(want); k++) {
      char name[96];
      snprintf(name, sizeof name, "blk.%d.%s.weight", l, want[k].suffix);
      if ((st = get_tensor(g, path, name, want[k].cols, want[k].rows, want[k].norm, want[k].t)))
        return fail(m, st);
    }
  }
  m->fingerprint = model_fingerprint_bytes(m->map, m->map_size);
  return KS_OK;
}
