/* test_arch.c — every architecture kvscope runs, in every weight type, end to end: a small
 * random GGUF written by random_gguf.c (the project's GGUF writer) loads, its configuration is
 * what the architecture implies, and the GPU forward pass (forward_eval: a prompt in chunks of 8,
 * then decode steps) gives the CPU reference's logits (ref_forward, one token at a time).
 *
 * Models: llama (separate output, grouped-query attention 4:2), llama with Llama 3 RoPE scaling
 * from a rope_freqs.weight tensor, from rope.scaling.* llama3 keys, and linear scaling; qwen2
 * (q/k/v biases, NeoX RoPE, tied embeddings, 8 heads sharing 1 K/V head); and SmolLM2-135M's
 * width (576, 9 heads on 3 K/V heads) in the types llama.cpp uses for rows that no K-quant fits.
 * Weight types F32, F16, BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K.
 *
 * Bound: max |gpu - cpu| / max |cpu| over every position's logits <= 1e-4 for every type. The
 * bound does not depend on the type: both sides dequantise the same bytes to the same floats
 * (test_kquant checks that per kernel), so what differs is only the f32 summation order of the
 * matrix, norm and attention reductions; measured values are printed (about 1e-6).
 * Also: the scaling, the biases and the NeoX pairing each change the reference's logits (so the
 * agreement above covers them); the llama3 keys give the same divisors as the formula computed
 * here independently in double precision; a model cut into many weight slices
 * (KVSCOPE_MAX_BUFFER_RANGE = 16 KiB) gives the same bits as one slice; unsupported architectures, tensor
 * types, RoPE scaling types and biases fail with a message naming them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "gputest.h"
#include "model.h"
#include "random_gguf.h"
#include "ref_cpu.h"
#include "testutil.h"

enum { N_PROMPT = 13, N_DECODE = 3, N_POS = N_PROMPT + N_DECODE, CTX = 64, BATCH = 8 };
#define BOUND ks_test_model_bound()

static const char *g_dir;
static int g_tokens[N_POS];

static const char *tmp_path(const char *name) {
  static char p[4][4200];
  static int slot;
  char *s = p[slot++ & 3];
  snprintf(s, sizeof p[0], "%s/%s", g_dir, name);
  return s;
}

/* Logits (N_POS, vocab) of the CPU reference, one token at a time. */
static float *cpu_logits(const ks_model *m) {
  const int V = m->cfg.vocab_size;
  float *out = malloc((size_t)N_POS * V * sizeof *out);
  REQUIRE(out);
  ref_state rs;
  REQUIRE(ref_state_init(&rs, m, CTX) == KS_OK);
  for (int p = 0; p < N_POS; p++) {
    const float *lg = ref_forward(&rs, g_tokens[p], p);
    REQUIRE(lg);
    memcpy(out + (size_t)p * V, lg, (size_t)V * sizeof *out);
  }
  ref_state_deinit(&rs);
  return out;
}

/* Logits (N_POS, vocab) on the GPU: the prompt in one call (chunks of BATCH, every position's
 * logits), then N_DECODE single-token steps (the replayed decode command buffer). */
static float *gpu_logits(ks_gpu *g, const ks_model *m) {
  const int V = m->cfg.vocab_size;
  float *out = malloc((size_t)N_POS * V * sizeof *out);
  REQUIRE(out);
  ks_forward *f;
  ks_status st = forward_create(&f, g, m, CTX, BATCH, 0);
  CHECK_MSG(st == KS_OK, "forward_create: %s", ks_last_error());
  if (st != KS_OK) {
    free(out);
    return NULL;
  }
  REQUIRE(forward_eval(f, g_tokens, N_PROMPT, 0, out, 1) == KS_OK);
  for (int p = N_PROMPT; p < N_POS; p++)
    REQUIRE(forward_eval(f, &g_tokens[p], 1, p, out + (size_t)p * V, 0) == KS_OK);
  forward_destroy(f);
  return out;
}

static double max_rel(const float *a, const float *b, size_t n) {
  double md = 0, mb = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (!(d <= md)) md = d; /* a nan makes it nan */
    mb = fmax(mb, fabs((double)b[i]));
  }
  return mb > 0 ? md / mb : md;
}

static const ks_type k_types[] = {KS_TYPE_F32,  KS_TYPE_F16,  KS_TYPE_BF16, KS_TYPE_Q8_0,
                                  KS_TYPE_Q4_0, KS_TYPE_Q5_0, KS_TYPE_Q5_1, KS_TYPE_Q4_K,
                                  KS_TYPE_Q5_K, KS_TYPE_Q6_K};

/* The Llama 3 divisor of each RoPE frequency, written here from the published recipe: keep
 * wavelengths under orig/high, divide those over orig/low by factor, blend linearly in 1/wavelen
 * in between. */
static void llama3_divisors(float *out, int head_dim, double base, double factor, double low,
                            double high, double orig) {
  for (int i = 0; i < head_dim / 2; i++) {
    double inv_freq = pow(base, -(2.0 * i) / head_dim);
    double wavelen = 2.0 * M_PI / inv_freq;
    double scaled;
    if (wavelen < orig / high) scaled = inv_freq;
    else if (wavelen > orig / low) scaled = inv_freq / factor;
    else {
      double t = (orig / wavelen - low) / (high - low);
      scaled = (1.0 - t) * inv_freq / factor + t * inv_freq;
    }
    out[i] = (float)(inv_freq / scaled);
  }
}

typedef struct {
  const char *name;
  random_gguf_spec spec;
} arch_case;

static void load(ks_model *m, const random_gguf_spec *s, const char *file) {
  const char *path = tmp_path(file);
  ks_status st = random_gguf_write(s, path);
  CHECK_MSG(st == KS_OK, "writing %s: %s", file, ks_last_error());
  REQUIRE(st == KS_OK);
  st = model_load(m, path);
  CHECK_MSG(st == KS_OK, "loading %s: %s", file, ks_last_error());
  REQUIRE(st == KS_OK);
}

/* What the architecture implies, as loaded. */
static void check_config(const char *what, const ks_model *m, const random_gguf_spec *s) {
  const ks_config *c = &m->cfg;
  int qwen = !strcmp(s->arch, "qwen2");
  CHECK_MSG(!strcmp(c->arch, s->arch), "%s: arch '%s'", what, c->arch);
  CHECK_MSG(c->rope_neox == qwen, "%s: rope_neox %d", what, c->rope_neox);
  CHECK_MSG(c->dim == s->dim && c->n_head == s->n_head && c->n_kv_head == s->n_kv_head &&
                c->head_dim == s->dim / s->n_head && c->vocab_size == s->vocab_size &&
                c->n_layer == s->n_layer && c->hidden_dim == s->hidden_dim,
            "%s: shape", what);
  CHECK_MSG(c->rope_base == s->rope_base && c->norm_eps == s->norm_eps, "%s: rope base %g eps %g",
            what, c->rope_base, c->norm_eps);
  CHECK_MSG(m->tied_output == s->tied && (!s->tied || m->output.data == m->tok_embd.data),
            "%s: tied output %d", what, m->tied_output);
  for (int l = 0; l < c->n_layer; l++)
    CHECK_MSG(!!m->layers[l].bq.data == s->qkv_bias && !!m->layers[l].bk.data == s->qkv_bias &&
                  !!m->layers[l].bv.data == s->qkv_bias,
              "%s: layer %d biases", what, l);
  CHECK_MSG(!!m->rope_factors == (s->rope != RANDOM_ROPE_NONE), "%s: rope factors", what);
  CHECK_MSG(m->layers[0].wq.type == s->wtype && m->tok_embd.type == s->embd_type, "%s: types",
            what);
}

static void run_case(ks_gpu *g, const char *name, random_gguf_spec *s, ks_type t) {
  s->wtype = t;
  s->embd_type = t;
  char file[96], what[128];
  snprintf(file, sizeof file, "%s_%s.gguf", name, ks_type_name(t));
  snprintf(what, sizeof what, "%s %s", name, ks_type_name(t));
  ks_model m;
  load(&m, s, file);
  check_config(what, &m, s);
  float *ref = cpu_logits(&m), *got = gpu_logits(g, &m);
  if (got) {
    size_t n = (size_t)N_POS * m.cfg.vocab_size;
    double rel = max_rel(got, ref, n);
    printf("  %-40s GPU vs CPU logits: max rel %.2e (bound %.0e)\n", what, rel, BOUND);
    CHECK_MSG(rel <= BOUND, "%s: GPU logits differ from the CPU reference by %.3e", what, rel);
    free(got);
  }
  free(ref);
  model_deinit(&m);
}

/* The reference's logits change when a feature is switched off in the loaded model: the
 * feature is really in the computation both sides agree on. */
static void check_features(void) {
  random_gguf_spec s;
  random_gguf_spec_init(&s, "qwen2");
  ks_model m;
  load(&m, &s, "feat_qwen2.gguf");
  float *with = cpu_logits(&m);
  size_t n = (size_t)N_POS * m.cfg.vocab_size;
  ks_layer saved = m.layers[0];
  m.layers[0].bk.data = NULL; /* drop layer 0's k bias */
  float *no_bias = cpu_logits(&m);
  m.layers[0] = saved;
  m.cfg.rope_neox = 0;
  float *no_neox = cpu_logits(&m);
  m.cfg.rope_neox = 1;
  double d_bias = max_rel(no_bias, with, n), d_neox = max_rel(no_neox, with, n);
  printf("  %-40s without one k bias: %.2e, adjacent pairs: %.2e\n", "qwen2 features change logits",
         d_bias, d_neox);
  CHECK_MSG(d_bias > 1e-3 && d_neox > 1e-3, "qwen2: bias/neox change nothing (%g, %g)", d_bias,
            d_neox);
  free(with);
  free(no_bias);
  free(no_neox);
  model_deinit(&m);

  /* Llama 3 scaling: keys vs a tensor holding the independently computed divisors vs none */
  random_gguf_spec k;
  random_gguf_spec_init(&k, "llama");
  const int hd = k.dim / k.n_head;
  float div[128];
  llama3_divisors(div, hd, k.rope_base, k.rope_factor, k.rope_low_ff, k.rope_high_ff,
                  k.rope_orig_ctx);
  k.rope = RANDOM_ROPE_LLAMA3;
  ks_model mk, mt, mn;
  load(&mk, &k, "feat_llama3_keys.gguf");
  k.rope = RANDOM_ROPE_TENSOR;
  k.rope_freqs = div;
  load(&mt, &k, "feat_llama3_tensor.gguf");
  k.rope = RANDOM_ROPE_NONE;
  load(&mn, &k, "feat_llama_plain.gguf");
  double worst = 0;
  int scaled = 0;
  for (int i = 0; i < hd / 2; i++) {
    worst = fmax(worst, fabs((double)mk.rope_factors[i] - div[i]) / div[i]);
    scaled += div[i] != 1.0f;
    CHECK(mt.rope_factors[i] == div[i]); /* the tensor is used as stored */
  }
  printf("  %-40s %d of %d frequencies scaled, keys vs formula: max rel %.1e\n",
         "llama3 rope scaling", scaled, hd / 2, worst);
  CHECK_MSG(worst <= 1e-6, "llama3 keys: divisors differ from the formula by %g", worst);
  CHECK_MSG(scaled > 0 && scaled < hd / 2, "llama3 test shape: %d scaled of %d", scaled, hd / 2);
  float *lk = cpu_logits(&mk), *lt = cpu_logits(&mt), *ln = cpu_logits(&mn);
  n = (size_t)N_POS * mk.cfg.vocab_size;
  double d_kt = max_rel(lk, lt, n), d_kn = max_rel(lk, ln, n);
  printf("  %-40s keys vs tensor %.2e, scaled vs unscaled %.2e\n", "llama3 rope scaling logits",
         d_kt, d_kn);
  CHECK_MSG(d_kt <= 1e-5, "llama3: keys and tensor give different logits (%g)", d_kt);
  CHECK_MSG(d_kn > 1e-3, "llama3: scaling changes nothing (%g)", d_kn);
  /* position 0 is never rotated: the first row is the same with or without scaling */
  CHECK(memcmp(lk, ln, (size_t)mk.cfg.vocab_size * sizeof *lk) == 0);
  free(lk);
  free(lt);
  free(ln);
  model_deinit(&mk);
  model_deinit(&mt);
  model_deinit(&mn);
}

/* One model, weights cut into many slices by a small KVSCOPE_MAX_BUFFER_RANGE on g2: the same
 * bits as with one slice. */
static void check_slices(ks_gpu *g, ks_gpu *g2, ks_type t) {
  random_gguf_spec s;
  random_gguf_spec_init(&s, "qwen2");
  s.wtype = s.embd_type = t;
  ks_model m;
  char file[64];
  snprintf(file, sizeof file, "slices_%s.gguf", ks_type_name(t));
  load(&m, &s, file);
  float *one = gpu_logits(g, &m), *many = gpu_logits(g2, &m);
  REQUIRE(one && many);
  int same = !memcmp(one, many, (size_t)N_POS * m.cfg.vocab_size * sizeof *one);
  char what[96];
  snprintf(what, sizeof what, "qwen2 %s, weights in 16 KiB slices", ks_type_name(t));
  printf("  %-40s %s to one slice\n", what, same ? "bit-identical" : "DIFFERENT");
  CHECK_MSG(same, "%s: differs from one slice", what);
  free(one);
  free(many);
  model_deinit(&m);
}

static void expect_refused(const char *what, const random_gguf_spec *s, ks_status want,
                           const char *frag1, const char *frag2) {
  const char *path = tmp_path("bad.gguf");
  REQUIRE(random_gguf_write(s, path) == KS_OK);
  ks_model m;
  ks_status st = model_load(&m, path);
  const char *msg = ks_last_error();
  printf("  %-40s %s\n", what, msg);
  CHECK_MSG(st == want && strstr(msg, path) && strstr(msg, frag1) && (!frag2 || strstr(msg, frag2)),
            "%s: status %d, message '%s' (want '%s'%s%s)", what, st, msg, frag1,
            frag2 ? ", " : "", frag2 ? frag2 : "");
  model_deinit(&m);
}

static void check_refusals(void) {
  random_gguf_spec s;
  random_gguf_spec_init(&s, "gemma2");
  expect_refused("unknown architecture", &s, KS_ERR_UNSUPPORTED, "'gemma2'", "qwen2");
  random_gguf_spec_init(&s, "llama");
  s.wtype = (ks_type)10; /* Q2_K: a real type without kernels */
  expect_refused("Q2_K weights", &s, KS_ERR_UNSUPPORTED, "Q2_K", "blk.0.attn_q.weight");
  random_gguf_spec_init(&s, "llama");
  s.rope_type = "yarn";
  expect_refused("YaRN rope scaling", &s, KS_ERR_UNSUPPORTED, "'yarn'", "llama3");
  random_gguf_spec_init(&s, "qwen2");
  s.extra_tensor = "blk.1.attn_output.bias";
  expect_refused("an output-projection bias", &s, KS_ERR_UNSUPPORTED, "blk.1.attn_output.bias",
                 NULL);
  random_gguf_spec_init(&s, "llama");
  s.extra_tensor = "blk.0.attn_k.bias"; /* dim = 256 values; K has 2 heads of 64 = 128 */
  expect_refused("a k bias of the wrong size", &s, KS_ERR_FORMAT, "blk.0.attn_k.bias", "vector");
}

/* `kvscope info` on a qwen2 Q4_K file: architecture, RoPE pairing, biases, per-type counts. */
static void check_info(void) {
  random_gguf_spec s;
  random_gguf_spec_init(&s, "qwen2");
  s.wtype = KS_TYPE_Q4_K;
  s.embd_type = KS_TYPE_Q6_K;
  const char *path = tmp_path("info.gguf");
  REQUIRE(random_gguf_write(&s, path) == KS_OK);
  char cmd[8600], out[8192];
  snprintf(cmd, sizeof cmd, "'%s/kvscope' info -m '%s' 2>&1", KS_BINARY_DIR, path);
  FILE *p = popen(cmd, "r");
  REQUIRE(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  int rc = pclose(p);
  /* 2 layers x (7 Q4_K matrices; 2 norms + 3 biases in F32) + output_norm; tied: one Q6_K */
  static const char *const want[] = {"architecture:  qwen2", "NeoX", "q/k/v biases:  yes",
                                     "tied", "tensors:       26: F32 11", "Q4_K 14", "Q6_K 1"};
  int ok = rc == 0;
  for (size_t i = 0; i < KS_ARRAY_LEN(want); i++) ok = ok && strstr(out, want[i]);
  printf("  %-40s %s\n", "kvscope info on a qwen2 Q4_K file", ok ? "ok" : "WRONG");
  CHECK_MSG(ok, "kvscope info (rc %d) printed:\n%s", rc, out);
}

int main(void) {
  ks_test_seed();
  setenv("KVSCOPE_VALIDATION", "1", 0);
  g_dir = ks_test_tmpdir("test_arch");
  for (int i = 0; i < N_POS; i++) g_tokens[i] = (int)(ks_randu() % 300);
  g_tokens[1] = 299; /* the last row of the embedding */

  printf("== CPU reference\n");
  check_features();
  check_refusals();
  check_info();

  ks_gpu *g = ks_test_gpu(-1);
  printf("== device: %s\n", gpu_info(g)->name);
  double t0 = ks_now_sec();
  arch_case cases[6];
  random_gguf_spec_init(&cases[0].spec, "llama");
  cases[0].name = "llama";
  random_gguf_spec_init(&cases[1].spec, "qwen2");
  cases[1].spec.n_head = 8; /* head_dim 32, all 8 query heads on one K/V head */
  cases[1].spec.n_kv_head = 1;
  cases[1].name = "qwen2";
  random_gguf_spec_init(&cases[2].spec, "llama");
  cases[2].spec.rope = RANDOM_ROPE_LLAMA3;
  cases[2].spec.tied = 1;
  cases[2].name = "llama+llama3-keys";
  static float div[32];
  random_gguf_spec_init(&cases[3].spec, "llama");
  llama3_divisors(div, 64, 10000.0, 8.0, 1.0, 4.0, 64.0);
  cases[3].spec.rope = RANDOM_ROPE_TENSOR;
  cases[3].spec.rope_freqs = div;
  cases[3].name = "llama+rope_freqs";
  random_gguf_spec_init(&cases[4].spec, "llama");
  cases[4].spec.rope = RANDOM_ROPE_LINEAR;
  cases[4].spec.rope_factor = 4.0f;
  cases[4].name = "llama+linear";
  random_gguf_spec_init(&cases[5].spec, "llama"); /* SmolLM2-135M's width and heads, tied */
  cases[5].spec.dim = 576;
  cases[5].spec.n_head = 9;
  cases[5].spec.n_kv_head = 3;
  cases[5].spec.hidden_dim = 1536;
  cases[5].spec.tied = 1;
  cases[5].spec.n_layer = 1;
  cases[5].name = "llama dim 576";
  for (size_t ti = 0; ti < KS_ARRAY_LEN(k_types); ti++)
    for (int ci = 0; ci < 2; ci++) run_case(g, cases[ci].name, &cases[ci].spec, k_types[ti]);
  /* the scaled variants in one float and one K-quant type */
  for (int ci = 2; ci < 5; ci++) {
    run_case(g, cases[ci].name, &cases[ci].spec, KS_TYPE_F16);
    run_case(g, cases[ci].name, &cases[ci].spec, KS_TYPE_Q4_K);
  }
  /* rows of 576: no K-quant fits, llama.cpp's Q4_K_M/Q5_K_M files hold Q5_0/Q5_1/Q8_0 */
  run_case(g, cases[5].name, &cases[5].spec, KS_TYPE_Q5_0);
  run_case(g, cases[5].name, &cases[5].spec, KS_TYPE_Q5_1);
  run_case(g, cases[5].name, &cases[5].spec, KS_TYPE_Q8_0);

  setenv("KVSCOPE_MAX_BUFFER_RANGE", "16384", 1);
  ks_gpu *g2 = ks_test_gpu(gpu_device_index(g));
  unsetenv("KVSCOPE_MAX_BUFFER_RANGE");
  check_slices(g, g2, KS_TYPE_Q6_K);
  check_slices(g, g2, KS_TYPE_BF16);
  printf("  GPU part: %.1f s\n", ks_now_sec() - t0);
  CHECK(gpu_live_allocations(g) == 0 && gpu_live_allocations(g2) == 0);
  gpu_destroy(g2);
  gpu_destroy(g);
  uint64_t msgs = gpu_validation_count();
  printf("validation-layer messages: %llu\n", (unsigned long long)msgs);
  CHECK(msgs == 0);
  return ks_test_done("test_arch");
}
