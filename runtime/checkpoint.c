// checkpoint.c — checkpoints as safetensors files (https://github.com/huggingface/safetensors):
//
//   8 bytes   little-endian u64 N, the length of the JSON header
//   N bytes   JSON: {"__metadata__": {"format": "dhx", "step": "12", "model": "tiny"},
//                    "wte": {"dtype": "F32", "shape": [256, 128], "data_offsets": [0, 131072]},
//                    "wte.adam_m": {...}, "wte.adam_v": {...}, ...}
//             padded with spaces to a multiple of 8, as the reference writer does
//   the data  each tensor's bytes at [begin, end) relative to the end of the header
//
// Tensors are the plan's parameters under their own names and their AdamW moments under
// NAME.adam_m and NAME.adam_v, so any safetensors reader can open the weights. "step" counts the
// optimizer steps taken; a resumed run continues with the next one.
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dhxrt.h"

#define MAX_HEADER_BYTES (100 << 20)  // the reference implementation's limit
#define SUFFIX_MAX 8

typedef struct tensor {
  char name[DHX_NAME_MAX + SUFFIX_MAX];
  int32_t buf;
  bool found;  // load: seen in the file
  int64_t begin;  // load: data offset in the file's data section
} tensor;

// The tensors of a checkpoint in file order: each parameter, then its moments.
static tensor *list_tensors(const dhx_plan_rank *r, int *count) {
  tensor *t = calloc(3 * (size_t)r->nbuffers + 1, sizeof *t);
  int n = 0;
  if (!t) return NULL;
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *b = &r->buffers[i];
    if (b->kind != DHX_BUF_PARAM) continue;
    snprintf(t[n].name, sizeof t[n].name, "%s", b->name);
    t[n++].buf = (int32_t)i;
    if (b->opt_m >= 0) {
      snprintf(t[n].name, sizeof t[n].name, "%s.adam_m", b->name);
      t[n++].buf = b->opt_m;
    }
    if (b->opt_v >= 0) {
      snprintf(t[n].name, sizeof t[n].name, "%s.adam_v", b->name);
      t[n++].buf = b->opt_v;
    }
  }
  *count = n;
  return t;
}

// ---- save -------------------------------------------------------------------------------------

static char *header_json(const dhx_plan *plan, const dhx_plan_rank *r, const tensor *t, int n,
                         int64_t step) {
  cJSON *root = cJSON_CreateObject();
  cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
  char num[32];
  snprintf(num, sizeof num, "%" PRId64, step);
  cJSON_AddStringToObject(meta, "format", "dhx");
  cJSON_AddStringToObject(meta, "step", num);
  cJSON_AddStringToObject(meta, "model", plan->train.model_name);
  int64_t offset = 0;
  for (int i = 0; i < n; i++) {
    const dhx_plan_buffer *b = &r->buffers[t[i].buf];
    cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
    cJSON_AddStringToObject(e, "dtype", "F32");
    cJSON *shape = cJSON_AddArrayToObject(e, "shape");
    for (uint32_t d = 0; d < b->ndim; d++)
      cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)b->shape[d]));
    cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(offset + b->nbytes)));
    offset += b->nbytes;
  }
  char *json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return json;
}

static bool write_all(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n; }

bool dhx_checkpoint_save(const dhx_plan *plan, uint32_t rank, const uint8_t *arena,
                         const char *path, int64_t step, char *err, size_t errlen) {
  const dhx_plan_rank *r = &plan->ranks[rank];
  int n = 0;
  tensor *t = list_tensors(r, &n);
  char *json = t ? header_json(plan, r, t, n, step) : NULL;
  if (!json) {
    free(t);
    snprintf(err, errlen, "%s: out of memory building the checkpoint header", path);
    return false;
  }
  size_t len = strlen(json), padded = (len + 7) / 8 * 8;
  uint8_t size[8];
  for (int i = 0; i < 8; i++) size[i] = (uint8_t)((uint64_t)padded >> (8 * i));

  // Written next to the destination and renamed over it: a crash mid-write leaves the previous
  // checkpoint (or none), never a truncated one.
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  FILE *f = fopen(tmp, "wb");
  bool ok = f != NULL;
  if (ok) {
    ok = write_all(f, size, 8) && write_all(f, json, len) &&
         write_all(f, "        ", padded - len);
    for (int i = 0; i < n && ok; i++) {
      const dhx_plan_buffer *b = &r->buffers[t[i].buf];
      ok = write_all(f, arena + b->offset, (size_t)b->nbytes);
    }
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
  }
  int saved_errno = errno;
  if (ok && rename(tmp, path) != 0) {
    ok = false;
    saved_errno = errno;
  }
  if (!ok) {
    snprintf(err, errlen, "%s: cannot write the checkpoint: %s", path, strerror(saved_errno));
    remove(tmp);
  }
  free(json);
  free(t);
  return ok;
}

// ---- load -------------------------------------------------------------------------------------

typedef struct loader {
  const char *path;
  char *err;
  size_t errlen;
  int64_t data_bytes;  // bytes after the header
} loader;

static bool lfail(loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool lfail(loader *l, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(l->err, l->errlen, "%s: %s", l->path, msg);
  return false;
}

// A JSON number that is a non-negative integer below 2^53 (exact in a double).
static bool json_int(const cJSON *j, int64_t *out) {
  if (!cJSON_IsNumber(j)) return false;
  double d = j->valuedouble;
  if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return false;
  *out = (int64_t)d;
  return true;
}

static bool check_metadata(loader *l, const cJSON *meta, const dhx_plan *plan, int64_t *step) {
  if (!cJSON_IsObject(meta)) return lfail(l, "no __metadata__ object (not a dhx checkpoint)");
  const char *format = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "format"));
  const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "step"));
  const char *model = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "model"));
  if (!format || strcmp(format, "dhx") != 0)
    return lfail(l, "__metadata__.format is not \"dhx\" (not a dhx checkpoint)");
  char *end = NULL;
  errno = 0;
  long long v = s ? strtoll(s, &end, 10) : -1;
  if (!s || !*s || *end || errno || v < 0 || v > (1LL << 40))
    return lfail(l, "__metadata__.step is not a step count");
  if (model && strcmp(model, plan->train.model_name) != 0)
    return lfail(l, "checkpoint of model '%s', but the plan trains '%s'", model,
                 plan->train.model_name);
  *step = v;
  return true;
}

static bool check_entry(loader *l, const cJSON *e, tensor *t, const dhx_plan_buffer *b) {
  if (!cJSON_IsObject(e)) return lfail(l, "tensor '%s': entry is not an object", t->name);
  const char *dtype = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "dtype"));
  if (!dtype || strcmp(dtype, "F32") != 0)
    return lfail(l, "tensor '%s': dtype %s (expected F32)", t->name, dtype ? dtype : "missing");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
  bool same = cJSON_IsArray(shape) && cJSON_GetArraySize(shape) == (int)b->ndim;
  for (uint32_t d = 0; same && d < b->ndim; d++) {
    int64_t dim;
    same = json_int(cJSON_GetArrayItem(shape, (int)d), &dim) && dim == b->shape[d];
  }
  if (!same) {
    char want[96] = "";
    for (uint32_t d = 0; d < b->ndim; d++)
      snprintf(want + strlen(want), sizeof want - strlen(want), "%s%" PRId64, d ? ", " : "",
               b->shape[d]);
    return lfail(l, "tensor '%s': shape differs from the plan's [%s]", t->name, want);
  }
  const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
  int64_t begin, end;
  if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
      !json_int(cJSON_GetArrayItem(off, 0), &begin) || !json_int(cJSON_GetArrayItem(off, 1), &end))
    return lfail(l, "tensor '%s': data_offsets is not a pair of offsets", t->name);
  if (begin > end || end > l->data_bytes)
    return lfail(l, "tensor '%s': data_offsets [%" PRId64 ", %" PRId64 "] lie outside the %"
                 PRId64 " bytes of data (truncated file?)", t->name, begin, end, l->data_bytes);
  if (end - begin != b->nbytes)
    return lfail(l, "tensor '%s': %" PRId64 " bytes of data, the plan's buffer has %" PRId64,
                 t->name, end - begin, b->nbytes);
  t->found = true;
  t->begin = begin;
  return true;
}

// Every entry must be a tensor of the plan with the right dtype, shape and extent, and every
// tensor of the plan must be there.
static bool check_header(loader *l, const cJSON *root, const dhx_plan *plan, const dhx_plan_rank *r,
                         tensor *t, int n, int64_t *step) {
  if (!cJSON_IsObject(root)) return lfail(l, "the header is not a JSON object");
  if (!check_metadata(l, cJSON_GetObjectItemCaseSensitive(root, "__metadata__"), plan, step))
    return false;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (!e->string) return lfail(l, "header entry without a name");
    if (strcmp(e->string, "__metadata__") == 0) continue;
    int i = 0;
    while (i < n && strcmp(t[i].name, e->string) != 0) i++;
    if (i == n) return lfail(l, "tensor '%s' is not in the plan", e->string);
    if (t[i].found) return lfail(l, "tensor '%s' appears twice", e->string);
    if (!check_entry(l, e, &t[i], &r->buffers[t[i].buf])) return false;
  }
  for (int i = 0; i < n; i++)
    if (!t[i].found) return lfail(l, "tensor '%s' is missing", t[i].name);
  return true;
}

static bool read_at(FILE *f, int64_t offset, void *p, size_t n) {
  return fseeko(f, (off_t)offset, SEEK_SET) == 0 && fread(p, 1, n, f) == n;
}

bool dhx_checkpoint_load(const dhx_plan *plan, uint32_t rank, uint8_t *arena, const char *path,
                         int64_t *step, char *err, size_t errlen) {
  loader l = {.path = path, .err = err, .errlen = errlen};
  const dhx_plan_rank *r = &plan->ranks[rank];
  FILE *f = fopen(path, "rb");
  if (!f) return lfail(&l, "cannot open: %s", strerror(errno));
  struct stat st;
  uint8_t size[8];
  if (fstat(fileno(f), &st) != 0 || st.st_size < 8 || !read_at(f, 0, size, 8)) {
    fclose(f);
    return lfail(&l, "truncated: too short for a safetensors header");
  }
  uint64_t hlen = 0;
  for (int i = 0; i < 8; i++) hlen |= (uint64_t)size[i] << (8 * i);
  if (hlen > MAX_HEADER_BYTES || hlen > (uint64_t)st.st_size - 8) {
    fclose(f);
    return lfail(&l, "header length %" PRIu64 " exceeds the file (%lld bytes) or the 100 MiB "
                 "limit: not a safetensors file, or corrupted", hlen, (long long)st.st_size);
  }
  l.data_bytes = (int64_t)(st.st_size - 8 - (off_t)hlen);
  char *json = malloc(hlen + 1);
  if (!json || !read_at(f, 8, json, hlen)) {
    free(json);
    fclose(f);
    return lfail(&l, "cannot read the header");
  }
  json[hlen] = 0;
  cJSON *root = cJSON_ParseWithLength(json, hlen);
  int n = 0;
  tensor *t = list_tensors(r, &n);
  bool ok = root ? t && check_header(&l, root, plan, r, t, n, step)
                 : lfail(&l, "the header is not valid JSON");
  for (int i = 0; i < n && ok; i++) {
    const dhx_plan_buffer *b = &r->buffers[t[i].buf];
    if (!read_at(f, 8 + (int64_t)hlen + t[i].begin, arena + b->offset, (size_t)b->nbytes))
      ok = lfail(&l, "cannot read tensor '%s'", t[i].name);
  }
  cJSON_Delete(root);
  free(json);
  free(t);
  fclose(f);
  return ok;
}
