/* test_model_gguf.c — llama GGUF files into ks_model, and ks_model back out to GGUF.
 * A tiny random llama model is written with the GGUF writer and loaded: configuration,
 * defaults, tied/separate output, every tensor's bytes. Broken variants (other architecture,
 * missing tensor or key, wrong shape, unusable types) must fail with a message naming the
 * culprit. Then convert_to_gguf: F32 is bit-exact, F16/BF16/Q8_0/Q4_0 stay within the error
 * the type explains, norms stay F32, a tied output is omitted, tokenizer keys are copied
 * through, and a llama2.c tokenizer.bin becomes tokenizer.ggml.* keys. The stories260K
 * checkpoint round trip is in test_convert_stories.c (it needs ../shared). */
#include <math.h>
#include <string.h>

#include "convert.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "testutil.h"

static const char *g_dir;

static const char *tmp_path(const char *name) {
  static char p[4][4200];
  static int slot;
  char *s = p[slot++ & 3];
  snprintf(s, sizeof p[0], "%s/%s", g_dir, name);
  return s;
}

/* ---------------------------------------------------------------- a tiny random llama */

enum { DIM = 64, N_LAYER = 2, N_HEAD = 4, N_KV = 2, HEAD = DIM / N_HEAD, VOCAB = 40, CTX = 128 };
#define MAX_HID 96

typedef struct {
  int hidden;     /* 96, or 80 to exercise the F16 fallback of the Q types */
  int n_kv;       /* N_KV, or N_HEAD when head_count_kv is left out */
  int tied;
  const char *arch;
  const char *omit_tensor;  /* leave this tensor out */
  const char *bad_shape;    /* give this tensor one row too many */
  const char *f16_norm;     /* store this norm as F16 */
  const char *q41_tensor;   /* store this matrix with type Q4_1 */
  const char *omit_key;
  int no_kv_key, no_eps, no_base, no_vocab_key, tokenizer;
  int head_count;           /* override llama.attention.head_count */
} spec;

/* f32 values of every tensor; kept so loads and conversions can be compared with them */
typedef struct {
  float tok[VOCAB * DIM], out[VOCAB * DIM], onorm[DIM];
  float an[N_LAYER][DIM], fn[N_LAYER][DIM];
  float q[N_LAYER][DIM * DIM], k[N_LAYER][N_HEAD * HEAD * DIM], v[N_LAYER][N_HEAD * HEAD * DIM];
  float o[N_LAYER][DIM * DIM];
  float gate[N_LAYER][MAX_HID * DIM], down[N_LAYER][DIM * MAX_HID], up[N_LAYER][MAX_HID * DIM];
} weights;

static weights g_w;
static uint16_t g_f16norm[DIM];
static uint8_t g_q41[MAX_HID * DIM / 32 * 20];

static void make_weights(void) {
  ks_fill_rand(g_w.tok, KS_ARRAY_LEN(g_w.tok), 1.0f);
  ks_fill_rand(g_w.out, KS_ARRAY_LEN(g_w.out), 0.5f);
  for (int i = 0; i < DIM; i++) g_w.onorm[i] = 1.0f + 0.1f * ks_randf();
  for (int l = 0; l < N_LAYER; l++) {
    for (int i = 0; i < DIM; i++) g_w.an[l][i] = 1.0f + 0.1f * ks_randf();
    for (int i = 0; i < DIM; i++) g_w.fn[l][i] = 1.0f + 0.1f * ks_randf();
    ks_fill_rand(g_w.q[l], KS_ARRAY_LEN(g_w.q[l]), 0.2f);
    ks_fill_rand(g_w.k[l], KS_ARRAY_LEN(g_w.k[l]), 0.2f);
    ks_fill_rand(g_w.v[l], KS_ARRAY_LEN(g_w.v[l]), 0.2f);
    ks_fill_rand(g_w.o[l], KS_ARRAY_LEN(g_w.o[l]), 0.2f);
    ks_fill_rand(g_w.gate[l], KS_ARRAY_LEN(g_w.gate[l]), 0.2f);
    ks_fill_rand(g_w.down[l], KS_ARRAY_LEN(g_w.down[l]), 0.2f);
    ks_fill_rand(g_w.up[l], KS_ARRAY_LEN(g_w.up[l]), 0.2f);
  }
}

static const char *k_pieces[VOCAB];
static size_t k_piece_len[VOCAB];
static float k_scores[VOCAB];
static int32_t k_types[VOCAB];
static char k_piece_buf[VOCAB][16];

static void make_vocab(void) {
  for (int i = 0; i < VOCAB; i++) {
    if (i == 0) snprintf(k_piece_buf[i], 16, "<unk>");
    else if (i == 1) snprintf(k_piece_buf[i], 16, "<s>");
    else if (i == 2) snprintf(k_piece_buf[i], 16, "</s>");
    else if (i < 3 + 16) snprintf(k_piece_buf[i], 16, "<0x%02X>", i - 3);
    else snprintf(k_piece_buf[i], 16, "\xe2\x96\x81t%d", i);
    k_pieces[i] = k_piece_buf[i];
    k_piece_len[i] = strlen(k_piece_buf[i]);
    k_scores[i] = -(float)i;
    k_types[i] = i == 0 ? 2 : i < 3 ? 3 : i < 19 ? 6 : 1;
  }
}

static int is(const char *a, const char *b) { return a && !strcmp(a, b); }

static void add(ks_gguf_writer *w, const spec *s, const char *name, const float *data, int64_t cols,
                int64_t rows, int norm) {
  if (is(s->omit_tensor, name)) return;
  if (is(s->bad_shape, name)) rows += 1; /* data is large enough: the arrays are oversized */
  if (norm && is(s->f16_norm, name)) {
    ks_quant_row(KS_TYPE_F16, data, g_f16norm, cols);
    gguf_writer_add_tensor(w, name, KS_TYPE_F16, cols, rows, g_f16norm);
    return;
  }
  if (is(s->q41_tensor, name)) { /* Q4_1: a real GGML type kvscope has no kernels for */
    gguf_writer_add_tensor(w, name, (ks_type)3, cols, rows, g_q41);
    return;
  }
  gguf_writer_add_tensor(w, name, KS_TYPE_F32, cols, rows, data);
}

static void set_u32(ks_gguf_writer *w, const spec *s, const char *key, uint32_t v) {
  if (!is(s->omit_key, key)) gguf_writer_set_u32(w, key, v);
}

static const char *write_model(const char *file, const spec *s) {
  const char *path = tmp_path(file);
  int n_kv = s->n_kv ? s->n_kv : N_KV, hid = s->hidden ? s->hidden : 96;
  ks_gguf_writer *w = gguf_writer_create();
  gguf_writer_set_str(w, "general.architecture", s->arch ? s->arch : "llama");
  gguf_writer_set_str(w, "general.name", "tiny");
  set_u32(w, s, "llama.embedding_length", DIM);
  set_u32(w, s, "llama.feed_forward_length", (uint32_t)hid);
  set_u32(w, s, "llama.block_count", N_LAYER);
  set_u32(w, s, "llama.attention.head_count", (uint32_t)(s->head_count ? s->head_count : N_HEAD));
  if (!s->no_kv_key) set_u32(w, s, "llama.attention.head_count_kv", (uint32_t)n_kv);
  set_u32(w, s, "llama.context_length", CTX);
  if (!s->no_eps) gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-6f);
  if (!s->no_base) gguf_writer_set_f32(w, "llama.rope.freq_base", 50000.0f);
  if (!s->no_vocab_key) set_u32(w, s, "llama.vocab_size", VOCAB);
  if (s->tokenizer) {
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", k_pieces, k_piece_len, VOCAB);
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", k_scores, VOCAB);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", k_types, VOCAB);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
  }
  add(w, s, "token_embd.weight", g_w.tok, DIM, VOCAB, 0);
  add(w, s, "output_norm.weight", g_w.onorm, DIM, 1, 1);
  if (!s->tied) add(w, s, "output.weight", g_w.out, DIM, VOCAB, 0);
  for (int l = 0; l < N_LAYER; l++) {
    char n[64];
#define T(suffix, data, cols, rows, norm)                     \
  snprintf(n, sizeof n, "blk.%d." suffix ".weight", l);       \
  add(w, s, n, data, cols, rows, norm)
    T("attn_norm", g_w.an[l], DIM, 1, 1);
    T("attn_q", g_w.q[l], DIM, DIM, 0);
    T("attn_k", g_w.k[l], DIM, n_kv * HEAD, 0);
    T("attn_v", g_w.v[l], DIM, n_kv * HEAD, 0);
    T("attn_output", g_w.o[l], DIM, DIM, 0);
    T("ffn_norm", g_w.fn[l], DIM, 1, 1);
    T("ffn_gate", g_w.gate[l], DIM, hid, 0);
    T("ffn_down", g_w.down[l], hid, DIM, 0);
    T("ffn_up", g_w.up[l], DIM, hid, 0);
#undef T
  }
  ks_status st = gguf_writer_write(w, path);
  gguf_writer_destroy(w);
  REQUIRE(st == KS_OK);
  return path;
}

/* ---------------------------------------------------------------- loading */

static int same(const ks_tensor *t, ks_type type, int64_t cols, int64_t rows, const float *data) {
  return t->type == type && t->ne[0] == cols && t->ne[1] == rows &&
         t->nbytes == (size_t)(cols * rows) * 4 && !memcmp(t->data, data, t->nbytes);
}

static void check_model(const ks_model *m, const spec *s) {
  int n_kv = s->n_kv ? s->n_kv : N_KV, hid = s->hidden ? s->hidden : 96;
  const ks_config *c = &m->cfg;
  CHECK(!strcmp(c->arch, "llama"));
  CHECK(c->dim == DIM && c->hidden_dim == hid && c->n_layer == N_LAYER && c->n_head == N_HEAD);
  CHECK(c->n_kv_head == n_kv && c->head_dim == HEAD && c->vocab_size == VOCAB && c->n_ctx == CTX);
  CHECK(c->norm_eps == (s->no_eps ? 1e-5f : 1e-6f));
  CHECK(c->rope_base == (s->no_base ? 10000.0f : 50000.0f));
  CHECK(c->rope_neox == 0);
  CHECK(m->format == KS_FMT_GGUF && m->gguf != NULL);
  CHECK(m->tied_output == (s->tied != 0));
  CHECK(same(&m->tok_embd, KS_TYPE_F32, DIM, VOCAB, g_w.tok));
  CHECK(same(&m->output_norm, KS_TYPE_F32, DIM, 1, g_w.onorm));
  if (s->tied) CHECK(m->output.data == m->tok_embd.data && m->output.ne[1] == VOCAB);
  else CHECK(same(&m->output, KS_TYPE_F32, DIM, VOCAB, g_w.out));
  for (int l = 0; l < N_LAYER; l++) {
    const ks_layer *L = &m->layers[l];
    CHECK(same(&L->attn_norm, KS_TYPE_F32, DIM, 1, g_w.an[l]));
    CHECK(same(&L->wq, KS_TYPE_F32, DIM, DIM, g_w.q[l]));
    CHECK(same(&L->wk, KS_TYPE_F32, DIM, n_kv * HEAD, g_w.k[l]));
    CHECK(same(&L->wv, KS_TYPE_F32, DIM, n_kv * HEAD, g_w.v[l]));
    CHECK(same(&L->wo, KS_TYPE_F32, DIM, DIM, g_w.o[l]));
    CHECK(same(&L->ffn_norm, KS_TYPE_F32, DIM, 1, g_w.fn[l]));
    CHECK(same(&L->w_gate, KS_TYPE_F32, DIM, hid, g_w.gate[l]));
    CHECK(same(&L->w_down, KS_TYPE_F32, hid, DIM, g_w.down[l]));
    CHECK(same(&L->w_up, KS_TYPE_F32, DIM, hid, g_w.up[l]));
  }
  size_t size;
  const void *data = gguf_file_data(m->gguf, &size);
  CHECK(m->map == data && m->map_size == size);
  CHECK(m->fingerprint == model_fingerprint_bytes(data, size) && m->fingerprint != 0);
  uint64_t wb = (uint64_t)(VOCAB * DIM * (s->tied ? 1 : 2) + DIM) * 4 +
                (uint64_t)N_LAYER * 4 * (2 * DIM + 2 * DIM * DIM + 2 * n_kv * HEAD * DIM + 3 * hid * DIM);
  CHECK_MSG(model_weight_bytes(m) == wb, "%llu vs %llu", (unsigned long long)model_weight_bytes(m),
            (unsigned long long)wb);
}

static void test_load_ok(void) {
  spec variants[] = {
      {.tokenizer = 1},
      {.tied = 1},
      {.hidden = 80, .no_eps = 1, .no_base = 1},
      {.n_kv = N_HEAD, .no_kv_key = 1},
      {.no_vocab_key = 1, .tokenizer = 1}, /* vocab from the tokenizer */
      {.no_vocab_key = 1},                 /* vocab from token_embd */
  };
  for (size_t i = 0; i < KS_ARRAY_LEN(variants); i++) {
    const char *path = write_model("ok.gguf", &variants[i]);
    ks_model m;
    ks_status st = model_load_gguf(&m, path);
    CHECK_MSG(st == KS_OK, "variant %zu: %s", i, ks_last_error());
    if (st == KS_OK) {
      check_model(&m, &variants[i]);
      CHECK(!strcmp(m.path, path));
    }
    model_deinit(&m);
    /* the format dispatch finds it too */
    st = model_load(&m, path);
    CHECK_MSG(st == KS_OK && m.format == KS_FMT_GGUF, "model_load: %s", ks_last_error());
    model_deinit(&m);
  }
}

static void expect_fail_at(int line, const spec *s, ks_status want, const char *frag1,
                           const char *frag2) {
  const char *path = write_model("bad.gguf", s);
  ks_model m;
  ks_status st = model_load_gguf(&m, path);
  const char *msg = ks_last_error();
  if (st != want || !strstr(msg, path) || (frag1 && !strstr(msg, frag1)) ||
      (frag2 && !strstr(msg, frag2))) {
    fprintf(stderr, "test_model_gguf.c:%d: status %d (want %d), message: %s (want '%s', '%s')\n",
            line, st, want, msg, frag1, frag2 ? frag2 : "");
    ks_test_failures++;
  }
  CHECK(m.gguf == NULL && m.layers == NULL && m.map == NULL); /* cleaned up */
  model_deinit(&m);                                           /* and still deinit-able */
}
#define EXPECT_FAIL(st, f1, f2, ...)                 \
  do {                                               \
    spec s_ = {__VA_ARGS__};                         \
    expect_fail_at(__LINE__, &s_, st, f1, f2);       \
  } while (0)

static void test_load_errors(void) {
  EXPECT_FAIL(KS_ERR_UNSUPPORTED, "unsupported architecture 'gpt9'", "kvscope runs llama",
              .arch = "gpt9");
  EXPECT_FAIL(KS_ERR_FORMAT, "blk.1.ffn_up.weight", "no tensor", .omit_tensor = "blk.1.ffn_up.weight");
  EXPECT_FAIL(KS_ERR_FORMAT, "token_embd.weight", NULL, .omit_tensor = "token_embd.weight");
  EXPECT_FAIL(KS_ERR_FORMAT, "output_norm.weight", NULL, .omit_tensor = "output_norm.weight");
  EXPECT_FAIL(KS_ERR_FORMAT, "blk.0.attn_k.weight", "shape", .bad_shape = "blk.0.attn_k.weight");
  EXPECT_FAIL(KS_ERR_FORMAT, "output.weight", "shape", .bad_shape = "output.weight");
  EXPECT_FAIL(KS_ERR_UNSUPPORTED, "blk.1.ffn_norm.weight", "F16", .f16_norm = "blk.1.ffn_norm.weight");
  EXPECT_FAIL(KS_ERR_UNSUPPORTED, "blk.0.attn_q.weight", "Q4_1", .q41_tensor = "blk.0.attn_q.weight");
  EXPECT_FAIL(KS_ERR_UNSUPPORTED, "token_embd.weight", "Q4_1", .q41_tensor = "token_embd.weight");
  EXPECT_FAIL(KS_ERR_FORMAT, "llama.embedding_length", NULL, .omit_key = "llama.embedding_length");
  EXPECT_FAIL(KS_ERR_FORMAT, "llama.block_count", NULL, .omit_key = "llama.block_count");
  EXPECT_FAIL(KS_ERR_FORMAT, "head_count", NULL, .head_count = 5);
  /* head_count_kv left out means head_count_kv = head_count: the K/V shapes no longer fit */
  EXPECT_FAIL(KS_ERR_FORMAT, "blk.0.attn_k.weight", "shape", .no_kv_key = 1);

  /* not a model at all: a GGUF without an architecture */
  ks_gguf_writer *w = gguf_writer_create();
  gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
  const char *path = tmp_path("vocab_only.gguf");
  REQUIRE(gguf_writer_write(w, path) == KS_OK);
  gguf_writer_destroy(w);
  ks_model m;
  CHECK(model_load_gguf(&m, path) == KS_ERR_FORMAT && strstr(ks_last_error(), "general.architecture"));
  model_deinit(&m);
  /* a container error passes through with its own message */
  CHECK(model_load_gguf(&m, tmp_path("missing.gguf")) == KS_ERR_IO &&
        strstr(ks_last_error(), "missing.gguf"));
  model_deinit(&m);
}

/* ---------------------------------------------------------------- conversion */

/* Max |a - b| over a row allowed for type t given the row's max |value| */
static float row_bound(ks_type t, float amax) {
  switch (t) {
  case KS_TYPE_F32: return 0;
  case KS_TYPE_F16: return amax * 0x1p-11f + 0x1p-25f; /* relative, or half a subnormal step */
  case KS_TYPE_BF16: return amax * 0x1p-8f;
  case KS_TYPE_Q8_0: return amax / 127.0f * 0.6f;
  case KS_TYPE_Q4_0: return amax / 8.0f * 1.05f;
  }
  return 0;
}

static void check_converted(const char *what, const ks_tensor *t, ks_type want, int64_t cols,
                            int64_t rows, const float *ref) {
  if (t->type != want || t->ne[0] != cols || t->ne[1] != rows) {
    CHECK_MSG(0, "%s: type %s [%lld, %lld], expected %s [%lld, %lld]", what, ks_type_name(t->type),
              (long long)t->ne[0], (long long)t->ne[1], ks_type_name(want), (long long)cols,
              (long long)rows);
    return;
  }
  float row[MAX_HID];
  size_t rb = ks_type_row_bytes(want, cols);
  for (int64_t r = 0; r < rows; r++) {
    ks_dequant_row(want, (const uint8_t *)t->data + r * rb, row, cols);
    const float *x = ref + r * cols;
    /* per block of 32 (or the whole row) the bound follows that block's largest value */
    for (int64_t b0 = 0; b0 < cols; b0 += 32) {
      int64_t b1 = KS_MIN(cols, b0 + 32);
      float amax = 0;
      for (int64_t j = b0; j < b1; j++) amax = fmaxf(amax, fabsf(x[j]));
      for (int64_t j = b0; j < b1; j++) {
        float bound = want == KS_TYPE_F16 || want == KS_TYPE_BF16 ? row_bound(want, fabsf(x[j]))
                                                                   : row_bound(want, amax);
        if (fabsf(row[j] - x[j]) > bound) {
          CHECK_MSG(0, "%s (%s) row %lld col %lld: %g vs %g", what, ks_type_name(want),
                    (long long)r, (long long)j, row[j], x[j]);
          return;
        }
      }
    }
  }
}

static void test_convert_types(void) {
  spec s = {.tokenizer = 1, .hidden = 80}; /* ffn_down rows of 80: not a multiple of 32 */
  const char *src = write_model("src.gguf", &s);
  ks_model m;
  REQUIRE(model_load_gguf(&m, src) == KS_OK);
  const ks_type types[] = {KS_TYPE_F32, KS_TYPE_F16, KS_TYPE_BF16, KS_TYPE_Q8_0, KS_TYPE_Q4_0};
  for (size_t ti = 0; ti < KS_ARRAY_LEN(types); ti++) {
    ks_type wt = types[ti];
    char name[64];
    snprintf(name, sizeof name, "conv_%s.gguf", ks_type_name(wt));
    const char *out = tmp_path(name);
    ks_status st = convert_to_gguf(&m, NULL, out, wt);
    CHECK_MSG(st == KS_OK, "%s: %s", name, ks_last_error());
    if (st) continue;
    ks_model c;
    st = model_load_gguf(&c, out);
    CHECK_MSG(st == KS_OK, "%s: %s", name, ks_last_error());
    if (st) continue;
    CHECK(!memcmp(&c.cfg, &m.cfg, sizeof c.cfg));
    CHECK(c.tied_output == 0);
    ks_type fb = ks_type_block_elems(wt) > 1 ? KS_TYPE_F16 : wt; /* for rows of 80 */
    check_converted("token_embd", &c.tok_embd, wt, DIM, VOCAB, g_w.tok);
    check_converted("output", &c.output, wt, DIM, VOCAB, g_w.out);
    CHECK(same(&c.output_norm, KS_TYPE_F32, DIM, 1, g_w.onorm));
    for (int l = 0; l < N_LAYER; l++) {
      const ks_layer *L = &c.layers[l];
      CHECK(same(&L->attn_norm, KS_TYPE_F32, DIM, 1, g_w.an[l]));
      CHECK(same(&L->ffn_norm, KS_TYPE_F32, DIM, 1, g_w.fn[l]));
      check_converted("wq", &L->wq, wt, DIM, DIM, g_w.q[l]);
      check_converted("wk", &L->wk, wt, DIM, N_KV * HEAD, g_w.k[l]);
      check_converted("wv", &L->wv, wt, DIM, N_KV * HEAD, g_w.v[l]);
      check_converted("wo", &L->wo, wt, DIM, DIM, g_w.o[l]);
      check_converted("w_gate", &L->w_gate, wt, DIM, 80, g_w.gate[l]);
      check_converted("w_down", &L->w_down, fb, 80, DIM, g_w.down[l]);
      check_converted("w_up", &L->w_up, wt, DIM, 80, g_w.up[l]);
    }
    if (wt == KS_TYPE_F32) { /* bit-exact */
      CHECK(same(&c.tok_embd, KS_TYPE_F32, DIM, VOCAB, g_w.tok));
      CHECK(same(&c.layers[1].w_down, KS_TYPE_F32, 80, DIM, g_w.down[1]));
    }
    if (wt == KS_TYPE_Q8_0) { /* the bytes are what the quantiser makes of the f32 rows */
      uint8_t q[VOCAB * 68];
      ks_quant_row(KS_TYPE_Q8_0, g_w.tok, q, VOCAB * DIM);
      CHECK(!memcmp(c.tok_embd.data, q, sizeof q));
    }
    /* metadata llama.cpp needs, and the tokenizer copied through */
    const ks_gguf *g = c.gguf;
    CHECK(is(gguf_get_str(g, "general.architecture"), "llama"));
    CHECK(is(gguf_get_str(g, "general.name"), "src"));
    CHECK(gguf_get_int(g, "llama.rope.dimension_count", -1) == HEAD);
    CHECK(gguf_get_int(g, "llama.vocab_size", -1) == VOCAB);
    CHECK(gguf_get_int(g, "general.file_type", -1) ==
          (wt == KS_TYPE_F32 ? 0 : wt == KS_TYPE_F16 ? 1 : wt == KS_TYPE_BF16 ? 32 : wt == KS_TYPE_Q8_0 ? 7 : 2));
    CHECK(is(gguf_get_str(g, "tokenizer.ggml.model"), "llama"));
    gguf_vtype et;
    CHECK(gguf_arr_len(g, "tokenizer.ggml.tokens", &et) == VOCAB && et == GGUF_T_STRING);
    for (int i = 0; i < VOCAB; i++) {
      size_t len;
      const char *p = gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &len);
      CHECK(p && len == k_piece_len[i] && !memcmp(p, k_pieces[i], len));
    }
    CHECK(!memcmp(gguf_arr_data(g, "tokenizer.ggml.scores"), k_scores, sizeof k_scores));
    CHECK(!memcmp(gguf_arr_data(g, "tokenizer.ggml.token_type"), k_types, sizeof k_types));
    CHECK(gguf_get_int(g, "tokenizer.ggml.eos_token_id", -1) == 2);
    model_deinit(&c);

    /* and a second conversion of the converted file gives the same tensors back */
    if (wt == KS_TYPE_Q8_0 || wt == KS_TYPE_Q4_0) {
      ks_model c1, c2;
      REQUIRE(model_load_gguf(&c1, out) == KS_OK);
      const char *out2 = tmp_path("reconv.gguf");
      CHECK(convert_to_gguf(&c1, NULL, out2, wt) == KS_OK);
      REQUIRE(model_load_gguf(&c2, out2) == KS_OK);
      CHECK(c1.layers[0].wq.nbytes == c2.layers[0].wq.nbytes &&
            !memcmp(c1.layers[0].wq.data, c2.layers[0].wq.data, c1.layers[0].wq.nbytes));
      model_deinit(&c1);
      model_deinit(&c2);
    }
  }
  CHECK(convert_to_gguf(&m, NULL, tmp_path("x.gguf"), (ks_type)12) == KS_ERR_ARG);
  CHECK(strstr(ks_last_error(), "Q4_K"));
  model_deinit(&m);

  /* tied output: no output.weight in the file, and tied again when loaded */
  spec st = {.tied = 1};
  src = write_model("tied.gguf", &st);
  REQUIRE(model_load_gguf(&m, src) == KS_OK);
  const char *out = tmp_path("tied_q8.gguf");
  CHECK(convert_to_gguf(&m, NULL, out, KS_TYPE_Q8_0) == KS_OK);
  model_deinit(&m);
  ks_model c;
  CHECK(model_load_gguf(&c, out) == KS_OK);
  if (c.gguf) {
    CHECK(gguf_find_tensor(c.gguf, "output.weight") < 0);
    CHECK(c.tied_output == 1 && c.output.data == c.tok_embd.data);
    CHECK(gguf_find_key(c.gguf, "tokenizer.ggml.model") < 0); /* none to copy */
  }
  model_deinit(&c);
}

/* A llama2.c tokenizer.bin: int32 max_token_length, then per token f32 score, int32 length,
 * bytes; BOS/EOS exported as "\n<s>\n" / "\n</s>\n", spaces as ' '. */
static const char *write_tokenizer_bin(const char *file, int n_tokens, int extra) {
  const char *path = tmp_path(file);
  FILE *f = fopen(path, "wb");
  REQUIRE(f);
  int32_t max_len = 8;
  fwrite(&max_len, 4, 1, f);
  for (int i = 0; i < n_tokens + extra; i++) {
    char piece[32];
    if (i == 0) snprintf(piece, sizeof piece, "<unk>");
    else if (i == 1) snprintf(piece, sizeof piece, "\n<s>\n");
    else if (i == 2) snprintf(piece, sizeof piece, "\n</s>\n");
    else if (i < 3 + 16) snprintf(piece, sizeof piece, "<0x%02X>", i - 3);
    else if (i == 19) snprintf(piece, sizeof piece, " ");
    else if (i == 20) snprintf(piece, sizeof piece, "a b ");
    else if (i == 21) snprintf(piece, sizeof piece, "<0xZZ>"); /* not a byte token */
    else snprintf(piece, sizeof piece, " t%d", i);
    float score = i >= 19 ? -(float)(i - 19) : 0.0f;
    int32_t len = (int32_t)strlen(piece);
    fwrite(&score, 4, 1, f);
    fwrite(&len, 4, 1, f);
    fwrite(piece, 1, (size_t)len, f);
  }
  fclose(f);
  return path;
}

static void test_convert_tokenizer_bin(void) {
  spec s = {0};
  const char *src = write_model("notok.gguf", &s);
  ks_model m;
  REQUIRE(model_load_gguf(&m, src) == KS_OK);
  const char *tok = write_tokenizer_bin("tok.bin", VOCAB, 0);
  const char *out = tmp_path("with_tok.gguf");
  ks_status st = convert_to_gguf(&m, tok, out, KS_TYPE_F16);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  ks_gguf *g = NULL;
  if (!st && gguf_open(&g, out) == KS_OK) {
    CHECK(is(gguf_get_str(g, "tokenizer.ggml.model"), "llama"));
    CHECK(gguf_get_int(g, "tokenizer.ggml.bos_token_id", -1) == 1);
    CHECK(gguf_get_int(g, "tokenizer.ggml.eos_token_id", -1) == 2);
    gguf_vtype et;
    CHECK(gguf_arr_len(g, "tokenizer.ggml.tokens", &et) == VOCAB && et == GGUF_T_STRING);
    CHECK(gguf_arr_len(g, "tokenizer.ggml.scores", &et) == VOCAB && et == GGUF_T_FLOAT32);
    CHECK(gguf_arr_len(g, "tokenizer.ggml.token_type", &et) == VOCAB && et == GGUF_T_INT32);
    static const struct {
      int id;
      const char *piece;
      int type;
    } want[] = {
        {0, "<unk>", 2},   {1, "<s>", 3},  {2, "</s>", 3}, {3, "<0x00>", 6}, {18, "<0x0F>", 6},
        {19, "\xe2\x96\x81", 1}, {20, "a\xe2\x96\x81" "b\xe2\x96\x81", 1}, {21, "<0xZZ>", 1},
        {22, "\xe2\x96\x81t22", 1},
    };
    int32_t types[VOCAB];
    float scores[VOCAB];
    memcpy(types, gguf_arr_data(g, "tokenizer.ggml.token_type"), sizeof types);
    memcpy(scores, gguf_arr_data(g, "tokenizer.ggml.scores"), sizeof scores);
    for (size_t i = 0; i < KS_ARRAY_LEN(want); i++) {
      size_t len;
      const char *p = gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)want[i].id, &len);
      CHECK_MSG(p && len == strlen(want[i].piece) && !memcmp(p, want[i].piece, len),
                "token %d: '%.*s'", want[i].id, (int)len, p ? p : "");
      CHECK_MSG(types[want[i].id] == want[i].type, "token %d type %d", want[i].id,
                types[want[i].id]);
    }
    CHECK(scores[0] == 0.0f && scores[25] == -6.0f);
    gguf_close(g);
  } else {
    CHECK_MSG(0, "cannot open %s: %s", out, ks_last_error());
  }
  /* a tokenizer for another vocabulary size is refused, in both directions */
  CHECK(convert_to_gguf(&m, write_tokenizer_bin("short.bin", VOCAB - 1, 0), tmp_path("o.gguf"),
                        KS_TYPE_F32) == KS_ERR_FORMAT);
  CHECK(strstr(ks_last_error(), "short.bin") && strstr(ks_last_error(), "39 tokens"));
  CHECK(convert_to_gguf(&m, write_tokenizer_bin("long.bin", VOCAB, 5), tmp_path("o.gguf"),
                        KS_TYPE_F32) == KS_ERR_ARG);
  CHECK(strstr(ks_last_error(), "long.bin"));
  CHECK(convert_to_gguf(&m, tmp_path("nope.bin"), tmp_path("o.gguf"), KS_TYPE_F32) == KS_ERR_IO);
  FILE *f = fopen(tmp_path("o.gguf"), "rb");
  CHECK(f == NULL); /* nothing written on failure */
  if (f) fclose(f);
  model_deinit(&m);
}

int main(void) {
  ks_test_seed();
  g_dir = ks_test_tmpdir("test_model_gguf");
  make_weights();
  make_vocab();
  for (size_t i = 0; i < sizeof g_q41; i++) g_q41[i] = (uint8_t)ks_randu();
  test_load_ok();
  test_load_errors();
  test_convert_types();
  test_convert_tokenizer_bin();
  return ks_test_done("test_model_gguf");
}
