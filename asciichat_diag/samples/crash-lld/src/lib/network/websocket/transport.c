/* Sample transport code for the diag demo. */
#include <stddef.h>

struct frame { unsigned char *pixels; size_t size; };
unsigned frame_encode(const struct frame *f);

/* A static dependency linked into both the executable and the library, as ascii-chat does with BearSSL. */
__attribute__((noinline)) unsigned br_hash_update(const struct frame *f) { return frame_encode(f) + 1u; }

__attribute__((noinline)) int websocket_send(const struct frame *f) {
  return (int)(br_hash_update(f) & 0x7fff);
}
