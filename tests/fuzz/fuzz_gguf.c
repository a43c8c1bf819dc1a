/* fuzz_gguf.c — libFuzzer target for the GGUF reader and the llama GGUF loader. The input is a
 * GGUF file. Properties checked beyond "no crash, no sanitizer report":
 *  - every failure of gguf_open / tokenizer_from_gguf / model_load_gguf records a message;
 *  - every key, array element and tensor the reader hands out lies inside the mapped file, and
 *    lookups by name find what the index walk found;
 *  - a tensor's byte count is what its type and shape imply;
 *  - a tokenizer read from the file decodes to valid UTF-8 whatever it encodes;
 *  - a model that loads has a consistent configuration, and one step of the CPU reference
 *    forward pass runs on it (small models only).
 * Depth: 1 opened, 2 tokenizer loaded, 3 model loaded, 4 a forward step ran. */
#include "fuzz.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "ref_cpu.h"
#include "tokenizer.h"

const int ks_fuzz_full = 4;

static size_t scalar_bytes(gguf_vtype t) {
  switch (t) {
  case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
  case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
  case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
  case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
  default: return 0;
  }
}

static void walk_keys(const ks_gguf *g, const void *base, size_t size) {
  int n = gguf_n_keys(g);
  KS_FUZZ_CHECK(n >= 0, "negative key count %d", n);
  for (int i = 0; i < n; i++) {
    const char *name = gguf_key_name(g, i);
    KS_FUZZ_CHECK(name != NULL, "key %d has no name", i);
    int again = gguf_find_key(g, name);
    KS_FUZZ_CHECK(again >= 0 && strcmp(gguf_key_name(g, again), name) == 0,
                  "key '%s' (index %d) is not found by name", name, i);
    gguf_vtype t = gguf_key_type(g, i);
    (void)gguf_get_int(g, name, 0);
    (void)gguf_get_float(g, name, 0.0);
    (void)gguf_get_bool(g, name, 0);
    const char *s = gguf_get_str(g, name);
    if (t == GGUF_T_STRING) KS_FUZZ_CHECK(s != NULL, "string key '%s' has no value", name);
    if (s) ks_fuzz_touch(s, strlen(s) + 1);
    gguf_vtype et;
    uint64_t len = gguf_arr_len(g, name, &et);
    if (t != GGUF_T_ARRAY) {
      KS_FUZZ_CHECK(len == 0, "non-array key '%s' has array length %llu", name,
                    (unsigned long long)len);
      continue;
    }
    if (et == GGUF_T_STRING) {
      /* the first elements and the last one: enough to catch a bad index */
      for (uint64_t j = 0; j < len; j = j < 64 ? j + 1 : (j < len - 1 ? len - 1 : len)) {
        size_t sl = 0;
        const char *e = gguf_arr_str(g, name, j, &sl);
        KS_FUZZ_CHECK(e != NULL, "'%s'[%llu] of %llu is unreadable", name,
                      (unsigned long long)j, (unsigned long long)len);
        ks_fuzz_check_inside(e, sl, base, size, "string array element");
        ks_fuzz_touch(e, sl);
      }
      size_t sl = 0;
      (void)gguf_arr_str(g, name, len, &sl); /* one past the end: must be refused, not read */
    } else if (scalar_bytes(et) && len > 0) {
      const void *d = gguf_arr_data(g, name);
      KS_FUZZ_CHECK(d != NULL, "numeric array '%s' has no data", name);
      KS_FUZZ_CHECK(len <= size / scalar_bytes(et), "array '%s' is longer than the file", name);
      ks_fuzz_check_inside(d, (size_t)len * scalar_bytes(et), base, size, "numeric array");
      ks_fuzz_touch(d, (size_t)len * scalar_bytes(et));
    }
  }
}

static void check_tensor(const ks_tensor *t, const void *base, size_t size, const char *what) {
  size_t rb = ks_type_row_bytes(t->type, t->ne[0]);
  KS_FUZZ_CHECK(t->ne[0] >= 1 && t->ne[1] >= 1, "%s: shape %lld x %lld", what,
                (long long)t->ne[0], (long long)t->ne[1]);
  KS_FUZZ_CHECK(rb > 0 && t->nbytes / rb == (size_t)t->ne[1] && t->nbytes % rb == 0,
                "%s: %zu bytes for %lld rows of %zu bytes", what, t->nbytes, (long long)t->ne[1],
                rb);
  ks_fuzz_check_inside(t->data, t->nbytes, base, size, what);
  ks_fuzz_touch(t->data, t->nbytes);
}

static void walk_tensors(const ks_gguf *g, const void *base, size_t size) {
  int n = gguf_n_tensors(g);
  KS_FUZZ_CHECK(n >= 0, "negative tensor count %d", n);
  /* with no tensor the aligned data section may start past the end (nothing is read there) */
  KS_FUZZ_CHECK(n == 0 || gguf_data_offset(g) <= size,
                "data section starts past the end of the file");
  uint64_t total = 0; /* bytes of the tensors gguf_tensor hands out */
  for (int i = 0; i < n; i++) {
    const char *name = gguf_tensor_name(g, i);
    KS_FUZZ_CHECK(name != NULL, "tensor %d has no name", i);
    int again = gguf_find_tensor(g, name);
    KS_FUZZ_CHECK(again >= 0 && strcmp(gguf_tensor_name(g, again), name) == 0,
                  "tensor '%s' is not found by name", name);
    uint32_t type;
    int nd;
    int64_t ne[4];
    ks_status st = gguf_tensor_info(g, i, &type, &nd, ne);
    KS_FUZZ_CHECK(st == KS_OK, "tensor_info of a listed tensor failed: %s", ks_last_error());
    KS_FUZZ_CHECK(nd >= 1 && nd <= 4, "tensor '%s' has %d dimensions", name, nd);
    for (int d = 0; d < 4; d++) KS_FUZZ_CHECK(ne[d] >= 0, "tensor '%s' ne[%d] < 0", name, d);
    ks_tensor t;
    ks_fuzz_clear_error();
    st = gguf_tensor(g, i, &t);
    if (st == KS_OK) {
      check_tensor(&t, base, size, name);
      total += t.nbytes;
    } else {
      ks_fuzz_check_failure(st, "gguf_tensor");
    }
  }
  /* gguf_open rejects tensors whose data overlap, so they lie side by side in the data section */
  KS_FUZZ_CHECK(n == 0 || total <= size - gguf_data_offset(g),
                "%llu bytes of tensors in a data section of %zu bytes: some overlap",
                (unsigned long long)total, size - gguf_data_offset(g));
}

static int try_tokenizer(const ks_gguf *g) {
  ks_tokenizer *t = NULL;
  ks_fuzz_clear_error();
  ks_status st = tokenizer_from_gguf(&t, g);
  if (st) {
    ks_fuzz_check_failure(st, "tokenizer_from_gguf");
    KS_FUZZ_CHECK(t == NULL, "failed tokenizer_from_gguf left a tokenizer");
    return 0;
  }
  static const char text[] = "Once upon a time, Zo\xC3\xAB saw \xE6\x97\xA5\xE6\x9C\xAC "
                             "\xF0\x9F\x99\x82 <0x41> <s>\n\t  x\xE2\x96\x81y";
  int *ids = NULL, n = 0;
  st = tokenizer_encode(t, text, sizeof text - 1, 1, &ids, &n);
  KS_FUZZ_CHECK(st == KS_OK, "encoding valid UTF-8 failed: %s", ks_last_error());
  const int V = tokenizer_vocab_size(t);
  size_t cap = 3 * tokenizer_max_piece_len(t) + 16;
  char *piece = malloc(cap), *all = malloc(cap * (size_t)(n + 1));
  KS_FUZZ_CHECK(piece && all, "out of memory");
  size_t w = 0;
  ks_detok d;
  detok_init(&d);
  for (int i = 0; i < n; i++) {
    KS_FUZZ_CHECK(ids[i] >= 0 && ids[i] < V, "token %d = %d outside the vocabulary", i, ids[i]);
    size_t k = tokenizer_decode(t, &d, ids[i], piece, cap);
    KS_FUZZ_CHECK(k < cap && piece[k] == 0, "decode wrote %zu bytes into %zu", k, cap);
    memcpy(all + w, piece, k);
    w += k;
  }
  w += detok_flush(&d, all + w, cap);
  KS_FUZZ_CHECK(ks_fuzz_utf8_ok((const unsigned char *)all, w), "decoded text is not UTF-8");
  free(piece);
  free(all);
  free(ids);
  tokenizer_destroy(t);
  return 1;
}

/* Returns 1 if a reference forward step ran. */
static int check_model(ks_model *m) {
  const ks_config *c = &m->cfg;
  KS_FUZZ_CHECK(c->dim > 0 && c->n_head > 0 && c->n_kv_head > 0 && c->n_layer > 0 &&
                    c->hidden_dim > 0 && c->vocab_size > 0 && c->n_ctx > 0,
                "loaded model with a non-positive size");
  KS_FUZZ_CHECK(c->dim % c->n_head == 0 && c->n_head % c->n_kv_head == 0 &&
                    c->head_dim == c->dim / c->n_head && c->head_dim % 2 == 0,
                "inconsistent heads: dim %d heads %d kv %d head_dim %d", c->dim, c->n_head,
                c->n_kv_head, c->head_dim);
  const void *base = m->map;
  size_t size = m->map_size;
  const int64_t q = (int64_t)c->n_head * c->head_dim, kv = (int64_t)c->n_kv_head * c->head_dim;
  struct { const ks_tensor *t; int64_t cols, rows; const char *what; } all[] = {
      {&m->tok_embd, c->dim, c->vocab_size, "tok_embd"},
      {&m->output_norm, c->dim, 1, "output_norm"},
      {&m->output, c->dim, c->vocab_size, "output"},
  };
  for (size_t i = 0; i < KS_ARRAY_LEN(all); i++) {
    KS_FUZZ_CHECK(all[i].t->ne[0] == all[i].cols && all[i].t->ne[1] == all[i].rows,
                  "%s has the wrong shape", all[i].what);
    check_tensor(all[i].t, base, size, all[i].what);
  }
  for (int l = 0; l < c->n_layer; l++) {
    const ks_layer *L = &m->layers[l];
    struct { const ks_tensor *t; int64_t cols, rows; } lt[] = {
        {&L->attn_norm, c->dim, 1}, {&L->wq, c->dim, q}, {&L->wk, c->dim, kv},
        {&L->wv, c->dim, kv}, {&L->wo, q, c->dim}, {&L->ffn_norm, c->dim, 1},
        {&L->w_gate, c->dim, c->hidden_dim}, {&L->w_down, c->hidden_dim, c->dim},
        {&L->w_up, c->dim, c->hidden_dim},
    };
    for (size_t i = 0; i < KS_ARRAY_LEN(lt); i++) {
      KS_FUZZ_CHECK(lt[i].t->ne[0] == lt[i].cols && lt[i].t->ne[1] == lt[i].rows,
                    "layer %d tensor %zu has the wrong shape", l, i);
      check_tensor(lt[i].t, base, size, "layer tensor");
    }
  }
  /* gguf_open refuses tensors whose data overlap (walk_tensors checks that they fit side by
   * side); a tied classifier is the embedding itself, counted once. */
  /* One reference step on small models: hostile shapes must not reach the math. */
  if (model_weight_bytes(m) > (4u << 20) || (int64_t)c->n_layer * kv > (1 << 20)) return 0;
  ref_state s;
  ks_fuzz_clear_error();
  ks_status st = ref_state_init(&s, m, 2);
  if (st) {
    ks_fuzz_check_failure(st, "ref_state_init");
    return 0;
  }
  const float *lg = ref_forward(&s, c->vocab_size - 1, 0);
  KS_FUZZ_CHECK(lg != NULL, "ref_forward gave no logits");
  lg = ref_forward(&s, 0, 1);
  KS_FUZZ_CHECK(lg != NULL, "ref_forward gave no logits");
  ref_state_deinit(&s);
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int opened = 0, tok = 0, loaded = 0, stepped = 0;
  const char *path = ks_fuzz_path(data, size);
  ks_gguf *g = NULL;
  ks_fuzz_clear_error();
  ks_status st = gguf_open(&g, path);
  if (st) {
    ks_fuzz_check_failure(st, "gguf_open");
    KS_FUZZ_CHECK(g == NULL, "failed gguf_open returned a handle");
  } else {
    opened = 1;
    size_t msize = 0;
    const void *base = gguf_file_data(g, &msize);
    KS_FUZZ_CHECK(msize == size, "mapping of %zu bytes for a %zu-byte file", msize, size);
    KS_FUZZ_CHECK(gguf_version(g) >= 2, "accepted GGUF version %u", gguf_version(g));
    uint32_t al = gguf_alignment(g);
    KS_FUZZ_CHECK(al > 0 && (al & (al - 1)) == 0, "alignment %u is not a power of two", al);
    walk_keys(g, base, msize);
    walk_tensors(g, base, msize);
    tok = try_tokenizer(g);
    gguf_close(g);
  }
  /* model_load_gguf opens the file itself; it must fail cleanly wherever gguf_open did. */
  ks_model m;
  ks_fuzz_clear_error();
  st = model_load_gguf(&m, path);
  if (st) {
    ks_fuzz_check_failure(st, "model_load_gguf");
  } else {
    KS_FUZZ_CHECK(opened, "model loaded from a file gguf_open rejected");
    loaded = 1;
    stepped = check_model(&m);
  }
  model_deinit(&m);
  ks_fuzz_depth = !opened ? 0 : !tok ? 1 : !loaded ? 2 : !stepped ? 3 : 4;
  return 0;
}
