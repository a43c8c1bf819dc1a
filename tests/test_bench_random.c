/* test_bench_random.c — the benchmark models of `kvscope convert --random` and bench's counting.
 * The shape table holds the published configurations; a tiny random model is written, read back
 * by the GGUF reader (sizes, offsets, keys) and the model loader, its weights checked for range
 * and spread, its bytes for determinism (same seed and any thread count: same file; another
 * seed: another file), its synthetic vocabulary for usability (unique pieces, byte fallback,
 * text round trip), and it runs on the GPU with the same logits as the CPU reference, also in a
 * layer of the real TinyLlama width (Q4_0). Then bench_decode_bytes / bench_prefill_flops are
 * compared with counts made here from the loaded tensors' shapes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "convert.h"
#include "gguf.h"
#include "gputest.h"
#include "kvscope.h"
#include "model.h"
#include "quant.h"
#include "testutil.h"
#include "tokenizer.h"

static void check_shapes(void) {
  static const struct {
    const char *name;
    int dim, ffn, layers, heads, kv, vocab, tied;
  } want[] = {
      {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 0},
      {"llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, 1},
      {"qwen2.5-0.5b", 896, 4864, 24, 14, 2, 151936, 1},
      {"llama-2-7b", 4096, 11008, 32, 32, 32, 32000, 0},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    ks_random_shape s;
    ks_status st = convert_random_shape(want[i].name, &s);
    CHECK_MSG(st == KS_OK, "%s: %s", want[i].name, ks_last_error());
    const ks_config *c = &s.cfg;
    CHECK_MSG(c->dim == want[i].dim && c->hidden_dim == want[i].ffn && c->n_layer == want[i].layers &&
                  c->n_head == want[i].heads && c->n_kv_head == want[i].kv &&
                  c->vocab_size == want[i].vocab && s.tied_output == want[i].tied &&
                  c->head_dim == c->dim / c->n_head && !strcmp(c->arch, "llama"),
              "%s: dim %d ffn %d layers %d heads %d kv %d vocab %d tied %d", want[i].name, c->dim,
              c->hidden_dim, c->n_layer, c->n_head, c->n_kv_head, c->vocab_size, s.tied_output);
  }
  ks_random_shape s;
  CHECK(convert_random_shape("TinyLlama-1.1B:layers=2,ctx=512,tied=1", &s) == KS_OK);
  CHECK(s.cfg.n_layer == 2 && s.cfg.n_ctx == 512 && s.tied_output == 1 && s.cfg.dim == 2048);
  CHECK(convert_random_shape("tinyllama-1.1b", &s) == KS_OK && s.cfg.n_ctx == 2048);
  CHECK(convert_random_shape("llama-2-7b", &s) == KS_OK && s.cfg.n_ctx == 4096);
  /* refusals name the problem */
  CHECK(convert_random_shape("gpt-5", &s) == KS_ERR_ARG && strstr(ks_last_error(), "unknown shape"));
  CHECK(convert_random_shape("tiny:depth=3", &s) == KS_ERR_ARG && strstr(ks_last_error(), "depth=3"));
  CHECK(convert_random_shape("tiny:layers=0", &s) == KS_ERR_ARG);
  CHECK(convert_random_shape("tiny:layers=x", &s) == KS_ERR_ARG);
  CHECK(convert_random_shape("tiny:heads=3", &s) == KS_ERR_ARG && strstr(ks_last_error(), "multiple"));
  CHECK(convert_random_shape("tiny:vocab=100", &s) == KS_ERR_ARG && strstr(ks_last_error(), "vocab"));
  CHECK(convert_random_gguf("tiny", "/nonexistent-dir/x.gguf", KS_TYPE_F16, 1, 1, NULL) == KS_ERR_IO);
  CHECK(convert_random_gguf("tiny", "/tmp/x.gguf", KS_TYPE_BF16, 1, 1, NULL) == KS_ERR_ARG);
}

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  REQUIRE(f);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *p = malloc((size_t)len + 1);
  REQUIRE(p && fread(p, 1, (size_t)len, f) == (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return p;
}

static int same_file(const char *a, const char *b) {
  size_t na, nb;
  char *x = slurp(a, &na), *y = slurp(b, &nb);
  int same = na == nb && !memcmp(x, y, na);
  free(x);
  free(y);
  return same;
}

/* Every matrix within +-1/sqrt(row length) (plus the type's rounding), mean ~0, spread of a
 * uniform distribution (std = bound / sqrt(3)); rows differ; norms all 1. */
static void check_weights(const ks_model *m, double tol) {
  const ks_tensor *mats[] = {&m->tok_embd, &m->layers[0].wq, &m->layers[0].w_down, &m->output};
  for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
    const ks_tensor *t = mats[i];
    int64_t cols = t->ne[0], rows = t->ne[1];
    float *row = malloc((size_t)cols * sizeof *row), *row0 = malloc((size_t)cols * sizeof *row0);
    REQUIRE(row && row0);
    double bound = 1.0 / sqrt((double)cols), s1 = 0, s2 = 0, amax = 0;
    size_t rb = ks_type_row_bytes(t->type, cols), n = 0;
    int same_rows = 0;
    for (int64_t r = 0; r < rows; r++) {
      ks_dequant_row(t->type, (const unsigned char *)t->data + (size_t)r * rb, row, cols);
      if (r == 0) memcpy(row0, row, (size_t)cols * sizeof *row);
      else if (!memcmp(row0, row, (size_t)cols * sizeof *row)) same_rows++;
      for (int64_t j = 0; j < cols; j++, n++) {
        s1 += row[j];
        s2 += (double)row[j] * row[j];
        amax = fmax(amax, fabs(row[j]));
      }
    }
    double mean = s1 / n, sd = sqrt(s2 / n - mean * mean);
    CHECK_MSG(amax <= bound * (1 + 1e-3), "tensor %zu: |w| up to %g, bound %g", i, amax, bound);
    CHECK_MSG(fabs(mean) < 0.05 * bound, "tensor %zu: mean %g (bound %g)", i, mean, bound);
    CHECK_MSG(fabs(sd / (bound / sqrt(3.0)) - 1) < tol, "tensor %zu: std %g, uniform's %g", i, sd,
              bound / sqrt(3.0));
    CHECK_MSG(same_rows == 0, "tensor %zu: %d rows equal row 0", i, same_rows);
    free(row);
    free(row0);
  }
  for (int l = 0; l < m->cfg.n_layer; l++) {
    const float *a = m->layers[l].attn_norm.data, *b = m->layers[l].ffn_norm.data;
    for (int j = 0; j < m->cfg.dim; j++) CHECK(a[j] == 1.0f && b[j] == 1.0f);
  }
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void check_vocab(const char *path, int vocab) {
  ks_gguf *g;
  REQUIRE(gguf_open(&g, path) == KS_OK);
  CHECK(!strcmp(gguf_get_str(g, "general.architecture"), "llama"));
  CHECK(!strcmp(gguf_get_str(g, "tokenizer.ggml.model"), "llama"));
  CHECK(gguf_get_int(g, "llama.vocab_size", -1) == vocab);
  CHECK(gguf_get_int(g, "tokenizer.ggml.bos_token_id", -1) == 1);
  /* pieces are distinct (llama.cpp maps piece -> id) */
  char **p = calloc((size_t)vocab, sizeof *p);
  REQUIRE(p);
  for (int i = 0; i < vocab; i++) {
    size_t len;
    const char *s = gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &len);
    REQUIRE(s);
    p[i] = strndup(s, len);
  }
  qsort(p, (size_t)vocab, sizeof *p, cmp_str);
  int dups = 0;
  for (int i = 1; i < vocab; i++) dups += !strcmp(p[i - 1], p[i]);
  CHECK_MSG(dups == 0, "%d duplicate pieces", dups);
  for (int i = 0; i < vocab; i++) free(p[i]);
  free(p);

  ks_tokenizer *t;
  REQUIRE(tokenizer_from_gguf(&t, g) == KS_OK);
  CHECK(tokenizer_vocab_size(t) == vocab && tokenizer_bos(t) == 1 && tokenizer_eos(t) == 2);
  size_t len;
  const char *nl = tokenizer_piece(t, 3 + '\n', &len);
  CHECK(nl && len == 6 && !memcmp(nl, "<0x0A>", 6) && tokenizer_type(t, 3 + '\n') == 6);
  CHECK(tokenizer_type(t, 0) == 2 && tokenizer_type(t, 1) == 3 && tokenizer_type(t, 300) == 1);
  const char *text = "hello world, Zoë!\n";
  int *ids, n;
  REQUIRE(tokenizer_encode(t, text, strlen(text), 1, &ids, &n) == KS_OK);
  CHECK(n > 2 && ids[0] == 1);
  char out[256] = "", piece[64];
  ks_detok d;
  detok_init(&d);
  for (int i = 1; i < n; i++) {
    CHECK(ids[i] >= 0 && ids[i] < vocab);
    tokenizer_decode(t, &d, ids[i], piece, sizeof piece);
    strncat(out, piece, sizeof out - strlen(out) - 1);
  }
  /* SentencePiece adds a leading space; the decoder drops it after BOS */
  CHECK_MSG(!strcmp(out, text) || (out[0] == ' ' && !strcmp(out + 1, text)), "round trip: '%s'", out);
  free(ids);
  tokenizer_destroy(t);
  gguf_close(g);
}

/* GPU logits of a few tokens against the CPU reference's. */
static void check_runs(const char *path, double tol) {
  const int toks[5] = {1, 300, 261, 7, 310};
  ks_engine_opts o = {0};
  o.model_path = path;
  o.device = -1;
  o.n_ctx = 16;
  ks_engine *gpu, *cpu;
  REQUIRE(ks_engine_create(&gpu, &o) == KS_OK);
  o.use_cpu = 1;
  REQUIRE(ks_engine_create(&cpu, &o) == KS_OK);
  int vocab = ks_engine_model(gpu)->cfg.vocab_size;
  float *a = malloc(5 * (size_t)vocab * 4), *b = malloc(5 * (size_t)vocab * 4);
  REQUIRE(a && b);
  CHECK(ks_engine_eval(gpu, toks, 5, 0, a, 1) == KS_OK);
  CHECK(ks_engine_eval(cpu, toks, 5, 0, b, 1) == KS_OK);
  int finite = 1;
  double amax = 0;
  for (size_t i = 0; i < 5 * (size_t)vocab; i++) {
    finite &= isfinite(a[i]) != 0;
    amax = fmax(amax, fabs(b[i]));
  }
  double err = ks_max_rel_err(a, b, 5 * (size_t)vocab);
  CHECK_MSG(finite && amax > 0, "%s: logits not finite or all zero", path);
  CHECK_MSG(err < tol, "%s: GPU vs CPU max relative error %g (tolerance %g)", path, err, tol);
  printf("%s: 5 tokens, GPU vs CPU logits max relative error %.2e\n", path, err);
  free(a);
  free(b);
  ks_engine_destroy(gpu);
  ks_engine_destroy(cpu);
}

static uint64_t tbytes(const ks_tensor *t) {
  return ks_type_row_bytes(t->type, t->ne[0]) * (uint64_t)t->ne[1];
}

/* bench's counts against sums over the model's own tensors. */
static void check_counts(const ks_model *m) {
  const ks_config *c = &m->cfg;
  const int pos = 9;
  uint64_t want = tbytes(&m->tok_embd) / (uint64_t)c->vocab_size + tbytes(&m->output_norm) +
                  tbytes(m->tied_output ? &m->tok_embd : &m->output);
  double flops = 0;
  for (int l = 0; l < c->n_layer; l++) {
    const ks_layer *L = &m->layers[l];
    const ks_tensor *mats[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    want += tbytes(&L->attn_norm) + tbytes(&L->ffn_norm);
    for (int k = 0; k < 7; k++) {
      want += tbytes(mats[k]);
      flops += 2.0 * (double)mats[k]->ne[0] * (double)mats[k]->ne[1];
    }
    /* K/V: rows 0..pos read and row pos written, K and V, kv_dim floats each */
    want += 2ull * (uint64_t)(pos + 2) * (uint64_t)m->layers[l].wk.ne[1] * 4;
  }
  uint64_t got = bench_decode_bytes(m, pos);
  CHECK_MSG(got == want, "decode bytes %llu, counted %llu", (unsigned long long)got,
            (unsigned long long)want);
  /* 3 tokens at positions 4, 5, 6 with the last one's logits */
  double attn = 0;
  for (int p = 4; p < 7; p++) attn += 4.0 * c->n_layer * c->n_head * c->head_dim * (p + 1);
  double want_f = 3 * flops + attn + 2.0 * m->output.ne[0] * (double)m->output.ne[1];
  double got_f = bench_prefill_flops(c, 3, 4, 1);
  CHECK_MSG(fabs(got_f - want_f) <= 1e-9 * want_f, "prefill flops %.0f, counted %.0f", got_f, want_f);

  double v[5] = {5, 1, 4, 2, 3};
  CHECK(bench_median(v, 5) == 3 && v[0] == 5 && bench_median(v, 4) == 3 && bench_median(v, 1) == 5);
}

int main(void) {
  const char *dir = ks_test_tmpdir("test_bench_random");
  char f16a[4200], f16b[4200], f16c[4200], q4[4200], q8[4200], wide[4200];
  snprintf(f16a, sizeof f16a, "%s/tiny-f16-a.gguf", dir);
  snprintf(f16b, sizeof f16b, "%s/tiny-f16-b.gguf", dir);
  snprintf(f16c, sizeof f16c, "%s/tiny-f16-c.gguf", dir);
  snprintf(q4, sizeof q4, "%s/small-q4_0.gguf", dir);
  snprintf(q8, sizeof q8, "%s/tiny-q8_0.gguf", dir);
  snprintf(wide, sizeof wide, "%s/tinyllama-1layer-q4_0.gguf", dir);

  check_shapes();

  uint64_t bytes = 0;
  ks_status st = convert_random_gguf("tiny", f16a, KS_TYPE_F16, 7, 3, &bytes);
  REQUIRE(st == KS_OK || !fprintf(stderr, "%s\n", ks_last_error()));
  REQUIRE(convert_random_gguf("tiny", f16b, KS_TYPE_F16, 7, 1, NULL) == KS_OK);
  REQUIRE(convert_random_gguf("tiny", f16c, KS_TYPE_F16, 8, 3, NULL) == KS_OK);
  CHECK_MSG(same_file(f16a, f16b), "same seed, 3 threads vs 1: the files differ");
  CHECK_MSG(!same_file(f16a, f16c), "seeds 7 and 8 gave the same file");
  size_t fsize;
  free(slurp(f16a, &fsize));
  CHECK(bytes == fsize);

  ks_model m;
  REQUIRE(model_load(&m, f16a) == KS_OK || !fprintf(stderr, "%s\n", ks_last_error()));
  const ks_config *c = &m.cfg;
  CHECK(c->dim == 64 && c->hidden_dim == 160 && c->n_layer == 2 && c->n_head == 4 &&
        c->n_kv_head == 2 && c->vocab_size == 320 && c->n_ctx == 256 && !m.tied_output);
  CHECK(m.tok_embd.type == KS_TYPE_F16 && m.layers[1].w_up.type == KS_TYPE_F16 &&
        m.layers[0].attn_norm.type == KS_TYPE_F32);
  check_weights(&m, 0.05);
  check_counts(&m);
  model_deinit(&m);
  check_vocab(f16a, 320);

  /* tied output, quantised: the counts follow the classifier being the embedding */
  REQUIRE(convert_random_gguf("small:tied=1", q4, KS_TYPE_Q4_0, 3, 0, NULL) == KS_OK);
  REQUIRE(model_load(&m, q4) == KS_OK);
  CHECK(m.tied_output && m.layers[0].wq.type == KS_TYPE_Q4_0 && m.cfg.dim == 256);
  check_counts(&m);
  model_deinit(&m);
  REQUIRE(convert_random_gguf("tiny", q8, KS_TYPE_Q8_0, 5, 2, NULL) == KS_OK);
  REQUIRE(model_load(&m, q8) == KS_OK);
  CHECK(m.layers[0].w_gate.type == KS_TYPE_Q8_0);
  check_weights(&m, 0.05);
  model_deinit(&m);
  /* one layer of TinyLlama's real width (head size 64, 8 query heads per K/V head) */
  REQUIRE(convert_random_gguf("tinyllama-1.1b:layers=1,vocab=512", wide, KS_TYPE_Q4_0, 11, 0, NULL) == KS_OK);

  ks_gpu *g = ks_test_gpu(-1); /* skips (77) without a Vulkan device */
  gpu_destroy(g);
  check_runs(f16a, 1e-3);
  check_runs(q8, 1e-3);
  check_runs(q4, 1e-3);
  check_runs(wide, 1e-3);
  if (getenv("KVSCOPE_VALIDATION"))
    CHECK_MSG(gpu_validation_count() == 0, "%llu validation messages",
              (unsigned long long)gpu_validation_count());
  /* the engines own their GPUs: what each still held when it was destroyed is summed here */
  CHECK_MSG(gpu_leaked_allocations() == 0, "%lld device allocations alive at gpu_destroy",
            (long long)gpu_leaked_allocations());
  return ks_test_done("test_bench_random");
}
