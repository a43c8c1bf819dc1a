/* tui_layout.h — where each panel of the terminal UI goes: a pure function of the terminal size
 * and the view model, giving rectangles that never overlap and never leave the screen, and the
 * column widths inside them (bar lines, heatmap cells). Tested without ncurses
 * (tests/test_tui_layout.c).
 * What it is not: it does not draw, and it does not decide what a panel says. */
#ifndef KS_TUI_LAYOUT_H
#define KS_TUI_LAYOUT_H
#include "tui_model.h"

/* h == 0 or w == 0: the panel is absent at this size. */
typedef struct {
  int y, x, h, w;
} tui_rect;

/* The smallest terminal that gets panels; below it only a message asking for more room. */
#define TUI_MIN_COLS 40
#define TUI_MIN_ROWS 12
#define TUI_PCT_W 6 /* "100.0%" */

typedef struct {
  int cols, rows;
  int too_small;          /* only `message` is shown */
  tui_rect header;        /* title, model, selection, state */
  tui_rect prompt;        /* the prompt line (or the prompt being typed) */
  tui_rect text;          /* title row, conversation text, provenance strip */
  tui_rect bars;          /* title row, then one line per bar */
  tui_rect heat;          /* title row, provenance glyph per column, one row per step */
  tui_rect stats;
  tui_rect legend, keys;  /* the two bottom lines */
  tui_rect help;          /* overlay drawn over the rest when the help is open */
  tui_rect message;       /* the whole screen when too small */
  int text_lines;         /* conversation text rows inside text */
  int text_strip;         /* 1: text's last row is the provenance strip */
  int bar_rows;           /* bar lines below the bars title */
  int bar_pos_w, bar_label_w, bar_w; /* a bar line: glyph, ' ', pos, ' ', label, ' ', bar,
                                      * ' ', percentage (TUI_PCT_W) */
  int heat_rows, heat_label_w, heat_cols; /* a heatmap row: label, ' ', cells */
  int stats_side;         /* the stats are a column on the right (else a band at the bottom) */
} tui_layout;

/* m may be NULL (no help overlay, positions up to 4 digits). */
void tui_layout_compute(tui_layout *l, int cols, int rows, const tui_model *m);

/* Whether two rectangles share a cell (absent ones share none). */
int tui_rect_overlap(tui_rect a, tui_rect b);
/* Whether r lies inside a cols x rows screen (absent ones do). */
int tui_rect_inside(tui_rect r, int cols, int rows);

#endif
