#!/usr/bin/env bash
# vocab_conformance.sh — tokenizer conformance of the real binary against independent test
# vectors: for every vocabulary GGUF in $SHARED/vocab (llama.cpp's vocab-only files, each with a
# .inp of texts separated by "\n__ggml_vocab_test__\n" and a .out with one line of expected ids
# per text, made without BOS/EOS and without parsing special tokens), each text is written to a
# file byte for byte (no newline added) and `kvscope tokenize -m VOCAB -f FILE --ids --no-bos`
# must print exactly the expected ids. A vocabulary without its .inp/.out pair is reported and
# skipped; any mismatch, crash or error fails.
source "$(dirname "$0")/cli_lib.bash" "$@"
export LC_ALL=C # split and compare bytes, not characters
SEP=$'\n__ggml_vocab_test__\n'

shopt -s nullglob
vocabs=("$SHARED"/vocab/*.gguf)
if [ ${#vocabs[@]} = 0 ]; then
  echo "SKIP: no vocabulary GGUF in $SHARED/vocab (expected in ../shared beside the checkout)"
  exit 77
fi

# Prints the ids of a `--ids` line ("[1, 2, 3]" or "1 2 3") as "1 2 3".
normalise() { tr -d '[],' | tr -s ' \t\n' ' ' | sed 's/^ //; s/ $//'; }


n_vocab=0
for v in "${vocabs[@]}"; do
  name=$(basename "$v")
  if [ ! -r "$v.inp" ] || [ ! -r "$v.out" ]; then
    echo "note: $name has no .inp/.out test vectors: not checked"
    continue
  fi
  n_vocab=$((n_vocab + 1))
  # The whole .inp, trailing newlines included (read stops at the NUL the file does not have).
  IFS= read -r -d '' rest <"$v.inp"
  mapfile -t want <"$v.out"
  inputs=()
  while [[ $rest == *"$SEP"* ]]; do
    inputs+=("${rest%%"$SEP"*}")
    rest=${rest#*"$SEP"}
  done
  [ -n "$rest" ] && inputs+=("$rest") # text after the last separator, if the file has any
  if [ ${#inputs[@]} != ${#want[@]} ]; then
    bad "$name: ${#inputs[@]} texts in .inp but ${#want[@]} lines in .out"
    continue
  fi
  fails=0
  for i in "${!inputs[@]}"; do
    in="$TMP/$name.$i.txt"
    printf '%s' "${inputs[$i]}" >"$in"
    "$KVSCOPE" tokenize -m "$v" -f "$in" --ids --no-bos >"$TMP/out" 2>"$TMP/err"
    rc=$?
    got=$(normalise <"$TMP/out")
    exp=$(printf '%s' "${want[$i]}" | normalise)
    if [ "$rc" != 0 ] || [ "$got" != "$exp" ]; then
      fails=$((fails + 1))
      bad "$name text $i $(printf '%q' "${inputs[$i]:0:60}"): exit status $rc"
      echo "    want: $exp"
      echo "    got:  $got"
      sed 's/^/    stderr: /' "$TMP/err" | head -5
    fi
  done
  if [ $fails = 0 ]; then
    ok "$name: all ${#inputs[@]} texts give the expected ids"
  fi
done
if [ $n_vocab = 0 ]; then
  echo "SKIP: no vocabulary in $SHARED/vocab has .inp/.out test vectors"
  exit 77
fi
finish
