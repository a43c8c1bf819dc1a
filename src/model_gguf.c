/* model_gguf.c — maps a `llama` or `qwen2` GGUF (as llama.cpp writes them) onto ks_model: the
 * <arch>.* keys into ks_config, the named tensors into views of the mapping, each checked for
 * shape and type against the configuration. What the architecture decides: the key prefix, the
 * RoPE pairing (llama: adjacent pairs, as llama GGUFs store Q/K permuted for it; qwen2: NeoX
 * halves) and the optional q/k/v biases (qwen2 has them). RoPE frequency scaling (Llama 3's
 * rope_freqs.weight, or the rope.scaling.* keys: llama3 or linear) becomes per-frequency
 * divisors, applied to the frequency table on the host. The container itself is validated by
 * gguf.c; the tokenizer keys are read by tokenizer.c. Not handled: other architectures, 3-D
 * tensors, YaRN/LongRoPE scaling, biases other than q/k/v (each refused with a message). */
#include <math.h>
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

/* The architecture being loaded, for messages ("a qwen2 model needs it"). */
static _Thread_local const char *g_arch = "llama";

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
      return ks_fail(KS_ERR_FORMAT, "GGUF model '%s' has no '%s' key: a %s model needs it",
                     path, key, g_arch);
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
    return ks_fail(KS_ERR_FORMAT, "GGUF model '%s' has no tensor '%s': a %s model needs it",
                   path, name, g_arch);
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
                   "cannot compute with (supported: F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, "
                   "Q4_K, Q5_K, Q6_K); re-quantise the model to one of those (e.g. Q4_K_M)",
                   path, name, ks_type_name(type));
  return gguf_tensor(g, i, t);
}

/* An optional f32 vector `name` of n values (a bias): t->data stays NULL when absent. */
static ks_status get_vector_opt(const ks_gguf *g, const char *path, const char *name, int64_t n,
                                ks_tensor *t) {
  int i = gguf_find_tensor(g, name);
  if (i < 0) return KS_OK;
  uint32_t type;
  int64_t ne[4];
  ks_status st = gguf_tensor_info(g, i, &type, NULL, ne);
  if (st) return st;
  if (ne[0] != n || ne[1] != 1 || ne[2] != 1 || ne[3] != 1)
    return ks_fail(KS_ERR_FORMAT, "GGUF model '%s': tensor '%s' has shape [%lld, %lld, %lld, "
                   "%lld], expected a vector of %lld values from the model's metadata", path,
                   name, (long long)ne[0], (long long)ne[1], (long long)ne[2], (long long)ne[3],
                   (long long)n);
  if (type != KS_TYPE_F32)
    return ks_fail(KS_ERR_UNSUPPORTED, "GGUF model '%s': bias tensor '%s' is %s; kvscope needs "
                   "biases in F32 (as llama.cpp's converter writes them)", path, name,
                   ks_type_name(type));
  return gguf_tensor(g, i, t);
}

/* Architectures: GGUF name, whether RoPE rotates NeoX halves. */
static const struct {
  const char *name;
  int neox;
} k_archs[] = {
    {"llama", 0}, /* Llama 2/3, Mistral, TinyLlama, SmolLM2, ... */
    {"qwen2", 1},
};

/* "<arch>.<rest>" into a static slot (a few live at once). */
static const char *akey(const char *arch, const char *rest) {
  static _Thread_local char bufs[4][128];
  static _Thread_local unsigned slot;
  char *b = bufs[slot++ & 3];
  snprintf(b, sizeof bufs[0], "%s.%s", arch, rest);
  return b;
}

/* Llama 3's frequency-dependent scaling (the rope_scaling "llama3" of the Hugging Face config):
 * wavelengths shorter than original_ctx / high_ff keep their frequency, those longer than
 * original_ctx / low_ff are divided by `factor`, and the band between blends the two. Writes
 * the divisor of each frequency (what llama.cpp's converter stores as rope_freqs.weight). */
static void llama3_factors(float *out, int head_dim, double base, double factor, double low_ff,
                           double high_ff, double orig_ctx) {
  const double pi = 3.14159265358979323846;
  const double low_wavelen = orig_ctx / low_ff, high_wavelen = orig_ctx / high_ff;
  for (int i = 0; i < head_dim / 2; i++) {
    double freq = 1.0 / pow(base, (double)(2 * i) / head_dim);
    double wavelen = 2.0 * pi / freq;
    if (wavelen < high_wavelen) {
      out[i] = 1.0f;
    } else if (wavelen > low_wavelen) {
      out[i] = (float)factor;
    } else {
      double smooth = (orig_ctx / wavelen - low_ff) / (high_ff - low_ff);
      out[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
    }
  }
}

/* RoPE scaling: rope_freqs.weight (per-frequency divisors), else <arch>.rope.scaling.type
 * "llama3" (factor, low_freq_factor, high_freq_factor, original_context_length) or "linear"
 * (factor; also the older <arch>.rope.scale_linear). A linear factor multiplies the tensor's
 * divisors when both are present. Sets m->rope_factors (NULL when unscaled). */
static ks_status load_rope_scaling(ks_model *m, const ks_gguf *g, const char *path,
                                   const char *arch) {
  const ks_config *c = &m->cfg;
  const int half = c->head_dim / 2;
  const float *tensor = NULL;
  ks_status st;
  int ti = gguf_find_tensor(g, "rope_freqs.weight");
  if (ti >= 0) {
    uint32_t type;
    int64_t ne[4];
    if ((st = gguf_tensor_info(g, ti, &type, NULL, ne))) return st;
    if (type != KS_TYPE_F32 || ne[0] != half || ne[1] != 1 || ne[2] != 1 || ne[3] != 1)
      return ks_fail(KS_ERR_FORMAT, "GGUF model '%s': rope_freqs.weight is %s [%lld, %lld], "
                     "expected F32 [%d] (head size %d / 2)", path, ks_type_name(type),
                     (long long)ne[0], (long long)ne[1], half, c->head_dim);
    ks_tensor t;
    if ((st = gguf_tensor(g, ti, &t))) return st;
    tensor = t.data;
    for (int i = 0; i < half; i++)
      if (!(tensor[i] > 0.0f) || !isfinite(tensor[i]))
        return ks_fail(KS_ERR_FORMAT, "GGUF model '%s': rope_freqs.weight[%d] = %g is not a "
                       "positive frequency divisor", path, i, tensor[i]);
  }
  const char *type = gguf_get_str(g, akey(arch, "rope.scaling.type"));
  float factor = 1.0f;
  int linear = 0, llama3 = 0;
  if (type && strcmp(type, "none") != 0) {
    if (!strcmp(type, "linear")) linear = 1;
    else if (!strcmp(type, "llama3")) llama3 = 1;
    else
      return ks_fail(KS_ERR_UNSUPPORTED, "GGUF model '%s': RoPE scaling type '%.32s' "
                     "(%s.rope.scaling.type) is not supported; kvscope implements none, linear "
                     "and llama3", path, type, arch);
    if ((st = get_float(g, path, akey(arch, "rope.scaling.factor"), 1.0, 1e-3, 1e6, &factor)))
      return st;
  } else if (!type && gguf_find_key(g, akey(arch, "rope.scale_linear")) >= 0) {
    if ((st = get_float(g, path, akey(arch, "rope.scale_linear"), 1.0, 1e-3, 1e6, &factor)))
      return st;
    linear = factor != 1.0f;
  }
  if (!tensor && !llama3 && !linear) return KS_OK;
  if (tensor && !linear) { /* the file's divisors as they are, in the mapping */
    m->rope_factors = tensor;
    return KS_OK;
  }
  float *f = malloc((size_t)half * sizeof *f);
  if (!f) return ks_fail(KS_ERR_NOMEM, "out of memory loading '%s'", path);
  free(m->owned);
  m->owned = f;
  m->rope_factors = f;
  if (tensor) { /* both: the tensor's divisors times the linear factor */
    for (int i = 0; i < half; i++) f[i] = tensor[i] * factor;
    return KS_OK;
  }
  if (linear) {
    for (int i = 0; i < half; i++) f[i] = factor;
    return KS_OK;
  }
  float low, high;
  int orig;
  if ((st = get_float(g, path, akey(arch, "rope.scaling.low_freq_factor"), 1.0, 1e-6, 1e6, &low)) ||
      (st = get_float(g, path, akey(arch, "rope.scaling.high_freq_factor"), 4.0, 1e-6, 1e6, &high)) ||
      (st = get_int(g, path, akey(arch, "rope.scaling.original_context_length"), 0, 8192, 1,
                    MAX_CTX, &orig)))
    return st;
  if (!(high > low))
    return ks_fail(KS_ERR_FORMAT, "GGUF model '%s': llama3 RoPE scaling needs high_freq_factor "
                   "(%g) above low_freq_factor (%g)", path, high, low);
  llama3_factors(f, c->head_dim, c->rope_base, factor, low, high, orig);
  return KS_OK;
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
  int ai = -1;
  for (size_t k = 0; k < KS_ARRAY_LEN(k_archs); k++)
    if (!strcmp(arch, k_archs[k].name)) ai = (int)k;
  if (ai < 0)
    return fail(m, ks_fail(KS_ERR_UNSUPPORTED, "unsupported architecture '%.64s' in %s: kvscope "
                           "runs llama and qwen2 (Llama 2/3, Mistral, TinyLlama, SmolLM2, "
                           "Qwen2/2.5)", arch, path));
  arch = k_archs[ai].name; /* static storage: the messages below keep it */
  g_arch = arch;

  ks_config *c = &m->cfg;
  snprintf(c->arch, sizeof c->arch, "%s", arch);
  if ((st = get_int(g, path, akey(arch, "embedding_length"), 1, 0, 1, MAX_DIM, &c->dim)) ||
      (st = get_int(g, path, akey(arch, "feed_forward_length"), 1, 0, 1, MAX_HIDDEN,
                    &c->hidden_dim)) ||
      (st = get_int(g, path, akey(arch, "block_count"), 1, 0, 1, MAX_LAYERS, &c->n_layer)) ||
      (st = get_int(g, path, akey(arch, "attention.head_count"), 1, 0, 1, MAX_HEADS,
                    &c->n_head)) ||
      (st = get_int(g, path, akey(arch, "attention.head_count_kv"), 0, c->n_head, 1, MAX_HEADS,
                    &c->n_kv_head)) ||
      (st = get_int(g, path, akey(arch, "context_length"), 1, 0, 1, MAX_CTX, &c->n_ctx)) ||
      (st = get_float(g, path, akey(arch, "attention.layer_norm_rms_epsilon"), 1e-5, 0.0, 1.0,
                      &c->norm_eps)) ||
      (st = get_float(g, path, akey(arch, "rope.freq_base"), 10000.0, 1e-3, 1e12,
                      &c->rope_base)))
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
  if ((st = get_int(g, path, akey(arch, "attention.key_length"), 0, c->head_dim, 1, MAX_DIM,
                    &kl)) ||
      (st = get_int(g, path, akey(arch, "attention.value_length"), 0, c->head_dim, 1, MAX_DIM,
                    &vl)) ||
      (st = get_int(g, path, akey(arch, "rope.dimension_count"), 0, c->head_dim, 1, MAX_DIM,
                    &rd)))
    return fail(m, st);
  if (kl != c->head_dim || vl != c->head_dim || rd != c->head_dim)
    return fail(m, ks_fail(KS_ERR_UNSUPPORTED, "GGUF model '%s': key/value length %d/%d or rope "
                           "dimension %d differs from embedding_length / head_count = %d; kvscope "
                           "supports only the standard %s head layout", path, kl, vl, rd,
                           c->head_dim, arch));
  /* llama GGUFs store Q/K permuted for adjacent-pair rotation; qwen2 keeps NeoX halves */
  c->rope_neox = k_archs[ai].neox;
  if ((st = load_rope_scaling(m, g, path, arch))) return fail(m, st);

  /* vocabulary size: explicit key, else the tokenizer, else the embedding's rows */
  int ti = gguf_find_tensor(g, "token_embd.weight");
  if (ti < 0)
    return fail(m, ks_fail(KS_ERR_FORMAT, "GGUF model '%s' has no tensor 'token_embd.weight': a "
                           "%s model needs it", path, arch));
  int64_t emb_ne[4];
  if ((st = gguf_tensor_info(g, ti, NULL, NULL, emb_ne))) return fail(m, st);
  gguf_vtype tok_t;
  uint64_t n_tok = gguf_arr_len(g, "tokenizer.ggml.tokens", &tok_t);
  if (gguf_find_key(g, akey(arch, "vocab_size")) >= 0) {
    if ((st = get_int(g, path, akey(arch, "vocab_size"), 1, 0, 1, MAX_VOCAB, &c->vocab_size)))
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
    struct {
      const char *suffix;
      int64_t n;
      ks_tensor *t;
    } bias[] = {{"attn_q", q_dim, &L->bq}, {"attn_k", kv_dim, &L->bk}, {"attn_v", kv_dim, &L->bv}};
    for (size_t k = 0; k < KS_ARRAY_LEN(bias); k++) {
      char name[96];
      snprintf(name, sizeof name, "blk.%d.%s.bias", l, bias[k].suffix);
      if ((st = get_vector_opt(g, path, name, bias[k].n, bias[k].t))) return fail(m, st);
    }
    /* biases the forward pass has no place for: refuse rather than silently drop them */
    static const char *const unused[] = {"attn_output", "ffn_gate", "ffn_down", "ffn_up"};
    for (size_t k = 0; k < KS_ARRAY_LEN(unused); k++) {
      char name[96];
      snprintf(name, sizeof name, "blk.%d.%s.bias", l, unused[k]);
      if (gguf_find_tensor(g, name) >= 0)
        return fail(m, ks_fail(KS_ERR_UNSUPPORTED, "GGUF model '%s' has tensor '%s': kvscope "
                               "implements only the q/k/v projection biases", path, name));
    }
  }
  m->fingerprint = model_fingerprint_bytes(m->map, m->map_size);
  return KS_OK;
}
