/* cache_file.h — one K/V block of the prompt cache on disk (--cache-dir): a header naming the
 * model (fingerprint), the K/V format and the block's tokens and chain hash, then the K and V rows
 * of every layer, then a checksum. Files are written atomically (temp file + fsync + rename), so a
 * reader sees a whole file or none. A reader never trusts a file: wrong magic, another model,
 * another format, a newer version, a bad checksum or a short file are reported and ignored.
 * What it is not: the index of which blocks exist (prefix_cache.c) or GPU transfers (forward.c). */
#ifndef KS_CACHE_FILE_H
#define KS_CACHE_FILE_H
#include <stddef.h>
#include <stdint.h>

#include "common.h"

#define KS_KV_FORMAT_F32 1u /* K and V rows as f32 */

typedef struct {
  uint64_t model_fingerprint; /* ks_model.fingerprint */
  uint32_t kv_format;         /* KS_KV_FORMAT_* */
  uint32_t n_layer, kv_dim, block_size;
  uint64_t hash, parent_hash; /* chain hash of the prefix ending with this block, and before it */
  int32_t tokens[64];         /* block_size (<= 64) token ids of this block */
} ks_block_header;

/* Payload bytes for a header: 2 (K, V) * n_layer * block_size * kv_dim * 4, layer-major:
 * layer 0 K rows, layer 0 V rows, layer 1 K rows, ... */
uint64_t cache_file_payload_bytes(const ks_block_header *h);

/* Path of a block: DIR/<fingerprint as 16 hex>/<hash as 16 hex>.kvb (into buf, cap bytes). */
void cache_file_path(char *buf, size_t cap, const char *dir, uint64_t fingerprint, uint64_t hash);

/* Checks DIR exists or can be created and is writable; KS_ERR_IO with a message otherwise. */
ks_status cache_dir_prepare(const char *dir);

/* Writes one block atomically. Failure (unwritable, disk full, ...) returns KS_ERR_IO with a
 * message and leaves no file, partial or temporary, behind. */
ks_status cache_file_write(const char *dir, const ks_block_header *h, const void *payload);

/* Reads the block with expect->hash for expect->model_fingerprint. expect's fingerprint, format,
 * n_layer, kv_dim, block_size and hash must all match the file. Returns KS_OK and fills *got and
 * payload (payload_cap >= cache_file_payload_bytes), KS_ERR_IO if there is no such file (silent
 * case: a miss), or KS_ERR_CACHE with a message saying what is wrong with the file (corrupt,
 * truncated, other model, other format, newer version); the caller warns and ignores it.
 * On any failure payload holds no bytes from the file (what was read into it is zeroed). got may
 * be NULL. The caller still compares got->tokens with its own: the hash names the block, the
 * tokens prove it. */
ks_status cache_file_read(const char *dir, const ks_block_header *expect, ks_block_header *got,
                          void *payload, size_t payload_cap);

/* CRC-64/XZ (ECMA-182 polynomial, reflected, init and final xor all ones), the files' checksum.
 * Chains: cache_file_crc64(cache_file_crc64(0, a, na), b, nb) is the CRC of a then b; start at 0. */
uint64_t cache_file_crc64(uint64_t crc, const void *data, size_t n);

#endif
