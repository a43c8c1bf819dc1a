#!/usr/bin/env bash
# cli_errors.sh — bad input to the real binary: each case gets a clear message and a non-zero
# exit status, never a crash or a hang.
source "$(dirname "$0")/cli_lib.bash" "$@"
need_shared models/stories260K.bin models/tok512.bin
M=$SHARED/models/stories260K.bin
Z=$SHARED/models/tok512.bin
K=$KVSCOPE

expect_fail "missing model file" 1 "cannot open model file.*no/such" -- $K run -m /no/such/model.gguf -p hi
printf 'this is not a model at all, just some text\n' >"$TMP/text.gguf"
expect_fail "wrong magic" 1 "not a GGUF file|llama2.c|checkpoint" -- $K run -m "$TMP/text.gguf" -p hi
head -c 10000 "$M" >"$TMP/trunc.bin"
expect_fail "truncated llama2.c checkpoint" 1 "truncat|short|expected" -- $K run -m "$TMP/trunc.bin" -z "$Z" -p hi
expect_fail "checkpoint without tokenizer" 1 "-z" -- $K run -m "$M" -p hi
$K convert "$M" -z "$Z" "$TMP/m.gguf" >/dev/null 2>&1 || bad "convert failed"
head -c 300000 "$TMP/m.gguf" >"$TMP/trunc.gguf"
expect_fail "truncated GGUF" 1 "outside|truncat|beyond|past|end of" -- $K run -m "$TMP/trunc.gguf" -p hi
head -c 200 "$TMP/m.gguf" >"$TMP/trunc2.gguf"
expect_fail "GGUF cut inside its header" 1 "truncat|end of|short|outside" -- $K run -m "$TMP/trunc2.gguf" -p hi
perl -0777 -pe 's/(general\.architecture.{12})llama/${1}gpt9x/s' "$TMP/m.gguf" >"$TMP/arch.gguf"
expect_fail "unknown architecture" 1 "architecture.*gpt9x" -- $K run -m "$TMP/arch.gguf" -p hi
long=$(for i in $(seq 1 300); do printf 'once upon a time '; done)
expect_fail "prompt longer than the context" 1 "prompt is [0-9]+ tokens.*context" -- $K run -m "$M" -z "$Z" -c 64 -p "$long"
printf 'Once upon \xff\xfe a time' >"$TMP/bad-utf8.txt"
expect_fail "invalid UTF-8 prompt" 1 "not valid UTF-8.*offset 10" -- $K run -m "$M" -z "$Z" -f "$TMP/bad-utf8.txt"
expect_fail "no Vulkan device" 1 "mesa-vulkan-drivers" -- env VK_DRIVER_FILES=/nonexistent/icd.json VK_ICD_FILENAMES=/nonexistent/icd.json $K run -m "$M" -z "$Z" -p hi
expect_fail "unknown option" 2 "unknown option" -- $K run --frobnicate
expect_fail "bad number" 2 "bad integer" -- $K run -m "$M" -z "$Z" -p hi -n lots
expect_fail "no prompt" 2 "needs a prompt" -- $K run -m "$M" -z "$Z"
expect_fail "unknown command" 2 "unknown command" -- $K frobnicate
expect_fail "device out of range" 1 "device" -- $K run -m "$M" -z "$Z" -p hi --device 99
expect_fail "bad KVSCOPE_COOPMAT" 1 "KVSCOPE_COOPMAT='fast' must be off, prefill, f16 or all" -- env KVSCOPE_COOPMAT=fast $K run -m "$M" -z "$Z" -p hi
expect_fail "bad KVSCOPE_ATTN_WG" 1 "KVSCOPE_ATTN_WG='100' must be 64, 128 or 256" -- env KVSCOPE_ATTN_WG=100 $K run -m "$M" -z "$Z" -p hi
expect_fail "bad KVSCOPE_MM_RDEC" 1 "KVSCOPE_MM_RDEC='3' must be 2 or 4" -- env KVSCOPE_MM_RDEC=3 $K run -m "$M" -z "$Z" -p hi
finish
