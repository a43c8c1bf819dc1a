/* fuzz_cache_file.c — libFuzzer target for the prompt-cache block reader (cache_file_read). The
 * input is the file found where the reader looks for block KS_FUZZ_CACHE_HASH of model
 * KS_FUZZ_CACHE_FP (2 layers, kv_dim 8, 16 positions, F32). Each input is read twice: as it is,
 * and with its last 8 bytes replaced by the CRC-64 of the rest, so that fuzzing also gets past
 * the checksum to the identity checks behind it. Properties beyond "no crash, no sanitizer
 * report": the file exists, so the answer is KS_OK or KS_ERR_CACHE (never a silent miss) and a
 * failure has a message; after a failure the payload buffer holds no byte of the file (it was
 * zeroed before the call); a block that is accepted is the one asked for (fingerprint, format,
 * shape, hash), its token ids are >= 0, and its payload is the file's bytes at the payload
 * offset. Depth: 1 a block was accepted. */
#include <sys/stat.h>

#include "cache_file.h"
#include "fuzz.h"

const int ks_fuzz_full = 1;

#define HEADER_BYTES 320u /* cache_file.c's version-1 layout: header, payload, u64 CRC */

static char g_dir[256], g_path[1024];

static void remove_files(void) {
  if (!g_path[0]) return;
  unlink(g_path);
  char sub[512];
  snprintf(sub, sizeof sub, "%s/%016llx", g_dir, (unsigned long long)KS_FUZZ_CACHE_FP);
  rmdir(sub);
  rmdir(g_dir);
}

static void setup(const ks_block_header *expect) {
  if (g_path[0]) return;
  struct stat sb;
  const char *base = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
  snprintf(g_dir, sizeof g_dir, "%s/kvscope-fuzz-cache-%d", base, (int)getpid());
  mkdir(g_dir, 0700);
  char sub[512];
  snprintf(sub, sizeof sub, "%s/%016llx", g_dir, (unsigned long long)KS_FUZZ_CACHE_FP);
  mkdir(sub, 0700);
  cache_file_path(g_path, sizeof g_path, g_dir, expect->model_fingerprint, expect->hash);
  KS_FUZZ_CHECK(g_path[0], "cache_file_path gave no path");
  atexit(remove_files);
}

static int read_once(const ks_block_header *expect, const uint8_t *data, size_t size) {
  FILE *f = fopen(g_path, "wb");
  KS_FUZZ_CHECK(f && fwrite(data, 1, size, f) == size && fclose(f) == 0, "cannot write %s", g_path);
  const size_t cap = (size_t)cache_file_payload_bytes(expect);
  uint8_t *payload = calloc(1, cap);
  KS_FUZZ_CHECK(payload, "out of memory");
  ks_block_header got;
  memset(&got, 0xA5, sizeof got);
  ks_fuzz_clear_error();
  ks_status st = cache_file_read(g_dir, expect, &got, payload, cap);
  int ok = st == KS_OK;
  if (!ok) {
    KS_FUZZ_CHECK(st == KS_ERR_CACHE, "an existing file gave %s: %s", ks_status_name(st),
                  ks_last_error());
    ks_fuzz_check_failure(st, "cache_file_read");
    for (size_t i = 0; i < cap; i++)
      KS_FUZZ_CHECK(payload[i] == 0, "payload byte %zu kept file data after a failed read", i);
  } else {
    KS_FUZZ_CHECK(got.model_fingerprint == expect->model_fingerprint &&
                      got.kv_format == expect->kv_format && got.n_layer == expect->n_layer &&
                      got.kv_dim == expect->kv_dim && got.block_size == expect->block_size &&
                      got.hash == expect->hash,
                  "accepted a block other than the one asked for");
    for (uint32_t i = 0; i < got.block_size; i++)
      KS_FUZZ_CHECK(got.tokens[i] >= 0, "token %u of an accepted block is %d", i, got.tokens[i]);
    KS_FUZZ_CHECK(size == HEADER_BYTES + cap + 8, "accepted a %zu-byte file", size);
    KS_FUZZ_CHECK(memcmp(payload, data + HEADER_BYTES, cap) == 0,
                  "payload differs from the file's bytes");
  }
  free(payload);
  return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ks_fuzz_depth = 0;
  ks_block_header expect;
  memset(&expect, 0, sizeof expect);
  expect.model_fingerprint = KS_FUZZ_CACHE_FP;
  expect.kv_format = KS_KV_FORMAT_F32;
  expect.n_layer = KS_FUZZ_CACHE_LAYERS;
  expect.kv_dim = KS_FUZZ_CACHE_KV_DIM;
  expect.block_size = KS_FUZZ_CACHE_BLOCK;
  expect.hash = KS_FUZZ_CACHE_HASH;
  setup(&expect);
  int ok = read_once(&expect, data, size);
  if (size >= 16) {
    uint8_t *fixed = malloc(size);
    KS_FUZZ_CHECK(fixed, "out of memory");
    memcpy(fixed, data, size);
    uint64_t crc = cache_file_crc64(0, fixed, size - 8);
    for (int i = 0; i < 8; i++) fixed[size - 8 + i] = (uint8_t)(crc >> (8 * i));
    ok |= read_once(&expect, fixed, size);
    free(fixed);
  }
  ks_fuzz_depth = ok;
  return 0;
}
