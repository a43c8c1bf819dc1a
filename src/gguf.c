/* gguf.c — GGUF (v2/v3, little-endian) reader over a read-only mmap, and an atomic writer.
 *
 * The reader treats the file as hostile: every length, count and offset is checked against the
 * bytes actually present, with overflow-safe arithmetic, before anything is read or allocated;
 * memory grows with what was parsed, never with what a header claims. Every failure names the
 * file, the key or tensor being read and what was wrong with it. It knows the container only:
 * which keys and tensors a llama model needs is model_gguf.c's business. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "quant.h"

#define GGUF_DEFAULT_ALIGNMENT 32
/* Limits far above any real model (llama.cpp files: ~50 keys, a few thousand tensors, vocabs
 * of ~256k): a count beyond them is corruption, and refusing it early keeps memory bounded. */
#define GGUF_MAX_KEYS (1u << 20)
#define GGUF_MAX_TENSORS (1u << 20)
#define GGUF_MAX_STR_ARRAY (1u << 24)
#define GGUF_MAX_NEST 4 /* arrays of arrays: skipped, but only this deep */

typedef struct {
  char *name;
  gguf_vtype type;
  size_t val_off;      /* offset of the value in the file (after the type field) */
  size_t val_len;      /* bytes of the serialized value */
  char *str;           /* STRING: NUL-terminated copy */
  gguf_vtype arr_type; /* ARRAY: element type */
  uint64_t arr_n;
  size_t arr_off;      /* ARRAY: offset of the first element */
  size_t *str_offs;    /* ARRAY of STRING: offset of each element's u64 length */
} gkey;

typedef struct {
  char *name;
  uint32_t n_dims;
  int64_t ne[4];
  uint32_t type;
  uint64_t offset;     /* relative to the data section */
  size_t nbytes;
} gtensor;

struct ks_gguf {
  char path[1024];
  void *map;
  size_t size;
  uint32_t version;
  uint32_t alignment;
  size_t data_off;     /* start of the data section (aligned) */
  gkey *keys;
  int n_keys;
  gtensor *tensors;
  int n_tensors;
};

/* ---------------------------------------------------------------- reader: cursor and errors */

typedef struct {
  const uint8_t *p;
  size_t size, off;
  const char *path;
  char ctx[200]; /* what is being read, for messages */
} rd;

static ks_status rd_fail(const rd *r, ks_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static ks_status rd_fail(const rd *r, ks_status st, const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return ks_fail(st, "GGUF file '%s': %s: %s", r->path, r->ctx, msg);
}

static size_t rd_left(const rd *r) { return r->size - r->off; }

static ks_status rd_need(const rd *r, uint64_t n, const char *what) {
  if (n > rd_left(r))
    return rd_fail(r, KS_ERR_FORMAT,
                   "truncated: %s needs %llu bytes at offset %zu but only %zu remain (file is %zu "
                   "bytes)",
                   what, (unsigned long long)n, r->off, rd_left(r), r->size);
  return KS_OK;
}

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static ks_status rd_u32(rd *r, uint32_t *v, const char *what) {
  ks_status st = rd_need(r, 4, what);
  if (st) return st;
  *v = le32(r->p + r->off);
  r->off += 4;
  return KS_OK;
}
static ks_status rd_u64(rd *r, uint64_t *v, const char *what) {
  ks_status st = rd_need(r, 8, what);
  if (st) return st;
  *v = le64(r->p + r->off);
  r->off += 8;
  return KS_OK;
}

/* A string: u64 length then bytes. Sets *s to the offset of the bytes. */
static ks_status rd_str(rd *r, size_t *s, uint64_t *len, const char *what) {
  ks_status st = rd_u64(r, len, what);
  if (st) return st;
  if (*len > rd_left(r))
    return rd_fail(r, KS_ERR_FORMAT,
                   "%s: string length %llu at offset %zu runs past the end of the file (%zu bytes "
                   "left): truncated or corrupt",
                   what, (unsigned long long)*len, r->off - 8, rd_left(r));
  *s = r->off;
  r->off += (size_t)*len;
  return KS_OK;
}

static char *dup_bytes(const uint8_t *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s) return NULL;
  memcpy(s, p, n);
  s[n] = 0;
  return s;
}

static size_t scalar_size(uint32_t t) {
  switch (t) {
  case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
  case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
  case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
  case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
  }
  return 0; /* STRING, ARRAY, unknown */
}

static const char *vtype_name(uint32_t t) {
  static const char *n[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32", "float32",
                            "bool",  "string", "array", "uint64", "int64",  "float64"};
  return t < KS_ARRAY_LEN(n) ? n[t] : "unknown";
}

static ks_status nomem(const rd *r) {
  return rd_fail(r, KS_ERR_NOMEM, "out of host memory while reading the header");
}

/* Skips one array body (element type and count already read), recursing into nested arrays up
 * to GGUF_MAX_NEST. Every element consumes file bytes, so the work is bounded by the file. */
static ks_status skip_array(rd *r, uint32_t et, uint64_t n, int depth) {
  ks_status st;
  if (et == GGUF_T_STRING) {
    if (n > rd_left(r) / 8)
      return rd_fail(r, KS_ERR_FORMAT, "array count %llu of strings needs at least %llu bytes but "
                     "only %zu remain", (unsigned long long)n, (unsigned long long)n * 8, rd_left(r));
    for (uint64_t i = 0; i < n; i++) {
      size_t s;
      uint64_t len;
      if ((st = rd_str(r, &s, &len, "nested array string"))) return st;
    }
    return KS_OK;
  }
  if (et == GGUF_T_ARRAY) {
    if (depth >= GGUF_MAX_NEST)
      return rd_fail(r, KS_ERR_FORMAT, "arrays nested more than %d deep", GGUF_MAX_NEST);
    if (n > rd_left(r) / 12)
      return rd_fail(r, KS_ERR_FORMAT, "array count %llu of arrays needs at least %llu bytes but "
                     "only %zu remain", (unsigned long long)n, (unsigned long long)n * 12, rd_left(r));
    for (uint64_t i = 0; i < n; i++) {
      uint32_t t2;
      uint64_t n2;
      if ((st = rd_u32(r, &t2, "nested array element type"))) return st;
      if ((st = rd_u64(r, &n2, "nested array count"))) return st;
      if (t2 != GGUF_T_STRING && t2 != GGUF_T_ARRAY && !scalar_size(t2))
        return rd_fail(r, KS_ERR_FORMAT, "nested array has unknown element type %u", t2);
      if ((st = skip_array(r, t2, n2, depth + 1))) return st;
    }
    return KS_OK;
  }
  size_t es = scalar_size(et);
  if (n > rd_left(r) / es)
    return rd_fail(r, KS_ERR_FORMAT, "array count %llu of %s needs %llu bytes but only %zu remain "
                   "(truncated or corrupt)", (unsigned long long)n, vtype_name(et),
                   (unsigned long long)(n > UINT64_MAX / es ? UINT64_MAX : n * es), rd_left(r));
  r->off += (size_t)(n * es);
  return KS_OK;
}

static ks_status read_value(rd *r, gkey *k) {
  ks_status st;
  uint32_t t;
  if ((st = rd_u32(r, &t, "value type"))) return st;
  if (t > GGUF_T_FLOAT64)
    return rd_fail(r, KS_ERR_FORMAT, "unknown value type %u at offset %zu (valid: 0..12)", t,
                   r->off - 4);
  k->type = (gguf_vtype)t;
  k->val_off = r->off;
  if (t == GGUF_T_STRING) {
    size_t s;
    uint64_t len;
    if ((st = rd_str(r, &s, &len, "string value"))) return st;
    if (!(k->str = dup_bytes(r->p + s, (size_t)len))) return nomem(r);
  } else if (t == GGUF_T_ARRAY) {
    uint32_t et;
    uint64_t n;
    if ((st = rd_u32(r, &et, "array element type"))) return st;
    if ((st = rd_u64(r, &n, "array count"))) return st;
    if (et > GGUF_T_FLOAT64)
      return rd_fail(r, KS_ERR_FORMAT, "array has unknown element type %u", et);
    k->arr_type = (gguf_vtype)et;
    k->arr_n = n;
    k->arr_off = r->off;
    if (et == GGUF_T_STRING) {
      if (n > GGUF_MAX_STR_ARRAY)
        return rd_fail(r, KS_ERR_FORMAT, "array count %llu of strings is absurd (limit %u)",
                       (unsigned long long)n, GGUF_MAX_STR_ARRAY);
      if (n > rd_left(r) / 8)
        return rd_fail(r, KS_ERR_FORMAT, "array count %llu of strings needs at least %llu bytes "
                       "but only %zu remain (truncated or corrupt)", (unsigned long long)n,
                       (unsigned long long)n * 8, rd_left(r));
      /* n * 8 <= bytes left, so this allocation is bounded by the file size */
      if (n && !(k->str_offs = malloc((size_t)n * sizeof *k->str_offs))) return nomem(r);
      for (uint64_t i = 0; i < n; i++) {
        size_t s;
        uint64_t len;
        k->str_offs[i] = r->off;
        if ((st = rd_str(r, &s, &len, "string array element"))) return st;
      }
    } else if ((st = skip_array(r, et, n, 1))) {
      return st;
    }
  } else {
    if ((st = rd_need(r, scalar_size(t), vtype_name(t)))) return st;
    r->off += scalar_size(t);
  }
  k->val_len = r->off - k->val_off;
  return KS_OK;
}

/* Ensures room for `need` zeroed elements in *p (capacity *cap). */
static int grow(void **p, int *cap, size_t elem, int need) {
  if (need <= *cap) return 1;
  int nc = *cap ? *cap * 2 : 16;
  while (nc < need) nc *= 2;
  void *q = realloc(*p, (size_t)nc * elem);
  if (!q) return 0;
  memset((char *)q + (size_t)*cap * elem, 0, (size_t)(nc - *cap) * elem);
  *p = q;
  *cap = nc;
  return 1;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Returns the first name that occurs twice, or NULL. */
static const char *find_duplicate(char **names, size_t n) {
  if (n < 2) return NULL;
  char **s = malloc(n * sizeof *s);
  if (!s) return NULL; /* best effort: duplicates are only a consistency check */
  memcpy(s, names, n * sizeof *s);
  qsort(s, n, sizeof *s, cmp_names);
  const char *dup = NULL;
  for (size_t i = 1; i < n && !dup; i++)
    if (strcmp(s[i - 1], s[i]) == 0) dup = s[i];
  free(s);
  return dup;
}

static int cmp_data_start(const void *a, const void *b) {
  uint64_t x = (*(const gtensor *const *)a)->offset, y = (*(const gtensor *const *)b)->offset;
  return x < y ? -1 : x > y;
}

/* Tensors whose data ranges share a byte: two weights that alias each other's storage are a
 * corrupt or hostile file (a writer lays each tensor out on its own), and an engine that trusted
 * them would compute with bytes that mean two things at once. Ranges are already inside the
 * file. */
static ks_status check_overlaps(ks_gguf *g, rd *r) {
  if (g->n_tensors < 2) return KS_OK;
  gtensor **by_start = malloc((size_t)g->n_tensors * sizeof *by_start);
  if (!by_start) return nomem(r);
  for (int i = 0; i < g->n_tensors; i++) by_start[i] = &g->tensors[i];
  qsort(by_start, (size_t)g->n_tensors, sizeof *by_start, cmp_data_start);
  ks_status st = KS_OK;
  const gtensor *reach = by_start[0]; /* the tensor whose data ends last among those seen */
  for (int i = 1; i < g->n_tensors && st == KS_OK; i++) {
    const gtensor *t = by_start[i];
    if (t->offset < reach->offset + reach->nbytes) {
      snprintf(r->ctx, sizeof r->ctx, "tensor data");
      st = rd_fail(r, KS_ERR_FORMAT, "tensors '%.120s' (bytes %llu..%llu of the data section) and "
                   "'%.120s' (bytes %llu..%llu) overlap: each tensor needs bytes of its own "
                   "(corrupt or hostile file)", reach->name, (unsigned long long)reach->offset,
                   (unsigned long long)(reach->offset + reach->nbytes - 1), t->name,
                   (unsigned long long)t->offset, (unsigned long long)(t->offset + t->nbytes - 1));
    }
    if (t->offset + t->nbytes > reach->offset + reach->nbytes) reach = t;
  }
  free(by_start);
  return st;
}

static ks_status parse(ks_gguf *g) {
  rd rr = {.p = g->map, .size = g->size, .off = 0, .path = g->path}, *r = &rr;
  ks_status st;
  snprintf(r->ctx, sizeof r->ctx, "header");
  if (g->size < 4 || memcmp(g->map, "GGUF", 4) != 0) {
    const uint8_t *p = g->map;
    if (g->size >= 4)
      return rd_fail(r, KS_ERR_FORMAT, "wrong magic %02x %02x %02x %02x (expected \"GGUF\"): not "
                     "a GGUF file", p[0], p[1], p[2], p[3]);
    return rd_fail(r, KS_ERR_FORMAT, "too short (%zu bytes) to hold the GGUF magic", g->size);
  }
  r->off = 4;
  if ((st = rd_u32(r, &g->version, "version"))) return st;
  if (g->version == 1)
    return rd_fail(r, KS_ERR_UNSUPPORTED, "GGUF version 1 is not supported (it used 32-bit counts "
                   "and was replaced in 2023): re-convert the model with a current llama.cpp");
  if ((g->version & 0xffff) == 0 && (g->version >> 16) != 0)
    return rd_fail(r, KS_ERR_UNSUPPORTED, "big-endian GGUF (version field %08x) is not supported",
                   g->version);
  if (g->version != 2 && g->version != 3)
    return rd_fail(r, KS_ERR_UNSUPPORTED, "GGUF version %u is not supported (kvscope reads "
                   "versions 2 and 3)", g->version);
  uint64_t n_tensors, n_kv;
  if ((st = rd_u64(r, &n_tensors, "tensor count"))) return st;
  if ((st = rd_u64(r, &n_kv, "metadata key count"))) return st;
  /* smallest key: 8 (name length) + 4 (type) + 1 (u8); smallest tensor info: 8 + 4 + 8 + 4 + 8 */
  if (n_kv > GGUF_MAX_KEYS || n_kv > rd_left(r) / 13)
    return rd_fail(r, KS_ERR_FORMAT, "metadata key count %llu is impossible for a file of %zu "
                   "bytes (truncated or corrupt header)", (unsigned long long)n_kv, g->size);
  if (n_tensors > GGUF_MAX_TENSORS || n_tensors > rd_left(r) / 32)
    return rd_fail(r, KS_ERR_FORMAT, "tensor count %llu is impossible for a file of %zu bytes "
                   "(truncated or corrupt header)", (unsigned long long)n_tensors, g->size);

  int cap = 0; /* grown as keys are parsed: memory follows the bytes read, not the claim */
  for (uint64_t i = 0; i < n_kv; i++) {
    if (!grow((void **)&g->keys, &cap, sizeof *g->keys, (int)i + 1)) return nomem(r);
    gkey *k = &g->keys[i];
    size_t s;
    uint64_t len;
    snprintf(r->ctx, sizeof r->ctx, "metadata key #%llu", (unsigned long long)i);
    if ((st = rd_str(r, &s, &len, "key name"))) return st;
    if (!(k->name = dup_bytes(r->p + s, (size_t)len))) return nomem(r);
    g->n_keys = (int)i + 1;
    snprintf(r->ctx, sizeof r->ctx, "metadata key #%llu '%.120s'", (unsigned long long)i, k->name);
    if ((st = read_value(r, k))) return st;
  }
  {
    char **names = malloc((g->n_keys + 1) * sizeof *names);
    if (!names) return nomem(r);
    for (int i = 0; i < g->n_keys; i++) names[i] = g->keys[i].name;
    const char *dup = find_duplicate(names, (size_t)g->n_keys);
    free(names);
    snprintf(r->ctx, sizeof r->ctx, "metadata");
    if (dup) return rd_fail(r, KS_ERR_FORMAT, "key '%.200s' appears twice", dup);
  }

  g->alignment = GGUF_DEFAULT_ALIGNMENT;
  int ai = gguf_find_key(g, "general.alignment");
  if (ai >= 0) {
    snprintf(r->ctx, sizeof r->ctx, "metadata key 'general.alignment'");
    if (g->keys[ai].type != GGUF_T_UINT32)
      return rd_fail(r, KS_ERR_FORMAT, "has type %s, expected uint32",
                     vtype_name(g->keys[ai].type));
    uint32_t a = le32(r->p + g->keys[ai].val_off);
    if (a == 0 || (a & (a - 1)) != 0)
      return rd_fail(r, KS_ERR_FORMAT, "alignment %u is not a power of two", a);
    g->alignment = a;
  }

  cap = 0;
  for (uint64_t i = 0; i < n_tensors; i++) {
    if (!grow((void **)&g->tensors, &cap, sizeof *g->tensors, (int)i + 1)) return nomem(r);
    gtensor *t = &g->tensors[i];
    size_t s;
    uint64_t len;
    snprintf(r->ctx, sizeof r->ctx, "tensor info #%llu", (unsigned long long)i);
    if ((st = rd_str(r, &s, &len, "tensor name"))) return st;
    if (!(t->name = dup_bytes(r->p + s, (size_t)len))) return nomem(r);
    g->n_tensors = (int)i + 1;
    snprintf(r->ctx, sizeof r->ctx, "tensor '%.120s'", t->name);
    if ((st = rd_u32(r, &t->n_dims, "dimension count"))) return st;
    if (t->n_dims < 1 || t->n_dims > 4)
      return rd_fail(r, KS_ERR_FORMAT, "n_dims %u is out of range (GGUF tensors have 1 to 4 "
                     "dimensions)", t->n_dims);
    uint64_t nelem = 1;
    for (uint32_t d = 0; d < 4; d++) t->ne[d] = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
      uint64_t v;
      if ((st = rd_u64(r, &v, "dimension"))) return st;
      if (v == 0 || v > (uint64_t)INT64_MAX)
        return rd_fail(r, KS_ERR_FORMAT, "dimension %u is %llu (must be between 1 and 2^63-1)", d,
                       (unsigned long long)v);
      if (nelem > (uint64_t)INT64_MAX / v)
        return rd_fail(r, KS_ERR_FORMAT, "element count overflows: dimensions multiply past "
                       "2^63 at dimension %u (%llu)", d, (unsigned long long)v);
      nelem *= v;
      t->ne[d] = (int64_t)v;
    }
    if ((st = rd_u32(r, &t->type, "tensor type"))) return st;
    if ((st = rd_u64(r, &t->offset, "data offset"))) return st;
    if (!ks_type_layout_known(t->type))
      return rd_fail(r, KS_ERR_UNSUPPORTED, "unknown tensor type %u (not a GGML type kvscope "
                     "knows; kvscope computes with F32, F16, BF16, Q8_0 and Q4_0)", t->type);
    int be = ks_type_block_elems((ks_type)t->type);
    if (t->ne[0] % be)
      return rd_fail(r, KS_ERR_FORMAT, "row length %lld is not a multiple of the %s block size "
                     "%d", (long long)t->ne[0], ks_type_name(t->type), be);
    uint64_t bb = ks_type_block_bytes((ks_type)t->type), nblk = nelem / (uint64_t)be;
    if (nblk > SIZE_MAX / bb)
      return rd_fail(r, KS_ERR_FORMAT, "byte size overflows (%llu elements of %s)",
                     (unsigned long long)nelem, ks_type_name(t->type));
    t->nbytes = (size_t)(nblk * bb);
    if (t->offset % g->alignment)
      return rd_fail(r, KS_ERR_FORMAT, "data offset %llu is not a multiple of the alignment %u",
                     (unsigned long long)t->offset, g->alignment);
  }
  {
    char **names = malloc((g->n_tensors + 1) * sizeof *names);
    if (!names) return nomem(r);
    for (int i = 0; i < g->n_tensors; i++) names[i] = g->tensors[i].name;
    const char *dup = find_duplicate(names, (size_t)g->n_tensors);
    free(names);
    snprintf(r->ctx, sizeof r->ctx, "tensor infos");
    if (dup) return rd_fail(r, KS_ERR_FORMAT, "tensor '%.200s' appears twice", dup);
  }

  /* data section: the header end rounded up to the alignment */
  size_t pad = (g->alignment - r->off % g->alignment) % g->alignment;
  g->data_off = r->off + pad; /* r->off <= size, pad < 2^32: no overflow on 64-bit size_t */
  for (int i = 0; i < g->n_tensors; i++) {
    gtensor *t = &g->tensors[i];
    snprintf(r->ctx, sizeof r->ctx, "tensor '%.120s'", t->name);
    uint64_t avail = g->data_off <= g->size ? g->size - g->data_off : 0;
    if (t->offset > avail || t->nbytes > avail - t->offset)
      return rd_fail(r, KS_ERR_FORMAT, "data (offset %llu + %zu bytes from the data section at "
                     "byte %zu) lies outside the file of %zu bytes: truncated or corrupt",
                     (unsigned long long)t->offset, t->nbytes, g->data_off, g->size);
  }
  return check_overlaps(g, r);
}

ks_status gguf_open(ks_gguf **out, const char *path) {
  *out = NULL;
  ks_gguf *g = calloc(1, sizeof *g);
  if (!g) return ks_fail(KS_ERR_NOMEM, "out of memory opening '%s'", path);
  snprintf(g->path, sizeof g->path, "%s", path);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    free(g);
    return ks_fail(KS_ERR_IO, "cannot open GGUF file '%s': %s", path, strerror(e));
  }
  struct stat sb;
  int fs = fstat(fd, &sb);
  if (fs != 0 || !S_ISREG(sb.st_mode)) {
    const char *why = fs != 0              ? strerror(errno)
                      : S_ISDIR(sb.st_mode) ? "it is a directory"
                                            : "not a regular file";
    close(fd);
    free(g);
    return ks_fail(KS_ERR_IO, "cannot read GGUF file '%s': %s", path, why);
  }
  if (sb.st_size < 4) {
    close(fd);
    free(g);
    return ks_fail(KS_ERR_FORMAT, "GGUF file '%s': header: too short (%lld bytes) to hold the "
                   "GGUF magic", path, (long long)sb.st_size);
  }
  if ((uint64_t)sb.st_size > SIZE_MAX) {
    close(fd);
    free(g);
    return ks_fail(KS_ERR_IO, "GGUF file '%s' is too large to map", path);
  }
  g->size = (size_t)sb.st_size;
  g->map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  close(fd);
  if (g->map == MAP_FAILED) {
    double mib = g->size / 1048576.0;
    g->map = NULL;
    free(g);
    if (e == ENOMEM)
      return ks_fail(KS_ERR_NOMEM, "out of host memory mapping GGUF file '%s' (%.1f MiB): %s; "
                     "free memory, raise the address-space limit (ulimit -v) or use a smaller "
                     "model", path, mib, strerror(e));
    return ks_fail(KS_ERR_IO, "cannot map GGUF file '%s': %s", path, strerror(e));
  }
  ks_status st = parse(g);
  if (st) {
    gguf_close(g);
    return st;
  }
  *out = g;
  return KS_OK;
}

void gguf_close(ks_gguf *g) {
  if (!g) return;
  for (int i = 0; i < g->n_keys; i++) {
    free(g->keys[i].name);
    free(g->keys[i].str);
    free(g->keys[i].str_offs);
  }
  free(g->keys);
  for (int i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
  free(g->tensors);
  if (g->map) munmap(g->map, g->size);
  free(g);
}

const void *gguf_file_data(const ks_gguf *g, size_t *size) {
  if (size) *size = g->size;
  return g->map;
}
uint32_t gguf_version(const ks_gguf *g) { return g->version; }
uint32_t gguf_alignment(const ks_gguf *g) { return g->alignment; }
size_t gguf_data_offset(const ks_gguf *g) { return g->data_off; }

/* ---------------------------------------------------------------- reader: metadata getters */

int gguf_n_keys(const ks_gguf *g) { return g->n_keys; }
const char *gguf_key_name(const ks_gguf *g, int i) {
  return i >= 0 && i < g->n_keys ? g->keys[i].name : NULL;
}
int gguf_find_key(const ks_gguf *g, const char *key) {
  for (int i = 0; i < g->n_keys; i++)
    if (strcmp(g->keys[i].name, key) == 0) return i;
  return -1;
}
gguf_vtype gguf_key_type(const ks_gguf *g, int i) {
  return i >= 0 && i < g->n_keys ? g->keys[i].type : (gguf_vtype)-1;
}

static const uint8_t *val(const ks_gguf *g, const gkey *k) {
  return (const uint8_t *)g->map + k->val_off;
}

int64_t gguf_get_int(const ks_gguf *g, const char *key, int64_t dflt) {
  int i = gguf_find_key(g, key);
  if (i < 0) return dflt;
  const gkey *k = &g->keys[i];
  const uint8_t *p = val(g, k);
  switch (k->type) {
  case GGUF_T_UINT8: return p[0];
  case GGUF_T_INT8: return (int8_t)p[0];
  case GGUF_T_UINT16: return (uint16_t)(p[0] | p[1] << 8);
  case GGUF_T_INT16: return (int16_t)(uint16_t)(p[0] | p[1] << 8);
  case GGUF_T_UINT32: return le32(p);
  case GGUF_T_INT32: return (int32_t)le32(p);
  case GGUF_T_UINT64: {
    uint64_t v = le64(p);
    return v > (uint64_t)INT64_MAX ? dflt : (int64_t)v;
  }
  case GGUF_T_INT64: return (int64_t)le64(p);
  default: return dflt;
  }
}

double gguf_get_float(const ks_gguf *g, const char *key, double dflt) {
  int i = gguf_find_key(g, key);
  if (i < 0) return dflt;
  const gkey *k = &g->keys[i];
  const uint8_t *p = val(g, k);
  if (k->type == GGUF_T_FLOAT32) {
    uint32_t u = le32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  if (k->type == GGUF_T_FLOAT64) {
    uint64_t u = le64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
  }
  return dflt;
}

int gguf_get_bool(const ks_gguf *g, const char *key, int dflt) {
  int i = gguf_find_key(g, key);
  if (i < 0 || g->keys[i].type != GGUF_T_BOOL) return dflt;
  return val(g, &g->keys[i])[0] != 0;
}

const char *gguf_get_str(const ks_gguf *g, const char *key) {
  int i = gguf_find_key(g, key);
  return i >= 0 && g->keys[i].type == GGUF_T_STRING ? g->keys[i].str : NULL;
}

uint64_t gguf_arr_len(const ks_gguf *g, const char *key, gguf_vtype *elem_type) {
  int i = gguf_find_key(g, key);
  if (i < 0 || g->keys[i].type != GGUF_T_ARRAY) return 0;
  if (elem_type) *elem_type = g->keys[i].arr_type;
  return g->keys[i].arr_n;
}

const void *gguf_arr_data(const ks_gguf *g, const char *key) {
  int i = gguf_find_key(g, key);
  if (i < 0 || g->keys[i].type != GGUF_T_ARRAY || !scalar_size(g->keys[i].arr_type)) return NULL;
  return (const uint8_t *)g->map + g->keys[i].arr_off;
}

const char *gguf_arr_str(const ks_gguf *g, const char *key, uint64_t i, size_t *len) {
  int ki = gguf_find_key(g, key);
  if (ki < 0) return NULL;
  const gkey *k = &g->keys[ki];
  if (k->type != GGUF_T_ARRAY || k->arr_type != GGUF_T_STRING || i >= k->arr_n) return NULL;
  const uint8_t *p = (const uint8_t *)g->map + k->str_offs[i];
  if (len) *len = (size_t)le64(p);
  return (const char *)p + 8;
}

/* ---------------------------------------------------------------- reader: tensors */

int gguf_n_tensors(const ks_gguf *g) { return g->n_tensors; }
const char *gguf_tensor_name(const ks_gguf *g, int i) {
  return i >= 0 && i < g->n_tensors ? g->tensors[i].name : NULL;
}
int gguf_find_tensor(const ks_gguf *g, const char *name) {
  for (int i = 0; i < g->n_tensors; i++)
    if (strcmp(g->tensors[i].name, name) == 0) return i;
  return -1;
}

ks_status gguf_tensor_info(const ks_gguf *g, int i, uint32_t *type, int *n_dims, int64_t ne[4]) {
  if (i < 0 || i >= g->n_tensors)
    return ks_fail(KS_ERR_ARG, "GGUF file '%s': no tensor #%d", g->path, i);
  const gtensor *t = &g->tensors[i];
  if (type) *type = t->type;
  if (n_dims) *n_dims = (int)t->n_dims;
  if (ne) memcpy(ne, t->ne, sizeof t->ne);
  return KS_OK;
}

ks_status gguf_tensor(const ks_gguf *g, int i, ks_tensor *out) {
  memset(out, 0, sizeof *out);
  if (i < 0 || i >= g->n_tensors)
    return ks_fail(KS_ERR_ARG, "GGUF file '%s': no tensor #%d", g->path, i);
  const gtensor *t = &g->tensors[i];
  if (t->ne[2] != 1 || t->ne[3] != 1)
    return ks_fail(KS_ERR_UNSUPPORTED, "GGUF file '%s': tensor '%s' has shape [%lld, %lld, %lld, "
                   "%lld]; kvscope uses only 1-D and 2-D tensors", g->path, t->name,
                   (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                   (long long)t->ne[3]);
  out->type = (ks_type)t->type;
  out->ne[0] = t->ne[0];
  out->ne[1] = t->ne[1];
  out->data = (const uint8_t *)g->map + g->data_off + t->offset;
  out->nbytes = t->nbytes;
  return KS_OK;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
  char *name;
  uint8_t *val; /* serialized: u32 type, then the value */
  size_t val_len;
} wkey;

typedef struct {
  char *name;
  ks_type type;
  int64_t ne0, ne1;
  const void *data;
  size_t nbytes;
} wtensor;

struct ks_gguf_writer {
  wkey *keys;
  int n_keys, cap_keys;
  wtensor *tensors;
  int n_tensors, cap_tensors;
  int oom;           /* an allocation failed in a setter: write reports it */
  char bad[256];     /* a setter was misused: write reports it */
};

ks_gguf_writer *gguf_writer_create(void) { return calloc(1, sizeof(ks_gguf_writer)); }

void gguf_writer_destroy(ks_gguf_writer *w) {
  if (!w) return;
  for (int i = 0; i < w->n_keys; i++) {
    free(w->keys[i].name);
    free(w->keys[i].val);
  }
  free(w->keys);
  for (int i = 0; i < w->n_tensors; i++) free(w->tensors[i].name);
  free(w->tensors);
  free(w);
}

/* A growable byte buffer for serializing one value. */
typedef struct {
  uint8_t *p;
  size_t n, cap;
  int oom;
} bbuf;

static void bb_put(bbuf *b, const void *src, size_t n) {
  if (b->oom) return;
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->n, src, n);
  b->n += n;
}
static void bb_u32(bbuf *b, uint32_t v) {
  uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  bb_put(b, x, 4);
}
static void bb_u64(bbuf *b, uint64_t v) {
  bb_u32(b, (uint32_t)v);
  bb_u32(b, (uint32_t)(v >> 32));
}
static void bb_str(bbuf *b, const char *s, size_t n) {
  bb_u64(b, n);
  bb_put(b, s, n);
}

/* Takes ownership of the serialized value; replaces an earlier key of the same name. */
static void set_key(ks_gguf_writer *w, const char *key, bbuf *b) {
  if (b->oom) {
    w->oom = 1;
    free(b->p);
    return;
  }
  for (int i = 0; i < w->n_keys; i++) {
    if (strcmp(w->keys[i].name, key) == 0) {
      free(w->keys[i].val);
      w->keys[i].val = b->p;
      w->keys[i].val_len = b->n;
      return;
    }
  }
  if (w->n_keys == w->cap_keys) {
    int cap = w->cap_keys ? 2 * w->cap_keys : 32;
    wkey *k = realloc(w->keys, (size_t)cap * sizeof *k);
    if (!k) {
      w->oom = 1;
      free(b->p);
      return;
    }
    w->keys = k;
    w->cap_keys = cap;
  }
  char *name = strdup(key);
  if (!name) {
    w->oom = 1;
    free(b->p);
    return;
  }
  w->keys[w->n_keys++] = (wkey){name, b->p, b->n};
}

static void set_scalar(ks_gguf_writer *w, const char *key, gguf_vtype t, uint64_t bits) {
  bbuf b = {0};
  bb_u32(&b, t);
  uint8_t x[8];
  for (int i = 0; i < 8; i++) x[i] = (uint8_t)(bits >> (8 * i));
  bb_put(&b, x, scalar_size(t));
  set_key(w, key, &b);
}

void gguf_writer_set_u8(ks_gguf_writer *w, const char *key, uint8_t v) {
  set_scalar(w, key, GGUF_T_UINT8, v);
}
void gguf_writer_set_i8(ks_gguf_writer *w, const char *key, int8_t v) {
  set_scalar(w, key, GGUF_T_INT8, (uint8_t)v);
}
void gguf_writer_set_u16(ks_gguf_writer *w, const char *key, uint16_t v) {
  set_scalar(w, key, GGUF_T_UINT16, v);
}
void gguf_writer_set_i16(ks_gguf_writer *w, const char *key, int16_t v) {
  set_scalar(w, key, GGUF_T_INT16, (uint16_t)v);
}
void gguf_writer_set_u32(ks_gguf_writer *w, const char *key, uint32_t v) {
  set_scalar(w, key, GGUF_T_UINT32, v);
}
void gguf_writer_set_i32(ks_gguf_writer *w, const char *key, int32_t v) {
  set_scalar(w, key, GGUF_T_INT32, (uint32_t)v);
}
void gguf_writer_set_u64(ks_gguf_writer *w, const char *key, uint64_t v) {
  set_scalar(w, key, GGUF_T_UINT64, v);
}
void gguf_writer_set_i64(ks_gguf_writer *w, const char *key, int64_t v) {
  set_scalar(w, key, GGUF_T_INT64, (uint64_t)v);
}
void gguf_writer_set_bool(ks_gguf_writer *w, const char *key, int v) {
  set_scalar(w, key, GGUF_T_BOOL, v != 0);
}
void gguf_writer_set_f32(ks_gguf_writer *w, const char *key, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  set_scalar(w, key, GGUF_T_FLOAT32, u);
}
void gguf_writer_set_f64(ks_gguf_writer *w, const char *key, double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  set_scalar(w, key, GGUF_T_FLOAT64, u);
}

void gguf_writer_set_str(ks_gguf_writer *w, const char *key, const char *v) {
  bbuf b = {0};
  bb_u32(&b, GGUF_T_STRING);
  bb_str(&b, v, strlen(v));
  set_key(w, key, &b);
}

void gguf_writer_set_arr(ks_gguf_writer *w, const char *key, gguf_vtype elem_type,
                         const void *data, uint64_t n) {
  size_t es = scalar_size(elem_type);
  if (!es) {
    snprintf(w->bad, sizeof w->bad, "key '%.100s': gguf_writer_set_arr needs a numeric element "
             "type, got %s", key, vtype_name(elem_type));
    return;
  }
  bbuf b = {0};
  bb_u32(&b, GGUF_T_ARRAY);
  bb_u32(&b, elem_type);
  bb_u64(&b, n);
  /* elements are written little-endian, element by element, whatever the host order */
  const uint8_t *p = data;
  for (uint64_t i = 0; i < n && !b.oom; i++) {
    uint8_t x[8];
    for (size_t j = 0; j < es; j++) {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
      x[j] = p[i * es + es - 1 - j];
#else
      x[j] = p[i * es + j];
#endif
    }
    bb_put(&b, x, es);
  }
  set_key(w, key, &b);
}

void gguf_writer_set_arr_f32(ks_gguf_writer *w, const char *key, const float *v, uint64_t n) {
  gguf_writer_set_arr(w, key, GGUF_T_FLOAT32, v, n);
}
void gguf_writer_set_arr_i32(ks_gguf_writer *w, const char *key, const int32_t *v, uint64_t n) {
  gguf_writer_set_arr(w, key, GGUF_T_INT32, v, n);
}

void gguf_writer_set_arr_str(ks_gguf_writer *w, const char *key, const char *const *strs,
                             const size_t *lens, uint64_t n) {
  bbuf b = {0};
  bb_u32(&b, GGUF_T_ARRAY);
  bb_u32(&b, GGUF_T_STRING);
  bb_u64(&b, n);
  for (uint64_t i = 0; i < n && !b.oom; i++) bb_str(&b, strs[i], lens[i]);
  set_key(w, key, &b);
}

void gguf_writer_copy_key(ks_gguf_writer *w, const ks_gguf *g, int i) {
  if (i < 0 || i >= g->n_keys) return;
  const gkey *k = &g->keys[i];
  bbuf b = {0};
  bb_u32(&b, k->type);
  bb_put(&b, val(g, k), k->val_len); /* validated at open: self-contained serialized value */
  set_key(w, k->name, &b);
}

void gguf_writer_add_tensor(ks_gguf_writer *w, const char *name, ks_type type, int64_t ne0,
                            int64_t ne1, const void *data) {
  size_t rb = ks_type_row_bytes(type, ne0);
  if (!ks_type_layout_known(type) || ne0 <= 0 || ne1 <= 0 || rb == 0 ||
      (uint64_t)ne1 > SIZE_MAX / rb) {
    snprintf(w->bad, sizeof w->bad, "tensor '%.100s': invalid shape [%lld, %lld] for type %s",
             name, (long long)ne0, (long long)ne1, ks_type_name(type));
    return;
  }
  for (int i = 0; i < w->n_tensors; i++) {
    if (strcmp(w->tensors[i].name, name) == 0) {
      snprintf(w->bad, sizeof w->bad, "tensor '%.100s' added twice", name);
      return;
    }
  }
  if (w->n_tensors == w->cap_tensors) {
    int cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
    wtensor *t = realloc(w->tensors, (size_t)cap * sizeof *t);
    if (!t) {
      w->oom = 1;
      return;
    }
    w->tensors = t;
    w->cap_tensors = cap;
  }
  char *nm = strdup(name);
  if (!nm) {
    w->oom = 1;
    return;
  }
  w->tensors[w->n_tensors++] = (wtensor){nm, type, ne0, ne1, data, rb * (size_t)ne1};
}

static uint32_t writer_alignment(const ks_gguf_writer *w) {
  for (int i = 0; i < w->n_keys; i++) {
    const wkey *k = &w->keys[i];
    if (strcmp(k->name, "general.alignment") == 0 && k->val_len == 8 &&
        le32(k->val) == GGUF_T_UINT32) {
      uint32_t a = le32(k->val + 4);
      if (a && !(a & (a - 1))) return a;
    }
  }
  return GGUF_DEFAULT_ALIGNMENT;
}

static int put(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n; }
static int put_u32(FILE *f, uint32_t v) {
  uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  return put(f, x, 4);
}
static int put_u64(FILE *f, uint64_t v) {
  return put_u32(f, (uint32_t)v) && put_u32(f, (uint32_t)(v >> 32));
}
static int put_zeros(FILE *f, size_t n) {
  static const uint8_t z[64];
  while (n) {
    size_t k = n < sizeof z ? n : sizeof z;
    if (!put(f, z, k)) return 0;
    n -= k;
  }
  return 1;
}

ks_status gguf_writer_write(ks_gguf_writer *w, const char *path) {
  if (w->oom) return ks_fail(KS_ERR_NOMEM, "out of memory building GGUF '%s'", path);
  if (w->bad[0]) return ks_fail(KS_ERR_ARG, "cannot write GGUF '%s': %s", path, w->bad);
  uint32_t align = writer_alignment(w);
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) return ks_fail(KS_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
  int ok = put(f, "GGUF", 4) && put_u32(f, 3) && put_u64(f, (uint64_t)w->n_tensors) &&
           put_u64(f, (uint64_t)w->n_keys);
  size_t pos = 24;
  for (int i = 0; ok && i < w->n_keys; i++) {
    size_t nl = strlen(w->keys[i].name);
    ok = put_u64(f, nl) && put(f, w->keys[i].name, nl) &&
         put(f, w->keys[i].val, w->keys[i].val_len);
    pos += 8 + nl + w->keys[i].val_len;
  }
  uint64_t off = 0;
  for (int i = 0; ok && i < w->n_tensors; i++) {
    const wtensor *t = &w->tensors[i];
    size_t nl = strlen(t->name);
    uint32_t n_dims = t->ne1 == 1 ? 1 : 2;
    ok = put_u64(f, nl) && put(f, t->name, nl) && put_u32(f, n_dims) &&
         put_u64(f, (uint64_t)t->ne0) && (n_dims == 1 || put_u64(f, (uint64_t)t->ne1)) &&
         put_u32(f, (uint32_t)t->type) && put_u64(f, off);
    pos += 8 + nl + 4 + 8 * n_dims + 4 + 8;
    off += t->nbytes;
    off += (align - off % align) % align;
  }
  if (ok) ok = put_zeros(f, (align - pos % align) % align);
  for (int i = 0; ok && i < w->n_tensors; i++) {
    const wtensor *t = &w->tensors[i];
    ok = put(f, t->data, t->nbytes) && put_zeros(f, (align - t->nbytes % align) % align);
  }
  int e = errno;
  if (ok && fflush(f) != 0) ok = 0, e = errno;
  if (ok && fsync(fileno(f)) != 0) ok = 0, e = errno;
  if (fclose(f) != 0 && ok) ok = 0, e = errno;
  if (!ok) {
    unlink(tmp);
    return ks_fail(KS_ERR_IO, "cannot write GGUF '%s': %s", tmp, strerror(e));
  }
  if (rename(tmp, path) != 0) {
    e = errno;
    unlink(tmp);
    return ks_fail(KS_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(e));
  }
  /* make the rename itself durable */
  char dir[1100];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) *(slash == dir ? slash + 1 : slash) = 0;
  else snprintf(dir, sizeof dir, ".");
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return KS_OK;
}
