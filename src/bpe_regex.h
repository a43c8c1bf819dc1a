/* bpe_regex.h — a small backtracking regular-expression matcher for the pre-tokenizer patterns of
 * byte-level BPE vocabularies, with the semantics llama.cpp gets from std::regex (ECMAScript
 * syntax, leftmost-first alternation, greedy quantifiers with backtracking), including how it
 * feeds Unicode to std::regex:
 *   - a pattern that uses \p{N} \p{L} \p{P} \p{M} \p{S} (or \p{Lu} \p{Ll} \p{Lt} \p{Lm} \p{Lo},
 *     all read as \p{L}) runs on a "collapsed" text where each code point above U+007F becomes one
 *     stand-in unit for its class (0x0B for White_Space, 0xD1..0xD5 for N L P M S, 0xD0 for the
 *     rest), and each \p{X} becomes a bracket of that stand-in plus the ASCII members of X;
 *   - any other pattern runs on the code points themselves, non-ASCII White_Space turned to 0x0B
 *     (so \s, which is ASCII-only in std::regex, still sees it).
 * Supported: literals, . [...] [^...] ranges, \s \S \d \D \w \W \r \n \t \f \v \xHH \uHHHH,
 * identity escapes, (...) (?:...) (?=...) (?!...), | * + ? {m} {m,} {m,n} (and lazy forms),
 * ^ $. Not supported (a clear error): back-references, \b, lookbehind, inline flags.
 * Not a general regex library: no captures are reported, only where matches start and end. */
#ifndef KS_BPE_REGEX_H
#define KS_BPE_REGEX_H
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct ks_regex ks_regex;

/* pattern is UTF-8. Errors (KS_ERR_UNSUPPORTED) name the pattern and the offending offset. */
ks_status regex_compile(ks_regex **out, const char *pattern);
void regex_destroy(ks_regex *re);

/* Refines a segmentation of n code points (cps, with their unicode_flags in flags) the way
 * llama.cpp's unicode_regex_split does for one pattern: within each input segment (lens[0..n_in)
 * code points, in order, summing to n), every match of the pattern (searched left to right, each
 * search starting where the last match ended) and every stretch between matches becomes a
 * segment. out_lens needs room for n entries; *n_out receives the count. */
ks_status regex_split(const ks_regex *re, const uint32_t *cps, const uint16_t *flags, size_t n,
                      const size_t *lens, size_t n_in, size_t *out_lens, size_t *n_out);

#endif
