/* test_tui_layout.c — the terminal UI's pure parts, without ncurses or a GPU: the layout over
 * every terminal size from 0x0 to 260x90 (inside the screen, no two panels sharing a cell,
 * the column arithmetic of bar lines and heatmap rows adding up, 80x24 fully usable, bigger
 * screens used, tiny ones reduced to a message), and the view model fed with synthetic engine
 * events (provenance, rows, bars against an independent selection, mean/max over heads, the
 * ring of recent rows, continuing a conversation, stats lines within their width, labels of
 * real tokens, and the --snapshot JSON line parsed back). */
#include <locale.h>
#include <math.h>
#include <string.h>

#include "gguf.h"
#include "json.h"
#include "testutil.h"
#include "tui_layout.h"
#include "tui_model.h"

static int rect_ok(tui_rect r) { return r.h > 0 && r.w > 0; }

static void check_layout(const tui_layout *l, int cols, int rows) {
  tui_rect all[] = {l->header, l->prompt, l->text, l->bars, l->heat, l->stats, l->legend, l->keys};
  const char *names[] = {"header", "prompt", "text", "bars", "heat", "stats", "legend", "keys"};
  const int n = (int)KS_ARRAY_LEN(all);
  for (int i = 0; i < n; i++) {
    CHECK_MSG(tui_rect_inside(all[i], cols, rows), "%dx%d: %s (%d,%d %dx%d) leaves the screen",
              cols, rows, names[i], all[i].x, all[i].y, all[i].w, all[i].h);
    for (int j = i + 1; j < n; j++)
      CHECK_MSG(!tui_rect_overlap(all[i], all[j]), "%dx%d: %s and %s overlap", cols, rows,
                names[i], names[j]);
  }
  CHECK_MSG(tui_rect_inside(l->help, cols, rows), "%dx%d: help leaves the screen", cols, rows);
  CHECK_MSG(tui_rect_inside(l->message, cols, rows), "%dx%d: message leaves the screen", cols, rows);
  int small = cols < TUI_MIN_COLS || rows < TUI_MIN_ROWS;
  CHECK_MSG(l->too_small == small, "%dx%d: too_small %d", cols, rows, l->too_small);
  if (small) {
    for (int i = 0; i < n; i++)
      CHECK_MSG(!rect_ok(all[i]), "%dx%d is too small but %s is laid out", cols, rows, names[i]);
    CHECK(cols <= 0 || rows <= 0 || (l->message.w == cols && l->message.h == rows));
    return;
  }
  CHECK_MSG(rect_ok(l->header) && rect_ok(l->prompt) && rect_ok(l->keys) && rect_ok(l->legend) &&
                rect_ok(l->text) && rect_ok(l->bars) && rect_ok(l->stats),
            "%dx%d: a panel every usable size has is missing", cols, rows);
  /* a bar line: glyph ' ' pos ' ' label ' ' bar ' ' pct */
  CHECK_MSG(1 + 1 + l->bar_pos_w + 1 + l->bar_label_w + 1 + l->bar_w + 1 + TUI_PCT_W == l->bars.w,
            "%dx%d: bar line columns %d+%d+%d do not add up to %d", cols, rows, l->bar_pos_w,
            l->bar_label_w, l->bar_w, l->bars.w);
  CHECK_MSG(l->bar_w >= 1 && l->bar_label_w >= 3 && l->bar_rows == l->bars.h - 1 && l->bar_rows >= 1,
            "%dx%d: bar widths %d/%d rows %d", cols, rows, l->bar_label_w, l->bar_w, l->bar_rows);
  if (rect_ok(l->heat))
    CHECK_MSG(l->heat_label_w + 1 + l->heat_cols == l->heat.w && l->heat_rows == l->heat.h - 2 &&
                  l->heat_rows >= 2 && l->heat_cols >= 8,
              "%dx%d: heatmap columns %d+1+%d != %d or rows %d", cols, rows, l->heat_label_w,
              l->heat_cols, l->heat.w, l->heat_rows);
  CHECK_MSG(l->text.h == 1 + l->text_lines + l->text_strip && l->text_lines >= 1,
            "%dx%d: text panel rows", cols, rows);
}

static void test_layout_sizes(void) {
  tui_model m;
  REQUIRE(tui_model_init(&m, 4, 8, 512, NULL, "m", "d") == KS_OK);
  int checked = 0;
  for (int help = 0; help < 2; help++) {
    m.help = help;
    for (int rows = 0; rows <= 90; rows++)
      for (int cols = 0; cols <= 260; cols++) {
        tui_layout l;
        tui_layout_compute(&l, cols, rows, help ? &m : NULL);
        check_layout(&l, cols, rows);
        if (help && !l.too_small) CHECK(rect_ok(l.help));
        checked++;
      }
  }
  printf("layouts checked: %d\n", checked);
  tui_model_deinit(&m);
}

static void test_layout_80x24_and_bigger(void) {
  tui_layout s, b;
  tui_layout_compute(&s, 80, 24, NULL);
  CHECK(!s.too_small);
  CHECK(rect_ok(s.heat) && rect_ok(s.bars) && rect_ok(s.text) && rect_ok(s.stats));
  CHECK_MSG(s.bar_rows >= 8 && s.heat_rows >= 6 && s.heat_cols >= 24 && s.text_lines >= 2 &&
                s.text_strip && s.stats.h >= 3,
            "80x24: bars %d, heat %dx%d, text %d, stats %d", s.bar_rows, s.heat_rows, s.heat_cols,
            s.text_lines, s.stats.h);
  printf("80x24: bars %d lines (label %d, bar %d), heatmap %d x %d, text %d lines, stats %d\n",
         s.bar_rows, s.bar_label_w, s.bar_w, s.heat_rows, s.heat_cols, s.text_lines, s.stats.h);
  tui_layout_compute(&b, 200, 60, NULL);
  CHECK_MSG(b.bar_rows > s.bar_rows && b.heat_rows > s.heat_rows && b.heat_cols > s.heat_cols &&
                b.text_lines > s.text_lines && b.stats_side,
            "200x60 does not use its room: bars %d, heat %dx%d, text %d", b.bar_rows, b.heat_rows,
            b.heat_cols, b.text_lines);
  /* taller never means fewer bars, at a width that keeps its arrangement */
  int prev = 0;
  for (int rows = 24; rows <= 90; rows++) {
    tui_layout l;
    tui_layout_compute(&l, 80, rows, NULL);
    CHECK_MSG(l.bar_rows >= prev, "80x%d has %d bars, fewer than one row less", rows, l.bar_rows);
    prev = l.bar_rows;
  }
  /* the minimum size still has the bars */
  tui_layout_compute(&s, TUI_MIN_COLS, TUI_MIN_ROWS, NULL);
  CHECK(!s.too_small && s.bar_rows >= 2);
  tui_layout_compute(&s, TUI_MIN_COLS - 1, TUI_MIN_ROWS, NULL);
  CHECK(s.too_small);
}

/* ---- the view model ---- */

/* n_head softmax rows over n positions, stride `stride`. */
static void random_rows(float *p, int n_head, int n, int stride) {
  for (int h = 0; h < n_head; h++) {
    double s = 0;
    for (int j = 0; j < n; j++) {
      p[h * stride + j] = expf(3.0f * ks_randf());
      s += p[h * stride + j];
    }
    for (int j = 0; j < n; j++) p[h * stride + j] = (float)(p[h * stride + j] / s);
  }
}

static ks_event ev_prov(int pos, int n, ks_provenance prov) {
  ks_event e;
  memset(&e, 0, sizeof e);
  e.kind = KS_EV_PROVENANCE;
  e.pos = pos;
  e.n = n;
  e.prov = prov;
  return e;
}

static ks_event ev_token(int pos, int token, const float *probs, int stride) {
  ks_event e;
  memset(&e, 0, sizeof e);
  e.kind = KS_EV_TOKEN;
  e.pos = pos;
  e.token = token;
  e.text = "";
  e.probs = probs;
  e.probs_stride = stride;
  return e;
}

static void glyphs(const tui_model *m, char *out) {
  for (int i = 0; i < m->n_pos; i++) out[i] = tui_prov_glyph(m->pos[i].prov);
  out[m->n_pos] = 0;
}

static void test_model_events(void) {
  enum { H = 3, CTX = 64 };
  tui_model m;
  REQUIRE(tui_model_init(&m, 2, H, CTX, NULL, "model", "dev") == KS_OK);
  int prompt[5] = {1, 10, 11, 12, 13};
  REQUIRE(tui_model_begin(&m, prompt, 5, 0, "hello") == KS_OK);
  ks_event e = ev_prov(0, 2, KS_POS_CACHED);
  CHECK(tui_model_on_event(&m, &e, 0.001) == KS_OK);
  e = ev_prov(2, 3, KS_POS_COMPUTED);
  CHECK(tui_model_on_event(&m, &e, 0.001) == KS_OK);
  static float probs[H * CTX];
  random_rows(probs, H, 5, CTX);
  e = ev_token(5, 20, probs, CTX);
  CHECK(tui_model_on_event(&m, &e, 0.01) == KS_OK);
  char g[CTX + 2];
  glyphs(&m, g);
  CHECK_MSG(!strcmp(g, "==+++*"), "provenance glyphs '%s'", g);
  CHECK(m.cached == 2 && m.computed == 3 && m.generated == 1 && m.n_rows == 1);
  const tui_row *r = tui_model_row(&m, 0);
  REQUIRE(r && r->pos == 5 && r->layer == 0 && r->token == 20 && r->step == 0);
  CHECK(!strcmp(m.pos[3].label, "#12"));

  /* bars: the heaviest positions, checked against a plain repeated-maximum selection */
  for (int h = 0; h < H; h++) {
    m.agg = TUI_AGG_HEAD;
    m.head = h;
    tui_bar bars[8];
    float rest;
    int n_rest;
    int nb = tui_model_bars(&m, r, 3, bars, &rest, &n_rest);
    CHECK(nb == 3 && n_rest == 2);
    int used[5] = {0};
    double sum = rest;
    for (int i = 0; i < nb; i++) {
      int best = -1;
      for (int j = 0; j < 5; j++)
        if (!used[j] && (best < 0 || probs[h * CTX + j] > probs[h * CTX + best])) best = j;
      used[best] = 1;
      CHECK_MSG(bars[i].pos == best && bars[i].weight == probs[h * CTX + best],
                "head %d bar %d: pos %d weight %g, expected pos %d", h, i, bars[i].pos,
                bars[i].weight, best);
      CHECK(bars[i].prov == (best < 2 ? KS_POS_CACHED : KS_POS_COMPUTED));
      sum += bars[i].weight;
    }
    CHECK_MSG(fabs(sum - 1.0) < 1e-5, "bars + rest = %g", sum);
  }
  /* mean and max over heads */
  float v[8];
  m.agg = TUI_AGG_MEAN;
  tui_model_view_row(&m, r, v);
  for (int j = 0; j < 5; j++) {
    double s = 0;
    for (int h = 0; h < H; h++) s += probs[h * CTX + j];
    CHECK(fabs(v[j] - s / H) < 1e-6);
  }
  m.agg = TUI_AGG_MAX;
  tui_model_view_row(&m, r, v);
  for (int j = 0; j < 5; j++) {
    float mx = 0;
    for (int h = 0; h < H; h++) mx = fmaxf(mx, probs[h * CTX + j]);
    CHECK(v[j] == mx);
  }
  m.agg = TUI_AGG_HEAD;

  /* an event for the wrong position is refused, not applied */
  e = ev_token(9, 21, probs, CTX);
  CHECK(tui_model_on_event(&m, &e, 0) == KS_ERR_ARG);
  CHECK(m.n_pos == 6);
  /* a token without rows (view off) adds the position but no row */
  e = ev_token(6, 21, NULL, 0);
  CHECK(tui_model_on_event(&m, &e, 0.01) == KS_OK);
  CHECK(m.n_pos == 7 && m.n_rows == 1 && m.generated == 2);

  ks_event d;
  memset(&d, 0, sizeof d);
  d.kind = KS_EV_DONE;
  d.usage.prompt_tokens = 5;
  d.usage.cached_tokens = 2;
  d.usage.hit_rate = 0.4;
  d.usage.cost = 1e-5;
  d.usage.cost_uncached = 2e-5;
  CHECK(tui_model_on_event(&m, &d, 0) == KS_OK);
  CHECK(m.phase == TUI_DONE && m.have_usage && m.session_cost == 1e-5);

  /* continuing: the earlier positions stay, rows about them too; provenance comes anew */
  int conv[9] = {1, 10, 11, 12, 13, 20, 21, 30, 31};
  REQUIRE(tui_model_begin(&m, conv, 9, 1, "more") == KS_OK);
  CHECK(m.n_pos == 9 && m.n_rows == 1 && m.continued && m.request == 2);
  CHECK(m.pos[5].prov == 0 && m.pos[5].token == 20);
  e = ev_prov(0, 8, KS_POS_CACHED);
  CHECK(tui_model_on_event(&m, &e, 0) == KS_OK);
  e = ev_prov(8, 1, KS_POS_COMPUTED);
  CHECK(tui_model_on_event(&m, &e, 0) == KS_OK);
  glyphs(&m, g);
  CHECK_MSG(!strcmp(g, "========+"), "continued provenance '%s'", g);
  CHECK(m.session_cost == 1e-5); /* the second request has not finished */
  /* a new prompt forgets the rows */
  REQUIRE(tui_model_begin(&m, prompt, 3, 0, "new") == KS_OK);
  CHECK(m.n_rows == 0 && m.n_pos == 3 && !m.continued);
  tui_model_deinit(&m);
}

static void test_model_ring_and_selection(void) {
  enum { H = 2, CTX = 256 };
  tui_model m;
  REQUIRE(tui_model_init(&m, 3, H, CTX, NULL, "model", "dev") == KS_OK);
  int prompt[2] = {1, 5};
  REQUIRE(tui_model_begin(&m, prompt, 2, 0, "p") == KS_OK);
  static float probs[H * CTX];
  const int steps = TUI_HISTORY + 5;
  for (int s = 0; s < steps; s++) {
    random_rows(probs, H, 2 + s, CTX);
    ks_event e = ev_token(2 + s, 100 + s, probs, CTX);
    REQUIRE(tui_model_on_event(&m, &e, 0.001) == KS_OK);
    if (s == steps - 3) { /* look two steps back; new steps must not move the view */
      tui_model_step_focus(&m, -1);
      tui_model_step_focus(&m, -1);
      CHECK(m.focus == 2);
    }
  }
  CHECK(m.n_rows == TUI_HISTORY);
  CHECK(tui_model_row(&m, 0)->step == steps - 1);
  CHECK(tui_model_row(&m, TUI_HISTORY - 1)->step == steps - TUI_HISTORY);
  CHECK(tui_model_row(&m, TUI_HISTORY) == NULL && tui_model_row(&m, -1) == NULL);
  CHECK_MSG(tui_model_focused(&m)->step == steps - 5, "focused step %d", tui_model_focused(&m)->step);
  tui_model_step_focus(&m, +1);
  tui_model_step_focus(&m, +100);
  CHECK(m.focus == 0);
  for (int i = 0; i < 1000; i++) tui_model_step_focus(&m, -1);
  CHECK(m.focus == TUI_HISTORY - 1);

  /* layers and heads wrap; the view off keeps the layer to come back to */
  CHECK(tui_model_step_layer(&m, -1) == 2 && tui_model_step_layer(&m, +1) == 0);
  tui_model_step_layer(&m, +1);
  CHECK(tui_model_toggle_view(&m) == -1 && m.layer == -1);
  CHECK(tui_model_step_layer(&m, +1) == -1 && m.view_layer == 2);
  CHECK(tui_model_toggle_view(&m) == 2);
  tui_model_step_head(&m, -1);
  CHECK(m.head == H - 1);
  tui_model_cycle_agg(&m);
  CHECK(m.agg == TUI_AGG_MEAN);
  tui_model_step_head(&m, +1); /* a head key goes back to one head, the same one */
  CHECK(m.agg == TUI_AGG_HEAD && m.head == H - 1);
  tui_model_deinit(&m);
}

static void test_stats_and_text(void) {
  tui_model m;
  REQUIRE(tui_model_init(&m, 2, 2, 32, NULL, "model",
                         "a device with a very long name that will not fit on one line") == KS_OK);
  int prompt[4] = {1, 2, 3, 4};
  REQUIRE(tui_model_begin(&m, prompt, 4, 0, "x") == KS_OK);
  ks_event e = ev_prov(0, 2, KS_POS_CACHED);
  tui_model_on_event(&m, &e, 0);
  e = ev_prov(2, 2, KS_POS_COMPUTED);
  tui_model_on_event(&m, &e, 0);
  ks_cache_info ci = {8, 16, 2, 3, 3, 7, 0, 1024, 1};
  tui_model_set_cache(&m, &ci);
  int widths[] = {1, 5, 20, 36, 80, 200};
  for (size_t k = 0; k < KS_ARRAY_LEN(widths); k++) {
    char lines[8][256];
    int n = tui_stats_lines(&m, widths[k], lines, 8);
    CHECK(n >= 1 && n <= 8);
    int found = 0;
    for (int i = 0; i < n; i++) {
      CHECK_MSG(tui_width(lines[i]) <= widths[k], "width %d: line '%s'", widths[k], lines[i]);
      found |= strstr(lines[i], "cached 2 (50%)") != NULL;
    }
    if (widths[k] >= 20) CHECK_MSG(found, "width %d: no 'cached 2 (50%%)'", widths[k]);
    if (widths[k] == 80) {
      for (int i = 0; i < n; i++) printf("  stats| %s\n", lines[i]);
      CHECK(strstr(lines[n - 1], "7 evicted") != NULL);
    }
  }
  char lines[2][256];
  CHECK(tui_stats_lines(&m, 30, lines, 2) == 2);
  /* a long item is cut between words, and its lines read back as the item */
  char side[8][256], joined[512] = "";
  int ns = tui_stats_lines(&m, 36, side, 8);
  for (int i = 0; i < ns && i < 3; i++) {
    if (i) strcat(joined, " ");
    strcat(joined, side[i]);
  }
  CHECK_MSG(!strncmp(joined, "device a device with a very long name that will not fit on one line",
                     strlen("device a device with a very long name that will not fit on one line")),
            "the device line wrapped as '%s'", joined);
  int ends = 0;
  for (int i = 0; i < ns; i++) {
    size_t l = strlen(side[i]);
    ends |= l >= 8 && !strcmp(side[i] + l - 8, "one line") && !strchr(side[i], '|');
  }
  CHECK_MSG(ends, "the cut device item shares its last line with another item");

  /* fitting UTF-8 never splits a character; columns from wcwidth */
  char out[32];
  CHECK(tui_fit(out, sizeof out, "h\xc3\xa9llo", 3) == 3 && !strcmp(out, "h\xc3\xa9l"));
  CHECK(tui_fit(out, 4, "h\xc3\xa9llo", 10) == 2 && !strcmp(out, "h\xc3\xa9"));
  CHECK(tui_fit(out, sizeof out, "\xe4\xb8\xad\xe6\x96\x87", 3) == 2); /* two wide characters */
  CHECK(tui_width("\xff" "ab") == 3);
  tui_model_deinit(&m);
}

static void test_labels_and_json(void) {
  const char *path = KS_SOURCE_DIR "/models/kvscope-tiny.gguf";
  ks_gguf *g = NULL;
  ks_tokenizer *tok = NULL;
  if (gguf_open(&g, path) != KS_OK || tokenizer_from_gguf(&tok, g) != KS_OK)
    ks_test_skip("the shipped model %s cannot be read: %s", path, ks_last_error());
  enum { H = 2, CTX = 64 };
  tui_model m;
  REQUIRE(tui_model_init(&m, 2, H, CTX, tok, path, "dev \"quoted\"") == KS_OK);
  int *ids = NULL, n = 0;
  const char *text = "Mary had\n\ta \"little\" lamb";
  REQUIRE(tokenizer_encode(tok, text, strlen(text), 1, &ids, &n) == KS_OK);
  REQUIRE(n >= 6 && n < CTX - 1);
  REQUIRE(tui_model_begin(&m, ids, n, 0, text) == KS_OK);
  CHECK_MSG(!strcmp(m.text, text), "decoded text '%s'", m.text); /* every byte, no BOS space */
  CHECK(!strcmp(m.pos[0].label, "<s>"));
  for (int i = 0; i < n; i++) {
    for (const char *c = m.pos[i].label; *c; c++)
      CHECK_MSG((unsigned char)*c >= 0x20, "label of position %d has a control byte", i);
    CHECK(m.pos[i].label[0] != ' ' && m.pos[i].label[0]);
  }
  int has_nl = 0;
  for (int i = 0; i < n; i++) has_nl |= strstr(m.pos[i].label, "\\n") != NULL;
  CHECK_MSG(has_nl, "no position labelled \\n");
  CHECK(strchr(m.prompt_text, '\n') == NULL && strchr(m.prompt_text, '\t') == NULL);
  ks_event e = ev_prov(0, n, KS_POS_COMPUTED);
  tui_model_on_event(&m, &e, 0);
  static float probs[H * CTX];
  random_rows(probs, H, n, CTX);
  e = ev_token(n, ids[1], probs, CTX);
  CHECK(tui_model_on_event(&m, &e, 0.002) == KS_OK);

  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  REQUIRE(f);
  tui_model_write_json(&m, f, "step");
  fclose(f);
  CHECK(len > 0 && buf[len - 1] == '\n' && memchr(buf, '\n', len) == buf + len - 1);
  json_obj o;
  CHECK_MSG(json_parse_object(buf, len, &o) == KS_OK, "snapshot line is not JSON: %s\n%s",
            ks_last_error(), buf);
  const json_field *fl = json_get(&o, "row_sum");
  CHECK(fl && fl->type == JSON_NUM && fabs(fl->num - 1.0) < 1e-4);
  fl = json_get(&o, "provenance");
  CHECK(fl && fl->type == JSON_STR && (int)fl->len == n + 1 && fl->str[0] == '+' &&
        fl->str[n] == '*');
  fl = json_get(&o, "pos");
  CHECK(fl && fl->type == JSON_NUM && fl->num == n);
  fl = json_get(&o, "label");
  CHECK(fl && fl->type == JSON_STR && !strcmp(fl->str, m.pos[n].label));
  CHECK(json_get(&o, "bars") && json_get(&o, "bars")->type == JSON_OTHER);
  json_obj_free(&o);
  free(buf);
  free(ids);
  tui_model_deinit(&m);
  tokenizer_destroy(tok);
  gguf_close(g);
}

int main(void) {
  setlocale(LC_CTYPE, "C.UTF-8"); /* wcwidth of non-ASCII, as the UI runs */
  ks_test_seed();
  test_layout_sizes();
  test_layout_80x24_and_bigger();
  test_model_events();
  test_model_ring_and_selection();
  test_stats_and_text();
  test_labels_and_json();
  return ks_test_done("test_tui_layout");
}
