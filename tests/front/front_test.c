// front_test.c — runs the front end on one file, the way dhxc does, for the golden tests.
//
//   front_test [-I DIR]... [--set PATH=VALUE]... [--config] [--ast] FILE.dhx
//
// Diagnostics go to stderr (the golden .expected files hold them exactly); --config prints
// the typed configuration and --ast the main module's tree to stdout. Exits 1 when there
// were errors, 0 otherwise, 2 on bad usage.
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "front.h"

// A resolved (absolute) data path, with the working directory written as <cwd> so that the
// golden files do not depend on where the repository is.
static void print_path(const char *field, const char *path) {
  char cwd[4096];
  size_t n = getcwd(cwd, sizeof cwd) ? strlen(cwd) : 0;
  if (!path)
    printf("%s = (none)\n", field);
  else if (n && strncmp(path, cwd, n) == 0 && path[n] == '/')
    printf("%s = <cwd>%s\n", field, path + n);
  else
    printf("%s = %s\n", field, path);
}

static void dump_config(const dhx_config *c) {
  const dhx_item *m = c->model_inst;
  printf("model = %s\n", m ? m->name : "(none)");
  if (m) printf("model.callee = %s\n", m->value->str);
  print_path("data.train", c->train_path);
  print_path("data.val", c->val_path);
  printf("cluster.cpu = %d\n", c->cluster_cpu);
  printf("cluster.ranks = %d\n", c->cluster_ranks);
  if (c->cluster_cpu) {
    printf("cluster.net = %.15g B/s\n", c->net_bandwidth);
    printf("cluster.latency = %.15g s\n", c->net_latency);
  } else {
    printf("cluster.nodes = %d, per_node = %d\n", c->nodes, c->per_node);
    printf("cluster.gpu = %s: %.15g FLOP/s, %.15g B, %.15g B/s\n", c->gpu.name, c->gpu.flops,
           c->gpu.memory, c->gpu.bandwidth);
    printf("cluster.intra = %.15g B/s, %.15g s\n", c->intra_bandwidth, c->intra_latency);
    printf("cluster.inter = %.15g B/s, %.15g s\n", c->inter_bandwidth, c->inter_latency);
    printf("cluster.reserve = %.15g B\n", c->reserve);
  }
  printf("parallel = dp %d, tp %d, pp %d, sp %d, zero %d\n", c->dp, c->tp, c->pp, c->sp, c->zero);
  static const char *const searches[] = {"dp", "greedy", "none"};
  printf("strands = pair %d, search %s, fold %s\n", c->strands_pair,
         searches[c->strands_search], c->fold == DHX_FOLD_W ? "w" : "off");
  printf("compress = qwd bits %d group %d, tlq intra %d inter %d group %d hadamard %d\n",
         c->qwd_bits, c->qwd_group, c->tlq_intra, c->tlq_inter, c->tlq_group, c->tlq_hadamard);
  printf("offload = optimizer %d, stride %d, subgroup %lld\n", c->offload_optimizer,
         c->offload_stride, (long long)c->offload_subgroup);
  printf("sequence = adaptive %d, max_group %d, buckets %d, time_limit %.15g s\n", c->seq_adaptive,
         c->seq_max_group, c->seq_buckets, c->seq_time_limit);
  printf("train.precision = %s\n", c->precision == DHX_PREC_BF16 ? "bf16" : "f32");
  printf("schedule_loc = %s:%d:%d\n", c->schedule_loc.file ? c->schedule_loc.file : "-",
         c->schedule_loc.line, c->schedule_loc.col);
  printf("train.micro_batch = %d\n", c->micro_batch);
  printf("train.global_batch = %d\n", c->global_batch);
  printf("train.steps = %d\n", c->steps);
  printf("train.seed = %" PRIu64 "\n", c->seed);
  printf("adamw = lr %.15g, betas (%.15g, %.15g), eps %.15g, weight_decay %.15g, clip %.15g\n",
         c->adamw.lr, c->adamw.beta1, c->adamw.beta2, c->adamw.eps, c->adamw.weight_decay,
         c->adamw.grad_clip);
  printf("train.warmup = %d\n", c->warmup_steps);
  printf("train.lr_min = %.15g\n", c->lr_min_ratio);
  printf("train.val_every = %d, val_batches = %d\n", c->val_every, c->val_batches);
  printf("train.log_every = %d, checkpoint_every = %d\n", c->log_every, c->checkpoint_every);
  printf("train.skip_nonfinite = %d\n", c->skip_nonfinite);
  printf("train_loc = %s:%d:%d\n", c->train_loc.file ? c->train_loc.file : "-", c->train_loc.line,
         c->train_loc.col);
}

int main(int argc, char **argv) {
  const char *dirs[16], *sets[64], *file = NULL;
  int ndirs = 0, nsets = 0;
  bool config = false, ast = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-I") == 0 && i + 1 < argc && ndirs < 16)
      dirs[ndirs++] = argv[++i];
    else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && nsets < 64)
      sets[nsets++] = argv[++i];
    else if (strcmp(argv[i], "--config") == 0)
      config = true;
    else if (strcmp(argv[i], "--ast") == 0)
      ast = true;
    else if (argv[i][0] != '-' && !file)
      file = argv[i];
    else {
      fprintf(stderr, "usage: front_test [-I DIR]... [--set PATH=VALUE]... [--config] [--ast] FILE\n");
      return 2;
    }
  }
  if (!file) {
    fprintf(stderr, "front_test: no input file\n");
    return 2;
  }
  dhx_program *p = dhx_load_program(file, dirs, ndirs);
  if (!p) return 1;
  for (int i = 0; i < nsets && dhx_diag.errors == 0; i++) dhx_apply_override(p, sets[i]);
  if (ast && dhx_diag.errors == 0)
    for (int i = 0; i < p->nmodules; i++) dhx_dump_module(p->modules[i], stdout);
  dhx_config cfg;  // read unless only the tree was asked for
  if (dhx_diag.errors == 0 && (config || !ast) && dhx_read_config(p, &cfg) && config)
    dump_config(&cfg);
  dhx_program_free(p);
  return dhx_diag.errors ? 1 : 0;
}
