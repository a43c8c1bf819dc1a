/* gguf.h — GGUF version 3 reader (memory-mapped, every offset and size validated against the
 * file) and writer. Knows the container format only; model.c maps `llama` tensors and keys
 * onto ks_model, tokenizer.c reads the `tokenizer.ggml.*` keys. */
#ifndef KS_GGUF_H
#define KS_GGUF_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common.h"
#include "model.h"

typedef enum {
  GGUF_T_UINT8 = 0, GGUF_T_INT8 = 1, GGUF_T_UINT16 = 2, GGUF_T_INT16 = 3,
  GGUF_T_UINT32 = 4, GGUF_T_INT32 = 5, GGUF_T_FLOAT32 = 6, GGUF_T_BOOL = 7,
  GGUF_T_STRING = 8, GGUF_T_ARRAY = 9, GGUF_T_UINT64 = 10, GGUF_T_INT64 = 11,
  GGUF_T_FLOAT64 = 12,
} gguf_vtype;

typedef struct ks_gguf ks_gguf;

/* Opens and validates the whole header (keys, tensor infos, that every tensor's bytes lie inside
 * the file). Failure messages name the file, the offending key/tensor and the problem. */
ks_status gguf_open(ks_gguf **out, const char *path);
void gguf_close(ks_gguf *g);

const void *gguf_file_data(const ks_gguf *g, size_t *size); /* the whole mapping */
uint32_t gguf_version(const ks_gguf *g);
uint32_t gguf_alignment(const ks_gguf *g);  /* general.alignment, default 32 */
size_t gguf_data_offset(const ks_gguf *g);  /* file offset of the (aligned) data section */

/* Metadata. Lookups return -1 / the default when the key is absent or of another type; integer
 * getters accept any integer type whose value fits. */
int gguf_n_keys(const ks_gguf *g);
const char *gguf_key_name(const ks_gguf *g, int i);
int gguf_find_key(const ks_gguf *g, const char *key);
gguf_vtype gguf_key_type(const ks_gguf *g, int i);
int64_t gguf_get_int(const ks_gguf *g, const char *key, int64_t dflt);
double gguf_get_float(const ks_gguf *g, const char *key, double dflt); /* FLOAT32 or FLOAT64 */
int gguf_get_bool(const ks_gguf *g, const char *key, int dflt);
/* NUL-terminated copy kept inside g; NULL if absent. */
const char *gguf_get_str(const ks_gguf *g, const char *key);
/* Arrays: element type and count; 0 if absent or not an array. */
uint64_t gguf_arr_len(const ks_gguf *g, const char *key, gguf_vtype *elem_type);
/* Numeric array element data (contiguous, file byte order = little endian); NULL for strings. */
const void *gguf_arr_data(const ks_gguf *g, const char *key);
/* String array element i (not NUL-terminated: use len). O(1) via an index built at open. */
const char *gguf_arr_str(const ks_gguf *g, const char *key, uint64_t i, size_t *len);

/* Tensors. */
int gguf_n_tensors(const ks_gguf *g);
const char *gguf_tensor_name(const ks_gguf *g, int i);
int gguf_find_tensor(const ks_gguf *g, const char *name);
/* Fills t (type, ne (up to 2 dims; higher dims must be 1), data pointer into the mapping). */
ks_status gguf_tensor(const ks_gguf *g, int i, ks_tensor *t);
/* Raw info of any tensor (also 3-D/4-D ones): GGML type number, dimension count, ne[0..3]
 * (unused dims are 1). Any pointer may be NULL. */
ks_status gguf_tensor_info(const ks_gguf *g, int i, uint32_t *type, int *n_dims, int64_t ne[4]);

/* Writer: collect metadata and tensors, then write atomically (temp file + rename). Tensor data
 * is copied at write time from the pointer given, so it must stay valid until gguf_writer_write. */
typedef struct ks_gguf_writer ks_gguf_writer;
ks_gguf_writer *gguf_writer_create(void);
void gguf_writer_destroy(ks_gguf_writer *w);
/* Setting a key again replaces its value. Setting general.alignment (uint32, a power of two)
 * changes the alignment the writer uses; the default is 32. */
void gguf_writer_set_u32(ks_gguf_writer *w, const char *key, uint32_t v);
void gguf_writer_set_i32(ks_gguf_writer *w, const char *key, int32_t v);
void gguf_writer_set_f32(ks_gguf_writer *w, const char *key, float v);
void gguf_writer_set_bool(ks_gguf_writer *w, const char *key, int v);
void gguf_writer_set_str(ks_gguf_writer *w, const char *key, const char *v);
void gguf_writer_set_arr_f32(ks_gguf_writer *w, const char *key, const float *v, uint64_t n);
void gguf_writer_set_arr_i32(ks_gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
/* strs[i] has lens[i] bytes. */
void gguf_writer_set_arr_str(ks_gguf_writer *w, const char *key, const char *const *strs,
                             const size_t *lens, uint64_t n);
void gguf_writer_set_u8(ks_gguf_writer *w, const char *key, uint8_t v);
void gguf_writer_set_i8(ks_gguf_writer *w, const char *key, int8_t v);
void gguf_writer_set_u16(ks_gguf_writer *w, const char *key, uint16_t v);
void gguf_writer_set_i16(ks_gguf_writer *w, const char *key, int16_t v);
void gguf_writer_set_u64(ks_gguf_writer *w, const char *key, uint64_t v);
void gguf_writer_set_i64(ks_gguf_writer *w, const char *key, int64_t v);
void gguf_writer_set_f64(ks_gguf_writer *w, const char *key, double v);
/* Array of n numeric elements (elem_type not STRING/ARRAY) in host order; copied now. */
void gguf_writer_set_arr(ks_gguf_writer *w, const char *key, gguf_vtype elem_type,
                         const void *data, uint64_t n);
/* Copies key i of g verbatim, whatever its type (nested arrays included). */
void gguf_writer_copy_key(ks_gguf_writer *w, const ks_gguf *g, int i);
/* ne0 = row length, ne1 = rows (1 for vectors). */
void gguf_writer_add_tensor(ks_gguf_writer *w, const char *name, ks_type type, int64_t ne0,
                            int64_t ne1, const void *data);
ks_status gguf_writer_write(ks_gguf_writer *w, const char *path);

#endif
