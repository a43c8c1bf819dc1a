/* test_tokenizer_pretok.c — the byte-level BPE pre-tokenizers (bpe_pretok.c) and the pattern
 * matcher behind them (bpe_regex.c): hand-worked splits of tricky text for each family
 * (contractions, case-folded for llama3, 1-3 digit numbers, whitespace runs and newlines, emoji
 * with joiners, CJK, non-ASCII spaces), the matcher's ECMAScript semantics (first alternative
 * wins, backtracking, lookahead, $, counted repetition) and its errors, the Unicode class table
 * against known code points, and the two dedicated splitters against the matcher running the
 * very patterns they implement, on random text. */
#include <stdlib.h>
#include <string.h>

#include "bpe_pretok.h"
#include "bpe_regex.h"
#include "testutil.h"
#include "tokenizer.h"
#include "unicode.h"

/* ---------- helpers ---------- */

/* Decodes UTF-8 text into code points (static buffers: one call at a time). */
static size_t to_cps(const char *s, uint32_t *cps, size_t cap) {
  size_t len = strlen(s), bad;
  REQUIRE(ks_utf8_valid(s, len, &bad));
  REQUIRE(len < cap);
  static uint32_t offs[4096];
  return unicode_decode(s, len, cps, offs);
}

/* Renders split words as "a|b|c" with \n \r \t escaped, for messages and comparisons. */
static void render(const uint32_t *cps, const size_t *lens, size_t nw, char *out, size_t cap) {
  size_t w = 0, at = 0;
  for (size_t k = 0; k < nw; k++) {
    if (k && w + 1 < cap) out[w++] = '|';
    for (size_t i = 0; i < lens[k]; i++) {
      uint32_t c = cps[at + i];
      char tmp[8];
      int n;
      if (c == '\n') n = 2, memcpy(tmp, "\\n", 2);
      else if (c == '\r') n = 2, memcpy(tmp, "\\r", 2);
      else if (c == '\t') n = 2, memcpy(tmp, "\\t", 2);
      else if (c == '|') n = 2, memcpy(tmp, "\\|", 2);
      else n = unicode_encode(c, tmp);
      if (w + (size_t)n + 1 < cap) memcpy(out + w, tmp, (size_t)n), w += (size_t)n;
    }
    at += lens[k];
  }
  out[w] = 0;
}

static void expect_split(const char *pre, const char *text, const char *want) {
  ks_pretok *p = NULL;
  ks_status st = pretok_create(&p, pre);
  CHECK_MSG(st == KS_OK, "%s: %s", pre, ks_last_error());
  if (st) return;
  static uint32_t cps[4096];
  static size_t lens[4096];
  size_t n = to_cps(text, cps, 4096), nw = 0;
  REQUIRE(pretok_split(p, cps, n, lens, &nw) == KS_OK);
  size_t sum = 0;
  for (size_t k = 0; k < nw; k++) {
    CHECK(lens[k] > 0);
    sum += lens[k];
  }
  CHECK(sum == n);
  char got[8192];
  render(cps, lens, nw, got, sizeof got);
  CHECK_MSG(strcmp(got, want) == 0, "pre %s on \"%s\":\n    want %s\n    got  %s", pre, text,
            want, got);
  pretok_destroy(p);
}

static void expect_regex(const char *pattern, const char *text, const char *want) {
  ks_regex *re = NULL;
  ks_status st = regex_compile(&re, pattern);
  CHECK_MSG(st == KS_OK, "pattern %s: %s", pattern, ks_last_error());
  if (st) return;
  static uint32_t cps[4096];
  static uint16_t fl[4096];
  static size_t out[4096];
  size_t n = to_cps(text, cps, 4096), no = 0;
  for (size_t i = 0; i < n; i++) fl[i] = (uint16_t)unicode_flags(cps[i]);
  size_t in = n;
  REQUIRE(regex_split(re, cps, fl, n, &in, n ? 1 : 0, out, &no) == KS_OK);
  char got[8192];
  render(cps, out, no, got, sizeof got);
  CHECK_MSG(strcmp(got, want) == 0, "pattern %s on \"%s\":\n    want %s\n    got  %s", pattern,
            text, want, got);
  regex_destroy(re);
}

static void expect_bad_pattern(const char *pattern, const char *why) {
  ks_regex *re = NULL;
  ks_status st = regex_compile(&re, pattern);
  CHECK_MSG(st == KS_ERR_UNSUPPORTED && re == NULL, "pattern %s compiled (status %d)", pattern,
            (int)st);
  CHECK_MSG(strstr(ks_last_error(), why) != NULL, "pattern %s: message \"%s\" lacks \"%s\"",
            pattern, ks_last_error(), why);
  CHECK_MSG(strstr(ks_last_error(), pattern) != NULL, "message does not quote the pattern: %s",
            ks_last_error());
}

/* ---------- the class table ---------- */

static void test_classes(void) {
  static const struct {
    uint32_t cp;
    unsigned want; /* class bits and the space bit */
  } cases[] = {
      {'a', KS_UC_LETTER}, {'Z', KS_UC_LETTER}, {'7', KS_UC_NUMBER},
      {' ', KS_UC_SEPARATOR | KS_UC_SPACE},
      {'\t', KS_UC_CONTROL | KS_UC_SPACE}, {'\n', KS_UC_CONTROL | KS_UC_SPACE},
      {0x1C, KS_UC_CONTROL}, /* not White_Space (Python's str.isspace says otherwise) */
      {'!', KS_UC_PUNCT}, {'$', KS_UC_SYMBOL}, {'~', KS_UC_SYMBOL}, {'_', KS_UC_PUNCT},
      {0x85, KS_UC_CONTROL | KS_UC_SPACE}, {0xA0, KS_UC_SEPARATOR | KS_UC_SPACE},
      {0xAD, KS_UC_CONTROL}, {0xB5, KS_UC_LETTER}, {0xBD, KS_UC_NUMBER}, /* ½ is No */
      {0xE9, KS_UC_LETTER}, {0x301, KS_UC_MARK}, {0x378, KS_UC_UNDEF}, {0x663, KS_UC_NUMBER},
      {0x200B, KS_UC_CONTROL}, {0x200D, KS_UC_CONTROL}, {0x2028, KS_UC_SEPARATOR | KS_UC_SPACE},
      {0x3000, KS_UC_SEPARATOR | KS_UC_SPACE}, {0x3002, KS_UC_PUNCT}, {0x4E00, KS_UC_LETTER},
      {0x9FA5, KS_UC_LETTER}, {0xAC00, KS_UC_LETTER}, {0xD800, KS_UC_CONTROL},
      {0xE000, KS_UC_CONTROL}, {0xFE0F, KS_UC_MARK}, {0xFFFD, KS_UC_SYMBOL},
      {0xFFFF, KS_UC_UNDEF}, {0x1F600, KS_UC_SYMBOL}, {0x1F999, KS_UC_SYMBOL},
      {0x20000, KS_UC_LETTER}, {0x10FFFF, KS_UC_UNDEF}, {0x110000, KS_UC_UNDEF},
  };
  for (size_t i = 0; i < KS_ARRAY_LEN(cases); i++)
    CHECK_MSG(unicode_flags(cases[i].cp) == cases[i].want, "U+%04X: flags 0x%03X, want 0x%03X",
              cases[i].cp, unicode_flags(cases[i].cp), cases[i].want);
  /* Exactly one class bit everywhere, and the table covers every code point in order. */
  CHECK(ks_uc_ranges[0].first == 0 && ks_uc_ranges[ks_uc_n_ranges - 1].first == 0x110000);
  for (size_t i = 0; i + 1 < ks_uc_n_ranges; i++) {
    unsigned c = ks_uc_ranges[i].flags & KS_UC_CLASS_MASK;
    CHECK_MSG(c && (c & (c - 1)) == 0, "range %zu has class bits 0x%X", i, c);
    CHECK(ks_uc_ranges[i].first < ks_uc_ranges[i + 1].first);
  }
  int n_space = 0;
  for (uint32_t c = 0; c < 0x110000; c++) n_space += (unicode_flags(c) & KS_UC_SPACE) != 0;
  CHECK_MSG(n_space == 25, "%d White_Space code points, Unicode has 25", n_space);

  /* GPT-2's alphabet: a bijection between bytes and 256 code points, printable ones unchanged. */
  int seen[0x200] = {0};
  for (int b = 0; b < 256; b++) {
    uint32_t c = unicode_byte_to_cp((uint8_t)b);
    REQUIRE(c < 0x200);
    CHECK(!seen[c]);
    seen[c] = 1;
    CHECK(unicode_cp_to_byte(c) == b);
  }
  CHECK(unicode_byte_to_cp(' ') == 0x120 && unicode_byte_to_cp('\n') == 0x10A);
  CHECK(unicode_byte_to_cp('A') == 'A' && unicode_byte_to_cp(0xAD) == 0x143);
  CHECK(unicode_cp_to_byte(0x144) == -1 && unicode_cp_to_byte(0x20) == -1);
}

/* ---------- the matcher: ECMAScript semantics ---------- */

static void test_regex(void) {
  /* The first alternative that matches wins, not the longest (POSIX would take "ab"). */
  expect_regex("a|ab", "ab", "a|b");
  expect_regex("ab|a", "ab", "ab");
  /* Backtracking into an alternative and out of a greedy repetition. */
  expect_regex("(?:ab|a)c", "ac", "ac");
  expect_regex("a*ab", "aaab", "aaab");
  expect_regex("\\s*[\\r\\n]+", "  \n \n  x", "  \\n \\n|  x");
  /* Counted repetition, greedy and lazy. */
  expect_regex("a{2,3}", "aaaaa", "aaa|aa");
  expect_regex("a{2}", "aaaaa", "aa|aa|a");
  expect_regex("a{2,}", "aaaaa", "aaaaa");
  expect_regex("a+?", "aaa", "a|a|a");
  expect_regex("\\p{N}{1,3}", "1234567", "123|456|7");
  /* Lookahead, and $ at the end of the segment only. */
  expect_regex("x(?!y)", "xyxz", "xy|x|z");
  expect_regex("x(?=y)", "xyxz", "x|yxz");
  expect_regex("\\s+(?!\\S)", "a   b", "a|  | b");
  expect_regex("\\s+$", "a  b  ", "a  b|  ");
  expect_regex("^a", "aaa", "a|aa");
  /* Classes: ranges, negation, escapes inside and outside brackets, literal '-' and ']'. */
  expect_regex("[a-c]+", "abcdcba", "abc|d|cba");
  expect_regex("[^a-c]+", "abcdcba", "abc|d|cba");
  expect_regex("[a\\-]+", "a-b", "a-|b");
  expect_regex("[\\[-\\]]+", "x[\\]y", "x|[\\]|y");
  expect_regex("\\d+", "ab12c", "ab|12|c");
  expect_regex("\\w+", "hi_there, you", "hi_there|, |you");
  expect_regex("\\x41+", "AAB", "AA|B");
  expect_regex("\\u00e9", "caf\xC3\xA9", "caf|\xC3\xA9");
  expect_regex(".", "a\nb", "a|\\n|b");
  /* Without \p{..} the pattern sees code points (non-ASCII spaces as \s). */
  expect_regex("[\u4E00-\u9FA5]+", "ab\u4E2D\u6587cd", "ab|\u4E2D\u6587|cd");
  expect_regex("\\s+", "a\u3000\u00A0b", "a|\u3000\u00A0|b");
  /* With \p{..} every non-ASCII code point stands for its class: a literal can't name it, and
   * \S, [^a-z] and friends see only the class. */
  expect_regex("\\p{L}+", "h\xC3\xA9llo w\xC3\xB6rld", "h\xC3\xA9llo| |w\xC3\xB6rld");
  expect_regex("\\p{N}+", "x\xD9\xA3\xC2\xBD" "2y", "x|\xD9\xA3\xC2\xBD" "2|y"); /* ٣ ½ 2 */
  expect_regex("\\p{P}+", "a\xE3\x80\x82!b", "a|\xE3\x80\x82!|b");
  expect_regex("[\\p{L}\\p{N}]+", "\xC3\xA9" "1-", "\xC3\xA9" "1|-");
  expect_regex("[^\\s\\p{L}]+", "ab\xF0\x9F\x98\x80!\u3000c", "ab|\xF0\x9F\x98\x80!|\u3000c");
  /* llama.cpp's ASCII symbol list for \p{S} lacks '~' (kept as it is). */
  expect_regex("\\p{S}+", "$~+", "$|~|+");

  expect_bad_pattern("(ab", "unbalanced (");
  expect_bad_pattern("ab)", "unbalanced )");
  expect_bad_pattern("a**", "nothing to repeat");
  expect_bad_pattern("*a", "nothing to repeat");
  expect_bad_pattern("(a)\\1", "back-references");
  expect_bad_pattern("\\p{Han}+", "Unicode property");
  expect_bad_pattern("[b-a]", "out of order");
  expect_bad_pattern("[ab", "unterminated");
  expect_bad_pattern("(?<=a)b", "groups are supported");
  expect_bad_pattern("\\bx", "word boundaries");
  expect_bad_pattern("(?:a*)*", "can match empty");
  expect_bad_pattern("a{3,2}", "n < m");
  expect_bad_pattern("\\p{L}\xC3\xA9", "non-ASCII");
  expect_bad_pattern("(?:(?:(?:a{1000}){1000}){1000})", "too large");
}

/* ---------- each family on tricky text ---------- */

static void test_gpt2(void) {
  const char *g = "gpt-2";
  expect_split(g, "Hello world", "Hello| world");
  expect_split(g, "I'm here, they're 'sure' we'll've",
               "I|'m| here|,| they|'re| '|sure|'| we|'ll|'ve");
  expect_split(g, "I'M HE'S", "I|'|M| HE|'|S"); /* case-sensitive: 'M is no contraction */
  expect_split(g, "don't 's 'd'", "don|'t| '|s| '|d|'");
  expect_split(g, "  Hello", " | Hello");
  expect_split(g, "Hello  ", "Hello|  ");
  expect_split(g, "Hello\n\nworld", "Hello|\\n|\\n|world");
  expect_split(g, "a\t b", "a|\\t| b");
  expect_split(g, "x \n  y", "x| \\n | y");
  expect_split(g, "123 4567 3.14", "123| 4567| 3|.|14");
  expect_split(g, "\xF0\x9F\xA6\x99.cpp", "\xF0\x9F\xA6\x99.|cpp");
  expect_split(g, " \xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F ok",
               " \xF0\x9F\x98\xB6\xE2\x80\x8D\xF0\x9F\x8C\xAB\xEF\xB8\x8F| ok");
  expect_split(g, "\xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8" "apple" "\xE5\xB7\xA5" "1314",
               "\xE6\x88\x91\xE6\x83\xB3\xE5\x9C\xA8" "apple" "\xE5\xB7\xA5|1314");
  /* Only an ASCII space can lead a word; other spaces stand alone. */
  expect_split(g, "a\xC2\xA0" "b\xE3\x80\x80\xE3\x80\x80" "c",
               "a|\xC2\xA0|b|\xE3\x80\x80|\xE3\x80\x80|c");
  expect_split(g, "caf\xC3\xA9 na\xC3\xAF" "ve", "caf\xC3\xA9| na\xC3\xAF" "ve");
  expect_split(g, "x\xCD\xB8y", "x|\xCD\xB8|y"); /* unassigned U+0378: "other" */
  expect_split(g, "", "");
  /* mpt, olmo, phi-2... share GPT-2's rules. */
  expect_split("mpt", "I'm 42", "I|'m| 42");
}

static void test_llama3(void) {
  const char *l = "llama-bpe";
  expect_split(l, "I'M here HE'LL", "I|'M| here| HE|'LL"); /* case-insensitive contractions */
  expect_split(l, "We'Ve a'lL 'D", "We|'Ve| a|'lL| '|D");
  /* Where the letters go on, only a contraction rule (not "'" + letters) cuts after it. */
  expect_split(l, "I'MM WE'REAL they'LLama", "I|'M|M| WE|'RE|AL| they|'LL|ama");
  expect_split(l, "1234567", "123|456|7");
  expect_split(l, "abc123def 42", "abc|123|def| |42");
  expect_split(l, "3.14159", "3|.|141|59");
  expect_split(l, "\n\nHello", "\\n\\n|Hello");
  expect_split(l, "a \n b", "a| \\n| b");
  expect_split(l, "hello!!\n\nworld", "hello|!!\\n\\n|world");
  expect_split(l, "   x", "  | x");
  expect_split(l, "x   ", "x|   ");
  expect_split(l, "$x \"hi\"", "$x| \"|hi|\"");
  expect_split(l, "\t\tdef f():\n\treturn", "\\t|\\tdef| f|():\\n|\\treturn");
  expect_split(l, "\xF0\x9F\x98\x80\xF0\x9F\x98\x80 hi", "\xF0\x9F\x98\x80\xF0\x9F\x98\x80| hi");
  expect_split(l, "\xE6\x88\x91\xE6\x83\xB3" "apple" "\xE5\xB7\xA5\xE4\xBD\x9C" "1314151",
               "\xE6\x88\x91\xE6\x83\xB3" "apple" "\xE5\xB7\xA5\xE4\xBD\x9C|131|415|1");
  expect_split(l, "\xD0\xBD\xD0\xB5\xD1\x89\xD0\xBE \xD0\xBD\xD0\xB0",
               "\xD0\xBD\xD0\xB5\xD1\x89\xD0\xBE| \xD0\xBD\xD0\xB0");
  expect_split(l, " \r\n x", " \\r\\n| x");
  /* dbrx uses the same pattern (without llama3's whole-word shortcut). */
  expect_split("dbrx", "HE'LL 12345", "HE|'LL| |123|45");
}

static void test_qwen2(void) {
  const char *q = "qwen2";
  expect_split(q, "I'M here HE'LL", "I|'M| here| HE|'LL");
  expect_split(q, "I'MM WE'REAL", "I|'M|M| WE|'RE|AL");
  expect_split(q, "1234 abc123", "1|2|3|4| abc|1|2|3");
  expect_split(q, "\n\nHello  world  ", "\\n\\n|Hello| | world|  ");
  expect_split(q, "hello!!\n\nworld", "hello|!!\\n\\n|world");
  expect_split(q, "$x \xF0\x9F\x98\x80!", "$x| \xF0\x9F\x98\x80!");
  /* 你好，世界: the full-width comma leads the next word, as any non-letter may. */
  expect_split(q, "\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C",
               "\xE4\xBD\xA0\xE5\xA5\xBD|\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C");
  expect_split(q, "a\xE3\x80\x80\xE3\x80\x80" "b", "a|\xE3\x80\x80|\xE3\x80\x80" "b");
}

static void test_others(void) {
  /* starcoder / smollm / refact / command-r: every digit alone, then GPT-2's rules. */
  expect_split("starcoder", " 123abc x2", " |1|2|3|abc| x|2");
  expect_split("smollm", "I'm 42!", "I|'m| |4|2|!");
  /* deepseek-coder: newlines, letters, punctuation, CJK, digits, each pattern in turn. */
  expect_split("deepseek-coder", "Hello, world!\n123", "Hello|,| world|!|\\n|1|2|3");
  /* deepseek-llm: cased letters only (CJK apart), ASCII and full-width punctuation. */
  expect_split("deepseek-llm", "Hello \xE4\xB8\x96\xE7\x95\x8C 123",
               "Hello| |\xE4\xB8\x96\xE7\x95\x8C| |123");
  expect_split("deepseek-llm", "a,b.\n\nc  ", "a|,|b|.|\\n|\\n|c|  ");
  /* default: punctuation and symbol runs first, GPT-2's rules, then digits by three. */
  expect_split("default", "a+=b 12345", "a|+=|b| |123|45");
  expect_split(NULL, "a+=b 12345", "a|+=|b| |123|45");
  expect_split("falcon", "x`=1234", "x|`=|123|4");
  /* poro/bloom: anything but spaces and a few punctuation marks, one optional space first. */
  expect_split("bloom", "hi, you\xE2\x80\xA6 ok", "hi|,| you|\xE2\x80\xA6| ok");
  /* tekken / gpt-4o: an upper-case run then a lower-case run. */
  expect_split("tekken", "HTTPServer isOK", "HTTPServer| is|OK");
  expect_split("gpt-4o", "HTTPServer isn't OK", "HTTPServer| isn't| OK");

  ks_pretok *p = NULL;
  CHECK(pretok_create(&p, "no-such-pre") == KS_ERR_UNSUPPORTED && p == NULL);
  CHECK(strstr(ks_last_error(), "no-such-pre") != NULL);
  REQUIRE(pretok_create(&p, "llama-bpe") == KS_OK);
  CHECK(strcmp(pretok_name(p), "llama3") == 0 && pretok_ignore_merges(p) && pretok_add_bos(p));
  pretok_destroy(p);
  REQUIRE(pretok_create(&p, "gpt-2") == KS_OK);
  CHECK(!pretok_ignore_merges(p) && !pretok_add_bos(p));
  pretok_destroy(p);
}

/* ---------- the dedicated splitters against the matcher on the same patterns ---------- */

static const char *const k_pieces[] = {
    "a", "Z", "hello", "HE", "\xC3\xA9", "\xC3\x9F", "\xE6\x97\xA5", "\xF0\x9F\x98\x80",
    "\xE2\x80\x8D", "\xEF\xB8\x8F", "\xCC\x81", "1", "42", "\xD9\xA3", "\xC2\xBD", "'", "s", "S",
    "t", "M", "l", "L", "d", "r", "e", "v", "ll", "re", "VE", " ", " ", " ", "  ", "\t", "\n",
    "\r", "\r\n", "\xC2\xA0", "\xE3\x80\x80", "\xC2\x85", "!", ".", "$", "~", "_", "-", "\"",
    "\xE2\x80\x8B", "\xCD\xB8", "\xEE\x80\x80", "\x0B", "\x1C", "\x7F",
};

static void test_splitters_vs_matcher(void) {
  ks_regex *rg = NULL, *rl = NULL;
  REQUIRE(regex_compile(&rg, ks_pretok_gpt2_pattern) == KS_OK);
  REQUIRE(regex_compile(&rl, ks_pretok_llama3_pattern) == KS_OK);
  static uint32_t cps[512];
  static uint16_t fl[512];
  static size_t a[512], b[512];
  char text[1024];
  int fails = 0;
  const int rounds = 3000;
  for (int r = 0; r < rounds; r++) {
    size_t w = 0;
    int parts = 1 + (int)(ks_randu() % 24);
    for (int k = 0; k < parts; k++) {
      const char *p = k_pieces[ks_randu() % KS_ARRAY_LEN(k_pieces)];
      memcpy(text + w, p, strlen(p));
      w += strlen(p);
    }
    text[w] = 0;
    size_t n = to_cps(text, cps, 512);
    for (size_t i = 0; i < n; i++) fl[i] = (uint16_t)unicode_flags(cps[i]);
    for (int which = 0; which < 2; which++) {
      size_t na = which ? pretok_split_llama3(cps, fl, n, a) : pretok_split_gpt2(cps, fl, n, a);
      size_t nb = 0, in = n;
      REQUIRE(regex_split(which ? rl : rg, cps, fl, n, &in, 1, b, &nb) == KS_OK);
      int same = na == nb && memcmp(a, b, na * sizeof *a) == 0;
      if (!same && fails++ < 5) {
        char sa[2048], sb[2048];
        render(cps, a, na, sa, sizeof sa);
        render(cps, b, nb, sb, sizeof sb);
        fprintf(stderr, "%s splitter and matcher differ:\n    splitter %s\n    matcher  %s\n",
                which ? "llama3" : "gpt2", sa, sb);
      }
      CHECK(same);
    }
  }
  printf("dedicated splitters agree with the matcher on %d random texts (%d differ)\n", rounds,
         fails);
  regex_destroy(rg);
  regex_destroy(rl);
}

/* Long runs must not recurse or take quadratic time in the splitters or the matcher. */
static void test_long_runs(void) {
  size_t n = 200000;
  char *s = malloc(n + 1);
  REQUIRE(s);
  ks_pretok *p = NULL;
  uint32_t *cps = malloc((n + 1) * sizeof *cps), *offs = malloc((n + 1) * sizeof *offs);
  size_t *lens = malloc(n * sizeof *lens);
  REQUIRE(cps && offs && lens);
  const char *pres[] = {"gpt-2", "llama3", "qwen2", "deepseek-coder"};
  const char fill[] = {'a', ' ', '7', '!'};
  for (size_t f = 0; f < KS_ARRAY_LEN(fill); f++) {
    memset(s, fill[f], n);
    s[n] = 0;
    size_t nc = unicode_decode(s, n, cps, offs);
    for (size_t k = 0; k < KS_ARRAY_LEN(pres); k++) {
      REQUIRE(pretok_create(&p, pres[k]) == KS_OK);
      double t0 = ks_now_sec();
      size_t nw = 0;
      REQUIRE(pretok_split(p, cps, nc, lens, &nw) == KS_OK);
      double dt = ks_now_sec() - t0;
      size_t sum = 0;
      for (size_t i = 0; i < nw; i++) sum += lens[i];
      CHECK(sum == nc && nw >= 1);
      CHECK_MSG(dt < 5.0, "%s on %zu x '%c' took %.1f s", pres[k], n, fill[f], dt);
      pretok_destroy(p);
    }
  }
  free(s);
  free(cps);
  free(offs);
  free(lens);
}

int main(void) {
  ks_test_seed();
  test_classes();
  test_regex();
  test_gpt2();
  test_llama3();
  test_qwen2();
  test_others();
  test_splitters_vs_matcher();
  test_long_runs();
  return ks_test_done("test_tokenizer_pretok");
}
