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

/* Q5_0 and Q5_1 (what llama.cpp writes instead of Q4_K / Q5_K for rows that are not a multiple
 * of 256, e.g. SmolLM2's 576 and Qwen2.5-0.5B's 896), and the K-quants (GGML numbers). They are
 * macros rather than ks_type enumerators so that the switch statements elsewhere over the five
 * original types stay exhaustive under -Wswitch; test them with if/==, not case labels.
 *  Q5_0 (22 bytes per 32): f16 d, 32 bits qh (little endian), 16 bytes of nibbles; element j
 *    (< 16: low nibble of byte j; >= 16: high nibble of byte j - 16) gets bit j of qh as its
 *    fifth bit; x = (q - 16) * d.
 *  Q5_1 (24 bytes per 32): f16 d, f16 m, then as Q5_0; x = q * d + m.
 * Super-blocks of KS_QK_K = 256 elements:
 *  Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes packing eight 6-bit scales sc and mins m, 128
 *    bytes of nibbles. Sub-block s (32 elements) is x = (d*sc[s]) * q - (dmin*m[s]).
 *    Elements 64j..64j+31 are the low nibbles of bytes 32j..32j+31, 64j+32.. their high nibbles.
 *    Scales: for s < 4, sc = b[s] & 63, m = b[s+4] & 63; for s >= 4, sc = (b[s+4] & 15) |
 *    (b[s-4] >> 6) << 4 and m = (b[s+4] >> 4) | (b[s] >> 6) << 4.
 *  Q5_K (176 bytes): as Q4_K, then 32 bytes qh before the 128 nibble bytes; element i of the
 *    64-element chunk j gets bit (2j + (i >= 32)) of qh[i % 32] as its fifth bit (q + 16).
 *  Q6_K (210 bytes): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 scales (one
 *    per 16 elements), f16 d; x = (d*sc) * (q - 32). In each half of 128 elements, element
 *    32g + l (g < 4) takes the low (g < 2) or high nibble of ql[64h + 32(g & 1) + l], bits 2g..2g+1
 *    of qh[32h + l], and scale sc[8h + 2g + l/16]. */
#define KS_TYPE_Q5_0 ((ks_type)6)
#define KS_TYPE_Q5_1 ((ks_type)7)
#define KS_TYPE_Q4_K ((ks_type)12)
#define KS_TYPE_Q5_K ((ks_type)13)
#define KS_TYPE_Q6_K ((ks_type)14)
#define KS_QK_K 256

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
/* Converts n f32 values to type t (the same rounding ggml uses, so files match llama.cpp's).
 * Q5_0, Q5_1 and the K-quants use kvscope's own simpler quantisers (scales from each block's
 * range, no search):
 * the bytes are a valid block of the format, decoded exactly by ks_dequant_row and by llama.cpp,
 * but not the bytes llama.cpp's quantiser would choose. */
void ks_quant_row(ks_type t, const float *src, void *dst, int64_t n);

#endif
