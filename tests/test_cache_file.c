/* test_cache_file.c — the prompt cache's block files (--cache-dir): the CRC against a published
 * check value and a bit-at-a-time oracle; the documented byte layout; round trips of several block
 * shapes; every damaged byte, every truncation, another model / shape / format / version, missing
 * files, unwritable directories and a full disk each give the right status and a message, leave
 * no temporary file behind and never hand back file data; concurrent writers never expose a torn
 * file; 500 random mutations never crash and never read back as good. Also times a 7B-sized block.
 * Not tested here: the prefix index that decides which blocks to write (test_prefix_cache). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache_file.h"
#include "common.h"
#include "testutil.h"

static char g_dir[4096]; /* this test's scratch directory */

/* ---------------------------------------------------------------- helpers */

static ks_block_header make_header(uint64_t fp, uint64_t hash, uint32_t n_layer, uint32_t kv_dim,
                                   uint32_t block_size) {
  ks_block_header h;
  memset(&h, 0, sizeof h);
  h.model_fingerprint = fp;
  h.kv_format = KS_KV_FORMAT_F32;
  h.n_layer = n_layer;
  h.kv_dim = kv_dim;
  h.block_size = block_size;
  h.hash = hash;
  h.parent_hash = ((uint64_t)ks_randu() << 32) | ks_randu();
  for (uint32_t i = 0; i < block_size; i++) h.tokens[i] = (int32_t)(ks_randu() % 32000);
  return h;
}

static float *make_payload(const ks_block_header *h) {
  size_t n = (size_t)(cache_file_payload_bytes(h) / 4);
  float *p = malloc(n * 4 + 4);
  REQUIRE(p);
  ks_fill_rand(p, n, 3.0f);
  return p;
}

static uint8_t *slurp(const char *path, size_t *n) {
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

static void spit(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  REQUIRE(f);
  REQUIRE(n == 0 || fwrite(p, 1, n, f) == n);
  REQUIRE(fclose(f) == 0);
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

/* The oracle: CRC-64/XZ one bit at a time, straight from the polynomial. */
static uint64_t crc64_bitwise(const uint8_t *p, size_t n) {
  uint64_t r = ~0ull;
  for (size_t i = 0; i < n; i++) {
    r ^= p[i];
    for (int k = 0; k < 8; k++) r = (r >> 1) ^ (0xC96C5795D7870F42ull & (0 - (r & 1)));
  }
  return ~r;
}

/* Rewrites a (mutated) file's trailing checksum so that only the reader's other checks can
 * reject it. */
static void refresh_crc(uint8_t *file, size_t n) { put64(file + n - 8, crc64_bitwise(file, n - 8)); }

/* Entries of a directory other than . and ..; *n_tmp counts temporary ones. -1 if absent. */
static int count_entries(const char *dir, int *n_tmp) {
  DIR *d = opendir(dir);
  if (n_tmp) *n_tmp = 0;
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    n++;
    if (n_tmp && (strstr(e->d_name, ".tmp") || strstr(e->d_name, "probe"))) {
      fprintf(stderr, "  left behind: %s/%s\n", dir, e->d_name);
      (*n_tmp)++;
    }
  }
  closedir(d);
  return n;
}

static void fp_dir(char *buf, size_t cap, const char *dir, uint64_t fp) {
  snprintf(buf, cap, "%s/%016llx", dir, (unsigned long long)fp);
}

static void subdir(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", g_dir, name);
  mkdir(buf, 0755);
}

/* Reads the block `expect` names and checks the status, that the message contains `needle`
 * (when given), and on failure that no byte of file data reached the payload buffer. */
static ks_status expect_read_at(const char *dir, const ks_block_header *expect, ks_status want,
                                const char *needle, const char *what, int line) {
  size_t cap = (size_t)cache_file_payload_bytes(expect);
  uint8_t *buf = malloc(cap + 1);
  REQUIRE(buf);
  memset(buf, 0xA5, cap);
  ks_block_header got;
  ks_status st = cache_file_read(dir, expect, &got, buf, cap);
  CHECK_MSG(st == want, "line %d, %s: status %s, want %s (%s)", line, what, ks_status_name(st),
            ks_status_name(want), st ? ks_last_error() : "ok");
  if (st != KS_OK) {
    CHECK_MSG(strlen(ks_last_error()) > 20, "line %d, %s: message too short", line, what);
    if (needle)
      CHECK_MSG(strstr(ks_last_error(), needle), "line %d, %s: message lacks '%s': %s", line, what,
                needle, ks_last_error());
    size_t leaked = 0;
    for (size_t i = 0; i < cap; i++) leaked += buf[i] != 0xA5 && buf[i] != 0;
    CHECK_MSG(leaked == 0, "line %d, %s: %zu payload bytes handed back on failure", line, what,
              leaked);
  }
  free(buf);
  return st;
}
#define EXPECT_READ(dir, expect, want, needle, what) \
  expect_read_at(dir, expect, want, needle, what, __LINE__)

/* ---------------------------------------------------------------- CRC */

static void test_crc(void) {
  CHECK(cache_file_crc64(0, "123456789", 9) == 0x995DC9BBDF1939FAull); /* published check value */
  CHECK(crc64_bitwise((const uint8_t *)"123456789", 9) == 0x995DC9BBDF1939FAull);
  CHECK(cache_file_crc64(0, "", 0) == 0);
  uint8_t data[5000 + 8];
  for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)ks_randu();
  /* every start alignment and lengths around the 8-byte stride */
  for (size_t off = 0; off < 8; off++)
    for (size_t n = 0; n < 80; n++)
      CHECK_MSG(cache_file_crc64(0, data + off, n) == crc64_bitwise(data + off, n),
                "off %zu n %zu", off, n);
  /* long enough to be summed in parallel quarters: every remainder past the quarters too */
  for (size_t n = 1000; n < 1100; n++)
    CHECK_MSG(cache_file_crc64(0, data + n % 8, n) == crc64_bitwise(data + n % 8, n), "n %zu", n);
  for (int t = 0; t < 50; t++) {
    size_t off = ks_randu() % 8, n = ks_randu() % 5001;
    CHECK_MSG(cache_file_crc64(0, data + off, n) == crc64_bitwise(data + off, n), "off %zu n %zu",
              off, n);
  }
  for (int t = 0; t < 20; t++) {
    size_t cut = ks_randu() % 5001;
    uint64_t c = cache_file_crc64(cache_file_crc64(0, data, cut), data + cut, 5000 - cut);
    CHECK_MSG(c == crc64_bitwise(data, 5000), "chained at %zu", cut);
  }
}

/* ---------------------------------------------------------------- layout and round trips */

static void test_layout(void) {
  char dir[4300], path[4400], path2[4400], dslash[4400];
  subdir(dir, sizeof dir, "layout");
  ks_block_header h = make_header(0x0123456789abcdefull, 0xfedcba9876543210ull, 2, 7, 5);
  for (int i = 5; i < 64; i++) h.tokens[i] = 1000 + i; /* junk past block_size must not be stored */
  CHECK(cache_file_payload_bytes(&h) == 2ull * 2 * 5 * 7 * 4);
  float *pl = make_payload(&h);
  REQUIRE(cache_file_write(dir, &h, pl) == KS_OK);

  cache_file_path(path, sizeof path, dir, h.model_fingerprint, h.hash);
  snprintf(path2, sizeof path2, "%s/0123456789abcdef/fedcba9876543210.kvb", dir);
  CHECK_MSG(!strcmp(path, path2), "path %s", path);
  snprintf(dslash, sizeof dslash, "%s/", dir);
  cache_file_path(path2, sizeof path2, dslash, h.model_fingerprint, h.hash);
  CHECK_MSG(!strcmp(path, path2), "a trailing slash changes the path: %s", path2);
  char tiny[16];
  cache_file_path(tiny, sizeof tiny, dir, 1, 2);
  CHECK_MSG(tiny[0] == 0, "a path that does not fit must come back empty, not cut: %s", tiny);

  size_t n;
  uint8_t *f = slurp(path, &n);
  size_t P = (size_t)cache_file_payload_bytes(&h);
  CHECK(n == 320 + P + 8);
  CHECK(!memcmp(f, "KVSB", 4));
  CHECK(get32(f + 4) == 1);
  CHECK(get32(f + 8) == 320);
  CHECK(get32(f + 12) == KS_KV_FORMAT_F32);
  CHECK(get64(f + 16) == h.model_fingerprint);
  CHECK(get64(f + 24) == h.hash);
  CHECK(get64(f + 32) == h.parent_hash);
  CHECK(get64(f + 40) == P);
  CHECK(get32(f + 48) == 2 && get32(f + 52) == 7 && get32(f + 56) == 5 && get32(f + 60) == 0);
  for (int i = 0; i < 64; i++)
    CHECK_MSG(get32(f + 64 + 4 * i) == (i < 5 ? (uint32_t)h.tokens[i] : 0u), "token slot %d", i);
  CHECK(!memcmp(f + 320, pl, P));
  CHECK(get64(f + 320 + P) == crc64_bitwise(f, 320 + P));
  free(f);
  free(pl);
}

static void test_roundtrip(void) {
  static const uint32_t shapes[][3] = {{1, 1, 1}, {2, 7, 5}, {3, 64, 16}, {1, 3, 64}, {4, 33, 13}};
  char dir[4300], fdir[4400];
  subdir(dir, sizeof dir, "roundtrip");
  const uint64_t fp = 0x5eed5eed00000001ull;
  for (size_t s = 0; s < KS_ARRAY_LEN(shapes); s++) {
    ks_block_header h = make_header(fp, 0x1000 + s, shapes[s][0], shapes[s][1], shapes[s][2]);
    float *pl = make_payload(&h);
    size_t P = (size_t)cache_file_payload_bytes(&h);
    CHECK_MSG(cache_file_write(dir, &h, pl) == KS_OK, "shape %zu: %s", s, ks_last_error());
    ks_block_header expect = h, got;
    memset(expect.tokens, 0, sizeof expect.tokens); /* the reader must not need the tokens */
    expect.parent_hash = 0;
    float *back = malloc(P + 4);
    REQUIRE(back);
    memset(back, 0, P);
    ks_status st = cache_file_read(dir, &expect, &got, back, P);
    CHECK_MSG(st == KS_OK, "shape %zu: %s", s, ks_last_error());
    if (st == KS_OK) {
      CHECK(!memcmp(back, pl, P));
      CHECK(got.model_fingerprint == fp && got.hash == h.hash && got.parent_hash == h.parent_hash);
      CHECK(got.kv_format == h.kv_format && got.n_layer == h.n_layer && got.kv_dim == h.kv_dim &&
            got.block_size == h.block_size);
      CHECK(!memcmp(got.tokens, h.tokens, sizeof h.tokens));
    }
    /* rewriting the block replaces it whole */
    pl[0] += 1.0f;
    CHECK(cache_file_write(dir, &h, pl) == KS_OK);
    CHECK(cache_file_read(dir, &expect, NULL, back, P) == KS_OK && !memcmp(back, pl, P));
    /* a buffer one byte short is a caller bug, said as such */
    if (P > 1) CHECK(cache_file_read(dir, &expect, NULL, back, P - 1) == KS_ERR_ARG);
    free(back);
    free(pl);
  }
  int n_tmp, n = count_entries((fp_dir(fdir, sizeof fdir, dir, fp), fdir), &n_tmp);
  CHECK_MSG(n == (int)KS_ARRAY_LEN(shapes) && n_tmp == 0, "%d files, %d temporary", n, n_tmp);

  /* writing refuses shapes a reader would reject */
  float one[4] = {0};
  ks_block_header bad = make_header(fp, 99, 1, 1, 1);
  bad.block_size = 65;
  CHECK(cache_file_write(dir, &bad, one) == KS_ERR_ARG);
  bad = make_header(fp, 99, 0, 1, 1);
  CHECK(cache_file_write(dir, &bad, one) == KS_ERR_ARG);
  bad = make_header(fp, 99, 1, 1, 1);
  bad.kv_format = 77;
  CHECK(cache_file_write(dir, &bad, one) == KS_ERR_ARG);
  CHECK(strstr(ks_last_error(), "format"));
  bad = make_header(fp, 99, 1, 1, 1);
  bad.tokens[0] = -3;
  CHECK(cache_file_write(dir, &bad, one) == KS_ERR_ARG);
  CHECK(count_entries(fdir, NULL) == (int)KS_ARRAY_LEN(shapes));
}

/* ---------------------------------------------------------------- damaged files */

typedef struct {
  char dir[4300], path[4400];
  ks_block_header h;
  float *payload;
  uint8_t *file;
  size_t n;
} fixture;

static void fixture_make(fixture *fx, const char *name, uint32_t n_layer, uint32_t kv_dim,
                         uint32_t block_size) {
  subdir(fx->dir, sizeof fx->dir, name);
  fx->h = make_header(0xabcdef0011223344ull, 0x7777000011112222ull, n_layer, kv_dim, block_size);
  fx->payload = make_payload(&fx->h);
  REQUIRE(cache_file_write(fx->dir, &fx->h, fx->payload) == KS_OK);
  cache_file_path(fx->path, sizeof fx->path, fx->dir, fx->h.model_fingerprint, fx->h.hash);
  fx->file = slurp(fx->path, &fx->n);
}
static void fixture_restore(fixture *fx) { spit(fx->path, fx->file, fx->n); }
static void fixture_free(fixture *fx) {
  free(fx->payload);
  free(fx->file);
}

static void test_corrupt(void) {
  fixture fx;
  /* a small block: every byte of the file, one bit and the whole byte */
  fixture_make(&fx, "corrupt_small", 1, 3, 2);
  CHECK(fx.n == 320 + 48 + 8);
  uint8_t *m = malloc(fx.n);
  REQUIRE(m);
  for (size_t off = 0; off < fx.n; off++)
    for (int pass = 0; pass < 2; pass++) {
      memcpy(m, fx.file, fx.n);
      m[off] ^= pass ? 0xFF : (uint8_t)(1u << (off % 8));
      spit(fx.path, m, fx.n);
      char what[64];
      snprintf(what, sizeof what, "byte %zu %s", off, pass ? "inverted" : "bit flipped");
      EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, NULL, what);
    }
  /* a payload byte: the checksum is what catches it, and says so */
  memcpy(m, fx.file, fx.n);
  m[330] ^= 0x10;
  spit(fx.path, m, fx.n);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "corrupt", "payload byte");
  fixture_restore(&fx);
  EXPECT_READ(fx.dir, &fx.h, KS_OK, NULL, "restored small file");
  free(m);
  fixture_free(&fx);

  /* a bigger block at chosen places: every header field, the unused token slots, the payload's
   * ends and middle, the checksum's ends */
  fixture_make(&fx, "corrupt_big", 3, 64, 16);
  size_t P = (size_t)cache_file_payload_bytes(&fx.h);
  size_t offs[] = {0, 3, 4, 7, 8, 12, 16, 23, 24, 31, 32, 39, 40, 47, 48, 52, 56, 60, 63, 64,
                   64 + 4 * 16 - 1, 64 + 4 * 16, 319, 320, 321, 320 + P / 2, 320 + P - 1,
                   320 + P, 320 + P + 7};
  m = malloc(fx.n);
  REQUIRE(m);
  for (size_t i = 0; i < KS_ARRAY_LEN(offs); i++) {
    memcpy(m, fx.file, fx.n);
    m[offs[i]] ^= 0x01 << (i % 8);
    spit(fx.path, m, fx.n);
    char what[64];
    snprintf(what, sizeof what, "big file, byte %zu", offs[i]);
    EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, NULL, what);
  }
  fixture_restore(&fx);
  EXPECT_READ(fx.dir, &fx.h, KS_OK, NULL, "restored big file");
  free(m);
  fixture_free(&fx);
}

static void test_truncate(void) {
  fixture fx;
  fixture_make(&fx, "truncate_small", 1, 3, 2);
  for (size_t len = 0; len < fx.n; len++) {
    spit(fx.path, fx.file, len);
    char what[64];
    snprintf(what, sizeof what, "cut to %zu of %zu bytes", len, fx.n);
    EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, len >= 8 && len < 320 ? "truncated" : NULL, what);
  }
  uint8_t *longer = calloc(1, fx.n + 100);
  REQUIRE(longer);
  memcpy(longer, fx.file, fx.n);
  spit(fx.path, longer, fx.n + 1);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "past its end", "one byte appended");
  spit(fx.path, longer, fx.n + 100);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "past its end", "100 bytes appended");
  free(longer);
  fixture_free(&fx);

  fixture_make(&fx, "truncate_big", 3, 64, 16);
  size_t P = (size_t)cache_file_payload_bytes(&fx.h);
  size_t lens[] = {0, 1, 4, 7, 8, 100, 319, 320, 321, 320 + P / 3, 320 + P - 1, 320 + P,
                   320 + P + 1, fx.n - 1};
  for (size_t i = 0; i < KS_ARRAY_LEN(lens); i++) {
    spit(fx.path, fx.file, lens[i]);
    char what[64];
    snprintf(what, sizeof what, "big file cut to %zu", lens[i]);
    EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, lens[i] >= 8 ? "truncated" : NULL, what);
  }
  fixture_free(&fx);
}

/* ---------------------------------------------------------------- mismatches */

static void test_mismatch(void) {
  fixture fx;
  fixture_make(&fx, "mismatch", 2, 16, 4);
  char other_dir[4400], other_path[4500];
  ks_block_header e = fx.h;

  /* another model looks in another directory: a plain miss */
  e.model_fingerprint = fx.h.model_fingerprint ^ 1;
  EXPECT_READ(fx.dir, &e, KS_ERR_IO, NULL, "another model's directory, empty");
  /* the file copied into the other model's directory */
  fp_dir(other_dir, sizeof other_dir, fx.dir, e.model_fingerprint);
  REQUIRE(mkdir(other_dir, 0755) == 0);
  snprintf(other_path, sizeof other_path, "%s/%016llx.kvb", other_dir,
           (unsigned long long)fx.h.hash);
  spit(other_path, fx.file, fx.n);
  EXPECT_READ(fx.dir, &e, KS_ERR_CACHE, "another model", "file copied to another model");

  e = fx.h;
  e.kv_dim = 17;
  EXPECT_READ(fx.dir, &e, KS_ERR_CACHE, "kv_dim", "another kv_dim");
  e = fx.h;
  e.n_layer = 3;
  EXPECT_READ(fx.dir, &e, KS_ERR_CACHE, "layers", "another n_layer");
  e = fx.h;
  e.block_size = 3;
  EXPECT_READ(fx.dir, &e, KS_ERR_CACHE, "positions", "another block size");
  e = fx.h;
  e.kv_format = 2;
  EXPECT_READ(fx.dir, &e, KS_ERR_CACHE, "format", "another K/V format asked for");

  /* a file in another K/V format (with a good checksum) */
  uint8_t *m = malloc(fx.n);
  REQUIRE(m);
  memcpy(m, fx.file, fx.n);
  put32(m + 12, 2);
  refresh_crc(m, fx.n);
  spit(fx.path, m, fx.n);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "format", "file in another K/V format");

  /* the file renamed to another block's name */
  e = fx.h;
  e.hash ^= 0x100;
  cache_file_path(other_path, sizeof other_path, fx.dir, e.model_fingerprint, e.hash);
  spit(other_path, fx.file, fx.n);
  EXPECT_READ(fx.dir, &e, KS_ERR_CACHE, "renamed", "file renamed to another hash");

  /* another file format altogether: wrong magic (checksum fixed up), version 0 */
  memcpy(m, fx.file, fx.n);
  memcpy(m, "GGUF", 4);
  refresh_crc(m, fx.n);
  spit(fx.path, m, fx.n);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "magic", "wrong magic");
  memcpy(m, fx.file, fx.n);
  put32(m + 4, 0);
  refresh_crc(m, fx.n);
  spit(fx.path, m, fx.n);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "version 0", "version 0");
  /* a directory where the file should be */
  REQUIRE(unlink(fx.path) == 0);
  REQUIRE(mkdir(fx.path, 0755) == 0);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "regular", "a directory in the file's place");
  REQUIRE(rmdir(fx.path) == 0);
  free(m);
  fixture_free(&fx);
}

static void test_newer(void) {
  fixture fx;
  fixture_make(&fx, "newer", 2, 16, 4);
  uint8_t *m = malloc(fx.n + 64);
  REQUIRE(m);
  memcpy(m, fx.file, fx.n);
  put32(m + 4, 2);
  refresh_crc(m, fx.n);
  spit(fx.path, m, fx.n);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "newer", "version 2");
  CHECK_MSG(strstr(ks_last_error(), "version 2"), "%s", ks_last_error());
  /* a newer format may have any layout past its version: even 8 bytes must say "newer" */
  memcpy(m, "KVSB", 4);
  put32(m + 4, 9);
  spit(fx.path, m, 8);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "newer", "8-byte version 9 file");
  CHECK_MSG(strstr(ks_last_error(), "version 9"), "%s", ks_last_error());
  for (size_t i = 8; i < fx.n + 64; i++) m[i] = (uint8_t)ks_randu();
  put32(m + 4, 0xFFFFFFFFu);
  spit(fx.path, m, fx.n + 64);
  EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, "newer", "version 2^32-1 with another layout");
  free(m);
  fixture_free(&fx);
}

static void test_missing(void) {
  char dir[4300];
  subdir(dir, sizeof dir, "missing");
  ks_block_header h = make_header(42, 43, 1, 4, 4);
  EXPECT_READ(dir, &h, KS_ERR_IO, "kvb", "empty cache directory");
  char gone[4400];
  snprintf(gone, sizeof gone, "%s/no/such/dir", dir);
  EXPECT_READ(gone, &h, KS_ERR_IO, "no/such/dir", "missing cache directory");
  CHECK(count_entries(dir, NULL) == 0); /* reading never creates anything */
}

/* ---------------------------------------------------------------- unwritable places */

static void check_write_fails(const char *dir, const char *needle, const char *what) {
  ks_block_header h = make_header(7, 8, 1, 4, 2);
  float *pl = make_payload(&h);
  ks_status st = cache_file_write(dir, &h, pl);
  CHECK_MSG(st == KS_ERR_IO, "%s: write gave %s", what, ks_status_name(st));
  CHECK_MSG(strstr(ks_last_error(), ".kvb"), "%s: message names no path: %s", what,
            ks_last_error());
  if (needle)
    CHECK_MSG(strstr(ks_last_error(), needle), "%s: message lacks '%s': %s", what, needle,
              ks_last_error());
  printf("  %s -> %s\n", what, ks_last_error());
  free(pl);
}

static void check_prepare_fails(const char *dir, const char *needle, const char *what) {
  ks_status st = cache_dir_prepare(dir);
  CHECK_MSG(st == KS_ERR_IO, "%s: prepare gave %s", what, ks_status_name(st));
  CHECK_MSG(strstr(ks_last_error(), "--cache-dir") && strstr(ks_last_error(), dir),
            "%s: message: %s", what, ks_last_error());
  if (needle)
    CHECK_MSG(strstr(ks_last_error(), needle), "%s: message lacks '%s': %s", what, needle,
              ks_last_error());
  printf("  %s -> %s\n", what, ks_last_error());
}

static void test_unwritable(void) {
  char dir[4300], p[4400];
  subdir(dir, sizeof dir, "unwritable");

  /* mkdir -p, then nothing left behind by the probe */
  snprintf(p, sizeof p, "%s/a/b//c/", dir);
  CHECK_MSG(cache_dir_prepare(p) == KS_OK, "%s", ks_last_error());
  snprintf(p, sizeof p, "%s/a/b/c", dir);
  int n_tmp;
  CHECK(count_entries(p, &n_tmp) == 0 && n_tmp == 0);
  CHECK(cache_dir_prepare(p) == KS_OK); /* again: it exists */
  CHECK(cache_dir_prepare("") == KS_ERR_ARG);

  /* a regular file where a directory should be (works as root, unlike permission bits) */
  char file[4800], under[4900];
  snprintf(file, sizeof file, "%s/plain_file", dir);
  spit(file, "x", 1);
  snprintf(under, sizeof under, "%s/sub", file);
  check_prepare_fails(under, "Not a directory", "cache dir under a regular file");
  check_prepare_fails(file, "Not a directory", "cache dir is a regular file");
  check_write_fails(under, "Not a directory", "write under a regular file");
  check_write_fails(file, "Not a directory", "write into a regular file");

  /* a kernel file system that takes no new files */
  struct stat st;
  if (stat("/proc/self", &st) == 0) {
    check_prepare_fails("/proc", NULL, "cache dir /proc");
    check_prepare_fails("/proc/kvscope-cache-test", NULL, "cache dir under /proc");
    check_write_fails("/proc", NULL, "write into /proc");
  } else {
    printf("  no /proc here: that case is not run\n");
  }

  /* permission bits, which bind only when not root */
  snprintf(p, sizeof p, "%s/readonly", dir);
  REQUIRE(mkdir(p, 0755) == 0 && chmod(p, 0555) == 0);
  if (access(p, W_OK) != 0) {
    check_prepare_fails(p, "Permission denied", "cache dir mode 0555");
    check_write_fails(p, "Permission denied", "write into mode 0555");
  } else {
    printf("  running as root: mode 0555 does not stop writes, so that case is not run\n");
  }
  chmod(p, 0755);

  /* rename fails (a directory holds the block's name): the temporary file goes away */
  snprintf(p, sizeof p, "%s/rename", dir);
  ks_block_header h = make_header(0x11, 0x22, 1, 4, 2);
  float *pl = make_payload(&h);
  char fdir[4500], path[4600];
  fp_dir(fdir, sizeof fdir, p, h.model_fingerprint);
  cache_file_path(path, sizeof path, p, h.model_fingerprint, h.hash);
  REQUIRE(cache_dir_prepare(fdir) == KS_OK && mkdir(path, 0755) == 0);
  snprintf(file, sizeof file, "%s/keep", path); /* non-empty, so no rename can replace it */
  spit(file, "x", 1);
  CHECK(cache_file_write(p, &h, pl) == KS_ERR_IO);
  CHECK_MSG(strstr(ks_last_error(), "rename"), "%s", ks_last_error());
  CHECK(count_entries(fdir, &n_tmp) == 1 && n_tmp == 0);
  free(pl);
}

/* ---------------------------------------------------------------- full disk */

static void test_disk_full(void) {
  char dir[4300], fdir[4400];
  subdir(dir, sizeof dir, "diskfull");
  ks_block_header h = make_header(0xd15cf011ull, 0x5, 2, 32, 16);
  size_t P = (size_t)cache_file_payload_bytes(&h);
  float *pl = make_payload(&h);
  fp_dir(fdir, sizeof fdir, dir, h.model_fingerprint);

  struct rlimit old;
  REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
  void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* write fails with EFBIG, not a kill */
  const size_t limits[] = {0, 100, 320, 320 + P / 2, 320 + P, 320 + P + 7};
  for (size_t i = 0; i < KS_ARRAY_LEN(limits); i++) {
    if (old.rlim_max != RLIM_INFINITY && limits[i] > old.rlim_max) continue;
    struct rlimit lim = {(rlim_t)limits[i], old.rlim_max};
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    ks_status st = cache_file_write(dir, &h, pl);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
    CHECK_MSG(st == KS_ERR_IO, "file size limit %zu: %s", limits[i], ks_status_name(st));
    CHECK_MSG(strstr(ks_last_error(), strerror(EFBIG)) && strstr(ks_last_error(), fdir),
              "limit %zu: %s", limits[i], ks_last_error());
    int n_tmp, n = count_entries(fdir, &n_tmp);
    CHECK_MSG(n == 0 && n_tmp == 0, "limit %zu: %d files left", limits[i], n);
  }
  struct rlimit lim = {320 + P + 8, old.rlim_max}; /* exactly enough */
  if (old.rlim_max == RLIM_INFINITY || lim.rlim_cur <= old.rlim_max) {
    REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    ks_status st = cache_file_write(dir, &h, pl);
    REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
    CHECK_MSG(st == KS_OK, "a limit of exactly the file's size: %s", ks_last_error());
  }
  printf("  disk full -> %s\n", ks_last_error());

  /* a failed rewrite leaves the good file that was there */
  REQUIRE(cache_file_write(dir, &h, pl) == KS_OK);
  float *pl2 = make_payload(&h);
  lim.rlim_cur = 320 + P / 2;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &lim) == 0);
  ks_status st = cache_file_write(dir, &h, pl2);
  REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
  CHECK(st == KS_ERR_IO);
  float *back = malloc(P);
  REQUIRE(back);
  CHECK(cache_file_read(dir, &h, NULL, back, P) == KS_OK && !memcmp(back, pl, P));
  int n_tmp;
  CHECK(count_entries(fdir, &n_tmp) == 1 && n_tmp == 0);
  signal(SIGXFSZ, old_handler);
  free(back);
  free(pl2);
  free(pl);
}

/* ---------------------------------------------------------------- concurrent writers */

/* Three processes rewrite one block with different payloads while this one reads it: every read
 * must be a miss (before the first rename) or a whole file from one writer, never damaged. */
static void test_concurrent(void) {
  char dir[4300], fdir[4400];
  subdir(dir, sizeof dir, "concurrent");
  ks_block_header h = make_header(0xc0c0, 0xbeef, 2, 256, 16);
  size_t P = (size_t)cache_file_payload_bytes(&h);
  float *pl = make_payload(&h);
  enum { N_WRITERS = 3, N_WRITES = 25 };
  pid_t kids[N_WRITERS];
  fflush(stdout);
  fflush(stderr);
  for (int k = 0; k < N_WRITERS; k++) {
    kids[k] = fork();
    REQUIRE(kids[k] >= 0);
    if (kids[k] == 0) {
      pl[0] = (float)k; /* which writer's file a reader saw */
      int bad = 0;
      for (int i = 0; i < N_WRITES; i++) bad += cache_file_write(dir, &h, pl) != KS_OK;
      _exit(bad ? 1 : 0);
    }
  }
  float *back = malloc(P);
  REQUIRE(back);
  int n_ok = 0, n_miss = 0, n_bad = 0, running = N_WRITERS;
  while (running > 0) {
    ks_status st = cache_file_read(dir, &h, NULL, back, P);
    if (st == KS_ERR_IO) n_miss++;
    else if (st == KS_OK && back[0] >= 0 && back[0] < N_WRITERS && back[0] == (int)back[0] &&
             !memcmp(back + 1, pl + 1, P - 4))
      n_ok++;
    else {
      n_bad++;
      fprintf(stderr, "  torn read: %s\n", st ? ks_last_error() : "ok with other content");
    }
    int wst;
    while (waitpid(-1, &wst, WNOHANG) > 0) {
      running--;
      CHECK_MSG(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "a writer failed");
    }
  }
  printf("  concurrent: %d whole reads, %d misses, %d torn\n", n_ok, n_miss, n_bad);
  CHECK(n_bad == 0);
  CHECK(cache_file_read(dir, &h, NULL, back, P) == KS_OK);
  int n_tmp;
  fp_dir(fdir, sizeof fdir, dir, h.model_fingerprint);
  CHECK(count_entries(fdir, &n_tmp) == 1 && n_tmp == 0);
  free(back);
  free(pl);
}

/* ---------------------------------------------------------------- fuzz */

static void test_fuzz(void) {
  fixture fx;
  fixture_make(&fx, "fuzz", 2, 24, 16);
  const size_t cap = fx.n * 2 + 64;
  uint8_t *m = malloc(cap);
  REQUIRE(m);
  int by_mode[7] = {0}, accepted = 0;
  static const uint32_t interesting[] = {0, 1, 2, 16, 63, 64, 65, 320, 0x7FFFFFFF, 0x80000000u,
                                         0xFFFFFFFFu};
  for (int it = 0; it < 500; it++) {
    int mode = (int)(ks_randu() % 7);
    size_t len = fx.n;
    memcpy(m, fx.file, fx.n);
    switch (mode) {
    case 0: { /* 1..8 bytes changed anywhere */
      int k = 1 + (int)(ks_randu() % 8);
      for (int j = 0; j < k; j++) m[ks_randu() % len] ^= (uint8_t)(1 + ks_randu() % 255);
      break;
    }
    case 1: len = ks_randu() % fx.n; break; /* truncated */
    case 2: { /* bytes appended */
      size_t k = 1 + ks_randu() % 64;
      for (size_t j = 0; j < k; j++) m[len + j] = (uint8_t)ks_randu();
      len += k;
      break;
    }
    case 3: { /* a header field set to an edge value, checksum made good again: only the
               * reader's own checks stand (parent hash and tokens excluded: those may be
               * anything) */
      size_t off;
      do off = 4 * (ks_randu() % 16);
      while (off >= 32 && off < 40);
      uint32_t v = ks_randu() % 2 ? interesting[ks_randu() % KS_ARRAY_LEN(interesting)]
                                  : ks_randu();
      put32(m + off, v);
      refresh_crc(m, len);
      break;
    }
    case 4: { /* a burst of random bytes */
      size_t k = 1 + ks_randu() % 256, at = ks_randu() % len;
      for (size_t j = 0; j < k && at + j < len; j++) m[at + j] = (uint8_t)ks_randu();
      break;
    }
    case 5: { /* random bytes behind a good magic and version, of any length */
      len = ks_randu() % (fx.n * 2);
      for (size_t j = 0; j < len; j++) m[j] = (uint8_t)ks_randu();
      if (len >= 8) memcpy(m, fx.file, 8);
      break;
    }
    case 6: { /* an unused token slot set, checksum made good again */
      size_t slot = fx.h.block_size + ks_randu() % (64 - fx.h.block_size);
      put32(m + 64 + 4 * slot, 1 + ks_randu() % 1000);
      refresh_crc(m, len);
      break;
    }
    }
    if (len == fx.n && !memcmp(m, fx.file, len)) { /* the mutation undid itself: try again */
      it--;
      continue;
    }
    by_mode[mode]++;
    spit(fx.path, m, len);
    char what[64];
    snprintf(what, sizeof what, "fuzz %d (mode %d, %zu bytes)", it, mode, len);
    ks_status st = EXPECT_READ(fx.dir, &fx.h, KS_ERR_CACHE, NULL, what);
    accepted += st == KS_OK;
  }
  printf("  fuzz: 500 mutated files (by mode %d %d %d %d %d %d %d), %d read back as good\n",
         by_mode[0], by_mode[1], by_mode[2], by_mode[3], by_mode[4], by_mode[5], by_mode[6],
         accepted);
  fixture_restore(&fx);
  EXPECT_READ(fx.dir, &fx.h, KS_OK, NULL, "the unmutated file after the fuzz");
  free(m);
  fixture_free(&fx);
}

/* ---------------------------------------------------------------- a 7B-sized block */

static void test_speed(void) {
  char dir[4300];
  subdir(dir, sizeof dir, "speed");
  ks_block_header h = make_header(0x7b7b, 0x16, 32, 4096, 16); /* Llama-2 7B, 16 positions */
  size_t P = (size_t)cache_file_payload_bytes(&h);
  CHECK(P == 16u << 20);
  float *pl = make_payload(&h), *back = malloc(P);
  REQUIRE(back);
  double t0 = ks_now_sec();
  uint64_t c = 0;
  for (int i = 0; i < 4; i++) c ^= cache_file_crc64(c, pl, P);
  double t_crc = (ks_now_sec() - t0) / 4;
  t0 = ks_now_sec();
  CHECK(cache_file_write(dir, &h, pl) == KS_OK);
  double t_write = ks_now_sec() - t0;
  t0 = ks_now_sec();
  CHECK(cache_file_read(dir, &h, NULL, back, P) == KS_OK);
  double t_read = ks_now_sec() - t0;
  CHECK(!memcmp(back, pl, P));
  printf("  16 MiB block: checksum %.1f ms (%.2f GB/s), write+fsync %.1f ms, read+verify %.1f ms "
         "(crc %016llx)\n", t_crc * 1e3, P / t_crc / 1e9, t_write * 1e3, t_read * 1e3,
         (unsigned long long)c);
  free(back);
  free(pl);
}

int main(void) {
  ks_test_seed();
  snprintf(g_dir, sizeof g_dir, "%s", ks_test_tmpdir("test_cache_file"));
  test_crc();
  test_layout();
  test_roundtrip();
  test_corrupt();
  test_truncate();
  test_mismatch();
  test_newer();
  test_missing();
  test_unwritable();
  test_disk_full();
  test_concurrent();
  test_fuzz();
  test_speed();
  return ks_test_done("test_cache_file");
}
