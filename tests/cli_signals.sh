#!/usr/bin/env bash
# cli_signals.sh — SIGINT during prefill and SIGTERM during decode stop the real binary cleanly
# (exit status 128 + signal, a message, no temporary or partial cache file left, and the cache
# directory still good for the next run); a model file truncated while in use does not crash it.
source "$(dirname "$0")/cli_lib.bash" "$@"
# every prefill chunk and decode step waits 20 ms, so the signals land mid-work on any device
export KVSCOPE_TEST_STEP_DELAY_MS=20
K=$KVSCOPE
D=$TMP/cache
long=$(for i in $(seq 1 24); do printf 'A penny saved is a penny earned. '; done)

# SIGINT while the long prompt is being prefilled (lavapipe needs seconds for it)
$K run -p "$long" -n 4 --cache-dir "$D" -b 4 >"$TMP/int.out" 2>"$TMP/int.err" &
pid=$!
sleep 1
kill -INT $pid
wait $pid
rc=$?
if [ $rc = 130 ] && grep -q "interrupted by SIGINT" "$TMP/int.err"; then ok "SIGINT during prefill: exit 130, '$(grep -o 'interrupted.*' "$TMP/int.err" | head -1)'"
else bad "SIGINT during prefill: exit $rc"; cat "$TMP/int.err"; fi

# SIGTERM while decoding; the blocks computed so far are saved whole
need_shared models/stories260K.bin models/tok512.bin
S="-m $SHARED/models/stories260K.bin -z $SHARED/models/tok512.bin"
# (a prompt of more than one K/V block: where decode steps and prompts use different kernels
# (KVSCOPE_COOPMAT=prefill) only the prompt's blocks are saved)
$K run $S -p "Once upon a time, there was a little girl named Lily. She liked to play in the park with her friends." -n 480 --temp 0 --cache-dir "$D" >"$TMP/term.out" 2>"$TMP/term.err" &
pid=$!
sleep 3
kill -TERM $pid
wait $pid
rc=$?
[ $rc = 143 ] && grep -q "interrupted by SIGTERM" "$TMP/term.err" && ok "SIGTERM during decode: exit 143" || { bad "SIGTERM during decode: exit $rc"; cat "$TMP/term.err"; }
if find "$D" -name '*.tmp*' | grep -q .; then bad "temporary cache files left behind"; else ok "no temporary cache files left"; fi
$K run $S -p "Once upon a time" -n 4 --temp 0 --cache-dir "$D" --json >"$TMP/after.json" 2>"$TMP/after.err"
n_files=$(find "$D" -name '*.kvb' | wc -l)
[ $? = 0 ] && ! grep -q warning "$TMP/after.err" && [ "$n_files" -gt 0 ] &&
  ok "the cache directory is consistent for the next run ($n_files whole block files saved by the interrupted runs)" || { bad "run after the interrupts"; cat "$TMP/after.err"; }

# the model file truncated while the model is in use: a clean result or a clear message
cp "$KS_MODEL_DIR/kvscope-tiny.gguf" "$TMP/m.gguf" 2>/dev/null || cp "$(dirname "$0")/../models/kvscope-tiny.gguf" "$TMP/m.gguf"
$K run -m "$TMP/m.gguf" -p "Once upon a time" -n 200 --temp 0 >"$TMP/tr.out" 2>"$TMP/tr.err" &
pid=$!
sleep 2
truncate -s 4096 "$TMP/m.gguf"
wait $pid
rc=$?
if [ $rc = 0 ] || { [ $rc = 1 ] && grep -q "changed or was truncated" "$TMP/tr.err"; }; then ok "model truncated while in use: exit $rc, no crash"
else bad "model truncated while in use: exit $rc"; cat "$TMP/tr.err"; fi
finish
