// plan_util.h — small helpers shared by the plan library (plan_*.c) and the
// runtime: printable names of the plan's enums, element sizes, and the format's size limits.
// Nothing here changes plan.bin's format (that is plan.h). One part is a contract with dhxc:
// the encoding of the signature exports in kernels.so, at the end.
#ifndef DHX_PLAN_UTIL_H
#define DHX_PLAN_UTIL_H

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "plan.h"

// Limits the reader enforces before allocating, so that a corrupted count cannot ask for
// gigabytes. The writer and dhx_plan_validate enforce the same limits.
#define DHX_PLAN_MAX_RANKS 4096
#define DHX_PLAN_MAX_BUFFERS (1 << 16)   // per rank
#define DHX_PLAN_MAX_INSTRS (1 << 20)    // per program
#define DHX_PLAN_MAX_KERNELS (1 << 16)
#define DHX_PLAN_MAX_COMMS (1 << 16)
#define DHX_PLAN_MAX_EVENTS (1 << 18)    // per program
#define DHX_PLAN_MAX_FILE_BYTES (16LL << 30)
#define DHX_PLAN_HEADER_BYTES 32         // magic 8, version 4, flags 4, size 8, crc 4, reserved 4

// Printable names; "?" for values out of range.
const char *dhx_dtype_name(uint32_t dtype);      // "f32", "i32", "f64"
const char *dhx_buf_kind_name(uint32_t kind);    // "param", "grad", ...
const char *dhx_init_name(uint32_t init);        // "none", "zeros", "ones", "normal"
const char *dhx_op_name(uint32_t op);            // "kernel", "gemm", "zero", "allreduce", ...
const char *dhx_prog_name(uint32_t prog);        // "BEGIN", "MICRO", "STEP", "EVAL"
const char *dhx_karg_name(uint32_t type);        // "ptr", "i64", "f32", "f64"
const char *dhx_reg_name(uint32_t reg);          // "lr", "bc1", ...

// Element k of the tensor-parallel slice a buffer describes (shape, row-major) is element
// dhx_buffer_global_index(b, k) of the whole tensor (global_shape) it is a slice of (plan.h:
// split_dim, split_groups, split_parts, split_index); the identity for a buffer that holds the
// whole tensor. b must be valid (dhx_plan_validate).
int64_t dhx_buffer_global_index(const dhx_plan_buffer *b, int64_t k);
// Element i of buffer b (0 <= i < dhx_buffer_elems) is element dhx_buffer_whole_index(b, i) of
// the whole tensor: through its ZeRO shard (shard_parts, shard_index) to the slice, then as
// above; -1 when it is padding past the end of the slice.
int64_t dhx_buffer_whole_index(const dhx_plan_buffer *b, int64_t i);
// Elements the buffer holds (nbytes / dtype size: C, padding included).
int64_t dhx_buffer_elems(const dhx_plan_buffer *b);
// Elements of its tensor-parallel slice (product of shape: S).
int64_t dhx_buffer_slice_elems(const dhx_plan_buffer *b);
// Whether the buffer holds exactly its slice: no shard, no padding (element i is slice
// element i).
bool dhx_buffer_is_slice(const dhx_plan_buffer *b);
// Elements of the whole tensor.
int64_t dhx_buffer_global_elems(const dhx_plan_buffer *b);

// The communicator instruction `in` of rank r's programs exchanges on: its own comm, or the
// substitute of a rank that shares another rank's programs (plan.h: shares).
static inline int32_t dhx_rank_comm(const dhx_plan_rank *r, int32_t comm) {
  for (uint32_t i = 0; i < r->nsubst && i < DHX_MAX_COMM_SUBST; i++)
    if (r->subst_from[i] == comm) return r->subst_to[i];
  return comm;
}

// The profile key of instruction `in` of rank `rank` (plan_key.c): its kind and the sizes that
// decide its time, e.g. "gemm nt m=512 n=384 k=128 batch=1x1", "allreduce members=2
// count=65536 f32". False (and "") for RECORD and WAIT, which do no work.
#define DHX_INSTR_KEY_MAX (DHX_NAME_MAX + 96)
bool dhx_instr_key(const dhx_plan *p, uint32_t rank, const dhx_plan_instr *in, char *out,
                   size_t len);
// A hash of such a key, for the tables that file times under keys.
uint64_t dhx_key_hash(const char *key);

// plan_wire.c: the purpose of a collective or transfer, the kind its bytes count under in
// --metrics (`comm_bytes_KIND`), and the bytes one member sends for it (ring algorithms).
enum { DHX_WIRE_TP, DHX_WIRE_PP, DHX_WIRE_DP_GRADS, DHX_WIRE_DP_PARAMS, DHX_WIRE_OTHER,
       DHX_WIRE_KINDS };
const char *dhx_wire_kind_name(int kind);  // "tp", "pp", "dp_grads", "dp_params", "other"
// The kind of instruction `in` of rank section r (DHX_WIRE_OTHER for ops on no communicator).
int dhx_wire_kind_of(const dhx_plan *p, const dhx_plan_rank *r, const dhx_plan_instr *in);
// Bytes a member sends for `in` (r: the rank section whose communicators it uses; NULL: as
// written): all-gather, reduce-scatter, all-to-all (p-1)·(count/p) elements, all-reduce twice
// that, a send its count, anything else 0.
int64_t dhx_wire_bytes(const dhx_plan *p, const dhx_plan_rank *r, const dhx_plan_instr *in);

// Writes s as a JSON string, quotes included (for the trace files of dhxc and dhxrun).
void dhx_json_string(FILE *f, const char *s);

// Bytes per element of a dtype; 0 when the dtype is not valid.
int64_t dhx_dtype_size(uint32_t dtype);

// Elements a kernel reaches through a pointer argument with access descriptor `acc` over the
// index space [0, in->n), from the argument's offset (plan.h: dhx_access_form; `in` holds the
// i64 arguments the form names). False when it overflows or a named argument is below 1.
bool dhx_access_extent(const dhx_plan_access *acc, const dhx_plan_instr *in, int64_t vocab,
                       int64_t *elems);

// CRC-32 (IEEE 802.3, the one zlib and PNG use) of `n` bytes.
uint32_t dhx_crc32(const uint8_t *data, size_t n);

// ---- what kernels.so says about its kernels ---------------------------------------------------
// Beside each kernel dhxk_NAME, a kernels.so built by dhxc exports the NUL-terminated string
// dhxabi_NAME: the kernel's signature and access descriptors as dhxc built the code, encoded
// below. dhx_kernels_load compares it with the plan's kernel table entry, so a plan.bin whose
// table was altered cannot describe kernels.so more permissively than its code behaves. The
// encoder is inline here so that dhxc, the runtime and the test kernels share it without
// sharing a library.
#define DHX_KERNEL_ABI_PREFIX "dhxabi_"
#define DHX_KERNEL_ABI_TAG "dhxabi1"   // the encoding's version; first word of every encoding
#define DHX_KERNEL_ABI_MAX 2048        // bytes of an encoding, NUL included: room for 16
                                       //   pointers with any field values (~1420)

// Argument j as one word: "i64", "f32", "f64", or for a pointer
// "ptr:FORM:FLAGS:ELEM_BYTES:X:Y:Z:C" (the fields of dhx_plan_access, in decimal). Returns
// snprintf's count.
static inline int dhx_kernel_abi_arg(const dhx_plan_kernel *k, uint32_t j, char *out, size_t len) {
  const dhx_plan_access *a = &k->access[j];
  switch (k->arg_types[j]) {
    case DHX_KARG_PTR:
      return snprintf(out, len, "ptr:%u:%u:%u:%d:%d:%d:%" PRId64, a->form, a->flags,
                      a->elem_bytes, a->x, a->y, a->z, a->c);
    case DHX_KARG_I64: return snprintf(out, len, "i64");
    case DHX_KARG_F32: return snprintf(out, len, "f32");
    case DHX_KARG_F64: return snprintf(out, len, "f64");
    default: return snprintf(out, len, "type%u", k->arg_types[j]);
  }
}

// The whole entry: the tag, then one word per argument, separated by single spaces (the name is
// the symbol's). False when nargs is over DHX_MAX_ARGS or the text does not fit.
static inline bool dhx_kernel_abi_encode(const dhx_plan_kernel *k, char out[DHX_KERNEL_ABI_MAX]) {
  if (k->nargs > DHX_MAX_ARGS) return false;
  int used = snprintf(out, DHX_KERNEL_ABI_MAX, "%s", DHX_KERNEL_ABI_TAG);
  for (uint32_t j = 0; j < k->nargs && used < DHX_KERNEL_ABI_MAX; j++) {
    out[used++] = ' ';
    used += dhx_kernel_abi_arg(k, j, out + used, (size_t)(DHX_KERNEL_ABI_MAX - used));
  }
  return used < DHX_KERNEL_ABI_MAX;
}

// kernels_host.c: the inverse of dhx_kernel_abi_encode for nargs, arg_types and access (the
// name is left alone). False, with `why` saying what is wrong, for text that is not an
// encoding of this version.
// The extent of an access form as a formula of n and the kernel arguments aK: "n*a2",
// "(a3-1)*a4+n" (plan_print.c).
void dhx_access_extent_text(const dhx_plan_access *a, char *out, size_t len);
bool dhx_kernel_abi_decode(const char *text, dhx_plan_kernel *k, char *why, size_t whylen);
// Argument j for people: "i64", "f32", "f64", or "ptr[n*a3] read", "ptr[n*a3] write, token ids",
// with ", 8-byte elements" appended when `elem_bytes` is set.
void dhx_kernel_arg_describe(const dhx_plan_kernel *k, uint32_t j, bool elem_bytes, char *out,
                             size_t len);

#endif
