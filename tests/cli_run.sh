#!/usr/bin/env bash
# cli_run.sh — the real binary end to end: --help, devices, greedy generation of stories260K
# against run.c's reference tokens (GPU and --cpu), --json, seeds, -n, and the converted GGUF.
source "$(dirname "$0")/cli_lib.bash" "$@"
need_shared models/stories260K.bin models/tok512.bin models/reference/greedy_once.tokens
M=$SHARED/models/stories260K.bin
Z=$SHARED/models/tok512.bin
K=$KVSCOPE

$K --help >"$TMP/help" 2>&1 && grep -q "kvscope run" "$TMP/help" && grep -q -- "--top-p" "$TMP/help" && ok "--help" || bad "--help"
$K devices >"$TMP/dev" 2>&1 && grep -qi "subgroup" "$TMP/dev" && ok "devices: $(grep -m1 "^device" "$TMP/dev")" || { bad "devices"; cat "$TMP/dev"; }

# expected generated ids: all_tokens after the 5 prompt ids, without the final BOS
exp=$(sed -n 2p "$SHARED/models/reference/greedy_once.tokens" | cut -d' ' -f7- | sed 's/ 1$//' | tr ' ' ',')
n_exp=$(echo "$exp" | tr ',' '\n' | wc -l)
for mode in gpu cpu; do
  flag=""; [ $mode = cpu ] && flag=--cpu
  $K run -m "$M" -z "$Z" -p "Once upon a time" -n 196 --temp 0 --json $flag >"$TMP/$mode.json" 2>"$TMP/$mode.err"
  rc=$?
  got=$(sed -n 's/.*"token_ids":\[\([0-9,]*\)\].*/\1/p' "$TMP/$mode.json")
  pids=$(sed -n 's/.*"prompt_token_ids":\[\([0-9,]*\)\].*/\1/p' "$TMP/$mode.json")
  if [ $rc = 0 ] && [ "$got" = "$exp" ] && [ "$pids" = "1,403,407,261,378" ]; then
    ok "$mode: greedy stories260K reproduces run.c's $n_exp tokens"
  else
    bad "$mode: greedy tokens differ (rc $rc)"; echo "  want $exp"; echo "  got  $got"; cat "$TMP/$mode.err"
  fi
done
grep -q '"stop":"length"' "$TMP/gpu.json" && ok "196 tokens, stop: length (run.c -n 200 counts the 4 fed prompt positions too)" || bad "stop reason: $(cat "$TMP/gpu.json" | head -c 300)"

# streamed text equals the reference's stdout (prompt echoed, then the story)
$K run -m "$M" -z "$Z" -p "Once upon a time" -n 196 --temp 0 >"$TMP/text" 2>"$TMP/text.err"
if cmp -s <(head -c "$(stat -c %s "$SHARED/models/reference/greedy_once.txt")" "$TMP/text") "$SHARED/models/reference/greedy_once.txt"; then
  ok "streamed text equals run.c's output"
else
  bad "streamed text differs from greedy_once.txt"; diff <(cat "$TMP/text") "$SHARED/models/reference/greedy_once.txt" | head -5
fi
grep -Eq "prompt 5 tokens.*prefill [0-9.]+ tok/s.*decode [0-9.]+ tok/s.*first token" "$TMP/text.err" && ok "stats on stderr" || { bad "stats line"; cat "$TMP/text.err"; }

# KVSCOPE_PIPELINE_STATS=1: the driver's pipeline statistics on stderr where it has them, else a
# note saying so; the answer is the same
KVSCOPE_PIPELINE_STATS=1 $K run -m "$M" -z "$Z" -p "Once upon a time" -n 196 --temp 0 --json >"$TMP/ps.json" 2>"$TMP/ps.err"
rc=$?
got=$(sed -n 's/.*"token_ids":\[\([0-9,]*\)\].*/\1/p' "$TMP/ps.json")
if [ $rc = 0 ] && [ "$got" = "$exp" ] && grep -Eq "^pipeline matmul_|no VK_KHR_pipeline_executable_properties; no statistics" "$TMP/ps.err"; then
  ok "KVSCOPE_PIPELINE_STATS=1: $(grep -c '^pipeline ' "$TMP/ps.err") pipelines reported, same tokens"
else
  bad "KVSCOPE_PIPELINE_STATS=1 (rc $rc)"; head -5 "$TMP/ps.err"
fi

# -n counts generated tokens
$K run -m "$M" -z "$Z" -p "Once upon a time" -n 7 --temp 0 --json >"$TMP/n7.json" 2>/dev/null
grep -q '"generated_tokens":7' "$TMP/n7.json" && ok "-n 7 generates 7 tokens" || bad "-n 7: $(cat "$TMP/n7.json")"

# same seed, same text; sampling settings parse
s1=$($K run -m "$M" -z "$Z" -p "Once upon a time" -n 40 --temp 1.0 --top-k 0 --top-p 0.9 --seed 133742 --json 2>/dev/null | sed -n 's/.*"token_ids":\(\[[0-9,]*\]\).*/\1/p')
s2=$($K run -m "$M" -z "$Z" -p "Once upon a time" -n 40 --temp 1.0 --top-k 0 --top-p 0.9 --seed 133742 --json 2>/dev/null | sed -n 's/.*"token_ids":\(\[[0-9,]*\]\).*/\1/p')
s3=$($K run -m "$M" -z "$Z" -p "Once upon a time" -n 40 --temp 1.0 --top-k 0 --top-p 0.9 --seed 7 --json 2>/dev/null | sed -n 's/.*"token_ids":\(\[[0-9,]*\]\).*/\1/p')
[ -n "$s1" ] && [ "$s1" = "$s2" ] && ok "same seed, same tokens" || bad "seeded runs differ: $s1 / $s2"
[ "$s1" != "$s3" ] && ok "another seed, other tokens" || bad "seed has no effect"

# the converted GGUF gives the same greedy tokens, with its own tokenizer (no -z)
$K convert "$M" -z "$Z" "$TMP/m.gguf" >/dev/null 2>&1 || bad "convert"
got=$($K run -m "$TMP/m.gguf" -p "Once upon a time" -n 196 --temp 0 --json 2>"$TMP/g.err" | sed -n 's/.*"token_ids":\[\([0-9,]*\)\].*/\1/p')
# a GGUF llama model stops at EOS only, so compare the common part (the BOS-stop is llama2.c's rule)
[ -n "$got" ] && [ "${got#$exp}" != "$got" ] && ok "converted GGUF: same greedy tokens without -z" || { bad "converted GGUF tokens"; echo "  got $got"; cat "$TMP/g.err"; }
$K info -m "$TMP/m.gguf" >"$TMP/info" 2>&1 && grep -q "layers 5" "$TMP/info" && ok "info" || { bad "info"; cat "$TMP/info"; }
$K tokenize -m "$TMP/m.gguf" -p "Once upon a time" --ids >"$TMP/tok" 2>&1 && grep -q "\[1, 403, 407, 261, 378\]" "$TMP/tok" && ok "tokenize --ids" || { bad "tokenize"; cat "$TMP/tok"; }
# no -m: the default model shipped in models/
$K run -p "Once upon a time" -n 5 --temp 0 --json >"$TMP/default.json" 2>"$TMP/default.err"
grep -q 'kvscope-tiny.gguf".*"generated_tokens":[1-5],' "$TMP/default.json" && ok "default model used without -m" || { bad "default model"; cat "$TMP/default.json" "$TMP/default.err"; }
finish
