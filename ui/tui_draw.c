/* tui_draw.c — paints the view model with ncurses (see tui_draw.h). Every panel is drawn inside
 * its layout rectangle and clipped there; provenance is always a glyph ('=' cached, '+' computed
 * in this request's prefill, '*' generated) and, with colour, also a colour, so the screen reads
 * the same under NO_COLOR. It only reads the model. */
#define NCURSES_WIDECHAR 1
#include <curses.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "tui_draw.h"

enum { PAIR_CACHED = 1, PAIR_COMPUTED, PAIR_GENERATED, PAIR_TITLE, PAIR_WARN, PAIR_DIM };

void tui_draw_init(const tui_style *s) {
  if (!s->color) return;
  start_color();
  use_default_colors();
  init_pair(PAIR_CACHED, COLOR_CYAN, -1);
  init_pair(PAIR_COMPUTED, COLOR_YELLOW, -1);
  init_pair(PAIR_GENERATED, COLOR_GREEN, -1);
  init_pair(PAIR_TITLE, COLOR_BLACK, COLOR_CYAN);
  init_pair(PAIR_WARN, COLOR_RED, -1);
  init_pair(PAIR_DIM, COLOR_BLUE, -1);
}

static attr_t prov_attr(const tui_style *s, int prov) {
  if (!s->color) return A_NORMAL;
  switch (prov) {
  case KS_POS_CACHED: return COLOR_PAIR(PAIR_CACHED);
  case KS_POS_COMPUTED: return COLOR_PAIR(PAIR_COMPUTED);
  case KS_POS_GENERATED: return COLOR_PAIR(PAIR_GENERATED) | A_BOLD;
  default: return A_NORMAL;
  }
}

/* Text fitted to w columns at (y, x); without a UTF-8 locale every non-ASCII character is
 * shown as '?', since the terminal could not show it. Returns the columns used. */
static int put(int y, int x, int w, const char *text, const tui_style *s) {
  if (w <= 0) return 0;
  char ascii[1024];
  const char *src = text;
  if (!s->utf8) {
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)text; *p && o + 1 < sizeof ascii; p++) {
      if (*p < 0x80) ascii[o++] = (char)*p;
      else if ((*p & 0xC0) != 0x80) ascii[o++] = '?'; /* one '?' per character */
    }
    ascii[o] = 0;
    src = ascii;
  }
  char buf[1024];
  int used = tui_fit(buf, sizeof buf, src, w);
  mvaddstr(y, x, buf);
  return used;
}

/* Blank-padded title row in reverse video. */
static void title_row(int y, int x, int w, const char *text, const tui_style *s) {
  attr_t a = s->color ? COLOR_PAIR(PAIR_TITLE) : A_REVERSE;
  attron(a);
  mvhline(y, x, ' ', w);
  put(y, x, w, text, s);
  attroff(a);
}

static void draw_header(const tui_model *m, const tui_layout *l, const tui_style *s) {
  char sel[96], buf[512];
  if (m->layer < 0) snprintf(sel, sizeof sel, "view off (v: on)");
  else if (m->agg == TUI_AGG_HEAD)
    snprintf(sel, sizeof sel, "layer %d/%d  head %d/%d", m->layer + 1, m->n_layer, m->head + 1,
             m->n_head);
  else
    snprintf(sel, sizeof sel, "layer %d/%d  %s over %d heads", m->layer + 1, m->n_layer,
             tui_agg_name(m->agg), m->n_head);
  const char *state = m->phase == TUI_IDLE ? "IDLE"
                      : m->phase == TUI_DONE ? "DONE"
                      : m->paused ? "PAUSED"
                                  : "RUNNING";
  const char *name = strrchr(m->model_name, '/');
  char req[48] = "no request";
  if (m->request)
    snprintf(req, sizeof req, "request %d%s", m->request, m->continued ? " (continued)" : "");
  /* the state first: it is what changes, and it must survive a narrow terminal */
  snprintf(buf, sizeof buf, " %s | %s | %s | kvscope tui | %s", state, sel, req,
           name ? name + 1 : m->model_name);
  title_row(l->header.y, l->header.x, l->header.w, buf, s);
}

static void draw_prompt(const tui_model *m, const tui_layout *l, const tui_style *s) {
  const tui_rect *r = &l->prompt;
  if (!r->h) return;
  if (m->input != TUI_INPUT_NONE) {
    const char *lead = m->input == TUI_INPUT_NEW ? "new prompt> " : "continue> ";
    attron(A_BOLD);
    int x = put(r->y, r->x, r->w, lead, s);
    attroff(A_BOLD);
    /* the end of a long line stays visible: show its tail */
    const char *t = m->input_buf;
    int room = r->w - x - 1;
    while (*t && tui_width(t) > room) {
      t++;
      while ((*t & 0xC0) == 0x80) t++;
    }
    x += put(r->y, r->x + x, room, t, s);
    attron(A_REVERSE);
    mvaddch(r->y, r->x + KS_MIN(x, r->w - 1), ' ');
    attroff(A_REVERSE);
    return;
  }
  char buf[400];
  if (m->request == 0) snprintf(buf, sizeof buf, "prompt> (none: press n to type one)");
  else snprintf(buf, sizeof buf, "%s> %s", m->continued ? "continue" : "prompt", m->prompt_text);
  put(r->y, r->x, r->w, buf, s);
}

/* Walks the conversation text wrapped at w columns; draws the lines first..first+max-1 at y0
 * (when draw) and returns the number of lines. */
static int walk_text(const tui_model *m, int w, int first, int max, int y0, int x0, int draw,
                     const tui_style *s) {
  int line = 0, col = 0;
  for (int i = 0; i < m->n_pos; i++) {
    const tui_position *p = &m->pos[i];
    const unsigned char *t = (const unsigned char *)m->text + p->text_off;
    int n = p->text_len;
    attr_t a = prov_attr(s, p->prov);
    for (int k = 0; k < n;) {
      int len = 1;
      unsigned c = t[k];
      if (c >= 0xF0) len = 4;
      else if (c >= 0xE0) len = 3;
      else if (c >= 0xC0) len = 2;
      if (k + len > n) len = n - k;
      if (c == '\n') {
        line++;
        col = 0;
        k++;
        continue;
      }
      int cw = 1;
      char ch[8];
      if (c < 0x20 || c == 0x7F) {
        ch[0] = ' ';
        ch[1] = 0;
      } else if (c >= 0x80 && !s->utf8) {
        ch[0] = '?';
        ch[1] = 0;
      } else {
        memcpy(ch, t + k, (size_t)len);
        ch[len] = 0;
        wchar_t wc;
        mbstate_t st;
        memset(&st, 0, sizeof st);
        if (len > 1 && mbrtowc(&wc, ch, (size_t)len, &st) == (size_t)len) {
          cw = wcwidth(wc);
          if (cw < 0) cw = 1;
        }
      }
      if (col + cw > w) {
        line++;
        col = 0;
      }
      if (draw && line >= first && line < first + max) {
        attron(a);
        mvaddstr(y0 + line - first, x0 + col, ch);
        attroff(a);
      }
      col += cw;
      k += len;
    }
  }
  return line + 1;
}

static void draw_text(const tui_model *m, const tui_layout *l, const tui_style *s) {
  const tui_rect *r = &l->text;
  if (!r->h) return;
  int c, p, g;
  tui_model_prov_counts(m, &c, &p, &g);
  char buf[256];
  snprintf(buf, sizeof buf, " conversation: %d positions  = cached %d  + prefill %d  * generated %d",
           m->n_pos, c, p, g);
  title_row(r->y, r->x, r->w, buf, s);
  if (l->text_lines > 0) {
    int total = walk_text(m, r->w, 0, 0, 0, 0, 0, s);
    int first = KS_MAX(0, total - l->text_lines);
    walk_text(m, r->w, first, l->text_lines, r->y + 1, r->x, 1, s);
  }
  if (l->text_strip) {
    /* one glyph per position, the latest at the right; '<' says earlier ones are cut */
    int y = r->y + r->h - 1, w = r->w;
    int start = KS_MAX(0, m->n_pos - w);
    int x = r->x;
    if (start > 0) {
      mvaddch(y, x++, '<');
      start++;
    }
    for (int i = start; i < m->n_pos && x < r->x + w; i++, x++) {
      attr_t a = prov_attr(s, m->pos[i].prov);
      attron(a);
      mvaddch(y, x, (chtype)(unsigned char)tui_prov_glyph(m->pos[i].prov));
      attroff(a);
    }
  }
}

static void bar_fill(int y, int x, int w, double frac, attr_t a, const tui_style *s) {
  if (frac < 0 || !isfinite(frac)) frac = 0;
  if (frac > 1) frac = 1;
  attron(a);
  if (s->utf8) {
    static const char *part[8] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉"};
    int eighths = (int)lround(frac * w * 8);
    int full = eighths / 8;
    for (int i = 0; i < full; i++) mvaddstr(y, x + i, "█");
    if (full < w && eighths % 8) mvaddstr(y, x + full, part[eighths % 8]);
  } else {
    int full = (int)lround(frac * w);
    for (int i = 0; i < full; i++) mvaddch(y, x + i, '#');
  }
  attroff(a);
}

static const char *row_source(const tui_model *m) {
  if (m->layer < 0) return "the attention view is off: press v to watch a layer";
  if (m->request == 0) return "no request yet: press n and type a prompt";
  return "no attention row yet: rows come with each generated token";
}

static void draw_bars(const tui_model *m, const tui_layout *l, const tui_style *s) {
  const tui_rect *r = &l->bars;
  if (!r->h) return;
  const tui_row *row = tui_model_focused(m);
  char buf[400];
  if (!row) {
    title_row(r->y, r->x, r->w, " attention", s);
    put(r->y + 1, r->x + 1, r->w - 1, row_source(m), s);
    return;
  }
  const char *tok = row->pos < m->n_pos ? m->pos[row->pos].label : "?";
  const char *q = m->pos[row->pos - 1].label;
  char sel[48];
  if (m->agg == TUI_AGG_HEAD) snprintf(sel, sizeof sel, "L%d h%d", row->layer + 1, m->head + 1);
  else snprintf(sel, sizeof sel, "L%d %s", row->layer + 1, tui_agg_name(m->agg));
  snprintf(buf, sizeof buf, " attention %s: '%s'@%d -> '%s'@%d%s", sel, q, row->pos - 1, tok,
           row->pos, m->focus ? " (earlier step)" : "");
  title_row(r->y, r->x, r->w, buf, s);
  int max = l->bar_rows;
  tui_bar bars[256];
  float rest;
  int n_rest;
  /* with more positions than lines, the last line sums the rest so the lines add up to 100% */
  int k = row->pos > max ? max - 1 : max;
  if (k > (int)KS_ARRAY_LEN(bars)) k = (int)KS_ARRAY_LEN(bars);
  int nb = tui_model_bars(m, row, k, bars, &rest, &n_rest);
  int lx = r->x + 1 + 1 + l->bar_pos_w + 1;
  int bx = lx + l->bar_label_w + 1;
  int px = bx + l->bar_w + 1;
  for (int i = 0; i < nb; i++) {
    int y = r->y + 1 + i;
    attr_t a = prov_attr(s, bars[i].prov);
    attron(a);
    mvaddch(y, r->x, (chtype)(unsigned char)tui_prov_glyph(bars[i].prov));
    attroff(a);
    snprintf(buf, sizeof buf, "%*d", l->bar_pos_w, bars[i].pos);
    put(y, r->x + 2, l->bar_pos_w, buf, s);
    put(y, lx, l->bar_label_w, bars[i].label, s);
    bar_fill(y, bx, l->bar_w, bars[i].weight, a, s);
    snprintf(buf, sizeof buf, "%5.1f%%", 100.0 * bars[i].weight);
    put(y, px, TUI_PCT_W, buf, s);
  }
  if (n_rest > 0 && nb < max) {
    int y = r->y + 1 + nb;
    snprintf(buf, sizeof buf, "~ %d others", n_rest);
    attron(A_DIM);
    put(y, r->x, bx - r->x - 1, buf, s);
    attroff(A_DIM);
    bar_fill(y, bx, l->bar_w, rest, A_DIM, s);
    snprintf(buf, sizeof buf, "%5.1f%%", 100.0 * rest);
    put(y, px, TUI_PCT_W, buf, s);
  }
}

static void draw_heat(const tui_model *m, const tui_layout *l, const tui_style *s) {
  const tui_rect *r = &l->heat;
  if (!r->h) return;
  const tui_row *focus = tui_model_focused(m);
  int layer = focus ? focus->layer : m->layer;
  /* the recent rows of the same layer as the bars, oldest first */
  const tui_row *rows[128];
  int n = 0;
  for (int back = 0; n < l->heat_rows && n < (int)KS_ARRAY_LEN(rows); back++) {
    const tui_row *row = tui_model_row(m, back);
    if (!row) break;
    if (row->layer == layer) rows[n++] = row;
  }
  char buf[256];
  char sel[32];
  if (m->agg == TUI_AGG_HEAD) snprintf(sel, sizeof sel, "h%d", m->head + 1);
  else snprintf(sel, sizeof sel, "%s", tui_agg_name(m->agg));
  snprintf(buf, sizeof buf, " heatmap L%d %s: %d recent steps (shade: weight / row max)",
           layer + 1, sel, n);
  title_row(r->y, r->x, r->w, buf, s);
  if (n == 0) {
    put(r->y + 2, r->x + 1, r->w - 1, row_source(m), s);
    return;
  }
  int end = rows[0]->pos; /* the latest row attends to the most positions */
  int c0 = KS_MAX(0, end - l->heat_cols);
  int cx = r->x + l->heat_label_w + 1;
  /* column header: the provenance of every position shown */
  put(r->y + 1, r->x, l->heat_label_w, c0 > 0 ? "<pos" : "pos", s);
  for (int j = c0; j < end && j < m->n_pos; j++) {
    attr_t a = prov_attr(s, m->pos[j].prov);
    attron(a);
    mvaddch(r->y + 1, cx + j - c0, (chtype)(unsigned char)tui_prov_glyph(m->pos[j].prov));
    attroff(a);
  }
  static const char *shade_utf8[5] = {"·", "░", "▒", "▓", "█"};
  static const char shade_ascii[5] = {'.', ':', 'o', 'O', '@'};
  float *v = malloc(sizeof(float) * (size_t)(end + 1));
  if (!v) return;
  for (int i = 0; i < n; i++) {
    const tui_row *row = rows[n - 1 - i];
    int y = r->y + 2 + i;
    attr_t la = row == focus ? A_REVERSE : A_NORMAL;
    attron(la);
    put(y, r->x, l->heat_label_w, m->pos[row->pos - 1].label, s);
    attroff(la);
    tui_model_view_row(m, row, v);
    float mx = 0;
    for (int j = 0; j < row->pos; j++) mx = fmaxf(mx, v[j]);
    for (int j = c0; j < row->pos && j - c0 < l->heat_cols; j++) {
      float f = mx > 0 ? v[j] / mx : 0;
      int lev = f < 0.02f ? 0 : KS_MIN(4, 1 + (int)(f * 4.0f));
      attr_t a = prov_attr(s, m->pos[j].prov);
      attron(a);
      if (s->utf8) mvaddstr(y, cx + j - c0, shade_utf8[lev]);
      else mvaddch(y, cx + j - c0, (chtype)shade_ascii[lev]);
      attroff(a);
    }
  }
  free(v);
}

static void draw_stats(const tui_model *m, const tui_layout *l, const tui_style *s) {
  const tui_rect *r = &l->stats;
  if (!r->h) return;
  int y = r->y, h = r->h;
  if (l->stats_side) {
    title_row(y, r->x, r->w, " stats", s);
    y++;
    h--;
  } else {
    attron(A_DIM);
    mvhline(y, r->x, s->utf8 ? ACS_HLINE : '-', r->w);
    attroff(A_DIM);
    y++;
    h--;
  }
  char lines[24][256];
  int n = tui_stats_lines(m, r->w - 1, lines, KS_MIN(h, 24));
  for (int i = 0; i < n; i++) put(y + i, r->x + 1, r->w - 1, lines[i], s);
}

static void draw_legend(const tui_model *m, const tui_layout *l, const tui_style *s) {
  (void)m;
  const tui_rect *r = &l->legend;
  if (!r->h) return;
  static const struct {
    int prov;
    const char *text;
  } items[3] = {{KS_POS_CACHED, "cached (prefix cache)"},
                {KS_POS_COMPUTED, "prefill (this request)"},
                {KS_POS_GENERATED, "generated"}};
  int x = r->x;
  for (int i = 0; i < 3 && x < r->x + r->w; i++) {
    attr_t a = prov_attr(s, items[i].prov) | A_BOLD;
    attron(a);
    mvaddch(r->y, x, (chtype)(unsigned char)tui_prov_glyph(items[i].prov));
    attroff(a);
    x += 2;
    if (x >= r->x + r->w) break;
    x += put(r->y, x, r->x + r->w - x, items[i].text, s) + 2;
  }
  if (x < r->x + r->w)
    put(r->y, x, r->x + r->w - x, s->utf8 ? "| weight ·░▒▓█" : "| weight .:oO@", s);
}

static void draw_keys(const tui_model *m, const tui_layout *l, const tui_style *s) {
  const tui_rect *r = &l->keys;
  if (!r->h) return;
  int x = r->x;
  if (m->status[0]) {
    attr_t a = s->color ? COLOR_PAIR(PAIR_WARN) | A_BOLD : A_BOLD;
    attron(a);
    x += put(r->y, x, r->w, m->status, s) + 2;
    attroff(a);
  }
  const char *keys = m->input != TUI_INPUT_NONE
                         ? "Enter submit  Esc cancel  Backspace delete  ^U clear"
                         : "q quit  ? help  space pause  s step  l/L layer  h/H head  m mean/max  "
                           "n new  c continue  x clear cache  v view  </> steps";
  if (x < r->x + r->w) {
    attron(A_DIM);
    put(r->y, x, r->x + r->w - x, keys, s);
    attroff(A_DIM);
  }
}

static void draw_help(const tui_layout *l, const tui_style *s) {
  const tui_rect *r = &l->help;
  if (!r->h) return;
  static const char *lines[] = {
      "kvscope tui: keys",
      "",
      "  l / L      next / previous layer (from the next token)",
      "  h / H      next / previous head",
      "  m          one head -> mean over heads -> max over heads",
      "  v          attention view on/off (off: nothing exported)",
      "  < / >      look at an earlier / later step's row",
      "  space, p   pause / resume generation",
      "  s          pause and step one token",
      "  n          type a new prompt (Enter runs it)",
      "  c          continue the conversation (earlier turns cached)",
      "  x          clear the prompt cache",
      "  ?          this help (any key closes it)",
      "  q          quit",
      "",
      "Positions: = cached (K/V reused from the prefix cache),",
      "+ computed in this request's prefill, * generated.",
      "Bars: the latest token's attention over earlier positions.",
  };
  for (int y = r->y; y < r->y + r->h; y++) mvhline(y, r->x, ' ', r->w);
  if (r->w > 2 && r->h > 2) {
    mvhline(r->y, r->x, ACS_HLINE, r->w);
    mvhline(r->y + r->h - 1, r->x, ACS_HLINE, r->w);
    mvvline(r->y, r->x, ACS_VLINE, r->h);
    mvvline(r->y, r->x + r->w - 1, ACS_VLINE, r->h);
    mvaddch(r->y, r->x, ACS_ULCORNER);
    mvaddch(r->y, r->x + r->w - 1, ACS_URCORNER);
    mvaddch(r->y + r->h - 1, r->x, ACS_LLCORNER);
    mvaddch(r->y + r->h - 1, r->x + r->w - 1, ACS_LRCORNER);
  }
  for (int i = 0; i < (int)KS_ARRAY_LEN(lines) && i < r->h - 2; i++) {
    if (i == 0) attron(A_BOLD);
    put(r->y + 1 + i, r->x + 2, r->w - 4, lines[i], s);
    if (i == 0) attroff(A_BOLD);
  }
}

void tui_draw(const tui_model *m, const tui_layout *l, const tui_style *s) {
  erase();
  if (l->too_small) {
    char buf[64];
    snprintf(buf, sizeof buf, "need %dx%d, have %dx%d", TUI_MIN_COLS, TUI_MIN_ROWS, l->cols, l->rows);
    const char *msg[3] = {"terminal too small:", buf, "q quits"};
    int y0 = KS_MAX(0, l->rows / 2 - 1);
    for (int i = 0; i < 3 && y0 + i < l->rows; i++) put(y0 + i, 0, l->cols, msg[i], s);
    refresh();
    return;
  }
  draw_header(m, l, s);
  draw_prompt(m, l, s);
  draw_text(m, l, s);
  draw_bars(m, l, s);
  draw_heat(m, l, s);
  draw_stats(m, l, s);
  draw_legend(m, l, s);
  draw_keys(m, l, s);
  if (m->help) draw_help(l, s);
  refresh();
}
