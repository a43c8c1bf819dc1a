/* tui_model.h — the terminal UI's view model: everything the screen shows, updated from engine
 * events (ks_event) and key presses, and nothing that knows about a terminal. The conversation's
 * positions (token, label, text, provenance), the attention rows received for recent steps, the
 * view selection (layer, head or mean/max over heads, focused step), request and cache
 * statistics, and the interaction state (paused, help, prompt being typed).
 * Derived views that drawing and --snapshot share are pure functions of it: the bars of a row,
 * the stats lines, the JSON line of a step.
 * What it is not: it never calls the engine (ui/tui_main.c does, and feeds the results in), and
 * it never draws (ui/tui_draw.c reads it). Tests link it without ncurses. */
#ifndef KS_TUI_MODEL_H
#define KS_TUI_MODEL_H
#include <stdio.h>

#include "kvscope.h"

#define TUI_LABEL_MAX 24   /* bytes of a position's label, NUL included */
#define TUI_HISTORY 96     /* attention rows kept: the heatmap's recent steps */
#define TUI_INPUT_MAX 1024 /* bytes of a prompt typed on the prompt line */

typedef enum { TUI_AGG_HEAD = 0, TUI_AGG_MEAN = 1, TUI_AGG_MAX = 2 } tui_agg;
typedef enum { TUI_IDLE = 0, TUI_RUNNING = 1, TUI_DONE = 2 } tui_phase;
typedef enum { TUI_INPUT_NONE = 0, TUI_INPUT_NEW = 1, TUI_INPUT_CONTINUE = 2 } tui_input;

typedef struct {
  int token;
  int prov;                  /* ks_provenance; 0 until the engine says */
  char label[TUI_LABEL_MAX]; /* one line, spaces trimmed, controls escaped ("\n") */
  int text_off, text_len;    /* its decoded text in tui_model.text */
} tui_position;

/* The attention row that chose one token: the query at pos-1 over positions 0..pos-1. */
typedef struct {
  int request;  /* tui_model.request it belongs to */
  int step;     /* 0 = the request's first token (its row is the prompt's last position) */
  int pos;      /* position of the sampled token = the number of attended positions */
  int token;
  int layer;    /* layer the engine watched for it */
  float *w;     /* (n_head, pos) softmax rows */
} tui_row;

/* One bar: a position and its weight in the selected view of a row. */
typedef struct {
  int pos, prov;
  float weight;
  const char *label;
} tui_bar;

typedef struct {
  /* fixed for the session */
  int n_layer, n_head, n_ctx;
  char model_name[128], device[128];
  const ks_tokenizer *tok; /* for labels and text; NULL: labels are "#id" */
  /* view selection */
  int layer;       /* watched layer; -1 when the view is off */
  int view_layer;  /* layer to watch again when the view is turned back on */
  int head;        /* 0..n_head-1 when agg is TUI_AGG_HEAD */
  tui_agg agg;
  int focus;       /* steps back from the latest row (0: the latest) */
  /* the conversation's positions */
  tui_position *pos; /* (n_ctx + 1) */
  int n_pos;
  char *text;        /* decoded text of positions 0..n_pos-1 */
  size_t text_len, text_cap;
  ks_detok dt;
  /* attention rows of recent steps, a ring */
  tui_row rows[TUI_HISTORY];
  int n_rows;        /* rows held (<= TUI_HISTORY) */
  int row_next;      /* ring index the next row goes to */
  /* the current request */
  int request;       /* requests started so far (1-based index of the current one) */
  int continued;     /* it continues the previous one */
  tui_phase phase;
  int prompt_tokens, cached, computed, generated;
  double t_compute;  /* seconds spent in the engine for this request */
  double ttft;       /* seconds from submit to the first token (engine time only) */
  double t_decode;   /* seconds in the engine for tokens after the first */
  int have_usage;
  ks_usage usage;    /* KS_EV_DONE's accounting */
  int have_cache;
  ks_cache_info cache;
  double session_cost, session_cost_uncached;
  char prompt_text[256]; /* what the prompt line shows (sanitised, may be cut) */
  /* interaction */
  int paused, help;
  tui_input input;
  char input_buf[TUI_INPUT_MAX];
  int input_len;
  char status[160];  /* last message (errors, "cache cleared") */
} tui_model;

ks_status tui_model_init(tui_model *m, int n_layer, int n_head, int n_ctx, const ks_tokenizer *tok,
                         const char *model_name, const char *device);
void tui_model_deinit(tui_model *m);

/* A request was submitted with these tokens. continued: they extend the previous request's
 * positions (its prompt and reply), which are kept; otherwise everything starts afresh. */
ks_status tui_model_begin(tui_model *m, const int *tokens, int n, int continued,
                          const char *prompt_text);
/* Applies one event from ks_engine_step; seconds: the time that call took. */
ks_status tui_model_on_event(tui_model *m, const ks_event *ev, double seconds);
void tui_model_set_cache(tui_model *m, const ks_cache_info *ci);
/* A request that ends without KS_EV_DONE (cancelled by a new prompt, or failed). */
void tui_model_abandon(tui_model *m, const char *why);
void tui_model_set_status(tui_model *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Selection changes (wrap around). tui_model_step_layer and tui_model_toggle_view return the
 * layer the engine must now watch (-1: off); a head key leaves mean/max for single heads. */
int tui_model_step_layer(tui_model *m, int delta);
void tui_model_step_head(tui_model *m, int delta);
void tui_model_cycle_agg(tui_model *m);
int tui_model_toggle_view(tui_model *m);
void tui_model_step_focus(tui_model *m, int delta);

/* Rows: back = 0 is the latest, 1 the one before...; NULL when there is no such row. */
const tui_row *tui_model_row(const tui_model *m, int back);
const tui_row *tui_model_focused(const tui_model *m);
/* The selected view of a row (head, mean or max over heads) into out (r->pos values). */
void tui_model_view_row(const tui_model *m, const tui_row *r, float *out);
/* The heaviest positions of the selected view of r, heaviest first (ties: earlier position),
 * at most max of them; *rest is the summed weight of the positions left out (*n_rest of them).
 * Returns the number of bars. */
int tui_model_bars(const tui_model *m, const tui_row *r, int max, tui_bar *bars, float *rest,
                   int *n_rest);
/* Counts of positions by provenance. */
void tui_model_prov_counts(const tui_model *m, int *cached, int *computed, int *generated);

/* Stats packed into lines of at most `width` columns: returns the number of lines written into
 * lines[i] (each cap bytes), at most max_lines. */
int tui_stats_lines(const tui_model *m, int width, char (*lines)[256], int max_lines);

/* Writes one JSON line, newline included, describing the model after a step (type "step") or
 * at the end of a request ("done"): the --snapshot format (docs/tui.md lists the fields). */
void tui_model_write_json(const tui_model *m, FILE *f, const char *type);

/* Glyph of a provenance: '=' cached, '+' computed in this request's prefill, '*' generated,
 * '?' not yet known. */
char tui_prov_glyph(int prov);
const char *tui_prov_name(int prov);
const char *tui_agg_name(tui_agg a);

/* Copies the longest prefix of UTF-8 s that fits `width` columns into out (cap bytes,
 * NUL-terminated); returns the columns used. Columns per code point come from wcwidth() in the
 * current locale (1 where it does not know); a UTF-8 sequence is never split. */
int tui_fit(char *out, size_t cap, const char *s, int width);
/* Columns of UTF-8 s counted like tui_fit. */
int tui_width(const char *s);

#endif
