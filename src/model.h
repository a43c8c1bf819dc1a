/* model.h — a Llama-family model as read from disk: its configuration and host views of its
 * weight tensors (memory-mapped file bytes, not copies). Loading onto the GPU is forward.c's job;
 * the tokenizer is tokenizer.c's. Two file formats: GGUF v3 (gguf.c) and llama2.c checkpoints. */
#ifndef KS_MODEL_H
#define KS_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "quant.h"

typedef struct {
  char arch[32];     /* "llama" or "qwen2" */
  int dim;           /* embedding width */
  int hidden_dim;    /* feed-forward width */
  int n_layer;
  int n_head;        /* query heads */
  int n_kv_head;     /* key/value heads (grouped-query attention: n_head % n_kv_head == 0) */
  int head_dim;      /* dim / n_head */
  int vocab_size;
  int n_ctx;         /* trained context length */
  float norm_eps;    /* RMSNorm epsilon */
  float rope_base;   /* RoPE frequency base (theta) */
  int rope_neox;     /* 0: rotate adjacent pairs (llama); 1: rotate halves (NeoX: qwen2) */
} ks_config;

/* A weight matrix or vector. Rows are contiguous; ne[0] is the row length (input width),
 * ne[1] the number of rows (output width; 1 for vectors). */
typedef struct {
  ks_type type;
  int64_t ne[2];
  const void *data;  /* host bytes, ks_type_row_bytes(type, ne[0]) * ne[1] of them */
  size_t nbytes;
} ks_tensor;

typedef struct {
  ks_tensor attn_norm; /* (dim) f32 */
  ks_tensor wq;        /* (dim rows = n_head*head_dim, dim cols) */
  ks_tensor wk;        /* (n_kv_head*head_dim, dim) */
  ks_tensor wv;        /* (n_kv_head*head_dim, dim) */
  ks_tensor wo;        /* (dim, n_head*head_dim) */
  ks_tensor ffn_norm;  /* (dim) f32 */
  ks_tensor w_gate;    /* (hidden_dim, dim)  "w1" */
  ks_tensor w_down;    /* (dim, hidden_dim)  "w2" */
  ks_tensor w_up;      /* (hidden_dim, dim)  "w3" */
  /* biases added after the q/k/v projections (qwen2), f32; data NULL when the layer has none */
  ks_tensor bq;        /* (n_head*head_dim) */
  ks_tensor bk, bv;    /* (n_kv_head*head_dim) */
} ks_layer;

typedef enum { KS_FMT_GGUF = 1, KS_FMT_LLAMA2C = 2 } ks_model_format;

struct ks_gguf; /* gguf.h */

typedef struct {
  ks_config cfg;
  ks_model_format format;
  ks_tensor tok_embd;    /* (vocab rows, dim cols) */
  ks_tensor output_norm; /* (dim) */
  ks_tensor output;      /* (vocab, dim); same bytes as tok_embd when tied */
  int tied_output;
  ks_layer *layers;      /* n_layer of them */
  /* (head_dim/2) divisors of the RoPE frequencies (Llama 3 rope_freqs.weight, or computed from
   * the rope.scaling.* keys); NULL: unscaled. Points into the mapping or into `owned`. */
  const float *rope_factors;
  uint64_t fingerprint;  /* hash of the file's size and sampled content: tags cached K/V */
  /* storage */
  void *map;             /* mmap of the whole file */
  size_t map_size;
  void *owned;           /* heap bytes owned by the model (converted tensors), or NULL */
  struct ks_gguf *gguf;  /* parsed GGUF (metadata incl. tokenizer), NULL for llama2.c */
  char path[1024];
} ks_model;

/* Loads by magic: GGUF ("GGUF") or a llama2.c checkpoint (header of 7 int32). On failure the
 * model is left deinit-able and ks_last_error() says what was wrong with the file and what to do. */
ks_status model_load(ks_model *m, const char *path);
ks_status model_load_gguf(ks_model *m, const char *path);
ks_status model_load_llama2c(ks_model *m, const char *path);
void model_deinit(ks_model *m);

/* Fingerprint of a file's bytes (size + sampled content), for tagging cached K/V. */
uint64_t model_fingerprint_bytes(const void *data, size_t size);

/* Bytes of all weight tensors (what must live on the device). */
uint64_t model_weight_bytes(const ks_model *m);

#endif
