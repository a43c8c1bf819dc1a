/* random_gguf.h — small random-weight GGUF models of each architecture kvscope runs, written
 * with the project's GGUF writer (gguf.h): the metadata llama.cpp writes for that architecture
 * (llama.* or qwen2.* keys, optional q/k/v biases, tied or separate output, grouped-query
 * attention, RoPE scaling as a rope_freqs.weight tensor or as rope.scaling.* keys) and random
 * weights in any type kvscope computes with. For tests of the loader and of GPU-vs-CPU agreement
 * per architecture and weight type. Not a model of anything, no vocabulary (the vocabulary size
 * comes from the embedding), and not for benchmark-sized files (everything is built in memory
 * first: convert_random_gguf streams those). */
#ifndef KS_RANDOM_GGUF_H
#define KS_RANDOM_GGUF_H
#include <stdint.h>

#include "common.h"
#include "quant.h"

typedef enum {
  RANDOM_ROPE_NONE = 0,
  RANDOM_ROPE_TENSOR = 1, /* rope_freqs.weight = rope_freqs below (Llama 3.1 files) */
  RANDOM_ROPE_LLAMA3 = 2, /* <arch>.rope.scaling.type "llama3" + factor, low/high_freq_factor,
                           * original_context_length keys */
  RANDOM_ROPE_LINEAR = 3, /* <arch>.rope.scaling.type "linear" + factor */
} random_rope;

typedef struct {
  const char *arch;    /* "llama" or "qwen2" (anything else is written as given: for errors) */
  int dim, hidden_dim, n_layer, n_head, n_kv_head, vocab_size, n_ctx;
  float rope_base, norm_eps;
  ks_type wtype;       /* the layers' matrices (rows must be whole blocks of the type) */
  ks_type embd_type;   /* token_embd.weight and output.weight */
  int tied;            /* 1: no output.weight (the classifier is token_embd) */
  int qkv_bias;        /* 1: blk.N.attn_{q,k,v}.bias, f32 */
  int vocab_key;       /* 1: write <arch>.vocab_size (llama.cpp writes it for llama only) */
  random_rope rope;
  const char *rope_type;    /* if set, written as <arch>.rope.scaling.type instead (errors) */
  const float *rope_freqs;  /* (head_dim/2) divisors for RANDOM_ROPE_TENSOR */
  float rope_factor, rope_low_ff, rope_high_ff;
  int rope_orig_ctx;
  const char *extra_tensor; /* if set, one more f32 vector of dim values under this name
                             * (e.g. a bias kvscope must refuse) */
  uint64_t seed;       /* the same spec and seed give the same bytes */
} random_gguf_spec;

/* Fills a small model of `arch` (llama: separate output, no biases; qwen2: q/k/v biases, tied
 * output, NeoX RoPE by architecture, base 1e6): dim 256, 2 layers, 4 heads of 64, 2 K/V heads
 * (grouped-query attention), FFN 512, vocab 300, context 256, all F32. */
void random_gguf_spec_init(random_gguf_spec *s, const char *arch);

/* Writes the model to path (atomically). Weights: matrices uniform in +-sqrt(3 / row length)
 * (unit-variance outputs for unit-variance inputs), embeddings in +-1, norms 1 +- 0.1, biases
 * +-0.5; quantised from those f32 values with ks_quant_row. */
ks_status random_gguf_write(const random_gguf_spec *s, const char *path);

#endif
