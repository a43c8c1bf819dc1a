/* chat_template.c — chat formats rendered straight into token ids (see chat_template.h).
 *
 * Each format is written as a sequence of three kinds of piece: a special token (looked up by
 * encoding its text with KS_TOK_PARSE_SPECIAL, or BOS/EOS by id), plain text (the template's own
 * words and the user's message), and ids kept verbatim (the model's replies). Plain text between
 * two non-text pieces is gathered into one run and encoded in one call without special parsing,
 * which is how llama.cpp tokenizes a rendered template (special tokens cut the text into runs;
 * each run is tokenized whole, SentencePiece's space prefix only at the start of a run that
 * follows a special token), so a role name and the message after it merge as they would there.
 * Not a template engine: the four formats are code. */
#include "chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const k_names[] = {"none", "llama2", "llama3", "chatml"};

const char *chat_template_name(chat_tmpl k) {
  return (unsigned)k < sizeof k_names / sizeof k_names[0] ? k_names[k] : "?";
}

ks_status chat_template_from_name(const char *name, chat_tmpl *out) {
  for (unsigned i = 0; i < sizeof k_names / sizeof k_names[0]; i++)
    if (name && !strcasecmp(name, k_names[i])) {
      *out = (chat_tmpl)i;
      return KS_OK;
    }
  return ks_fail(KS_ERR_ARG, "unknown chat template '%s': choose llama2, llama3, chatml or none",
                 name ? name : "(null)");
}

chat_tmpl chat_template_detect(const char *jinja, int *recognised) {
  *recognised = 1;
  if (!jinja || !*jinja) return CHAT_TMPL_NONE;
  /* ChatML first: Qwen's tool-calling templates also mention other formats' words, never the
   * <|im_start|> of another family. */
  if (strstr(jinja, "<|im_start|>")) return CHAT_TMPL_CHATML;
  if (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|end_header_id|>"))
    return CHAT_TMPL_LLAMA3;
  if (strstr(jinja, "[INST]")) return CHAT_TMPL_LLAMA2;
  *recognised = 0;
  return CHAT_TMPL_NONE;
}

/* ---------- the token builder ---------- */

typedef struct {
  const ks_tokenizer *t;
  int *ids;
  int n, cap;
  char *run; /* plain text waiting to be encoded as one run */
  size_t run_len, run_cap;
  unsigned first_flags; /* flags of the first encode call only (KS_TOK_ADD_SPECIAL for none) */
  ks_status st; /* first failure; later pieces are ignored */
} builder;

static void push_ids(builder *b, const int *ids, int n) {
  if (b->st || n <= 0) return;
  if (b->n + n > b->cap) {
    int cap = b->cap ? b->cap : 256;
    while (cap < b->n + n) cap *= 2;
    int *p = realloc(b->ids, sizeof *p * (size_t)cap);
    if (!p) {
      b->st = ks_fail(KS_ERR_NOMEM, "chat template: out of memory for %d tokens", b->n + n);
      return;
    }
    b->ids = p;
    b->cap = cap;
  }
  memcpy(b->ids + b->n, ids, sizeof *ids * (size_t)n);
  b->n += n;
}

static void text(builder *b, const char *s, size_t len) {
  if (b->st || !len) return;
  if (b->run_len + len + 1 > b->run_cap) {
    size_t cap = b->run_cap ? b->run_cap : 256;
    while (cap < b->run_len + len + 1) cap *= 2;
    char *p = realloc(b->run, cap);
    if (!p) {
      b->st = ks_fail(KS_ERR_NOMEM, "chat template: out of memory for %zu bytes of text",
                      b->run_len + len);
      return;
    }
    b->run = p;
    b->run_cap = cap;
  }
  memcpy(b->run + b->run_len, s, len);
  b->run_len += len;
}

static void lit(builder *b, const char *s) { text(b, s, strlen(s)); }

/* Ends the current run: its text is encoded without special parsing (the user's words are in
 * it) and, except in the first call of "none", without BOS/EOS (the formats place those). */
static void flush(builder *b) {
  if (b->st || (!b->run_len && !b->first_flags)) return;
  int *ids = NULL, n = 0;
  b->st = tokenizer_encode_ex(b->t, b->run, b->run_len, b->first_flags, &ids, &n);
  b->run_len = 0;
  b->first_flags = 0;
  if (!b->st) push_ids(b, ids, n);
  free(ids);
}

static void verbatim(builder *b, const int *ids, int n) {
  flush(b);
  push_ids(b, ids, n);
}

static void special_id(builder *b, int id) { verbatim(b, &id, 1); }

/* The id of a special token written as `s` in the template: the vocabulary's control or
 * user-defined token of that text. -1 if the vocabulary has none. */
static int find_special(const ks_tokenizer *t, const char *s) {
  int *ids = NULL, n = 0;
  if (tokenizer_encode_ex(t, s, strlen(s), KS_TOK_PARSE_SPECIAL, &ids, &n)) return -1;
  int id = -1;
  if (n == 1) {
    int ty = tokenizer_type(t, ids[0]);
    if (ty == 3 || ty == 4) id = ids[0]; /* control, user-defined */
  }
  free(ids);
  return id;
}

static ks_status missing(chat_tmpl k, const char *what) {
  return ks_fail(KS_ERR_ARG,
                 "the %s chat format needs the special token %s, which this model's vocabulary "
                 "does not have: give the model's own format with --chat-template (llama2, "
                 "llama3, chatml, or none for plain text)",
                 chat_template_name(k), what);
}

/* A special token the format cannot do without. */
static void special(builder *b, chat_tmpl k, const char *s) {
  if (b->st) return;
  int id = find_special(b->t, s);
  if (id < 0) {
    char what[64];
    snprintf(what, sizeof what, "'%s'", s);
    b->st = missing(k, what);
    return;
  }
  special_id(b, id);
}

/* A marker some vocabularies hold as a control token (Mistral's [INST]) and others spell in
 * plain text (Llama 2's): the token where there is one, else the text joins the run. */
static void marker(builder *b, const char *s) {
  if (b->st) return;
  int id = find_special(b->t, s);
  if (id >= 0) special_id(b, id);
  else lit(b, s);
}

static int is_ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Appends s with its surrounding whitespace removed (the Jinja templates' strip / trim). */
static void trimmed(builder *b, const char *s, size_t len) {
  while (len && is_ws(*s)) s++, len--;
  while (len && is_ws(s[len - 1])) len--;
  text(b, s, len);
}

/* ---------- the formats ---------- */

ks_status chat_template_check(chat_tmpl k, const ks_tokenizer *t) {
  static const char *const chatml[] = {"<|im_start|>", "<|im_end|>", NULL};
  static const char *const llama3[] = {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                                       NULL};
  const char *const *need = NULL;
  switch (k) {
  case CHAT_TMPL_NONE:
    return KS_OK;
  case CHAT_TMPL_LLAMA2:
    if (tokenizer_bos(t) < 0) return missing(k, "BOS (<s>)");
    if (tokenizer_eos(t) < 0) return missing(k, "EOS (</s>)");
    return KS_OK;
  case CHAT_TMPL_LLAMA3:
    need = llama3;
    break;
  case CHAT_TMPL_CHATML:
    need = chatml;
    break;
  default:
    return ks_fail(KS_ERR_ARG, "chat template kind %d does not exist", (int)k);
  }
  for (; *need; need++) {
    if (find_special(t, *need) < 0) {
      char what[64];
      snprintf(what, sizeof what, "'%s'", *need);
      return missing(k, what);
    }
  }
  return KS_OK;
}

static int has_text(const char *s) { return s && *s; }

static void render_none(builder *b, const char *system, const chat_turn *turns, int n) {
  /* the plain joining kvscope chat has always done: each piece encoded on its own */
  if (has_text(system)) {
    lit(b, system);
    flush(b);
  }
  for (int i = 0; i < n; i++) {
    if (turns[i].role == CHAT_USER) {
      text(b, turns[i].text, turns[i].len);
      lit(b, "\n");
      flush(b);
    } else {
      verbatim(b, turns[i].tokens, turns[i].n_tokens);
    }
  }
}

static void render_llama2(builder *b, const char *system, const chat_turn *turns, int n) {
  const ks_tokenizer *t = b->t;
  for (int i = 0; i < n; i++) {
    if (turns[i].role == CHAT_USER) {
      special_id(b, tokenizer_bos(t)); /* Llama 2 opens every exchange with <s> */
      marker(b, "[INST]");
      lit(b, " ");
      if (i == 0 && has_text(system)) {
        lit(b, "<<SYS>>\n");
        trimmed(b, system, strlen(system));
        lit(b, "\n<</SYS>>\n\n");
      }
      trimmed(b, turns[i].text, turns[i].len);
      lit(b, " ");
      marker(b, "[/INST]");
    } else {
      verbatim(b, turns[i].tokens, turns[i].n_tokens);
      special_id(b, tokenizer_eos(t));
    }
  }
}

static void header3(builder *b, const char *role) {
  special(b, CHAT_TMPL_LLAMA3, "<|start_header_id|>");
  lit(b, role);
  special(b, CHAT_TMPL_LLAMA3, "<|end_header_id|>");
  lit(b, "\n\n");
}

static void render_llama3(builder *b, const char *system, const chat_turn *turns, int n) {
  if (has_text(system)) {
    header3(b, "system");
    trimmed(b, system, strlen(system));
    special(b, CHAT_TMPL_LLAMA3, "<|eot_id|>");
  }
  for (int i = 0; i < n; i++) {
    if (turns[i].role == CHAT_USER) {
      header3(b, "user");
      trimmed(b, turns[i].text, turns[i].len);
    } else {
      header3(b, "assistant");
      verbatim(b, turns[i].tokens, turns[i].n_tokens);
    }
    special(b, CHAT_TMPL_LLAMA3, "<|eot_id|>");
  }
  if (n && turns[n - 1].role == CHAT_USER) header3(b, "assistant");
}

static void render_chatml(builder *b, const char *system, const chat_turn *turns, int n) {
  if (has_text(system)) {
    special(b, CHAT_TMPL_CHATML, "<|im_start|>");
    lit(b, "system\n");
    lit(b, system);
    special(b, CHAT_TMPL_CHATML, "<|im_end|>");
    lit(b, "\n");
  }
  for (int i = 0; i < n; i++) {
    special(b, CHAT_TMPL_CHATML, "<|im_start|>");
    if (turns[i].role == CHAT_USER) {
      lit(b, "user\n");
      text(b, turns[i].text, turns[i].len);
    } else {
      lit(b, "assistant\n");
      verbatim(b, turns[i].tokens, turns[i].n_tokens);
    }
    special(b, CHAT_TMPL_CHATML, "<|im_end|>");
    lit(b, "\n");
  }
  if (n && turns[n - 1].role == CHAT_USER) {
    special(b, CHAT_TMPL_CHATML, "<|im_start|>");
    lit(b, "assistant\n");
  }
}

ks_status chat_template_apply(chat_tmpl k, const ks_tokenizer *t, const char *system,
                              const chat_turn *turns, int n_turns, int **tokens, int *n_tokens) {
  *tokens = NULL;
  *n_tokens = 0;
  if (n_turns < 0 || (n_turns && !turns))
    return ks_fail(KS_ERR_ARG, "chat template: %d turns given without a turn array", n_turns);
  for (int i = 0; i < n_turns; i++) {
    const chat_turn *tu = &turns[i];
    chat_role want = i % 2 ? CHAT_ASSISTANT : CHAT_USER;
    if (tu->role != want)
      return ks_fail(KS_ERR_ARG, "chat template: turn %d is the %s's, expected the %s's (turns "
                     "alternate, the user first)", i, tu->role == CHAT_USER ? "user" : "assistant",
                     want == CHAT_USER ? "user" : "assistant");
    if (want == CHAT_USER && !tu->text && tu->len)
      return ks_fail(KS_ERR_ARG, "chat template: user turn %d has no text", i);
    if (want == CHAT_ASSISTANT && (tu->n_tokens < 0 || (!tu->tokens && tu->n_tokens)))
      return ks_fail(KS_ERR_ARG, "chat template: assistant turn %d has no token array", i);
  }
  ks_status st = chat_template_check(k, t);
  if (st) return st;
  builder b = {0};
  b.t = t;
  /* Whether the format starts with BOS: the vocabulary says (add_bos_token), as for any prompt.
   * "none" encodes its first piece exactly as `kvscope run` encodes a prompt (llama2.c's
   * tokenizer even merges with BOS); Llama 2 writes its own <s> before every [INST]. */
  if (k == CHAT_TMPL_NONE) b.first_flags = KS_TOK_ADD_SPECIAL;
  else if (k != CHAT_TMPL_LLAMA2 && tokenizer_add_bos(t) && tokenizer_bos(t) >= 0)
    special_id(&b, tokenizer_bos(t));
  switch (k) {
  case CHAT_TMPL_NONE: render_none(&b, system, turns, n_turns); break;
  case CHAT_TMPL_LLAMA2: render_llama2(&b, system, turns, n_turns); break;
  case CHAT_TMPL_LLAMA3: render_llama3(&b, system, turns, n_turns); break;
  case CHAT_TMPL_CHATML: render_chatml(&b, system, turns, n_turns); break;
  }
  flush(&b);
  free(b.run);
  if (b.st) {
    free(b.ids);
    return b.st;
  }
  if (!b.ids) { /* nothing to say: still a valid, empty array */
    b.ids = malloc(sizeof *b.ids);
    if (!b.ids) return ks_fail(KS_ERR_NOMEM, "chat template: out of memory");
  }
  *tokens = b.ids;
  *n_tokens = b.n;
  return KS_OK;
}
