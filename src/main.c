/* main.c — the kvscope command line: run, devices, convert, tokenize, info. Parses flags,
 * calls the library (kvscope.h and friends), prints; the only place besides ui/ that exits. */
#include <errno.h>
#include <signal.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "chat_template.h"
#include "selftest.h"
#include "convert.h"
#include "gguf.h"
#include "gpu.h"
#include "json.h"
#include "kvscope.h"
#include "../ui/tui.h"


static const char *g_prog = "kvscope";

static int die(int code, const char *what) {
  fprintf(stderr, "%s: %s: %s\n", g_prog, what, ks_last_error());
  return code;
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", g_prog);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry '%s --help'.\n", g_prog);
  return 2;
}

static void print_help(FILE *f) {
  fprintf(f,
    "kvscope — a Vulkan inference engine for Llama-family models, built to see and use the KV cache\n"
    "\n"
    "Usage:\n"
    "  kvscope run [-m MODEL] [-z TOKENIZER] (-p PROMPT... | -f FILE | --prompts FILE) [options]\n"
    "  kvscope chat [-m MODEL] [--system TEXT] [--chat-template NAME] [options]   (a turn per line)\n"
    "  kvscope devices\n"
    "  kvscope info -m MODEL\n"
    "  kvscope tokenize -m MODEL [-z TOKENIZER] (-p TEXT | -f FILE) [--ids] [--no-bos]\n"
    "  kvscope convert IN [-z TOKENIZER] OUT.gguf [--type f32|f16|q8_0|q4_0]\n"
    "  kvscope convert --random SHAPE OUT.gguf [--type T]   (random weights; --random list)\n"
    "  kvscope bench [-m MODEL] [-p 512] [-n 128] [--json] | bench --prefix   (see bench --help)\n"
    "  kvscope bench [-m MODEL] [-p 512] [-n 128] [-r 5] [--json]   speed, roofline (bench --help)\n"
    "  kvscope selftest [--device N] [--json]   every kernel and the model vs the CPU reference\n"
    "  kvscope tui [-m MODEL] [-p PROMPT] [options]   live attention rows and cache provenance\n"
    "\n"
    "run: generate text; the text streams to stdout, statistics go to stderr.\n"
    "  -m, --model PATH       GGUF file or llama2.c checkpoint (.bin); default: the model shipped\n"
    "                         in models/ (" KS_DEFAULT_MODEL_NAME ")\n"
    "  -z, --tokenizer PATH   llama2.c tokenizer.bin (needed for .bin checkpoints)\n"
    "  -p, --prompt TEXT      prompt text (UTF-8)\n"
    "  -f, --file PATH        read the prompt from a file (bytes exactly as they are)\n"
    "  -n, --n-predict N      tokens to generate (default 256; -1: until the context is full)\n"
    "  -c, --ctx-size N       context length in tokens (default: the model's)\n"
    "  --temp T               temperature (default 0.8; 0 = greedy)\n"
    "  --top-k K              keep the K most likely tokens (default 40; 0 = off)\n"
    "  --top-p P              nucleus sampling threshold (default 0.95; 1 = off)\n"
    "  --min-p P              drop tokens below P x the top probability (default 0.05; 0 = off)\n"
    "  -s, --seed S           sampling seed (default: random, printed in the statistics)\n"
    "  --device N             Vulkan device index (see 'kvscope devices'; env KVSCOPE_DEVICE)\n"
    "  --cpu                  run the plain C reference instead of the GPU (slow; for checking)\n"
    "  -b, --batch N          prompt tokens per GPU batch (default 128)\n"
    "  --json                 print one JSON object per request (text, tokens, statistics, usage)\n"
    "                         instead of streaming\n"
    "  --no-display-prompt    do not echo the prompt before the generated text\n"
    "  -p may be repeated, and --prompts FILE reads one JSON object per line:\n"
    "    {\"prompt\": \"...\", \"prefix\": \"...\", \"n\": 64, \"temp\": 0.8, \"top_k\": 40, \"top_p\": 0.95,\n"
    "     \"min_p\": 0.05, \"seed\": 1, \"cache\": true}\n"
    "  The requests are served in order over one prompt cache.\n"
    "\n"
    "Prompt cache (K/V of token prefixes kept on the GPU and reused by later requests):\n"
    "  --cache-mb N           device memory for cached K/V blocks (default: 4 contexts, at most\n"
    "                         a quarter of device memory); least recently used blocks are evicted\n"
    "  --cache-ttl SEC        drop cached blocks unused for SEC seconds (default: never)\n"
    "  --cache-min-tokens N   do not cache (nor look up) prompts shorter than N tokens\n"
    "  --cache-dir DIR        also keep blocks on disk, for later runs (checksummed, per model)\n"
    "  --prefix TEXT          a cacheable prefix marked explicitly (like a cache_control\n"
    "                         breakpoint), prepended to every prompt and pinned for --pin-ttl\n"
    "  --pin-ttl SEC          how long a marked prefix stays pinned (default 300)\n"
    "  --no-cache             compute every request cold and cache nothing\n"
    "  --price-input P, --price-cached P, --price-output P\n"
    "                         dollars per million tokens for the cost estimate (default 3.00,\n"
    "                         0.1 x input, 15.00)\n"
    "\n"
    "Generation stops after N tokens, at the end-of-sequence token, when the context is full,\n"
    "and, for llama2.c checkpoints (their reference behaviour), when the model emits BOS.\n"
    "\n"
    "Environment: KVSCOPE_DEVICE (device index), KVSCOPE_VALIDATION=1 (Vulkan validation layers;\n"
    "the exit status is non-zero if they report anything), KVSCOPE_PROGRESS=0/1 (load progress),\n"
    "KVSCOPE_COOPMAT=off|prefill|f16|all (which matrix products use cooperative matrices where the\n"
    "device has them: prefill, the default, for prompts only; f16 for F16 weights; all for all).\n"
    "Exit status: 0 success, 1 runtime error (bad model file, no Vulkan device, ...), 2 bad usage.\n");
}

/* ---- signals ---- */

/* SIGINT/SIGTERM: the first one asks the engine to stop at the next prefill chunk or decode step
 * (the request is cancelled, the cache on disk stays consistent: every file is written whole or
 * not at all); a second one ends the process at once. SIGBUS means the memory-mapped model file
 * shrank under us. */
static void on_stop_signal(int sig) {
  if (ks_interrupt_pending()) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  ks_interrupt_set(sig);
}
static void on_sigbus(int sig) {
  (void)sig;
  static const char msg[] = "kvscope: the model file changed or was truncated while in use "
                            "(SIGBUS reading its mapping): stopped\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  _exit(1);
}
static void install_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sa.sa_handler = on_sigbus;
  sigaction(SIGBUS, &sa, NULL);
}
/* Exit status for an interrupted run: 128 + the signal, as a shell reports it. */
static int interrupted_rc(void) {
  int sig = ks_interrupt_pending();
  fprintf(stderr, "\n%s: interrupted by %s: stopped cleanly\n", g_prog,
          sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal");
  return 128 + sig;
}

/* ---- small helpers ---- */

static int parse_float(const char *s, float *out) {
  double d;
  if (ks_parse_double(s, &d) || d > 3.4e38 || d < -3.4e38) return -1;
  *out = (float)d;
  return 0;
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    ks_fail(KS_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap + 1);
  while (buf) {
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (n < cap) break;
    cap *= 2;
    char *nb = realloc(buf, cap + 1);
    if (!nb) { free(buf); buf = NULL; }
    else buf = nb;
  }
  int err = ferror(f);
  fclose(f);
  if (!buf || err) {
    free(buf);
    ks_fail(KS_ERR_IO, "cannot read '%s'", path);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}


/* ---- run and chat ---- */

/* One request as given on the command line or in a --prompts file. */
typedef struct {
  char *text;     /* prompt (after the prefix) */
  size_t len;
  char *prefix;   /* explicitly marked cacheable prefix, or NULL */
  size_t prefix_len;
  int n_predict;
  ks_sampling sp;
  int no_cache;
} run_item;

typedef struct {
  ks_engine_opts eo;
  ks_sampling sp;
  int seed_given;
  int n_predict;
  int json, echo;
  const char *prefix;
  int no_cache;
  run_item *items;
  int n_items;
} run_args;

static int add_item(run_args *a, const char *text, size_t len) {
  run_item *ni = realloc(a->items, sizeof *ni * (size_t)(a->n_items + 1));
  if (!ni) return -1;
  a->items = ni;
  run_item *it = &a->items[a->n_items++];
  memset(it, 0, sizeof *it);
  it->text = malloc(len + 1);
  if (!it->text) return -1;
  memcpy(it->text, text, len);
  it->text[len] = 0;
  it->len = len;
  it->n_predict = INT_MIN; /* filled from the defaults later */
  it->sp.temp = NAN;
  return 0;
}

static void free_items(run_args *a) {
  for (int i = 0; i < a->n_items; i++) {
    free(a->items[i].text);
    free(a->items[i].prefix);
  }
  free(a->items);
}

/* --prompts FILE: one JSON object per line: {"prompt": "...", "prefix": "...", "n": 64,
 * "temp": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": 1, "cache": true}.
 * "prefix" is an explicitly marked cacheable prefix (pinned, like a cache_control breakpoint). */
static int load_prompts_file(run_args *a, const char *path) {
  size_t len;
  char *buf = read_file(path, &len);
  if (!buf) return die(1, "cannot read the prompts file");
  int lineno = 0, rc = 0;
  for (char *line = buf; line < buf + len && !rc;) {
    char *nl = memchr(line, '\n', (size_t)(buf + len - line));
    size_t ll = nl ? (size_t)(nl - line) : (size_t)(buf + len - line);
    lineno++;
    char *next = nl ? nl + 1 : buf + len;
    size_t k = 0;
    while (k < ll && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) k++;
    if (k == ll) { line = next; continue; } /* blank line */
    json_obj o;
    if (json_parse_object(line, ll, &o)) {
      fprintf(stderr, "%s: %s line %d: %s\n", g_prog, path, lineno, ks_last_error());
      rc = 1;
      break;
    }
    const json_field *p = json_get(&o, "prompt"), *f;
    if (!p || p->type != JSON_STR) {
      fprintf(stderr, "%s: %s line %d: needs a \"prompt\" string\n", g_prog, path, lineno);
      rc = 1;
    } else if (add_item(a, p->str, p->len)) {
      rc = die(1, "out of memory");
    } else {
      run_item *it = &a->items[a->n_items - 1];
      if ((f = json_get(&o, "prefix")) && f->type == JSON_STR) {
        it->prefix = malloc(f->len + 1);
        if (it->prefix) { memcpy(it->prefix, f->str, f->len + 1); it->prefix_len = f->len; }
      }
      if ((f = json_get(&o, "n")) && f->type == JSON_NUM) it->n_predict = (int)f->num;
      if ((f = json_get(&o, "temp")) && f->type == JSON_NUM) it->sp.temp = (float)f->num;
      if ((f = json_get(&o, "top_k")) && f->type == JSON_NUM) it->sp.top_k = (int)f->num + 1;
      if ((f = json_get(&o, "top_p")) && f->type == JSON_NUM) it->sp.top_p = (float)f->num + 1;
      if ((f = json_get(&o, "min_p")) && f->type == JSON_NUM) it->sp.min_p = (float)f->num + 1;
      if ((f = json_get(&o, "seed")) && f->type == JSON_NUM) it->sp.seed = (uint64_t)f->num + 1;
      if ((f = json_get(&o, "cache")) && f->type == JSON_BOOL) it->no_cache = !f->boolean;
    }
    json_obj_free(&o);
    line = next;
  }
  free(buf);
  return rc;
}

/* Fills per-item settings from the command line defaults (fields set to +1 above mean "given":
 * 0 is a valid value for several of them). */
static void resolve_item(const run_args *a, run_item *it) {
  ks_sampling d = a->sp;
  if (!isnan(it->sp.temp)) d.temp = it->sp.temp;
  if (it->sp.top_k) d.top_k = it->sp.top_k - 1;
  if (it->sp.top_p != 0) d.top_p = it->sp.top_p - 1;
  if (it->sp.min_p != 0) d.min_p = it->sp.min_p - 1;
  if (it->sp.seed) d.seed = it->sp.seed - 1;
  it->sp = d;
  if (it->n_predict == INT_MIN) it->n_predict = a->n_predict;
  if (a->no_cache) it->no_cache = 1;
  if (!it->prefix && a->prefix) {
    it->prefix_len = strlen(a->prefix);
    it->prefix = malloc(it->prefix_len + 1);
    if (it->prefix) memcpy(it->prefix, a->prefix, it->prefix_len + 1);
  }
}

static int check_sampling(const ks_sampling *sp) {
  if (sp->temp < 0 || sp->top_k < 0 || sp->top_p <= 0 || sp->top_p > 1 || sp->min_p < 0 || sp->min_p > 1) {
    fprintf(stderr, "%s: sampling settings out of range (temp >= 0, top-k >= 0, 0 < top-p <= 1, "
            "0 <= min-p <= 1)\nTry '%s --help'.\n", g_prog, g_prog);
    return 2;
  }
  return 0;
}

/* Parses the flags run and chat share; returns -1 if argv[i] is not one of them, else the
 * number of extra arguments consumed, or -2 after printing a usage error. */
static int parse_common(run_args *a, int argc, char **argv, int i) {
  const char *o = argv[i];
  const char *v = i + 1 < argc ? argv[i + 1] : NULL;
  ks_engine_opts *eo = &a->eo;
#define NEEDV() do { if (!v) { usage_error("option %s needs a value", o); return -2; } } while (0)
#define INTV(dst) do { NEEDV(); if (ks_parse_int(v, &(dst))) { usage_error("bad integer '%s'", v); return -2; } return 1; } while (0)
#define FLTV(dst) do { NEEDV(); if (parse_float(v, &(dst))) { usage_error("bad number '%s'", v); return -2; } return 1; } while (0)
  if (!strcmp(o, "-m") || !strcmp(o, "--model")) { NEEDV(); eo->model_path = v; return 1; }
  if (!strcmp(o, "-z") || !strcmp(o, "--tokenizer")) { NEEDV(); eo->tokenizer_path = v; return 1; }
  if (!strcmp(o, "-n") || !strcmp(o, "--n-predict")) INTV(a->n_predict);
  if (!strcmp(o, "-c") || !strcmp(o, "--ctx-size")) INTV(eo->n_ctx);
  if (!strcmp(o, "-b") || !strcmp(o, "--batch")) INTV(eo->batch);
  if (!strcmp(o, "--temp")) FLTV(a->sp.temp);
  if (!strcmp(o, "--top-k")) INTV(a->sp.top_k);
  if (!strcmp(o, "--top-p")) FLTV(a->sp.top_p);
  if (!strcmp(o, "--min-p")) FLTV(a->sp.min_p);
  if (!strcmp(o, "-s") || !strcmp(o, "--seed")) {
    NEEDV();
    char *end;
    errno = 0;
    unsigned long long s = strtoull(v, &end, 10);
    if (errno || *end || end == v || v[0] == '-') { usage_error("bad seed '%s'", v); return -2; }
    a->sp.seed = s;
    a->seed_given = 1;
    return 1;
  }
  if (!strcmp(o, "--device")) INTV(eo->device);
  if (!strcmp(o, "--cpu")) { eo->use_cpu = 1; return 0; }
  if (!strcmp(o, "--cache-mb")) INTV(eo->cache.cache_mb);
  if (!strcmp(o, "--cache-min-tokens")) INTV(eo->cache.min_tokens);
  if (!strcmp(o, "--cache-dir")) { NEEDV(); eo->cache.dir = v; return 1; }
  if (!strcmp(o, "--no-cache")) { a->no_cache = 1; return 0; }
  if (!strcmp(o, "--prefix")) { NEEDV(); a->prefix = v; return 1; }
  if (!strcmp(o, "--cache-ttl") || !strcmp(o, "--price-input") || !strcmp(o, "--price-cached") ||
      !strcmp(o, "--price-output") || !strcmp(o, "--pin-ttl")) {
    float x;
    NEEDV();
    if (parse_float(v, &x) || x < 0) { usage_error("bad non-negative number '%s'", v); return -2; }
    if (!strcmp(o, "--cache-ttl")) eo->cache.ttl = x;
    else if (!strcmp(o, "--price-input")) eo->cache.price_input = x;
    else if (!strcmp(o, "--price-cached")) eo->cache.price_cached = x;
    else if (!strcmp(o, "--price-output")) eo->cache.price_output = x;
    else eo->cache.pin_ttl = x;
    return 1;
  }
  if (!strcmp(o, "--json")) { a->json = 1; return 0; }
  return -1;
#undef NEEDV
#undef INTV
#undef FLTV
}

static int finish_common(run_args *a) {
  if (a->eo.n_ctx < 0) return usage_error("%s", "-c must be positive");
  if (a->eo.batch < 0) return usage_error("%s", "-b must be positive");
  if (a->eo.cache.cache_mb < 0) return usage_error("%s", "--cache-mb must be positive");
  if (a->eo.cache.min_tokens < 0) return usage_error("%s", "--cache-min-tokens must be >= 0");
  if (a->n_predict < -1) return usage_error("%s", "-n must be -1 (no limit) or >= 0");
  if (check_sampling(&a->sp)) return 2;
  if (!a->seed_given) a->sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  if (ks_model_path_or_default(&a->eo.model_path)) {
    fprintf(stderr, "%s: %s\n", g_prog, ks_last_error());
    return 1;
  }
  return 0;
}

static const char *stop_name(ks_stop s) {
  switch (s) {
  case KS_STOP_LENGTH: return "length";
  case KS_STOP_EOS: return "eos";
  case KS_STOP_BOS: return "bos";
  case KS_STOP_CONTEXT: return "context";
  case KS_STOP_CALLER: return "caller";
  }
  return "?";
}

static void print_usage_json(FILE *f, const ks_usage *u) {
  fprintf(f,
          "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
          "\"prompt_tokens_details\":{\"cached_tokens\":%d},"
          "\"input_tokens\":%d,\"output_tokens\":%d,"
          "\"cache_read_input_tokens\":%d,\"cache_creation_input_tokens\":%d},"
          "\"cache\":{\"hit_rate\":%.4f,\"generated_tokens_cached\":%d,\"blocks_from_disk\":%d,"
          "\"lookup_ms\":%.3f},"
          "\"cost\":{\"usd\":%.8f,\"usd_without_cache\":%.8f}",
          u->prompt_tokens, u->completion_tokens, u->prompt_tokens + u->completion_tokens,
          u->cached_tokens, u->prompt_tokens - u->cached_tokens - u->cache_creation_tokens,
          u->completion_tokens, u->cached_tokens, u->cache_creation_tokens, u->hit_rate,
          u->generated_cached, u->disk_blocks_loaded, u->t_lookup * 1e3, u->cost, u->cost_uncached);
}

typedef struct {
  char *text;
  size_t len, cap;
  int *toks;
  int n, cap_toks;
} collected;

static int collect(collected *c, int token, const char *text, size_t len) {
  if (c->len + len + 1 > c->cap) {
    size_t nc = (c->cap + len + 1) * 2;
    char *nt = realloc(c->text, nc);
    if (!nt) return -1;
    c->text = nt;
    c->cap = nc;
  }
  memcpy(c->text + c->len, text, len);
  c->len += len;
  c->text[c->len] = 0;
  if (token >= 0) {
    if (c->n == c->cap_toks) {
      int nc = c->cap_toks ? c->cap_toks * 2 : 64;
      int *nt = realloc(c->toks, sizeof(int) * (size_t)nc);
      if (!nt) return -1;
      c->toks = nt;
      c->cap_toks = nc;
    }
    c->toks[c->n++] = token;
  }
  return 0;
}

/* Tokenizes prefix + text; the marked prefix covers the tokens the two encodings share. */
static ks_status tokenize_item(ks_engine *e, const run_item *it, int **toks, int *n, int *n_prefix) {
  *n_prefix = 0;
  if (!it->prefix) return ks_engine_tokenize(e, it->text, it->len, toks, n);
  size_t tl = it->prefix_len + it->len;
  char *all = malloc(tl + 1);
  if (!all) return ks_fail(KS_ERR_NOMEM, "out of memory");
  memcpy(all, it->prefix, it->prefix_len);
  memcpy(all + it->prefix_len, it->text, it->len);
  ks_status st = ks_engine_tokenize(e, all, tl, toks, n);
  free(all);
  if (st) return st;
  int *pt = NULL, np = 0;
  st = ks_engine_tokenize(e, it->prefix, it->prefix_len, &pt, &np);
  if (st) { free(*toks); *toks = NULL; return st; }
  int k = 0;
  while (k < np && k < *n && pt[k] == (*toks)[k]) k++;
  *n_prefix = k;
  free(pt);
  return KS_OK;
}

/* Serves one request; streams or collects; prints its statistics. Returns an exit status. */
static int serve(ks_engine *e, const run_args *a, const run_item *it, int index) {
  int *toks = NULL, n = 0, n_prefix = 0;
  if (tokenize_item(e, it, &toks, &n, &n_prefix)) return die(1, "cannot use this prompt");
  ks_request r = {0};
  r.tokens = toks;
  r.n_tokens = n;
  r.n_predict = it->n_predict;
  r.sampling = it->sp;
  r.cache_prefix = n_prefix;
  r.no_cache = it->no_cache;
  if (ks_engine_submit(e, &r)) {
    free(toks);
    return die(1, "cannot serve this request");
  }
  if (a->echo && !a->json) {
    if (it->prefix) fwrite(it->prefix, 1, it->prefix_len, stdout);
    fwrite(it->text, 1, it->len, stdout);
    fflush(stdout);
  }
  collected c = {0};
  ks_usage u = {0};
  int rc = 0;
  for (;;) {
    ks_event ev;
    if (ks_interrupt_pending()) { ks_engine_cancel(e); rc = interrupted_rc(); break; }
    if (ks_engine_step(e, &ev)) {
      rc = ks_interrupt_pending() ? interrupted_rc() : die(1, "generation failed");
      break;
    }
    if (ev.kind == KS_EV_TOKEN) {
      if (a->json) {
        if (collect(&c, ev.token, ev.text, ev.len)) { rc = die(1, "out of memory"); ks_engine_cancel(e); break; }
      } else {
        fwrite(ev.text, 1, ev.len, stdout);
        fflush(stdout);
      }
    } else if (ev.kind == KS_EV_DONE) {
      u = ev.usage;
      break;
    }
  }
  if (!rc) {
    double pp = u.t_prefill > 0 ? (u.prompt_tokens - u.cached_tokens) / u.t_prefill : 0;
    int n_dec = u.completion_tokens > 0 ? u.completion_tokens - (u.stop == KS_STOP_LENGTH) : 0;
    double tg = u.t_decode > 0 && n_dec > 0 ? n_dec / u.t_decode : 0;
    if (a->json) {
      printf("{\"request\":%d,\"model\":", index);
      json_write_str(stdout, a->eo.model_path, strlen(a->eo.model_path));
      printf(",\"device\":");
      const char *dn = ks_engine_device_name(e);
      json_write_str(stdout, dn, strlen(dn));
      printf(",\"prompt_tokens\":%d,\"generated_tokens\":%d,\"prefill_tokens_per_s\":%.2f,"
             "\"decode_tokens_per_s\":%.2f,\"ttft_ms\":%.3f,\"seed\":%llu,\"stop\":\"%s\",",
             u.prompt_tokens, u.completion_tokens, pp, tg, u.ttft * 1e3,
             (unsigned long long)it->sp.seed, stop_name(u.stop));
      print_usage_json(stdout, &u);
      printf(",\"prompt_token_ids\":[");
      for (int i = 0; i < n; i++) printf("%s%d", i ? "," : "", toks[i]);
      printf("],\"token_ids\":[");
      for (int i = 0; i < c.n; i++) printf("%s%d", i ? "," : "", c.toks[i]);
      printf("],\"text\":");
      json_write_str(stdout, c.text ? c.text : "", c.len);
      printf("}\n");
      fflush(stdout);
    } else {
      printf("\n");
      fflush(stdout);
      fprintf(stderr,
              "\n%s: device %s | prompt %d tokens | prefill %.1f tok/s | decode %.1f tok/s (%d tokens) | "
              "time to first token %.2f ms | seed %llu | stop: %s\n"
              "%s: cache: %d of %d prompt tokens cached (%.0f%%), %d newly cached | cost $%.6f "
              "(without the cache $%.6f)\n",
              g_prog, ks_engine_device_name(e), u.prompt_tokens, pp, tg, u.completion_tokens,
              u.ttft * 1e3, (unsigned long long)it->sp.seed, stop_name(u.stop), g_prog,
              u.cached_tokens, u.prompt_tokens, 100 * u.hit_rate, u.cache_creation_tokens,
              u.cost, u.cost_uncached);
    }
  }
  free(c.text);
  free(c.toks);
  free(toks);
  return rc;
}

static int validation_rc(int rc) {
  if (getenv("KVSCOPE_VALIDATION") && gpu_validation_count() > 0) {
    fprintf(stderr, "%s: %llu Vulkan validation message(s) reported\n", g_prog,
            (unsigned long long)gpu_validation_count());
    if (!rc) rc = 1;
  }
  return rc;
}

static int cmd_run(int argc, char **argv) {
  run_args a;
  memset(&a, 0, sizeof a);
  a.eo.device = -1;
  a.n_predict = 256;
  a.echo = 1;
  sampling_default(&a.sp);
  const char *prompt_file = NULL, *prompts_file = NULL;
  int rc = 0;
  for (int i = 1; i < argc && !rc; i++) {
    const char *o = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    int used = parse_common(&a, argc, argv, i);
    if (used == -2) { rc = 2; break; }
    if (used >= 0) { i += used; continue; }
    if (!strcmp(o, "-p") || !strcmp(o, "--prompt")) {
      if (!v) { rc = usage_error("option %s needs a value", o); break; }
      if (add_item(&a, v, strlen(v))) { rc = die(1, "out of memory"); break; }
      i++;
    } else if (!strcmp(o, "-f") || !strcmp(o, "--file")) {
      if (!v) { rc = usage_error("option %s needs a value", o); break; }
      prompt_file = v;
      i++;
    } else if (!strcmp(o, "--prompts")) {
      if (!v) { rc = usage_error("option %s needs a value", o); break; }
      prompts_file = v;
      i++;
    } else if (!strcmp(o, "--no-display-prompt")) {
      a.echo = 0;
    } else if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
      print_help(stdout);
      free_items(&a);
      return 0;
    } else {
      rc = usage_error("unknown option '%s'", o);
    }
  }
  if (!rc && prompt_file) {
    size_t len;
    char *buf = read_file(prompt_file, &len);
    if (!buf) rc = die(1, "cannot read the prompt");
    else if (add_item(&a, buf, len)) rc = die(1, "out of memory");
    free(buf);
  }
  if (!rc && prompts_file) rc = load_prompts_file(&a, prompts_file);
  if (!rc && a.n_items == 0) rc = usage_error("%s", "run needs a prompt: -p TEXT, -f FILE or --prompts FILE");
  if (!rc) rc = finish_common(&a);
  for (int i = 0; !rc && i < a.n_items; i++) {
    run_item *it = &a.items[i];
    resolve_item(&a, it);
    if (check_sampling(&it->sp)) rc = 2;
    size_t bad = 0;
    if (!rc && (!ks_utf8_valid(it->text, it->len, &bad) ||
                (it->prefix && !ks_utf8_valid(it->prefix, it->prefix_len, &bad)))) {
      const char *s = ks_utf8_valid(it->text, it->len, &bad) ? it->prefix : it->text;
      ks_utf8_valid(s, s == it->text ? it->len : it->prefix_len, &bad);
      fprintf(stderr, "%s: prompt %d is not valid UTF-8 (bad byte 0x%02x at offset %zu): save it as UTF-8\n",
              g_prog, i + 1, (unsigned char)s[bad], bad);
      rc = 1;
    }
  }
  ks_engine *e = NULL;
  install_signals();
  if (!rc && ks_engine_create(&e, &a.eo)) rc = die(1, "cannot start the engine");
  for (int i = 0; !rc && i < a.n_items; i++) {
    if (i > 0 && !a.json) printf("\n");
    rc = serve(e, &a, &a.items[i], i);
  }
  ks_engine_destroy(e);
  free_items(&a);
  return validation_rc(rc);
}

/* kvscope chat: each line on stdin is a user turn. The conversation is kept as turns (the user's
 * text; the reply's ids exactly as generated, never re-tokenized) and chat_template renders it
 * into each prompt, so a prompt starts with exactly the ids of the previous prompt, its reply and
 * the end of turn: the prompt cache serves the whole earlier conversation. */
typedef struct {
  chat_turn *turns;
  int n, cap;
} chat_log;

static void chat_log_free(chat_log *l) {
  for (int i = 0; i < l->n; i++) {
    free((void *)l->turns[i].text);
    free((void *)l->turns[i].tokens);
  }
  free(l->turns);
}

/* Takes ownership of the turn's text / tokens (freed here if it cannot be kept). */
static int chat_log_push(chat_log *l, chat_turn t) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    chat_turn *p = realloc(l->turns, sizeof *p * (size_t)cap);
    if (!p) {
      free((void *)t.text);
      free((void *)t.tokens);
      return -1;
    }
    l->turns = p;
    l->cap = cap;
  }
  l->turns[l->n++] = t;
  return 0;
}

/* The format from --chat-template, else from the model's tokenizer.chat_template; printed. */
static int chat_choose_format(ks_engine *e, const char *name, chat_tmpl *kind) {
  const char *why;
  if (name) {
    why = "--chat-template";
  } else {
    const ks_model *m = ks_engine_model(e);
    const char *jinja = m->gguf ? gguf_get_str(m->gguf, "tokenizer.chat_template") : NULL;
    int recognised = 1;
    *kind = chat_template_detect(jinja, &recognised);
    if (!recognised)
      fprintf(stderr, "%s: warning: the model's chat template (tokenizer.chat_template) is not one "
              "kvscope knows (llama2, llama3, chatml): turns are joined as plain text; choose a "
              "format with --chat-template if the model uses one of those\n", g_prog);
    why = !jinja || !*jinja ? "the model has no chat template" : recognised ? "from the model's "
          "tokenizer.chat_template" : "the model's chat template is not recognised";
  }
  if (chat_template_check(*kind, ks_engine_tokenizer(e))) return die(1, "cannot use this chat format");
  fprintf(stderr, "%s: chat format %s (%s)\n", g_prog, chat_template_name(*kind), why);
  return 0;
}

static int cmd_chat(int argc, char **argv) {
  run_args a;
  memset(&a, 0, sizeof a);
  a.eo.device = -1;
  a.n_predict = 128;
  sampling_default(&a.sp);
  const char *system = NULL, *tmpl_name = NULL;
  chat_tmpl kind = CHAT_TMPL_NONE;
  int rc = 0;
  for (int i = 1; i < argc && !rc; i++) {
    const char *o = argv[i];
    int used = parse_common(&a, argc, argv, i);
    if (used == -2) { rc = 2; break; }
    if (used >= 0) { i += used; continue; }
    if (!strcmp(o, "--system") || !strcmp(o, "--chat-template")) {
      if (i + 1 >= argc) { rc = usage_error("option %s needs a value", o); break; }
      if (!strcmp(o, "--system")) { system = argv[++i]; continue; }
      tmpl_name = argv[++i];
      if (chat_template_from_name(tmpl_name, &kind)) rc = usage_error("%s", ks_last_error());
      continue;
    }
    if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
      printf("Usage: kvscope chat [-m MODEL] [--system TEXT] [--chat-template NAME]\n"
             "                    [run's model, sampling and cache options]\n"
             "Reads one user turn per line from stdin and answers it, continuing the whole\n"
             "conversation: earlier turns are served from the prompt cache (the statistics line\n"
             "after each reply shows how many prompt tokens were cached). -n caps each reply\n"
             "(default 128); a reply also ends at the model's end-of-turn or end-of-text token.\n"
             "  --system TEXT          the system prompt, at the start of the conversation\n"
             "  --chat-template NAME   the conversation's format: llama2 (<s>[INST] <<SYS>> ...\n"
             "                         [/INST]), llama3 (<|start_header_id|>role<|end_header_id|>\n"
             "                         ... <|eot_id|>), chatml (<|im_start|>role ... <|im_end|>:\n"
             "                         Qwen, SmolLM) or none (plain text, one turn per line).\n"
             "                         Default: recognised from the model's\n"
             "                         tokenizer.chat_template; none if it has no template.\n"
             "Special tokens typed in a message are text: they cannot end a turn.\n");
      return 0;
    }
    rc = usage_error("unknown option '%s'", o);
  }
  if (!rc) rc = finish_common(&a);
  ks_engine *e = NULL;
  install_signals();
  if (!rc && ks_engine_create(&e, &a.eo)) rc = die(1, "cannot start the engine");
  if (!rc) rc = chat_choose_format(e, tmpl_name, &kind);
  const ks_tokenizer *tok = rc ? NULL : ks_engine_tokenizer(e);
  chat_log conv = {0};
  int interactive = isatty(0);
  char *line = NULL;
  size_t cap = 0;
  while (!rc) {
    if (interactive) { fprintf(stderr, "> "); fflush(stderr); }
    ssize_t got = getline(&line, &cap, stdin);
    if (got < 0) {
      if (ks_interrupt_pending()) rc = interrupted_rc();
      break;
    }
    size_t len = (size_t)got;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
    size_t bad;
    if (!ks_utf8_valid(line, len, &bad)) {
      fprintf(stderr, "%s: that line is not valid UTF-8 (byte 0x%02x at offset %zu); skipped\n", g_prog,
              (unsigned char)line[bad], bad);
      continue;
    }
    chat_turn ut = {CHAT_USER, NULL, len, NULL, 0};
    char *copy = malloc(len + 1);
    if (copy) {
      memcpy(copy, line, len);
      copy[len] = 0;
    }
    ut.text = copy;
    if (!copy || chat_log_push(&conv, ut)) { rc = die(1, "out of memory"); break; }
    int *prompt = NULL, n_prompt = 0;
    if (chat_template_apply(kind, tok, system, conv.turns, conv.n, &prompt, &n_prompt)) {
      rc = die(1, "cannot build the prompt");
      break;
    }
    int n_ctx = ks_engine_n_ctx(e);
    if (n_prompt >= n_ctx) {
      free(prompt);
      fprintf(stderr, "%s: the conversation (%d tokens) no longer fits the context (%d tokens): start "
              "a new chat or raise -c\n", g_prog, n_prompt, n_ctx);
      rc = 1;
      break;
    }
    ks_request r = {0};
    r.tokens = prompt;
    r.n_tokens = n_prompt;
    r.n_predict = a.n_predict < 0 ? -1 : KS_MIN(a.n_predict, n_ctx - n_prompt);
    r.sampling = a.sp;
    r.no_cache = a.no_cache;
    ks_status st = ks_engine_submit(e, &r);
    free(prompt);
    if (st) { rc = die(1, "cannot answer"); break; }
    /* the reply's ids, at most what the context leaves */
    int *reply = malloc(sizeof *reply * (size_t)(n_ctx - n_prompt + 1)), n_reply = 0;
    if (!reply) { ks_engine_cancel(e); rc = die(1, "out of memory"); break; }
    ks_usage u = {0};
    for (;;) {
      ks_event ev;
      if (ks_interrupt_pending()) { ks_engine_cancel(e); rc = interrupted_rc(); break; }
      if (ks_engine_step(e, &ev)) {
        rc = ks_interrupt_pending() ? interrupted_rc() : die(1, "generation failed");
        break;
      }
      if (ev.kind == KS_EV_TOKEN) {
        fwrite(ev.text, 1, ev.len, stdout);
        fflush(stdout);
        if (n_reply < n_ctx - n_prompt + 1) reply[n_reply++] = ev.token;
      } else if (ev.kind == KS_EV_DONE) {
        u = ev.usage;
        break;
      }
    }
    if (rc) { free(reply); break; }
    /* the stop token (end of turn / text) is not kept: the format writes its own end of turn
     * after the reply when it renders the next prompt */
    chat_turn at = {CHAT_ASSISTANT, NULL, 0, reply, n_reply};
    if (chat_log_push(&conv, at)) { rc = die(1, "out of memory"); break; }
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "[%d of %d prompt tokens cached (%.0f%%), time to first token %.2f ms]\n",
            u.cached_tokens, u.prompt_tokens, 100 * u.hit_rate, u.ttft * 1e3);
  }
  free(line);
  chat_log_free(&conv);
  ks_engine_destroy(e);
  free_items(&a);
  return validation_rc(rc);
}

/* In the simple subcommands below: `a` is the option, `v` its value. */
#define NEED_VALUE() do { if (!v) return usage_error("option %s needs a value", a); i++; } while (0)

/* ---- devices ---- */

static int cmd_devices(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      printf("Usage: kvscope devices\nLists every Vulkan device with the features kvscope uses.\n");
      return 0;
    }
    return usage_error("unknown option '%s'", argv[i]);
  }
  if (gpu_list_devices(stdout)) return die(1, "cannot list Vulkan devices");
  return 0;
}

/* ---- convert ---- */

static int parse_type(const char *s, ks_type *t) {
  if (!strcasecmp(s, "f32")) *t = KS_TYPE_F32;
  else if (!strcasecmp(s, "f16")) *t = KS_TYPE_F16;
  else if (!strcasecmp(s, "q8_0")) *t = KS_TYPE_Q8_0;
  else if (!strcasecmp(s, "q4_0")) *t = KS_TYPE_Q4_0;
  else return -1;
  return 0;
}

static int cmd_convert(int argc, char **argv) {
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--random")) return convert_random_main(argc, argv);
  const char *in = NULL, *out = NULL, *tok = NULL;
  ks_type type = KS_TYPE_F32;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("Usage: kvscope convert IN [-z TOKENIZER] OUT.gguf [--type f32|f16|q8_0|q4_0]\n"
             "Writes IN (a llama2.c checkpoint with its tokenizer.bin, or a GGUF) as a llama GGUF\n"
             "with matrices in the given type (default f32); norms stay f32.\n");
      return 0;
    }
    if (!strcmp(a, "-z") || !strcmp(a, "--tokenizer")) { NEED_VALUE(); tok = v; }
    else if (!strcmp(a, "--type") || !strcmp(a, "-t")) {
      NEED_VALUE();
      if (parse_type(v, &type)) return usage_error("unknown type '%s' (f32, f16, q8_0, q4_0)", v);
    }
    else if (a[0] == '-' && a[1]) return usage_error("unknown option '%s'", a);
    else if (!in) in = a;
    else if (!out) out = a;
    else return usage_error("unexpected argument '%s'", a);
  }
  if (!in || !out) return usage_error("%s", "convert needs IN and OUT.gguf");
  ks_model m;
  if (model_load(&m, in)) {
    model_deinit(&m);
    return die(1, "cannot load the model");
  }
  if (m.format == KS_FMT_LLAMA2C && !tok) {
    model_deinit(&m);
    fprintf(stderr, "%s: '%s' is a llama2.c checkpoint: give its tokenizer.bin with -z\n", g_prog, in);
    return 2;
  }
  ks_status st = convert_to_gguf(&m, tok, out, type);
  model_deinit(&m);
  if (st) return die(1, "conversion failed");
  fprintf(stderr, "%s: wrote %s (%s)\n", g_prog, out, ks_type_name(type));
  return 0;
}

/* ---- tokenize ---- */

static int cmd_tokenize(int argc, char **argv) {
  const char *model = NULL, *tokp = NULL, *text = NULL, *file = NULL;
  int ids = 0, bos = 1, parse_special = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("Usage: kvscope tokenize -m MODEL [-z TOKENIZER] (-p TEXT | -f FILE) [--ids] [--no-bos]\n"
             "                        [--parse-special]\n"
             "Prints the tokens of the text (the file's bytes exactly). --ids: one line [id, ...].\n"
             "MODEL may be a vocab-only GGUF; a llama2.c checkpoint needs -z.\n"
             "--no-bos: no BOS/EOS even where the vocabulary asks for them (add_bos_token).\n"
             "--parse-special: control tokens written in the text (e.g. <|im_start|>) become those\n"
             "  tokens; by default they are tokenized as plain text.\n");
      return 0;
    }
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_VALUE(); model = v; }
    else if (!strcmp(a, "-z") || !strcmp(a, "--tokenizer")) { NEED_VALUE(); tokp = v; }
    else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEED_VALUE(); text = v; }
    else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { NEED_VALUE(); file = v; }
    else if (!strcmp(a, "--ids")) ids = 1;
    else if (!strcmp(a, "--no-bos")) bos = 0;
    else if (!strcmp(a, "--parse-special")) parse_special = 1;
    else return usage_error("unknown option '%s'", a);
  }
  if (!model && !tokp) return usage_error("%s", "tokenize needs -m MODEL (or -z TOKENIZER with -m)");
  if (!text == !file) return usage_error("%s", "give exactly one of -p TEXT or -f FILE");
  ks_tokenizer *t = NULL;
  ks_gguf *g = NULL;
  ks_status st;
  if (tokp) {
    int vocab = 0;
    if (model) {
      ks_model m;
      if (model_load(&m, model)) { model_deinit(&m); return die(1, "cannot load the model"); }
      vocab = m.cfg.vocab_size;
      model_deinit(&m);
    }
    if (!vocab) return usage_error("%s", "-z needs -m with the checkpoint (for its vocabulary size)");
    st = tokenizer_load_llama2c(&t, tokp, vocab);
  } else {
    st = gguf_open(&g, model);
    if (!st) st = tokenizer_from_gguf(&t, g);
  }
  if (st) {
    gguf_close(g);
    return die(1, "cannot load the tokenizer");
  }
  size_t len = 0;
  char *buf = NULL;
  if (file) {
    buf = read_file(file, &len);
    if (!buf) { tokenizer_destroy(t); gguf_close(g); return die(1, "cannot read the text"); }
    text = buf;
  } else {
    len = strlen(text);
  }
  int *out = NULL, n = 0;
  unsigned tflags = (bos ? KS_TOK_ADD_SPECIAL : 0u) | (parse_special ? KS_TOK_PARSE_SPECIAL : 0u);
  st = tokenizer_encode_ex(t, text, len, tflags, &out, &n);
  int rc = 0;
  if (st) rc = die(1, "cannot tokenize");
  else tokenizer_print_tokens(t, out, n, ids, stdout);
  free(out);
  free(buf);
  tokenizer_destroy(t);
  gguf_close(g);
  return rc;
}

/* ---- info ---- */

static int cmd_info(int argc, char **argv) {
  const char *model = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("Usage: kvscope info -m MODEL\nPrints architecture, shape, tensor types, tokenizer and "
             "memory needs.\n");
      return 0;
    }
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_VALUE(); model = v; }
    else if (a[0] != '-' && !model) model = a;
    else return usage_error("unknown option '%s'", a);
  }
  if (!model) model = ks_default_model_path();
  ks_model m;
  if (model_load(&m, model)) { model_deinit(&m); return die(1, "cannot load the model"); }
  const ks_config *c = &m.cfg;
  printf("file:          %s (%s)\n", model, m.format == KS_FMT_GGUF ? "GGUF" : "llama2.c checkpoint");
  printf("architecture:  %s\n", c->arch);
  printf("shape:         dim %d, ffn %d, layers %d, heads %d, kv heads %d, head dim %d\n", c->dim,
         c->hidden_dim, c->n_layer, c->n_head, c->n_kv_head, c->head_dim);
  printf("vocabulary:    %d tokens\n", c->vocab_size);
  printf("context:       %d tokens\n", c->n_ctx);
  printf("rms eps:       %g\nrope base:     %g\n", c->norm_eps, c->rope_base);
  printf("rope:          %s pairs%s\n", c->rope_neox ? "NeoX (half-split)" : "adjacent",
         m.rope_factors ? ", frequencies scaled (rope_freqs / rope.scaling)" : "");
  printf("output:        %s\n", m.tied_output ? "tied to the token embedding" : "separate");
  printf("q/k/v biases:  %s\n", m.layers[0].bq.data || m.layers[0].bk.data ? "yes" : "no");

  /* every weight tensor, counted and summed per type (all stay in their stored type on the
   * device: the kernels dequantise) */
  uint64_t type_n[64] = {0}, type_bytes[64] = {0}, largest = 0;
  int n_tensors = 0;
  size_t n_list = 0;
  const ks_tensor **list = malloc((3 + 12 * (size_t)c->n_layer) * sizeof *list);
  if (!list) { model_deinit(&m); return die(1, "out of memory"); }
  list[n_list++] = &m.tok_embd;
  list[n_list++] = &m.output_norm;
  if (!m.tied_output) list[n_list++] = &m.output;
  for (int l = 0; l < c->n_layer; l++) {
    const ks_layer *L = &m.layers[l];
    const ks_tensor *lt[12] = {&L->attn_norm, &L->wq, &L->wk, &L->wv, &L->wo, &L->ffn_norm,
                               &L->w_gate, &L->w_down, &L->w_up, &L->bq, &L->bk, &L->bv};
    for (int k = 0; k < 12; k++) list[n_list++] = lt[k];
  }
  for (size_t i = 0; i < n_list; i++) {
    const ks_tensor *t = list[i];
    if (!t->data) continue; /* an absent bias */
    unsigned ty = (unsigned)t->type < 64 ? (unsigned)t->type : 63;
    type_n[ty]++;
    type_bytes[ty] += t->nbytes;
    if (t->nbytes > largest) largest = t->nbytes;
    n_tensors++;
  }
  free(list);
  printf("tensors:       %d:", n_tensors);
  const char *sep = " ";
  for (int ty = 0; ty < 64; ty++)
    if (type_n[ty]) {
      printf("%s%s %llu (%.1f MiB)", sep, ks_type_name((uint32_t)ty),
             (unsigned long long)type_n[ty], type_bytes[ty] / 1048576.0);
      sep = ", ";
    }
  printf("\n");
  printf("tensor types:  embedding %s, output %s, attn_q %s, ffn_down %s\n",
         ks_type_name(m.tok_embd.type), ks_type_name(m.output.type),
         ks_type_name(m.layers[0].wq.type), ks_type_name(m.layers[0].w_down.type));

  if (m.gguf) {
    const char *tm = gguf_get_str(m.gguf, "tokenizer.ggml.model");
    const char *pre = gguf_get_str(m.gguf, "tokenizer.ggml.pre");
    const char *kind = !tm ? "none in the file (give one with -z)"
                       : !strcmp(tm, "llama") ? "SentencePiece BPE (llama)"
                       : !strcmp(tm, "gpt2") ? "byte-level BPE (gpt2)"
                                             : tm;
    printf("tokenizer:     %s%s%s%s\n", kind, pre ? ", pre-tokenizer " : "", pre ? pre : "",
           gguf_find_key(m.gguf, "tokenizer.chat_template") >= 0 ? ", has a chat template" : "");
  } else {
    printf("tokenizer:     SentencePiece BPE from a llama2.c tokenizer.bin (-z)\n");
  }

  uint64_t wb = model_weight_bytes(&m);
  uint64_t kv_tok = 2ull * c->n_layer * c->n_kv_head * c->head_dim * 4;
  printf("weights:       %.2f MiB on the device (largest tensor %.1f MiB%s)\n", wb / 1048576.0,
         largest / 1048576.0,
         largest > (128ull << 20) ? ": bound in slices where a buffer range is 128 MiB" : "");
  printf("K/V cache:     %.1f KiB per token (f32), %.2f MiB for the full context\n", kv_tok / 1024.0,
         kv_tok * (double)c->n_ctx / 1048576.0);
  /* activations for a prefill chunk of 512 tokens (x, xb, xb2, q, k, v, att, hb, hb2) and the
   * host-visible logits of one row */
  uint64_t wide = (uint64_t)(c->dim > c->n_head * c->head_dim ? c->dim : c->n_head * c->head_dim);
  uint64_t act = 512ull * 4 * ((uint64_t)c->dim + 4 * wide + 2ull * c->n_kv_head * c->head_dim +
                               2ull * c->hidden_dim) + 4ull * c->vocab_size;
  printf("total:         %.2f MiB with the full context (weights + K/V + %.1f MiB of "
         "activations for 512-token chunks)\n",
         (wb + kv_tok * (double)c->n_ctx + act) / 1048576.0, act / 1048576.0);
  model_deinit(&m);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    print_help(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
    print_help(stdout);
    return 0;
  }
  if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
  if (!strcmp(cmd, "chat")) return cmd_chat(argc - 1, argv + 1);
  if (!strcmp(cmd, "devices")) return cmd_devices(argc - 1, argv + 1);
  if (!strcmp(cmd, "convert")) return cmd_convert(argc - 1, argv + 1);
  if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
  if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
  if (!strcmp(cmd, "bench")) return bench_main(argc - 1, argv + 1);
  if (!strcmp(cmd, "selftest")) return selftest_main(argc - 1, argv + 1);
  if (!strcmp(cmd, "tui")) return tui_main(argc - 1, argv + 1);
  return usage_error("unknown command '%s' (run, chat, tui, bench, devices, selftest, info, tokenize, convert)", cmd);
}
