#!/usr/bin/env bash
# test_selftest.sh — `kvscope selftest` on the Vulkan devices present (lavapipe in CI): every check
# passes and the table lists every op, every weight type the GPU computes with, every shape
# class and the end-to-end model rows; --json agrees; and the selftest can fail: a wrong value
# injected into chosen checks (--inject-fault) turns exactly those rows into FAIL and the exit
# status into 1. Bad usage gives status 2, a missing device status 1, each with a message.
source "$(dirname "$0")/cli_lib.bash" "$@"
K=$KVSCOPE

need_device

# the full run
"$K" selftest >"$TMP/table" 2>"$TMP/err"
rc=$?
cat "$TMP/table"
if [ "$rc" = 0 ]; then ok "selftest exits 0"; else bad "selftest exit status $rc"; sed 's/^/  /' "$TMP/err"; fi
if grep -q "FAIL" "$TMP/table"; then bad "table has FAIL rows"; else ok "no FAIL row"; fi
n_rows=$(grep -cE "\| .* (ok|FAIL) *($|  <-)" "$TMP/table")
[ "$n_rows" -ge 90 ] && ok "$n_rows check rows" || bad "only $n_rows check rows"
for pat in "^copy tiny" "^add odd" "^swiglu large" "^rmsnorm large" "^rope neox" "^rope norm far" \
           "^kv_write K" "^attention long context" "^attention probs" "batch vs replayed split decode" \
           "^matmul F16 norm . gate.up swiglu K=[0-9]+ N=19 T=9 \(batch vs 1 token\)" "^rope_kv " \
           "^model: prefill logits vs CPU" "^model: decode-step logits" "^model: greedy tokens" \
           "^model: logits with batch 64 = 7 = " "^device memory: allocations alive"; do
  grep -qE "$pat" "$TMP/table" && ok "row /$pat/" || bad "no row /$pat/"
done
for t in F32 F16 BF16 Q8_0 Q4_0; do
  for cls in "tiny" "odd" "large K" "batch invariance"; do
    grep -qE "^matmul $t $cls " "$TMP/table" && ok "matmul $t $cls" || bad "no row matmul $t $cls"
  done
  grep -qE "^embed $t " "$TMP/table" && ok "embed $t" || bad "no row embed $t"
  grep -qE "^matmul $t .*slices" "$TMP/table" && ok "matmul $t sliced" || bad "no row matmul $t sliced"
done
grep -qE "^device 0: [0-9]+ of [0-9]+ checks passed" "$TMP/table" && ok "summary line" || bad "no summary"
grep -qE "^device 0 model checks: kvscope-tiny.gguf" "$TMP/table" && ok "default model used" || bad "default model not named"

# JSON: one object, passed true, one device, no check with passed false
"$K" selftest --only rmsnorm,rope --json >"$TMP/json" 2>"$TMP/err"
rc=$?
[ "$rc" = 0 ] && ok "--json exits 0" || bad "--json exit status $rc"
grep -q '^{"passed": true' "$TMP/json" && ok "JSON passed true" || bad "JSON not passed: $(head -c 200 "$TMP/json")"
grep -q '"passed": false' "$TMP/json" && bad "JSON has a failed check" || ok "JSON: every check passed"
n_json=$(grep -c '"check": "rope ' "$TMP/json")
[ "$n_json" = 6 ] && ok "JSON: 6 rope checks" || bad "JSON: $n_json rope checks, expected 6"

# the selftest must be able to fail: faults injected into chosen rows
"$K" selftest --only matmul,attention --inject-fault "Q4_0 odd" >"$TMP/f1" 2>"$TMP/err"
rc=$?
[ "$rc" = 1 ] && ok "fault in matmul Q4_0 odd: exit 1" || bad "fault in matmul Q4_0 odd: exit $rc"
fails=$(grep -c "FAIL" "$TMP/f1")
grep -qE "^matmul Q4_0 odd .*FAIL" "$TMP/f1" && [ "$(grep -cE '^[a-z].*\| .* FAIL' "$TMP/f1")" = 1 ] \
  && ok "exactly the faulted row fails" || bad "faulted rows: $(grep -E 'FAIL' "$TMP/f1" | head -5)"
"$K" selftest --only attention --inject-fault "batch vs replayed" >"$TMP/f2" 2>&1
rc=$?
grep -qE "batch vs replayed split decode .*1 diff +FAIL" "$TMP/f2" && [ "$rc" = 1 ] \
  && ok "fault in a bit-exact check: 1 diff, FAIL" || bad "bit-exact fault not caught (exit $rc)"
"$K" selftest --only model --inject-fault "model: prefill" >"$TMP/f3" 2>&1
rc=$?
grep -qE "^model: prefill logits .*FAIL" "$TMP/f3" && [ "$rc" = 1 ] \
  && ok "fault in the model logits: FAIL" || bad "model logits fault not caught (exit $rc)"
unset rc fails

expect_fail "unknown option" 2 "unknown option" -- "$K" selftest --frobnicate
expect_fail "unknown group" 2 "unknown group 'matmull'" -- "$K" selftest --only matmull
expect_fail "bad device number" 2 "bad --device" -- "$K" selftest --device x
expect_fail "device out of range" 1 "device 99 does not exist" -- "$K" selftest --device 99
expect_fail "model missing" 1 "could not run|cannot open" -- "$K" selftest --only model -m /no/such/model.gguf
grep -qE "^model: load /no/such/model.gguf .*FAIL" "$TMP/out" && ok "missing model is a FAIL row" || bad "missing model row: $(cat "$TMP/out" | head -3)"
expect_fail "no Vulkan driver" 1 "no Vulkan device|mesa-vulkan-drivers" -- env VK_DRIVER_FILES=/nonexistent/icd.json VK_ICD_FILENAMES=/nonexistent/icd.json "$K" selftest
finish
