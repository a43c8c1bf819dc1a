/* kvscope.h — the public API of the engine library: what the CLI, the terminal UI and any
 * embedding program use. Opaque handles; every call returns a ks_status and ks_last_error()
 * says what went wrong. Internals (gpu.h, forward.h, ref_cpu.h) stay behind it. */
#ifndef KVSCOPE_H
#define KVSCOPE_H
#include <stddef.h>

#include "common.h"
#include "model.h"
#include "sampler.h"
#include "tokenizer.h"

typedef struct ks_engine ks_engine;

#define KS_DEFAULT_MODEL_NAME "kvscope-tiny.gguf"
/* Path of the model shipped in models/ (used when no -m is given); it may not exist. */
const char *ks_default_model_path(void);
/* *path NULL (no -m given): points it at the default model; KS_ERR_IO with a message if that is
 * missing. A given path is left alone (loading reports its problems). */
ks_status ks_model_path_or_default(const char **path);

/* The prompt cache: K/V blocks kept across requests (see prefix_cache.h). */
typedef struct {
  int cache_mb;          /* device memory for K/V blocks in MiB; 0: default (room for 4 full contexts,
                          * at most a quarter of device memory) */
  double ttl;            /* seconds an unused cached block survives; 0: until evicted */
  int min_tokens;        /* prompts shorter than this are neither looked up nor cached */
  const char *dir;       /* --cache-dir: keep blocks on disk across runs; NULL: memory only */
  double pin_ttl;        /* how long an explicitly marked prefix stays pinned; 0: 300 s */
  double price_input;    /* $ per million uncached input tokens (default 3.00) */
  double price_cached;   /* $ per million cached input tokens (default 0.1 x input) */
  double price_output;   /* $ per million output tokens (default 15.00) */
} ks_cache_opts;

typedef struct {
  const char *model_path;     /* GGUF or llama2.c checkpoint */
  const char *tokenizer_path; /* llama2.c tokenizer.bin; NULL: from the GGUF */
  int n_ctx;                  /* 0: the model's context length */
  int device;                 /* -1: $KVSCOPE_DEVICE or the first GPU */
  int use_cpu;                /* run the plain C reference instead of Vulkan */
  int batch;                  /* prefill chunk in tokens; 0: default */
  ks_cache_opts cache;
} ks_engine_opts;

ks_status ks_engine_create(ks_engine **out, const ks_engine_opts *o);
void ks_engine_destroy(ks_engine *e);
const ks_model *ks_engine_model(const ks_engine *e);
const ks_tokenizer *ks_engine_tokenizer(const ks_engine *e);
int ks_engine_n_ctx(const ks_engine *e);
const char *ks_engine_device_name(const ks_engine *e);
/* Which of the engine's products run on the cooperative-matrix kernels (f16 operands, f32 sums):
 * gpu_coopmat_mode's 0 / 1 / 2, the value ref_set_f16_products takes to do the same. */
int ks_engine_f16_products(const ks_engine *e);

/* Tokenizes a prompt (BOS added); rejects invalid UTF-8 and prompts that leave no room in the
 * context. *tokens is malloc'd. */
ks_status ks_engine_tokenize(ks_engine *e, const char *text, size_t len, int **tokens, int *n);

/* Low level: evaluates n tokens at positions pos0.. (the K/V of earlier positions must be in
 * place). logits: NULL, (vocab) of the last token, or (n, vocab) with all_logits. */
ks_status ks_engine_eval(ks_engine *e, const int *tokens, int n, int pos0, float *logits,
                         int all_logits);

typedef enum { KS_STOP_LENGTH = 0, KS_STOP_EOS = 1, KS_STOP_BOS = 2, KS_STOP_CONTEXT = 3,
               KS_STOP_CALLER = 4 } ks_stop;

typedef struct {
  int n_prompt, n_gen;
  double t_prefill, t_decode, ttft; /* seconds; ttft = prefill + first sample */
  ks_stop stop;
} ks_gen_stats;

/* --- requests over the prompt cache: submit, then step until KS_EV_DONE --- */

typedef struct {
  const int *tokens;  /* the prompt, BOS included (ks_engine_tokenize); copied at submit */
  int n_tokens;
  int n_predict;      /* tokens to generate; -1: until the context is full */
  ks_sampling sampling;
  int cache_prefix;   /* > 0: tokens[0..cache_prefix) are an explicitly marked cacheable prefix
                       * (like a cache_control breakpoint): pinned for pin_ttl */
  int no_cache;       /* compute everything cold and cache nothing */
} ks_request;

typedef enum { KS_POS_CACHED = 1, KS_POS_COMPUTED = 2, KS_POS_GENERATED = 3 } ks_provenance;

typedef struct {
  int prompt_tokens;         /* OpenAI usage.prompt_tokens */
  int cached_tokens;         /* read from the cache: usage.prompt_tokens_details.cached_tokens,
                              * Anthropic cache_read_input_tokens */
  int cache_creation_tokens; /* prompt tokens newly written to the cache (cache_creation_input_tokens) */
  int completion_tokens;
  int generated_cached;      /* generated tokens whose blocks were indexed for the next turn */
  int disk_blocks_loaded;    /* blocks of the hit that came from --cache-dir */
  double hit_rate;           /* cached / prompt */
  double ttft, t_prefill, t_decode, t_lookup; /* seconds */
  double cost, cost_uncached; /* dollars at the configured prices, with and without the cache */
  ks_stop stop;
} ks_usage;

typedef enum { KS_EV_PROVENANCE = 1, KS_EV_TOKEN = 2, KS_EV_DONE = 3 } ks_event_kind;

typedef struct {
  ks_event_kind kind;
  int pos, n;             /* PROVENANCE: positions pos..pos+n-1 have provenance prov;
                           * TOKEN: pos is the position the token will occupy */
  ks_provenance prov;
  int token;              /* TOKEN */
  const char *text;       /* TOKEN: its text (complete UTF-8 only; may be empty) */
  size_t len;
  const float *logits;    /* TOKEN: the logits it was sampled from (vocab); DONE after a stop
                           * token (EOS, or BOS for llama2.c): the logits that token came from */
  const float *probs;     /* TOKEN: attention rows of the watched layer for the position before
                           * it, (n_head, probs_stride); NULL when not watching */
  int probs_stride;
  ks_usage usage;         /* DONE */
} ks_event;

/* Starts a request (one at a time). Looks up the longest cached prefix (memory, then disk),
 * reserves blocks; a request that cannot fit in the cache even alone fails here with
 * KS_ERR_CACHE. */
ks_status ks_engine_submit(ks_engine *e, const ks_request *r);
/* Does the next piece of work and returns one event; after KS_EV_DONE the engine is idle.
 * Pointers in the event stay valid until the next call. */
ks_status ks_engine_step(ks_engine *e, ks_event *ev);
/* Abandons the running request (its computed full blocks stay cached). */
void ks_engine_cancel(ks_engine *e);
/* Attention rows of `layer` (-1: off) are exported with each token. */
void ks_engine_watch(ks_engine *e, int layer);
/* Drops every cached block not in use. */
void ks_engine_clear_cache(ks_engine *e);

typedef struct {
  int n_blocks, block_tokens, used, cached, free_blocks;
  uint64_t evictions, expirations, block_bytes;
  int enabled;
} ks_cache_info;
void ks_engine_cache_info(const ks_engine *e, ks_cache_info *ci);

/* Called for every generated token with its text (complete UTF-8 only; may be empty). Return
 * non-zero to stop. */
typedef int (*ks_token_cb)(void *user, int token, const char *text, size_t len);

/* Prefills the prompt (batched) and decodes up to n_predict tokens (-1: until the context is
 * full). Stops at EOS, and for llama2.c checkpoints also at BOS (their reference behaviour). */
ks_status ks_engine_generate(ks_engine *e, const int *prompt, int n_prompt, int n_predict,
                             const ks_sampling *sp, ks_token_cb cb, void *user,
                             ks_gen_stats *stats);

#endif
