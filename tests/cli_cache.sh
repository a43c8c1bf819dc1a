#!/usr/bin/env bash
# cli_cache.sh — the prompt cache through the real binary: several requests in one process,
# provider-style usage fields, --prompts files, chat reusing earlier turns, persistence across
# processes with --cache-dir (damaged and truncated files are ignored with a warning), and the
# errors for a budget too small or a cache directory that cannot be written.
source "$(dirname "$0")/cli_lib.bash" "$@"
K=$KVSCOPE
P="Q: What do you call a fish with no eyes? A: A fsh. Q: What do you call a deer with no eyes? A:"
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | head -1; }
ids() { sed -n 's/.*"token_ids":\[\([0-9,]*\)\].*/\1/p'; }

# two requests in one process: the second hits
$K run -p "$P" -p "$P" -n 6 --temp 0 --json >"$TMP/two.json" 2>"$TMP/two.err"
c1=$(sed -n 1p "$TMP/two.json" | field cached_tokens); c2=$(sed -n 2p "$TMP/two.json" | field cached_tokens)
if [ "$c1" = 0 ] && [ "${c2:-0}" -gt 0 ] && [ "$(sed -n 1p "$TMP/two.json" | ids)" = "$(sed -n 2p "$TMP/two.json" | ids)" ]; then
  ok "second identical request: $c2 cached tokens, same output"
else bad "two requests: cached $c1 / $c2"; cat "$TMP/two.json" "$TMP/two.err"; fi
for f in '"prompt_tokens_details":{"cached_tokens":' '"cache_read_input_tokens":' '"cache_creation_input_tokens":' '"usd_without_cache":'; do
  grep -q "$f" "$TMP/two.json" && ok "JSON has $f" || bad "JSON lacks $f"
done

# --prompts: JSON lines with their own sampling settings; a changed temperature still hits
printf '{"prompt": "%s", "n": 4, "temp": 0}\n\n{"prompt": "%s", "n": 4, "temp": 1.2, "top_k": 3, "seed": 9}\n' "$P" "$P" >"$TMP/prompts.jsonl"
$K run --prompts "$TMP/prompts.jsonl" --json >"$TMP/pf.json" 2>"$TMP/pf.err"
c2=$(sed -n 2p "$TMP/pf.json" | field cached_tokens)
[ "$(wc -l <"$TMP/pf.json")" = 2 ] && [ "${c2:-0}" -gt 0 ] && ok "--prompts: 2 requests, sampled one hits ($c2 cached)" || { bad "--prompts"; cat "$TMP/pf.json" "$TMP/pf.err"; }
printf '{"prompt": "x", "n": }\n' >"$TMP/bad.jsonl"
expect_fail "malformed --prompts line" 1 "line 1.*invalid JSON" -- $K run --prompts "$TMP/bad.jsonl"

# an explicitly marked prefix (like a cache_control breakpoint)
$K run --prefix "System: answer in one line. " -p "User: hello" -p "User: goodbye" -n 4 --temp 0 --json >"$TMP/px.json" 2>/dev/null
c2=$(sed -n 2p "$TMP/px.json" | field cached_tokens)
[ "${c2:-0}" -gt 0 ] && ok "--prefix: the second request reuses the marked prefix ($c2 tokens)" || { bad "--prefix"; cat "$TMP/px.json"; }

# persistence: run 1 writes, run 2 (a new process) reads, same output
D=$TMP/cache
$K run -p "$P" -n 8 --temp 0 --json --cache-dir "$D" >"$TMP/r1.json" 2>"$TMP/r1.err"
n_files=$(find "$D" -name '*.kvb' | wc -l)
$K run -p "$P" -n 8 --temp 0 --json --cache-dir "$D" >"$TMP/r2.json" 2>"$TMP/r2.err"
c=$(field cached_tokens <"$TMP/r2.json"); disk=$(field blocks_from_disk <"$TMP/r2.json")
if [ "$n_files" -gt 0 ] && [ "${c:-0}" -gt 0 ] && [ "${disk:-0}" -gt 0 ] && [ "$(ids <"$TMP/r1.json")" = "$(ids <"$TMP/r2.json")" ]; then
  ok "--cache-dir: run 1 wrote $n_files blocks; run 2 read $disk of them ($c tokens), same output"
else bad "persistence: files $n_files, cached $c, from disk $disk"; cat "$TMP/r1.err" "$TMP/r2.err"; fi
# damage every file in a different way: a flipped byte, a truncation
i=0
for f in $(find "$D" -name '*.kvb' | sort); do
  if [ $((i % 2)) = 0 ]; then printf '\x55' | dd of="$f" bs=1 seek=400 conv=notrunc status=none
  else truncate -s 1000 "$f"; fi
  i=$((i + 1))
done
$K run -p "$P" -n 8 --temp 0 --json --cache-dir "$D" >"$TMP/r3.json" 2>"$TMP/r3.err"
rc=$?
c=$(field cached_tokens <"$TMP/r3.json")
if [ $rc = 0 ] && grep -q "ignoring and removing a prompt cache file" "$TMP/r3.err" && [ "$c" = 0 ] && [ "$(ids <"$TMP/r1.json")" = "$(ids <"$TMP/r3.json")" ]; then
  ok "damaged cache files: warned, ignored ($(grep -m1 -o 'checksum\|truncated\|size[^:]*' "$TMP/r3.err" | head -1)), same output"
else bad "damaged files: rc $rc cached $c"; cat "$TMP/r3.err"; fi
$K run -p "$P" -n 8 --temp 0 --json --cache-dir "$D" >"$TMP/r4.json" 2>"$TMP/r4.err"
c=$(field cached_tokens <"$TMP/r4.json")
[ "${c:-0}" -gt 0 ] && ! grep -q warning "$TMP/r4.err" && ok "the damaged files were rewritten: next run hits again ($c)" || { bad "rewrite after damage"; cat "$TMP/r4.err"; }
ls "$D"/*/ | grep -q '\.tmp' && bad "temporary files left in the cache dir" || ok "no temporary files left"

expect_fail "unwritable --cache-dir" 1 "not writable|cannot" -- $K run -p "$P" --cache-dir /proc/kvscope-cache
expect_fail "cache budget too small" 1 "too small.*--cache-mb" -- $K run -p "$P" --cache-mb 1 -n -1
expect_fail "bad --cache-ttl" 2 "non-negative" -- $K run -p "$P" --cache-ttl -3

# chat: the second turn reuses the first turn and its reply
printf 'Q: What is the meaning of life, the universe and everything?\nQ: And what about the rest of it?\n' |
  $K chat -n 12 --temp 0 >"$TMP/chat.out" 2>"$TMP/chat.err"
second=$(grep -o '^\[[0-9]* of [0-9]* prompt tokens cached' "$TMP/chat.err" | sed -n 2p | cut -d' ' -f1 | tr -d '[')
[ "${second:-0}" -gt 0 ] && ok "chat: turn 2 had $second prompt tokens cached" || { bad "chat"; cat "$TMP/chat.err"; }
finish
