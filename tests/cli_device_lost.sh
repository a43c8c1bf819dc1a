#!/usr/bin/env bash
# cli_device_lost.sh — VK_ERROR_DEVICE_LOST through the real binary: KVSCOPE_TEST_DEVICE_LOST=N
# (docs/testing.md) makes the process's N-th command-buffer wait report a lost device, as a driver
# does after a GPU reset. During prefill and during decode kvscope must stop with exit status 1
# and a message saying what was lost and what to do, without hanging or crashing, and without
# writing anything to --cache-dir: the cache directory stays valid (runs without the knob give the
# same tokens, and hit only blocks that were saved whole before).
source "$(dirname "$0")/cli_lib.bash" "$@"
K=$KVSCOPE
need_device
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$2" | head -1; }
ids() { sed -n 's/.*"token_ids":\[\([0-9,]*\)\].*/\1/p' "$1"; }
n_blocks() { find "$1" -name '*.kvb' 2>/dev/null | wc -l; }
no_tmp() {
  if find "$1" -name '*.tmp*' 2>/dev/null | grep -q .; then bad "$2: temporary cache files left"; else ok "$2: no temporary cache files"; fi
}
# two full 16-token blocks and more, so prefill alone has blocks that a finished request would save
P="Q: What do you call a fish with no eyes? A: A fsh. Q: What do you call a deer with no eyes? A:"
LIMIT="timeout 300" # a hang fails as exit status 124

# the reference: the same request with no cache at all
$K run -p "$P" -n 12 --temp 0 --json --no-cache >"$TMP/ref.json" 2>"$TMP/ref.err" || { bad "reference run failed"; cat "$TMP/ref.err"; }

# lost during prefill (the first wait of the process is the prompt's)
D=$TMP/cache-prefill
expect_fail "device lost during prefill" 1 "VK_ERROR_DEVICE_LOST" -- \
  env KVSCOPE_TEST_DEVICE_LOST=1 $LIMIT $K run -p "$P" -n 12 --temp 0 --cache-dir "$D"
err_has "device lost during prefill" "generation failed: in the prefill of positions 0\.\.[0-9]+" \
  "the GPU was lost \(reset by its driver" "nothing computed since is trusted" \
  "Run again" "kvscope selftest" "nothing from this request is saved to --cache-dir"
[ "$(n_blocks "$D")" = 0 ] && ok "device lost during prefill: no cache file written" || bad "device lost during prefill: $(n_blocks "$D") cache files written"
no_tmp "$D" "device lost during prefill"

# lost during decode (waits 2, 3, ... are decode steps): the prompt's full blocks were computed
# and indexed before the loss, but nothing is written
D=$TMP/cache-decode
expect_fail "device lost during decode" 1 "VK_ERROR_DEVICE_LOST" -- \
  env KVSCOPE_TEST_DEVICE_LOST=4 $LIMIT $K run -p "$P" -n 12 --temp 0 --cache-dir "$D"
err_has "device lost during decode" "generation failed: in the decode step at position [0-9]+" \
  "the GPU was lost" "nothing from this request is saved to --cache-dir"
[ "$(n_blocks "$D")" = 0 ] && ok "device lost during decode: no cache file written" || bad "device lost during decode: $(n_blocks "$D") cache files written"
no_tmp "$D" "device lost during decode"
# the generated text up to the loss was streamed: the prompt and at least one token
[ "$(wc -c <"$TMP/out")" -gt "${#P}" ] && ok "device lost during decode: the tokens before the loss were printed" || bad "device lost during decode: nothing generated before the loss"

# the cache directory of the failed run is good: a run without the knob computes cold (no hit,
# nothing was saved), gives the reference tokens and saves its blocks; the next run hits them
$LIMIT $K run -p "$P" -n 12 --temp 0 --json --cache-dir "$D" >"$TMP/a1.json" 2>"$TMP/a1.err"
rc1=$?
$LIMIT $K run -p "$P" -n 12 --temp 0 --json --cache-dir "$D" >"$TMP/a2.json" 2>"$TMP/a2.err"
rc2=$?
c1=$(field cached_tokens "$TMP/a1.json"); c2=$(field cached_tokens "$TMP/a2.json"); d2=$(field blocks_from_disk "$TMP/a2.json")
if [ $rc1 = 0 ] && [ $rc2 = 0 ] && [ "$c1" = 0 ] && [ "${c2:-0}" -gt 0 ] && [ "${d2:-0}" -gt 0 ] &&
   [ -n "$(ids "$TMP/ref.json")" ] && [ "$(ids "$TMP/a1.json")" = "$(ids "$TMP/ref.json")" ] &&
   [ "$(ids "$TMP/a2.json")" = "$(ids "$TMP/ref.json")" ] && ! grep -q warning "$TMP/a1.err" "$TMP/a2.err"; then
  ok "after the loss: cold run with 0 cached, then $c2 cached tokens ($d2 blocks from disk), same tokens as the reference"
else bad "after the loss: exit $rc1/$rc2, cached $c1/$c2, from disk $d2"; cat "$TMP/a1.err" "$TMP/a2.err"; fi

# blocks saved before a loss stay valid: a longer prompt sharing the cached prefix loses the
# device while decoding; the saved blocks are untouched and a later run still hits them
P2="$P A fsh. Q: And a fish with no fins? A:"
before=$(n_blocks "$D")
sum_before=$(find "$D" -name '*.kvb' -exec md5sum {} + | sort | md5sum)
expect_fail "device lost after cache hits" 1 "in the decode step.*VK_ERROR_DEVICE_LOST" -- \
  env KVSCOPE_TEST_DEVICE_LOST=3 $LIMIT $K run -p "$P2" -n 12 --temp 0 --cache-dir "$D"
sum_after=$(find "$D" -name '*.kvb' -exec md5sum {} + | sort | md5sum)
[ "$(n_blocks "$D")" = "$before" ] && [ "$sum_before" = "$sum_after" ] && ok "device lost after cache hits: the $before saved blocks are unchanged, none added" ||
  bad "device lost after cache hits: $before blocks before, $(n_blocks "$D") after (or changed)"
$K run -p "$P2" -n 12 --temp 0 --json --no-cache >"$TMP/ref2.json" 2>/dev/null
$LIMIT $K run -p "$P2" -n 12 --temp 0 --json --cache-dir "$D" >"$TMP/b1.json" 2>"$TMP/b1.err"
rc=$?
c=$(field cached_tokens "$TMP/b1.json")
if [ $rc = 0 ] && [ "${c:-0}" -gt 0 ] && [ -n "$(ids "$TMP/ref2.json")" ] && [ "$(ids "$TMP/b1.json")" = "$(ids "$TMP/ref2.json")" ] && ! grep -q warning "$TMP/b1.err"; then
  ok "after the second loss: $c cached tokens from the earlier blocks, same tokens as cold"
else bad "after the second loss: exit $rc, cached $c"; cat "$TMP/b1.err"; fi

# chat: a loss in the second turn ends the conversation with the same message
printf 'Q: Why?\nQ: Why not?\n' >"$TMP/chat.in"
expect_fail "device lost in a chat turn" 1 "cannot answer|generation failed.*VK_ERROR_DEVICE_LOST" -- \
  env KVSCOPE_TEST_DEVICE_LOST=6 $LIMIT $K chat -n 4 --temp 0 <"$TMP/chat.in"
err_has "device lost in a chat turn" "VK_ERROR_DEVICE_LOST" "Run again"
finish
