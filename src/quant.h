/* quant.h — tensor element types (GGML numbering, as stored in GGUF files), their block
 * layouts, and CPU conversion between them and f32. The GPU dequantises inside its matrix
 * kernels (shaders/); these routines are the reference for that and the writer's quantiser. */
#ifndef KS_QUANT_H
#define KS_QUANT_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
  KS_TYPE_F32 = 0,
  KS_TYPE_F16 = 1,
  KS_TYPE_Q4_0 = 2,
  KS_TYPE_Q8_0 = 8,
  KS_TYPE_BF16 = 30,
} ks_type;

#define KS_QK4_0 32 /* Q4_0 block: f16 scale d, 16 bytes of nibbles; x = (q - 8) * d */
#define KS_QK8_0 32 /* Q8_0 block: f16 scale d, 32 int8; x = q * d */

int ks_type_known(uint32_t type);            /* 1 if kvscope can compute with it */
/* 1 if type is any GGML type whose block layout is known (Q4_K, I32, ...), so a file's tensor
 * sizes can be checked even where kvscope cannot compute with the type. The size getters below
 * answer for every such type, 0 for others. */
int ks_type_layout_known(uint32_t type);
const char *ks_type_name(uint32_t type);     /* "F32", "Q4_0", ...; "type N" style for unknown */
int ks_type_block_elems(ks_type t);          /* elements per block (1 for float types) */
size_t ks_type_block_bytes(ks_type t);       /* bytes per block */
/* Bytes of one row of n elements; 0 if n is not a multiple of the block size. */
size_t ks_type_row_bytes(ks_type t, int64_t n);

float ks_f16_to_f32(uint16_t h);
uint16_t ks_f32_to_f16(float f); /* round to nearest even */
float ks_bf16_to_f32(uint16_t h);

/* Converts n elements (multiple of the block size) of `src` in type t to f32. */
void ks_dequant_row(ks_type t, const void *src, float *dst, int64_t n);
/* Converts n f32 values to type t (the same rounding ggml uses, so files match llama.cpp's). */
void ks_quant_row(ks_type t, const float *src, void *dst, int64_t n);

#endif
