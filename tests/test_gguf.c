/* test_gguf.c — the GGUF container: a file with every metadata type and tensors of each type is
 * written and read back exactly (values, layout, alignment, atomic write); then hostile files
 * built byte by byte (wrong magic, old versions, every truncation, impossible lengths and
 * counts, bad dimensions and types, misplaced data) must each fail with the right status and a
 * message naming the file and the problem, and never crash. */
#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "quant.h"
#include "testutil.h"

static const char *g_dir;

/* ---------------------------------------------------------------- byte builder */

typedef struct {
  uint8_t *p;
  size_t n, cap;
} buf;

static void b_put(buf *b, const void *src, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->p = realloc(b->p, b->cap);
    REQUIRE(b->p);
  }
  memcpy(b->p + b->n, src, n);
  b->n += n;
}
static void b_u32(buf *b, uint32_t v) {
  uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  b_put(b, x, 4);
}
static void b_u64(buf *b, uint64_t v) {
  b_u32(b, (uint32_t)v);
  b_u32(b, (uint32_t)(v >> 32));
}
static void b_str(buf *b, const char *s) {
  b_u64(b, strlen(s));
  b_put(b, s, strlen(s));
}
static void b_header(buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  b_put(b, "GGUF", 4);
  b_u32(b, version);
  b_u64(b, n_tensors);
  b_u64(b, n_kv);
}
static void b_kv_u32(buf *b, const char *k, uint32_t v) {
  b_str(b, k);
  b_u32(b, GGUF_T_UINT32);
  b_u32(b, v);
}
static void b_kv_str(buf *b, const char *k, const char *v) {
  b_str(b, k);
  b_u32(b, GGUF_T_STRING);
  b_str(b, v);
}
static void b_tensor(buf *b, const char *name, uint32_t n_dims, const uint64_t *dims,
                     uint32_t type, uint64_t offset) {
  b_str(b, name);
  b_u32(b, n_dims);
  for (uint32_t i = 0; i < n_dims; i++) b_u64(b, dims[i]);
  b_u32(b, type);
  b_u64(b, offset);
}
static void b_pad(buf *b, size_t align) {
  while (b->n % align) b_put(b, "", 1);
}
static void b_zeros(buf *b, size_t n) {
  for (size_t i = 0; i < n; i++) b_put(b, "", 1);
}

static const char *tmp_path(const char *name) {
  static char p[4][4200];
  static int slot;
  char *s = p[slot++ & 3];
  snprintf(s, sizeof p[0], "%s/%s", g_dir, name);
  return s;
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  REQUIRE(f);
  REQUIRE(n == 0 || fwrite(p, 1, n, f) == n);
  REQUIRE(fclose(f) == 0);
}

static uint8_t *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  REQUIRE(f);
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *p = malloc((size_t)sz + 1);
  REQUIRE(p && fread(p, 1, (size_t)sz, f) == (size_t)sz);
  fclose(f);
  *n = (size_t)sz;
  return p;
}

/* Opens bytes written as `name`; checks the status and that the message names the file and
 * contains every one of the fragments (NULL-terminated). */
static void expect_fail_at(int line, const char *name, const buf *b, int want, ...) {
  const char *path = tmp_path(name);
  write_bytes(path, b->p, b->n);
  ks_gguf *g = (ks_gguf *)1;
  ks_status st = gguf_open(&g, path);
  const char *msg = ks_last_error();
  if ((int)st != want) {
    fprintf(stderr, "test_gguf.c:%d: %s: status %d (%s), expected %d; message: %s\n", line, name,
            st, ks_status_name(st), want, msg);
    ks_test_failures++;
  }
  CHECK_MSG(g == NULL, "%s: handle not NULL on failure", name);
  if (st == KS_OK) {
    gguf_close(g);
    return;
  }
  if (!strstr(msg, path)) {
    fprintf(stderr, "test_gguf.c:%d: %s: message does not name the file: %s\n", line, name, msg);
    ks_test_failures++;
  }
  va_list ap;
  va_start(ap, want);
  for (const char *frag; (frag = va_arg(ap, const char *));) {
    if (!strstr(msg, frag)) {
      fprintf(stderr, "test_gguf.c:%d: %s: message lacks '%s': %s\n", line, name, frag, msg);
      ks_test_failures++;
    }
  }
  va_end(ap);
}
#define EXPECT_FAIL(name, b, st, ...) expect_fail_at(__LINE__, name, b, st, __VA_ARGS__, (const char *)NULL)

/* ---------------------------------------------------------------- round trip */

enum { NQ = 64, ROWS = 3 };

typedef struct {
  float f32[ROWS * 40]; /* 40 x 3 */
  float vec[7];         /* 1-D */
  uint16_t f16[ROWS * 10];
  uint16_t bf16[5];
  uint8_t q8[ROWS * 2 * 34];  /* 64 x 3 */
  uint8_t q4[ROWS * 2 * 18];  /* 64 x 3 */
  uint8_t q4k[144];           /* Q4_K 256 x 1: a type kvscope cannot compute with */
} tensors;

static void make_tensors(tensors *t) {
  ks_fill_rand(t->f32, KS_ARRAY_LEN(t->f32), 3.0f);
  ks_fill_rand(t->vec, KS_ARRAY_LEN(t->vec), 1.0f);
  float tmp[ROWS * NQ];
  ks_fill_rand(tmp, KS_ARRAY_LEN(tmp), 2.0f);
  ks_quant_row(KS_TYPE_F16, tmp, t->f16, KS_ARRAY_LEN(t->f16));
  ks_quant_row(KS_TYPE_BF16, tmp, t->bf16, KS_ARRAY_LEN(t->bf16));
  ks_quant_row(KS_TYPE_Q8_0, tmp, t->q8, ROWS * NQ);
  ks_quant_row(KS_TYPE_Q4_0, tmp, t->q4, ROWS * NQ);
  for (size_t i = 0; i < sizeof t->q4k; i++) t->q4k[i] = (uint8_t)ks_randu();
}

static const char *k_strs[] = {"alpha", "", "with space", "\xe2\x96\x81uni", "nul\0inside"};
static const size_t k_lens[] = {5, 0, 10, 6, 10};

static void fill_writer(ks_gguf_writer *w, const tensors *t) {
  gguf_writer_set_u8(w, "t.u8", 250);
  gguf_writer_set_i8(w, "t.i8", -100);
  gguf_writer_set_u16(w, "t.u16", 65000);
  gguf_writer_set_i16(w, "t.i16", -32000);
  gguf_writer_set_u32(w, "t.u32", 4000000000u);
  gguf_writer_set_i32(w, "t.i32", -2000000000);
  gguf_writer_set_f32(w, "t.f32", 3.25f);
  gguf_writer_set_bool(w, "t.bool", 1);
  gguf_writer_set_str(w, "t.str", "hello gguf");
  gguf_writer_set_u64(w, "t.u64", 0x7fffffffffffff01ull);
  gguf_writer_set_u64(w, "t.u64big", 0xfffffffffffffff0ull);
  gguf_writer_set_i64(w, "t.i64", -0x7000000000000000ll);
  gguf_writer_set_f64(w, "t.f64", -1.0e300);
  gguf_writer_set_str(w, "t.replaced", "first");
  gguf_writer_set_str(w, "t.replaced", "second");
  float af[] = {1.5f, -2.0f, INFINITY};
  gguf_writer_set_arr_f32(w, "t.arr_f32", af, 3);
  int32_t ai[] = {-1, 0, 7, 2147483647};
  gguf_writer_set_arr_i32(w, "t.arr_i32", ai, 4);
  uint8_t au8[] = {1, 2, 255};
  gguf_writer_set_arr(w, "t.arr_u8", GGUF_T_UINT8, au8, 3);
  int16_t ai16[] = {-5, 300};
  gguf_writer_set_arr(w, "t.arr_i16", GGUF_T_INT16, ai16, 2);
  uint64_t au64[] = {1ull << 40, 3};
  gguf_writer_set_arr(w, "t.arr_u64", GGUF_T_UINT64, au64, 2);
  double af64[] = {0.125, -3e-300};
  gguf_writer_set_arr(w, "t.arr_f64", GGUF_T_FLOAT64, af64, 2);
  uint8_t ab[] = {1, 0, 1};
  gguf_writer_set_arr(w, "t.arr_bool", GGUF_T_BOOL, ab, 3);
  gguf_writer_set_arr(w, "t.arr_empty", GGUF_T_INT32, NULL, 0);
  gguf_writer_set_arr_str(w, "t.arr_str", k_strs, k_lens, KS_ARRAY_LEN(k_strs));
  gguf_writer_add_tensor(w, "m.f32", KS_TYPE_F32, 40, ROWS, t->f32);
  gguf_writer_add_tensor(w, "v.f32", KS_TYPE_F32, 7, 1, t->vec);
  gguf_writer_add_tensor(w, "m.f16", KS_TYPE_F16, 10, ROWS, t->f16);
  gguf_writer_add_tensor(w, "v.bf16", KS_TYPE_BF16, 5, 1, t->bf16);
  gguf_writer_add_tensor(w, "m.q8_0", KS_TYPE_Q8_0, NQ, ROWS, t->q8);
  gguf_writer_add_tensor(w, "m.q4_0", KS_TYPE_Q4_0, NQ, ROWS, t->q4);
  gguf_writer_add_tensor(w, "m.q4_k", (ks_type)12, 256, 1, t->q4k);
}

static void check_tensor(const ks_gguf *g, const char *name, ks_type type, int64_t ne0,
                         int64_t ne1, const void *data, size_t nbytes) {
  int i = gguf_find_tensor(g, name);
  CHECK_MSG(i >= 0, "tensor %s missing", name);
  if (i < 0) return;
  CHECK(!strcmp(gguf_tensor_name(g, i), name));
  ks_tensor t;
  CHECK(gguf_tensor(g, i, &t) == KS_OK);
  CHECK_MSG(t.type == type && t.ne[0] == ne0 && t.ne[1] == ne1 && t.nbytes == nbytes,
            "%s: type %d [%lld, %lld] %zu bytes", name, t.type, (long long)t.ne[0],
            (long long)t.ne[1], t.nbytes);
  CHECK_MSG(!memcmp(t.data, data, nbytes), "%s: data differs", name);
  size_t size;
  const uint8_t *base = gguf_file_data(g, &size);
  size_t off = (size_t)((const uint8_t *)t.data - base);
  CHECK_MSG(off % gguf_alignment(g) == 0, "%s at file offset %zu is not aligned", name, off);
  CHECK(off >= gguf_data_offset(g) && off + nbytes <= size);
}

static void check_roundtrip(const ks_gguf *g, const tensors *t) {
  CHECK(gguf_version(g) == 3);
  CHECK(gguf_n_keys(g) == 23);
  CHECK(gguf_find_key(g, "nope") < 0);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.u8")) == GGUF_T_UINT8);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.i8")) == GGUF_T_INT8);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.u16")) == GGUF_T_UINT16);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.i16")) == GGUF_T_INT16);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.u32")) == GGUF_T_UINT32);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.i32")) == GGUF_T_INT32);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.f32")) == GGUF_T_FLOAT32);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.bool")) == GGUF_T_BOOL);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.str")) == GGUF_T_STRING);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.arr_f32")) == GGUF_T_ARRAY);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.u64")) == GGUF_T_UINT64);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.i64")) == GGUF_T_INT64);
  CHECK(gguf_key_type(g, gguf_find_key(g, "t.f64")) == GGUF_T_FLOAT64);
  CHECK(!strcmp(gguf_key_name(g, 0), "t.u8"));
  CHECK(gguf_get_int(g, "t.u8", -1) == 250);
  CHECK(gguf_get_int(g, "t.i8", -1) == -100);
  CHECK(gguf_get_int(g, "t.u16", -1) == 65000);
  CHECK(gguf_get_int(g, "t.i16", -1) == -32000);
  CHECK(gguf_get_int(g, "t.u32", -1) == 4000000000ll);
  CHECK(gguf_get_int(g, "t.i32", -1) == -2000000000);
  CHECK(gguf_get_int(g, "t.u64", -1) == 0x7fffffffffffff01ll);
  CHECK(gguf_get_int(g, "t.u64big", -1) == -1); /* does not fit int64: default */
  CHECK(gguf_get_int(g, "t.i64", -1) == -0x7000000000000000ll);
  CHECK(gguf_get_int(g, "t.str", -7) == -7);   /* wrong type: default */
  CHECK(gguf_get_int(g, "absent", 42) == 42);
  CHECK(gguf_get_float(g, "t.f32", 0) == 3.25);
  CHECK(gguf_get_float(g, "t.f64", 0) == -1.0e300);
  CHECK(gguf_get_float(g, "t.u32", 9.5) == 9.5);
  CHECK(gguf_get_bool(g, "t.bool", 0) == 1);
  CHECK(gguf_get_bool(g, "t.u8", 5) == 5);
  CHECK(gguf_get_str(g, "t.str") && !strcmp(gguf_get_str(g, "t.str"), "hello gguf"));
  CHECK(gguf_get_str(g, "t.replaced") && !strcmp(gguf_get_str(g, "t.replaced"), "second"));
  CHECK(gguf_get_str(g, "t.u8") == NULL && gguf_get_str(g, "absent") == NULL);

  gguf_vtype et;
  CHECK(gguf_arr_len(g, "t.arr_f32", &et) == 3 && et == GGUF_T_FLOAT32);
  float af[3];
  memcpy(af, gguf_arr_data(g, "t.arr_f32"), sizeof af);
  CHECK(af[0] == 1.5f && af[1] == -2.0f && isinf(af[2]));
  CHECK(gguf_arr_len(g, "t.arr_i32", &et) == 4 && et == GGUF_T_INT32);
  int32_t ai[4];
  memcpy(ai, gguf_arr_data(g, "t.arr_i32"), sizeof ai);
  CHECK(ai[0] == -1 && ai[1] == 0 && ai[2] == 7 && ai[3] == 2147483647);
  CHECK(gguf_arr_len(g, "t.arr_u8", &et) == 3 && et == GGUF_T_UINT8);
  CHECK(!memcmp(gguf_arr_data(g, "t.arr_u8"), "\x01\x02\xff", 3));
  CHECK(gguf_arr_len(g, "t.arr_i16", &et) == 2 && et == GGUF_T_INT16);
  int16_t ai16[2];
  memcpy(ai16, gguf_arr_data(g, "t.arr_i16"), sizeof ai16);
  CHECK(ai16[0] == -5 && ai16[1] == 300);
  CHECK(gguf_arr_len(g, "t.arr_u64", &et) == 2 && et == GGUF_T_UINT64);
  uint64_t au64[2];
  memcpy(au64, gguf_arr_data(g, "t.arr_u64"), sizeof au64);
  CHECK(au64[0] == 1ull << 40 && au64[1] == 3);
  CHECK(gguf_arr_len(g, "t.arr_f64", &et) == 2 && et == GGUF_T_FLOAT64);
  double af64[2];
  memcpy(af64, gguf_arr_data(g, "t.arr_f64"), sizeof af64);
  CHECK(af64[0] == 0.125 && af64[1] == -3e-300);
  CHECK(gguf_arr_len(g, "t.arr_bool", &et) == 3 && et == GGUF_T_BOOL);
  CHECK(!memcmp(gguf_arr_data(g, "t.arr_bool"), "\x01\x00\x01", 3));
  CHECK(gguf_arr_len(g, "t.arr_empty", &et) == 0 && et == GGUF_T_INT32);
  CHECK(gguf_arr_len(g, "t.u32", &et) == 0 && gguf_arr_data(g, "t.u32") == NULL);
  CHECK(gguf_arr_len(g, "t.arr_str", &et) == KS_ARRAY_LEN(k_strs) && et == GGUF_T_STRING);
  CHECK(gguf_arr_data(g, "t.arr_str") == NULL);
  for (uint64_t i = 0; i < KS_ARRAY_LEN(k_strs); i++) {
    size_t len = 99;
    const char *s = gguf_arr_str(g, "t.arr_str", i, &len);
    CHECK_MSG(s && len == k_lens[i] && !memcmp(s, k_strs[i], len), "string %d", (int)i);
  }
  CHECK(gguf_arr_str(g, "t.arr_str", KS_ARRAY_LEN(k_strs), NULL) == NULL);
  CHECK(gguf_arr_str(g, "t.arr_f32", 0, NULL) == NULL);

  CHECK(gguf_n_tensors(g) == 7);
  CHECK(gguf_find_tensor(g, "absent") < 0);
  CHECK(gguf_tensor_name(g, 7) == NULL);
  check_tensor(g, "m.f32", KS_TYPE_F32, 40, ROWS, t->f32, sizeof t->f32);
  check_tensor(g, "v.f32", KS_TYPE_F32, 7, 1, t->vec, sizeof t->vec);
  check_tensor(g, "m.f16", KS_TYPE_F16, 10, ROWS, t->f16, sizeof t->f16);
  check_tensor(g, "v.bf16", KS_TYPE_BF16, 5, 1, t->bf16, sizeof t->bf16);
  check_tensor(g, "m.q8_0", KS_TYPE_Q8_0, NQ, ROWS, t->q8, sizeof t->q8);
  check_tensor(g, "m.q4_0", KS_TYPE_Q4_0, NQ, ROWS, t->q4, sizeof t->q4);
  check_tensor(g, "m.q4_k", (ks_type)12, 256, 1, t->q4k, sizeof t->q4k);
  int n_dims = 0;
  int64_t ne[4];
  uint32_t type;
  CHECK(gguf_tensor_info(g, gguf_find_tensor(g, "v.f32"), &type, &n_dims, ne) == KS_OK);
  CHECK(type == KS_TYPE_F32 && n_dims == 1 && ne[0] == 7 && ne[1] == 1 && ne[3] == 1);
  CHECK(gguf_tensor_info(g, gguf_find_tensor(g, "m.f16"), &type, &n_dims, ne) == KS_OK);
  CHECK(type == KS_TYPE_F16 && n_dims == 2 && ne[0] == 10 && ne[1] == ROWS);
  ks_tensor tt;
  CHECK(gguf_tensor(g, 99, &tt) != KS_OK);
}

static int count_tmp_files(void) {
  DIR *d = opendir(g_dir);
  int n = 0;
  for (struct dirent *e; d && (e = readdir(d));)
    if (strstr(e->d_name, ".tmp.")) n++;
  if (d) closedir(d);
  return n;
}

static void test_roundtrip(void) {
  static tensors t;
  make_tensors(&t);
  ks_gguf_writer *w = gguf_writer_create();
  REQUIRE(w);
  fill_writer(w, &t);
  const char *path = tmp_path("all.gguf");
  REQUIRE(gguf_writer_write(w, path) == KS_OK);
  gguf_writer_destroy(w);
  CHECK(count_tmp_files() == 0);

  size_t n;
  uint8_t *bytes = read_all(path, &n);
  CHECK(!memcmp(bytes, "GGUF\x03\0\0\0", 8));
  CHECK(!memcmp(bytes + 8, "\x07\0\0\0\0\0\0\0", 8));   /* tensors */
  CHECK(!memcmp(bytes + 16, "\x17\0\0\0\0\0\0\0", 8));  /* keys */
  CHECK(n % 32 == 0); /* padded after the last tensor too, as llama.cpp writes it */
  free(bytes);

  ks_gguf *g = NULL;
  ks_status st = gguf_open(&g, path);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  if (st) return;
  CHECK(gguf_alignment(g) == 32 && gguf_data_offset(g) % 32 == 0);
  check_roundtrip(g, &t);

  /* copy every key through a second writer: the result reads back the same */
  ks_gguf_writer *w2 = gguf_writer_create();
  for (int i = 0; i < gguf_n_keys(g); i++) gguf_writer_copy_key(w2, g, i);
  gguf_writer_add_tensor(w2, "m.f32", KS_TYPE_F32, 40, ROWS, t.f32);
  gguf_writer_add_tensor(w2, "v.f32", KS_TYPE_F32, 7, 1, t.vec);
  gguf_writer_add_tensor(w2, "m.f16", KS_TYPE_F16, 10, ROWS, t.f16);
  gguf_writer_add_tensor(w2, "v.bf16", KS_TYPE_BF16, 5, 1, t.bf16);
  gguf_writer_add_tensor(w2, "m.q8_0", KS_TYPE_Q8_0, NQ, ROWS, t.q8);
  gguf_writer_add_tensor(w2, "m.q4_0", KS_TYPE_Q4_0, NQ, ROWS, t.q4);
  gguf_writer_add_tensor(w2, "m.q4_k", (ks_type)12, 256, 1, t.q4k);
  const char *path2 = tmp_path("copy.gguf");
  CHECK(gguf_writer_write(w2, path2) == KS_OK);
  gguf_writer_destroy(w2);
  gguf_close(g);
  size_t n2;
  bytes = read_all(path, &n);
  uint8_t *bytes2 = read_all(path2, &n2);
  CHECK(n == n2 && !memcmp(bytes, bytes2, n)); /* same keys, same order: identical bytes */
  free(bytes);
  free(bytes2);

  /* a different alignment, set through general.alignment */
  w = gguf_writer_create();
  fill_writer(w, &t);
  gguf_writer_set_u32(w, "general.alignment", 256);
  path = tmp_path("align256.gguf");
  REQUIRE(gguf_writer_write(w, path) == KS_OK);
  gguf_writer_destroy(w);
  g = NULL;
  st = gguf_open(&g, path);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  if (!st) {
    CHECK(gguf_alignment(g) == 256 && gguf_data_offset(g) % 256 == 0);
    check_tensor(g, "m.q4_0", KS_TYPE_Q4_0, NQ, ROWS, t.q4, sizeof t.q4);
    check_tensor(g, "v.bf16", KS_TYPE_BF16, 5, 1, t.bf16, sizeof t.bf16);
    gguf_close(g);
  }

  /* writer misuse and unwritable paths fail cleanly */
  w = gguf_writer_create();
  gguf_writer_add_tensor(w, "bad", KS_TYPE_Q8_0, 33, 1, t.q8);
  CHECK(gguf_writer_write(w, tmp_path("bad.gguf")) == KS_ERR_ARG);
  CHECK(strstr(ks_last_error(), "bad"));
  gguf_writer_destroy(w);
  w = gguf_writer_create();
  gguf_writer_set_u32(w, "k", 1);
  CHECK(gguf_writer_write(w, "/nonexistent-dir/x/y.gguf") == KS_ERR_IO);
  CHECK(strstr(ks_last_error(), "/nonexistent-dir/x/y.gguf"));
  gguf_writer_destroy(w);
  gguf_writer_destroy(NULL);
  gguf_close(NULL);
  CHECK(count_tmp_files() == 0);

  /* an empty file (no keys, no tensors) is valid */
  w = gguf_writer_create();
  REQUIRE(gguf_writer_write(w, tmp_path("empty.gguf")) == KS_OK);
  gguf_writer_destroy(w);
  g = NULL;
  CHECK(gguf_open(&g, tmp_path("empty.gguf")) == KS_OK);
  if (g) CHECK(gguf_n_keys(g) == 0 && gguf_n_tensors(g) == 0);
  gguf_close(g);
}

/* ---------------------------------------------------------------- hostile files */

/* A small valid file written by the writer whose last tensor ends exactly at the end of the
 * file (its size is a multiple of the alignment), so every shorter prefix lacks real bytes. */
static uint8_t *small_valid_file(size_t *n) {
  static float a[8 * 4], b[32];
  static uint8_t q[34 * 2];
  ks_fill_rand(a, 32, 1);
  ks_fill_rand(b, 32, 1);
  ks_quant_row(KS_TYPE_Q8_0, b, q, 32);
  ks_quant_row(KS_TYPE_Q8_0, b, q + 34, 32);
  ks_gguf_writer *w = gguf_writer_create();
  gguf_writer_set_str(w, "general.architecture", "llama");
  gguf_writer_set_u32(w, "n", 5);
  const char *s[] = {"a", "bc", ""};
  size_t l[] = {1, 2, 0};
  gguf_writer_set_arr_str(w, "strs", s, l, 3);
  gguf_writer_set_arr_f32(w, "fl", b, 3);
  gguf_writer_add_tensor(w, "q", KS_TYPE_Q8_0, 32, 2, q);
  gguf_writer_add_tensor(w, "a", KS_TYPE_F32, 8, 4, a); /* 128 bytes: ends the file */
  const char *path = tmp_path("small.gguf");
  REQUIRE(gguf_writer_write(w, path) == KS_OK);
  gguf_writer_destroy(w);
  uint8_t *p = read_all(path, n);
  ks_gguf *g = NULL;
  REQUIRE(gguf_open(&g, path) == KS_OK);
  ks_tensor t;
  REQUIRE(gguf_tensor(g, 1, &t) == KS_OK);
  REQUIRE((const uint8_t *)t.data + t.nbytes == (const uint8_t *)gguf_file_data(g, NULL) + *n);
  gguf_close(g);
  return p;
}

static void test_truncations(void) {
  size_t n;
  uint8_t *p = small_valid_file(&n);
  const char *path = tmp_path("prefix.gguf");
  int bad = 0;
  for (size_t len = 0; len < n; len++) {
    write_bytes(path, p, len);
    ks_gguf *g = NULL;
    ks_status st = gguf_open(&g, path);
    const char *msg = ks_last_error();
    if (st != KS_ERR_FORMAT || g || !strstr(msg, path) ||
        !(strstr(msg, "truncated") || strstr(msg, "too short"))) {
      if (bad++ < 5)
        fprintf(stderr, "prefix of %zu/%zu bytes: status %d: %s\n", len, n, st, msg);
    }
    gguf_close(g);
  }
  CHECK_MSG(bad == 0, "%d of %zu truncated prefixes were not rejected as truncated", bad, n);
  write_bytes(path, p, n);
  ks_gguf *g = NULL;
  CHECK(gguf_open(&g, path) == KS_OK);
  gguf_close(g);

  /* random corruption of a few bytes (mostly in the header): whatever opens must be usable
   * (every key and tensor readable inside the mapping), whatever fails must say why */
  uint8_t *m = malloc(n);
  REQUIRE(m);
  int opened = 0;
  for (int it = 0; it < 3000; it++) {
    memcpy(m, p, n);
    int flips = 1 + (int)(ks_randu() % 4);
    for (int k = 0; k < flips; k++) {
      size_t at = ks_randu() % (ks_randu() % 4 ? KS_MIN(n, (size_t)200) : n);
      m[at] = ks_randu() % 3 ? (uint8_t)ks_randu() : (uint8_t)(m[at] ^ (1u << (ks_randu() % 8)));
    }
    write_bytes(path, m, n);
    g = NULL;
    ks_status st = gguf_open(&g, path);
    if (st != KS_OK) {
      CHECK_MSG(g == NULL && strstr(ks_last_error(), path), "iteration %d: %s", it, ks_last_error());
      continue;
    }
    opened++;
    size_t size;
    const uint8_t *base = gguf_file_data(g, &size);
    unsigned sum = 0;
    for (int i = 0; i < gguf_n_keys(g); i++) {
      const char *k = gguf_key_name(g, i);
      const char *sv = gguf_get_str(g, k);
      if (sv) sum += (unsigned)strlen(sv);
      gguf_vtype et;
      uint64_t an = gguf_arr_len(g, k, &et);
      for (uint64_t j = 0; et == GGUF_T_STRING && j < an; j++) {
        size_t len;
        const char *e = gguf_arr_str(g, k, j, &len);
        CHECK(e && (const uint8_t *)e >= base && (const uint8_t *)e + len <= base + size);
      }
      sum += (unsigned)gguf_get_int(g, k, 0);
    }
    for (int i = 0; i < gguf_n_tensors(g); i++) {
      ks_tensor t;
      if (gguf_tensor(g, i, &t) != KS_OK) continue;
      const uint8_t *d = t.data;
      CHECK(d >= base && d + t.nbytes <= base + size);
      if (t.nbytes) sum += d[0] + d[t.nbytes - 1];
    }
    (void)sum;
    gguf_close(g);
  }
  printf("corruption: %d of 3000 mutated files still opened\n", opened);
  free(m);
  free(p);

  /* The same truncations, but with the cut on a page boundary, so a read past the end of the
   * mapping would fault instead of reading the zeros that fill the rest of a page. A leading
   * padding key of P bytes moves the page boundary through the whole of a valid file. */
  long page = sysconf(_SC_PAGESIZE);
  if (page != 4096) {
    printf("note: page size %ld; skipped the page-boundary truncations\n", page);
    return;
  }
  buf rest = {0}, data = {0};
  b_kv_str(&rest, "general.architecture", "llama");
  b_str(&rest, "strs");
  b_u32(&rest, GGUF_T_ARRAY);
  b_u32(&rest, GGUF_T_STRING);
  b_u64(&rest, 3);
  b_str(&rest, "a");
  b_str(&rest, "bc");
  b_str(&rest, "");
  const uint64_t dq[] = {32, 2}, da[] = {8, 4};
  b_tensor(&rest, "q", 2, dq, KS_TYPE_Q8_0, 0);
  b_tensor(&rest, "a", 2, da, KS_TYPE_F32, 96);
  b_zeros(&data, 96 + 128);
  int tried = 0;
  bad = 0;
  for (size_t P = 0; P < 4096; P++) {
    buf b = {0};
    b_header(&b, 3, 2, 3);
    b_str(&b, "pad");
    b_u32(&b, GGUF_T_STRING);
    b_u64(&b, P);
    b_zeros(&b, P);
    b_put(&b, rest.p, rest.n);
    b_pad(&b, 32);
    b_put(&b, data.p, data.n);
    if (P == 0) { /* the whole file is valid */
      write_bytes(path, b.p, b.n);
      ks_gguf *g = NULL;
      CHECK_MSG(gguf_open(&g, path) == KS_OK, "%s", ks_last_error());
      gguf_close(g);
    }
    if (b.n > 4096) {
      write_bytes(path, b.p, 4096);
      ks_gguf *g = NULL;
      if (gguf_open(&g, path) != KS_ERR_FORMAT) bad++;
      gguf_close(g);
      tried++;
    }
    free(b.p);
  }
  CHECK_MSG(bad == 0, "%d of %d page-aligned truncations did not fail", bad, tried);
  CHECK(tried > 300);
  free(rest.p);
  free(data.p);
}

static void test_hostile(void) {
  buf b = {0};
  const uint64_t d2[] = {8, 2};

  /* missing, empty, directory */
  ks_gguf *g = NULL;
  CHECK(gguf_open(&g, tmp_path("does-not-exist.gguf")) == KS_ERR_IO && !g);
  CHECK(strstr(ks_last_error(), "does-not-exist.gguf") && strstr(ks_last_error(), "No such file"));
  CHECK(gguf_open(&g, g_dir) == KS_ERR_IO && !g);
  CHECK(strstr(ks_last_error(), "directory"));
  EXPECT_FAIL("empty.bin", &b, KS_ERR_FORMAT, "too short");

  /* wrong magic */
  b_put(&b, "GGUX", 4);
  b_u32(&b, 3);
  b_u64(&b, 0);
  b_u64(&b, 0);
  EXPECT_FAIL("magic.gguf", &b, KS_ERR_FORMAT, "magic");
  b.n = 0;

  /* versions */
  b_header(&b, 1, 0, 0);
  EXPECT_FAIL("v1.gguf", &b, KS_ERR_UNSUPPORTED, "version 1");
  b.n = 0;
  b_header(&b, 4, 0, 0);
  EXPECT_FAIL("v4.gguf", &b, KS_ERR_UNSUPPORTED, "version 4");
  b.n = 0;
  b_header(&b, 0x03000000, 0, 0);
  EXPECT_FAIL("bigendian.gguf", &b, KS_ERR_UNSUPPORTED, "big-endian");
  b.n = 0;
  b_header(&b, 2, 0, 1); /* version 2 has the same layout: accepted */
  b_kv_u32(&b, "x", 1);
  b.n = b.n; /* valid */
  write_bytes(tmp_path("v2.gguf"), b.p, b.n);
  g = NULL;
  CHECK(gguf_open(&g, tmp_path("v2.gguf")) == KS_OK && g && gguf_version(g) == 2);
  gguf_close(g);
  b.n = 0;

  /* absurd counts in the header */
  b_header(&b, 3, 0, 1ull << 60);
  EXPECT_FAIL("nkv.gguf", &b, KS_ERR_FORMAT, "key count");
  b.n = 0;
  b_header(&b, 3, 1ull << 62, 0);
  EXPECT_FAIL("ntensors.gguf", &b, KS_ERR_FORMAT, "tensor count");
  b.n = 0;

  /* huge string lengths: a key name and a value */
  b_header(&b, 3, 0, 1);
  b_u64(&b, 1ull << 62);
  b_put(&b, "abc", 3);
  b_zeros(&b, 16);
  EXPECT_FAIL("keylen.gguf", &b, KS_ERR_FORMAT, "string length", "key name");
  b.n = 0;
  b_header(&b, 3, 0, 1);
  b_str(&b, "general.name");
  b_u32(&b, GGUF_T_STRING);
  b_u64(&b, UINT64_MAX);
  b_put(&b, "x", 1);
  EXPECT_FAIL("strlen.gguf", &b, KS_ERR_FORMAT, "string length", "general.name");
  b.n = 0;

  /* huge array counts: numeric, strings, nested */
  uint32_t elem[] = {GGUF_T_UINT32, GGUF_T_STRING, GGUF_T_ARRAY, GGUF_T_FLOAT64};
  for (size_t i = 0; i < KS_ARRAY_LEN(elem); i++) {
    b_header(&b, 3, 0, 1);
    b_str(&b, "tokenizer.ggml.tokens");
    b_u32(&b, GGUF_T_ARRAY);
    b_u32(&b, elem[i]);
    b_u64(&b, (1ull << 61) + 3);
    b_zeros(&b, 64);
    EXPECT_FAIL("arrcount.gguf", &b, KS_ERR_FORMAT, "array count", "tokenizer.ggml.tokens");
    b.n = 0;
  }

  /* unknown value types */
  b_header(&b, 3, 0, 1);
  b_str(&b, "k");
  b_u32(&b, 13);
  b_u32(&b, 0);
  EXPECT_FAIL("vtype.gguf", &b, KS_ERR_FORMAT, "value type 13", "'k'");
  b.n = 0;
  b_header(&b, 3, 0, 1);
  b_str(&b, "k");
  b_u32(&b, GGUF_T_ARRAY);
  b_u32(&b, 77);
  b_u64(&b, 1);
  b_u32(&b, 0);
  EXPECT_FAIL("elemtype.gguf", &b, KS_ERR_FORMAT, "element type 77");
  b.n = 0;

  /* duplicate key; bad alignment key */
  b_header(&b, 3, 0, 2);
  b_kv_u32(&b, "dup", 1);
  b_kv_u32(&b, "dup", 2);
  EXPECT_FAIL("dupkey.gguf", &b, KS_ERR_FORMAT, "'dup'", "twice");
  b.n = 0;
  b_header(&b, 3, 0, 1);
  b_kv_u32(&b, "general.alignment", 48);
  EXPECT_FAIL("align48.gguf", &b, KS_ERR_FORMAT, "general.alignment", "power of two");
  b.n = 0;
  b_header(&b, 3, 0, 1);
  b_kv_str(&b, "general.alignment", "32");
  EXPECT_FAIL("alignstr.gguf", &b, KS_ERR_FORMAT, "general.alignment", "uint32");
  b.n = 0;

  /* tensor infos */
  const uint64_t d5[] = {2, 2, 2, 2, 2};
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "blk.0.attn_q.weight", 5, d5, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 256);
  EXPECT_FAIL("ndims5.gguf", &b, KS_ERR_FORMAT, "n_dims 5", "blk.0.attn_q.weight");
  b.n = 0;
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "t0", 0, d5, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 32);
  EXPECT_FAIL("ndims0.gguf", &b, KS_ERR_FORMAT, "n_dims 0");
  b.n = 0;
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "weird", 2, d2, 99, 0);
  b_pad(&b, 32);
  b_zeros(&b, 64);
  EXPECT_FAIL("type99.gguf", &b, KS_ERR_UNSUPPORTED, "type 99", "'weird'");
  b.n = 0;
  const uint64_t dover[] = {1ull << 32, 1ull << 32, 4};
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "big", 3, dover, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 64);
  EXPECT_FAIL("overflow.gguf", &b, KS_ERR_FORMAT, "overflow", "'big'");
  b.n = 0;
  const uint64_t dbytes[] = {1ull << 31, 1ull << 31, 1ull << 0}; /* 2^62 elements * 4 bytes */
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "big2", 3, dbytes, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 64);
  EXPECT_FAIL("overflow2.gguf", &b, KS_ERR_FORMAT, "'big2'");
  b.n = 0;
  const uint64_t dzero[] = {8, 0};
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "z", 2, dzero, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 64);
  EXPECT_FAIL("dim0.gguf", &b, KS_ERR_FORMAT, "dimension 1 is 0");
  b.n = 0;
  const uint64_t dneg[] = {8, 1ull << 63};
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "n", 2, dneg, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  EXPECT_FAIL("dimneg.gguf", &b, KS_ERR_FORMAT, "dimension 1");
  b.n = 0;
  const uint64_t dq[] = {33, 2};
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "q", 2, dq, KS_TYPE_Q8_0, 0);
  b_pad(&b, 32);
  b_zeros(&b, 256);
  EXPECT_FAIL("qblock.gguf", &b, KS_ERR_FORMAT, "block size", "'q'");
  b.n = 0;

  /* data outside the file, misaligned, duplicated */
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "w", 2, d2, KS_TYPE_F32, 1024 * 32);
  b_pad(&b, 32);
  b_zeros(&b, 64);
  EXPECT_FAIL("offset.gguf", &b, KS_ERR_FORMAT, "outside the file", "'w'");
  b.n = 0;
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "w", 2, d2, KS_TYPE_F32, UINT64_MAX - 31);
  b_pad(&b, 32);
  b_zeros(&b, 64);
  EXPECT_FAIL("offset_wrap.gguf", &b, KS_ERR_FORMAT, "outside the file");
  b.n = 0;
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "w", 2, d2, KS_TYPE_F32, 32); /* 64 bytes at 32: needs 96, has 64 */
  b_pad(&b, 32);
  b_zeros(&b, 64);
  EXPECT_FAIL("size.gguf", &b, KS_ERR_FORMAT, "outside the file");
  b.n = 0;
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "w", 2, d2, KS_TYPE_F32, 8);
  b_pad(&b, 32);
  b_zeros(&b, 128);
  EXPECT_FAIL("misaligned.gguf", &b, KS_ERR_FORMAT, "alignment", "'w'");
  b.n = 0;
  b_header(&b, 3, 2, 0);
  b_tensor(&b, "w", 2, d2, KS_TYPE_F32, 0);
  b_tensor(&b, "w", 2, d2, KS_TYPE_F32, 64);
  b_pad(&b, 32);
  b_zeros(&b, 128);
  EXPECT_FAIL("duptensor.gguf", &b, KS_ERR_FORMAT, "'w'", "twice");
  b.n = 0;

  /* data ranges that share bytes (d2: 8 x 2 F32, 64 bytes): the same offset, a partial overlap,
   * one range inside another listed first, and the last byte of one being the first of the next */
  b_header(&b, 3, 2, 0);
  b_tensor(&b, "w", 2, d2, KS_TYPE_F32, 0);
  b_tensor(&b, "x", 2, d2, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 128);
  EXPECT_FAIL("alias.gguf", &b, KS_ERR_FORMAT, "'w'", "'x'", "overlap", "bytes 0..63");
  b.n = 0;
  b_header(&b, 3, 2, 0);
  b_tensor(&b, "first", 2, d2, KS_TYPE_F32, 0);
  b_tensor(&b, "second", 2, d2, KS_TYPE_F32, 32); /* 32..95 against 0..63 */
  b_pad(&b, 32);
  b_zeros(&b, 128);
  EXPECT_FAIL("partial.gguf", &b, KS_ERR_FORMAT, "'first'", "'second'", "overlap", "32..95");
  b.n = 0;
  const uint64_t d8[] = {8, 8}; /* 256 bytes */
  b_header(&b, 3, 3, 0);
  b_tensor(&b, "after", 2, d2, KS_TYPE_F32, 256);
  b_tensor(&b, "inner", 2, d2, KS_TYPE_F32, 128);  /* inside "outer", listed before it */
  b_tensor(&b, "outer", 2, d8, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 320);
  EXPECT_FAIL("inside.gguf", &b, KS_ERR_FORMAT, "'outer'", "'inner'", "overlap");
  b.n = 0;
  b_header(&b, 3, 2, 0);
  b_tensor(&b, "w", 2, d2, KS_TYPE_F32, 32); /* 32..95 against 0..63 (a listed first) */
  b_tensor(&b, "a", 2, d2, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 128);
  EXPECT_FAIL("unsorted.gguf", &b, KS_ERR_FORMAT, "'a'", "'w'", "overlap");
  b.n = 0;
  /* touching is not overlapping: 0..63 then 64..127, listed in reverse, opens */
  b_header(&b, 3, 2, 0);
  b_tensor(&b, "hi", 2, d2, KS_TYPE_F32, 64);
  b_tensor(&b, "lo", 2, d2, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 128);
  write_bytes(tmp_path("touching.gguf"), b.p, b.n);
  g = NULL;
  ks_status tst = gguf_open(&g, tmp_path("touching.gguf"));
  CHECK_MSG(tst == KS_OK && g, "adjacent tensors rejected: %s", ks_last_error());
  gguf_close(g);
  b.n = 0;

  /* nested arrays: skipped but bounds-checked; what follows still reads right */
  b_header(&b, 3, 1, 3);
  b_str(&b, "nested");
  b_u32(&b, GGUF_T_ARRAY);
  b_u32(&b, GGUF_T_ARRAY);
  b_u64(&b, 2);
  b_u32(&b, GGUF_T_UINT16); /* [0]: 3 x u16 */
  b_u64(&b, 3);
  b_zeros(&b, 6);
  b_u32(&b, GGUF_T_STRING); /* [1]: 2 strings */
  b_u64(&b, 2);
  b_str(&b, "xy");
  b_str(&b, "");
  b_kv_str(&b, "after", "still here");
  b_str(&b, "nested_empty");
  b_u32(&b, GGUF_T_ARRAY);
  b_u32(&b, GGUF_T_ARRAY);
  b_u64(&b, 0);
  b_tensor(&b, "w", 2, d2, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  float wdata[16];
  for (int i = 0; i < 16; i++) wdata[i] = (float)i;
  b_put(&b, wdata, sizeof wdata);
  const char *npath = tmp_path("nested.gguf");
  write_bytes(npath, b.p, b.n);
  g = NULL;
  ks_status st = gguf_open(&g, npath);
  CHECK_MSG(st == KS_OK, "%s", ks_last_error());
  if (!st) {
    gguf_vtype et;
    CHECK(gguf_arr_len(g, "nested", &et) == 2 && et == GGUF_T_ARRAY);
    CHECK(gguf_arr_data(g, "nested") == NULL && gguf_arr_str(g, "nested", 0, NULL) == NULL);
    CHECK(gguf_get_str(g, "after") && !strcmp(gguf_get_str(g, "after"), "still here"));
    ks_tensor t;
    CHECK(gguf_tensor(g, 0, &t) == KS_OK && !memcmp(t.data, wdata, sizeof wdata));
    /* nested arrays survive a verbatim copy */
    ks_gguf_writer *w = gguf_writer_create();
    for (int i = 0; i < gguf_n_keys(g); i++) gguf_writer_copy_key(w, g, i);
    CHECK(gguf_writer_write(w, tmp_path("nested_copy.gguf")) == KS_OK);
    gguf_writer_destroy(w);
    ks_gguf *g2 = NULL;
    CHECK(gguf_open(&g2, tmp_path("nested_copy.gguf")) == KS_OK);
    if (g2) {
      CHECK(gguf_arr_len(g2, "nested", &et) == 2 && et == GGUF_T_ARRAY);
      CHECK(gguf_get_str(g2, "after") && !strcmp(gguf_get_str(g2, "after"), "still here"));
      CHECK(gguf_arr_len(g2, "nested_empty", &et) == 0 && et == GGUF_T_ARRAY);
    }
    gguf_close(g2);
    gguf_close(g);
  }
  b.n = 0;
  /* nested too deep, and a nested count past the end */
  b_header(&b, 3, 0, 1);
  b_str(&b, "deep");
  b_u32(&b, GGUF_T_ARRAY);
  for (int i = 0; i < 10; i++) {
    b_u32(&b, GGUF_T_ARRAY);
    b_u64(&b, 1);
  }
  b_u32(&b, GGUF_T_UINT8);
  b_u64(&b, 0);
  EXPECT_FAIL("deep.gguf", &b, KS_ERR_FORMAT, "nested", "'deep'");
  b.n = 0;
  b_header(&b, 3, 0, 1);
  b_str(&b, "inner");
  b_u32(&b, GGUF_T_ARRAY);
  b_u32(&b, GGUF_T_ARRAY);
  b_u64(&b, 1);
  b_u32(&b, GGUF_T_UINT64);
  b_u64(&b, 1ull << 60);
  b_zeros(&b, 16);
  EXPECT_FAIL("inner.gguf", &b, KS_ERR_FORMAT, "array count", "'inner'");
  b.n = 0;

  /* a 3-D tensor opens, but gguf_tensor refuses it by name */
  const uint64_t d3[] = {4, 2, 2};
  b_header(&b, 3, 1, 0);
  b_tensor(&b, "cube", 3, d3, KS_TYPE_F32, 0);
  b_pad(&b, 32);
  b_zeros(&b, 64);
  write_bytes(tmp_path("cube.gguf"), b.p, b.n);
  g = NULL;
  CHECK(gguf_open(&g, tmp_path("cube.gguf")) == KS_OK);
  if (g) {
    ks_tensor t;
    int nd;
    int64_t ne[4];
    CHECK(gguf_tensor(g, 0, &t) == KS_ERR_UNSUPPORTED && strstr(ks_last_error(), "'cube'"));
    CHECK(gguf_tensor_info(g, 0, NULL, &nd, ne) == KS_OK && nd == 3 && ne[2] == 2);
    gguf_close(g);
  }
  free(b.p);
}

int main(void) {
  ks_test_seed();
  g_dir = ks_test_tmpdir("test_gguf");
  test_roundtrip();
  test_truncations();
  test_hostile();
  return ks_test_done("test_gguf");
}
