/*
 * UMS demo and benchmark workload: a counter that lives only in memory.
 *
 * A restored process that continues its count proves the memory came across; a count that restarts at 1
 * proves it did not. The marker file proves the container's rootfs changes came across too. An optional
 * block of random (incompressible) memory makes the checkpoint as large as a benchmark needs.
 *
 * Options (environment in brackets; options win):
 *   -m MiB   [COUNTER_MEM_MIB]  random memory to allocate and touch (default 0)
 *   -i ms    [COUNTER_TICK_MS]  tick interval (default 100)
 *   -f path  [COUNTER_MARKER]   marker file (default /var/lib/counter/started)
 *   -v N     [COUNTER_VERIFY_EVERY] every N ticks, check the whole random block against its seed (default 0:
 *                                   never; SIGUSR1 asks for one check at the next tick); prints
 *                                   `verify ok count=N` or `verify BAD count=N word=I`
 *   token     [COUNTER_TOKEN]    written into the marker (default: random hex)
 *
 * Output: one line per tick on stdout, `count=N t=MS_EPOCH`, flushed each time. The check reads every page,
 * so after a post-copy migration it also proves that each page arrived, and arrived intact.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* xorshift64*: fast, and its output does not compress, which is what a realistic heap looks like to CRIU. */
static uint64_t rng_state;
static uint64_t next_random(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ULL;
}

static void seed_random(void) {
  int fd = open("/dev/urandom", O_RDONLY);
  if (fd >= 0) {
    if (read(fd, &rng_state, sizeof rng_state) != (ssize_t)sizeof rng_state) rng_state = 0;
    close(fd);
  }
  /* /dev/urandom may be missing in a minimal rootfs; fall back to time and pid. */
  if (rng_state == 0) rng_state = now_ms() ^ ((uint64_t)getpid() << 32) ^ 0x9E3779B97F4A7C15ULL;
}

static long parse_long(const char *what, const char *s, long min) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno != 0 || *s == '\0' || *end != '\0' || v < min) {
    fprintf(stderr, "counter: invalid %s: %s\n", what, s);
    exit(2);
  }
  return v;
}

static int mkdir_parents(const char *file) {
  char buf[4096];
  if (strlen(file) >= sizeof buf) return -1;
  strcpy(buf, file);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return 0;
}

/* As PID 1 of a container, the kernel drops signals that have no handler: without these, `podman stop`
 * waits for its timeout and then SIGKILLs. */
static void on_stop_signal(int sig) {
  (void)sig;
  _exit(0);
}

static volatile sig_atomic_t verify_asked;
static void on_verify_signal(int sig) {
  (void)sig;
  verify_asked = 1;
}

int main(int argc, char **argv) {
  signal(SIGTERM, on_stop_signal);
  signal(SIGINT, on_stop_signal);
  signal(SIGUSR1, on_verify_signal);
  const char *env;
  long mem_mib = (env = getenv("COUNTER_MEM_MIB")) ? parse_long("COUNTER_MEM_MIB", env, 0) : 0;
  long tick_ms = (env = getenv("COUNTER_TICK_MS")) ? parse_long("COUNTER_TICK_MS", env, 1) : 100;
  const char *marker = (env = getenv("COUNTER_MARKER")) ? env : "/var/lib/counter/started";
  const char *token = getenv("COUNTER_TOKEN");
  long verify_every = (env = getenv("COUNTER_VERIFY_EVERY")) ? parse_long("COUNTER_VERIFY_EVERY", env, 0) : 0;

  int opt;
  while ((opt = getopt(argc, argv, "m:i:f:t:v:h")) != -1) {
    switch (opt) {
      case 'm': mem_mib = parse_long("-m", optarg, 0); break;
      case 'i': tick_ms = parse_long("-i", optarg, 1); break;
      case 'f': marker = optarg; break;
      case 't': token = optarg; break;
      case 'v': verify_every = parse_long("-v", optarg, 0); break;
      default:
        fprintf(stderr, "usage: counter [-m MiB] [-i tick_ms] [-f marker_path] [-t token] [-v verify_every]\n");
        return opt == 'h' ? 0 : 2;
    }
  }

  seed_random();
  char random_token[33];
  if (token == NULL || *token == '\0') {
    snprintf(random_token, sizeof random_token, "%016llx%016llx",
             (unsigned long long)next_random(), (unsigned long long)next_random());
    token = random_token;
  }

  /* Written once at start, before any checkpoint: it reaches the destination only in rootfs-diff.tar. */
  if (mkdir_parents(marker) != 0) {
    fprintf(stderr, "counter: cannot create the directory of %s: %s\n", marker, strerror(errno));
    return 1;
  }
  FILE *mf = fopen(marker, "w");
  if (mf == NULL) {
    fprintf(stderr, "counter: cannot write %s: %s\n", marker, strerror(errno));
    return 1;
  }
  uint64_t started = now_ms();
  fprintf(mf, "token=%s\nstarted=%llu\nmem_mib=%ld\n", token, (unsigned long long)started, mem_mib);
  fclose(mf);

  uint64_t *block = NULL;
  size_t words = 0;
  uint64_t block_seed = 0;
  if (mem_mib > 0) {
    words = (size_t)mem_mib * 1024u * 1024u / sizeof(uint64_t);
    block = malloc(words * sizeof(uint64_t));
    if (block == NULL) {
      fprintf(stderr, "counter: cannot allocate %ld MiB\n", mem_mib);
      return 1;
    }
    block_seed = rng_state;
    /* Writing every word makes every page resident and dirty, so CRIU has to dump all of it. */
    for (size_t i = 0; i < words; i++) block[i] = next_random();
    /* Keep the block reachable so no optimiser treats it as dead. */
    fprintf(stderr, "counter: holding %ld MiB (check %llx)\n", mem_mib, (unsigned long long)block[words / 2]);
  }

  printf("counter started token=%s mem_mib=%ld tick_ms=%ld t=%llu\n", token, mem_mib, tick_ms,
         (unsigned long long)started);
  fflush(stdout);

  struct timespec interval = {.tv_sec = tick_ms / 1000, .tv_nsec = (tick_ms % 1000) * 1000000L};
  for (unsigned long long count = 1;; count++) {
    printf("count=%llu t=%llu\n", count, (unsigned long long)now_ms());
    if (block != NULL && (verify_asked || (verify_every > 0 && count % (unsigned long long)verify_every == 0))) {
      verify_asked = 0;
      uint64_t saved = rng_state;
      rng_state = block_seed;
      size_t bad = words;
      for (size_t i = 0; i < words && bad == words; i++)
        if (block[i] != next_random()) bad = i;
      rng_state = saved;
      if (bad == words) printf("verify ok count=%llu\n", count);
      else printf("verify BAD count=%llu word=%zu\n", count, bad);
    }
    fflush(stdout);
    /* nanosleep returns early on a signal, including CRIU's restore; a short tick then is harmless. */
    nanosleep(&interval, NULL);
  }
}
