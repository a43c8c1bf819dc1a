/* bpe_pretok.c — tokenizer.ggml.pre names -> llama.cpp's list of patterns for that pre type,
 * and the two dedicated splitters (GPT-2 and Llama 3 patterns) llama.cpp uses instead of
 * std::regex. The pattern lists and which names share them are facts read from llama.cpp's
 * llama-vocab.cpp (llm_tokenizer_bpe and the pre-type table in llama_vocab::impl::load);
 * non-ASCII characters in the patterns are written as \u escapes so every code point is
 * visible. Not the merges: tokenizer.c. */
#include "bpe_pretok.h"

#include <stdlib.h>
#include <string.h>

#include "bpe_regex.h"
#include "unicode.h"

/* ---------- the dedicated splitters ---------- */

const char *const ks_pretok_gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
/* llama.cpp's spelling of Llama 3's (?i:'s|'t|...) for std::regex, which has no inline flags. */
const char *const ks_pretok_llama3_pattern =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

#define LETTER KS_UC_LETTER
#define NUMBER KS_UC_NUMBER
#define SPACE KS_UC_SPACE

/* Both splitters walk one segment; past its end a code point reads as none (flags 0), which is
 * how a run stops at the segment boundary and how "\s+(?!\S)" sees the end of the text. */
typedef struct {
  const uint32_t *c;
  const uint16_t *f;
  size_t n;
} seg_t;

static unsigned fl(const seg_t *s, size_t i) { return i < s->n ? s->f[i] : 0; }
static uint32_t cp(const seg_t *s, size_t i) { return i < s->n ? s->c[i] : 0xFFFFFFFFu; }

/* Length of 's 't 're 've 'm 'll 'd at pos (case-folded if fold), 0 if none. Only ASCII
 * capitals lower-case to these letters (tools/gen_unicode.py checks), so folding is ASCII. */
static size_t contraction(const seg_t *s, size_t pos, int fold) {
  if (cp(s, pos) != '\'' || pos + 1 >= s->n) return 0;
  uint32_t a = cp(s, pos + 1), b = pos + 2 < s->n ? cp(s, pos + 2) : 0;
  if (fold) {
    if (a >= 'A' && a <= 'Z') a += 32;
    if (b >= 'A' && b <= 'Z') b += 32;
  }
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

/* Whitespace at pos: "\s+(?!\S)" keeps the last space for the next word unless the run ends
 * the segment; a lone space before a non-space is a word by itself. */
static size_t space_run(const seg_t *s, size_t pos) {
  size_t k = 0;
  while (fl(s, pos + k) & SPACE) k++;
  if (k > 1 && pos + k < s->n) return k - 1;
  return k;
}

/* A run of "other" code points ([^\s\p{L}\p{N}]) from pos. */
static size_t other_run_end(const seg_t *s, size_t pos) {
  while (fl(s, pos) && !(fl(s, pos) & (SPACE | LETTER | NUMBER))) pos++;
  return pos;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S), with whatever no
 * alternative matches (a single space before a non-space) as a word of its own. */
size_t pretok_split_gpt2(const uint32_t *cps, const uint16_t *flags, size_t n, size_t *lens) {
  seg_t s = {cps, flags, n};
  size_t nw = 0;
  for (size_t pos = 0; pos < n;) {
    size_t end = pos + contraction(&s, pos, 0);
    if (end == pos) {
      size_t at = pos + (cp(&s, pos) == ' '); /* the optional leading space */
      unsigned g = fl(&s, at);
      if (g & LETTER) {
        end = at;
        while (fl(&s, end) & LETTER) end++;
      } else if (g & NUMBER) {
        end = at;
        while (fl(&s, end) & NUMBER) end++;
      } else if (g && !(g & SPACE)) {
        end = other_run_end(&s, at);
      } else {
        size_t k = space_run(&s, pos);
        end = pos + (k ? k : 1);
      }
    }
    lens[nw++] = end - pos;
    pos = end;
  }
  return nw;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+ */
size_t pretok_split_llama3(const uint32_t *cps, const uint16_t *flags, size_t n, size_t *lens) {
  seg_t s = {cps, flags, n};
  size_t nw = 0;
  for (size_t pos = 0; pos < n;) {
    uint32_t c = cp(&s, pos);
    unsigned f = fl(&s, pos);
    size_t end = pos + contraction(&s, pos, 1);
    if (end > pos) {
      /* contraction */
    } else if (c != '\r' && c != '\n' && !(f & NUMBER) &&
               ((f & LETTER) || (fl(&s, pos + 1) & LETTER))) {
      end = pos + 1; /* a letter, or the one leading non-letter before letters */
      while (fl(&s, end) & LETTER) end++;
    } else if (f & NUMBER) {
      end = pos;
      while (end - pos < 3 && (fl(&s, end) & NUMBER)) end++;
    } else if (!(fl(&s, pos + (c == ' ')) & (SPACE | LETTER | NUMBER)) && f) {
      end = other_run_end(&s, pos + (c == ' '));
      while (cp(&s, end) == '\r' || cp(&s, end) == '\n') end++;
    } else {
      /* \s*[\r\n]+ ends at the last \r or \n of the whitespace run; otherwise as GPT-2. */
      size_t k = 0, nl_end = 0;
      while (fl(&s, pos + k) & SPACE) {
        if (cp(&s, pos + k) == '\r' || cp(&s, pos + k) == '\n') nl_end = pos + k + 1;
        k++;
      }
      if (nl_end) end = nl_end;
      else end = pos + ((k = space_run(&s, pos)) ? k : 1);
    }
    lens[nw++] = end - pos;
    pos = end;
  }
  return nw;
}

/* ---------- pre types ---------- */

#define MAX_STEPS 6

typedef struct {
  const char *names[24];         /* tokenizer.ggml.pre values, the first is the canonical one */
  const char *steps[MAX_STEPS]; /* patterns, applied in order */
  int ignore_merges, add_bos, no_bos;
} pre_def;

#define GPT2 ks_pretok_gpt2_pattern
#define LLAMA3 ks_pretok_llama3_pattern
/* Qwen2's pattern: Llama 3's with single digits. */
#define QWEN2                                                                                    \
  "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"      \
  "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define CJK_DEEPSEEK "[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+"
#define PORO " ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+"
/* Mistral's tekken and GPT-4o: an upper-case run then a lower-case run, spelt with lookaheads
 * because std::regex has no \p{Lu}; llama.cpp's patterns. */
#define TEKKEN_WORDS                                                                             \
  "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|"                        \
  "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*"
#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"

static const pre_def k_pre[] = {
    {{"default"},
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2, "\\p{N}+", "[0-9][0-9][0-9]"},
     0, 0, 0},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
     {LLAMA3},
     1, 1, 0},
    {{"dbrx", "smaug-bpe"}, {LLAMA3}, 0, 0, 0},
    {{"chatglm4", "glm4", "chatglm-bpe"}, {LLAMA3}, 0, 0, 1},
    {{"gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
      "a.x-4.0", "mellum", "modern-bert", "mpt", "olmo", "jais", "trillion", "granite-docling",
      "exaone4", "jina-v1-en", "jina-v2-code", "roberta-bpe"},
     {GPT2},
     0, 0, 0},
    {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b",
      "mellum2"},
     {"\\p{N}", GPT2},
     0, 0, 0},
    {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
      "solar-open", "grok-2"},
     {QWEN2},
     0, 0, 0},
    {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2, "[0-9][0-9][0-9]"}, 0, 0, 0},
    {{"deepseek-llm"},
     {"[\r\n]",
      "\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293"
      "\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C"
      "\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5"
      "\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77"
      "\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59"
      "\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC"
      "\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107"
      "\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139"
      "\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE"
      "\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E"
      "\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F"
      "\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2"
      "\U000118A0-\U000118DF\U0001E900-\U0001E943]+",
      "\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+", "\\s+$", CJK_DEEPSEEK,
      "\\p{N}+"},
     0, 0, 0},
    {{"deepseek-coder"},
     {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", CJK_DEEPSEEK, "\\p{N}"},
     0, 0, 0},
    {{"deepseek-v3", "hunyuan-dense", "joyai-llm", "hy_v4"},
     {"\\p{N}{1,3}", "[\u4E00-\u9FA5\u3040-\u309F\u30A0-\u30FF]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
      "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
     0, 0, 0},
    {{"poro-chat", "bloom", "gpt3-finnish"}, {PORO}, 0, 0, 0},
    {{"viking"}, {PORO, "\\p{N}"}, 0, 0, 0},
    {{"tekken"},
     {TEKKEN_WORDS "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     1, 1, 0},
    {{"gpt-4o", "llama4", "kanana2", "talkie"},
     {"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+" CONTRACTIONS "?|"
      "[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*" CONTRACTIONS "?|"
      "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     0, 0, 0},
    {{"seed-coder"},
     {CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+|"
                   "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     0, 0, 0},
    {{"bailingmoe", "bailingmoe2", "llada-moe"},
     {"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
      " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"},
     0, 0, 0},
    {{"qwen35"},
     {CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+"
                   "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     0, 0, 0},
    {{"minicpm5"},
     {"\\p{N}{1,3}", CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
                                  "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     1, 0, 0},
};

enum { STEP_REGEX, STEP_GPT2, STEP_LLAMA3 };

struct ks_pretok {
  const pre_def *def;
  int n_steps;
  int kind[MAX_STEPS];
  ks_regex *re[MAX_STEPS];
};

void pretok_destroy(ks_pretok *p) {
  if (!p) return;
  for (int i = 0; i < p->n_steps; i++) regex_destroy(p->re[i]);
  free(p);
}

ks_status pretok_create(ks_pretok **out, const char *name) {
  *out = NULL;
  if (!name || !*name) name = "default";
  const pre_def *def = NULL;
  for (size_t k = 0; k < KS_ARRAY_LEN(k_pre) && !def; k++)
    for (int j = 0; j < 24 && k_pre[k].names[j]; j++)
      if (strcmp(k_pre[k].names[j], name) == 0) def = &k_pre[k];
  if (!def)
    return ks_fail(KS_ERR_UNSUPPORTED,
                   "pre-tokenizer \"%s\" (tokenizer.ggml.pre) is not supported; supported: "
                   "default, llama3/llama-bpe, qwen2, smollm, starcoder, gpt-2, deepseek-llm, "
                   "deepseek-coder, falcon, mpt, olmo, command-r, refact, tekken, gpt-4o and "
                   "their aliases",
                   name);
  ks_pretok *p = calloc(1, sizeof *p);
  if (!p) return ks_fail(KS_ERR_NOMEM, "out of memory for a pre-tokenizer");
  p->def = def;
  for (int i = 0; i < MAX_STEPS && def->steps[i]; i++) {
    /* llama.cpp recognises its two hand-written splitters by the pattern text. */
    if (strcmp(def->steps[i], GPT2) == 0) {
      p->kind[i] = STEP_GPT2;
    } else if (strcmp(def->steps[i], LLAMA3) == 0) {
      p->kind[i] = STEP_LLAMA3;
    } else {
      p->kind[i] = STEP_REGEX;
      ks_status st = regex_compile(&p->re[i], def->steps[i]);
      if (st) {
        pretok_destroy(p);
        return st;
      }
    }
    p->n_steps = i + 1;
  }
  *out = p;
  return KS_OK;
}

const char *pretok_name(const ks_pretok *p) { return p->def->names[0]; }
int pretok_ignore_merges(const ks_pretok *p) { return p->def->ignore_merges; }
int pretok_add_bos(const ks_pretok *p) { return p->def->add_bos; }
int pretok_no_bos(const ks_pretok *p) { return p->def->no_bos; }

ks_status pretok_split(const ks_pretok *p, const uint32_t *cps, size_t n, size_t *lens,
                       size_t *n_words) {
  *n_words = 0;
  if (n == 0) return KS_OK;
  uint16_t *flags = malloc(n * sizeof *flags);
  size_t *tmp = malloc(n * sizeof *tmp);
  if (!flags || !tmp) {
    free(flags);
    free(tmp);
    return ks_fail(KS_ERR_NOMEM, "out of memory pre-tokenizing %zu code points", n);
  }
  for (size_t i = 0; i < n; i++) flags[i] = (uint16_t)unicode_flags(cps[i]);
  /* Segments live in lens and tmp alternately; each step refines every segment. */
  size_t *cur = lens, *nxt = tmp, n_cur = 1;
  cur[0] = n;
  ks_status st = KS_OK;
  for (int s = 0; s < p->n_steps && st == KS_OK; s++) {
    size_t n_nxt = 0;
    if (p->kind[s] == STEP_REGEX) {
      st = regex_split(p->re[s], cps, flags, n, cur, n_cur, nxt, &n_nxt);
    } else {
      size_t at = 0;
      for (size_t k = 0; k < n_cur; k++) {
        if (p->kind[s] == STEP_GPT2)
          n_nxt += pretok_split_gpt2(cps + at, flags + at, cur[k], nxt + n_nxt);
        else
          n_nxt += pretok_split_llama3(cps + at, flags + at, cur[k], nxt + n_nxt);
        at += cur[k];
      }
    }
    size_t *t = cur;
    cur = nxt;
    nxt = t;
    n_cur = n_nxt;
  }
  if (st == KS_OK && cur != lens) memcpy(lens, cur, n_cur * sizeof *lens);
  free(flags);
  free(tmp);
  if (st == KS_OK) *n_words = n_cur;
  return st;
}
