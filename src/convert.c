/* convert.c — a loaded model (either format) written back out as a llama GGUF: the metadata
 * llama.cpp's llama loader expects, the vocabulary (from a llama2.c tokenizer.bin, or copied
 * from a GGUF model), and every weight tensor converted row by row to the requested type.
 * Not a tokenizer: it only moves vocabulary entries between the two file formats. */
#include "convert.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

#define TOK_MAX_PIECE (1 << 16) /* longest piece a sane tokenizer.bin holds */

/* SentencePiece token types, as llama.cpp's llama_token_type numbers them */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_BYTE = 6 };

/* ---------------------------------------------------------------- llama2.c tokenizer.bin */

typedef struct {
  int n;
  char **pieces; /* GGUF form: spaces as U+2581 */
  size_t *lens;
  float *scores;
  int32_t *types;
} vocab;

static void vocab_free(vocab *v) {
  for (int i = 0; v->pieces && i < v->n; i++) free(v->pieces[i]);
  free(v->pieces);
  free(v->lens);
  free(v->scores);
  free(v->types);
  memset(v, 0, sizeof *v);
}

static int is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f');
}

/* llama2.c's export writes BOS/EOS as "\n<s>\n" / "\n</s>\n" and spaces as ' '; GGUF keeps
 * SentencePiece's own pieces. */
static ks_status gguf_piece(const char *raw, size_t len, char **out, size_t *out_len, int32_t *type) {
  if (len == 5 && !memcmp(raw, "\n<s>\n", 5)) raw = "<s>", len = 3;
  else if (len == 6 && !memcmp(raw, "\n</s>\n", 6)) raw = "</s>", len = 4;
  size_t spaces = 0;
  for (size_t i = 0; i < len; i++) spaces += raw[i] == ' ';
  char *p = malloc(len + 2 * spaces + 1);
  if (!p) return KS_ERR_NOMEM;
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (raw[i] == ' ') {
      memcpy(p + o, "\xe2\x96\x81", 3);
      o += 3;
    } else {
      p[o++] = raw[i];
    }
  }
  p[o] = 0;
  if (o == 5 && !memcmp(p, "<unk>", 5)) *type = TT_UNKNOWN;
  else if ((o == 3 && !memcmp(p, "<s>", 3)) || (o == 4 && !memcmp(p, "</s>", 4))) *type = TT_CONTROL;
  else if (o == 6 && !memcmp(p, "<0x", 3) && is_hex(p[3]) && is_hex(p[4]) && p[5] == '>')
    *type = TT_BYTE;
  else *type = TT_NORMAL;
  *out = p;
  *out_len = o;
  return KS_OK;
}

static ks_status read_tokenizer_bin(vocab *v, const char *path, int vocab_size) {
  memset(v, 0, sizeof *v);
  FILE *f = fopen(path, "rb");
  if (!f) return ks_fail(KS_ERR_IO, "cannot open tokenizer '%s': %s", path, strerror(errno));
  ks_status st = KS_OK;
  char *raw = NULL;
  int32_t max_len;
  v->pieces = calloc((size_t)vocab_size, sizeof *v->pieces);
  v->lens = calloc((size_t)vocab_size, sizeof *v->lens);
  v->scores = calloc((size_t)vocab_size, sizeof *v->scores);
  v->types = calloc((size_t)vocab_size, sizeof *v->types);
  raw = malloc(TOK_MAX_PIECE);
  if (!v->pieces || !v->lens || !v->scores || !v->types || !raw) {
    st = ks_fail(KS_ERR_NOMEM, "out of memory reading tokenizer '%s'", path);
    goto done;
  }
  if (fread(&max_len, 4, 1, f) != 1) {
    st = ks_fail(KS_ERR_FORMAT, "tokenizer '%s' is empty or truncated (no header)", path);
    goto done;
  }
  for (int i = 0; i < vocab_size; i++) {
    float score;
    int32_t len;
    if (fread(&score, 4, 1, f) != 1 || fread(&len, 4, 1, f) != 1) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer '%s' ends after %d tokens but the model's vocabulary "
                   "has %d: wrong tokenizer for this model?", path, i, vocab_size);
      goto done;
    }
    if (len < 0 || len >= TOK_MAX_PIECE) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer '%s': token %d has length %d (corrupt file)", path,
                   i, (int)len);
      goto done;
    }
    if (fread(raw, 1, (size_t)len, f) != (size_t)len) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer '%s' is truncated inside token %d", path, i);
      goto done;
    }
    v->scores[i] = score;
    if (gguf_piece(raw, (size_t)len, &v->pieces[i], &v->lens[i], &v->types[i])) {
      st = ks_fail(KS_ERR_NOMEM, "out of memory reading tokenizer '%s'", path);
      goto done;
    }
    v->n = i + 1;
  }
  if (fgetc(f) != EOF)
    st = ks_fail(KS_ERR_ARG, "tokenizer '%s' has more than the model's %d tokens: it belongs to "
                 "another model (stories260K uses tok512.bin, the Llama 2 models tokenizer.bin)",
                 path, vocab_size);
done:
  free(raw);
  fclose(f);
  if (st) vocab_free(v);
  return st;
}

/* ---------------------------------------------------------------- weights */

typedef struct {
  void **bufs; /* converted tensor bytes, alive until the file is written */
  int n, cap;
  uint64_t done, total; /* source bytes converted so far, for the progress line */
} buflist;

static void *buflist_alloc(buflist *b, size_t n) {
  if (b->n == b->cap) {
    int cap = b->cap ? 2 * b->cap : 64;
    void **p = realloc(b->bufs, (size_t)cap * sizeof *p);
    if (!p) return NULL;
    b->bufs = p;
    b->cap = cap;
  }
  void *q = malloc(n ? n : 1);
  if (q) b->bufs[b->n++] = q;
  return q;
}

static void buflist_free(buflist *b) {
  for (int i = 0; i < b->n; i++) free(b->bufs[i]);
  free(b->bufs);
}

/* Adds tensor t as `name` in type `want` (norms: F32), converting row by row if needed. */
static ks_status add_tensor(ks_gguf_writer *w, buflist *bl, const char *name, const ks_tensor *t,
                            ks_type want) {
  if (!t->data)
    return ks_fail(KS_ERR_ARG, "cannot convert: the model has no tensor '%s'", name);
  if (!ks_type_known(t->type))
    return ks_fail(KS_ERR_UNSUPPORTED, "cannot convert tensor '%s' from type %s", name,
                   ks_type_name(t->type));
  const int64_t cols = t->ne[0], rows = t->ne[1];
  if (ks_type_block_elems(want) > 1 && cols % ks_type_block_elems(want)) {
    fprintf(stderr, "convert: %s has rows of %lld values, not a multiple of %d: writing it as "
            "F16 instead of %s\n", name, (long long)cols, ks_type_block_elems(want),
            ks_type_name(want));
    want = KS_TYPE_F16;
  }
  bl->done += t->nbytes;
  ks_progress("converting", bl->done, bl->total);
  if (t->type == want) {
    gguf_writer_add_tensor(w, name, want, cols, rows, t->data);
    return KS_OK;
  }
  size_t in_rb = ks_type_row_bytes(t->type, cols), out_rb = ks_type_row_bytes(want, cols);
  unsigned char *out = buflist_alloc(bl, out_rb * (size_t)rows);
  float *row = malloc((size_t)cols * sizeof *row);
  if (!out || !row) {
    free(row);
    return ks_fail(KS_ERR_NOMEM, "out of memory converting tensor '%s'", name);
  }
  const unsigned char *in = t->data;
  for (int64_t r = 0; r < rows; r++) {
    ks_dequant_row(t->type, in + (size_t)r * in_rb, row, cols);
    ks_quant_row(want, row, out + (size_t)r * out_rb, cols);
  }
  free(row);
  gguf_writer_add_tensor(w, name, want, cols, rows, out);
  return KS_OK;
}

static uint32_t llama_ftype(ks_type t) {
  switch (t) { /* llama.cpp's llama_ftype */
  case KS_TYPE_F32: return 0;
  case KS_TYPE_F16: return 1;
  case KS_TYPE_Q4_0: return 2;
  case KS_TYPE_Q8_0: return 7;
  case KS_TYPE_BF16: return 32;
  }
  return 0;
}

static void model_name(const char *path, char *out, size_t cap) {
  const char *b = strrchr(path, '/');
  b = b ? b + 1 : path;
  snprintf(out, cap, "%s", *b ? b : "model");
  char *dot = strrchr(out, '.');
  if (dot && dot != out) *dot = 0;
}

ks_status convert_to_gguf(const ks_model *m, const char *tokenizer_bin, const char *out_path,
                          ks_type wtype) {
  if (wtype != KS_TYPE_F32 && wtype != KS_TYPE_F16 && wtype != KS_TYPE_BF16 &&
      wtype != KS_TYPE_Q8_0 && wtype != KS_TYPE_Q4_0)
    return ks_fail(KS_ERR_ARG, "cannot convert to %s: choose F32, F16, BF16, Q8_0 or Q4_0",
                   ks_type_name(wtype));
  const ks_config *c = &m->cfg;
  if (!m->layers || c->n_layer <= 0)
    return ks_fail(KS_ERR_ARG, "cannot convert: no model loaded");
  ks_gguf_writer *w = gguf_writer_create();
  if (!w) return ks_fail(KS_ERR_NOMEM, "out of memory converting to '%s'", out_path);
  vocab v = {0};
  buflist bl = {0};
  ks_status st = KS_OK;

  char name[sizeof m->path];
  model_name(m->path, name, sizeof name);
  gguf_writer_set_str(w, "general.architecture", "llama");
  gguf_writer_set_str(w, "general.name", name);
  gguf_writer_set_u32(w, "general.file_type", llama_ftype(wtype));
  gguf_writer_set_u32(w, "general.quantization_version", 2);
  gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)c->vocab_size);
  gguf_writer_set_u32(w, "llama.context_length", (uint32_t)c->n_ctx);
  gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)c->dim);
  gguf_writer_set_u32(w, "llama.block_count", (uint32_t)c->n_layer);
  gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
  gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim);
  gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)c->n_head);
  gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_head);
  gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
  gguf_writer_set_f32(w, "llama.rope.freq_base", c->rope_base);

  if (tokenizer_bin) {
    if ((st = read_tokenizer_bin(&v, tokenizer_bin, c->vocab_size))) goto done;
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v.pieces, v.lens,
                            (uint64_t)v.n);
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", v.scores, (uint64_t)v.n);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", v.types, (uint64_t)v.n);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", 0);
  } else if (m->gguf && gguf_find_key(m->gguf, "tokenizer.ggml.model") >= 0) {
    for (int i = 0; i < gguf_n_keys(m->gguf); i++)
      if (!strncmp(gguf_key_name(m->gguf, i), "tokenizer.", 10))
        gguf_writer_copy_key(w, m->gguf, i);
  } else {
    fprintf(stderr, "convert: no tokenizer given (-z tokenizer.bin): '%s' will have no "
            "vocabulary, and kvscope run will need -z to use it\n", out_path);
  }

  bl.total = model_weight_bytes(m);
  if ((st = add_tensor(w, &bl, "token_embd.weight", &m->tok_embd, wtype))) goto done;
  for (int l = 0; l < c->n_layer; l++) {
    const ks_layer *L = &m->layers[l];
    const struct {
      const char *suffix;
      const ks_tensor *t;
      int norm;
    } ts[] = {
        {"attn_norm", &L->attn_norm, 1}, {"attn_q", &L->wq, 0},       {"attn_k", &L->wk, 0},
        {"attn_v", &L->wv, 0},           {"attn_output", &L->wo, 0},  {"ffn_norm", &L->ffn_norm, 1},
        {"ffn_gate", &L->w_gate, 0},     {"ffn_down", &L->w_down, 0}, {"ffn_up", &L->w_up, 0},
    };
    for (size_t k = 0; k < KS_ARRAY_LEN(ts); k++) {
      char tn[96];
      snprintf(tn, sizeof tn, "blk.%d.%s.weight", l, ts[k].suffix);
      if ((st = add_tensor(w, &bl, tn, ts[k].t, ts[k].norm ? KS_TYPE_F32 : wtype))) goto done;
    }
  }
  if ((st = add_tensor(w, &bl, "output_norm.weight", &m->output_norm, KS_TYPE_F32))) goto done;
  if (!m->tied_output && (st = add_tensor(w, &bl, "output.weight", &m->output, wtype)))
    goto done;
  st = gguf_writer_write(w, out_path);
done:
  buflist_free(&bl);
  vocab_free(&v);
  gguf_writer_destroy(w);
  return st;
}
