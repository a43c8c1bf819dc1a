#!/usr/bin/env bash
# cli_device_memory.sh — a model (or its K/V cache) bigger than device memory, through the real
# binary: KVSCOPE_TEST_DEVICE_MEMORY_MB=N (docs/testing.md) makes device allocations fail with
# VK_ERROR_OUT_OF_DEVICE_MEMORY once N MiB are held, as a small GPU's driver would. Each case must
# end with exit status 1, a message saying what failed, what the run needs against what the
# device has and what to do, no device allocation left alive and no crash.
source "$(dirname "$0")/cli_lib.bash" "$@"
K=$KVSCOPE
need_device
# the stderr of the last expect_fail must match every pattern given
no_leak() {
  if grep -q "still alive (a leak)" "$TMP/err"; then bad "$1: device allocations leaked"; sed 's/^/  /' "$TMP/err"
  else ok "$1: no device allocation left alive"; fi
}
P="Once upon a time"

# 2 MiB: the default model's 6.3 MiB of weights cannot even be uploaded
expect_fail "model bigger than device memory" 1 "does not fit in the memory of" -- \
  env KVSCOPE_TEST_DEVICE_MEMORY_MB=2 $K run -p "$P" -n 4
err_has "model bigger than device memory" \
  "needs about [0-9.]+ MiB \([0-9.]+ MiB of weights" \
  "of a 2\.0 MiB memory heap" \
  "VK_ERROR_OUT_OF_DEVICE_MEMORY" \
  "smaller or quantised model" "lower the context \(-c\), --cache-mb"
no_leak "model bigger than device memory"

# 12 MiB: the weights fit, the K/V cache of a 4096-token context (4 contexts: 64 MiB) does not
expect_fail "K/V cache bigger than device memory" 1 "does not fit in the memory of" -- \
  env KVSCOPE_TEST_DEVICE_MEMORY_MB=12 $K run -p "$P" -n 4 -c 4096
err_has "K/V cache bigger than device memory" \
  "64\.0 MiB of K/V cache for 16384 positions: room for 4 contexts of -c 4096" \
  "allocating 8\.0 MiB .* with ([6-9]|1[01])\.[0-9] MiB of device memory already held" \
  "of a 12\.0 MiB memory heap" "lower the context \(-c\)"
no_leak "K/V cache bigger than device memory"

# the same budget with the cache sized by --cache-mb: the message names that flag
expect_fail "--cache-mb bigger than device memory" 1 "does not fit in the memory of" -- \
  env KVSCOPE_TEST_DEVICE_MEMORY_MB=12 $K run -p "$P" -n 4 --cache-mb 32
err_has "--cache-mb bigger than device memory" "32\.0 MiB of K/V cache for [0-9]+ positions: --cache-mb 32" "--cache-mb"
no_leak "--cache-mb bigger than device memory"

# chat and tui go through the same engine: chat answers with the same message
printf 'hello\n' >"$TMP/chat.in"
expect_fail "chat with too little device memory" 1 "does not fit in the memory of.*smaller or quantised" -- \
  env KVSCOPE_TEST_DEVICE_MEMORY_MB=4 $K chat -n 4 <"$TMP/chat.in"

# a budget that holds everything: the run is unchanged (the knob only counts)
$K run -p "$P" -n 8 --temp 0 --json >"$TMP/free.json" 2>"$TMP/free.err"
env KVSCOPE_TEST_DEVICE_MEMORY_MB=64 $K run -p "$P" -n 8 --temp 0 --json >"$TMP/fit.json" 2>"$TMP/fit.err"
rc=$?
ids() { sed -n 's/.*"token_ids":\[\([0-9,]*\)\].*/\1/p' "$1"; }
if [ $rc = 0 ] && [ -n "$(ids "$TMP/fit.json")" ] && [ "$(ids "$TMP/fit.json")" = "$(ids "$TMP/free.json")" ]; then
  ok "64 MiB is enough: same tokens as without the limit"
else bad "64 MiB budget: exit $rc"; cat "$TMP/fit.err"; fi

expect_fail "malformed KVSCOPE_TEST_DEVICE_MEMORY_MB" 1 "KVSCOPE_TEST_DEVICE_MEMORY_MB='lots'" -- \
  env KVSCOPE_TEST_DEVICE_MEMORY_MB=lots $K run -p "$P" -n 4
finish
