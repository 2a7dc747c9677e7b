// dirs.h — mkdir -p, shared by dhxc (plan directories, dhxc data) and dhxrun (outputs).
#ifndef DHX_DIRS_H
#define DHX_DIRS_H

#include <stddef.h>

typedef enum {
  DHX_DIRS_OK,
  DHX_DIRS_FAILED,      // mkdir failed: errno says why
  DHX_DIRS_IN_THE_WAY,  // a file (not a folder) has the name of one of the folders
} dhx_dirs_result;

// Creates `dir` and its missing parents. On failure the folder that could not be made (a prefix
// of dir) is copied to `at`; each caller words the error its own way.
dhx_dirs_result dhx_make_dir_path(const char *dir, char *at, size_t atlen);

#endif
