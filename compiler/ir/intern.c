// intern.c — the interned fused elementwise specs and GEMM descriptions (intern.h).
//
// A value is keyed by the bytes of the fields it uses (a spec's unused table entries and any
// padding left out), hashed with FNV-1a into one open-addressed table under a mutex. A stored
// value is a zeroed copy with those fields set, so equal keys give byte-identical values.
#include "intern.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Room for the longest key: a spec with every table full (5 + 8·9 + 32·3 + 8·2 + 1 + 16·8 bytes).
#define KEY_MAX 512

typedef struct entry {
  uint64_t hash;
  size_t nkey;
  uint8_t *key;
  union {          // the shared value
    dhx_ew_spec ew;
    dhx_plan_gemm gemm;
    char note[DHX_NAME_MAX];
  };
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry **slots;       // open addressing, a power of two
static size_t nslots, nused;

static size_t put(uint8_t *k, size_t n, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) k[n++] = (uint8_t)(v >> (8 * i));
  return n;
}

static size_t put_f64(uint8_t *k, size_t n, double d) {
  uint64_t bits;
  memcpy(&bits, &d, sizeof bits);
  return put(k, n, bits, 8);
}

static size_t ew_key(const dhx_ew_spec *s, uint8_t *k) {
  size_t n = 0;
  k[n++] = 0;
  k[n++] = s->nin;
  k[n++] = s->nout;
  k[n++] = s->nscalars;
  k[n++] = s->nnodes;
  for (int j = 0; j < s->nin && j < DHX_EW_MAX_IO; j++) {
    k[n++] = s->in_mode[j];
    n = put(k, n, (uint64_t)s->in_mod[j], 8);
  }
  for (int i = 0; i < s->nnodes && i < DHX_EW_MAX_NODES; i++) {
    k[n++] = s->nodes[i].op;
    k[n++] = s->nodes[i].a;
    k[n++] = s->nodes[i].b;
  }
  for (int j = 0; j < s->nout && j < DHX_EW_MAX_IO; j++) {
    k[n++] = s->out_node[j];
    k[n++] = s->out_accumulate[j];
  }
  k[n++] = s->nconsts;
  for (int c = 0; c < s->nconsts && c < DHX_EW_MAX_CONSTS; c++) n = put_f64(k, n, s->consts[c]);
  return n;
}

// The spec as stored: its used fields on a zeroed copy.
static void ew_canonical(const dhx_ew_spec *s, dhx_ew_spec *c) {
  memset(c, 0, sizeof *c);
  c->nin = s->nin;
  c->nout = s->nout;
  c->nscalars = s->nscalars;
  c->nnodes = s->nnodes;
  for (int j = 0; j < s->nin && j < DHX_EW_MAX_IO; j++) {
    c->in_mode[j] = s->in_mode[j];
    c->in_mod[j] = s->in_mod[j];
  }
  for (int i = 0; i < s->nnodes && i < DHX_EW_MAX_NODES; i++) c->nodes[i] = s->nodes[i];
  for (int j = 0; j < s->nout && j < DHX_EW_MAX_IO; j++) {
    c->out_node[j] = s->out_node[j];
    c->out_accumulate[j] = s->out_accumulate[j];
  }
  c->nconsts = s->nconsts;
  for (int i = 0; i < s->nconsts && i < DHX_EW_MAX_CONSTS; i++) c->consts[i] = s->consts[i];
}

static size_t gemm_key(const dhx_plan_gemm *g, uint8_t *k) {
  size_t n = 0;
  k[n++] = 1;
  n = put(k, n, g->trans_a, 4);
  n = put(k, n, g->trans_b, 4);
  const int64_t dims[] = {g->m, g->n, g->k, g->lda, g->ldb, g->ldc,
                          g->batch[0], g->batch[1], g->stride_a[0], g->stride_a[1],
                          g->stride_b[0], g->stride_b[1], g->stride_c[0], g->stride_c[1]};
  for (size_t i = 0; i < sizeof dims / sizeof *dims; i++) n = put(k, n, (uint64_t)dims[i], 8);
  n = put_f64(k, n, g->alpha);
  n = put_f64(k, n, g->beta);
  return put(k, n, g->epilogue, 4);
}

static void gemm_canonical(const dhx_plan_gemm *g, dhx_plan_gemm *c) {
  memset(c, 0, sizeof *c);
  c->trans_a = g->trans_a;
  c->trans_b = g->trans_b;
  c->m = g->m;
  c->n = g->n;
  c->k = g->k;
  c->lda = g->lda;
  c->ldb = g->ldb;
  c->ldc = g->ldc;
  c->alpha = g->alpha;
  c->beta = g->beta;
  for (int l = 0; l < 2; l++) {
    c->batch[l] = g->batch[l];
    c->stride_a[l] = g->stride_a[l];
    c->stride_b[l] = g->stride_b[l];
    c->stride_c[l] = g->stride_c[l];
  }
  c->epilogue = g->epilogue;
}

uint64_t dhx_fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

static void *must(void *p) {
  if (!p) {
    fprintf(stderr, "dhxc: error: out of memory\n");
    exit(1);
  }
  return p;
}

static void place(entry **table, size_t n, entry *e) {
  size_t at = e->hash & (n - 1);
  while (table[at]) at = (at + 1) & (n - 1);
  table[at] = e;
}

// The entry with this key, made from `value` if there is none yet. The key's first byte says
// what the value is: 0 a fused spec, 1 a GEMM, 2 a note (whose characters are the rest of it).
static entry *lookup(const uint8_t *key, size_t nkey, const void *value) {
  uint64_t h = dhx_fnv1a(key, nkey);
  if (nslots) {
    for (size_t at = h & (nslots - 1); slots[at]; at = (at + 1) & (nslots - 1)) {
      entry *e = slots[at];
      if (e->hash == h && e->nkey == nkey && memcmp(e->key, key, nkey) == 0) return e;
    }
  }
  if (2 * (nused + 1) > nslots) {  // at most half full
    size_t n = nslots ? 2 * nslots : 256;
    entry **table = must(calloc(n, sizeof *table));
    for (size_t i = 0; i < nslots; i++)
      if (slots[i]) place(table, n, slots[i]);
    free(slots);
    slots = table;
    nslots = n;
  }
  entry *e = must(malloc(sizeof *e));
  e->hash = h;
  e->nkey = nkey;
  e->key = must(malloc(nkey));
  memcpy(e->key, key, nkey);
  if (key[0] == 0) ew_canonical(value, &e->ew);
  else if (key[0] == 1) gemm_canonical(value, &e->gemm);
  else {
    memcpy(e->note, key + 1, nkey - 1);
    e->note[nkey - 1] = 0;
  }
  place(slots, nslots, e);
  nused++;
  return e;
}

static const entry *intern(const uint8_t *key, size_t nkey, const void *value) {
  pthread_mutex_lock(&lock);
  const entry *e = lookup(key, nkey, value);
  pthread_mutex_unlock(&lock);
  return e;
}

const dhx_ew_spec *dhx_intern_ew(const dhx_ew_spec *s) {
  uint8_t key[KEY_MAX];
  return &intern(key, ew_key(s, key), s)->ew;
}

const dhx_plan_gemm *dhx_intern_gemm(const dhx_plan_gemm *g) {
  uint8_t key[KEY_MAX];
  return &intern(key, gemm_key(g, key), g)->gemm;
}

const char *dhx_intern_note(const char *s) {
  uint8_t key[DHX_NAME_MAX];
  size_t n = 1;
  key[0] = 2;
  for (; s && n < DHX_NAME_MAX && s[n - 1]; n++) key[n] = (uint8_t)s[n - 1];
  return intern(key, n, NULL)->note;
}

int dhx_intern_count(void) {
  pthread_mutex_lock(&lock);
  int n = (int)nused;
  pthread_mutex_unlock(&lock);
  return n;
}
