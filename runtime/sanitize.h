// sanitize.h — defaults for AddressSanitizer / LeakSanitizer builds (-DDHX_SANITIZE=ON) of
// programs that use MPI. Include it in exactly one file of such a program (the one with main).
//
// OpenMPI allocates at MPI_Init and never frees; its libraries are built without frame
// pointers, so LSan's default (fast) unwinder stops in them and reports "<unknown module>"
// frames that no suppression can match. These defaults make the program self-sufficient in any
// environment: the slow unwinder sees whole stacks, and the suppressions name the libraries
// whose allocations outlive the run (the same list as tests/lsan.supp). ASAN_OPTIONS and
// LSAN_OPTIONS from the environment still apply on top.
#ifndef DHX_SANITIZE_H
#define DHX_SANITIZE_H

#if defined(__SANITIZE_ADDRESS__)  // gcc
#define DHX_ASAN 1
#elif defined(__has_feature)        // clang
#if __has_feature(address_sanitizer)
#define DHX_ASAN 1
#endif
#endif

#ifdef DHX_ASAN
const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);

const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; }

const char *__lsan_default_suppressions(void) {
  return "leak:libmpi\nleak:libopen-pal\nleak:libopen-rte\nleak:libpmix\nleak:libhwloc\n"
         "leak:libevent\nleak:mca_\nleak:libopenblas\nleak:libdl\nleak:libcuda\nleak:libnccl\n"
         "leak:libcublasLt\n";
}
#endif

#endif
