// plan_util.h — small helpers shared by the plan library (plan_io.c, plan_print.c) and the
// runtime: printable names of the plan's enums, element sizes, and the format's size limits.
// Not part of the compiler contract (that is plan.h); nothing here changes the file format.
#ifndef DHX_PLAN_UTIL_H
#define DHX_PLAN_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "plan.h"

// Limits the reader enforces before allocating, so that a corrupted count cannot ask for
// gigabytes. The writer and dhx_plan_validate enforce the same limits.
#define DHX_PLAN_MAX_RANKS 4096
#define DHX_PLAN_MAX_BUFFERS (1 << 16)   // per rank
#define DHX_PLAN_MAX_INSTRS (1 << 20)    // per program
#define DHX_PLAN_MAX_KERNELS (1 << 16)
#define DHX_PLAN_MAX_COMMS (1 << 16)
#define DHX_PLAN_MAX_EVENTS (1 << 16)    // per program
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

// Bytes per element of a dtype; 0 when the dtype is not valid.
int64_t dhx_dtype_size(uint32_t dtype);

// Elements a kernel reaches through a pointer argument with access descriptor `acc` over the
// index space [0, in->n), from the argument's offset (plan.h: dhx_access_form; `in` holds the
// i64 arguments the form names). False when it overflows or a named argument is below 1.
bool dhx_access_extent(const dhx_plan_access *acc, const dhx_plan_instr *in, int64_t vocab,
                       int64_t *elems);

// CRC-32 (IEEE 802.3, the one zlib and PNG use) of `n` bytes.
uint32_t dhx_crc32(const uint8_t *data, size_t n);

#endif
