/* bpe_regex.c — the pre-tokenizer pattern matcher: pattern text -> (collapsed) units -> syntax
 * tree -> a small instruction program, run by a depth-first backtracking machine whose search
 * order (first alternative first, longest repetition first) is ECMAScript's, so the first match
 * found is the one std::regex reports. No captures exist, so a thread is just (pc, position).
 * Not a general regex library: see bpe_regex.h for the supported subset. */
#include "bpe_regex.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "unicode.h"

/* ---------- character sets over units ---------- */

enum { CL_SPACE = 1, CL_NSPACE = 2, CL_DIGIT = 4, CL_NDIGIT = 8, CL_WORD = 16, CL_NWORD = 32 };

typedef struct {
  uint32_t lo, hi;
} urange;

typedef struct {
  int neg;
  unsigned classes; /* CL_* escapes listed inside the brackets */
  urange *r;
  int n, cap;
} uset;

/* std::regex's \s \d \w are the "C" locale's: ASCII only (non-ASCII spaces arrive as 0x0B). */
static int unit_space(uint32_t u) { return u == ' ' || (u >= 9 && u <= 13); }
static int unit_digit(uint32_t u) { return u >= '0' && u <= '9'; }
static int unit_word(uint32_t u) {
  return unit_digit(u) || (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || u == '_';
}

static int class_has(unsigned cl, uint32_t u) {
  return ((cl & CL_SPACE) && unit_space(u)) || ((cl & CL_NSPACE) && !unit_space(u)) ||
         ((cl & CL_DIGIT) && unit_digit(u)) || ((cl & CL_NDIGIT) && !unit_digit(u)) ||
         ((cl & CL_WORD) && unit_word(u)) || ((cl & CL_NWORD) && !unit_word(u));
}

static int set_has(const uset *s, uint32_t u) {
  int in = class_has(s->classes, u);
  for (int i = 0; !in && i < s->n; i++) in = s->r[i].lo <= u && u <= s->r[i].hi;
  return in != s->neg;
}

/* ---------- syntax tree ---------- */

enum { N_EMPTY, N_CHAR, N_SET, N_ANY, N_BOL, N_EOL, N_CAT, N_ALT, N_REP, N_LOOK };

typedef struct {
  int type;
  int a, b;      /* CHAR: unit in a; SET: set index; REP: min, max (-1 = unbounded); LOOK: neg */
  int kid, kid2; /* CAT/ALT: both; REP/LOOK: kid */
  int greedy;
} node;

enum { I_CHAR, I_SET, I_ANY, I_SPLIT, I_JMP, I_BOL, I_EOL, I_LOOK, I_LOOKEND, I_MATCH };

typedef struct {
  int op;
  int x, y; /* CHAR: unit; SET: set; SPLIT: preferred, other; JMP: target; LOOK: neg, after */
} inst;

struct ks_regex {
  int collapsed; /* 1: runs on the collapsed text (the pattern used \p{..}) */
  uset *sets;
  int n_sets;
  inst *prog;
  int n_prog;
};

/* Program size cap: counted repetitions are unrolled, so a pattern like x{1000}{1000} must fail
 * cleanly instead of exhausting memory. */
#define MAX_PROG 65536

typedef struct {
  const uint32_t *p; /* pattern units */
  size_t n, i;
  node *nodes;
  int nn, ncap;
  uset *sets;
  int ns, scap;
  const char *err; /* first error, NULL if none */
  size_t err_at;
  inst *prog;
  int np, pcap;
} parser;

static void fail_at(parser *ps, const char *msg) {
  if (!ps->err) {
    ps->err = msg;
    ps->err_at = ps->i;
  }
}

static int mk(parser *ps, int type, int a, int b, int kid, int kid2) {
  if (ps->err) return 0;
  if (ps->nn == ps->ncap) {
    int cap = ps->ncap ? 2 * ps->ncap : 64;
    node *nn = realloc(ps->nodes, (size_t)cap * sizeof *nn);
    if (!nn) {
      fail_at(ps, "out of memory");
      return 0;
    }
    ps->nodes = nn;
    ps->ncap = cap;
  }
  node *x = &ps->nodes[ps->nn];
  x->type = type;
  x->a = a;
  x->b = b;
  x->kid = kid;
  x->kid2 = kid2;
  x->greedy = 1;
  return ps->nn++;
}

static int new_set(parser *ps) {
  if (ps->err) return -1;
  if (ps->ns == ps->scap) {
    int cap = ps->scap ? 2 * ps->scap : 16;
    uset *ns = realloc(ps->sets, (size_t)cap * sizeof *ns);
    if (!ns) {
      fail_at(ps, "out of memory");
      return -1;
    }
    ps->sets = ns;
    ps->scap = cap;
  }
  memset(&ps->sets[ps->ns], 0, sizeof ps->sets[0]);
  return ps->ns++;
}

static void set_add(parser *ps, int si, uint32_t lo, uint32_t hi) {
  if (ps->err) return;
  uset *s = &ps->sets[si];
  if (s->n == s->cap) {
    int cap = s->cap ? 2 * s->cap : 8;
    urange *nr = realloc(s->r, (size_t)cap * sizeof *nr);
    if (!nr) {
      fail_at(ps, "out of memory");
      return;
    }
    s->r = nr;
    s->cap = cap;
  }
  s->r[s->n].lo = lo;
  s->r[s->n].hi = hi;
  s->n++;
}

static int peek(const parser *ps) { return ps->i < ps->n ? (int)ps->p[ps->i] : -1; }

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* One escape after the backslash (ps->i at the escaped unit). Returns a class (CL_*) in *cl with
 * 0 from the function, or a unit with *cl = 0. in_class: \b is backspace there. */
static uint32_t parse_escape(parser *ps, unsigned *cl, int in_class) {
  *cl = 0;
  int c = peek(ps);
  if (c < 0) {
    fail_at(ps, "pattern ends with a backslash");
    return 0;
  }
  ps->i++;
  switch (c) {
  case 's': *cl = CL_SPACE; return 0;
  case 'S': *cl = CL_NSPACE; return 0;
  case 'd': *cl = CL_DIGIT; return 0;
  case 'D': *cl = CL_NDIGIT; return 0;
  case 'w': *cl = CL_WORD; return 0;
  case 'W': *cl = CL_NWORD; return 0;
  case 'r': return '\r';
  case 'n': return '\n';
  case 't': return '\t';
  case 'f': return '\f';
  case 'v': return '\v';
  case '0': return 0;
  case 'x':
  case 'u': {
    int nd = c == 'x' ? 2 : 4;
    uint32_t v = 0;
    for (int k = 0; k < nd; k++) {
      int h = hexval(peek(ps));
      if (h < 0) {
        fail_at(ps, c == 'x' ? "\\x needs two hex digits" : "\\u needs four hex digits");
        return 0;
      }
      v = v * 16 + (uint32_t)h;
      ps->i++;
    }
    return v;
  }
  case 'b':
    if (in_class) return 0x08;
    fail_at(ps, "word boundaries (\\b) are not supported");
    return 0;
  case 'B': fail_at(ps, "word boundaries (\\B) are not supported"); return 0;
  case 'p':
  case 'P':
    fail_at(ps, "this Unicode property (\\p{...}) is not one llama.cpp supports");
    return 0;
  case 'c': fail_at(ps, "control escapes (\\c) are not supported"); return 0;
  default:
    if (c >= '1' && c <= '9') {
      fail_at(ps, "back-references are not supported");
      return 0;
    }
    return (uint32_t)c; /* identity escape: \. \[ \\ \$ ... */
  }
}

static int parse_class(parser *ps) {
  int si = new_set(ps);
  if (si < 0) return 0;
  if (peek(ps) == '^') {
    ps->sets[si].neg = 1;
    ps->i++;
  }
  for (;;) {
    int c = peek(ps);
    if (c < 0) {
      fail_at(ps, "unterminated [ ]");
      return 0;
    }
    if (c == ']') {
      ps->i++;
      break;
    }
    unsigned cl = 0;
    uint32_t lo;
    ps->i++;
    if (c == '\\') lo = parse_escape(ps, &cl, 1);
    else lo = (uint32_t)c;
    if (ps->err) return 0;
    if (cl) {
      ps->sets[si].classes |= cl;
      continue;
    }
    /* A '-' between two units is a range; first, last or after a class it is literal. */
    if (peek(ps) == '-' && ps->i + 1 < ps->n && ps->p[ps->i + 1] != ']') {
      ps->i++;
      int e = peek(ps);
      ps->i++;
      uint32_t hi;
      if (e == '\\') {
        hi = parse_escape(ps, &cl, 1);
        if (cl) fail_at(ps, "a class escape cannot end a range");
      } else {
        hi = (uint32_t)e;
      }
      if (ps->err) return 0;
      if (hi < lo) {
        fail_at(ps, "range out of order in [ ]");
        return 0;
      }
      set_add(ps, si, lo, hi);
    } else {
      set_add(ps, si, lo, lo);
    }
  }
  return mk(ps, N_SET, si, 0, -1, -1);
}

static int parse_alt(parser *ps);

/* Reads {m}, {m,} or {m,n} at ps->i if it is one; returns 0 (and leaves ps->i) otherwise. */
static int parse_braces(parser *ps, int *mn, int *mx) {
  size_t j = ps->i + 1;
  long a = 0, b;
  int nd = 0;
  while (j < ps->n && unit_digit(ps->p[j]) && nd < 7) a = a * 10 + (long)(ps->p[j++] - '0'), nd++;
  if (!nd) return 0;
  b = a;
  if (j < ps->n && ps->p[j] == ',') {
    j++;
    nd = 0;
    b = 0;
    while (j < ps->n && unit_digit(ps->p[j]) && nd < 7) b = b * 10 + (long)(ps->p[j++] - '0'), nd++;
    if (!nd) b = -1;
  }
  if (j >= ps->n || ps->p[j] != '}') return 0;
  ps->i = j + 1;
  *mn = (int)a;
  *mx = (int)b;
  return 1;
}

static int is_quant_start(parser *ps) {
  int c = peek(ps);
  if (c == '*' || c == '+' || c == '?') return 1;
  if (c == '{') {
    size_t save = ps->i;
    int a, b;
    int ok = parse_braces(ps, &a, &b);
    ps->i = save;
    return ok;
  }
  return 0;
}

static int parse_atom(parser *ps) {
  int c = peek(ps);
  if (is_quant_start(ps)) {
    fail_at(ps, "nothing to repeat");
    return 0;
  }
  ps->i++;
  switch (c) {
  case '(': {
    int look = 0, neg = 0;
    if (peek(ps) == '?') {
      ps->i++;
      int k = peek(ps);
      ps->i++;
      if (k == '=') look = 1;
      else if (k == '!') look = 1, neg = 1;
      else if (k != ':') {
        fail_at(ps, "only (?: (?= and (?! groups are supported");
        return 0;
      }
    }
    int body = parse_alt(ps);
    if (peek(ps) != ')') {
      fail_at(ps, "unbalanced (");
      return 0;
    }
    ps->i++;
    return look ? mk(ps, N_LOOK, neg, 0, body, -1) : body;
  }
  case '[': return parse_class(ps);
  case '.': return mk(ps, N_ANY, 0, 0, -1, -1);
  case '^': return mk(ps, N_BOL, 0, 0, -1, -1);
  case '$': return mk(ps, N_EOL, 0, 0, -1, -1);
  case '\\': {
    unsigned cl;
    uint32_t u = parse_escape(ps, &cl, 0);
    if (ps->err) return 0;
    if (cl) {
      int si = new_set(ps);
      if (si < 0) return 0;
      ps->sets[si].classes = cl;
      return mk(ps, N_SET, si, 0, -1, -1);
    }
    return mk(ps, N_CHAR, (int)u, 0, -1, -1);
  }
  default: return mk(ps, N_CHAR, c, 0, -1, -1);
  }
}

static int nullable(const parser *ps, int k) {
  const node *x = &ps->nodes[k];
  switch (x->type) {
  case N_CHAR:
  case N_SET:
  case N_ANY: return 0;
  case N_CAT: return nullable(ps, x->kid) && nullable(ps, x->kid2);
  case N_ALT: return nullable(ps, x->kid) || nullable(ps, x->kid2);
  case N_REP: return x->a == 0 || nullable(ps, x->kid);
  default: return 1; /* empty, assertions */
  }
}

static int parse_seq(parser *ps) {
  int seq = mk(ps, N_EMPTY, 0, 0, -1, -1);
  while (!ps->err && ps->i < ps->n && peek(ps) != '|' && peek(ps) != ')') {
    int atom = parse_atom(ps);
    if (ps->err) return 0;
    if (is_quant_start(ps)) {
      int t = ps->nodes[atom].type;
      if (t == N_LOOK || t == N_BOL || t == N_EOL) {
        fail_at(ps, "an assertion cannot be repeated");
        return 0;
      }
      int mn = 0, mx = -1, c = peek(ps);
      if (c == '*') ps->i++;
      else if (c == '+') mn = 1, ps->i++;
      else if (c == '?') mx = 1, ps->i++;
      else parse_braces(ps, &mn, &mx);
      if (mx >= 0 && mx < mn) {
        fail_at(ps, "repetition {m,n} with n < m");
        return 0;
      }
      if (mn > 1000 || mx > 1000) {
        fail_at(ps, "repetition count over 1000");
        return 0;
      }
      int greedy = 1;
      if (peek(ps) == '?') greedy = 0, ps->i++;
      if (mx < 0 && nullable(ps, atom)) {
        fail_at(ps, "unbounded repetition of something that can match empty");
        return 0;
      }
      atom = mk(ps, N_REP, mn, mx, atom, -1);
      if (!ps->err) ps->nodes[atom].greedy = greedy;
      if (is_quant_start(ps)) {
        fail_at(ps, "nothing to repeat");
        return 0;
      }
    }
    seq = ps->nodes[seq].type == N_EMPTY ? atom : mk(ps, N_CAT, 0, 0, seq, atom);
  }
  return seq;
}

static int parse_alt(parser *ps) {
  int left = parse_seq(ps);
  while (!ps->err && peek(ps) == '|') {
    ps->i++;
    int right = parse_seq(ps);
    left = mk(ps, N_ALT, 0, 0, left, right);
  }
  return left;
}

/* ---------- code generation ---------- */

static int emit(parser *ps, int op, int x, int y) {
  if (ps->err) return 0;
  if (ps->np == ps->pcap) {
    if (ps->pcap >= MAX_PROG) {
      fail_at(ps, "pattern too large once repetitions are unrolled");
      return 0;
    }
    int cap = ps->pcap ? 2 * ps->pcap : 64;
    inst *np = realloc(ps->prog, (size_t)cap * sizeof *np);
    if (!np) {
      fail_at(ps, "out of memory");
      return 0;
    }
    ps->prog = np;
    ps->pcap = cap;
  }
  ps->prog[ps->np].op = op;
  ps->prog[ps->np].x = x;
  ps->prog[ps->np].y = y;
  return ps->np++;
}

static void gen(parser *ps, int k) {
  if (ps->err) return;
  node x = ps->nodes[k]; /* copy: emit() never touches nodes, but keep it obviously safe */
  switch (x.type) {
  case N_EMPTY: break;
  case N_CHAR: emit(ps, I_CHAR, x.a, 0); break;
  case N_SET: emit(ps, I_SET, x.a, 0); break;
  case N_ANY: emit(ps, I_ANY, 0, 0); break;
  case N_BOL: emit(ps, I_BOL, 0, 0); break;
  case N_EOL: emit(ps, I_EOL, 0, 0); break;
  case N_CAT:
    gen(ps, x.kid);
    gen(ps, x.kid2);
    break;
  case N_ALT: {
    int s = emit(ps, I_SPLIT, 0, 0);
    gen(ps, x.kid);
    int j = emit(ps, I_JMP, 0, 0);
    if (ps->err) return;
    ps->prog[s].x = s + 1;
    ps->prog[s].y = ps->np;
    gen(ps, x.kid2);
    if (ps->err) return;
    ps->prog[j].x = ps->np;
    break;
  }
  case N_REP: {
    for (int r = 0; r < x.a; r++) gen(ps, x.kid);
    if (x.b < 0) { /* loop: SPLIT body/exit, body, JMP back */
      int s = emit(ps, I_SPLIT, 0, 0);
      gen(ps, x.kid);
      emit(ps, I_JMP, s, 0);
      if (ps->err) return;
      ps->prog[s].x = x.greedy ? s + 1 : ps->np;
      ps->prog[s].y = x.greedy ? ps->np : s + 1;
    } else if (x.b > x.a) { /* nested optionals: (?:e(?:e(?:e)?)?)? with one shared exit */
      int n_opt = x.b - x.a;
      int *splits = malloc((size_t)n_opt * sizeof *splits);
      if (!splits) {
        fail_at(ps, "out of memory");
        return;
      }
      for (int r = 0; r < n_opt; r++) {
        splits[r] = emit(ps, I_SPLIT, 0, 0);
        gen(ps, x.kid);
      }
      if (!ps->err)
        for (int r = 0; r < n_opt; r++) {
          int s = splits[r];
          ps->prog[s].x = x.greedy ? s + 1 : ps->np;
          ps->prog[s].y = x.greedy ? ps->np : s + 1;
        }
      free(splits);
    }
    break;
  }
  case N_LOOK: {
    int l = emit(ps, I_LOOK, x.a, 0);
    gen(ps, x.kid);
    emit(ps, I_LOOKEND, 0, 0);
    if (ps->err) return;
    ps->prog[l].y = ps->np;
    break;
  }
  }
}

/* ---------- compiling: llama.cpp's category collapse, then parse and generate ---------- */

/* The \p{..} names llama.cpp recognises, the stand-in unit of their class in the collapsed
 * text, and the ASCII members spelt as bracket contents (its own lists, kept as they are: '~'
 * is not among the symbols, so in a collapsed pattern \p{S} does not match '~'). */
static const struct {
  const char *name;
  unsigned char unit;
  const char *ascii;
} k_cat[] = {
    {"\\p{N}", 0xD1, "0-9"},
    {"\\p{L}", 0xD2, "A-Za-z"},
    {"\\p{P}", 0xD3, "!-#%-*,-/:-;?-@\\[-\\]_\\{\\}"},
    {"\\p{M}", 0xD4, ""},
    {"\\p{S}", 0xD5, "\\$\\+<->^`\\|"},
    {"\\p{Lu}", 0xD2, "A-Za-z"},
    {"\\p{Ll}", 0xD2, "A-Za-z"},
    {"\\p{Lt}", 0xD2, "A-Za-z"},
    {"\\p{Lm}", 0xD2, "A-Za-z"},
    {"\\p{Lo}", 0xD2, "A-Za-z"},
};

static int find_cat(const char *s, size_t n) {
  for (size_t k = 0; k < KS_ARRAY_LEN(k_cat); k++)
    if (strlen(k_cat[k].name) == n && memcmp(k_cat[k].name, s, n) == 0) return (int)k;
  return -1;
}

/* The collapsed pattern as units (bytes), built the way llama.cpp rewrites the pattern text:
 * \p{X} becomes "[" stand-in + ASCII members "]", or just the members inside brackets. */
static uint32_t *collapse_pattern(const char *pat, size_t *n_out) {
  size_t len = strlen(pat);
  uint32_t *u = malloc((len * 40 + 1) * sizeof *u); /* each \p{X} (>= 5 chars) grows < 40x */
  if (!u) return NULL;
  size_t w = 0;
  int inside = 0;
  for (size_t i = 0; i < len; i++) {
    if (pat[i] == '[' && (i == 0 || pat[i - 1] != '\\')) {
      u[w++] = '[';
      inside = 1;
      continue;
    }
    if (inside && pat[i] == ']' && pat[i - 1] != '\\') {
      u[w++] = ']';
      inside = 0;
      continue;
    }
    if (pat[i] == '\\' && i + 3 < len && pat[i + 1] == 'p' && pat[i + 2] == '{') {
      const char *close = memchr(pat + i + 3, '}', len - i - 3);
      if (close && (size_t)(close - pat) <= i + 10) {
        int k = find_cat(pat + i, (size_t)(close - pat) - i + 1);
        if (k >= 0) {
          if (!inside) u[w++] = '[';
          u[w++] = k_cat[k].unit;
          for (const char *a = k_cat[k].ascii; *a; a++) u[w++] = (unsigned char)*a;
          if (!inside) u[w++] = ']';
          i = (size_t)(close - pat);
          continue;
        }
      }
    }
    u[w++] = (unsigned char)pat[i];
  }
  *n_out = w;
  return u;
}

static int uses_categories(const char *pat) {
  for (size_t k = 0; k < KS_ARRAY_LEN(k_cat); k++)
    if (strstr(pat, k_cat[k].name)) return 1;
  return 0;
}

void regex_destroy(ks_regex *re) {
  if (!re) return;
  for (int i = 0; i < re->n_sets; i++) free(re->sets[i].r);
  free(re->sets);
  free(re->prog);
  free(re);
}

ks_status regex_compile(ks_regex **out, const char *pattern) {
  *out = NULL;
  size_t plen = strlen(pattern), bad;
  if (!ks_utf8_valid(pattern, plen, &bad))
    return ks_fail(KS_ERR_UNSUPPORTED, "pre-tokenizer pattern \"%s\" is not valid UTF-8", pattern);
  int collapsed = uses_categories(pattern);
  uint32_t *units = NULL;
  size_t n = 0;
  if (collapsed) {
    for (size_t i = 0; i < plen; i++)
      if ((unsigned char)pattern[i] >= 0x80)
        return ks_fail(KS_ERR_UNSUPPORTED,
                       "pre-tokenizer pattern \"%s\" mixes \\p{..} categories with non-ASCII "
                       "characters, which llama.cpp does not support either",
                       pattern);
    units = collapse_pattern(pattern, &n);
  } else {
    units = malloc((plen + 1) * sizeof *units);
    uint32_t *offs = malloc((plen + 1) * sizeof *offs);
    if (units && offs) n = unicode_decode(pattern, plen, units, offs);
    free(offs);
    if (!offs) {
      free(units);
      units = NULL;
    }
  }
  if (!units) return ks_fail(KS_ERR_NOMEM, "out of memory compiling a pre-tokenizer pattern");

  parser ps;
  memset(&ps, 0, sizeof ps);
  ps.p = units;
  ps.n = n;
  int root = parse_alt(&ps);
  if (!ps.err && ps.i < ps.n) fail_at(&ps, "unbalanced )");
  if (!ps.err) {
    gen(&ps, root);
    emit(&ps, I_MATCH, 0, 0);
  }
  free(units);
  free(ps.nodes);
  ks_status st = KS_OK;
  ks_regex *re = NULL;
  if (!ps.err) {
    re = calloc(1, sizeof *re);
    if (!re) fail_at(&ps, "out of memory");
  }
  if (ps.err) {
    st = ks_fail(strcmp(ps.err, "out of memory") ? KS_ERR_UNSUPPORTED : KS_ERR_NOMEM,
                 "pre-tokenizer pattern \"%s\": %s (at unit %zu of its %s form)", pattern,
                 ps.err, ps.err_at, collapsed ? "collapsed" : "code point");
    for (int i = 0; i < ps.ns; i++) free(ps.sets[i].r);
    free(ps.sets);
    free(ps.prog);
    return st;
  }
  re->collapsed = collapsed;
  re->sets = ps.sets;
  re->n_sets = ps.ns;
  re->prog = ps.prog;
  re->n_prog = ps.np;
  *out = re;
  return KS_OK;
}

/* ---------- matching ---------- */

typedef struct {
  int pc;
  size_t pos;
} thread;

typedef struct {
  thread *t;
  size_t n, cap;
  int nomem;
} tstack;

static int push(tstack *st, int pc, size_t pos) {
  if (st->n == st->cap) {
    size_t cap = st->cap ? 2 * st->cap : 256;
    thread *nt = realloc(st->t, cap * sizeof *nt);
    if (!nt) {
      st->nomem = 1;
      return 0;
    }
    st->t = nt;
    st->cap = cap;
  }
  st->t[st->n].pc = pc;
  st->t[st->n].pos = pos;
  st->n++;
  return 1;
}

/* Runs the program from pc at pos over units [beg, end); returns the end of the first match
 * in search order, or -1. Uses the stack above its current top, and leaves it as it found it. */
static long run(const ks_regex *re, int pc, size_t pos, const uint32_t *u, size_t beg,
                size_t end, tstack *st) {
  size_t base = st->n;
  if (!push(st, pc, pos)) return -1;
  while (st->n > base) {
    st->n--;
    pc = st->t[st->n].pc;
    pos = st->t[st->n].pos;
    for (;;) {
      const inst *I = &re->prog[pc];
      int ok = 1, width = 1; /* width: units consumed on success */
      switch (I->op) {
      case I_CHAR: ok = pos < end && u[pos] == (uint32_t)I->x; break;
      case I_SET: ok = pos < end && set_has(&re->sets[I->x], u[pos]); break;
      case I_ANY: ok = pos < end && u[pos] != '\n' && u[pos] != '\r'; break;
      case I_BOL: ok = pos == beg, width = 0; break;
      case I_EOL: ok = pos == end, width = 0; break;
      case I_SPLIT:
        if (!push(st, I->y, pos)) {
          st->n = base;
          return -1;
        }
        pc = I->x;
        continue;
      case I_JMP: pc = I->x; continue;
      case I_LOOK: {
        long r = run(re, pc + 1, pos, u, beg, end, st);
        if (st->nomem) {
          st->n = base;
          return -1;
        }
        if ((r >= 0) == !I->x) {
          pc = I->y;
          continue;
        }
        ok = 0;
        break;
      }
      case I_LOOKEND:
      case I_MATCH: st->n = base; return (long)pos;
      }
      if (!ok) break;
      pc++;
      pos += (size_t)width;
    }
  }
  return -1;
}

static uint32_t text_unit(int collapsed, uint32_t cp, uint16_t fl) {
  if (!collapsed) return cp > 0x7F && (fl & KS_UC_SPACE) ? 0x0B : cp;
  if (cp < 0x80) return cp;
  if (fl & KS_UC_SPACE) return 0x0B;
  switch (fl & KS_UC_CLASS_MASK) {
  case KS_UC_NUMBER: return 0xD1;
  case KS_UC_LETTER: return 0xD2;
  case KS_UC_PUNCT: return 0xD3;
  case KS_UC_MARK: return 0xD4;
  case KS_UC_SYMBOL: return 0xD5;
  default: return 0xD0;
  }
}

ks_status regex_split(const ks_regex *re, const uint32_t *cps, const uint16_t *flags, size_t n,
                      const size_t *lens, size_t n_in, size_t *out_lens, size_t *n_out) {
  *n_out = 0;
  uint32_t *u = malloc((n ? n : 1) * sizeof *u);
  if (!u) return ks_fail(KS_ERR_NOMEM, "out of memory splitting %zu code points", n);
  for (size_t i = 0; i < n; i++) u[i] = text_unit(re->collapsed, cps[i], flags[i]);
  tstack st = {NULL, 0, 0, 0};
  size_t start = 0, no = 0;
  for (size_t k = 0; k < n_in; k++) {
    size_t beg = start, end = start + lens[k];
    size_t p = beg;
    for (size_t q = beg; q < end;) {
      long e = run(re, 0, q, u, beg, end, &st);
      if (st.nomem) break;
      if (e > (long)q) { /* an empty match is taken as none: no supported pattern has one */
        if (q > p) out_lens[no++] = q - p;
        out_lens[no++] = (size_t)e - q;
        p = q = (size_t)e;
      } else {
        q++;
      }
    }
    if (st.nomem) break;
    if (end > p) out_lens[no++] = end - p;
    start = end;
  }
  free(st.t);
  free(u);
  if (st.nomem) return ks_fail(KS_ERR_NOMEM, "out of memory matching a pre-tokenizer pattern");
  *n_out = no;
  return KS_OK;
}
