// suggest.c — "did you mean 'dp'?": the closest known name, if it is close enough.
//
// Distance is Levenshtein plus transpositions (`vla` is one step from `val`). Short names
// get at most one edit, longer ones two: 'wd' is not a typo of 'lr'.
#include <string.h>

#include "internal.h"

#define MAX_LEN 64  // longer names get no suggestion (and the table below stays small)

static int min2(int a, int b) { return a < b ? a : b; }

// Optimal-string-alignment distance over three rolling rows.
static int distance(const char *a, const char *b) {
  int la = (int)strlen(a), lb = (int)strlen(b);
  int rows[3][MAX_LEN + 1];
  int *prev2 = rows[0], *prev = rows[1], *cur = rows[2];
  for (int j = 0; j <= lb; j++) prev[j] = j;
  for (int i = 1; i <= la; i++) {
    cur[0] = i;
    for (int j = 1; j <= lb; j++) {
      int cost = a[i - 1] != b[j - 1];
      cur[j] = min2(min2(prev[j] + 1, cur[j - 1] + 1), prev[j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        cur[j] = min2(cur[j], prev2[j - 2] + 1);
    }
    int *t = prev2;
    prev2 = prev;
    prev = cur;
    cur = t;
  }
  return prev[lb];
}

const char *dhx_suggest(const char *name, const char *const *known) {
  if (!name || strlen(name) > MAX_LEN) return NULL;
  const char *best = NULL;
  int best_d = (strlen(name) >= 6 ? 2 : 1) + 1;  // the first distance that is too far
  for (int i = 0; known[i]; i++) {
    if (strlen(known[i]) > MAX_LEN) continue;
    int d = distance(name, known[i]);
    if (d < best_d) {
      best_d = d;
      best = known[i];
    }
  }
  return best;
}
