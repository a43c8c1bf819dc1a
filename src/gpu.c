/* gpu.c — the device side of gpu.h: Vulkan instance (validation layer on request), device
 * enumeration, choice and listing, feature probing, the logical device, buffers, staging
 * uploads/downloads/fills and sliced weight tensors. Command buffers, pipelines and the ops are
 * in gpu_ops.c; this file records no compute work. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_internal.h"
#include "quant.h"

static const char *k_no_device_help =
    "install a Vulkan driver: on Debian/Ubuntu `apt-get install mesa-vulkan-drivers` provides "
    "lavapipe (a conformant Vulkan driver that runs on the CPU), and libvulkan1 provides the "
    "Vulkan loader; GPU vendors ship their own drivers";

ks_status gpu_cmd_objects_create(ks_gpu *g, VkCommandPool *pool, VkCommandBuffer *cb,
                                 VkFence *fence) {
  VkCommandPoolCreateInfo pci = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
      .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
      .queueFamilyIndex = g->qfam,
  };
  VK_CHECK(vkCreateCommandPool(g->dev, &pci, NULL, pool));
  VkCommandBufferAllocateInfo cai = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
      .commandPool = *pool,
      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
      .commandBufferCount = 1,
  };
  VK_CHECK(vkAllocateCommandBuffers(g->dev, &cai, cb));
  VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  VK_CHECK(vkCreateFence(g->dev, &fci, NULL, fence));
  return KS_OK;
}

const char *gpu_vk_result_hint(VkResult r) {
  switch (r) {
  case VK_ERROR_DEVICE_LOST:
    return ": the GPU was lost (reset by its driver after a hang or a crash, or a fault in "
           "another program); nothing computed since is trusted. Run again; if it repeats, check "
           "the driver with 'kvscope selftest' and the system log";
  case VK_ERROR_OUT_OF_DEVICE_MEMORY:
    return ": the GPU is out of memory; use a smaller or quantised model (e.g. `kvscope convert "
           "--type q4_0`), or lower the context (-c), --cache-mb or the batch (-b)";
  case VK_ERROR_OUT_OF_HOST_MEMORY:
    return ": the host is out of memory";
  default:
    return "";
  }
}

ks_status gpu_check_queue(ks_gpu *g, VkResult r, const char *call, const char *file, int line) {
  if (r == VK_SUCCESS) return KS_OK;
  if (r == VK_ERROR_DEVICE_LOST) g->device_lost = 1;
  return ks_fail(KS_ERR_VULKAN, "%s failed: %s%s (%s:%d)", call, gpu_vk_result_name(r),
                 gpu_vk_result_hint(r), file, line);
}

const char *gpu_vk_result_name(VkResult r) {
  switch (r) {
#define R_(x) case x: return #x
    R_(VK_SUCCESS);
    R_(VK_NOT_READY);
    R_(VK_TIMEOUT);
    R_(VK_EVENT_SET);
    R_(VK_EVENT_RESET);
    R_(VK_INCOMPLETE);
    R_(VK_ERROR_OUT_OF_HOST_MEMORY);
    R_(VK_ERROR_OUT_OF_DEVICE_MEMORY);
    R_(VK_ERROR_INITIALIZATION_FAILED);
    R_(VK_ERROR_DEVICE_LOST);
    R_(VK_ERROR_MEMORY_MAP_FAILED);
    R_(VK_ERROR_LAYER_NOT_PRESENT);
    R_(VK_ERROR_EXTENSION_NOT_PRESENT);
    R_(VK_ERROR_FEATURE_NOT_PRESENT);
    R_(VK_ERROR_INCOMPATIBLE_DRIVER);
    R_(VK_ERROR_TOO_MANY_OBJECTS);
    R_(VK_ERROR_FORMAT_NOT_SUPPORTED);
    R_(VK_ERROR_FRAGMENTED_POOL);
    R_(VK_ERROR_UNKNOWN);
    R_(VK_ERROR_OUT_OF_POOL_MEMORY);
    R_(VK_ERROR_INVALID_EXTERNAL_HANDLE);
    R_(VK_ERROR_FRAGMENTATION);
    R_(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS);
    R_(VK_PIPELINE_COMPILE_REQUIRED);
#undef R_
  default: return "VK_RESULT_UNKNOWN";
  }
}

/* ---------------------------------------------------------------- instance and validation */

static atomic_uint_fast64_t g_validation_msgs;

uint64_t gpu_validation_count(void) { return (uint64_t)atomic_load(&g_validation_msgs); }

static VKAPI_ATTR VkBool32 VKAPI_CALL debug_cb(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                               VkDebugUtilsMessageTypeFlagsEXT types,
                                               const VkDebugUtilsMessengerCallbackDataEXT *d,
                                               void *user) {
  (void)types;
  (void)user;
  atomic_fetch_add(&g_validation_msgs, 1);
  fprintf(stderr, "vulkan %s: %s\n",
          (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) ? "validation error"
                                                                 : "validation warning",
          d && d->pMessage ? d->pMessage : "(no message)");
  return VK_FALSE;
}

static int env_flag(const char *name) {
  const char *e = getenv(name);
  return e && *e && strcmp(e, "0") != 0;
}

static int has_layer(const char *name) {
  uint32_t n = 0;
  if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || n == 0) return 0;
  VkLayerProperties *p = calloc(n, sizeof *p);
  if (!p) return 0;
  int found = 0;
  if (vkEnumerateInstanceLayerProperties(&n, p) == VK_SUCCESS)
    for (uint32_t i = 0; i < n; i++)
      if (strcmp(p[i].layerName, name) == 0) found = 1;
  free(p);
  return found;
}

static int has_instance_ext(const char *name) {
  uint32_t n = 0;
  if (vkEnumerateInstanceExtensionProperties(NULL, &n, NULL) != VK_SUCCESS || n == 0) return 0;
  VkExtensionProperties *p = calloc(n, sizeof *p);
  if (!p) return 0;
  int found = 0;
  if (vkEnumerateInstanceExtensionProperties(NULL, &n, p) == VK_SUCCESS)
    for (uint32_t i = 0; i < n; i++)
      if (strcmp(p[i].extensionName, name) == 0) found = 1;
  free(p);
  return found;
}

static VkDebugUtilsMessengerCreateInfoEXT messenger_info(void) {
  VkDebugUtilsMessengerCreateInfoEXT mi = {
      .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
      .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                         VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
      .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                     VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
      .pfnUserCallback = debug_cb,
  };
  return mi;
}

/* Creates the instance; with want_validation, enables the Khronos layer and a messenger when
 * present (says so on stderr when absent). */
static ks_status create_instance(VkInstance *out, VkDebugUtilsMessengerEXT *messenger,
                                 int want_validation) {
  *out = VK_NULL_HANDLE;
  if (messenger) *messenger = VK_NULL_HANDLE;
  const char *exts[4];
  uint32_t n_ext = 0;
  const char *layers[1];
  uint32_t n_layer = 0;
  VkInstanceCreateFlags flags = 0;
  if (has_instance_ext(VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
    exts[n_ext++] = VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
    flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
  }
  int validation = 0;
  if (want_validation) {
    if (!has_layer("VK_LAYER_KHRONOS_validation")) {
      fprintf(stderr, "kvscope: KVSCOPE_VALIDATION is set but VK_LAYER_KHRONOS_validation is not "
                      "installed (Debian: apt-get install vulkan-validationlayers); running "
                      "without validation\n");
    } else if (!has_instance_ext(VK_EXT_DEBUG_UTILS_EXTENSION_NAME)) {
      fprintf(stderr, "kvscope: validation requested but VK_EXT_debug_utils is missing; running "
                      "without validation\n");
    } else {
      layers[n_layer++] = "VK_LAYER_KHRONOS_validation";
      exts[n_ext++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
      validation = 1;
    }
  }
  VkApplicationInfo app = {
      .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
      .pApplicationName = "kvscope",
      .applicationVersion = 1,
      .pEngineName = "kvscope",
      .engineVersion = 1,
      .apiVersion = VK_API_VERSION_1_2,
  };
  VkDebugUtilsMessengerCreateInfoEXT mi = messenger_info();
  VkInstanceCreateInfo ci = {
      .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
      .pNext = validation ? &mi : NULL,
      .flags = flags,
      .pApplicationInfo = &app,
      .enabledLayerCount = n_layer,
      .ppEnabledLayerNames = layers,
      .enabledExtensionCount = n_ext,
      .ppEnabledExtensionNames = exts,
  };
  VkResult r = vkCreateInstance(&ci, NULL, out);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER || r == VK_ERROR_INITIALIZATION_FAILED) {
    *out = VK_NULL_HANDLE;
    return ks_fail(KS_ERR_VULKAN, "no Vulkan driver found (vkCreateInstance: %s): %s",
                   gpu_vk_result_name(r), k_no_device_help);
  }
  if (r != VK_SUCCESS) {
    *out = VK_NULL_HANDLE;
    return ks_fail(KS_ERR_VULKAN, "vkCreateInstance failed: %s (%s:%d)", gpu_vk_result_name(r),
                   __FILE__, __LINE__);
  }
  if (validation && messenger) {
    PFN_vkCreateDebugUtilsMessengerEXT create =
        (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(*out,
                                                                  "vkCreateDebugUtilsMessengerEXT");
    if (create) VK_CHECK(create(*out, &mi, NULL, messenger));
  }
  return KS_OK;
}

static void destroy_instance(VkInstance inst, VkDebugUtilsMessengerEXT messenger) {
  if (!inst) return;
  if (messenger) {
    PFN_vkDestroyDebugUtilsMessengerEXT destroy =
        (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(
            inst, "vkDestroyDebugUtilsMessengerEXT");
    if (destroy) destroy(inst, messenger, NULL);
  }
  vkDestroyInstance(inst, NULL);
}

static ks_status enumerate(VkInstance inst, VkPhysicalDevice **out, uint32_t *n) {
  *out = NULL;
  *n = 0;
  VK_CHECK(vkEnumeratePhysicalDevices(inst, n, NULL));
  if (*n == 0) return KS_OK;
  *out = calloc(*n, sizeof **out);
  if (!*out) return ks_fail(KS_ERR_NOMEM, "out of host memory listing Vulkan devices");
  VkResult r = vkEnumeratePhysicalDevices(inst, n, *out);
  if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
    free(*out);
    *out = NULL;
    return ks_fail(KS_ERR_VULKAN, "vkEnumeratePhysicalDevices failed: %s (%s:%d)",
                   gpu_vk_result_name(r), __FILE__, __LINE__);
  }
  return KS_OK;
}

/* ---------------------------------------------------------------- feature probing */

typedef struct {
  int portability_subset;
  int pipeline_exec;  /* VK_KHR_pipeline_executable_properties */
  int robust_access;  /* robustBufferAccess supported */
  int timestamps;     /* compute queue has timestampValidBits and timestampComputeAndGraphics */
  uint32_t qfam;      /* first queue family with compute */
  int has_compute_queue;
  uint32_t ts_bits;
  uint32_t max_groups[3];
  int memory_model; /* vulkanMemoryModel */
} dev_extra;

static int has_dev_ext(const VkExtensionProperties *p, uint32_t n, const char *name) {
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(p[i].extensionName, name) == 0) return 1;
  return 0;
}

/* VK_NV_cooperative_matrix's feature and the shape matmul_cm.glsl is written for: 16 x 8 x 16,
 * A and B f16, C and D f32, subgroup scope */
static int coopmat_nv_usable(VkInstance inst, VkPhysicalDevice pd) {
  VkPhysicalDeviceCooperativeMatrixFeaturesNV cf = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
  VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                  .pNext = &cf};
  vkGetPhysicalDeviceFeatures2(pd, &f2);
  if (!cf.cooperativeMatrix) return 0;
  PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV get =
      (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)vkGetInstanceProcAddr(
          inst, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
  if (!get) return 0;
  uint32_t n = 0;
  if (get(pd, &n, NULL) != VK_SUCCESS || n == 0) return 0;
  VkCooperativeMatrixPropertiesNV *p = calloc(n, sizeof *p);
  if (!p) return 0;
  for (uint32_t i = 0; i < n; i++) p[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
  int ok = 0;
  if (get(pd, &n, p) == VK_SUCCESS)
    for (uint32_t i = 0; i < n; i++)
      if (p[i].MSize == 16 && p[i].NSize == 8 && p[i].KSize == 16 &&
          p[i].AType == VK_COMPONENT_TYPE_FLOAT16_NV && p[i].BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
          p[i].CType == VK_COMPONENT_TYPE_FLOAT32_NV && p[i].DType == VK_COMPONENT_TYPE_FLOAT32_NV &&
          p[i].scope == VK_SCOPE_SUBGROUP_NV)
        ok = 1;
  free(p);
  return ok;
}

static void probe(VkInstance inst, VkPhysicalDevice pd, ks_gpu_info *info, dev_extra *x) {
  memset(info, 0, sizeof *info);
  memset(x, 0, sizeof *x);
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(pd, &props);
  snprintf(info->name, sizeof info->name, "%s", props.deviceName);
  info->api_version = props.apiVersion;
  info->driver_version = props.driverVersion;
  info->vendor_id = props.vendorID;
  info->device_id = props.deviceID;
  info->type = props.deviceType;
  info->max_storage_range = props.limits.maxStorageBufferRange;
  info->min_storage_align = props.limits.minStorageBufferOffsetAlignment;
  info->max_wg_invocations = props.limits.maxComputeWorkGroupInvocations;
  info->max_shared_bytes = props.limits.maxComputeSharedMemorySize;
  info->timestamp_period_ns = props.limits.timestampPeriod;
  for (int i = 0; i < 3; i++) x->max_groups[i] = props.limits.maxComputeWorkGroupCount[i];

  uint32_t api = props.apiVersion;
  if (VK_API_VERSION_MAJOR(api) > 1 || VK_API_VERSION_MINOR(api) >= 2) {
    VkPhysicalDeviceVulkan12Properties p12 = {.sType =
                                                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES};
    VkPhysicalDeviceVulkan11Properties p11 = {.sType =
                                                  VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES,
                                              .pNext = &p12};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = &p11};
    vkGetPhysicalDeviceProperties2(pd, &p2);
    info->subgroup_size = p11.subgroupSize;
    info->subgroup_arith = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                           (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    info->subgroup_shuffle = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                             (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    snprintf(info->driver, sizeof info->driver, "%.120s %.120s", p12.driverName, p12.driverInfo);

    VkPhysicalDeviceVulkan12Features f12 = {.sType =
                                                VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceVulkan11Features f11 = {.sType =
                                                VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                            .pNext = &f12};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = &f11};
    vkGetPhysicalDeviceFeatures2(pd, &f2);
    info->fp16_arith = f12.shaderFloat16;
    info->int8_arith = f12.shaderInt8;
    info->storage16 = f11.storageBuffer16BitAccess;
    info->storage8 = f12.storageBuffer8BitAccess;
    x->robust_access = f2.features.robustBufferAccess;
    x->memory_model = f12.vulkanMemoryModel;
  } else {
    VkPhysicalDeviceFeatures f;
    vkGetPhysicalDeviceFeatures(pd, &f);
    x->robust_access = f.robustBufferAccess;
    snprintf(info->driver, sizeof info->driver, "driver version 0x%x", props.driverVersion);
  }

  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL);
  VkExtensionProperties *ext = n ? calloc(n, sizeof *ext) : NULL;
  if (ext && vkEnumerateDeviceExtensionProperties(pd, NULL, &n, ext) == VK_SUCCESS) {
    info->coopmat_nv = has_dev_ext(ext, n, "VK_NV_cooperative_matrix");
    info->coopmat_khr = has_dev_ext(ext, n, "VK_KHR_cooperative_matrix");
    x->portability_subset = has_dev_ext(ext, n, "VK_KHR_portability_subset");
    x->pipeline_exec = has_dev_ext(ext, n, "VK_KHR_pipeline_executable_properties");
  }
  free(ext);
  info->coopmat = info->coopmat_nv && x->memory_model && info->fp16_arith &&
                  info->subgroup_size == 32 && info->subgroup_shuffle &&
                  coopmat_nv_usable(inst, pd);

  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(pd, &mp);
  for (uint32_t i = 0; i < mp.memoryHeapCount; i++)
    if (mp.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
      info->device_local_bytes += mp.memoryHeaps[i].size;

  uint32_t nq = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
  VkQueueFamilyProperties *q = nq ? calloc(nq, sizeof *q) : NULL;
  if (q) {
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, q);
    for (uint32_t i = 0; i < nq; i++)
      if ((q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && q[i].queueCount > 0) {
        x->qfam = i;
        x->has_compute_queue = 1;
        x->ts_bits = q[i].timestampValidBits;
        break;
      }
  }
  free(q);
  x->timestamps = x->ts_bits > 0 && props.limits.timestampPeriod > 0;
}

static const char *type_name(VkPhysicalDeviceType t) {
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated GPU";
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete GPU";
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual GPU";
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return "CPU";
  default: return "other";
  }
}

static int api_at_least_12(uint32_t api) {
  return VK_API_VERSION_MAJOR(api) > 1 || VK_API_VERSION_MINOR(api) >= 2;
}

int gpu_count_devices(void) {
  VkInstance inst;
  if (create_instance(&inst, NULL, 0) != KS_OK) return -1;
  VkPhysicalDevice *pd = NULL;
  uint32_t n = 0;
  ks_status st = enumerate(inst, &pd, &n);
  free(pd);
  destroy_instance(inst, VK_NULL_HANDLE);
  if (st != KS_OK) return -1;
  if (n == 0) ks_fail(KS_ERR_VULKAN, "no Vulkan device found: %s", k_no_device_help);
  return (int)n;
}

static const char *yn(int v) { return v ? "yes" : "no"; }

ks_status gpu_list_devices(FILE *f) {
  VkInstance inst;
  ks_status st = create_instance(&inst, NULL, 0);
  if (st != KS_OK) return st;
  VkPhysicalDevice *pd = NULL;
  uint32_t n = 0;
  st = enumerate(inst, &pd, &n);
  if (st == KS_OK && n == 0) st = ks_fail(KS_ERR_VULKAN, "no Vulkan device found: %s", k_no_device_help);
  for (uint32_t i = 0; st == KS_OK && i < n; i++) {
    ks_gpu_info info;
    dev_extra x;
    probe(inst, pd[i], &info, &x);
    fprintf(f, "device %u: %s\n", i, info.name);
    fprintf(f, "  type %s, driver %s, Vulkan %u.%u.%u, vendor 0x%04x, device 0x%04x\n",
            type_name(info.type), info.driver, VK_API_VERSION_MAJOR(info.api_version),
            VK_API_VERSION_MINOR(info.api_version), VK_API_VERSION_PATCH(info.api_version),
            info.vendor_id, info.device_id);
    fprintf(f, "  subgroup size %u, device-local memory %.0f MiB, maxStorageBufferRange %.0f MiB, "
               "storage offset alignment %llu, shared memory %u KiB\n",
            info.subgroup_size, info.device_local_bytes / 1048576.0,
            info.max_storage_range / 1048576.0, (unsigned long long)info.min_storage_align,
            info.max_shared_bytes / 1024);
    fprintf(f, "  features: subgroup arithmetic %s, subgroup shuffle %s, fp16 arithmetic %s, "
               "int8 arithmetic %s, 16-bit storage %s, 8-bit storage %s, cooperative matrix NV %s / KHR %s, "
               "robust buffer access %s, timestamps %s%s\n",
            yn(info.subgroup_arith), yn(info.subgroup_shuffle), yn(info.fp16_arith),
            yn(info.int8_arith), yn(info.storage16),
            yn(info.storage8), yn(info.coopmat_nv), yn(info.coopmat_khr), yn(x.robust_access),
            yn(x.timestamps),
            api_at_least_12(info.api_version) ? "" : " (Vulkan < 1.2: not usable by kvscope)");
    /* what gpu_create would choose here, KVSCOPE_COOPMAT applied */
    const char *cm = getenv("KVSCOPE_COOPMAT");
    const char *mode = !info.coopmat ? "portable (subgroup or shared-memory sums)"
                       : cm && !strcmp(cm, "off") ? "portable (KVSCOPE_COOPMAT=off)"
                       : cm && !strcmp(cm, "f16") ? "cooperative matrix for F16 weights (KVSCOPE_COOPMAT=f16)"
                       : cm && !strcmp(cm, "all") ? "cooperative matrix, prompts and decode steps (KVSCOPE_COOPMAT=all)"
                       : "cooperative matrix for prompts; decode steps: portable (KVSCOPE_COOPMAT=prefill)";
    fprintf(f, "  matrix kernels: %s%s\n", mode,
            info.coopmat ? "; VK_NV_cooperative_matrix, 16x8x16 f16 -> f32" : "");
  }
  free(pd);
  destroy_instance(inst, VK_NULL_HANDLE);
  return st;
}

/* ---------------------------------------------------------------- device */

static ks_status choose_index(VkPhysicalDevice *pd, uint32_t n, int want, int *out) {
  if (want < 0) {
    const char *e = getenv("KVSCOPE_DEVICE");
    if (e && *e) {
      char *end;
      long v = strtol(e, &end, 10);
      if (*end || v < 0)
        return ks_fail(KS_ERR_ARG, "KVSCOPE_DEVICE='%s' is not a device index (0..%u)", e, n - 1);
      want = (int)v;
    }
  }
  if (want >= 0) {
    if ((uint32_t)want >= n)
      return ks_fail(KS_ERR_ARG, "device %d does not exist: %u Vulkan device%s present (0..%u; "
                                 "`kvscope devices` lists them)", want, n, n == 1 ? "" : "s", n - 1);
    *out = want;
    return KS_OK;
  }
  static const VkPhysicalDeviceType prefer[] = {VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU,
                                                VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU};
  for (size_t k = 0; k < KS_ARRAY_LEN(prefer); k++)
    for (uint32_t i = 0; i < n; i++) {
      VkPhysicalDeviceProperties p;
      vkGetPhysicalDeviceProperties(pd[i], &p);
      if (p.deviceType == prefer[k] && api_at_least_12(p.apiVersion)) {
        *out = (int)i;
        return KS_OK;
      }
    }
  *out = 0;
  return KS_OK;
}

/* a tuning variable's value in [lo, hi], else (unset or out of range) def */
static int env_int(const char *name, int lo, int hi, int def) {
  const char *v = getenv(name);
  int x = v && *v ? atoi(v) : def;
  return x >= lo && x <= hi ? x : def;
}

ks_status gpu_create(ks_gpu **out, int device_index) {
  *out = NULL;
  ks_gpu *g = calloc(1, sizeof *g);
  if (!g) return ks_fail(KS_ERR_NOMEM, "out of host memory creating the GPU context");
  ks_status st = create_instance(&g->inst, &g->messenger, env_flag("KVSCOPE_VALIDATION"));
  VkPhysicalDevice *pd = NULL;
  uint32_t n = 0;
  if (st != KS_OK) goto fail;
  st = enumerate(g->inst, &pd, &n);
  if (st != KS_OK) goto fail;
  if (n == 0) {
    st = ks_fail(KS_ERR_VULKAN, "no Vulkan device found: %s", k_no_device_help);
    goto fail;
  }
  st = choose_index(pd, n, device_index, &g->index);
  if (st != KS_OK) goto fail;
  g->phys = pd[g->index];
  dev_extra x;
  probe(g->inst, g->phys, &g->info, &x);
  if (!api_at_least_12(g->info.api_version)) {
    st = ks_fail(KS_ERR_UNSUPPORTED, "device %d (%s) supports Vulkan %u.%u; kvscope needs 1.2 or "
                                     "newer (update the driver, or choose another device)",
                 g->index, g->info.name, VK_API_VERSION_MAJOR(g->info.api_version),
                 VK_API_VERSION_MINOR(g->info.api_version));
    goto fail;
  }
  if (!x.has_compute_queue) {
    st = ks_fail(KS_ERR_UNSUPPORTED, "device %d (%s) has no compute queue", g->index, g->info.name);
    goto fail;
  }
  g->qfam = x.qfam;
  g->timestamp_bits = x.timestamps ? x.ts_bits : 0;
  for (int i = 0; i < 3; i++) g->max_groups[i] = x.max_groups[i];
  vkGetPhysicalDeviceMemoryProperties(g->phys, &g->mem);

  /* Enable exactly the optional features that exist; robust buffer access (out-of-range reads
   * give 0, writes are dropped) unless KVSCOPE_ROBUST=0 asks for the last bit of speed. */
  const char *robust_env = getenv("KVSCOPE_ROBUST");
  g->info.robust_access = x.robust_access && !(robust_env && strcmp(robust_env, "0") == 0);
  g->info.timestamps = g->timestamp_bits > 0;
  const char *nosg_env = getenv("KVSCOPE_NO_SUBGROUP");
  g->no_subgroup = nosg_env && strcmp(nosg_env, "1") == 0;
  const char *cm_env = getenv("KVSCOPE_COOPMAT");
  g->coopmat_mode = g->info.coopmat ? 3 : 0;
  if (cm_env && *cm_env) {
    int mode = !strcmp(cm_env, "off") ? 0 : !strcmp(cm_env, "f16") ? 1 : !strcmp(cm_env, "all") ? 2
             : !strcmp(cm_env, "prefill") ? 3 : -1;
    if (mode < 0) {
      st = ks_fail(KS_ERR_ARG, "KVSCOPE_COOPMAT='%s' must be off, prefill, f16 or all", cm_env);
      goto fail;
    }
    if (g->info.coopmat) g->coopmat_mode = mode;
  }
  g->info.coopmat = g->coopmat_mode != 0;
  /* keys per attention chunk (attention.comp's workgroup size): part of the numerics. A GPU
   * takes 128 (more lanes in flight per chunk); a CPU implementation such as lavapipe, whose
   * lanes run in turn, 64 (a decode step's chunk then holds fewer idle lanes) */
  const int cpu_dev = g->info.type == VK_PHYSICAL_DEVICE_TYPE_CPU;
  g->attn_wg = cpu_dev ? 64 : 128;
  const char *aw_env = getenv("KVSCOPE_ATTN_WG");
  if (aw_env && *aw_env) {
    if (strcmp(aw_env, "64") && strcmp(aw_env, "128") && strcmp(aw_env, "256")) {
      st = ks_fail(KS_ERR_ARG, "KVSCOPE_ATTN_WG='%s' must be 64, 128 or 256", aw_env);
      goto fail;
    }
    g->attn_wg = atoi(aw_env);
  }
  /* loads in flight before their products: GPUs hide latency with them (16, 8); a CPU device's
   * lanes run in turn, where the unrolled batches only cost (lavapipe: 4, 4 the fastest) */
  g->attn_kb = env_int("KVSCOPE_ATTN_KB", 1, 64, cpu_dev ? 4 : 16);
  g->attn_vb = env_int("KVSCOPE_ATTN_VB", 1, 64, cpu_dev ? 4 : 8);
  /* query rows a prompt's attention workgroup takes (they share every K/V load; each row's
   * arithmetic is the same whatever the number): 2 on GPUs (H200: 1/2/4/8 measured), 8 on CPU
   * devices (lavapipe pp512: +15% kvscope-tiny, +30% stories260K against 2) */
  g->attn_tr = env_int("KVSCOPE_ATTN_TR", 1, 8, cpu_dev ? 8 : 2);
  const char *rd_env = getenv("KVSCOPE_MM_RDEC");
  g->mm_rdec = 0; /* by weight type (gpu_ops.c) */
  if (rd_env && *rd_env) {
    if (strcmp(rd_env, "2") && strcmp(rd_env, "4")) {
      st = ks_fail(KS_ERR_ARG, "KVSCOPE_MM_RDEC='%s' must be 2 or 4", rd_env);
      goto fail;
    }
    g->mm_rdec = atoi(rd_env);
  }
  g->mm_udec = env_int("KVSCOPE_MM_U", 1, 4, 0);
  g->mm_split_dec = env_int("KVSCOPE_MM_SPLIT_DEC", 1, 8, 0);
  if (g->mm_split_dec & (g->mm_split_dec - 1)) g->mm_split_dec = 0; /* powers of two only */
  VkPhysicalDeviceCooperativeMatrixFeaturesNV cmf = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
      .cooperativeMatrix = VK_TRUE,
  };
  VkPhysicalDeviceVulkan12Features f12 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
      .shaderFloat16 = (VkBool32)g->info.fp16_arith,
      .shaderInt8 = (VkBool32)g->info.int8_arith,
      .storageBuffer8BitAccess = (VkBool32)g->info.storage8,
      .vulkanMemoryModel = (VkBool32)g->info.coopmat,
      .pNext = g->info.coopmat ? &cmf : NULL,
  };
  VkPhysicalDeviceVulkan11Features f11 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
      .pNext = &f12,
      .storageBuffer16BitAccess = (VkBool32)g->info.storage16,
  };
  const char *ps_env = getenv("KVSCOPE_PIPELINE_STATS");
  const int want_stats = ps_env && !strcmp(ps_env, "1");
  if (want_stats && !x.pipeline_exec)
    fprintf(stderr, "kvscope: KVSCOPE_PIPELINE_STATS: %s has no "
                    "VK_KHR_pipeline_executable_properties; no statistics\n", g->info.name);
  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pef = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
      .pNext = &f11,
      .pipelineExecutableInfo = VK_TRUE,
  };
  VkPhysicalDeviceFeatures2 f2 = {
      .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
      .pNext = want_stats && x.pipeline_exec ? (void *)&pef : (void *)&f11,
  };
  f2.features.robustBufferAccess = (VkBool32)g->info.robust_access;
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qci = {
      .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
      .queueFamilyIndex = g->qfam,
      .queueCount = 1,
      .pQueuePriorities = &prio,
  };
  const char *dev_ext[4];
  uint32_t n_dev_ext = 0;
  if (x.portability_subset) dev_ext[n_dev_ext++] = "VK_KHR_portability_subset";
  if (g->info.coopmat) dev_ext[n_dev_ext++] = "VK_NV_cooperative_matrix";
  if (want_stats && x.pipeline_exec) dev_ext[n_dev_ext++] = "VK_KHR_pipeline_executable_properties";
  VkDeviceCreateInfo dci = {
      .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
      .pNext = &f2,
      .queueCreateInfoCount = 1,
      .pQueueCreateInfos = &qci,
      .enabledExtensionCount = n_dev_ext,
      .ppEnabledExtensionNames = dev_ext,
  };
  VK_TRY(vkCreateDevice(g->phys, &dci, NULL, &g->dev));
  vkGetDeviceQueue(g->dev, g->qfam, 0, &g->queue);
  if (want_stats && x.pipeline_exec) {
    g->pexec_props = (PFN_vkGetPipelineExecutablePropertiesKHR)vkGetDeviceProcAddr(
        g->dev, "vkGetPipelineExecutablePropertiesKHR");
    g->pexec_stats = (PFN_vkGetPipelineExecutableStatisticsKHR)vkGetDeviceProcAddr(
        g->dev, "vkGetPipelineExecutableStatisticsKHR");
  }

  if ((st = gpu_cmd_objects_create(g, &g->xfer_pool, &g->xfer_cb, &g->xfer_fence))) goto fail;
  VkPipelineCacheCreateInfo pcci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  VK_TRY(vkCreatePipelineCache(g->dev, &pcci, NULL, &g->pcache));

  g->slice_limit = g->info.max_storage_range;
  const char *lim = getenv("KVSCOPE_MAX_BUFFER_RANGE");
  if (lim && *lim) {
    char *end;
    unsigned long long v = strtoull(lim, &end, 10);
    if (*end || v < 64) {
      st = ks_fail(KS_ERR_ARG, "KVSCOPE_MAX_BUFFER_RANGE='%s' must be a byte count >= 64", lim);
      goto fail;
    }
    if (v < g->slice_limit) g->slice_limit = v;
  }
  free(pd);
  *out = g;
  return KS_OK;
fail:
  free(pd);
  gpu_destroy(g);
  return st;
}

static atomic_int_fast64_t g_leaked;

int64_t gpu_leaked_allocations(void) { return (int64_t)atomic_load(&g_leaked); }

void gpu_destroy(ks_gpu *g) {
  if (!g) return;
  if (g->dev) {
    vkDeviceWaitIdle(g->dev);
    gpu_ops_release(g);
    gpu_buf_destroy_internal(g, &g->staging);
    if (g->live != 0) {
      fprintf(stderr, "kvscope: gpu_destroy: %lld device allocation(s) still alive (a leak)\n",
              (long long)g->live);
      atomic_fetch_add(&g_leaked, g->live);
    }
    if (g->pcache) vkDestroyPipelineCache(g->dev, g->pcache, NULL);
    if (g->xfer_fence) vkDestroyFence(g->dev, g->xfer_fence, NULL);
    if (g->xfer_pool) vkDestroyCommandPool(g->dev, g->xfer_pool, NULL);
    vkDestroyDevice(g->dev, NULL);
  }
  destroy_instance(g->inst, g->messenger);
  free(g);
}

const ks_gpu_info *gpu_info(const ks_gpu *g) { return &g->info; }
int gpu_device_index(const ks_gpu *g) { return g->index; }
int64_t gpu_live_allocations(const ks_gpu *g) { return g ? g->live : 0; }
int gpu_device_lost(const ks_gpu *g) { return g && g->device_lost; }

/* ---------------------------------------------------------------- buffers */

static int find_mem_type(const ks_gpu *g, uint32_t bits, VkMemoryPropertyFlags want) {
  for (uint32_t i = 0; i < g->mem.memoryTypeCount; i++)
    if ((bits & (1u << i)) && (g->mem.memoryTypes[i].propertyFlags & want) == want) return (int)i;
  return -1;
}

/* KVSCOPE_TEST_DEVICE_MEMORY_MB=N (tests only; docs/testing.md): a device with N MiB of device
 * memory. *limit is UINT64_MAX when the variable is unset or empty. */
static ks_status test_device_limit(uint64_t *limit) {
  *limit = UINT64_MAX;
  const char *e = getenv("KVSCOPE_TEST_DEVICE_MEMORY_MB");
  if (!e || !*e) return KS_OK;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(e, &end, 10);
  if (*end || e[0] == '-' || errno || v > (UINT64_MAX >> 20))
    return ks_fail(KS_ERR_ARG, "KVSCOPE_TEST_DEVICE_MEMORY_MB='%s' must be a number of MiB", e);
  *limit = (uint64_t)v << 20;
  return KS_OK;
}

/* Bytes a KS_MEM_DEVICE buffer of `size` counts for in g->device_bytes. */
static uint64_t device_charge(uint64_t size) { return (size + 15) & ~15ull; }

static ks_status buf_create(ks_gpu *g, ks_buf *b, uint64_t size, ks_mem kind) {
  memset(b, 0, sizeof *b);
  if (size == 0) return ks_fail(KS_ERR_ARG, "gpu_buf_create: size 0");
  uint64_t limit = UINT64_MAX;
  if (kind == KS_MEM_DEVICE) {
    ks_status lst = test_device_limit(&limit);
    if (lst != KS_OK) return lst;
  }
  /* Round the allocation to 16 bytes so word-granular shader reads of the last bytes of a
   * quantised row and fills of the whole buffer stay inside it. */
  uint64_t alloc = (size + 15) & ~15ull;
  VkBufferCreateInfo bci = {
      .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
      .size = alloc,
      .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
               VK_BUFFER_USAGE_TRANSFER_DST_BIT,
      .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
  };
  ks_status st = KS_OK;
  VK_TRY(vkCreateBuffer(g->dev, &bci, NULL, &b->buf));
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(g->dev, b->buf, &req);
  int mt = -1;
  if (kind == KS_MEM_HOST) {
    mt = find_mem_type(g, req.memoryTypeBits,
                       VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT |
                           VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    if (mt < 0)
      mt = find_mem_type(g, req.memoryTypeBits,
                         VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT);
  } else {
    mt = find_mem_type(g, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    if (mt < 0) mt = find_mem_type(g, req.memoryTypeBits, 0);
  }
  if (mt < 0) {
    st = ks_fail(KS_ERR_VULKAN, "no suitable %s memory type for a %llu-byte buffer",
                 kind == KS_MEM_HOST ? "host-visible coherent" : "device", (unsigned long long)size);
    goto fail;
  }
  VkMemoryAllocateInfo mai = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
      .allocationSize = req.size,
      .memoryTypeIndex = (uint32_t)mt,
  };
  VkResult r;
  if (limit != UINT64_MAX && (device_charge(size) > limit ||
                              g->device_bytes > limit - device_charge(size)))
    r = VK_ERROR_OUT_OF_DEVICE_MEMORY; /* the simulated device is full, as its driver would say */
  else
    r = vkAllocateMemory(g->dev, &mai, NULL, &b->mem);
  if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY) {
    uint64_t heap = g->mem.memoryHeaps[g->mem.memoryTypes[mt].heapIndex].size;
    if (heap > limit) heap = limit;
    st = ks_fail(KS_ERR_NOMEM, "out of %s memory: allocating %.1f MiB on %s failed (%s) with "
                 "%.1f MiB of device memory already held by kvscope, of a %.1f MiB memory heap%s%s",
                 kind == KS_MEM_HOST ? "host-visible" : "device", size / 1048576.0, g->info.name,
                 gpu_vk_result_name(r), g->device_bytes / 1048576.0, heap / 1048576.0,
                 limit != UINT64_MAX ? " (KVSCOPE_TEST_DEVICE_MEMORY_MB)" : "",
                 gpu_vk_result_hint(r));
    goto fail;
  }
  VK_TRY(r);
  VK_TRY(vkBindBufferMemory(g->dev, b->buf, b->mem, 0));
  if (kind == KS_MEM_HOST) VK_TRY(vkMapMemory(g->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map));
  b->size = size;
  if (kind == KS_MEM_DEVICE) g->device_bytes += device_charge(size);
  return KS_OK;
fail:
  if (b->buf) vkDestroyBuffer(g->dev, b->buf, NULL);
  if (b->mem) vkFreeMemory(g->dev, b->mem, NULL);
  memset(b, 0, sizeof *b);
  return st;
}

static void buf_destroy(ks_gpu *g, ks_buf *b) {
  if (b->mem && !b->map) g->device_bytes -= device_charge(b->size); /* a KS_MEM_DEVICE buffer */
  if (b->map) vkUnmapMemory(g->dev, b->mem);
  if (b->buf) vkDestroyBuffer(g->dev, b->buf, NULL);
  if (b->mem) vkFreeMemory(g->dev, b->mem, NULL);
  memset(b, 0, sizeof *b);
}

ks_status gpu_buf_create(ks_gpu *g, ks_buf *b, uint64_t size, ks_mem kind) {
  ks_status st = buf_create(g, b, size, kind);
  if (st == KS_OK) g->live += 2;
  return st;
}

void gpu_buf_destroy(ks_gpu *g, ks_buf *b) {
  if (!g || !b || (!b->buf && !b->mem)) return;
  g->live -= (b->buf ? 1 : 0) + (b->mem ? 1 : 0);
  buf_destroy(g, b);
}

ks_status gpu_buf_create_internal(ks_gpu *g, ks_buf *b, uint64_t size, ks_mem kind) {
  return buf_create(g, b, size, kind);
}
void gpu_buf_destroy_internal(ks_gpu *g, ks_buf *b) {
  if (g && b) buf_destroy(g, b);
}

/* ---------------------------------------------------------------- transfers */

static ks_status xfer_begin(ks_gpu *g) {
  VK_CHECK(vkResetCommandBuffer(g->xfer_cb, 0));
  VkCommandBufferBeginInfo bi = {
      .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
      .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
  };
  VK_CHECK(vkBeginCommandBuffer(g->xfer_cb, &bi));
  return KS_OK;
}

static ks_status xfer_submit_wait(ks_gpu *g) {
  VK_CHECK(vkEndCommandBuffer(g->xfer_cb));
  VK_CHECK(vkResetFences(g->dev, 1, &g->xfer_fence));
  VkSubmitInfo si = {
      .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
      .commandBufferCount = 1,
      .pCommandBuffers = &g->xfer_cb,
  };
  VkResult r = g->device_lost ? VK_ERROR_DEVICE_LOST
                              : vkQueueSubmit(g->queue, 1, &si, g->xfer_fence);
  ks_status st = gpu_check_queue(g, r, "vkQueueSubmit", __FILE__, __LINE__);
  if (st != KS_OK) return st;
  r = vkWaitForFences(g->dev, 1, &g->xfer_fence, VK_TRUE, UINT64_MAX);
  return gpu_check_queue(g, r, "vkWaitForFences", __FILE__, __LINE__);
}

static void mem_barrier(VkCommandBuffer cb, VkPipelineStageFlags src, VkAccessFlags src_access,
                        VkPipelineStageFlags dst, VkAccessFlags dst_access) {
  VkMemoryBarrier mb = {
      .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
      .srcAccessMask = src_access,
      .dstAccessMask = dst_access,
  };
  vkCmdPipelineBarrier(cb, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

/* Earlier compute/transfer work (possibly still in flight from another command buffer) is
 * ordered before a transfer that reads or overwrites the same memory. */
static void barrier_before_transfer(VkCommandBuffer cb) {
  mem_barrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
              VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
              VK_PIPELINE_STAGE_TRANSFER_BIT,
              VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT);
}
/* A transfer's writes become visible to later compute work, transfers and host reads. */
static void barrier_after_transfer(VkCommandBuffer cb) {
  mem_barrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_ACCESS_TRANSFER_WRITE_BIT,
              VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                  VK_PIPELINE_STAGE_HOST_BIT,
              VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                  VK_ACCESS_TRANSFER_WRITE_BIT | VK_ACCESS_HOST_READ_BIT);
}

static ks_status ensure_staging(ks_gpu *g) {
  if (g->staging.buf) return KS_OK;
  return gpu_buf_create_internal(g, &g->staging, KS_STAGING_BYTES, KS_MEM_HOST);
}

static ks_status check_range(const ks_buf *b, uint64_t off, uint64_t n, const char *what) {
  if (!b || !b->buf) return ks_fail(KS_ERR_ARG, "%s: buffer not created", what);
  if (off > b->size || n > b->size - off)
    return ks_fail(KS_ERR_ARG, "%s: bytes [%llu, %llu) outside the %llu-byte buffer", what,
                   (unsigned long long)off, (unsigned long long)(off + n),
                   (unsigned long long)b->size);
  return KS_OK;
}

void gpu_upload_progress(ks_gpu *g, const char *what, uint64_t total_bytes) {
  g->prog_what = what;
  g->prog_total = total_bytes;
  g->prog_done = 0;
}

static void progress_add(ks_gpu *g, uint64_t n) {
  if (!g->prog_total) return;
  g->prog_done += n;
  if (g->prog_done > g->prog_total) g->prog_done = g->prog_total;
  ks_progress(g->prog_what, g->prog_done, g->prog_total);
  if (g->prog_done >= g->prog_total) g->prog_total = 0;
}

ks_status gpu_upload(ks_gpu *g, ks_buf *dst, uint64_t off, const void *src, uint64_t n) {
  ks_status st = check_range(dst, off, n, "gpu_upload");
  if (st != KS_OK || n == 0) return st;
  if (dst->map) {
    memcpy((char *)dst->map + off, src, n);
    progress_add(g, n);
    return KS_OK;
  }
  if ((st = ensure_staging(g)) != KS_OK) return st;
  const char *s = src;
  while (n) {
    uint64_t chunk = KS_MIN(n, KS_STAGING_BYTES);
    memcpy(g->staging.map, s, chunk);
    if ((st = xfer_begin(g)) != KS_OK) return st;
    barrier_before_transfer(g->xfer_cb);
    VkBufferCopy region = {.srcOffset = 0, .dstOffset = off, .size = chunk};
    vkCmdCopyBuffer(g->xfer_cb, g->staging.buf, dst->buf, 1, &region);
    barrier_after_transfer(g->xfer_cb);
    if ((st = xfer_submit_wait(g)) != KS_OK) return st;
    s += chunk;
    off += chunk;
    n -= chunk;
    progress_add(g, chunk);
  }
  return KS_OK;
}

ks_status gpu_download(ks_gpu *g, const ks_buf *src, uint64_t off, void *dst, uint64_t n) {
  ks_status st = check_range(src, off, n, "gpu_download");
  if (st != KS_OK || n == 0) return st;
  if (src->map) {
    memcpy(dst, (const char *)src->map + off, n);
    return KS_OK;
  }
  if ((st = ensure_staging(g)) != KS_OK) return st;
  char *d = dst;
  while (n) {
    uint64_t chunk = KS_MIN(n, KS_STAGING_BYTES);
    if ((st = xfer_begin(g)) != KS_OK) return st;
    barrier_before_transfer(g->xfer_cb);
    VkBufferCopy region = {.srcOffset = off, .dstOffset = 0, .size = chunk};
    vkCmdCopyBuffer(g->xfer_cb, src->buf, g->staging.buf, 1, &region);
    barrier_after_transfer(g->xfer_cb);
    if ((st = xfer_submit_wait(g)) != KS_OK) return st;
    memcpy(d, g->staging.map, chunk);
    d += chunk;
    off += chunk;
    n -= chunk;
  }
  return KS_OK;
}

ks_status gpu_fill_u32(ks_gpu *g, ks_buf *dst, uint64_t off, uint64_t n, uint32_t word) {
  ks_status st = check_range(dst, off, n, "gpu_fill_u32");
  if (st != KS_OK || n == 0) return st;
  if ((off | n) & 3)
    return ks_fail(KS_ERR_ARG, "gpu_fill_u32: offset %llu and size %llu must be multiples of 4",
                   (unsigned long long)off, (unsigned long long)n);
  if (dst->map) {
    uint32_t *p = (uint32_t *)((char *)dst->map + off);
    for (uint64_t i = 0; i < n / 4; i++) p[i] = word;
    return KS_OK;
  }
  if ((st = xfer_begin(g)) != KS_OK) return st;
  barrier_before_transfer(g->xfer_cb);
  vkCmdFillBuffer(g->xfer_cb, dst->buf, off, n, word);
  barrier_after_transfer(g->xfer_cb);
  return xfer_submit_wait(g);
}

/* ---------------------------------------------------------------- weight tensors */

void gpu_tensor_free(ks_gpu *g, ks_gpu_tensor *t) {
  if (!t) return;
  if (t->slices)
    for (int i = 0; i < t->n_slices; i++) gpu_buf_destroy(g, &t->slices[i]);
  free(t->slices);
  memset(t, 0, sizeof *t);
}

int gpu_type_split_blocks(ks_type t) { return t == KS_TYPE_Q8_0 || t == KS_TYPE_Q4_0; }

/* Rows [r0, r0 + nr) of a tensor of `total` rows of K values, from the stored layout at src into
 * the device layout of dst (a buffer of exactly those `total` rows). Q8_0 and Q4_0 are split
 * (gpu.h): block i = row * nb + b keeps its quant bytes at i * qb and its f16 scale at
 * total * nb * qb + 2 i; every other type is copied as stored. */
static ks_status upload_rows(ks_gpu *g, ks_buf *dst, ks_type type, int64_t K, int64_t total,
                             int64_t r0, const void *src, int64_t nr) {
  const uint64_t row = ks_type_row_bytes(type, K);
  if (!gpu_type_split_blocks(type))
    return gpu_upload(g, dst, row * (uint64_t)r0, src, row * (uint64_t)nr);
  const uint64_t nb = (uint64_t)K / 32, bb = ks_type_block_bytes(type), qb = bb - 2;
  const uint64_t sc_base = (uint64_t)total * nb * qb;
  /* a few MiB of rows at a time: their quant bytes, then their scales */
  int64_t step = (int64_t)KS_MAX((uint64_t)1, (8ull << 20) / row);
  if (step > nr) step = nr;
  unsigned char *q = malloc((size_t)(row * (uint64_t)step));
  if (!q) return ks_fail(KS_ERR_NOMEM, "out of host memory for the weight upload");
  ks_status st = KS_OK;
  for (int64_t r = 0; r < nr && st == KS_OK; r += step) {
    const int64_t n = KS_MIN(step, nr - r);
    const unsigned char *in = (const unsigned char *)src + row * (uint64_t)r;
    const uint64_t nblk = nb * (uint64_t)n;
    unsigned char *sc = q + nblk * qb;
    for (uint64_t i = 0; i < nblk; i++) {
      memcpy(sc + 2 * i, in + i * bb, 2);
      memcpy(q + i * qb, in + i * bb + 2, qb);
    }
    const uint64_t first = nb * (uint64_t)(r0 + r); /* block index of this piece's first block */
    st = gpu_upload(g, dst, first * qb, q, nblk * qb);
    if (st == KS_OK) st = gpu_upload(g, dst, sc_base + first * 2, sc, nblk * 2);
  }
  free(q);
  return st;
}

ks_status gpu_tensor_upload_concat(ks_gpu *g, ks_gpu_tensor *t, const ks_tensor *const *parts,
                                   int n) {
  memset(t, 0, sizeof *t);
  if (n <= 0) return KS_ERR_UNSUPPORTED;
  ks_type type = parts[0]->type;
  int64_t k = parts[0]->ne[0], rows = 0;
  if (!gpu_type_supported(type) || k <= 0) return KS_ERR_UNSUPPORTED;
  uint64_t row = ks_type_row_bytes(type, k);
  for (int i = 0; i < n; i++) {
    const ks_tensor *p = parts[i];
    int64_t r = p->ne[1] > 0 ? p->ne[1] : 1;
    if (p->type != type || p->ne[0] != k || !p->data || p->nbytes < row * (uint64_t)r)
      return KS_ERR_UNSUPPORTED;
    rows += r;
  }
  uint64_t total = row * (uint64_t)rows;
  if (row == 0 || total > g->slice_limit) return KS_ERR_UNSUPPORTED;
  t->slices = calloc(1, sizeof *t->slices);
  if (!t->slices) return ks_fail(KS_ERR_NOMEM, "out of host memory for tensor slices");
  t->type = type;
  t->ne[0] = k;
  t->ne[1] = rows;
  t->rows_per_slice = rows;
  t->n_slices = 1;
  ks_status st = gpu_buf_create(g, &t->slices[0], total, KS_MEM_DEVICE);
  int64_t r0 = 0;
  for (int i = 0; i < n && st == KS_OK; i++) {
    int64_t nr = parts[i]->ne[1] > 0 ? parts[i]->ne[1] : 1;
    st = upload_rows(g, &t->slices[0], type, k, rows, r0, parts[i]->data, nr);
    r0 += nr;
  }
  if (st != KS_OK) gpu_tensor_free(g, t);
  return st;
}

ks_status gpu_tensor_upload(ks_gpu *g, ks_gpu_tensor *t, const ks_tensor *host) {
  memset(t, 0, sizeof *t);
  ks_type src_type = host->type;
  ks_type type = src_type; /* every type stays as stored: the kernels dequantise (gpu_ops.c) */
  if (!gpu_type_supported(type))
    return ks_fail(KS_ERR_UNSUPPORTED, "tensor type %s has no GPU kernel (supported: F32, F16, "
                                       "BF16, Q8_0, Q4_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)",
                   ks_type_name(src_type));
  int64_t n = host->ne[0], rows = host->ne[1] > 0 ? host->ne[1] : 1;
  uint64_t src_row = ks_type_row_bytes(src_type, n);
  uint64_t row = ks_type_row_bytes(type, n);
  if (n <= 0 || src_row == 0 || row == 0)
    return ks_fail(KS_ERR_FORMAT, "tensor row length %lld is not a whole number of %s blocks",
                   (long long)n, ks_type_name(src_type));
  if (!host->data || host->nbytes < src_row * (uint64_t)rows)
    return ks_fail(KS_ERR_FORMAT, "tensor of %lld x %lld %s needs %llu bytes, has %llu",
                   (long long)n, (long long)rows, ks_type_name(src_type),
                   (unsigned long long)(src_row * rows), (unsigned long long)host->nbytes);
  if (row > g->slice_limit)
    return ks_fail(KS_ERR_UNSUPPORTED, "one tensor row of %llu bytes exceeds the device's storage "
                                       "buffer range (%llu bytes)", (unsigned long long)row,
                   (unsigned long long)g->slice_limit);
  int64_t per = (int64_t)(g->slice_limit / row);
  if (per > rows) per = rows;
  t->type = type;
  t->ne[0] = n;
  t->ne[1] = rows;
  t->rows_per_slice = per;
  t->n_slices = (int)((rows + per - 1) / per);
  t->slices = calloc((size_t)t->n_slices, sizeof *t->slices);
  if (!t->slices) {
    memset(t, 0, sizeof *t);
    return ks_fail(KS_ERR_NOMEM, "out of host memory for tensor slices");
  }
  uint64_t total = row * (uint64_t)rows;
  int own_progress = g->prog_total == 0 && total >= (64ull << 20);
  if (own_progress) gpu_upload_progress(g, "uploading weights", total);
  ks_status st = KS_OK;
  for (int s = 0; s < t->n_slices && st == KS_OK; s++) {
    int64_t r0 = (int64_t)s * per, nr = KS_MIN(per, rows - r0);
    st = gpu_buf_create(g, &t->slices[s], row * (uint64_t)nr, KS_MEM_DEVICE);
    if (st != KS_OK) break;
    st = upload_rows(g, &t->slices[s], type, n, nr, 0,
                     (const char *)host->data + src_row * (uint64_t)r0, nr);
  }
  if (own_progress) g->prog_total = 0;
  if (st != KS_OK) gpu_tensor_free(g, t);
  return st;
}
