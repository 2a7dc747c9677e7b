// test_ice.c — internal compiler errors (compiler/front/ice.h): the place they name, the exact
// report, and that raising one prints it to stderr and exits with DHX_ICE_EXIT.
//
//   test_ice NAME    runs one case; exit 0 when it passes
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ice.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

static void check_text(const char *got, const char *want) {
  if (strcmp(got, want) == 0) return;
  fprintf(stderr, "got:\n%s\nwanted:\n%s\n", got, want);
  exit(1);
}

#define REPORT_REQUEST \
  "dhxc: please report this bug in dhxc with the .dhx files and the command line\n"

// The place is the source file from its compiler/ folder on, whatever folder it was built in.
static void source_path(void) {
  check_text(dhx_ice_source_path("/work/dhx/compiler/plan/compile.c"), "compiler/plan/compile.c");
  check_text(dhx_ice_source_path("compiler/graph/autodiff.c"), "compiler/graph/autodiff.c");
  check_text(dhx_ice_source_path("/home/compiler/src/compiler/sema/defs.c"),
             "compiler/sema/defs.c");
  check_text(dhx_ice_source_path("/src/mycompiler/x.c"), "/src/mycompiler/x.c");  // no folder
  check_text(dhx_ice_source_path("/src/tests/ice/test_ice.c"), "/src/tests/ice/test_ice.c");
}

static void format(void) {
  char out[2048];
  int n = dhx_ice_format(out, sizeof out, "/src/compiler/plan/compile.c", 218,
                         "the compiled plan is invalid: %s",
                         "rank 0: train.steps must be in 1..2^32");
  const char *want =
      "dhxc: internal error (compiler/plan/compile.c:218): the compiled plan is invalid: rank 0: "
      "train.steps must be in 1..2^32\n" REPORT_REQUEST;
  check_text(out, want);
  CHECK(n == (int)strlen(want));
  // A buffer too small for the report gets a NUL-terminated prefix of it; the count is still
  // the whole report's, as with snprintf.
  char small[16];
  CHECK(dhx_ice_format(small, sizeof small, "compiler/x.c", 1, "%s", "m") ==
        (int)strlen("dhxc: internal error (compiler/x.c:1): m\n" REPORT_REQUEST));
  check_text(small, "dhxc: internal ");
}

enum { RAISE_LINE = __LINE__ + 2 };  // the line of the DHX_ICE below
static _Noreturn void raise_ice(void) {
  DHX_ICE("impossible state %d of %s", 3, "the test");
}

// DHX_ICE in a child process: the report on its stderr, exit status 70.
static void raise_exits_70(void) {
  int err_pipe[2];
  CHECK(pipe(err_pipe) == 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(err_pipe[0]);
    dup2(err_pipe[1], 2);
    raise_ice();
  }
  close(err_pipe[1]);
  char got[4096];
  size_t len = 0;
  for (ssize_t r; (r = read(err_pipe[0], got + len, sizeof got - 1 - len)) > 0;) len += (size_t)r;
  got[len] = 0;
  close(err_pipe[0]);
  int status;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == DHX_ICE_EXIT && DHX_ICE_EXIT == 70);
  char want[2048];
  snprintf(want, sizeof want, "dhxc: internal error (%s:%d): impossible state 3 of the test\n"
           REPORT_REQUEST, dhx_ice_source_path(__FILE__), (int)RAISE_LINE);
  check_text(got, want);
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    void (*run)(void);
  } cases[] = {
      {"ice_names_the_source_file_from_its_compiler_folder", source_path},
      {"ice_report_is_the_place_the_message_and_a_request_to_report", format},
      {"ice_prints_the_report_to_stderr_and_exits_70", raise_exits_70},
  };
  for (size_t i = 0; argc == 2 && i < sizeof cases / sizeof cases[0]; i++)
    if (strcmp(argv[1], cases[i].name) == 0) {
      cases[i].run();
      return 0;
    }
  fprintf(stderr, "usage: test_ice NAME (a case of test_ice.c)\n");
  return 2;
}
