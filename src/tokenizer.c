/* tokenizer.c — SentencePiece-style BPE (Llama 1/2, llama2.c): vocabulary loading from a llama2.c
 * tokenizer.bin or from GGUF metadata, encoding by best-score pair merging with byte fallback,
 * and streaming decoding that only ever emits complete UTF-8. Not the byte-level BPE of
 * GPT-2/Llama 3 (tokenizer.ggml.model = "gpt2"): that is issue 7.
 *
 * One merge engine serves both sources; a flag (`llamacpp`) selects the two places where
 * llama2.c's run.c and llama.cpp's SPM tokenizer genuinely differ, so each file type matches its
 * own reference:
 *   - llama2.c (tokenizer.bin) looks every UTF-8 character up as a piece immediately and turns an
 *     unknown character into byte tokens at once; the merge loop then concatenates *piece
 *     strings*, so a byte token takes part as the literal text "<0xXX>", the BOS token takes part
 *     too, and a pair whose score is <= -1e10 is never merged (its best_score starts at -1e10).
 *   - llama.cpp (GGUF) keeps unknown characters as text symbols that may still merge by text,
 *     only falls back to bytes for what is left at the end, adds BOS outside the merge, prefixes
 *     the space only when add_space_prefix is set, and treats a literal U+2581 in the text as a
 *     space (it escapes ' ' to U+2581 before matching).
 * On ordinary vocabularies the two give the same ids; the merge order is the same in both
 * (highest score first, leftmost on ties), which a priority queue with the left position as
 * tie-break reproduces exactly without llama2.c's quadratic rescans. */
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

struct ks_tokenizer {
  int n_vocab;
  char *blob;          /* (sum of piece lengths + n_vocab) every piece, NUL-terminated */
  size_t *off;         /* (n_vocab) offset of each piece in blob */
  uint32_t *len;       /* (n_vocab) piece length in bytes */
  float *score;        /* (n_vocab) merge score */
  uint8_t *type;       /* (n_vocab) SentencePiece token type */
  uint8_t *byte_val;   /* (n_vocab) the byte of a TT_BYTE token */
  int32_t *htab;       /* (hcap) open-addressing piece -> id, -1 = empty */
  uint32_t hcap;
  int byte_id[256];    /* token for each raw byte in byte fallback (unk if none) */
  int space_id;        /* token of " " (llama2.c's dummy prefix), -1 if absent */
  int bos, eos, unk;
  int add_bos;
  int add_space_prefix;
  int llamacpp;        /* 1: GGUF vocab, llama.cpp SPM semantics; 0: llama2.c run.c semantics */
  size_t max_len;      /* longest piece in bytes */
};

/* ---------- UTF-8 ---------- */

/* Valid range of the continuation byte at position `pos` (1..3) of a sequence led by `lead`. */
static void utf8_cont_range(unsigned char lead, int pos, unsigned char *lo, unsigned char *hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (pos != 1) return;
  if (lead == 0xE0) *lo = 0xA0;      /* overlong 3-byte */
  else if (lead == 0xED) *hi = 0x9F; /* surrogates */
  else if (lead == 0xF0) *lo = 0x90; /* overlong 4-byte */
  else if (lead == 0xF4) *hi = 0x8F; /* > U+10FFFF */
}

/* Sequence length announced by a lead byte, 0 if it cannot start a sequence. */
static int utf8_seq_len(unsigned char b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0; /* continuation byte, overlong C0/C1, or F5..FF */
}

/* Reports the offset of the lead byte of the first sequence that is not valid. */
int ks_utf8_valid(const char *s, size_t len, size_t *bad_offset) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    int n = utf8_seq_len(u[i]);
    int ok = n > 0 && i + (size_t)n <= len;
    for (int k = 1; ok && k < n; k++) {
      unsigned char lo, hi;
      utf8_cont_range(u[i], k, &lo, &hi);
      if (u[i + k] < lo || u[i + k] > hi) ok = 0;
    }
    if (!ok) {
      if (bad_offset) *bad_offset = i;
      return 0;
    }
    i += (size_t)n;
  }
  return 1;
}

/* ---------- piece lookup ---------- */

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

static const char *piece_ptr(const ks_tokenizer *t, int id) { return t->blob + t->off[id]; }

static int lookup(const ks_tokenizer *t, const char *s, size_t n) {
  uint32_t mask = t->hcap - 1;
  for (uint32_t i = (uint32_t)hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
    int32_t id = t->htab[i];
    if (id < 0) return -1;
    if (t->len[id] == n && memcmp(piece_ptr(t, id), s, n) == 0) return id;
  }
}

/* Duplicate pieces: llama.cpp's token_to_id map keeps the last id; llama2.c's bsearch over its
 * sorted copy returns an unspecified one, so keep the first (real tokenizer.bin files have none). */
static void hash_insert(ks_tokenizer *t, int id, int keep_last) {
  uint32_t mask = t->hcap - 1;
  const char *s = piece_ptr(t, id);
  size_t n = t->len[id];
  for (uint32_t i = (uint32_t)hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
    int32_t cur = t->htab[i];
    if (cur < 0) {
      t->htab[i] = id;
      return;
    }
    if (t->len[cur] == n && memcmp(piece_ptr(t, cur), s, n) == 0) {
      if (keep_last) t->htab[i] = id;
      return;
    }
  }
}

static int parse_byte_piece(const char *p, size_t n, uint8_t *val) {
  if (n != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return 0;
  unsigned v = 0;
  for (int k = 3; k < 5; k++) {
    char c = p[k];
    unsigned d;
    if (c >= '0' && c <= '9') d = (unsigned)(c - '0');
    else if (c >= 'A' && c <= 'F') d = (unsigned)(c - 'A' + 10);
    else if (c >= 'a' && c <= 'f') d = (unsigned)(c - 'a' + 10);
    else return 0;
    v = v * 16 + d;
  }
  *val = (uint8_t)v;
  return 1;
}

void tokenizer_destroy(ks_tokenizer *t) {
  if (!t) return;
  free(t->blob);
  free(t->off);
  free(t->len);
  free(t->score);
  free(t->type);
  free(t->byte_val);
  free(t->htab);
  free(t);
}

static ks_tokenizer *tok_alloc(int n, size_t blob_bytes) {
  ks_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->n_vocab = n;
  t->blob = malloc(blob_bytes ? blob_bytes : 1);
  t->off = calloc((size_t)n, sizeof *t->off);
  t->len = calloc((size_t)n, sizeof *t->len);
  t->score = calloc((size_t)n, sizeof *t->score);
  t->type = calloc((size_t)n, sizeof *t->type);
  t->byte_val = calloc((size_t)n, sizeof *t->byte_val);
  uint32_t cap = 16;
  while (cap < 2u * (uint32_t)n) cap *= 2;
  t->hcap = cap;
  t->htab = malloc(cap * sizeof *t->htab);
  if (!t->blob || !t->off || !t->len || !t->score || !t->type || !t->byte_val || !t->htab) {
    tokenizer_destroy(t);
    return NULL;
  }
  memset(t->htab, 0xff, cap * sizeof *t->htab);
  return t;
}

/* Byte-fallback table and the dummy-prefix token, once pieces and the hash are in place. */
static void finish_tables(ks_tokenizer *t) {
  for (int b = 0; b < 256; b++) {
    char buf[7];
    snprintf(buf, sizeof buf, "<0x%02X>", b);
    int id = -1;
    /* llama2.c hard-codes id b+3; honour it where that token really is <0xXX> for b. */
    if (!t->llamacpp && b + 3 < t->n_vocab && t->type[b + 3] == TT_BYTE && t->byte_val[b + 3] == b)
      id = b + 3;
    if (id < 0) id = lookup(t, buf, 6);
    if (id < 0 && t->llamacpp) { /* llama.cpp: then the byte itself as a piece */
      char one = (char)b;
      id = lookup(t, &one, 1);
    }
    t->byte_id[b] = id >= 0 ? id : t->unk;
  }
  t->space_id = lookup(t, " ", 1);
  t->max_len = 0;
  for (int i = 0; i < t->n_vocab; i++) t->max_len = KS_MAX(t->max_len, (size_t)t->len[i]);
}

/* ---------- loading: llama2.c tokenizer.bin ---------- */

static int rd_i32(const unsigned char *p) {
  uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  int32_t r;
  memcpy(&r, &v, 4);
  return r;
}

ks_status tokenizer_load_llama2c(ks_tokenizer **out, const char *path, int vocab_size) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return ks_fail(KS_ERR_IO, "cannot open tokenizer %s", path);
  unsigned char *d = NULL;
  size_t size = 0, cap = 0;
  for (;;) {
    if (size == cap) {
      cap = cap ? cap * 2 : 1 << 16;
      if (cap > ((size_t)1 << 31)) {
        fclose(f);
        free(d);
        return ks_fail(KS_ERR_FORMAT, "tokenizer %s: file is over 2 GiB, not a tokenizer.bin", path);
      }
      unsigned char *nd = realloc(d, cap);
      if (!nd) {
        fclose(f);
        free(d);
        return ks_fail(KS_ERR_NOMEM, "tokenizer %s: out of memory", path);
      }
      d = nd;
    }
    size_t r = fread(d + size, 1, cap - size, f);
    size += r;
    if (r == 0) break;
  }
  int rerr = ferror(f);
  fclose(f);
  if (rerr) {
    free(d);
    return ks_fail(KS_ERR_IO, "tokenizer %s: read error", path);
  }

  ks_status st = KS_OK;
  ks_tokenizer *t = NULL;
  if (size < 4) {
    st = ks_fail(KS_ERR_FORMAT, "tokenizer %s: truncated (%zu bytes, no max_token_length header)",
                 path, size);
    goto done;
  }
  int max_tok = rd_i32(d);
  if (max_tok < 1 || max_tok > 65536) {
    st = ks_fail(KS_ERR_FORMAT, "tokenizer %s: max_token_length %d is not in 1..65536", path,
                 max_tok);
    goto done;
  }
  /* First pass: validate and count. */
  size_t o = 4, blob = 0;
  int n = 0;
  while (vocab_size > 0 ? n < vocab_size : o < size) {
    if (size - o < 8) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer %s: truncated in entry %d of %d (offset %zu)", path, n,
                   vocab_size, o);
      goto done;
    }
    float sc;
    memcpy(&sc, d + o, 4); /* little-endian hosts only, as llama2.c */
    int l = rd_i32(d + o + 4);
    if (isnan(sc)) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer %s: entry %d has a NaN score", path, n);
      goto done;
    }
    if (l < 0 || l > max_tok) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer %s: entry %d has length %d (max_token_length %d)",
                   path, n, l, max_tok);
      goto done;
    }
    o += 8;
    if (size - o < (size_t)l) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer %s: truncated in the text of entry %d (offset %zu)",
                   path, n, o);
      goto done;
    }
    if (memchr(d + o, 0, (size_t)l)) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer %s: entry %d contains a NUL byte", path, n);
      goto done;
    }
    o += (size_t)l;
    blob += (size_t)l + 1;
    if (++n > 16 * 1024 * 1024) {
      st = ks_fail(KS_ERR_FORMAT, "tokenizer %s: more than 16M entries", path);
      goto done;
    }
  }
  if (o != size) {
    st = ks_fail(KS_ERR_FORMAT,
                 "tokenizer %s: %zu bytes left after %d entries (is this the tokenizer for a "
                 "model with a different vocabulary size?)",
                 path, size - o, n);
    goto done;
  }
  if (n < 3) {
    st = ks_fail(KS_ERR_FORMAT, "tokenizer %s: %d entries, need at least 3 (unk, bos, eos)", path,
                 n);
    goto done;
  }
  t = tok_alloc(n, blob);
  if (!t) {
    st = ks_fail(KS_ERR_NOMEM, "tokenizer %s: out of memory", path);
    goto done;
  }
  o = 4;
  size_t bo = 0;
  for (int i = 0; i < n; i++) {
    memcpy(&t->score[i], d + o, 4);
    uint32_t l = (uint32_t)rd_i32(d + o + 4);
    o += 8;
    t->off[i] = bo;
    t->len[i] = l;
    memcpy(t->blob + bo, d + o, l);
    t->blob[bo + l] = 0;
    bo += l + 1;
    o += l;
    /* tokenizer.bin carries no types: infer them the way llama2.c treats the ids. */
    const char *p = piece_ptr(t, i);
    if (i == 1 || i == 2) t->type[i] = TT_CONTROL;
    else if (i == 0 && l == 5 && memcmp(p, "<unk>", 5) == 0) t->type[i] = TT_UNKNOWN;
    else if (parse_byte_piece(p, l, &t->byte_val[i])) t->type[i] = TT_BYTE;
    else t->type[i] = TT_NORMAL;
    if (l > 0) hash_insert(t, i, 0);
  }
  t->bos = 1;
  t->eos = 2;
  t->unk = 0;
  t->add_bos = 1;
  t->add_space_prefix = 1;
  t->llamacpp = 0;
  finish_tables(t);
done:
  free(d);
  if (st != KS_OK) {
    tokenizer_destroy(t);
    return st;
  }
  *out = t;
  return KS_OK;
}

/* ---------- loading: GGUF metadata ---------- */

/* Flags are GGUF bools; accept an integer too, as some converters wrote them that way. */
static int gguf_flag(const ks_gguf *g, const char *key, int dflt) {
  int k = gguf_find_key(g, key);
  if (k < 0) return dflt;
  if (gguf_key_type(g, k) == GGUF_T_BOOL) return gguf_get_bool(g, key, dflt) != 0;
  int64_t v = gguf_get_int(g, key, INT64_MIN);
  return v == INT64_MIN ? dflt : v != 0;
}

ks_status tokenizer_from_gguf(ks_tokenizer **out, const struct ks_gguf *g) {
  *out = NULL;
  const char *model = gguf_get_str(g, "tokenizer.ggml.model");
  if (!model)
    return ks_fail(KS_ERR_FORMAT, "GGUF has no tokenizer (key tokenizer.ggml.model is missing)");
  if (strcmp(model, "llama") != 0) {
    if (strcmp(model, "gpt2") == 0)
      return ks_fail(KS_ERR_UNSUPPORTED,
                     "tokenizer model \"gpt2\" (byte-level BPE, Llama 3 / Qwen / SmolLM style) is "
                     "not supported yet; only \"llama\" (SentencePiece BPE)");
    return ks_fail(KS_ERR_UNSUPPORTED,
                   "tokenizer model \"%s\" is not supported; only \"llama\" (SentencePiece BPE)",
                   model);
  }
  gguf_vtype et;
  uint64_t n64 = gguf_arr_len(g, "tokenizer.ggml.tokens", &et);
  if (n64 == 0 || et != GGUF_T_STRING)
    return ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.tokens is missing, empty or not strings");
  if (n64 > 16u * 1024 * 1024)
    return ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.tokens has %llu entries (over 16M)",
                   (unsigned long long)n64);
  int n = (int)n64;

  /* Array data points into the mapping at any alignment: read elements with memcpy. */
  const unsigned char *scores = NULL;
  uint64_t ns = gguf_arr_len(g, "tokenizer.ggml.scores", &et);
  if (ns) {
    if (et != GGUF_T_FLOAT32 || ns != n64)
      return ks_fail(KS_ERR_FORMAT,
                     "GGUF tokenizer.ggml.scores has %llu entries of type %d, expected %d float32",
                     (unsigned long long)ns, (int)et, n);
    scores = gguf_arr_data(g, "tokenizer.ggml.scores");
    if (!scores) return ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.scores has no data");
  }
  const unsigned char *types = NULL;
  uint64_t nt = gguf_arr_len(g, "tokenizer.ggml.token_type", &et);
  if (nt) {
    if ((et != GGUF_T_INT32 && et != GGUF_T_UINT32) || nt != n64)
      return ks_fail(KS_ERR_FORMAT,
                     "GGUF tokenizer.ggml.token_type has %llu entries of type %d, expected %d "
                     "int32",
                     (unsigned long long)nt, (int)et, n);
    types = gguf_arr_data(g, "tokenizer.ggml.token_type");
    if (!types) return ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.token_type has no data");
  }

  /* Pieces, with U+2581 turned into ' ' (never longer than the original). */
  size_t blob = 0;
  for (int i = 0; i < n; i++) {
    size_t l;
    const char *p = gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &l);
    if (!p) return ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.tokens[%d] is unreadable", i);
    if (l > 65536)
      return ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.tokens[%d] is %zu bytes long", i, l);
    blob += l + 1;
  }
  ks_tokenizer *t = tok_alloc(n, blob);
  if (!t) return ks_fail(KS_ERR_NOMEM, "tokenizer: out of memory for %d tokens", n);
  ks_status st = KS_OK;
  size_t bo = 0;
  uint8_t *matchable = calloc((size_t)n, 1);
  if (!matchable) {
    st = ks_fail(KS_ERR_NOMEM, "tokenizer: out of memory");
    goto fail;
  }
  for (int i = 0; i < n; i++) {
    size_t l;
    const char *p = gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &l);
    char *q = t->blob + bo;
    size_t w = 0;
    /* llama.cpp matches pieces against text whose spaces became U+2581, so a piece holding a
     * literal ' ' can never match; keep it out of the lookup once ' ' stands for U+2581. */
    matchable[i] = l > 0 && memchr(p, ' ', l) == NULL;
    for (size_t k = 0; k < l;) {
      if (k + 3 <= l && (unsigned char)p[k] == 0xE2 && (unsigned char)p[k + 1] == 0x96 &&
          (unsigned char)p[k + 2] == 0x81) {
        q[w++] = ' ';
        k += 3;
      } else {
        q[w++] = p[k++];
      }
    }
    q[w] = 0;
    t->off[i] = bo;
    t->len[i] = (uint32_t)w;
    bo += w + 1;
    float sc = 0.0f;
    if (scores) memcpy(&sc, scores + 4 * (size_t)i, 4);
    if (isnan(sc)) {
      st = ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.scores[%d] is NaN", i);
      goto fail;
    }
    t->score[i] = sc;
    int32_t ty = TT_NORMAL;
    if (types) memcpy(&ty, types + 4 * (size_t)i, 4);
    if (ty < TT_NORMAL || ty > TT_BYTE) {
      st = ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.token_type[%d] = %d is not a known type", i,
                   ty);
      goto fail;
    }
    t->type[i] = (uint8_t)ty;
    if (ty == TT_BYTE && !parse_byte_piece(q, w, &t->byte_val[i])) {
      st = ks_fail(KS_ERR_FORMAT, "GGUF token %d is a byte token but its piece is not <0xXX>", i);
      goto fail;
    }
  }
  for (int i = 0; i < n; i++)
    if (matchable[i]) hash_insert(t, i, 1);

  int64_t bos = gguf_get_int(g, "tokenizer.ggml.bos_token_id", 1);
  int64_t eos = gguf_get_int(g, "tokenizer.ggml.eos_token_id", 2);
  int64_t unk = gguf_get_int(g, "tokenizer.ggml.unknown_token_id", 0);
  if (bos < 0 || bos >= n || eos < 0 || eos >= n || unk < 0 || unk >= n) {
    st = ks_fail(KS_ERR_FORMAT, "GGUF tokenizer: bos %lld / eos %lld / unk %lld outside 0..%d",
                 (long long)bos, (long long)eos, (long long)unk, n - 1);
    goto fail;
  }
  t->bos = (int)bos;
  t->eos = (int)eos;
  t->unk = (int)unk;
  t->add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token", 1);
  t->add_space_prefix = gguf_flag(g, "tokenizer.ggml.add_space_prefix", 1);
  t->llamacpp = 1;
  finish_tables(t);
  free(matchable);
  *out = t;
  return KS_OK;
fail:
  free(matchable);
  tokenizer_destroy(t);
  return st;
}

/* ---------- accessors ---------- */

int tokenizer_vocab_size(const ks_tokenizer *t) { return t->n_vocab; }
int tokenizer_bos(const ks_tokenizer *t) { return t->bos; }
int tokenizer_eos(const ks_tokenizer *t) { return t->eos; }
int tokenizer_add_bos(const ks_tokenizer *t) { return t->add_bos; }
size_t tokenizer_max_piece_len(const ks_tokenizer *t) { return t->max_len; }

const char *tokenizer_piece(const ks_tokenizer *t, int id, size_t *len) {
  if (id < 0 || id >= t->n_vocab) {
    if (len) *len = 0;
    return "";
  }
  if (len) *len = t->len[id];
  return piece_ptr(t, id);
}
float tokenizer_score(const ks_tokenizer *t, int id) {
  return id >= 0 && id < t->n_vocab ? t->score[id] : 0.0f;
}
int tokenizer_type(const ks_tokenizer *t, int id) {
  return id >= 0 && id < t->n_vocab ? t->type[id] : 0;
}

/* ---------- encoding ---------- */

typedef struct {
  const char *text; /* the symbol's bytes: a piece (after a merge) or a slice of the input */
  uint32_t len;
  int id;           /* token, or -1 for an input character with no piece (llama.cpp mode) */
  int prev, next;   /* neighbours in the live chain, -1 at the ends */
  uint32_t ver;     /* bumped whenever the symbol changes, so stale queue entries are skipped */
} sym_t;

typedef struct {
  float score;
  int left, right;
  uint32_t lver, rver;
  int id;
} bigram_t;

/* Max-heap order: higher score first, then the leftmost pair (smaller left index). */
static int bg_before(const bigram_t *a, const bigram_t *b) {
  return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct {
  bigram_t *v;
  size_t n, cap;
} heap_t;

static void heap_push(heap_t *h, bigram_t b) {
  size_t i = h->n++;
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!bg_before(&b, &h->v[p])) break;
    h->v[i] = h->v[p];
    i = p;
  }
  h->v[i] = b;
}

static bigram_t heap_pop(heap_t *h) {
  bigram_t top = h->v[0], last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && bg_before(&h->v[c + 1], &h->v[c])) c++;
    if (!bg_before(&h->v[c], &last)) break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n) h->v[i] = last;
  return top;
}

static void try_bigram(const ks_tokenizer *t, sym_t *s, heap_t *h, char *buf, int l, int r) {
  if (l < 0 || r < 0) return;
  size_t n = (size_t)s[l].len + s[r].len;
  memcpy(buf, s[l].text, s[l].len);
  memcpy(buf + s[l].len, s[r].text, s[r].len);
  int id = lookup(t, buf, n);
  if (id < 0) return;
  /* llama2.c starts its search from best_score = -1e10 and needs a strictly better score. */
  if (!t->llamacpp && !(t->score[id] > -1e10f)) return;
  bigram_t b = {t->score[id], l, r, s[l].ver, s[r].ver, id};
  heap_push(h, b);
}

ks_status tokenizer_encode(const ks_tokenizer *t, const char *text, size_t len, int add_bos,
                           int **tokens, int *n_tokens) {
  *tokens = NULL;
  *n_tokens = 0;
  if (!text && len) return ks_fail(KS_ERR_ARG, "prompt is NULL");
  size_t bad;
  if (!ks_utf8_valid(text, len, &bad))
    return ks_fail(KS_ERR_ARG, "prompt is not valid UTF-8: bad byte 0x%02X at offset %zu",
                   (unsigned char)text[bad], bad);
  if (len > (size_t)1 << 28) return ks_fail(KS_ERR_ARG, "prompt is over 256 MiB");

  int prefix = len > 0 && t->add_space_prefix;
  size_t max_sym = len + 2; /* every byte at most one symbol, plus the prefix and BOS */
  sym_t *s = malloc(max_sym * sizeof *s);
  int *out = malloc((len + 3) * sizeof *out);
  heap_t h = {malloc(3 * max_sym * sizeof(bigram_t)), 0, 3 * max_sym};
  char *buf = malloc(2 * KS_MAX(t->max_len, (size_t)4) + 8);
  char *work = t->llamacpp ? malloc(len + 2) : NULL;
  if (!s || !out || !h.v || !buf || (t->llamacpp && !work)) {
    free(s);
    free(out);
    free(h.v);
    free(buf);
    free(work);
    return ks_fail(KS_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte prompt", len);
  }

  int ns = 0, no = 0;
#define PUSH_SYM(txt, n_, id_)                                                                 \
  do {                                                                                         \
    s[ns].text = (txt);                                                                        \
    s[ns].len = (uint32_t)(n_);                                                                \
    s[ns].id = (id_);                                                                          \
    s[ns].prev = ns - 1;                                                                       \
    s[ns].next = -1;                                                                           \
    s[ns].ver = 0;                                                                             \
    if (ns > 0) s[ns - 1].next = ns;                                                           \
    ns++;                                                                                      \
  } while (0)

  if (!t->llamacpp) {
    /* llama2.c encode(): BOS sits in the same token list the merge loop scans. */
    if (add_bos) PUSH_SYM(piece_ptr(t, t->bos), t->len[t->bos], t->bos);
    if (prefix) {
      if (t->space_id >= 0) {
        PUSH_SYM(piece_ptr(t, t->space_id), t->len[t->space_id], t->space_id);
      } else { /* llama2.c would push -1 here; bytes are the sane reading */
        int b = t->byte_id[' '];
        PUSH_SYM(piece_ptr(t, b), t->len[b], b);
      }
    }
    for (size_t i = 0; i < len;) {
      size_t cl = (size_t)utf8_seq_len((unsigned char)text[i]);
      int id = lookup(t, text + i, cl);
      if (id >= 0) {
        PUSH_SYM(piece_ptr(t, id), t->len[id], id);
      } else {
        for (size_t k = 0; k < cl; k++) {
          int b = t->byte_id[(unsigned char)text[i + k]];
          PUSH_SYM(piece_ptr(t, b), t->len[b], b);
        }
      }
      i += cl;
    }
  } else {
    if (add_bos) out[no++] = t->bos;
    size_t w = 0;
    if (prefix) work[w++] = ' ';
    for (size_t i = 0; i < len;) { /* U+2581 in the text is a space to llama.cpp */
      if (i + 3 <= len && (unsigned char)text[i] == 0xE2 && (unsigned char)text[i + 1] == 0x96 &&
          (unsigned char)text[i + 2] == 0x81) {
        work[w++] = ' ';
        i += 3;
      } else {
        work[w++] = text[i++];
      }
    }
    for (size_t i = 0; i < w;) {
      size_t cl = (size_t)utf8_seq_len((unsigned char)work[i]);
      PUSH_SYM(work + i, cl, lookup(t, work + i, cl));
      i += cl;
    }
  }
#undef PUSH_SYM

  for (int i = 0; i + 1 < ns; i++) try_bigram(t, s, &h, buf, i, i + 1);
  while (h.n) {
    bigram_t b = heap_pop(&h);
    sym_t *l = &s[b.left], *r = &s[b.right];
    if (l->ver != b.lver || r->ver != b.rver || l->next != b.right) continue;
    l->id = b.id;
    l->text = piece_ptr(t, b.id);
    l->len = t->len[b.id];
    l->ver++;
    r->len = 0;
    r->ver++;
    l->next = r->next;
    if (r->next >= 0) s[r->next].prev = b.left;
    try_bigram(t, s, &h, buf, l->prev, b.left);
    try_bigram(t, s, &h, buf, b.left, l->next);
  }

  for (int i = ns > 0 ? 0 : -1; i >= 0; i = s[i].next) {
    if (s[i].id >= 0) {
      out[no++] = s[i].id;
    } else { /* llama.cpp resegment(): an unmatched character becomes its bytes */
      for (uint32_t k = 0; k < s[i].len; k++) out[no++] = t->byte_id[(unsigned char)s[i].text[k]];
    }
  }
  free(s);
  free(h.v);
  free(buf);
  free(work);
  *tokens = out;
  *n_tokens = no;
  return KS_OK;
}

/* ---------- decoding ---------- */

void detok_init(ks_detok *d) {
  memset(d, 0, sizeof *d);
  d->prev = -1;
}

typedef struct {
  char *out;
  size_t cap, w;
} sink_t;

static void sink_put(sink_t *k, const void *p, size_t n) {
  if (k->cap == 0) return;
  if (k->w + n + 1 > k->cap) return; /* never split a character: drop what does not fit */
  memcpy(k->out + k->w, p, n);
  k->w += n;
  k->out[k->w] = 0;
}

static void sink_fffd(sink_t *k) { sink_put(k, "\xEF\xBF\xBD", 3); }

/* One byte into the UTF-8 assembler; whole characters go to the sink, each maximal invalid
 * subsequence becomes one U+FFFD (the Unicode "substitution of maximal subparts" practice). */
static void detok_byte(ks_detok *d, sink_t *k, unsigned char b) {
  if (d->n_pend > 0) {
    unsigned char lo, hi;
    utf8_cont_range(d->pend[0], d->n_pend, &lo, &hi);
    if (b >= lo && b <= hi) {
      d->pend[d->n_pend++] = b;
      if (d->n_pend == utf8_seq_len(d->pend[0])) {
        sink_put(k, d->pend, (size_t)d->n_pend);
        d->n_pend = 0;
      }
      return;
    }
    sink_fffd(k);
    d->n_pend = 0;
  }
  int n = utf8_seq_len(b);
  if (n == 1) {
    sink_put(k, &b, 1);
  } else if (n == 0) {
    sink_fffd(k);
  } else {
    d->pend[0] = b;
    d->n_pend = 1;
  }
}

size_t tokenizer_decode(const ks_tokenizer *t, ks_detok *d, int token, char *out, size_t cap) {
  sink_t k = {out, cap, 0};
  if (cap) out[0] = 0;
  int prev = d->prev;
  d->prev = token;
  if (token < 0 || token >= t->n_vocab) return 0;
  int ty = t->type[token];
  if (ty == TT_CONTROL) return 0;
  /* llama.cpp prints nothing for <unk> unless asked for special tokens; llama2.c prints it. */
  if (ty == TT_UNKNOWN && t->llamacpp) return 0;
  if (ty == TT_BYTE) {
    detok_byte(d, &k, t->byte_val[token]);
    return k.w;
  }
  const char *p = piece_ptr(t, token);
  size_t n = t->len[token];
  /* SentencePiece's decoder drops the dummy-prefix space of the first piece after BOS. */
  if (prev == t->bos && n > 0 && p[0] == ' ') {
    p++;
    n--;
  }
  for (size_t i = 0; i < n; i++) detok_byte(d, &k, (unsigned char)p[i]);
  return k.w;
}

size_t detok_flush(ks_detok *d, char *out, size_t cap) {
  sink_t k = {out, cap, 0};
  if (cap) out[0] = 0;
  if (d->n_pend > 0) {
    sink_fffd(&k);
    d->n_pend = 0;
  }
  return k.w;
}

/* ---------- printing (llama-tokenize's formats) ---------- */

void tokenizer_print_tokens(const ks_tokenizer *t, const int *ids, int n, int ids_only, FILE *f) {
  if (ids_only) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, i ? ", %d" : "%d", ids[i]);
    fputs("]\n", f);
    return;
  }
  for (int i = 0; i < n; i++) {
    fprintf(f, "%6d -> '", ids[i]);
    int id = ids[i];
    if (id >= 0 && id < t->n_vocab) {
      if (t->type[id] == TT_BYTE) fputc(t->byte_val[id], f);
      else fwrite(piece_ptr(t, id), 1, t->len[id], f);
    }
    fputs("'\n", f);
  }
}
