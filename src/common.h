/* common.h — status codes, the thread-local error message, small helpers shared by every module.
 * Not a utility grab-bag: only what at least three modules need lives here. */
#ifndef KS_COMMON_H
/* The cooperative-matrix product kernels (matmul_cm.glsl) take rows of at most this many values
 * (the decode kernel stages one input row in shared memory). */
#define KS_COOPMAT_KMAX 12288
#define KS_COMMON_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
  KS_OK = 0,
  KS_ERR_IO = 1,        /* file missing, unreadable, short read */
  KS_ERR_FORMAT = 2,    /* bad magic, truncated, hostile or inconsistent file */
  KS_ERR_UNSUPPORTED = 3, /* unknown architecture, tensor type, version */
  KS_ERR_NOMEM = 4,     /* host or device allocation failed */
  KS_ERR_VULKAN = 5,    /* a Vulkan call failed or no device */
  KS_ERR_ARG = 6,       /* bad argument: prompt over context, invalid UTF-8, bad flag value */
  KS_ERR_CACHE = 7,     /* prompt cache budget or cache file problem */
  KS_ERR_INTERRUPTED = 8, /* SIGINT/SIGTERM arrived: the work was stopped cleanly */
} ks_status;

/* Records a message for the last failure on this thread; returns `st` so callers can write
 * `return ks_fail(KS_ERR_FORMAT, "...", ...)`. */
ks_status ks_fail(ks_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *ks_last_error(void);
const char *ks_status_name(ks_status st);

/* Progress reporting on stderr for long operations (loads, uploads). Quiet when not a tty
 * unless KVSCOPE_PROGRESS=1. */
void ks_progress(const char *what, uint64_t done, uint64_t total);

double ks_now_sec(void); /* monotonic clock */

/* Whole-string number parsing for command lines: 0 on success, -1 if s is not entirely a
 * number of that type (or is out of range / not finite). */
int ks_parse_int(const char *s, int *out);
int ks_parse_double(const char *s, double *out);

/* Interrupts: a signal handler (async-signal-safe) records one; long loops (prefill chunks,
 * decode steps) check for it and stop with KS_ERR_INTERRUPTED. */
void ks_interrupt_set(int sig);
int ks_interrupt_pending(void); /* the signal number, or 0 */

#define KS_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define KS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KS_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
