/* unicode.c — code point classes (binary search over the generated runs in unicode_data.c),
 * UTF-8 decoding of text already validated by ks_utf8_valid, and GPT-2's byte alphabet.
 * Not a validator: malformed input gives unspecified (but memory-safe) code points. */
#include "unicode.h"

unsigned unicode_flags(uint32_t cp) {
  if (cp >= 0x110000) return KS_UC_UNDEF;
  size_t lo = 0, hi = ks_uc_n_ranges - 1; /* invariant: ranges[lo].first <= cp < ranges[hi].first */
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (ks_uc_ranges[mid].first <= cp) lo = mid;
    else hi = mid;
  }
  return ks_uc_ranges[lo].flags;
}

size_t unicode_decode(const char *s, size_t len, uint32_t *cps, uint32_t *offs) {
  const unsigned char *u = (const unsigned char *)s;
  size_t n = 0, i = 0;
  while (i < len) {
    unsigned char b = u[i];
    int k = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
    uint32_t cp = k == 1 ? b : k == 2 ? (b & 0x1Fu) : k == 3 ? (b & 0x0Fu) : (b & 0x07u);
    if (i + (size_t)k > len) k = (int)(len - i); /* only reachable with unvalidated input */
    for (int j = 1; j < k; j++) cp = cp << 6 | (u[i + (size_t)j] & 0x3Fu);
    offs[n] = (uint32_t)i;
    cps[n++] = cp;
    i += (size_t)k;
  }
  offs[n] = (uint32_t)len;
  return n;
}

int unicode_encode(uint32_t cp, char out[4]) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18 & 0x07));
  out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Bytes that print as themselves in GPT-2's alphabet. */
static int byte_is_printable(unsigned b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t unicode_byte_to_cp(uint8_t b) {
  if (byte_is_printable(b)) return b;
  /* The others take U+0100, U+0101, ... in byte order: count the non-printable bytes below. */
  uint32_t n = 0;
  for (unsigned c = 0; c < b; c++) n += !byte_is_printable(c);
  return 0x100 + n;
}

int unicode_cp_to_byte(uint32_t cp) {
  if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
  uint32_t n = 0;
  for (unsigned c = 0; c < 256; c++)
    if (!byte_is_printable(c) && n++ == cp - 0x100) return (int)c;
  return -1;
}
