/* test_tiny_ref.c — the default model (models/kvscope-tiny.gguf) against the training script's
 * own PyTorch forward pass (tests/data/tiny_ref, float64): for each reference prompt the
 * tokenizer gives the same ids, the logits of every prompt position agree within 1e-3 relative
 * (GPU on every Vulkan device, and the CPU reference), and greedy decoding gives the same tokens
 * (120 steps, or up to EOS). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "gputest.h"
#include "gguf.h"
#include "ref_cpu.h"
#include "testutil.h"
#include "tokenizer.h"

#define N_PROMPTS 4
#define REL_TOL 1e-3

typedef struct {
  char text[256];
  int prompt[64], n_prompt;
  int greedy[256], n_greedy;
  float *logits; /* (n_prompt, vocab) */
} tiny_case;

static int read_ids(FILE *f, const char *label, int *ids, int max) {
  char w[64];
  int n;
  if (fscanf(f, "%63s %d", w, &n) != 2 || strcmp(w, label) || n > max) return -1;
  for (int i = 0; i < n; i++)
    if (fscanf(f, "%d", &ids[i]) != 1) return -1;
  return n;
}

static void load_case(tiny_case *c, int k, int vocab) {
  char path[4096];
  snprintf(path, sizeof path, "%s/tests/data/tiny_ref/prompt_%d.txt", KS_SOURCE_DIR, k);
  FILE *f = fopen(path, "rb");
  REQUIRE(f);
  size_t n = fread(c->text, 1, sizeof c->text - 1, f);
  c->text[n] = 0;
  fclose(f);
  snprintf(path, sizeof path, "%s/tests/data/tiny_ref/tokens_%d.txt", KS_SOURCE_DIR, k);
  f = fopen(path, "r");
  REQUIRE(f);
  c->n_prompt = read_ids(f, "prompt_tokens", c->prompt, 64);
  c->n_greedy = read_ids(f, "greedy_tokens", c->greedy, 256);
  fclose(f);
  REQUIRE(c->n_prompt > 0 && c->n_greedy > 0);
  snprintf(path, sizeof path, "%s/tests/data/tiny_ref/logits_%d.txt", KS_SOURCE_DIR, k);
  f = fopen(path, "r");
  REQUIRE(f);
  int tmp[64];
  REQUIRE(read_ids(f, "prompt_tokens", tmp, 64) == c->n_prompt);
  c->logits = malloc(sizeof(float) * vocab * c->n_prompt);
  for (int p = 0; p < c->n_prompt; p++) {
    char w1[16], w2[16], w3[16];
    int pp, t;
    REQUIRE(fscanf(f, "%15s %d %15s %d %15s", w1, &pp, w2, &t, w3) == 5 && pp == p && t == c->prompt[p]);
    for (int i = 0; i < vocab; i++) REQUIRE(fscanf(f, "%f", &c->logits[(size_t)p * vocab + i]) == 1);
  }
  fclose(f);
}

static int argmax(const float *x, int n) {
  int b = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[b]) b = i;
  return b;
}

/* eval(pos, token, logits) abstracts GPU and CPU. */
typedef struct {
  ks_forward *f;
  ref_state *r;
} backend;
static void eval(backend *b, const int *toks, int n, int pos0, float *logits, int all) {
  if (b->f) {
    REQUIRE(forward_eval(b->f, toks, n, pos0, logits, all) == KS_OK);
    return;
  }
  int V = b->r->m->cfg.vocab_size;
  for (int i = 0; i < n; i++) {
    const float *l = ref_forward(b->r, toks[i], pos0 + i);
    REQUIRE(l);
    if (all) memcpy(logits + (size_t)i * V, l, sizeof(float) * V);
    else if (i == n - 1) memcpy(logits, l, sizeof(float) * V);
  }
}

static void check_case(backend *b, const tiny_case *c, int V, const char *what, int k) {
  float *lg = malloc(sizeof(float) * V * c->n_prompt);
  eval(b, c->prompt, c->n_prompt, 0, lg, 1);
  double worst = 0;
  for (int p = 0; p < c->n_prompt; p++) {
    double e = ks_max_rel_err(lg + (size_t)p * V, c->logits + (size_t)p * V, V);
    if (e > worst) worst = e;
  }
  float *cur = malloc(sizeof(float) * V);
  memcpy(cur, lg + (size_t)(c->n_prompt - 1) * V, sizeof(float) * V);
  int pos = c->n_prompt, bad = -1;
  for (int i = 0; i < c->n_greedy; i++) {
    int t = argmax(cur, V);
    if (t != c->greedy[i]) { bad = i; break; }
    if (t == 2 || i + 1 == c->n_greedy) break;
    eval(b, &t, 1, pos++, cur, 0);
  }
  printf("%s prompt %d: logits max relative error %.3g over %d positions; greedy %s (%d tokens)\n",
         what, k, worst, c->n_prompt, bad < 0 ? "identical" : "DIFFERS", c->n_greedy);
  CHECK_MSG(worst <= REL_TOL, "%s prompt %d: logits error %.3g > %.0e", what, k, worst, REL_TOL);
  CHECK_MSG(bad < 0, "%s prompt %d: greedy token %d differs", what, k, bad);
  free(lg);
  free(cur);
}

int main(void) {
  char mp[4096];
  snprintf(mp, sizeof mp, "%s/models/kvscope-tiny.gguf", KS_SOURCE_DIR);
  ks_model m;
  ks_status st = model_load(&m, mp);
  if (st) fprintf(stderr, "%s\n", ks_last_error());
  REQUIRE(st == KS_OK);
  const int V = m.cfg.vocab_size;
  ks_tokenizer *tok;
  REQUIRE(tokenizer_from_gguf(&tok, m.gguf) == KS_OK);
  static tiny_case cases[N_PROMPTS];
  for (int k = 0; k < N_PROMPTS; k++) {
    load_case(&cases[k], k, V);
    int *ids = NULL, n = 0;
    REQUIRE(tokenizer_encode(tok, cases[k].text, strlen(cases[k].text), 1, &ids, &n) == KS_OK);
    CHECK_MSG(n == cases[k].n_prompt && !memcmp(ids, cases[k].prompt, sizeof(int) * n),
              "prompt %d tokenizes differently from the training script", k);
    free(ids);
  }
  ref_state r;
  REQUIRE(ref_state_init(&r, &m, 256) == KS_OK);
  backend cpu = {NULL, &r};
  for (int k = 0; k < N_PROMPTS; k++) check_case(&cpu, &cases[k], V, "CPU reference", k);
  ref_state_deinit(&r);

  int n_dev = gpu_count_devices();
  if (n_dev <= 0) n_dev = 1;
  for (int d = 0; d < n_dev; d++) {
    ks_gpu *g = ks_test_gpu(d);
    ks_forward *f;
    REQUIRE(forward_create(&f, g, &m, 256, 64, 0) == KS_OK);
    backend gpu = {f, NULL};
    for (int k = 0; k < N_PROMPTS; k++) check_case(&gpu, &cases[k], V, gpu_info(g)->name, k);
    forward_destroy(f);
    CHECK_MSG(gpu_live_allocations(g) == 0, "%lld device allocations alive after teardown",
              (long long)gpu_live_allocations(g));
    gpu_destroy(g);
  }
  CHECK(gpu_validation_count() == 0);
  for (int k = 0; k < N_PROMPTS; k++) free(cases[k].logits);
  tokenizer_destroy(tok);
  model_deinit(&m);
  return ks_test_done("test_tiny_ref");
}
