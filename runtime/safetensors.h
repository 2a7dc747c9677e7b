// safetensors.h — reading and writing safetensors files
// (https://github.com/huggingface/safetensors), shared by checkpoints (runtime/checkpoint.c)
// and `dhxc convert`:
//
//   8 bytes   little-endian u64 N, the length of the JSON header
//   N bytes   JSON: {"__metadata__": {"key": "value", ...},
//                    "NAME": {"dtype": "F32", "shape": [256, 128], "data_offsets": [B, E]}, ...}
//             padded with spaces to a multiple of 8, as the reference writer does
//   the data  each tensor's bytes at [B, E) relative to the end of the header
//
// Integrity: the writer records two XXH64 digests (seed 0) as 16 lower-case hex digits in
// __metadata__: "data_xxh64" of the data section as it lies in the file, and "header_xxh64" of
// the header's content (every other metadata pair sorted by key, then every tensor entry sorted
// by offset: name, dtype, shape, offsets). Files without them (older checkpoints, other tools)
// are read as they are.
#ifndef DHX_SAFETENSORS_H
#define DHX_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DHX_ST_MAX_DIMS 8
#define DHX_ST_CORRUPT "checksum mismatch: the file is corrupt"

typedef struct dhx_st_entry {
  const char *name;   // points into the parsed header
  const char *dtype;  // "F32", "BF16", "F16", ... as written
  int ndim;
  int64_t shape[DHX_ST_MAX_DIMS];
  int64_t begin, end;  // bytes of the data section
} dhx_st_entry;

typedef struct dhx_st_file {
  const char *path;  // the caller's string, for messages
  FILE *f;
  int64_t data_start, data_bytes;  // the data section: file offset and length
  void *root;                      // the parsed header (a cJSON object)
  const void *meta;                // its __metadata__ object, NULL when absent
  dhx_st_entry *entries;           // header order
  int nentries;
} dhx_st_file;

// Opens `path` and parses its header: every entry must have a dtype string, a shape of
// non-negative integers and data offsets inside the data section. Errors start with the path.
// On failure `s` is left closed.
// "PATH: message" into err; returns false (for `return dhx_st_fail(...)`).
bool dhx_st_fail(const char *path, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
bool dhx_st_open(dhx_st_file *s, const char *path, char *err, size_t errlen);
void dhx_st_close(dhx_st_file *s);
const dhx_st_entry *dhx_st_find(const dhx_st_file *s, const char *name);
// A string of __metadata__, or NULL.
const char *dhx_st_meta(const dhx_st_file *s, const char *key);
// True when __metadata__ holds the writer's digests.
bool dhx_st_has_checksum(const dhx_st_file *s);
// Recomputes the digests (reading the whole data section) and compares them with the recorded
// ones: "PATH: checksum mismatch: the file is corrupt" when they differ. True when none are
// recorded.
bool dhx_st_verify(dhx_st_file *s, char *err, size_t errlen);

// Bytes per element of a safetensors dtype; 0 when unknown.
int dhx_st_dtype_size(const char *dtype);
int64_t dhx_st_elems(const dhx_st_entry *e);
// The entry's byte count agrees with its dtype and shape (and the dtype is known).
bool dhx_st_check_size(const dhx_st_file *s, const dhx_st_entry *e, char *err, size_t errlen);
// "[256, 128]"
void dhx_st_shape_text(int ndim, const int64_t *shape, char *buf, size_t n);

// The entry's raw bytes (end - begin of them) into dst.
bool dhx_st_read(dhx_st_file *s, const dhx_st_entry *e, void *dst, char *err, size_t errlen);
// An F32, BF16 or F16 tensor as floats (elems of them) into dst.
bool dhx_st_read_f32(dhx_st_file *s, const dhx_st_entry *e, float *dst, char *err, size_t errlen);

typedef struct dhx_st_tensor {
  const char *name;
  const char *dtype;
  int ndim;
  int64_t shape[DHX_ST_MAX_DIMS];
  const void *data;
  int64_t nbytes;
} dhx_st_tensor;

typedef struct dhx_st_pair {
  const char *key, *value;
} dhx_st_pair;

// Writes the tensors in the given order with `meta` and the digests in __metadata__, to a
// temporary file next to `path` (PATH.tmp.PID) that is synced and renamed over it: a crash
// mid-write leaves the previous file (or none), never a truncated one.
bool dhx_st_write(const char *path, const dhx_st_pair *meta, int nmeta, const dhx_st_tensor *t,
                  int n, char *err, size_t errlen);

// XXH64, streaming (exposed for tests).
typedef struct dhx_xxh64 {
  uint64_t v[4], total;
  uint8_t mem[32];
  uint32_t memsize;
} dhx_xxh64;
void dhx_xxh64_init(dhx_xxh64 *h);
void dhx_xxh64_update(dhx_xxh64 *h, const void *data, size_t n);
uint64_t dhx_xxh64_digest(const dhx_xxh64 *h);

#endif
