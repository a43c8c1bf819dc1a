/* test_forward_gpu.c — the whole model on the GPU (every Vulkan device present) against the
 * independent reference outputs of stories260K and against the CPU reference:
 *  - batched prefill + replayed decode reproduce run.c's greedy tokens and first-8 logits;
 *  - prefill chunk size and the block table's layout change no bit of any logit (the batch
 *    invariance the prompt cache relies on);
 *  - a decode step writes exactly one new K/V row per layer and leaves every other row alone;
 *  - the GGUF path: converted F32 gives the same tokens, F16/Q8_0/Q4_0 match the CPU reference
 *    on the same weights and stay within the error their quantisation explains. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "forward.h"
#include "gputest.h"
#include "ref_cpu.h"
#include "testutil.h"

#define CTX 256

static int argmax(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

/* Feeds the reference prompt in one batch, then greedy-decodes; checks logits of the first
 * positions and the whole token sequence. */
static void golden(ks_forward *f, const ks_ref_once *r, const char *what) {
  const int V = f->m->cfg.vocab_size;
  float *lg = malloc(sizeof(float) * V * r->n_prompt);
  REQUIRE(lg);
  REQUIRE(forward_eval(f, r->prompt, r->n_prompt, 0, lg, 1) == KS_OK);
  double worst = 0;
  for (int p = 0; p < r->n_prompt && p < r->n_logit_pos; p++)
    worst = fmax(worst, ks_max_rel_err(lg + (size_t)p * V, r->logits + (size_t)p * V, V));
  int seq[1024], n = 0;
  for (int i = 0; i < r->n_prompt; i++) seq[n++] = r->prompt[i];
  float *cur = malloc(sizeof(float) * V);
  memcpy(cur, lg + (size_t)(r->n_prompt - 1) * V, sizeof(float) * V);
  int pos = r->n_prompt;
  for (;;) { /* run.c -n 200: the token after position 199 is the last one sampled */
    int next = argmax(cur, V);
    seq[n++] = next;
    if (next == 1 || pos >= 200) break;
    REQUIRE(forward_eval(f, &next, 1, pos, cur, 0) == KS_OK);
    if (pos < r->n_logit_pos)
      worst = fmax(worst, ks_max_rel_err(cur, r->logits + (size_t)pos * V, V));
    pos++;
  }
  int bad = -1;
  for (int i = 0; i < KS_MAX(n, r->n_all); i++)
    if (i >= n || i >= r->n_all || seq[i] != r->all[i]) { bad = i; break; }
  printf("%s: %d tokens, first mismatch %d, worst relative logit error (first %d positions) %.3g\n",
         what, n, bad, r->n_logit_pos, worst);
  CHECK_MSG(bad < 0, "%s: greedy tokens differ from run.c at index %d", what, bad);
  CHECK_MSG(worst <= ks_test_model_bound(), "%s: logit error %.3g > %.0e", what, worst,
            ks_test_model_bound());
  free(lg);
  free(cur);
}

/* Logits for every position of seq (n tokens) with the given batch size and block table; with
 * `decode`, token by token as decode steps (the replayed decode command buffer). */
static float *all_logits(ks_gpu *g, const ks_model *m, const int *seq, int n, int batch,
                         const uint32_t *table, int decode) {
  ks_forward *f;
  REQUIRE(forward_create(&f, g, m, CTX, batch, 0) == KS_OK);
  if (table) REQUIRE(forward_set_table(f, table, CTX / KS_KV_BLOCK) == KS_OK);
  const int V = m->cfg.vocab_size;
  float *lg = malloc(sizeof(float) * V * n);
  REQUIRE(lg);
  if (!decode) { /* a prompt: chunks of `batch` through the prefill path, even chunks of 1 */
    REQUIRE(forward_eval(f, seq, n, 0, lg, 1) == KS_OK);
    CHECK(f->counters.decode_records == 0 && f->counters.decode_replays == 0);
  } else {
    for (int p = 0; p < n; p++) REQUIRE(forward_eval(f, &seq[p], 1, p, lg + (size_t)p * V, 0) == KS_OK);
    /* decode is recorded again once, where attention starts to split over the context */
    CHECK(f->counters.decode_records == 1u + (n > f->split_from) &&
          f->counters.decode_records + f->counters.decode_replays == (uint64_t)n);
  }
  forward_destroy(f);
  return lg;
}

static void batch_invariance(ks_gpu *g, const ks_model *m, const ks_ref_once *r) {
  int n = r->n_all - 1;
  const size_t bytes = sizeof(float) * m->cfg.vocab_size * n;
  float *base = all_logits(g, m, r->all, n, 64, NULL, 0);
  int batches[] = {1, 7, 200};
  for (size_t i = 0; i < KS_ARRAY_LEN(batches); i++) {
    float *other = all_logits(g, m, r->all, n, batches[i], NULL, 0);
    CHECK_MSG(memcmp(base, other, bytes) == 0, "batch %d changes logits bits (max rel %.3g)",
              batches[i], ks_max_rel_err(other, base, bytes / 4));
    free(other);
  }
  /* decode steps: the same bits, except under gpu_coopmat_mode 3 (prompts on the cooperative-
   * matrix kernels, decode steps on the portable ones), where they must stay within the
   * model bound of the prompt path */
  float *dec = all_logits(g, m, r->all, n, 64, NULL, 1);
  if (gpu_coopmat_mode(g) == 3) {
    double e = ks_max_rel_err(dec, base, bytes / 4);
    printf("decode steps vs prompt path (cooperative matrix for prompts only): max rel %.3g\n", e);
    CHECK_MSG(e <= ks_test_model_bound(), "decode steps differ from the prompt path by %.3g", e);
  } else {
    CHECK_MSG(memcmp(base, dec, bytes) == 0, "decode steps change logits bits (max rel %.3g)",
              ks_max_rel_err(dec, base, bytes / 4));
  }
  free(dec);
  /* a scrambled block table (paged K/V) must not change a bit either */
  uint32_t table[CTX / KS_KV_BLOCK];
  for (int i = 0; i < CTX / KS_KV_BLOCK; i++) table[i] = (uint32_t)((i * 7 + 3) % (CTX / KS_KV_BLOCK));
  float *paged = all_logits(g, m, r->all, n, 64, table, 0);
  CHECK_MSG(memcmp(base, paged, bytes) == 0, "scrambled block table changes logits");
  free(paged);
  free(base);
  printf("batch sizes 1/7/64/200%s and a scrambled block table: identical logits over %d positions\n",
         gpu_coopmat_mode(g) == 3 ? "" : ", decode steps", n);
}

/* One decode step writes one K/V row per layer (the new position's) and nothing else. */
static void decode_writes_one_row(ks_gpu *g, const ks_model *m, const ks_ref_once *r) {
  ks_forward *f;
  REQUIRE(forward_create(&f, g, m, CTX, 64, 0) == KS_OK);
  const int kvd = m->cfg.n_kv_head * m->cfg.head_dim;
  const uint64_t row = (uint64_t)kvd * 4, pool = f->k_pool[0].size;
  for (int l = 0; l < m->cfg.n_layer; l++) {
    REQUIRE(gpu_fill_u32(g, &f->k_pool[l], 0, pool, 0x7fc00000u) == KS_OK);
    REQUIRE(gpu_fill_u32(g, &f->v_pool[l], 0, pool, 0x7fc00000u) == KS_OK);
  }
  int t = 20;
  REQUIRE(forward_eval(f, r->all, t, 0, NULL, 0) == KS_OK);
  const int L2 = 2 * m->cfg.n_layer;
  unsigned char *before = malloc(pool * L2), *after = malloc(pool * L2);
  REQUIRE(before && after);
  uint64_t written = f->counters.kv_rows_written, attended = f->counters.kv_rows_attended;
  for (int step = 0; step < 3; step++, t++) {
    for (int i = 0; i < L2; i++)
      REQUIRE(gpu_download(g, i & 1 ? &f->v_pool[i / 2] : &f->k_pool[i / 2], 0, before + pool * i, pool) == KS_OK);
    REQUIRE(forward_eval(f, &r->all[t], 1, t, NULL, 0) == KS_OK);
    for (int i = 0; i < L2; i++)
      REQUIRE(gpu_download(g, i & 1 ? &f->v_pool[i / 2] : &f->k_pool[i / 2], 0, after + pool * i, pool) == KS_OK);
    int changed = 0, changed_other = 0;
    for (int i = 0; i < L2; i++)
      for (uint64_t p = 0; p < pool / row; p++) {
        int diff = memcmp(before + pool * i + p * row, after + pool * i + p * row, row) != 0;
        if (diff && p == (uint64_t)t) changed++;
        else if (diff) changed_other++;
      }
    CHECK_MSG(changed == L2 && changed_other == 0,
              "decode at position %d: new rows written %d of %d, other rows changed %d", t, changed, L2,
              changed_other);
  }
  CHECK(f->counters.kv_rows_written - written == 3);
  /* steps at positions 20, 21, 22 attend 21 + 22 + 23 cached rows */
  CHECK(f->counters.kv_rows_attended - attended == 21 + 22 + 23);
  CHECK(f->counters.decode_records == 1 && f->counters.decode_replays == 2);
  printf("decode: 1 new K/V row per step, %llu rows attended over 3 steps, recorded once, replayed %llu times\n",
         (unsigned long long)(f->counters.kv_rows_attended - attended),
         (unsigned long long)f->counters.decode_replays);
  free(before);
  free(after);
  forward_destroy(f);
}

/* Decode with attention split over the context (every position) and unsplit (never): the same
 * logits bit for bit, over every token of the reference sequence. */
static void decode_split_same_bits(ks_gpu *g, const ks_model *m, const ks_ref_once *r) {
  const int vocab = m->cfg.vocab_size, n = KS_MIN(r->n_all, CTX);
  float *a = malloc((size_t)vocab * 4), *b = malloc((size_t)vocab * 4);
  REQUIRE(a && b);
  ks_forward *fs, *fu;
  REQUIRE(forward_create(&fs, g, m, CTX, 64, 0) == KS_OK);
  REQUIRE(forward_create(&fu, g, m, CTX, 64, 0) == KS_OK);
  fs->split_from = 0;
  fu->split_from = CTX + 1;
  int diff = 0;
  for (int t = 0; t < n; t++) {
    REQUIRE(forward_eval(fs, &r->all[t], 1, t, a, 0) == KS_OK);
    REQUIRE(forward_eval(fu, &r->all[t], 1, t, b, 0) == KS_OK);
    diff += memcmp(a, b, (size_t)vocab * 4) != 0;
  }
  CHECK_MSG(diff == 0, "attention split over the context changed the logits at %d of %d positions",
            diff, n);
  CHECK(fs->decode_split == 1 && fu->decode_split == 0);
  printf("decode with attention split over the context vs not: identical logits over %d positions\n",
         n);
  forward_destroy(fs);
  forward_destroy(fu);
  free(a);
  free(b);
}

/* GGUF: convert to each type, load, run on the GPU, compare. */
static void gguf_types(ks_gpu *g, const ks_model *m, const char *tok_path, const ks_ref_once *r,
                       const char *dir) {
  struct { ks_type t; double bound_vs_f32; } types[] = {
      {KS_TYPE_F32, 0}, {KS_TYPE_F16, 5e-3}, {KS_TYPE_Q8_0, 3e-2}, {KS_TYPE_Q4_0, 0.6}};
  /* Bounds vs F32 (max |error| / max |logit|) measured on this 64-wide model: F16 6e-4,
   * Q8_0 1.4e-2, Q4_0 0.45 -- 4-bit weights move logits a lot in so small a model; the
   * kernels themselves are held to 1e-4 against the CPU reference on the same weights. */
  const int V = m->cfg.vocab_size;
  int n = 40;
  float *lf32 = NULL;
  for (size_t i = 0; i < KS_ARRAY_LEN(types); i++) {
    char path[4200];
    snprintf(path, sizeof path, "%s/stories260K-%s.gguf", dir, ks_type_name(types[i].t));
    REQUIRE(convert_to_gguf(m, tok_path, path, types[i].t) == KS_OK);
    ks_model q;
    ks_status st = model_load(&q, path);
    if (st) fprintf(stderr, "%s\n", ks_last_error());
    REQUIRE(st == KS_OK);
    CHECK(q.format == KS_FMT_GGUF && q.layers[0].wq.type == types[i].t);
    ks_forward *f;
    REQUIRE(forward_create(&f, g, &q, CTX, 64, 0) == KS_OK);
    float *lg = malloc(sizeof(float) * V * n);
    REQUIRE(forward_eval(f, r->all, n, 0, lg, 1) == KS_OK);
    /* the CPU reference on the same (quantised) weights */
    ref_state s;
    REQUIRE(ref_state_init(&s, &q, CTX) == KS_OK);
    double worst_ref = 0;
    for (int p = 0; p < n; p++)
      worst_ref = fmax(worst_ref, ks_max_rel_err(lg + (size_t)p * V, ref_forward(&s, r->all[p], p), V));
    ref_state_deinit(&s);
    CHECK_MSG(worst_ref <= ks_test_model_bound(), "%s: GPU vs CPU reference %.3g > %.0e",
              ks_type_name(types[i].t), worst_ref, ks_test_model_bound());
    if (types[i].t == KS_TYPE_F32) {
      /* same weights as the .bin: the same greedy tokens as run.c */
      forward_destroy(f);
      REQUIRE(forward_create(&f, g, &q, CTX, 64, 0) == KS_OK);
      golden(f, r, "GGUF F32 on the GPU");
      lf32 = lg;
      lg = NULL;
      printf("F32 GGUF: GPU vs CPU reference %.3g\n", worst_ref);
    } else {
      double worst = 0;
      int agree = 0;
      for (int p = 0; p < n; p++) {
        worst = fmax(worst, ks_max_rel_err(lg + (size_t)p * V, lf32 + (size_t)p * V, V));
        agree += argmax(lg + (size_t)p * V, V) == argmax(lf32 + (size_t)p * V, V);
      }
      printf("%s GGUF: GPU vs CPU reference %.3g; vs F32 max relative logit error %.3g (bound %.3g), "
             "top-1 agreement %d/%d\n", ks_type_name(types[i].t), worst_ref, worst,
             types[i].bound_vs_f32, agree, n);
      CHECK_MSG(worst <= types[i].bound_vs_f32, "%s: error vs F32 %.3g over the bound %.3g",
                ks_type_name(types[i].t), worst, types[i].bound_vs_f32);
    }
    free(lg);
    forward_destroy(f);
    model_deinit(&q);
  }
  free(lf32);
}

int main(void) {
  ks_test_seed();
  const char *mp = ks_shared_file("models/stories260K.bin");
  const char *tp = ks_shared_file("models/tok512.bin");
  ks_model m;
  REQUIRE(model_load(&m, mp) == KS_OK);
  ks_ref_once r;
  ks_read_ref_once(&r, m.cfg.vocab_size);
  int n_dev = gpu_count_devices();
  if (n_dev <= 0) n_dev = 1; /* ks_test_gpu explains */
  for (int d = 0; d < n_dev; d++) {
    ks_gpu *g = ks_test_gpu(d);
    printf("== device %d: %s\n", d, gpu_info(g)->name);
    ks_forward *f;
    REQUIRE(forward_create(&f, g, &m, CTX, 64, 0) == KS_OK);
    golden(f, &r, "stories260K.bin on the GPU");
    forward_destroy(f);
    batch_invariance(g, &m, &r);
    decode_writes_one_row(g, &m, &r);
    decode_split_same_bits(g, &m, &r);
    gguf_types(g, &m, tp, &r, ks_test_tmpdir("forward_gpu"));
    CHECK_MSG(gpu_live_allocations(g) == 0, "%lld device allocations leaked",
              (long long)gpu_live_allocations(g));
    gpu_destroy(g);
  }
  CHECK_MSG(gpu_validation_count() == 0, "%llu validation messages",
            (unsigned long long)gpu_validation_count());
  ks_ref_once_free(&r);
  model_deinit(&m);
  return ks_test_done("test_forward_gpu");
}
