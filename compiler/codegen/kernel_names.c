// kernel_names.c — the kernel catalogue: canonical names, argument lists (in the order
// kernels.h documents), which pointers may alias, the emitter of each kind; validation of
// specs, and the canonical bytes of a fused elementwise spec that its name is a hash of.
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "codegen_internal.h"
#include "intern.h"  // dhx_fnv1a

// Bits of pointer arguments that may alias another argument (kernels.h says so).
#define ALIAS(a, b) ((1u << (a)) | (1u << (b)))

static const dhx_kdesc CATALOGUE[DHX_K_COUNT] = {
    [DHX_K_EMBED_FWD] = {"embed_fwd", "pqpi", 0, DHX_KS_ROWS, dhx_emit_embed_fwd},
    [DHX_K_EMBED_BWD] = {"embed_bwd", "pqpii", 0, DHX_KS_COLUMNS, dhx_emit_embed_bwd},
    [DHX_K_LAYERNORM_FWD] = {"layernorm_fwd", "ppppppif", 0, DHX_KS_ROWS, dhx_emit_layernorm_fwd},
    [DHX_K_LAYERNORM_BWD_DX] = {"layernorm_bwd_dx", "ppppppii", 0, DHX_KS_ROWS,
                                dhx_emit_layernorm_bwd_dx},
    [DHX_K_LAYERNORM_BWD_DPARAMS] = {"layernorm_bwd_dparams", "ppppppii", 0, DHX_KS_COLUMN_SUMS,
                                     dhx_emit_layernorm_bwd_dparams},
    [DHX_K_SOFTMAX_CAUSAL_FWD] = {"softmax_causal_fwd", "ppif", ALIAS(0, 1), DHX_KS_ROWS,
                                  dhx_emit_softmax_causal_fwd},
    [DHX_K_SOFTMAX_CAUSAL_BWD] = {"softmax_causal_bwd", "pppif", ALIAS(0, 1), DHX_KS_ROWS,
                                  dhx_emit_softmax_causal_bwd},
    [DHX_K_XENT_FWD] = {"xent_fwd", "ppqi", 0, DHX_KS_ROWS, dhx_emit_xent_fwd},
    [DHX_K_XENT_BWD] = {"xent_bwd", "ppqif", ALIAS(0, 1), DHX_KS_ROWS, dhx_emit_xent_bwd},
    [DHX_K_ADAMW] = {"adamw", "ppppfffffffp", 0, DHX_KS_INDEX, dhx_emit_adamw},
    [DHX_K_SUMSQ] = {"sumsq", "ppii", 0, DHX_KS_ROWS, dhx_emit_sumsq},
    [DHX_K_COLSUM] = {"colsum", "ppiii", 0, DHX_KS_COLUMN_SUMS, dhx_emit_colsum},
    [DHX_K_RMSNORM_FWD] = {"rmsnorm_fwd", "ppppif", 0, DHX_KS_ROWS, dhx_emit_rmsnorm_fwd},
    [DHX_K_RMSNORM_BWD_DX] = {"rmsnorm_bwd_dx", "pppppii", 0, DHX_KS_ROWS, dhx_emit_rmsnorm_bwd_dx},
    [DHX_K_RMSNORM_BWD_DGAMMA] = {"rmsnorm_bwd_dgamma", "ppppii", 0, DHX_KS_COLUMN_SUMS,
                                  dhx_emit_rmsnorm_bwd_dgamma},
    [DHX_K_ROPE] = {"rope", "ppiiiff", ALIAS(0, 1), DHX_KS_INDEX, dhx_emit_rope},
    [DHX_K_PERMUTE] = {"permute", "ppiii", 0, DHX_KS_INDEX, dhx_emit_permute},
    [DHX_K_EMBED_VP_FWD] = {"embed_vp_fwd", "pqpiii", 0, DHX_KS_ROWS, dhx_emit_embed_vp_fwd},
    [DHX_K_EMBED_VP_BWD] = {"embed_vp_bwd", "pqpiiii", 0, DHX_KS_COLUMNS, dhx_emit_embed_vp_bwd},
    [DHX_K_XENT_VP_STATS] = {"xent_vp_stats", "ppqiiii", 0, DHX_KS_ROWS, dhx_emit_xent_vp_stats},
    [DHX_K_XENT_VP_COMBINE] = {"xent_vp_combine", "pppqiiii", 0, DHX_KS_INDEX,
                               dhx_emit_xent_vp_combine},
    [DHX_K_XENT_VP_BWD] = {"xent_vp_bwd", "pppqiif", ALIAS(0, 1), DHX_KS_ROWS,
                           dhx_emit_xent_vp_bwd},
    [DHX_K_QUANTIZE] = {"quantize", "qpppiiiiii", 0, DHX_KS_ROWS, dhx_emit_quantize},
    [DHX_K_DEQUANTIZE] = {"dequantize", "pqpiii", 0, DHX_KS_ROWS, dhx_emit_dequantize},
    [DHX_K_HADAMARD32] = {"hadamard32", "ppi", ALIAS(0, 1), DHX_KS_ROWS, dhx_emit_hadamard32},
    [DHX_K_HADAMARD_QUANTIZE] = {"hadamard_quantize", "qppiiiii", 0, DHX_KS_ROWS,
                                 dhx_emit_hadamard_quantize},
    [DHX_K_DEQUANTIZE_HADAMARD] = {"dequantize_hadamard", "pqpiii", 0, DHX_KS_ROWS,
                                   dhx_emit_dequantize_hadamard},
    [DHX_K_DEQUANTIZE_REDUCE_QUANTIZE] = {"dequantize_reduce_quantize", "qpqpiiiiiiiiii", 0,
                                          DHX_KS_ROWS, dhx_emit_dequantize_reduce_quantize},
    [DHX_K_DEQUANTIZE_REDUCE_HADAMARD] = {"dequantize_reduce_hadamard", "pqpiiiiii", 0,
                                          DHX_KS_ROWS, dhx_emit_dequantize_reduce_hadamard},
    [DHX_K_GRAD_NORM] = {"grad_norm", "pppid", 0, DHX_KS_INDEX, dhx_emit_grad_norm},
    [DHX_K_ATTN_FWD] = {"attn_fwd", "pppppiiiiiiif", 0, DHX_KS_ROWS, dhx_emit_attn_fwd},
    [DHX_K_ATTN_BWD_DOT] = {"attn_bwd_dot", "pppiii", 0, DHX_KS_ROWS, dhx_emit_attn_bwd_dot},
    [DHX_K_ATTN_BWD_DQ] = {"attn_bwd_dq", "pppppppiiiiiiif", 0, DHX_KS_ROWS,
                           dhx_emit_attn_bwd_dq},
    [DHX_K_ATTN_BWD_DKV] = {"attn_bwd_dkv", "ppppppppiiiiiiif", ALIAS(0, 1), DHX_KS_ROWS,
                            dhx_emit_attn_bwd_dkv},
    [DHX_K_ELTWISE] = {"ew", "", 0, DHX_KS_INDEX, dhx_emit_eltwise},
};

const dhx_kdesc *dhx_kdesc_of(dhx_kernel_kind kind) {
  if ((unsigned)kind >= DHX_K_COUNT) return NULL;
  return &CATALOGUE[kind];
}

uint32_t dhx_kernel_threads_per_index(const dhx_kernel_spec *s) {
  const dhx_kdesc *d = dhx_kdesc_of(s->kind);
  return d && (d->shape == DHX_KS_ROWS || d->shape == DHX_KS_COLUMN_SUMS) ? DHX_PLAN_WARP : 1;
}

uint32_t dhx_kernel_indices_per_thread(const dhx_kernel_spec *s) {
  if (s->type != DHX_KT_F32) return 1;
  if (s->kind == DHX_K_ADAMW) return DHX_PLAN_WIDE;
  if (s->kind != DHX_K_ELTWISE) return 1;
  // A broadcast input is read at i % m: four indices from a multiple of 4 stay contiguous
  // (and 16-byte aligned) there only when m is a multiple of 4 as well.
  for (int j = 0; j < s->ew.nin; j++)
    if (s->ew.in_mode[j] == DHX_EW_MOD && s->ew.in_mod[j] % DHX_PLAN_WIDE != 0) return 1;
  return DHX_PLAN_WIDE;
}

uint32_t dhx_kernel_wide_pointers(const dhx_kernel_spec *s) {
  if (dhx_kernel_indices_per_thread(s) == 1) return 0;
  if (s->kind == DHX_K_ADAMW) return 0xf;  // param, grad, m, v (not the clip scale, read at 0)
  char codes[DHX_MAX_ARGS + 1];
  int n = dhx_kernel_arg_codes(s, codes);
  uint32_t mask = 0;
  for (int i = 0; i < n; i++)
    if (codes[i] == 'p' || codes[i] == 'q') mask |= 1u << i;
  return mask;
}

bool dhx_cg_fail(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return false;
}

// ---- validation ----

static bool is_unary(unsigned op) {
  return op == DHX_EW_NEG || op == DHX_EW_EXP || op == DHX_EW_LOG || op == DHX_EW_TANH ||
         op == DHX_EW_SQRT || op == DHX_EW_GELU || op == DHX_EW_SILU;
}
static bool is_binary(unsigned op) {
  return op == DHX_EW_ADD || op == DHX_EW_SUB || op == DHX_EW_MUL || op == DHX_EW_DIV ||
         op == DHX_EW_GELU_GRAD || op == DHX_EW_SILU_GRAD;
}

static bool ew_valid(const dhx_ew_spec *e, char *err, size_t errlen) {
  if (e->nout < 1 || e->nout > DHX_EW_MAX_IO)
    return dhx_cg_fail(err, errlen, "elementwise spec: %u outputs (1..%d)", e->nout, DHX_EW_MAX_IO);
  if (e->nin > DHX_EW_MAX_IO)
    return dhx_cg_fail(err, errlen, "elementwise spec: %u inputs (max %d)", e->nin, DHX_EW_MAX_IO);
  if (e->nscalars > DHX_EW_MAX_IO)
    return dhx_cg_fail(err, errlen, "elementwise spec: %u scalars (max %d)", e->nscalars,
                       DHX_EW_MAX_IO);
  if (e->nout + e->nin + e->nscalars > DHX_MAX_ARGS)
    return dhx_cg_fail(err, errlen, "elementwise spec: %d arguments (max %d)",
                       e->nout + e->nin + e->nscalars, DHX_MAX_ARGS);
  if (e->nnodes < 1 || e->nnodes > DHX_EW_MAX_NODES)
    return dhx_cg_fail(err, errlen, "elementwise spec: %u nodes (1..%d)", e->nnodes,
                       DHX_EW_MAX_NODES);
  for (int j = 0; j < e->nin; j++) {
    if (e->in_mode[j] == DHX_EW_MOD) {
      if (e->in_mod[j] < 1)
        return dhx_cg_fail(err, errlen, "elementwise spec: input %d has modulus %lld", j,
                           (long long)e->in_mod[j]);
    } else if (e->in_mode[j] != DHX_EW_FULL) {
      return dhx_cg_fail(err, errlen, "elementwise spec: input %d has mode %u", j, e->in_mode[j]);
    }
  }
  for (int i = 0; i < e->nnodes; i++) {
    const dhx_ew_node *n = &e->nodes[i];
    if (n->op == DHX_EW_LOAD) {
      if (n->a >= e->nin)
        return dhx_cg_fail(err, errlen, "elementwise spec: node %d loads input %u of %u", i,
                           n->a, e->nin);
    } else if (n->op == DHX_EW_SCALAR) {
      if (n->a >= e->nscalars)
        return dhx_cg_fail(err, errlen, "elementwise spec: node %d reads scalar %u of %u", i,
                           n->a, e->nscalars);
    } else if (n->op == DHX_EW_CONST) {
      if (n->a >= e->nconsts || e->nconsts > DHX_EW_MAX_CONSTS)
        return dhx_cg_fail(err, errlen, "elementwise spec: node %d reads constant %u of %u", i,
                           n->a, e->nconsts);
    } else if (is_unary(n->op)) {
      if (n->a >= i)
        return dhx_cg_fail(err, errlen, "elementwise spec: node %d uses node %u, not before it",
                           i, n->a);
    } else if (is_binary(n->op)) {
      if (n->a >= i || n->b >= i)
        return dhx_cg_fail(err, errlen,
                           "elementwise spec: node %d uses nodes %u, %u, not both before it", i,
                           n->a, n->b);
    } else {
      return dhx_cg_fail(err, errlen, "elementwise spec: node %d has unknown op %u", i, n->op);
    }
  }
  for (int k = 0; k < e->nout; k++)
    if (e->out_node[k] >= e->nnodes)
      return dhx_cg_fail(err, errlen, "elementwise spec: output %d stores node %u of %u", k,
                         e->out_node[k], e->nnodes);
  return true;
}

uint32_t dhx_kernel_float_pointers(const dhx_kernel_spec *s) {
  char codes[DHX_MAX_ARGS + 1];
  int n = dhx_kernel_arg_codes(s, codes);
  uint32_t m = 0;
  for (int j = 0; j < n; j++)
    if (codes[j] == 'p') m |= 1u << j;
  return m;
}

uint32_t dhx_kernel_f32_only(const dhx_kernel_spec *s) {
  switch (s->kind) {
  // The causal softmax stores the exponentials, then scales them (kernel_softmax.c).
  case DHX_K_SOFTMAX_CAUSAL_FWD: return 1u << 0;  // P
  // A table gradient adds each row of its tokens in turn (kernel_embed.c).
  case DHX_K_EMBED_BWD:
  case DHX_K_EMBED_VP_BWD: return 1u << 0;  // dtable
  // The fused attention kernels keep their running sums in their output rows (kernel_attn.c).
  case DHX_K_ATTN_FWD: return 1u << 0;               // out
  case DHX_K_ATTN_BWD_DQ: return 1u << 0;            // dq
  case DHX_K_ATTN_BWD_DKV: return (1u << 0) | (1u << 1);  // dk, dv
  default: return 0;
  }
}

static bool bf16_valid(const dhx_kernel_spec *spec, char *err, size_t errlen) {
  if (!spec->bf16) return true;
  if (spec->type != DHX_KT_F32)
    return dhx_cg_fail(err, errlen, "bf16 arguments need an f32 kernel");
  uint32_t floats = dhx_kernel_float_pointers(spec), f32_only = dhx_kernel_f32_only(spec);
  for (int j = 0; j < 16; j++) {
    if (!(spec->bf16 & (1u << j))) continue;
    if (!(floats & (1u << j)))
      return dhx_cg_fail(err, errlen, "bf16 argument %d is not a floating-point pointer", j);
    if (f32_only & (1u << j))
      return dhx_cg_fail(err, errlen, "argument %d of %s must stay f32 (the kernel reads back "
                         "what it writes there)", j, CATALOGUE[spec->kind].name);
  }
  return true;
}

bool dhx_kernel_spec_valid(const dhx_kernel_spec *spec, char *err, size_t errlen) {
  if (!spec) return dhx_cg_fail(err, errlen, "no kernel spec");
  if ((unsigned)spec->kind >= DHX_K_COUNT)
    return dhx_cg_fail(err, errlen, "unknown kernel kind %d", (int)spec->kind);
  if (spec->type != DHX_KT_F32 && spec->type != DHX_KT_F64)
    return dhx_cg_fail(err, errlen, "unknown kernel type %d", (int)spec->type);
  if (spec->kind == DHX_K_ELTWISE && !ew_valid(&spec->ew, err, errlen)) return false;
  return bf16_valid(spec, err, errlen);
}

// ---- signatures ----

int dhx_kernel_arg_codes(const dhx_kernel_spec *s, char codes[DHX_MAX_ARGS + 1]) {
  if (s->kind != DHX_K_ELTWISE) {
    const char *a = CATALOGUE[s->kind].args;
    strcpy(codes, a);
    return (int)strlen(a);
  }
  int n = 0;
  for (int i = 0; i < s->ew.nout + s->ew.nin; i++) codes[n++] = 'p';
  for (int i = 0; i < s->ew.nscalars; i++) codes[n++] = 'f';
  codes[n] = 0;
  return n;
}

uint32_t dhx_kernel_may_alias(const dhx_kernel_spec *s) {
  if (s->kind != DHX_K_ELTWISE) return CATALOGUE[s->kind].may_alias;
  // Outputs may be computed in place over a full-size input (y = y + bias): outputs and
  // full inputs may alias each other (element for element). Broadcast (MOD) inputs are
  // small tables that no output overwrites.
  uint32_t m = 0;
  for (int i = 0; i < s->ew.nout; i++) m |= 1u << i;
  for (int j = 0; j < s->ew.nin; j++)
    if (s->ew.in_mode[j] != DHX_EW_MOD) m |= 1u << (s->ew.nout + j);
  return m;
}

int dhx_kernel_nmod(const dhx_kernel_spec *s) {
  if (s->kind != DHX_K_ELTWISE) return 0;
  int n = 0;
  for (int j = 0; j < s->ew.nin; j++) n += s->ew.in_mode[j] == DHX_EW_MOD;
  return n;
}

int dhx_kernel_signature(const dhx_kernel_spec *spec, uint32_t arg_types[DHX_MAX_ARGS]) {
  if (!dhx_kernel_spec_valid(spec, NULL, 0)) return -1;
  char codes[DHX_MAX_ARGS + 1];
  int n = dhx_kernel_arg_codes(spec, codes);
  for (int i = 0; i < n; i++) {
    switch (codes[i]) {
    case 'p':
    case 'q': arg_types[i] = DHX_KARG_PTR; break;
    case 'i': arg_types[i] = DHX_KARG_I64; break;
    case 'd': arg_types[i] = DHX_KARG_F64; break;
    default: arg_types[i] = spec->type == DHX_KT_F64 ? DHX_KARG_F64 : DHX_KARG_F32; break;
    }
  }
  return n;
}

// ---- names ----

static size_t put(uint8_t *buf, size_t n, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) buf[n++] = (uint8_t)(v >> (8 * i));
  return n;
}

size_t dhx_kernel_spec_bytes(const dhx_kernel_spec *s, uint8_t *buf) {
  size_t n = 0;
  buf[n++] = (uint8_t)s->kind;
  buf[n++] = (uint8_t)s->type;
  if (s->kind != DHX_K_ELTWISE) return n;
  const dhx_ew_spec *e = &s->ew;
  buf[n++] = e->nin;
  buf[n++] = e->nout;
  buf[n++] = e->nscalars;
  buf[n++] = e->nnodes;
  for (int j = 0; j < e->nin && j < DHX_EW_MAX_IO; j++) {
    buf[n++] = e->in_mode[j];
    if (e->in_mode[j] == DHX_EW_MOD) n = put(buf, n, (uint64_t)e->in_mod[j], 8);
  }
  for (int i = 0; i < e->nnodes && i < DHX_EW_MAX_NODES; i++) {
    const dhx_ew_node *nd = &e->nodes[i];
    buf[n++] = nd->op;
    if (nd->op == DHX_EW_CONST) {
      uint64_t bits;
      memcpy(&bits, &e->consts[nd->a < DHX_EW_MAX_CONSTS ? nd->a : 0], 8);
      n = put(buf, n, bits, 8);
    } else {
      buf[n++] = nd->a;
      if (is_binary(nd->op)) buf[n++] = nd->b;
    }
  }
  for (int k = 0; k < e->nout && k < DHX_EW_MAX_IO; k++) {
    buf[n++] = e->out_node[k];
    buf[n++] = e->out_accumulate[k] != 0;
  }
  return n;
}

bool dhx_kernel_name(const dhx_kernel_spec *spec, char *buf, size_t len) {
  if (!buf || len == 0 || !dhx_kernel_spec_valid(spec, NULL, 0)) return false;
  // Mixed-precision variants append their mask: "layernorm_fwd_f32_b0009".
  char suffix[16];
  if (spec->bf16) snprintf(suffix, sizeof suffix, "f32_b%04x", (unsigned)spec->bf16);
  else snprintf(suffix, sizeof suffix, "%s", spec->type == DHX_KT_F64 ? "f64" : "f32");
  int n;
  if (spec->kind == DHX_K_ELTWISE) {
    uint8_t bytes[DHX_SPEC_BYTES_MAX];
    size_t nb = dhx_kernel_spec_bytes(spec, bytes);
    n = snprintf(buf, len, "ew_%016llx_%s", (unsigned long long)dhx_fnv1a(bytes, nb), suffix);
  } else {
    n = snprintf(buf, len, "%s_%s", CATALOGUE[spec->kind].name, suffix);
  }
  return n > 0 && (size_t)n < len;
}
