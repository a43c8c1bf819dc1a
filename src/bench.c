/* bench.c — `kvscope bench`: measures a model on one Vulkan device through forward.h directly
 * (no tokenizer needed: prompts are synthetic token ids).
 *
 *  1. copy bandwidth: op_copy between two large device buffers, timed with timestamp queries;
 *  2. ppN: N prompt tokens evaluated from an empty context (batched), and the time to first token
 *     (prefill + picking the first token from the logits);
 *  3. tgN: N tokens decoded one at a time from an empty context, greedy, as llama-bench does;
 *  4. per-kernel GPU time: forward.c's own recordings with a timestamp after every dispatch
 *     (gpu_cmd_profile), for one decode step and for the whole prefill, each dispatch charged to
 *     its op, matrix products split by the weights they read;
 *  5. roofline: bytes a decode step must move / copy bandwidth, against the measured tg.
 * Each measurement is repeated (-r) after a warm-up and the median reported.
 *
 * What it is not: it does not judge the numbers (no thresholds); and the stamps serialise the
 * dispatches they separate, so the profile splits a step's time up rather than measuring it
 * (the step's wall time is printed beside the profile's total). */
#include "bench.h"
#include "kvscope.h"
#include "bench_prefix.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "forward.h"
#include "gpu.h"
#include "quant.h"

#define BENCH_MAX_BATCH 512          /* prefill chunk, as llama-bench's default ubatch */
#define BENCH_COPY_MAX (1ull << 30)  /* bytes per copy; read + write is twice that */
#define BENCH_PROF_WINDOW 1000       /* timed ops per submission: gpu_ops keeps 1024 stamps */
#define BENCH_PROF_REPS_MAX 3        /* profiles repeat less: they only split the time up */
#define BENCH_MAX_KINDS 32           /* rows of the per-kernel table; the last is "other" */

/* ---------------------------------------------------------------- counting */

/* The GPU keeps every weight type as stored in the file and dequantises inside its kernels. */
static uint64_t dev_bytes(const ks_tensor *t) {
  if (!t->data) return 0;
  return (uint64_t)ks_type_row_bytes(t->type, t->ne[0]) * (uint64_t)t->ne[1];
}

static uint64_t decode_weight_bytes(const ks_model *m) {
  const ks_config *c = &m->cfg;
  const ks_tensor *out = m->tied_output ? &m->tok_embd : &m->output;
  uint64_t emb_row = m->tok_embd.ne[1] ? dev_bytes(&m->tok_embd) / (uint64_t)m->tok_embd.ne[1] : 0;
  uint64_t n = emb_row + dev_bytes(&m->output_norm) + dev_bytes(out);
  for (int l = 0; m->layers && l < c->n_layer; l++) {
    const ks_layer *L = &m->layers[l];
    n += dev_bytes(&L->attn_norm) + dev_bytes(&L->wq) + dev_bytes(&L->wk) + dev_bytes(&L->wv) +
         dev_bytes(&L->wo) + dev_bytes(&L->ffn_norm) + dev_bytes(&L->w_gate) +
         dev_bytes(&L->w_down) + dev_bytes(&L->w_up);
  }
  return n;
}

/* K/V bytes of a decode step at pos: rows 0..pos read, row pos written, K and V, every layer. */
static uint64_t decode_kv_bytes(const ks_config *c, int pos) {
  uint64_t row = (uint64_t)c->n_kv_head * c->head_dim * sizeof(float);
  return 2ull * c->n_layer * row * ((uint64_t)pos + 2);
}

uint64_t bench_decode_bytes(const ks_model *m, int pos) {
  return decode_weight_bytes(m) + decode_kv_bytes(&m->cfg, pos);
}

double bench_prefill_flops(const ks_config *c, int n_tok, int pos0, int logits_rows) {
  const double dim = c->dim, hid = c->hidden_dim;
  const double qd = (double)c->n_head * c->head_dim, kvd = (double)c->n_kv_head * c->head_dim;
  const double n = n_tok;
  double per_tok = 2.0 * dim * (qd + 2.0 * kvd) + 2.0 * qd * dim + 3.0 * 2.0 * dim * hid;
  /* token i attends positions 0..pos0+i: Q.K and P.V, head_dim multiply-adds each per head */
  double attended = n * pos0 + n * (n + 1) / 2.0;
  double attn = 4.0 * c->head_dim * (double)c->n_head * attended;
  return c->n_layer * (per_tok * n + attn) + 2.0 * dim * c->vocab_size * logits_rows;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(const double *v, int n) {
  if (n <= 0) return 0;
  double *s = malloc((size_t)n * sizeof *s);
  if (!s) return v[0];
  memcpy(s, v, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  double r = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
  free(s);
  return r;
}

static double vmin(const double *v, int n) {
  double r = v[0];
  for (int i = 1; i < n; i++) r = v[i] < r ? v[i] : r;
  return r;
}
static double vmax(const double *v, int n) {
  double r = v[0];
  for (int i = 1; i < n; i++) r = v[i] > r ? v[i] : r;
  return r;
}

/* ---------------------------------------------------------------- options and results */

typedef struct {
  const char *model;
  int n_prompt, n_gen, reps, batch, device, json;
  const char *json_out; /* also write the JSON object to this file */
  int watch;            /* --watch L: export layer L's attention rows as the visualizer does */
} bench_opts;

/* One row of the per-kernel table: an op, products split by the weights they read. */
typedef struct {
  char name[40];
  double dec[BENCH_PROF_REPS_MAX], pre[BENCH_PROF_REPS_MAX]; /* ns, per repetition */
  double dec_ns, pre_ns; /* medians */
  int dec_count;         /* dispatches in one decode step */
  uint64_t dec_bytes;    /* weights (attention: K/V) the decode step's dispatches read */
} kernel_kind;

typedef struct {
  /* device */
  char device[256], driver[256], vulkan[32];
  const char *device_type;
  const char *kernels; /* which matrix kernels ran (gpu_coopmat_mode) */
  int timestamps;
  /* run */
  int batch, n_ctx;
  char date[32];
  /* copy bandwidth */
  uint64_t copy_bytes;
  double copy_bw; /* bytes/s, read + write */
  /* the matrix units (op_mma_peak), FLOP/s; 0: not measured (no cooperative matrices or no
   * timestamps) */
  double mma_flops;
  /* prefill: per repetition */
  double *pp_s, *ttft_s;
  /* decode: per repetition, seconds for n_gen tokens */
  double *tg_s;
  /* roofline and work */
  uint64_t decode_weight_bytes;
  double decode_kv_bytes_avg;
  double prefill_flops;
  /* per-kernel GPU time: one decode step at prof_pos and the whole prefill, forward.c's own
   * recordings stamped by gpu_cmd_profile; medians over prof_reps repetitions */
  int prof_ok, prof_pos, prof_reps;
  int unstamped; /* dispatches left out because the query pool was full */
  kernel_kind kinds[BENCH_MAX_KINDS];
  int n_kinds;
  /* --prefix (prompt-cache TTFT cold vs cached) adds its per-repetition times here and its
   * phase beside run_prefill; report_text/report_json print whatever phases ran. */
} bench_result;

static void result_free(bench_result *r) {
  free(r->pp_s);
  free(r->ttft_s);
  free(r->tg_s);
}

/* ---------------------------------------------------------------- matrix units */

/* op_mma_peak between timestamps: the f16 rate the cooperative-matrix kernels could reach, the
 * compute ceiling prefill is judged against (as copy bandwidth is decode's). */
#define BENCH_MMA_GROUPS 4096u
#define BENCH_MMA_ITERS 256u
static ks_status measure_mma(ks_gpu *g, int reps, bench_result *r) {
  if (!gpu_info(g)->coopmat || !r->timestamps) return KS_OK;
  const int runs = 1 + KS_MAX(reps, 3); /* the first one is a warm-up */
  ks_buf out = {0};
  ks_cmd *cmd = NULL;
  double *ns = calloc((size_t)runs + 1, sizeof *ns), *fl = calloc((size_t)runs, sizeof *fl);
  ks_status st = KS_OK;
  if (!ns || !fl) {
    st = ks_fail(KS_ERR_NOMEM, "out of host memory");
    goto done;
  }
  if ((st = gpu_buf_create(g, &out, (uint64_t)BENCH_MMA_GROUPS * 4 * 128 * 4, KS_MEM_DEVICE)) ||
      (st = gpu_cmd_create(g, &cmd)) || (st = gpu_cmd_begin(cmd)))
    goto done;
  gpu_cmd_timestamp(cmd);
  for (int i = 0; i < runs; i++) {
    op_mma_peak(cmd, ks_ref(&out, 0), BENCH_MMA_GROUPS, BENCH_MMA_ITERS);
    gpu_cmd_timestamp(cmd);
    gpu_cmd_barrier(cmd);
  }
  if ((st = gpu_cmd_end(cmd)) || (st = gpu_cmd_submit(cmd)) || (st = gpu_cmd_wait(cmd)) ||
      (st = gpu_cmd_timestamps(cmd, ns, runs + 1)))
    goto done;
  const double flop = (double)BENCH_MMA_GROUPS * 4 * BENCH_MMA_ITERS * 8 * (16 * 8 * 16 * 2);
  for (int i = 0; i < runs; i++) fl[i] = ns[i + 1] > ns[i] ? flop / ((ns[i + 1] - ns[i]) * 1e-9) : 0;
  r->mma_flops = bench_median(fl + 1, runs - 1);
done:
  gpu_cmd_destroy(cmd);
  gpu_buf_destroy(g, &out);
  free(ns);
  free(fl);
  return st;
}

/* ---------------------------------------------------------------- copy bandwidth */

static ks_status measure_copy(ks_gpu *g, int reps, bench_result *r) {
  const ks_gpu_info *info = gpu_info(g);
  uint64_t n = BENCH_COPY_MAX;
  if (info->max_storage_range < n) n = info->max_storage_range;
  if (info->device_local_bytes && info->device_local_bytes / 8 < n) n = info->device_local_bytes / 8;
  /* lavapipe's copy rate is bound by shader invocations, not by size: keep its run short */
  if (info->type == VK_PHYSICAL_DEVICE_TYPE_CPU && n > (32ull << 20)) n = 32ull << 20;
  n &= ~((1ull << 20) - 1); /* whole MiB */
  if (n < (1ull << 20)) n = 1ull << 20;
  r->copy_bytes = n;
  int copies = 1 + KS_MAX(reps, 5); /* the first one is a warm-up */
  ks_buf src = {0}, dst = {0};
  ks_cmd *cmd = NULL;
  double *ns = calloc((size_t)copies + 1, sizeof *ns), *bw = calloc((size_t)copies, sizeof *bw);
  ks_status st = KS_OK;
  if (!ns || !bw) {
    st = ks_fail(KS_ERR_NOMEM, "out of host memory");
    goto done;
  }
  if ((st = gpu_buf_create(g, &src, n, KS_MEM_DEVICE)) || (st = gpu_buf_create(g, &dst, n, KS_MEM_DEVICE)) ||
      (st = gpu_fill_u32(g, &src, 0, n, 0x3f800000u)) || (st = gpu_fill_u32(g, &dst, 0, n, 0)) ||
      (st = gpu_cmd_create(g, &cmd)))
    goto done;
  if (r->timestamps) {
    if ((st = gpu_cmd_begin(cmd))) goto done;
    gpu_cmd_timestamp(cmd);
    for (int i = 0; i < copies; i++) {
      op_copy(cmd, ks_ref(&dst, 0), ks_ref(&src, 0), n);
      gpu_cmd_timestamp(cmd);
      gpu_cmd_barrier(cmd);
    }
    if ((st = gpu_cmd_end(cmd)) || (st = gpu_cmd_submit(cmd)) || (st = gpu_cmd_wait(cmd)) ||
        (st = gpu_cmd_timestamps(cmd, ns, copies + 1)))
      goto done;
    for (int i = 0; i < copies; i++) bw[i] = ns[i + 1] > ns[i] ? 2.0 * n / ((ns[i + 1] - ns[i]) * 1e-9) : 0;
  } else {
    /* no timestamps: one submission per copy, wall clock (includes the submit overhead) */
    if ((st = gpu_cmd_begin(cmd))) goto done;
    op_copy(cmd, ks_ref(&dst, 0), ks_ref(&src, 0), n);
    if ((st = gpu_cmd_end(cmd))) goto done;
    for (int i = 0; i < copies; i++) {
      double t0 = ks_now_sec();
      if ((st = gpu_cmd_submit(cmd)) || (st = gpu_cmd_wait(cmd))) goto done;
      double dt = ks_now_sec() - t0;
      bw[i] = dt > 0 ? 2.0 * n / dt : 0;
    }
  }
  r->copy_bw = bench_median(bw + 1, copies - 1);
done:
  gpu_cmd_destroy(cmd);
  gpu_buf_destroy(g, &src);
  gpu_buf_destroy(g, &dst);
  free(ns);
  free(bw);
  return st;
}

/* ---------------------------------------------------------------- per-kernel profile */

/* What a matrix product's weight is, from the buffer a dispatch binds. */
typedef struct {
  const ks_buf *buf;
  const char *what; /* "qkv", "o", "gate_up", "down", "output" */
} weight_class;

static int add_classes(weight_class *w, int n, const ks_gpu_tensor *t, const char *what) {
  for (int s = 0; t->slices && s < t->n_slices; s++) w[n++] = (weight_class){&t->slices[s], what};
  return n;
}

/* Names the dispatch: the op without "op_", and for a product the weight group it reads. */
static void dispatch_kind(const ks_op_time *e, const weight_class *w, int nw, char *out, size_t cap,
                          const ks_buf **weight) {
  const char *op = e->op && !strncmp(e->op, "op_", 3) ? e->op + 3 : e->op ? e->op : "?";
  *weight = NULL;
  if (strcmp(op, "embed") != 0) /* the lookup reads one row, whatever the table */
    for (int k = 0; k < e->n_bufs && !*weight; k++)
      for (int i = 0; i < nw; i++)
        if (e->bufs[k] == w[i].buf) {
          snprintf(out, cap, "%s_%s", op, w[i].what);
          *weight = w[i].buf;
          break;
        }
  if (!*weight) snprintf(out, cap, "%s", op);
}

static int kind_index(bench_result *r, const char *name) {
  for (int i = 0; i < r->n_kinds; i++)
    if (!strcmp(r->kinds[i].name, name)) return i;
  if (r->n_kinds == BENCH_MAX_KINDS) return BENCH_MAX_KINDS - 1; /* "other" */
  snprintf(r->kinds[r->n_kinds].name, sizeof r->kinds[0].name, "%s",
           r->n_kinds == BENCH_MAX_KINDS - 1 ? "other" : name);
  return r->n_kinds++;
}

/* ---------------------------------------------------------------- measurements */

typedef struct {
  const bench_opts *o;
  const ks_model *m;
  ks_gpu *g;
  ks_forward *f;
  int *prompt; /* (n_prompt) synthetic ids */
  float *logits; /* (vocab) */
  bench_result r;
} bench;

static int argmax(const float *x, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

static void phase(const char *what) {
  if (isatty(2)) fprintf(stderr, "bench: %s\n", what);
}

static ks_status run_prefill(bench *b, int rep) {
  const int vocab = b->m->cfg.vocab_size;
  double t0 = ks_now_sec();
  ks_status st = forward_eval(b->f, b->prompt, b->o->n_prompt, 0, b->logits, 0);
  if (st) return st;
  double t1 = ks_now_sec();
  int tok = argmax(b->logits, vocab); /* the first token: what a greedy run would sample */
  double t2 = ks_now_sec();
  (void)tok;
  if (rep >= 0) {
    b->r.pp_s[rep] = t1 - t0;
    b->r.ttft_s[rep] = t2 - t0;
  }
  return KS_OK;
}

static ks_status run_decode(bench *b, int n, int rep) {
  const int vocab = b->m->cfg.vocab_size;
  int tok = 1; /* BOS, then whatever greedy decoding gives */
  double t0 = ks_now_sec();
  for (int i = 0; i < n; i++) {
    ks_status st = forward_eval(b->f, &tok, 1, i, b->logits, 0);
    if (st) return st;
    tok = argmax(b->logits, vocab);
  }
  if (rep >= 0) b->r.tg_s[rep] = ks_now_sec() - t0;
  return KS_OK;
}

/* Evaluates n tokens at pos0 with the stamps on and charges each dispatch to its kind. */
static ks_status profile_eval(bench *b, const weight_class *w, int nw, const int *tokens, int n,
                              int pos0, int rep, int decode) {
  ks_forward *f = b->f;
  bench_result *r = &b->r;
  const ks_config *c = &b->m->cfg;
  /* a single token goes through the decode buffer, which is recorded once and replayed: make
   * forward.c record it again so the stamps are in it */
  f->decode_recorded = 0;
  ks_status st = forward_eval(f, tokens, n, pos0, NULL, 0);
  if (st) return st;
  const ks_op_time *ops;
  int n_ops, unstamped;
  if ((st = gpu_cmd_profile_read(n == 1 ? f->cmd_decode : f->cmd_prefill, &ops, &n_ops, &unstamped)))
    return st;
  r->unstamped = KS_MAX(r->unstamped, unstamped);
  for (int i = 0; i < n_ops; i++) {
    char name[sizeof r->kinds[0].name];
    const ks_buf *weight;
    dispatch_kind(&ops[i], w, nw, name, sizeof name, &weight);
    kernel_kind *k = &r->kinds[kind_index(r, name)];
    if (!decode) {
      k->pre[rep] += ops[i].ns;
      continue;
    }
    k->dec[rep] += ops[i].ns;
    if (rep > 0) continue;
    k->dec_count++;
    if (weight) k->dec_bytes += weight->size;
    else if (!strcmp(name, "attention"))
      k->dec_bytes += 2ull * c->n_kv_head * c->head_dim * 4 * ((uint64_t)pos0 + 1);
  }
  return KS_OK;
}

static ks_status run_profiles(bench *b) {
  const bench_opts *o = b->o;
  ks_forward *f = b->f;
  bench_result *r = &b->r;
  const ks_config *c = &b->m->cfg;
  int nw = 0, cap = 0;
  for (int l = 0; l < c->n_layer; l++) {
    const ks_fwd_layer *L = &f->layers[l];
    cap += L->wqkv.n_slices + L->w_gu.n_slices + L->wq.n_slices + L->wk.n_slices +
           L->wv.n_slices + L->wo.n_slices + L->w_gate.n_slices + L->w_up.n_slices +
           L->w_down.n_slices;
  }
  cap += f->output.n_slices;
  weight_class *w = calloc((size_t)KS_MAX(cap, 1), sizeof *w);
  if (!w) return ks_fail(KS_ERR_NOMEM, "out of host memory");
  for (int l = 0; l < c->n_layer; l++) {
    const ks_fwd_layer *L = &f->layers[l];
    nw = add_classes(w, nw, &L->wqkv, "qkv");
    nw = add_classes(w, nw, &L->w_gu, "gate_up");
    nw = add_classes(w, nw, &L->wq, "qkv");
    nw = add_classes(w, nw, &L->wk, "qkv");
    nw = add_classes(w, nw, &L->wv, "qkv");
    nw = add_classes(w, nw, &L->wo, "o");
    nw = add_classes(w, nw, &L->w_gate, "gate_up");
    nw = add_classes(w, nw, &L->w_up, "gate_up");
    nw = add_classes(w, nw, &L->w_down, "down");
  }
  nw = add_classes(w, nw, &f->output, "output");

  ks_status st = gpu_cmd_profile(f->cmd_decode, 1);
  if (!st) st = gpu_cmd_profile(f->cmd_prefill, 1);
  if (st == KS_ERR_UNSUPPORTED) { /* no timestamps: the table is left out */
    free(w);
    return KS_OK;
  }
  r->prof_reps = KS_MIN(o->reps, BENCH_PROF_REPS_MAX);
  r->prof_pos = o->n_gen > 0 ? o->n_gen / 2 : o->n_prompt / 2;
  int one = 1;
  for (int rep = 0; !st && rep < r->prof_reps; rep++) {
    st = profile_eval(b, w, nw, &one, 1, r->prof_pos, rep, 1);
    for (int done = 0; !st && done < o->n_prompt; done += r->batch)
      st = profile_eval(b, w, nw, b->prompt + done, KS_MIN(r->batch, o->n_prompt - done), done,
                        rep, 0);
  }
  gpu_cmd_profile(f->cmd_decode, 0);
  gpu_cmd_profile(f->cmd_prefill, 0);
  f->decode_recorded = 0; /* back to a recording without stamps */
  free(w);
  if (st) return st;
  for (int i = 0; i < r->n_kinds; i++) {
    kernel_kind *k = &r->kinds[i];
    k->dec_ns = bench_median(k->dec, r->prof_reps);
    k->pre_ns = bench_median(k->pre, r->prof_reps);
  }
  r->prof_ok = 1;
  return KS_OK;
}

static ks_status run_all(bench *b) {
  const bench_opts *o = b->o;
  const ks_config *c = &b->m->cfg;
  bench_result *r = &b->r;
  ks_status st = gpu_create(&b->g, o->device);
  if (st) return st;
  const ks_gpu_info *info = gpu_info(b->g);
  snprintf(r->device, sizeof r->device, "%s", info->name);
  snprintf(r->driver, sizeof r->driver, "%s", info->driver);
  snprintf(r->vulkan, sizeof r->vulkan, "%u.%u.%u", VK_API_VERSION_MAJOR(info->api_version),
           VK_API_VERSION_MINOR(info->api_version), VK_API_VERSION_PATCH(info->api_version));
  r->device_type = info->type == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU     ? "discrete GPU"
                   : info->type == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ? "integrated GPU"
                   : info->type == VK_PHYSICAL_DEVICE_TYPE_CPU            ? "CPU"
                                                                           : "other";
  r->timestamps = info->timestamps;
  static const char *const cm_names[] = {"portable (no cooperative matrix)",
                                         "cooperative matrix for F16 weights",
                                         "cooperative matrix, prefill and decode",
                                         "cooperative matrix for prompts, portable for decode"};
  r->kernels = cm_names[gpu_coopmat_mode(b->g) & 3];

  /* sizes: the logits of a whole chunk must fit one storage-buffer binding */
  uint64_t logit_row = (uint64_t)c->vocab_size * 4;
  int batch = o->batch > 0 ? o->batch : KS_MAX(1, KS_MIN(o->n_prompt, BENCH_MAX_BATCH));
  if ((uint64_t)batch * logit_row > info->max_storage_range) {
    int fit = (int)KS_MAX(1, info->max_storage_range / logit_row);
    if (o->batch > 0)
      return ks_fail(KS_ERR_ARG, "-b %d needs %.1f MiB of logits, over this device's "
                     "maxStorageBufferRange (%.1f MiB): use -b %d or less", o->batch,
                     batch * logit_row / 1048576.0, info->max_storage_range / 1048576.0, fit);
    batch = fit;
  }
  r->batch = batch;
  r->n_ctx = KS_MAX(1, KS_MAX(o->n_prompt, o->n_gen));
  uint64_t pool = ((uint64_t)r->n_ctx + KS_KV_BLOCK - 1) / KS_KV_BLOCK * KS_KV_BLOCK *
                  (uint64_t)c->n_kv_head * c->head_dim * 4;
  if (pool > info->max_storage_range)
    return ks_fail(KS_ERR_ARG, "%d positions of K/V need %.1f MiB per layer, over this device's "
                   "maxStorageBufferRange (%.1f MiB): use smaller -p / -n", r->n_ctx,
                   pool / 1048576.0, info->max_storage_range / 1048576.0);

  phase("measuring copy bandwidth");
  if ((st = measure_copy(b->g, o->reps, r))) return st;
  phase("measuring the matrix units");
  if ((st = measure_mma(b->g, o->reps, r))) return st;
  phase("uploading the model");
  if ((st = forward_create(&b->f, b->g, b->m, r->n_ctx, batch, 0))) return st;
  forward_watch(b->f, o->watch);

  /* warm-up: pipelines are created when first recorded, the decode buffer on its first step */
  phase("warming up");
  if (o->n_prompt > 0 && (st = run_prefill(b, -1))) return st;
  if (o->n_gen > 0 && (st = run_decode(b, KS_MIN(o->n_gen, 2), -1))) return st;
  for (int rep = 0; rep < o->reps && o->n_prompt > 0; rep++) {
    phase("prefill");
    if ((st = run_prefill(b, rep))) return st;
  }
  /* --prefix: the prompt-cache phase (cold vs cached TTFT) goes here */
  for (int rep = 0; rep < o->reps && o->n_gen > 0; rep++) {
    phase("decode");
    if ((st = run_decode(b, o->n_gen, rep))) return st;
  }
  phase("per-kernel profile");
  if (r->timestamps && (st = run_profiles(b))) return st;

  r->decode_weight_bytes = decode_weight_bytes(b->m);
  double kv = 0;
  for (int i = 0; i < o->n_gen; i++) kv += (double)decode_kv_bytes(c, i);
  r->decode_kv_bytes_avg = o->n_gen > 0 ? kv / o->n_gen : 0;
  for (int done = 0; done < o->n_prompt; done += batch)
    r->prefill_flops += bench_prefill_flops(c, KS_MIN(batch, o->n_prompt - done), done, 1);
  return KS_OK;
}

/* ---------------------------------------------------------------- reports */

static void json_str(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
    else fputc(*p, f);
  }
  fputc('"', f);
}

typedef struct {
  double pp_tps, pp_min, pp_max, ttft_ms, tg_tps, tg_min, tg_max;
  double decode_bytes, roofline_tps, roofline_pct, tflops, step_us;
} summary;

static void summarise(const bench *b, summary *s) {
  const bench_opts *o = b->o;
  const bench_result *r = &b->r;
  memset(s, 0, sizeof *s);
  int n = o->reps;
  double *tps = calloc((size_t)n, sizeof *tps);
  if (!tps) return;
  if (o->n_prompt > 0) {
    for (int i = 0; i < n; i++) tps[i] = r->pp_s[i] > 0 ? o->n_prompt / r->pp_s[i] : 0;
    s->pp_tps = bench_median(tps, n);
    s->pp_min = vmin(tps, n);
    s->pp_max = vmax(tps, n);
    s->ttft_ms = bench_median(r->ttft_s, n) * 1e3;
    double t = bench_median(r->pp_s, n);
    s->tflops = t > 0 ? r->prefill_flops / t / 1e12 : 0;
  }
  if (o->n_gen > 0) {
    for (int i = 0; i < n; i++) tps[i] = r->tg_s[i] > 0 ? o->n_gen / r->tg_s[i] : 0;
    s->tg_tps = bench_median(tps, n);
    s->tg_min = vmin(tps, n);
    s->tg_max = vmax(tps, n);
    s->step_us = s->tg_tps > 0 ? 1e6 / s->tg_tps : 0;
    s->decode_bytes = (double)r->decode_weight_bytes + r->decode_kv_bytes_avg;
    s->roofline_tps = s->decode_bytes > 0 ? r->copy_bw / s->decode_bytes : 0;
    s->roofline_pct = s->roofline_tps > 0 ? 100.0 * s->tg_tps / s->roofline_tps : 0;
  }
  free(tps);
}

static const char *weight_type(const ks_model *m) { return ks_type_name(m->layers[0].wq.type); }

static void report_text(const bench *b, FILE *f) {
  const bench_opts *o = b->o;
  const bench_result *r = &b->r;
  const ks_config *c = &b->m->cfg;
  summary s;
  summarise(b, &s);
  fprintf(f, "kvscope bench  %s\n", r->date);
  fprintf(f, "model   %s: %s, dim %d, ffn %d, %d layers, %d heads / %d kv, vocab %d, %s weights "
          "%.2f MiB\n", o->model, c->arch, c->dim, c->hidden_dim, c->n_layer, c->n_head,
          c->n_kv_head, c->vocab_size, weight_type(b->m), model_weight_bytes(b->m) / 1048576.0);
  fprintf(f, "device  %s (%s), driver %s, Vulkan %s\n", r->device, r->device_type, r->driver,
          r->vulkan);
  fprintf(f, "kernels matrix products: %s (KVSCOPE_COOPMAT)\n", r->kernels);
  fprintf(f, "method  median of %d repetitions after a warm-up; prefill in chunks of %d; tg "
          "decodes greedily from an empty context; attention rows exported: %s\n\n", o->reps,
          r->batch, o->watch >= 0 ? "yes (--watch)" : "no (view off)");
  fprintf(f, "%-8s %12s %23s %12s\n", "test", "tokens/s", "min .. max", "time");
  if (o->n_prompt > 0) {
    char name[32];
    snprintf(name, sizeof name, "pp%d", o->n_prompt);
    fprintf(f, "%-8s %12.2f %11.2f .. %-9.2f %9.2f ms   time to first token %.2f ms, %.4g "
            "%s\n", name, s.pp_tps, s.pp_min, s.pp_max, o->n_prompt / s.pp_tps * 1e3, s.ttft_ms,
            s.tflops >= 1 ? s.tflops : s.tflops * 1e3, s.tflops >= 1 ? "TFLOP/s" : "GFLOP/s");
  }
  if (o->n_gen > 0) {
    char name[32];
    snprintf(name, sizeof name, "tg%d", o->n_gen);
    fprintf(f, "%-8s %12.2f %11.2f .. %-9.2f %9.2f ms/token\n", name, s.tg_tps, s.tg_min,
            s.tg_max, s.step_us / 1e3);
  }
  fprintf(f, "\ncopy bandwidth  %.2f GB/s (op_copy of %.0f MiB, read + write counted)\n",
          r->copy_bw / 1e9, r->copy_bytes / 1048576.0);
  if (r->mma_flops > 0) {
    fprintf(f, "matrix units    %.1f TFLOP/s (16x8x16 f16 products chained in registers, "
            "op_mma_peak)", r->mma_flops / 1e12);
    if (o->n_prompt > 0) fprintf(f, "; prefill reaches %.1f%%", 100.0 * s.tflops * 1e12 / r->mma_flops);
    fprintf(f, "\n");
  }
  if (o->n_gen > 0)
    fprintf(f, "roofline        a decode step moves %.2f MiB (weights %.2f, K/V %.3f on "
            "average) -> at most %.1f tokens/s; tg reaches %.1f%%\n", s.decode_bytes / 1048576.0,
            r->decode_weight_bytes / 1048576.0, r->decode_kv_bytes_avg / 1048576.0,
            s.roofline_tps, s.roofline_pct);
  if (!r->prof_ok) {
    fprintf(f, "\nper-kernel GPU time: %s\n", r->timestamps ? "not measured"
            : "this device's compute queue has no timestamps");
    return;
  }
  double dec_total = 0, pre_total = 0;
  int dispatches = 0;
  for (int i = 0; i < r->n_kinds; i++) {
    dec_total += r->kinds[i].dec_ns;
    pre_total += r->kinds[i].pre_ns;
    dispatches += r->kinds[i].dec_count;
  }
  fprintf(f, "\nGPU time per kernel: a timestamp after every dispatch of forward.c's own "
          "recordings, median of %d;\none decode step at position %d (%d dispatches), and the "
          "whole pp%d prefill\n", r->prof_reps, r->prof_pos, dispatches, o->n_prompt);
  fprintf(f, "%-22s %5s %11s %6s %8s %12s %6s\n", "kernel", "count", "decode us", "%", "GB/s",
          "prefill ms", "%");
  for (int i = 0; i < r->n_kinds; i++) {
    const kernel_kind *k = &r->kinds[i];
    char gbs[16] = "-";
    if (k->dec_bytes && k->dec_ns > 0) snprintf(gbs, sizeof gbs, "%.3g", k->dec_bytes / k->dec_ns);
    fprintf(f, "%-22s %5d %11.1f %6.1f %8s %12.3f %6.1f\n", k->name, k->dec_count,
            k->dec_ns / 1e3, dec_total > 0 ? 100 * k->dec_ns / dec_total : 0, gbs,
            k->pre_ns / 1e6, pre_total > 0 ? 100 * k->pre_ns / pre_total : 0);
  }
  fprintf(f, "%-22s %5d %11.1f %6s %8s %12.3f\n", "total", dispatches, dec_total / 1e3, "", "",
          pre_total / 1e6);
  if (r->unstamped)
    fprintf(f, "(%d dispatches went unstamped, the query pool being full: their time is not "
            "above)\n", r->unstamped);
  if (o->n_gen > 0)
    fprintf(f, "(a decode step measured by wall clock takes %.1f us: the difference is "
            "submission, waiting, the host, and the stamps themselves)\n", s.step_us);
}

static void json_runs(FILE *f, const char *key, const double *secs, int n, double count) {
  fprintf(f, ",\"%s\":[", key);
  for (int i = 0; i < n; i++) fprintf(f, "%s%.3f", i ? "," : "", secs[i] > 0 ? count / secs[i] : 0);
  fputc(']', f);
}

static void report_json(const bench *b, FILE *f) {
  const bench_opts *o = b->o;
  const bench_result *r = &b->r;
  const ks_config *c = &b->m->cfg;
  summary s;
  summarise(b, &s);
  fprintf(f, "{\"model\":");
  json_str(f, o->model);
  fprintf(f, ",\"watch_layer\":%d,\"date\":\"%s\",\"device\":", o->watch, r->date);
  json_str(f, r->device);
  fprintf(f, ",\"device_type\":\"%s\",\"kernels\":\"%s\",\"driver\":", r->device_type,
          r->kernels);
  json_str(f, r->driver);
  fprintf(f, ",\"vulkan\":\"%s\",\"arch\":\"%s\",\"dim\":%d,\"ffn\":%d,\"layers\":%d,"
          "\"heads\":%d,\"kv_heads\":%d,\"vocab\":%d,\"weight_type\":\"%s\",\"weights_bytes\":%llu",
          r->vulkan, c->arch, c->dim, c->hidden_dim, c->n_layer, c->n_head, c->n_kv_head,
          c->vocab_size, weight_type(b->m), (unsigned long long)model_weight_bytes(b->m));
  fprintf(f, ",\"n_prompt\":%d,\"n_gen\":%d,\"reps\":%d,\"batch\":%d", o->n_prompt, o->n_gen,
          o->reps, r->batch);
  if (o->n_prompt > 0) {
    fprintf(f, ",\"pp_tokens_per_s\":%.3f,\"pp_tokens_per_s_min\":%.3f,\"pp_tokens_per_s_max\":%.3f",
            s.pp_tps, s.pp_min, s.pp_max);
    json_runs(f, "pp_runs", r->pp_s, o->reps, o->n_prompt);
    fprintf(f, ",\"ttft_ms\":%.4f,\"prefill_flops\":%.6g,\"prefill_tflop_per_s\":%.6g", s.ttft_ms,
            r->prefill_flops, s.tflops);
  }
  if (o->n_gen > 0) {
    fprintf(f, ",\"tg_tokens_per_s\":%.3f,\"tg_tokens_per_s_min\":%.3f,\"tg_tokens_per_s_max\":%.3f",
            s.tg_tps, s.tg_min, s.tg_max);
    json_runs(f, "tg_runs", r->tg_s, o->reps, o->n_gen);
  }
  fprintf(f, ",\"copy_bytes\":%llu,\"copy_gb_per_s\":%.4f", (unsigned long long)r->copy_bytes,
          r->copy_bw / 1e9);
  if (r->mma_flops > 0) fprintf(f, ",\"mma_tflop_per_s\":%.4f", r->mma_flops / 1e12);
  if (o->n_gen > 0)
    fprintf(f, ",\"decode_bytes_per_token\":%.0f,\"decode_weight_bytes\":%llu,"
            "\"decode_kv_bytes_avg\":%.0f,\"roofline_tg_tokens_per_s\":%.3f,\"roofline_pct\":%.3f,"
            "\"decode_step_us\":%.3f",
            s.decode_bytes, (unsigned long long)r->decode_weight_bytes, r->decode_kv_bytes_avg,
            s.roofline_tps, s.roofline_pct, s.step_us);
  fprintf(f, ",\"timestamps\":%s,\"kernels_measured\":%s", r->timestamps ? "true" : "false",
          r->prof_ok ? "true" : "false");
  if (r->prof_ok) {
    double dec_total = 0, pre_total = 0;
    for (int i = 0; i < r->n_kinds; i++) dec_total += r->kinds[i].dec_ns, pre_total += r->kinds[i].pre_ns;
    fprintf(f, ",\"profile_reps\":%d,\"profile_decode_pos\":%d,\"profile_decode_gpu_us\":%.3f,"
            "\"profile_prefill_gpu_ms\":%.4f,\"profile_unstamped\":%d,\"kernels\":[", r->prof_reps,
            r->prof_pos, dec_total / 1e3, pre_total / 1e6, r->unstamped);
    for (int i = 0; i < r->n_kinds; i++) {
      const kernel_kind *k = &r->kinds[i];
      fprintf(f, "%s{\"op\":", i ? "," : "");
      json_str(f, k->name);
      fprintf(f, ",\"decode_dispatches\":%d,\"decode_us\":%.3f,\"prefill_ms\":%.4f", k->dec_count,
              k->dec_ns / 1e3, k->pre_ns / 1e6);
      if (k->dec_bytes && k->dec_ns > 0)
        fprintf(f, ",\"decode_gb_per_s\":%.3f", k->dec_bytes / k->dec_ns);
      fputc('}', f);
    }
    fputc(']', f);
  }
  fprintf(f, "}\n");
}

/* ---------------------------------------------------------------- the CLI */

static int usage(const char *fmt, const char *arg) {
  fprintf(stderr, "kvscope: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'kvscope bench --help'.\n");
  return 2;
}

static void print_help(void) {
  printf("Usage: kvscope bench [-m MODEL] [-p N] [-n N] [-r REPS] [-b BATCH] [--device N] [--json]\n"
         "                     [--json-out FILE]\n"
         "Measures a model on one Vulkan device and reports medians over the repetitions:\n"
         "  ppN    prompt tokens/s, N synthetic tokens from an empty context (and the time to\n"
         "         first token: prefill + picking the first token)\n"
         "  tgN    decode tokens/s, N tokens one at a time from an empty context (llama-bench's tg)\n"
         "  roofline  the device's copy bandwidth (op_copy, measured in the same run) against the\n"
         "         bytes a decode step moves (weights + K/V): achieved %% of that floor\n"
         "  FLOP/s of the prefill, and the GPU time per kernel (timestamp queries)\n"
         "Options:\n"
         "  -m, --model PATH   GGUF or llama2.c checkpoint (default: models/" KS_DEFAULT_MODEL_NAME ")\n"
         "  -p, --n-prompt N   prompt tokens (default 512; 0: no prefill test)\n"
         "  -n, --n-gen N      generated tokens (default 128; 0: no decode test)\n"
         "  -r, --repetitions N  repetitions (default 5)\n"
         "  -b, --batch N      prefill chunk (default min(N prompt, 512), lowered to fit the\n"
         "                     device's storage-buffer range)\n"
         "  --device N         Vulkan device index (see 'kvscope devices')\n"
         "  --json             one JSON object instead of the table\n"
         "  --watch L          export layer L's attention rows every step, as `kvscope tui` does\n"
         "                     (compare with the default, view off)\n"
         "  --json-out FILE    also write the JSON object to FILE\n"
         "Random-weight models of real shapes: kvscope convert --random SHAPE OUT.gguf.\n"
         "\n"
         "kvscope bench --prefix [-m MODEL] [-z TOK] [-c CTX] [-r REPS] [--suffix N] [--json]\n"
         "  The prompt cache: for prompts of 128, 256, ... tokens up to the context, time to first\n"
         "  token computed cold vs with all but the last --suffix tokens (default 32) cached, and\n"
         "  the cache's cost at a 0%% hit rate (lookup time; TTFT with the cache on and off).\n");
}


static int parse_count(const char *s, int lo, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < lo || v > INT_MAX / 4) return -1;
  *out = (int)v;
  return 0;
}

int bench_main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) /* the prompt-cache benchmark is its own mode */
    if (!strcmp(argv[i], "--prefix")) return bench_prefix_main(argc, argv);
  bench_opts o = {NULL, 512, 128, 5, 0, -1, 0, NULL, -1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int *dst = NULL, lo = 0;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      print_help();
      return 0;
    } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
      if (!v) return usage("option %s needs a value", a);
      o.model = v;
      i++;
      continue;
    } else if (!strcmp(a, "--json")) {
      o.json = 1;
      continue;
    } else if (!strcmp(a, "--json-out")) {
      if (!v) return usage("option %s needs a value", a);
      o.json_out = v;
      i++;
      continue;
    } else if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt")) dst = &o.n_prompt;
    else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen")) dst = &o.n_gen;
    else if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) dst = &o.reps, lo = 1;
    else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) dst = &o.batch, lo = 1;
    else if (!strcmp(a, "--device")) dst = &o.device;
    else if (!strcmp(a, "--watch")) dst = &o.watch;
    else return usage("unknown option '%s'", a);
    if (!v) return usage("option %s needs a value", a);
    if (parse_count(v, lo, dst)) return usage("bad value '%s' (a non-negative integer; -r and -b at least 1)", v);
    i++;
  }
  if (o.n_prompt == 0 && o.n_gen == 0) return usage("%s", "nothing to measure: -p and -n are both 0");
  if (!o.model) {
    o.model = ks_default_model_path();
    if (access(o.model, R_OK) != 0) {
      fprintf(stderr, "kvscope: no -m given and the default model %s is missing: give a model "
              "with -m\n", o.model);
      return 1;
    }
  }

  bench b;
  memset(&b, 0, sizeof b);
  b.o = &o;
  ks_model m;
  int rc = 0;
  if (model_load(&m, o.model)) {
    fprintf(stderr, "kvscope: cannot load the model: %s\n", ks_last_error());
    model_deinit(&m);
    return 1;
  }
  b.m = &m;
  const int vocab = m.cfg.vocab_size;
  b.prompt = malloc((size_t)KS_MAX(o.n_prompt, 1) * sizeof *b.prompt);
  b.logits = malloc((size_t)vocab * sizeof *b.logits);
  b.r.pp_s = calloc((size_t)o.reps, sizeof(double));
  b.r.ttft_s = calloc((size_t)o.reps, sizeof(double));
  b.r.tg_s = calloc((size_t)o.reps, sizeof(double));
  if (!b.prompt || !b.logits || !b.r.pp_s || !b.r.ttft_s || !b.r.tg_s) {
    fprintf(stderr, "kvscope: out of host memory\n");
    rc = 1;
    goto done;
  }
  /* a fixed pseudo-random prompt: BOS, then ids spread over the vocabulary */
  uint32_t x = 12345;
  for (int i = 0; i < o.n_prompt; i++) {
    x = x * 1664525u + 1013904223u;
    b.prompt[i] = i == 0 ? 1 % vocab : (int)((x >> 8) % (uint32_t)vocab);
  }
  time_t now = time(NULL);
  struct tm tmv;
  gmtime_r(&now, &tmv);
  strftime(b.r.date, sizeof b.r.date, "%Y-%m-%dT%H:%M:%SZ", &tmv);

  if (run_all(&b)) {
    fprintf(stderr, "kvscope: bench failed: %s\n", ks_last_error());
    rc = 1;
    goto done;
  }
  if (o.json) report_json(&b, stdout);
  else report_text(&b, stdout);
  fflush(stdout);
  if (o.json_out) {
    FILE *jf = fopen(o.json_out, "w");
    if (jf) report_json(&b, jf);
    if (!jf || fclose(jf) != 0) {
      fprintf(stderr, "kvscope: cannot write '%s': %s\n", o.json_out, strerror(errno));
      rc = 1;
    }
  }
done:
  forward_destroy(b.f);
  gpu_destroy(b.g);
  result_free(&b.r);
  free(b.prompt);
  free(b.logits);
  model_deinit(&m);
  if (getenv("KVSCOPE_VALIDATION") && gpu_validation_count() > 0) {
    fprintf(stderr, "kvscope: %llu Vulkan validation message(s) reported\n",
            (unsigned long long)gpu_validation_count());
    if (!rc) rc = 1;
  }
  return rc;
}
