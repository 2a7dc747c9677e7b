// streams.c — the streams of a program, each on its own thread.
//
// A stream runs its instructions in order; RECORD sets an event's flag and WAIT blocks until
// it is set, which is the only ordering between streams. Flags are cleared at the start of
// every program run (an event means "recorded in this run"). The threads are created once per
// rank and reused for every program; stream 0 runs on the caller. The plan validator has
// already proved that every WAIT can complete, so a run always finishes.
//
// A program whose compute instructions carry turns (plan.h: a CPU rank computing on several
// streams) runs them one at a time in turn order: an instruction waits until the turn before
// it has ended. The validator has checked that the turns cannot hang the program either.
//
// A deferred collective (plan.h: dhx_instr_deferred) that the executor leaves in flight is
// completed by its own stream at the WAIT on its event, which then records the event and so
// passes; one the executor ran whole records its event at once. The validator puts that WAIT
// on the collective's stream, so only that stream's thread touches the collective's flag.
//
// With a trace attached (dhxrun --trace), a recorded run times each instruction: two clock
// reads and a store into the stream's own buffer (trace.c). Without one, the cost is one
// branch per instruction.
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "dhxrt.h"

struct dhx_streams {
  uint32_t nstreams;  // threads[1..nstreams-1] exist
  pthread_t threads[DHX_MAX_STREAMS];
  dhx_exec_fn exec;
  dhx_complete_fn complete;
  void *ctx;
  pthread_mutex_t lock;  // guards everything below
  pthread_cond_t start, finished, event;
  uint64_t generation;   // one per program run
  uint32_t running;      // helper streams still running in this generation
  bool stop;
  const dhx_plan_program *prog;
  uint8_t *recorded;     // per event of the current run
  uint8_t *in_flight;    // per event: a deferred collective left in flight (its stream only)
  uint32_t max_events;
  dhx_trace *trace;      // NULL when not tracing
  bool tracing;          // the current run is recorded
  pthread_mutex_t turn_lock;  // guards next_turn
  pthread_cond_t turn_came;
  uint32_t next_turn;    // the turn whose instruction may run (from 1 in each run)
  uint32_t batch;        // streams with turns in the current program, as a mask (SCHED_BATCH)
  const dhx_plan_program *batch_of;  // the program `batch` was found for
};

typedef struct stream_arg {
  dhx_streams *s;
  uint32_t id;
} stream_arg;

static void record(dhx_streams *s, int32_t event) {
  pthread_mutex_lock(&s->lock);
  s->recorded[event] = 1;
  pthread_cond_broadcast(&s->event);
  pthread_mutex_unlock(&s->lock);
}

static void wait_event(dhx_streams *s, int32_t event) {
  pthread_mutex_lock(&s->lock);
  while (!s->recorded[event]) pthread_cond_wait(&s->event, &s->lock);
  pthread_mutex_unlock(&s->lock);
}

// With turns, a stream thread that wakes up (its turn came, a collective's peer answered, a
// poll's sleep ended) must not take the core from the one whose turn runs: under the default
// policy a woken thread preempts the running one, every few tens of microseconds while a
// collective polls, and the turns' order comes apart. SCHED_BATCH threads keep their share of
// the core but do not preempt on wakeup (bench/strands_cpu: paired steps 0.83 of the default's).
// A stream with turns switches to it for the program and back for one without; a stream that
// only communicates stays as it is, so that its collectives start and end promptly. An
// unprivileged thread may switch between the two; a refusal leaves the default, only slower.
static void batch_if(bool batch) {
  static _Thread_local int policy = SCHED_OTHER;
  int want = batch ? SCHED_BATCH : SCHED_OTHER;
  if (policy == want) return;
  struct sched_param none = {0};
  if (pthread_setschedparam(pthread_self(), want, &none) == 0) policy = want;
}

// A compute instruction with a turn waits for it before it runs and passes it on after.
static void wait_turn(dhx_streams *s, uint32_t turn) {
  pthread_mutex_lock(&s->turn_lock);
  while (s->next_turn != turn) pthread_cond_wait(&s->turn_came, &s->turn_lock);
  pthread_mutex_unlock(&s->turn_lock);
}

static void pass_turn(dhx_streams *s) {
  pthread_mutex_lock(&s->turn_lock);
  s->next_turn++;
  pthread_cond_broadcast(&s->turn_came);
  pthread_mutex_unlock(&s->turn_lock);
}

// A WAIT on a collective its stream left in flight finishes it first; the event it records
// lets the WAIT pass at once.
static void run_wait(dhx_streams *s, int32_t event) {
  if (s->in_flight[event]) {
    s->complete(s->ctx, event);
    s->in_flight[event] = 0;
    record(s, event);
  }
  wait_event(s, event);
}

static void run_instr(dhx_streams *s, const dhx_plan_instr *in) {
  if (in->op == DHX_OP_RECORD)
    record(s, in->event);
  else if (in->op == DHX_OP_WAIT)
    run_wait(s, in->event);
  else if (s->exec(s->ctx, in))  // left in flight: its WAIT completes it
    s->in_flight[in->event] = 1;
  else if (dhx_instr_deferred(in))  // ran whole: complete now
    record(s, in->event);
}

// `trace` is NULL unless this run is recorded.
static void run_stream(dhx_streams *s, const dhx_plan_program *p, uint32_t stream,
                       dhx_trace *trace) {
  batch_if((s->batch >> stream) & 1);
  for (uint32_t i = 0; i < p->ninstrs; i++) {
    const dhx_plan_instr *in = &p->instrs[i];
    if (in->stream != stream) continue;
    if (in->turn) wait_turn(s, in->turn);  // outside the traced time: the trace shows the run
    if (trace) {
      int64_t t0 = dhx_trace_clock();
      run_instr(s, in);
      dhx_trace_add(trace, stream, in, i, t0);
    } else {
      run_instr(s, in);
    }
    if (in->turn) pass_turn(s);
  }
}

static void *stream_main(void *p) {
  stream_arg *arg = p;
  dhx_streams *s = arg->s;
  uint32_t id = arg->id;
  free(arg);
  uint64_t seen = 0;
  pthread_mutex_lock(&s->lock);
  for (;;) {
    while (s->generation == seen && !s->stop) pthread_cond_wait(&s->start, &s->lock);
    if (s->stop) break;
    seen = s->generation;
    const dhx_plan_program *prog = s->prog;
    dhx_trace *trace = s->tracing ? s->trace : NULL;
    if (id >= prog->nstreams) continue;  // this program does not use this stream
    pthread_mutex_unlock(&s->lock);
    run_stream(s, prog, id, trace);
    pthread_mutex_lock(&s->lock);
    if (--s->running == 0) pthread_cond_signal(&s->finished);
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

dhx_streams *dhx_streams_new(uint32_t nstreams, uint32_t max_events, dhx_exec_fn exec,
                             dhx_complete_fn complete, void *ctx) {
  dhx_streams *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->recorded = calloc(max_events ? max_events : 1, 1);
  s->in_flight = calloc(max_events ? max_events : 1, 1);
  if (!s->recorded || !s->in_flight) {
    free(s->recorded);
    free(s->in_flight);
    free(s);
    return NULL;
  }
  s->max_events = max_events;
  s->exec = exec;
  s->complete = complete;
  s->ctx = ctx;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->start, NULL);
  pthread_cond_init(&s->finished, NULL);
  pthread_cond_init(&s->event, NULL);
  pthread_mutex_init(&s->turn_lock, NULL);
  pthread_cond_init(&s->turn_came, NULL);
  s->nstreams = 1;
  for (uint32_t i = 1; i < nstreams && i < DHX_MAX_STREAMS; i++) {
    stream_arg *arg = malloc(sizeof *arg);
    if (arg) *arg = (stream_arg){s, i};
    if (!arg || pthread_create(&s->threads[i], NULL, stream_main, arg) != 0) {
      free(arg);
      dhx_streams_free(s);
      return NULL;
    }
    s->nstreams = i + 1;
  }
  return s;
}

void dhx_streams_free(dhx_streams *s) {
  if (!s) return;
  pthread_mutex_lock(&s->lock);
  s->stop = true;
  pthread_cond_broadcast(&s->start);
  pthread_mutex_unlock(&s->lock);
  for (uint32_t i = 1; i < s->nstreams; i++) pthread_join(s->threads[i], NULL);
  pthread_cond_destroy(&s->start);
  pthread_cond_destroy(&s->finished);
  pthread_cond_destroy(&s->event);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->turn_came);
  pthread_mutex_destroy(&s->turn_lock);
  free(s->recorded);
  free(s->in_flight);
  free(s);
}

void dhx_streams_trace(dhx_streams *s, dhx_trace *trace) { s->trace = trace; }

void dhx_streams_run(dhx_streams *s, const dhx_plan_program *prog) {
  if (prog->nstreams > s->nstreams || prog->nevents > s->max_events) abort();  // rt.c sizes us
  bool tracing = s->trace && dhx_trace_program(s->trace, prog);
  pthread_mutex_lock(&s->lock);
  s->prog = prog;
  s->tracing = tracing;
  memset(s->recorded, 0, prog->nevents);
  s->next_turn = 1;  // no stream runs yet
  if (s->batch_of != prog) {  // once per program, not per run (MICRO runs per micro-batch)
    s->batch = 0;
    for (uint32_t i = 0; i < prog->ninstrs; i++)
      if (prog->instrs[i].turn) s->batch |= 1u << prog->instrs[i].stream;
    s->batch_of = prog;
  }
  s->running = prog->nstreams - 1;
  s->generation++;
  pthread_cond_broadcast(&s->start);
  pthread_mutex_unlock(&s->lock);

  run_stream(s, prog, 0, tracing ? s->trace : NULL);

  pthread_mutex_lock(&s->lock);
  while (s->running > 0) pthread_cond_wait(&s->finished, &s->lock);
  pthread_mutex_unlock(&s->lock);
}
