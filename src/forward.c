/* forward.c — records the Llama forward pass into command buffers from the ops of gpu.h.
 * One chunk of prefill = one recording (cheap next to its work); decode = one recording replayed
 * for every generated token, with the token id and position rewritten in host-visible buffers. */
#include "forward.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK_ST(expr)           \
  do {                           \
    ks_status st_ = (expr);      \
    if (st_ != KS_OK) return st_; \
  } while (0)

static int q_dim(const ks_config *c) { return c->n_head * c->head_dim; }
static int kv_dim(const ks_config *c) { return c->n_kv_head * c->head_dim; }

void forward_destroy(ks_forward *f) {
  if (!f) return;
  ks_gpu *g = f->gpu;
  gpu_cmd_destroy(f->cmd_prefill);
  gpu_cmd_destroy(f->cmd_decode);
  if (f->layers) {
    for (int l = 0; l < f->m->cfg.n_layer; l++) {
      ks_fwd_layer *L = &f->layers[l];
      gpu_tensor_free(g, &L->wqkv);
      gpu_tensor_free(g, &L->w_gu);
      gpu_tensor_free(g, &L->wq);
      gpu_tensor_free(g, &L->wk);
      gpu_tensor_free(g, &L->wv);
      gpu_tensor_free(g, &L->wo);
      gpu_tensor_free(g, &L->w_gate);
      gpu_tensor_free(g, &L->w_down);
      gpu_tensor_free(g, &L->w_up);
      gpu_buf_destroy(g, &L->bias);
    }
  }
  if (f->k_pool)
    for (int l = 0; l < f->m->cfg.n_layer; l++) gpu_buf_destroy(g, &f->k_pool[l]);
  if (f->v_pool)
    for (int l = 0; l < f->m->cfg.n_layer; l++) gpu_buf_destroy(g, &f->v_pool[l]);
  free(f->k_pool);
  free(f->v_pool);
  free(f->layers);
  if (!f->output_is_embd) gpu_tensor_free(g, &f->output);
  gpu_tensor_free(g, &f->tok_embd);
  ks_buf *bufs[] = {&f->att_part, &f->steptab_dev, &f->norms, &f->table, &f->x,      &f->qkv,  &f->q,    &f->att,
                    &f->hb,    &f->hb2,   &f->logits, &f->tokens, &f->step, &f->probs};
  for (size_t i = 0; i < KS_ARRAY_LEN(bufs); i++) gpu_buf_destroy(g, bufs[i]);
  free(f);
}

/* The layer's q/k/v biases, packed q | k | v (a missing one stays zero and is never read). */
static ks_status upload_bias(ks_gpu *g, ks_fwd_layer *L, const ks_layer *H) {
  if (!H->bq.data && !H->bk.data && !H->bv.data) return KS_OK;
  uint64_t qb = (uint64_t)H->wq.ne[1] * 4, kb = (uint64_t)H->wk.ne[1] * 4;
  CHECK_ST(gpu_buf_create(g, &L->bias, qb + 2 * kb, KS_MEM_DEVICE));
  CHECK_ST(gpu_fill_u32(g, &L->bias, 0, qb + 2 * kb, 0));
  if (H->bq.data) CHECK_ST(gpu_upload(g, &L->bias, 0, H->bq.data, qb));
  if (H->bk.data) CHECK_ST(gpu_upload(g, &L->bias, qb, H->bk.data, kb));
  if (H->bv.data) CHECK_ST(gpu_upload(g, &L->bias, qb + kb, H->bv.data, kb));
  return KS_OK;
}

/* q|k|v and gate|up go up stacked when they can (one product each); else as parts. */
static ks_status upload_layer(ks_gpu *g, ks_fwd_layer *L, const ks_layer *H) {
  CHECK_ST(upload_bias(g, L, H));
  const ks_tensor *qkv[3] = {&H->wq, &H->wk, &H->wv}, *gu[2] = {&H->w_gate, &H->w_up};
  ks_status st = gpu_tensor_upload_concat(g, &L->wqkv, qkv, 3);
  if (st == KS_ERR_UNSUPPORTED) {
    CHECK_ST(gpu_tensor_upload(g, &L->wq, &H->wq));
    CHECK_ST(gpu_tensor_upload(g, &L->wk, &H->wk));
    CHECK_ST(gpu_tensor_upload(g, &L->wv, &H->wv));
  } else if (st != KS_OK) {
    return st;
  }
  CHECK_ST(gpu_tensor_upload(g, &L->wo, &H->wo));
  st = gpu_tensor_upload_concat(g, &L->w_gu, gu, 2);
  if (st == KS_ERR_UNSUPPORTED) {
    CHECK_ST(gpu_tensor_upload(g, &L->w_gate, &H->w_gate));
    CHECK_ST(gpu_tensor_upload(g, &L->w_up, &H->w_up));
  } else if (st != KS_OK) {
    return st;
  }
  CHECK_ST(gpu_tensor_upload(g, &L->w_down, &H->w_down));
  return KS_OK;
}

static ks_status create_inner(ks_forward *f) {
  ks_gpu *g = f->gpu;
  const ks_model *m = f->m;
  const ks_config *c = &m->cfg;
  const ks_gpu_info *info = gpu_info(g);
  uint64_t B = (uint64_t)f->max_batch;
  uint64_t kvd = (uint64_t)kv_dim(c), qd = (uint64_t)q_dim(c);

  /* K/V pool: one buffer per layer so each stays within maxStorageBufferRange. */
  uint64_t pool_bytes = (uint64_t)f->n_blocks * KS_KV_BLOCK * kvd * sizeof(float);
  if (pool_bytes > info->max_storage_range)
    return ks_fail(KS_ERR_NOMEM,
                   "K/V cache of one layer needs %.1f MiB for %d positions, over this device's "
                   "maxStorageBufferRange (%.1f MiB): lower the context with -c",
                   pool_bytes / 1048576.0, f->n_blocks * KS_KV_BLOCK,
                   info->max_storage_range / 1048576.0);
  uint64_t logit_bytes = B * (uint64_t)c->vocab_size * sizeof(float);
  if (logit_bytes > info->max_storage_range)
    return ks_fail(KS_ERR_ARG, "batch of %d tokens needs %.1f MiB of logits, over the device's "
                   "storage buffer range: use a smaller batch", f->max_batch,
                   logit_bytes / 1048576.0);

  CHECK_ST(gpu_tensor_upload(g, &f->tok_embd, &m->tok_embd));
  if (m->tied_output || m->output.data == m->tok_embd.data) {
    f->output = f->tok_embd;
    f->output_is_embd = 1;
  } else {
    CHECK_ST(gpu_tensor_upload(g, &f->output, &m->output));
  }
  f->layers = calloc((size_t)c->n_layer, sizeof *f->layers);
  f->k_pool = calloc((size_t)c->n_layer, sizeof *f->k_pool);
  f->v_pool = calloc((size_t)c->n_layer, sizeof *f->v_pool);
  if (!f->layers || !f->k_pool || !f->v_pool) return ks_fail(KS_ERR_NOMEM, "out of host memory");

  /* All norm vectors in one buffer: attn and ffn for each layer, then the final norm. */
  uint64_t dimb = (uint64_t)c->dim * sizeof(float);
  CHECK_ST(gpu_buf_create(g, &f->norms, dimb * (2 * (uint64_t)c->n_layer + 1), KS_MEM_DEVICE));
  for (int l = 0; l < c->n_layer; l++) {
    ks_fwd_layer *L = &f->layers[l];
    const ks_layer *H = &m->layers[l];
    L->attn_norm_off = dimb * (2 * (uint64_t)l);
    L->ffn_norm_off = dimb * (2 * (uint64_t)l + 1);
    CHECK_ST(gpu_upload(g, &f->norms, L->attn_norm_off, H->attn_norm.data, dimb));
    CHECK_ST(gpu_upload(g, &f->norms, L->ffn_norm_off, H->ffn_norm.data, dimb));
    CHECK_ST(upload_layer(g, L, H));
    ks_progress("uploading layers", (uint64_t)l + 1, (uint64_t)c->n_layer);
  }
  CHECK_ST(gpu_upload(g, &f->norms, dimb * 2 * (uint64_t)c->n_layer, m->output_norm.data, dimb));

  for (int l = 0; l < c->n_layer; l++) {
    CHECK_ST(gpu_buf_create(g, &f->k_pool[l], pool_bytes, KS_MEM_DEVICE));
    CHECK_ST(gpu_buf_create(g, &f->v_pool[l], pool_bytes, KS_MEM_DEVICE));
  }
  int n_table = (f->n_ctx + KS_KV_BLOCK - 1) / KS_KV_BLOCK;
  CHECK_ST(gpu_buf_create(g, &f->table, (uint64_t)n_table * 4, KS_MEM_HOST));
  for (int i = 0; i < n_table; i++) ((uint32_t *)f->table.map)[i] = (uint32_t)(i % f->n_blocks);

  CHECK_ST(gpu_buf_create(g, &f->x, B * dimb, KS_MEM_DEVICE));
  CHECK_ST(gpu_buf_create(g, &f->qkv, B * (qd + 2 * kvd) * 4, KS_MEM_DEVICE));
  CHECK_ST(gpu_buf_create(g, &f->q, B * qd * 4, KS_MEM_DEVICE));
  CHECK_ST(gpu_buf_create(g, &f->att, B * qd * 4, KS_MEM_DEVICE));
  CHECK_ST(gpu_buf_create(g, &f->att_part, gpu_attention_part_bytes(c->n_head, c->head_dim, f->n_ctx),
                          KS_MEM_DEVICE));
  CHECK_ST(gpu_buf_create(g, &f->hb, B * (uint64_t)c->hidden_dim * 4, KS_MEM_DEVICE));
  CHECK_ST(gpu_buf_create(g, &f->hb2, B * (uint64_t)c->hidden_dim * 4, KS_MEM_DEVICE));
  CHECK_ST(gpu_buf_create(g, &f->logits, logit_bytes, KS_MEM_HOST));
  CHECK_ST(gpu_buf_create(g, &f->tokens, B * 4, KS_MEM_HOST));
  CHECK_ST(gpu_buf_create(g, &f->step, sizeof(ks_step), KS_MEM_HOST));
  CHECK_ST(gpu_buf_create(g, &f->steptab_dev, sizeof(ks_step) + (uint64_t)n_table * 4,
                          KS_MEM_DEVICE));
  CHECK_ST(gpu_buf_create(g, &f->probs, (uint64_t)c->n_head * f->n_ctx * 4, KS_MEM_HOST));
  CHECK_ST(gpu_cmd_create(g, &f->cmd_prefill));
  CHECK_ST(gpu_cmd_create(g, &f->cmd_decode));
  return KS_OK;
}

ks_status forward_create(ks_forward **out, ks_gpu *gpu, const ks_model *m, int n_ctx,
                         int max_batch, int n_blocks) {
  *out = NULL;
  if (n_ctx <= 0 || max_batch <= 0 || n_blocks < 0)
    return ks_fail(KS_ERR_ARG, "bad forward sizes: n_ctx %d, batch %d, blocks %d", n_ctx,
                   max_batch, n_blocks);
  ks_forward *f = calloc(1, sizeof *f);
  if (!f) return ks_fail(KS_ERR_NOMEM, "out of host memory");
  f->gpu = gpu;
  f->m = m;
  f->n_ctx = n_ctx;
  f->max_batch = max_batch;
  f->n_blocks = n_blocks ? n_blocks : (n_ctx + KS_KV_BLOCK - 1) / KS_KV_BLOCK;
  f->watch_layer = -1;
  f->decode_watch_layer = -1;
  /* Decode splits attention over the context (a workgroup per key chunk, then a fold: one
   * more dispatch a layer) from this position on; below it one workgroup per head walks the
   * keys. Both give the same bits. KVSCOPE_ATTN_SPLIT_FROM=N moves the switch (0: always). */
  f->split_from = 192;
  const char *sf = getenv("KVSCOPE_ATTN_SPLIT_FROM");
  if (sf && *sf) f->split_from = atoi(sf);
  ks_status st = create_inner(f);
  if (st != KS_OK) {
    forward_destroy(f);
    return st;
  }
  *out = f;
  return KS_OK;
}

ks_status forward_set_table(ks_forward *f, const uint32_t *blocks, int n) {
  int n_table = (f->n_ctx + KS_KV_BLOCK - 1) / KS_KV_BLOCK;
  if (n < 0 || n > n_table) return ks_fail(KS_ERR_ARG, "block table of %d entries > %d", n, n_table);
  for (int i = 0; i < n; i++)
    if (blocks[i] >= (uint32_t)f->n_blocks)
      return ks_fail(KS_ERR_ARG, "block id %u outside the pool of %d", blocks[i], f->n_blocks);
  memcpy(f->table.map, blocks, (size_t)n * 4);
  return KS_OK;
}

void forward_watch(ks_forward *f, int layer) {
  f->watch_layer = (layer >= 0 && layer < f->m->cfg.n_layer) ? layer : -1;
}

const float *forward_probs(const ks_forward *f) { return f->probs.map; }

uint64_t forward_kv_bytes(const ks_forward *f) {
  return 2ull * f->m->cfg.n_layer * f->n_blocks * KS_KV_BLOCK * kv_dim(&f->m->cfg) * 4;
}

uint64_t forward_block_bytes(const ks_forward *f) {
  return 2ull * f->m->cfg.n_layer * KS_KV_BLOCK * kv_dim(&f->m->cfg) * 4;
}

ks_status forward_read_block(ks_forward *f, uint32_t block, void *dst) {
  if (block >= (uint32_t)f->n_blocks) return ks_fail(KS_ERR_ARG, "block %u outside the pool", block);
  const uint64_t rows = (uint64_t)KS_KV_BLOCK * kv_dim(&f->m->cfg) * 4, off = rows * block;
  unsigned char *p = dst;
  for (int l = 0; l < f->m->cfg.n_layer; l++) {
    CHECK_ST(gpu_download(f->gpu, &f->k_pool[l], off, p, rows));
    CHECK_ST(gpu_download(f->gpu, &f->v_pool[l], off, p + rows, rows));
    p += 2 * rows;
  }
  return KS_OK;
}

ks_status forward_write_block(ks_forward *f, uint32_t block, const void *src) {
  if (block >= (uint32_t)f->n_blocks) return ks_fail(KS_ERR_ARG, "block %u outside the pool", block);
  const uint64_t rows = (uint64_t)KS_KV_BLOCK * kv_dim(&f->m->cfg) * 4, off = rows * block;
  const unsigned char *p = src;
  for (int l = 0; l < f->m->cfg.n_layer; l++) {
    CHECK_ST(gpu_upload(f->gpu, &f->k_pool[l], off, p, rows));
    CHECK_ST(gpu_upload(f->gpu, &f->v_pool[l], off, p + rows, rows));
    p += 2 * rows;
  }
  return KS_OK;
}

/* Records the graph for n tokens (tokens buffer and step buffer filled by the host before each
 * submit). logits_rows: 1 = only the last token's logits (into logits row 0), n = every token.
 * Per layer, five dispatches with a barrier after each: q|k|v product with the attention norm
 * fused in and RoPE + the K/V write as its epilogue; attention; output product added into the
 * residual; gate|up product with the FFN norm and SwiGLU fused in; down product added into the
 * residual. With q/k/v biases (qwen2), or q|k|v not stacked, RoPE + bias + K/V write is a sixth
 * (op_rope_kv). */
static void record_graph(ks_forward *f, ks_cmd *cmd, int n, int logits_rows, int split,
                         int decode_step) {
  const ks_config *c = &f->m->cfg;
  const uint64_t dimb = (uint64_t)c->dim * 4;
  const uint32_t qd = (uint32_t)q_dim(c), kvd = (uint32_t)kv_dim(c);
  _Static_assert(sizeof(ks_step) == 16, "steptab_dev: the table starts 16 bytes in");
  ks_bref step = ks_ref(&f->steptab_dev, 0), table = ks_ref(&f->steptab_dev, sizeof(ks_step));
  op_copy(cmd, step, ks_ref(&f->step, 0), sizeof(ks_step));
  op_copy(cmd, table, ks_ref(&f->table, 0), f->table.size);
  op_embed(cmd, ks_ref(&f->x, 0), &f->tok_embd, ks_ref(&f->tokens, 0), n);
  gpu_cmd_barrier(cmd);
  for (int l = 0; l < c->n_layer; l++) {
    ks_fwd_layer *L = &f->layers[l];
    ks_matmul_opts norm = {.norm_w = ks_ref(&f->norms, L->attn_norm_off), .eps = c->norm_eps,
                           .decode_step = decode_step};
    /* rope_factors NULL: no rope scaling */
    const int fused_rope = L->wqkv.n_slices && !L->bias.buf && !f->no_fused_rope;
    if (fused_rope) { /* one product with RoPE and the K/V write in it */
      ks_rope_opts rope = {.kpool = ks_ref(&f->k_pool[l], 0),
                           .vpool = ks_ref(&f->v_pool[l], 0),
                           .steptab = step,
                           .n_head = c->n_head,
                           .n_kv_head = c->n_kv_head,
                           .head_dim = c->head_dim,
                           .neox = c->rope_neox,
                           .base = c->rope_base,
                           .factors = f->m->rope_factors};
      norm.rope = &rope;
      op_matmul_ex(cmd, ks_ref(&f->q, 0), ks_ref(&f->x, 0), &L->wqkv, n, &norm);
    } else if (L->wqkv.n_slices) {
      op_matmul_ex(cmd, ks_ref(&f->qkv, 0), ks_ref(&f->x, 0), &L->wqkv, n, &norm);
    } else { /* the parts side by side in the same rows */
      norm.out_stride = qd + 2 * kvd;
      op_matmul_ex(cmd, ks_ref(&f->qkv, 0), ks_ref(&f->x, 0), &L->wq, n, &norm);
      op_matmul_ex(cmd, ks_ref(&f->qkv, (uint64_t)qd * 4), ks_ref(&f->x, 0), &L->wk, n, &norm);
      op_matmul_ex(cmd, ks_ref(&f->qkv, (uint64_t)(qd + kvd) * 4), ks_ref(&f->x, 0), &L->wv, n,
                   &norm);
    }
    gpu_cmd_barrier(cmd);
    if (!fused_rope) { /* bias, RoPE and the K/V write as their own step */
      op_rope_kv(cmd, ks_ref(&f->q, 0), ks_ref(&f->qkv, 0), ks_ref(&f->k_pool[l], 0),
                 ks_ref(&f->v_pool[l], 0), table, step,
                 L->bias.buf ? ks_ref(&L->bias, 0) : (ks_bref){NULL, 0}, n, c->n_head,
                 c->n_kv_head, c->head_dim, c->rope_base, c->rope_neox, f->m->rope_factors);
      gpu_cmd_barrier(cmd);
    }
    ks_bref probs = {NULL, 0};
    if (l == f->watch_layer) probs = ks_ref(&f->probs, 0);
    op_attention_ex(cmd, ks_ref(&f->att, 0), ks_ref(&f->q, 0), ks_ref(&f->k_pool[l], 0),
                    ks_ref(&f->v_pool[l], 0), table, step, n, c->n_head, c->n_kv_head,
                    c->head_dim, probs, f->n_ctx,
                    split ? ks_ref(&f->att_part, 0) : (ks_bref){NULL, 0}, f->n_ctx);
    gpu_cmd_barrier(cmd);
    ks_matmul_opts add = {.add = 1, .decode_step = decode_step};
    op_matmul_ex(cmd, ks_ref(&f->x, 0), ks_ref(&f->att, 0), &L->wo, n, &add);
    gpu_cmd_barrier(cmd);
    ks_matmul_opts ffn = {.norm_w = ks_ref(&f->norms, L->ffn_norm_off), .eps = c->norm_eps,
                          .decode_step = decode_step};
    if (L->w_gu.n_slices) {
      ffn.swiglu = 1;
      op_matmul_ex(cmd, ks_ref(&f->hb, 0), ks_ref(&f->x, 0), &L->w_gu, n, &ffn);
    } else {
      op_matmul_ex(cmd, ks_ref(&f->hb, 0), ks_ref(&f->x, 0), &L->w_gate, n, &ffn);
      op_matmul_ex(cmd, ks_ref(&f->hb2, 0), ks_ref(&f->x, 0), &L->w_up, n, &ffn);
      gpu_cmd_barrier(cmd);
      op_swiglu(cmd, ks_ref(&f->hb, 0), ks_ref(&f->hb, 0), ks_ref(&f->hb2, 0), n * c->hidden_dim);
    }
    gpu_cmd_barrier(cmd);
    op_matmul_ex(cmd, ks_ref(&f->x, 0), ks_ref(&f->hb, 0), &L->w_down, n, &add);
    gpu_cmd_barrier(cmd);
  }
  /* Final norm (fused) and classifier only for the rows whose logits are wanted. Every op is
   * batch-invariant, so the last row alone gives the same bits as the last of n rows. */
  uint64_t first = (uint64_t)(n - logits_rows);
  ks_matmul_opts fin = {.norm_w = ks_ref(&f->norms, dimb * 2 * (uint64_t)c->n_layer),
                        .eps = c->norm_eps, .decode_step = decode_step};
  op_matmul_ex(cmd, ks_ref(&f->logits, 0), ks_ref(&f->x, first * dimb), &f->output, logits_rows,
               &fin);
  gpu_cmd_barrier(cmd);
}

/* prompt: the tokens are (part of) a prompt, even one alone: they take the prefill recording
 * (its kernels), never the decode step's, which gpu_coopmat_mode 3 computes differently */
static ks_status run_chunk(ks_forward *f, const int *tokens, int n, int pos0, float *logits,
                           int all_logits, int prompt) {
  const ks_config *c = &f->m->cfg;
  for (int i = 0; i < n; i++) {
    if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
      return ks_fail(KS_ERR_ARG, "token id %d outside the vocabulary (%d)", tokens[i],
                     c->vocab_size);
    ((uint32_t *)f->tokens.map)[i] = (uint32_t)tokens[i];
  }
  ks_step st = {0};
  st.pos0 = (uint32_t)pos0;
  memcpy(f->step.map, &st, sizeof st);
  int rows = all_logits ? n : 1;
  ks_cmd *cmd;
  if (n == 1 && !prompt) {
    cmd = f->cmd_decode;
    const int split = pos0 >= f->split_from;
    if (!f->decode_recorded || f->decode_watch_layer != f->watch_layer ||
        f->decode_split != split) {
      CHECK_ST(gpu_cmd_begin(cmd));
      record_graph(f, cmd, 1, 1, split, 1);
      f->decode_split = split;
      CHECK_ST(gpu_cmd_end(cmd));
      f->decode_recorded = 1;
      f->decode_watch_layer = f->watch_layer;
      f->counters.decode_records++;
    } else {
      f->counters.decode_replays++;
    }
  } else {
    cmd = f->cmd_prefill;
    CHECK_ST(gpu_cmd_begin(cmd));
    record_graph(f, cmd, n, rows, 0, 0);
    CHECK_ST(gpu_cmd_end(cmd));
  }
  CHECK_ST(gpu_cmd_submit(cmd));
  CHECK_ST(gpu_cmd_wait(cmd));
  f->counters.kv_rows_written += (uint64_t)n;
  for (int i = 0; i < n; i++) f->counters.kv_rows_attended += (uint64_t)(pos0 + i + 1);
  if (logits) memcpy(logits, f->logits.map, (size_t)rows * c->vocab_size * sizeof(float));
  return KS_OK;
}

ks_status forward_eval(ks_forward *f, const int *tokens, int n, int pos0, float *logits,
                       int all_logits) {
  return forward_eval_ex(f, tokens, n, pos0, logits, all_logits, n > 1);
}

ks_status forward_eval_ex(ks_forward *f, const int *tokens, int n, int pos0, float *logits,
                          int all_logits, int prompt) {
  if (n <= 0) return ks_fail(KS_ERR_ARG, "nothing to evaluate");
  if (pos0 < 0 || pos0 + n > f->n_ctx)
    return ks_fail(KS_ERR_ARG, "positions %d..%d are outside the context of %d tokens", pos0,
                   pos0 + n - 1, f->n_ctx);
  const int vocab = f->m->cfg.vocab_size;
  for (int done = 0; done < n;) {
    if (ks_interrupt_pending())
      return ks_fail(KS_ERR_INTERRUPTED, "interrupted after %d of %d prompt tokens", done, n);
    if (f->step_delay_us) usleep(f->step_delay_us);
    int chunk = KS_MIN(f->max_batch, n - done);
    int last = done + chunk == n;
    float *dst = NULL;
    if (logits && all_logits) dst = logits + (size_t)done * vocab;
    else if (logits && last) dst = logits;
    CHECK_ST(run_chunk(f, tokens + done, chunk, pos0 + done, dst, all_logits, prompt));
    done += chunk;
  }
  return KS_OK;
}
