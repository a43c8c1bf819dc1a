#!/usr/bin/env bash
# cli_host_memory.sh — host memory allocation failures through the real binary, with a real
# limit on the process: its address space is capped (bash `ulimit -v`), so mmap and malloc fail as
# they would on a machine without the memory. Every case must end with exit status 1, an "out of
# host memory" message that says what was being allocated and what to do, and no crash.
#
# The cap is calibrated first: the smallest one (to 64 MiB) under which an ordinary run passes
# twice, so the cases can leave lavapipe room to start (it may crash inside vkCreateDevice when it
# cannot, which is no fault of kvscope) and still fail the big allocation under test.
# MALLOC_ARENA_MAX=1 and LP_NUM_THREADS=2 keep the address space of a run steady: glibc otherwise
# reserves a 64 MiB arena for each thread that happens to contend, and lavapipe starts a thread
# per core. Sanitizer builds cannot run under `ulimit -v` (the shadow memory alone exceeds any
# cap): there the allocator itself refuses the big allocations (max_allocation_size_mb), and the
# case that needs mmap to fail is skipped.
source "$(dirname "$0")/cli_lib.bash" "$@"
K=$KVSCOPE
P="Once upon a time"
have_gpu=1
if ! "$K" devices >/dev/null 2>&1; then
  if [ "${KVSCOPE_REQUIRE_GPU:-0}" != 0 ]; then bad "no Vulkan device but KVSCOPE_REQUIRE_GPU=1"; finish; exit 1; fi
  have_gpu=0
  echo "no Vulkan device: the case that needs one is skipped"
fi

if ldd "$K" 2>/dev/null | grep -q libasan; then
  mode=asan
  echo "sanitizer build: the allocator refuses big allocations instead of ulimit -v"
  asan() { env ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}allocator_may_return_null=1:max_allocation_size_mb=$1" "${@:2}"; }
  CTX=1000000000 # 3.7 GiB of token ids
  CPU_CTX=2000000 # 7.6 GiB of CPU K/V cache
  big_tokens() { asan 2048 "$@"; }
  big_cpu() { asan 2048 "$@"; }
  big_kv() { asan 100 "$@"; } # the K/V pools are 125 MiB each
else
  mode=ulimit
  export MALLOC_ARENA_MAX=1 LP_NUM_THREADS=2
  capped() { local kib=$1; shift; (ulimit -v "$kib" && exec "$@"); }
  runs_under() { # MiB: an ordinary run passes twice under that cap
    for _ in 1 2; do capped $(($1 * 1024)) "$K" run -p "$P" -n 4 --temp 0 $2 >/dev/null 2>&1 || return 1; done
  }
  probe_args=""; [ $have_gpu = 1 ] || probe_args="--cpu"
  lo=0 hi=256
  while ! runs_under $hi "$probe_args"; do
    lo=$hi; hi=$((hi * 2))
    if [ $hi -gt 16384 ]; then echo "SKIP: no address-space cap up to 16 GiB lets an ordinary run pass"; exit 77; fi
  done
  while [ $((hi - lo)) -gt 64 ]; do
    mid=$(((lo + hi) / 2))
    if runs_under $mid "$probe_args"; then hi=$mid; else lo=$mid; fi
  done
  CAP=$((hi + 128)) # MiB: room for device creation and the weights, not for 1000 MiB of K/V
  echo "an ordinary run needs an address space of at most $hi MiB; the cases run under $CAP MiB"
  # each big allocation is several times the whole cap
  CTX=$((CAP * 1048576)); [ $CTX -gt 2000000000 ] && CTX=2000000000 # 4 bytes per token id
  CPU_CTX=$((CAP * 256 * 2)); [ $CPU_CTX -gt 100000000 ] && CPU_CTX=100000000 # 4 KiB per position
  if [ $CAP -gt 1800 ]; then echo "SKIP: the cap ($CAP MiB) is too large to make the allocations under test fail"; exit 77; fi
  big_tokens() { capped $((CAP * 1024)) "$@"; }
  big_cpu() { capped $((CAP * 1024)) "$@"; }
  big_kv() { capped $((CAP * 1024)) "$@"; }
fi

# a context whose token buffer alone exceeds the memory left (before any device is opened)
expect_fail "context too large for host memory" 1 "out of host memory allocating [0-9.]+ MiB for the tokens of a $CTX-token context" -- \
  big_tokens "$K" run -p "$P" -n 4 -c $CTX
err_has "context too large for host memory" "lower the context \(-c\)"

# the CPU reference's K/V cache (--cpu) for a long context
expect_fail "CPU K/V cache too large for host memory" 1 "out of host memory for the CPU reference state \(context $CPU_CTX, [0-9.]+ MiB of K/V cache\)" -- \
  big_cpu "$K" run --cpu -p "$P" -n 4 -c $CPU_CTX
err_has "CPU K/V cache too large for host memory" "lower the context \(-c\)"

# past device creation: 1000 MiB of K/V through the driver (lavapipe's device memory is host
# memory); the allocation fails and kvscope says what the run needs
if [ $have_gpu = 1 ]; then
  expect_fail "K/V cache too large after the device is up" 1 "does not fit in the memory of" -- \
    big_kv "$K" run -p "$P" -n 4 --cache-mb 1000
  err_has "K/V cache too large after the device is up" "1000\.0 MiB of K/V cache for [0-9]+ positions: --cache-mb 1000" \
    "out of (device|host-visible) memory: allocating [0-9.]+ MiB on .* failed \(VK_ERROR_OUT_OF_(DEVICE|HOST)_MEMORY\)" \
    "lower the context \(-c\), --cache-mb"
  grep -q "still alive (a leak)" "$TMP/err" && bad "K/V cache too large: device allocations leaked" || ok "K/V cache too large: no device allocation left alive"
fi

# a model file larger than the address space left: mapping it fails (a sparse file: no disk used)
if [ $mode = ulimit ]; then
  cp "$(dirname "$0")/../models/kvscope-tiny.gguf" "$TMP/big.gguf" && truncate -s $(((CAP + 1024) * 1048576)) "$TMP/big.gguf"
  expect_fail "model file larger than host memory" 1 "out of host memory mapping GGUF file '.*big\.gguf' \([0-9.]+ MiB\)" -- \
    big_tokens "$K" run -m "$TMP/big.gguf" -p "$P" -n 4
  err_has "model file larger than host memory" "smaller model"
  rm -f "$TMP/big.gguf"
else
  echo "skip: model file larger than host memory (mmap is not limited in a sanitizer build)"
fi
finish
