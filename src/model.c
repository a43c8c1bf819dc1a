/* model.c — format dispatch, teardown, sizes and the file fingerprint shared by both loaders
 * (model_gguf.c, model_llama2c.c). */
#include "model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "gguf.h"

ks_status model_load(ks_model *m, const char *path) {
  memset(m, 0, sizeof *m);
  FILE *f = fopen(path, "rb");
  if (!f)
    return ks_fail(KS_ERR_IO, "cannot open model file '%s': %s (give a path with -m)", path,
                   strerror(errno));
  unsigned char magic[4] = {0};
  size_t got = fread(magic, 1, 4, f);
  fclose(f);
  if (got == 4 && memcmp(magic, "GGUF", 4) == 0) return model_load_gguf(m, path);
  if (got < 4)
    return ks_fail(KS_ERR_FORMAT, "model file '%s' is too short (%zu bytes) to be a GGUF file or "
                   "a llama2.c checkpoint", path, got);
  return model_load_llama2c(m, path);
}

void model_deinit(ks_model *m) {
  if (!m) return;
  free(m->layers);
  free(m->owned);
  if (m->gguf) gguf_close(m->gguf); /* owns its own mapping */
  else if (m->map) munmap(m->map, m->map_size);
  memset(m, 0, sizeof *m);
}

static uint64_t tensor_bytes(const ks_tensor *t) { return t->data ? t->nbytes : 0; }

uint64_t model_weight_bytes(const ks_model *m) {
  uint64_t n = tensor_bytes(&m->tok_embd) + tensor_bytes(&m->output_norm);
  if (!m->tied_output) n += tensor_bytes(&m->output);
  for (int l = 0; m->layers && l < m->cfg.n_layer; l++) {
    const ks_layer *L = &m->layers[l];
    n += tensor_bytes(&L->attn_norm) + tensor_bytes(&L->wq) + tensor_bytes(&L->wk) +
         tensor_bytes(&L->wv) + tensor_bytes(&L->wo) + tensor_bytes(&L->ffn_norm) +
         tensor_bytes(&L->w_gate) + tensor_bytes(&L->w_down) + tensor_bytes(&L->w_up);
  }
  return n;
}

/* FNV-1a over the size and a sample of the bytes (all of a small file; for a large one the
 * first and last MiB and 4 KiB every 16 MiB): cheap enough for multi-GB files, and any real
 * change of weights or header lands in the sample with overwhelming odds. */
uint64_t model_fingerprint_bytes(const void *data, size_t size) {
  const unsigned char *p = data;
  uint64_t h = 1469598103934665603ull;
#define MIX(byte) (h = (h ^ (byte)) * 1099511628211ull)
  for (int i = 0; i < 8; i++) MIX((size >> (8 * i)) & 0xff);
  const size_t MB = 1 << 20;
  if (size <= 4 * MB) {
    for (size_t i = 0; i < size; i++) MIX(p[i]);
  } else {
    for (size_t i = 0; i < MB; i++) MIX(p[i]);
    for (size_t o = MB; o + 4096 < size - MB; o += 16 * MB)
      for (size_t i = 0; i < 4096; i++) MIX(p[o + i]);
    for (size_t i = size - MB; i < size; i++) MIX(p[i]);
  }
#undef MIX
  return h;
}
