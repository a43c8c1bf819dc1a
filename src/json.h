/* json.h — the little JSON kvscope needs: parse one flat object per line (the --prompts file),
 * and write strings escaped. Nested values are parsed for validity and reported as JSON_OTHER.
 * Not a general JSON library. */
#ifndef KS_JSON_H
#define KS_JSON_H
#include <stddef.h>
#include <stdio.h>

#include "common.h"

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUM, JSON_STR, JSON_OTHER } json_type;

typedef struct {
  char *key;
  json_type type;
  double num;
  int boolean;
  char *str; /* JSON_STR: decoded UTF-8, NUL-terminated (may contain NULs: use len) */
  size_t len;
} json_field;

typedef struct {
  json_field *f;
  int n;
} json_obj;

/* Parses a JSON object from len bytes; KS_ERR_FORMAT with the byte offset on bad input. */
ks_status json_parse_object(const char *s, size_t len, json_obj *out);
void json_obj_free(json_obj *o);
const json_field *json_get(const json_obj *o, const char *key);
/* Writes s (n bytes) as a JSON string literal. */
void json_write_str(FILE *f, const char *s, size_t n);

#endif
