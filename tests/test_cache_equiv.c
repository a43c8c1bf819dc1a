/* test_cache_equiv.c — the prompt cache on the GPU (every device), through the public API:
 *  - bit-for-bit equivalence: a request served from a cached prefix gives exactly the logits
 *    (same bits) and greedy tokens of the same request computed cold, for every split point
 *    between cached and new tokens, when the cache was written by a different prompt sharing the
 *    prefix, and for other prefill chunk sizes; with the default model and with stories260K;
 *  - sampling settings changed between requests still hit;
 *  - eviction under a small --cache-mb: hits fall, answers stay identical, memory stays bounded;
 *  - a request that cannot fit even alone gets a clear error; a pinned prefix survives pressure;
 *    prompts under --cache-min-tokens are not cached. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu.h"
#include "gputest.h"
#include "kvscope.h"
#include "testutil.h"

#define STEPS 4 /* greedy tokens compared per request */

static ks_engine *engine_ctx(const char *model, const char *tok, int batch, int cache_mb,
                             int min_tokens, int n_ctx);

typedef struct {
  float *logits; /* (STEPS + 1, vocab): the logits each sampled token came from, stop included */
  int toks[STEPS + 1], n;
  ks_usage u;
} outcome;

static ks_engine *engine(const char *model, const char *tok, int batch, int cache_mb, int min_tokens) {
  return engine_ctx(model, tok, batch, cache_mb, min_tokens, 256);
}

static ks_engine *engine_ctx(const char *model, const char *tok, int batch, int cache_mb,
                             int min_tokens, int n_ctx) {
  ks_engine_opts o = {0};
  o.model_path = model;
  o.tokenizer_path = tok;
  o.device = -1;
  o.batch = batch;
  o.n_ctx = n_ctx;
  o.cache.cache_mb = cache_mb;
  o.cache.min_tokens = min_tokens;
  ks_engine *e = NULL;
  if (gpu_count_devices() <= 0) ks_test_gpu(0); /* skips or fails with the reason */
  ks_status st = ks_engine_create(&e, &o);
  if (st) fprintf(stderr, "engine: %s\n", ks_last_error());
  REQUIRE(st == KS_OK);
  return e;
}

static int g_n_predict = STEPS; /* 0 while only filling the cache */

static void run(ks_engine *e, const int *t, int n, int no_cache, int cache_prefix, float temp,
                outcome *out) {
  const int V = ks_engine_model(e)->cfg.vocab_size;
  if (!out->logits) out->logits = malloc(sizeof(float) * V * (STEPS + 1));
  ks_request r = {0};
  r.tokens = t;
  r.n_tokens = n;
  r.n_predict = g_n_predict;
  r.sampling.temp = temp;
  r.sampling.top_k = 5;
  r.sampling.top_p = 1;
  r.sampling.seed = 3;
  r.no_cache = no_cache;
  r.cache_prefix = cache_prefix;
  ks_status st = ks_engine_submit(e, &r);
  if (st) fprintf(stderr, "submit: %s\n", ks_last_error());
  REQUIRE(st == KS_OK);
  out->n = 0;
  for (;;) {
    ks_event ev;
    REQUIRE(ks_engine_step(e, &ev) == KS_OK);
    if (ev.kind == KS_EV_TOKEN) {
      memcpy(out->logits + (size_t)out->n * V, ev.logits, sizeof(float) * V);
      out->toks[out->n++] = ev.token;
    } else if (ev.kind == KS_EV_DONE) {
      if (ev.logits) { /* the stop token's sampling counts too */
        memcpy(out->logits + (size_t)out->n * V, ev.logits, sizeof(float) * V);
        out->toks[out->n++] = -1;
      }
      out->u = ev.usage;
      break;
    }
  }
}

static int same(ks_engine *e, const outcome *a, const outcome *b) {
  const int V = ks_engine_model(e)->cfg.vocab_size;
  REQUIRE(a->n > 0); /* something was sampled, so there are logits to compare */
  return a->n == b->n && !memcmp(a->toks, b->toks, sizeof(int) * a->n) &&
         !memcmp(a->logits, b->logits, sizeof(float) * V * a->n);
}

static int *tokens_of(ks_engine *e, const char *text, int *n) {
  int *t = NULL;
  REQUIRE(ks_engine_tokenize(e, text, strlen(text), &t, n) == KS_OK);
  return t;
}

/* Every split point: warm the cache with prompt[:k] + a different tail, then serve the prompt. */
static void every_split(const char *name, const char *model, const char *tok, const char *text) {
  ks_engine *e = engine(model, tok, 0, 0, 0);
  int n;
  int *t = tokens_of(e, text, &n);
  outcome cold = {0}, hot = {0}, warm = {0};
  run(e, t, n, 1, 0, 0, &cold);
  CHECK_MSG(cold.n == STEPS, "%s: the prompt should give %d greedy tokens, got %d", name, STEPS, cold.n);
  int *w = malloc(sizeof(int) * (n + 8));
  int fails = 0, max_cached = 0;
  /* KVSCOPE_TEST_QUICK (the sanitizer pass in CI): only the split points around block edges */
  const int quick = getenv("KVSCOPE_TEST_QUICK") != NULL;
  int tested = 0;
  for (int k = 1; k <= n; k++) {
    int edge = k % 16;
    if (quick && !(edge <= 1 || edge == 15 || k >= n - 1)) continue;
    tested++;
    ks_engine_clear_cache(e);
    memcpy(w, t, sizeof(int) * k);
    for (int j = 0; j < 5; j++) w[k + j] = 3 + (t[k - 1] + 17 * j) % 200; /* another tail */
    g_n_predict = 0;
    run(e, w, k + 5, 0, 0, 0, &warm);
    g_n_predict = STEPS;
    run(e, t, n, 0, 0, 0, &hot);
    int expect = KS_MIN(k / 16, (n - 1) / 16) * 16;
    if (!same(e, &cold, &hot) || hot.u.cached_tokens != expect) {
      if (fails++ < 5)
        fprintf(stderr, "%s: split %d: cached %d (expected %d), identical %d\n", name, k,
                hot.u.cached_tokens, expect, same(e, &cold, &hot));
    }
    if (hot.u.cached_tokens > max_cached) max_cached = hot.u.cached_tokens;
  }
  CHECK_MSG(fails == 0, "%s: %d split points differ from the cold run", name, fails);
  /* served straight after itself: all full blocks but the one holding the last token */
  run(e, t, n, 0, 0, 0, &hot);
  CHECK(hot.u.cached_tokens == (n - 1) / 16 * 16);
  CHECK(same(e, &cold, &hot));
  /* sampling settings act after the logits: a sampled request still hits */
  outcome s1 = {0};
  run(e, t, n, 0, 0, 0.9f, &s1);
  CHECK_MSG(s1.u.cached_tokens == (n - 1) / 16 * 16, "temperature change missed the cache");
  {
    const int V = ks_engine_model(e)->cfg.vocab_size;
    int nd = 0;
    for (int i = 0; i < V; i++) nd += s1.logits[i] != cold.logits[i];
    CHECK_MSG(s1.n > 0 && nd == 0, "%s: first logits of the sampled request differ in %d of %d values "
              "(cached %d, %d tokens)", name, nd, V, s1.u.cached_tokens, s1.n);
  }
  printf("%s: %d-token prompt, %d split points: cached runs bit-identical to cold (up to %d cached); "
         "sampling change hits\n", name, n, tested, max_cached);
  /* another prefill chunk size: same bits */
  ks_engine *e7 = engine(model, tok, 7, 0, 0);
  outcome c7 = {0}, h7 = {0};
  run(e7, t, n, 1, 0, 0, &c7);
  CHECK_MSG(same(e, &cold, &c7), "%s: prefill chunks of 7 change the bits", name);
  run(e7, t, n, 0, 0, 0, &h7); /* fills the cache in chunks of 7 */
  run(e7, t, n, 0, 0, 0, &h7);
  CHECK(h7.u.cached_tokens > 0 && same(e, &cold, &h7));
  ks_engine_destroy(e7);
  free(c7.logits);
  free(h7.logits);
  free(w);
  free(t);
  free(cold.logits);
  free(hot.logits);
  free(warm.logits);
  free(s1.logits);
  ks_engine_destroy(e);
}

static void eviction(const char *model) {
  /* 1 MiB: 16 blocks of 64 KiB for the default model */
  ks_engine *e = engine_ctx(model, NULL, 0, 1, 0, 512);
  ks_cache_info ci;
  ks_engine_cache_info(e, &ci);
  REQUIRE(ci.block_bytes > 0);
  printf("small cache: %d blocks of %llu KiB\n", ci.n_blocks, (unsigned long long)ci.block_bytes / 1024);
  const char *texts[8] = {
      "A penny saved is a penny earned, but a dollar spent is a story told to friends.",
      "The early bird gets the worm, yet the second mouse gets the cheese in the trap.",
      "Never put off until tomorrow what you can do the day after tomorrow just as well.",
      "If at first you don't succeed, then skydiving is definitely not for you, my friend.",
      "Money can't buy happiness, but it can buy a boat, which is pretty close to it all.",
      "Behind every great man is a woman rolling her eyes at whatever he just said aloud.",
      "Knowledge is knowing a tomato is a fruit; wisdom is not putting it in a fruit salad.",
      "I used to think I was indecisive, but now I am not too sure about that at all, ok.",
  };
  outcome first[8] = {{0}}, again = {0};
  int *t[8], n[8];
  for (int i = 0; i < 8; i++) {
    char three[1024];
    snprintf(three, sizeof three, "%s %s %s", texts[i], texts[(i + 1) % 8], texts[(i + 2) % 8]);
    t[i] = tokens_of(e, three, &n[i]); /* ~60 tokens: 3 full blocks each */
    run(e, t[i], n[i], 0, 0, 0, &first[i]);
    ks_engine_cache_info(e, &ci);
    CHECK(ci.used == 0 && ci.cached + ci.free_blocks <= ci.n_blocks);
  }
  ks_engine_cache_info(e, &ci);
  CHECK_MSG(ci.evictions > 0, "8 prompts in 16 blocks evicted nothing");
  int hits_small = 0;
  for (int i = 0; i < 8; i++) {
    run(e, t[i], n[i], 0, 0, 0, &again);
    hits_small += again.u.cached_tokens;
    CHECK_MSG(same(e, &first[i], &again), "prompt %d: answer changed after eviction", i);
  }
  ks_engine *big = engine(model, NULL, 0, 64, 0);
  int hits_big = 0;
  for (int i = 0; i < 8; i++) run(big, t[i], n[i], 0, 0, 0, &again);
  for (int i = 0; i < 8; i++) {
    run(big, t[i], n[i], 0, 0, 0, &again);
    hits_big += again.u.cached_tokens;
    CHECK(same(e, &first[i], &again));
  }
  printf("eviction: %llu evictions; cached tokens on a second pass: %d with 1 MiB, %d with 64 MiB; "
         "answers identical\n", (unsigned long long)ci.evictions, hits_small, hits_big);
  CHECK(hits_small < hits_big);
  /* a request that cannot fit even alone */
  ks_request r = {0};
  r.tokens = t[0];
  r.n_tokens = n[0];
  r.n_predict = -1; /* the whole 512-token context: 32 blocks of the 16 there are */
  ks_status st = ks_engine_submit(e, &r);
  CHECK(st == KS_ERR_CACHE);
  CHECK_MSG(strstr(ks_last_error(), "--cache-mb") != NULL, "message: %s", ks_last_error());
  printf("too-small budget: %s\n", ks_last_error());
  /* a pinned (explicitly marked) prefix survives pressure that evicts everything else */
  ks_engine_clear_cache(e);
  int *p = tokens_of(e, "System: you are a terse fortune teller who answers in one short line only. User: hi", &n[0]);
  run(e, p, n[0], 0, 32, 0, &again);
  for (int i = 1; i < 8; i++) run(e, t[i], n[i], 0, 0, 0, &again);
  run(e, p, n[0], 0, 32, 0, &again);
  CHECK_MSG(again.u.cached_tokens >= 32, "pinned prefix evicted (cached %d)", again.u.cached_tokens);
  printf("pinned 32-token prefix still cached after 7 other prompts: %d tokens hit\n", again.u.cached_tokens);
  free(p);
  for (int i = 0; i < 8; i++) {
    free(t[i]);
    free(first[i].logits);
  }
  free(again.logits);
  ks_engine_destroy(big);
  ks_engine_destroy(e);
  /* --cache-min-tokens: short prompts are neither looked up nor cached */
  ks_engine *m = engine(model, NULL, 0, 0, 1000);
  int nn;
  int *s = tokens_of(m, texts[0], &nn);
  outcome o = {0};
  run(m, s, nn, 0, 0, 0, &o);
  run(m, s, nn, 0, 0, 0, &o);
  CHECK(o.u.cached_tokens == 0 && o.u.cache_creation_tokens == 0);
  free(s);
  free(o.logits);
  ks_engine_destroy(m);
}

int main(void) {
  char tiny[4096];
  snprintf(tiny, sizeof tiny, "%s/models/kvscope-tiny.gguf", KS_SOURCE_DIR);
  every_split("kvscope-tiny", tiny, NULL,
              "Q: Why did the chicken cross the road? A: To get to the other side, of course, "
              "where the grass is always greener and the jokes are always");
  eviction(tiny);
  const char *sm = ks_shared_file("models/stories260K.bin");
  const char *st = ks_shared_file("models/tok512.bin");
  every_split("stories260K", sm, st,
              "Once upon a time, there was a little girl named Lily. She loved to play outside in "
              "the park with her friends and her dog.");
  CHECK_MSG(gpu_validation_count() == 0, "%llu validation messages",
            (unsigned long long)gpu_validation_count());
  /* the engines own their GPUs: what each still held when it was destroyed is summed here */
  CHECK_MSG(gpu_leaked_allocations() == 0, "%lld device allocations alive at gpu_destroy",
            (long long)gpu_leaked_allocations());
  return ks_test_done("test_cache_equiv");
}
