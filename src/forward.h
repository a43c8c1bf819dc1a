/* forward.h — the transformer on the GPU: weights uploaded once into device memory, the paged
 * K/V pool, activation scratch for a batch of tokens, and the recorded command buffers.
 * Prefill evaluates a chunk of tokens with matrix-matrix work; decode replays one recorded
 * command buffer per token after rewriting the token id and position. K/V never leave the GPU.
 * What it is not: it does not choose tokens (sampler.c) nor decide which positions are cached
 * (the caller owns the block table). */
#ifndef KS_FORWARD_H
#define KS_FORWARD_H
#include "gpu.h"
#include "model.h"

typedef struct {
  /* wqkv = [wq; wk; wv] and w_gu = [w_gate; w_up] stacked in one buffer each when they fit one
   * storage-buffer range (one product each, see record_graph); otherwise the parts, and the
   * stacked ones have no slices. */
  ks_gpu_tensor wqkv, w_gu;
  ks_gpu_tensor wq, wk, wv, wo, w_gate, w_down, w_up;
  uint64_t attn_norm_off, ffn_norm_off; /* byte offsets into ks_forward.norms */
  ks_buf bias; /* (q_dim + 2*kv_dim) f32: q, k, v biases (qwen2); .buf NULL when none */
} ks_fwd_layer;

typedef struct {
  uint64_t kv_rows_written; /* K/V rows (per layer) written by the GPU since creation */
  uint64_t kv_rows_attended; /* sum over evaluated tokens of the positions each attended */
  uint64_t decode_replays;  /* decode steps served by replaying the recorded command buffer */
  uint64_t decode_records;  /* times the decode command buffer was (re)recorded */
} ks_fwd_counters;

typedef struct {
  ks_gpu *gpu;
  const ks_model *m;
  int n_ctx;     /* positions addressable through the block table */
  int max_batch; /* tokens per prefill chunk */
  int n_blocks;  /* K/V blocks in the pool */
  ks_gpu_tensor tok_embd, output; /* output aliases tok_embd when tied */
  int output_is_embd;
  ks_buf norms;                   /* (2*n_layer + 1, dim) f32: attn, ffn per layer, then final */
  ks_fwd_layer *layers;           /* n_layer */
  ks_buf *k_pool, *v_pool;        /* n_layer each: (n_blocks, KS_KV_BLOCK, kv_dim) f32 */
  ks_buf table;                   /* (n_ctx / KS_KV_BLOCK rounded up) u32 block ids, host-visible */
  ks_buf steptab_dev;             /* device copy of step (16 bytes) then table, made at the start
                                   * of every submission: kernels read them many times, host
                                   * memory is far away */
  ks_buf x;                       /* (max_batch, dim) residual stream */
  ks_buf qkv;                     /* (max_batch, q_dim + 2 kv_dim) the q|k|v product */
  ks_buf q;                       /* (max_batch, q_dim) rotated queries */
  ks_buf att;                     /* (max_batch, q_dim) attention output */
  ks_buf att_part;                /* decode attention's per-chunk partials (op_attention_ex) */
  ks_buf hb, hb2;                 /* (max_batch, hidden_dim) */
  ks_buf logits;                  /* (max_batch, vocab) f32, host-visible */
  ks_buf tokens;                  /* (max_batch) u32, host-visible */
  ks_buf step;                    /* ks_step, host-visible */
  ks_buf probs;                   /* (n_head, n_ctx) f32, host-visible: watched attention rows */
  ks_cmd *cmd_prefill, *cmd_decode;
  int decode_recorded;
  int watch_layer;                /* layer whose attention rows are exported; -1: none */
  int decode_watch_layer;         /* watch_layer the decode buffer was recorded with */
  int decode_split;               /* the decode buffer splits attention over the context */
  int split_from;                 /* positions from which decode splits attention (see forward.c) */
  int no_fused_rope;              /* tests: RoPE + K/V write as op_rope_kv even where it could fuse */
  unsigned step_delay_us;         /* tests only: a pause before each prefill chunk and decode
                                   * step, so signal tests can land mid-work on a fast GPU */
  ks_fwd_counters counters;
} ks_forward;

/* n_blocks 0: enough for n_ctx positions (one sequence). */
ks_status forward_create(ks_forward **out, ks_gpu *gpu, const ks_model *m, int n_ctx,
                         int max_batch, int n_blocks);
void forward_destroy(ks_forward *f);
/* Block table of the sequence being evaluated: blocks[i] is the pool block holding logical
 * positions i*KS_KV_BLOCK .. +KS_KV_BLOCK-1. */
ks_status forward_set_table(ks_forward *f, const uint32_t *blocks, int n);
/* Evaluates n tokens at positions pos0..pos0+n-1 (any n: split into chunks of max_batch),
 * writing their K/V rows. logits: NULL, or (vocab) for the last token, or (n, vocab) for every
 * token when all_logits. A single token uses the recorded decode command buffer. */
ks_status forward_eval(ks_forward *f, const int *tokens, int n, int pos0, float *logits,
                       int all_logits);
/* forward_eval with the kind of work said: prompt 1, a prompt's tokens (every chunk, even of one
 * token, on the prefill kernels); 0 with n = 1, a decode step (the replayed buffer).
 * forward_eval(n) is forward_eval_ex(n, prompt = n > 1). The two differ in bits only under
 * gpu_coopmat_mode 3, where decode steps keep the portable products. */
ks_status forward_eval_ex(ks_forward *f, const int *tokens, int n, int pos0, float *logits,
                          int all_logits, int prompt);
/* Export the attention rows of `layer` (-1: off) for the last token of each eval: read them
 * with forward_probs after an eval. */
void forward_watch(ks_forward *f, int layer);
/* (n_head, n_ctx) rows of the last eval's last token; valid positions 0..pos. */
const float *forward_probs(const ks_forward *f);
/* Bytes of one block's K and V rows over all layers (the cache_file payload layout: layer 0 K,
 * layer 0 V, layer 1 K, ...). */
uint64_t forward_block_bytes(const ks_forward *f);
/* Copies pool block `block` to/from host memory in that layout. */
ks_status forward_read_block(ks_forward *f, uint32_t block, void *dst);
ks_status forward_write_block(ks_forward *f, uint32_t block, const void *src);
/* Bytes of device memory held for K/V. */
uint64_t forward_kv_bytes(const ks_forward *f);

#endif
