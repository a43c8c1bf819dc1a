/* gpu_ops.c — recording compute work: reusable command buffers (ks_cmd) with growing descriptor
 * pools, pipelines created lazily per (shader, specialization) from the embedded SPIR-V, the one
 * checked dispatch helper, timestamps, and one recording function per op of gpu.h. The shaders
 * themselves are the .comp files in shaders/; device setup and buffers are gpu.c. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_internal.h"
#include "quant.h"
#include "ref_cpu.h"

struct ks_spirv {
  const char *name;
  const uint32_t *code;
  size_t size;
};
/* The generated header's banner comment nests a comment opener (shaders/ star .comp). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcomment"
#include "shader_table.h"
#pragma GCC diagnostic pop

#define KS_SETS_PER_POOL 256
#define KS_MAX_TIMESTAMPS 1024

struct ks_cmd {
  ks_gpu *g;
  VkCommandPool pool;
  VkCommandBuffer cb;
  VkFence fence;
  VkDescriptorPool *dpools;
  int n_dpools, cur_dpool;
  VkQueryPool qpool;
  uint32_t n_ts;
  int recording, recorded, pending;
  ks_status status; /* first recording failure */
  char err[1024];
  /* per-dispatch profile (gpu_cmd_profile): prof[i] is the dispatch that stamp i + 1 ends */
  int profiling;
  ks_op_time *prof; /* KS_MAX_TIMESTAMPS - 1 entries, allocated when profiling is turned on */
  int n_prof, prof_unstamped;
};

/* ---------------------------------------------------------------- command buffers */

static void cmd_fail(ks_cmd *c, ks_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cmd_fail(ks_cmd *c, ks_status st, const char *fmt, ...) {
  if (c->status != KS_OK) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  c->status = st;
}

static ks_status add_dpool(ks_cmd *c) {
  VkDescriptorPool *np = realloc(c->dpools, (size_t)(c->n_dpools + 1) * sizeof *np);
  if (!np) return ks_fail(KS_ERR_NOMEM, "out of host memory for descriptor pools");
  c->dpools = np;
  VkDescriptorPoolSize ps = {
      .type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
      .descriptorCount = KS_SETS_PER_POOL * KS_MAX_BINDINGS,
  };
  VkDescriptorPoolCreateInfo ci = {
      .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
      .maxSets = KS_SETS_PER_POOL,
      .poolSizeCount = 1,
      .pPoolSizes = &ps,
  };
  VK_CHECK(vkCreateDescriptorPool(c->g->dev, &ci, NULL, &c->dpools[c->n_dpools]));
  c->n_dpools++;
  return KS_OK;
}

ks_status gpu_cmd_create(ks_gpu *g, ks_cmd **out) {
  *out = NULL;
  ks_cmd *c = calloc(1, sizeof *c);
  if (!c) return ks_fail(KS_ERR_NOMEM, "out of host memory for a command buffer");
  c->g = g;
  ks_status st = KS_OK;
  if ((st = gpu_cmd_objects_create(g, &c->pool, &c->cb, &c->fence))) goto fail;
  if ((st = add_dpool(c)) != KS_OK) goto fail;
  *out = c;
  return KS_OK;
fail:
  gpu_cmd_destroy(c);
  return st;
}

void gpu_cmd_destroy(ks_cmd *c) {
  if (!c) return;
  VkDevice dev = c->g->dev;
  if (c->pending) vkWaitForFences(dev, 1, &c->fence, VK_TRUE, UINT64_MAX);
  for (int i = 0; i < c->n_dpools; i++) vkDestroyDescriptorPool(dev, c->dpools[i], NULL);
  free(c->dpools);
  if (c->qpool) vkDestroyQueryPool(dev, c->qpool, NULL);
  if (c->fence) vkDestroyFence(dev, c->fence, NULL);
  if (c->pool) vkDestroyCommandPool(dev, c->pool, NULL);
  free(c->prof);
  free(c);
}

ks_status gpu_cmd_wait(ks_cmd *c) {
  if (!c->pending) return KS_OK;
  c->pending = 0;
  VkResult r = vkWaitForFences(c->g->dev, 1, &c->fence, VK_TRUE, UINT64_MAX);
  /* KVSCOPE_TEST_DEVICE_LOST=N (tests only; docs/testing.md): the process's N-th wait reports a
   * lost device, as a driver does after a GPU reset (the work did finish: nothing is freed under
   * it). Inert when unset. */
  static int n_waits;
  const char *lost = getenv("KVSCOPE_TEST_DEVICE_LOST");
  if (lost && *lost && r == VK_SUCCESS && ++n_waits == atoi(lost)) r = VK_ERROR_DEVICE_LOST;
  return gpu_check_queue(c->g, r, "vkWaitForFences", __FILE__, __LINE__);
}

ks_status gpu_cmd_begin(ks_cmd *c) {
  ks_status st = gpu_cmd_wait(c);
  if (st != KS_OK) return st;
  c->status = KS_OK;
  c->err[0] = 0;
  c->recorded = 0;
  c->n_ts = 0;
  for (int i = 0; i < c->n_dpools; i++) VK_CHECK(vkResetDescriptorPool(c->g->dev, c->dpools[i], 0));
  c->cur_dpool = 0;
  VK_CHECK(vkResetCommandBuffer(c->cb, 0));
  VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  VK_CHECK(vkBeginCommandBuffer(c->cb, &bi));
  c->recording = 1;
  if (c->qpool) vkCmdResetQueryPool(c->cb, c->qpool, 0, KS_MAX_TIMESTAMPS);
  c->n_prof = c->prof_unstamped = 0;
  if (c->profiling && gpu_cmd_timestamp(c) != 0) c->prof_unstamped = -1; /* no start stamp */
  return KS_OK;
}

static void barrier(VkCommandBuffer cb, VkPipelineStageFlags src, VkAccessFlags src_access,
                    VkPipelineStageFlags dst, VkAccessFlags dst_access) {
  VkMemoryBarrier mb = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
      .srcAccessMask = src_access,
      .dstAccessMask = dst_access,
  };
  vkCmdPipelineBarrier(cb, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

void gpu_cmd_barrier(ks_cmd *c) {
  if (!c->recording) return;
  /* only dispatches are recorded into a ks_cmd (transfers go through gpu.c's own buffer and
   * fence), so compute -> compute is the whole dependency */
  barrier(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_WRITE_BIT,
          VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT);
}

ks_status gpu_cmd_end(ks_cmd *c) {
  if (!c->recording) return ks_fail(KS_ERR_ARG, "gpu_cmd_end without gpu_cmd_begin");
  /* The results are visible to the host after the fence, and to whatever the next submission
   * (a replay of this very buffer included) reads or writes. */
  barrier(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
          VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
          VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT |
              VK_PIPELINE_STAGE_TRANSFER_BIT,
          VK_ACCESS_HOST_READ_BIT | VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
              VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
  c->recording = 0;
  VK_CHECK(vkEndCommandBuffer(c->cb));
  if (c->status != KS_OK) return ks_fail(c->status, "%s", c->err);
  c->recorded = 1;
  return KS_OK;
}

ks_status gpu_cmd_submit(ks_cmd *c) {
  if (!c->recorded)
    return ks_fail(c->status != KS_OK ? c->status : KS_ERR_ARG, "gpu_cmd_submit: %s",
                   c->status != KS_OK ? c->err : "nothing recorded (gpu_cmd_begin/end first)");
  ks_status st = gpu_cmd_wait(c);
  if (st != KS_OK) return st;
  VK_CHECK(vkResetFences(c->g->dev, 1, &c->fence));
  VkSubmitInfo si = {
      .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
      .commandBufferCount = 1,
      .pCommandBuffers = &c->cb,
  };
  /* a lost device stays lost (gpu_check_queue): nothing is submitted to it again */
  VkResult r = c->g->device_lost ? VK_ERROR_DEVICE_LOST
                                  : vkQueueSubmit(c->g->queue, 1, &si, c->fence);
  if ((st = gpu_check_queue(c->g, r, "vkQueueSubmit", __FILE__, __LINE__)) != KS_OK) return st;
  c->pending = 1;
  return KS_OK;
}

int gpu_cmd_timestamp(ks_cmd *c) {
  ks_gpu *g = c->g;
  if (!c->recording || !g->timestamp_bits || c->n_ts >= KS_MAX_TIMESTAMPS) return -1;
  if (!c->qpool) {
    VkQueryPoolCreateInfo qi = {
        .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
        .queryType = VK_QUERY_TYPE_TIMESTAMP,
        .queryCount = KS_MAX_TIMESTAMPS,
    };
    if (vkCreateQueryPool(g->dev, &qi, NULL, &c->qpool) != VK_SUCCESS) {
      c->qpool = VK_NULL_HANDLE;
      return -1;
    }
    vkCmdResetQueryPool(c->cb, c->qpool, 0, KS_MAX_TIMESTAMPS);
  }
  vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, c->qpool, c->n_ts);
  return (int)c->n_ts++;
}

/* ---------------------------------------------------------------- per-dispatch profile */

_Static_assert(KS_PROF_BINDINGS >= KS_MAX_BINDINGS, "ks_op_time keeps every binding");

ks_status gpu_cmd_profile(ks_cmd *c, int on) {
  if (on && !c->g->timestamp_bits)
    return ks_fail(KS_ERR_UNSUPPORTED, "this device's compute queue writes no timestamps: no "
                   "per-dispatch profile");
  if (on && !c->prof) {
    c->prof = calloc(KS_MAX_TIMESTAMPS - 1, sizeof *c->prof);
    if (!c->prof) return ks_fail(KS_ERR_NOMEM, "out of host memory for the profile");
  }
  c->profiling = on != 0;
  return KS_OK;
}

ks_status gpu_cmd_profile_read(ks_cmd *c, const ks_op_time **ops, int *n, int *unstamped) {
  *ops = c->prof;
  *n = 0;
  *unstamped = 0;
  if (c->pending || c->recording)
    return ks_fail(KS_ERR_ARG, "gpu_cmd_profile_read before the recording was submitted and "
                   "waited for");
  if (c->prof_unstamped < 0)
    return ks_fail(KS_ERR_VULKAN, "gpu_cmd_profile_read: the start timestamp could not be written");
  if (c->n_prof == 0) return KS_OK;
  double *ts = malloc(((size_t)c->n_prof + 1) * sizeof *ts);
  if (!ts) return ks_fail(KS_ERR_NOMEM, "out of host memory reading the profile");
  ks_status st = gpu_cmd_timestamps(c, ts, c->n_prof + 1);
  for (int i = 0; st == KS_OK && i < c->n_prof; i++) c->prof[i].ns = ts[i + 1] - ts[i];
  free(ts);
  if (st) return st;
  *n = c->n_prof;
  *unstamped = c->prof_unstamped;
  return KS_OK;
}

ks_status gpu_cmd_timestamps(ks_cmd *c, double *ns, int n) {
  if (n <= 0) return KS_OK;
  if (!c->qpool || (uint32_t)n > c->n_ts)
    return ks_fail(KS_ERR_ARG, "gpu_cmd_timestamps: %d requested, %u recorded", n, c->n_ts);
  uint64_t *raw = malloc((size_t)n * sizeof *raw);
  if (!raw) return ks_fail(KS_ERR_NOMEM, "out of host memory reading timestamps");
  VkResult r = vkGetQueryPoolResults(c->g->dev, c->qpool, 0, (uint32_t)n, (size_t)n * sizeof *raw,
                                     raw, sizeof *raw,
                                     VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
  if (r != VK_SUCCESS) {
    free(raw);
    return ks_fail(KS_ERR_VULKAN, "vkGetQueryPoolResults failed: %s (%s:%d)",
                   gpu_vk_result_name(r), __FILE__, __LINE__);
  }
  uint64_t mask = c->g->timestamp_bits >= 64 ? ~0ull : ((1ull << c->g->timestamp_bits) - 1);
  for (int i = 0; i < n; i++)
    ns[i] = (double)((raw[i] - raw[0]) & mask) * c->g->info.timestamp_period_ns;
  free(raw);
  return KS_OK;
}

/* ---------------------------------------------------------------- pipelines */

static ks_status get_layout(ks_gpu *g, int n_bind) {
  if (g->layout[n_bind]) return KS_OK;
  VkDescriptorSetLayoutBinding b[KS_MAX_BINDINGS];
  for (int i = 0; i < n_bind; i++) {
    VkDescriptorSetLayoutBinding e = {
        .binding = (uint32_t)i,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .descriptorCount = 1,
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
    };
    b[i] = e;
  }
  VkDescriptorSetLayoutCreateInfo dci = {
      .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
      .bindingCount = (uint32_t)n_bind,
      .pBindings = b,
  };
  VK_CHECK(vkCreateDescriptorSetLayout(g->dev, &dci, NULL, &g->dsl[n_bind]));
  VkPushConstantRange pr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = 128};
  VkPipelineLayoutCreateInfo lci = {
      .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
      .setLayoutCount = 1,
      .pSetLayouts = &g->dsl[n_bind],
      .pushConstantRangeCount = 1,
      .pPushConstantRanges = &pr,
  };
  VK_CHECK(vkCreatePipelineLayout(g->dev, &lci, NULL, &g->layout[n_bind]));
  return KS_OK;
}

/* KVSCOPE_PIPELINE_STATS=1: the driver's statistics of a new pipeline (one line per executable) */
static void print_pipeline_stats(ks_gpu *g, VkPipeline pipe, const char *shader,
                                 const uint32_t *spec, int n_spec) {
  VkPipelineInfoKHR pi = {.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, .pipeline = pipe};
  uint32_t ne = 0;
  if (g->pexec_props(g->dev, &pi, &ne, NULL) != VK_SUCCESS) return;
  for (uint32_t e = 0; e < ne; e++) {
    VkPipelineExecutableInfoKHR ei = {.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR,
                                      .pipeline = pipe, .executableIndex = e};
    uint32_t ns = 0;
    if (g->pexec_stats(g->dev, &ei, &ns, NULL) != VK_SUCCESS || ns == 0) continue;
    VkPipelineExecutableStatisticKHR *st = calloc(ns, sizeof *st);
    if (!st) return;
    for (uint32_t i = 0; i < ns; i++) st[i].sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR;
    if (g->pexec_stats(g->dev, &ei, &ns, st) == VK_SUCCESS || ns) {
      fprintf(stderr, "pipeline %s [", shader);
      for (int i = 0; i < n_spec; i++) fprintf(stderr, "%s%u", i ? " " : "", spec[i]);
      fprintf(stderr, "]");
      for (uint32_t i = 0; i < ns; i++) {
        fprintf(stderr, "  %s=", st[i].name);
        switch (st[i].format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
          fprintf(stderr, "%u", (unsigned)st[i].value.b32);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
          fprintf(stderr, "%lld", (long long)st[i].value.i64);
          break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
          fprintf(stderr, "%llu", (unsigned long long)st[i].value.u64);
          break;
        default:
          fprintf(stderr, "%g", st[i].value.f64);
        }
      }
      fprintf(stderr, "\n");
    }
    free(st);
  }
}

static ks_status get_pipeline(ks_gpu *g, const char *shader, const uint32_t *spec, int n_spec,
                              int n_bind, VkPipeline *out) {
  for (int i = 0; i < g->n_pipes; i++) {
    ks_pipe_entry *e = &g->pipes[i];
    if (e->n_spec == n_spec && e->n_bind == n_bind && strcmp(e->shader, shader) == 0 &&
        memcmp(e->spec, spec, (size_t)n_spec * sizeof *spec) == 0) {
      *out = e->pipe;
      return KS_OK;
    }
  }
  const struct ks_spirv *sp = NULL;
  for (size_t i = 0; i < KS_ARRAY_LEN(ks_spirv_table); i++)
    if (strcmp(ks_spirv_table[i].name, shader) == 0) sp = &ks_spirv_table[i];
  if (!sp) return ks_fail(KS_ERR_UNSUPPORTED, "shader '%s' is not built in", shader);
  ks_status st = get_layout(g, n_bind);
  if (st != KS_OK) return st;
  if (g->n_pipes == g->cap_pipes) {
    int cap = g->cap_pipes ? 2 * g->cap_pipes : 32;
    ks_pipe_entry *np = realloc(g->pipes, (size_t)cap * sizeof *np);
    if (!np) return ks_fail(KS_ERR_NOMEM, "out of host memory for pipelines");
    g->pipes = np;
    g->cap_pipes = cap;
  }
  VkShaderModuleCreateInfo mci = {
      .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
      .codeSize = sp->size,
      .pCode = sp->code,
  };
  VkShaderModule mod;
  VK_CHECK(vkCreateShaderModule(g->dev, &mci, NULL, &mod));
  VkSpecializationMapEntry me[KS_MAX_SPEC];
  for (int i = 0; i < n_spec; i++) {
    VkSpecializationMapEntry e = {.constantID = (uint32_t)i,
                                  .offset = (uint32_t)(i * sizeof(uint32_t)),
                                  .size = sizeof(uint32_t)};
    me[i] = e;
  }
  VkSpecializationInfo si = {
      .mapEntryCount = (uint32_t)n_spec,
      .pMapEntries = me,
      .dataSize = (size_t)n_spec * sizeof(uint32_t),
      .pData = spec,
  };
  VkComputePipelineCreateInfo ci = {
      .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
      .stage =
          {
              .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
              .stage = VK_SHADER_STAGE_COMPUTE_BIT,
              .module = mod,
              .pName = "main",
              .pSpecializationInfo = n_spec ? &si : NULL,
          },
      .layout = g->layout[n_bind],
  };
  if (g->pexec_props && g->pexec_stats) ci.flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
  VkPipeline pipe;
  VkResult r = vkCreateComputePipelines(g->dev, g->pcache, 1, &ci, NULL, &pipe);
  vkDestroyShaderModule(g->dev, mod, NULL);
  if (r != VK_SUCCESS)
    return ks_fail(KS_ERR_VULKAN, "vkCreateComputePipelines(%s) failed: %s (%s:%d)", shader,
                   gpu_vk_result_name(r), __FILE__, __LINE__);
  if (g->pexec_props && g->pexec_stats) print_pipeline_stats(g, pipe, shader, spec, n_spec);
  ks_pipe_entry *e = &g->pipes[g->n_pipes++];
  memset(e, 0, sizeof *e);
  e->shader = sp->name;
  memcpy(e->spec, spec, (size_t)n_spec * sizeof *spec);
  e->n_spec = n_spec;
  e->n_bind = n_bind;
  e->pipe = pipe;
  *out = pipe;
  return KS_OK;
}

void gpu_ops_release(ks_gpu *g) {
  for (int i = 0; i < g->n_pipes; i++) vkDestroyPipeline(g->dev, g->pipes[i].pipe, NULL);
  free(g->pipes);
  g->pipes = NULL;
  g->n_pipes = g->cap_pipes = 0;
  for (int i = 0; i <= KS_MAX_BINDINGS; i++) {
    if (g->layout[i]) vkDestroyPipelineLayout(g->dev, g->layout[i], NULL);
    if (g->dsl[i]) vkDestroyDescriptorSetLayout(g->dev, g->dsl[i], NULL);
    g->layout[i] = VK_NULL_HANDLE;
    g->dsl[i] = VK_NULL_HANDLE;
  }
  for (int i = 0; i < g->n_ropes; i++) {
    gpu_buf_destroy_internal(g, &g->ropes[i].buf);
    free(g->ropes[i].factors);
  }
  for (int i = 0; i < g->n_cm_bufs; i++) gpu_buf_destroy_internal(g, &g->cm_bufs[i]);
  free(g->cm_bufs);
  g->cm_bufs = NULL;
  g->n_cm_bufs = 0;
  g->cm_region = 0;
  free(g->ropes);
  g->ropes = NULL;
  g->n_ropes = 0;
}

/* ---------------------------------------------------------------- the dispatch helper */

/* A storage-buffer binding: the region [r.off, r.off + bytes) of r.b; bytes 0 means "to the end
 * of the buffer" (capped at maxStorageBufferRange) for regions whose extent depends on data the
 * GPU reads (the K/V pool through the block table). */
typedef struct {
  ks_bref r;
  uint64_t bytes;
} ks_bind;

static ks_bind bind(ks_bref r, uint64_t bytes) {
  ks_bind b = {r, bytes};
  return b;
}

/* gpu_cmd_profile: a stamp after the dispatch just recorded, and what it was. */
static void prof_note(ks_cmd *c, const char *op, const ks_bind *b, int n_bind) {
  if (c->prof_unstamped < 0) return;
  int i = gpu_cmd_timestamp(c);
  if (i != c->n_prof + 1) { /* the query pool is full */
    c->prof_unstamped++;
    return;
  }
  ks_op_time *e = &c->prof[c->n_prof++];
  memset(e, 0, sizeof *e);
  e->op = op;
  e->n_bufs = n_bind;
  for (int k = 0; k < n_bind; k++) e->bufs[k] = b[k].r.b;
}

/* Records one dispatch. The first n_bind words of the push-constant block `pc` receive each
 * binding's offset in 32-bit words from the descriptor's start: a descriptor must start at a
 * multiple of minStorageBufferOffsetAlignment, so it is bound at the offset rounded down, its
 * range extended by the bytes rounded off (lavapipe bounds-checks and drops writes past the
 * range), and the shader adds the remaining words. */
static void dispatch(ks_cmd *c, const char *op, const char *shader, const uint32_t *spec,
                     int n_spec, const ks_bind *b, int n_bind, void *pc, uint32_t pc_size,
                     uint32_t gx, uint32_t gy, uint32_t gz) {
  ks_gpu *g = c->g;
  if (c->status != KS_OK) return;
  if (!c->recording) {
    cmd_fail(c, KS_ERR_ARG, "%s recorded outside gpu_cmd_begin/gpu_cmd_end", op);
    return;
  }
  if (gx == 0 || gy == 0 || gz == 0) return;
  if (gx > g->max_groups[0] || gy > g->max_groups[1] || gz > g->max_groups[2]) {
    cmd_fail(c, KS_ERR_ARG, "%s: %u x %u x %u workgroups exceed the device's limit %u x %u x %u",
             op, gx, gy, gz, g->max_groups[0], g->max_groups[1], g->max_groups[2]);
    return;
  }
  uint32_t *words = pc;
  VkDescriptorBufferInfo bi[KS_MAX_BINDINGS];
  const uint64_t align = g->info.min_storage_align ? g->info.min_storage_align : 1;
  for (int i = 0; i < n_bind; i++) {
    const ks_buf *buf = b[i].r.b;
    uint64_t off = b[i].r.off;
    if (!buf || !buf->buf) {
      cmd_fail(c, KS_ERR_ARG, "%s: binding %d has no buffer", op, i);
      return;
    }
    if (off & 3) {
      cmd_fail(c, KS_ERR_ARG, "%s: binding %d offset %llu is not a multiple of 4", op, i,
               (unsigned long long)off);
      return;
    }
    uint64_t alloc = (buf->size + 15) & ~15ull; /* what gpu_buf_create really allocated */
    if (off > buf->size || b[i].bytes > buf->size - off) {
      cmd_fail(c, KS_ERR_ARG, "%s: binding %d region [%llu, %llu) is outside its %llu-byte buffer",
               op, i, (unsigned long long)off, (unsigned long long)(off + b[i].bytes),
               (unsigned long long)buf->size);
      return;
    }
    uint64_t base = off - off % align;
    uint64_t range = b[i].bytes ? (off - base) + ((b[i].bytes + 3) & ~3ull) : alloc - base;
    if (range > alloc - base) range = alloc - base;
    if (range > g->info.max_storage_range) {
      if (b[i].bytes) {
        cmd_fail(c, KS_ERR_ARG, "%s: binding %d spans %llu bytes, over maxStorageBufferRange "
                                "(%llu)", op, i, (unsigned long long)range,
                 (unsigned long long)g->info.max_storage_range);
        return;
      }
      range = g->info.max_storage_range & ~3ull;
    }
    if (range == 0) range = 4;
    VkDescriptorBufferInfo e = {.buffer = buf->buf, .offset = base, .range = range};
    bi[i] = e;
    words[i] = (uint32_t)((off - base) / 4);
  }
  VkPipeline pipe = VK_NULL_HANDLE;
  ks_status st = get_pipeline(g, shader, spec, n_spec, n_bind, &pipe);
  if (st != KS_OK) {
    cmd_fail(c, st, "%s: %s", op, ks_last_error());
    return;
  }
  VkDescriptorSet set = VK_NULL_HANDLE;
  for (;;) {
    VkDescriptorSetAllocateInfo ai = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = c->dpools[c->cur_dpool],
        .descriptorSetCount = 1,
        .pSetLayouts = &g->dsl[n_bind],
    };
    VkResult r = vkAllocateDescriptorSets(g->dev, &ai, &set);
    if (r == VK_SUCCESS) break;
    if (r != VK_ERROR_OUT_OF_POOL_MEMORY && r != VK_ERROR_FRAGMENTED_POOL) {
      cmd_fail(c, KS_ERR_VULKAN, "%s: vkAllocateDescriptorSets failed: %s (%s:%d)", op,
               gpu_vk_result_name(r), __FILE__, __LINE__);
      return;
    }
    if (c->cur_dpool + 1 == c->n_dpools && (st = add_dpool(c)) != KS_OK) {
      cmd_fail(c, st, "%s: %s", op, ks_last_error());
      return;
    }
    c->cur_dpool++;
  }
  VkWriteDescriptorSet w[KS_MAX_BINDINGS];
  for (int i = 0; i < n_bind; i++) {
    VkWriteDescriptorSet e = {
        .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
        .dstSet = set,
        .dstBinding = (uint32_t)i,
        .descriptorCount = 1,
        .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .pBufferInfo = &bi[i],
    };
    w[i] = e;
  }
  vkUpdateDescriptorSets(g->dev, (uint32_t)n_bind, w, 0, NULL);
  vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
  vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, g->layout[n_bind], 0, 1, &set, 0,
                          NULL);
  vkCmdPushConstants(c->cb, g->layout[n_bind], VK_SHADER_STAGE_COMPUTE_BIT, 0, pc_size, pc);
  vkCmdDispatch(c->cb, gx, gy, gz);
  if (c->profiling) prof_note(c, op, b, n_bind);
}

/* Workgroups for a 1-D problem of n invocations as a 2-D grid (shaders/grid.glsl). */
static void grid_1d(uint64_t n, uint32_t wg, uint32_t *gx, uint32_t *gy) {
  uint64_t groups = (n + wg - 1) / wg;
  if (groups == 0) {
    *gx = *gy = 0;
    return;
  }
  *gx = (uint32_t)KS_MIN(groups, 65535);
  *gy = (uint32_t)((groups + *gx - 1) / *gx);
}

static int bad_ref(ks_cmd *c, const char *op, ks_bref r, const char *name) {
  if (r.b && r.b->buf) return 0;
  cmd_fail(c, KS_ERR_ARG, "%s: %s buffer is missing", op, name);
  return 1;
}

/* ---------------------------------------------------------------- ops */

/* Workgroup sizes. Reductions depend on them, so they are fixed per device (never per call);
 * none assumes a subgroup size (lavapipe's is 8, NVIDIA's 32, AMD's 64). */
#define WG_MATMUL 64u
#define WG_NORM 64u
#define WG_ATTN 64u
#define WG_EMBED 64u
#define WG_ROPE 64u
#define WG_ELEM 256u

typedef struct {
  uint32_t o_out, o_tok, o_w;
  uint32_t dim, n_tok, row0, rows, row_bytes;
} pc_embed;
_Static_assert(sizeof(pc_embed) == 32 && sizeof(pc_embed) <= 128, "embed.comp push constants");

typedef struct {
  uint32_t o_out, o_x, o_w;
  uint32_t n;
  float eps;
} pc_rmsnorm;
_Static_assert(sizeof(pc_rmsnorm) == 20, "rmsnorm.comp push constants");

typedef struct {
  uint32_t o_out, o_x, o_w, o_nw, o_k, o_v, o_st, o_f;
  uint32_t K, N, row0, rows, n_tok, row_bytes, flags;
  float eps;
  uint32_t qd, kvd, head_dim, neox;
} pc_matmul;
_Static_assert(sizeof(pc_matmul) == 80, "matmul.glsl push constants");

typedef struct {
  uint32_t o_out, o_x, o_nw;
  uint32_t K, flags;
  float eps;
} pc_xprep;
_Static_assert(sizeof(pc_xprep) == 24, "cm_xprep.comp push constants");

typedef struct {
  uint32_t o_q, o_qkv, o_k, o_v, o_table, o_step, o_f, o_bias;
  uint32_t n_tok, qd, kvd, head_dim, neox, has_bias, total;
} pc_rope_kv;
_Static_assert(sizeof(pc_rope_kv) == 60, "rope_kv.comp push constants");

typedef struct {
  uint32_t o_x, o_step, o_f;
  uint32_t n_tok, n_heads, head_dim, neox, total;
} pc_rope;
_Static_assert(sizeof(pc_rope) == 32, "rope.comp push constants");

typedef struct {
  uint32_t o_cache, o_src, o_table, o_step;
  uint32_t n_tok, kv_dim, total;
} pc_kv_write;
_Static_assert(sizeof(pc_kv_write) == 28, "kv_write.comp push constants");

typedef struct {
  uint32_t o_out, o_q, o_k, o_v, o_table, o_step, o_probs, o_part;
  uint32_t n_tok, n_head, group, head_dim, kv_dim, probs_stride, has_probs;
  float sqrt_hd;
  uint32_t phase, n_chunk_max;
} pc_attention;
_Static_assert(sizeof(pc_attention) == 72 && sizeof(pc_attention) <= 128,
               "attention.comp push constants");

typedef struct {
  uint32_t o_out, o_gate, o_up, n;
} pc_swiglu;
_Static_assert(sizeof(pc_swiglu) == 16, "swiglu.comp push constants");

typedef struct {
  uint32_t o_a, o_b, n;
} pc_binary;
_Static_assert(sizeof(pc_binary) == 12, "add.comp / copy.comp push constants");

typedef struct {
  uint32_t o_x, o_b, n, total;
} pc_add_bias;
_Static_assert(sizeof(pc_add_bias) == 16, "add_bias.comp push constants");

/* Weight types with a matrix kernel (shaders/matmul_<type>.comp) and an embed path. */
static const struct {
  ks_type type;
  const char *matmul;
} k_weight_types[] = {
    {KS_TYPE_F32, "matmul_f32"},   {KS_TYPE_F16, "matmul_f16"},   {KS_TYPE_BF16, "matmul_bf16"},
    {KS_TYPE_Q8_0, "matmul_q8_0"}, {KS_TYPE_Q4_0, "matmul_q4_0"}, {KS_TYPE_Q4_K, "matmul_q4_k"},
    {KS_TYPE_Q5_K, "matmul_q5_k"}, {KS_TYPE_Q6_K, "matmul_q6_k"}, {KS_TYPE_Q5_0, "matmul_q5_0"},
    {KS_TYPE_Q5_1, "matmul_q5_1"},
};

static const char *matmul_shader(ks_type t) {
  for (size_t i = 0; i < KS_ARRAY_LEN(k_weight_types); i++)
    if (k_weight_types[i].type == t) return k_weight_types[i].matmul;
  return NULL;
}

int gpu_type_supported(ks_type t) { return matmul_shader(t) != NULL; }

static int type_ok(ks_type t) { return gpu_type_supported(t); }

static int tensor_ok(ks_cmd *c, const char *op, const ks_gpu_tensor *t) {
  if (!t || !t->slices || t->n_slices <= 0) {
    cmd_fail(c, KS_ERR_ARG, "%s: weight tensor not uploaded", op);
    return 0;
  }
  if (!type_ok(t->type)) {
    cmd_fail(c, KS_ERR_UNSUPPORTED, "%s: no kernel for %s weights", op, ks_type_name(t->type));
    return 0;
  }
  return 1;
}

void op_embed(ks_cmd *c, ks_bref out, const ks_gpu_tensor *emb, ks_bref tokens, int n_tok) {
  const char *op = "op_embed";
  if (c->status != KS_OK || n_tok <= 0) return;
  if (!tensor_ok(c, op, emb) || bad_ref(c, op, out, "out") || bad_ref(c, op, tokens, "tokens"))
    return;
  uint32_t dim = (uint32_t)emb->ne[0];
  uint32_t spec[2] = {WG_EMBED, (uint32_t)emb->type};
  for (int s = 0; s < emb->n_slices; s++) {
    int64_t r0 = (int64_t)s * emb->rows_per_slice;
    pc_embed pc = {
        .dim = dim,
        .n_tok = (uint32_t)n_tok,
        .row0 = (uint32_t)r0,
        .rows = (uint32_t)KS_MIN(emb->rows_per_slice, emb->ne[1] - r0),
        .row_bytes = (uint32_t)ks_type_row_bytes(emb->type, emb->ne[0]),
    };
    ks_bind b[3] = {bind(out, (uint64_t)n_tok * dim * 4), bind(tokens, (uint64_t)n_tok * 4),
                    bind(ks_ref(&emb->slices[s], 0), 0)};
    dispatch(c, op, "embed", spec, 2, b, 3, &pc, sizeof pc, (dim + WG_EMBED - 1) / WG_EMBED,
             (uint32_t)n_tok, 1);
  }
}

void op_rmsnorm(ks_cmd *c, ks_bref out, ks_bref x, ks_bref w, int n_tok, int n, float eps) {
  const char *op = "op_rmsnorm";
  if (c->status != KS_OK || n_tok <= 0) return;
  if (n <= 0) {
    cmd_fail(c, KS_ERR_ARG, "%s: row length %d", op, n);
    return;
  }
  uint32_t spec[1] = {WG_NORM};
  pc_rmsnorm pc = {.n = (uint32_t)n, .eps = eps};
  uint64_t rows = (uint64_t)n_tok * (uint64_t)n * 4;
  ks_bind b[3] = {bind(out, rows), bind(x, rows), bind(w, (uint64_t)n * 4)};
  dispatch(c, op, "rmsnorm", spec, 1, b, 3, &pc, sizeof pc, (uint32_t)n_tok, 1, 1);
}

/* matmul.glsl's work split (see there): SG * SPLIT lanes share a row, WG invocations; a decode
 * build (one token, matmul_<type>_dec) with R = 2 or 4 rows per lane group (a specialisation
 * constant, below), TT = 1 token, and a prefill one with R = 4, TT = 8 (compiled in; the host
 * mirrors them here). A
 * row's bits depend only on K, SG and SPLIT, fixed per device and row length. */
#define MM_WG_TARGET 128u
#ifndef KS_MM_R_PREFILL
#define KS_MM_R_PREFILL 4 /* CMake passes KVSCOPE_PREFILL_R, the value compiled into the shaders */
#endif
#define MM_R_PREFILL ((uint32_t)KS_MM_R_PREFILL)
#ifndef KS_MM_TT_PREFILL
#define KS_MM_TT_PREFILL 8 /* CMake passes KVSCOPE_PREFILL_TT */
#endif
#define MM_TT_PREFILL ((uint32_t)KS_MM_TT_PREFILL)
#define MM_NORM_IN 1u
#define MM_EPI_ADD 2u
#define MM_EPI_SWIGLU 4u
#define MM_EPI_ROPE 8u

/* Lanes per row: the device's subgroup size, at most 32 (a power of two). */
static uint32_t mm_sg(const ks_gpu *g) {
  uint32_t sg = g->info.subgroup_size ? g->info.subgroup_size : 32;
  if (sg > 32) sg = 32;
  if (sg & (sg - 1)) sg = 1; /* not a power of two: one lane per row */
  return sg;
}

/* Bumped whenever a kernel's arithmetic (an order of sums, a fusion) changes: K/V written by
 * another version would not equal what this one computes. */
#define KS_KERNEL_NUMERICS 5u

uint64_t gpu_numerics_id(const ks_gpu *g) {
  const uint32_t words[] = {KS_KERNEL_NUMERICS, g->info.vendor_id, g->info.device_id,
                            g->info.driver_version, mm_sg(g), (uint32_t)g->coopmat_mode,
                            (uint32_t)g->attn_wg};
  uint64_t h = 1469598103934665603ull; /* FNV-1a over the words' bytes */
  for (size_t i = 0; i < KS_ARRAY_LEN(words); i++)
    for (int b = 0; b < 4; b++) h = (h ^ ((words[i] >> (8 * b)) & 0xff)) * 1099511628211ull;
  return h;
}

int gpu_matmul_subgroup(const ks_gpu *g) {
  return g->info.subgroup_shuffle && !g->no_subgroup;
}

/* matmul_cm.glsl: its prefill tile (KS_CM_TN 8-token tiles, KS_CM_NSG subgroups of 32 weight
 * rows: every weight tile serves 64 tokens; Q8_0 / Q4_0 their own, KS_CM_TN_Q and KS_CM_NSG_Q)
 * and its decode workgroup (S subgroups of 16 rows); which products take them:
 * gpu_matmul_coopmat and the policy (gpu_coopmat_mode). */
#ifndef KS_CM_TN
#define KS_CM_TN 8 /* CMake passes KVSCOPE_CM_TN */
#endif
#ifndef KS_CM_NSG
#define KS_CM_NSG 8 /* CMake passes KVSCOPE_CM_NSG */
#endif
#ifndef KS_CM_TN_Q
#define KS_CM_TN_Q 8 /* CMake passes KVSCOPE_CM_TN_Q: Q8_0 / Q4_0 weights' own tile */
#endif
#ifndef KS_CM_NSG_Q
#define KS_CM_NSG_Q 4 /* CMake passes KVSCOPE_CM_NSG_Q */
#endif
/* the prefill tile compiled into matmul_cm.glsl for weights of type t */
static void cm_tile(ks_type t, uint32_t *nsg, uint32_t *tn) {
  const int q = t == KS_TYPE_Q8_0 || t == KS_TYPE_Q4_0;
  *nsg = q ? KS_CM_NSG_Q : KS_CM_NSG;
  *tn = q ? KS_CM_TN_Q : KS_CM_TN;
}

int gpu_coopmat_mode(const ks_gpu *g) { return g->coopmat_mode; }

int gpu_matmul_coopmat(const ks_gpu *g, ks_type t, int64_t K) {
  const int m = g->coopmat_mode;
  return (m == 2 || m == 3 || (m == 1 && t == KS_TYPE_F16)) && K >= 32 && K % 32 == 0 &&
         K <= KS_COOPMAT_KMAX;
}

/* A region of the cooperative-matrix input scratch for n bytes: a ring of 4 regions (the forward
 * pass separates consecutive products with barriers, so a region is free again 4 products
 * later; products recorded side by side without a barrier, as unstacked q, k, v, get distinct
 * regions). Grown when a product needs more; an outgrown buffer stays alive until gpu_destroy,
 * as recorded command buffers may still use it. */
#define CM_RING 4u
static int cm_scratch(ks_cmd *c, uint64_t n, ks_bref *out) {
  ks_gpu *g = c->g;
  n = (n + 255) & ~255ull;
  if (n > g->cm_region) {
    ks_buf *nb = realloc(g->cm_bufs, (size_t)(g->n_cm_bufs + 1) * sizeof *nb);
    if (!nb) {
      cmd_fail(c, KS_ERR_NOMEM, "op_matmul: out of host memory");
      return 0;
    }
    g->cm_bufs = nb;
    uint64_t region = KS_MAX(n, 2 * g->cm_region);
    ks_status st = gpu_buf_create_internal(g, &g->cm_bufs[g->n_cm_bufs], CM_RING * region,
                                           KS_MEM_DEVICE);
    if (st) {
      cmd_fail(c, st, "op_matmul: the cooperative-matrix input scratch (%llu MiB): %s",
               (unsigned long long)(CM_RING * region >> 20), ks_last_error());
      return 0;
    }
    g->n_cm_bufs++;
    g->cm_region = region;
  }
  *out = ks_ref(&g->cm_bufs[g->n_cm_bufs - 1], (uint64_t)(g->cm_next++ % CM_RING) * g->cm_region);
  return 1;
}

/* slices of K for matmul_cm.glsl (the partial sums added in order): at most 8, each a multiple
 * of 32 elements */
static uint32_t cm_slices(uint64_t K) {
  for (uint32_t s = 8; s > 1; s /= 2)
    if (K % (32u * s) == 0) return s;
  return 1;
}

static const ks_buf *rope_table(ks_cmd *c, int head_dim, float base, const float *factors);

void op_matmul(ks_cmd *c, ks_bref out, ks_bref x, const ks_gpu_tensor *W, int n_tok) {
  op_matmul_ex(c, out, x, W, n_tok, NULL);
}

void op_matmul_ex(ks_cmd *c, ks_bref out, ks_bref x, const ks_gpu_tensor *W, int n_tok,
                  const ks_matmul_opts *o) {
  const char *op = "op_matmul";
  if (c->status != KS_OK || n_tok <= 0) return;
  if (!tensor_ok(c, op, W)) return;
  char shader[48];
  uint64_t K = (uint64_t)W->ne[0], rows_all = (uint64_t)W->ne[1];
  static const ks_matmul_opts none = {0};
  if (!o) o = &none;
  const int cm = gpu_matmul_coopmat(c->g, W->type, (int64_t)K) &&
                 !(o->decode_step && c->g->coopmat_mode == 3);
  const int cm_prefill_only = c->g->coopmat_mode == 3;
  const int cm_dec = cm && n_tok == 1 && !cm_prefill_only; /* the one-token kernel */
  if (cm)
    snprintf(shader, sizeof shader, "%s_cm%s", matmul_shader(W->type), cm_dec ? "_dec" : "");
  else
    snprintf(shader, sizeof shader, "%s%s%s", matmul_shader(W->type), n_tok == 1 ? "_dec" : "",
             gpu_matmul_subgroup(c->g) ? "" : "_nosg");
  if (K % 4) {
    cmd_fail(c, KS_ERR_UNSUPPORTED, "%s: %s row length %llu is not a multiple of 4", op,
             ks_type_name(W->type), (unsigned long long)K);
    return;
  }
  if (x.off % 16 || (o->norm_w.b && o->norm_w.off % 16)) {
    cmd_fail(c, KS_ERR_ARG, "%s: input and norm weights must start at a multiple of 16 bytes", op);
    return;
  }
  const ks_rope_opts *rp = o->rope;
  uint64_t qd = 0, kvd = 0;
  const ks_buf *freq = NULL;
  if (rp) {
    qd = (uint64_t)rp->n_head * rp->head_dim;
    kvd = (uint64_t)rp->n_kv_head * rp->head_dim;
    if (W->n_slices != 1 || rows_all != qd + 2 * kvd || rp->head_dim <= 0 || rp->head_dim % 2 ||
        o->swiglu || o->add || !rp->kpool.b || !rp->vpool.b || !rp->steptab.b) {
      cmd_fail(c, KS_ERR_ARG, "%s: a fused q|k|v + RoPE product needs one slice of q_dim + "
                              "2 kv_dim rows, an even head_dim, the pools and the step/table", op);
      return;
    }
    if (!(freq = rope_table(c, rp->head_dim, rp->base, rp->factors))) return;
  }
  uint64_t N = o->swiglu ? rows_all / 2 : rp ? qd : rows_all; /* output columns */
  if (o->swiglu && (rows_all % 2 || W->n_slices != 1)) {
    cmd_fail(c, KS_ERR_ARG, "%s: a fused gate|up product needs one slice of 2 x rows", op);
    return;
  }
  uint64_t stride = o->out_stride ? (uint64_t)o->out_stride : N;
  if (stride < N) {
    cmd_fail(c, KS_ERR_ARG, "%s: output row stride %llu < %llu columns", op,
             (unsigned long long)stride, (unsigned long long)N);
    return;
  }
  uint32_t flags = (o->norm_w.b ? MM_NORM_IN : 0) | (o->add ? MM_EPI_ADD : 0) |
                   (o->swiglu ? MM_EPI_SWIGLU : 0) | (rp ? MM_EPI_ROPE : 0);
  const int decode = n_tok == 1;
  /* a CPU device (lavapipe) runs decode products fastest with workgroups of 64 and 4 rows per
   * lane group (kvscope-tiny tg128 +35% against 128 and 2); neither changes a bit */
  const int cpu_dev = c->g->info.type == VK_PHYSICAL_DEVICE_TYPE_CPU;
  uint32_t wgt = decode && cpu_dev ? 64u : MM_WG_TARGET;
  /* tuning (kvscope bench): KVSCOPE_MM_WG=N workgroup size; it never changes a result's bits */
  const char *tune = getenv("KVSCOPE_MM_WG");
  if (tune && atoi(tune) >= 1 && atoi(tune) <= 1024) wgt = (uint32_t)atoi(tune);
  /* decode: 4 weight rows per lane group for Q8_0 and Q4_0 (one input load serves more of their
   * short rows; 2 for the rest: more lanes in flight); KVSCOPE_MM_RDEC=2|4 overrides it for
   * measurements. The bits do not depend on it. */
  const uint32_t rdec = c->g->mm_rdec ? (uint32_t)c->g->mm_rdec
                        : W->type == KS_TYPE_Q8_0 || W->type == KS_TYPE_Q4_0 || cpu_dev ? 4u : 2u;
  const uint32_t R = decode ? rdec : MM_R_PREFILL, TT = decode ? 1 : MM_TT_PREFILL;
  /* SPLIT subgroups share a row when rows are long (more lanes in flight per row): a function
   * of K alone, so decode and prefill sum a row the same way */
  uint32_t split = K >= 4096 ? 4 : K >= 2048 ? 2 : 1;
  /* Decode steps no prompt has to match (gpu_coopmat_mode 3: prompts take the matrix units) split
   * by the rows instead (on the H200 the small products gain 5-8% a step: bench/README.md),
   * each lane with at least 2 units; KVSCOPE_MM_SPLIT_DEC=1|2|4|8 overrides it there. */
  if (decode && !cm && o->decode_step && c->g->coopmat_mode == 3) {
    split = rows_all <= 3072 ? 4 : rows_all <= 8192 ? 2 : 1; /* every weight row read */
    if (c->g->mm_split_dec) split = (uint32_t)c->g->mm_split_dec;
    while (split > 1 && K / 8 < 64 * (uint64_t)split) split /= 2;
  }
  /* decode: units a lane loads before summing them (KVSCOPE_MM_U for measurements; 2 and 4 were
   * slower on the H200); the bits do not depend on it */
  const uint32_t udec = c->g->mm_udec ? (uint32_t)c->g->mm_udec : 1u;
  const uint32_t sg = mm_sg(c->g), lpr = sg * split;
  const uint32_t wg = KS_MAX(wgt / lpr * lpr, lpr), ngr = wg / lpr;
  uint32_t outs = o->swiglu || rp ? R / 2 : R;
  uint32_t spec[5] = {wg, sg, split, rdec, udec}, n_spec = 5,
           per_wg = ngr * outs, tok_tile = TT;
  if (cm) { /* matmul_cm.glsl's work split */
    /* In "prefill" mode no decode step runs here, so K is one slice (one chain of products, no
     * running total to keep: fewer registers) and every prompt, one token included, takes the
     * prefill kernel; otherwise the decode kernel's slices (one subgroup each), in both. */
    const uint32_t S = cm_prefill_only ? 1 : cm_slices(K), paired = o->swiglu || rp;
    uint32_t nsg, tn;
    cm_tile(W->type, &nsg, &tn);
    spec[0] = cm_dec ? 32 * S : 32 * nsg;
    spec[1] = S;
    /* tuning (kvscope bench): KVSCOPE_CM_STAGE=1 makes the decode kernel stage F16 weight tiles
     * through shared memory, and the prefill kernel (below); the bits are the same */
    const char *stage = getenv("KVSCOPE_CM_STAGE");
    spec[2] = stage && !strcmp(stage, "1") ? 1 : 0;
    /* the prefill kernel loads F16 weight tiles straight from the weights (no staging) where
     * each tile's 16 rows are evenly spaced (no RoPE pairs) and every row block is whole, so
     * no tile reads past the slice; KVSCOPE_CM_STAGE=1 stages them too. The same values. */
    const uint32_t blk = nsg * (paired ? 16u : 32u);
    int whole = 1;
    for (int s = 0; s < W->n_slices; s++) {
      int64_t sr = KS_MIN(W->rows_per_slice, W->ne[1] - (int64_t)s * W->rows_per_slice);
      if ((o->swiglu ? sr / 2 : sr) % blk) whole = 0;
    }
    spec[3] = !cm_dec && W->type == KS_TYPE_F16 && !rp && K % 8 == 0 && whole && !spec[2];
    n_spec = 4;
    per_wg = (cm_dec ? 1 : nsg) * (paired ? 16 : 32);
    tok_tile = cm_dec ? 1 : 8 * tn;
  }
  uint64_t out_bytes = ((uint64_t)n_tok - 1) * stride * 4 + N * 4;
  /* the cooperative-matrix prefill kernel reads its input normalised and rounded to f16 by
   * cm_xprep.comp, once for all slices and workgroups */
  ks_bind bx = bind(x, (uint64_t)n_tok * K * 4), bn = o->norm_w.b ? bind(o->norm_w, K * 4) : bx;
  if (cm && !cm_dec) {
    ks_bref xh;
    if (!cm_scratch(c, (uint64_t)n_tok * K * 2, &xh)) return;
    pc_xprep pp = {.K = (uint32_t)K, .flags = o->norm_w.b ? MM_NORM_IN : 0, .eps = o->eps};
    ks_bind bp[3] = {bind(xh, (uint64_t)n_tok * K * 2), bx, bn};
    uint32_t no_spec[1] = {0};
    dispatch(c, "op_matmul_input", "cm_xprep", no_spec, 0, bp, 3, &pp, sizeof pp, (uint32_t)n_tok, 1,
             1);
    gpu_cmd_barrier(c);
    bx = bn = bind(xh, (uint64_t)n_tok * K * 2);
  }
  for (int s = 0; s < W->n_slices; s++) {
    int64_t r0 = (int64_t)s * W->rows_per_slice;
    uint32_t rows = (uint32_t)KS_MIN(W->rows_per_slice, W->ne[1] - r0);
    const uint32_t outputs = o->swiglu || rp ? rows / 2 : rows; /* rope: row pairs */
    if (o->swiglu) rows /= 2;
    pc_matmul pc = {
        .K = (uint32_t)K,
        .N = (uint32_t)stride,
        .row0 = (uint32_t)r0,
        .rows = rows,
        .n_tok = (uint32_t)n_tok,
        .row_bytes = (uint32_t)ks_type_row_bytes(W->type, W->ne[0]),
        .flags = flags,
        .eps = o->eps,
        .qd = (uint32_t)qd,
        .kvd = (uint32_t)kvd,
        .head_dim = rp ? (uint32_t)rp->head_dim : 0,
        .neox = rp && rp->neox ? 1u : 0u,
    };
    /* bindings 4-7 (pools, step + table, frequencies) are used only with EPI_ROPE. Otherwise
     * the pools' slots alias this dispatch's own output (the shader may write them, as far as
     * synchronisation is concerned: no other buffer gets a write hazard) and the read-only
     * slots the input. */
    ks_bind bo = bind(out, out_bytes);
    ks_bind b[8] = {bo, bx, bind(ks_ref(&W->slices[s], 0), 0), bn,
                    rp ? bind(rp->kpool, 0) : bo, rp ? bind(rp->vpool, 0) : bo,
                    rp ? bind(rp->steptab, 0) : bx,
                    rp ? bind(ks_ref(freq, 0), (uint64_t)(rp->head_dim / 2) * 4) : bx};
    /* the cooperative-matrix prefill kernel takes token tiles along x: the tiles of one row
     * block, which read the same weights, run side by side */
    const uint32_t gr = (outputs + per_wg - 1) / per_wg;
    const uint32_t gt = ((uint32_t)n_tok + tok_tile - 1) / tok_tile;
    const int tok_x = cm && !cm_dec;
    dispatch(c, op, shader, spec, n_spec, b, 8, &pc, sizeof pc, tok_x ? gt : gr, tok_x ? gr : gt,
             1);
  }
}

static int same_factors(const float *a, const float *b, int n) {
  if (!a || !b) return a == b;
  return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

/* Inverse frequencies of RoPE, one table per (head_dim, base, factors), computed by the CPU
 * reference's own function (ref_rope_freqs) so that GPU and CPU rotate by the same float angle. */
static const ks_buf *rope_table(ks_cmd *c, int head_dim, float base, const float *factors) {
  ks_gpu *g = c->g;
  for (int i = 0; i < g->n_ropes; i++)
    if (g->ropes[i].head_dim == head_dim && g->ropes[i].base == base &&
        same_factors(g->ropes[i].factors, factors, head_dim / 2))
      return &g->ropes[i].buf;
  ks_rope_table *nr = realloc(g->ropes, (size_t)(g->n_ropes + 1) * sizeof *nr);
  if (!nr) {
    cmd_fail(c, KS_ERR_NOMEM, "op_rope: out of host memory");
    return NULL;
  }
  g->ropes = nr;
  ks_rope_table *t = &g->ropes[g->n_ropes];
  memset(t, 0, sizeof *t);
  int half = head_dim / 2;
  float *f = malloc((size_t)half * sizeof *f);
  if (!f) {
    cmd_fail(c, KS_ERR_NOMEM, "op_rope: out of host memory");
    return NULL;
  }
  ref_rope_freqs(f, head_dim, base, factors);
  if (factors) {
    t->factors = malloc((size_t)half * sizeof *t->factors);
    if (!t->factors) {
      free(f);
      cmd_fail(c, KS_ERR_NOMEM, "op_rope: out of host memory");
      return NULL;
    }
    memcpy(t->factors, factors, (size_t)half * sizeof *t->factors);
  }
  ks_status st = gpu_buf_create_internal(g, &t->buf, (uint64_t)half * 4, KS_MEM_DEVICE);
  if (st == KS_OK) {
    /* gpu_upload would count this towards a weight-upload progress bar: copy it directly */
    uint64_t saved = g->prog_total;
    g->prog_total = 0;
    st = gpu_upload(g, &t->buf, 0, f, (uint64_t)half * 4);
    g->prog_total = saved;
  }
  free(f);
  if (st != KS_OK) {
    gpu_buf_destroy_internal(g, &t->buf);
    free(t->factors);
    t->factors = NULL;
    cmd_fail(c, st, "op_rope: %s", ks_last_error());
    return NULL;
  }
  t->head_dim = head_dim;
  t->base = base;
  g->n_ropes++;
  return &t->buf;
}

void op_rope(ks_cmd *c, ks_bref x, ks_bref step, int n_tok, int n_heads, int head_dim,
             float base, int neox) {
  op_rope_scaled(c, x, step, n_tok, n_heads, head_dim, base, neox, NULL);
}

void op_rope_scaled(ks_cmd *c, ks_bref x, ks_bref step, int n_tok, int n_heads, int head_dim,
                    float base, int neox, const float *factors) {
  const char *op = "op_rope";
  if (c->status != KS_OK || n_tok <= 0) return;
  if (head_dim <= 0 || head_dim % 2 || n_heads <= 0) {
    cmd_fail(c, KS_ERR_ARG, "%s: head_dim %d (must be even), n_heads %d", op, head_dim, n_heads);
    return;
  }
  const ks_buf *tab = rope_table(c, head_dim, base, factors);
  if (!tab) return;
  uint64_t total = (uint64_t)n_tok * n_heads * (head_dim / 2);
  pc_rope pc = {
      .n_tok = (uint32_t)n_tok,
      .n_heads = (uint32_t)n_heads,
      .head_dim = (uint32_t)head_dim,
      .neox = neox ? 1u : 0u,
      .total = (uint32_t)total,
  };
  uint32_t spec[1] = {WG_ROPE}, gx, gy;
  grid_1d(total, WG_ROPE, &gx, &gy);
  ks_bind b[3] = {bind(x, (uint64_t)n_tok * n_heads * head_dim * 4), bind(step, 4),
                  bind(ks_ref(tab, 0), (uint64_t)(head_dim / 2) * 4)};
  dispatch(c, op, "rope", spec, 1, b, 3, &pc, sizeof pc, gx, gy, 1);
}

void op_kv_write(ks_cmd *c, ks_bref cache, ks_bref src, ks_bref table, ks_bref step, int n_tok,
                 int kv_dim) {
  const char *op = "op_kv_write";
  if (c->status != KS_OK || n_tok <= 0) return;
  if (kv_dim <= 0) {
    cmd_fail(c, KS_ERR_ARG, "%s: kv_dim %d", op, kv_dim);
    return;
  }
  uint64_t total = (uint64_t)n_tok * kv_dim;
  pc_kv_write pc = {.n_tok = (uint32_t)n_tok, .kv_dim = (uint32_t)kv_dim, .total = (uint32_t)total};
  uint32_t spec[1] = {WG_ELEM}, gx, gy;
  grid_1d(total, WG_ELEM, &gx, &gy);
  ks_bind b[4] = {bind(cache, 0), bind(src, total * 4), bind(table, 0), bind(step, 4)};
  dispatch(c, op, "kv_write", spec, 1, b, 4, &pc, sizeof pc, gx, gy, 1);
}

void op_rope_kv(ks_cmd *c, ks_bref q, ks_bref qkv, ks_bref kpool, ks_bref vpool, ks_bref table,
                ks_bref step, ks_bref bias, int n_tok, int n_head, int n_kv_head, int head_dim,
                float base, int neox, const float *factors) {
  const char *op = "op_rope_kv";
  if (c->status != KS_OK || n_tok <= 0) return;
  if (head_dim <= 0 || head_dim % 2 || n_head <= 0 || n_kv_head <= 0) {
    cmd_fail(c, KS_ERR_ARG, "%s: head_dim %d (must be even), heads %d / %d", op, head_dim,
             n_head, n_kv_head);
    return;
  }
  const ks_buf *tab = rope_table(c, head_dim, base, factors);
  if (!tab) return;
  uint64_t qd = (uint64_t)n_head * head_dim, kvd = (uint64_t)n_kv_head * head_dim;
  uint64_t width = qd + 2 * kvd, total = (uint64_t)n_tok * width / 2;
  if (total > UINT32_MAX) {
    cmd_fail(c, KS_ERR_ARG, "%s: %d tokens of %llu columns is too many", op, n_tok,
             (unsigned long long)width);
    return;
  }
  pc_rope_kv pc = {
      .n_tok = (uint32_t)n_tok,
      .qd = (uint32_t)qd,
      .kvd = (uint32_t)kvd,
      .head_dim = (uint32_t)head_dim,
      .neox = neox ? 1u : 0u,
      .has_bias = bias.b ? 1u : 0u,
      .total = (uint32_t)total,
  };
  uint32_t spec[1] = {WG_ROPE}, gx, gy;
  grid_1d(total, WG_ROPE, &gx, &gy);
  ks_bind b[8] = {bind(q, (uint64_t)n_tok * qd * 4), bind(qkv, (uint64_t)n_tok * width * 4),
                  bind(kpool, 0), bind(vpool, 0), bind(table, 0), bind(step, 4),
                  bind(ks_ref(tab, 0), (uint64_t)(head_dim / 2) * 4),
                  bias.b ? bind(bias, width * 4) : bind(step, 4)};
  dispatch(c, op, "rope_kv", spec, 1, b, 8, &pc, sizeof pc, gx, gy, 1);
}

uint64_t gpu_attention_part_bytes(int n_head, int head_dim, int max_pos) {
  uint64_t chunks = ((uint64_t)(max_pos > 0 ? max_pos : 1) + WG_ATTN - 1) / WG_ATTN;
  return (uint64_t)n_head * chunks * (uint64_t)(head_dim + 2) * 4;
}

void op_attention(ks_cmd *c, ks_bref out, ks_bref q, ks_bref kcache, ks_bref vcache,
                  ks_bref table, ks_bref step, int n_tok, int n_head, int n_kv_head,
                  int head_dim, ks_bref probs, int probs_stride) {
  op_attention_ex(c, out, q, kcache, vcache, table, step, n_tok, n_head, n_kv_head, head_dim,
                  probs, probs_stride, (ks_bref){NULL, 0}, 0);
}

void op_attention_ex(ks_cmd *c, ks_bref out, ks_bref q, ks_bref kcache, ks_bref vcache,
                     ks_bref table, ks_bref step, int n_tok, int n_head, int n_kv_head,
                     int head_dim, ks_bref probs, int probs_stride, ks_bref part, int max_pos) {
  const char *op = "op_attention";
  if (c->status != KS_OK || n_tok <= 0) return;
  if (n_head <= 0 || n_kv_head <= 0 || n_head % n_kv_head || head_dim <= 0 ||
      head_dim > 256 || head_dim % 4) {
    cmd_fail(c, KS_ERR_UNSUPPORTED, "%s: n_head %d, n_kv_head %d, head_dim %d (need n_head a "
                                    "multiple of n_kv_head and head_dim a multiple of 4, at most "
                                    "256)", op, n_head, n_kv_head, head_dim);
    return;
  }
  if (kcache.off % 16 || vcache.off % 16) {
    cmd_fail(c, KS_ERR_ARG, "%s: K/V pools must start at a multiple of 16 bytes", op);
    return;
  }
  int has_probs = probs.b != NULL;
  if (has_probs && probs_stride <= 0) {
    cmd_fail(c, KS_ERR_ARG, "%s: probs_stride %d", op, probs_stride);
    return;
  }
  const int split = part.b != NULL && n_tok == 1;
  if (part.b && max_pos <= 0) {
    cmd_fail(c, KS_ERR_ARG, "%s: split over the context needs the largest position count", op);
    return;
  }
  uint64_t qbytes = (uint64_t)n_tok * n_head * head_dim * 4;
  const uint32_t awg = (uint32_t)c->g->attn_wg; /* keys per chunk, at least WG_ATTN (part sizes) */
  uint32_t n_chunk = (uint32_t)(((uint64_t)(max_pos > 0 ? max_pos : 1) + awg - 1) / awg);
  pc_attention pc = {
      .n_tok = (uint32_t)n_tok,
      .n_head = (uint32_t)n_head,
      .group = (uint32_t)(n_head / n_kv_head),
      .head_dim = (uint32_t)head_dim,
      .kv_dim = (uint32_t)(n_kv_head * head_dim),
      .probs_stride = (uint32_t)(has_probs ? probs_stride : 0),
      .has_probs = (uint32_t)has_probs,
      .sqrt_hd = sqrtf((float)head_dim),
      .phase = 2,
      .n_chunk_max = split ? n_chunk : 0,
  };
  _Static_assert(WG_ATTN >= 64, "attention.comp: a 256-wide head needs 64 lanes of vec4");
  /* prompts: attn_tr query rows a workgroup (at most 16 KiB of TR x WG 16-byte partials) */
  uint32_t tr = n_tok == 1 ? 1u : (uint32_t)c->g->attn_tr;
  if (tr * awg > 1024) tr = 1024 / awg;
  /* K vec4s per batch: never more than a head has (the rest would be guarded-off loads) */
  const uint32_t kb = KS_MIN((uint32_t)c->g->attn_kb, (uint32_t)head_dim / 4);
  uint32_t spec[4] = {awg, kb, (uint32_t)c->g->attn_vb, tr};
  /* Without probs, binding 6 is the output again: the shader never touches it; the same for
   * binding 7 without a split. The probs region's extent depends on the position (read on the
   * GPU), so it is bound to the end. */
  ks_bind b[8] = {bind(out, qbytes), bind(q, qbytes), bind(kcache, 0), bind(vcache, 0),
                  bind(table, 0), bind(step, 4), has_probs ? bind(probs, 0) : bind(out, 4),
                  split ? bind(part, gpu_attention_part_bytes(n_head, head_dim, max_pos))
                        : bind(out, 4)};
  if (!split) { /* a workgroup per head and tr consecutive query rows */
    dispatch(c, op, "attention", spec, 4, b, 8, &pc, sizeof pc, (uint32_t)n_head,
             ((uint32_t)n_tok + tr - 1) / tr, 1);
    return;
  }
  /* one token: every chunk of its keys in its own workgroup, then one workgroup per head folds
   * them (the chunks past the position return at once) */
  pc.phase = 0;
  dispatch(c, op, "attention", spec, 4, b, 8, &pc, sizeof pc, (uint32_t)n_head, 1, n_chunk);
  gpu_cmd_barrier(c);
  pc.phase = 1;
  dispatch(c, op, "attention", spec, 4, b, 8, &pc, sizeof pc, (uint32_t)n_head, 1, 1);
}

void op_swiglu(ks_cmd *c, ks_bref out, ks_bref gate, ks_bref up, int n) {
  if (c->status != KS_OK || n <= 0) return;
  pc_swiglu pc = {.n = (uint32_t)n};
  uint32_t spec[1] = {WG_ELEM}, gx, gy;
  grid_1d((uint64_t)n, WG_ELEM, &gx, &gy);
  uint64_t bytes = (uint64_t)n * 4;
  ks_bind b[3] = {bind(out, bytes), bind(gate, bytes), bind(up, bytes)};
  dispatch(c, "op_swiglu", "swiglu", spec, 1, b, 3, &pc, sizeof pc, gx, gy, 1);
}

void op_add_bias(ks_cmd *c, ks_bref x, ks_bref b, int n_tok, int n) {
  if (c->status != KS_OK || n_tok <= 0) return;
  if (n <= 0) {
    cmd_fail(c, KS_ERR_ARG, "op_add_bias: row length %d", n);
    return;
  }
  uint64_t total = (uint64_t)n_tok * (uint64_t)n;
  if (total > UINT32_MAX) {
    cmd_fail(c, KS_ERR_ARG, "op_add_bias: %d x %d elements is over 2^32", n_tok, n);
    return;
  }
  pc_add_bias pc = {.n = (uint32_t)n, .total = (uint32_t)total};
  uint32_t spec[1] = {WG_ELEM}, gx, gy;
  grid_1d(total, WG_ELEM, &gx, &gy);
  ks_bind bb[2] = {bind(x, total * 4), bind(b, (uint64_t)n * 4)};
  dispatch(c, "op_add_bias", "add_bias", spec, 1, bb, 2, &pc, sizeof pc, gx, gy, 1);
}

void op_add(ks_cmd *c, ks_bref x, ks_bref y, int n) {
  if (c->status != KS_OK || n <= 0) return;
  pc_binary pc = {.n = (uint32_t)n};
  uint32_t spec[1] = {WG_ELEM}, gx, gy;
  grid_1d((uint64_t)n, WG_ELEM, &gx, &gy);
  uint64_t bytes = (uint64_t)n * 4;
  ks_bind b[2] = {bind(x, bytes), bind(y, bytes)};
  dispatch(c, "op_add", "add", spec, 1, b, 2, &pc, sizeof pc, gx, gy, 1);
}

void op_mma_peak(ks_cmd *c, ks_bref out, uint32_t groups, uint32_t iters) {
  if (c->status != KS_OK || groups == 0) return;
  if (!c->g->info.coopmat) {
    cmd_fail(c, KS_ERR_UNSUPPORTED, "op_mma_peak: no cooperative matrices on this device");
    return;
  }
  struct {
    uint32_t o_out, iters;
  } pc = {.iters = iters};
  uint32_t no_spec[1] = {0};
  ks_bind b[1] = {bind(out, (uint64_t)groups * 4 * 128 * 4)};
  dispatch(c, "op_mma_peak", "mma_peak", no_spec, 0, b, 1, &pc, sizeof pc, groups, 1, 1);
}

void op_copy(ks_cmd *c, ks_bref dst, ks_bref src, uint64_t n) {
  if (c->status != KS_OK || n == 0) return;
  if (n % 4 || n / 4 > UINT32_MAX) {
    cmd_fail(c, KS_ERR_ARG, "op_copy: %llu bytes (must be a multiple of 4, under 16 GiB)",
             (unsigned long long)n);
    return;
  }
  /* 16-byte words when sizes and offsets allow (what the memory system moves fastest) */
  int wide = n % 16 == 0 && dst.off % 16 == 0 && src.off % 16 == 0;
  uint64_t words = wide ? n / 16 : n / 4;
  pc_binary pc = {.n = (uint32_t)words};
  uint32_t spec[1] = {WG_ELEM}, gx, gy;
  grid_1d(words, WG_ELEM, &gx, &gy);
  ks_bind b[2] = {bind(dst, n), bind(src, n)};
  dispatch(c, "op_copy", wide ? "copy4" : "copy", spec, 1, b, 2, &pc, sizeof pc, gx, gy, 1);
}
