// Pipeline stage sizes by cost (compiler/graph/shard_pp.c, `parallel { stages: auto }`): the
// partition minimises the costliest stage, then evens the rest out.
#include <stdio.h>
#include <string.h>

#include "passes.h"
#include "testlib.h"

static void expect(const double *cost, int nlayers, int k, const int *want) {
  int got[16];
  dhx_balance_layers(cost, nlayers, k, got);
  for (int c = 0; c < k; c++)
    if (got[c] != want[c]) {
      fprintf(stderr, "chunk %d: %d layers, expected %d\n", c, got[c], want[c]);
      CHECK(false);
    }
}

static void equal_layers_split_equally(void) {
  double cost[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  expect(cost, 8, 4, (int[]){2, 2, 2, 2});
}

// The last layer also carries the output projection and the loss (3 layers' worth): the last
// stage gets it alone, and the first six layers share the other stages evenly.
static void a_heavy_head_leaves_the_last_stage_fewer_layers(void) {
  double cost[7] = {1, 1, 1, 1, 1, 1, 4};
  expect(cost, 7, 3, (int[]){3, 3, 1});
}

static void a_heavy_first_layer_leaves_the_first_stage_fewer(void) {
  double cost[6] = {5, 1, 1, 1, 1, 1};
  expect(cost, 6, 2, (int[]){1, 5});
}

static void as_many_chunks_as_layers_gives_one_each(void) {
  double cost[4] = {3, 1, 2, 7};
  expect(cost, 4, 4, (int[]){1, 1, 1, 1});
}

int main(int argc, char **argv) {
  static const tl_test tests[] = {
      {"pipeline_balance_equal_layers_split_equally", equal_layers_split_equally},
      {"pipeline_balance_a_heavy_head_leaves_the_last_stage_fewer_layers",
       a_heavy_head_leaves_the_last_stage_fewer_layers},
      {"pipeline_balance_a_heavy_first_layer_leaves_the_first_stage_fewer",
       a_heavy_first_layer_leaves_the_first_stage_fewer},
      {"pipeline_balance_as_many_chunks_as_layers_gives_one_each",
       as_many_chunks_as_layers_gives_one_each},
  };
  return tl_main("test_balance", tests, sizeof tests / sizeof tests[0], argc, argv);
}
