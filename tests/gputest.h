/* gputest.h — opening a Vulkan device in tests: skip (exit 77, with the reason) when there is
 * none, unless KVSCOPE_REQUIRE_GPU=1 (CI installs lavapipe and sets it, so a missing device
 * fails there instead of hiding). */
#ifndef KS_GPUTEST_H
#define KS_GPUTEST_H
#include <stdlib.h>

#include "gpu.h"
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
  return g;
}
#endif
