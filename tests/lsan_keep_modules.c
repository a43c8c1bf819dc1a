/* lsan_keep_modules.c — linked into every executable of a KVSCOPE_SANITIZE build, and only
 * there: a dlclose that leaves the library loaded. The Vulkan loader unloads the driver
 * (lavapipe + LLVM) and the validation layer in vkDestroyInstance; the memory they still hold
 * in their globals then looks leaked to LeakSanitizer, with "<unknown module>" frames that no
 * suppression can name. Kept loaded, that memory is reachable and not reported, and what the
 * layer itself leaks is attributed to its library (tests/lsan.supp suppresses that by name).
 * The executable's definition wins over libc's for every library that calls dlclose.
 * What it is not: part of the engine, or of any normal build. */
#include <dlfcn.h>

int dlclose(void *handle) {
  (void)handle;
  return 0;
}
