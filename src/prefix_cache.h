/* prefix_cache.h — which K/V blocks of the GPU pool hold which token prefixes, across requests.
 *
 * Index: hash-chained full blocks (the vLLM scheme), not a radix tree (SGLang). Our unit of reuse
 * is already a fixed 16-position block of the paged pool, so keying each full block by a hash of
 * its tokens chained with the hash of everything before it gives an O(1) lookup per block, needs
 * no tree surgery on insert or eviction, and names a block on disk by that same hash
 * (--cache-dir). A radix tree would add token-granular sharing inside a block; at 16 tokens per
 * block that gains little next to its bookkeeping. Each indexed block also keeps its tokens and
 * its parent's hash, and a lookup compares them, so a hash collision can never serve a wrong row.
 *
 * Blocks are reference-counted by the sequences using them. An unreferenced indexed block stays
 * cached until evicted least-recently-used when a new block is needed, expired by the TTL, or
 * dropped by a clear; a pinned block (an explicitly marked prefix) is not evicted before its pin
 * expires. Blocks in use are never evicted.
 *
 * What it is not: it moves no data (forward.c writes and reads the rows; cache_file.c stores
 * them) and knows nothing of the model. */
#ifndef KS_PREFIX_CACHE_H
#define KS_PREFIX_CACHE_H
#include <stdint.h>

#include "common.h"

#define KS_PC_BLOCK 16 /* positions per block; equals KS_KV_BLOCK */

typedef struct {
  uint64_t hash;       /* chain hash of all tokens up to the end of this block */
  uint64_t parent;     /* chain hash of the prefix before it (0 for the first block) */
  int32_t tokens[KS_PC_BLOCK];
  int refs;            /* sequences holding it */
  int indexed;         /* full, computed and findable by hash */
  double last_used;    /* seconds (caller's clock) */
  double pinned_until; /* not evicted before this time */
  int lru_prev, lru_next; /* links in the list of unreferenced indexed blocks */
  int hnext;              /* next block in the same hash bucket */
} ks_block;

/* A sequence's block table: blocks[i] holds positions i*16 .. i*16+15. */
typedef struct {
  uint32_t *blocks;
  int n, cap;
} ks_seq;

typedef struct {
  uint64_t lookups, hit_blocks, miss_blocks;
  uint64_t evictions, expirations, published;
} ks_pc_stats;

typedef struct ks_pcache ks_pcache;

ks_status pcache_create(ks_pcache **out, int n_blocks);
void pcache_destroy(ks_pcache *pc);
int pcache_n_blocks(const ks_pcache *pc);
int pcache_n_free(const ks_pcache *pc);    /* blocks holding nothing */
int pcache_n_cached(const ks_pcache *pc);  /* indexed blocks (in use or not) */
int pcache_n_used(const ks_pcache *pc);    /* blocks referenced by a sequence */
const ks_pc_stats *pcache_stats(const ks_pcache *pc);
const ks_block *pcache_block(const ks_pcache *pc, uint32_t id);

/* Chain hash of block `tokens` (KS_PC_BLOCK of them) after a prefix hashing to `parent`. */
uint64_t pcache_chain_hash(uint64_t parent, const int32_t *tokens);

/* Appends to seq (which must be empty) the cached blocks of the longest cached prefix of
 * tokens[0..n), at most max_blocks of them, taking a reference on each. Returns the count. */
int pcache_match(ks_pcache *pc, const int *tokens, int n, int max_blocks, ks_seq *seq,
                 double now);
/* Finds the indexed block with this hash (verifying parent and tokens); -1 if none. */
int pcache_find(const ks_pcache *pc, uint64_t hash, uint64_t parent, const int32_t *tokens);
/* Appends one fresh private block to seq, evicting the least recently used unreferenced,
 * unpinned block if none is free. KS_ERR_CACHE when every block is in use or pinned. */
ks_status pcache_alloc(ks_pcache *pc, ks_seq *seq, double now, uint32_t *id_out);
/* Block i of seq is full and its K/V rows are computed: index it under the chain hash of
 * tokens[0..(i+1)*16). If an equal block is already indexed, the sequence keeps its private copy
 * unindexed (it is freed on release). pin_until > now pins it. Returns the block's hash. */
uint64_t pcache_publish(ks_pcache *pc, ks_seq *seq, int i, const int *tokens, double now,
                        double pin_until);
/* Adopts a block read from disk: allocates one (evicting if needed), indexes it with the given
 * identity and appends it to seq with a reference. The caller uploads its rows. */
ks_status pcache_adopt(ks_pcache *pc, ks_seq *seq, uint64_t hash, uint64_t parent,
                       const int32_t *tokens, double now, uint32_t *id_out);
/* Drops the sequence's references; its unindexed blocks return to the free list. */
void pcache_release(ks_pcache *pc, ks_seq *seq, double now);
/* Drops unreferenced indexed blocks idle for more than ttl seconds (ttl <= 0: none). Pins
 * expire the same way. Returns how many were dropped. */
int pcache_expire(ks_pcache *pc, double now, double ttl);
/* Drops every unreferenced indexed block (pins included). */
void pcache_clear(ks_pcache *pc);

void seq_init(ks_seq *s);
void seq_free(ks_seq *s);

#endif
