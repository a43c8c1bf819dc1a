/* replay_main.c — runs a fuzz target without libFuzzer: every file named on the command line, or
 * found in a directory named there, is fed once to LLVMFuzzerTestOneInput. This is how the
 * normal (gcc) build and the sanitizer build replay the corpus in tests/fuzz/corpus/<target>:
 * seeds and every crash ever found stay regression tests. A crash or a property violation
 * aborts (non-zero exit); a seed named valid-* that no longer reaches the target's deepest level
 * (the parser started rejecting good files, so fuzzing would stop exploring) fails too.
 * What it is not: a fuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
extern int ks_fuzz_depth;
extern const int ks_fuzz_full;

static int g_failed, g_files;

static void run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    g_failed++;
    return;
  }
  size_t cap = 1 << 16, n = 0;
  uint8_t *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      uint8_t *nb = realloc(buf, cap *= 2);
      if (!nb) free(buf);
      buf = nb;
    }
  }
  fclose(f);
  if (!buf) {
    fprintf(stderr, "replay: out of memory reading %s\n", path);
    exit(1);
  }
  /* an exact-size copy, so AddressSanitizer flags a read one byte past the input */
  uint8_t *exact = malloc(n ? n : 1);
  if (!exact) exit(1);
  memcpy(exact, buf, n);
  free(buf);
  ks_fuzz_depth = 0;
  LLVMFuzzerTestOneInput(exact, n);
  free(exact);
  g_files++;
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  int must = strncmp(base, "valid-", 6) == 0;
  printf("  %-48s %6zu bytes  depth %d/%d%s\n", base, n, ks_fuzz_depth, ks_fuzz_full,
         must ? (ks_fuzz_depth == ks_fuzz_full ? "  (valid: ok)" : "  (valid: NOT REACHED)") : "");
  if (must && ks_fuzz_depth != ks_fuzz_full) {
    fprintf(stderr, "replay: %s is a valid-* seed but only reached depth %d of %d\n", path,
            ks_fuzz_depth, ks_fuzz_full);
    g_failed++;
  }
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "replay: cannot open directory %s\n", dir);
    g_failed++;
    return;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      char **nn = realloc(names, cap * sizeof *nn);
      if (!nn) exit(1);
      names = nn;
    }
    size_t len = strlen(dir) + strlen(e->d_name) + 2;
    names[n] = malloc(len);
    if (!names[n]) exit(1);
    snprintf(names[n], len, "%s/%s", dir, e->d_name);
    n++;
  }
  closedir(d);
  qsort(names, n, sizeof *names, cmp_str); /* a stable order: failures reproduce */
  for (size_t i = 0; i < n; i++) {
    run_file(names[i]);
    free(names[i]);
  }
  free(names);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE|DIR...  (replays each input once through the fuzz target)\n",
            argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  for (int i = 1; i < argc; i++) {
    struct stat sb;
    if (stat(argv[i], &sb) != 0) {
      fprintf(stderr, "replay: %s does not exist\n", argv[i]);
      g_failed++;
    } else if (S_ISDIR(sb.st_mode)) {
      run_dir(argv[i]);
    } else {
      run_file(argv[i]);
    }
  }
  printf("replayed %d input(s), %d problem(s)\n", g_files, g_failed);
  if (g_files == 0) {
    fprintf(stderr, "replay: no inputs found: an empty corpus tests nothing\n");
    return 1;
  }
  return g_failed ? 1 : 0;
}
