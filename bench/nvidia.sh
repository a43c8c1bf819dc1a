#!/usr/bin/env bash
# nvidia.sh — the benchmark table of issue 6 on the GPU machine (../shared/gpu/NVIDIA.md): brings
# the Vulkan loader from .gl/, points it at NVIDIA's driver, writes the random-weight models of
# the issue's table into /tmp (TinyLlama-1.1B shape in F16, Q8_0 and Q4_0; Llama-2-7B shape in
# Q4_0), runs `kvscope bench --json-out` on each, and leaves everything under $OUT:
#   env.txt          date, card, driver, command, commit
#   devices.txt      kvscope devices
#   NAME.json        bench's JSON object; NAME.txt its table; NAME.convert.txt the generation
#   summary.md       one markdown table of all models (what bench/README.md records)
# Run from the repository root with the build folder and .gl carried along:
#   bash bench/nvidia.sh [BUILD_DIR]           (default: build; or KVSCOPE=path/to/kvscope)
# Environment: OUT (default ./bench-out), REPS (default 5), PP (512), TG (128), MODELS (the list
# below, "shape:type name" pairs separated by ';'), BUDGET_S (total seconds, default 450: models
# not started by then are skipped, so the script ends within ~8 minutes).
# Not a test: it judges nothing; the numbers go into bench/README.md by hand.
set -u
BUILD=${1:-build}
K=${KVSCOPE:-$BUILD/kvscope}
OUT=${OUT:-$PWD/bench-out}
REPS=${REPS:-5}
PP=${PP:-512}
TG=${TG:-128}
BUDGET_S=${BUDGET_S:-450}
MODELS=${MODELS:-"tinyllama-1.1b:f16 1.1b-f16;tinyllama-1.1b:q8_0 1.1b-q8_0;tinyllama-1.1b:q4_0 1.1b-q4_0;llama-2-7b:q4_0 7b-q4_0"}
TMPM=${TMPM:-/tmp/kvscope-bench-models}
START=$(date +%s)
mkdir -p "$OUT" "$TMPM"

# The Vulkan loader is not installed on the GPU machine: unpack the .deb files brought along.
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
  if ls .gl/*.deb >/dev/null 2>&1; then
    for f in .gl/*.deb; do dpkg -x "$f" / || echo "nvidia.sh: cannot unpack $f" >&2; done
    ldconfig
  else
    echo "nvidia.sh: no Vulkan loader here and no .gl/*.deb to unpack (see ../shared/gpu/NVIDIA.md)" >&2
  fi
fi
ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -r "$ICD" ] && export VK_DRIVER_FILES=$ICD
export KVSCOPE_PROGRESS=0

if [ ! -x "$K" ]; then
  echo "nvidia.sh: no kvscope binary at $K: build first and carry the build folder" | tee "$OUT/error.txt" >&2
  exit 1
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm), $(nproc) CPUs"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "binary: $K"
  echo "VK_DRIVER_FILES: ${VK_DRIVER_FILES:-unset}"
  echo "command: kvscope bench -m MODEL -p $PP -n $TG -r $REPS --json-out NAME.json"
} >"$OUT/env.txt"
"$K" devices >"$OUT/devices.txt" 2>&1 || { echo "nvidia.sh: kvscope devices failed:" >&2; cat "$OUT/devices.txt" >&2; }
cat "$OUT/env.txt" "$OUT/devices.txt"

# num KEY FILE: the first number stored under "KEY" in a JSON file
num() { grep -o "\"$1\":[-0-9.eE+]*" "$2" 2>/dev/null | head -1 | cut -d: -f2; }

IFS=';' read -r -a LIST <<<"$MODELS"
for entry in "${LIST[@]}"; do
  spec=${entry% *}
  name=${entry##* }
  shape=${spec%:*}
  type=${spec##*:}
  left=$((BUDGET_S - ($(date +%s) - START)))
  if [ "$left" -lt 60 ]; then
    echo "nvidia.sh: $name skipped: ${left}s of the time budget left" | tee -a "$OUT/skipped.txt"
    continue
  fi
  model=$TMPM/$name.gguf
  t0=$(date +%s)
  "$K" convert --random "$shape" "$model" --type "$type" >"$OUT/$name.convert.txt" 2>&1
  rc=$?
  echo "convert $shape $type: rc $rc, $(( $(date +%s) - t0 )) s: $(tail -1 "$OUT/$name.convert.txt")"
  [ $rc = 0 ] || continue
  left=$((BUDGET_S - ($(date +%s) - START)))
  timeout "$((left > 30 ? left - 10 : 20))" "$K" bench -m "$model" -p "$PP" -n "$TG" -r "$REPS" \
    --json-out "$OUT/$name.json" >"$OUT/$name.txt" 2>"$OUT/$name.err"
  rc=$?
  echo "bench $name: rc $rc"
  cat "$OUT/$name.txt"
  [ -s "$OUT/$name.err" ] && sed 's/^/  stderr: /' "$OUT/$name.err" | tail -5
  rm -f "$model"
done

{
  echo "| model | weights GB | copy GB/s | roofline tg | tg$TG | % of roofline | pp$PP | TTFT ms | prefill TFLOP/s | card |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for entry in "${LIST[@]}"; do
    name=${entry##* }
    j=$OUT/$name.json
    if [ ! -s "$j" ]; then echo "| $name | not measured (see $name.convert.txt, $name.err) |||||||||"; continue; fi
    awk -v n="$name" -v wb="$(num weights_bytes "$j")" -v bw="$(num copy_gb_per_s "$j")" \
        -v roof="$(num roofline_tg_tokens_per_s "$j")" -v tg="$(num tg_tokens_per_s "$j")" \
        -v pct="$(num roofline_pct "$j")" -v pp="$(num pp_tokens_per_s "$j")" \
        -v ttft="$(num ttft_ms "$j")" -v tf="$(num prefill_tflop_per_s "$j")" \
        -v dev="$(grep -o '"device":"[^"]*"' "$j" | cut -d'"' -f4)" \
        'BEGIN { printf "| %s | %.2f | %.0f | %.0f | %.1f | %.1f%% | %.1f | %.1f | %.2f | %s |\n", n, wb / 1e9, bw, roof, tg, pct, pp, ttft, tf, dev }'
  done
} >"$OUT/summary.md"
echo
cat "$OUT/summary.md"
echo "nvidia.sh: done in $(( $(date +%s) - START )) s; results in $OUT"
