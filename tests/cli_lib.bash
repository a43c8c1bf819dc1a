# cli_lib.bash — shared helpers for the shell tests of the real binary (sourced, not a test).
# Usage in a test: source "$(dirname "$0")/cli_lib.bash" "$@"
KVSCOPE=$1
SHARED=$2
BUILD=$3
FAILS=0
PASSES=0
TMP="$BUILD/test-tmp/$(basename "$0" .sh)"
rm -rf "$TMP" && mkdir -p "$TMP"

need_shared() {
  for f in "$@"; do
    if [ ! -r "$SHARED/$f" ]; then
      echo "SKIP: shared asset $SHARED/$f is absent (expected in ../shared beside the checkout)"
      exit 77
    fi
  done
}
ok() { PASSES=$((PASSES + 1)); echo "ok: $*"; }
bad() { FAILS=$((FAILS + 1)); echo "FAIL: $*"; }
# expect_fail NAME EXPECTED_STATUS PATTERN -- command...: runs it, checks the exit status and
# that stderr matches PATTERN (extended regex, case-insensitive), and that it did not crash.
expect_fail() {
  local name=$1 want=$2 pat=$3
  shift 4
  "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ "$rc" -ge 128 ]; then bad "$name: crashed with signal $((rc - 128))"; sed 's/^/  /' "$TMP/err"; return; fi
  if [ "$rc" != "$want" ]; then bad "$name: exit status $rc, expected $want"; sed 's/^/  /' "$TMP/err"; return; fi
  if ! grep -Eqi -- "$pat" "$TMP/err"; then bad "$name: message does not match /$pat/:"; sed 's/^/  /' "$TMP/err"; return; fi
  ok "$name: $(head -c 200 "$TMP/err" | tr '\n' ' ')"
}
# err_has NAME PATTERN...: stderr of the last expect_fail/command (in $TMP/err) matches every
# extended regex, case-insensitive
err_has() {
  local name=$1; shift
  for pat in "$@"; do
    grep -Eqi -- "$pat" "$TMP/err" || { bad "$name: stderr lacks /$pat/"; sed 's/^/  /' "$TMP/err"; return; }
  done
  ok "$name: stderr has every expected part"
}
# need_device: a Vulkan device must exist; else SKIP (exit 77), or fail under KVSCOPE_REQUIRE_GPU
need_device() {
  if ! "$KVSCOPE" devices >/dev/null 2>&1; then
    if [ "${KVSCOPE_REQUIRE_GPU:-0}" != 0 ]; then bad "no Vulkan device but KVSCOPE_REQUIRE_GPU=1"; finish; exit 1; fi
    echo "SKIP: no Vulkan device ($("$KVSCOPE" devices 2>&1 | head -1))"
    exit 77
  fi
}
finish() {
  echo "$PASSES passed, $FAILS failed"
  [ "$FAILS" = 0 ]
}
