// driver.h — subcommands of dhxc that are not compilation.
#ifndef DHX_DRIVER_H
#define DHX_DRIVER_H

#include <stdbool.h>

#include "front.h"

// `dhxc data -o PREFIX [--val-fraction F] FILE...`: byte-level (vocab 256) token shards in
// llm.c's layout, PREFIX_train.bin and PREFIX_val.bin. argv[0] is "data".
int dhx_data_main(int argc, char **argv);

// `dhxc fmt [-i | --check] FILE...`: the canonical form of each file on stdout, or written
// back in place, or the names of the files that are not canonical. argv[0] is "fmt".
int dhx_fmt_main(int argc, char **argv);

// `dhxc convert --from dhx|hf-gpt2|hf-llama --to dhx|hf-gpt2|hf-llama IN OUT`: a safetensors
// checkpoint renamed (and transposed where layouts differ) between DHX's parameter names and
// Hugging Face's GPT-2 or Llama names. argv[0] is "convert".
int dhx_convert_main(int argc, char **argv);

// `dhxc FILE.dhx --simulate [--json] [--simulate-trace OUT.json] [--simulate-svg OUT.svg]`:
// one training step of the program's plan in simulated time (docs/simulator.md).
typedef struct dhx_simulate_options {
  bool json;                 // one JSON object on stdout instead of the summary
  const char *trace_path;    // the timeline as Chrome trace JSON, or NULL
  const char *svg_path;      // the timeline as SVG, or NULL
  const char *profile_path;  // measured instruction times (dhxrun --profile), or NULL
  bool every_rank;           // simulate every rank, not one data-parallel replica for all
  bool live_activations;     // also the activation bytes live at once (live_activations.h)
  bool whole_step;           // simulate every micro-batch, not three short steps (simulate_steady.c)
} dhx_simulate_options;

// Lowers `cfg` (a GPU cluster and bf16 as the f32 plan; strands, compression, offload and
// adaptive sequence parallelism are left out, one line on stderr each), simulates a step with
// the cluster's cost model and writes what `o` asks for. Returns the exit status.
int dhx_simulate_main(const dhx_program *prog, const dhx_config *cfg,
                      const dhx_simulate_options *o);

#endif
