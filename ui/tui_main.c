/* tui_main.c — `kvscope tui`: flags, the engine, the event loop. Engine events go into the view
 * model (tui_model.c); the screen is drawn from it (tui_draw.c) at the places the layout gives
 * (tui_layout.c). With --snapshot FILE there is no terminal at all: the same model is written
 * as one JSON line per step, for scripts and tests.
 * The terminal is always given back: endwin() runs before any exit, on q, on errors, and on
 * SIGINT/SIGTERM/SIGHUP (caught as a flag; the loop ends, then the signal is raised again).
 * What it is not: the engine's only entry is kvscope.h; nothing here knows about Vulkan. */
#define NCURSES_WIDECHAR 1
#include <curses.h>
#include <errno.h>
#include <langinfo.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

#include "kvscope.h"
#include "tui.h"
#include "tui_draw.h"
#include "tui_layout.h"
#include "tui_model.h"


static const char *g_prog = "kvscope tui";

/* ---- flags ---- */

typedef enum { ACT_NEW = 0, ACT_CONTINUE = 1 } act_kind;
typedef struct {
  act_kind kind;
  const char *text;
} tui_action;

typedef struct {
  ks_engine_opts eo;
  ks_sampling sp;
  int seed_given;
  int n_predict;
  int no_cache;
  int layer, head;
  tui_agg agg;
  int no_view;
  int delay_ms;
  int paused;
  const char *snapshot;
  tui_action *acts; /* prompts in order: -p starts a new conversation, --follow continues it */
  int n_acts;
} tui_args;

static void print_help(FILE *f) {
  fprintf(f,
    "Usage: kvscope tui [-m MODEL] [-z TOKENIZER] [-p PROMPT]... [--follow TEXT]... [options]\n"
    "Watch the model generate: for every new token, its attention over the earlier positions\n"
    "(bars and a heatmap) for one layer and head (or the mean/max over heads), with every\n"
    "position marked by where its K/V came from: '=' the prefix cache, '+' this request's\n"
    "prefill, '*' generated. Press ? inside for the keys.\n"
    "\n"
    "  -p, --prompt TEXT   a prompt to run at start; several run one after another over the\n"
    "                      same prompt cache (a later one sharing a prefix shows cache hits)\n"
    "  --follow TEXT       continue the conversation with TEXT (like the c key)\n"
    "  -f, --file PATH     read the first prompt from a file\n"
    "  --layer L, --head H first layer and head shown (1-based; default 1, 1)\n"
    "  --agg head|mean|max show one head, or the mean or max over heads (default head)\n"
    "  --no-view           start with the attention view off (nothing exported: v turns it on)\n"
    "  --delay MS          pause between tokens so they can be watched (default 40; 0: none)\n"
    "  --paused            stop after the first token of each prompt (space resumes, s steps)\n"
    "  --snapshot FILE     no terminal: write the view model as one JSON line per step and per\n"
    "                      finished request to FILE ('-': stdout), then exit\n"
    "  run's model, sampling and cache flags: -m -z -n (default 48) -c -b --temp --top-k --top-p\n"
    "  --min-p -s/--seed --device --cache-mb --cache-ttl --cache-min-tokens --cache-dir\n"
    "  --no-cache --pin-ttl --price-input --price-cached --price-output\n"
    "Environment: NO_COLOR (any value) draws without colour; glyphs carry the meaning.\n");
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", g_prog);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'kvscope tui --help'.\n");
  return 2;
}


static char *read_whole_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    ks_fail(KS_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  while (buf) {
    n += fread(buf + n, 1, cap - n, f);
    if (n < cap) break;
    char *nb = realloc(buf, cap * 2 + 1);
    if (!nb) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = nb;
    cap *= 2;
  }
  int err = ferror(f);
  fclose(f);
  if (!buf || err) {
    free(buf);
    ks_fail(KS_ERR_IO, "cannot read '%s'", path);
    return NULL;
  }
  buf[n] = 0;
  if (strlen(buf) != n) {
    free(buf);
    ks_fail(KS_ERR_ARG, "'%s' contains a NUL byte: a prompt file must be text", path);
    return NULL;
  }
  return buf;
}

/* The shipped model, found like `kvscope run` finds it: beside the binary, then the source
 * tree, then ./models. */

static int add_action(tui_args *a, act_kind k, const char *text) {
  tui_action *na = realloc(a->acts, sizeof *na * (size_t)(a->n_acts + 1));
  if (!na) return -1;
  a->acts = na;
  a->acts[a->n_acts].kind = k;
  a->acts[a->n_acts].text = text;
  a->n_acts++;
  return 0;
}

/* Returns 0, or an exit status after printing why. *file_text is the -f contents (freed by the
 * caller). */
static int parse_args(tui_args *a, int argc, char **argv, char **file_text) {
  memset(a, 0, sizeof *a);
  a->eo.device = -1;
  a->n_predict = 48;
  a->delay_ms = 40;
  sampling_default(&a->sp);
  *file_text = NULL;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
      print_help(stdout);
      return -1;
    }
    /* flags without a value */
    if (!strcmp(o, "--no-cache")) { a->no_cache = 1; continue; }
    if (!strcmp(o, "--no-view")) { a->no_view = 1; continue; }
    if (!strcmp(o, "--paused")) { a->paused = 1; continue; }
    if (o[0] != '-') return usage_error("unexpected argument '%s' (a prompt goes after -p)", o);
    if (!v) return usage_error("option %s needs a value (or is unknown: see --help)", o);
    i++;
    int iv;
    double dv;
    if (!strcmp(o, "-m") || !strcmp(o, "--model")) a->eo.model_path = v;
    else if (!strcmp(o, "-z") || !strcmp(o, "--tokenizer")) a->eo.tokenizer_path = v;
    else if (!strcmp(o, "-p") || !strcmp(o, "--prompt")) {
      if (add_action(a, ACT_NEW, v)) return usage_error("%s", "out of memory");
    } else if (!strcmp(o, "--follow")) {
      if (add_action(a, ACT_CONTINUE, v)) return usage_error("%s", "out of memory");
    } else if (!strcmp(o, "-f") || !strcmp(o, "--file")) {
      free(*file_text);
      *file_text = read_whole_file(v);
      if (!*file_text) {
        fprintf(stderr, "%s: %s\n", g_prog, ks_last_error());
        return 1;
      }
      if (add_action(a, ACT_NEW, *file_text)) return usage_error("%s", "out of memory");
    } else if (!strcmp(o, "--snapshot")) a->snapshot = v;
    else if (!strcmp(o, "--agg")) {
      if (!strcmp(v, "head")) a->agg = TUI_AGG_HEAD;
      else if (!strcmp(v, "mean")) a->agg = TUI_AGG_MEAN;
      else if (!strcmp(v, "max")) a->agg = TUI_AGG_MAX;
      else return usage_error("--agg takes head, mean or max, not '%s'", v);
    } else if (!strcmp(o, "-s") || !strcmp(o, "--seed")) {
      char *end;
      errno = 0;
      unsigned long long s = strtoull(v, &end, 10);
      if (errno || *end || end == v || v[0] == '-') return usage_error("bad seed '%s'", v);
      a->sp.seed = s;
      a->seed_given = 1;
    } else if (!strcmp(o, "--temp") || !strcmp(o, "--top-p") || !strcmp(o, "--min-p") ||
               !strcmp(o, "--cache-ttl") || !strcmp(o, "--pin-ttl") ||
               !strcmp(o, "--price-input") || !strcmp(o, "--price-cached") ||
               !strcmp(o, "--price-output")) {
      if (ks_parse_double(v, &dv) || dv < 0) return usage_error("bad non-negative number '%s'", v);
      if (!strcmp(o, "--temp")) a->sp.temp = (float)dv;
      else if (!strcmp(o, "--top-p")) a->sp.top_p = (float)dv;
      else if (!strcmp(o, "--min-p")) a->sp.min_p = (float)dv;
      else if (!strcmp(o, "--cache-ttl")) a->eo.cache.ttl = dv;
      else if (!strcmp(o, "--pin-ttl")) a->eo.cache.pin_ttl = dv;
      else if (!strcmp(o, "--price-input")) a->eo.cache.price_input = dv;
      else if (!strcmp(o, "--price-cached")) a->eo.cache.price_cached = dv;
      else a->eo.cache.price_output = dv;
    } else if (!strcmp(o, "--cache-dir")) a->eo.cache.dir = v;
    else {
      if (ks_parse_int(v, &iv)) {
        if (strcmp(o, "-n") && strcmp(o, "--n-predict") && strcmp(o, "-c") && strcmp(o, "--ctx-size") &&
            strcmp(o, "-b") && strcmp(o, "--batch") && strcmp(o, "--top-k") && strcmp(o, "--device") &&
            strcmp(o, "--cache-mb") && strcmp(o, "--cache-min-tokens") && strcmp(o, "--layer") &&
            strcmp(o, "--head") && strcmp(o, "--delay"))
          return usage_error("unknown option '%s'", o);
        return usage_error("bad integer '%s'", v);
      }
      if (!strcmp(o, "-n") || !strcmp(o, "--n-predict")) a->n_predict = iv;
      else if (!strcmp(o, "-c") || !strcmp(o, "--ctx-size")) a->eo.n_ctx = iv;
      else if (!strcmp(o, "-b") || !strcmp(o, "--batch")) a->eo.batch = iv;
      else if (!strcmp(o, "--top-k")) a->sp.top_k = iv;
      else if (!strcmp(o, "--device")) a->eo.device = iv;
      else if (!strcmp(o, "--cache-mb")) a->eo.cache.cache_mb = iv;
      else if (!strcmp(o, "--cache-min-tokens")) a->eo.cache.min_tokens = iv;
      else if (!strcmp(o, "--layer") || !strcmp(o, "--head")) {
        if (iv < 1) return usage_error("%s counts from 1 (the first layer or head is 1)", o);
        if (!strcmp(o, "--layer")) a->layer = iv;
        else a->head = iv;
      }
      else if (!strcmp(o, "--delay")) a->delay_ms = iv;
      else return usage_error("unknown option '%s'", o);
    }
  }
  if (a->n_predict < -1) return usage_error("%s", "-n must be -1 (no limit) or >= 0");
  if (a->eo.n_ctx < 0 || a->eo.batch < 0 || a->eo.cache.cache_mb < 0 || a->eo.cache.min_tokens < 0)
    return usage_error("%s", "-c, -b, --cache-mb and --cache-min-tokens must not be negative");
  if (a->delay_ms < 0) return usage_error("%s", "--delay must be >= 0 milliseconds");
  if (a->sp.top_k < 0 || a->sp.top_p <= 0 || a->sp.top_p > 1 || a->sp.min_p > 1)
    return usage_error("%s", "sampling settings out of range (top-k >= 0, 0 < top-p <= 1, "
                       "0 <= min-p <= 1)");
  if (a->snapshot && a->n_acts == 0)
    return usage_error("%s", "--snapshot needs a prompt: -p TEXT or -f FILE");
  if (!a->seed_given) a->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  if (ks_model_path_or_default(&a->eo.model_path)) {
    fprintf(stderr, "%s: %s\n", g_prog, ks_last_error());
    return 1;
  }
  return 0;
}

/* ---- the application: engine + model + the conversation's tokens ---- */

typedef struct {
  tui_args *args;
  ks_engine *e;
  tui_model m;
  int *conv;   /* (n_ctx + 1) tokens of the conversation: prompt(s) and replies */
  int n_conv;
  int busy;    /* a request is running */
  int next_act;
} tui_app;

static void refresh_cache(tui_app *app) {
  ks_cache_info ci;
  ks_engine_cache_info(app->e, &ci);
  tui_model_set_cache(&app->m, &ci);
}

/* Starts a request: a new conversation, or the current one continued with `text` (the earlier
 * turns' K/V come from the prompt cache). On failure the model's status says why. */
static ks_status start_request(tui_app *app, act_kind kind, const char *text) {
  ks_engine *e = app->e;
  const int n_ctx = ks_engine_n_ctx(e);
  if (app->busy) {
    ks_engine_cancel(e);
    app->busy = 0;
    tui_model_abandon(&app->m, NULL);
  }
  int continued = kind == ACT_CONTINUE && app->n_conv > 0;
  int *t = NULL, nt = 0;
  size_t len = strlen(text);
  ks_status st = continued ? tokenizer_encode(ks_engine_tokenizer(e), text, len, 0, &t, &nt)
                           : ks_engine_tokenize(e, text, len, &t, &nt);
  if (st) {
    tui_model_set_status(&app->m, "cannot use that prompt: %s", ks_last_error());
    return st;
  }
  int base = continued ? app->n_conv : 0;
  if (base + nt >= n_ctx) {
    free(t);
    tui_model_set_status(&app->m, "the conversation would be %d tokens but the context holds %d: "
                         "press n for a new prompt, or raise -c", base + nt, n_ctx);
    return ks_fail(KS_ERR_ARG, "%s", app->m.status);
  }
  if (nt == 0 && !continued) {
    free(t);
    tui_model_set_status(&app->m, "empty prompt");
    return ks_fail(KS_ERR_ARG, "empty prompt");
  }
  memcpy(app->conv + base, t, sizeof(int) * (size_t)nt);
  free(t);
  int n = base + nt;
  ks_request r = {0};
  r.tokens = app->conv;
  r.n_tokens = n;
  r.n_predict = app->args->n_predict < 0 ? -1 : KS_MIN(app->args->n_predict, n_ctx - n);
  r.sampling = app->args->sp;
  r.no_cache = app->args->no_cache;
  st = ks_engine_submit(e, &r);
  if (st) {
    tui_model_set_status(&app->m, "cannot run it: %s", ks_last_error());
    return st;
  }
  app->n_conv = n;
  app->busy = 1;
  app->m.status[0] = 0;
  return tui_model_begin(&app->m, app->conv, n, continued, text);
}

/* One engine step into the model. *kind: the event's kind. */
static ks_status step_once(tui_app *app, ks_event_kind *kind) {
  ks_event ev;
  double t0 = ks_now_sec();
  ks_status st = ks_engine_step(app->e, &ev);
  double dt = ks_now_sec() - t0;
  if (st) {
    app->busy = 0;
    tui_model_abandon(&app->m, NULL);
    tui_model_set_status(&app->m, "generation failed: %s", ks_last_error());
    return st;
  }
  *kind = ev.kind;
  if (ev.kind == KS_EV_TOKEN && app->n_conv <= ks_engine_n_ctx(app->e))
    app->conv[app->n_conv++] = ev.token;
  st = tui_model_on_event(&app->m, &ev, dt);
  if (ev.kind == KS_EV_DONE) app->busy = 0;
  if (ev.kind != KS_EV_PROVENANCE) refresh_cache(app);
  if (st) {
    ks_engine_cancel(app->e);
    app->busy = 0;
    tui_model_set_status(&app->m, "%s", ks_last_error());
  }
  return st;
}

/* ---- signals ---- */

static volatile sig_atomic_t g_signal;
/* Records the signal for the loop, and for the engine, which then stops a long prefill at its
 * next chunk (KS_ERR_INTERRUPTED) instead of making the terminal wait for it. */
static void on_signal(int sig) {
  g_signal = sig;
  ks_interrupt_set(sig);
}

static void install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: a blocked read returns so the loop sees the flag */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
}

/* ---- --snapshot: the same model, one JSON line per step, no terminal ---- */

static int run_snapshot(tui_app *app) {
  FILE *f = strcmp(app->args->snapshot, "-") ? fopen(app->args->snapshot, "w") : stdout;
  if (!f) {
    fprintf(stderr, "%s: cannot write the snapshot file '%s': %s\n", g_prog, app->args->snapshot,
            strerror(errno));
    return 1;
  }
  int rc = 0;
  install_signals(); /* a signal ends the run after the current step, the file flushed */
  for (int i = 0; i < app->args->n_acts && !rc && !g_signal; i++) {
    const tui_action *a = &app->args->acts[i];
    if (start_request(app, a->kind, a->text)) {
      fprintf(stderr, "%s: prompt %d: %s\n", g_prog, i + 1, app->m.status);
      rc = 1;
      break;
    }
    while (app->busy && !g_signal) {
      ks_event_kind k;
      if (step_once(app, &k)) {
        fprintf(stderr, "%s: %s\n", g_prog, app->m.status);
        rc = 1;
        break;
      }
      if (k == KS_EV_TOKEN) tui_model_write_json(&app->m, f, "step");
      else if (k == KS_EV_DONE) tui_model_write_json(&app->m, f, "done");
    }
  }
  if (fflush(f) || ferror(f)) {
    fprintf(stderr, "%s: writing the snapshot failed: %s\n", g_prog, strerror(errno));
    rc = 1;
  }
  if (f != stdout) fclose(f);
  return rc;
}

/* ---- the terminal ---- */

/* While ncurses owns the terminal, anything written to stderr (engine warnings, validation
 * messages) would land in the middle of the screen: it is kept in a temporary file and
 * copied to the real stderr after endwin. */
typedef struct {
  int saved_fd;
  FILE *log;
} stderr_hold;

static void stderr_capture(stderr_hold *h) {
  h->saved_fd = -1;
  h->log = tmpfile();
  if (!h->log) return;
  fflush(stderr);
  h->saved_fd = dup(2);
  if (h->saved_fd < 0 || dup2(fileno(h->log), 2) < 0) {
    if (h->saved_fd >= 0) close(h->saved_fd);
    h->saved_fd = -1;
    fclose(h->log);
    h->log = NULL;
  }
}

static void stderr_release(stderr_hold *h) {
  if (!h->log) return;
  fflush(stderr);
  dup2(h->saved_fd, 2);
  close(h->saved_fd);
  rewind(h->log);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, h->log)) > 0) fwrite(buf, 1, n, stderr);
  fclose(h->log);
  h->log = NULL;
}

static void append_input(tui_model *m, wint_t wc) {
  char mb[MB_LEN_MAX];
  mbstate_t st;
  memset(&st, 0, sizeof st);
  size_t n = wcrtomb(mb, (wchar_t)wc, &st);
  if (n == (size_t)-1 || m->input_len + (int)n >= TUI_INPUT_MAX) return;
  memcpy(m->input_buf + m->input_len, mb, n);
  m->input_len += (int)n;
  m->input_buf[m->input_len] = 0;
}

static void backspace_input(tui_model *m) {
  if (m->input_len == 0) return;
  int i = m->input_len - 1;
  while (i > 0 && (m->input_buf[i] & 0xC0) == 0x80) i--; /* a whole UTF-8 character */
  m->input_len = i;
  m->input_buf[i] = 0;
}

typedef struct {
  int quit;
  int step_one; /* one more token while paused */
} loop_state;

static void watch_selection(tui_app *app) { ks_engine_watch(app->e, app->m.layer); }

static void handle_key(tui_app *app, loop_state *ls, int is_key, wint_t c) {
  tui_model *m = &app->m;
  if (m->input != TUI_INPUT_NONE) {
    if (!is_key && (c == '\n' || c == '\r')) {
      tui_input kind = m->input;
      m->input = TUI_INPUT_NONE;
      if (m->input_len > 0 || kind == TUI_INPUT_CONTINUE) {
        char text[TUI_INPUT_MAX + 2];
        /* a continued turn starts on a line of its own, as `kvscope chat` joins turns */
        snprintf(text, sizeof text, "%s%s", kind == TUI_INPUT_CONTINUE && app->n_conv ? "\n" : "",
                 m->input_buf);
        start_request(app, kind == TUI_INPUT_NEW ? ACT_NEW : ACT_CONTINUE, text);
        ls->step_one = 0;
      }
    } else if (is_key && c == KEY_ENTER) {
      handle_key(app, ls, 0, '\n');
    } else if (!is_key && c == 27) {
      m->input = TUI_INPUT_NONE;
    } else if ((is_key && c == KEY_BACKSPACE) || (!is_key && (c == 127 || c == 8))) {
      backspace_input(m);
    } else if (!is_key && c == 21) { /* ^U */
      m->input_len = 0;
      m->input_buf[0] = 0;
    } else if (!is_key && c >= 32 && c != 127) {
      append_input(m, c);
    }
    return;
  }
  if (m->help) { /* any key closes the help */
    m->help = 0;
    if (is_key || (c != 'q' && c != 'Q')) return;
  }
  m->status[0] = 0;
  if (is_key) {
    switch (c) {
    case KEY_UP: tui_model_step_layer(m, -1); watch_selection(app); break;
    case KEY_DOWN: tui_model_step_layer(m, +1); watch_selection(app); break;
    case KEY_LEFT: tui_model_step_focus(m, -1); break;
    case KEY_RIGHT: tui_model_step_focus(m, +1); break;
    case KEY_END: m->focus = 0; break;
    case KEY_F(1): m->help = 1; break;
    default: break;
    }
    return;
  }
  switch (c) {
  case 'q': case 'Q': ls->quit = 1; break;
  case '?': m->help = 1; break;
  case ' ': case 'p': m->paused = !m->paused; break;
  case 's':
    m->paused = 1;
    ls->step_one = app->busy;
    break;
  case 'l': tui_model_step_layer(m, +1); watch_selection(app); break;
  case 'L': tui_model_step_layer(m, -1); watch_selection(app); break;
  case 'h': tui_model_step_head(m, +1); break;
  case 'H': tui_model_step_head(m, -1); break;
  case 'm': tui_model_cycle_agg(m); break;
  case 'v': tui_model_toggle_view(m); watch_selection(app); break;
  case '<': case ',': tui_model_step_focus(m, -1); break;
  case '>': case '.': tui_model_step_focus(m, +1); break;
  case 'n': case 'c':
    m->input = c == 'n' ? TUI_INPUT_NEW : TUI_INPUT_CONTINUE;
    m->input_len = 0;
    m->input_buf[0] = 0;
    break;
  case 'x': {
    ks_cache_info before;
    ks_engine_cache_info(app->e, &before);
    ks_engine_clear_cache(app->e);
    refresh_cache(app);
    tui_model_set_status(m, "prompt cache cleared (%d blocks dropped)", before.cached - m->cache.cached);
    break;
  }
  case 12: clearok(curscr, TRUE); break; /* ^L */
  default: break;
  }
}

static void draw_now(tui_app *app, const tui_style *style) {
  tui_layout l;
  tui_layout_compute(&l, COLS, LINES, &app->m);
  tui_draw(&app->m, &l, style);
}

static int run_terminal(tui_app *app) {
  if (!isatty(0) || !isatty(1)) {
    fprintf(stderr, "%s: needs a terminal on stdin and stdout (use --snapshot FILE without one)\n",
            g_prog);
    return 1;
  }
  const char *term = getenv("TERM");
  if (!term || !*term || !strcmp(term, "dumb")) {
    fprintf(stderr, "%s: TERM is %s: set it to your terminal's type (e.g. xterm-256color)\n",
            g_prog, term && *term ? "'dumb'" : "unset");
    return 1;
  }
  tui_style style = {0, 0};
  style.utf8 = !strcmp(nl_langinfo(CODESET), "UTF-8");
  install_signals();
  stderr_hold hold;
  stderr_capture(&hold);
  /* newterm, not initscr: initscr exits the process on an unknown terminal type, before
   * stderr is given back */
  SCREEN *scr = newterm(NULL, stdout, stdin);
  if (!scr) {
    stderr_release(&hold);
    fprintf(stderr, "%s: cannot use the terminal type '%s' (no terminfo entry?): set TERM to "
            "your terminal's type, e.g. xterm-256color\n", g_prog, term);
    return 1;
  }
  const char *no_color = getenv("NO_COLOR");
  style.color = has_colors() && !(no_color && no_color[0]);
  tui_draw_init(&style);
  cbreak();
  noecho();
  nonl();
  keypad(stdscr, TRUE);
  set_escdelay(25);
  curs_set(0);

  loop_state ls = {0, 0};
  tui_model *m = &app->m;
  const double delay = app->args->delay_ms / 1000.0;
  double next_at = 0, last_draw = 0;
  int dirty = 1;
  while (!ls.quit && !g_signal) {
    double now = ks_now_sec();
    if (!app->busy && m->input == TUI_INPUT_NONE && app->next_act < app->args->n_acts) {
      const tui_action *a = &app->args->acts[app->next_act++];
      start_request(app, a->kind, a->text);
      dirty = 1;
    }
    int can_step = app->busy && m->input == TUI_INPUT_NONE && (!m->paused || ls.step_one);
    if (can_step && now >= next_at) {
      ks_event_kind k = KS_EV_PROVENANCE;
      while (app->busy && k == KS_EV_PROVENANCE)
        if (step_once(app, &k)) break;
      if (k == KS_EV_TOKEN) {
        next_at = ks_now_sec() + delay;
        ls.step_one = 0;
        if (app->args->paused && m->generated == 1) m->paused = 1;
      }
      if (!app->busy) ls.step_one = 0;
      dirty = 1;
      can_step = app->busy && (!m->paused || ls.step_one);
    }
    now = ks_now_sec();
    /* at full speed, redraw at most ~30 times a second; otherwise every change */
    if (dirty && (!can_step || delay > 0.02 || now - last_draw > 0.033)) {
      draw_now(app, &style);
      last_draw = now;
      dirty = 0;
    }
    int wait_ms = 200;
    if (can_step) wait_ms = (int)KS_MAX(0.0, (next_at - ks_now_sec()) * 1000.0);
    else if (dirty) wait_ms = 30;
    timeout(wait_ms);
    wint_t wc;
    int r = get_wch(&wc);
    while (r != ERR) {
      if (r == KEY_CODE_YES && wc == KEY_RESIZE) {
        /* ncurses has updated LINES and COLS */
      } else {
        handle_key(app, &ls, r == KEY_CODE_YES, wc);
      }
      dirty = 1;
      if (ls.quit) break;
      timeout(0); /* drain what else was typed before drawing again */
      r = get_wch(&wc);
    }
  }
  endwin();
  delscreen(scr);
  stderr_release(&hold);
  return 0;
}

int tui_main(int argc, char **argv) {
  setlocale(LC_ALL, "");
  setlocale(LC_NUMERIC, "C"); /* JSON and the percentages always use a '.' */
  tui_args args;
  char *file_text = NULL;
  int rc = parse_args(&args, argc, argv, &file_text);
  if (rc) {
    free(args.acts);
    free(file_text);
    return rc < 0 ? 0 : rc;
  }
  tui_app app;
  memset(&app, 0, sizeof app);
  app.args = &args;
  if (ks_engine_create(&app.e, &args.eo)) {
    fprintf(stderr, "%s: cannot start the engine: %s\n", g_prog, ks_last_error());
    rc = 1;
  }
  const ks_config *c = app.e ? &ks_engine_model(app.e)->cfg : NULL;
  if (!rc && (args.layer < 0 || args.layer > c->n_layer || args.head < 0 || args.head > c->n_head)) {
    fprintf(stderr, "%s: --layer takes 1..%d and --head 1..%d for this model\n", g_prog,
            c->n_layer, c->n_head);
    rc = 2;
  }
  if (!rc && tui_model_init(&app.m, c->n_layer, c->n_head, ks_engine_n_ctx(app.e),
                            ks_engine_tokenizer(app.e), args.eo.model_path,
                            ks_engine_device_name(app.e))) {
    fprintf(stderr, "%s: %s\n", g_prog, ks_last_error());
    rc = 1;
  }
  if (!rc) {
    app.conv = malloc(sizeof(int) * ((size_t)ks_engine_n_ctx(app.e) + 2));
    if (!app.conv) {
      fprintf(stderr, "%s: out of memory\n", g_prog);
      rc = 1;
    }
  }
  if (!rc) {
    app.m.layer = app.m.view_layer = args.layer > 0 ? args.layer - 1 : 0;
    app.m.head = args.head > 0 ? args.head - 1 : 0;
    app.m.agg = args.agg;
    if (args.no_view) tui_model_toggle_view(&app.m);
    ks_engine_watch(app.e, app.m.layer);
    refresh_cache(&app);
    rc = args.snapshot ? run_snapshot(&app) : run_terminal(&app);
  }
  if (app.busy) ks_engine_cancel(app.e);
  free(app.conv);
  if (app.m.pos) tui_model_deinit(&app.m);
  ks_engine_destroy(app.e);
  free(args.acts);
  free(file_text);
  if (g_signal) {
    /* the terminal is restored; now end the way the signal asked, so a shell sees it */
    signal(g_signal, SIG_DFL);
    raise(g_signal);
  }
  return rc;
}
