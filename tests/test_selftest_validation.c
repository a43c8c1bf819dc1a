/* test_selftest_validation.c — the checks that CI's sanitizer + validation job relies on really
 * fire, so a green run means something:
 *  - the Vulkan validation layer, when installed, reports a synchronisation hazard that kvscope's
 *    ops can create (a copy reading a region another copy has just written, no barrier between
 *    them: READ_AFTER_WRITE): the layer is
 *    loaded, synchronisation validation is on (VK_LAYER_ENABLES, added here when the environment
 *    does not already ask for it) and gpu_validation_count() counts what it says; the same work
 *    with gpu_cmd_barrier between the copies gives no message;
 *  - gpu_live_allocations() counts every buffer and its memory, weights cut into slices
 *    included, and returns to 0 when all are freed (what the other tests assert at teardown). */
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>

#include "gpu.h"
#include "gputest.h"
#include "testutil.h"

static int layer_installed(void) {
  uint32_t n = 0;
  if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0) return 0;
  VkLayerProperties *p = calloc(n, sizeof *p);
  int found = 0;
  if (p && vkEnumerateInstanceLayerProperties(&n, p) == VK_SUCCESS)
    for (uint32_t i = 0; i < n; i++) found |= !strcmp(p[i].layerName, "VK_LAYER_KHRONOS_validation");
  free(p);
  return found;
}

/* src -> mid -> dst, with or without a barrier between the two copies. */
static uint64_t copies(ks_gpu *g, int barrier) {
  ks_buf src, mid, dst;
  REQUIRE(gpu_buf_create(g, &src, 4096, KS_MEM_DEVICE) == KS_OK);
  REQUIRE(gpu_buf_create(g, &mid, 4096, KS_MEM_DEVICE) == KS_OK);
  REQUIRE(gpu_buf_create(g, &dst, 4096, KS_MEM_DEVICE) == KS_OK);
  REQUIRE(gpu_fill_u32(g, &src, 0, 4096, 0x3f800000u) == KS_OK);
  ks_cmd *c;
  REQUIRE(gpu_cmd_create(g, &c) == KS_OK);
  uint64_t before = gpu_validation_count();
  REQUIRE(gpu_cmd_begin(c) == KS_OK);
  op_copy(c, ks_ref(&mid, 0), ks_ref(&src, 0), 4096);
  if (barrier) gpu_cmd_barrier(c);
  op_copy(c, ks_ref(&dst, 0), ks_ref(&mid, 0), 4096);
  REQUIRE(gpu_cmd_end(c) == KS_OK);
  REQUIRE(gpu_cmd_submit(c) == KS_OK);
  REQUIRE(gpu_cmd_wait(c) == KS_OK);
  uint64_t msgs = gpu_validation_count() - before;
  gpu_cmd_destroy(c);
  float check[4];
  REQUIRE(gpu_download(g, &dst, 0, check, sizeof check) == KS_OK);
  CHECK(check[0] == 1.0f && check[3] == 1.0f);
  gpu_buf_destroy(g, &src);
  gpu_buf_destroy(g, &mid);
  gpu_buf_destroy(g, &dst);
  return msgs;
}

static void allocation_count(ks_gpu *g) {
  CHECK(gpu_live_allocations(g) == 0);
  ks_buf b[3];
  for (int i = 0; i < 3; i++) REQUIRE(gpu_buf_create(g, &b[i], 256 + 64 * i, i ? KS_MEM_HOST : KS_MEM_DEVICE) == KS_OK);
  CHECK_MSG(gpu_live_allocations(g) == 6, "3 buffers: %lld live allocations, expected 6",
            (long long)gpu_live_allocations(g));
  /* a weight of 64 rows of 256 floats cut into 1 KiB slices: 16 buffers */
  float *w = calloc(64 * 256, sizeof *w);
  REQUIRE(w);
  ks_tensor t = {.type = KS_TYPE_F32, .ne = {256, 64}, .data = w, .nbytes = 64 * 256 * 4};
  ks_gpu_tensor gt;
  REQUIRE(gpu_tensor_upload(g, &gt, &t) == KS_OK);
  CHECK_MSG(gpu_live_allocations(g) == 6 + 2 * gt.n_slices, "%d slices: %lld live allocations",
            gt.n_slices, (long long)gpu_live_allocations(g));
  CHECK_MSG(gt.n_slices > 1, "a 64 KiB weight with a 1 KiB slice limit is in %d slice(s)",
            gt.n_slices);
  const int ns = gt.n_slices;
  gpu_tensor_free(g, &gt);
  for (int i = 0; i < 3; i++) gpu_buf_destroy(g, &b[i]);
  gpu_buf_destroy(g, &b[0]); /* destroying twice is allowed and counts nothing */
  CHECK_MSG(gpu_live_allocations(g) == 0, "%lld allocations alive after freeing everything",
            (long long)gpu_live_allocations(g));
  free(w);
  printf("allocation count: 3 buffers -> 6, %d slices -> +%d, all freed -> 0\n", ns, 2 * ns);
}

int main(void) {
  int layer = layer_installed();
  if (layer) {
    setenv("KVSCOPE_VALIDATION", "1", 1);
    const char *en = getenv("VK_LAYER_ENABLES");
    if (!en || !strstr(en, "SYNCHRONIZATION_VALIDATION")) {
      char v[1024];
      snprintf(v, sizeof v, "%s%sVK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT",
               en && *en ? en : "", en && *en ? ":" : "");
      setenv("VK_LAYER_ENABLES", v, 1);
    }
    printf("VK_LAYER_ENABLES=%s\n", getenv("VK_LAYER_ENABLES"));
  }
  setenv("KVSCOPE_MAX_BUFFER_RANGE", "1024", 1);
  ks_gpu *g = ks_test_gpu(-1);
  printf("device: %s\n", gpu_info(g)->name);
  allocation_count(g);
  if (layer) {
    uint64_t clean = copies(g, 1);
    printf("copy, barrier, copy of what was written: %llu validation message(s)\n",
           (unsigned long long)clean);
    CHECK_MSG(clean == 0, "correctly synchronised copies gave %llu messages",
              (unsigned long long)clean);
    printf("copy, then a copy of what was written without a barrier (the layer must report a "
           "READ_AFTER_WRITE hazard; the message below is expected):\n");
    fflush(stdout);
    uint64_t hazard = copies(g, 0);
    printf("  -> %llu validation message(s)\n", (unsigned long long)hazard);
    CHECK_MSG(hazard > 0, "synchronisation validation did not report the missing barrier: the "
              "layer is not running or ignores VK_LAYER_ENABLES");
  } else {
    printf("VK_LAYER_KHRONOS_validation is not installed: only the allocation count is checked "
           "(Debian: apt-get install vulkan-validationlayers)\n");
  }
  CHECK(gpu_live_allocations(g) == 0);
  gpu_destroy(g);
  return ks_test_done("test_selftest_validation");
}
