/* test_ref_golden.c — the CPU reference forward pass against llama2.c run.c's own outputs for
 * stories260K: logits of the first 8 positions within 1e-4 relative, and greedy decoding of
 * "Once upon a time" reproducing every token (run.c's loop: prompt tokens forced, then argmax,
 * stop after BOS or at 200 positions). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ref_cpu.h"
#include "testutil.h"

#define MAX_TOK 1024
#define N_POS 200       /* run.c -n 200: positions, prompt included */
#define N_LOGIT_POS 8
#define REL_TOL 1e-4

/* Reads "label n?" then ids from one line. Returns the count, or -1 if the label differs. */
static int read_ids(FILE *f, const char *label, int with_count, int *ids, int max) {
  char word[64];
  if (fscanf(f, "%63s", word) != 1 || strcmp(word, label) != 0) return -1;
  int n = -1;
  if (with_count && fscanf(f, "%d", &n) != 1) return -1;
  int k = 0;
  for (;;) {
    int ch;
    while ((ch = fgetc(f)) == ' ' || ch == '\t') {}
    if (ch == '\n' || ch == EOF) break;
    ungetc(ch, f);
    if (k >= max || fscanf(f, "%d", &ids[k]) != 1) return -1;
    k++;
  }
  if (with_count && n != k) return -1;
  return k;
}

static int argmax(const float *x, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (x[i] > x[best]) best = i; /* strict: lowest id wins ties, as run.c's sample_argmax */
  return best;
}

int main(void) {
  const char *model_path = ks_shared_file("models/stories260K.bin");
  const char *tok_path = ks_shared_file("models/reference/greedy_once.tokens");
  const char *logit_path = ks_shared_file("models/reference/logits_once_first8.txt");

  static int prompt[MAX_TOK], expect[MAX_TOK];
  FILE *f = fopen(tok_path, "r");
  REQUIRE(f);
  int n_prompt = read_ids(f, "prompt_tokens", 1, prompt, MAX_TOK);
  int n_expect = read_ids(f, "all_tokens", 0, expect, MAX_TOK);
  fclose(f);
  REQUIRE(n_prompt > 0 && n_expect > 0);
  printf("prompt: %d tokens; reference sequence: %d tokens\n", n_prompt, n_expect);

  /* logits_once_first8.txt: prompt line, then "pos P input_token T logits ..." lines */
  static int lprompt[MAX_TOK];
  f = fopen(logit_path, "r");
  REQUIRE(f);
  int n_lprompt = read_ids(f, "prompt_tokens", 1, lprompt, MAX_TOK);
  REQUIRE(n_lprompt == n_prompt && memcmp(lprompt, prompt, sizeof(int) * n_prompt) == 0);

  ks_model m;
  ks_status st = model_load(&m, model_path);
  if (st) fprintf(stderr, "model_load: %s\n", ks_last_error());
  REQUIRE(st == KS_OK);
  const int vocab = m.cfg.vocab_size;
  ref_state s;
  REQUIRE(ref_state_init(&s, &m, N_POS) == KS_OK);

  float *ref_logits = malloc(sizeof(float) * vocab);
  REQUIRE(ref_logits);
  int got[MAX_TOK], n_got = 0;
  double worst_rel = 0, worst_abs = 0;
  int worst_pos = -1, worst_idx = -1;

  int token = prompt[0], pos = 0;
  got[n_got++] = token;
  while (pos < N_POS) {
    const float *logits = ref_forward(&s, token, pos);
    REQUIRE(logits);
    if (pos < N_LOGIT_POS) {
      int p = -1, t = -1;
      char w1[16], w2[16], w3[16];
      REQUIRE(fscanf(f, "%15s %d %15s %d %15s", w1, &p, w2, &t, w3) == 5);
      REQUIRE(strcmp(w1, "pos") == 0 && strcmp(w3, "logits") == 0);
      CHECK_MSG(p == pos && t == token, "logit line for pos %d token %d, fed pos %d token %d", p,
                t, pos, token);
      for (int i = 0; i < vocab; i++) REQUIRE(fscanf(f, "%f", &ref_logits[i]) == 1);
      double max_ref = 0, max_err = 0;
      int err_idx = 0;
      for (int i = 0; i < vocab; i++) {
        max_ref = fmax(max_ref, fabs(ref_logits[i]));
        double e = fabs((double)logits[i] - ref_logits[i]);
        if (e > max_err) max_err = e, err_idx = i;
      }
      double rel = max_err / fmax(max_ref, 1e-30);
      printf("pos %d: max |logit error| %.3g at id %d (ours %.9g, run.c %.9g), relative %.3g\n",
             pos, max_err, err_idx, logits[err_idx], ref_logits[err_idx], rel);
      CHECK_MSG(rel <= REL_TOL, "pos %d: relative logit error %.3g > %.0e", pos, rel, REL_TOL);
      if (worst_pos < 0 || rel > worst_rel) worst_rel = rel, worst_abs = max_err, worst_pos = pos, worst_idx = err_idx;
    }
    int next = pos < n_prompt - 1 ? prompt[pos + 1] : argmax(logits, vocab);
    pos++;
    got[n_got++] = next;
    if (next == 1) break; /* run.c stops when the model emits BOS */
    token = next;
  }
  fclose(f);
  printf("worst over %d positions: relative %.3g (abs %.3g at pos %d id %d)\n", N_LOGIT_POS,
         worst_rel, worst_abs, worst_pos, worst_idx);

  int first_bad = -1;
  for (int i = 0; i < KS_MAX(n_got, n_expect); i++)
    if (i >= n_got || i >= n_expect || got[i] != expect[i]) {
      first_bad = i;
      break;
    }
  if (first_bad >= 0) {
    fprintf(stderr, "token mismatch at index %d: ours %d, run.c %d (ours %d tokens, run.c %d)\n",
            first_bad, first_bad < n_got ? got[first_bad] : -1,
            first_bad < n_expect ? expect[first_bad] : -1, n_got, n_expect);
    CHECK(first_bad < 0);
  } else {
    printf("greedy tokens: all %d match run.c\n", n_got);
  }

  /* the attention rows exposed for the UI: each head's row of the last token sums to one */
  const int last = pos - 1;
  for (int l = 0; l < m.cfg.n_layer; l++)
    for (int h = 0; h < m.cfg.n_head; h++) {
      const float *row = s.probs + ((size_t)l * m.cfg.n_head + h) * s.n_ctx;
      double sum = 0;
      for (int t = 0; t <= last; t++) sum += row[t];
      CHECK_MSG(fabs(sum - 1.0) < 1e-4, "layer %d head %d probs sum %.6f", l, h, sum);
    }

  free(ref_logits);
  ref_state_deinit(&s);
  model_deinit(&m);
  return ks_test_done("test_ref_golden");
}
