/* cache_file.c — one K/V block of the prompt cache as a file under --cache-dir: the byte format
 * below, an atomic writer, a reader that trusts nothing in the file, and the directory check.
 * What it is not: the index of which blocks exist or are wanted (prefix_cache.c), the GPU side of
 * loading them (forward.c), or a cache eviction policy for the directory.
 *
 * File format, version 1. Integers are little-endian; offsets in bytes.
 *
 *     0    4  magic "KVSB"
 *     4    4  u32 format version = 1. Read right after the magic and before anything else, so a
 *             file from a newer kvscope is reported as such even if the rest of its layout changed.
 *     8    4  u32 header bytes = 320 (the payload's offset)
 *    12    4  u32 kv_format (KS_KV_FORMAT_*)
 *    16    8  u64 model fingerprint; the engine mixes in gpu_numerics_id (device, driver,
 *             kernel version), so rows from another GPU are never mixed in (also the name of
 *             the file's directory)
 *    24    8  u64 chain hash of the prefix ending with this block (also the file's name)
 *    32    8  u64 parent chain hash (the prefix before this block)
 *    40    8  u64 payload bytes = 2 * n_layer * block_size * kv_dim * 4 for F32
 *    48    4  u32 n_layer      (1 .. KS_CF_MAX_LAYERS)
 *    52    4  u32 kv_dim       (1 .. KS_CF_MAX_KV_DIM)
 *    56    4  u32 block_size   (1 .. 64)
 *    60    4  u32 reserved = 0
 *    64  256  i32 tokens[64]: block_size token ids (>= 0), the unused slots 0
 *   320    P  payload, layer-major: layer 0 K rows (block_size, kv_dim), layer 0 V rows, layer 1 K
 *             rows, ... as little-endian f32 (the host's own layout: see the static assert)
 * 320+P    8  u64 CRC-64/XZ of bytes [0, 320+P)
 *
 * A file's size is exactly 328 + P; anything else is truncated or damaged.
 *
 * Why CRC-64 rather than a multiplicative hash such as FNV-1a: a CRC of degree 64 detects every
 * error burst of up to 64 bits for certain (any damaged byte, any run of up to 8 damaged bytes),
 * and anything else with probability 1 - 2^-64; FNV over words lets two flips of the top bit of
 * two words cancel. Computed 8 bytes at a time with 8 tables (slice-by-8) over four quarters of
 * the data at once, it runs at several GB/s: a 16 MiB block of a 7B model costs a few
 * milliseconds, well below writing or reading it. CRC-64/XZ (the
 * ECMA-182 polynomial, reflected, initial value and final xor all ones) has a published check
 * value, which the test uses. */
#include "cache_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cache_file.c stores f32 payloads in host order, which the format fixes as little-endian"
#endif

#define KS_CF_VERSION 1u
#define KS_CF_HEADER_BYTES 320u
#define KS_CF_TRAILER_BYTES 8u
#define KS_CF_MAX_TOKENS 64u
#define KS_CF_MAX_LAYERS 1024u
#define KS_CF_MAX_KV_DIM 65536u
/* The largest sane block: a 16-position block of a 7B model is 16 MiB, of a 65B one 320 MiB. */
#define KS_CF_MAX_PAYLOAD (1ull << 30)
/* Reads go through the checksum in slices this big, so each slice is summed while still in cache. */
#define KS_CF_READ_SLICE (1u << 20)

_Static_assert(sizeof(float) == 4, "the payload is f32");
_Static_assert(KS_CF_HEADER_BYTES == 64 + 4 * KS_CF_MAX_TOKENS, "tokens fill the header's tail");
_Static_assert(KS_ARRAY_LEN(((ks_block_header *)0)->tokens) == KS_CF_MAX_TOKENS,
               "ks_block_header.tokens has one slot per position of the largest block");

/* ---------------------------------------------------------------- CRC-64/XZ, slice-by-8 */

#define KS_CRC64_POLY 0xC96C5795D7870F42ull /* ECMA-182, bit-reversed */

static uint64_t g_crc_table[8][256];
static pthread_once_t g_crc_once = PTHREAD_ONCE_INIT;

static void crc_tables_init(void) {
  for (uint32_t b = 0; b < 256; b++) {
    uint64_t c = b;
    for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ KS_CRC64_POLY : c >> 1;
    g_crc_table[0][b] = c;
  }
  /* table[k][b]: the CRC contribution of byte b followed by k zero bytes */
  for (int k = 1; k < 8; k++)
    for (uint32_t b = 0; b < 256; b++) {
      uint64_t prev = g_crc_table[k - 1][b];
      g_crc_table[k][b] = (prev >> 8) ^ g_crc_table[0][prev & 0xff];
    }
}

/* One step of the byte-at-a-time loop, on 8 bytes at once: the register xor the next 8 bytes,
 * each byte's contribution looked up for its distance from the end. */
static inline uint64_t crc_step8(const uint64_t (*t)[256], uint64_t r, const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  r ^= w;
  return t[7][r & 0xff] ^ t[6][(r >> 8) & 0xff] ^ t[5][(r >> 16) & 0xff] ^ t[4][(r >> 24) & 0xff] ^
         t[3][(r >> 32) & 0xff] ^ t[2][(r >> 40) & 0xff] ^ t[1][(r >> 48) & 0xff] ^ t[0][r >> 56];
}

/* Polynomials mod the CRC polynomial in the register's bit order: bit i is the coefficient of
 * x^(63-i), so multiplying by x is one right shift (and a reduction when x^63 overflows). */
static uint64_t gf2_mul_mod(uint64_t a, uint64_t b) {
  uint64_t r = 0;
  for (int k = 0; k < 64; k++) { /* Horner, from b's x^63 coefficient (bit 0) down to x^0 */
    r = (r & 1) ? (r >> 1) ^ KS_CRC64_POLY : r >> 1;
    if ((b >> k) & 1) r ^= a;
  }
  return r;
}

/* x^(8 n) mod P: what n zero bytes multiply a register by. */
static uint64_t gf2_x_pow_bytes(uint64_t n) {
  uint64_t result = 1ull << 63, base = 1ull << (63 - 8); /* x^0, x^8 */
  for (; n; n >>= 1) {
    if (n & 1) result = gf2_mul_mod(result, base);
    base = gf2_mul_mod(base, base);
  }
  return result;
}

/* Below this the lanes' setup is not worth it. */
#define KS_CRC_LANES_MIN 1024u

uint64_t cache_file_crc64(uint64_t crc, const void *data, size_t n) {
  pthread_once(&g_crc_once, crc_tables_init);
  const uint8_t *p = data;
  const uint64_t(*t)[256] = (const uint64_t(*)[256])g_crc_table;
  uint64_t r = ~crc; /* the register; inverting in and out makes calls chain */
  /* Each 8-byte step waits for the one before (its table indices come from the register), so one
   * stream is bound by load latency. Four independent quarters keep four chains in flight, about
   * 3x faster. The CRC is linear, so the register after quarter k then quarter k+1 is quarter
   * k's register pushed through len zero bytes (times x^(8 len)) xor quarter k+1's CRC from 0. */
  if (n >= KS_CRC_LANES_MIN) {
    size_t len = (n / 4) & ~(size_t)7;
    const uint8_t *q1 = p + len, *q2 = q1 + len, *q3 = q2 + len;
    uint64_t r1 = 0, r2 = 0, r3 = 0;
    for (size_t i = 0; i < len; i += 8) {
      r = crc_step8(t, r, p + i);
      r1 = crc_step8(t, r1, q1 + i);
      r2 = crc_step8(t, r2, q2 + i);
      r3 = crc_step8(t, r3, q3 + i);
    }
    uint64_t shift = gf2_x_pow_bytes(len);
    r = gf2_mul_mod(r, shift) ^ r1;
    r = gf2_mul_mod(r, shift) ^ r2;
    r = gf2_mul_mod(r, shift) ^ r3;
    p += 4 * len;
    n -= 4 * len;
  }
  for (; n >= 8; p += 8, n -= 8) r = crc_step8(t, r, p);
  while (n--) r = t[0][(r ^ *p++) & 0xff] ^ (r >> 8);
  return ~r;
}

/* ---------------------------------------------------------------- header encoding */

static void put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static uint32_t kv_format_elem_bytes(uint32_t kv_format) {
  return kv_format == KS_KV_FORMAT_F32 ? 4u : 0u;
}

uint64_t cache_file_payload_bytes(const ks_block_header *h) {
  return 2ull * h->n_layer * h->block_size * h->kv_dim * kv_format_elem_bytes(h->kv_format);
}

/* Checks the fields both sides rely on; writes what is wrong into why. 0 when sane. */
static int header_check(const ks_block_header *h, char *why, size_t cap) {
  if (kv_format_elem_bytes(h->kv_format) == 0)
    snprintf(why, cap, "unknown K/V format %u", h->kv_format);
  else if (h->block_size < 1 || h->block_size > KS_CF_MAX_TOKENS)
    snprintf(why, cap, "block_size %u (must be 1..%u)", h->block_size, KS_CF_MAX_TOKENS);
  else if (h->n_layer < 1 || h->n_layer > KS_CF_MAX_LAYERS)
    snprintf(why, cap, "n_layer %u (must be 1..%u)", h->n_layer, KS_CF_MAX_LAYERS);
  else if (h->kv_dim < 1 || h->kv_dim > KS_CF_MAX_KV_DIM)
    snprintf(why, cap, "kv_dim %u (must be 1..%u)", h->kv_dim, KS_CF_MAX_KV_DIM);
  else if (cache_file_payload_bytes(h) > KS_CF_MAX_PAYLOAD)
    snprintf(why, cap, "a payload of %llu bytes (more than %llu)",
             (unsigned long long)cache_file_payload_bytes(h), (unsigned long long)KS_CF_MAX_PAYLOAD);
  else {
    for (uint32_t i = 0; i < h->block_size; i++)
      if (h->tokens[i] < 0) {
        snprintf(why, cap, "token %u is %d (token ids are >= 0)", i, (int)h->tokens[i]);
        return 1;
      }
    return 0;
  }
  return 1;
}

static void header_encode(uint8_t out[KS_CF_HEADER_BYTES], const ks_block_header *h) {
  memset(out, 0, KS_CF_HEADER_BYTES);
  memcpy(out, "KVSB", 4);
  put_u32(out + 4, KS_CF_VERSION);
  put_u32(out + 8, KS_CF_HEADER_BYTES);
  put_u32(out + 12, h->kv_format);
  put_u64(out + 16, h->model_fingerprint);
  put_u64(out + 24, h->hash);
  put_u64(out + 32, h->parent_hash);
  put_u64(out + 40, cache_file_payload_bytes(h));
  put_u32(out + 48, h->n_layer);
  put_u32(out + 52, h->kv_dim);
  put_u32(out + 56, h->block_size);
  /* slots past block_size stay 0 whatever the caller left in them, so equal blocks give equal
   * files */
  for (uint32_t i = 0; i < h->block_size; i++) put_u32(out + 64 + 4 * i, (uint32_t)h->tokens[i]);
}

/* Decodes a version-1 header; 0 when its own fields are consistent, else why says what is not. */
static int header_decode(const uint8_t in[KS_CF_HEADER_BYTES], ks_block_header *h, char *why,
                         size_t cap) {
  memset(h, 0, sizeof *h);
  uint32_t header_bytes = get_u32(in + 8);
  h->kv_format = get_u32(in + 12);
  h->model_fingerprint = get_u64(in + 16);
  h->hash = get_u64(in + 24);
  h->parent_hash = get_u64(in + 32);
  uint64_t payload = get_u64(in + 40);
  h->n_layer = get_u32(in + 48);
  h->kv_dim = get_u32(in + 52);
  h->block_size = get_u32(in + 56);
  uint32_t reserved = get_u32(in + 60);
  for (uint32_t i = 0; i < KS_CF_MAX_TOKENS; i++) h->tokens[i] = (int32_t)get_u32(in + 64 + 4 * i);
  if (header_bytes != KS_CF_HEADER_BYTES) {
    snprintf(why, cap, "header size %u (version 1 has %u)", header_bytes, KS_CF_HEADER_BYTES);
    return 1;
  }
  if (reserved != 0) {
    snprintf(why, cap, "reserved field is %u, not 0", reserved);
    return 1;
  }
  if (header_check(h, why, cap)) return 1;
  if (payload != cache_file_payload_bytes(h)) {
    snprintf(why, cap, "payload size %llu, the shape needs %llu", (unsigned long long)payload,
             (unsigned long long)cache_file_payload_bytes(h));
    return 1;
  }
  for (uint32_t i = h->block_size; i < KS_CF_MAX_TOKENS; i++)
    if (h->tokens[i] != 0) {
      snprintf(why, cap, "unused token slot %u is %d, not 0", i, (int)h->tokens[i]);
      return 1;
    }
  return 0;
}

/* ---------------------------------------------------------------- paths */

/* DIR joined with a relative name, without doubling a trailing slash of DIR. 0 if it fits. */
static int path_join(char *buf, size_t cap, const char *dir, const char *rel) {
  size_t dl = strlen(dir);
  const char *sep = dl > 0 && dir[dl - 1] == '/' ? "" : "/";
  int n = snprintf(buf, cap, "%s%s%s", dir, sep, rel);
  return n < 0 || (size_t)n >= cap;
}

void cache_file_path(char *buf, size_t cap, const char *dir, uint64_t fingerprint, uint64_t hash) {
  char rel[64];
  snprintf(rel, sizeof rel, "%016llx/%016llx.kvb", (unsigned long long)fingerprint,
           (unsigned long long)hash);
  if (cap > 0 && path_join(buf, cap, dir, rel)) buf[0] = 0; /* never a truncated, wrong path */
}

/* strncpy without its traps: always terminated, never warns about cutting a message's path. */
static void copy_str(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = 0;
}

/* mkdir -p. On failure returns -1 with errno set and the directory that failed in bad. */
static int make_dirs(const char *path, char *bad, size_t bad_cap) {
  char b[PATH_MAX];
  size_t n = strlen(path);
  if (n >= sizeof b) {
    copy_str(bad, bad_cap, path);
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(b, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (b[i] != '/' && b[i] != 0) continue;
    if (b[i - 1] == '/') continue; /* "a//b" or a trailing slash: nothing new to create */
    char c = b[i];
    b[i] = 0;
    if (mkdir(b, 0755) != 0) {
      int e = errno;
      struct stat st;
      /* EEXIST, but also EROFS or EACCES on a directory that already exists: only a missing or
       * non-directory component is a failure */
      if (stat(b, &st) != 0 || !S_ISDIR(st.st_mode)) {
        copy_str(bad, bad_cap, b);
        errno = (e == EEXIST) ? ENOTDIR : e;
        return -1;
      }
    }
    b[i] = c;
  }
  return 0;
}

/* Temp names are unique across processes (pid) and threads (counter), so concurrent writers of
 * the same block never share a temp file; the last rename wins, and both wrote the same bytes. */
static atomic_uint g_tmp_counter;

/* ---------------------------------------------------------------- I/O helpers */

static int write_all(int fd, const void *data, size_t n) {
  const uint8_t *p = data;
  while (n > 0) {
    ssize_t w = write(fd, p, n < (1u << 30) ? n : (1u << 30));
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (w == 0) { /* no progress and no error: do not spin */
      errno = EIO;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Reads up to n bytes at off; returns the count (short only at end of file) or -1. */
static ssize_t read_at(int fd, void *data, size_t n, off_t off) {
  uint8_t *p = data;
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

/* ---------------------------------------------------------------- directory */

ks_status cache_dir_prepare(const char *dir) {
  if (!dir || !dir[0])
    return ks_fail(KS_ERR_ARG, "--cache-dir needs a directory path (it was empty)");
  char bad[PATH_MAX];
  if (make_dirs(dir, bad, sizeof bad) != 0) {
    int e = errno;
    return ks_fail(KS_ERR_IO, "--cache-dir %s cannot be created: '%s': %s; choose a directory you "
                   "can write to", dir, bad, strerror(e));
  }
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return ks_fail(KS_ERR_IO, "--cache-dir %s is not a directory", dir);
  char probe[PATH_MAX], rel[64];
  snprintf(rel, sizeof rel, ".kvscope-probe.%ld.%u", (long)getpid(),
           atomic_fetch_add(&g_tmp_counter, 1));
  if (path_join(probe, sizeof probe, dir, rel))
    return ks_fail(KS_ERR_ARG, "--cache-dir %s: the path is too long", dir);
  int fd;
  do fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int e = errno;
    return ks_fail(KS_ERR_IO, "--cache-dir %s is not writable: %s; choose a directory you can "
                   "write to", dir, strerror(e));
  }
  close(fd);
  if (unlink(probe) != 0) {
    int e = errno;
    return ks_fail(KS_ERR_IO, "--cache-dir %s: cannot remove the probe file '%s': %s", dir, probe,
                   strerror(e));
  }
  return KS_OK;
}

/* ---------------------------------------------------------------- write */

ks_status cache_file_write(const char *dir, const ks_block_header *h, const void *payload) {
  if (!dir || !h || !payload)
    return ks_fail(KS_ERR_ARG, "cache_file_write: dir, header and payload are required");
  char why[160];
  if (header_check(h, why, sizeof why))
    return ks_fail(KS_ERR_ARG, "cannot write a prompt cache block with %s", why);

  char sub[PATH_MAX], rel[32], path[PATH_MAX], tmp[PATH_MAX + 64];
  snprintf(rel, sizeof rel, "%016llx", (unsigned long long)h->model_fingerprint);
  if (path_join(sub, sizeof sub, dir, rel))
    return ks_fail(KS_ERR_ARG, "--cache-dir %s: the path is too long", dir);
  cache_file_path(path, sizeof path, dir, h->model_fingerprint, h->hash);
  if (!path[0]) return ks_fail(KS_ERR_ARG, "--cache-dir %s: the path is too long", dir);
  char bad[PATH_MAX];
  if (make_dirs(sub, bad, sizeof bad) != 0) {
    int e = errno;
    return ks_fail(KS_ERR_IO, "cannot write prompt cache file '%s': cannot create directory "
                   "'%s': %s", path, bad, strerror(e));
  }
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%u", path, (long)getpid(),
           atomic_fetch_add(&g_tmp_counter, 1));

  uint8_t hdr[KS_CF_HEADER_BYTES], tail[KS_CF_TRAILER_BYTES];
  header_encode(hdr, h);
  uint64_t n_payload = cache_file_payload_bytes(h);
  uint64_t crc = cache_file_crc64(0, hdr, sizeof hdr);
  crc = cache_file_crc64(crc, payload, (size_t)n_payload);
  put_u64(tail, crc);

  int fd;
  do fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int e = errno;
    return ks_fail(KS_ERR_IO, "cannot write prompt cache file '%s': cannot create '%s': %s", path,
                   tmp, strerror(e));
  }
  const char *step = "write";
  int rc = write_all(fd, hdr, sizeof hdr);
  if (rc == 0) rc = write_all(fd, payload, (size_t)n_payload);
  if (rc == 0) rc = write_all(fd, tail, sizeof tail);
  if (rc == 0) {
    step = "fsync";
    do rc = fsync(fd);
    while (rc != 0 && errno == EINTR);
  }
  int e = errno;
  /* close can report a delayed write error (NFS); after EINTR the descriptor is gone on Linux */
  if (close(fd) != 0 && rc == 0 && errno != EINTR) {
    rc = -1;
    e = errno;
    step = "close";
  }
  if (rc == 0) {
    step = "rename";
    rc = rename(tmp, path);
    e = errno;
  }
  if (rc != 0) {
    unlink(tmp);
    return ks_fail(KS_ERR_IO, "cannot write prompt cache file '%s' (%s failed): %s; the block is "
                   "not kept on disk (check free space and permissions of --cache-dir)", path,
                   step, strerror(e));
  }
  /* No fsync of the directory: a rename lost to a crash only turns a later hit into a miss. */
  return KS_OK;
}

/* ---------------------------------------------------------------- read */

static ks_status read_open_file(int fd, const char *path, const ks_block_header *expect,
                                ks_block_header *got, uint8_t *payload, size_t payload_cap,
                                size_t *payload_touched) {
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    return ks_fail(KS_ERR_IO, "cannot stat prompt cache file '%s': %s", path, strerror(e));
  }
  if (!S_ISREG(st.st_mode))
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' is not a regular file; ignoring it", path);
  uint64_t size = (uint64_t)st.st_size;
  const uint64_t min_size = KS_CF_HEADER_BYTES + KS_CF_TRAILER_BYTES;

  uint8_t hdr[KS_CF_HEADER_BYTES] = {0};
  size_t head = size < sizeof hdr ? (size_t)size : sizeof hdr;
  ssize_t r = read_at(fd, hdr, head, 0);
  if (r < 0) {
    int e = errno;
    return ks_fail(KS_ERR_IO, "cannot read prompt cache file '%s': %s", path, strerror(e));
  }
  if ((size_t)r < head)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' shrank while being read; ignoring it",
                   path);
  if (size >= 4 && memcmp(hdr, "KVSB", 4) != 0)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' is not a kvscope cache block (bad "
                   "magic); ignoring it", path);
  if (size < 8)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' is truncated (%llu bytes, a block has "
                   "at least %llu); ignoring it", path, (unsigned long long)size,
                   (unsigned long long)min_size);
  uint32_t version = get_u32(hdr + 4);
  if (version > KS_CF_VERSION)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' was written by a newer kvscope (format "
                   "version %u; this one reads version %u); ignoring it (upgrade kvscope or use "
                   "another --cache-dir)", path, version, KS_CF_VERSION);
  if (version < 1)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' is corrupt (format version 0); ignoring "
                   "it", path);
  if (size < min_size)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' is truncated (%llu bytes, a block has "
                   "at least %llu); ignoring it", path, (unsigned long long)size,
                   (unsigned long long)min_size);

  ks_block_header fh;
  char why[160];
  if (header_decode(hdr, &fh, why, sizeof why))
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' has a corrupt header (%s); ignoring it",
                   path, why);
  if (fh.kv_format != expect->kv_format)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' holds K/V format %u, this run uses %u; "
                   "ignoring it", path, fh.kv_format, expect->kv_format);
  if (fh.n_layer != expect->n_layer || fh.kv_dim != expect->kv_dim ||
      fh.block_size != expect->block_size)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' holds a block of %u layers x %u "
                   "positions x kv_dim %u, this run needs %u x %u x %u; ignoring it", path,
                   fh.n_layer, fh.block_size, fh.kv_dim, expect->n_layer, expect->block_size,
                   expect->kv_dim);
  uint64_t n_payload = cache_file_payload_bytes(&fh);
  uint64_t want = KS_CF_HEADER_BYTES + n_payload + KS_CF_TRAILER_BYTES;
  if (size < want)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' is truncated (%llu of %llu bytes); "
                   "ignoring it", path, (unsigned long long)size, (unsigned long long)want);
  if (size > want)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' has %llu bytes past its end (%llu "
                   "bytes, the header says %llu); ignoring it", path,
                   (unsigned long long)(size - want), (unsigned long long)size,
                   (unsigned long long)want);
  if (payload_cap < n_payload)
    return ks_fail(KS_ERR_ARG, "cache_file_read: payload buffer of %zu bytes, the block needs "
                   "%llu", payload_cap, (unsigned long long)n_payload);

  uint64_t crc = cache_file_crc64(0, hdr, sizeof hdr);
  for (uint64_t done = 0; done < n_payload;) {
    size_t k = (size_t)KS_MIN((uint64_t)KS_CF_READ_SLICE, n_payload - done);
    *payload_touched = (size_t)(done + k);
    r = read_at(fd, payload + done, k, (off_t)(KS_CF_HEADER_BYTES + done));
    if (r < 0) {
      int e = errno;
      return ks_fail(KS_ERR_IO, "cannot read prompt cache file '%s': %s", path, strerror(e));
    }
    if ((size_t)r < k)
      return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' shrank while being read; ignoring it",
                     path);
    crc = cache_file_crc64(crc, payload + done, k);
    done += k;
  }
  uint8_t tail[KS_CF_TRAILER_BYTES];
  r = read_at(fd, tail, sizeof tail, (off_t)(KS_CF_HEADER_BYTES + n_payload));
  if (r < 0) {
    int e = errno;
    return ks_fail(KS_ERR_IO, "cannot read prompt cache file '%s': %s", path, strerror(e));
  }
  if ((size_t)r < sizeof tail)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' shrank while being read; ignoring it",
                   path);
  if (get_u64(tail) != crc)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' is corrupt (checksum %016llx, the "
                   "content sums to %016llx); ignoring it", path,
                   (unsigned long long)get_u64(tail), (unsigned long long)crc);
  /* Identity last: with the checksum good, a mismatch is a real file put in the wrong place, not
   * damage, and the message can say so. */
  if (fh.model_fingerprint != expect->model_fingerprint)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' belongs to another model or GPU "
                   "(fingerprint %016llx, this one's is %016llx): it was copied or moved; "
                   "ignoring it", path,
                   (unsigned long long)fh.model_fingerprint,
                   (unsigned long long)expect->model_fingerprint);
  if (fh.hash != expect->hash)
    return ks_fail(KS_ERR_CACHE, "prompt cache file '%s' holds block %016llx, not %016llx: it was "
                   "renamed; ignoring it", path, (unsigned long long)fh.hash,
                   (unsigned long long)expect->hash);
  if (got) *got = fh;
  return KS_OK;
}

ks_status cache_file_read(const char *dir, const ks_block_header *expect, ks_block_header *got,
                          void *payload, size_t payload_cap) {
  if (!dir || !expect || (!payload && payload_cap))
    return ks_fail(KS_ERR_ARG, "cache_file_read: dir and expected header are required");
  char path[PATH_MAX];
  cache_file_path(path, sizeof path, dir, expect->model_fingerprint, expect->hash);
  if (!path[0]) return ks_fail(KS_ERR_ARG, "--cache-dir %s: the path is too long", dir);
  int fd;
  do fd = open(path, O_RDONLY | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int e = errno;
    if (e == ENOENT) return ks_fail(KS_ERR_IO, "no prompt cache file '%s'", path);
    return ks_fail(KS_ERR_IO, "cannot open prompt cache file '%s': %s", path, strerror(e));
  }
  size_t touched = 0;
  ks_status st = read_open_file(fd, path, expect, got, payload, payload_cap, &touched);
  close(fd);
  /* a payload that failed the checksum (or was cut short) must not look like data */
  if (st != KS_OK && touched) memset(payload, 0, touched);
  return st;
}
