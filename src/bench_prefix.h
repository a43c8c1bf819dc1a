/* bench_prefix.h — `kvscope bench --prefix`: TTFT cold vs cached, and the cache's cost at a 0%
 * hit rate (see bench_prefix.c). */
#ifndef KS_BENCH_PREFIX_H
#define KS_BENCH_PREFIX_H
#include <stdio.h>

#include "kvscope.h"

/* Runs the table for prompt lengths 128, 256, ... up to the engine's context. Returns an exit
 * status (0 ok). */
int bench_prefix_run(ks_engine *e, int reps, int suffix, int json, FILE *out);

/* `kvscope bench --prefix [-m MODEL] [-z TOK] [-c CTX] [-r REPS] [--suffix N] [--cache-mb N]
 * [--device N] [--json]`; argv[0] is "bench". */
int bench_prefix_main(int argc, char **argv);

#endif
