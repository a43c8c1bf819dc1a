/* common.c — error message storage, progress lines and the clock. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char g_err[1024];

ks_status ks_fail(ks_status st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_err, sizeof g_err, fmt, ap);
  va_end(ap);
  return st;
}

const char *ks_last_error(void) { return g_err[0] ? g_err : "no error recorded"; }

const char *ks_status_name(ks_status st) {
  switch (st) {
  case KS_OK: return "ok";
  case KS_ERR_IO: return "I/O error";
  case KS_ERR_FORMAT: return "bad file format";
  case KS_ERR_UNSUPPORTED: return "unsupported";
  case KS_ERR_NOMEM: return "out of memory";
  case KS_ERR_VULKAN: return "Vulkan error";
  case KS_ERR_ARG: return "invalid argument";
  case KS_ERR_CACHE: return "prompt cache error";
  case KS_ERR_INTERRUPTED: return "interrupted";
  }
  return "unknown status";
}

void ks_progress(const char *what, uint64_t done, uint64_t total) {
  static int enabled = -1;
  if (enabled < 0) {
    const char *e = getenv("KVSCOPE_PROGRESS");
    enabled = e ? atoi(e) != 0 : isatty(2);
  }
  if (!enabled || total == 0) return;
  int pct = (int)(done * 100 / total);
  fprintf(stderr, "\r%s: %3d%% (%.1f / %.1f MiB)", what, pct, done / 1048576.0, total / 1048576.0);
  if (done >= total) fputc('\n', stderr);
  fflush(stderr);
}

double ks_now_sec(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#include <signal.h>
static volatile sig_atomic_t g_interrupt;
void ks_interrupt_set(int sig) { g_interrupt = sig; }
int ks_interrupt_pending(void) { return g_interrupt; }

#include <errno.h>
#include <limits.h>
#include <math.h>
int ks_parse_int(const char *s, int *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || end == s || v < INT_MIN || v > INT_MAX) return -1;
  *out = (int)v;
  return 0;
}
int ks_parse_double(const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || end == s || !isfinite(v)) return -1;
  *out = v;
  return 0;
}
