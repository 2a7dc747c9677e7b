// kernel_cache.c — the emission of one kernel file (dhx_codegen_emit_file), through a cache of
// emitted files kept by what produced them, so that a plan whose kernels were emitted before
// (another layout of the same model, paired strands beside unpaired, a second compile) copies
// them instead of optimising them again.
//
// DHX_KERNEL_CACHE names the folder (created if missing); unset or empty, nothing is cached.
// An entry's key hashes everything its file follows from: the module as built for the target
// (its bitcode, with triple, data layout and attributes), the target machine (triple, CPU,
// features), the file's extension, LLVM's version and the dhxc binary itself (size, change
// time, inode), so a rebuilt dhxc or a different host never sees another's kernels. Entries
// are written to a temporary name and renamed, so concurrent compiles read whole files only.
// The cache only ever saves time: a failure to read or write it falls back to emitting. Its
// entries are code dhxrun loads, so the folder it creates is its owner's alone.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <llvm-c/BitWriter.h>
#include <llvm-c/Core.h>

#include "codegen_internal.h"

static const char *cache_dir(void) {
  const char *d = getenv("DHX_KERNEL_CACHE");
  return d && *d ? d : NULL;
}

// Two 64-bit multiplicative hashes, FNV-1a and one with another multiplier and basis: 128
// bits, so that unrelated modules never share a key in practice.
typedef struct hash128 {
  uint64_t a, b;
} hash128;

static void hash_bytes(hash128 *h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h->a = (h->a ^ p[i]) * 0x100000001B3u;
    h->b = (h->b ^ p[i]) * 0x9E3779B97F4A7C15u;
  }
}

static void hash_str(hash128 *h, const char *s) { hash_bytes(h, s ? s : "", strlen(s ? s : "") + 1); }

#define KEY_CHARS 33

// Fills `key` for mod as it stands (before optimising) on tm, for files named `ext`; false
// when the cache is off.
static bool cache_key(LLVMModuleRef mod, LLVMTargetMachineRef tm, const char *ext,
                      char key[KEY_CHARS]) {
  if (!cache_dir()) return false;
  struct stat self;
  if (stat("/proc/self/exe", &self) != 0) return false;
  hash128 h = {0xCBF29CE484222325u, 0x84222325CBF29CE4u};
  hash_str(&h, ext);
  unsigned v[3] = {0, 0, 0};
  LLVMGetVersion(&v[0], &v[1], &v[2]);
  hash_bytes(&h, v, sizeof v);
  int64_t exe[4] = {(int64_t)self.st_size, (int64_t)self.st_mtim.tv_sec,
                    (int64_t)self.st_mtim.tv_nsec, (int64_t)self.st_ino};
  hash_bytes(&h, exe, sizeof exe);
  char *triple = LLVMGetTargetMachineTriple(tm), *cpu = LLVMGetTargetMachineCPU(tm),
       *feat = LLVMGetTargetMachineFeatureString(tm);
  hash_str(&h, triple);
  hash_str(&h, cpu);
  hash_str(&h, feat);
  LLVMDisposeMessage(triple);
  LLVMDisposeMessage(cpu);
  LLVMDisposeMessage(feat);
  LLVMMemoryBufferRef bc = LLVMWriteBitcodeToMemoryBuffer(mod);
  if (!bc) return false;
  hash_bytes(&h, LLVMGetBufferStart(bc), LLVMGetBufferSize(bc));
  LLVMDisposeMemoryBuffer(bc);
  snprintf(key, KEY_CHARS, "%016llx%016llx", (unsigned long long)h.a,
           (unsigned long long)h.b);
  return true;
}

// Copies the whole of file `from` to a new file `to`, created with `mode` (less the umask);
// false on any error.
static bool copy_file(const char *from, const char *to, unsigned mode) {
  int in = open(from, O_RDONLY | O_CLOEXEC);
  if (in < 0) return false;
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
  bool ok = out >= 0;
  char buf[1 << 16];
  while (ok) {
    ssize_t got = read(in, buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      ok = got == 0;
      break;
    }
    for (ssize_t put = 0; ok && put < got;) {
      ssize_t w = write(out, buf + put, (size_t)(got - put));
      if (w < 0 && errno == EINTR) continue;
      ok = w > 0;
      if (ok) put += w;
    }
  }
  close(in);
  if (out >= 0 && close(out) != 0) ok = false;
  return ok;
}

static void entry_path(char *path, size_t n, const char *key, const char *ext) {
  snprintf(path, n, "%s/%s.%s", cache_dir(), key, ext);
}

// Copies `src` to `dest` through a temporary name beside it, this process's own (the three
// targets' files have different names): a plan directory's kernels.so may be mapped by a run
// while the plan is compiled again, and a file rewritten in place would change under it.
static bool put_file(const char *src, const char *dest, unsigned mode) {
  char tmp[DHX_PATH_MAX + 96];
  snprintf(tmp, sizeof tmp, "%s.%ld.tmp", dest, (long)getpid());
  bool ok = copy_file(src, tmp, mode) && rename(tmp, dest) == 0;
  if (!ok) unlink(tmp);
  return ok;
}

static bool fetch(const char *key, const char *ext, const char *dest, unsigned mode) {
  if (!cache_dir()) return false;
  char path[DHX_PATH_MAX + 64];
  entry_path(path, sizeof path, key, ext);
  return access(path, R_OK) == 0 && put_file(path, dest, mode);
}

static void store(const char *key, const char *ext, const char *src) {
  const char *dir = cache_dir();
  if (!dir || (mkdir(dir, 0700) != 0 && errno != EEXIST)) return;  // its owner's alone
  char path[DHX_PATH_MAX + 64];
  entry_path(path, sizeof path, key, ext);
  put_file(src, path, 0644);
}

bool dhx_codegen_emit_file(LLVMTargetMachineRef tm, LLVMModuleRef mod, const char *ext,
                           unsigned mode, dhx_emit_file_fn emit, const char *path, char *err,
                           size_t errlen) {
  char *triple = LLVMGetTargetMachineTriple(tm);
  LLVMSetTarget(mod, triple);
  LLVMDisposeMessage(triple);
  LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(tm);
  LLVMSetModuleDataLayout(mod, dl);
  LLVMDisposeTargetData(dl);
  char key[KEY_CHARS];
  bool cached = cache_key(mod, tm, ext, key);
  if (cached && fetch(key, ext, path, mode)) return true;
  if (!emit(tm, mod, path, err, errlen)) return false;
  if (cached) store(key, ext, path);
  return true;
}
