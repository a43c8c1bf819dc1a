#!/usr/bin/env bash
# test_bench_cli.sh — `kvscope bench` and `kvscope convert --random` through the real binary, at
# tiny sizes (-p 32 -n 8 -r 2): the JSON parses, every measured quantity is present and positive,
# the derived ones agree with the measured ones (roofline = copy bandwidth / bytes per step,
# % = tg / roofline), the table prints, bad usage is refused; a random model of the tiny shape
# loads, runs and benchmarks. Speeds are never compared with thresholds.
source "$(dirname "$0")/cli_lib.bash" "$@"
need_shared models/stories260K.bin
K=$KVSCOPE
M=$SHARED/models/stories260K.bin

# num KEY FILE: the first number stored under "KEY" in a JSON file
num() { grep -o "\"$1\":[-0-9.eE+]*" "$2" | head -1 | cut -d: -f2; }
positive() { awk -v x="$1" 'BEGIN { exit !(x != "" && x + 0 > 0) }'; }
# near A B REL: |A - B| <= REL * |B|
near() { awk -v a="$1" -v b="$2" -v r="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b; exit !(a != "" && d <= r * m) }'; }
valid_json() {
  if command -v python3 >/dev/null; then python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$1"
  elif command -v jq >/dev/null; then jq -e . "$1" >/dev/null
  else grep -q '^{.*}$' "$1"; fi
}

# ---- JSON on stories260K
J=$TMP/s.json
$K bench -m "$M" -p 32 -n 8 -r 2 --json >"$J" 2>"$TMP/s.err"
rc=$?
if [ $rc = 0 ] && valid_json "$J"; then ok "bench --json on stories260K: $(head -c 160 "$J")..."
else bad "bench --json (rc $rc)"; cat "$TMP/s.err" "$J"; fi
for k in pp_tokens_per_s tg_tokens_per_s ttft_ms copy_gb_per_s copy_bytes decode_bytes_per_token \
         decode_weight_bytes roofline_tg_tokens_per_s roofline_pct prefill_flops prefill_tflop_per_s \
         weights_bytes decode_step_us; do
  v=$(num $k "$J")
  positive "$v" && ok "$k = $v" || bad "$k is '$v', expected a positive number"
done
[ "$(num n_prompt "$J")" = 32 ] && [ "$(num n_gen "$J")" = 8 ] && [ "$(num reps "$J")" = 2 ] &&
  [ "$(num dim "$J")" = 64 ] && [ "$(num layers "$J")" = 5 ] && ok "sizes and shape echoed" || bad "sizes/shape in the JSON"
runs=$(grep -o '"pp_runs":\[[^]]*\]' "$J" | grep -o '[0-9.]\+' | wc -l)
truns=$(grep -o '"tg_runs":\[[^]]*\]' "$J" | grep -o '[0-9.]\+' | wc -l)
[ "$runs" = 2 ] && [ "$truns" = 2 ] && ok "one value per repetition" || bad "pp_runs has $runs values, tg_runs $truns (want 2)"
# the derived numbers follow from the measured ones
bw=$(num copy_gb_per_s "$J"); db=$(num decode_bytes_per_token "$J"); roof=$(num roofline_tg_tokens_per_s "$J")
tg=$(num tg_tokens_per_s "$J"); pct=$(num roofline_pct "$J")
near "$roof" "$(awk -v a="$bw" -v b="$db" 'BEGIN { print a * 1e9 / b }')" 0.01 && ok "roofline = copy bandwidth / bytes per step" || bad "roofline $roof vs $bw GB/s / $db B"
near "$pct" "$(awk -v a="$tg" -v b="$roof" 'BEGIN { print 100 * a / b }')" 0.01 && ok "roofline % = tg / roofline" || bad "roofline_pct $pct vs tg $tg / $roof"
wb=$(num weights_bytes "$J"); dw=$(num decode_weight_bytes "$J")
# stories260K ties its classifier to the embedding: a step reads all weights plus one embedding row
awk -v a="$dw" -v b="$wb" 'BEGIN { exit !(a > b && a < b * 1.01) }' && ok "decode reads the weights once ($dw of $wb bytes)" || bad "decode_weight_bytes $dw vs weights $wb"
if grep -q '"kernels_measured":true' "$J"; then
  positive "$(num profile_decode_gpu_us "$J")" && positive "$(num profile_prefill_gpu_ms "$J")" && ok "profile totals positive" || bad "profile totals"
  for op in matmul_qkv attention matmul_o matmul_gate_up matmul_down matmul_output; do
    # (a whole number of microseconds prints as 2286.000: compare the value, not its digits)
    us=$(grep -oE "\{\"op\":\"$op\",\"decode_dispatches\":[1-9][0-9]*,\"decode_us\":[0-9.]+" "$J" | sed 's/.*"decode_us"://')
    positive "$us" && ok "kernel $op timed" || bad "kernel $op missing or zero: $(grep -o "\"op\":\"$op\"[^}]*" "$J")"
  done
else
  grep -q '"timestamps":false' "$J" && ok "no timestamps on this device: kernel table left out" || bad "kernels not measured although the device has timestamps"
fi

# ---- the table, on the default model (no -m)
$K bench -p 32 -n 8 -r 2 >"$TMP/t.txt" 2>"$TMP/t.err"
rc=$?
if [ $rc = 0 ] && grep -q "kvscope-tiny.gguf" "$TMP/t.txt"; then ok "table on the default model"; else bad "table (rc $rc)"; cat "$TMP/t.err" "$TMP/t.txt"; fi
pp=$(awk '$1 == "pp32" { print $2 }' "$TMP/t.txt"); tgt=$(awk '$1 == "tg8" { print $2 }' "$TMP/t.txt")
positive "$pp" && positive "$tgt" && ok "pp32 $pp tok/s, tg8 $tgt tok/s" || bad "pp32/tg8 rows: '$pp' '$tgt'"
grep -Eq "^copy bandwidth +[0-9.]+ GB/s" "$TMP/t.txt" && grep -Eq "^roofline .* reaches [0-9.]+%" "$TMP/t.txt" && ok "roofline lines" || bad "roofline lines missing"
grep -q '"timestamps":false' "$J" || { grep -Eq "^total +[0-9]+ +[0-9.]+" "$TMP/t.txt" && ok "kernel table" || bad "kernel table missing"; }

# ---- bad usage
expect_fail "bench -p x" 2 "bad value" -- $K bench -p x
expect_fail "bench -r 0" 2 "bad value" -- $K bench -r 0
expect_fail "bench -p 0 -n 0" 2 "nothing to measure" -- $K bench -p 0 -n 0
expect_fail "bench --frob" 2 "unknown option" -- $K bench --frob
expect_fail "bench missing model" 1 "cannot load" -- $K bench -m "$TMP/missing.gguf" -p 4 -n 2 -r 1

# ---- a random model of the tiny shape
R=$TMP/r.gguf
$K convert --random tiny "$R" --type q8_0 --seed 3 >"$TMP/c.out" 2>"$TMP/c.err"
rc=$?
{
  [ $rc = 0 ] && [ -s "$R" ] && grep -q "wrote" "$TMP/c.err" && ok "convert --random tiny: $(cat "$TMP/c.err")" || { bad "convert --random (rc $rc)"; cat "$TMP/c.err"; }
  $K run -m "$R" -p "hello world" -n 4 --temp 0 --json >"$TMP/r.json" 2>"$TMP/r.err"
  grep -q '"generated_tokens":4' "$TMP/r.json" && ok "the random model runs" || { bad "run on the random model"; cat "$TMP/r.err" "$TMP/r.json"; }
  $K bench -m "$R" -p 16 -n 4 -r 1 --json >"$TMP/rb.json" 2>"$TMP/rb.err"
  positive "$(num tg_tokens_per_s "$TMP/rb.json")" && grep -q '"weight_type":"Q8_0"' "$TMP/rb.json" && [ "$(num vocab "$TMP/rb.json")" = 320 ] &&
    ok "bench on the random model" || { bad "bench on the random model"; cat "$TMP/rb.err" "$TMP/rb.json"; }
  $K convert --random list >"$TMP/list" 2>&1 && grep -q "^  tinyllama-1.1b .*dim 2048, ffn 5632, 22 layers" "$TMP/list" && ok "convert --random list" || { bad "list"; cat "$TMP/list"; }
  expect_fail "unknown shape" 2 "unknown shape" -- $K convert --random gpt-9 "$TMP/x.gguf"
  expect_fail "bad type" 2 "unknown type" -- $K convert --random tiny "$TMP/x.gguf" --type q5_1
}
# --watch: the visualizer's attention export, measured against the view off
$K bench -p 8 -n 4 -r 1 --watch 0 --json >"$TMP/w.json" 2>"$TMP/w.err"
grep -q '"watch_layer":0' "$TMP/w.json" && positive "$(num tg_tokens_per_s "$TMP/w.json")" && ok "bench --watch 0" || { bad "bench --watch"; cat "$TMP/w.err"; }
# the prompt-cache benchmark runs and reports a hit for every length
$K bench --prefix -r 1 --json -c 160 >"$TMP/px.json" 2>"$TMP/px.err"
grep -q '"prompt_tokens":128,"cached_tokens":96' "$TMP/px.json" && grep -q '"prompt_tokens":159' "$TMP/px.json" &&
  ok "bench --prefix: $(grep -o '"cached_over_cold":[0-9.]*' "$TMP/px.json" | head -1)" || { bad "bench --prefix"; cat "$TMP/px.json" "$TMP/px.err"; }
finish
