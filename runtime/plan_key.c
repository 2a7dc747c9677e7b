// plan_key.c — the profile key of an instruction: what decides how long it takes, as text.
//
// `dhxrun --profile` times instructions and files each time under its key; `dhxc --simulate
// --profile` looks the key up for every instruction of the plan it simulates. Two
// instructions with the same key do the same work (the same kernel over the same index space,
// the same GEMM shape, the same collective over as many members and elements), so a profile
// taken on one plan serves another plan of the same model: paired strands, another search.
#include <inttypes.h>
#include <stdio.h>

#include "plan_util.h"

bool dhx_instr_key(const dhx_plan *p, uint32_t rank, const dhx_plan_instr *in, char *out,
                   size_t len) {
  out[0] = '\0';
  switch (in->op) {
  case DHX_OP_KERNEL:
    snprintf(out, len, "kernel %s n=%" PRId64,
             in->kernel >= 0 && (uint32_t)in->kernel < p->nkernels ? p->kernels[in->kernel].name
                                                                  : "?",
             in->n);
    return true;
  case DHX_OP_GEMM: {
    const dhx_plan_gemm *g = in->gemm;
    snprintf(out, len, "gemm %c%c m=%" PRId64 " n=%" PRId64 " k=%" PRId64 " batch=%" PRId64
             "x%" PRId64 "%s%s", g->trans_a ? 't' : 'n', g->trans_b ? 't' : 'n', g->m, g->n, g->k,
             g->batch[0], g->batch[1], g->beta != 0 ? " accumulate" : "",
             g->epilogue == DHX_GEMM_BIAS_GELU ? " bias_gelu" : g->epilogue ? " bias" : "");
    return true;
  }
  case DHX_OP_RECORD:
  case DHX_OP_WAIT:
    return false;  // ordering only: no work of their own
  case DHX_OP_LOAD_BATCH:
    snprintf(out, len, "load_batch");
    return true;
  default:
    break;
  }
  if (dhx_op_on_comm(in->op)) {
    int32_t c = dhx_rank_comm(&p->ranks[rank], in->comm);
    uint32_t members = c >= 0 && (uint32_t)c < p->ncomms ? p->comms[c].nranks : 0;
    snprintf(out, len, "%s members=%u count=%" PRId64 " %s", dhx_op_name(in->op), members,
             in->args[dhx_op_count_arg(in->op)].i, dhx_dtype_name(in->dtype));
    return true;
  }
  // ZERO (a byte count in args[1]), GRAD_NORM (the partials' count in args[3]).
  uint32_t size = in->op == DHX_OP_GRAD_NORM ? 3 : 1;
  snprintf(out, len, "%s n=%" PRId64, dhx_op_name(in->op), in->nargs > size ? in->args[size].i : 0);
  return true;
}

uint64_t dhx_key_hash(const char *key) {  // FNV-1a
  uint64_t h = 1469598103934665603ULL;
  for (; *key; key++) h = (h ^ (uint8_t)*key) * 1099511628211ULL;
  return h;
}
