/* sampler.h — turns logits into the next token: greedy, temperature, top-k, top-p, min-p, with a
 * seeded generator so the same seed gives the same text on the same device. Acts on logits only,
 * so it never touches the K/V cache. */
#ifndef KS_SAMPLER_H
#define KS_SAMPLER_H
#include <stdint.h>

#include "common.h"

typedef struct {
  float temp;   /* 0 = greedy (argmax, lowest id on ties) */
  int top_k;    /* 0 = off */
  float top_p;  /* 1 = off */
  float min_p;  /* 0 = off */
  uint64_t seed;
} ks_sampling;

void sampling_default(ks_sampling *p); /* temp 0.8, top_k 40, top_p 0.95, min_p 0.05, seed 42 */

typedef struct {
  ks_sampling p;
  int vocab;
  uint64_t rng;  /* xorshift state */
  void *scratch; /* (vocab) candidates */
} ks_sampler;

ks_status sampler_init(ks_sampler *s, int vocab, const ks_sampling *p);
void sampler_deinit(ks_sampler *s);
int sampler_sample(ks_sampler *s, const float *logits);

#endif
