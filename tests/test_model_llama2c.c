/* test_model_llama2c.c — the llama2.c checkpoint loader: the real stories260K file, small
 * synthetic checkpoints (shared and separate classifier) whose every tensor offset is checked,
 * and hostile files (empty, short, bad header fields, truncated, trailing bytes, "ak42"
 * exports, random bytes), each of which must fail with the right status and a useful message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "model.h"
#include "ref_cpu.h"
#include "testutil.h"

static const char *g_dir;

static const char *write_file(const char *name, const void *data, size_t len) {
  static char path[8][4352];
  static int slot;
  char *p = path[slot++ & 7];
  snprintf(p, 4352, "%s/%s", g_dir, name);
  FILE *f = fopen(p, "wb");
  REQUIRE(f);
  if (len) REQUIRE(fwrite(data, 1, len, f) == len);
  REQUIRE(fclose(f) == 0);
  return p;
}

static unsigned char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  REQUIRE(f);
  REQUIRE(fseek(f, 0, SEEK_END) == 0);
  long n = ftell(f);
  REQUIRE(n >= 0);
  rewind(f);
  unsigned char *b = malloc((size_t)n + 64);
  REQUIRE(b);
  REQUIRE(fread(b, 1, (size_t)n, f) == (size_t)n);
  fclose(f);
  *len = (size_t)n;
  return b;
}

/* Loads with `loader`, expects status `want` and every needle (NULL-terminated) in the message.
 * The failed model must be safe to deinit. */
#define EXPECT_FAIL(loader, path, want, ...) expect_fail(__LINE__, #loader, loader, path, want, \
                                                         (const char *[]){__VA_ARGS__, NULL})
static void expect_fail(int line, const char *lname, ks_status (*loader)(ks_model *, const char *),
                        const char *path, ks_status want, const char **needles) {
  ks_model m;
  memset(&m, 0xa5, sizeof m); /* garbage in: the loader must not trust it */
  ks_status st = loader(&m, path);
  const char *msg = ks_last_error();
  if (getenv("KS_TEST_VERBOSE")) printf("%s: %s\n", ks_status_name(st), msg);
  if (st != want) {
    fprintf(stderr, "line %d: %s(%s) returned %s (%d), wanted %s: %s\n", line, lname, path,
            ks_status_name(st), st, ks_status_name(want), msg);
    ks_test_failures++;
  }
  for (const char **n = needles; *n; n++)
    if (!strstr(msg, *n)) {
      fprintf(stderr, "line %d: %s(%s) message lacks \"%s\": %s\n", line, lname, path, *n, msg);
      ks_test_failures++;
    }
  model_deinit(&m);
}

typedef struct {
  int32_t dim, hidden, layers, heads, kv_heads, vocab, seq;
} hdr;

static const char *header_file(const char *name, hdr h, size_t extra_bytes) {
  size_t len = sizeof h + extra_bytes;
  unsigned char *b = calloc(1, len);
  REQUIRE(b);
  memcpy(b, &h, sizeof h);
  const char *p = write_file(name, b, len);
  free(b);
  return p;
}

/* Expected file bytes of a synthetic checkpoint, independent of the loader's arithmetic. */
static size_t ckpt_floats(hdr h, int shared) {
  size_t dim = h.dim, hid = h.hidden, L = h.layers, hs = dim / h.heads, kv = hs * h.kv_heads;
  size_t vocab = h.vocab < 0 ? (size_t)-h.vocab : (size_t)h.vocab;
  return vocab * dim + L * (2 * dim + 2 * dim * dim + 2 * kv * dim + 3 * hid * dim) + dim +
         (size_t)h.seq * hs + (shared ? 0 : vocab * dim);
}

/* A checkpoint whose float k (counting from the first weight) has value k: offsets are then
 * readable from the tensor data. */
static const char *synthetic(const char *name, hdr h, int shared, size_t *nbytes) {
  size_t nf = ckpt_floats(h, shared);
  size_t len = sizeof h + nf * sizeof(float);
  unsigned char *b = malloc(len);
  REQUIRE(b);
  memcpy(b, &h, sizeof h);
  for (size_t k = 0; k < nf; k++) {
    float v = (float)k;
    memcpy(b + sizeof h + k * sizeof(float), &v, sizeof v);
  }
  const char *p = write_file(name, b, len);
  free(b);
  *nbytes = len;
  return p;
}

static float first(const ks_tensor *t) { return ((const float *)t->data)[0]; }

static void check_synthetic(int shared) {
  hdr h = {8, 12, 2, 4, 2, 10, 6};
  if (!shared) h.vocab = -h.vocab;
  size_t len;
  const char *p = synthetic(shared ? "syn_shared.bin" : "syn_sep.bin", h, shared, &len);
  ks_model m;
  ks_status st = model_load_llama2c(&m, p);
  if (st) fprintf(stderr, "synthetic load: %s\n", ks_last_error());
  REQUIRE(st == KS_OK);
  const size_t dim = 8, hid = 12, hs = 2, kv = 4, vocab = 10, L = 2;
  CHECK(m.cfg.vocab_size == 10 && m.cfg.head_dim == 2 && m.cfg.n_kv_head == 2);
  CHECK(m.tied_output == shared);
  CHECK(m.map_size == len);
  CHECK((const unsigned char *)m.tok_embd.data == (const unsigned char *)m.map + 28);
  /* expected start (in floats) of each block */
  size_t o = 0, tok = o;
  o += vocab * dim;
  size_t ratt = o;
  o += L * dim;
  size_t wq = o;
  o += L * dim * dim;
  size_t wk = o;
  o += L * kv * dim;
  size_t wv = o;
  o += L * kv * dim;
  size_t wo = o;
  o += L * dim * dim;
  size_t rffn = o;
  o += L * dim;
  size_t w1 = o;
  o += L * hid * dim;
  size_t w2 = o;
  o += L * dim * hid;
  size_t w3 = o;
  o += L * hid * dim;
  size_t rfin = o;
  o += dim + h.seq * hs;
  size_t wcls = shared ? tok : o;
  CHECK(first(&m.tok_embd) == tok);
  CHECK(first(&m.output_norm) == rfin);
  CHECK(first(&m.output) == wcls);
  CHECK(m.output.ne[0] == 8 && m.output.ne[1] == 10 && m.output.nbytes == 320);
  for (size_t l = 0; l < L; l++) {
    const ks_layer *y = &m.layers[l];
    CHECK(first(&y->attn_norm) == ratt + l * dim);
    CHECK(first(&y->wq) == wq + l * dim * dim);
    CHECK(first(&y->wk) == wk + l * kv * dim);
    CHECK(first(&y->wv) == wv + l * kv * dim);
    CHECK(first(&y->wo) == wo + l * dim * dim);
    CHECK(first(&y->ffn_norm) == rffn + l * dim);
    CHECK(first(&y->w_gate) == w1 + l * hid * dim);
    CHECK(first(&y->w_down) == w2 + l * dim * hid);
    CHECK(first(&y->w_up) == w3 + l * hid * dim);
    CHECK(y->wk.ne[0] == 8 && y->wk.ne[1] == 4 && y->wk.nbytes == 128);
    CHECK(y->w_down.ne[0] == 12 && y->w_down.ne[1] == 8);
    CHECK(y->w_gate.ne[0] == 8 && y->w_gate.ne[1] == 12);
  }
  CHECK(model_weight_bytes(&m) == (ckpt_floats(h, shared) - h.seq * hs) * 4);
  model_deinit(&m);
  CHECK(m.map == NULL && m.layers == NULL);

  /* one byte short, one float long: both refused, with both sizes in the message */
  unsigned char *b = read_all(p, &len);
  char want[64], have[64];
  snprintf(want, sizeof want, "exactly %zu bytes", len);
  snprintf(have, sizeof have, "has %zu", len - 1);
  EXPECT_FAIL(model_load_llama2c, write_file("syn_short.bin", b, len - 1), KS_ERR_FORMAT, want,
              have, "truncated");
  memset(b + len, 0, 4);
  snprintf(have, sizeof have, "has %zu", len + 4);
  EXPECT_FAIL(model_load_llama2c, write_file("syn_long.bin", b, len + 4), KS_ERR_FORMAT, want, have);
  free(b);
}

static void check_real(const char *path) {
  ks_model m;
  ks_status st = model_load(&m, path);
  if (st) fprintf(stderr, "model_load(%s): %s\n", path, ks_last_error());
  REQUIRE(st == KS_OK);
  const ks_config *c = &m.cfg;
  printf("stories260K: dim %d hidden %d layers %d heads %d kv %d vocab %d ctx %d tied %d\n",
         c->dim, c->hidden_dim, c->n_layer, c->n_head, c->n_kv_head, c->vocab_size, c->n_ctx,
         m.tied_output);
  CHECK(strcmp(c->arch, "llama") == 0);
  CHECK(c->dim == 64 && c->hidden_dim == 172 && c->n_layer == 5);
  CHECK(c->n_head == 8 && c->n_kv_head == 4 && c->head_dim == 8);
  CHECK(c->vocab_size == 512 && c->n_ctx == 512);
  CHECK(c->norm_eps == 1e-5f && c->rope_base == 10000.0f && c->rope_neox == 0);
  CHECK(m.format == KS_FMT_LLAMA2C && m.tied_output == 1 && m.gguf == NULL);
  CHECK(m.output.data == m.tok_embd.data);
  CHECK(m.map_size == 1056540);
  CHECK(m.fingerprint != 0 && m.fingerprint == model_fingerprint_bytes(m.map, m.map_size));
  CHECK(strcmp(m.path, path) == 0);
  /* all weights minus the two skipped RoPE tables (512 x 4 floats each) */
  CHECK(model_weight_bytes(&m) == 1056540 - 28 - 2 * 512 * 4 * 4);
  CHECK(m.layers[4].w_up.ne[0] == 64 && m.layers[4].w_up.ne[1] == 172);
  CHECK((const unsigned char *)m.layers[4].w_up.data + m.layers[4].w_up.nbytes ==
        (const unsigned char *)m.output_norm.data);
  CHECK((const unsigned char *)m.output_norm.data + 64 * 4 + 2 * 512 * 4 * 4 ==
        (const unsigned char *)m.map + m.map_size);
  model_deinit(&m);

  /* the same through the direct entry point */
  REQUIRE(model_load_llama2c(&m, path) == KS_OK);
  CHECK(m.cfg.dim == 64 && m.tied_output == 1);
  model_deinit(&m);
}

static void check_truncations(const char *real) {
  size_t len;
  unsigned char *b = read_all(real, &len);
  char want[64];
  snprintf(want, sizeof want, "exactly %zu bytes", len);
  /* inside the header, at every multiple of 4 (and odd lengths around them) */
  for (size_t n = 0; n < 28; n++) {
    char name[32];
    snprintf(name, sizeof name, "trunc_%zu.bin", n);
    const char *p = write_file(name, b, n);
    const char *needle = n == 0 ? "empty" : "too short";
    EXPECT_FAIL(model_load_llama2c, p, KS_ERR_FORMAT, needle);
    EXPECT_FAIL(model_load, p, KS_ERR_FORMAT, "too short");
  }
  /* header complete, weights cut: by one byte, one float, in the middle, right after the header */
  const size_t cuts[] = {28, 29, 31, 32, 1000, len / 2, len - 16384, len - 4, len - 1};
  for (size_t i = 0; i < KS_ARRAY_LEN(cuts); i++) {
    char name[32], have[64];
    snprintf(name, sizeof name, "cut_%zu.bin", cuts[i]);
    snprintf(have, sizeof have, "the file has %zu", cuts[i]);
    const char *p = write_file(name, b, cuts[i]);
    EXPECT_FAIL(model_load_llama2c, p, KS_ERR_FORMAT, "truncated", want, have);
    EXPECT_FAIL(model_load, p, KS_ERR_FORMAT, "truncated", want, have);
  }
  /* trailing bytes: a size that does not fit the header is not silently accepted */
  memset(b + len, 0, 8);
  EXPECT_FAIL(model_load, write_file("long.bin", b, len + 8), KS_ERR_FORMAT, want, "longer");
  /* shared flag flipped: the classifier would have to follow the weights */
  int32_t v = -512;
  memcpy(b + 20, &v, 4);
  snprintf(want, sizeof want, "exactly %zu bytes", len + 512 * 64 * 4);
  EXPECT_FAIL(model_load, write_file("unshared.bin", b, len), KS_ERR_FORMAT, want, "separate");
  free(b);
}

static void check_headers(void) {
  const hdr ok = {64, 172, 5, 8, 4, 512, 512};
  struct {
    const char *name;
    hdr h;
    const char *needle;
  } cases[] = {
      {"zero_dim", {0, 172, 5, 8, 4, 512, 512}, "dim = 0"},
      {"neg_dim", {-64, 172, 5, 8, 4, 512, 512}, "dim = -64"},
      {"huge_dim", {INT32_MAX, 172, 5, 8, 4, 512, 512}, "dim = 2147483647"},
      {"zero_hidden", {64, 0, 5, 8, 4, 512, 512}, "hidden_dim = 0"},
      {"huge_hidden", {64, INT32_MAX, 5, 8, 4, 512, 512}, "hidden_dim"},
      {"neg_layers", {64, 172, -5, 8, 4, 512, 512}, "n_layers = -5"},
      {"zero_layers", {64, 172, 0, 8, 4, 512, 512}, "n_layers = 0"},
      {"huge_layers", {64, 172, 1 << 30, 8, 4, 512, 512}, "n_layers"},
      {"zero_heads", {64, 172, 5, 0, 4, 512, 512}, "n_heads = 0"},
      {"heads_gt_dim", {64, 172, 5, 128, 4, 512, 512}, "n_heads = 128"},
      {"zero_kv", {64, 172, 5, 8, 0, 512, 512}, "n_kv_heads = 0"},
      {"kv_gt_heads", {64, 172, 5, 8, 16, 512, 512}, "n_kv_heads = 16"},
      {"zero_vocab", {64, 172, 5, 8, 4, 0, 512}, "vocab_size"},
      {"min_vocab", {64, 172, 5, 8, 4, INT32_MIN, 512}, "vocab_size"},
      {"huge_vocab", {64, 172, 5, 8, 4, INT32_MAX, 512}, "vocab_size"},
      {"zero_seq", {64, 172, 5, 8, 4, 512, 0}, "seq_len = 0"},
      {"neg_seq", {64, 172, 5, 8, 4, 512, -1}, "seq_len = -1"},
      {"dim_heads", {64, 172, 5, 6, 3, 512, 512}, "not a multiple of n_heads"},
      {"heads_kv", {64, 172, 5, 8, 3, 512, 512}, "not a multiple of n_kv_heads"},
      {"odd_head", {24, 172, 5, 8, 4, 512, 512}, "odd"},
  };
  for (size_t i = 0; i < KS_ARRAY_LEN(cases); i++) {
    char name[64];
    snprintf(name, sizeof name, "%s.bin", cases[i].name);
    /* give each file the real model's size so only the header can be to blame */
    const char *p = header_file(name, cases[i].h, 1056540 - 28);
    EXPECT_FAIL(model_load_llama2c, p, KS_ERR_FORMAT, cases[i].needle);
    EXPECT_FAIL(model_load, p, KS_ERR_FORMAT, cases[i].needle);
  }
  /* the largest header the bounds allow: sizes near 2^50 bytes must not overflow or map */
  hdr big = {1 << 16, 1 << 20, 4096, 1 << 10, 1 << 10, -(1 << 24), 1 << 24};
  EXPECT_FAIL(model_load_llama2c, header_file("big.bin", big, 64), KS_ERR_FORMAT, "truncated",
              "the file has 92");
  /* an all-valid header with no weights */
  EXPECT_FAIL(model_load_llama2c, header_file("hdr_only.bin", ok, 0), KS_ERR_FORMAT, "truncated",
              "exactly 1056540 bytes", "the file has 28");
}

static void check_other_formats(void) {
  /* llama2.c version 1 (f32) and 2 (Q8_0) exports: 256-byte header starting "ak42" */
  for (int version = 1; version <= 2; version++) {
    unsigned char b[256 + 64] = {0};
    uint32_t magic = 0x616b3432;
    int32_t ver = version;
    memcpy(b, &magic, 4);
    memcpy(b + 4, &ver, 4);
    int32_t params[7] = {64, 172, 5, 8, 4, 512, 512};
    memcpy(b + 8, params, sizeof params);
    char name[32], needle[32];
    snprintf(name, sizeof name, "ak42_v%d.bin", version);
    snprintf(needle, sizeof needle, "version %d", version);
    const char *p = write_file(name, b, sizeof b);
    EXPECT_FAIL(model_load_llama2c, p, KS_ERR_UNSUPPORTED, "ak42", needle, "legacy", "GGUF");
    EXPECT_FAIL(model_load, p, KS_ERR_UNSUPPORTED, "ak42", "legacy", "GGUF");
  }
  EXPECT_FAIL(model_load_llama2c, write_file("ak42_short.bin", "24ka", 4), KS_ERR_UNSUPPORTED,
              "ak42");
  /* a GGUF handed straight to the llama2.c reader */
  unsigned char g[64] = {'G', 'G', 'U', 'F', 3};
  EXPECT_FAIL(model_load_llama2c, write_file("gguf.gguf", g, sizeof g), KS_ERR_FORMAT, "GGUF");
  /* text, and a file that does not exist, and a directory */
  const char *text = "Once upon a time there was a file that was not a model at all.\n";
  EXPECT_FAIL(model_load, write_file("text.txt", text, strlen(text)), KS_ERR_FORMAT,
              "not a GGUF file or llama2.c checkpoint");
  char missing[4400];
  snprintf(missing, sizeof missing, "%s/no_such_model.bin", g_dir);
  EXPECT_FAIL(model_load_llama2c, missing, KS_ERR_IO, "no_such_model.bin", "No such file");
  EXPECT_FAIL(model_load, missing, KS_ERR_IO, "no_such_model.bin");
  EXPECT_FAIL(model_load_llama2c, g_dir, KS_ERR_IO, "not a regular file");
}

/* Random bytes and random headers over random lengths: any outcome but a crash or a false OK. */
static void check_random(void) {
  enum { MAXLEN = 4096 };
  static unsigned char b[MAXLEN];
  for (int iter = 0; iter < 300; iter++) {
    size_t len = ks_randu() % MAXLEN;
    for (size_t i = 0; i < len; i++) b[i] = (unsigned char)ks_randu();
    if (iter % 2 && len >= 28) { /* plausible small header, random everything else */
      int32_t h[7];
      for (int i = 0; i < 7; i++) h[i] = (int32_t)(ks_randu() % 64) - 8;
      memcpy(b, h, sizeof h);
    }
    const char *p = write_file("random.bin", b, len);
    ks_model m;
    ks_status st = model_load(&m, p);
    if (st == KS_OK) {
      /* only acceptable if it really is a consistent checkpoint: sizes line up exactly */
      CHECK(m.cfg.dim > 0 && m.cfg.dim % m.cfg.n_head == 0);
      CHECK(m.map_size == len);
    } else {
      CHECK(st == KS_ERR_FORMAT || st == KS_ERR_UNSUPPORTED);
      CHECK(strlen(ks_last_error()) > 20);
    }
    model_deinit(&m);
  }
}

/* The reference forward pass on a tiny grouped-query synthetic model: runs, stays finite,
 * fills probs rows that sum to one. Exercises shapes stories260K does not (separate output). */
static void check_forward_synthetic(void) {
  hdr h = {8, 12, 2, 4, 2, -10, 6};
  size_t nf = ckpt_floats(h, 0), len = sizeof h + nf * 4;
  unsigned char *b = malloc(len);
  REQUIRE(b);
  memcpy(b, &h, sizeof h);
  for (size_t k = 0; k < nf; k++) {
    float v = ks_randf() * 0.5f;
    memcpy(b + sizeof h + k * 4, &v, 4);
  }
  const char *p = write_file("syn_fwd.bin", b, len);
  free(b);
  ks_model m;
  REQUIRE(model_load(&m, p) == KS_OK);
  ref_state s;
  REQUIRE(ref_state_init(&s, &m, 6) == KS_OK);
  for (int pos = 0; pos < 6; pos++) {
    const float *lg = ref_forward(&s, (pos * 7) % 10, pos);
    REQUIRE(lg);
    for (int i = 0; i < 10; i++) CHECK(isfinite(lg[i]));
    for (int l = 0; l < 2; l++)
      for (int hh = 0; hh < 4; hh++) {
        double sum = 0;
        for (int t = 0; t <= pos; t++) sum += s.probs[(l * 4 + hh) * 6 + t];
        CHECK(fabs(sum - 1) < 1e-5);
      }
  }
  CHECK(ref_forward(&s, 0, 6) == NULL);  /* past the context */
  CHECK(ref_forward(&s, 10, 0) == NULL); /* past the vocabulary */
  CHECK(ref_forward(&s, -1, 0) == NULL);
  ref_state_deinit(&s);
  model_deinit(&m);
}

int main(void) {
  ks_test_seed();
  g_dir = ks_test_tmpdir("test_model_llama2c");
  check_headers();
  check_other_formats();
  check_synthetic(1);
  check_synthetic(0);
  check_random();
  check_forward_synthetic();
  const char *real = ks_shared_file("models/stories260K.bin"); /* skips from here if absent */
  check_truncations(real);
  check_real(real);
  return ks_test_done("test_model_llama2c");
}
