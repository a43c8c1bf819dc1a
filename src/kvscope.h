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

typedef struct {
  const char *model_path;     /* GGUF or llama2.c checkpoint */
  const char *tokenizer_path; /* llama2.c tokenizer.bin; NULL: from the GGUF */
  int n_ctx;                  /* 0: the model's context length */
  int device;                 /* -1: $KVSCOPE_DEVICE or the first GPU */
  int use_cpu;                /* run the plain C reference instead of Vulkan */
  int batch;                  /* prefill chunk in tokens; 0: default */
} ks_engine_opts;

ks_status ks_engine_create(ks_engine **out, const ks_engine_opts *o);
void ks_engine_destroy(ks_engine *e);
const ks_model *ks_engine_model(const ks_engine *e);
const ks_tokenizer *ks_engine_tokenizer(const ks_engine *e);
int ks_engine_n_ctx(const ks_engine *e);
const char *ks_engine_device_name(const ks_engine *e);

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

/* Called for every generated token with its text (complete UTF-8 only; may be empty). Return
 * non-zero to stop. */
typedef int (*ks_token_cb)(void *user, int token, const char *text, size_t len);

/* Prefills the prompt (batched) and decodes up to n_predict tokens (-1: until the context is
 * full). Stops at EOS, and for llama2.c checkpoints also at BOS (their reference behaviour). */
ks_status ks_engine_generate(ks_engine *e, const int *prompt, int n_prompt, int n_predict,
                             const ks_sampling *sp, ks_token_cb cb, void *user,
                             ks_gen_stats *stats);

#endif
