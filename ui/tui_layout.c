/* tui_layout.c — the terminal UI's layout (see tui_layout.h). Top to bottom: header, prompt
 * line, the main area (conversation text over the attention panels: bars beside or above the
 * heatmap), the stats, the legend and the key line. Wide terminals move the stats to a column
 * on the right so the attention panels get the height; small ones drop the heatmap first, then
 * the provenance strip, and below TUI_MIN_COLS x TUI_MIN_ROWS show only a message. */
#include "tui_layout.h"

#include <string.h>

static tui_rect rect(int y, int x, int h, int w) {
  tui_rect r = {y, x, h > 0 && w > 0 ? h : 0, h > 0 && w > 0 ? w : 0};
  return r;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static int digits(int v) {
  int d = 1;
  while (v >= 10) {
    v /= 10;
    d++;
  }
  return d;
}

/* Widths inside the bars panel; the panel is dropped when a bar line cannot fit. */
static void bar_columns(tui_layout *l) {
  const int fixed = 1 + 1 + l->bar_pos_w + 1 + 1 + 1 + TUI_PCT_W; /* all but label and bar */
  int room = l->bars.w - fixed;
  if (room < 6 || l->bars.h < 2) {
    l->bars = rect(0, 0, 0, 0);
    return;
  }
  l->bar_label_w = clampi(room * 2 / 5, 3, 16);
  l->bar_w = room - l->bar_label_w;
  l->bar_rows = l->bars.h - 1;
}

static void heat_columns(tui_layout *l) {
  if (l->heat.w < 16 || l->heat.h < 4) {
    l->heat = rect(0, 0, 0, 0);
    return;
  }
  l->heat_label_w = clampi(l->heat.w / 6, 4, 10);
  l->heat_cols = l->heat.w - l->heat_label_w - 1;
  l->heat_rows = l->heat.h - 2;
}

void tui_layout_compute(tui_layout *l, int cols, int rows, const tui_model *m) {
  memset(l, 0, sizeof *l);
  l->cols = cols > 0 ? cols : 0;
  l->rows = rows > 0 ? rows : 0;
  if (cols < TUI_MIN_COLS || rows < TUI_MIN_ROWS) {
    l->too_small = 1;
    l->message = rect(0, 0, l->rows, l->cols);
    return;
  }
  l->bar_pos_w = KS_MAX(3, digits(m ? m->n_ctx : 9999));
  l->header = rect(0, 0, 1, cols);
  l->prompt = rect(1, 0, 1, cols);
  l->legend = rect(rows - 2, 0, 1, cols);
  l->keys = rect(rows - 1, 0, 1, cols);
  const int top = 2, body_h = rows - 4; /* >= 8 */

  /* stats: a column on the right when wide, else a band at the bottom of the body */
  int main_w = cols, main_h = body_h;
  if (cols >= 110) {
    int sw = cols >= 150 ? 44 : 36;
    l->stats = rect(top, cols - sw, body_h, sw);
    l->stats_side = 1;
    main_w = cols - sw - 1; /* one blank column between */
  } else {
    int sh = body_h >= 18 ? 4 : body_h >= 14 ? 3 : 2;
    l->stats = rect(top + body_h - sh, 0, sh, cols);
    main_h = body_h - sh;
  }

  /* conversation text: title, lines, provenance strip; about a quarter of the main area */
  int text_h;
  if (main_h >= 10) {
    text_h = clampi(main_h / 4, 4, 12);
    l->text_strip = 1;
  } else {
    text_h = 2; /* title (with the provenance counts) and one line */
    l->text_strip = 0;
  }
  l->text = rect(top, 0, text_h, main_w);
  l->text_lines = text_h - 1 - l->text_strip;

  /* attention: bars and heatmap side by side when there is width, else stacked */
  const int ay = top + text_h, ah = main_h - text_h;
  if (main_w >= 72 && ah >= 6) {
    int bw = KS_MIN((main_w - 1) / 2, 64);
    l->bars = rect(ay, 0, ah, bw);
    l->heat = rect(ay, bw + 1, ah, main_w - bw - 1);
  } else if (ah >= 12) {
    int bh = ah / 2;
    l->bars = rect(ay, 0, bh, main_w);
    l->heat = rect(ay + bh, 0, ah - bh, main_w);
  } else {
    l->bars = rect(ay, 0, ah, main_w);
  }
  bar_columns(l);
  heat_columns(l);

  if (m && m->help) {
    int hw = KS_MIN(cols - 2, 64), hh = KS_MIN(rows - 2, 22);
    l->help = rect((rows - hh) / 2, (cols - hw) / 2, hh, hw);
  }
}

int tui_rect_overlap(tui_rect a, tui_rect b) {
  if (!a.h || !a.w || !b.h || !b.w) return 0;
  return a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
}

int tui_rect_inside(tui_rect r, int cols, int rows) {
  if (!r.h || !r.w) return 1;
  return r.x >= 0 && r.y >= 0 && r.h > 0 && r.w > 0 && r.x + r.w <= cols && r.y + r.h <= rows;
}
