#!/usr/bin/env bash
# tui_tmux.sh — the real `kvscope tui` driven in a detached tmux session of fixed size
# (send-keys, capture-pane), with the shipped model on whatever Vulkan device there is (CI:
# lavapipe). --snapshot runs of the same prompts give the numbers the screen must show.
# Checks: a step's bars add up to ~100%; the head and layer keys change the bars to exactly
# what --snapshot gives for that head/layer; pause and step; a second prompt sharing a prefix
# shows its positions as cached ('=') and the stats show the hit; continuing the conversation
# shows the earlier turn cached; resize redraws (side stats when wide, a message when tiny);
# the help overlay; NO_COLOR draws without colour codes; quit, SIGINT and SIGTERM give the
# terminal back (alternate screen left, echo and canonical mode restored, the shell prompt back).
source "$(dirname "$0")/cli_lib.bash" "$@"
command -v tmux >/dev/null || { echo "SKIP: tmux is not installed (.ci/packages installs it)"; exit 77; }
K=$KVSCOPE
P1="Q: What do you call a fish with no eyes? A: A fsh. Q: What do you call a deer with no eyes? A:"
P2="Q: What do you call a fish with no eyes? A: A fsh. Q: What is red?"
N=6
SOCK="$TMP/tmux.sock" # a private server, its socket inside the test's scratch directory
[ ${#SOCK} -lt 100 ] || SOCK="${TMPDIR:-/tmp}/kvscope-tui-test-$$.sock" # unix socket paths are short
T() { tmux -S "$SOCK" -f "$TMP/tmux.conf" "$@"; }
printf 'set -g default-terminal tmux-256color\nset -g status off\nset -g history-limit 200\n' >"$TMP/tmux.conf"
trap 'tmux -S "$SOCK" kill-server 2>/dev/null; rm -f "$SOCK"' EXIT
START=$(date +%s)

# ---- bad usage: clear messages, no terminal touched ----
expect_fail "unknown --agg" 2 "--agg takes head, mean or max" -- $K tui --agg median -p hi
expect_fail "--layer out of range" 2 "--layer takes 1\.\.[0-9]+" -- $K tui --layer 99 -p hi --snapshot "$TMP/x.jsonl"
expect_fail "--snapshot without a prompt" 2 "needs a prompt" -- $K tui --snapshot "$TMP/x.jsonl"
expect_fail "no terminal" 1 "needs a terminal.*--snapshot" -- $K tui -p hi </dev/null

# ---- numbers from --snapshot (no terminal) ----
if ! $K tui -p "$P1" -p "$P2" -n $N --temp 0 --snapshot "$TMP/s.jsonl" 2>"$TMP/s.err"; then
  bad "--snapshot run failed"; cat "$TMP/s.err"; finish; exit; fi
$K tui -p "$P1" -n 1 --temp 0 --head 2 --snapshot "$TMP/h2.jsonl" 2>/dev/null || bad "--snapshot --head 2"
$K tui -p "$P1" -n 2 --temp 0 --layer 2 --snapshot "$TMP/l2.jsonl" 2>/dev/null || bad "--snapshot --layer 2"
grep -qiE 'validation (error|warning)' "$TMP/s.err" && bad "Vulkan validation messages: $(grep -ciE 'validation (error|warning)' "$TMP/s.err")" ||
  ok "snapshot run: no Vulkan validation message${KVSCOPE_VALIDATION:+ (validation on)}"
num() { sed -n "s/.*\"$1\":\(-\{0,1\}[0-9.]*\).*/\1/p" | head -1; }
steps=$(grep -c '"type":"step"' "$TMP/s.jsonl"); dones=$(grep -c '"type":"done"' "$TMP/s.jsonl")
[ "$steps" = $((2 * N)) ] && [ "$dones" = 2 ] && ok "snapshot: $steps step lines, $dones done lines" ||
  bad "snapshot has $steps steps and $dones done lines"
worst=$(grep '"type":"step"' "$TMP/s.jsonl" | while read -r line; do
  rs=$(echo "$line" | num row_sum)
  bars=$(echo "$line" | grep -o '"pct":[0-9.]*' | cut -d: -f2 | paste -sd+ -)
  rest=$(echo "$line" | num rest_pct)
  echo "$rs $bars+$rest" | awk '{ split($2, a, "+"); s = 0; for (i in a) s += a[i];
    d1 = $1 - 1; if (d1 < 0) d1 = -d1; d2 = s - 100; if (d2 < 0) d2 = -d2; print d1 * 100, d2 }'
done | awk '{ if ($1 > w1) w1 = $1; if ($2 > w2) w2 = $2 } END { printf "%.4f %.2f\n", w1, w2 }')
if awk -v w="$worst" 'BEGIN { split(w, a, " "); exit !(a[1] < 0.1 && a[2] <= 1.0) }'; then
  ok "snapshot: every row sums to 1 (worst off by $(echo $worst | cut -d' ' -f1)%), bars + rest to 100% (worst off by $(echo $worst | cut -d' ' -f2) points)"
else bad "snapshot sums off: $worst"; fi
second=$(grep '"type":"step"' "$TMP/s.jsonl" | sed -n "$((N + 1))p")
c2=$(echo "$second" | sed -n 's/.*"counts":{"cached":\([0-9]*\).*/\1/p')
prov2=$(echo "$second" | sed -n 's/.*"provenance":"\([^"]*\)".*/\1/p')
if [ "${c2:-0}" -ge 16 ] && [ "${prov2:0:$c2}" = "$(printf '=%.0s' $(seq 1 "$c2"))" ] &&
   [ "$(echo "$second" | num hit_rate)" != "0.0000" ]; then
  ok "snapshot: the second prompt's shared prefix is cached ($c2 positions '=': $prov2)"
else bad "snapshot: second prompt cached '$c2', provenance '$prov2'"; fi

# "pos:pct" of the bars of step S (0-based) of request 1 in a snapshot
snap_bars() { grep '"type":"step"' "$1" | sed -n "$(($2 + 1))p" | grep -o '"pos":[0-9]*,"prov":"[a-z]*","label":"\([^"\\]\|\\.\)*","pct":[0-9.]*' |
  sed 's/"pos":\([0-9]*\),.*"pct":\([0-9.]*\)/\1:\2/' | head -"$3" | paste -sd' ' -; }

# ---- the screen ----
cap() { T capture-pane -p -t k >"$TMP/screen.txt"; }
# until the screen matches PATTERN (extended regex) and has stopped changing (a capture can
# land in the middle of a redraw), at most SECONDS
wait_for() {
  local i=0
  while [ $i -lt $(($2 * 10)) ]; do
    cap
    if grep -Eq -- "$1" "$TMP/screen.txt"; then
      cp "$TMP/screen.txt" "$TMP/screen.prev"
      sleep 0.15; cap
      cmp -s "$TMP/screen.txt" "$TMP/screen.prev" && grep -Eq -- "$1" "$TMP/screen.txt" && return 0
    fi
    sleep 0.1; i=$((i + 1))
  done
  return 1
}
# the bar lines under the " attention" title: "pos:pct" for the glyph lines, then "~rest"
screen_bars() { awk '/^ attention/ { on = 1; next } on && !/^[=+*~] / { exit } on { print }' "$TMP/screen.txt" |
  grep -oE '^[=+*~] [^%]*%' | sed -E 's/^[=+*] +([0-9]+) .* +([0-9.]+)%$/\1:\2/; s/^~ .* ([0-9.]+)%$/~\1/'; }
show() { sed 's/^/  | /' "$TMP/screen.txt"; }

T new-session -d -s k -x 80 -y 24 "env -u NO_COLOR LANG=C.UTF-8 PS1='READY\$ ' bash --norc --noprofile"
T send-keys -t k "$K tui -p '$P1' -n $N --temp 0 --paused --delay 0; echo EXIT=\$?" Enter
if ! wait_for '^ PAUSED' 30; then bad "the UI did not come up paused after the first token"; show; finish; exit; fi
[ "$(T display -p -t k '#{alternate_on}')" = 1 ] && ok "runs on the alternate screen" || bad "not on the alternate screen"
b0=$(screen_bars | grep -v '~' | paste -sd' ' -)
nb=$(echo "$b0" | wc -w)
want=$(snap_bars "$TMP/s.jsonl" 0 "$nb")
[ "$nb" -ge 5 ] && [ "$b0" = "$want" ] && ok "step 1 bars (layer 1, head 1) are the snapshot's: $b0" ||
  { bad "step 1 bars '$b0' != snapshot '$want'"; show; }
sum=$(screen_bars | sed 's/.*[:~]//' | awk '{ s += $1 } END { print s }')
awk -v s="$sum" 'BEGIN { exit !(s > 99 && s < 101) }' && ok "the bars on screen add up to $sum%" || { bad "bars add up to $sum%"; show; }
grep -q '= cached' "$TMP/screen.txt" && grep -q '+ prefill' "$TMP/screen.txt" && grep -q '\* generated' "$TMP/screen.txt" &&
  ok "legend on screen" || bad "no legend"

T send-keys -t k h
wait_for 'head 2/8' 5 || bad "h did not select head 2"
b1=$(screen_bars | grep -v '~' | paste -sd' ' -)
want=$(snap_bars "$TMP/h2.jsonl" 0 "$(echo "$b1" | wc -w)")
[ "$b1" != "$b0" ] && [ "$b1" = "$want" ] && ok "h: head 2's bars, as --head 2 gives them" || { bad "head 2 bars '$b1' vs '$want'"; show; }
T send-keys -t k H
wait_for 'head 1/8' 5 && [ "$(screen_bars | grep -v '~' | paste -sd' ' -)" = "$b0" ] && ok "H: back to head 1, same bars" || bad "H"
T send-keys -t k l
wait_for 'layer 2/4' 5 || bad "l did not select layer 2"
T send-keys -t k s
wait_for "attention L2 h1" 20 || { bad "s did not step a token with layer 2's rows"; show; }
b2=$(screen_bars | grep -v '~' | paste -sd' ' -)
want=$(snap_bars "$TMP/l2.jsonl" 1 "$(echo "$b2" | wc -w)")
other=$(snap_bars "$TMP/s.jsonl" 1 "$(echo "$b2" | wc -w)")
[ "$b2" = "$want" ] && [ "$b2" != "$other" ] && ok "l + s: the next token's bars are layer 2's (as --layer 2), not layer 1's" ||
  { bad "layer 2 step bars '$b2' vs '$want' (layer 1: '$other')"; show; }
grep -q '^ PAUSED' "$TMP/screen.txt" && ok "s stepped one token and stayed paused" || bad "not paused after s"

T send-keys -t k ' '
wait_for '^ DONE' 30 || { bad "space did not run the request to the end"; show; }
strip=$(grep -E '^<?[=+*]+$' "$TMP/screen.txt" | head -1)
echo "$strip" | grep -Eq '^\+{20,}\*+$' && ok "cold request: positions '+' (prefill) then '*' (generated): $strip" || { bad "strip '$strip'"; show; }

T send-keys -t k n
wait_for 'new prompt>' 5 || bad "n did not open the prompt line"
T send-keys -t k -l "$P2"
T send-keys -t k Enter
# --paused holds every prompt after its first token: space lets it run
wait_for '^ PAUSED .*request 2' 30 && T send-keys -t k ' '
wait_for '^ DONE .*request 2' 30 || { bad "the second prompt did not finish"; show; }
hit=$(grep -oE 'cached [0-9]+ \([0-9]+%\)' "$TMP/screen.txt" | head -1)
strip=$(grep -E '^<?[=+*]+$' "$TMP/screen.txt" | head -1)
if [ "${hit#cached }" != "$hit" ] && [ "$(echo "$hit" | cut -d' ' -f2)" -ge 16 ] && echo "$strip" | grep -Eq '^={16,}\++\*+$'; then
  ok "second prompt sharing a prefix: stats '$hit', positions $strip"
else bad "second prompt: stats '$hit', strip '$strip'"; show; fi

T send-keys -t k c
wait_for 'continue>' 5 || bad "c did not open the prompt line"
T send-keys -t k -l "Q: And blue?"
T send-keys -t k Enter
wait_for '^ PAUSED .*request 3' 30 && T send-keys -t k ' '
wait_for '^ DONE .*request 3 \(continued\)' 30 || { bad "continuing did not finish"; show; }
hit3=$(grep -oE 'cached [0-9]+ \([0-9]+%\)' "$TMP/screen.txt" | head -1 | cut -d' ' -f2)
[ "${hit3:-0}" -ge 32 ] && ok "continue: the earlier turn (prompt and reply) came from the cache: $hit3 positions" ||
  { bad "continue: cached '$hit3'"; show; }

T resize-window -t k -x 132 -y 40
wait_for '^.{80,} stats' 5 && ok "resize to 132x40: redrawn with the stats in a side column" || { bad "no redraw at 132x40"; show; }
n_bars=$(screen_bars | wc -l)
[ "$n_bars" -gt 11 ] && ok "132x40 shows $n_bars bar lines (80x24: 11)" || bad "132x40 shows $n_bars bar lines"
T resize-window -t k -x 30 -y 8
wait_for 'need 40x12, have 30x8' 5 && ok "resize to 30x8: asks for more room" || { bad "30x8"; show; }
T resize-window -t k -x 80 -y 24
wait_for '^ DONE' 5 && ok "resize back to 80x24: full screen again" || bad "no redraw at 80x24"
T send-keys -t k '?'
wait_for 'kvscope tui: keys' 5 && ok "? opens the help" || bad "no help overlay"
T send-keys -t k Escape
sleep 0.3; cap
! grep -q 'kvscope tui: keys' "$TMP/screen.txt" && ok "a key closes the help" || bad "help stays open"
T send-keys -t k x
wait_for 'prompt cache cleared' 5 && ok "x clears the cache: $(grep -o 'prompt cache cleared[^)]*)' "$TMP/screen.txt")" || bad "x"

T send-keys -t k q
wait_for '^EXIT=0' 10 && ok "q quits with status 0" || { bad "q did not quit cleanly"; show; }
[ "$(T display -p -t k '#{alternate_on}')" = 0 ] && ok "quit left the alternate screen" || bad "still on the alternate screen after quit"
T capture-pane -p -S - -t k | grep -iE 'validation (error|warning)|sanitizer|runtime error' >"$TMP/errors.txt"
[ ! -s "$TMP/errors.txt" ] && ok "nothing reported on stderr while the screen was up (it is shown after quit)" ||
  { bad "stderr after quit:"; sed 's/^/  /' "$TMP/errors.txt"; }
T send-keys -t k 'stty -a | tr " ;" "\n\n" | grep -xE -- "-?(echo|icanon)" | paste -sd, -' Enter
wait_for '^(echo,icanon|icanon,echo)$' 5 && ok "the terminal is back in cooked mode with echo" || { bad "terminal modes not restored"; show; }

# ---- colours, NO_COLOR, and signals ----
T send-keys -t k "clear; $K tui -p '$P1' -n 400 --delay 300; echo EXIT=\$?" Enter
wait_for '^ RUNNING' 30 || { bad "second run did not start"; show; }
T capture-pane -e -p -t k >"$TMP/color.txt"
grep -q $'\e\\[3[0-7]m\|\e\\[[0-9;]*3[0-7]m' "$TMP/color.txt" && ok "colour by default" || bad "no colour codes by default"
T send-keys -t k C-c
# an interactive bash abandons the rest of a command line whose job died of SIGINT: ask after
wait_for '^READY\$ ?$' 10 && T send-keys -t k 'echo EXIT=$?' Enter
wait_for '^EXIT=130' 10 && ok "SIGINT (^C): the UI ends by the signal (status 130)" || { bad "SIGINT"; show; }
[ "$(T display -p -t k '#{alternate_on}')" = 0 ] && ok "SIGINT left the alternate screen" || bad "alternate screen after SIGINT"
T send-keys -t k "clear; NO_COLOR=1 $K tui -p '$P1' -n 400 --delay 300; echo EXIT=\$?" Enter
wait_for '^ RUNNING' 30 || { bad "NO_COLOR run did not start"; show; }
T capture-pane -e -p -t k >"$TMP/nocolor.txt"
! grep -q $'\e\\[[0-9;]*3[0-7]m\|\e\\[[0-9;]*38;5' "$TMP/nocolor.txt" && grep -q '^ RUNNING' "$TMP/screen.txt" &&
  ok "NO_COLOR: no colour codes, glyphs still there" || bad "NO_COLOR: colour codes present"
shell_pid=$(T display -p -t k '#{pane_pid}')
tui_pid=$(ps -o pid= --ppid "$shell_pid" | head -1 | tr -d ' ')
[ -n "$tui_pid" ] && kill -TERM "$tui_pid"
wait_for '^EXIT=143' 10 && ok "SIGTERM: the UI ends with status 143" || { bad "SIGTERM"; show; }
[ "$(T display -p -t k '#{alternate_on}')" = 0 ] && ok "SIGTERM left the alternate screen" || bad "alternate screen after SIGTERM"
T send-keys -t k 'clear; stty -a | tr " ;" "\n\n" | grep -xE -- "-?(echo|icanon)" | paste -sd, -' Enter
wait_for '^(echo,icanon|icanon,echo)$' 5 && ok "after the signals the terminal is in cooked mode with echo" || { bad "terminal modes after signals"; show; }
echo "took $(($(date +%s) - START)) s"
finish
