/* tui_model.c — the terminal UI's view model (see tui_model.h): conversation positions, the
 * attention rows of recent steps, the view selection and the statistics, and the pure views
 * derived from them (bars, stats lines, JSON lines). No terminal, no engine calls. */
#include "tui_model.h"

#include <math.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

/* ---- UTF-8 helpers ---- */

/* Length (1..4) of the valid UTF-8 sequence at s (n bytes available) and its code point in
 * *cp; 0 when the bytes there are not a valid sequence. */
static int utf8_seq(const unsigned char *s, size_t n, unsigned *cp) {
  if (n == 0) return 0;
  unsigned c = s[0];
  int len;
  unsigned min;
  if (c < 0x80) { *cp = c; return 1; }
  if ((c & 0xE0) == 0xC0) { len = 2; c &= 0x1F; min = 0x80; }
  else if ((c & 0xF0) == 0xE0) { len = 3; c &= 0x0F; min = 0x800; }
  else if ((c & 0xF8) == 0xF0) { len = 4; c &= 0x07; min = 0x10000; }
  else return 0;
  if ((size_t)len > n) return 0;
  for (int i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  *cp = c;
  return len;
}

static int cp_width(unsigned cp) {
  int w = wcwidth((wchar_t)cp);
  return w < 0 ? 1 : w; /* unknown to the locale (or C locale): assume one column */
}

int tui_fit(char *out, size_t cap, const char *s, int width) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s), i = 0, o = 0;
  int cols = 0;
  while (i < n) {
    unsigned cp;
    int len = utf8_seq(p + i, n - i, &cp);
    int w = len ? cp_width(cp) : 1;
    if (!len) len = 1;
    if (cols + w > width || o + (size_t)len + 1 > cap) break;
    memcpy(out + o, p + i, (size_t)len);
    o += (size_t)len;
    i += (size_t)len;
    cols += w;
  }
  if (cap) out[o] = 0;
  return cols;
}

int tui_width(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s), i = 0;
  int cols = 0;
  while (i < n) {
    unsigned cp;
    int len = utf8_seq(p + i, n - i, &cp);
    cols += len ? cp_width(cp) : 1;
    i += len ? (size_t)len : 1;
  }
  return cols;
}

/* One printable line from arbitrary bytes: valid UTF-8 kept, control characters escaped
 * (a label or a prompt line must never move the cursor), invalid bytes shown as '?'. */
static void sanitise(const char *in, size_t n, char *out, size_t cap, int newline_as_space) {
  const unsigned char *s = (const unsigned char *)in;
  size_t o = 0;
  for (size_t i = 0; i < n && o + 1 < cap;) {
    unsigned cp;
    int len = utf8_seq(s + i, n - i, &cp);
    char esc[3] = {0};
    if (len == 1 && cp < 0x20) {
      if (cp == '\n' && newline_as_space) esc[0] = ' ';
      else if (cp == '\n') { esc[0] = '\\'; esc[1] = 'n'; }
      else if (cp == '\t') { esc[0] = '\\'; esc[1] = 't'; }
      else if (cp == '\r') { esc[0] = '\\'; esc[1] = 'r'; }
      else esc[0] = '?';
    } else if (len == 1 && cp == 0x7F) {
      esc[0] = '?';
    } else if (len == 0 || (cp >= 0x80 && cp < 0xA0)) {
      esc[0] = '?'; /* invalid byte, or a C1 control */
      if (len == 0) len = 1;
    }
    if (esc[0]) {
      size_t el = strlen(esc);
      if (o + el + 1 > cap) break;
      memcpy(out + o, esc, el);
      o += el;
    } else {
      if (o + (size_t)len + 1 > cap) break;
      memcpy(out + o, s + i, (size_t)len);
      o += (size_t)len;
    }
    i += (size_t)len;
  }
  if (cap) out[o] = 0;
}

/* ---- names ---- */

char tui_prov_glyph(int prov) {
  switch (prov) {
  case KS_POS_CACHED: return '=';
  case KS_POS_COMPUTED: return '+';
  case KS_POS_GENERATED: return '*';
  default: return '?';
  }
}

const char *tui_prov_name(int prov) {
  switch (prov) {
  case KS_POS_CACHED: return "cached";
  case KS_POS_COMPUTED: return "computed";
  case KS_POS_GENERATED: return "generated";
  default: return "unknown";
  }
}

const char *tui_agg_name(tui_agg a) {
  return a == TUI_AGG_MEAN ? "mean" : a == TUI_AGG_MAX ? "max" : "head";
}

/* ---- life cycle ---- */

static void row_free(tui_row *r) {
  free(r->w);
  memset(r, 0, sizeof *r);
}

static void rows_clear(tui_model *m) {
  for (int i = 0; i < TUI_HISTORY; i++) row_free(&m->rows[i]);
  m->n_rows = 0;
  m->row_next = 0;
  m->focus = 0;
}

ks_status tui_model_init(tui_model *m, int n_layer, int n_head, int n_ctx, const ks_tokenizer *tok,
                         const char *model_name, const char *device) {
  memset(m, 0, sizeof *m);
  if (n_layer <= 0 || n_head <= 0 || n_ctx <= 0)
    return ks_fail(KS_ERR_ARG, "the view needs a model with layers, heads and a context "
                   "(got %d layers, %d heads, context %d)", n_layer, n_head, n_ctx);
  m->n_layer = n_layer;
  m->n_head = n_head;
  m->n_ctx = n_ctx;
  m->tok = tok;
  snprintf(m->model_name, sizeof m->model_name, "%s", model_name ? model_name : "");
  snprintf(m->device, sizeof m->device, "%s", device ? device : "");
  /* one more than the context: the last sampled token is shown though never evaluated */
  m->pos = calloc((size_t)n_ctx + 1, sizeof *m->pos);
  if (!m->pos) return ks_fail(KS_ERR_NOMEM, "out of memory for the view of %d positions", n_ctx);
  detok_init(&m->dt);
  return KS_OK;
}

void tui_model_deinit(tui_model *m) {
  rows_clear(m);
  free(m->pos);
  free(m->text);
  memset(m, 0, sizeof *m);
}

void tui_model_set_status(tui_model *m, const char *fmt, ...) {
  char raw[sizeof m->status];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  sanitise(raw, strlen(raw), m->status, sizeof m->status, 1);
}

/* ---- positions ---- */

static ks_status text_append(tui_model *m, const char *s, size_t n) {
  if (m->text_len + n + 1 > m->text_cap) {
    size_t nc = (m->text_cap + n + 1) * 2;
    char *nt = realloc(m->text, nc);
    if (!nt) return ks_fail(KS_ERR_NOMEM, "out of memory for the conversation text");
    m->text = nt;
    m->text_cap = nc;
  }
  memcpy(m->text + m->text_len, s, n);
  m->text_len += n;
  m->text[m->text_len] = 0;
  return KS_OK;
}

static void make_label(const tui_model *m, int token, char *out) {
  char raw[96];
  size_t n;
  if (m->tok) {
    ks_detok d;
    detok_init(&d);
    n = tokenizer_decode(m->tok, &d, token, raw, sizeof raw);
    if (n == 0) { /* a control token, or part of a character: show the piece as stored */
      size_t pl;
      const char *p = tokenizer_piece(m->tok, token, &pl);
      n = KS_MIN(pl, sizeof raw - 1);
      memcpy(raw, p, n);
      raw[n] = 0;
    }
  } else {
    n = (size_t)snprintf(raw, sizeof raw, "#%d", token);
  }
  /* labels read as words: the spaces around a piece only make the bars ragged */
  size_t a = 0, b = n;
  while (a < b && raw[a] == ' ') a++;
  while (b > a && raw[b - 1] == ' ') b--;
  if (a == b) {
    snprintf(out, TUI_LABEL_MAX, "%s", n ? "(space)" : "(empty)");
    return;
  }
  sanitise(raw + a, b - a, out, TUI_LABEL_MAX, 0);
}

static ks_status add_position(tui_model *m, int token, int prov) {
  if (m->n_pos > m->n_ctx)
    return ks_fail(KS_ERR_ARG, "the view holds %d positions, the whole context: a request "
                   "cannot add more", m->n_pos);
  tui_position *p = &m->pos[m->n_pos];
  memset(p, 0, sizeof *p);
  p->token = token;
  p->prov = prov;
  make_label(m, token, p->label);
  p->text_off = (int)m->text_len;
  if (m->tok) {
    char buf[512];
    size_t n = tokenizer_decode(m->tok, &m->dt, token, buf, sizeof buf);
    ks_status st = text_append(m, buf, n);
    if (st) return st;
  } else {
    ks_status st = text_append(m, p->label, strlen(p->label));
    if (st) return st;
  }
  p->text_len = (int)(m->text_len - (size_t)p->text_off);
  m->n_pos++;
  return KS_OK;
}

ks_status tui_model_begin(tui_model *m, const int *tokens, int n, int continued,
                          const char *prompt_text) {
  if (n <= 0 || n > m->n_ctx)
    return ks_fail(KS_ERR_ARG, "a request of %d tokens does not fit the view's context of %d",
                   n, m->n_ctx);
  int keep = 0;
  if (continued)
    while (keep < m->n_pos && keep < n && m->pos[keep].token == tokens[keep]) keep++;
  if (!continued) {
    rows_clear(m);
  } else {
    /* rows that attended to positions which change are no longer about this conversation */
    for (int i = 0; i < TUI_HISTORY; i++)
      if (m->rows[i].w && m->rows[i].pos > keep) row_free(&m->rows[i]);
    int held = 0;
    for (int i = 0; i < TUI_HISTORY; i++) held += m->rows[i].w != NULL;
    if (held != m->n_rows) { /* compact: keep the ring's order, oldest first */
      tui_row tmp[TUI_HISTORY];
      int k = 0;
      for (int back = m->n_rows - 1; back >= 0; back--) {
        tui_row *r = &m->rows[(m->row_next - 1 - back + 2 * TUI_HISTORY) % TUI_HISTORY];
        if (r->w) tmp[k++] = *r;
      }
      memset(m->rows, 0, sizeof m->rows);
      memcpy(m->rows, tmp, sizeof(tui_row) * (size_t)k);
      m->n_rows = k;
      m->row_next = k % TUI_HISTORY;
    }
    m->focus = 0;
  }
  /* the text is decoded again from the start: cheap, and the decoder's state (a space after
   * BOS, a character split over tokens) then always matches the positions */
  m->n_pos = 0;
  m->text_len = 0;
  detok_init(&m->dt);
  for (int i = 0; i < n; i++) {
    ks_status st = add_position(m, tokens[i], 0);
    if (st) return st;
  }
  m->request++;
  m->continued = continued;
  m->phase = TUI_RUNNING;
  m->prompt_tokens = n;
  m->cached = m->computed = m->generated = 0;
  m->t_compute = m->ttft = m->t_decode = 0;
  m->have_usage = 0;
  memset(&m->usage, 0, sizeof m->usage);
  const char *pt = prompt_text ? prompt_text : "";
  sanitise(pt, strlen(pt), m->prompt_text, sizeof m->prompt_text, 1);
  return KS_OK;
}

static ks_status store_row(tui_model *m, const ks_event *ev) {
  const int n = ev->pos;
  if (n <= 0 || ev->probs_stride < n)
    return ks_fail(KS_ERR_ARG, "attention rows of %d positions with a stride of %d", n,
                   ev->probs_stride);
  float *w = malloc(sizeof(float) * (size_t)m->n_head * (size_t)n);
  if (!w) return ks_fail(KS_ERR_NOMEM, "out of memory for an attention row");
  for (int h = 0; h < m->n_head; h++)
    memcpy(w + (size_t)h * n, ev->probs + (size_t)h * ev->probs_stride, sizeof(float) * (size_t)n);
  tui_row *r = &m->rows[m->row_next];
  row_free(r);
  r->request = m->request;
  r->step = m->generated - 1;
  r->pos = n;
  r->token = ev->token;
  r->layer = m->layer;
  r->w = w;
  m->row_next = (m->row_next + 1) % TUI_HISTORY;
  if (m->n_rows < TUI_HISTORY) m->n_rows++;
  /* someone browsing earlier steps keeps looking at the same one */
  if (m->focus > 0) m->focus = KS_MIN(m->focus + 1, m->n_rows - 1);
  return KS_OK;
}

ks_status tui_model_on_event(tui_model *m, const ks_event *ev, double seconds) {
  m->t_compute += seconds;
  switch (ev->kind) {
  case KS_EV_PROVENANCE:
    if (ev->pos < 0 || ev->n < 0 || ev->pos + ev->n > m->n_pos)
      return ks_fail(KS_ERR_ARG, "provenance for positions %d..%d but the view holds %d: an "
                     "event from another request?", ev->pos, ev->pos + ev->n - 1, m->n_pos);
    for (int i = ev->pos; i < ev->pos + ev->n; i++) m->pos[i].prov = ev->prov;
    if (ev->prov == KS_POS_CACHED) m->cached += ev->n;
    else if (ev->prov == KS_POS_COMPUTED) m->computed += ev->n;
    return KS_OK;
  case KS_EV_TOKEN: {
    if (ev->pos != m->n_pos)
      return ks_fail(KS_ERR_ARG, "a token for position %d but the view holds %d positions: an "
                     "event from another request?", ev->pos, m->n_pos);
    if (m->generated == 0) m->ttft = m->t_compute;
    else m->t_decode += seconds;
    ks_status st = add_position(m, ev->token, KS_POS_GENERATED);
    if (st) return st;
    m->generated++;
    if (ev->probs && m->layer >= 0) return store_row(m, ev);
    return KS_OK;
  }
  case KS_EV_DONE:
    m->usage = ev->usage;
    m->have_usage = 1;
    m->phase = TUI_DONE;
    m->session_cost += ev->usage.cost;
    m->session_cost_uncached += ev->usage.cost_uncached;
    return KS_OK;
  }
  return ks_fail(KS_ERR_ARG, "unknown engine event kind %d", (int)ev->kind);
}

void tui_model_set_cache(tui_model *m, const ks_cache_info *ci) {
  m->cache = *ci;
  m->have_cache = 1;
}

void tui_model_abandon(tui_model *m, const char *why) {
  if (m->phase == TUI_RUNNING) m->phase = TUI_DONE;
  if (why) tui_model_set_status(m, "%s", why);
}

/* ---- selection ---- */

static int wrap(int v, int n) { return ((v % n) + n) % n; }

int tui_model_step_layer(tui_model *m, int delta) {
  if (m->layer < 0) m->view_layer = wrap(m->view_layer + delta, m->n_layer);
  else m->layer = m->view_layer = wrap(m->layer + delta, m->n_layer);
  return m->layer;
}

void tui_model_step_head(tui_model *m, int delta) {
  if (m->agg != TUI_AGG_HEAD) m->agg = TUI_AGG_HEAD; /* a head key goes back to single heads */
  else m->head = wrap(m->head + delta, m->n_head);
}

void tui_model_cycle_agg(tui_model *m) { m->agg = (tui_agg)((m->agg + 1) % 3); }

int tui_model_toggle_view(tui_model *m) {
  if (m->layer >= 0) {
    m->view_layer = m->layer;
    m->layer = -1;
  } else {
    m->layer = m->view_layer;
  }
  return m->layer;
}

void tui_model_step_focus(tui_model *m, int delta) {
  int f = m->focus - delta; /* delta +1: a later step, i.e. fewer steps back */
  if (f > m->n_rows - 1) f = m->n_rows - 1;
  if (f < 0) f = 0;
  m->focus = f;
}

/* ---- derived views ---- */

const tui_row *tui_model_row(const tui_model *m, int back) {
  if (back < 0 || back >= m->n_rows) return NULL;
  const tui_row *r = &m->rows[(m->row_next - 1 - back + 2 * TUI_HISTORY) % TUI_HISTORY];
  return r->w ? r : NULL;
}

const tui_row *tui_model_focused(const tui_model *m) {
  const tui_row *r = tui_model_row(m, m->focus);
  return r ? r : tui_model_row(m, 0);
}

void tui_model_view_row(const tui_model *m, const tui_row *r, float *out) {
  const int n = r->pos, H = m->n_head;
  for (int j = 0; j < n; j++) {
    if (m->agg == TUI_AGG_HEAD) {
      out[j] = r->w[(size_t)KS_MIN(m->head, H - 1) * n + j];
    } else {
      float s = 0, mx = 0;
      for (int h = 0; h < H; h++) {
        float v = r->w[(size_t)h * n + j];
        s += v;
        if (h == 0 || v > mx) mx = v;
      }
      out[j] = m->agg == TUI_AGG_MEAN ? s / (float)H : mx;
    }
  }
}

typedef struct {
  float w;
  int pos;
} weighted;

static int by_weight(const void *a, const void *b) {
  const weighted *x = a, *y = b;
  if (x->w != y->w) return x->w > y->w ? -1 : 1;
  return x->pos - y->pos;
}

int tui_model_bars(const tui_model *m, const tui_row *r, int max, tui_bar *bars, float *rest,
                   int *n_rest) {
  *rest = 0;
  *n_rest = 0;
  if (!r || max <= 0) return 0;
  const int n = r->pos;
  float *v = malloc(sizeof(float) * (size_t)n);
  weighted *ws = malloc(sizeof(weighted) * (size_t)n);
  if (!v || !ws) {
    free(v);
    free(ws);
    return 0;
  }
  tui_model_view_row(m, r, v);
  for (int j = 0; j < n; j++) {
    ws[j].w = isfinite(v[j]) ? v[j] : 0; /* a broken row must not break the sort */
    ws[j].pos = j;
  }
  qsort(ws, (size_t)n, sizeof *ws, by_weight);
  int k = KS_MIN(max, n);
  for (int i = 0; i < k; i++) {
    bars[i].pos = ws[i].pos;
    bars[i].weight = ws[i].w;
    bars[i].prov = ws[i].pos < m->n_pos ? m->pos[ws[i].pos].prov : 0;
    bars[i].label = ws[i].pos < m->n_pos ? m->pos[ws[i].pos].label : "?";
  }
  double s = 0;
  for (int i = k; i < n; i++) s += ws[i].w;
  *rest = (float)s;
  *n_rest = n - k;
  free(v);
  free(ws);
  return k;
}

void tui_model_prov_counts(const tui_model *m, int *cached, int *computed, int *generated) {
  int c = 0, p = 0, g = 0;
  for (int i = 0; i < m->n_pos; i++) {
    c += m->pos[i].prov == KS_POS_CACHED;
    p += m->pos[i].prov == KS_POS_COMPUTED;
    g += m->pos[i].prov == KS_POS_GENERATED;
  }
  *cached = c;
  *computed = p;
  *generated = g;
}

static double hit_rate(const tui_model *m) {
  if (m->have_usage) return m->usage.hit_rate;
  return m->prompt_tokens ? (double)m->cached / m->prompt_tokens : 0;
}

static double ttft_s(const tui_model *m) {
  return m->have_usage && m->usage.ttft > 0 ? m->usage.ttft : m->ttft;
}

static double decode_rate(const tui_model *m) {
  return m->generated > 1 && m->t_decode > 0 ? (m->generated - 1) / m->t_decode : 0;
}

int tui_stats_lines(const tui_model *m, int width, char (*lines)[256], int max_lines) {
  char items[12][160];
  int n = 0;
  snprintf(items[n++], sizeof items[0], "device %s", m->device);
  if (m->request == 0) {
    snprintf(items[n++], sizeof items[0], "no request yet");
  } else {
    snprintf(items[n++], sizeof items[0], "prompt %d tok", m->prompt_tokens);
    snprintf(items[n++], sizeof items[0], "cached %d (%.0f%%)", m->cached, 100 * hit_rate(m));
    snprintf(items[n++], sizeof items[0], "prefill %d", m->computed);
    snprintf(items[n++], sizeof items[0], "generated %d", m->generated);
    if (m->generated > 0) snprintf(items[n++], sizeof items[0], "TTFT %.1f ms", 1e3 * ttft_s(m));
    else snprintf(items[n++], sizeof items[0], "TTFT -");
    if (decode_rate(m) > 0) snprintf(items[n++], sizeof items[0], "%.1f tok/s", decode_rate(m));
    else snprintf(items[n++], sizeof items[0], "- tok/s");
  }
  if (m->have_cache && m->cache.enabled)
    snprintf(items[n++], sizeof items[0], "K/V blocks %d used, %d free, %d cached, %llu evicted",
             m->cache.used, m->cache.free_blocks, m->cache.cached,
             (unsigned long long)m->cache.evictions);
  else if (m->have_cache)
    snprintf(items[n++], sizeof items[0], "no prompt cache");
  if (m->have_usage)
    snprintf(items[n++], sizeof items[0], "cost $%.6f (uncached $%.6f)", m->usage.cost,
             m->usage.cost_uncached);
  if (m->request > 1)
    snprintf(items[n++], sizeof items[0], "session $%.6f (uncached $%.6f)", m->session_cost,
             m->session_cost_uncached);
  if (width <= 0 || max_lines <= 0) return 0;
  int nl = 0, cols = 0;
  lines[0][0] = 0;
  for (int i = 0; i < n; i++) {
    const char *rest = items[i];
    int cut = 0;
    while (*rest) {
      char fit[256];
      int w = tui_fit(fit, sizeof fit, rest, width);
      if (cols > 0 && cols + 3 + tui_width(rest) <= width) { /* joins the current line */
        size_t l = strlen(lines[nl]);
        snprintf(lines[nl] + l, 256 - l, " | %s", rest);
        cols += 3 + tui_width(rest);
        break;
      }
      if (cols > 0) {
        if (nl + 1 >= max_lines) return nl + 1;
        nl++;
        cols = 0;
      }
      if (!fit[0]) return nl; /* not even one character fits */
      /* an item wider than the line continues on the next one, cut at a space if there is
       * one in the second half of the line */
      size_t take = strlen(fit);
      if (rest[take]) {
        char *sp = strrchr(fit, ' ');
        if (sp && sp - fit >= (ptrdiff_t)take / 2) {
          take = (size_t)(sp - fit) + 1;
          fit[take - 1] = 0;
          w = tui_width(fit);
        }
      }
      snprintf(lines[nl], 256, "%s", fit);
      cut |= rest[take] != 0;
      cols = cut ? width : w; /* a cut item keeps its lines to itself */
      rest += take;
    }
  }
  return nl + 1;
}

/* ---- JSON ---- */

static void json_str(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c == '\n') fputs("\\n", f);
    else if (c == '\t') fputs("\\t", f);
    else if (c == '\r') fputs("\\r", f);
    else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
    else fputc(c, f);
  }
  fputc('"', f);
}

static void json_num(FILE *f, double v, const char *fmt) {
  if (isfinite(v)) fprintf(f, fmt, v);
  else fputs("null", f);
}

static void json_provenance(const tui_model *m, FILE *f) {
  fputs("\"provenance\":\"", f);
  for (int i = 0; i < m->n_pos; i++) fputc(tui_prov_glyph(m->pos[i].prov), f);
  int c, p, g;
  tui_model_prov_counts(m, &c, &p, &g);
  fprintf(f, "\",\"counts\":{\"cached\":%d,\"computed\":%d,\"generated\":%d}", c, p, g);
}

static void json_stats(const tui_model *m, FILE *f) {
  fprintf(f, "\"stats\":{\"device\":");
  json_str(f, m->device, strlen(m->device));
  fprintf(f, ",\"prompt_tokens\":%d,\"cached_tokens\":%d,\"prefill_tokens\":%d,"
          "\"generated_tokens\":%d,\"hit_rate\":", m->prompt_tokens, m->cached, m->computed,
          m->generated);
  json_num(f, hit_rate(m), "%.4f");
  fputs(",\"ttft_ms\":", f);
  json_num(f, 1e3 * ttft_s(m), "%.3f");
  fputs(",\"decode_tokens_per_s\":", f);
  json_num(f, decode_rate(m), "%.2f");
  if (m->have_cache)
    fprintf(f, ",\"blocks\":{\"total\":%d,\"used\":%d,\"free\":%d,\"cached\":%d,\"evicted\":%llu}",
            m->cache.n_blocks, m->cache.used, m->cache.free_blocks, m->cache.cached,
            (unsigned long long)m->cache.evictions);
  if (m->have_usage) {
    fputs(",\"cost\":", f);
    json_num(f, m->usage.cost, "%.8f");
    fputs(",\"cost_uncached\":", f);
    json_num(f, m->usage.cost_uncached, "%.8f");
  }
  fputc('}', f);
}

void tui_model_write_json(const tui_model *m, FILE *f, const char *type) {
  fprintf(f, "{\"type\":\"%s\",\"request\":%d,\"continued\":%s,\"view\":{\"layer\":%d,"
          "\"head\":%d,\"agg\":\"%s\"}", type, m->request, m->continued ? "true" : "false",
          m->layer, m->head, tui_agg_name(m->agg));
  if (!strcmp(type, "step") && m->n_pos > 0) {
    const tui_position *p = &m->pos[m->n_pos - 1];
    fprintf(f, ",\"step\":%d,\"pos\":%d,\"token\":%d,\"label\":", m->generated - 1,
            m->n_pos - 1, p->token);
    json_str(f, p->label, strlen(p->label));
    fputs(",\"text\":", f);
    json_str(f, m->text + p->text_off, (size_t)p->text_len);
    /* the row is this step's only if the engine exported one for it */
    const tui_row *r = tui_model_row(m, 0);
    if (r && (r->request != m->request || r->step != m->generated - 1)) r = NULL;
    if (r) {
      float *v = malloc(sizeof(float) * (size_t)r->pos);
      tui_bar *bars = malloc(sizeof(tui_bar) * 16);
      if (v && bars) {
        tui_model_view_row(m, r, v);
        double sum = 0;
        fprintf(f, ",\"row_layer\":%d,\"query_pos\":%d,\"row\":[", r->layer, r->pos - 1);
        for (int j = 0; j < r->pos; j++) {
          if (j) fputc(',', f);
          json_num(f, v[j], "%.6g");
          sum += v[j];
        }
        fputs("],\"row_sum\":", f);
        json_num(f, sum, "%.6f");
        float rest;
        int n_rest;
        int nb = tui_model_bars(m, r, 16, bars, &rest, &n_rest);
        fputs(",\"bars\":[", f);
        for (int i = 0; i < nb; i++) {
          fprintf(f, "%s{\"pos\":%d,\"prov\":\"%s\",\"label\":", i ? "," : "", bars[i].pos,
                  tui_prov_name(bars[i].prov));
          json_str(f, bars[i].label, strlen(bars[i].label));
          fprintf(f, ",\"pct\":%.1f}", 100.0 * bars[i].weight);
        }
        fprintf(f, "],\"rest_pct\":%.1f,\"n_rest\":%d", 100.0 * rest, n_rest);
      }
      free(v);
      free(bars);
    } else {
      fputs(",\"row\":null", f);
    }
  }
  fputc(',', f);
  json_provenance(m, f);
  fputc(',', f);
  json_stats(m, f);
  if (!strcmp(type, "done")) {
    const ks_usage *u = &m->usage;
    fprintf(f, ",\"usage\":{\"prompt_tokens\":%d,\"cached_tokens\":%d,"
            "\"cache_creation_tokens\":%d,\"completion_tokens\":%d,\"stop\":%d},\"text\":",
            u->prompt_tokens, u->cached_tokens, u->cache_creation_tokens, u->completion_tokens,
            (int)u->stop);
    json_str(f, m->text ? m->text : "", m->text_len);
  }
  if (m->status[0]) {
    fputs(",\"status\":", f);
    json_str(f, m->status, strlen(m->status));
  }
  fputs("}\n", f);
}
