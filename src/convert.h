/* convert.h — writes a loaded model (llama2.c checkpoint or GGUF) as a llama GGUF v3 file that
 * kvscope and llama.cpp both load: llama.* metadata, the SentencePiece vocabulary as
 * tokenizer.ggml.* keys, weight matrices in a chosen type, norms in F32. Not a general
 * re-quantiser: only the types kvscope computes with. */
#ifndef KS_CONVERT_H
#define KS_CONVERT_H
#include "common.h"
#include "model.h"
#include "quant.h"

/* Writes m to out_path (atomically: temp file + rename).
 * tokenizer_bin: a llama2.c tokenizer.bin whose first vocab_size tokens become the GGUF
 *   vocabulary; NULL to copy the tokenizer.ggml.* keys of a GGUF model (if it has none, the file
 *   is written without a vocabulary and a note goes to stderr).
 * wtype: F32, F16, BF16, Q8_0 or Q4_0 for the 2-D weights (token_embd and output included);
 *   for Q8_0/Q4_0 a matrix whose row length is not a multiple of 32 is written as F16 instead
 *   (said on stderr). Norms stay F32; output.weight is omitted when the model ties it to
 *   token_embd. */
ks_status convert_to_gguf(const ks_model *m, const char *tokenizer_bin, const char *out_path,
                          ks_type wtype);

#endif
