/* bench.h — `kvscope bench`: prefill and decode speed of a model on one Vulkan device, time to
 * first token, GPU time per kernel from timestamp queries, and the memory roofline (the device's
 * copy bandwidth measured in the same run against the bytes a decode step must move).
 * What it is not: a correctness check (the tests compare with the CPU reference), nor a timed
 * test (numbers are reported, never judged). The counting functions are exposed for tests. */
#ifndef KS_BENCH_H
#define KS_BENCH_H
#include <stdint.h>

#include "model.h"

/* Bytes one decode step at position pos moves between memory and the GPU: every weight it reads
 * as stored (the GPU keeps the file's types), one row of the token embedding (the table is only
 * looked up; a tied classifier reads it all), the norms, the K/V rows of positions 0..pos of
 * every layer, and the new K/V row it writes. Activations and biases are left out (a few KiB). */
uint64_t bench_decode_bytes(const ks_model *m, int pos);

/* Floating-point operations of one prefill chunk of n_tok tokens at positions pos0.. that
 * computes logits for logits_rows of them: 2 per multiply-add of the matrix products (weights x
 * activations, classifier only for logits_rows rows) and of attention (Q.K and P.V over the
 * positions each token attends). Element-wise ops (norms, RoPE, SwiGLU) are left out. */
double bench_prefill_flops(const ks_config *c, int n_tok, int pos0, int logits_rows);

/* Median of n values (n >= 1; v is not modified). */
double bench_median(const double *v, int n);

/* The CLI: `kvscope bench [-m MODEL] [-p N] [-n N] [-r REPS] [-b BATCH] [--device N] [--json]
 * [--json-out FILE]`.
 * argv[0] is "bench". Returns the exit status (0 ok, 1 runtime error, 2 bad usage). */
int bench_main(int argc, char **argv);

#endif
