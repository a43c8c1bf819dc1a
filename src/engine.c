/* engine.c — ties model, tokenizer, GPU forward pass (or the CPU reference), sampler and the
 * prompt cache into the public API of kvscope.h. Requests run one at a time as a small state
 * machine (submit, then step: prefill, one token per step, done) that emits events: provenance
 * of every position, tokens with their logits and attention rows, and the usage accounting.
 * What it is not: block bookkeeping (prefix_cache.c), file format (cache_file.c), kernels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache_file.h"
#include "forward.h"
#include "kvscope.h"
#include "prefix_cache.h"
#include "ref_cpu.h"

typedef enum { ST_IDLE = 0, ST_PREFILL, ST_DECODE, ST_FINISH } req_state;

#define MAX_QUEUED 4

struct ks_engine {
  ks_model model;
  uint64_t cache_tag; /* model fingerprint x gpu_numerics_id: the cache files' tag */
  ks_tokenizer *tok;
  int n_ctx;
  int use_cpu;
  ks_gpu *gpu;
  ks_forward *fwd;
  ref_state ref;
  int ref_ready;
  float *logits; /* (vocab) */
  /* prompt cache */
  ks_cache_opts copt;
  ks_pcache *pc; /* NULL on the CPU path */
  void *payload; /* (forward_block_bytes) staging for disk blocks */
  int warned_disk;
  /* the running request */
  req_state state;
  ks_request req;
  int *toks;     /* prompt then generated tokens (cap n_ctx + 1) */
  int n_toks;
  int pos;       /* positions whose K/V are computed */
  int n_cached_blocks;  /* leading blocks served from the cache */
  int n_gen;
  int last_tok;  /* sampled, emitted, not yet evaluated */
  unsigned char *fresh; /* (n_ctx / 16 + 1) block i was indexed by this request */
  ks_seq seq;
  ks_sampler smp;
  int smp_ready;
  ks_detok dt;
  ks_usage usage;
  double t_start, t_decode0;
  ks_event queue[MAX_QUEUED];
  int q_head, q_len;
  char *text;    /* (3 * longest piece + 16): one token's decoded text */
  size_t text_cap;
  int watch_layer;
};

static double block_mib(const ks_engine *e) { return forward_block_bytes(e->fwd) / 1048576.0; }

static void finish_request(ks_engine *e);

void ks_engine_destroy(ks_engine *e) {
  if (!e) return;
  if (e->state != ST_IDLE) finish_request(e);
  seq_free(&e->seq);
  pcache_destroy(e->pc);
  free(e->payload);
  free(e->toks);
  free(e->fresh);
  forward_destroy(e->fwd);
  gpu_destroy(e->gpu);
  if (e->ref_ready) ref_state_deinit(&e->ref);
  tokenizer_destroy(e->tok);
  model_deinit(&e->model);
  free(e->logits);
  free(e->text);
  free(e);
}

/* Number of K/V blocks for the cache: --cache-mb, or room for 4 contexts capped at a quarter of
 * device memory; never more than one layer's pool can address in one storage buffer. */
static ks_status cache_blocks(ks_engine *e, uint64_t block_bytes, int *n_blocks) {
  const ks_gpu_info *gi = gpu_info(e->gpu);
  const ks_config *c = &e->model.cfg;
  int per_ctx = (e->n_ctx + KS_KV_BLOCK - 1) / KS_KV_BLOCK;
  uint64_t n;
  if (e->copt.cache_mb > 0) {
    n = (uint64_t)e->copt.cache_mb * 1048576ull / block_bytes;
    if (n == 0)
      return ks_fail(KS_ERR_CACHE, "--cache-mb %d is smaller than one K/V block of this model "
                     "(%.2f MiB for %d positions): raise it", e->copt.cache_mb,
                     block_bytes / 1048576.0, KS_KV_BLOCK);
  } else {
    n = 4ull * (uint64_t)per_ctx;
    uint64_t cap = gi->device_local_bytes / 4 / block_bytes;
    if (n > cap) n = cap > (uint64_t)per_ctx ? cap : (uint64_t)per_ctx;
  }
  uint64_t row_block = (uint64_t)KS_KV_BLOCK * c->n_kv_head * c->head_dim * 4;
  uint64_t max_by_range = gi->max_storage_range / row_block;
  if (n > max_by_range) {
    if (e->copt.cache_mb > 0)
      fprintf(stderr, "kvscope: warning: --cache-mb %d exceeds what one storage buffer per layer "
              "can address on this device; using %llu blocks\n", e->copt.cache_mb,
              (unsigned long long)max_by_range);
    n = max_by_range;
  }
  if (n > 1u << 24) n = 1u << 24;
  *n_blocks = (int)n;
  return KS_OK;
}

/* A host allocation of `bytes` for `what` failed; `advice` says what to lower (or NULL). */
static ks_status host_oom(const char *what, uint64_t bytes, const char *advice) {
  return ks_fail(KS_ERR_NOMEM, "out of host memory allocating %.1f MiB for %s%s%s",
                 bytes / 1048576.0, what, advice ? ": " : "", advice ? advice : "");
}

/* forward_create ran out of memory: says what the whole run needs on the device, then the
 * allocation that failed (which ends with what to do). */
static ks_status explain_device_memory(ks_engine *e, const char *model_path, int batch,
                                       int n_blocks, uint64_t block_bytes) {
  char why[768];
  snprintf(why, sizeof why, "%s", ks_last_error());
  const ks_config *c = &e->model.cfg;
  const double mib = 1048576.0;
  uint64_t qd = (uint64_t)c->n_head * c->head_dim, kvd = (uint64_t)c->n_kv_head * c->head_dim;
  uint64_t wide = KS_MAX((uint64_t)c->dim, qd);
  /* x, xb, xb2, q, att, k, v, hb, hb2 and the logits of a batch (forward.c's scratch) */
  double act = (double)batch * 4 *
               ((double)c->dim + 2.0 * wide + 2.0 * qd + 2.0 * kvd + 2.0 * c->hidden_dim +
                c->vocab_size) / mib;
  double w = model_weight_bytes(&e->model) / mib, kv = (double)n_blocks * block_bytes / mib;
  char kv_why[64];
  if (e->copt.cache_mb > 0) snprintf(kv_why, sizeof kv_why, "--cache-mb %d", e->copt.cache_mb);
  else snprintf(kv_why, sizeof kv_why, "room for 4 contexts of -c %d", e->n_ctx);
  return ks_fail(KS_ERR_NOMEM, "'%.200s' does not fit in the memory of %s: it needs about %.1f MiB "
                 "(%.1f MiB of weights, %.1f MiB of K/V cache for %d positions: %s, %.1f MiB of "
                 "activations for batches of %d tokens); %s", model_path, gpu_info(e->gpu)->name,
                 w + kv + act, w, kv, n_blocks * KS_KV_BLOCK, kv_why, act, batch, why);
}

static ks_status create_inner(ks_engine *e, const ks_engine_opts *o) {
  ks_status st = model_load(&e->model, o->model_path);
  if (st) return st;
  const ks_config *c = &e->model.cfg;
  if (o->tokenizer_path) {
    st = tokenizer_load_llama2c(&e->tok, o->tokenizer_path, c->vocab_size);
  } else if (e->model.gguf) {
    st = tokenizer_from_gguf(&e->tok, e->model.gguf);
  } else {
    return ks_fail(KS_ERR_ARG, "'%s' is a llama2.c checkpoint, which carries no tokenizer: give "
                   "its tokenizer.bin with -z", o->model_path);
  }
  if (st) return st;
  if (tokenizer_vocab_size(e->tok) != c->vocab_size)
    return ks_fail(KS_ERR_ARG, "tokenizer has %d tokens but the model expects %d: wrong -z file?",
                   tokenizer_vocab_size(e->tok), c->vocab_size);
  e->n_ctx = o->n_ctx > 0 ? o->n_ctx : c->n_ctx;
  if (e->n_ctx > c->n_ctx)
    fprintf(stderr, "kvscope: warning: context %d is longer than the model was trained for (%d)\n",
            e->n_ctx, c->n_ctx);
  e->copt = o->cache;
  if (e->copt.pin_ttl <= 0) e->copt.pin_ttl = 300;
  if (e->copt.price_input <= 0) e->copt.price_input = 3.0;
  if (e->copt.price_cached <= 0) e->copt.price_cached = 0.1 * e->copt.price_input;
  if (e->copt.price_output <= 0) e->copt.price_output = 15.0;
  char what[128];
  size_t n_bytes = (size_t)c->vocab_size * sizeof(float);
  if (!(e->logits = malloc(n_bytes))) return host_oom("the logits of one token", n_bytes, NULL);
  n_bytes = sizeof(int) * ((size_t)e->n_ctx + 1);
  snprintf(what, sizeof what, "the tokens of a %d-token context", e->n_ctx);
  if (!(e->toks = malloc(n_bytes))) return host_oom(what, n_bytes, "lower the context (-c)");
  n_bytes = (size_t)e->n_ctx / KS_KV_BLOCK + 2;
  snprintf(what, sizeof what, "the block flags of a %d-token context", e->n_ctx);
  if (!(e->fresh = calloc(n_bytes, 1))) return host_oom(what, n_bytes, "lower the context (-c)");
  e->text_cap = 3 * tokenizer_max_piece_len(e->tok) + 16;
  e->text = malloc(e->text_cap);
  if (!e->text) return host_oom("the text of one token", e->text_cap, NULL);
  e->use_cpu = o->use_cpu;
  e->watch_layer = -1;
  if (e->use_cpu) {
    st = ref_state_init(&e->ref, &e->model, e->n_ctx);
    if (st) return st;
    e->ref_ready = 1;
    return KS_OK;
  }
  st = gpu_create(&e->gpu, o->device);
  if (st) return st;
  /* cached K/V are tagged with the model and with what the kernels' bits depend on (device,
   * driver, kernel version): the cache never hands rows computed elsewhere to a request here */
  e->cache_tag = e->model.fingerprint ^ (gpu_numerics_id(e->gpu) * 0x9E3779B97F4A7C15ull);
  if (e->copt.dir) {
    st = cache_dir_prepare(e->copt.dir);
    if (st) return st;
  }
  int batch = o->batch > 0 ? o->batch : 128;
  if (batch > e->n_ctx) batch = e->n_ctx;
  uint64_t block_bytes = 2ull * c->n_layer * KS_KV_BLOCK * c->n_kv_head * c->head_dim * 4;
  int n_blocks = 0;
  st = cache_blocks(e, block_bytes, &n_blocks);
  if (st) return st;
  st = forward_create(&e->fwd, e->gpu, &e->model, e->n_ctx, batch, n_blocks);
  if (st == KS_ERR_NOMEM)
    return explain_device_memory(e, o->model_path ? o->model_path : "the model", batch, n_blocks,
                                 block_bytes);
  if (st) return st;
  /* KVSCOPE_TEST_STEP_DELAY_MS: for tests that must interrupt work in progress on any GPU */
  const char *delay = getenv("KVSCOPE_TEST_STEP_DELAY_MS");
  if (delay) e->fwd->step_delay_us = (unsigned)(atoi(delay) > 0 ? atoi(delay) : 0) * 1000u;
  st = pcache_create(&e->pc, n_blocks);
  if (st) return st;
  e->payload = malloc(block_bytes);
  if (!e->payload)
    return host_oom("one K/V block (the prompt cache's disk transfers)", block_bytes, NULL);
  return KS_OK;
}

ks_status ks_engine_create(ks_engine **out, const ks_engine_opts *o) {
  *out = NULL;
  ks_engine *e = calloc(1, sizeof *e);
  if (!e) return host_oom("the engine", sizeof *e, NULL);
  seq_init(&e->seq);
  ks_status st = create_inner(e, o);
  if (st) {
    ks_engine_destroy(e);
    return st;
  }
  *out = e;
  return KS_OK;
}

const ks_model *ks_engine_model(const ks_engine *e) { return &e->model; }
const ks_tokenizer *ks_engine_tokenizer(const ks_engine *e) { return e->tok; }
int ks_engine_n_ctx(const ks_engine *e) { return e->n_ctx; }
const char *ks_engine_device_name(const ks_engine *e) {
  return e->use_cpu ? "CPU reference (plain C)" : gpu_info(e->gpu)->name;
}

int ks_engine_f16_products(const ks_engine *e) {
  return e->use_cpu ? 0 : gpu_coopmat_mode(e->gpu);
}

ks_status ks_engine_tokenize(ks_engine *e, const char *text, size_t len, int **tokens, int *n) {
  ks_status st = tokenizer_encode(e->tok, text, len, 1, tokens, n);
  if (st) return st;
  if (*n >= e->n_ctx) {
    int got = *n;
    free(*tokens);
    *tokens = NULL;
    return ks_fail(KS_ERR_ARG, "prompt is %d tokens but the context holds %d (one must stay free "
                   "to generate): shorten the prompt or raise -c (model maximum %d)",
                   got, e->n_ctx, e->model.cfg.n_ctx);
  }
  return KS_OK;
}

static ks_status engine_eval(ks_engine *e, const int *tokens, int n, int pos0, float *logits,
                             int all_logits, int prompt);

ks_status ks_engine_eval(ks_engine *e, const int *tokens, int n, int pos0, float *logits,
                         int all_logits) {
  return engine_eval(e, tokens, n, pos0, logits, all_logits, n > 1);
}

/* prompt: prompt tokens (the prefill kernels, even for one token), else a decode step */
static ks_status engine_eval(ks_engine *e, const int *tokens, int n, int pos0, float *logits,
                             int all_logits, int prompt) {
  if (!e->use_cpu) return forward_eval_ex(e->fwd, tokens, n, pos0, logits, all_logits, prompt);
  if (pos0 < 0 || n <= 0 || pos0 + n > e->n_ctx)
    return ks_fail(KS_ERR_ARG, "positions %d..%d are outside the context of %d tokens", pos0,
                   pos0 + n - 1, e->n_ctx);
  const int vocab = e->model.cfg.vocab_size;
  for (int i = 0; i < n; i++) {
    if (ks_interrupt_pending())
      return ks_fail(KS_ERR_INTERRUPTED, "interrupted after %d of %d tokens", i, n);
    if (tokens[i] < 0 || tokens[i] >= vocab)
      return ks_fail(KS_ERR_ARG, "token id %d outside the vocabulary (%d)", tokens[i], vocab);
    const float *l = ref_forward(&e->ref, tokens[i], pos0 + i);
    if (!l) return KS_ERR_ARG;
    if (logits && all_logits) memcpy(logits + (size_t)i * vocab, l, (size_t)vocab * 4);
    else if (logits && i == n - 1) memcpy(logits, l, (size_t)vocab * 4);
  }
  return KS_OK;
}

void ks_engine_watch(ks_engine *e, int layer) {
  e->watch_layer = layer;
  if (e->fwd) forward_watch(e->fwd, layer);
}

void ks_engine_clear_cache(ks_engine *e) {
  if (e->pc) pcache_clear(e->pc);
}

void ks_engine_cache_info(const ks_engine *e, ks_cache_info *ci) {
  memset(ci, 0, sizeof *ci);
  ci->block_tokens = KS_KV_BLOCK;
  if (!e->pc) return;
  ci->enabled = 1;
  ci->n_blocks = pcache_n_blocks(e->pc);
  ci->used = pcache_n_used(e->pc);
  ci->cached = pcache_n_cached(e->pc);
  ci->free_blocks = pcache_n_free(e->pc);
  ci->evictions = pcache_stats(e->pc)->evictions;
  ci->expirations = pcache_stats(e->pc)->expirations;
  ci->block_bytes = forward_block_bytes(e->fwd);
}

/* --- requests --- */

static void push_event(ks_engine *e, const ks_event *ev) {
  if (e->q_len < MAX_QUEUED) e->queue[(e->q_head + e->q_len++) % MAX_QUEUED] = *ev;
}

static int caching(const ks_engine *e) {
  return e->pc && !e->req.no_cache && e->req.n_tokens >= e->copt.min_tokens;
}

/* Loads blocks beyond the in-memory hit from --cache-dir, while the chain continues there. */
static void load_from_disk(ks_engine *e, int max_blocks) {
  const ks_config *c = &e->model.cfg;
  while (e->seq.n < max_blocks) {
    int i = e->seq.n;
    int32_t t[KS_KV_BLOCK];
    for (int j = 0; j < KS_KV_BLOCK; j++) t[j] = e->toks[i * KS_KV_BLOCK + j];
    uint64_t parent = i ? pcache_block(e->pc, e->seq.blocks[i - 1])->hash : 0;
    ks_block_header want = {0}, got;
    want.model_fingerprint = e->cache_tag;
    want.kv_format = KS_KV_FORMAT_F32;
    want.n_layer = (uint32_t)c->n_layer;
    want.kv_dim = (uint32_t)(c->n_kv_head * c->head_dim);
    want.block_size = KS_KV_BLOCK;
    want.hash = pcache_chain_hash(parent, t);
    ks_status st = cache_file_read(e->copt.dir, &want, &got, e->payload, forward_block_bytes(e->fwd));
    if (st == KS_ERR_IO) return; /* not on disk: an ordinary miss */
    if (st == KS_OK && (got.parent_hash != parent || memcmp(got.tokens, t, sizeof t) != 0))
      st = ks_fail(KS_ERR_CACHE, "prompt cache file for block %016llx holds other tokens",
                   (unsigned long long)want.hash);
    if (st != KS_OK) {
      /* a damaged or foreign file: never trusted, removed so a good copy can be written */
      char path[4096];
      cache_file_path(path, sizeof path, e->copt.dir, want.model_fingerprint, want.hash);
      fprintf(stderr, "kvscope: warning: ignoring and removing a prompt cache file: %s\n",
              ks_last_error());
      unlink(path);
      return;
    }
    uint32_t id;
    if (pcache_adopt(e->pc, &e->seq, want.hash, parent, t, ks_now_sec(), &id) != KS_OK) return;
    if (forward_write_block(e->fwd, id, e->payload) != KS_OK) {
      /* the block is indexed but its rows are unknown: drop it by releasing and clearing */
      fprintf(stderr, "kvscope: warning: cannot upload a cached block: %s\n", ks_last_error());
      e->seq.n--;
      ks_seq one = {&id, 1, 1};
      pcache_release(e->pc, &one, ks_now_sec());
      pcache_clear(e->pc);
      return;
    }
    e->usage.disk_blocks_loaded++;
  }
}

/* Reserves a block for position pos if it starts a new one. */
static ks_status ensure_block(ks_engine *e, int pos) {
  int need = pos / KS_KV_BLOCK + 1;
  int changed = 0;
  while (e->seq.n < need) {
    uint32_t id;
    ks_status st = pcache_alloc(e->pc, &e->seq, ks_now_sec(), &id);
    if (st) return st;
    e->fresh[e->seq.n - 1] = 0;
    changed = 1;
  }
  if (changed) return forward_set_table(e->fwd, e->seq.blocks, e->seq.n);
  return KS_OK;
}

ks_status ks_engine_submit(ks_engine *e, const ks_request *r) {
  if (e->state != ST_IDLE)
    return ks_fail(KS_ERR_ARG, "a request is already running: step it to the end or cancel it");
  if (r->n_tokens <= 0) return ks_fail(KS_ERR_ARG, "empty prompt (it needs at least BOS)");
  if (r->n_tokens >= e->n_ctx)
    return ks_fail(KS_ERR_ARG, "prompt is %d tokens but the context holds %d (one must stay free "
                   "to generate): shorten the prompt or raise -c", r->n_tokens, e->n_ctx);
  for (int i = 0; i < r->n_tokens; i++)
    if (r->tokens[i] < 0 || r->tokens[i] >= e->model.cfg.vocab_size)
      return ks_fail(KS_ERR_ARG, "token id %d outside the vocabulary", r->tokens[i]);
  const int n = r->n_tokens;
  if (e->pc) {
    int total = r->n_predict < 0 ? e->n_ctx : KS_MIN(e->n_ctx, n + r->n_predict);
    int need = (total + KS_KV_BLOCK - 1) / KS_KV_BLOCK;
    if (need > pcache_n_blocks(e->pc))
      return ks_fail(KS_ERR_CACHE, "the K/V cache is too small for this request: %d positions "
                     "need %d blocks (%.1f MiB) but the cache holds %d blocks (%.1f MiB): raise "
                     "--cache-mb or lower -n", total, need, need * block_mib(e),
                     pcache_n_blocks(e->pc), pcache_n_blocks(e->pc) * block_mib(e));
  }
  ks_status st = sampler_init(&e->smp, e->model.cfg.vocab_size, &r->sampling);
  if (st) return st;
  e->smp_ready = 1;
  e->req = *r;
  e->req.tokens = e->toks;
  memcpy(e->toks, r->tokens, sizeof(int) * (size_t)n);
  e->n_toks = n;
  e->n_gen = 0;
  e->q_head = e->q_len = 0;
  memset(&e->usage, 0, sizeof e->usage);
  e->usage.prompt_tokens = n;
  detok_init(&e->dt);
  e->dt.prev = e->toks[n - 1];
  e->t_start = ks_now_sec();
  memset(e->fresh, 0, (size_t)e->n_ctx / KS_KV_BLOCK + 2);
  e->n_cached_blocks = 0;
  if (e->pc) {
    double now = ks_now_sec();
    pcache_expire(e->pc, now, e->copt.ttl);
    e->seq.n = 0;
    if (caching(e)) {
      /* at least one prompt token is always evaluated, so there are logits to sample from */
      int max_blocks = (n - 1) / KS_KV_BLOCK;
      pcache_match(e->pc, e->toks, n, max_blocks, &e->seq, now);
      if (e->copt.dir) load_from_disk(e, max_blocks);
      e->n_cached_blocks = e->seq.n;
    }
    e->usage.t_lookup = ks_now_sec() - now;
    st = ensure_block(e, n - 1);
    if (!st) st = forward_set_table(e->fwd, e->seq.blocks, e->seq.n);
    if (st) {
      pcache_release(e->pc, &e->seq, ks_now_sec());
      sampler_deinit(&e->smp);
      e->smp_ready = 0;
      return st;
    }
  }
  e->pos = e->n_cached_blocks * KS_KV_BLOCK;
  e->usage.cached_tokens = e->pos;
  ks_event ev = {0};
  ev.kind = KS_EV_PROVENANCE;
  if (e->pos > 0) {
    ev.pos = 0;
    ev.n = e->pos;
    ev.prov = KS_POS_CACHED;
    push_event(e, &ev);
  }
  ev.pos = e->pos;
  ev.n = n - e->pos;
  ev.prov = KS_POS_COMPUTED;
  push_event(e, &ev);
  e->state = ST_PREFILL;
  return KS_OK;
}

/* Decode steps compute K/V with other kernels than prompts (gpu_coopmat_mode 3). */
static int decode_differs(const ks_engine *e) {
  return !e->use_cpu && gpu_coopmat_mode(e->gpu) == 3;
}

/* Indexes block i of the sequence (full and computed). */
static void publish(ks_engine *e, int i) {
  double now = ks_now_sec();
  double pin = e->req.cache_prefix >= (i + 1) * KS_KV_BLOCK ? now + e->copt.pin_ttl : 0;
  uint32_t id = e->seq.blocks[i];
  int was = pcache_block(e->pc, id)->indexed;
  pcache_publish(e->pc, &e->seq, i, e->toks, now, pin);
  if (!was && pcache_block(e->pc, id)->indexed) e->fresh[i] = 1;
}

static ks_status emit_token(ks_engine *e, int tok, ks_event *ev) {
  memset(ev, 0, sizeof *ev);
  int bos = tokenizer_bos(e->tok);
  /* end of generation: EOS and the end-of-turn tokens (<|eot_id|>, <|im_end|>, ...) */
  if (tokenizer_is_eog(e->tok, tok) || (tok == bos && e->model.format == KS_FMT_LLAMA2C)) {
    e->usage.stop = tok == bos && e->model.format == KS_FMT_LLAMA2C ? KS_STOP_BOS : KS_STOP_EOS;
    e->state = ST_FINISH;
    return KS_OK;
  }
  e->n_gen++;
  e->last_tok = tok;
  ev->kind = KS_EV_TOKEN;
  ev->token = tok;
  ev->pos = e->pos;
  ev->len = tokenizer_decode(e->tok, &e->dt, tok, e->text, e->text_cap);
  ev->text = e->text;
  ev->logits = e->logits;
  if (e->watch_layer >= 0 && e->fwd) {
    ev->probs = forward_probs(e->fwd);
    ev->probs_stride = e->n_ctx;
  }
  e->state = ST_DECODE;
  return KS_OK;
}

static void write_to_disk(ks_engine *e) {
  const ks_config *c = &e->model.cfg;
  for (int i = 0; i < e->seq.n; i++) {
    if (!e->fresh[i]) continue;
    const ks_block *b = pcache_block(e->pc, e->seq.blocks[i]);
    ks_block_header h = {0};
    h.model_fingerprint = e->cache_tag;
    h.kv_format = KS_KV_FORMAT_F32;
    h.n_layer = (uint32_t)c->n_layer;
    h.kv_dim = (uint32_t)(c->n_kv_head * c->head_dim);
    h.block_size = KS_KV_BLOCK;
    h.hash = b->hash;
    h.parent_hash = b->parent;
    memcpy(h.tokens, b->tokens, sizeof b->tokens);
    /* computed by this request (not read from disk): write it even if a file exists, since
     * that file may be the damaged copy that broke the chain (the write is atomic) */
    ks_status st = forward_read_block(e->fwd, e->seq.blocks[i], e->payload);
    if (!st) st = cache_file_write(e->copt.dir, &h, e->payload);
    if (st) {
      if (!e->warned_disk)
        fprintf(stderr, "kvscope: warning: the prompt cache is not being saved: %s\n", ks_last_error());
      e->warned_disk = 1;
      return;
    }
  }
}

static void finish_request(ks_engine *e) {
  if (e->pc) {
    /* after a lost device no K/V row is trusted: the disk keeps only what was saved before */
    if (e->copt.dir && caching(e) && !gpu_device_lost(e->gpu)) write_to_disk(e);
    pcache_release(e->pc, &e->seq, ks_now_sec());
  }
  if (e->smp_ready) sampler_deinit(&e->smp);
  e->smp_ready = 0;
  e->state = ST_IDLE;
}

void ks_engine_cancel(ks_engine *e) {
  if (e->state != ST_IDLE) finish_request(e);
}

static void fill_usage(ks_engine *e) {
  ks_usage *u = &e->usage;
  u->completion_tokens = e->n_gen;
  u->hit_rate = u->prompt_tokens ? (double)u->cached_tokens / u->prompt_tokens : 0;
  int prompt_blocks = u->prompt_tokens / KS_KV_BLOCK;
  int created = 0, gen_cached = 0;
  for (int i = 0; i < e->seq.n; i++) {
    if (!e->fresh[i]) continue;
    if (i < prompt_blocks) created += KS_KV_BLOCK;
    else gen_cached += KS_KV_BLOCK;
  }
  u->cache_creation_tokens = created;
  u->generated_cached = gen_cached;
  if (e->t_decode0 > 0) u->t_decode = ks_now_sec() - e->t_decode0;
  double in = e->copt.price_input, cached = e->copt.price_cached, out = e->copt.price_output;
  u->cost = ((u->prompt_tokens - u->cached_tokens) * in + u->cached_tokens * cached +
             u->completion_tokens * out) / 1e6;
  u->cost_uncached = (u->prompt_tokens * in + u->completion_tokens * out) / 1e6;
}

/* A GPU failure while evaluating `what` a..b (b < 0: just a): names the work that failed. */
static ks_status gpu_error_during(ks_engine *e, const char *what, int a, int b) {
  char why[768];
  snprintf(why, sizeof why, "%s", ks_last_error());
  char range[48];
  if (b >= 0 && b != a) snprintf(range, sizeof range, "%d..%d", a, b);
  else snprintf(range, sizeof range, "%d", a);
  return ks_fail(KS_ERR_VULKAN, "in %s %s%s: %s", what, range,
                 gpu_device_lost(e->gpu) && e->copt.dir
                     ? " (nothing from this request is saved to --cache-dir)" : "", why);
}

ks_status ks_engine_step(ks_engine *e, ks_event *ev) {
  memset(ev, 0, sizeof *ev);
  if (e->q_len > 0) {
    *ev = e->queue[e->q_head];
    e->q_head = (e->q_head + 1) % MAX_QUEUED;
    e->q_len--;
    return KS_OK;
  }
  ks_status st = KS_OK;
  switch (e->state) {
  case ST_IDLE:
    return ks_fail(KS_ERR_ARG, "no request is running: submit one first");
  case ST_PREFILL: {
    const int n = e->n_toks;
    st = engine_eval(e, e->toks + e->pos, n - e->pos, e->pos, e->logits, 0, 1);
    if (st == KS_ERR_VULKAN) st = gpu_error_during(e, "the prefill of positions", e->pos, n - 1);
    if (st) break;
    e->pos = n;
    e->usage.t_prefill = ks_now_sec() - e->t_start;
    if (e->pc && caching(e))
      for (int i = e->n_cached_blocks; i < n / KS_KV_BLOCK; i++) publish(e, i);
    e->t_decode0 = ks_now_sec();
    if (e->req.n_predict == 0) {
      e->usage.ttft = ks_now_sec() - e->t_start;
      e->usage.stop = KS_STOP_LENGTH;
      e->state = ST_FINISH;
      return ks_engine_step(e, ev);
    }
    int tok = sampler_sample(&e->smp, e->logits);
    e->usage.ttft = ks_now_sec() - e->t_start;
    st = emit_token(e, tok, ev);
    if (!st && e->state == ST_FINISH) return ks_engine_step(e, ev);
    break;
  }
  case ST_DECODE: {
    if (e->req.n_predict >= 0 && e->n_gen >= e->req.n_predict) {
      e->usage.stop = KS_STOP_LENGTH;
      e->state = ST_FINISH;
      return ks_engine_step(e, ev);
    }
    if (e->pos >= e->n_ctx) {
      e->usage.stop = KS_STOP_CONTEXT;
      e->state = ST_FINISH;
      return ks_engine_step(e, ev);
    }
    if (e->pc) {
      st = ensure_block(e, e->pos);
      if (st) break;
    }
    e->toks[e->n_toks++] = e->last_tok;
    st = engine_eval(e, &e->last_tok, 1, e->pos, e->logits, 0, 0);
    if (st == KS_ERR_VULKAN) st = gpu_error_during(e, "the decode step at position", e->pos, -1);
    if (st) break;
    e->pos++;
    /* a block finished by decode steps is cached only where decode steps and prompts compute the
     * same bits (not under gpu_coopmat_mode 3: a later prompt would compute it differently) */
    if (e->pc && caching(e) && e->pos % KS_KV_BLOCK == 0 && !decode_differs(e))
      publish(e, e->pos / KS_KV_BLOCK - 1);
    int tok = sampler_sample(&e->smp, e->logits);
    st = emit_token(e, tok, ev);
    if (!st && e->state == ST_FINISH) return ks_engine_step(e, ev);
    break;
  }
  case ST_FINISH: {
    fill_usage(e);
    char tail[32];
    size_t len = detok_flush(&e->dt, tail, sizeof tail);
    (void)len; /* an incomplete character at the very end is dropped */
    ev->kind = KS_EV_DONE;
    ev->usage = e->usage;
    /* a stop token was sampled from these: give them too, so callers see every sampling */
    if (e->usage.stop == KS_STOP_EOS || e->usage.stop == KS_STOP_BOS) ev->logits = e->logits;
    finish_request(e);
    return KS_OK;
  }
  }
  if (st) finish_request(e);
  return st;
}

ks_status ks_engine_generate(ks_engine *e, const int *prompt, int n_prompt, int n_predict,
                             const ks_sampling *sp, ks_token_cb cb, void *user,
                             ks_gen_stats *stats) {
  ks_request r = {0};
  r.tokens = prompt;
  r.n_tokens = n_prompt;
  r.n_predict = n_predict;
  r.sampling = *sp;
  ks_status st = ks_engine_submit(e, &r);
  if (st) return st;
  ks_gen_stats s = {0};
  s.n_prompt = n_prompt;
  for (;;) {
    ks_event ev;
    st = ks_engine_step(e, &ev);
    if (st) break;
    if (ev.kind == KS_EV_TOKEN && cb && cb(user, ev.token, ev.text, ev.len)) {
      ks_engine_cancel(e);
      s.stop = KS_STOP_CALLER;
      break;
    }
    if (ev.kind == KS_EV_DONE) {
      s.n_gen = ev.usage.completion_tokens;
      s.t_prefill = ev.usage.t_prefill;
      s.t_decode = ev.usage.t_decode;
      s.ttft = ev.usage.ttft;
      s.stop = ev.usage.stop;
      break;
    }
  }
  if (stats) *stats = s;
  return st;
}
