/* test_tokenizer.c — the SentencePiece BPE tokenizer: llama2.c golden ids and a slow, plainly
 * written merge-rule oracle on random text (tok512.bin, tokenizer.bin), llama.cpp's llama-spm
 * test vectors through GGUF metadata, invalid UTF-8, streaming decode of split characters,
 * truncated and hostile tokenizer files, llama-tokenize output format. Byte-level BPE:
 * test_tokenizer_bpe.c and test_tokenizer_pretok.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "testutil.h"
#include "tokenizer.h"

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

static void write_file(const char *path, const void *d, size_t n) {
  FILE *f = fopen(path, "wb");
  REQUIRE(f);
  REQUIRE(fwrite(d, 1, n, f) == n);
  fclose(f);
}

/* Decodes ids (streaming, one at a time) into a malloc'd string. */
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
    CHECK(strlen(buf) == k);
    if (w + k + 1 > cap) {
      while (w + k + 1 > cap) cap *= 2;
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

static void print_ids(FILE *f, const char *label, const int *ids, int n) {
  fprintf(f, "    %s:", label);
  for (int i = 0; i < n; i++) fprintf(f, " %d", ids[i]);
  fputc('\n', f);
}

/* ---------- oracle: the merge rule stated plainly, written independently of tokenizer.c ----------
 * Start from one symbol per UTF-8 character (bytes when the character has no piece), a dummy
 * " " first; then, while some adjacent pair concatenates to a piece, merge the pair with the
 * highest score (the leftmost among equals). Quadratic and slow on purpose: no queue, no hash. */

typedef struct {
  const ks_tokenizer *t;
  int n;
} oracle;

static void oracle_init(oracle *o, const ks_tokenizer *t) {
  o->t = t;
  o->n = tokenizer_vocab_size(t);
}

/* Linear search for a piece equal to the len bytes at s. */
static int oracle_lookup_n(const oracle *o, const char *s, size_t len) {
  for (int id = 0; id < o->n; id++) {
    size_t pl;
    const char *p = tokenizer_piece(o->t, id, &pl);
    if (pl == len && memcmp(p, s, len) == 0) return id;
  }
  return -1;
}

static int utf8_len(unsigned char c) {
  return c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
}

static int oracle_encode(const oracle *o, const char *text, int bos, int *tokens) {
  int n = 0;
  if (bos) tokens[n++] = 1;
  size_t len = strlen(text);
  if (len) tokens[n++] = oracle_lookup_n(o, " ", 1);
  for (size_t i = 0; i < len;) {
    size_t cl = (size_t)utf8_len((unsigned char)text[i]);
    if (i + cl > len) cl = len - i;
    int id = oracle_lookup_n(o, text + i, cl);
    if (id >= 0) tokens[n++] = id;
    else
      for (size_t k = 0; k < cl; k++) tokens[n++] = (unsigned char)text[i + k] + 3;
    i += cl;
  }
  char pair[256];
  for (;;) {
    int at = -1, merged = -1;
    float top = -1e10f;
    for (int i = 0; i + 1 < n; i++) {
      size_t la, lb;
      const char *a = tokenizer_piece(o->t, tokens[i], &la);
      const char *b = tokenizer_piece(o->t, tokens[i + 1], &lb);
      if (la + lb > sizeof pair) continue;
      memcpy(pair, a, la);
      memcpy(pair + la, b, lb);
      int id = oracle_lookup_n(o, pair, la + lb);
      if (id >= 0 && tokenizer_score(o->t, id) > top) {
        top = tokenizer_score(o->t, id);
        at = i;
        merged = id;
      }
    }
    if (at < 0) break;
    tokens[at] = merged;
    memmove(tokens + at + 1, tokens + at + 2, sizeof(int) * (size_t)(n - at - 2));
    n--;
  }
  return n;
}

static const char *const k_alphabet[] = {
    "a", "b", "e", "t", "h", "o", "n", " ", " ", " ", "  ", "\n", "\t", ".", ",", "!", "'",
    "Once", " upon", " time", "the", "é", "ñ", "ß", "日本", "語", "😀", "🦙", "€", "∑", "ä",
    "0", "1", "9", "<0x41>", "<s>", "\xE2\x96\x81", "ü", "Ω", "—", "!!!", "3333", "====",
    "...", "aaaa", "    ",
};

static char *random_text(int parts) {
  char *s = malloc((size_t)parts * 8 + 1);
  REQUIRE(s);
  size_t w = 0;
  for (int i = 0; i < parts; i++) {
    const char *p = k_alphabet[ks_randu() % KS_ARRAY_LEN(k_alphabet)];
    memcpy(s + w, p, strlen(p));
    w += strlen(p);
  }
  s[w] = 0;
  return s;
}

static void check_against_oracle(const ks_tokenizer *t, const char *name, int rounds, int max_parts) {
  oracle o;
  oracle_init(&o, t);
  int *ref = malloc(4096 * sizeof *ref);
  REQUIRE(ref);
  int fails = 0;
  for (int r = 0; r < rounds; r++) {
    char *text = random_text(1 + (int)(ks_randu() % (unsigned)max_parts));
    int bos = r & 1;
    int nref = oracle_encode(&o, text, bos, ref);
    int *ids = NULL, n = 0;
    ks_status st = tokenizer_encode(t, text, strlen(text), bos, &ids, &n);
    CHECK(st == KS_OK);
    int same = st == KS_OK && n == nref && memcmp(ids, ref, (size_t)n * sizeof *ids) == 0;
    if (!same && fails++ < 5) {
      fprintf(stderr, "%s: mismatch with llama2.c encode() on \"%s\" (bos %d)\n", name, text, bos);
      print_ids(stderr, "llama2.c", ref, nref);
      print_ids(stderr, "kvscope ", ids, n);
    }
    CHECK(same);
    /* Round trip: with BOS the dummy-prefix space is stripped again on decode. */
    if (bos && st == KS_OK) {
      size_t dl;
      char *back = decode_all(t, ids, n, &dl);
      CHECK_MSG(dl == strlen(text) && memcmp(back, text, dl) == 0, "%s round trip: \"%s\" -> \"%s\"",
                name, text, back);
      free(back);
    }
    free(ids);
    free(text);
  }
  free(ref);

}

/* ---------- llama2.c tokenizer.bin ---------- */

static void test_tok512(void) {
  const char *path = ks_shared_file("models/tok512.bin");
  ks_tokenizer *t = NULL;
  REQUIRE(tokenizer_load_llama2c(&t, path, 512) == KS_OK);
  CHECK(tokenizer_vocab_size(t) == 512);
  CHECK(tokenizer_bos(t) == 1 && tokenizer_eos(t) == 2 && tokenizer_add_bos(t) == 1);
  CHECK(tokenizer_type(t, 3) == 6 && tokenizer_type(t, 258) == 6 && tokenizer_type(t, 1) == 3);
  CHECK(tokenizer_max_piece_len(t) == 7);

  const char *once = "Once upon a time";
  int *ids = NULL, n = 0;
  REQUIRE(tokenizer_encode(t, once, strlen(once), 1, &ids, &n) == KS_OK);
  const int want[] = {1, 403, 407, 261, 378};
  CHECK(n == 5 && memcmp(ids, want, sizeof want) == 0);
  if (n != 5) print_ids(stderr, "got", ids, n);

  /* llama-tokenize formats. */
  char *mem = NULL;
  size_t memlen = 0;
  FILE *f = open_memstream(&mem, &memlen);
  REQUIRE(f);
  tokenizer_print_tokens(t, ids, n, 1, f);
  tokenizer_print_tokens(t, ids, 2, 0, f);
  fclose(f);
  size_t p1l;
  const char *p1 = tokenizer_piece(t, 403, &p1l);
  char want_txt[256];
  snprintf(want_txt, sizeof want_txt, "[1, 403, 407, 261, 378]\n     1 -> '\n<s>\n'\n   403 -> '%s'\n",
           p1);
  CHECK_MSG(strcmp(mem, want_txt) == 0, "print_tokens gave:\n%s", mem);
  free(mem);

  size_t dl;
  char *back = decode_all(t, ids, n, &dl);
  CHECK_MSG(strcmp(back, once) == 0, "decode gave \"%s\"", back);
  free(back);
  free(ids);

  /* Empty text: BOS alone, no dummy prefix. */
  REQUIRE(tokenizer_encode(t, "", 0, 1, &ids, &n) == KS_OK);
  CHECK(n == 1 && ids[0] == 1);
  free(ids);
  REQUIRE(tokenizer_encode(t, "", 0, 0, &ids, &n) == KS_OK);
  CHECK(n == 0);
  free(ids);

  /* Byte fallback: ö (C3 B6) and 😀 (F0 9F 98 80) have no piece in the 512-token vocab. */
  const char *e = "ö😀";
  REQUIRE(tokenizer_encode(t, e, strlen(e), 0, &ids, &n) == KS_OK);
  const int want_e[] = {0xC3 + 3, 0xB6 + 3, 0xF0 + 3, 0x9F + 3, 0x98 + 3, 0x80 + 3};
  size_t spl;
  CHECK(strcmp(tokenizer_piece(t, ids[0], &spl), " ") == 0 && spl == 1);
  CHECK(n == 7 && memcmp(ids + 1, want_e, sizeof want_e) == 0);
  free(ids);

  /* Round trips against the run.c oracle on random text with multi-byte characters and emoji. */
  check_against_oracle(t, "tok512", 400, 24);
  tokenizer_destroy(t);
}

static void test_tokenizer_bin(void) {
  const char *path = ks_shared_file("models/tokenizer.bin");
  ks_tokenizer *t = NULL;
  REQUIRE(tokenizer_load_llama2c(&t, path, 32000) == KS_OK);
  CHECK(tokenizer_max_piece_len(t) == 27);
  check_against_oracle(t, "tokenizer.bin", 16, 12);

  /* Same vocabulary as llama.cpp's llama-spm: with plain text both algorithms agree. */
  const char *s = "Hello world";
  int *ids = NULL, n = 0;
  REQUIRE(tokenizer_encode(t, s, strlen(s), 0, &ids, &n) == KS_OK);
  const int want[] = {15043, 3186};
  CHECK(n == 2 && memcmp(ids, want, sizeof want) == 0);
  free(ids);
  tokenizer_destroy(t);
}

/* ---------- llama.cpp's SPM test vectors through GGUF metadata ---------- */

/* Runs every llama-spm vector through t; returns the number of mismatches (each printed). */
static int run_spm_vectors(const ks_tokenizer *t, const char *label, const char *ipath,
                           const char *opath) {
  size_t il, ol;
  char *inp = read_all(ipath, &il);
  char *outp = read_all(opath, &ol);
  const char *sep = "\n__ggml_vocab_test__\n";
  size_t seplen = strlen(sep);
  char *ip = inp, *op = outp;
  int n_cases = 0, n_fail = 0;
  while (ip < inp + il) {
    char *end = strstr(ip, sep);
    if (!end) break;
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
    int ok = st == KS_OK && n == nw && memcmp(ids, want, (size_t)n * sizeof *ids) == 0;
    if (!ok) {
      n_fail++;
      fprintf(stderr, "%s: llama-spm vector %d mismatch: \"%.*s\"\n", label, n_cases, (int)tl, ip);
      print_ids(stderr, "want", want, nw);
      print_ids(stderr, "got ", ids, n);
      int k = 0;
      while (k < n && k < nw && ids[k] == want[k]) k++;
      fprintf(stderr, "    first difference at index %d\n", k);
    }
    /* Decoding without BOS gives back the text behind the added space prefix. */
    if (st == KS_OK && tl > 0) {
      size_t dl;
      char *back = decode_all(t, ids, n, &dl);
      CHECK_MSG(dl == tl + 1 && back[0] == ' ' && memcmp(back + 1, ip, tl) == 0,
                "%s: llama-spm vector %d decodes to \"%s\"", label, n_cases, back);
      free(back);
    }
    free(ids);
    n_cases++;
    ip = end + seplen;
    op = eol + 1;
  }
  printf("%s: %d/%d llama-spm vectors match\n", label, n_cases - n_fail, n_cases);
  CHECK(n_cases >= 30);
  free(inp);
  free(outp);
  return n_fail;
}

static void test_llama_spm_vectors(void) {
  const char *gpath = ks_shared_file("vocab/ggml-vocab-llama-spm.gguf");
  char gp[4096];
  snprintf(gp, sizeof gp, "%s", gpath);
  char ipath[4096], opath[4096];
  snprintf(ipath, sizeof ipath, "%s", ks_shared_file("vocab/ggml-vocab-llama-spm.gguf.inp"));
  snprintf(opath, sizeof opath, "%s", ks_shared_file("vocab/ggml-vocab-llama-spm.gguf.out"));
  ks_gguf *g = NULL;
  ks_status st = gguf_open(&g, gp);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  if (st != KS_OK) return;
  ks_tokenizer *t = NULL;
  st = tokenizer_from_gguf(&t, g);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  gguf_close(g);
  if (st != KS_OK) return;
  CHECK(tokenizer_vocab_size(t) == 32000);
  CHECK(tokenizer_bos(t) == 1 && tokenizer_eos(t) == 2 && tokenizer_add_bos(t) == 1);
  size_t pl;
  CHECK(strcmp(tokenizer_piece(t, 29871, &pl), " ") == 0 && pl == 1); /* "▁" stored as ' ' */

  CHECK(run_spm_vectors(t, "GGUF llama-spm", ipath, opath) == 0);

  /* With BOS (llama.cpp's add_special): BOS, then the same ids. */
  int *ids = NULL, n = 0;
  REQUIRE(tokenizer_encode(t, "Hello world", 11, 1, &ids, &n) == KS_OK);
  CHECK(n == 3 && ids[0] == 1 && ids[1] == 15043 && ids[2] == 3186);
  size_t dl;
  char *back = decode_all(t, ids, n, &dl);
  CHECK_MSG(strcmp(back, "Hello world") == 0, "decode after BOS gave \"%s\"", back);
  free(back);
  free(ids);

  /* A literal U+2581 is a space to llama.cpp (it escapes ' ' to U+2581 before matching). */
  int *a = NULL, *b = NULL, na = 0, nb = 0;
  REQUIRE(tokenizer_encode(t, "a b", 3, 0, &a, &na) == KS_OK);
  REQUIRE(tokenizer_encode(t, "a\xE2\x96\x81" "b", 5, 0, &b, &nb) == KS_OK);
  CHECK(na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0);
  free(a);
  free(b);
  tokenizer_destroy(t);

  /* tokenizer.bin holds the same Llama 2 vocabulary: the llama2.c path agrees on every vector. */
  const char *bin = ks_shared_file("models/tokenizer.bin");
  REQUIRE(tokenizer_load_llama2c(&t, bin, 32000) == KS_OK);
  CHECK(run_spm_vectors(t, "tokenizer.bin (llama2.c rules)", ipath, opath) == 0);
  tokenizer_destroy(t);
}

/* The byte-level BPE vocabularies load through the same entry point (their own tests are in
 * test_tokenizer_bpe.c); a model family that is neither is refused by name (test_gguf_hostile). */
static void test_gguf_gpt2_loads(void) {
  const char *gpath = ks_shared_file("vocab/ggml-vocab-gpt-2.gguf");
  ks_gguf *g = NULL;
  ks_status st = gguf_open(&g, gpath);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  if (st != KS_OK) return;
  ks_tokenizer *t = NULL;
  st = tokenizer_from_gguf(&t, g);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  if (st == KS_OK) {
    CHECK(strcmp(tokenizer_model_name(t), "gpt2") == 0);
    CHECK(tokenizer_vocab_size(t) == 50257);
  }
  tokenizer_destroy(t);
  gguf_close(g);
}

/* A hand-made GGUF vocabulary through the writer: metadata validation. */
static void write_vocab_gguf(const char *path, const char *model, int n_tok, int n_scores,
                             int bad_byte_piece, int bos) {
  const char *toks[] = {"<unk>", "<s>", "</s>", "<0x41>", "\xE2\x96\x81", "a", "\xE2\x96\x81" "a",
                        "\xE2\x96\x81" "aA"};
  size_t lens[8];
  for (int i = 0; i < 8; i++) lens[i] = strlen(toks[i]);
  if (bad_byte_piece) toks[3] = "<0xZZ>";
  float scores[8] = {0, 0, 0, 0, -1, -2, -3, -4};
  int32_t types[8] = {2, 3, 3, 6, 1, 1, 1, 1};
  ks_gguf_writer *w = gguf_writer_create();
  REQUIRE(w);
  gguf_writer_set_str(w, "general.architecture", "llama");
  if (model) gguf_writer_set_str(w, "tokenizer.ggml.model", model);
  gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, lens, (uint64_t)n_tok);
  gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, (uint64_t)n_scores);
  gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, (uint64_t)n_tok);
  gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
  gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
  gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", 0);
  ks_status st = gguf_writer_write(w, path);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  gguf_writer_destroy(w);
}

static ks_status load_gguf_vocab(const char *path, ks_tokenizer **t) {
  ks_gguf *g = NULL;
  ks_status st = gguf_open(&g, path);
  if (st != KS_OK) return st;
  st = tokenizer_from_gguf(t, g);
  gguf_close(g);
  return st;
}

static void test_gguf_hostile(const char *dir) {
  char path[4200];
  snprintf(path, sizeof path, "%s/vocab.gguf", dir);
  ks_tokenizer *t = NULL;

  write_vocab_gguf(path, "llama", 8, 8, 0, 1);
  ks_status st = load_gguf_vocab(path, &t);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  if (st == KS_OK) {
    CHECK(tokenizer_add_bos(t) == 0);
    int *ids = NULL, n = 0;
    /* llama.cpp keeps 'A' (no piece of its own) as text, so "▁a" + "A" still merges into
     * "▁aA" (llama2.c would already have turned 'A' into <0x41>); 'b' has neither a piece nor a
     * <0x62> token: unknown id 0. */
    REQUIRE(tokenizer_encode(t, "aAb", 3, 0, &ids, &n) == KS_OK);
    const int want[] = {7, 0};
    CHECK(n == 2 && memcmp(ids, want, sizeof want) == 0);
    if (n != 2) print_ids(stderr, "got", ids, n);
    free(ids);
    /* An 'A' that merges with nothing falls back to its byte token. */
    REQUIRE(tokenizer_encode(t, "Ab", 2, 0, &ids, &n) == KS_OK);
    const int want2[] = {4, 3, 0};
    CHECK(n == 3 && memcmp(ids, want2, sizeof want2) == 0);
    if (n != 3) print_ids(stderr, "got", ids, n);
    free(ids);
    tokenizer_destroy(t);
    t = NULL;
  }

  write_vocab_gguf(path, "bert", 8, 8, 0, 1);
  CHECK(load_gguf_vocab(path, &t) == KS_ERR_UNSUPPORTED && t == NULL);
  CHECK(strstr(ks_last_error(), "bert") != NULL);
  write_vocab_gguf(path, NULL, 8, 8, 0, 1);
  CHECK(load_gguf_vocab(path, &t) == KS_ERR_FORMAT && t == NULL);
  write_vocab_gguf(path, "llama", 8, 5, 0, 1); /* scores shorter than tokens */
  CHECK(load_gguf_vocab(path, &t) == KS_ERR_FORMAT && t == NULL);
  write_vocab_gguf(path, "llama", 8, 8, 1, 1); /* byte token whose piece is not <0xXX> */
  CHECK(load_gguf_vocab(path, &t) == KS_ERR_FORMAT && t == NULL);
  write_vocab_gguf(path, "llama", 8, 8, 0, 99); /* BOS outside the vocabulary */
  CHECK(load_gguf_vocab(path, &t) == KS_ERR_FORMAT && t == NULL);
  CHECK(strstr(ks_last_error(), "bos") != NULL);
}

/* ---------- invalid UTF-8 ---------- */

static void test_utf8(const ks_tokenizer *t) {
  static const struct {
    const char *s;
    size_t len, bad;
    int valid;
  } cases[] = {
      {"plain ascii", 11, 0, 1},
      {"\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 9, 0, 1},
      {"\xED\x9F\xBF", 3, 0, 1},          /* U+D7FF, just below the surrogates */
      {"\xEE\x80\x80", 3, 0, 1},          /* U+E000, just above */
      {"\xF4\x8F\xBF\xBF", 4, 0, 1},      /* U+10FFFF */
      {"\x00", 1, 0, 1},                  /* U+0000 is valid UTF-8 */
      {"ab\x80", 3, 2, 0},                /* stray continuation byte */
      {"\xC0\xAF", 2, 0, 0},              /* overlong '/' */
      {"x\xC1\xBF", 3, 1, 0},             /* overlong */
      {"\xE0\x80\xAF", 3, 0, 0},          /* overlong 3-byte */
      {"\xF0\x80\x80\xAF", 4, 0, 0},      /* overlong 4-byte */
      {"ok\xED\xA0\x80", 5, 2, 0},        /* surrogate U+D800 */
      {"\xED\xBF\xBF", 3, 0, 0},          /* surrogate U+DFFF */
      {"\xF4\x90\x80\x80", 4, 0, 0},      /* U+110000 */
      {"\xF5\x80\x80\x80", 4, 0, 0},      /* lead byte past U+10FFFF */
      {"\xFF", 1, 0, 0},
      {"abc\xE2\x82", 5, 3, 0},           /* truncated at the end */
      {"\xE2\x28\xA1", 3, 0, 0},          /* bad continuation */
      {"\xC3\xA9\xC3", 3, 2, 0},
  };
  for (size_t i = 0; i < KS_ARRAY_LEN(cases); i++) {
    size_t bad = 12345;
    int v = ks_utf8_valid(cases[i].s, cases[i].len, &bad);
    CHECK_MSG(v == cases[i].valid, "case %zu", i);
    if (!cases[i].valid) CHECK_MSG(bad == cases[i].bad, "case %zu: bad offset %zu", i, bad);
    int *ids = (int *)1, n = -1;
    ks_status st = tokenizer_encode(t, cases[i].s, cases[i].len, 1, &ids, &n);
    if (cases[i].valid) {
      CHECK_MSG(st == KS_OK, "case %zu: %s", i, ks_last_error());
      free(ids);
    } else {
      CHECK_MSG(st == KS_ERR_ARG && ids == NULL && n == 0, "case %zu", i);
      char want[128];
      snprintf(want, sizeof want, "prompt is not valid UTF-8: bad byte 0x%02X at offset %zu",
               (unsigned char)cases[i].s[cases[i].bad], cases[i].bad);
      CHECK_MSG(strstr(ks_last_error(), want) != NULL, "case %zu: message \"%s\"", i,
                ks_last_error());
    }
  }
}

/* ---------- streaming decode ---------- */

static void test_stream(const ks_tokenizer *t) {
  char buf[64];
  ks_detok d;
  detok_init(&d);
  const unsigned char emoji[4] = {0xF0, 0x9F, 0x98, 0x80}; /* U+1F600 */
  for (int i = 0; i < 4; i++) {
    size_t n = tokenizer_decode(t, &d, emoji[i] + 3, buf, sizeof buf);
    if (i < 3) CHECK_MSG(n == 0 && buf[0] == 0, "byte %d emitted %zu bytes early", i, n);
    else CHECK(n == 4 && memcmp(buf, emoji, 4) == 0);
  }
  CHECK(detok_flush(&d, buf, sizeof buf) == 0);

  /* A control token in the middle of a character neither emits nor breaks it. */
  detok_init(&d);
  CHECK(tokenizer_decode(t, &d, 0xC3 + 3, buf, sizeof buf) == 0);
  CHECK(tokenizer_decode(t, &d, 2, buf, sizeof buf) == 0); /* EOS */
  CHECK(tokenizer_decode(t, &d, 0xA9 + 3, buf, sizeof buf) == 2 && strcmp(buf, "é") == 0);

  /* Broken sequences become U+FFFD; the byte that broke one starts afresh. */
  detok_init(&d);
  CHECK(tokenizer_decode(t, &d, 0xF0 + 3, buf, sizeof buf) == 0);
  CHECK(tokenizer_decode(t, &d, 0x9F + 3, buf, sizeof buf) == 0);
  CHECK(tokenizer_decode(t, &d, 'A' + 3, buf, sizeof buf) == 4 && strcmp(buf, "\xEF\xBF\xBD" "A") == 0);
  CHECK(tokenizer_decode(t, &d, 0x80 + 3, buf, sizeof buf) == 3 && strcmp(buf, "\xEF\xBF\xBD") == 0);
  CHECK(tokenizer_decode(t, &d, 0xE2 + 3, buf, sizeof buf) == 0);
  CHECK(detok_flush(&d, buf, sizeof buf) == 3 && strcmp(buf, "\xEF\xBF\xBD") == 0);
  CHECK(detok_flush(&d, buf, sizeof buf) == 0);
  /* A held-back lead byte followed by a normal piece: U+FFFD, then the piece. */
  CHECK(tokenizer_decode(t, &d, 0xE2 + 3, buf, sizeof buf) == 0);
  size_t pl;
  const char *p = tokenizer_piece(t, 403, &pl);
  CHECK(tokenizer_decode(t, &d, 403, buf, sizeof buf) == 3 + pl);
  CHECK(memcmp(buf, "\xEF\xBF\xBD", 3) == 0 && memcmp(buf + 3, p, pl) == 0);

  /* BOS and EOS produce no text; the piece right after BOS loses its leading space only. */
  detok_init(&d);
  CHECK(tokenizer_decode(t, &d, 1, buf, sizeof buf) == 0);
  CHECK(tokenizer_decode(t, &d, 403, buf, sizeof buf) == pl - 1 && strcmp(buf, p + 1) == 0);
  CHECK(tokenizer_decode(t, &d, 403, buf, sizeof buf) == pl && strcmp(buf, p) == 0);
  CHECK(tokenizer_decode(t, &d, 2, buf, sizeof buf) == 0);
  /* Out-of-range ids give nothing rather than reading outside the vocabulary. */
  CHECK(tokenizer_decode(t, &d, 99999, buf, sizeof buf) == 0);
  CHECK(tokenizer_decode(t, &d, -5, buf, sizeof buf) == 0);
}

/* ---------- truncated and hostile tokenizer.bin ---------- */

static size_t put_entry(unsigned char *b, size_t o, float score, int32_t len, const char *s) {
  memcpy(b + o, &score, 4);
  memcpy(b + o + 4, &len, 4);
  if (len > 0 && s) memcpy(b + o + 8, s, (size_t)len);
  return o + 8 + (len > 0 && s ? (size_t)len : 0);
}

static size_t make_small(unsigned char *b) {
  int32_t mx = 6;
  memcpy(b, &mx, 4);
  size_t o = 4;
  const char *p[] = {"<unk>", "<s>", "</s>", " ", "a", "b", " a", "ab", " ab"};
  for (int i = 0; i < 9; i++) o = put_entry(b, o, -(float)i, (int32_t)strlen(p[i]), p[i]);
  return o;
}

static void expect_format_error(const char *path, int vocab, const char *what) {
  ks_tokenizer *t = NULL;
  ks_status st = tokenizer_load_llama2c(&t, path, vocab);
  CHECK_MSG(st == KS_ERR_FORMAT && t == NULL, "%s: status %d", what, (int)st);
  CHECK_MSG(strstr(ks_last_error(), path) != NULL, "%s: message does not name the file: %s", what,
            ks_last_error());
  tokenizer_destroy(t);
}

static void test_hostile_bin(const char *dir) {
  unsigned char b[512];
  size_t n = make_small(b);
  char path[4200];
  snprintf(path, sizeof path, "%s/small.bin", dir);

  write_file(path, b, n);
  ks_tokenizer *t = NULL;
  REQUIRE(tokenizer_load_llama2c(&t, path, 9) == KS_OK);
  int *ids = NULL, cnt = 0;
  REQUIRE(tokenizer_encode(t, "ab", 2, 1, &ids, &cnt) == KS_OK);
  CHECK(cnt == 2 && ids[0] == 1 && ids[1] == 8); /* " a" (-6) beats "ab" (-7), then " ab" */
  free(ids);
  tokenizer_destroy(t);
  /* vocab_size 0 reads every entry in the file. */
  REQUIRE(tokenizer_load_llama2c(&t, path, 0) == KS_OK);
  CHECK(tokenizer_vocab_size(t) == 9);
  tokenizer_destroy(t);

  /* Every proper prefix of a valid file fails cleanly. */
  for (size_t len = 0; len < n; len++) {
    write_file(path, b, len);
    char what[64];
    snprintf(what, sizeof what, "prefix of %zu bytes", len);
    expect_format_error(path, 9, what);
  }
  /* Trailing bytes: the wrong tokenizer for this vocabulary size. */
  write_file(path, b, n);
  expect_format_error(path, 8, "vocab_size smaller than the file");
  expect_format_error(path, 10, "vocab_size larger than the file");

  unsigned char h[512];
  memcpy(h, b, n);
  int32_t v = -1;
  memcpy(h, &v, 4);
  write_file(path, h, n);
  expect_format_error(path, 9, "negative max_token_length");
  v = 0x7fffffff;
  memcpy(h, &v, 4);
  write_file(path, h, n);
  expect_format_error(path, 9, "huge max_token_length");

  memcpy(h, b, n);
  v = -3; /* length of entry 0 */
  memcpy(h + 8, &v, 4);
  write_file(path, h, n);
  expect_format_error(path, 9, "negative length");
  v = 0x7ffffff0;
  memcpy(h + 8, &v, 4);
  write_file(path, h, n);
  expect_format_error(path, 9, "huge length");
  v = 6 + 1; /* longer than max_token_length */
  memcpy(h + 8, &v, 4);
  write_file(path, h, n);
  expect_format_error(path, 9, "length over max_token_length");

  memcpy(h, b, n);
  float nanf_ = NAN;
  memcpy(h + 4, &nanf_, 4);
  write_file(path, h, n);
  expect_format_error(path, 9, "NaN score");

  memcpy(h, b, n);
  h[4 + 8 + 1] = 0; /* NUL inside "<unk>" */
  write_file(path, h, n);
  expect_format_error(path, 9, "NUL in a piece");

  /* Too few entries for unk/bos/eos. */
  size_t o = 4;
  o = put_entry(h, o, 0, 1, "x");
  o = put_entry(h, o, 0, 1, "y");
  write_file(path, h, o);
  expect_format_error(path, 2, "two entries");

  snprintf(path, sizeof path, "%s/does-not-exist.bin", dir);
  CHECK(tokenizer_load_llama2c(&t, path, 9) == KS_ERR_IO && t == NULL);
  CHECK(strstr(ks_last_error(), path) != NULL);
}

int main(void) {
  ks_test_seed();
  const char *dir = ks_test_tmpdir("test_tokenizer");
  char d[4096];
  snprintf(d, sizeof d, "%s", dir);
  test_hostile_bin(d);
  test_gguf_hostile(d);
  test_tok512();
  {
    ks_tokenizer *t = NULL;
    REQUIRE(tokenizer_load_llama2c(&t, ks_shared_file("models/tok512.bin"), 512) == KS_OK);
    test_utf8(t);
    test_stream(t);
    tokenizer_destroy(t);
  }
  test_tokenizer_bin();
  test_llama_spm_vectors();
  test_gguf_gpt2_loads();
  return ks_test_done("test_tokenizer");
}
