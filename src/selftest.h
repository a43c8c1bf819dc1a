/* selftest.h — `kvscope selftest`: every GPU kernel variant checked against the plain C
 * reference (ref_cpu.c) on every Vulkan device present, or on one, plus end-to-end checks of a
 * model (by default the shipped models/kvscope-tiny.gguf), printed as a table of checks by
 * device with the error found and the bound. Variants: each op; each weight type the GPU
 * computes with; shape classes (tiny, not a multiple of the workgroup or tile sizes, large K or
 * long context); batch invariance (a row computed alone or in any batch gives the same bits);
 * weights split into slices. A user with any Vulkan GPU runs it to see that kvscope is correct
 * there; CI runs it on lavapipe.
 * What it is not: the unit tests (tests/test_gpu_ops.c probes more corners on purpose, e.g.
 * descriptor-pool growth and bad-shape errors) nor a benchmark. */
#ifndef KS_SELFTEST_H
#define KS_SELFTEST_H
#include <stdint.h>
#include <stdio.h>

#include "common.h"
#include "gpu.h"

typedef struct {
  char group[16];  /* "matmul", "attention", "model", ...: what --only selects */
  char name[128];  /* the variant, e.g. "matmul Q8_0 odd K=224 N=33 T=13" */
  double err;      /* max |gpu - ref| / max |ref| (or absolute, see note); exact checks: the
                    * number of 32-bit words that differ */
  double bound;
  int exact;       /* 1: must be bit-identical (err counts differing words) */
  int passed;
  char note[160];  /* what went wrong, or what the error is measured against */
} ks_selftest_result;

typedef struct {
  int index;
  char name[256], driver[256];
  char features[256]; /* optional features the device offers, and the kernel paths checked */
  char model[128];    /* file name of the model of the end-to-end checks, "" if none ran */
  uint32_t api_version, subgroup_size;
  ks_selftest_result *res;
  int n, cap;
  int n_failed;
  double seconds;
} ks_selftest_device;

typedef struct {
  const char *model_path; /* end-to-end checks on this model; NULL: none */
  const char *only;       /* comma-separated groups to run; NULL: all */
  const char *fault;      /* testing the selftest itself: checks whose name contains this get a
                           * wrong GPU value, so they must report FAIL; NULL: none */
  uint64_t seed;          /* random inputs */
} ks_selftest_opts;

/* Runs every selected check on device `index` (gpu_create semantics) into *out (free it with
 * selftest_device_free). Check failures are rows with passed = 0, not a status: the status is
 * KS_OK unless the device could not be opened at all (then out->n == 0 and the message says why). */
ks_status selftest_device(int index, const ks_selftest_opts *o, ks_selftest_device *out);
void selftest_device_free(ks_selftest_device *d);

/* The table: one row per check, one column group (error, verdict) per device. */
void selftest_print_table(FILE *f, const ks_selftest_device *devs, int n);
void selftest_print_json(FILE *f, const ks_selftest_device *devs, int n, uint64_t seed);

/* `kvscope selftest [--device N] [--json] [-m MODEL] [--only GROUPS] [--seed S]`: returns the
 * exit status (0 only if every check passed on every device, 1 otherwise, 2 bad usage). */
int selftest_main(int argc, char **argv);

#endif
