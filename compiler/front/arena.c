// arena.c — bump allocation for AST nodes, and the exiting malloc wrappers.
//
// A module's nodes are allocated here and freed together, so the parser never has to free
// anything on its error paths (Bison discards symbols freely during error recovery).
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define CHUNK_SIZE (64 * 1024)
#define ALIGN alignof(max_align_t)

typedef struct chunk {
  struct chunk *next;
  size_t used, cap;
  alignas(max_align_t) unsigned char data[];
} chunk;

struct dhx_arena {
  chunk *head;
};

_Noreturn void dhx_out_of_memory(void) {
  fputs("dhxc: error: out of memory\n", stderr);
  exit(1);
}

void *dhx_xmalloc(size_t size) {
  void *p = malloc(size ? size : 1);
  if (!p) dhx_out_of_memory();
  return p;
}

void *dhx_xrealloc(void *p, size_t size) {
  void *q = realloc(p, size ? size : 1);
  if (!q) dhx_out_of_memory();
  return q;
}

char *dhx_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(dhx_xmalloc(n), s, n);
}

dhx_arena *dhx_arena_new(void) {
  dhx_arena *a = dhx_xmalloc(sizeof *a);
  a->head = NULL;
  return a;
}

void dhx_arena_free(dhx_arena *a) {
  if (!a) return;
  for (chunk *c = a->head, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  free(a);
}

static chunk *new_chunk(size_t cap) {
  if (cap > SIZE_MAX - sizeof(chunk)) dhx_out_of_memory();
  chunk *c = dhx_xmalloc(sizeof(chunk) + cap);
  c->used = 0;
  c->cap = cap;
  c->next = NULL;
  return c;
}

void *dhx_arena_alloc(dhx_arena *a, size_t size) {
  if (size > SIZE_MAX - ALIGN) dhx_out_of_memory();
  size = (size + ALIGN - 1) & ~(size_t)(ALIGN - 1);
  chunk *c = a->head;
  if (!c || c->cap - c->used < size) {
    if (size > CHUNK_SIZE / 4) {
      // A big block gets a chunk of its own, linked behind the current one so the current
      // chunk's free space stays usable.
      chunk *big = new_chunk(size);
      if (c) {
        big->next = c->next;
        c->next = big;
      } else {
        a->head = big;
      }
      big->used = size;
      return memset(big->data, 0, size);
    }
    c = new_chunk(CHUNK_SIZE);
    c->next = a->head;
    a->head = c;
  }
  void *p = c->data + c->used;
  c->used += size;
  return memset(p, 0, size);
}

char *dhx_arena_strndup(dhx_arena *a, const char *s, size_t n) {
  char *p = dhx_arena_alloc(a, n + 1);
  memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

char *dhx_arena_strdup(dhx_arena *a, const char *s) { return dhx_arena_strndup(a, s, strlen(s)); }

// Doubling growth; the old storage stays in the arena until the module is freed, which at
// most doubles a list's footprint.
void dhx_list_push(dhx_arena *a, dhx_list *l, const void *item, size_t size) {
  if (l->n == l->cap) {
    if (l->cap > (1 << 29)) dhx_out_of_memory();
    int cap = l->cap ? 2 * l->cap : 4;
    void *items = dhx_arena_alloc(a, (size_t)cap * size);
    if (l->n) memcpy(items, l->items, (size_t)l->n * size);
    l->items = items;
    l->cap = cap;
  }
  memcpy((char *)l->items + (size_t)l->n * size, item, size);
  l->n++;
}
