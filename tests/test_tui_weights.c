/* test_tui_weights.c — the attention rows the TUI shows are the engine's own: each TOKEN
 * event's rows (all heads of the watched layer) equal the CPU reference's softmax rows
 * (ref_state.probs, src/ref_cpu.h) for the same layer and the same tokens within 1e-4, on every
 * layer (the watched layer changes between steps), for the row of a batched, chunked prefill
 * and for decode rows, and for a request whose prefix came from the prompt cache. With the
 * view off the events carry no rows.
 * Then a timing comparison, printed and not asserted (timings on a shared machine are not a
 * test): decode tokens/s of an engine that never watched, while watching, and after the view
 * is turned off again. KVSCOPE_TUI_TIMING_TOKENS sets the tokens per run (default 16),
 * KVSCOPE_TUI_TIMING_MODEL another model for it (the prompt's token ids must be in its
 * vocabulary: any Llama-sized one will do). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvscope.h"
#include "gputest.h"
#include "ref_cpu.h"
#include "testutil.h"

#define MODEL KS_SOURCE_DIR "/models/kvscope-tiny.gguf"

static ks_engine *open_engine(const char *path, int batch) {
  ks_engine_opts o;
  memset(&o, 0, sizeof o);
  o.model_path = path;
  o.device = -1;
  o.batch = batch;
  o.n_ctx = 256;
  ks_engine *e = NULL;
  ks_status st = ks_engine_create(&e, &o);
  if (st == KS_ERR_VULKAN) {
    const char *req = getenv("KVSCOPE_REQUIRE_GPU");
    if (req && atoi(req)) {
      fprintf(stderr, "no usable Vulkan device but KVSCOPE_REQUIRE_GPU=1: %s\n", ks_last_error());
      exit(1);
    }
    ks_test_skip("no usable Vulkan device: %s", ks_last_error());
  }
  if (st == KS_ERR_IO) ks_test_skip("the shipped model is absent: %s", ks_last_error());
  REQUIRE(st == KS_OK);
  ref_set_f16_products(ks_engine_f16_products(e)); /* the oracle rounds as the kernels do */
  return e;
}

typedef struct {
  ref_state ref;
  int fed; /* positions the reference has evaluated */
  int *seq;
} oracle;

/* Runs one request, checking every TOKEN event's rows against the reference. layers_cycle:
 * watch layer (step % n_layer) for each step. Returns the worst absolute difference. */
static double check_request(ks_engine *e, oracle *o, const int *prompt, int n, int n_predict,
                            int expect_cached, const char *what) {
  const ks_config *c = &ks_engine_model(e)->cfg;
  const int n_ctx = ks_engine_n_ctx(e);
  ks_request r;
  memset(&r, 0, sizeof r);
  r.tokens = prompt;
  r.n_tokens = n;
  r.n_predict = n_predict;
  sampling_default(&r.sampling);
  r.sampling.temp = 0;
  memcpy(o->seq, prompt, sizeof(int) * (size_t)n);
  o->fed = 0; /* positions are re-evaluated from 0: the reference keeps no prompt cache */
  int len = n, step = 0, cached = 0, rows_checked = 0;
  double worst = 0;
  ks_engine_watch(e, 0);
  REQUIRE(ks_engine_submit(e, &r) == KS_OK);
  for (;;) {
    ks_event ev;
    REQUIRE(ks_engine_step(e, &ev) == KS_OK);
    if (ev.kind == KS_EV_PROVENANCE && ev.prov == KS_POS_CACHED) cached += ev.n;
    if (ev.kind == KS_EV_DONE) break;
    if (ev.kind != KS_EV_TOKEN) continue;
    const int layer = step % c->n_layer; /* what was watched while this token was computed */
    const int P = ev.pos;
    CHECK_MSG(P == len, "%s: token for position %d after %d positions", what, P, len);
    REQUIRE(ev.probs != NULL && ev.probs_stride >= P);
    while (o->fed < P) {
      REQUIRE(ref_forward(&o->ref, o->seq[o->fed], o->fed) != NULL);
      o->fed++;
    }
    for (int h = 0; h < c->n_head; h++) {
      const float *got = ev.probs + (size_t)h * ev.probs_stride;
      const float *want = o->ref.probs + ((size_t)layer * c->n_head + h) * n_ctx;
      double sum = 0;
      for (int j = 0; j < P; j++) {
        double d = fabs((double)got[j] - want[j]);
        if (!(d <= worst)) worst = d; /* NaN stays the worst */
        sum += got[j];
      }
      CHECK_MSG(fabs(sum - 1) < 1e-3, "%s: step %d layer %d head %d row sums to %g", what, step,
                layer, h, sum);
      rows_checked++;
    }
    o->seq[len++] = ev.token;
    step++;
    ks_engine_watch(e, step % c->n_layer); /* the next step's rows come from another layer */
  }
  printf("%s: %d steps, %d rows (all heads, layers 0..%d in turn), %d cached positions, "
         "worst |GPU - CPU| %.3g\n", what, step, rows_checked, c->n_layer - 1, cached, worst);
  CHECK_MSG(step == n_predict, "%s: %d steps, expected %d", what, step, n_predict);
  CHECK_MSG(worst <= ks_test_model_bound(),
            "%s: attention rows differ from the CPU reference by %.3g > %.0e", what, worst,
            ks_test_model_bound());
  if (expect_cached) CHECK_MSG(cached >= 16, "%s: only %d positions came from the cache", what, cached);
  else CHECK(cached == 0);
  return worst;
}

static int tokens_of(ks_engine *e, const char *text, int **out) {
  int n = 0;
  REQUIRE(ks_engine_tokenize(e, text, strlen(text), out, &n) == KS_OK);
  return n;
}

/* Decode tokens/s of greedy generation (engine time of the decode steps only). */
static double decode_rate(ks_engine *e, const int *prompt, int n, int n_gen) {
  ks_gen_stats s;
  ks_sampling sp;
  sampling_default(&sp);
  sp.temp = 0;
  REQUIRE(ks_engine_generate(e, prompt, n, n_gen, &sp, NULL, NULL, &s) == KS_OK);
  int n_dec = s.n_gen - (s.stop == KS_STOP_LENGTH);
  return s.t_decode > 0 && n_dec > 0 ? n_dec / s.t_decode : 0;
}

static double median3(double a, double b, double c) {
  return fmax(fmin(a, b), fmin(fmax(a, b), c));
}

int main(void) {
  /* prefill chunks of 16: the exported prefill row is the last chunk's last token */
  ks_engine *e = open_engine(MODEL, 16);
  const ks_config *c = &ks_engine_model(e)->cfg;
  printf("device: %s; model %d layers x %d heads (%d K/V heads)\n", ks_engine_device_name(e),
         c->n_layer, c->n_head, c->n_kv_head);
  oracle o;
  REQUIRE(ref_state_init(&o.ref, ks_engine_model(e), ks_engine_n_ctx(e)) == KS_OK);
  o.seq = malloc(sizeof(int) * ((size_t)ks_engine_n_ctx(e) + 1));
  REQUIRE(o.seq);

  const char *p1 = "Q: What do you call a fish with no eyes? A: A fsh. Q: What do you call a deer "
                   "with no eyes? A:";
  const char *p2 = "Q: What do you call a fish with no eyes? A: A fsh. Q: What do you call a cat "
                   "with no tail? A:";
  int *t1 = NULL, *t2 = NULL;
  int n1 = tokens_of(e, p1, &t1), n2 = tokens_of(e, p2, &t2);
  int shared = 0;
  while (shared < n1 && shared < n2 && t1[shared] == t2[shared]) shared++;
  REQUIRE(shared >= 17); /* a whole 16-token block, and one more to evaluate */
  check_request(e, &o, t1, n1, 2 * c->n_layer + 1, 0, "cold request");
  check_request(e, &o, t2, n2, c->n_layer + 1, 1, "request with a cached prefix");

  /* the view off: no rows in the events */
  ks_engine_watch(e, -1);
  ks_request r;
  memset(&r, 0, sizeof r);
  r.tokens = t1;
  r.n_tokens = n1;
  r.n_predict = 3;
  sampling_default(&r.sampling);
  REQUIRE(ks_engine_submit(e, &r) == KS_OK);
  int tokens = 0;
  for (;;) {
    ks_event ev;
    REQUIRE(ks_engine_step(e, &ev) == KS_OK);
    if (ev.kind == KS_EV_DONE) break;
    if (ev.kind == KS_EV_TOKEN) {
      tokens++;
      CHECK_MSG(ev.probs == NULL, "view off, but a token came with attention rows");
    }
  }
  CHECK(tokens == 3);
  ref_state_deinit(&o.ref);
  free(o.seq);
  ks_engine_destroy(e);

  /* speed: never watched, watching, watched then off (median of 3 runs each, in turn) */
  const char *te = getenv("KVSCOPE_TUI_TIMING_TOKENS");
  int n_gen = te ? atoi(te) : 16;
  if (n_gen > 0) {
    const char *tm = getenv("KVSCOPE_TUI_TIMING_MODEL");
    e = open_engine(tm && *tm ? tm : MODEL, 0);
    c = &ks_engine_model(e)->cfg;
    int n_gen_max = ks_engine_n_ctx(e) - n1 - 1;
    if (n_gen > n_gen_max) n_gen = n_gen_max;
    double never[3], on[3], off[3];
    decode_rate(e, t1, n1, 4); /* warm-up: pipelines, first command buffers */
    for (int i = 0; i < 3; i++) never[i] = decode_rate(e, t1, n1, n_gen);
    for (int i = 0; i < 3; i++) {
      ks_engine_watch(e, c->n_layer - 1);
      on[i] = decode_rate(e, t1, n1, n_gen);
      ks_engine_watch(e, -1);
      off[i] = decode_rate(e, t1, n1, n_gen);
    }
    printf("decode speed of %s, %d tokens, median of 3 (%s): never watched %.1f tok/s | watching "
           "layer %d %.1f tok/s | view off again %.1f tok/s\n", tm && *tm ? tm : "kvscope-tiny",
           n_gen, ks_engine_device_name(e),
           median3(never[0], never[1], never[2]), c->n_layer, median3(on[0], on[1], on[2]),
           median3(off[0], off[1], off[2]));
    ks_engine_destroy(e);
  }
  free(t1);
  free(t2);
  return ks_test_done("test_tui_weights");
}
