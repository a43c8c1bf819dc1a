/* test_convert_stories.c — the real llama2.c checkpoint through the converter: stories260K.bin
 * with tok512.bin (../shared/models) is written as an F32 GGUF and loaded back; configuration
 * and every tensor must equal the original bytes, and the vocabulary must be the tokenizer.bin
 * one in GGUF form (a tokenizer built from either file encodes text to the same ids). Q8_0 and
 * Q4_0 conversions must load and stay within their error bounds. Skipped (exit 77) when the
 * shared model files are absent. */
#include <math.h>
#include <string.h>

#include "convert.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "tokenizer.h"
#include "testutil.h"

static int same_tensor(const char *what, const ks_tensor *a, const ks_tensor *b) {
  int ok = a->type == b->type && a->ne[0] == b->ne[0] && a->ne[1] == b->ne[1] &&
           a->nbytes == b->nbytes && a->data && b->data && !memcmp(a->data, b->data, a->nbytes);
  if (!ok)
    fprintf(stderr, "%s differs: %s [%lld, %lld] vs %s [%lld, %lld]\n", what,
            ks_type_name(a->type), (long long)a->ne[0], (long long)a->ne[1],
            ks_type_name(b->type), (long long)a->ne[0], (long long)b->ne[1]);
  return ok;
}

/* Normalised MSE of a converted tensor against the f32 original. */
static double nmse(const ks_tensor *conv, const ks_tensor *orig) {
  int64_t cols = orig->ne[0];
  float *a = malloc((size_t)cols * 4), *b = malloc((size_t)cols * 4);
  REQUIRE(a && b);
  double e = 0, s = 0;
  size_t rba = ks_type_row_bytes(conv->type, cols), rbb = ks_type_row_bytes(orig->type, cols);
  for (int64_t r = 0; r < orig->ne[1]; r++) {
    ks_dequant_row(conv->type, (const uint8_t *)conv->data + r * rba, a, cols);
    ks_dequant_row(orig->type, (const uint8_t *)orig->data + r * rbb, b, cols);
    for (int64_t j = 0; j < cols; j++) e += (a[j] - b[j]) * (double)(a[j] - b[j]), s += b[j] * (double)b[j];
  }
  free(a);
  free(b);
  return s > 0 ? e / s : e;
}

int main(void) {
  const char *bin = ks_shared_file("models/stories260K.bin");
  const char *tokp = ks_shared_file("models/tok512.bin");
  const char *dir = ks_test_tmpdir("test_convert_stories");
  char out[4200];

  ks_model m;
  ks_status st = model_load_llama2c(&m, bin);
  if (st) {
    fprintf(stderr, "cannot load %s: %s\n", bin, ks_last_error());
    return 1;
  }
  const ks_config *c = &m.cfg;
  CHECK(c->dim == 64 && c->hidden_dim == 172 && c->n_layer == 5 && c->n_head == 8);
  CHECK(c->n_kv_head == 4 && c->vocab_size == 512 && c->n_ctx == 512);

  snprintf(out, sizeof out, "%s/stories260K-f32.gguf", dir);
  st = convert_to_gguf(&m, tokp, out, KS_TYPE_F32);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  ks_model g;
  st = model_load_gguf(&g, out);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  if (st) return ks_test_done("test_convert_stories");

  CHECK(!memcmp(&g.cfg, &m.cfg, sizeof g.cfg));
  CHECK(g.tied_output == m.tied_output);
  CHECK(gguf_find_tensor(g.gguf, "output.weight") < 0 || !m.tied_output);
  CHECK(same_tensor("token_embd", &g.tok_embd, &m.tok_embd));
  CHECK(same_tensor("output_norm", &g.output_norm, &m.output_norm));
  CHECK(same_tensor("output", &g.output, &m.output));
  for (int l = 0; l < c->n_layer; l++) {
    const ks_layer *a = &g.layers[l], *b = &m.layers[l];
    CHECK(same_tensor("attn_norm", &a->attn_norm, &b->attn_norm));
    CHECK(same_tensor("wq", &a->wq, &b->wq));
    CHECK(same_tensor("wk", &a->wk, &b->wk));
    CHECK(same_tensor("wv", &a->wv, &b->wv));
    CHECK(same_tensor("wo", &a->wo, &b->wo));
    CHECK(same_tensor("ffn_norm", &a->ffn_norm, &b->ffn_norm));
    CHECK(same_tensor("w_gate", &a->w_gate, &b->w_gate));
    CHECK(same_tensor("w_down", &a->w_down, &b->w_down));
    CHECK(same_tensor("w_up", &a->w_up, &b->w_up));
  }
  CHECK(model_weight_bytes(&g) == model_weight_bytes(&m));

  /* the vocabulary, read straight from tok512.bin, against the GGUF keys */
  FILE *f = fopen(tokp, "rb");
  REQUIRE(f);
  int32_t max_len;
  REQUIRE(fread(&max_len, 4, 1, f) == 1);
  gguf_vtype et;
  CHECK(gguf_arr_len(g.gguf, "tokenizer.ggml.tokens", &et) == 512 && et == GGUF_T_STRING);
  const uint8_t *scores = gguf_arr_data(g.gguf, "tokenizer.ggml.scores");
  const uint8_t *types = gguf_arr_data(g.gguf, "tokenizer.ggml.token_type");
  REQUIRE(scores && types);
  int bad = 0;
  for (int i = 0; i < 512; i++) {
    float score, gs;
    int32_t len, type;
    char raw[64], want[200];
    REQUIRE(fread(&score, 4, 1, f) == 1 && fread(&len, 4, 1, f) == 1 && len >= 0 && len < 64);
    REQUIRE(fread(raw, 1, (size_t)len, f) == (size_t)len);
    raw[len] = 0;
    /* expected GGUF piece: BOS/EOS without the export's newlines, spaces as U+2581 */
    if (i == 1) snprintf(want, sizeof want, "<s>");
    else if (i == 2) snprintf(want, sizeof want, "</s>");
    else {
      size_t o = 0;
      for (int j = 0; j < len; j++) {
        if (raw[j] == ' ') memcpy(want + o, "\xe2\x96\x81", 3), o += 3;
        else want[o++] = raw[j];
      }
      want[o] = 0;
    }
    int want_type = i == 0 ? 2 : i <= 2 ? 3 : i <= 258 ? 6 : 1;
    size_t glen;
    const char *gp = gguf_arr_str(g.gguf, "tokenizer.ggml.tokens", (uint64_t)i, &glen);
    memcpy(&gs, scores + 4 * i, 4);
    memcpy(&type, types + 4 * i, 4);
    if (!gp || glen != strlen(want) || memcmp(gp, want, glen) || gs != score || type != want_type) {
      if (bad++ < 5)
        fprintf(stderr, "token %d: '%.*s' score %g type %d; expected '%s' %g %d\n", i, (int)glen,
                gp ? gp : "", gs, type, want, score, want_type);
    }
  }
  fclose(f);
  CHECK_MSG(bad == 0, "%d vocabulary entries differ", bad);
  CHECK(gguf_get_int(g.gguf, "tokenizer.ggml.bos_token_id", -1) == 1);
  CHECK(gguf_get_int(g.gguf, "tokenizer.ggml.eos_token_id", -1) == 2);

  /* the tokenizer built from the GGUF encodes like the one built from tok512.bin */
  ks_tokenizer *t1 = NULL, *t2 = NULL;
  st = tokenizer_load_llama2c(&t1, tokp, 512);
  CHECK_MSG(st == KS_OK, "tokenizer_load_llama2c: %s", ks_last_error());
  st = tokenizer_from_gguf(&t2, g.gguf);
  CHECK_MSG(st == KS_OK, "tokenizer_from_gguf: %s", ks_last_error());
  if (t1 && t2) {
    static const char *texts[] = {"Once upon a time", "  two  spaces\nand a line",
                                  "caf\xc3\xa9 \xe2\x84\xa2 ~[x]", ""};
    for (size_t i = 0; i < KS_ARRAY_LEN(texts); i++) {
      int *a = NULL, *b = NULL, na = 0, nb = 0;
      CHECK(tokenizer_encode(t1, texts[i], strlen(texts[i]), 1, &a, &na) == KS_OK);
      CHECK(tokenizer_encode(t2, texts[i], strlen(texts[i]), 1, &b, &nb) == KS_OK);
      CHECK_MSG(na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a)),
                "'%s' encodes differently (%d vs %d tokens)", texts[i], na, nb);
      free(a);
      free(b);
    }
    CHECK(tokenizer_bos(t2) == 1 && tokenizer_eos(t2) == 2);
  }
  tokenizer_destroy(t1);
  tokenizer_destroy(t2);
  model_deinit(&g);

  /* quantised conversions load and stay close to the original */
  const ks_type qt[] = {KS_TYPE_F16, KS_TYPE_Q8_0, KS_TYPE_Q4_0};
  const double bound[] = {1e-6, 1e-4, 1e-2};
  for (size_t i = 0; i < KS_ARRAY_LEN(qt); i++) {
    snprintf(out, sizeof out, "%s/stories260K-%s.gguf", dir, ks_type_name(qt[i]));
    st = convert_to_gguf(&m, tokp, out, qt[i]);
    CHECK_MSG(st == KS_OK, "%s", ks_last_error());
    if (st || model_load_gguf(&g, out) != KS_OK) {
      CHECK_MSG(0, "%s: %s", out, ks_last_error());
      continue;
    }
    CHECK(g.layers[0].wq.type == qt[i] && g.tok_embd.type == qt[i]);
    /* hidden_dim 172 is not a multiple of 32: ffn_down falls back to F16 for the Q types */
    CHECK(g.layers[0].w_down.type == (ks_type_block_elems(qt[i]) > 1 ? KS_TYPE_F16 : qt[i]));
    CHECK(g.layers[0].attn_norm.type == KS_TYPE_F32);
    double worst = 0;
    worst = fmax(worst, nmse(&g.tok_embd, &m.tok_embd));
    for (int l = 0; l < c->n_layer; l++) {
      worst = fmax(worst, nmse(&g.layers[l].wq, &m.layers[l].wq));
      worst = fmax(worst, nmse(&g.layers[l].wk, &m.layers[l].wk));
      worst = fmax(worst, nmse(&g.layers[l].w_gate, &m.layers[l].w_gate));
      worst = fmax(worst, nmse(&g.layers[l].w_down, &m.layers[l].w_down));
    }
    CHECK_MSG(worst < bound[i], "%s: normalised MSE %g over %g", ks_type_name(qt[i]), worst, bound[i]);
    printf("%s: worst tensor normalised MSE %.3g\n", ks_type_name(qt[i]), worst);
    model_deinit(&g);
  }
  model_deinit(&m);
  return ks_test_done("test_convert_stories");
}
