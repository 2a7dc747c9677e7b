// safetensors.c — the safetensors reader and writer, and the XXH64 digests that guard a file's
// integrity (see safetensors.h for the layout).
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER_BYTES (100 << 20)  // the reference implementation's limit
#define CHUNK_BYTES (4 << 20)         // reads while hashing

// ---- XXH64 ------------------------------------------------------------------------------------
// The reference algorithm (github.com/Cyan4973/xxHash): four lanes of 8-byte rounds, a few GB/s,
// so hashing a 500 MB checkpoint costs a fraction of reading it.

static const uint64_t P1 = 0x9E3779B185EBCA87ULL, P2 = 0xC2B2AE3D27D4EB4FULL,
                      P3 = 0x165667B19E3779F9ULL, P4 = 0x85EBCA77C2B2AE63ULL,
                      P5 = 0x27D4EB2F165667C5ULL;

static uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// Little-endian loads through memcpy: one instruction each (a byte loop is not merged by GCC,
// which makes the hash eight times slower).
static uint64_t load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

static uint32_t load32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap32(v);
#endif
  return v;
}

static uint64_t xxh_round(uint64_t acc, uint64_t input) {
  acc += input * P2;
  return rotl64(acc, 31) * P1;
}

static uint64_t xxh_merge(uint64_t acc, uint64_t val) {
  acc ^= xxh_round(0, val);
  return acc * P1 + P4;
}

void dhx_xxh64_init(dhx_xxh64 *h) {
  memset(h, 0, sizeof *h);
  h->v[0] = P1 + P2;
  h->v[1] = P2;
  h->v[2] = 0;
  h->v[3] = -P1;
}

static void xxh_stripe(uint64_t v[4], const uint8_t *p) {
  v[0] = xxh_round(v[0], load64(p));
  v[1] = xxh_round(v[1], load64(p + 8));
  v[2] = xxh_round(v[2], load64(p + 16));
  v[3] = xxh_round(v[3], load64(p + 24));
}

void dhx_xxh64_update(dhx_xxh64 *h, const void *data, size_t n) {
  const uint8_t *p = data, *end = p + n;
  h->total += n;
  if (h->memsize + n < 32) {
    if (n) memcpy(h->mem + h->memsize, p, n);
    h->memsize += (uint32_t)n;
    return;
  }
  if (h->memsize) {
    size_t fill = 32 - h->memsize;
    memcpy(h->mem + h->memsize, p, fill);
    xxh_stripe(h->v, h->mem);
    p += fill;
    h->memsize = 0;
  }
  uint64_t v[4] = {h->v[0], h->v[1], h->v[2], h->v[3]};  // in registers for the hot loop
  for (; end - p >= 32; p += 32) xxh_stripe(v, p);
  memcpy(h->v, v, sizeof v);
  if (p < end) {
    memcpy(h->mem, p, (size_t)(end - p));
    h->memsize = (uint32_t)(end - p);
  }
}

uint64_t dhx_xxh64_digest(const dhx_xxh64 *h) {
  uint64_t acc;
  if (h->total >= 32) {
    acc = rotl64(h->v[0], 1) + rotl64(h->v[1], 7) + rotl64(h->v[2], 12) + rotl64(h->v[3], 18);
    for (int i = 0; i < 4; i++) acc = xxh_merge(acc, h->v[i]);
  } else {
    acc = h->v[2] + P5;  // the seed (0) + P5
  }
  acc += h->total;
  const uint8_t *p = h->mem, *end = p + h->memsize;
  for (; end - p >= 8; p += 8) acc = rotl64(acc ^ xxh_round(0, load64(p)), 27) * P1 + P4;
  if (end - p >= 4) {
    acc = rotl64(acc ^ (uint64_t)load32(p) * P1, 23) * P2 + P3;
    p += 4;
  }
  for (; p < end; p++) acc = rotl64(acc ^ *p * P5, 11) * P1;
  acc ^= acc >> 33;
  acc *= P2;
  acc ^= acc >> 29;
  acc *= P3;
  return acc ^ (acc >> 32);
}

// ---- errors and small helpers -----------------------------------------------------------------

bool dhx_st_fail(const char *path, char *err, size_t errlen, const char *fmt, ...) {
  char msg[900];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  snprintf(err, errlen, "%s: %s", path, msg);
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

static bool read_at(FILE *f, int64_t offset, void *p, size_t n) {
  return fseeko(f, (off_t)offset, SEEK_SET) == 0 && fread(p, 1, n, f) == n;
}

int dhx_st_dtype_size(const char *dtype) {
  static const struct { const char *name; int size; } known[] = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
      {"I8", 1}, {"U64", 8}, {"U32", 4}, {"U16", 2}, {"U8", 1}, {"BOOL", 1}, {"F8_E4M3", 1},
      {"F8_E5M2", 1}};
  for (size_t i = 0; dtype && i < sizeof known / sizeof known[0]; i++)
    if (strcmp(dtype, known[i].name) == 0) return known[i].size;
  return 0;
}

int64_t dhx_st_elems(const dhx_st_entry *e) {
  int64_t n = 1;
  for (int d = 0; d < e->ndim; d++)
    if (__builtin_mul_overflow(n, e->shape[d], &n)) return -1;
  return n;
}

void dhx_st_shape_text(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t len = (size_t)snprintf(buf, n, "[");
  for (int d = 0; d < ndim && len < n; d++)
    len += (size_t)snprintf(buf + len, n - len, "%s%" PRId64, d ? ", " : "", shape[d]);
  if (len < n) snprintf(buf + len, n - len, "]");
}

bool dhx_st_check_size(const dhx_st_file *s, const dhx_st_entry *e, char *err, size_t errlen) {
  int size = dhx_st_dtype_size(e->dtype);
  if (!size)
    return dhx_st_fail(s->path, err, errlen, "tensor '%s': unknown dtype %s", e->name, e->dtype);
  int64_t elems = dhx_st_elems(e), bytes;
  char shape[160];
  dhx_st_shape_text(e->ndim, e->shape, shape, sizeof shape);
  if (elems < 0 || __builtin_mul_overflow(elems, (int64_t)size, &bytes) ||
      bytes != e->end - e->begin)
    return dhx_st_fail(s->path, err, errlen,
                       "tensor '%s': %" PRId64
                       " bytes of data, but %s %s needs "
                       "%" PRId64,
                       e->name, e->end - e->begin, e->dtype, shape, elems < 0 ? -1 : bytes);
  return true;
}

// ---- reading ----------------------------------------------------------------------------------

static bool parse_entry(dhx_st_file *s, const cJSON *j, dhx_st_entry *e, char *err, size_t errlen) {
  e->name = j->string;
  if (!cJSON_IsObject(j))
    return dhx_st_fail(s->path, err, errlen, "tensor '%s': entry is not an object", e->name);
  e->dtype = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "dtype"));
  if (!e->dtype) return dhx_st_fail(s->path, err, errlen, "tensor '%s': no dtype", e->name);
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
  int ndim = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : -1;
  if (ndim < 0 || ndim > DHX_ST_MAX_DIMS)
    return dhx_st_fail(s->path, err, errlen, "tensor '%s': shape is not a list of at most %d sizes",
                e->name, DHX_ST_MAX_DIMS);
  e->ndim = ndim;
  for (int d = 0; d < ndim; d++)
    if (!json_int(cJSON_GetArrayItem(shape, d), &e->shape[d]))
      return dhx_st_fail(s->path, err, errlen, "tensor '%s': shape is not a list of sizes",
                         e->name);
  const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
  if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
      !json_int(cJSON_GetArrayItem(off, 0), &e->begin) ||
      !json_int(cJSON_GetArrayItem(off, 1), &e->end))
    return dhx_st_fail(s->path, err, errlen, "tensor '%s': data_offsets is not a pair of offsets",
                e->name);
  if (e->begin > e->end || e->end > s->data_bytes)
    return dhx_st_fail(s->path, err, errlen,
                       "tensor '%s': data_offsets [%" PRId64 ", %" PRId64
                       "] lie "
                       "outside the %" PRId64 " bytes of data (truncated file?)",
                       e->name, e->begin, e->end, s->data_bytes);
  return true;
}

static bool parse_header(dhx_st_file *s, const char *json, size_t len, char *err, size_t errlen) {
  cJSON *root = cJSON_ParseWithLength(json, len);
  s->root = root;
  if (!root) return dhx_st_fail(s->path, err, errlen, "the header is not valid JSON");
  if (!cJSON_IsObject(root))
    return dhx_st_fail(s->path, err, errlen, "the header is not a JSON object");
  int n = cJSON_GetArraySize(root);
  s->entries = calloc((size_t)n + 1, sizeof *s->entries);
  if (!s->entries) return dhx_st_fail(s->path, err, errlen, "out of memory reading the header");
  for (const cJSON *j = root->child; j; j = j->next) {
    if (!j->string) return dhx_st_fail(s->path, err, errlen, "header entry without a name");
    if (strcmp(j->string, "__metadata__") == 0) {
      if (!cJSON_IsObject(j))
        return dhx_st_fail(s->path, err, errlen, "__metadata__ is not an object");
      s->meta = j;
      continue;
    }
    if (dhx_st_find(s, j->string))
      return dhx_st_fail(s->path, err, errlen, "tensor '%s' appears twice", j->string);
    if (!parse_entry(s, j, &s->entries[s->nentries], err, errlen)) return false;
    s->nentries++;
  }
  return true;
}

static bool open_file(dhx_st_file *s, char *err, size_t errlen) {
  s->f = fopen(s->path, "rb");
  if (!s->f) return dhx_st_fail(s->path, err, errlen, "cannot open: %s", strerror(errno));
  struct stat st;
  uint8_t size[8];
  if (fstat(fileno(s->f), &st) != 0 || !S_ISREG(st.st_mode))
    return dhx_st_fail(s->path, err, errlen, "not a regular file");
  if (st.st_size < 8 || !read_at(s->f, 0, size, 8))
    return dhx_st_fail(s->path, err, errlen, "truncated: too short for a safetensors header");
  uint64_t hlen = load64(size);
  if (hlen > MAX_HEADER_BYTES || hlen > (uint64_t)st.st_size - 8)
    return dhx_st_fail(s->path, err, errlen,
                       "header length %" PRIu64
                       " exceeds the file (%lld bytes) "
                       "or the 100 MiB limit: not a safetensors file, or corrupted",
                       hlen, (long long)st.st_size);
  s->data_start = 8 + (int64_t)hlen;
  s->data_bytes = (int64_t)st.st_size - s->data_start;
  char *json = malloc(hlen + 1);
  bool ok = json && read_at(s->f, 8, json, hlen);
  if (ok) ok = parse_header(s, json, hlen, err, errlen);
  else dhx_st_fail(s->path, err, errlen, "cannot read the header");
  free(json);
  return ok;
}

bool dhx_st_open(dhx_st_file *s, const char *path, char *err, size_t errlen) {
  memset(s, 0, sizeof *s);
  s->path = path;
  if (open_file(s, err, errlen)) return true;
  dhx_st_close(s);
  return false;
}

void dhx_st_close(dhx_st_file *s) {
  if (s->f) fclose(s->f);
  cJSON_Delete(s->root);
  free(s->entries);
  const char *path = s->path;
  memset(s, 0, sizeof *s);
  s->path = path;
}

const dhx_st_entry *dhx_st_find(const dhx_st_file *s, const char *name) {
  for (int i = 0; i < s->nentries; i++)
    if (strcmp(s->entries[i].name, name) == 0) return &s->entries[i];
  return NULL;
}

const char *dhx_st_meta(const dhx_st_file *s, const char *key) {
  return s->meta ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s->meta, key)) : NULL;
}

bool dhx_st_read(dhx_st_file *s, const dhx_st_entry *e, void *dst, char *err, size_t errlen) {
  if (!read_at(s->f, s->data_start + e->begin, dst, (size_t)(e->end - e->begin)))
    return dhx_st_fail(s->path, err, errlen, "cannot read tensor '%s'", e->name);
  return true;
}

static float bf16_to_f32(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, mant = h & 0x3FF, bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (mant << 13);  // inf, nan
  } else if (exp == 0) {
    float f = (float)mant * 0x1p-24f;  // zero and subnormals: exact in f32
    return sign ? -f : f;
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

bool dhx_st_read_f32(dhx_st_file *s, const dhx_st_entry *e, float *dst, char *err, size_t errlen) {
  bool f32 = strcmp(e->dtype, "F32") == 0, bf16 = strcmp(e->dtype, "BF16") == 0;
  if (!f32 && !bf16 && strcmp(e->dtype, "F16") != 0)
    return dhx_st_fail(s->path, err, errlen, "tensor '%s': dtype %s (expected F32, BF16 or F16)",
                       e->name, e->dtype);
  if (!dhx_st_check_size(s, e, err, errlen)) return false;
  if (f32) return dhx_st_read(s, e, dst, err, errlen);
  int64_t n = dhx_st_elems(e);
  uint16_t *half = malloc((size_t)n * 2 + 1);
  bool ok = half ? dhx_st_read(s, e, half, err, errlen)
                 : dhx_st_fail(s->path, err, errlen, "out of memory reading tensor '%s'", e->name);
  for (int64_t i = 0; ok && i < n; i++) {
    uint8_t *b = (uint8_t *)&half[i];  // little-endian in the file
    uint16_t h = (uint16_t)(b[0] | b[1] << 8);
    dst[i] = bf16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
  free(half);
  return ok;
}

// ---- digests ----------------------------------------------------------------------------------

static void hash_u64(dhx_xxh64 *h, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
  dhx_xxh64_update(h, b, 8);
}

static void hash_str(dhx_xxh64 *h, const char *s) { dhx_xxh64_update(h, s, strlen(s) + 1); }

static bool is_digest_key(const char *key) {
  return strcmp(key, "data_xxh64") == 0 || strcmp(key, "header_xxh64") == 0;
}

static int by_string(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int by_offset(const void *a, const void *b) {
  const dhx_st_entry *x = *(const dhx_st_entry *const *)a, *y = *(const dhx_st_entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

// The header's content in a canonical order, so rewriting the JSON (key order, spacing) keeps
// the digest while any change of a name, dtype, shape, offset or metadata value alters it.
// `keys` and `values` are the metadata pairs (without the digests), `e` the entries.
static uint64_t header_digest(const char **keys, const char **values, int nmeta,
                              const dhx_st_entry **e, int n) {
  const char **order = malloc(((size_t)nmeta + 1) * sizeof *order);
  dhx_xxh64 h;
  dhx_xxh64_init(&h);
  if (!order) abort();
  memcpy(order, keys, (size_t)nmeta * sizeof *order);
  qsort(order, (size_t)nmeta, sizeof *order, by_string);
  for (int i = 0; i < nmeta; i++) {
    int j = 0;
    while (keys[j] != order[i]) j++;
    hash_str(&h, keys[j]);
    hash_str(&h, values[j]);
  }
  free(order);
  qsort(e, (size_t)n, sizeof *e, by_offset);
  for (int i = 0; i < n; i++) {
    hash_str(&h, e[i]->name);
    hash_str(&h, e[i]->dtype);
    hash_u64(&h, (uint64_t)e[i]->ndim);
    for (int d = 0; d < e[i]->ndim; d++) hash_u64(&h, (uint64_t)e[i]->shape[d]);
    hash_u64(&h, (uint64_t)e[i]->begin);
    hash_u64(&h, (uint64_t)e[i]->end);
  }
  return dhx_xxh64_digest(&h);
}

static uint64_t file_header_digest(const dhx_st_file *s) {
  int nmeta = s->meta ? cJSON_GetArraySize(s->meta) : 0, k = 0;
  const char **keys = calloc((size_t)nmeta + 1, sizeof *keys);
  const char **values = calloc((size_t)nmeta + 1, sizeof *values);
  const dhx_st_entry **e = calloc((size_t)s->nentries + 1, sizeof *e);
  if (!keys || !values || !e) abort();
  for (const cJSON *j = s->meta ? ((const cJSON *)s->meta)->child : NULL; j; j = j->next) {
    if (!j->string || is_digest_key(j->string)) continue;
    keys[k] = j->string;
    values[k++] = cJSON_IsString(j) ? j->valuestring : "";  // safetensors metadata are strings
  }
  for (int i = 0; i < s->nentries; i++) e[i] = &s->entries[i];
  uint64_t d = header_digest(keys, values, k, e, s->nentries);
  free(keys);
  free(values);
  free(e);
  return d;
}

static bool parse_hex64(const char *s, uint64_t *out) {
  if (!s || strlen(s) != 16) return false;
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | (uint64_t)d;
  }
  *out = v;
  return true;
}

bool dhx_st_has_checksum(const dhx_st_file *s) {
  return dhx_st_meta(s, "data_xxh64") || dhx_st_meta(s, "header_xxh64");
}

static bool data_digest(dhx_st_file *s, uint64_t *out, char *err, size_t errlen) {
  uint8_t *buf = malloc(CHUNK_BYTES);
  if (!buf) return dhx_st_fail(s->path, err, errlen, "out of memory checking the checksum");
  dhx_xxh64 h;
  dhx_xxh64_init(&h);
  bool ok = fseeko(s->f, (off_t)s->data_start, SEEK_SET) == 0;
  for (int64_t left = s->data_bytes; ok && left > 0;) {
    size_t n = left < CHUNK_BYTES ? (size_t)left : CHUNK_BYTES;
    ok = fread(buf, 1, n, s->f) == n;
    dhx_xxh64_update(&h, buf, n);
    left -= (int64_t)n;
  }
  free(buf);
  *out = dhx_xxh64_digest(&h);
  return ok || dhx_st_fail(s->path, err, errlen, "cannot read the data: %s", strerror(errno));
}

bool dhx_st_verify(dhx_st_file *s, char *err, size_t errlen) {
  const char *data_hex = dhx_st_meta(s, "data_xxh64"), *header_hex = dhx_st_meta(s, "header_xxh64");
  if (!data_hex && !header_hex) return true;
  uint64_t want_data = 0, want_header = 0, got_data = 0;
  if (!parse_hex64(data_hex, &want_data) || !parse_hex64(header_hex, &want_header))
    return dhx_st_fail(s->path, err, errlen, "%s (a recorded digest is not 16 hex digits)",
                DHX_ST_CORRUPT);
  if (file_header_digest(s) != want_header)
    return dhx_st_fail(s->path, err, errlen, "%s", DHX_ST_CORRUPT);
  if (!data_digest(s, &got_data, err, errlen)) return false;
  if (got_data != want_data) return dhx_st_fail(s->path, err, errlen, "%s", DHX_ST_CORRUPT);
  return true;
}

// ---- writing ----------------------------------------------------------------------------------

static char *hex64(uint64_t v, char out[17]) {
  snprintf(out, 17, "%016" PRIx64, v);
  return out;
}

// The entries the tensors will have in the file: consecutive, in the given order.
static dhx_st_entry *layout(const dhx_st_tensor *t, int n) {
  dhx_st_entry *e = calloc((size_t)n + 1, sizeof *e);
  int64_t offset = 0;
  for (int i = 0; e && i < n; i++) {
    e[i] = (dhx_st_entry){.name = t[i].name, .dtype = t[i].dtype, .ndim = t[i].ndim,
                          .begin = offset, .end = offset + t[i].nbytes};
    memcpy(e[i].shape, t[i].shape, sizeof e[i].shape);
    offset += t[i].nbytes;
  }
  return e;
}

static uint64_t tensors_data_digest(const dhx_st_tensor *t, int n) {
  dhx_xxh64 h;
  dhx_xxh64_init(&h);
  for (int i = 0; i < n; i++) dhx_xxh64_update(&h, t[i].data, (size_t)t[i].nbytes);
  return dhx_xxh64_digest(&h);
}

static char *header_json(const dhx_st_pair *meta, int nmeta, const dhx_st_entry *e, int n,
                         uint64_t data_digest, uint64_t header_digest) {
  cJSON *root = cJSON_CreateObject();
  cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
  char hex[17];
  for (int i = 0; i < nmeta; i++) cJSON_AddStringToObject(m, meta[i].key, meta[i].value);
  cJSON_AddStringToObject(m, "data_xxh64", hex64(data_digest, hex));
  cJSON_AddStringToObject(m, "header_xxh64", hex64(header_digest, hex));
  for (int i = 0; i < n; i++) {
    cJSON *j = cJSON_AddObjectToObject(root, e[i].name);
    cJSON_AddStringToObject(j, "dtype", e[i].dtype);
    cJSON *shape = cJSON_AddArrayToObject(j, "shape");
    for (int d = 0; d < e[i].ndim; d++)
      cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e[i].shape[d]));
    cJSON *off = cJSON_AddArrayToObject(j, "data_offsets");
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)e[i].begin));
    cJSON_AddItemToArray(off, cJSON_CreateNumber((double)e[i].end));
  }
  char *json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  return json;
}

static char *build_header(const dhx_st_pair *meta, int nmeta, const dhx_st_tensor *t, int n) {
  dhx_st_entry *e = layout(t, n);
  const dhx_st_entry **order = calloc((size_t)n + 1, sizeof *order);
  const char **keys = calloc((size_t)nmeta + 1, sizeof *keys);
  const char **values = calloc((size_t)nmeta + 1, sizeof *values);
  char *json = NULL;
  if (e && order && keys && values) {
    for (int i = 0; i < n; i++) order[i] = &e[i];
    for (int i = 0; i < nmeta; i++) {
      keys[i] = meta[i].key;
      values[i] = meta[i].value;
    }
    uint64_t hd = header_digest(keys, values, nmeta, order, n);
    json = header_json(meta, nmeta, e, n, tensors_data_digest(t, n), hd);
  }
  free(e);
  free(order);
  free(keys);
  free(values);
  return json;
}

static bool write_all(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n; }

static bool write_body(FILE *f, const char *json, const dhx_st_tensor *t, int n) {
  size_t len = strlen(json), padded = (len + 7) / 8 * 8;
  uint8_t size[8];
  for (int i = 0; i < 8; i++) size[i] = (uint8_t)((uint64_t)padded >> (8 * i));
  bool ok = write_all(f, size, 8) && write_all(f, json, len) &&
            write_all(f, "        ", padded - len);
  for (int i = 0; i < n && ok; i++) ok = write_all(f, t[i].data, (size_t)t[i].nbytes);
  ok = fflush(f) == 0 && ok;
  return fsync(fileno(f)) == 0 && ok;
}

bool dhx_st_write(const char *path, const dhx_st_pair *meta, int nmeta, const dhx_st_tensor *t,
                  int n, char *err, size_t errlen) {
  for (int i = 0; i < nmeta; i++)
    if (is_digest_key(meta[i].key))
      return dhx_st_fail(path, err, errlen, "__metadata__.%s is written by the writer itself",
                  meta[i].key);
  char *json = build_header(meta, nmeta, t, n);
  if (!json) return dhx_st_fail(path, err, errlen, "out of memory building the header");
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
  FILE *f = fopen(tmp, "wb");
  bool ok = f != NULL && write_body(f, json, t, n);
  int saved_errno = errno;
  if (f && fclose(f) != 0 && ok) {
    ok = false;
    saved_errno = errno;
  }
  if (ok && rename(tmp, path) != 0) {
    ok = false;
    saved_errno = errno;
  }
  free(json);
  if (ok) return true;
  remove(tmp);
  return dhx_st_fail(path, err, errlen, "cannot write: %s", strerror(saved_errno));
}
