// checkpoint.c — checkpoints as safetensors files (runtime/safetensors.h has the layout):
//
//   {"__metadata__": {"format": "dhx", "step": "12", "model": "tiny",
//                     "data_xxh64": "...", "header_xxh64": "..."},
//    "wte": {"dtype": "F32", "shape": [256, 128], "data_offsets": [0, 131072]},
//    "wte.adam_m": {...}, "wte.adam_v": {...}, ...}
//
// Tensors are the plan's parameters under their own names and their AdamW moments under
// NAME.adam_m and NAME.adam_v (and qWD's fp32 master weights under NAME.master: then NAME holds
// the replicas' weights, which trail the masters by the rounding of the last update), so any
// safetensors reader can open the weights. A plan with masters resumes from a file without
// them by copying the weights; a plan without masters ignores them. "step" counts the
// optimizer steps taken; a resumed run continues with the next one. The digests make a truncated
// or damaged file fail to load instead of training on garbage; files without them still load.
//
// Three ways in: resume (dhx_checkpoint_load: everything must match the plan), the newest good
// checkpoint of a directory (dhx_checkpoint_latest), and weights only (load_weights: any
// safetensors file with the plan's parameters, as `dhxc convert` writes them). Each checks the
// whole file before it writes anything into the arena.
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"
#include "safetensors.h"

#define SUFFIX_MAX 8

typedef struct tensor {
  char name[DHX_NAME_MAX + SUFFIX_MAX];
  int32_t buf;
  bool moment;
  bool master;            // qWD's master weights: optional in the file
  const dhx_st_entry *e;  // load: the file's entry
} tensor;


// The tensors of a checkpoint in file order: each parameter, then its moments and master.
static tensor *list_tensors(const dhx_plan_rank *r, int *count) {
  tensor *t = calloc(4 * (size_t)r->nbuffers + 1, sizeof *t);
  int n = 0;
  if (!t) return NULL;
  for (uint32_t i = 0; i < r->nbuffers; i++) {
    const dhx_plan_buffer *b = &r->buffers[i];
    if (b->kind != DHX_BUF_PARAM) continue;
    snprintf(t[n].name, sizeof t[n].name, "%s", b->name);
    t[n++].buf = (int32_t)i;
    if (b->opt_m >= 0) {
      snprintf(t[n].name, sizeof t[n].name, "%s.adam_m", b->name);
      t[n].moment = true;
      t[n++].buf = b->opt_m;
    }
    if (b->opt_v >= 0) {
      snprintf(t[n].name, sizeof t[n].name, "%s.adam_v", b->name);
      t[n].moment = true;
      t[n++].buf = b->opt_v;
    }
    if (b->master >= 0) {
      snprintf(t[n].name, sizeof t[n].name, "%s.master", b->name);
      t[n].master = true;
      t[n++].buf = b->master;
    }
  }
  *count = n;
  return t;
}

static bool is_moment_name(const char *name) {
  size_t len = strlen(name);
  return len > 7 &&
         (strcmp(name + len - 7, ".adam_m") == 0 || strcmp(name + len - 7, ".adam_v") == 0);
}

// The length of the parameter's name in the name of one of its state tensors (NAME.adam_m,
// NAME.adam_v, NAME.master), or of the name itself.
static size_t param_name_len(const char *name) {
  size_t len = strlen(name);
  return is_moment_name(name) || (len > 7 && strcmp(name + len - 7, ".master") == 0) ? len - 7
                                                                                       : len;
}

static tensor *find_tensor(tensor *t, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (strcmp(t[i].name, name) == 0) return &t[i];
  return NULL;
}

// Checkpoints hold whole tensors: a buffer that is a slice of one (tensor parallelism) is
// compared with, read from and written as the whole tensor.
static void plan_shape_text(const dhx_plan_buffer *b, char *buf, size_t n) {
  dhx_st_shape_text((int)b->ndim, b->global_shape, buf, n);
}

static bool same_shape(const dhx_st_entry *e, const dhx_plan_buffer *b) {
  if (e->ndim != (int)b->ndim) return false;
  for (uint32_t d = 0; d < b->ndim; d++)
    if (e->shape[d] != b->global_shape[d]) return false;
  return true;
}

// Reads the whole tensor of entry e and keeps the buffer's part of it (a slice, a ZeRO shard),
// padding zero; f32 converts from the file's dtype (weights), otherwise the entry must be F32
// already.
static bool read_slice(dhx_st_file *s, const dhx_st_entry *e, const dhx_plan_buffer *b,
                       float *dst, bool convert, char *err, size_t errlen) {
  int64_t n = dhx_buffer_elems(b), whole = dhx_buffer_global_elems(b);
  if (b->split_dim < 0 && b->shard_parts == 1) {  // the whole tensor, maybe padded
    memset(dst + whole, 0, sizeof *dst * (size_t)(n - whole));
    return convert ? dhx_st_read_f32(s, e, dst, err, errlen) : dhx_st_read(s, e, dst, err, errlen);
  }
  float *tmp = malloc((size_t)whole * sizeof *tmp);
  if (!tmp) return dhx_st_fail(s->path, err, errlen, "out of memory reading '%s'", e->name);
  bool ok = convert ? dhx_st_read_f32(s, e, tmp, err, errlen) : dhx_st_read(s, e, tmp, err, errlen);
  for (int64_t i = 0; i < n && ok; i++) {
    int64_t w = dhx_buffer_whole_index(b, i);
    dst[i] = w < 0 ? 0.0f : tmp[w];
  }
  free(tmp);
  return ok;
}

// The parameter whose state tensor t[i] is: the closest parameter before it in the list.
static int32_t find_param(const dhx_plan_rank *r, const tensor *t, int i) {
  while (i > 0 && r->buffers[t[i].buf].kind != DHX_BUF_PARAM) i--;
  return t[i].buf;
}

// ---- save -------------------------------------------------------------------------------------

bool dhx_checkpoint_save(const dhx_plan *plan, uint32_t rank, const uint8_t *arena,
                         const char *path, int64_t step, char *err, size_t errlen) {
  const dhx_plan_rank *r = &plan->ranks[rank];
  int n = 0;
  tensor *t = list_tensors(r, &n);
  dhx_st_tensor *out = calloc((size_t)n + 1, sizeof *out);
  if (!t || !out) {
    free(t);
    free(out);
    return dhx_st_fail(path, err, errlen, "out of memory building the checkpoint header");
  }
  for (int i = 0; i < n; i++) {
    const dhx_plan_buffer *b = &r->buffers[t[i].buf];
    // The rank holds every tensor whole (dhx_checkpoint_save_all), maybe padded: the file takes
    // its first product(shape) elements.
    out[i] = (dhx_st_tensor){.name = t[i].name, .dtype = "F32", .ndim = (int)b->ndim,
                             .data = arena + b->offset, .nbytes = 4 * dhx_buffer_slice_elems(b)};
    memcpy(out[i].shape, b->shape, sizeof b->shape);
  }
  char num[32];
  snprintf(num, sizeof num, "%" PRId64, step);
  dhx_st_pair meta[] = {{"format", "dhx"}, {"step", num}, {"model", plan->train.model_name}};
  bool ok = dhx_st_write(path, meta, 3, out, n, err, errlen);
  free(out);
  free(t);
  return ok;
}

// ---- verification (resume) --------------------------------------------------------------------


// A file that holds no AdamW moment at all (while the plan has some) is a weights-only file: a
// converted or published model, to start from rather than to resume.
static bool check_not_weights_only(const dhx_st_file *s, const tensor *t, int n, char *err,
                                   size_t errlen) {
  bool plan_has_moments = false, file_has_moments = false;
  for (int i = 0; i < n; i++) plan_has_moments |= t[i].moment;
  for (int i = 0; i < s->nentries; i++) file_has_moments |= is_moment_name(s->entries[i].name);
  if (!plan_has_moments || file_has_moments) return true;
  return dhx_st_fail(s->path, err, errlen,
                     "no AdamW moments (NAME.adam_m, NAME.adam_v): a weights-only "
                     "file cannot be resumed; start from its weights with --init %s",
                     s->path);
}

static bool check_metadata(const dhx_st_file *s, const dhx_plan *plan, int64_t *step, char *err,
                           size_t errlen) {
  if (!s->meta)
    return dhx_st_fail(s->path, err, errlen, "no __metadata__ object (not a dhx checkpoint)");
  const char *format = dhx_st_meta(s, "format"), *text = dhx_st_meta(s, "step");
  const char *model = dhx_st_meta(s, "model");
  if (!format || strcmp(format, "dhx") != 0)
    return dhx_st_fail(s->path, err, errlen,
                       "__metadata__.format is not \"dhx\" (not a dhx checkpoint)");
  char *end = NULL;
  errno = 0;
  long long v = text ? strtoll(text, &end, 10) : -1;
  if (!text || !*text || *end || errno || v < 0 || v > (1LL << 40))
    return dhx_st_fail(s->path, err, errlen, "__metadata__.step is not a step count");
  if (model && strcmp(model, plan->train.model_name) != 0)
    return dhx_st_fail(s->path, err, errlen, "checkpoint of model '%s', but the plan trains '%s'",
                       model, plan->train.model_name);
  *step = v;
  return true;
}

static bool check_entry(const dhx_st_file *s, const dhx_st_entry *e, const dhx_plan_buffer *b,
                        char *err, size_t errlen) {
  if (strcmp(e->dtype, "F32") != 0)
    return dhx_st_fail(s->path, err, errlen, "tensor '%s': dtype %s (expected F32)", e->name,
                       e->dtype);
  if (!same_shape(e, b)) {
    char want[160];
    plan_shape_text(b, want, sizeof want);
    return dhx_st_fail(s->path, err, errlen, "tensor '%s': shape differs from the plan's %s",
                       e->name, want);
  }
  if (e->end - e->begin != 4 * dhx_buffer_global_elems(b))
    return dhx_st_fail(s->path, err, errlen,
                       "tensor '%s': %" PRId64
                       " bytes of data, the plan's buffer "
                       "has %" PRId64,
                       e->name, e->end - e->begin, 4 * dhx_buffer_global_elems(b));
  return true;
}


// Is `name` a parameter (or a parameter's moment) that some rank of the plan holds? Another
// pipeline stage's tensors are in the file too. Stages are the ranks of data and tensor index 0.
static bool held_elsewhere(const dhx_plan *plan, const char *name) {
  size_t len = param_name_len(name);
  for (uint32_t r = 0; r < plan->nranks; r++) {
    const dhx_plan_rank *rk = &plan->ranks[r];
    if (rk->dp_rank != 0 || rk->tp_rank != 0) continue;
    for (uint32_t i = 0; i < rk->nbuffers; i++)
      if (rk->buffers[i].kind == DHX_BUF_PARAM && strncmp(rk->buffers[i].name, name, len) == 0 &&
          rk->buffers[i].name[len] == 0)
        return true;
  }
  return false;
}

// Every entry must be a tensor of the plan with the right dtype, shape and extent, and every
// tensor this rank holds must be there. Entries that other ranks hold are left to them.
static bool match_entries(const dhx_st_file *s, const dhx_plan *plan, const dhx_plan_rank *r,
                          tensor *t, int n, char *err, size_t errlen) {
  for (int i = 0; i < s->nentries; i++) {
    const dhx_st_entry *e = &s->entries[i];
    tensor *x = find_tensor(t, n, e->name);
    if (!x && held_elsewhere(plan, e->name)) continue;
    if (!x) return dhx_st_fail(s->path, err, errlen, "tensor '%s' is not in the plan", e->name);
    if (!check_entry(s, e, &r->buffers[x->buf], err, errlen)) return false;
    x->e = e;
  }
  for (int i = 0; i < n; i++)
    if (!t[i].e && !t[i].master)
      return dhx_st_fail(s->path, err, errlen, "tensor '%s' is missing", t[i].name);
  return true;
}

// Opens `path` and checks all of it against the plan (entries, metadata, digests); on success
// the file stays open and every t[i].e points at its entry.
static bool open_checkpoint(dhx_st_file *s, const char *path, const dhx_plan *plan,
                            const dhx_plan_rank *r, tensor *t, int n, int64_t *step, char *err,
                            size_t errlen) {
  if (!dhx_st_open(s, path, err, errlen)) return false;
  int64_t taken = 0;
  bool ok = check_not_weights_only(s, t, n, err, errlen) &&
            check_metadata(s, plan, &taken, err, errlen) &&
            match_entries(s, plan, r, t, n, err, errlen) && dhx_st_verify(s, err, errlen);
  if (ok) *step = taken;  // a refused file changes nothing
  else dhx_st_close(s);
  return ok;
}

bool dhx_checkpoint_verify(const dhx_plan *plan, uint32_t rank, const char *path, int64_t *step,
                           char *err, size_t errlen) {
  const dhx_plan_rank *r = &plan->ranks[rank];
  int n = 0;
  tensor *t = list_tensors(r, &n);
  if (!t) return dhx_st_fail(path, err, errlen, "out of memory");
  dhx_st_file s;
  bool ok = open_checkpoint(&s, path, plan, r, t, n, step, err, errlen);
  dhx_st_close(&s);
  free(t);
  return ok;
}

bool dhx_checkpoint_load(const dhx_plan *plan, uint32_t rank, uint8_t *arena, const char *path,
                         int64_t *step, char *err, size_t errlen) {
  const dhx_plan_rank *r = &plan->ranks[rank];
  int n = 0;
  tensor *t = list_tensors(r, &n);
  if (!t) return dhx_st_fail(path, err, errlen, "out of memory");
  dhx_st_file s;
  bool ok = open_checkpoint(&s, path, plan, r, t, n, step, err, errlen);
  for (int i = 0; i < n && ok; i++) {
    const dhx_plan_buffer *b = &r->buffers[t[i].buf];
    if (t[i].e) ok = read_slice(&s, t[i].e, b, (float *)(arena + b->offset), false, err, errlen);
    else dhx_init_master(r, arena, find_param(r, t, i));  // its weights, read before it
  }
  dhx_st_close(&s);
  free(t);
  return ok;
}

// ---- the newest good checkpoint of a directory ------------------------------------------------

// N of "step_N.safetensors" (temporary files, "step_N.safetensors.tmp.PID", do not match).
static bool step_of_name(const char *name, int64_t *step) {
  const char *p = name + 5;
  if (strncmp(name, "step_", 5) != 0 || *p < '0' || *p > '9') return false;
  int64_t v = 0;
  for (; *p >= '0' && *p <= '9'; p++) {
    if (v > (INT64_MAX - 9) / 10) return false;
    v = 10 * v + (*p - '0');
  }
  *step = v;
  return strcmp(p, ".safetensors") == 0;
}

static int descending(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? 1 : x > y ? -1 : 0;
}

// The steps of the directory's checkpoints, newest first; NULL when it cannot be read.
static int64_t *list_steps(const char *dir, int *count) {
  DIR *d = opendir(dir);
  if (!d) return NULL;
  int n = 0, cap = 16;
  int64_t *steps = malloc((size_t)cap * sizeof *steps);
  for (struct dirent *e; steps && (e = readdir(d));) {
    int64_t step;
    if (!step_of_name(e->d_name, &step)) continue;
    if (n == cap) {
      int64_t *grown = realloc(steps, (size_t)(cap *= 2) * sizeof *steps);
      if (!grown) free(steps);
      steps = grown;
    }
    if (steps) steps[n++] = step;
  }
  closedir(d);
  if (steps) qsort(steps, (size_t)n, sizeof *steps, descending);
  *count = n;
  return steps;
}

bool dhx_checkpoint_latest(const char *dir, const dhx_plan *plan, uint32_t rank, char *path,
                           size_t pathlen, FILE *notes, char *err, size_t errlen) {
  int n = 0, skipped = 0;
  int64_t *steps = list_steps(dir, &n);
  if (!steps)
    return dhx_st_fail(dir, err, errlen, "cannot read the checkpoint directory: %s",
                       strerror(errno));
  size_t dirlen = strlen(dir);
  const char *sep = dirlen && dir[dirlen - 1] == '/' ? "" : "/";
  bool found = false;
  for (int i = 0; i < n && !found; i++) {
    char why[1024];
    int64_t step;
    int len = snprintf(path, pathlen, "%s%sstep_%" PRId64 ".safetensors", dir, sep, steps[i]);
    if (len < 0 || (size_t)len >= pathlen) {
      free(steps);
      return dhx_st_fail(dir, err, errlen, "checkpoint path longer than %zu bytes", pathlen);
    }
    found = dhx_checkpoint_verify(plan, rank, path, &step, why, sizeof why);
    if (!found) {
      skipped++;
      if (notes) fprintf(notes, "dhxrun: skipping %s\n", why);
    }
  }
  free(steps);
  if (found) return true;
  if (pathlen) path[0] = 0;
  if (skipped)
    return dhx_st_fail(dir, err, errlen,
                       "no complete checkpoint (step_N.safetensors) to resume from: "
                       "all %d %s unusable",
                       skipped, skipped == 1 ? "is" : "are");
  return dhx_st_fail(dir, err, errlen,
                     "no complete checkpoint (step_N.safetensors) to resume from");
}

// ---- weights only -----------------------------------------------------------------------------

// A hint when the file's names are Hugging Face's: which conversion turns them into DHX's.
static const char *hf_hint(const dhx_st_file *s, char *buf, size_t n) {
  const char *arch = NULL;
  for (int i = 0; i < s->nentries && !arch; i++) {
    const char *name = s->entries[i].name;
    if (strstr(name, "self_attn.") || strstr(name, "embed_tokens") || strstr(name, "mlp.gate_proj"))
      arch = "Llama";
    else if (strstr(name, "attn.c_attn") || strstr(name, "mlp.c_fc") ||
             strcmp(name, "wte.weight") == 0 || strcmp(name, "transformer.wte.weight") == 0)
      arch = "GPT-2";
  }
  if (!arch) return "";
  snprintf(buf, n, "; its names are Hugging Face %s's: convert it first with dhxc convert "
           "--from %s --to dhx %s OUT.safetensors", arch, arch[0] == 'L' ? "hf-llama" : "hf-gpt2",
           s->path);
  return buf;
}

static bool check_weight(const dhx_st_file *s, const dhx_st_entry *e, const dhx_plan_buffer *b,
                         char *err, size_t errlen) {
  if (strcmp(e->dtype, "F32") != 0 && strcmp(e->dtype, "BF16") != 0 && strcmp(e->dtype, "F16") != 0)
    return dhx_st_fail(s->path, err, errlen, "tensor '%s': dtype %s (expected F32, BF16 or F16)",
                       e->name, e->dtype);
  if (!same_shape(e, b)) {
    char want[160], got[160];
    plan_shape_text(b, want, sizeof want);
    dhx_st_shape_text(e->ndim, e->shape, got, sizeof got);
    return dhx_st_fail(s->path, err, errlen, "tensor '%s': shape %s, the plan's is %s", e->name,
                       got, want);
  }
  return dhx_st_check_size(s, e, err, errlen);
}

// Every parameter present with the plan's shape; besides them only their AdamW moments.
static bool match_weights(const dhx_st_file *s, const dhx_plan *plan, const dhx_plan_rank *r,
                          tensor *t, int n, char *err, size_t errlen) {
  for (int i = 0; i < n; i++) {
    if (t[i].moment || t[i].master) continue;
    t[i].e = dhx_st_find(s, t[i].name);
    char hint[600];
    if (!t[i].e)
      return dhx_st_fail(s->path, err, errlen, "tensor '%s' is missing%s", t[i].name,
                  hf_hint(s, hint, sizeof hint));
    if (!check_weight(s, t[i].e, &r->buffers[t[i].buf], err, errlen)) return false;
  }
  for (int i = 0; i < s->nentries; i++)
    if (!find_tensor(t, n, s->entries[i].name) && !held_elsewhere(plan, s->entries[i].name))
      return dhx_st_fail(s->path, err, errlen, "tensor '%s' is not in the plan",
                         s->entries[i].name);
  return true;
}

bool dhx_checkpoint_load_weights(const dhx_plan *plan, uint32_t rank, uint8_t *arena,
                                 const char *path, char *err, size_t errlen) {
  const dhx_plan_rank *r = &plan->ranks[rank];
  int n = 0;
  tensor *t = list_tensors(r, &n);
  if (!t) return dhx_st_fail(path, err, errlen, "out of memory");
  dhx_st_file s;
  bool ok = dhx_st_open(&s, path, err, errlen);
  if (ok) ok = match_weights(&s, plan, r, t, n, err, errlen) && dhx_st_verify(&s, err, errlen);
  for (int i = 0; i < n && ok; i++) {
    const dhx_plan_buffer *b = &r->buffers[t[i].buf];
    if (t[i].moment) memset(arena + b->offset, 0, (size_t)b->nbytes);  // fresh optimizer state
    else if (t[i].master) dhx_init_master(r, arena, find_param(r, t, i));  // from the weights
    else ok = read_slice(&s, t[i].e, b, (float *)(arena + b->offset), true, err, errlen);
  }
  dhx_st_close(&s);
  free(t);
  return ok;
}
