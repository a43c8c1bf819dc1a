/* fuzz_llama2c.c — libFuzzer target for the llama2.c checkpoint reader (model_load_llama2c) and
 * the format dispatch in front of it (model_load). The input is a checkpoint file. Properties
 * beyond "no crash, no sanitizer report": every failure records a message; model_load and
 * model_load_llama2c agree on non-GGUF input; a loaded model has a consistent configuration,
 * every tensor lies inside the mapped file with the byte count its shape implies, and one
 * step of the CPU reference forward pass runs on it (small models).
 * Depth: 1 loaded, 2 a forward step ran. */
#include "fuzz.h"
#include "model.h"
#include "quant.h"
#include "ref_cpu.h"

const int ks_fuzz_full = 2;

static void check_tensor(const ks_tensor *t, int64_t cols, int64_t rows, const ks_model *m,
                         const char *what) {
  KS_FUZZ_CHECK(t->type == KS_TYPE_F32, "%s is not F32", what);
  KS_FUZZ_CHECK(t->ne[0] == cols && t->ne[1] == rows, "%s has shape %lld x %lld, expected %lld x "
                "%lld", what, (long long)t->ne[0], (long long)t->ne[1], (long long)cols,
                (long long)rows);
  KS_FUZZ_CHECK(t->nbytes == (size_t)cols * (size_t)rows * 4, "%s: %zu bytes", what, t->nbytes);
  KS_FUZZ_CHECK(((uintptr_t)t->data & 3) == 0, "%s: f32 data not 4-byte aligned", what);
  ks_fuzz_check_inside(t->data, t->nbytes, m->map, m->map_size, what);
  ks_fuzz_touch(t->data, t->nbytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ks_fuzz_depth = 0;
  const char *path = ks_fuzz_path(data, size);
  ks_model m;
  ks_fuzz_clear_error();
  ks_status st = model_load_llama2c(&m, path);
  if (st) {
    ks_fuzz_check_failure(st, "model_load_llama2c");
    KS_FUZZ_CHECK(m.map == NULL && m.layers == NULL, "a failed load kept its mapping or layers");
    model_deinit(&m);
    if (size < 4 || memcmp(data, "GGUF", 4) != 0) {
      ks_model m2;
      ks_fuzz_clear_error();
      ks_status st2 = model_load(&m2, path);
      KS_FUZZ_CHECK(st2 != KS_OK, "model_load accepted what model_load_llama2c rejected");
      ks_fuzz_check_failure(st2, "model_load");
      model_deinit(&m2);
    }
    return 0;
  }
  const ks_config *c = &m.cfg;
  KS_FUZZ_CHECK(m.format == KS_FMT_LLAMA2C && m.map && m.map_size == size, "bad bookkeeping");
  KS_FUZZ_CHECK(c->dim > 0 && c->n_head > 0 && c->n_kv_head > 0 && c->n_layer > 0 &&
                    c->hidden_dim > 0 && c->vocab_size > 0 && c->n_ctx > 0,
                "loaded model with a non-positive size");
  KS_FUZZ_CHECK(c->dim % c->n_head == 0 && c->n_head % c->n_kv_head == 0 &&
                    c->head_dim * c->n_head == c->dim && c->head_dim % 2 == 0,
                "inconsistent heads: dim %d heads %d kv %d", c->dim, c->n_head, c->n_kv_head);
  const int64_t kv = (int64_t)c->n_kv_head * c->head_dim;
  check_tensor(&m.tok_embd, c->dim, c->vocab_size, &m, "tok_embd");
  check_tensor(&m.output_norm, c->dim, 1, &m, "output_norm");
  check_tensor(&m.output, c->dim, c->vocab_size, &m, "output");
  KS_FUZZ_CHECK(!m.tied_output || m.output.data == m.tok_embd.data, "tied output not shared");
  for (int l = 0; l < c->n_layer; l++) {
    const ks_layer *L = &m.layers[l];
    check_tensor(&L->attn_norm, c->dim, 1, &m, "attn_norm");
    check_tensor(&L->wq, c->dim, c->dim, &m, "wq");
    check_tensor(&L->wk, c->dim, kv, &m, "wk");
    check_tensor(&L->wv, c->dim, kv, &m, "wv");
    check_tensor(&L->wo, c->dim, c->dim, &m, "wo");
    check_tensor(&L->ffn_norm, c->dim, 1, &m, "ffn_norm");
    check_tensor(&L->w_gate, c->dim, c->hidden_dim, &m, "w1");
    check_tensor(&L->w_down, c->hidden_dim, c->dim, &m, "w2");
    check_tensor(&L->w_up, c->dim, c->hidden_dim, &m, "w3");
  }
  KS_FUZZ_CHECK(model_weight_bytes(&m) <= size, "weights exceed the file");
  ks_fuzz_depth = 1;
  /* the dispatcher must pick this reader and agree */
  ks_model m2;
  st = model_load(&m2, path);
  KS_FUZZ_CHECK(st == KS_OK && m2.format == KS_FMT_LLAMA2C &&
                    memcmp(&m2.cfg, &m.cfg, sizeof m.cfg) == 0 && m2.fingerprint == m.fingerprint,
                "model_load disagrees with model_load_llama2c");
  model_deinit(&m2);
  if (model_weight_bytes(&m) <= (4u << 20)) {
    ref_state s;
    ks_fuzz_clear_error();
    st = ref_state_init(&s, &m, 2);
    if (st) {
      ks_fuzz_check_failure(st, "ref_state_init");
    } else {
      KS_FUZZ_CHECK(ref_forward(&s, c->vocab_size - 1, 0) != NULL, "no logits");
      KS_FUZZ_CHECK(ref_forward(&s, 0, 1) != NULL, "no logits");
      ref_state_deinit(&s);
      ks_fuzz_depth = 2;
    }
  }
  model_deinit(&m);
  return 0;
}
