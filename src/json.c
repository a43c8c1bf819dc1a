/* json.c — a small recursive-descent JSON reader for flat objects, and the string writer. */
#include "json.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
  const char *s;
  size_t i, n;
  int depth;
} rd;

static ks_status bad(const rd *r, const char *what) {
  return ks_fail(KS_ERR_FORMAT, "invalid JSON at byte %zu: %s", r->i, what);
}
static void ws(rd *r) {
  while (r->i < r->n && (r->s[r->i] == ' ' || r->s[r->i] == '\t' || r->s[r->i] == '\n' ||
                         r->s[r->i] == '\r'))
    r->i++;
}
static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
static int read_hex4(rd *r, unsigned *v) {
  if (r->i + 4 > r->n) return -1;
  *v = 0;
  for (int k = 0; k < 4; k++) {
    int h = hexval(r->s[r->i + k]);
    if (h < 0) return -1;
    *v = *v * 16 + (unsigned)h;
  }
  r->i += 4;
  return 0;
}
static size_t put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 63)); return 2; }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
    return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 63));
  o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
  return 4;
}

/* Parses a string at r->i (after the opening quote has been checked); out may be NULL. */
static ks_status parse_string(rd *r, char **out, size_t *len) {
  r->i++; /* opening quote */
  char *buf = malloc(r->n - r->i + 1); /* decoded is never longer than the source */
  if (!buf) return ks_fail(KS_ERR_NOMEM, "out of memory");
  size_t o = 0;
  for (;;) {
    if (r->i >= r->n) { free(buf); return bad(r, "unterminated string"); }
    unsigned char c = (unsigned char)r->s[r->i++];
    if (c == '"') break;
    if (c < 0x20) { free(buf); return bad(r, "control character in string"); }
    if (c != '\\') { buf[o++] = (char)c; continue; }
    if (r->i >= r->n) { free(buf); return bad(r, "unterminated escape"); }
    char e = r->s[r->i++];
    switch (e) {
    case '"': buf[o++] = '"'; break;
    case '\\': buf[o++] = '\\'; break;
    case '/': buf[o++] = '/'; break;
    case 'b': buf[o++] = '\b'; break;
    case 'f': buf[o++] = '\f'; break;
    case 'n': buf[o++] = '\n'; break;
    case 'r': buf[o++] = '\r'; break;
    case 't': buf[o++] = '\t'; break;
    case 'u': {
      unsigned cp;
      if (read_hex4(r, &cp)) { free(buf); return bad(r, "bad \\u escape"); }
      if (cp >= 0xD800 && cp < 0xDC00) {
        unsigned lo;
        if (r->i + 2 > r->n || r->s[r->i] != '\\' || r->s[r->i + 1] != 'u') { free(buf); return bad(r, "lone surrogate"); }
        r->i += 2;
        if (read_hex4(r, &lo) || lo < 0xDC00 || lo > 0xDFFF) { free(buf); return bad(r, "bad surrogate pair"); }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      } else if (cp >= 0xDC00 && cp < 0xE000) {
        free(buf);
        return bad(r, "lone surrogate");
      }
      o += put_utf8(buf + o, cp);
      break;
    }
    default: free(buf); return bad(r, "unknown escape");
    }
  }
  buf[o] = 0;
  if (out) { *out = buf; *len = o; }
  else free(buf);
  return KS_OK;
}

static ks_status skip_value(rd *r);

static ks_status parse_number(rd *r, double *v) {
  const char *start = r->s + r->i;
  size_t j = r->i;
  if (j < r->n && r->s[j] == '-') j++;
  if (j >= r->n || r->s[j] < '0' || r->s[j] > '9') return bad(r, "expected a value");
  while (j < r->n && strchr("0123456789+-.eE", r->s[j])) j++;
  char tmp[64];
  size_t l = j - r->i;
  if (l >= sizeof tmp) return bad(r, "number too long");
  memcpy(tmp, start, l);
  tmp[l] = 0;
  char *end;
  *v = strtod(tmp, &end);
  if (*end) return bad(r, "bad number");
  r->i = j;
  return KS_OK;
}

static ks_status parse_value(rd *r, json_field *f) {
  ws(r);
  if (r->i >= r->n) return bad(r, "expected a value");
  char c = r->s[r->i];
  if (c == '"') {
    f->type = JSON_STR;
    return parse_string(r, &f->str, &f->len);
  }
  if (c == '{' || c == '[') {
    f->type = JSON_OTHER;
    return skip_value(r);
  }
  if (r->n - r->i >= 4 && !memcmp(r->s + r->i, "true", 4)) { r->i += 4; f->type = JSON_BOOL; f->boolean = 1; return KS_OK; }
  if (r->n - r->i >= 5 && !memcmp(r->s + r->i, "false", 5)) { r->i += 5; f->type = JSON_BOOL; return KS_OK; }
  if (r->n - r->i >= 4 && !memcmp(r->s + r->i, "null", 4)) { r->i += 4; f->type = JSON_NULL; return KS_OK; }
  f->type = JSON_NUM;
  return parse_number(r, &f->num);
}

static ks_status skip_value(rd *r) {
  ws(r);
  if (r->i >= r->n) return bad(r, "expected a value");
  char c = r->s[r->i];
  if (c == '{' || c == '[') {
    if (++r->depth > 64) return bad(r, "nested too deeply");
    char close = c == '{' ? '}' : ']';
    r->i++;
    ws(r);
    if (r->i < r->n && r->s[r->i] == close) { r->i++; r->depth--; return KS_OK; }
    for (;;) {
      ks_status st;
      if (c == '{') {
        ws(r);
        if (r->i >= r->n || r->s[r->i] != '"') return bad(r, "expected a key");
        if ((st = parse_string(r, NULL, NULL))) return st;
        ws(r);
        if (r->i >= r->n || r->s[r->i] != ':') return bad(r, "expected ':'");
        r->i++;
      }
      if ((st = skip_value(r))) return st;
      ws(r);
      if (r->i < r->n && r->s[r->i] == ',') { r->i++; continue; }
      if (r->i < r->n && r->s[r->i] == close) { r->i++; break; }
      return bad(r, "expected ',' or a closing bracket");
    }
    r->depth--;
    return KS_OK;
  }
  json_field tmp = {0};
  ks_status st = parse_value(r, &tmp);
  free(tmp.str);
  return st;
}

ks_status json_parse_object(const char *s, size_t len, json_obj *out) {
  memset(out, 0, sizeof *out);
  rd r = {s, 0, len, 0};
  ws(&r);
  if (r.i >= r.n || s[r.i] != '{') return bad(&r, "expected '{'");
  r.i++;
  ws(&r);
  if (r.i < r.n && s[r.i] == '}') { r.i++; goto end; }
  for (;;) {
    ws(&r);
    if (r.i >= r.n || s[r.i] != '"') { json_obj_free(out); return bad(&r, "expected a key"); }
    json_field f = {0};
    size_t kl;
    ks_status st = parse_string(&r, &f.key, &kl);
    if (!st) {
      ws(&r);
      if (r.i >= r.n || s[r.i] != ':') st = bad(&r, "expected ':'");
      else { r.i++; st = parse_value(&r, &f); }
    }
    if (st) { free(f.key); free(f.str); json_obj_free(out); return st; }
    json_field *nf = realloc(out->f, sizeof *nf * (size_t)(out->n + 1));
    if (!nf) { free(f.key); free(f.str); json_obj_free(out); return ks_fail(KS_ERR_NOMEM, "out of memory"); }
    out->f = nf;
    out->f[out->n++] = f;
    ws(&r);
    if (r.i < r.n && s[r.i] == ',') { r.i++; continue; }
    if (r.i < r.n && s[r.i] == '}') { r.i++; break; }
    json_obj_free(out);
    return bad(&r, "expected ',' or '}'");
  }
end:
  ws(&r);
  if (r.i != r.n) { json_obj_free(out); return bad(&r, "text after the object"); }
  return KS_OK;
}

void json_obj_free(json_obj *o) {
  for (int i = 0; i < o->n; i++) {
    free(o->f[i].key);
    free(o->f[i].str);
  }
  free(o->f);
  memset(o, 0, sizeof *o);
}

const json_field *json_get(const json_obj *o, const char *key) {
  for (int i = o->n - 1; i >= 0; i--)
    if (!strcmp(o->f[i].key, key)) return &o->f[i];
  return NULL;
}

void json_write_str(FILE *f, const char *s, size_t n) {
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
