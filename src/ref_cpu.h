/* ref_cpu.h — the plain C reference of every op and of the whole forward pass. It is the test
 * oracle for the GPU kernels (and `--cpu` in the CLI): straightforward loops, f32 activations,
 * weights dequantised row by row with ks_dequant_row, no cleverness. Not meant to be fast. */
#ifndef KS_REF_CPU_H
#define KS_REF_CPU_H
#include "model.h"

/* out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i], i < n */
void ref_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* out (n_tok, w->ne[1]) = x (n_tok, w->ne[0]) · wᵀ, dequantising each weight row. */
void ref_matmul(float *out, const float *x, const ks_tensor *w, int n_tok);
/* On a device whose products run on the cooperative-matrix kernels (gpu_matmul_coopmat: f16
 * operands, f32 sums), the reference models them: mode 1 (F16 weights) or 2 and 3 (every type),
 * as gpu_coopmat_mode, makes ref_matmul round x and the dequantised weights to f16 (nearest even)
 * for the products those kernels take (rows of a multiple of 32 values, at most
 * KS_COOPMAT_KMAX), then sum in f32 as always. Process-wide, 0 (off) by default; tests and
 * selftest set it from the device. */
void ref_set_f16_products(int mode);
int ref_f16_products(void);
/* out (dim) = row `token` of the embedding table, dequantised. */
void ref_embed(float *out, const ks_tensor *emb, int token);
/* Rotates n_heads heads of head_dim values in place for position pos. neox=0: pairs
 * (2i, 2i+1) with frequency base^(-2i/head_dim); neox=1: pairs (i, i + head_dim/2). */
void ref_rope(float *x, int n_heads, int head_dim, int pos, float base, int neox);
/* The inverse frequencies ref_rope uses, freq[i] = 1 / base^(2i/head_dim) (i < head_dim/2),
 * each divided by factors[i] when factors is not NULL (Llama 3 rope scaling divides the low
 * frequencies). The GPU's rope table is this function's output. */
void ref_rope_freqs(float *freq, int head_dim, float base, const float *factors);
/* ref_rope with a frequency table from ref_rope_freqs: pair i turns by pos * freq[i]. With the
 * unscaled table it gives ref_rope's bits. */
void ref_rope_table(float *x, int n_heads, int head_dim, int pos, const float *freq, int neox);
/* The reference of op_rope_kv (and of the q|k|v product's RoPE epilogue): each row of qkv
 * (n_tok, q_dim + 2 kv_dim) at position pos0 + t, plus bias (q_dim + 2 kv_dim, or NULL), has its
 * q and k heads rotated (ref_rope); q goes to q (n_tok, q_dim), k and v to row
 * table[p / block] * block + p % block of kpool and vpool (kv_dim floats a row); other pool rows
 * are left alone. 0 when out of host memory. */
int ref_rope_kv(float *q, float *kpool, float *vpool, const float *qkv, const float *bias,
                int n_tok, int pos0, const uint32_t *table, int block, int n_head, int n_kv_head,
                int head_dim, float base, int neox);
void ref_softmax(float *x, int n);
/* out[i] = silu(gate[i]) * up[i] */
void ref_swiglu(float *out, const float *gate, const float *up, int n);
/* Causal attention of one query row at position n_pos-1 over cached positions 0..n_pos-1.
 * q (n_head*head_dim), k/v caches (n_pos rows, row stride kv_stride floats, head h of the
 * query reads kv head h / (n_head / n_kv_head)), out (n_head*head_dim),
 * probs (n_head, n_pos) softmax rows if not NULL. Scale 1/sqrt(head_dim). */
void ref_attention(float *out, float *probs, const float *q, const float *k, const float *v,
                   int n_pos, int kv_stride, int n_head, int n_kv_head, int head_dim);

/* Whole-model state for the reference forward pass, one token at a time. */
typedef struct {
  const ks_model *m;
  int n_ctx;
  float *k_cache;  /* (n_layer, n_ctx, kv_dim) */
  float *v_cache;  /* (n_layer, n_ctx, kv_dim) */
  float *x, *xb, *xb2, *q, *k, *v, *hb, *hb2; /* scratch: (dim), (dim), (dim), (q_dim),
                                               * (kv_dim), (kv_dim), (hidden), (hidden) */
  float *probs;    /* (n_layer, n_head, n_ctx): attention rows of the last token */
  float *logits;   /* (vocab) */
  float *rope_freq; /* (head_dim/2) scaled RoPE frequencies when the model has rope_factors */
} ref_state;

ks_status ref_state_init(ref_state *s, const ks_model *m, int n_ctx);
void ref_state_deinit(ref_state *s);
/* Feeds `token` at position pos (0 <= pos < n_ctx; positions before it must have been fed).
 * Returns the logits (vocab), valid until the next call. Layers with q/k/v biases add them
 * after the projections; a model with rope_factors rotates by the scaled frequencies. */
const float *ref_forward(ref_state *s, int token, int pos);

#endif
