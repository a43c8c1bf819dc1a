/* test_arch_big.c — a model whose token embedding is larger than maxStorageBufferRange (128 MiB
 * on lavapipe): vocabulary 65600 x dim 512 in F32 = 128.1 MiB, tied to the classifier, so both the
 * embedding lookup and the logits matmul run over two weight slices. The file is written by
 * random_gguf.c and loaded like any model; GPU logits (every position, all 65600 of them) must
 * match the CPU reference within 1e-4 (max |gpu - cpu| / max |cpu|, as test_arch), for tokens in
 * both slices. On a device whose range is larger, KVSCOPE_MAX_BUFFER_RANGE is set to 128 MiB so
 * the same split happens. The 135 MB file lives in the build tree only while the test runs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forward.h"
#include "gputest.h"
#include "model.h"
#include "random_gguf.h"
#include "ref_cpu.h"
#include "testutil.h"

enum { VOCAB = 65600, DIM = 512, N_TOK = 4, CTX = 32 };
#define RANGE_128M (128ull << 20)

int main(void) {
  ks_test_seed();
  setenv("KVSCOPE_VALIDATION", "1", 0);
  ks_gpu *probe = ks_test_gpu(-1);
  uint64_t range = gpu_info(probe)->max_storage_range;
  int dev = gpu_device_index(probe);
  gpu_destroy(probe);
  if (range > RANGE_128M) setenv("KVSCOPE_MAX_BUFFER_RANGE", "134217728", 1);
  ks_gpu *g = ks_test_gpu(dev);
  printf("device %s: maxStorageBufferRange %.0f MiB%s\n", gpu_info(g)->name, range / 1048576.0,
         range > RANGE_128M ? " (capped at 128 MiB with KVSCOPE_MAX_BUFFER_RANGE)" : "");

  const char *dir = ks_test_tmpdir("test_arch_big");
  char path[4200];
  snprintf(path, sizeof path, "%s/big.gguf", dir);
  random_gguf_spec s;
  random_gguf_spec_init(&s, "llama");
  s.dim = DIM;
  s.hidden_dim = 512;
  s.n_layer = 1;
  s.n_head = 8;
  s.n_kv_head = 2;
  s.vocab_size = VOCAB;
  s.n_ctx = CTX;
  s.tied = 1;
  s.wtype = KS_TYPE_Q4_K;
  s.embd_type = KS_TYPE_F32;
  double t0 = ks_now_sec();
  REQUIRE(random_gguf_write(&s, path) == KS_OK);
  ks_model m;
  ks_status st = model_load(&m, path);
  CHECK_MSG(st == KS_OK, "load: %s", ks_last_error());
  REQUIRE(st == KS_OK);
  printf("wrote and loaded %.1f MiB in %.1f s; token_embd %.1f MiB\n",
         (double)m.map_size / 1048576.0, ks_now_sec() - t0, (double)m.tok_embd.nbytes / 1048576.0);
  CHECK(m.tok_embd.nbytes > RANGE_128M && m.tied_output);

  /* tokens from both slices: rows 0..65535 are slice 0 at 2 KiB a row */
  int tokens[N_TOK] = {VOCAB - 1, 3, 65536, (int)(ks_randu() % VOCAB)};
  float *ref = malloc((size_t)N_TOK * VOCAB * sizeof *ref);
  float *got = malloc((size_t)N_TOK * VOCAB * sizeof *got);
  REQUIRE(ref && got);
  ref_state rs;
  REQUIRE(ref_state_init(&rs, &m, CTX) == KS_OK);
  for (int p = 0; p < N_TOK; p++) {
    const float *lg = ref_forward(&rs, tokens[p], p);
    REQUIRE(lg);
    memcpy(ref + (size_t)p * VOCAB, lg, (size_t)VOCAB * sizeof *ref);
  }
  ref_state_deinit(&rs);

  t0 = ks_now_sec();
  ks_forward *f;
  st = forward_create(&f, g, &m, CTX, 2, 0);
  CHECK_MSG(st == KS_OK, "forward_create: %s", ks_last_error());
  REQUIRE(st == KS_OK);
  CHECK_MSG(f->tok_embd.n_slices >= 2, "token_embd in %d slice(s)", f->tok_embd.n_slices);
  /* three prompt tokens in chunks of 2 (all logits), then one decode step */
  REQUIRE(forward_eval(f, tokens, 3, 0, got, 1) == KS_OK);
  REQUIRE(forward_eval(f, &tokens[3], 1, 3, got + (size_t)3 * VOCAB, 0) == KS_OK);
  printf("GPU: token_embd in %d slices, upload + 4 tokens in %.1f s\n", f->tok_embd.n_slices,
         ks_now_sec() - t0);
  forward_destroy(f);

  double md = 0, mr = 0;
  for (size_t i = 0; i < (size_t)N_TOK * VOCAB; i++) {
    double d = fabs((double)got[i] - ref[i]);
    if (!(d <= md)) md = d;
    mr = fmax(mr, fabs((double)ref[i]));
  }
  printf("GPU vs CPU logits (%d positions x %d): max rel %.2e (bound 1e-04)\n", N_TOK, VOCAB,
         md / mr);
  CHECK_MSG(md / mr <= ks_test_model_bound(), "logits differ by %.3e", md / mr);
  free(ref);
  free(got);
  model_deinit(&m);
  unlink(path);
  CHECK(gpu_live_allocations(g) == 0);
  gpu_destroy(g);
  CHECK(gpu_validation_count() == 0);
  return ks_test_done("test_arch_big");
}
