// profile.c — a measured profile (dhxrun --profile) as the source of instruction times.
//
// The file maps instruction keys (plan_key.c) to seconds measured alone, plus the interference
// factor measured beside collectives. Loading checks every field it uses and names the file
// and the field of anything wrong; lookups are by the same key the runtime wrote, so a plan
// whose instructions match the profiled plan's (the same model, another schedule) is timed by
// measurement and only what the profile lacks falls back to the model.
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cost.h"
#include "plan_util.h"

typedef struct profile_entry {
  char *key;
  double seconds;
} profile_entry;

struct dhx_profile {
  profile_entry *slots;  // open addressing, capacity a power of two, at most half full
  size_t cap, n;
  double interference;   // 0: not measured
  double bandwidth, latency;
};

static profile_entry *slot_of(const dhx_profile *p, const char *key) {
  size_t i = dhx_key_hash(key) & (p->cap - 1);
  while (p->slots[i].key && strcmp(p->slots[i].key, key) != 0) i = (i + 1) & (p->cap - 1);
  return &p->slots[i];
}

static char *read_all(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot open the profile: %s", path, strerror(errno));
    return NULL;
  }
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  size_t got;
  while (buf && (got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
    n += got;
    if (n + 1 == cap) {
      char *more = cap < (1u << 30) ? realloc(buf, cap *= 2) : NULL;
      if (!more) free(buf);
      buf = more;
    }
  }
  fclose(f);
  if (!buf) {
    snprintf(err, errlen, "%s: the profile is too large", path);
    return NULL;
  }
  buf[n] = '\0';
  return buf;
}

static bool number_field(const cJSON *obj, const char *name, double *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0) return false;
  *out = v->valuedouble;
  return true;
}

static bool fill(dhx_profile *p, const cJSON *root, const char *path, char *err, size_t errlen) {
  const cJSON *writer = cJSON_GetObjectItemCaseSensitive(root, "writer");
  const cJSON *ops = cJSON_GetObjectItemCaseSensitive(root, "ops");
  if (!cJSON_IsString(writer) || strcmp(writer->valuestring, "dhxrun --profile") != 0) {
    snprintf(err, errlen, "%s: not a profile written by dhxrun --profile (field 'writer')", path);
    return false;
  }
  if (!cJSON_IsObject(ops)) {
    snprintf(err, errlen, "%s: field 'ops' is not an object", path);
    return false;
  }
  number_field(root, "interference", &p->interference);
  const cJSON *net = cJSON_GetObjectItemCaseSensitive(root, "network");
  if (net) {
    number_field(net, "bandwidth_bytes_per_s", &p->bandwidth);
    number_field(net, "latency_s", &p->latency);
  }
  size_t n = (size_t)cJSON_GetArraySize(ops);
  for (p->cap = 16; p->cap < 2 * n; p->cap *= 2) {
  }
  p->slots = calloc(p->cap, sizeof *p->slots);
  if (!p->slots) abort();
  for (const cJSON *op = ops->child; op; op = op->next) {
    double s;
    if (!cJSON_IsObject(op) || !number_field(op, "seconds", &s)) {
      snprintf(err, errlen, "%s: ops.\"%s\": 'seconds' is not a non-negative number", path,
               op->string);
      return false;
    }
    profile_entry *e = slot_of(p, op->string);
    if (!e->key) {
      if (!(e->key = strdup(op->string))) abort();
      p->n++;
    }
    e->seconds = s;
  }
  return true;
}

dhx_profile *dhx_profile_load(const char *path, char *err, size_t errlen) {
  char *text = read_all(path, err, errlen);
  if (!text) return NULL;
  cJSON *root = cJSON_Parse(text);
  free(text);
  if (!root) {
    snprintf(err, errlen, "%s: not valid JSON", path);
    return NULL;
  }
  dhx_profile *p = calloc(1, sizeof *p);
  if (!p) abort();
  bool ok = fill(p, root, path, err, errlen);
  cJSON_Delete(root);
  if (!ok) {
    dhx_profile_free(p);
    return NULL;
  }
  return p;
}

void dhx_profile_free(dhx_profile *p) {
  if (!p) return;
  for (size_t i = 0; i < p->cap; i++) free(p->slots[i].key);
  free(p->slots);
  free(p);
}

size_t dhx_profile_size(const dhx_profile *p) { return p->n; }
double dhx_profile_interference(const dhx_profile *p) { return p->interference; }

bool dhx_profile_network(const dhx_profile *p, double *bandwidth, double *latency) {
  *bandwidth = p->bandwidth;
  *latency = p->latency;
  return p->bandwidth > 0;
}

bool dhx_profile_seconds(const dhx_profile *p, const dhx_plan *plan, uint32_t rank,
                         const dhx_plan_instr *in, double *seconds) {
  char key[DHX_INSTR_KEY_MAX];
  if (!p || !dhx_instr_key(plan, rank, in, key, sizeof key)) return false;
  const profile_entry *e = slot_of(p, key);
  if (!e->key) return false;
  *seconds = e->seconds;
  return true;
}

void dhx_profile_coverage(const dhx_profile *p, const dhx_plan *plan, int64_t *covered,
                          int64_t *total) {
  *covered = *total = 0;
  char key[DHX_INSTR_KEY_MAX];
  for (uint32_t r = 0; r < plan->nranks; r++)
    for (int g = 0; g < DHX_PROG_COUNT; g++) {
      const dhx_plan_program *prog = &plan->ranks[r].programs[g];
      for (uint32_t i = 0; i < prog->ninstrs; i++) {
        if (!dhx_instr_key(plan, r, &prog->instrs[i], key, sizeof key)) continue;
        (*total)++;
        if (slot_of(p, key)->key) (*covered)++;
      }
    }
}
