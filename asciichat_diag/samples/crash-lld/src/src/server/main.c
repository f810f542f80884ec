/* Sample executable for the diag demo: prints an ascii-chat style crash block and its maps. */
#include <execinfo.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

struct frame { unsigned char *pixels; size_t size; };
int websocket_send(const struct frame *f);
unsigned frame_encode(const struct frame *f);

static void crash_handler(int sig) {
  void *frames[32];
  int n = backtrace(frames, 32);
  printf("[14:03:27.481920] [ERROR] [tid:140234887431872] lib/platform/posix/system.c:764@crash_handler(): "
         "*** CRASH DETECTED ***\nSignal: %d (SIGSEGV)\n", sig);
  printf("[14:03:27.498133] [WARN ] [tid:140234887431872] lib/platform/system.c:580@platform_print_backtrace_symbols(): "
         "Backtrace\n");
  for (int i = 0; i < n; i++) printf("  [%d] %p\n", i, frames[i]);
  FILE *maps = fopen("/proc/self/maps", "r");
  char line[512];
  while (maps && fgets(line, sizeof line, maps)) fputs(line, stdout);
  fflush(stdout);
  _exit(128 + sig);
}

/* The executable's own copy of the static dependency (see transport.c); it interposes the library's. */
__attribute__((noinline)) unsigned br_hash_update(const struct frame *f) { return frame_encode(f) + 2u; }

__attribute__((noinline)) int client_send_thread(size_t size) {
  struct frame f = {NULL, size};
  return websocket_send(&f);
}

__attribute__((noinline)) int server_main(int argc) { return client_send_thread((size_t)argc * 64); }

int main(int argc, char **argv) {
  (void)argv;
  signal(SIGSEGV, crash_handler);
  return server_main(argc);
}
