/* test_prefix_cache.c — block bookkeeping of the prompt cache, without a GPU: longest-prefix
 * matching, publishing prompt and generated blocks, reference counts, LRU eviction that never
 * touches blocks in use, pins, TTL, hash collisions that must not serve a wrong block, and the
 * budget running out. */
#include <stdlib.h>
#include <string.h>

#include "prefix_cache.h"
#include "testutil.h"

#define B KS_PC_BLOCK

static void fill(int *t, int n, int seed) {
  for (int i = 0; i < n; i++) t[i] = (seed * 7919 + i * 31) % 1000;
}

/* Runs one "request": match, allocate the rest, publish full blocks, release. Returns matched. */
static int request(ks_pcache *pc, const int *t, int n, double now, double pin) {
  ks_seq s;
  seq_init(&s);
  int m = pcache_match(pc, t, n, (n - 1) / B, &s, now);
  while (s.n * B < n) REQUIRE(pcache_alloc(pc, &s, now, NULL) == KS_OK);
  for (int i = m; i < n / B; i++) pcache_publish(pc, &s, i, t, now, pin);
  pcache_release(pc, &s, now);
  seq_free(&s);
  return m;
}

static void test_match_and_reuse(void) {
  ks_pcache *pc;
  REQUIRE(pcache_create(&pc, 64) == KS_OK);
  int t[200], u[200];
  fill(t, 200, 1);
  CHECK(request(pc, t, 100, 1, 0) == 0);       /* cold: 6 full blocks published */
  CHECK(pcache_n_cached(pc) == 6);
  CHECK(pcache_n_used(pc) == 0);
  CHECK(request(pc, t, 100, 2, 0) == 6);       /* same prompt: 96 of 100 tokens */
  CHECK(request(pc, t, 96, 3, 0) == 5);        /* prompt ends on a block edge: keep one to compute */
  CHECK(request(pc, t, 150, 4, 0) == 6);       /* longer prompt: the shared 96 */
  CHECK(pcache_n_cached(pc) == 9);
  memcpy(u, t, sizeof u);
  u[40] = 999;                                 /* differs inside block 2 */
  CHECK(request(pc, u, 150, 5, 0) == 2);
  u[3] = 998;                                  /* differs in block 0: nothing shared */
  CHECK(request(pc, u, 150, 6, 0) == 0);
  /* partial last block is never indexed */
  int before = pcache_n_cached(pc);
  int v[40];
  fill(v, 40, 5);
  CHECK(request(pc, v, 40, 7, 0) == 0);
  CHECK(pcache_n_cached(pc) == before + 2);
  /* a block with the same tokens after another prefix is a different block */
  int w[32];
  fill(w, 16, 9);
  memcpy(w + 16, t + 16, sizeof(int) * 16); /* block 1 of t after another block 0 */
  ks_seq s;
  seq_init(&s);
  CHECK(pcache_match(pc, w, 32, 2, &s, 8) == 0);
  pcache_release(pc, &s, 8);
  seq_free(&s);
  pcache_destroy(pc);
}

static void test_refs_and_eviction(void) {
  ks_pcache *pc;
  REQUIRE(pcache_create(&pc, 8) == KS_OK);
  int a[64], b[64], c[64];
  fill(a, 64, 1);
  fill(b, 64, 2);
  fill(c, 64, 3);
  /* hold a's blocks in a live sequence, then flood the cache with others */
  ks_seq live;
  seq_init(&live);
  while (live.n < 4) REQUIRE(pcache_alloc(pc, &live, 1, NULL) == KS_OK);
  for (int i = 0; i < 4; i++) pcache_publish(pc, &live, i, a, 1, 0);
  CHECK(pcache_n_used(pc) == 4);
  CHECK(request(pc, b, 64, 2, 0) == 0); /* uses the 4 free blocks, caches b's 4 */
  CHECK(request(pc, c, 64, 3, 0) == 0); /* must evict b's blocks, never a's (in use) */
  CHECK(pcache_stats(pc)->evictions == 4);
  CHECK(request(pc, b, 64, 4, 0) == 0); /* b was evicted */
  ks_seq s;
  seq_init(&s);
  CHECK(pcache_match(pc, a, 64, 4, &s, 5) == 4); /* a intact */
  pcache_release(pc, &s, 5);
  /* every block in use: a request for one more fails cleanly */
  ks_seq s2;
  seq_init(&s2);
  while (s2.n < 4) REQUIRE(pcache_alloc(pc, &s2, 6, NULL) == KS_OK);
  ks_seq s3;
  seq_init(&s3);
  CHECK(pcache_alloc(pc, &s3, 6, NULL) == KS_ERR_CACHE);
  CHECK(strstr(ks_last_error(), "--cache-mb") != NULL);
  pcache_release(pc, &s2, 7);
  pcache_release(pc, &live, 7);
  CHECK(pcache_n_used(pc) == 0);
  /* LRU: touch a, then fill: the older c blocks go first */
  int m = request(pc, a, 65, 8, 0);
  CHECK(m == 4);
  int d[64];
  fill(d, 64, 4);
  request(pc, d, 64, 9, 0);
  seq_free(&s);
  seq_init(&s);
  CHECK(pcache_match(pc, a, 65, 4, &s, 10) == 4);
  pcache_release(pc, &s, 10);
  seq_free(&s);
  seq_free(&s2);
  seq_free(&s3);
  seq_free(&live);
  pcache_destroy(pc);
}

static void test_pins_and_ttl(void) {
  ks_pcache *pc;
  REQUIRE(pcache_create(&pc, 8) == KS_OK);
  int a[64], b[128];
  fill(a, 64, 1);
  fill(b, 128, 2);
  request(pc, a, 64, 0, 100); /* 4 blocks published, pinned until t=100 */
  CHECK(pcache_n_cached(pc) == 4);
  ks_seq s;
  seq_init(&s);
  /* 8 blocks wanted, 4 free: the pinned ones must survive, so the 5th fails */
  int got = 0;
  while (pcache_alloc(pc, &s, 10, NULL) == KS_OK) got++;
  CHECK(got == 4);
  pcache_release(pc, &s, 10);
  CHECK(pcache_match(pc, a, 64, 3, &s, 11) == 3);
  pcache_release(pc, &s, 11);
  /* after the pin expires they can go */
  got = 0;
  while (pcache_alloc(pc, &s, 200, NULL) == KS_OK) got++;
  CHECK(got == 8);
  pcache_release(pc, &s, 200);
  /* TTL: idle blocks older than ttl are dropped, fresh ones stay */
  pcache_clear(pc);
  request(pc, a, 64, 1000, 0);
  request(pc, b, 40, 1050, 0);
  CHECK(pcache_expire(pc, 1070, 30) == 4); /* a's, idle 70 s */
  CHECK(pcache_n_cached(pc) == 2);
  CHECK(pcache_expire(pc, 1070, 0) == 0);  /* ttl 0: off */
  seq_free(&s);
  pcache_destroy(pc);
}

static void test_collision_safety(void) {
  ks_pcache *pc;
  REQUIRE(pcache_create(&pc, 8) == KS_OK);
  int a[32];
  fill(a, 32, 1);
  request(pc, a, 32, 0, 0);
  /* a lookup with the right hash but other tokens must not match */
  int32_t other[B];
  for (int i = 0; i < B; i++) other[i] = a[i];
  other[5] ^= 1;
  uint64_t h = pcache_chain_hash(0, (const int32_t *)a);
  CHECK(pcache_find(pc, h, 0, (const int32_t *)a) >= 0);
  CHECK(pcache_find(pc, h, 0, other) < 0);
  CHECK(pcache_find(pc, h, 12345, (const int32_t *)a) < 0);
  /* duplicates: a second sequence computing the same block keeps a private copy */
  ks_seq s;
  seq_init(&s);
  REQUIRE(pcache_alloc(pc, &s, 1, NULL) == KS_OK);
  pcache_publish(pc, &s, 0, a, 1, 0);
  CHECK(!pcache_block(pc, s.blocks[0])->indexed);
  int cached = pcache_n_cached(pc);
  pcache_release(pc, &s, 1);
  CHECK(pcache_n_cached(pc) == cached && pcache_n_free(pc) == 8 - cached);
  seq_free(&s);
  pcache_destroy(pc);
}

int main(void) {
  test_match_and_reuse();
  test_refs_and_eviction();
  test_pins_and_ttl();
  test_collision_safety();
  return ks_test_done("test_prefix_cache");
}
