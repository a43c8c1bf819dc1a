/* model_llama2c.c — loader for llama2.c checkpoints in the legacy (version 0) export format:
 * a header of 7 int32 then raw f32 weights in a fixed order. Every size is checked against the
 * file before a pointer is made, and the tensors are views into the memory mapping (no copies).
 * Not handled here: the newer "ak42" version 1/2 exports (rejected with a clear message), the
 * tokenizer.bin file (tokenizer.c), and putting the weights on the GPU (forward.c). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"

#define L2C_HEADER_BYTES 28u          /* 7 x int32 */
#define L2C_MAGIC_V1 0x616b3432u      /* "ak42" as a little-endian uint32: version 1/2 exports */

/* Generous upper bounds: well above any Llama-family model, small enough that every product
 * below stays far from 64-bit overflow (the checked arithmetic is a second line of defence). */
#define L2C_MAX_DIM (1 << 16)
#define L2C_MAX_HIDDEN (1 << 20)
#define L2C_MAX_LAYERS 4096
#define L2C_MAX_VOCAB (1 << 24)
#define L2C_MAX_SEQ (1 << 24)

typedef struct {
  int32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} l2c_header;

/* Running byte count with sticky overflow: the weight order is spelled out once, in
 * layout_walk, and both the size check and the pointer set-up use it. */
typedef struct {
  uint64_t off;
  int overflow;
} l2c_cursor;

static uint64_t take(l2c_cursor *c, uint64_t a, uint64_t b, uint64_t d) {
  uint64_t n, bytes = 0;
  if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, d, &n) ||
      __builtin_mul_overflow(n, (uint64_t)sizeof(float), &bytes) ||
      __builtin_add_overflow(c->off, bytes, &c->off))
    c->overflow = 1;
  return c->off - (c->overflow ? 0 : bytes); /* start offset of this span */
}

/* Offsets (from the start of the file) of each weight block, each (L, rows, cols) f32. */
typedef struct {
  uint64_t tok_embd, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, wcls, end;
} l2c_layout;

static int layout_walk(const l2c_header *h, int shared, l2c_layout *lo) {
  const uint64_t dim = (uint64_t)h->dim, hid = (uint64_t)h->hidden_dim, L = (uint64_t)h->n_layers;
  const uint64_t head = dim / (uint64_t)h->n_heads, kv_dim = head * (uint64_t)h->n_kv_heads;
  const uint64_t vocab = (uint64_t)(h->vocab_size < 0 ? -(int64_t)h->vocab_size : h->vocab_size);
  l2c_cursor c = {L2C_HEADER_BYTES, 0};
  lo->tok_embd = take(&c, vocab, dim, 1);
  lo->rms_att = take(&c, L, dim, 1);
  lo->wq = take(&c, L, dim, dim);
  lo->wk = take(&c, L, kv_dim, dim);
  lo->wv = take(&c, L, kv_dim, dim);
  lo->wo = take(&c, L, dim, dim);
  lo->rms_ffn = take(&c, L, dim, 1);
  lo->w1 = take(&c, L, hid, dim);
  lo->w2 = take(&c, L, dim, hid);
  lo->w3 = take(&c, L, hid, dim);
  lo->rms_final = take(&c, dim, 1, 1);
  /* freq_cis_real and freq_cis_imag: precomputed RoPE tables of old exports, unused */
  take(&c, (uint64_t)h->seq_len, head / 2, 2);
  lo->wcls = shared ? lo->tok_embd : take(&c, vocab, dim, 1);
  lo->end = c.off;
  return !c.overflow;
}

static ks_status check_field(const char *path, const char *name, int32_t v, int32_t lo,
                             int32_t hi) {
  if (v >= lo && v <= hi) return KS_OK;
  return ks_fail(KS_ERR_FORMAT,
                 "'%s' is not a GGUF file or llama2.c checkpoint: header field %s = %d is outside "
                 "[%d, %d]",
                 path, name, (int)v, (int)lo, (int)hi);
}

static ks_status check_header(const char *path, const l2c_header *h) {
  ks_status st;
  if ((st = check_field(path, "dim", h->dim, 1, L2C_MAX_DIM)) ||
      (st = check_field(path, "hidden_dim", h->hidden_dim, 1, L2C_MAX_HIDDEN)) ||
      (st = check_field(path, "n_layers", h->n_layers, 1, L2C_MAX_LAYERS)) ||
      (st = check_field(path, "n_heads", h->n_heads, 1, h->dim)) ||
      (st = check_field(path, "n_kv_heads", h->n_kv_heads, 1, h->n_heads)) ||
      (st = check_field(path, "seq_len", h->seq_len, 1, L2C_MAX_SEQ)))
    return st;
  if (h->vocab_size == 0 || h->vocab_size < -L2C_MAX_VOCAB || h->vocab_size > L2C_MAX_VOCAB)
    return ks_fail(KS_ERR_FORMAT,
                   "'%s' is not a GGUF file or llama2.c checkpoint: header field vocab_size = %d "
                   "is outside [1, %d] in magnitude (negative means a separate classifier)",
                   path, (int)h->vocab_size, L2C_MAX_VOCAB);
  if (h->dim % h->n_heads != 0)
    return ks_fail(KS_ERR_FORMAT,
                   "'%s' is not a valid llama2.c checkpoint: dim %d is not a multiple of "
                   "n_heads %d",
                   path, (int)h->dim, (int)h->n_heads);
  if (h->n_heads % h->n_kv_heads != 0)
    return ks_fail(KS_ERR_FORMAT,
                   "'%s' is not a valid llama2.c checkpoint: n_heads %d is not a multiple of "
                   "n_kv_heads %d",
                   path, (int)h->n_heads, (int)h->n_kv_heads);
  if ((h->dim / h->n_heads) % 2 != 0)
    return ks_fail(KS_ERR_FORMAT,
                   "'%s' is not a valid llama2.c checkpoint: head size %d (dim %d / n_heads %d) "
                   "is odd, RoPE needs pairs",
                   path, (int)(h->dim / h->n_heads), (int)h->dim, (int)h->n_heads);
  return KS_OK;
}

static ks_tensor f32_tensor(const unsigned char *base, uint64_t off, int64_t cols, int64_t rows) {
  ks_tensor t;
  memset(&t, 0, sizeof t);
  t.type = KS_TYPE_F32;
  t.ne[0] = cols;
  t.ne[1] = rows;
  t.data = base + off;
  t.nbytes = (size_t)cols * (size_t)rows * sizeof(float);
  return t;
}

static ks_status fail_cleanup(ks_model *m, ks_status st) {
  free(m->layers);
  if (m->map) munmap(m->map, m->map_size);
  memset(m, 0, sizeof *m);
  return st;
}

ks_status model_load_llama2c(ks_model *m, const char *path) {
  memset(m, 0, sizeof *m);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return ks_fail(KS_ERR_IO, "cannot open model file '%s': %s (give a path with -m)", path,
                   strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    return ks_fail(KS_ERR_IO, "cannot stat model file '%s': %s", path, strerror(e));
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return ks_fail(KS_ERR_IO, "model path '%s' is not a regular file", path);
  }
  const uint64_t fsize = (uint64_t)sb.st_size;
  if (fsize == 0) {
    close(fd);
    return ks_fail(KS_ERR_FORMAT,
                   "model file '%s' is empty: not a GGUF file or llama2.c checkpoint", path);
  }
  if (fsize > SIZE_MAX) {
    close(fd);
    return ks_fail(KS_ERR_UNSUPPORTED, "model file '%s' (%llu bytes) is too large to map here",
                   path, (unsigned long long)fsize);
  }
  void *map = mmap(NULL, (size_t)fsize, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd);
  if (map == MAP_FAILED)
    return ks_fail(KS_ERR_IO, "cannot memory-map model file '%s' (%llu bytes): %s", path,
                   (unsigned long long)fsize, strerror(map_errno));
  m->map = map;
  m->map_size = (size_t)fsize;
  const unsigned char *bytes = map;

  uint32_t magic = 0;
  if (fsize >= 4) memcpy(&magic, bytes, 4);
  if (fsize >= 4 && magic == L2C_MAGIC_V1) {
    int32_t version = 0;
    if (fsize >= 8) memcpy(&version, bytes + 4, 4);
    char vs[32] = "1/2";
    if (version > 0) snprintf(vs, sizeof vs, "%d", (int)version);
    return fail_cleanup(
        m, ks_fail(KS_ERR_UNSUPPORTED,
                   "'%s' is a llama2.c version %s export (magic \"ak42\"); kvscope reads only the "
                   "legacy version 0 checkpoint: re-export with export.py --version 0 "
                   "(legacy_export) or convert the model to GGUF",
                   path, vs));
  }
  if (fsize >= 4 && memcmp(bytes, "GGUF", 4) == 0)
    return fail_cleanup(m, ks_fail(KS_ERR_FORMAT,
                                   "'%s' is a GGUF file, not a llama2.c checkpoint (load it with "
                                   "model_load, which picks the reader by magic)",
                                   path));
  if (fsize < L2C_HEADER_BYTES)
    return fail_cleanup(
        m, ks_fail(KS_ERR_FORMAT,
                   "model file '%s' is too short (%llu bytes) to be a GGUF file or a llama2.c "
                   "checkpoint (whose header alone is %u bytes)",
                   path, (unsigned long long)fsize, L2C_HEADER_BYTES));

  l2c_header h;
  memcpy(&h, bytes, sizeof h);
  ks_status st = check_header(path, &h);
  if (st) return fail_cleanup(m, st);
  const int shared = h.vocab_size > 0;
  const int vocab = shared ? h.vocab_size : -h.vocab_size;
  l2c_layout lo;
  if (!layout_walk(&h, shared, &lo))
    return fail_cleanup(m, ks_fail(KS_ERR_FORMAT,
                                   "'%s': llama2.c checkpoint sizes overflow 64 bits (dim %d, "
                                   "hidden_dim %d, n_layers %d, vocab_size %d, seq_len %d)",
                                   path, (int)h.dim, (int)h.hidden_dim, (int)h.n_layers,
                                   (int)h.vocab_size, (int)h.seq_len));
  if (lo.end != fsize) {
    const char *what = lo.end > fsize ? "truncated" : "longer than its header implies";
    return fail_cleanup(
        m, ks_fail(KS_ERR_FORMAT,
                   "'%s' is %s: a llama2.c checkpoint with dim %d, hidden_dim %d, n_layers %d, "
                   "n_heads %d, n_kv_heads %d, vocab_size %d (%s classifier), seq_len %d needs "
                   "exactly %llu bytes, the file has %llu (not a GGUF file or llama2.c "
                   "checkpoint, or a damaged download)",
                   path, what, (int)h.dim, (int)h.hidden_dim, (int)h.n_layers, (int)h.n_heads,
                   (int)h.n_kv_heads, vocab, shared ? "shared" : "separate", (int)h.seq_len,
                   (unsigned long long)lo.end, (unsigned long long)fsize));
  }

  ks_config *c = &m->cfg;
  snprintf(c->arch, sizeof c->arch, "llama");
  c->dim = h.dim;
  c->hidden_dim = h.hidden_dim;
  c->n_layer = h.n_layers;
  c->n_head = h.n_heads;
  c->n_kv_head = h.n_kv_heads;
  c->head_dim = h.dim / h.n_heads;
  c->vocab_size = vocab;
  c->n_ctx = h.seq_len;
  c->norm_eps = 1e-5f;
  c->rope_base = 10000.0f;
  c->rope_neox = 0;
  m->format = KS_FMT_LLAMA2C;
  m->tied_output = shared;

  m->layers = calloc((size_t)h.n_layers, sizeof *m->layers);
  if (!m->layers)
    return fail_cleanup(m, ks_fail(KS_ERR_NOMEM, "out of memory for %d layer descriptors",
                                   (int)h.n_layers));
  const int64_t dim = h.dim, hid = h.hidden_dim, kv_dim = (int64_t)c->head_dim * h.n_kv_heads;
  m->tok_embd = f32_tensor(bytes, lo.tok_embd, dim, vocab);
  m->output_norm = f32_tensor(bytes, lo.rms_final, dim, 1);
  m->output = f32_tensor(bytes, lo.wcls, dim, vocab);
  const uint64_t F = sizeof(float);
  for (int64_t l = 0; l < h.n_layers; l++) {
    ks_layer *L = &m->layers[l];
    L->attn_norm = f32_tensor(bytes, lo.rms_att + (uint64_t)(l * dim) * F, dim, 1);
    L->wq = f32_tensor(bytes, lo.wq + (uint64_t)(l * dim * dim) * F, dim, dim);
    L->wk = f32_tensor(bytes, lo.wk + (uint64_t)(l * kv_dim * dim) * F, dim, kv_dim);
    L->wv = f32_tensor(bytes, lo.wv + (uint64_t)(l * kv_dim * dim) * F, dim, kv_dim);
    L->wo = f32_tensor(bytes, lo.wo + (uint64_t)(l * dim * dim) * F, dim, dim);
    L->ffn_norm = f32_tensor(bytes, lo.rms_ffn + (uint64_t)(l * dim) * F, dim, 1);
    L->w_gate = f32_tensor(bytes, lo.w1 + (uint64_t)(l * hid * dim) * F, dim, hid);
    L->w_down = f32_tensor(bytes, lo.w2 + (uint64_t)(l * dim * hid) * F, hid, dim);
    L->w_up = f32_tensor(bytes, lo.w3 + (uint64_t)(l * hid * dim) * F, dim, hid);
  }
  m->fingerprint = model_fingerprint_bytes(map, (size_t)fsize);
  snprintf(m->path, sizeof m->path, "%s", path);
  return KS_OK;
}
