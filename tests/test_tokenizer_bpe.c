/* test_tokenizer_bpe.c — byte-level BPE (tokenizer.ggml.model = "gpt2"): llama.cpp's gpt-2 and
 * starcoder test vectors through the C API, with lossless decoding of every vector; a slow,
 * plainly written merge oracle (sorted merge list, lowest rank then leftmost, one merge at a
 * time) on random text; and a hand-made vocabulary for what the vectors do not reach: special
 * tokens (user-defined ones always cut out, longest first; control ones only when asked), the
 * end-of-turn texts forced to control, add_bos/add_eos, llama3's whole-word shortcut, merges
 * whose result is no token, streaming decode, llama-tokenize's printout and load errors. */
#include <stdlib.h>
#include <string.h>

#include "bpe_pretok.h"
#include "gguf.h"
#include "testutil.h"
#include "tokenizer.h"
#include "unicode.h"

/* ---------- helpers ---------- */

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  REQUIRE(f);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  REQUIRE(b);
  REQUIRE(fread(b, 1, (size_t)n, f) == (size_t)n);
  fclose(f);
  b[n] = 0;
  *len = (size_t)n;
  return b;
}

static void print_ids(FILE *f, const char *label, const int *ids, int n) {
  fprintf(f, "    %s:", label);
  for (int i = 0; i < n; i++) fprintf(f, " %d", ids[i]);
  fputc('\n', f);
}

static int same_ids(const int *a, int na, const int *b, int nb) {
  return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

/* Decodes ids one at a time (streaming) into a malloc'd buffer. */
static char *decode_all(const ks_tokenizer *t, const int *ids, int n, size_t *out_len) {
  size_t cap = 64, w = 0;
  char *s = malloc(cap);
  size_t bcap = 3 * tokenizer_max_piece_len(t) + 16;
  char *buf = malloc(bcap);
  REQUIRE(s && buf);
  ks_detok d;
  detok_init(&d);
  for (int i = 0; i <= n; i++) {
    size_t k = i < n ? tokenizer_decode(t, &d, ids[i], buf, bcap) : detok_flush(&d, buf, bcap);
    while (w + k + 1 > cap) {
      cap *= 2;
      s = realloc(s, cap);
      REQUIRE(s);
    }
    memcpy(s + w, buf, k);
    w += k;
  }
  s[w] = 0;
  free(buf);
  *out_len = w;
  return s;
}

static ks_tokenizer *load_vocab(const char *path, ks_gguf **g_out) {
  ks_gguf *g = NULL;
  ks_status st = gguf_open(&g, path);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  if (st) return NULL;
  ks_tokenizer *t = NULL;
  st = tokenizer_from_gguf(&t, g);
  CHECK_MSG(st == KS_OK, "%s: %s", path, ks_last_error());
  if (g_out) *g_out = g;
  else gguf_close(g);
  return t;
}

/* GPT-2's byte -> character table, from its definition: the printable Latin-1 bytes stand for
 * themselves, the rest take U+0100 upwards in byte order. */
static void gpt2_alphabet(char enc[256][3], int enc_len[256]) {
  int keep[256] = {0};
  for (int b = '!'; b <= '~'; b++) keep[b] = 1;
  for (int b = 0xA1; b <= 0xAC; b++) keep[b] = 1;
  for (int b = 0xAE; b <= 0xFF; b++) keep[b] = 1;
  int next = 0x100;
  for (int b = 0; b < 256; b++) {
    int c = keep[b] ? b : next++;
    if (c < 0x80) {
      enc[b][0] = (char)c;
      enc_len[b] = 1;
    } else {
      enc[b][0] = (char)(0xC0 | c >> 6);
      enc[b][1] = (char)(0x80 | (c & 0x3F));
      enc_len[b] = 2;
    }
  }
}

/* ---------- the oracle: merges applied one at a time, written independently ---------- */

typedef struct {
  const char *s;
  size_t n;
  int v; /* token id or merge rank */
} entry;

static int entry_cmp(const void *a, const void *b) {
  const entry *x = a, *y = b;
  size_t m = x->n < y->n ? x->n : y->n;
  int c = memcmp(x->s, y->s, m);
  if (c) return c;
  if (x->n != y->n) return x->n < y->n ? -1 : 1;
  return x->v < y->v ? -1 : x->v > y->v; /* equal texts: lowest id/rank first */
}

static int entry_find(const entry *e, size_t n, const char *s, size_t len, int last) {
  entry key = {s, len, last ? 0x7fffffff : -1};
  size_t lo = 0, hi = n; /* first entry > key (last) or >= key (first) */
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = entry_cmp(&e[mid], &key);
    if (c < 0 || (last && c == 0)) lo = mid + 1;
    else hi = mid;
  }
  size_t at = last ? lo - 1 : lo;
  if (last && lo == 0) return -1;
  if (at >= n || e[at].n != len || memcmp(e[at].s, s, len) != 0) return -1;
  return e[at].v;
}

typedef struct {
  entry *pieces; /* sorted; a repeated piece resolves to its last id, as llama.cpp's map */
  size_t n_pieces;
  entry *merges; /* "left right" sorted; a repeated merge keeps its first rank */
  size_t n_merges;
  char enc[256][3];
  int enc_len[256];
  int whole_words; /* llama3's shortcut: a word that is a token is taken whole */
} oracle;

static void oracle_init(oracle *o, const ks_tokenizer *t, const ks_gguf *g, int whole_words) {
  int n = tokenizer_vocab_size(t);
  o->pieces = malloc((size_t)n * sizeof *o->pieces);
  REQUIRE(o->pieces);
  o->n_pieces = 0;
  for (int i = 0; i < n; i++) {
    size_t l;
    const char *p = gguf_arr_str(g, "tokenizer.ggml.tokens", (uint64_t)i, &l);
    REQUIRE(p);
    o->pieces[o->n_pieces++] = (entry){p, l, i};
  }
  qsort(o->pieces, o->n_pieces, sizeof *o->pieces, entry_cmp);
  gguf_vtype et;
  uint64_t nm = gguf_arr_len(g, "tokenizer.ggml.merges", &et);
  o->merges = malloc((nm ? nm : 1) * sizeof *o->merges);
  REQUIRE(o->merges);
  for (uint64_t i = 0; i < nm; i++) {
    size_t l;
    const char *p = gguf_arr_str(g, "tokenizer.ggml.merges", i, &l);
    o->merges[i] = (entry){p, l, (int)i};
  }
  o->n_merges = nm;
  qsort(o->merges, o->n_merges, sizeof *o->merges, entry_cmp);
  gpt2_alphabet(o->enc, o->enc_len);
  o->whole_words = whole_words;
}

static void oracle_free(oracle *o) {
  free(o->pieces);
  free(o->merges);
}

/* Appends the ids of one word (raw bytes) to out. */
static void oracle_word(const oracle *o, const char *w, size_t n, int *out, int *no) {
  char enc[1024];
  size_t st[512], ln[512], ns = 0, e = 0;
  REQUIRE(n < 256);
  for (size_t i = 0; i < n; i++) {
    unsigned char b = (unsigned char)w[i];
    memcpy(enc + e, o->enc[b], (size_t)o->enc_len[b]);
    st[ns] = e;
    ln[ns++] = (size_t)o->enc_len[b];
    e += (size_t)o->enc_len[b];
  }
  if (o->whole_words) {
    int id = entry_find(o->pieces, o->n_pieces, enc, e, 1);
    if (id >= 0) {
      out[(*no)++] = id;
      return;
    }
  }
  for (;;) {
    int best = 0x7fffffff;
    size_t at = 0;
    for (size_t i = 0; i + 1 < ns; i++) {
      char pair[1100];
      memcpy(pair, enc + st[i], ln[i]);
      pair[ln[i]] = ' ';
      memcpy(pair + ln[i] + 1, enc + st[i + 1], ln[i + 1]);
      int r = entry_find(o->merges, o->n_merges, pair, ln[i] + ln[i + 1] + 1, 0);
      if (r >= 0 && r < best) {
        best = r;
        at = i;
      }
    }
    if (best == 0x7fffffff) break;
    ln[at] += ln[at + 1];
    memmove(st + at + 1, st + at + 2, (ns - at - 2) * sizeof *st);
    memmove(ln + at + 1, ln + at + 2, (ns - at - 2) * sizeof *ln);
    ns--;
  }
  for (size_t i = 0; i < ns; i++) {
    int id = entry_find(o->pieces, o->n_pieces, enc + st[i], ln[i], 1);
    if (id >= 0) {
      out[(*no)++] = id;
      continue;
    }
    for (size_t k = 0; k < ln[i]; k++) {
      int bid = entry_find(o->pieces, o->n_pieces, enc + st[i] + k, 1, 1);
      if (bid >= 0) out[(*no)++] = bid;
    }
  }
}

/* Words come from the pre-tokenizer under test elsewhere (test_tokenizer_pretok). */
static int oracle_encode(const oracle *o, const ks_pretok *p, const char *text, int *out) {
  size_t len = strlen(text);
  static uint32_t cps[2048], offs[2048];
  static size_t words[2048];
  REQUIRE(len < 2048);
  size_t n = unicode_decode(text, len, cps, offs), nw = 0;
  REQUIRE(pretok_split(p, cps, n, words, &nw) == KS_OK);
  int no = 0;
  size_t ci = 0;
  for (size_t w = 0; w < nw; w++) {
    size_t b0 = offs[ci], b1 = offs[ci + words[w]];
    ci += words[w];
    oracle_word(o, text + b0, b1 - b0, out, &no);
  }
  return no;
}

static const char *const k_alphabet[] = {
    "Hello", " world", "the", " The", "ing", "'s", "'ll", "'T", " 123", "4567", "3", " ", " ",
    "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\xC3\xA9", "\xC3\xB1", "\xE6\x97\xA5\xE6\x9C\xAC",
    "\xF0\x9F\x98\x80", "\xF0\x9F\xA6\x99", "\xE2\x86\x92", "!!", "...", "-", "_", "$", "x",
    "Z", " a", "\xC3\xBC", "\xCE\xA9", "\xE2\x80\x8D", "\xEF\xB8\x8F", "<fim_prefix>",
    "<|endoftext|>", "def", " return", "(x)", "{", "}", "\xD0\xBF\xD1\x80\xD0\xB8",
};

static void check_oracle(const ks_tokenizer *t, const ks_gguf *g, const char *name, int rounds) {
  oracle o;
  oracle_init(&o, t, g, 0);
  ks_pretok *p = NULL;
  REQUIRE(pretok_create(&p, tokenizer_pre_name(t)) == KS_OK);
  static int ref[8192];
  char text[1024];
  int fails = 0;
  for (int r = 0; r < rounds; r++) {
    size_t w = 0;
    int parts = 1 + (int)(ks_randu() % 30);
    for (int k = 0; k < parts; k++) {
      const char *s = k_alphabet[ks_randu() % KS_ARRAY_LEN(k_alphabet)];
      memcpy(text + w, s, strlen(s));
      w += strlen(s);
    }
    text[w] = 0;
    int nref = oracle_encode(&o, p, text, ref);
    int *ids = NULL, n = 0;
    REQUIRE(tokenizer_encode(t, text, w, 0, &ids, &n) == KS_OK);
    int same = same_ids(ids, n, ref, nref);
    if (!same && fails++ < 5) {
      fprintf(stderr, "%s: mismatch with the merge oracle on \"%s\"\n", name, text);
      print_ids(stderr, "oracle", ref, nref);
      print_ids(stderr, "kvscope", ids, n);
    }
    CHECK(same);
    size_t dl;
    char *back = decode_all(t, ids, n, &dl);
    CHECK_MSG(dl == w && memcmp(back, text, w) == 0, "%s: \"%s\" decodes to \"%s\"", name, text,
              back);
    free(back);
    free(ids);
  }
  printf("%s: %d/%d random texts agree with the merge oracle\n", name, rounds - fails, rounds);
  pretok_destroy(p);
  oracle_free(&o);
}

/* ---------- llama.cpp's test vectors ---------- */

/* Runs every vector of one vocabulary through t; returns the number of mismatches. */
static int run_vectors(const ks_tokenizer *t, const char *name, int *n_cases_out) {
  char rel[256];
  snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.inp", name);
  char ipath[4096], opath[4096];
  snprintf(ipath, sizeof ipath, "%s", ks_shared_file(rel));
  snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf.out", name);
  snprintf(opath, sizeof opath, "%s", ks_shared_file(rel));
  size_t il, ol;
  char *inp = read_all(ipath, &il), *outp = read_all(opath, &ol);
  const char *sep = "\n__ggml_vocab_test__\n";
  size_t seplen = strlen(sep);
  char *ip = inp, *op = outp;
  int n_cases = 0, n_fail = 0;
  while (ip < inp + il && op < outp + ol) {
    char *end = strstr(ip, sep);
    if (!end) end = inp + il;
    size_t tl = (size_t)(end - ip);
    char *eol = strchr(op, '\n');
    REQUIRE(eol);
    *eol = 0;
    int want[1024], nw = 0;
    for (char *q = op; *q;) {
      char *qe;
      long v = strtol(q, &qe, 10);
      if (qe == q) break;
      REQUIRE(nw < 1024);
      want[nw++] = (int)v;
      q = qe;
    }
    int *ids = NULL, n = 0;
    ks_status st = tokenizer_encode(t, ip, tl, 0, &ids, &n);
    CHECK_MSG(st == KS_OK, "%s", ks_last_error());
    if (st != KS_OK || !same_ids(ids, n, want, nw)) {
      n_fail++;
      fprintf(stderr, "%s: vector %d mismatch: \"%.*s\"\n", name, n_cases, (int)tl, ip);
      print_ids(stderr, "want", want, nw);
      print_ids(stderr, "got ", ids, n);
    }
    /* Byte-level BPE loses nothing: the ids decode to the very bytes. */
    size_t dl;
    char *back = decode_all(t, ids, n, &dl);
    CHECK_MSG(dl == tl && memcmp(back, ip, tl) == 0, "%s: vector %d decodes to \"%s\"", name,
              n_cases, back);
    free(back);
    free(ids);
    n_cases++;
    ip = end + seplen;
    op = eol + 1;
  }
  printf("%s: %d/%d vectors match\n", name, n_cases - n_fail, n_cases);
  free(inp);
  free(outp);
  *n_cases_out = n_cases;
  return n_fail;
}

static void test_vocab(const char *name, const char *pre, int bos, int n_oracle) {
  char rel[256];
  snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
  ks_gguf *g = NULL;
  ks_tokenizer *t = load_vocab(ks_shared_file(rel), &g);
  if (!t) return;
  CHECK(strcmp(tokenizer_model_name(t), "gpt2") == 0);
  CHECK_MSG(strcmp(tokenizer_pre_name(t), pre) == 0, "%s: pre %s", name, tokenizer_pre_name(t));
  CHECK(tokenizer_add_bos(t) == 0 && tokenizer_add_eos(t) == 0); /* no add_bos_token key */
  CHECK(tokenizer_bos(t) == bos && tokenizer_eos(t) == bos);
  CHECK(tokenizer_is_eog(t, bos) && !tokenizer_is_eog(t, bos + 1));
  CHECK(tokenizer_n_merges(t) > 40000);
  int n_cases = 0;
  CHECK(run_vectors(t, name, &n_cases) == 0);
  CHECK(n_cases >= 40);
  check_oracle(t, g, name, n_oracle);

  /* add_special with add_bos_token false adds nothing. */
  int *ids = NULL, n = 0, *ids0 = NULL, n0 = 0;
  REQUIRE(tokenizer_encode(t, "Hello world", 11, 1, &ids, &n) == KS_OK);
  REQUIRE(tokenizer_encode(t, "Hello world", 11, 0, &ids0, &n0) == KS_OK);
  CHECK(same_ids(ids, n, ids0, n0) && n == 2);
  free(ids);
  free(ids0);
  tokenizer_destroy(t);
  gguf_close(g);
}

/* Special tokens of a real vocabulary: plain text unless asked. */
static void test_starcoder_specials(void) {
  ks_tokenizer *t = load_vocab(ks_shared_file("vocab/ggml-vocab-starcoder.gguf"), NULL);
  if (!t) return;
  const char *s = "<fim_prefix>def f():<fim_suffix>";
  int *ids = NULL, n = 0;
  REQUIRE(tokenizer_encode_ex(t, s, strlen(s), 0, &ids, &n) == KS_OK);
  CHECK(n > 6 && ids[0] != 1); /* spelt out */
  for (int i = 0; i < n; i++) CHECK(ids[i] != 1 && ids[i] != 3);
  free(ids);
  REQUIRE(tokenizer_encode_ex(t, s, strlen(s), KS_TOK_PARSE_SPECIAL, &ids, &n) == KS_OK);
  CHECK(n >= 3 && ids[0] == 1 && ids[n - 1] == 3);
  int *mid = NULL, nm = 0;
  REQUIRE(tokenizer_encode_ex(t, "def f():", 8, 0, &mid, &nm) == KS_OK);
  CHECK(n == nm + 2 && memcmp(ids + 1, mid, (size_t)nm * sizeof *mid) == 0);
  free(mid);
  /* Control tokens decode to nothing; llama-tokenize's printout shows their text. */
  size_t dl;
  char *back = decode_all(t, ids, n, &dl);
  CHECK_MSG(strcmp(back, "def f():") == 0, "decoded \"%s\"", back);
  free(back);
  char *mem = NULL;
  size_t memlen = 0;
  FILE *f = open_memstream(&mem, &memlen);
  REQUIRE(f);
  tokenizer_print_tokens(t, ids, 2, 0, f);
  fclose(f);
  size_t pl;
  const char *p2 = tokenizer_piece(t, ids[1], &pl); /* "def": plain ASCII, stored as is */
  char want[256];
  snprintf(want, sizeof want, "     1 -> '<fim_prefix>'\n%6d -> '%.*s'\n", ids[1], (int)pl, p2);
  CHECK_MSG(strcmp(mem, want) == 0, "printout:\n%s", mem);
  free(mem);
  free(ids);
  tokenizer_destroy(t);
}

/* Streaming decode of byte-level pieces: an emoji split over tokens appears once complete. */
static void test_stream(void) {
  ks_tokenizer *t = load_vocab(ks_shared_file("vocab/ggml-vocab-gpt-2.gguf"), NULL);
  if (!t) return;
  const char *s = "\xF0\x9F\xA6\x99"; /* 🦙: not one GPT-2 token */
  int *ids = NULL, n = 0;
  REQUIRE(tokenizer_encode(t, s, 4, 0, &ids, &n) == KS_OK);
  CHECK(n >= 2);
  char buf[256];
  ks_detok d;
  detok_init(&d);
  for (int i = 0; i < n; i++) {
    size_t k = tokenizer_decode(t, &d, ids[i], buf, sizeof buf);
    if (i + 1 < n) CHECK_MSG(k == 0, "token %d of %d emitted %zu bytes early", i, n, k);
    else CHECK(k == 4 && memcmp(buf, s, 4) == 0);
  }
  /* Cut short: the held-back bytes come out as one U+FFFD. */
  detok_init(&d);
  CHECK(tokenizer_decode(t, &d, ids[0], buf, sizeof buf) == 0);
  CHECK(detok_flush(&d, buf, sizeof buf) == 3 && strcmp(buf, "\xEF\xBF\xBD") == 0);
  free(ids);
  /* " Hello" is one token, stored as "\u0120Hello"; it prints and decodes as " Hello". */
  REQUIRE(tokenizer_encode(t, " Hello", 6, 0, &ids, &n) == KS_OK);
  REQUIRE(n == 1);
  size_t pl;
  const char *p = tokenizer_piece(t, ids[0], &pl);
  CHECK(pl == 7 && memcmp(p, "\xC4\xA0Hello", 7) == 0);
  detok_init(&d);
  CHECK(tokenizer_decode(t, &d, ids[0], buf, sizeof buf) == 6 && strcmp(buf, " Hello") == 0);
  char *mem = NULL;
  size_t memlen = 0;
  FILE *f = open_memstream(&mem, &memlen);
  REQUIRE(f);
  tokenizer_print_tokens(t, ids, n, 0, f);
  tokenizer_print_tokens(t, ids, n, 1, f);
  fclose(f);
  char want[128];
  snprintf(want, sizeof want, "%6d -> ' Hello'\n[%d]\n", ids[0], ids[0]);
  CHECK_MSG(strcmp(mem, want) == 0, "printout:\n%s", mem);
  free(mem);
  free(ids);
  tokenizer_destroy(t);
}

/* ---------- a hand-made vocabulary ---------- */

enum {
  ID_HE = 256, ID_LL, ID_HELL, ID_HELLO, ID_EOT, ID_USER, ID_USERX, ID_CTL, ID_WORLD,
  ID_IMEND, ID_SHELLO, N_HAND
};

typedef struct {
  const char *pre;    /* NULL: no tokenizer.ggml.pre key */
  int merges;         /* write tokenizer.ggml.merges */
  int add_bos, add_eos; /* -1: key absent */
  int bos_eos_ids;    /* write bos/eos ids (= ID_EOT) */
} hand_opts;

static void write_hand(const char *path, hand_opts o) {
  static char store[N_HAND][16];
  const char *toks[N_HAND];
  size_t lens[N_HAND];
  int32_t types[N_HAND];
  char enc[256][3];
  int enc_len[256];
  gpt2_alphabet(enc, enc_len);
  for (int b = 0; b < 256; b++) {
    memcpy(store[b], enc[b], (size_t)enc_len[b]);
    toks[b] = store[b];
    lens[b] = (size_t)enc_len[b];
    types[b] = 1;
  }
  const char *extra[] = {"he", "ll", "hell", "hello", "<|endoftext|>", "<user>", "<user>x",
                         "<ctl>", "world", "<|im_end|>", "\xC4\xA0hello"};
  const int32_t extra_type[] = {1, 1, 1, 1, 3, 4, 4, 3, 1, 4, 1};
  for (int i = 0; i < N_HAND - 256; i++) {
    toks[256 + i] = extra[i];
    lens[256 + i] = strlen(extra[i]);
    types[256 + i] = extra_type[i];
  }
  /* "x y" has no token: its symbol falls back to one byte piece each. */
  const char *merges[] = {"h e", "l l", "he ll", "hell o", "\xC4\xA0 hello", "x y"};
  size_t mlens[6];
  for (int i = 0; i < 6; i++) mlens[i] = strlen(merges[i]);
  ks_gguf_writer *w = gguf_writer_create();
  REQUIRE(w);
  gguf_writer_set_str(w, "general.architecture", "llama");
  gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
  if (o.pre) gguf_writer_set_str(w, "tokenizer.ggml.pre", o.pre);
  gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, lens, N_HAND);
  gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, N_HAND);
  if (o.merges) gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, mlens, 6);
  if (o.bos_eos_ids) {
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", ID_EOT);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", ID_EOT);
  }
  if (o.add_bos >= 0) gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", o.add_bos);
  if (o.add_eos >= 0) gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", o.add_eos);
  ks_status st = gguf_writer_write(w, path);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  gguf_writer_destroy(w);
}

static ks_status load_hand(const char *path, ks_tokenizer **t) {
  ks_gguf *g = NULL;
  ks_status st = gguf_open(&g, path);
  if (st) return st;
  st = tokenizer_from_gguf(t, g);
  gguf_close(g);
  return st;
}

static void expect_ids(const ks_tokenizer *t, const char *text, unsigned flags, const int *want,
                       int nw) {
  int *ids = NULL, n = 0;
  ks_status st = tokenizer_encode_ex(t, text, strlen(text), flags, &ids, &n);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  int ok = st == KS_OK && same_ids(ids, n, want, nw);
  CHECK_MSG(ok, "\"%s\" (flags %u) gave other ids", text, flags);
  if (!ok) {
    print_ids(stderr, "want", want, nw);
    print_ids(stderr, "got ", ids, n);
  }
  free(ids);
}

static void test_handmade(const char *dir) {
  char path[4200];
  snprintf(path, sizeof path, "%s/hand.gguf", dir);
  ks_tokenizer *t = NULL;

  write_hand(path, (hand_opts){"gpt-2", 1, -1, -1, 1});
  REQUIRE(load_hand(path, &t) == KS_OK);
  CHECK(tokenizer_add_bos(t) == 0 && tokenizer_unk(t) == -1);
  {
    const int a[] = {ID_HELLO};
    expect_ids(t, "hello", 0, a, 1);
    /* Ġ h e l l o: (h,e) rank 0 first, then ll, hell, hello, and Ġ+hello last. */
    const int b[] = {ID_SHELLO};
    expect_ids(t, " hello", 0, b, 1);
    const int c[] = {ID_HELL, 'x'};
    expect_ids(t, "hellx", 0, c, 2);
    /* "x y" merges into a symbol that is no token: its bytes, one piece each. */
    const int d[] = {'x', 'y'};
    expect_ids(t, "xy", 0, d, 2);
    /* User-defined tokens are cut out of plain text, the longest first. */
    const int e[] = {ID_USERX, ID_USER, ID_HELLO};
    expect_ids(t, "<user>x<user>hello", 0, e, 3);
    /* Control tokens stay text unless asked ('<' '>' and "ctl" as bytes: no merges apply). */
    const int f[] = {'a', '<', 'c', 't', 'l', '>', 'b'};
    expect_ids(t, "a<ctl>b", 0, f, 7);
    const int f2[] = {'a', ID_CTL, 'b'};
    expect_ids(t, "a<ctl>b", KS_TOK_PARSE_SPECIAL, f2, 3);
    /* <|im_end|> is stored as user-defined but llama.cpp forces it to control. */
    int *ids = NULL, n = 0;
    REQUIRE(tokenizer_encode_ex(t, "<|im_end|>", 10, 0, &ids, &n) == KS_OK);
    CHECK(n > 1);
    for (int i = 0; i < n; i++) CHECK(ids[i] != ID_IMEND);
    free(ids);
    const int g[] = {ID_IMEND};
    expect_ids(t, "<|im_end|>", KS_TOK_PARSE_SPECIAL, g, 1);
    CHECK(tokenizer_is_eog(t, ID_IMEND) && tokenizer_is_eog(t, ID_EOT));
    CHECK(!tokenizer_is_eog(t, ID_USER) && !tokenizer_is_eog(t, ID_HELLO));
    /* No whole-word shortcut for gpt-2: "world" has a token but no merges reach it. */
    const int h[] = {'w', 'o', 'r', 'l', 'd'};
    expect_ids(t, "world", 0, h, 5);
    /* Decoding: control gives nothing, user-defined its text, pieces their bytes. */
    const int seq[] = {ID_EOT, ID_USER, ID_SHELLO, 0xC3, 0xA9};
    size_t dl;
    char *back = decode_all(t, seq, 5, &dl);
    CHECK_MSG(strcmp(back, "<user> hello\xC3\xA9") == 0, "decoded \"%s\"", back);
    free(back);
  }
  tokenizer_destroy(t);

  /* add_bos / add_eos from the keys. */
  write_hand(path, (hand_opts){"gpt-2", 1, 1, 1, 1});
  REQUIRE(load_hand(path, &t) == KS_OK);
  CHECK(tokenizer_add_bos(t) == 1 && tokenizer_add_eos(t) == 1);
  {
    const int a[] = {ID_EOT, ID_HELLO, ID_EOT};
    expect_ids(t, "hello", KS_TOK_ADD_SPECIAL, a, 3);
    const int b[] = {ID_HELLO};
    expect_ids(t, "hello", 0, b, 1);
    const int c[] = {ID_EOT, ID_EOT};
    expect_ids(t, "", KS_TOK_ADD_SPECIAL, c, 2);
  }
  tokenizer_destroy(t);

  /* llama3 (llama-bpe): BOS by default, and a word that is a token is taken whole. */
  write_hand(path, (hand_opts){"llama-bpe", 1, -1, -1, 1});
  REQUIRE(load_hand(path, &t) == KS_OK);
  CHECK(tokenizer_add_bos(t) == 1 && strcmp(tokenizer_pre_name(t), "llama3") == 0);
  {
    const int a[] = {ID_EOT, ID_WORLD};
    expect_ids(t, "world", KS_TOK_ADD_SPECIAL, a, 2);
  }
  tokenizer_destroy(t);
  /* dbrx: the same pattern without the shortcut. */
  write_hand(path, (hand_opts){"dbrx", 1, -1, -1, 1});
  REQUIRE(load_hand(path, &t) == KS_OK);
  {
    const int a[] = {'w', 'o', 'r', 'l', 'd'};
    expect_ids(t, "world", KS_TOK_ADD_SPECIAL, a, 5);
  }
  tokenizer_destroy(t);

  /* No pre key: llama.cpp's "default" rules; no bos/eos keys: id 11 for both. */
  write_hand(path, (hand_opts){NULL, 1, -1, -1, 0});
  REQUIRE(load_hand(path, &t) == KS_OK);
  CHECK(strcmp(tokenizer_pre_name(t), "default") == 0);
  CHECK(tokenizer_bos(t) == 11 && tokenizer_eos(t) == 11 && tokenizer_add_bos(t) == 0);
  tokenizer_destroy(t);

  /* Errors name what is wrong. */
  write_hand(path, (hand_opts){"no-such-pre", 1, -1, -1, 1});
  CHECK(load_hand(path, &t) == KS_ERR_UNSUPPORTED && t == NULL);
  CHECK_MSG(strstr(ks_last_error(), "no-such-pre") != NULL, "%s", ks_last_error());
  write_hand(path, (hand_opts){"gpt-2", 0, -1, -1, 1});
  CHECK(load_hand(path, &t) == KS_ERR_FORMAT && t == NULL);
  CHECK_MSG(strstr(ks_last_error(), "merges") != NULL, "%s", ks_last_error());
  write_hand(path, (hand_opts){"chatglm-bpe", 1, 1, -1, 0}); /* add_bos but no BOS at all */
  CHECK(load_hand(path, &t) == KS_ERR_FORMAT && t == NULL);
  CHECK_MSG(strstr(ks_last_error(), "add_bos_token") != NULL, "%s", ks_last_error());
}

int main(void) {
  ks_test_seed();
  const char *dir = ks_test_tmpdir("test_tokenizer_bpe");
  char d[4096];
  snprintf(d, sizeof d, "%s", dir);
  test_handmade(d);
  test_vocab("gpt-2", "gpt-2", 50256, 300);
  test_vocab("starcoder", "starcoder", 0, 300);
  test_starcoder_specials();
  test_stream();
  return ks_test_done("test_tokenizer_bpe");
}
