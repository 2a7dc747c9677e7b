// arena.c — one block of memory per rank that holds every buffer of the plan at its offset.
//
// The memory planner gives offsets that are multiples of DHX_ALIGN, so the base is aligned to a
// page (which is a multiple of DHX_ALIGN) and every buffer inherits the alignment. The arena
// starts zeroed: gradients, moments and activations need no initialisation of their own.
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"

#define ARENA_ALIGN 4096

bool dhx_rank_arena_init(dhx_rank_arena *a, int64_t bytes, char *err, size_t errlen) {
  a->base = NULL;
  a->bytes = bytes;
  // aligned_alloc wants a size that is a multiple of the alignment; an empty arena still gets
  // one page so buffer pointers are never NULL.
  size_t size = (size_t)((bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN);
  if (size == 0) size = ARENA_ALIGN;
  a->base = aligned_alloc(ARENA_ALIGN, size);
  if (!a->base) {
    snprintf(err, errlen, "cannot allocate the arena of %" PRId64 " bytes (%.1f MiB): %s", bytes,
             (double)bytes / (1 << 20), strerror(errno ? errno : ENOMEM));
    return false;
  }
  memset(a->base, 0, size);
  return true;
}

void dhx_rank_arena_free(dhx_rank_arena *a) {
  free(a->base);
  a->base = NULL;
  a->bytes = 0;
}
