/* bench_prefix.c — `kvscope bench --prefix`: what the prompt cache buys. For prompts from 128
 * tokens up to the context, a shared prefix and a short new suffix: time to first token computed
 * cold versus with everything but the suffix served from the cache, and the cache's own cost at a
 * 0% hit rate (lookup time, and TTFT with the cache on versus off). Medians over repetitions.
 * What it is not: a correctness check (test_cache_equiv proves cached == cold bit for bit). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_prefix.h"
#include "kvscope.h"

typedef struct {
  int len, cached;
  double cold_ms, hot_ms, miss_ms, miss_nocache_ms, lookup_ms;
} prefix_row;

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static int rand_token(int vocab) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return 3 + (int)(g_rng % (uint64_t)(vocab - 3)); /* never <unk>, BOS, EOS */
}

/* Submits tokens and steps until the first token (or the end); returns the usage. */
static ks_status first_token(ks_engine *e, const int *t, int n, int n_predict, int no_cache,
                             ks_usage *u) {
  ks_request r = {0};
  r.tokens = t;
  r.n_tokens = n;
  r.n_predict = n_predict;
  r.sampling.temp = 0;
  r.sampling.top_p = 1;
  r.no_cache = no_cache;
  ks_status st = ks_engine_submit(e, &r);
  if (st) return st;
  for (;;) {
    ks_event ev;
    st = ks_engine_step(e, &ev);
    if (st) return st;
    if (ev.kind == KS_EV_DONE) {
      *u = ev.usage;
      return KS_OK;
    }
  }
}

int bench_prefix_run(ks_engine *e, int reps, int suffix, int json, FILE *out) {
  const int vocab = ks_engine_model(e)->cfg.vocab_size;
  const int n_ctx = ks_engine_n_ctx(e);
  int lens[32], n_lens = 0;
  for (int L = 128; L < n_ctx && n_lens < 30; L *= 2) lens[n_lens++] = L;
  if (n_lens == 0 || lens[n_lens - 1] != n_ctx - 1) lens[n_lens++] = n_ctx - 1; /* the context */
  if (reps < 1) reps = 1;
  prefix_row rows[32];
  int *t = malloc(sizeof(int) * (size_t)n_ctx);
  double *v = malloc(sizeof(double) * (size_t)reps * 5);
  if (!t || !v) {
    free(t);
    free(v);
    fprintf(stderr, "kvscope bench: out of memory\n");
    return 1;
  }
  for (int li = 0; li < n_lens; li++) {
    const int L = lens[li];
    const int sfx = suffix < L - 1 ? suffix : L / 2;
    prefix_row *row = &rows[li];
    memset(row, 0, sizeof *row);
    row->len = L;
    double *cold = v, *hot = v + reps, *miss = v + 2 * reps, *miss_nc = v + 3 * reps, *look = v + 4 * reps;
    for (int r = 0; r < reps; r++) {
      ks_usage u;
      ks_engine_clear_cache(e);
      t[0] = 1;
      for (int i = 1; i < L; i++) t[i] = rand_token(vocab);
      /* cold: the whole prompt computed, nothing cached */
      if (first_token(e, t, L, 1, 1, &u)) goto fail;
      cold[r] = u.ttft * 1e3;
      /* a first request writes the prefix (with another suffix) into the cache */
      if (first_token(e, t, L, 0, 0, &u)) goto fail;
      /* the measured request: same prefix, a new suffix */
      for (int i = L - sfx; i < L; i++) t[i] = rand_token(vocab);
      if (first_token(e, t, L, 1, 0, &u)) goto fail;
      hot[r] = u.ttft * 1e3;
      row->cached = u.cached_tokens;
      /* 0% hit rate: a prompt sharing nothing, cache on (lookup + indexing) and off */
      for (int i = 1; i < L; i++) t[i] = rand_token(vocab);
      if (first_token(e, t, L, 1, 0, &u)) goto fail;
      miss[r] = u.ttft * 1e3;
      look[r] = u.t_lookup * 1e3;
      for (int i = 1; i < L; i++) t[i] = rand_token(vocab);
      if (first_token(e, t, L, 1, 1, &u)) goto fail;
      miss_nc[r] = u.ttft * 1e3;
    }
    row->cold_ms = median(cold, reps);
    row->hot_ms = median(hot, reps);
    row->miss_ms = median(miss, reps);
    row->miss_nocache_ms = median(miss_nc, reps);
    row->lookup_ms = median(look, reps);
  }
  if (json) {
    fprintf(out, "{\"prefix\":{\"device\":\"%s\",\"suffix_tokens\":%d,\"repetitions\":%d,\"rows\":[",
            ks_engine_device_name(e), suffix, reps);
    for (int i = 0; i < n_lens; i++)
      fprintf(out, "%s{\"prompt_tokens\":%d,\"cached_tokens\":%d,\"ttft_cold_ms\":%.3f,"
              "\"ttft_cached_ms\":%.3f,\"cached_over_cold\":%.5f,\"ttft_miss_cache_on_ms\":%.3f,"
              "\"ttft_miss_cache_off_ms\":%.3f,\"lookup_ms\":%.4f,\"lookup_over_ttft\":%.6f}",
              i ? "," : "", rows[i].len, rows[i].cached, rows[i].cold_ms, rows[i].hot_ms,
              rows[i].hot_ms / rows[i].cold_ms, rows[i].miss_ms, rows[i].miss_nocache_ms,
              rows[i].lookup_ms, rows[i].lookup_ms / rows[i].miss_ms);
    fprintf(out, "]}}\n");
  } else {
    fprintf(out, "prompt cache: time to first token, cold vs all but the last %d tokens cached "
            "(%s, median of %d)\n", suffix, ks_engine_device_name(e), reps);
    fprintf(out, "| prompt | cached | TTFT cold ms | TTFT cached ms | cached/cold | 0%% hit: cache on ms | "
            "cache off ms | lookup ms | lookup/TTFT |\n|---|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < n_lens; i++)
      fprintf(out, "| %d | %d | %.2f | %.2f | %.1f%% | %.2f | %.2f | %.4f | %.3f%% |\n", rows[i].len,
              rows[i].cached, rows[i].cold_ms, rows[i].hot_ms, 100 * rows[i].hot_ms / rows[i].cold_ms,
              rows[i].miss_ms, rows[i].miss_nocache_ms, rows[i].lookup_ms,
              100 * rows[i].lookup_ms / rows[i].miss_ms);
  }
  free(t);
  free(v);
  return 0;
fail:
  fprintf(stderr, "kvscope bench --prefix: %s\n", ks_last_error());
  free(t);
  free(v);
  return 1;
}

int bench_prefix_main(int argc, char **argv) {
  ks_engine_opts o = {0};
  o.device = -1;
  int reps = 3, suffix = 32, json = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int *dst = NULL;
    if (!strcmp(a, "--prefix")) continue;
    if (!strcmp(a, "--json")) { json = 1; continue; }
    if (!strcmp(a, "-m") || !strcmp(a, "--model") || !strcmp(a, "-z") || !strcmp(a, "--tokenizer")) {
      if (!v) goto needs;
      if (a[1] == 'm' || a[2] == 'm') o.model_path = v;
      else o.tokenizer_path = v;
      i++;
      continue;
    }
    if (!strcmp(a, "-r") || !strcmp(a, "--repetitions")) dst = &reps;
    else if (!strcmp(a, "--suffix")) dst = &suffix;
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) dst = &o.n_ctx;
    else if (!strcmp(a, "--device")) dst = &o.device;
    else if (!strcmp(a, "--cache-mb")) dst = &o.cache.cache_mb;
    else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) dst = &o.batch;
    else {
      fprintf(stderr, "kvscope bench --prefix: unknown option '%s' (it takes -m -z -c -r -b "
              "--suffix --cache-mb --device --json)\n", a);
      return 2;
    }
    if (!v) goto needs;
    char *end;
    long x = strtol(v, &end, 10);
    if (*end || end == v || x < 0 || x > 1 << 24) {
      fprintf(stderr, "kvscope bench --prefix: bad value '%s' for %s\n", v, a);
      return 2;
    }
    *dst = (int)x;
    i++;
    continue;
  needs:
    fprintf(stderr, "kvscope bench --prefix: option %s needs a value\n", a);
    return 2;
  }
  if (suffix < 1) suffix = 1;
  if (!o.model_path) o.model_path = ks_default_model_path();
  ks_engine *e;
  if (ks_engine_create(&e, &o)) {
    fprintf(stderr, "kvscope bench --prefix: cannot start the engine: %s\n", ks_last_error());
    return 1;
  }
  int rc = bench_prefix_run(e, reps, suffix, json, stdout);
  ks_engine_destroy(e);
  return rc;
}
