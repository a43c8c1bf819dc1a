/* chat_template.h — the chat formats of the model families kvscope runs, applied directly to
 * token ids: Llama 2 ([INST] ... [/INST] with a <<SYS>> block), Llama 3 (<|start_header_id|>role
 * <|end_header_id|> ... <|eot_id|>), ChatML (<|im_start|>role ... <|im_end|>: Qwen, SmolLM) and
 * "none" (plain text joined one turn per line). The family is recognised from distinctive
 * substrings of the GGUF's tokenizer.chat_template.
 *
 * Pure: a template kind, a tokenizer, the system text and the turns in; the next prompt's ids out.
 * The template's own special tokens become their single ids; the user's text is never parsed for
 * special tokens (typing "<|im_end|>" does not end a turn). Assistant turns are the ids the model
 * generated, kept verbatim, so the prompt for turn k+1 starts with exactly the ids of turn k's
 * prompt + reply + end of turn, and the prompt cache serves the whole earlier conversation.
 *
 * Not a Jinja interpreter: a template kvscope does not recognise falls back to "none" (the caller
 * says so), and the templates' optional extras (tools, default system prompts, dates) are not
 * reproduced. */
#ifndef KS_CHAT_TEMPLATE_H
#define KS_CHAT_TEMPLATE_H
#include <stddef.h>

#include "common.h"
#include "tokenizer.h"

typedef enum {
  CHAT_TMPL_NONE = 0,   /* [BOS] system, then each user line + "\n", each reply as generated */
  CHAT_TMPL_LLAMA2 = 1, /* <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]{reply}</s> */
  CHAT_TMPL_LLAMA3 = 2, /* <|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|> */
  CHAT_TMPL_CHATML = 3, /* <|im_start|>{role}\n{text}<|im_end|>\n */
} chat_tmpl;

/* "none", "llama2", "llama3", "chatml". */
const char *chat_template_name(chat_tmpl k);
/* The kind a name gives (case-insensitive); KS_ERR_ARG with the valid names if none does. */
ks_status chat_template_from_name(const char *name, chat_tmpl *out);
/* The family of a Jinja chat template (tokenizer.chat_template), recognised by substrings each
 * family's templates contain. NULL or "" give NONE with *recognised = 1 (the model has no
 * format: plain text is right); an unknown template gives NONE with *recognised = 0. */
chat_tmpl chat_template_detect(const char *jinja, int *recognised);

/* Whether the vocabulary has the special tokens the template needs (KS_ERR_ARG naming the
 * missing one otherwise). chat_template_apply checks this too; call it to fail before a chat. */
ks_status chat_template_check(chat_tmpl k, const ks_tokenizer *t);

typedef enum { CHAT_USER = 0, CHAT_ASSISTANT = 1 } chat_role;

typedef struct {
  chat_role role;
  const char *text;   /* CHAT_USER: the message, UTF-8, tokenized as plain text */
  size_t len;
  const int *tokens;  /* CHAT_ASSISTANT: the reply's ids as generated, without the stop token */
  int n_tokens;
} chat_turn;

/* Token ids of the conversation: BOS where the format has one, the system block (system may be
 * NULL or ""), the turns (user first, then alternating), and, when the last turn is the user's,
 * the header that asks the assistant to answer. Llama 2 and Llama 3 trim surrounding whitespace
 * from the user and system texts, as their templates do. *tokens is malloc'd. */
ks_status chat_template_apply(chat_tmpl k, const ks_tokenizer *t, const char *system,
                              const chat_turn *turns, int n_turns, int **tokens, int *n_tokens);

#endif
