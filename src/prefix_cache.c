/* prefix_cache.c — block bookkeeping for the prompt cache: free list, hash-chained index,
 * reference counts, LRU list of reusable blocks, pins and TTL. See prefix_cache.h for why a hash
 * chain rather than a radix tree. */
#include "prefix_cache.h"

#include <stdlib.h>
#include <string.h>

struct ks_pcache {
  int n;
  ks_block *b;       /* (n) */
  int *free_stack;   /* (n) ids of blocks holding nothing */
  int n_free;
  int *buckets;      /* (n_buckets) head block id per hash bucket, -1 empty */
  int n_buckets;     /* power of two */
  int lru_head, lru_tail; /* unreferenced indexed blocks, least recently used first */
  int n_indexed, n_used;
  ks_pc_stats stats;
};

void seq_init(ks_seq *s) { memset(s, 0, sizeof *s); }
void seq_free(ks_seq *s) {
  free(s->blocks);
  memset(s, 0, sizeof *s);
}
static ks_status seq_push(ks_seq *s, uint32_t id) {
  if (s->n == s->cap) {
    int nc = s->cap ? s->cap * 2 : 16;
    uint32_t *nb = realloc(s->blocks, sizeof(uint32_t) * (size_t)nc);
    if (!nb) return ks_fail(KS_ERR_NOMEM, "out of host memory for a block table");
    s->blocks = nb;
    s->cap = nc;
  }
  s->blocks[s->n++] = id;
  return KS_OK;
}

/* splitmix64 finaliser over the parent hash and each token: cheap and well mixed. */
static uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
uint64_t pcache_chain_hash(uint64_t parent, const int32_t *tokens) {
  uint64_t h = mix(parent ^ 0x6b7673636f7065ull); /* "kvscope" */
  for (int i = 0; i < KS_PC_BLOCK; i++) h = mix(h ^ ((uint64_t)(uint32_t)tokens[i] + ((uint64_t)i << 32)));
  return h ? h : 1; /* 0 means "no parent" */
}

ks_status pcache_create(ks_pcache **out, int n_blocks) {
  *out = NULL;
  if (n_blocks <= 0) return ks_fail(KS_ERR_ARG, "prompt cache needs at least one block");
  ks_pcache *pc = calloc(1, sizeof *pc);
  if (!pc) return ks_fail(KS_ERR_NOMEM, "out of host memory");
  pc->n = n_blocks;
  pc->n_buckets = 16;
  while (pc->n_buckets < 2 * n_blocks) pc->n_buckets *= 2;
  pc->b = calloc((size_t)n_blocks, sizeof *pc->b);
  pc->free_stack = malloc(sizeof(int) * (size_t)n_blocks);
  pc->buckets = malloc(sizeof(int) * (size_t)pc->n_buckets);
  if (!pc->b || !pc->free_stack || !pc->buckets) {
    pcache_destroy(pc);
    return ks_fail(KS_ERR_NOMEM, "out of host memory for %d cache blocks", n_blocks);
  }
  for (int i = 0; i < pc->n_buckets; i++) pc->buckets[i] = -1;
  /* lowest ids handed out first */
  for (int i = 0; i < n_blocks; i++) pc->free_stack[i] = n_blocks - 1 - i;
  pc->n_free = n_blocks;
  pc->lru_head = pc->lru_tail = -1;
  for (int i = 0; i < n_blocks; i++) pc->b[i].lru_prev = pc->b[i].lru_next = pc->b[i].hnext = -1;
  *out = pc;
  return KS_OK;
}

void pcache_destroy(ks_pcache *pc) {
  if (!pc) return;
  free(pc->b);
  free(pc->free_stack);
  free(pc->buckets);
  free(pc);
}

int pcache_n_blocks(const ks_pcache *pc) { return pc->n; }
int pcache_n_free(const ks_pcache *pc) { return pc->n_free; }
int pcache_n_cached(const ks_pcache *pc) { return pc->n_indexed; }
int pcache_n_used(const ks_pcache *pc) { return pc->n_used; }
const ks_pc_stats *pcache_stats(const ks_pcache *pc) { return &pc->stats; }
const ks_block *pcache_block(const ks_pcache *pc, uint32_t id) {
  return id < (uint32_t)pc->n ? &pc->b[id] : NULL;
}

/* --- LRU list of unreferenced indexed blocks --- */
static void lru_remove(ks_pcache *pc, int id) {
  ks_block *b = &pc->b[id];
  if (b->lru_prev >= 0) pc->b[b->lru_prev].lru_next = b->lru_next;
  else if (pc->lru_head == id) pc->lru_head = b->lru_next;
  if (b->lru_next >= 0) pc->b[b->lru_next].lru_prev = b->lru_prev;
  else if (pc->lru_tail == id) pc->lru_tail = b->lru_prev;
  b->lru_prev = b->lru_next = -1;
}
static void lru_push_tail(ks_pcache *pc, int id) {
  ks_block *b = &pc->b[id];
  b->lru_prev = pc->lru_tail;
  b->lru_next = -1;
  if (pc->lru_tail >= 0) pc->b[pc->lru_tail].lru_next = id;
  else pc->lru_head = id;
  pc->lru_tail = id;
}

/* --- hash index --- */
static int bucket_of(const ks_pcache *pc, uint64_t h) { return (int)(h & (uint64_t)(pc->n_buckets - 1)); }
static void index_insert(ks_pcache *pc, int id) {
  int k = bucket_of(pc, pc->b[id].hash);
  pc->b[id].hnext = pc->buckets[k];
  pc->buckets[k] = id;
  pc->b[id].indexed = 1;
  pc->n_indexed++;
}
static void index_remove(ks_pcache *pc, int id) {
  int k = bucket_of(pc, pc->b[id].hash);
  for (int *p = &pc->buckets[k]; *p >= 0; p = &pc->b[*p].hnext)
    if (*p == id) {
      *p = pc->b[id].hnext;
      break;
    }
  pc->b[id].hnext = -1;
  pc->b[id].indexed = 0;
  pc->n_indexed--;
}

int pcache_find(const ks_pcache *pc, uint64_t hash, uint64_t parent, const int32_t *tokens) {
  for (int id = pc->buckets[bucket_of(pc, hash)]; id >= 0; id = pc->b[id].hnext) {
    const ks_block *b = &pc->b[id];
    if (b->hash == hash && b->parent == parent &&
        memcmp(b->tokens, tokens, sizeof b->tokens) == 0)
      return id;
  }
  return -1;
}

/* An unreferenced indexed block becomes free. */
static void drop_cached(ks_pcache *pc, int id) {
  lru_remove(pc, id);
  index_remove(pc, id);
  pc->b[id].pinned_until = 0;
  pc->free_stack[pc->n_free++] = id;
}

static void take_ref(ks_pcache *pc, int id, double now) {
  ks_block *b = &pc->b[id];
  if (b->refs++ == 0) {
    pc->n_used++;
    if (b->indexed) lru_remove(pc, id);
  }
  b->last_used = now;
}

int pcache_match(ks_pcache *pc, const int *tokens, int n, int max_blocks, ks_seq *seq,
                 double now) {
  uint64_t parent = 0;
  int got = 0;
  pc->stats.lookups++;
  int full = n / KS_PC_BLOCK;
  if (max_blocks < full) full = max_blocks;
  for (int i = 0; i < full; i++) {
    int32_t t[KS_PC_BLOCK];
    for (int j = 0; j < KS_PC_BLOCK; j++) t[j] = tokens[i * KS_PC_BLOCK + j];
    uint64_t h = pcache_chain_hash(parent, t);
    int id = pcache_find(pc, h, parent, t);
    if (id < 0) break;
    if (seq_push(seq, (uint32_t)id) != KS_OK) break;
    take_ref(pc, id, now);
    parent = h;
    got++;
  }
  pc->stats.hit_blocks += (uint64_t)got;
  pc->stats.miss_blocks += (uint64_t)(n / KS_PC_BLOCK - got);
  return got;
}

static int grab_block(ks_pcache *pc, double now) {
  if (pc->n_free > 0) return pc->free_stack[--pc->n_free];
  for (int id = pc->lru_head; id >= 0; id = pc->b[id].lru_next) {
    if (pc->b[id].pinned_until > now) continue;
    drop_cached(pc, id);
    pc->stats.evictions++;
    return pc->free_stack[--pc->n_free];
  }
  return -1;
}

ks_status pcache_alloc(ks_pcache *pc, ks_seq *seq, double now, uint32_t *id_out) {
  int id = grab_block(pc, now);
  if (id < 0)
    return ks_fail(KS_ERR_CACHE, "the K/V cache is full: all %d blocks are in use or pinned "
                   "(raise --cache-mb)", pc->n);
  ks_block *b = &pc->b[id];
  memset(b->tokens, 0, sizeof b->tokens);
  b->hash = b->parent = 0;
  b->indexed = 0;
  b->pinned_until = 0;
  b->refs = 0;
  if (seq_push(seq, (uint32_t)id) != KS_OK) {
    pc->free_stack[pc->n_free++] = id;
    return KS_ERR_NOMEM;
  }
  take_ref(pc, id, now);
  if (id_out) *id_out = (uint32_t)id;
  return KS_OK;
}

uint64_t pcache_publish(ks_pcache *pc, ks_seq *seq, int i, const int *tokens, double now,
                        double pin_until) {
  int id = (int)seq->blocks[i];
  ks_block *b = &pc->b[id];
  uint64_t parent = i > 0 ? pc->b[seq->blocks[i - 1]].hash : 0;
  for (int j = 0; j < KS_PC_BLOCK; j++) b->tokens[j] = tokens[i * KS_PC_BLOCK + j];
  b->parent = parent;
  b->hash = pcache_chain_hash(parent, b->tokens);
  b->last_used = now;
  if (b->indexed) {
    if (pin_until > b->pinned_until) b->pinned_until = pin_until;
    return b->hash;
  }
  int other = pcache_find(pc, b->hash, parent, b->tokens);
  if (other >= 0) {
    /* the same rows are cached already: keep this copy private, pin the findable one */
    if (pin_until > pc->b[other].pinned_until) pc->b[other].pinned_until = pin_until;
    return b->hash;
  }
  if (pin_until > b->pinned_until) b->pinned_until = pin_until;
  index_insert(pc, id);
  pc->stats.published++;
  return b->hash;
}

ks_status pcache_adopt(ks_pcache *pc, ks_seq *seq, uint64_t hash, uint64_t parent,
                       const int32_t *tokens, double now, uint32_t *id_out) {
  uint32_t id = 0; /* set by pcache_alloc; initialised for GCC's -O3 flow analysis */
  ks_status st = pcache_alloc(pc, seq, now, &id);
  if (st) return st;
  ks_block *b = &pc->b[id];
  b->hash = hash;
  b->parent = parent;
  memcpy(b->tokens, tokens, sizeof b->tokens);
  index_insert(pc, (int)id);
  if (id_out) *id_out = id;
  return KS_OK;
}

void pcache_release(ks_pcache *pc, ks_seq *seq, double now) {
  for (int i = 0; i < seq->n; i++) {
    int id = (int)seq->blocks[i];
    ks_block *b = &pc->b[id];
    if (b->refs <= 0) continue; /* defensive: never underflow */
    if (--b->refs > 0) continue;
    pc->n_used--;
    b->last_used = now;
    if (b->indexed) lru_push_tail(pc, id);
    else pc->free_stack[pc->n_free++] = id;
  }
  seq->n = 0;
}

int pcache_expire(ks_pcache *pc, double now, double ttl) {
  if (ttl <= 0) return 0;
  int dropped = 0;
  for (int id = pc->lru_head, next; id >= 0; id = next) {
    next = pc->b[id].lru_next;
    const ks_block *b = &pc->b[id];
    if (now - b->last_used > ttl && b->pinned_until <= now) {
      drop_cached(pc, id);
      dropped++;
    }
  }
  pc->stats.expirations += (uint64_t)dropped;
  return dropped;
}

void pcache_clear(ks_pcache *pc) {
  for (int id = pc->lru_head, next; id >= 0; id = next) {
    next = pc->b[id].lru_next;
    drop_cached(pc, id);
  }
}
