/* tokenizer.c — the two tokenizer families of GGUF and llama2.c models, one vocabulary store:
 *   - SentencePiece-style BPE (Llama 1/2, llama2.c; tokenizer.ggml.model = "llama"): encoding by
 *     best-score pair merging with byte fallback;
 *   - byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM, StarCoder; tokenizer.ggml.model = "gpt2"):
 *     the text is cut into words by the pre-tokenizer that tokenizer.ggml.pre names
 *     (bpe_pretok.c), each byte of a word becomes its GPT-2 alphabet character, and adjacent
 *     symbols merge in the order of tokenizer.ggml.merges (lowest rank first, leftmost first);
 * and, for both, llama.cpp's handling of special tokens: user-defined tokens (type 4) are cut out
 * of the text before anything else, control and unknown ones (types 3, 2) only when asked, BOS/EOS
 * as tokenizer.ggml.add_bos_token / add_eos_token say. Decoding streams and only ever emits
 * complete UTF-8. Not WordPiece/Unigram/RWKV vocabularies (a clear "not supported" error).
 *
 * One SPM merge engine serves both sources; a flag (`llamacpp`) selects the two places where
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
 * tie-break reproduces exactly without llama2.c's quadratic rescans. The byte-level BPE uses the
 * same queue with score = -rank. */
#include "tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bpe_pretok.h"
#include "gguf.h"
#include "unicode.h"

enum { TT_UNDEFINED = 0, TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4,
       TT_UNUSED = 5, TT_BYTE = 6 };

/* llama.cpp's token attributes: the type, plus CONTROL forced onto end-of-turn and
 * fill-in-the-middle tokens that a converter left as another type. */
enum { A_NORMAL = 1, A_UNKNOWN = 2, A_CONTROL = 4, A_USER = 8, A_UNUSED = 16, A_BYTE = 32,
       A_EOG = 64 };

enum { MODEL_SPM = 0, MODEL_BPE = 1 };

struct ks_tokenizer {
  int n_vocab;
  int model;           /* MODEL_SPM or MODEL_BPE */
  char *blob;          /* (sum of piece lengths + n_vocab) every piece, NUL-terminated */
  size_t *off;         /* (n_vocab) offset of each piece in blob */
  uint32_t *len;       /* (n_vocab) piece length in bytes */
  float *score;        /* (n_vocab) merge score */
  uint8_t *type;       /* (n_vocab) SentencePiece token type */
  uint8_t *attr;       /* (n_vocab) A_* bits */
  uint8_t *byte_val;   /* (n_vocab) the byte of a TT_BYTE token */
  int32_t *htab;       /* (hcap) open-addressing piece -> id, -1 = empty */
  uint32_t hcap;
  int byte_id[256];    /* token for each raw byte in SPM byte fallback (unk if none) */
  int space_id;        /* token of " " (llama2.c's dummy prefix), -1 if absent */
  int bos, eos, unk;   /* -1 when the vocabulary has none (byte-level BPE) */
  int add_bos, add_eos;
  int add_space_prefix;
  int llamacpp;        /* 1: GGUF vocab, llama.cpp semantics; 0: llama2.c run.c semantics */
  size_t max_len;      /* longest piece in bytes */

  /* Special tokens cut out of the text before tokenizing: control, user-defined and unknown
   * tokens, longest text first (ties: lower id first). Their text as in the file (for SPM the
   * pieces above have U+2581 turned into ' ', these keep it). */
  int n_special;
  int *special;        /* (n_special) token ids */
  char **special_txt;  /* (n_special) pointers into special_blob */
  uint32_t *special_len;
  char *special_blob;

  /* Byte-level BPE only. */
  ks_pretok *pre;
  int ignore_merges;   /* a word that is a token is taken whole (llama3 and a few more) */
  int n_merges;
  char *mblob;         /* every merge as left+right concatenated, no separator */
  size_t *m_off;       /* (n_merges) offset in mblob */
  uint32_t *m_len;     /* (n_merges) bytes of left+right */
  uint32_t *m_split;   /* (n_merges) bytes of left */
  int32_t *mtab;       /* (mcap) open addressing (text, split) -> merge rank, -1 = empty */
  uint32_t mcap;
  char byte_enc[256][2]; /* UTF-8 of each byte's GPT-2 alphabet character */
  uint8_t byte_enc_len[256];
  int16_t cp_byte[0x144]; /* alphabet code point -> byte, -1 if none */
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
  free(t->attr);
  free(t->byte_val);
  free(t->htab);
  free(t->special);
  free(t->special_txt);
  free(t->special_len);
  free(t->special_blob);
  pretok_destroy(t->pre);
  free(t->mblob);
  free(t->m_off);
  free(t->m_len);
  free(t->m_split);
  free(t->mtab);
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
  t->attr = calloc((size_t)n, sizeof *t->attr);
  t->byte_val = calloc((size_t)n, sizeof *t->byte_val);
  uint32_t cap = 16;
  while (cap < 2u * (uint32_t)n) cap *= 2;
  t->hcap = cap;
  t->htab = malloc(cap * sizeof *t->htab);
  if (!t->blob || !t->off || !t->len || !t->score || !t->type || !t->attr || !t->byte_val ||
      !t->htab) {
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


/* ---------- special tokens ---------- */

static uint8_t attr_of_type(int ty) {
  switch (ty) {
  case TT_NORMAL: return A_NORMAL;
  case TT_UNKNOWN: return A_UNKNOWN;
  case TT_CONTROL: return A_CONTROL;
  case TT_USER: return A_USER;
  case TT_UNUSED: return A_UNUSED;
  case TT_BYTE: return A_BYTE;
  default: return 0; /* undefined: decodes to nothing, like a control token */
  }
}

/* Token texts llama.cpp treats as control whatever their stored type (end of turn, end of
 * message, fill-in-the-middle), and which of them end generation. Converters have left some
 * as user-defined tokens; as control they are not cut out of plain text. */
static const struct {
  const char *text;
  int eog;
} k_control_texts[] = {
    {"<|eot_id|>", 1}, {"<|im_end|>", 1}, {"<|end|>", 1}, {"<end_of_turn>", 1},
    {"<|endoftext|>", 1}, {"<|end_of_text|>", 1}, {"<EOT>", 1}, {"_<EOT>", 1},
    {"<\xEF\xBD\x9C" "end\xE2\x96\x81" "of\xE2\x96\x81" "sentence\xEF\xBD\x9C>", 1},
    {"<end_of_utterance>", 1}, {"<|eom_id|>", 1},
    {"<|fim_prefix|>", 0}, {"<fim-prefix>", 0}, {"<fim_prefix>", 0},
    {"<\xEF\xBD\x9C" "fim\xE2\x96\x81" "begin\xEF\xBD\x9C>", 0}, {"<PRE>", 0},
    {"\xE2\x96\x81<PRE>", 0}, {"<|fim_suffix|>", 0}, {"<fim-suffix>", 0}, {"<fim_suffix>", 0},
    {"<\xEF\xBD\x9C" "fim\xE2\x96\x81" "hole\xEF\xBD\x9C>", 0}, {"<SUF>", 0},
    {"\xE2\x96\x81<SUF>", 0}, {"<|fim_middle|>", 0}, {"<fim-middle>", 0}, {"<fim_middle>", 0},
    {"<\xEF\xBD\x9C" "fim\xE2\x96\x81" "end\xEF\xBD\x9C>", 0}, {"<MID>", 0},
    {"\xE2\x96\x81<MID>", 0}, {"<|fim_pad|>", 1}, {"<fim-pad>", 1}, {"<fim_pad>", 1},
    {"<PAD>", 1}, {"<|fim_repo|>", 1}, {"<|repo_name|>", 1}, {"<fim-repo>", 1}, {"<REPO>", 1},
    {"<reponame>", 1}, {"<|file_sep|>", 1},
};

typedef struct {
  int id;
  uint32_t len;
} spec_key;

static int spec_cmp(const void *a, const void *b) {
  const spec_key *x = a, *y = b;
  if (x->len != y->len) return x->len > y->len ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

/* Attributes from the types, the forced control/end-of-generation texts, and the list of
 * special tokens with their text as stored in the file (raw(i) gives it). */
static ks_status finish_special(ks_tokenizer *t, const char *(*raw)(const void *, int, size_t *),
                                const void *ctx) {
  for (int i = 0; i < t->n_vocab; i++) {
    t->attr[i] = attr_of_type(t->type[i]);
    size_t l;
    const char *p = raw(ctx, i, &l);
    for (size_t k = 0; k < KS_ARRAY_LEN(k_control_texts); k++)
      if (strlen(k_control_texts[k].text) == l && memcmp(k_control_texts[k].text, p, l) == 0) {
        t->attr[i] |= A_CONTROL;
        if (k_control_texts[k].eog) t->attr[i] |= A_EOG;
      }
  }
  if (t->eos >= 0) t->attr[t->eos] |= A_EOG;
  size_t blob = 0;
  int ns = 0;
  for (int i = 0; i < t->n_vocab; i++) {
    size_t l;
    raw(ctx, i, &l);
    if ((t->attr[i] & (A_CONTROL | A_USER | A_UNKNOWN)) && l > 0) {
      ns++;
      blob += l;
    }
  }
  t->n_special = ns;
  spec_key *keys = malloc((size_t)(ns ? ns : 1) * sizeof *keys);
  t->special = malloc((size_t)(ns ? ns : 1) * sizeof *t->special);
  t->special_txt = malloc((size_t)(ns ? ns : 1) * sizeof *t->special_txt);
  t->special_len = malloc((size_t)(ns ? ns : 1) * sizeof *t->special_len);
  t->special_blob = malloc(blob ? blob : 1);
  if (!keys || !t->special || !t->special_txt || !t->special_len || !t->special_blob) {
    free(keys);
    return ks_fail(KS_ERR_NOMEM, "tokenizer: out of memory for %d special tokens", ns);
  }
  ns = 0;
  for (int i = 0; i < t->n_vocab; i++) {
    size_t l;
    raw(ctx, i, &l);
    if ((t->attr[i] & (A_CONTROL | A_USER | A_UNKNOWN)) && l > 0) {
      keys[ns].id = i;
      keys[ns].len = (uint32_t)l;
      ns++;
    }
  }
  /* llama.cpp sorts by length only (std::sort, so ties in no set order); the id breaks ties. */
  qsort(keys, (size_t)ns, sizeof *keys, spec_cmp);
  size_t bo = 0;
  for (int k = 0; k < ns; k++) {
    size_t l;
    const char *p = raw(ctx, keys[k].id, &l);
    t->special[k] = keys[k].id;
    t->special_txt[k] = t->special_blob + bo;
    t->special_len[k] = (uint32_t)l;
    memcpy(t->special_blob + bo, p, l);
    bo += l;
  }
  free(keys);
  return KS_OK;
}

static const char *raw_piece(const void *ctx, int id, size_t *len) {
  const ks_tokenizer *t = ctx;
  *len = t->len[id];
  return t->blob + t->off[id];
}

static const char *raw_gguf(const void *ctx, int id, size_t *len) {
  const char *p = gguf_arr_str(ctx, "tokenizer.ggml.tokens", (uint64_t)id, len);
  if (!p) *len = 0;
  return p ? p : "";
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
  t->add_eos = 0;
  t->llamacpp = 0;
  t->model = MODEL_SPM;
  finish_tables(t);
  st = finish_special(t, raw_piece, t);
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

/* A special token id: the key's value (validated), else the default when it is in range. */
static ks_status special_id(const ks_gguf *g, const char *key, int dflt, int n, int *id) {
  int64_t v = gguf_get_int(g, key, INT64_MIN);
  if (v == INT64_MIN) {
    *id = dflt >= 0 && dflt < n ? dflt : -1;
    return KS_OK;
  }
  if (v < 0 || v >= n)
    return ks_fail(KS_ERR_FORMAT, "GGUF %s = %lld is outside the vocabulary (0..%d)", key,
                   (long long)v, n - 1);
  *id = (int)v;
  return KS_OK;
}

static uint64_t merge_hash(const char *s, size_t n, size_t split) {
  return hash_bytes(s, n) ^ (uint64_t)(split + 1) * 0x9E3779B97F4A7C15ull;
}

/* Rank of the merge of the n bytes at s split after `split` bytes, -1 if none. */
static int merge_rank(const ks_tokenizer *t, const char *s, size_t n, size_t split) {
  uint32_t mask = t->mcap - 1;
  for (uint32_t i = (uint32_t)merge_hash(s, n, split) & mask;; i = (i + 1) & mask) {
    int32_t r = t->mtab[i];
    if (r < 0) return -1;
    if (t->m_len[r] == n && t->m_split[r] == split && memcmp(t->mblob + t->m_off[r], s, n) == 0)
      return r;
  }
}

/* tokenizer.ggml.merges: "left right" strings, rank = position. The pair is cut at the first
 * space after the first byte (llama.cpp's rule); a repeated pair keeps its first rank. */
static ks_status load_merges(ks_tokenizer *t, const ks_gguf *g) {
  gguf_vtype et;
  uint64_t nm = gguf_arr_len(g, "tokenizer.ggml.merges", &et);
  if (nm == 0 || et != GGUF_T_STRING)
    return ks_fail(KS_ERR_FORMAT,
                   "GGUF byte-level BPE vocabulary has no tokenizer.ggml.merges (string array): "
                   "re-convert the model with a current llama.cpp convert script");
  if (nm > 16u * 1024 * 1024)
    return ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.merges has %llu entries (over 16M)",
                   (unsigned long long)nm);
  size_t blob = 0;
  for (uint64_t i = 0; i < nm; i++) {
    size_t l;
    if (!gguf_arr_str(g, "tokenizer.ggml.merges", i, &l))
      return ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.merges[%llu] is unreadable",
                     (unsigned long long)i);
    if (l > 65536)
      return ks_fail(KS_ERR_FORMAT, "GGUF tokenizer.ggml.merges[%llu] is %zu bytes long",
                     (unsigned long long)i, l);
    blob += l;
  }
  t->n_merges = (int)nm;
  t->mblob = malloc(blob ? blob : 1);
  t->m_off = malloc(nm * sizeof *t->m_off);
  t->m_len = malloc(nm * sizeof *t->m_len);
  t->m_split = malloc(nm * sizeof *t->m_split);
  uint32_t cap = 16;
  while (cap < 2u * (uint32_t)nm) cap *= 2;
  t->mcap = cap;
  t->mtab = malloc(cap * sizeof *t->mtab);
  if (!t->mblob || !t->m_off || !t->m_len || !t->m_split || !t->mtab)
    return ks_fail(KS_ERR_NOMEM, "tokenizer: out of memory for %llu merges",
                   (unsigned long long)nm);
  memset(t->mtab, 0xff, cap * sizeof *t->mtab);
  size_t bo = 0;
  for (uint64_t i = 0; i < nm; i++) {
    size_t l;
    const char *p = gguf_arr_str(g, "tokenizer.ggml.merges", i, &l);
    const char *sp = l > 1 ? memchr(p + 1, ' ', l - 1) : NULL;
    t->m_off[i] = bo;
    t->m_len[i] = 0;
    t->m_split[i] = 0;
    if (!sp) continue; /* no pair: can never apply */
    size_t left = (size_t)(sp - p);
    memcpy(t->mblob + bo, p, left);
    memcpy(t->mblob + bo + left, sp + 1, l - left - 1);
    t->m_len[i] = (uint32_t)(l - 1);
    t->m_split[i] = (uint32_t)left;
    bo += l - 1;
    uint32_t mask = cap - 1;
    const char *key = t->mblob + t->m_off[i];
    for (uint32_t h = (uint32_t)merge_hash(key, l - 1, left) & mask;; h = (h + 1) & mask) {
      int32_t r = t->mtab[h];
      if (r < 0) {
        t->mtab[h] = (int32_t)i;
        break;
      }
      if (t->m_len[r] == l - 1 && t->m_split[r] == left &&
          memcmp(t->mblob + t->m_off[r], key, l - 1) == 0)
        break; /* the first rank stays */
    }
  }
  return KS_OK;
}

ks_status tokenizer_from_gguf(ks_tokenizer **out, const struct ks_gguf *g) {
  *out = NULL;
  const char *model = gguf_get_str(g, "tokenizer.ggml.model");
  if (!model)
    return ks_fail(KS_ERR_FORMAT, "GGUF has no tokenizer (key tokenizer.ggml.model is missing)");
  int bpe;
  if (strcmp(model, "llama") == 0) bpe = 0;
  else if (strcmp(model, "gpt2") == 0) bpe = 1;
  else
    return ks_fail(KS_ERR_UNSUPPORTED,
                   "tokenizer model \"%s\" is not supported; only \"llama\" (SentencePiece BPE) "
                   "and \"gpt2\" (byte-level BPE)",
                   model);
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

  /* Pieces: for SPM with U+2581 turned into ' ' (never longer than the original); byte-level
   * pieces are kept as they are (their spaces are already U+0120). */
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
  t->model = bpe ? MODEL_BPE : MODEL_SPM;
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
    if (bpe) {
      matchable[i] = l > 0;
      memcpy(q, p, l);
      w = l;
    } else {
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
    if (ty < TT_UNDEFINED || ty > TT_BYTE) {
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

  if (bpe) {
    const char *pre = gguf_get_str(g, "tokenizer.ggml.pre");
    if ((st = pretok_create(&t->pre, pre))) goto fail;
    t->ignore_merges = pretok_ignore_merges(t->pre);
    if ((st = load_merges(t, g))) goto fail;
    /* llama.cpp's byte-level defaults: BOS = EOS = 11 when the keys are absent, no unknown
     * token, and no BOS at all for the pre types that have none. */
    int dbos = pretok_no_bos(t->pre) ? -1 : 11;
    if ((st = special_id(g, "tokenizer.ggml.bos_token_id", dbos, n, &t->bos))) goto fail;
    if ((st = special_id(g, "tokenizer.ggml.eos_token_id", 11, n, &t->eos))) goto fail;
    if ((st = special_id(g, "tokenizer.ggml.unknown_token_id", -1, n, &t->unk))) goto fail;
    t->add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token", pretok_add_bos(t->pre));
    t->add_space_prefix = 0;
    for (int b = 0; b < 256; b++)
      t->byte_enc_len[b] = (uint8_t)unicode_encode(unicode_byte_to_cp((uint8_t)b), t->byte_enc[b]);
    for (uint32_t c = 0; c < KS_ARRAY_LEN(t->cp_byte); c++)
      t->cp_byte[c] = (int16_t)unicode_cp_to_byte(c);
  } else {
    if ((st = special_id(g, "tokenizer.ggml.bos_token_id", 1, n, &t->bos))) goto fail;
    if ((st = special_id(g, "tokenizer.ggml.eos_token_id", 2, n, &t->eos))) goto fail;
    if ((st = special_id(g, "tokenizer.ggml.unknown_token_id", 0, n, &t->unk))) goto fail;
    t->add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token", 1);
    t->add_space_prefix = gguf_flag(g, "tokenizer.ggml.add_space_prefix", 1);
  }
  t->add_eos = gguf_flag(g, "tokenizer.ggml.add_eos_token", 0);
  if (t->add_bos && t->bos < 0) {
    st = ks_fail(KS_ERR_FORMAT,
                 "GGUF tokenizer.ggml.add_bos_token is true but the vocabulary has no BOS token "
                 "(tokenizer.ggml.bos_token_id)");
    goto fail;
  }
  if (t->add_eos && t->eos < 0) {
    st = ks_fail(KS_ERR_FORMAT,
                 "GGUF tokenizer.ggml.add_eos_token is true but the vocabulary has no EOS token "
                 "(tokenizer.ggml.eos_token_id)");
    goto fail;
  }
  t->llamacpp = 1;
  finish_tables(t);
  if ((st = finish_special(t, raw_gguf, g))) goto fail;
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
int tokenizer_unk(const ks_tokenizer *t) { return t->unk; }
int tokenizer_add_bos(const ks_tokenizer *t) { return t->add_bos; }
int tokenizer_add_eos(const ks_tokenizer *t) { return t->add_eos; }
size_t tokenizer_max_piece_len(const ks_tokenizer *t) { return t->max_len; }

const char *tokenizer_model_name(const ks_tokenizer *t) {
  return t->model == MODEL_BPE ? "gpt2" : t->llamacpp ? "llama" : "llama2.c";
}
const char *tokenizer_pre_name(const ks_tokenizer *t) {
  return t->model == MODEL_BPE ? pretok_name(t->pre) : NULL;
}
int tokenizer_is_eog(const ks_tokenizer *t, int id) {
  return id >= 0 && id < t->n_vocab && (t->attr[id] & A_EOG) != 0;
}
int tokenizer_n_merges(const ks_tokenizer *t) { return t->n_merges; }

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

/* ---------- encoding: the merge queue ---------- */

typedef struct {
  const char *text; /* the symbol's bytes: a piece (after a merge) or a slice of the input */
  uint32_t len;
  int id;           /* SPM: token, or -1 for an input character with no piece (llama.cpp mode) */
  int prev, next;   /* neighbours in the live chain, -1 at the ends */
  uint32_t ver;     /* bumped whenever the symbol changes, so stale queue entries are skipped */
} sym_t;

typedef struct {
  float score;      /* SPM: the merged piece's score; byte-level BPE: -rank */
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

/* Scratch space for one encode call, sized for the whole text (every fragment fits). */
typedef struct {
  sym_t *s;       /* (len + 2) symbols */
  heap_t h;       /* (3 * (len + 2)) queue entries: the first pairs and two per merge */
  char *buf;      /* (2 * max piece + 8) SPM pair text */
  char *work;     /* (len + 2) SPM text with U+2581 read as ' ' */
  uint32_t *cps;  /* (len + 1) byte-level BPE: code points of a fragment */
  uint32_t *offs; /* (len + 1) and their byte offsets */
  size_t *words;  /* (len + 1) word lengths from the pre-tokenizer */
  char *enc;      /* (2 * len + 2) a word in GPT-2's alphabet */
} scratch_t;

static void scratch_free(scratch_t *sc) {
  free(sc->s);
  free(sc->h.v);
  free(sc->buf);
  free(sc->work);
  free(sc->cps);
  free(sc->offs);
  free(sc->words);
  free(sc->enc);
}

static int scratch_alloc(scratch_t *sc, const ks_tokenizer *t, size_t len) {
  memset(sc, 0, sizeof *sc);
  sc->s = malloc((len + 2) * sizeof *sc->s);
  sc->h.cap = 3 * (len + 2);
  sc->h.v = malloc(sc->h.cap * sizeof *sc->h.v);
  sc->buf = malloc(2 * KS_MAX(t->max_len, (size_t)4) + 8);
  int ok = sc->s && sc->h.v && sc->buf;
  if (t->model == MODEL_BPE) {
    sc->cps = malloc((len + 1) * sizeof *sc->cps);
    sc->offs = malloc((len + 1) * sizeof *sc->offs);
    sc->words = malloc((len + 1) * sizeof *sc->words);
    sc->enc = malloc(2 * len + 2);
    ok = ok && sc->cps && sc->offs && sc->words && sc->enc;
  } else if (t->llamacpp) {
    sc->work = malloc(len + 2);
    ok = ok && sc->work;
  }
  if (!ok) scratch_free(sc);
  return ok;
}

static void push_sym(scratch_t *sc, int *ns, const char *txt, size_t n, int id) {
  sym_t *x = &sc->s[*ns];
  x->text = txt;
  x->len = (uint32_t)n;
  x->id = id;
  x->prev = *ns - 1;
  x->next = -1;
  x->ver = 0;
  if (*ns > 0) sc->s[*ns - 1].next = *ns;
  (*ns)++;
}

/* ---------- encoding: SentencePiece BPE ---------- */

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

/* Merges the ns symbols in sc->s by score and appends the result to out. */
static void spm_merge_emit(const ks_tokenizer *t, scratch_t *sc, int ns, int *out, int *no) {
  sym_t *s = sc->s;
  heap_t *h = &sc->h;
  h->n = 0;
  for (int i = 0; i + 1 < ns; i++) try_bigram(t, s, h, sc->buf, i, i + 1);
  while (h->n) {
    bigram_t b = heap_pop(h);
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
    try_bigram(t, s, h, sc->buf, l->prev, b.left);
    try_bigram(t, s, h, sc->buf, b.left, l->next);
  }
  for (int i = ns > 0 ? 0 : -1; i >= 0; i = s[i].next) {
    if (s[i].id >= 0) {
      out[(*no)++] = s[i].id;
    } else { /* llama.cpp resegment(): an unmatched character becomes its bytes */
      for (uint32_t k = 0; k < s[i].len; k++)
        out[(*no)++] = t->byte_id[(unsigned char)s[i].text[k]];
    }
  }
}

/* llama2.c encode() over the whole text: BOS sits in the same list the merge loop scans. */
static void spm_encode_llama2c(const ks_tokenizer *t, const char *text, size_t len, int add_bos,
                               scratch_t *sc, int *out, int *no) {
  int ns = 0;
  if (add_bos) push_sym(sc, &ns, piece_ptr(t, t->bos), t->len[t->bos], t->bos);
  if (len > 0 && t->add_space_prefix) {
    if (t->space_id >= 0) {
      push_sym(sc, &ns, piece_ptr(t, t->space_id), t->len[t->space_id], t->space_id);
    } else { /* llama2.c would push -1 here; bytes are the sane reading */
      int b = t->byte_id[' '];
      push_sym(sc, &ns, piece_ptr(t, b), t->len[b], b);
    }
  }
  for (size_t i = 0; i < len;) {
    size_t cl = (size_t)utf8_seq_len((unsigned char)text[i]);
    int id = lookup(t, text + i, cl);
    if (id >= 0) {
      push_sym(sc, &ns, piece_ptr(t, id), t->len[id], id);
    } else {
      for (size_t k = 0; k < cl; k++) {
        int b = t->byte_id[(unsigned char)text[i + k]];
        push_sym(sc, &ns, piece_ptr(t, b), t->len[b], b);
      }
    }
    i += cl;
  }
  spm_merge_emit(t, sc, ns, out, no);
}

/* llama.cpp's SPM session on one stretch of text between special tokens. */
static void spm_encode_llamacpp(const ks_tokenizer *t, const char *text, size_t len, int prefix,
                                scratch_t *sc, int *out, int *no) {
  char *work = sc->work;
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
  int ns = 0;
  for (size_t i = 0; i < w;) {
    size_t cl = (size_t)utf8_seq_len((unsigned char)work[i]);
    push_sym(sc, &ns, work + i, cl, lookup(t, work + i, cl));
    i += cl;
  }
  spm_merge_emit(t, sc, ns, out, no);
}

/* ---------- encoding: byte-level BPE ---------- */

static void bpe_try(const ks_tokenizer *t, sym_t *s, heap_t *h, int l, int r) {
  if (l < 0 || r < 0) return;
  /* Symbols are adjacent slices of the encoded word, so the pair's text is contiguous. */
  int rank = merge_rank(t, s[l].text, (size_t)s[l].len + s[r].len, s[l].len);
  if (rank < 0) return;
  bigram_t b = {-(float)rank, l, r, s[l].ver, s[r].ver, rank}; /* ranks < 2^24: exact */
  heap_push(h, b);
}

/* One stretch of text between special tokens: pre-tokenize, encode each word's bytes in GPT-2's
 * alphabet, merge by rank, look the symbols up (bytes one by one where a symbol is no token). */
static ks_status bpe_encode(const ks_tokenizer *t, const char *text, size_t len, scratch_t *sc,
                            int *out, int *no) {
  size_t n = unicode_decode(text, len, sc->cps, sc->offs);
  size_t nw;
  ks_status st = pretok_split(t->pre, sc->cps, n, sc->words, &nw);
  if (st) return st;
  size_t ci = 0;
  for (size_t w = 0; w < nw; w++) {
    size_t b0 = sc->offs[ci], b1 = sc->offs[ci + sc->words[w]];
    ci += sc->words[w];
    char *enc = sc->enc;
    size_t e = 0;
    int ns = 0;
    for (size_t b = b0; b < b1; b++) {
      unsigned char c = (unsigned char)text[b];
      memcpy(enc + e, t->byte_enc[c], t->byte_enc_len[c]);
      push_sym(sc, &ns, enc + e, t->byte_enc_len[c], -1);
      e += t->byte_enc_len[c];
    }
    if (t->ignore_merges) {
      int id = lookup(t, enc, e);
      if (id >= 0) {
        out[(*no)++] = id;
        continue;
      }
    }
    sym_t *s = sc->s;
    heap_t *h = &sc->h;
    h->n = 0;
    for (int i = 0; i + 1 < ns; i++) bpe_try(t, s, h, i, i + 1);
    while (h->n) {
      bigram_t bg = heap_pop(h);
      sym_t *l = &s[bg.left], *r = &s[bg.right];
      if (l->ver != bg.lver || r->ver != bg.rver || l->next != bg.right) continue;
      l->len += r->len;
      l->ver++;
      r->len = 0;
      r->ver++;
      l->next = r->next;
      if (r->next >= 0) s[r->next].prev = bg.left;
      bpe_try(t, s, h, l->prev, bg.left);
      bpe_try(t, s, h, bg.left, l->next);
    }
    for (int i = ns > 0 ? 0 : -1; i >= 0; i = s[i].next) {
      int id = lookup(t, s[i].text, s[i].len);
      if (id >= 0) {
        out[(*no)++] = id;
        continue;
      }
      /* llama.cpp: each byte of the symbol as a one-byte piece, skipped if there is none. */
      for (uint32_t k = 0; k < s[i].len; k++) {
        int bid = lookup(t, s[i].text + k, 1);
        if (bid >= 0) out[(*no)++] = bid;
      }
    }
  }
  return KS_OK;
}

/* ---------- encoding: special tokens, then each stretch of text ---------- */

typedef struct {
  size_t off, len;
  int id; /* a special token, or -1 for the text [off, off + len) */
} frag_t;

/* llama.cpp's tokenizer_st_partition: for each special token in turn (longest first), every
 * occurrence in what is still text becomes that token. Control and unknown tokens only take
 * part when parse_special is set; user-defined ones always do. */
static frag_t *partition(const ks_tokenizer *t, const char *text, size_t len, int parse_special,
                         size_t *n_frag) {
  size_t cap = 2 * len + 2;
  frag_t *a = malloc(cap * sizeof *a), *b = malloc(cap * sizeof *b);
  if (!a || !b) {
    free(a);
    free(b);
    return NULL;
  }
  size_t na = 0;
  if (len) a[na++] = (frag_t){0, len, -1};
  for (int k = 0; k < t->n_special && na; k++) {
    int id = t->special[k];
    if (!parse_special && (t->attr[id] & (A_CONTROL | A_UNKNOWN))) continue;
    const char *s = t->special_txt[k];
    size_t sl = t->special_len[k];
    size_t nb = 0;
    for (size_t f = 0; f < na; f++) {
      if (a[f].id >= 0) {
        b[nb++] = a[f];
        continue;
      }
      size_t p = a[f].off, end = a[f].off + a[f].len;
      while (p < end) {
        const char *m = memmem(text + p, end - p, s, sl);
        if (!m) break;
        size_t at = (size_t)(m - text);
        if (at > p) b[nb++] = (frag_t){p, at - p, -1};
        b[nb++] = (frag_t){at, sl, id};
        p = at + sl;
      }
      if (p < end) b[nb++] = (frag_t){p, end - p, -1};
    }
    frag_t *tmp = a;
    a = b;
    b = tmp;
    na = nb;
  }
  free(b);
  *n_frag = na;
  return a;
}

ks_status tokenizer_encode_ex(const ks_tokenizer *t, const char *text, size_t len,
                              unsigned flags, int **tokens, int *n_tokens) {
  *tokens = NULL;
  *n_tokens = 0;
  if (!text && len) return ks_fail(KS_ERR_ARG, "prompt is NULL");
  size_t bad;
  if (!ks_utf8_valid(text, len, &bad))
    return ks_fail(KS_ERR_ARG, "prompt is not valid UTF-8: bad byte 0x%02X at offset %zu",
                   (unsigned char)text[bad], bad);
  if (len > (size_t)1 << 28) return ks_fail(KS_ERR_ARG, "prompt is over 256 MiB");
  int add_special = (flags & KS_TOK_ADD_SPECIAL) != 0;

  /* Tokens: at most one per byte of text or special token, one space prefix per stretch of
   * text (SPM), two per byte for byte-level symbols that are no token, plus BOS and EOS. */
  int *out = malloc((2 * len + 4) * sizeof *out);
  scratch_t sc;
  if (!out || !scratch_alloc(&sc, t, len)) {
    free(out);
    return ks_fail(KS_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte prompt", len);
  }
  int no = 0;
  ks_status st = KS_OK;
  if (!t->llamacpp) {
    /* tokenizer.bin carries no token types to parse: the text is all text. */
    spm_encode_llama2c(t, text, len, add_special && t->add_bos, &sc, out, &no);
  } else {
    size_t nf = 0;
    frag_t *fr = partition(t, text, len, (flags & KS_TOK_PARSE_SPECIAL) != 0, &nf);
    if (!fr) {
      st = ks_fail(KS_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte prompt", len);
    } else {
      if (add_special && t->add_bos) out[no++] = t->bos;
      int prev_special = 1; /* SPM: a space prefix starts the text and follows special tokens */
      for (size_t f = 0; f < nf && st == KS_OK; f++) {
        if (fr[f].id >= 0) {
          out[no++] = fr[f].id;
          prev_special = 1;
        } else if (t->model == MODEL_BPE) {
          st = bpe_encode(t, text + fr[f].off, fr[f].len, &sc, out, &no);
        } else {
          spm_encode_llamacpp(t, text + fr[f].off, fr[f].len, t->add_space_prefix && prev_special,
                              &sc, out, &no);
          prev_special = 0;
        }
      }
      free(fr);
    }
  }
  if (st == KS_OK && add_special && t->add_eos) out[no++] = t->eos;
  scratch_free(&sc);
  if (st != KS_OK) {
    free(out);
    return st;
  }
  *tokens = out;
  *n_tokens = no;
  return KS_OK;
}

ks_status tokenizer_encode(const ks_tokenizer *t, const char *text, size_t len, int add_bos,
                           int **tokens, int *n_tokens) {
  return tokenizer_encode_ex(t, text, len, add_bos ? KS_TOK_ADD_SPECIAL : 0, tokens, n_tokens);
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

/* Byte-level pieces spell each byte as a character of GPT-2's alphabet; a character outside
 * it (only in a hand-made vocabulary) stands for its own UTF-8. */
static void bpe_piece_bytes(const ks_tokenizer *t, const char *p, size_t n,
                            void (*put)(void *, unsigned char), void *ctx) {
  for (size_t i = 0; i < n;) {
    unsigned char c0 = (unsigned char)p[i];
    size_t cl = (size_t)utf8_seq_len(c0);
    if (cl == 0 || i + cl > n) cl = 1;
    uint32_t cpv = cl == 1 ? c0 : cl == 2 ? (c0 & 0x1Fu) : cl == 3 ? (c0 & 0x0Fu) : (c0 & 0x07u);
    for (size_t k = 1; k < cl; k++) cpv = cpv << 6 | ((unsigned char)p[i + k] & 0x3Fu);
    int b = cpv < KS_ARRAY_LEN(t->cp_byte) ? t->cp_byte[cpv] : -1;
    if (b >= 0) {
      put(ctx, (unsigned char)b);
    } else {
      for (size_t k = 0; k < cl; k++) put(ctx, (unsigned char)p[i + k]);
    }
    i += cl;
  }
}

/* The bytes token `id` stands for, as llama.cpp's token_to_piece gives them: control, unknown
 * (GGUF) and unused tokens give nothing unless `special` (then their text); byte tokens their
 * byte; user-defined tokens their text as stored; other byte-level pieces their bytes.
 * strip_space drops one leading ' ' (SPM's dummy prefix after BOS). */
static void token_bytes(const ks_tokenizer *t, int id, int special, int strip_space,
                        void (*put)(void *, unsigned char), void *ctx) {
  if (id < 0 || id >= t->n_vocab) return;
  unsigned a = t->attr[id];
  const char *p = piece_ptr(t, id);
  size_t n = t->len[id];
  int hidden = (a & A_CONTROL) || ((a & A_UNKNOWN) && t->llamacpp) ||
               (t->llamacpp && !(a & (A_NORMAL | A_USER | A_BYTE | A_UNKNOWN)));
  if (hidden && !special) return;
  if (a & A_BYTE) {
    put(ctx, t->byte_val[id]);
    return;
  }
  if (strip_space && n > 0 && p[0] == ' ') {
    p++;
    n--;
  }
  if (t->model == MODEL_BPE && !hidden && !(a & A_USER)) {
    bpe_piece_bytes(t, p, n, put, ctx);
    return;
  }
  for (size_t i = 0; i < n; i++) put(ctx, (unsigned char)p[i]);
}

typedef struct {
  ks_detok *d;
  sink_t *k;
} detok_ctx;

static void put_detok(void *ctx, unsigned char b) {
  detok_ctx *c = ctx;
  detok_byte(c->d, c->k, b);
}

size_t tokenizer_decode(const ks_tokenizer *t, ks_detok *d, int token, char *out, size_t cap) {
  sink_t k = {out, cap, 0};
  if (cap) out[0] = 0;
  int prev = d->prev;
  d->prev = token;
  /* SentencePiece's decoder drops the dummy-prefix space of the first piece after BOS. */
  int strip = t->model == MODEL_SPM && prev >= 0 && prev == t->bos;
  detok_ctx c = {d, &k};
  token_bytes(t, token, 0, strip, put_detok, &c);
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

static void put_file(void *ctx, unsigned char b) { fputc(b, (FILE *)ctx); }

/* llama-tokenize prints each token with common_token_to_piece(special = true): control tokens as
 * their text, byte-level pieces as the bytes they stand for. */
void tokenizer_print_tokens(const ks_tokenizer *t, const int *ids, int n, int ids_only, FILE *f) {
  if (ids_only) {
    fputc('[', f);
    for (int i = 0; i < n; i++) fprintf(f, i ? ", %d" : "%d", ids[i]);
    fputs("]\n", f);
    return;
  }
  for (int i = 0; i < n; i++) {
    fprintf(f, "%6d -> '", ids[i]);
    token_bytes(t, ids[i], 1, 0, put_file, f);
    fputs("'\n", f);
  }
}

