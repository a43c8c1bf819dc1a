/* gputest.h — opening a Vulkan device in tests: skip (exit 77, with the reason) when there is
 * none, unless KVSCOPE_REQUIRE_GPU=1 (CI installs lavapipe and sets it, so a missing device
 * fails there instead of hiding). */
#ifndef KS_GPUTEST_H
#define KS_GPUTEST_H
#include <stdlib.h>

#include "gpu.h"
#include "ref_cpu.h"
#include "testutil.h"

static inline ks_gpu *ks_test_gpu(int index) {
  ks_gpu *g = NULL;
  if (gpu_create(&g, index) != KS_OK) {
    const char *req = getenv("KVSCOPE_REQUIRE_GPU");
    if (req && atoi(req)) {
      fprintf(stderr, "no usable Vulkan device but KVSCOPE_REQUIRE_GPU=1: %s\n", ks_last_error());
      exit(1);
    }
    ks_test_skip("no usable Vulkan device: %s", ks_last_error());
  }
  /* the reference rounds product operands to f16 where this device's kernels do */
  ref_set_f16_products(gpu_coopmat_mode(g));
  if (gpu_info(g)->coopmat)
    printf("(%s: products on the cooperative-matrix kernels; the reference rounds their "
           "operands to f16)\n", gpu_info(g)->name);
  return g;
}

/* Bound on whole-model outputs (logits, attention rows) against the CPU reference: 1e-4; 2e-3
 * where products run on the cooperative-matrix kernels. There the reference rounds the product
 * operands to f16 as well, but a normalised input whose f32 value differs from the reference's
 * in the last bit sometimes rounds to the neighbouring f16, and small models carry that through
 * the layers: perturbing the reference's own inputs by one f32 ulp moves kvscope-tiny's logits by
 * about 5e-4 (max |diff| / max |logit|), the size seen on the GPU. */
static inline double ks_test_model_bound(void) { return ref_f16_products() ? 2e-3 : 1e-4; }
#endif
