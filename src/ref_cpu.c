/* ref_cpu.c — the plain C reference of every op and of the one-token-at-a-time forward pass.
 * It follows llama2.c run.c's arithmetic operation for operation (float accumulators summed in
 * index order, the same expressions for RMSNorm, RoPE, the attention scale and softmax), so
 * that with an f32 llama2.c checkpoint its greedy tokens are run.c's tokens. It is the oracle
 * the GPU kernels are tested against; it is not fast and not parallel, on purpose. */
#include "ref_cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ref_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
  float ss = 0.0f;
  for (int j = 0; j < n; j++) ss += x[j] * x[j];
  ss /= n;
  ss += eps;
  ss = 1.0f / sqrtf(ss);
  for (int j = 0; j < n; j++) out[j] = w[j] * (ss * x[j]);
}

/* Dequantising chunk: a multiple of every block size, small enough for the stack. The dot
 * product is still summed in index order, so chunking does not change a single bit. */
#define REF_CHUNK 256

/* ref_set_f16_products: products of rows of a multiple of 32 values multiply f16-rounded
 * operands, as the cooperative-matrix kernels do (process-wide; off unless a test turns it on) */
static int g_f16_products;
void ref_set_f16_products(int mode) { g_f16_products = mode; }
int ref_f16_products(void) { return g_f16_products; }
static int f16_row(ks_type t, int64_t n) {
  return (g_f16_products >= 2 || (g_f16_products == 1 && t == KS_TYPE_F16)) && n >= 32 &&
         n % 32 == 0 && n <= KS_COOPMAT_KMAX;
}
static float f16r(float v) { return ks_f16_to_f32(ks_f32_to_f16(v)); }

static float dot_row(const ks_tensor *w, int64_t row, const float *x) {
  const int64_t n = w->ne[0];
  if (f16_row(w->type, n)) { /* x is already rounded (ref_matmul) */
    const unsigned char *r =
        (const unsigned char *)w->data + (size_t)row * ks_type_row_bytes(w->type, n);
    float buf[REF_CHUNK];
    float val = 0.0f;
    for (int64_t j0 = 0; j0 < n; j0 += REF_CHUNK) {
      const int64_t len = KS_MIN((int64_t)REF_CHUNK, n - j0);
      ks_dequant_row(w->type, r + ks_type_row_bytes(w->type, j0), buf, len);
      for (int64_t j = 0; j < len; j++) val += f16r(buf[j]) * x[j0 + j];
    }
    return val;
  }
  if (w->type == KS_TYPE_F32) {
    const float *r = (const float *)w->data + row * n;
    float val = 0.0f;
    for (int64_t j = 0; j < n; j++) val += r[j] * x[j];
    return val;
  }
  const unsigned char *r = (const unsigned char *)w->data + (size_t)row * ks_type_row_bytes(w->type, n);
  float buf[REF_CHUNK];
  float val = 0.0f;
  for (int64_t j0 = 0; j0 < n; j0 += REF_CHUNK) {
    const int64_t len = KS_MIN((int64_t)REF_CHUNK, n - j0);
    ks_dequant_row(w->type, r + ks_type_row_bytes(w->type, j0), buf, len);
    for (int64_t j = 0; j < len; j++) val += buf[j] * x[j0 + j];
  }
  return val;
}

void ref_matmul(float *out, const float *x, const ks_tensor *w, int n_tok) {
  const int64_t n = w->ne[0], d = w->ne[1];
  const int h = f16_row(w->type, n);
  float *xr = h ? malloc((size_t)n * sizeof *xr) : NULL;
  if (h && !xr) abort(); /* a test oracle out of memory must not answer */
  for (int t = 0; t < n_tok; t++) {
    const float *xt = x + (int64_t)t * n;
    if (xr) {
      for (int64_t j = 0; j < n; j++) xr[j] = f16r(xt[j]);
      xt = xr;
    }
    for (int64_t i = 0; i < d; i++) out[(int64_t)t * d + i] = dot_row(w, i, xt);
  }
  free(xr);
}

void ref_embed(float *out, const ks_tensor *emb, int token) {
  const int64_t n = emb->ne[0];
  const size_t rb = ks_type_row_bytes(emb->type, n);
  const unsigned char *r = (const unsigned char *)emb->data + (size_t)token * rb;
  if (emb->type == KS_TYPE_F32) memcpy(out, r, (size_t)n * sizeof(float));
  else ks_dequant_row(emb->type, r, out, n);
}

static void rotate(float *a, float *b, float fcr, float fci) {
  const float v0 = *a, v1 = *b;
  *a = v0 * fcr - v1 * fci;
  *b = v0 * fci + v1 * fcr;
}

void ref_rope(float *x, int n_heads, int head_dim, int pos, float base, int neox) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; i++) {
    /* run.c: freq = 1 / base^(j / head_dim) for the even element index j = 2i */
    const float freq = 1.0f / powf(base, (float)(2 * i) / (float)head_dim);
    const float val = pos * freq;
    const float fcr = cosf(val), fci = sinf(val);
    for (int h = 0; h < n_heads; h++) {
      float *hx = x + (size_t)h * head_dim;
      if (neox) rotate(&hx[i], &hx[i + half], fcr, fci);
      else rotate(&hx[2 * i], &hx[2 * i + 1], fcr, fci);
    }
  }
}

void ref_rope_freqs(float *freq, int head_dim, float base, const float *factors) {
  for (int i = 0; i < head_dim / 2; i++) {
    const float f = 1.0f / powf(base, (float)(2 * i) / (float)head_dim); /* as in ref_rope */
    freq[i] = factors ? f / factors[i] : f;
  }
}

void ref_rope_table(float *x, int n_heads, int head_dim, int pos, const float *freq, int neox) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; i++) {
    const float val = pos * freq[i];
    const float fcr = cosf(val), fci = sinf(val);
    for (int h = 0; h < n_heads; h++) {
      float *hx = x + (size_t)h * head_dim;
      if (neox) rotate(&hx[i], &hx[i + half], fcr, fci);
      else rotate(&hx[2 * i], &hx[2 * i + 1], fcr, fci);
    }
  }
}

int ref_rope_kv(float *q, float *kpool, float *vpool, const float *qkv, const float *bias,
                int n_tok, int pos0, const uint32_t *table, int block, int n_head, int n_kv_head,
                int head_dim, float base, int neox) {
  const int qd = n_head * head_dim, kvd = n_kv_head * head_dim, width = qd + 2 * kvd;
  float *row = malloc((size_t)width * sizeof *row);
  if (!row) return 0;
  for (int t = 0; t < n_tok; t++) {
    memcpy(row, qkv + (size_t)t * width, (size_t)width * sizeof *row);
    if (bias)
      for (int e = 0; e < width; e++) row[e] += bias[e];
    const int p = pos0 + t;
    ref_rope(row, n_head, head_dim, p, base, neox);
    ref_rope(row + qd, n_kv_head, head_dim, p, base, neox);
    memcpy(q + (size_t)t * qd, row, (size_t)qd * sizeof *row);
    const size_t pr = (size_t)table[p / block] * (size_t)block + (size_t)(p % block);
    memcpy(kpool + pr * kvd, row + qd, (size_t)kvd * sizeof *row);
    memcpy(vpool + pr * kvd, row + qd + kvd, (size_t)kvd * sizeof *row);
  }
  free(row);
  return 1;
}

void ref_softmax(float *x, int n) {
  float max_val = x[0];
  for (int i = 1; i < n; i++)
    if (x[i] > max_val) max_val = x[i];
  float sum = 0.0f;
  for (int i = 0; i < n; i++) {
    x[i] = expf(x[i] - max_val);
    sum += x[i];
  }
  for (int i = 0; i < n; i++) x[i] /= sum;
}

void ref_swiglu(float *out, const float *gate, const float *up, int n) {
  for (int i = 0; i < n; i++) {
    float val = gate[i];
    val *= 1.0f / (1.0f + expf(-val)); /* silu */
    val *= up[i];
    out[i] = val;
  }
}

static float score(const float *q, const float *k, int head_dim) {
  float s = 0.0f;
  for (int i = 0; i < head_dim; i++) s += q[i] * k[i];
  return s / sqrtf((float)head_dim); /* run.c divides; a reciprocal multiply differs in ulps */
}

/* One query head over n_pos cached rows. With `att` (n_pos floats) the softmax row is kept
 * there; without, the scores are recomputed in each pass (bit-identical, no allocation). */
static void attend_head(float *out, float *att, const float *q, const float *k, const float *v,
                        int n_pos, int kv_stride, int head_dim) {
  memset(out, 0, (size_t)head_dim * sizeof(float));
  if (att) {
    for (int t = 0; t < n_pos; t++) att[t] = score(q, k + (size_t)t * kv_stride, head_dim);
    ref_softmax(att, n_pos);
    for (int t = 0; t < n_pos; t++) {
      const float a = att[t];
      const float *vt = v + (size_t)t * kv_stride;
      for (int i = 0; i < head_dim; i++) out[i] += a * vt[i];
    }
    return;
  }
  float max_val = score(q, k, head_dim);
  for (int t = 1; t < n_pos; t++) {
    const float s = score(q, k + (size_t)t * kv_stride, head_dim);
    if (s > max_val) max_val = s;
  }
  float sum = 0.0f;
  for (int t = 0; t < n_pos; t++) sum += expf(score(q, k + (size_t)t * kv_stride, head_dim) - max_val);
  for (int t = 0; t < n_pos; t++) {
    const float a = expf(score(q, k + (size_t)t * kv_stride, head_dim) - max_val) / sum;
    const float *vt = v + (size_t)t * kv_stride;
    for (int i = 0; i < head_dim; i++) out[i] += a * vt[i];
  }
}

/* probs rows are probs_stride apart: n_pos for ref_attention's caller, n_ctx in ref_state. */
static void attention(float *out, float *probs, int probs_stride, const float *q, const float *k,
                      const float *v, int n_pos, int kv_stride, int n_head, int n_kv_head,
                      int head_dim) {
  const int kv_mul = n_head / n_kv_head;
  for (int h = 0; h < n_head; h++) {
    const size_t kv_off = (size_t)(h / kv_mul) * head_dim;
    attend_head(out + (size_t)h * head_dim, probs ? probs + (size_t)h * probs_stride : NULL,
                q + (size_t)h * head_dim, k + kv_off, v + kv_off, n_pos, kv_stride, head_dim);
  }
}

void ref_attention(float *out, float *probs, const float *q, const float *k, const float *v,
                   int n_pos, int kv_stride, int n_head, int n_kv_head, int head_dim) {
  attention(out, probs, n_pos, q, k, v, n_pos, kv_stride, n_head, n_kv_head, head_dim);
}

/* ---- whole model ---- */

static float *alloc_floats(size_t n, int *failed) {
  float *p = calloc(n ? n : 1, sizeof(float));
  if (!p) *failed = 1;
  return p;
}

ks_status ref_state_init(ref_state *s, const ks_model *m, int n_ctx) {
  memset(s, 0, sizeof *s);
  const ks_config *c = &m->cfg;
  if (n_ctx <= 0)
    return ks_fail(KS_ERR_ARG, "reference state needs a positive context length, got %d", n_ctx);
  const size_t q_dim = (size_t)c->n_head * c->head_dim, kv_dim = (size_t)c->n_kv_head * c->head_dim;
  const size_t scratch = KS_MAX(KS_MAX((size_t)c->dim, q_dim), (size_t)c->hidden_dim);
  const size_t cache = (size_t)c->n_layer * (size_t)n_ctx * kv_dim;
  s->m = m;
  s->n_ctx = n_ctx;
  int failed = 0;
  s->k_cache = alloc_floats(cache, &failed);
  s->v_cache = alloc_floats(cache, &failed);
  /* x, xb, xb2 hold a dim vector or a q_dim attention output: size them for both */
  s->x = alloc_floats(scratch, &failed);
  s->xb = alloc_floats(scratch, &failed);
  s->xb2 = alloc_floats(scratch, &failed);
  s->q = alloc_floats(q_dim, &failed);
  s->k = alloc_floats(kv_dim, &failed);
  s->v = alloc_floats(kv_dim, &failed);
  s->hb = alloc_floats((size_t)c->hidden_dim, &failed);
  s->hb2 = alloc_floats((size_t)c->hidden_dim, &failed);
  s->probs = alloc_floats((size_t)c->n_layer * c->n_head * (size_t)n_ctx, &failed);
  s->logits = alloc_floats((size_t)c->vocab_size, &failed);
  if (m->rope_factors) {
    s->rope_freq = alloc_floats((size_t)c->head_dim / 2, &failed);
    if (!failed) ref_rope_freqs(s->rope_freq, c->head_dim, c->rope_base, m->rope_factors);
  }
  if (failed) {
    ref_state_deinit(s);
    return ks_fail(KS_ERR_NOMEM, "out of host memory for the CPU reference state (context %d, "
                   "%.1f MiB of K/V cache): lower the context (-c)", n_ctx,
                   2.0 * cache * sizeof(float) / 1048576.0);
  }
  return KS_OK;
}

void ref_state_deinit(ref_state *s) {
  if (!s) return;
  free(s->k_cache);
  free(s->v_cache);
  free(s->x);
  free(s->xb);
  free(s->xb2);
  free(s->q);
  free(s->k);
  free(s->v);
  free(s->hb);
  free(s->hb2);
  free(s->probs);
  free(s->logits);
  free(s->rope_freq);
  memset(s, 0, sizeof *s);
}

/* A norm weight vector as f32: the file's bytes when already f32, else dequantised into tmp. */
static const float *norm_weights(const ks_tensor *t, float *tmp) {
  if (t->type == KS_TYPE_F32) return t->data;
  ks_dequant_row(t->type, t->data, tmp, t->ne[0]);
  return tmp;
}

/* x (b->ne[0]) += the f32 bias b, if the layer has one (the loader checks its type). */
static void add_bias(float *x, const ks_tensor *b) {
  if (!b->data) return;
  const float *v = b->data;
  for (int64_t i = 0; i < b->ne[0]; i++) x[i] += v[i];
}

/* Returns NULL (and records why) when token or pos is out of range. */
const float *ref_forward(ref_state *s, int token, int pos) {
  const ks_model *m = s->m;
  const ks_config *c = &m->cfg;
  if (pos < 0 || pos >= s->n_ctx) {
    ks_fail(KS_ERR_ARG, "position %d is outside the reference context of %d", pos, s->n_ctx);
    return NULL;
  }
  if (token < 0 || token >= c->vocab_size) {
    ks_fail(KS_ERR_ARG, "token id %d is outside the vocabulary of %d", token, c->vocab_size);
    return NULL;
  }
  const int dim = c->dim, hd = c->head_dim, hidden = c->hidden_dim;
  const int kv_dim = c->n_kv_head * hd;
  float *x = s->x;

  ref_embed(x, &m->tok_embd, token);
  for (int l = 0; l < c->n_layer; l++) {
    const ks_layer *L = &m->layers[l];
    const size_t loff = (size_t)l * s->n_ctx * kv_dim;
    float *kc = s->k_cache + loff, *vc = s->v_cache + loff;

    /* xb2 is free until the output projection: it holds dequantised norm weights if needed */
    ref_rmsnorm(s->xb, x, norm_weights(&L->attn_norm, s->xb2), dim, c->norm_eps);
    ref_matmul(s->q, s->xb, &L->wq, 1);
    ref_matmul(s->k, s->xb, &L->wk, 1);
    ref_matmul(s->v, s->xb, &L->wv, 1);
    add_bias(s->q, &L->bq);
    add_bias(s->k, &L->bk);
    add_bias(s->v, &L->bv);
    if (s->rope_freq) {
      ref_rope_table(s->q, c->n_head, hd, pos, s->rope_freq, c->rope_neox);
      ref_rope_table(s->k, c->n_kv_head, hd, pos, s->rope_freq, c->rope_neox);
    } else {
      ref_rope(s->q, c->n_head, hd, pos, c->rope_base, c->rope_neox);
      ref_rope(s->k, c->n_kv_head, hd, pos, c->rope_base, c->rope_neox);
    }
    memcpy(kc + (size_t)pos * kv_dim, s->k, (size_t)kv_dim * sizeof(float));
    memcpy(vc + (size_t)pos * kv_dim, s->v, (size_t)kv_dim * sizeof(float));

    attention(s->xb, s->probs + (size_t)l * c->n_head * s->n_ctx, s->n_ctx, s->q, kc, vc, pos + 1,
              kv_dim, c->n_head, c->n_kv_head, hd);
    ref_matmul(s->xb2, s->xb, &L->wo, 1);
    for (int i = 0; i < dim; i++) x[i] += s->xb2[i];

    ref_rmsnorm(s->xb, x, norm_weights(&L->ffn_norm, s->xb2), dim, c->norm_eps);
    ref_matmul(s->hb, s->xb, &L->w_gate, 1);
    ref_matmul(s->hb2, s->xb, &L->w_up, 1);
    ref_swiglu(s->hb, s->hb, s->hb2, hidden);
    ref_matmul(s->xb, s->hb, &L->w_down, 1);
    for (int i = 0; i < dim; i++) x[i] += s->xb[i];
  }
  ref_rmsnorm(x, x, norm_weights(&m->output_norm, s->xb2), dim, c->norm_eps);
  ref_matmul(s->logits, x, &m->output, 1);
  return s->logits;
}
