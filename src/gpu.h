/* gpu.h — the Vulkan layer: device choice and feature probing, buffers, weight upload (sliced
 * to respect maxStorageBufferRange), reusable command buffers, and one recording function per
 * op. forward.c composes the ops into the transformer; it never touches Vulkan objects itself.
 *
 * Invariants every op keeps (the prompt cache and the viewer rely on them):
 *  - Batch invariance: the value computed for one token row never depends on how many rows were
 *    recorded with it (n_tok), nor on its index in the batch: reduction orders depend only on the
 *    row length / number of keys and on fixed workgroup sizes. So a prefix computed cold and one
 *    served from the cache give the same bits.
 *  - Positions come from a small `step` buffer (ks_step), not from push constants, so a decode step
 *    recorded once can be replayed after the host rewrites that buffer.
 *  - K/V live in a paged pool: per layer a buffer of (n_blocks, KS_KV_BLOCK, kv_dim) f32 rows, and
 *    a block table (u32 per logical block) maps logical position p to row
 *    table[p / KS_KV_BLOCK] * KS_KV_BLOCK + p % KS_KV_BLOCK. */
#ifndef KS_GPU_H
#define KS_GPU_H
#include <stdint.h>
#include <stdio.h>
#include <vulkan/vulkan.h>

#include "common.h"
#include "model.h"

#define KS_KV_BLOCK 16 /* positions per K/V block */

typedef struct {
  char name[256];
  char driver[256];           /* driver name + info */
  uint32_t api_version, driver_version, vendor_id, device_id;
  VkPhysicalDeviceType type;
  uint32_t subgroup_size;
  int subgroup_arith;         /* subgroup arithmetic ops in compute */
  int subgroup_shuffle;       /* subgroup shuffles in compute (the matrix kernels' fast sums) */
  int fp16_arith, int8_arith; /* shaderFloat16 / shaderInt8 */
  int storage16, storage8;    /* 16/8-bit storage buffer access */
  int coopmat_nv, coopmat_khr;
  /* the cooperative-matrix matrix kernels (matmul_cm.glsl) run here: VK_NV_cooperative_matrix
   * with the 16x8x16 f16 x f16 + f32 subgroup shape, shaderFloat16, the Vulkan memory model,
   * subgroups of 32 with shuffles; gpu_create applies KVSCOPE_COOPMAT (gpu_coopmat_mode) */
  int coopmat;
  uint64_t max_storage_range; /* maxStorageBufferRange */
  uint64_t min_storage_align; /* minStorageBufferOffsetAlignment */
  uint64_t device_local_bytes;
  uint32_t max_wg_invocations, max_shared_bytes;
  float timestamp_period_ns;
  int robust_access;          /* robustBufferAccess enabled (on when supported; KVSCOPE_ROBUST=0 off) */
  int timestamps;             /* the compute queue writes timestamps (gpu_cmd_timestamp) */
} ks_gpu_info;

typedef struct ks_gpu ks_gpu;

/* device_index < 0: $KVSCOPE_DEVICE if set, else the first discrete/integrated GPU, else 0.
 * $KVSCOPE_VALIDATION=1 enables VK_LAYER_KHRONOS_validation; every message is printed to stderr
 * and counted (gpu_validation_count). No device: KS_ERR_VULKAN with a message naming the
 * packages (mesa-vulkan-drivers provides lavapipe; libvulkan1 the loader). */
ks_status gpu_create(ks_gpu **out, int device_index);
void gpu_destroy(ks_gpu *g);
const ks_gpu_info *gpu_info(const ks_gpu *g);
int gpu_device_index(const ks_gpu *g);
/* Number of Vulkan devices; -1 (and message) if no loader/instance. */
int gpu_count_devices(void);
/* Prints every device: name, type, driver, API version, subgroup size, memory, features used. */
ks_status gpu_list_devices(FILE *f);
uint64_t gpu_validation_count(void);
/* Live device allocations (buffers + memory); 0 after everything is destroyed. */
int64_t gpu_live_allocations(const ks_gpu *g);
/* Allocations that were still alive when their ks_gpu was destroyed, summed over the process:
 * 0 in a program without leaks (for tests whose GPU is owned by an engine). */
int64_t gpu_leaked_allocations(void);
/* 1 once a submit or wait reported VK_ERROR_DEVICE_LOST: nothing computed since is trusted and
 * every later GPU call fails (the driver's contract), so callers must not persist results. */
int gpu_device_lost(const ks_gpu *g);

typedef enum { KS_MEM_DEVICE = 0, KS_MEM_HOST = 1 } ks_mem; /* HOST: host-visible, mapped */
typedef struct {
  VkBuffer buf;
  VkDeviceMemory mem;
  uint64_t size;
  void *map; /* non-NULL for KS_MEM_HOST */
} ks_buf;

ks_status gpu_buf_create(ks_gpu *g, ks_buf *b, uint64_t size, ks_mem kind);
void gpu_buf_destroy(ks_gpu *g, ks_buf *b); /* accepts a zeroed/destroyed buffer */
ks_status gpu_upload(ks_gpu *g, ks_buf *dst, uint64_t off, const void *src, uint64_t n);
ks_status gpu_download(ks_gpu *g, const ks_buf *src, uint64_t off, void *dst, uint64_t n);
/* n bytes (off and n multiples of 4) set to copies of `word`. */
ks_status gpu_fill_u32(ks_gpu *g, ks_buf *dst, uint64_t off, uint64_t n, uint32_t word);
/* The uploads that follow (gpu_upload, gpu_tensor_upload) report ks_progress(what, done, total)
 * until total_bytes have gone up. A single tensor of 64 MiB or more reports on its own. */
void gpu_upload_progress(ks_gpu *g, const char *what, uint64_t total_bytes);

/* A weight tensor on the device, split by whole rows into slices of at most
 * maxStorageBufferRange bytes (one slice in the common case; $KVSCOPE_MAX_BUFFER_RANGE, read by
 * gpu_create, lowers the cap so tests exercise several slices). Every type is dequantised
 * inside the kernels (no f32 copy is made) and kept as stored (BF16 and the K-quants included)
 * except Q8_0 and Q4_0 (gpu_type_split_blocks): their blocks (f16 scale, then 32 or 16 quant
 * bytes; 34 and 18 bytes, so never 4-byte aligned) are split so that the kernels read aligned
 * words: a slice of R rows of nb blocks holds block i = row * nb + b's quant bytes at i * qb
 * (qb = 32 or 16) and its scale at R * nb * qb + 2 i. Same size as stored. */
int gpu_type_split_blocks(ks_type t);
typedef struct {
  ks_type type;
  int64_t ne[2];
  int n_slices;
  int64_t rows_per_slice;
  ks_buf *slices;
} ks_gpu_tensor;
ks_status gpu_tensor_upload(ks_gpu *g, ks_gpu_tensor *t, const ks_tensor *host);
/* One tensor of the n host tensors' rows stacked in order (same type and row length), in a
 * single buffer: for the fused q|k|v and gate|up products. KS_ERR_UNSUPPORTED (no message kept
 * as an error) when the parts differ or the whole is over one storage-buffer range; callers
 * then keep the parts apart. */
ks_status gpu_tensor_upload_concat(ks_gpu *g, ks_gpu_tensor *t, const ks_tensor *const *parts,
                                   int n);
/* 1 when the matrix kernels sum lanes with subgroup shuffles (the device has them and
 * KVSCOPE_NO_SUBGROUP is not 1), 0 when they use shared memory: the same order of sums. */
int gpu_matmul_subgroup(const ks_gpu *g);
/* Which products run on the cooperative-matrix kernels (matmul_cm.glsl: f16 operands, f32 sums
 * on the matrix units), set by KVSCOPE_COOPMAT: 0 none (no device support, or "off"); 1 "f16":
 * products with F16 weights, decode and prefill alike; 2 "all": every weight type, decode and
 * prefill alike; 3 "prefill" (the default where the device has them): every weight type except
 * in decode steps (ks_matmul_opts.decode_step), which keep the portable kernels, faster for one
 * token. In mode 3 a position's K/V bits depend on whether a prompt or a decode step computed
 * it, so the engine caches only prompt-computed blocks (engine.c). Only rows of a multiple of
 * 32 values, at most KS_COOPMAT_KMAX, take these kernels. */
int gpu_coopmat_mode(const ks_gpu *g);
int gpu_matmul_coopmat(const ks_gpu *g, ks_type t, int64_t K);
/* What the kernels' bits depend on besides the model: the kernel arithmetic's version, the device
 * and driver, the lanes that share a matrix row. Cached K/V are tagged with it (with the model's
 * fingerprint), so K/V from another device, driver or kvscope version are never mixed in. The
 * shared-memory build (KVSCOPE_NO_SUBGROUP) gives the same bits and the same id. */
uint64_t gpu_numerics_id(const ks_gpu *g);
/* 1 if op_matmul and op_embed have a kernel for weights of type t: F32, F16, BF16, Q8_0, Q4_0,
 * Q5_0, Q5_1, Q4_K, Q5_K, Q6_K. */
int gpu_type_supported(ks_type t);
void gpu_tensor_free(ks_gpu *g, ks_gpu_tensor *t);

/* A region of a buffer; off in bytes (any multiple of 4: ops handle descriptor alignment). */
typedef struct {
  const ks_buf *b;
  uint64_t off;
} ks_bref;
static inline ks_bref ks_ref(const ks_buf *b, uint64_t off) {
  ks_bref r = {b, off};
  return r;
}

/* The per-step values shaders read from memory (host writes it before submit/replay). */
typedef struct {
  uint32_t pos0; /* position of the first token of this batch */
  uint32_t pad[3];
} ks_step;

/* A reusable command buffer with its own descriptor pool and fence. Record once, submit many
 * times (descriptor sets stay valid until the next gpu_cmd_begin). */
typedef struct ks_cmd ks_cmd;
ks_status gpu_cmd_create(ks_gpu *g, ks_cmd **out);
void gpu_cmd_destroy(ks_cmd *c);
ks_status gpu_cmd_begin(ks_cmd *c);
void gpu_cmd_barrier(ks_cmd *c); /* compute writes -> compute reads/writes and transfers */
ks_status gpu_cmd_end(ks_cmd *c);
ks_status gpu_cmd_submit(ks_cmd *c);
ks_status gpu_cmd_wait(ks_cmd *c);
/* Status of recording: the first failure (descriptor pool exhausted, bad shape) is kept and
 * returned by gpu_cmd_end. */
/* GPU timestamps: records one after all work recorded so far and returns its index (0, 1, ...
 * per recording), or -1 when the device has no timestamps. After gpu_cmd_wait,
 * gpu_cmd_timestamps gives the first n of them in ns relative to timestamp 0. */
int gpu_cmd_timestamp(ks_cmd *c);
ks_status gpu_cmd_timestamps(ks_cmd *c, double *ns, int n);
/* Per-dispatch profile (kvscope bench): while on, gpu_cmd_begin writes a timestamp and every
 * dispatch recorded after it one more, noting the op and the buffers it binds, so the GPU time of
 * each dispatch of a real recording (forward.c's graph, unchanged) can be read back. Off by
 * default: the stamps serialise the work they separate. Takes effect at the next gpu_cmd_begin;
 * KS_ERR_UNSUPPORTED when the device writes no timestamps. */
#define KS_PROF_BINDINGS 8
typedef struct {
  const char *op;                       /* the op's name: "op_matmul", "op_rmsnorm", ... */
  const ks_buf *bufs[KS_PROF_BINDINGS]; /* the buffers bound, in binding order */
  int n_bufs;
  double ns;                            /* GPU time from the previous stamp to this one */
} ks_op_time;
ks_status gpu_cmd_profile(ks_cmd *c, int on);
/* After gpu_cmd_wait: the stamped dispatches of the last recording in order (valid until the
 * next gpu_cmd_begin), and how many were recorded unstamped because the query pool (1024
 * stamps) was full. */
ks_status gpu_cmd_profile_read(ks_cmd *c, const ks_op_time **ops, int *n, int *unstamped);

/* --- ops (all activations f32, row-major, rows are tokens) --- */
/* out (n_tok, dim) = rows tokens[i] of emb (dequantised). tokens: (n_tok) u32. */
void op_embed(ks_cmd *c, ks_bref out, const ks_gpu_tensor *emb, ks_bref tokens, int n_tok);
/* out (n_tok, n) = rmsnorm of each row of x with weight w (n) f32. out may equal x. */
void op_rmsnorm(ks_cmd *c, ks_bref out, ks_bref x, ks_bref w, int n_tok, int n, float eps);
/* out (n_tok, W.ne[1]) = x (n_tok, W.ne[0]) · Wᵀ, any supported weight type. */
void op_matmul(ks_cmd *c, ks_bref out, ks_bref x, const ks_gpu_tensor *W, int n_tok);
/* op_matmul with fusions: norm_w.b != NULL normalises each input row first (RMSNorm with weights
 * norm_w (K) and eps); add: out += the product (residual); swiglu: W holds gate rows then as many
 * up rows (one slice), out (n_tok, rows/2) = silu(gate) * up; out_stride (0: the output width)
 * is the distance between output rows, so products can write side by side into one buffer.
 * Input and norm_w must start at a multiple of 16 bytes. Every output row's bits are the same
 * whatever n_tok and the fusions (the sums are fixed in matmul.glsl). */
/* The q|k|v product's epilogue (ks_matmul_opts.rope): W holds wq, wk, wv stacked (one slice);
 * the rows are computed in the pairs RoPE turns together, rotated as op_rope_kv does (no bias),
 * q written to out (n_tok, q_dim), k and v into the pools at positions step.pos0 + i. steptab:
 * the ks_step, then the block table, 16 bytes after it. */
typedef struct {
  ks_bref kpool, vpool, steptab;
  int n_head, n_kv_head, head_dim, neox;
  float base;
  const float *factors; /* rope scaling (head_dim / 2), NULL: none */
} ks_rope_opts;
typedef struct {
  ks_bref norm_w;
  float eps;
  int add, swiglu;
  uint32_t out_stride;
  const ks_rope_opts *rope;
  /* part of a decode step (forward.c's replayed one-token graph): under gpu_coopmat_mode 3 the
   * product takes the portable kernels there, the cooperative-matrix ones everywhere else */
  int decode_step;
} ks_matmul_opts;
void op_matmul_ex(ks_cmd *c, ks_bref out, ks_bref x, const ks_gpu_tensor *W, int n_tok,
                  const ks_matmul_opts *o);
/* After a q|k|v product: qkv (n_tok, qd + 2 kvd) rows plus the bias (qd + 2 kvd, optional:
 * bias.b NULL) are rotated (q and k, as op_rope_scaled), q written to q (n_tok, qd), k and v
 * into the paged pools at positions step.pos0 + i (as op_kv_write). One dispatch. */
void op_rope_kv(ks_cmd *c, ks_bref q, ks_bref qkv, ks_bref kpool, ks_bref vpool, ks_bref table,
                ks_bref step, ks_bref bias, int n_tok, int n_head, int n_kv_head, int head_dim,
                float base, int neox, const float *factors);
/* In place on x (n_tok, n_heads*head_dim): token i is at position step.pos0 + i. */
void op_rope(ks_cmd *c, ks_bref x, ks_bref step, int n_tok, int n_heads, int head_dim,
             float base, int neox);
/* op_rope with scaled frequencies (Llama 3 / linear rope scaling): pair i rotates by
 * pos * freq_i / factors[i], factors (head_dim/2) host floats (copied; NULL: op_rope). The
 * frequency table is ref_rope_freqs's, so GPU and CPU use the same float angles. */
void op_rope_scaled(ks_cmd *c, ks_bref x, ks_bref step, int n_tok, int n_heads, int head_dim,
                    float base, int neox, const float *factors);
/* Writes src (n_tok, kv_dim) rows into the paged pool `cache` at positions step.pos0 + i.
 * The pool, table and probs regions are bound from their offset to the end of their buffer
 * (which rows are touched is only known on the GPU), capped at maxStorageBufferRange: a layer's
 * pool must fit in that range from its offset (128 MiB on lavapipe). */
void op_kv_write(ks_cmd *c, ks_bref cache, ks_bref src, ks_bref table, ks_bref step, int n_tok,
                 int kv_dim);
/* Causal attention: query row i (position p = step.pos0 + i) over cached positions 0..p.
 * q, out: (n_tok, n_head*head_dim). probs: if .b != NULL, the softmax rows of the LAST token,
 * (n_head, probs_stride) f32, positions 0..p, computed inside the same kernel. */
void op_attention(ks_cmd *c, ks_bref out, ks_bref q, ks_bref kcache, ks_bref vcache,
                  ks_bref table, ks_bref step, int n_tok, int n_head, int n_kv_head,
                  int head_dim, ks_bref probs, int probs_stride);
/* op_attention, and with part.b != NULL and one token, split over the context: one workgroup
 * per chunk of keys (64 or 128 keys, gpu.c) writes a partial into part
 * (gpu_attention_part_bytes for positions up to max_pos), then one per head folds them; the
 * same bits as the unsplit kernel. */
void op_attention_ex(ks_cmd *c, ks_bref out, ks_bref q, ks_bref kcache, ks_bref vcache,
                     ks_bref table, ks_bref step, int n_tok, int n_head, int n_kv_head,
                     int head_dim, ks_bref probs, int probs_stride, ks_bref part, int max_pos);
uint64_t gpu_attention_part_bytes(int n_head, int head_dim, int max_pos);
/* out (n) = silu(gate) * up */
void op_swiglu(ks_cmd *c, ks_bref out, ks_bref gate, ks_bref up, int n);
/* x (n_tok, n) += b (n) on every row (the q/k/v biases of qwen2) */
void op_add_bias(ks_cmd *c, ks_bref x, ks_bref b, int n_tok, int n);
/* x (n) += y (n) */
void op_add(ks_cmd *c, ks_bref x, ks_bref y, int n);
/* The matrix units' rate as matmul_cm.glsl uses them (kvscope bench): `groups` workgroups of 4
 * subgroups, each chaining iters x 8 products of the 16x8x16 f16 shape in registers, then
 * storing 128 floats per subgroup to out (groups x 2 KiB). FLOPs: groups x 4 x iters x 8 x 4096.
 * Only where gpu_info()->coopmat (else the command fails with KS_ERR_UNSUPPORTED). */
void op_mma_peak(ks_cmd *c, ks_bref out, uint32_t groups, uint32_t iters);
/* dst = src, n bytes (multiple of 4) */
void op_copy(ks_cmd *c, ks_bref dst, ks_bref src, uint64_t n);

#endif
