// profile.c — dhxrun --profile: how long each kind of instruction takes on this machine, for
// dhxc --simulate --profile (docs/simulator.md, "Measured profiles").
//
// The profile is made from the same records as --trace (trace.c), gathered on rank 0, and
// files every instruction under its key (plan_key.c) so that a plan of the same model with
// another schedule can look its instructions up:
//
//   * An op on a communicator is timed from the moment its last member arrived: a member that
//     came early also waited, so each rendezvous (a collective on all its members, a transfer
//     on both ends) contributes the shortest of its members' times.
//   * A deferred collective (plan.h: dhx_instr_deferred) is left out: its record is its post,
//     and its stream completes it at a WAIT later, after other work, so neither record times it.
//     Its key's time comes from the same collective where it runs whole (the forward's gathers
//     for the backward's), and a rank's communication total leaves it out.
//   * Compute is timed alone: a record that another stream of its rank overlapped by more than
//     half (a collective, or the other strand's compute) is kept apart. The ratio of compute
//     beside a collective to the same compute alone is the measured interference factor, and
//     beside other compute the sharing factor (about 2 on a CPU rank with one core: the two
//     streams take turns).
//
// Per rank the file also gives the compute and communication time of a step measured this
// way (the mean over the recorded steps), so that a bench can say what perfect overlap would
// give: max(compute, communication).
#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dhxrt.h"
#include "plan_util.h"

typedef struct op_stat {
  char key[DHX_INSTR_KEY_MAX];
  bool comm;
  double alone_s, beside_comm_s, beside_compute_s;  // sums of durations
  int64_t alone_n, beside_comm_n, beside_compute_n;
} op_stat;

// Open addressing on FNV-1a of the key; grows at half full.
typedef struct stat_table {
  op_stat *slots;
  bool *used;
  size_t cap, n;
} stat_table;

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (!p) MPI_Abort(MPI_COMM_WORLD, 1);
  return p;
}

static op_stat *stat_of(stat_table *t, const char *key);

static void grow(stat_table *t) {
  stat_table old = *t;
  t->cap = old.cap ? 2 * old.cap : 256;
  t->slots = xcalloc(t->cap, sizeof *t->slots);
  t->used = xcalloc(t->cap, sizeof *t->used);
  t->n = 0;
  for (size_t i = 0; i < old.cap; i++)
    if (old.used[i]) *stat_of(t, old.slots[i].key) = old.slots[i];
  free(old.slots);
  free(old.used);
}

static op_stat *stat_of(stat_table *t, const char *key) {
  if (2 * (t->n + 1) > t->cap) grow(t);
  size_t i = dhx_key_hash(key) & (t->cap - 1);
  while (t->used[i] && strcmp(t->slots[i].key, key) != 0) i = (i + 1) & (t->cap - 1);
  if (!t->used[i]) {
    t->used[i] = true;
    t->n++;
    snprintf(t->slots[i].key, sizeof t->slots[i].key, "%s", key);
  }
  return &t->slots[i];
}

// The shortest member time of each rendezvous, by id (open addressing, ids are hashes).
typedef struct meeting {
  uint64_t id;
  double seconds;
  bool used;
} meeting;

static meeting *meeting_of(meeting *m, size_t cap, uint64_t id) {
  size_t i = (size_t)(id * 0x9e3779b97f4a7c15ULL) & (cap - 1);
  while (m[i].used && m[i].id != id) i = (i + 1) & (cap - 1);
  return &m[i];
}

typedef struct recs_of_rank {
  const dhx_trace_rec *recs;
  int n;
  int first[DHX_MAX_STREAMS + 1];  // the records of stream s are [first[s], first[s+1])
} recs_of_rank;

static const dhx_plan_instr *instr_of(const dhx_plan *p, uint32_t rank, const dhx_trace_rec *r) {
  return &p->ranks[rank].programs[r->prog].instrs[r->instr];
}

// A rank's records come stream after stream, each stream's in the order it ran them.
static recs_of_rank split_streams(const dhx_trace_rec *recs, int n) {
  recs_of_rank rr = {.recs = recs, .n = n};
  int i = 0;
  for (int s = 0; s <= DHX_MAX_STREAMS; s++) {
    while (i < n && recs[i].stream < s) i++;
    rr.first[s] = i;
  }
  return rr;
}

// Nanoseconds of [t0, t1) that stream s's records of one kind (communicating or not) cover.
static int64_t covered(const dhx_plan *p, uint32_t rank, const recs_of_rank *rr, int s,
                       int64_t t0, int64_t t1, bool comm) {
  int lo = rr->first[s], hi = rr->first[s + 1];
  while (lo < hi) {  // the first record that ends after t0 (a stream's records do not overlap)
    int mid = (lo + hi) / 2;
    if (rr->recs[mid].t1 <= t0) lo = mid + 1;
    else hi = mid;
  }
  int64_t sum = 0;
  for (int i = lo; i < rr->first[s + 1] && rr->recs[i].t0 < t1; i++) {
    const dhx_trace_rec *r = &rr->recs[i];
    const dhx_plan_instr *in = instr_of(p, rank, r);
    if (in->op == DHX_OP_WAIT || in->op == DHX_OP_RECORD || dhx_op_on_comm(in->op) != comm)
      continue;
    int64_t a = r->t0 > t0 ? r->t0 : t0, b = r->t1 < t1 ? r->t1 : t1;
    if (b > a) sum += b - a;
  }
  return sum;
}

typedef struct rank_totals {
  double compute_s, comm_s;  // over the recorded steps
} rank_totals;

// First pass over the communicating records of every rank: each rendezvous's shortest time.
static void time_meetings(const dhx_plan *p, const dhx_trace_rec *all, const int *counts,
                          meeting *m, size_t cap) {
  const dhx_trace_rec *recs = all;
  for (uint32_t rank = 0; rank < p->nranks; recs += counts[rank], rank++)
    for (int i = 0; i < counts[rank]; i++) {
      if (recs[i].seq < 0 || dhx_instr_deferred(instr_of(p, rank, &recs[i]))) continue;
      uint64_t id = dhx_trace_rendezvous(p, rank, &recs[i]);
      meeting *e = meeting_of(m, cap, id);
      double d = (double)(recs[i].t1 - recs[i].t0) * 1e-9;
      if (!e->used || d < e->seconds) e->seconds = d;
      e->id = id;
      e->used = true;
    }
}

static void file_rank(const dhx_plan *p, uint32_t rank, const dhx_trace_rec *recs, int n,
                      meeting *m, size_t cap, stat_table *t, rank_totals *tot) {
  recs_of_rank rr = split_streams(recs, n);
  char key[DHX_INSTR_KEY_MAX];
  for (int i = 0; i < n; i++) {
    const dhx_trace_rec *r = &recs[i];
    const dhx_plan_instr *in = instr_of(p, rank, r);
    if (dhx_instr_deferred(in) || !dhx_instr_key(p, rank, in, key, sizeof key)) continue;
    op_stat *st = stat_of(t, key);
    if (r->seq >= 0) {
      st->comm = true;
      double d = meeting_of(m, cap, dhx_trace_rendezvous(p, rank, r))->seconds;
      st->alone_s += d;
      st->alone_n++;
      tot->comm_s += d;
      continue;
    }
    int64_t dur = r->t1 - r->t0, by_comm = 0, by_compute = 0;
    for (int s = 0; s < DHX_MAX_STREAMS; s++) {
      if (s == r->stream || rr.first[s] == rr.first[s + 1]) continue;
      by_comm += covered(p, rank, &rr, s, r->t0, r->t1, true);
      by_compute += covered(p, rank, &rr, s, r->t0, r->t1, false);
    }
    double d = (double)dur * 1e-9;
    tot->compute_s += d;
    if (2 * by_compute > dur) {
      st->beside_compute_s += d;
      st->beside_compute_n++;
    } else if (2 * by_comm > dur) {
      st->beside_comm_s += d;
      st->beside_comm_n++;
    } else {
      st->alone_s += d;
      st->alone_n++;
    }
  }
}

// Σ time beside others / Σ the same ops' time alone, over the keys measured both ways; 0 when
// none was.
static double slowdown(const stat_table *t, bool beside_comm) {
  double num = 0, den = 0;
  for (size_t i = 0; i < t->cap; i++) {
    const op_stat *s = &t->slots[i];
    int64_t n = beside_comm ? s->beside_comm_n : s->beside_compute_n;
    if (!t->used[i] || s->comm || !n || !s->alone_n) continue;
    num += beside_comm ? s->beside_comm_s : s->beside_compute_s;
    den += s->alone_s / (double)s->alone_n * (double)n;
  }
  return den > 0 ? num / den : 0;
}

static void write_op(FILE *f, const op_stat *s, bool *first) {
  int64_t n = s->alone_n ? s->alone_n : s->beside_comm_n + s->beside_compute_n;
  double sum = s->alone_n ? s->alone_s : s->beside_comm_s + s->beside_compute_s;
  if (!n) return;
  fprintf(f, "%s\n    ", *first ? "" : ",");
  *first = false;
  dhx_json_string(f, s->key);
  fprintf(f, ": {\"seconds\": %.9g, \"count\": %" PRId64 "%s", sum / (double)n, n,
          s->alone_n ? "" : ", \"never_alone\": true");
  if (s->beside_comm_n)
    fprintf(f, ", \"beside_comm_seconds\": %.9g", s->beside_comm_s / (double)s->beside_comm_n);
  if (s->beside_compute_n)
    fprintf(f, ", \"beside_compute_seconds\": %.9g",
            s->beside_compute_s / (double)s->beside_compute_n);
  fputs("}", f);
}

typedef struct profile_meta {
  const dhx_plan *plan;
  const char *plan_dir;
  int64_t from, to;
  double bandwidth, latency;
} profile_meta;

static void write_json(FILE *f, const profile_meta *pm, const stat_table *t,
                       const rank_totals *tot) {
  int64_t steps = pm->to - pm->from;
  fprintf(f, "{\n  \"writer\": \"dhxrun --profile\",\n  \"version\": 1,\n  \"plan\": ");
  dhx_json_string(f, pm->plan_dir);
  fprintf(f, ",\n  \"ranks\": %u,\n  \"steps\": [%" PRId64 ", %" PRId64 "],\n"
          "  \"network\": {\"bandwidth_bytes_per_s\": %.9g, \"latency_s\": %.9g},\n"
          "  \"interference\": %.6g,\n  \"compute_sharing\": %.6g,\n  \"per_rank\": [",
          pm->plan->nranks, pm->from + 1, pm->to, pm->bandwidth, pm->latency,
          slowdown(t, true), slowdown(t, false));
  for (uint32_t r = 0; r < pm->plan->nranks; r++)
    fprintf(f, "%s\n    {\"compute_s_per_step\": %.9g, \"comm_s_per_step\": %.9g}",
            r ? "," : "", tot[r].compute_s / (double)steps, tot[r].comm_s / (double)steps);
  fputs("\n  ],\n  \"ops\": {", f);
  bool first = true;
  for (size_t i = 0; i < t->cap; i++)
    if (t->used[i]) write_op(f, &t->slots[i], &first);
  fputs("\n  }\n}\n", f);
}

static bool write_file(const char *path, const profile_meta *pm, const stat_table *t,
                       const rank_totals *tot, char *err, size_t errlen) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  FILE *f = fopen(tmp, "w");
  bool ok = f != NULL;
  if (f) {
    write_json(f, pm, t, tot);
    ok = !ferror(f);
    ok &= fclose(f) == 0;
  }
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    snprintf(err, errlen, "%s: cannot write the profile", path);
    return false;
  }
  return true;
}

bool dhx_profile_write(dhx_trace *trace, const dhx_plan *plan, int rank, const char *path,
                       const char *plan_dir, double bandwidth, double latency, char *err,
                       size_t errlen) {
  int *counts = NULL;
  int64_t dropped = 0;
  dhx_trace_rec *all = dhx_trace_gather(trace, &counts, &dropped);
  if (rank != 0) return true;
  size_t total = 0;
  for (uint32_t r = 0; r < plan->nranks; r++) total += (size_t)counts[r];
  size_t cap = 64;
  while (cap < 2 * total) cap *= 2;
  meeting *m = xcalloc(cap, sizeof *m);
  time_meetings(plan, all, counts, m, cap);
  stat_table t = {0};
  rank_totals *tot = xcalloc(plan->nranks, sizeof *tot);
  const dhx_trace_rec *recs = all;
  for (uint32_t r = 0; r < plan->nranks; recs += counts[r], r++)
    file_rank(plan, r, recs, counts[r], m, cap, &t, &tot[r]);
  profile_meta pm = {.plan = plan, .plan_dir = plan_dir, .bandwidth = bandwidth,
                     .latency = latency};
  dhx_trace_steps(trace, &pm.from, &pm.to);
  if (dropped)
    fprintf(stderr, "dhxrun: warning: the profile lost %" PRId64 " records\n", dropped);
  bool ok = write_file(path, &pm, &t, tot, err, errlen);
  free(tot);
  free(t.slots);
  free(t.used);
  free(m);
  free(all);
  free(counts);
  return ok;
}
