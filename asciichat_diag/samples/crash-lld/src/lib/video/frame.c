/* Sample libasciichat.so code for the diag demo: a crash three calls deep in the library. */
#include <stddef.h>

struct frame { unsigned char *pixels; size_t size; };

static inline __attribute__((always_inline)) unsigned checksum_row(const unsigned char *row, size_t n) {
  unsigned sum = 0;
  for (size_t i = 0; i < n; i++) sum = sum * 31u + row[i]; /* reads through a NULL row */
  return sum;
}

__attribute__((noinline)) unsigned frame_encode(const struct frame *f) {
  return checksum_row(f->pixels, f->size) ^ 0x5a5a5a5au;
}
