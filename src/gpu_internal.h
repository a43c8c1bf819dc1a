/* gpu_internal.h — the inside of ks_gpu and ks_cmd, shared by gpu.c (instance, device, buffers,
 * uploads) and gpu_ops.c (command buffers, pipelines, the dispatch helper, the ops). Nothing
 * outside those two files includes it: forward.c and the rest see only gpu.h. */
#ifndef KS_GPU_INTERNAL_H
#define KS_GPU_INTERNAL_H
#include "gpu.h"

/* Checks a Vulkan call; on failure records expression, VkResult name and file:line and returns
 * KS_ERR_VULKAN from the enclosing function (which must return ks_status). */
#define VK_CHECK(expr)                                                                    \
  do {                                                                                    \
    VkResult vk_r_ = (expr);                                                              \
    if (vk_r_ != VK_SUCCESS)                                                              \
      return ks_fail(KS_ERR_VULKAN, "%s failed: %s%s (%s:%d)", #expr, gpu_vk_result_name(vk_r_), \
                     gpu_vk_result_hint(vk_r_), __FILE__, __LINE__);                      \
  } while (0)
/* Same, but stores the status in `st` and jumps to label `fail` (for cleanup paths). */
#define VK_TRY(expr)                                                                      \
  do {                                                                                    \
    VkResult vk_r_ = (expr);                                                              \
    if (vk_r_ != VK_SUCCESS) {                                                            \
      st = ks_fail(KS_ERR_VULKAN, "%s failed: %s%s (%s:%d)", #expr, gpu_vk_result_name(vk_r_), \
                   gpu_vk_result_hint(vk_r_), __FILE__, __LINE__);                        \
      goto fail;                                                                          \
    }                                                                                     \
  } while (0)

const char *gpu_vk_result_name(VkResult r);
/* The status of a queue submit or fence wait named `call` that returned r: KS_OK for VK_SUCCESS,
 * else VK_CHECK's message. A lost device is remembered in g->device_lost: a driver reports every
 * later submit or wait on it as lost too, so callers do not submit to it again. */
ks_status gpu_check_queue(ks_gpu *g, VkResult r, const char *call, const char *file, int line);
/* A resettable command pool with one primary command buffer, and an unsignalled fence: what both
 * the transfer path and every ks_cmd need. On failure the caller destroys what was created
 * (the handles it gets back are VK_NULL_HANDLE or valid). */
ks_status gpu_cmd_objects_create(ks_gpu *g, VkCommandPool *pool, VkCommandBuffer *cb,
                                 VkFence *fence);
/* What a user can do about r: "" for most results; for a lost device or exhausted memory, a
 * sentence starting with ": " that says what happened and what to try. */
const char *gpu_vk_result_hint(VkResult r);

#define KS_MAX_BINDINGS 8
#define KS_MAX_SPEC 6

typedef struct {
  const char *shader;          /* name in ks_spirv_table (static storage) */
  uint32_t spec[KS_MAX_SPEC];  /* specialization constants 0..n_spec-1 */
  int n_spec, n_bind;
  VkPipeline pipe;
} ks_pipe_entry;

typedef struct {
  int head_dim;
  float base;
  float *factors; /* (head_dim/2) frequency divisors (rope scaling), owned copy; NULL: none */
  ks_buf buf; /* (head_dim/2) f32 inverse frequencies, computed on the host like ref_rope */
} ks_rope_table;

struct ks_gpu {
  VkInstance inst;
  VkDebugUtilsMessengerEXT messenger;
  VkPhysicalDevice phys;
  VkDevice dev;
  VkQueue queue;
  uint32_t qfam;
  uint32_t timestamp_bits; /* timestampValidBits of the queue family; 0: no timestamps */
  int index;
  ks_gpu_info info;
  VkPhysicalDeviceMemoryProperties mem;
  uint32_t max_groups[3];
  uint64_t slice_limit; /* weight slices: min(maxStorageBufferRange, $KVSCOPE_MAX_BUFFER_RANGE) */
  int no_subgroup;      /* KVSCOPE_NO_SUBGROUP=1: matrix kernels sum through shared memory */
  int coopmat_mode;     /* gpu_coopmat_mode */
  int attn_wg;          /* keys per attention chunk: 128 (GPUs) or 64 (CPUs); KVSCOPE_ATTN_WG */
  int mm_rdec;          /* KVSCOPE_MM_RDEC=2|4: decode rows per lane group (0: by weight type) */
  int mm_udec;          /* KVSCOPE_MM_U=1..4: decode units loaded ahead per lane (0: default) */
  int mm_split_dec;     /* KVSCOPE_MM_SPLIT_DEC=1|2|4|8: subgroups per row of decode steps in mode 3 */
  /* attention.comp's tuning (none changes a bit): K vec4s and V rows in flight (KVSCOPE_ATTN_KB,
   * _VB; 16, 8 on GPUs, 4, 4 on CPU devices; KB at most head_dim / 4), query rows a prompt's
   * workgroup takes (KVSCOPE_ATTN_TR, 1-8; 2 on GPUs, 8 on CPU devices) */
  int attn_kb, attn_vb, attn_tr;
  /* KVSCOPE_PIPELINE_STATS=1 on a device with VK_KHR_pipeline_executable_properties: every new
   * pipeline's compiler statistics (registers, spills, ...) go to stderr */
  PFN_vkGetPipelineExecutablePropertiesKHR pexec_props;
  PFN_vkGetPipelineExecutableStatisticsKHR pexec_stats;
  int64_t live;         /* caller-owned VkBuffer + VkDeviceMemory objects alive */
  uint64_t device_bytes; /* KS_MEM_DEVICE memory allocated and not yet freed (all buffers) */
  int device_lost;       /* a submit or wait returned VK_ERROR_DEVICE_LOST (gpu_check_queue) */
  /* one-shot transfers (uploads, downloads, fills) */
  VkCommandPool xfer_pool;
  VkCommandBuffer xfer_cb;
  VkFence xfer_fence;
  ks_buf staging; /* host-visible, KS_STAGING_BYTES, created on first use */
  /* upload progress (gpu_upload_progress) */
  const char *prog_what;
  uint64_t prog_total, prog_done;
  /* pipelines */
  VkDescriptorSetLayout dsl[KS_MAX_BINDINGS + 1]; /* by number of storage-buffer bindings */
  VkPipelineLayout layout[KS_MAX_BINDINGS + 1];
  VkPipelineCache pcache;
  ks_pipe_entry *pipes;
  int n_pipes, cap_pipes;
  ks_rope_table *ropes;
  int n_ropes;
  /* the cooperative-matrix prefill products' f16 input (cm_scratch in gpu_ops.c) */
  ks_buf *cm_bufs; /* the last one is in use */
  int n_cm_bufs;
  uint64_t cm_region; /* bytes of each of its ring regions */
  uint32_t cm_next;
};

#define KS_STAGING_BYTES (32ull << 20)

/* Internal buffer helpers: same as gpu_buf_create/destroy but not counted as caller-owned. */
ks_status gpu_buf_create_internal(ks_gpu *g, ks_buf *b, uint64_t size, ks_mem kind);
void gpu_buf_destroy_internal(ks_gpu *g, ks_buf *b);
/* Pipelines and rope tables are released by gpu_destroy through this (gpu_ops.c). */
void gpu_ops_release(ks_gpu *g);

#endif
