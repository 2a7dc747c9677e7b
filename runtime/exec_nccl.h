// exec_nccl.h — the CUDA backend's collectives and transfers: the plan's communicators as NCCL
// communicators and its ALLREDUCE, REDUCE_SCATTER, ALL_GATHER, ALL_TO_ALL, SEND and RECV
// instructions as NCCL calls on the CUDA stream of their plan stream (exec_nccl.c).
#ifndef DHX_EXEC_NCCL_H
#define DHX_EXEC_NCCL_H

#include "dhxrt.h"
#include "gpu_api.h"

typedef struct dhx_nccl dhx_nccl;

// Makes world rank `world_rank`'s NCCL communicators: one per (plan communicator, stream) that
// `comms` (comm.c) has an MPI communicator for, the same members in the same order, so
// concurrent streams never share one (NCCL runs one communicator's operations in the order
// they were issued, which only each stream's order fixes alike on every member); and one of a
// single member per one-member plan communicator this rank's programs exchange on. Member 0
// makes each unique id and broadcasts it over the MPI communicator; all are initialised in one
// NCCL group. Collective over the members; the device's context must be current. NCCL is
// loaded only when there is a communicator to make. NULL with err filled on failure (the
// caller ends the job: the other members may be waiting).
dhx_nccl *dhx_nccl_open(const dhx_plan *plan, uint32_t world_rank, dhx_comms *comms, char *err,
                        size_t errlen);
void dhx_nccl_close(dhx_nccl *n);

// How many instructions from position i of a program's issue order go to NCCL as one group:
// the SEND and RECV instructions one stream issues back to back (so that two peers that both
// send first still meet), ending before one that touches bytes another of the group receives
// into or that it receives into itself (the group runs its transfers in no fixed order); 1 for
// the other collectives; 0 for an instruction that is not NCCL's.
uint32_t dhx_nccl_group_length(const dhx_plan_program *p, const uint32_t *order, uint32_t i,
                               uint32_t n);

// Issues the `k` instructions instrs[order[0..k)] of `rank` (one group, as
// dhx_nccl_group_length found it, or a single one) on CUDA stream s, the arena at `arena`. n
// may be NULL, for a plan without communicators: then any such instruction is an error.
bool dhx_nccl_issue(dhx_nccl *n, const dhx_plan_rank *rank, CUdeviceptr arena,
                    const dhx_plan_instr *instrs, const uint32_t *order, uint32_t k, CUstream s,
                    char *err, size_t errlen);

// Polls every communicator for an asynchronous error (a peer gone, a network failure). On one
// it aborts them all (their kernels would never finish otherwise) and returns false naming the
// world rank, the communicator and the error. Call it while waiting for the streams.
bool dhx_nccl_check(dhx_nccl *n, char *err, size_t errlen);

#endif
