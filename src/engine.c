/* engine.c — ties model, tokenizer, GPU forward pass (or the CPU reference) and sampler into
 * the public API of kvscope.h. One sequence at a time for now; the prompt cache builds on the
 * block table that forward.c already reads. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "kvscope.h"
#include "ref_cpu.h"

struct ks_engine {
  ks_model model;
  ks_tokenizer *tok;
  int n_ctx;
  int use_cpu;
  ks_gpu *gpu;
  ks_forward *fwd;
  ref_state ref;
  int ref_ready;
  float *logits; /* (vocab) */
};

void ks_engine_destroy(ks_engine *e) {
  if (!e) return;
  forward_destroy(e->fwd);
  gpu_destroy(e->gpu);
  if (e->ref_ready) ref_state_deinit(&e->ref);
  tokenizer_destroy(e->tok);
  model_deinit(&e->model);
  free(e->logits);
  free(e);
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
  e->logits = malloc((size_t)c->vocab_size * sizeof(float));
  if (!e->logits) return ks_fail(KS_ERR_NOMEM, "out of host memory");
  e->use_cpu = o->use_cpu;
  if (e->use_cpu) {
    st = ref_state_init(&e->ref, &e->model, e->n_ctx);
    if (st) return st;
    e->ref_ready = 1;
    return KS_OK;
  }
  st = gpu_create(&e->gpu, o->device);
  if (st) return st;
  int batch = o->batch > 0 ? o->batch : 128;
  if (batch > e->n_ctx) batch = e->n_ctx;
  return forward_create(&e->fwd, e->gpu, &e->model, e->n_ctx, batch, 0);
}

ks_status ks_engine_create(ks_engine **out, const ks_engine_opts *o) {
  *out = NULL;
  ks_engine *e = calloc(1, sizeof *e);
  if (!e) return ks_fail(KS_ERR_NOMEM, "out of host memory");
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

ks_status ks_engine_eval(ks_engine *e, const int *tokens, int n, int pos0, float *logits,
                         int all_logits) {
  if (!e->use_cpu) return forward_eval(e->fwd, tokens, n, pos0, logits, all_logits);
  if (pos0 < 0 || n <= 0 || pos0 + n > e->n_ctx)
    return ks_fail(KS_ERR_ARG, "positions %d..%d are outside the context of %d tokens", pos0,
                   pos0 + n - 1, e->n_ctx);
  const int vocab = e->model.cfg.vocab_size;
  for (int i = 0; i < n; i++) {
    if (tokens[i] < 0 || tokens[i] >= vocab)
      return ks_fail(KS_ERR_ARG, "token id %d outside the vocabulary (%d)", tokens[i], vocab);
    const float *l = ref_forward(&e->ref, tokens[i], pos0 + i);
    if (logits && all_logits) memcpy(logits + (size_t)i * vocab, l, (size_t)vocab * 4);
    else if (logits && i == n - 1) memcpy(logits, l, (size_t)vocab * 4);
  }
  return KS_OK;
}

ks_status ks_engine_generate(ks_engine *e, const int *prompt, int n_prompt, int n_predict,
                             const ks_sampling *sp, ks_token_cb cb, void *user,
                             ks_gen_stats *stats) {
  ks_gen_stats s = {0};
  s.n_prompt = n_prompt;
  if (n_prompt <= 0) return ks_fail(KS_ERR_ARG, "empty prompt (it needs at least BOS)");
  if (n_prompt >= e->n_ctx)
    return ks_fail(KS_ERR_ARG, "prompt is %d tokens but the context holds %d", n_prompt, e->n_ctx);
  ks_sampler smp;
  ks_status st = sampler_init(&smp, e->model.cfg.vocab_size, sp);
  if (st) return st;
  ks_detok dt;
  detok_init(&dt);
  dt.prev = prompt[n_prompt - 1];
  double t0 = ks_now_sec();
  st = ks_engine_eval(e, prompt, n_prompt, 0, e->logits, 0);
  if (st) goto out;
  s.t_prefill = ks_now_sec() - t0;
  int pos = n_prompt;
  int eos = tokenizer_eos(e->tok), bos = tokenizer_bos(e->tok);
  double td = ks_now_sec();
  s.stop = KS_STOP_LENGTH;
  for (int i = 0; n_predict < 0 || i < n_predict; i++) {
    int tok = sampler_sample(&smp, e->logits);
    if (i == 0) s.ttft = ks_now_sec() - t0;
    if (tok == eos) { s.stop = KS_STOP_EOS; break; }
    if (tok == bos && e->model.format == KS_FMT_LLAMA2C) { s.stop = KS_STOP_BOS; break; }
    s.n_gen++;
    char text[256];
    size_t len = tokenizer_decode(e->tok, &dt, tok, text, sizeof text);
    if (cb && cb(user, tok, text, len)) { s.stop = KS_STOP_CALLER; break; }
    if (n_predict >= 0 && i + 1 >= n_predict) break;
    if (pos >= e->n_ctx) { s.stop = KS_STOP_CONTEXT; break; }
    st = ks_engine_eval(e, &tok, 1, pos, e->logits, 0);
    if (st) goto out;
    pos++;
  }
  s.t_decode = ks_now_sec() - td;
  {
    char tail[32];
    size_t len = detok_flush(&dt, tail, sizeof tail);
    if (len && cb) cb(user, -1, tail, len);
  }
out:
  sampler_deinit(&smp);
  if (stats) *stats = s;
  return st;
}
