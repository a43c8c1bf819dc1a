/* default_model.c — where the model shipped in models/ is, for every command that runs without
 * -m: next to the binary (build/kvscope -> ../models), then the source tree it was built from,
 * then ./models. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "kvscope.h"

#ifndef KVSCOPE_MODELS_DIR
#define KVSCOPE_MODELS_DIR "models"
#endif

const char *ks_default_model_path(void) {
  static char path[PATH_MAX + 64];
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = 0;
      snprintf(path, sizeof path, "%s/../models/%s", exe, KS_DEFAULT_MODEL_NAME);
      if (access(path, R_OK) == 0) return path;
    }
  }
  snprintf(path, sizeof path, "%s/%s", KVSCOPE_MODELS_DIR, KS_DEFAULT_MODEL_NAME);
  if (access(path, R_OK) == 0) return path;
  snprintf(path, sizeof path, "models/%s", KS_DEFAULT_MODEL_NAME);
  return path;
}

ks_status ks_model_path_or_default(const char **path) {
  if (*path) return KS_OK;
  *path = ks_default_model_path();
  if (access(*path, R_OK) != 0)
    return ks_fail(KS_ERR_IO, "no -m given and the default model %s is missing: give a model "
                   "with -m", *path);
  return KS_OK;
}
