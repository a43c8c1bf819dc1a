/* tui_draw.h — paints the view model into the ncurses screen at the places tui_layout gives.
 * It only reads the model; the caller owns the terminal (initscr/endwin) and the event loop. */
#ifndef KS_TUI_DRAW_H
#define KS_TUI_DRAW_H
#include "tui_layout.h"
#include "tui_model.h"

typedef struct {
  int color; /* colour pairs are set up (a colour terminal and NO_COLOR unset) */
  int utf8;  /* the locale is UTF-8: block glyphs and non-ASCII text; else ASCII only */
} tui_style;

/* After initscr: sets up the colour pairs when s->color. */
void tui_draw_init(const tui_style *s);
/* Draws everything into stdscr and refreshes. */
void tui_draw(const tui_model *m, const tui_layout *l, const tui_style *s);

#endif
