/* main.c — the kvscope command line: run, devices, convert, tokenize, info. Parses flags,
 * calls the library (kvscope.h and friends), prints; the only place besides ui/ that exits. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "convert.h"
#include "gguf.h"
#include "gpu.h"
#include "kvscope.h"

#ifndef KVSCOPE_MODELS_DIR
#define KVSCOPE_MODELS_DIR "models"
#endif
#define DEFAULT_MODEL_NAME "kvscope-tiny.gguf"

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
    "  kvscope run [-m MODEL] [-z TOKENIZER] (-p PROMPT | -f FILE) [options]\n"
    "  kvscope devices\n"
    "  kvscope info -m MODEL\n"
    "  kvscope tokenize -m MODEL [-z TOKENIZER] (-p TEXT | -f FILE) [--ids] [--no-bos]\n"
    "  kvscope convert IN [-z TOKENIZER] OUT.gguf [--type f32|f16|q8_0|q4_0]\n"
    "\n"
    "run: generate text; the text streams to stdout, statistics go to stderr.\n"
    "  -m, --model PATH       GGUF file or llama2.c checkpoint (.bin); default: the model shipped\n"
    "                         in models/ (" DEFAULT_MODEL_NAME ")\n"
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
    "  --json                 print one JSON object (text, tokens, statistics) instead of streaming\n"
    "  --no-display-prompt    do not echo the prompt before the generated text\n"
    "\n"
    "Generation stops after N tokens, at the end-of-sequence token, when the context is full,\n"
    "and, for llama2.c checkpoints (their reference behaviour), when the model emits BOS.\n"
    "\n"
    "Environment: KVSCOPE_DEVICE (device index), KVSCOPE_VALIDATION=1 (Vulkan validation layers;\n"
    "the exit status is non-zero if they report anything), KVSCOPE_PROGRESS=0/1 (load progress).\n"
    "Exit status: 0 success, 1 runtime error (bad model file, no Vulkan device, ...), 2 bad usage.\n");
}

/* ---- small helpers ---- */

static int parse_int(const char *s, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < INT_MIN || v > INT_MAX) return -1;
  *out = (int)v;
  return 0;
}
static int parse_float(const char *s, float *out) {
  char *end;
  errno = 0;
  float v = strtof(s, &end);
  if (errno || *end || end == s) return -1;
  *out = v;
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

static const char *default_model(void) {
  static char path[PATH_MAX + 64];
  /* next to the binary (build/kvscope -> ../models), then the source tree, then ./models */
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = 0;
      snprintf(path, sizeof path, "%s/../models/%s", exe, DEFAULT_MODEL_NAME);
      if (access(path, R_OK) == 0) return path;
    }
  }
  snprintf(path, sizeof path, "%s/%s", KVSCOPE_MODELS_DIR, DEFAULT_MODEL_NAME);
  if (access(path, R_OK) == 0) return path;
  snprintf(path, sizeof path, "models/%s", DEFAULT_MODEL_NAME);
  return path;
}

static void json_str(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    default:
      if (c < 0x20) fprintf(f, "\\u%04x", c);
      else fputc(c, f);
    }
  }
  fputc('"', f);
}

/* ---- run ---- */

typedef struct {
  int json;
  char *text;
  size_t len, cap;
  int *toks;
  int n_toks, cap_toks;
} run_out;

static int on_token(void *user, int token, const char *text, size_t len) {
  run_out *o = user;
  if (!o->json) {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
  }
  if (o->len + len + 1 > o->cap) {
    size_t nc = (o->cap + len + 1) * 2;
    char *nt = realloc(o->text, nc);
    if (!nt) return 1;
    o->text = nt;
    o->cap = nc;
  }
  memcpy(o->text + o->len, text, len);
  o->len += len;
  if (token >= 0) {
    if (o->n_toks == o->cap_toks) {
      int nc = o->cap_toks ? o->cap_toks * 2 : 64;
      int *nt = realloc(o->toks, (size_t)nc * sizeof(int));
      if (!nt) return 1;
      o->toks = nt;
      o->cap_toks = nc;
    }
    o->toks[o->n_toks++] = token;
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

static int cmd_run(int argc, char **argv) {
  ks_engine_opts eo = {0};
  eo.device = -1;
  const char *prompt = NULL, *prompt_file = NULL;
  int n_predict = 256, json = 0, echo = 1;
  ks_sampling sp;
  sampling_default(&sp);
  int seed_given = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE() do { if (!v) return usage_error("option %s needs a value", a); i++; } while (0)
#define INT_VALUE(dst) do { NEED_VALUE(); if (parse_int(v, &(dst))) return usage_error("bad integer '%s'", v); } while (0)
#define FLOAT_VALUE(dst) do { NEED_VALUE(); if (parse_float(v, &(dst))) return usage_error("bad number '%s'", v); } while (0)
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_VALUE(); eo.model_path = v; }
    else if (!strcmp(a, "-z") || !strcmp(a, "--tokenizer")) { NEED_VALUE(); eo.tokenizer_path = v; }
    else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEED_VALUE(); prompt = v; }
    else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { NEED_VALUE(); prompt_file = v; }
    else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) INT_VALUE(n_predict);
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx-size")) INT_VALUE(eo.n_ctx);
    else if (!strcmp(a, "-b") || !strcmp(a, "--batch")) INT_VALUE(eo.batch);
    else if (!strcmp(a, "--temp")) FLOAT_VALUE(sp.temp);
    else if (!strcmp(a, "--top-k")) INT_VALUE(sp.top_k);
    else if (!strcmp(a, "--top-p")) FLOAT_VALUE(sp.top_p);
    else if (!strcmp(a, "--min-p")) FLOAT_VALUE(sp.min_p);
    else if (!strcmp(a, "-s") || !strcmp(a, "--seed")) {
      NEED_VALUE();
      char *end;
      errno = 0;
      unsigned long long s = strtoull(v, &end, 10);
      if (errno || *end || end == v) return usage_error("bad seed '%s'", v);
      sp.seed = s;
      seed_given = 1;
    }
    else if (!strcmp(a, "--device")) INT_VALUE(eo.device);
    else if (!strcmp(a, "--cpu")) eo.use_cpu = 1;
    else if (!strcmp(a, "--json")) json = 1;
    else if (!strcmp(a, "--no-display-prompt")) echo = 0;
    else if (!strcmp(a, "-h") || !strcmp(a, "--help")) { print_help(stdout); return 0; }
    else return usage_error("unknown option '%s'", a);
  }
  if (!prompt && !prompt_file) return usage_error("%s", "run needs a prompt: -p TEXT or -f FILE");
  if (prompt && prompt_file) return usage_error("%s", "give either -p or -f, not both");
  if (eo.n_ctx < 0) return usage_error("%s", "-c must be positive");
  if (eo.batch < 0) return usage_error("%s", "-b must be positive");
  if (n_predict < -1) return usage_error("%s", "-n must be -1 (no limit) or >= 0");
  if (sp.temp < 0 || sp.top_k < 0 || sp.top_p <= 0 || sp.top_p > 1 || sp.min_p < 0 || sp.min_p > 1)
    return usage_error("%s", "sampling settings out of range (temp >= 0, top-k >= 0, 0 < top-p <= 1, 0 <= min-p <= 1)");
  if (!seed_given) sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
  if (!eo.model_path) {
    eo.model_path = default_model();
    if (access(eo.model_path, R_OK) != 0) {
      fprintf(stderr, "%s: no -m given and the default model %s is missing: give a model with -m\n",
              g_prog, eo.model_path);
      return 1;
    }
  }

  size_t plen = 0;
  char *pbuf = NULL;
  if (prompt_file) {
    pbuf = read_file(prompt_file, &plen);
    if (!pbuf) return die(1, "cannot read the prompt");
    prompt = pbuf;
  } else {
    plen = strlen(prompt);
  }
  size_t bad;
  if (!ks_utf8_valid(prompt, plen, &bad)) {
    fprintf(stderr, "%s: the prompt is not valid UTF-8 (bad byte 0x%02x at offset %zu): save it as UTF-8\n",
            g_prog, (unsigned char)prompt[bad], bad);
    free(pbuf);
    return 1;
  }

  ks_engine *e;
  if (ks_engine_create(&e, &eo)) {
    free(pbuf);
    return die(1, "cannot start the engine");
  }
  int *toks = NULL, n_toks = 0;
  if (ks_engine_tokenize(e, prompt, plen, &toks, &n_toks)) {
    ks_engine_destroy(e);
    free(pbuf);
    return die(1, "cannot use this prompt");
  }
  run_out out = {0};
  out.json = json;
  if (echo && !json) {
    fwrite(prompt, 1, plen, stdout);
    fflush(stdout);
  }
  ks_gen_stats gs;
  ks_status st = ks_engine_generate(e, toks, n_toks, n_predict, &sp, on_token, &out, &gs);
  int rc = 0;
  if (st) {
    rc = die(1, "generation failed");
  } else {
    double pp = gs.t_prefill > 0 ? gs.n_prompt / gs.t_prefill : 0;
    int n_dec = gs.n_gen > 0 ? gs.n_gen - (gs.stop == KS_STOP_LENGTH || gs.stop == KS_STOP_CALLER) : 0;
    double tg = gs.t_decode > 0 && n_dec > 0 ? n_dec / gs.t_decode : 0;
    if (json) {
      printf("{\"model\":");
      json_str(stdout, eo.model_path, strlen(eo.model_path));
      printf(",\"device\":");
      const char *dn = ks_engine_device_name(e);
      json_str(stdout, dn, strlen(dn));
      printf(",\"prompt_tokens\":%d,\"generated_tokens\":%d,\"prefill_tokens_per_s\":%.2f,"
             "\"decode_tokens_per_s\":%.2f,\"ttft_ms\":%.3f,\"seed\":%llu,\"stop\":\"%s\",",
             gs.n_prompt, gs.n_gen, pp, tg, gs.ttft * 1e3, (unsigned long long)sp.seed,
             stop_name(gs.stop));
      printf("\"prompt_token_ids\":[");
      for (int i = 0; i < n_toks; i++) printf("%s%d", i ? "," : "", toks[i]);
      printf("],\"token_ids\":[");
      for (int i = 0; i < out.n_toks; i++) printf("%s%d", i ? "," : "", out.toks[i]);
      printf("],\"text\":");
      json_str(stdout, out.text ? out.text : "", out.len);
      printf("}\n");
    } else {
      printf("\n");
      fprintf(stderr,
              "\n%s: device %s | prompt %d tokens | prefill %.1f tok/s | decode %.1f tok/s (%d tokens) | "
              "time to first token %.2f ms | seed %llu | stop: %s\n",
              g_prog, ks_engine_device_name(e), gs.n_prompt, pp, tg, gs.n_gen, gs.ttft * 1e3,
              (unsigned long long)sp.seed, stop_name(gs.stop));
    }
  }
  free(out.text);
  free(out.toks);
  free(toks);
  free(pbuf);
  ks_engine_destroy(e);
  if (getenv("KVSCOPE_VALIDATION") && gpu_validation_count() > 0) {
    fprintf(stderr, "%s: %llu Vulkan validation message(s) reported\n", g_prog,
            (unsigned long long)gpu_validation_count());
    if (!rc) rc = 1;
  }
  return rc;
}

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
  int ids = 0, bos = 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("Usage: kvscope tokenize -m MODEL [-z TOKENIZER] (-p TEXT | -f FILE) [--ids] [--no-bos]\n"
             "Prints the tokens of the text (the file's bytes exactly). --ids: one line [id, ...].\n"
             "MODEL may be a vocab-only GGUF; a llama2.c checkpoint needs -z.\n");
      return 0;
    }
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_VALUE(); model = v; }
    else if (!strcmp(a, "-z") || !strcmp(a, "--tokenizer")) { NEED_VALUE(); tokp = v; }
    else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEED_VALUE(); text = v; }
    else if (!strcmp(a, "-f") || !strcmp(a, "--file")) { NEED_VALUE(); file = v; }
    else if (!strcmp(a, "--ids")) ids = 1;
    else if (!strcmp(a, "--no-bos")) bos = 0;
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
  st = tokenizer_encode(t, text, len, bos, &out, &n);
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
      printf("Usage: kvscope info -m MODEL\nPrints architecture, shape, tensor types and memory needs.\n");
      return 0;
    }
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_VALUE(); model = v; }
    else if (a[0] != '-' && !model) model = a;
    else return usage_error("unknown option '%s'", a);
  }
  if (!model) model = default_model();
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
  printf("output:        %s\n", m.tied_output ? "tied to the token embedding" : "separate");
  printf("tensor types:  embedding %s, output %s, attn_q %s, ffn_down %s\n",
         ks_type_name(m.tok_embd.type), ks_type_name(m.output.type),
         ks_type_name(m.layers[0].wq.type), ks_type_name(m.layers[0].w_down.type));
  uint64_t wb = model_weight_bytes(&m);
  uint64_t kv_tok = 2ull * c->n_layer * c->n_kv_head * c->head_dim * 4;
  printf("weights:       %.2f MiB on the device\n", wb / 1048576.0);
  printf("K/V cache:     %.1f KiB per token (f32), %.2f MiB for the full context\n", kv_tok / 1024.0,
         kv_tok * (double)c->n_ctx / 1048576.0);
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
  if (!strcmp(cmd, "devices")) return cmd_devices(argc - 1, argv + 1);
  if (!strcmp(cmd, "convert")) return cmd_convert(argc - 1, argv + 1);
  if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - 1, argv + 1);
  if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
  return usage_error("unknown command '%s' (run, devices, info, tokenize, convert)", cmd);
}
