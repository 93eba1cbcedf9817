/*
 * ums-launcher: service-level checkpoint/restore for UMS (the FastFreeze-style approach).
 *
 * The container's entrypoint (PID 1). It runs the service as its child and carries CRIU inside the image, so
 * migrating the service needs nothing from the host engine but "start a plain container of this image":
 * no CRIU on the host, no engine checkpoint API, no privileged container (CAP_CHECKPOINT_RESTORE and
 * CAP_SYS_PTRACE added, and no seccomp filter: CRIU cannot suspend one without CAP_SYS_ADMIN; see README.md).
 *
 *   ums-launcher [--restore] [--] CMD [ARGS...]
 *
 * Normal mode starts CMD; restore mode (--restore or UMS_LAUNCHER_RESTORE=1) starts nothing and waits for a
 * checkpoint archive on the control socket, CRIU-restores it and then behaves as in normal mode (it can be
 * checkpointed again, so A -> B -> C chains work). CMD is then only informational.
 *
 * Control protocol (unix stream socket $UMS_LAUNCHER_DIR/control.sock, default /run/ums-launcher; the host
 * bind-mounts that directory). One request per connection: the client sends one line `VERB\n` (at most 255
 * bytes); the launcher answers one line, `ok KEY=VALUE ...\n` or `err MESSAGE\n`, and closes the connection.
 * Requests are served one at a time.
 *   status      -> ok version=1 mode=M pid=P procs=N rss_kb=K checkpoints=C restores=R last_dump_ms=D
 *                  last_restore_ms=S last_tar_bytes=B
 *                  M is running | frozen | waiting-for-restore | restored; pid=0 when there is no service.
 *   checkpoint  -> (running or restored) CRIU-dumps the service tree with --leave-stopped, answers
 *                  `ok dump_ms=D bytes=B files=F` and then streams exactly B bytes of an uncompressed ustar
 *                  archive (flat: ums-launcher.meta first, then CRIU's image files, then ums-launcher.sums with
 *                  a hash per entry). The tree stays stopped (mode frozen) until `resume` or `discard`.
 *   resume      -> (frozen) SIGCONTs the stopped tree: the migration failed, the service runs on here.
 *   discard     -> (frozen or waiting-for-restore) the migration succeeded (or this target is not wanted):
 *                  SIGKILLs the tree, answers ok and exits 0, so the container exits.
 *   restore     -> (waiting-for-restore) after the request line the client sends the archive; the launcher
 *                  reads up to the tar's end-of-archive blocks, checks it (plain files only, meta first, sums
 *                  match, nothing missing), restores and answers `ok restore_ms=T receive_ms=R pid=P procs=N
 *                  bytes=B`. On error it stays waiting, so a second try is possible.
 * A request line must arrive within 5 s (the output relay waits meanwhile); an archive may pause up to 30 s.
 *
 * PIDs: CRIU restores every process under its old PID, so those must be free in the fresh container, where
 * this launcher is PID 1 and CRIU's own processes take the lowest free PIDs. The service tree therefore lives
 * high: before starting it, the launcher advances the PID namespace's allocation cursor to UMS_LAUNCHER_PID_BASE
 * (default 10000) by forking short-lived children (writing /proc/sys/kernel/ns_last_pid would be cheaper, but
 * Podman mounts /proc/sys read-only, and clone3's set_tid places one process without moving the cursor that
 * its children use). After a restore the cursor is advanced past the source's again, so processes the service
 * forks later stay high too.
 *
 * Descriptors: the service gets /dev/null as stdin and the write ends of two pipes as stdout/stderr; the
 * launcher copies what arrives to its own stdout/stderr (the container log). CRIU records those pipes as
 * pipe:[inode]; on restore the launcher makes new pipes and hands their write ends to CRIU with --inherit-fd,
 * so the restored service writes into the new launcher. No other descriptor reaches the service.
 *
 * Environment:
 *   UMS_LAUNCHER_DIR       control socket directory (default /run/ums-launcher)
 *   UMS_LAUNCHER_WORK      CRIU images and logs (default /var/lib/ums-launcher)
 *   UMS_LAUNCHER_CRIU_DIR  ld-linux-x86-64.so.2, lib/ and criu as shipped in the image (default /usr/local/lib/ums-criu)
 *   UMS_LAUNCHER_CRIU      a criu executable to run instead (e.g. a wrapper script)
 *   UMS_LAUNCHER_PID_BASE  first PID of the service tree (default 10000)
 *   UMS_LAUNCHER_RESTORE   1: restore mode
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROTOCOL_VERSION 1
#define META_NAME "ums-launcher.meta"
#define MAX_TREE 8192
/* Descriptors the restoring CRIU inherits the new stdout/stderr pipes on; far below CRIU's service fds. */
#define INHERIT_OUT_FD 100
#define INHERIT_ERR_FD 101

enum mode { MODE_RUNNING, MODE_FROZEN, MODE_WAITING, MODE_RESTORED };
static const char *const MODE_NAMES[] = {"running", "frozen", "waiting-for-restore", "restored"};

static struct {
  enum mode mode;
  /* After `resume`, a restored service is still reported as restored. */
  int restored;
  pid_t service;
  int out_r, err_r;
  /* CRIU names the service's stdout/stderr pipes pipe:[inode]: the restore needs these to map them. */
  unsigned long out_ino, err_ino;
  char **cmd;
  char control_dir[256], socket_path[300], work_dir[256], images_dir[300];
  const char *criu_dir, *criu_exe;
  long pid_base;
  int checkpoints, restores;
  long last_dump_ms, last_restore_ms;
  long long last_tar_bytes;
  int listen_fd, signal_fd;
} L = {.out_r = -1, .err_r = -1, .last_dump_ms = -1, .last_restore_ms = -1, .listen_fd = -1, .signal_fd = -1};

/* Formats one line, truncated to fit, ending in a newline; returns its length, or -1. */
static int format_line(char *buf, size_t size, const char *fmt, va_list ap) {
  int n = vsnprintf(buf, size - 1, fmt, ap);
  if (n < 0) return -1;
  if (n > (int)size - 2) n = (int)size - 2;
  buf[n++] = '\n';
  return n;
}

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = format_line(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  /* Unbuffered: the service's output is copied to the same descriptor and must not be reordered. */
  (void)!write(2, "ums-launcher: ", 14);
  (void)!write(2, buf, (size_t)n);
}

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads exactly len bytes; returns the number read (short only at EOF or on error, errno set). */
static size_t read_full(int fd, void *data, size_t len) {
  char *p = data;
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, p + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    if (n == 0) {
      errno = 0;
      break;
    }
    got += (size_t)n;
  }
  return got;
}

static void reply(int conn, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(int conn, const char *fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = format_line(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  /* The reply is one line: a newline inside a CRIU message would end it early. */
  for (int i = 0; i < n - 1; i++)
    if (buf[i] == '\n' || buf[i] == '\r') buf[i] = ' ';
  if (write_all(conn, buf, (size_t)n) != 0) logmsg("could not send a reply: %s", strerror(errno));
}

/* ---- the service's process tree -------------------------------------------------------------------- */

struct proc_entry {
  pid_t pid, ppid;
};

/* The service root and all its descendants, from /proc (ppid links); returns the count. */
static int service_tree(pid_t root, pid_t *out, int max) {
  static struct proc_entry all[MAX_TREE];
  int n_all = 0;
  DIR *d = opendir("/proc");
  if (d == NULL) return 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n_all < MAX_TREE) {
    if (!isdigit((unsigned char)e->d_name[0])) continue;
    char path[300], buf[512];
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) continue;
    buf[len] = '\0';
    /* comm may contain spaces and parentheses: the fields after it start after the last ')'. */
    char *close_paren = strrchr(buf, ')');
    char state;
    int ppid;
    if (close_paren == NULL || sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2) continue;
    all[n_all].pid = (pid_t)atoi(e->d_name);
    all[n_all].ppid = (pid_t)ppid;
    n_all++;
  }
  closedir(d);
  int n = 0;
  if (root <= 0 || max <= 0) return 0;
  out[n++] = root;
  for (int i = 0; i < n; i++) {
    for (int j = 0; j < n_all && n < max; j++)
      if (all[j].ppid == out[i] && all[j].pid != out[i]) out[n++] = all[j].pid;
  }
  /* A root that is gone leaves only itself in the list; report an empty tree then. */
  if (n == 1 && kill(root, 0) != 0) return 0;
  return n;
}

static long tree_rss_kb(const pid_t *pids, int n) {
  long page_kb = sysconf(_SC_PAGESIZE) / 1024;
  long total = 0;
  for (int i = 0; i < n; i++) {
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pids[i]);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0) continue;
    buf[len] = '\0';
    long size, resident;
    if (sscanf(buf, "%ld %ld", &size, &resident) == 2) total += resident * page_kb;
  }
  return total;
}

static void signal_tree(pid_t root, int sig) {
  static pid_t pids[MAX_TREE];
  int n = service_tree(root, pids, MAX_TREE);
  for (int i = 0; i < n; i++) kill(pids[i], sig);
}

/*
 * Moves the PID namespace's allocation cursor to at least `target` by forking children that exit at once
 * (see the PID notes above). vfork keeps each round to a few microseconds.
 */
static void advance_pid_cursor(long target) {
  long started = now_ms();
  /* volatile: vfork shares the stack until the child exits. */
  volatile pid_t last = 0;
  volatile int forks = 0;
  for (;;) {
    pid_t p = vfork();
    if (p == 0) _exit(0);
    if (p < 0) {
      logmsg("could not advance the PID cursor: %s", strerror(errno));
      return;
    }
    forks++;
    waitpid(p, NULL, 0);
    /* Stop at the target, or if the cursor wrapped around pid_max below it. */
    if (p >= target - 1 || (last != 0 && p < last)) break;
    last = p;
  }
  if (forks > 1) logmsg("advanced the PID cursor to %ld with %d forks in %ld ms", target, forks, now_ms() - started);
}

static long read_ns_last_pid(void) {
  char buf[32];
  int fd = open("/proc/sys/kernel/ns_last_pid", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  return atol(buf);
}

static void reset_child_signals(void) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  /* Ignored dispositions survive exec: the launcher ignores SIGPIPE, the service must not. */
  signal(SIGPIPE, SIG_DFL);
}

#ifndef CAP_SYS_PTRACE
#define CAP_SYS_PTRACE 19
#endif
#ifndef CAP_SYS_ADMIN
#define CAP_SYS_ADMIN 21
#endif
#ifndef CAP_CHECKPOINT_RESTORE
#define CAP_CHECKPOINT_RESTORE 40
#endif

/*
 * The capabilities CRIU needs are the launcher's, not the service's: the service runs without them (dropped
 * from the bounding set before exec, which for root is what exec grants). This also makes a dump restorable
 * under another engine: CRIU restores the service's capability sets exactly, and an engine that grants
 * CRIU's capabilities differently (Docker 20.10 does not know CAP_CHECKPOINT_RESTORE, so the container gets
 * CAP_SYS_ADMIN in its place) could not give back what the other one had. CAP_SYS_ADMIN is dropped only
 * where CAP_CHECKPOINT_RESTORE is missing, for it then stands in for it; elsewhere a service given it keeps it.
 */
static void drop_criu_capabilities(void) {
  int stand_in = prctl(PR_CAPBSET_READ, CAP_CHECKPOINT_RESTORE, 0, 0, 0) != 1;
  prctl(PR_CAPBSET_DROP, CAP_CHECKPOINT_RESTORE, 0, 0, 0);
  prctl(PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0);
  if (stand_in) prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0);
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

static int make_pipe(int fds[2], unsigned long *ino) {
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  struct stat st;
  if (fstat(fds[1], &st) != 0) return -1;
  *ino = (unsigned long)st.st_ino;
  return 0;
}

static void start_service(void) {
  advance_pid_cursor(L.pid_base);
  int out[2], err[2];
  if (make_pipe(out, &L.out_ino) != 0 || make_pipe(err, &L.err_ino) != 0) {
    logmsg("pipe: %s", strerror(errno));
    exit(1);
  }
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t pid = fork();
  if (pid < 0) {
    logmsg("fork: %s", strerror(errno));
    exit(1);
  }
  if (pid == 0) {
    reset_child_signals();
    /* Its own session and process group: CRIU dumps a tree whose session lies inside it, no --shell-job. */
    setsid();
    if (devnull >= 0) dup2(devnull, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    drop_criu_capabilities();
    execvp(L.cmd[0], L.cmd);
    fprintf(stderr, "ums-launcher: cannot run %s: %s\n", L.cmd[0], strerror(errno));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  if (devnull >= 0) close(devnull);
  L.out_r = out[0];
  L.err_r = err[0];
  L.service = pid;
  L.mode = MODE_RUNNING;
  logmsg("started %s as pid %d", L.cmd[0], (int)pid);
}

/* ---- CRIU ---------------------------------------------------------------------------------------- */

/*
 * Runs CRIU with `args` (NULL-terminated); out_fd/err_fd >= 0 are handed over as INHERIT_OUT_FD/ERR_FD.
 * Returns the wait status (-1 if it could not run).
 */
static int run_criu(const char *const *args, int out_fd, int err_fd) {
  const char *argv[64];
  int n = 0;
  char loader[512], libdir[512], criu[512];
  if (L.criu_exe != NULL) {
    argv[n++] = L.criu_exe;
  } else {
    /* CRIU comes with its own glibc and loader (Debian trixie's build); the loader runs it explicitly. */
    snprintf(loader, sizeof loader, "%s/ld-linux-x86-64.so.2", L.criu_dir);
    snprintf(libdir, sizeof libdir, "%s/lib", L.criu_dir);
    snprintf(criu, sizeof criu, "%s/criu", L.criu_dir);
    argv[n++] = loader;
    argv[n++] = "--library-path";
    argv[n++] = libdir;
    argv[n++] = criu;
  }
  for (int i = 0; args[i] != NULL && n < 63; i++) argv[n++] = args[i];
  argv[n] = NULL;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    reset_child_signals();
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) dup2(devnull, 0);
    /* CRIU's own output goes to the container log; its details go to the -o log file. */
    dup2(2, 1);
    if (out_fd >= 0) dup2(out_fd, INHERIT_OUT_FD);
    if (err_fd >= 0) dup2(err_fd, INHERIT_ERR_FD);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "ums-launcher: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return status;
}

/* The last few "Error" lines of a CRIU log, joined, for a one-line reply. */
static void criu_log_excerpt(const char *path, char *out, size_t out_len) {
  out[0] = '\0';
  FILE *f = fopen(path, "re");
  if (f == NULL) {
    snprintf(out, out_len, "(no log at %s)", path);
    return;
  }
  char lines[4][300];
  int count = 0;
  char line[1024];
  while (fgets(line, sizeof line, f) != NULL) {
    if (strstr(line, "Error") == NULL && strstr(line, "error") == NULL) continue;
    line[strcspn(line, "\n")] = '\0';
    line[sizeof lines[0] - 1] = '\0';
    memcpy(lines[count % 4], line, strlen(line) + 1);
    count++;
  }
  fclose(f);
  size_t used = 0;
  int first = count > 4 ? count - 4 : 0;
  for (int i = first; i < count && used + 4 < out_len; i++) {
    int w = snprintf(out + used, out_len - used, "%s%s", i > first ? " | " : "", lines[i % 4]);
    if (w < 0) break;
    used += (size_t)w;
    if (used >= out_len) used = out_len - 1;
  }
  if (count == 0) snprintf(out, out_len, "(no error lines; see %s)", path);
}

static void describe_status(int status, char *out, size_t out_len) {
  if (status == -1) snprintf(out, out_len, "could not be started");
  else if (WIFEXITED(status)) snprintf(out, out_len, "exit %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status)) snprintf(out, out_len, "killed by signal %d", WTERMSIG(status));
  else snprintf(out, out_len, "status %d", status);
}

static int remove_dir_contents(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) return errno == ENOENT ? 0 : -1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    unlink(path);
  }
  closedir(d);
  return 0;
}

static int fresh_images_dir(void) {
  mkdir(L.work_dir, 0700);
  if (mkdir(L.images_dir, 0700) != 0 && errno != EEXIST) return -1;
  return remove_dir_contents(L.images_dir);
}

/* ---- tar (ustar, flat directory of regular files) ------------------------------------------------ */

struct tar_header {
  char name[100], mode[8], uid[8], gid[8], size[12], mtime[12], chksum[8], typeflag, linkname[100], magic[6],
      version[2], uname[32], gname[32], devmajor[8], devminor[8], prefix[155], pad[12];
};
_Static_assert(sizeof(struct tar_header) == 512, "ustar header is one block");

static unsigned header_checksum(const struct tar_header *h) {
  const unsigned char *p = (const unsigned char *)h;
  unsigned sum = 0;
  for (size_t i = 0; i < 512; i++) sum += (i >= 148 && i < 156) ? ' ' : p[i];
  return sum;
}

static int name_ok(const char *name) {
  if (name[0] == '\0' || name[0] == '.') return 0;
  for (const char *p = name; *p; p++)
    if (!isalnum((unsigned char)*p) && *p != '.' && *p != '-' && *p != '_') return 0;
  return 1;
}

struct image_file {
  char name[100];
  long long size;
};

static int cmp_image_files(const void *a, const void *b) {
  const struct image_file *x = a, *y = b;
  /* The meta file goes first, so a restore can reject a foreign archive before reading the rest. */
  int xm = strcmp(x->name, META_NAME) == 0, ym = strcmp(y->name, META_NAME) == 0;
  if (xm != ym) return ym - xm;
  return strcmp(x->name, y->name);
}

/* Lists the images dir (regular files only), meta first; returns the count or -1. */
static int list_images(struct image_file *files, int max, char *err, size_t err_len) {
  DIR *d = opendir(L.images_dir);
  if (d == NULL) {
    snprintf(err, err_len, "cannot open %s: %s", L.images_dir, strerror(errno));
    return -1;
  }
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", L.images_dir, e->d_name);
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
      snprintf(err, err_len, "%s is not a regular file", path);
      closedir(d);
      return -1;
    }
    if (strlen(e->d_name) >= sizeof files[0].name || !name_ok(e->d_name) || n >= max) {
      snprintf(err, err_len, "cannot archive %s (name or count limit)", path);
      closedir(d);
      return -1;
    }
    snprintf(files[n].name, sizeof files[n].name, "%s", e->d_name);
    files[n].size = st.st_size;
    n++;
  }
  closedir(d);
  qsort(files, (size_t)n, sizeof files[0], cmp_image_files);
  return n;
}

/*
 * Integrity: CRIU images carry no checksums, and a flipped byte in pages-*.img restores silently as wrong
 * memory. Every archive therefore ends with SUMS_NAME, one `HASH NAME` line per preceding entry: a 64-bit
 * multiply-xorshift hash over 8-byte words (fast enough to compute while streaming; it detects transport
 * corruption and truncation, not tampering).
 */
#define SUMS_NAME "ums-launcher.sums"
#define SUMS_LINE_FIXED 18 /* 16 hex digits, a space and a newline */

struct sum_state {
  uint64_t h;
  unsigned char carry[8];
  size_t carried;
  uint64_t length;
};

static void sum_init(struct sum_state *s) {
  memset(s, 0, sizeof *s);
  s->h = 0x6a09e667f3bcc908ULL;
}

static void sum_word(struct sum_state *s, uint64_t w) {
  s->h ^= w * 0x9E3779B97F4A7C15ULL;
  s->h = (s->h << 27 | s->h >> 37) * 0xC2B2AE3D27D4EB4FULL;
}

static void sum_update(struct sum_state *s, const unsigned char *p, size_t n) {
  s->length += n;
  while (n > 0 && s->carried > 0 && s->carried < 8) {
    s->carry[s->carried++] = *p++;
    n--;
    if (s->carried == 8) {
      uint64_t w;
      memcpy(&w, s->carry, 8);
      sum_word(s, w);
      s->carried = 0;
    }
  }
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    sum_word(s, w);
  }
  memcpy(s->carry + s->carried, p, n);
  s->carried += n;
}

static uint64_t sum_final(struct sum_state *s) {
  uint64_t w = 0;
  memcpy(&w, s->carry, s->carried);
  sum_word(s, w ^ (s->length << 3));
  return s->h ^ (s->h >> 31);
}

static long long sums_size(const struct image_file *files, int n) {
  long long size = 0;
  for (int i = 0; i < n; i++) size += SUMS_LINE_FIXED + (long long)strlen(files[i].name);
  return size;
}

static long long tar_size(const struct image_file *files, int n) {
  long long total = 1024; /* end-of-archive: two zero blocks */
  for (int i = 0; i < n; i++) total += 512 + (files[i].size + 511) / 512 * 512;
  return total + 512 + (sums_size(files, n) + 511) / 512 * 512;
}

static void fill_header(struct tar_header *h, const char *name, long long size) {
  memset(h, 0, sizeof *h);
  memcpy(h->name, name, strnlen(name, sizeof h->name - 1));
  snprintf(h->mode, sizeof h->mode, "%07o", 0600);
  snprintf(h->uid, sizeof h->uid, "%07o", 0);
  snprintf(h->gid, sizeof h->gid, "%07o", 0);
  snprintf(h->size, sizeof h->size, "%011llo", (unsigned long long)size);
  snprintf(h->mtime, sizeof h->mtime, "%011o", 0);
  h->typeflag = '0';
  memcpy(h->magic, "ustar", 6);
  memcpy(h->version, "00", 2);
  snprintf(h->chksum, sizeof h->chksum, "%06o", header_checksum(h));
  h->chksum[7] = ' ';
}

static int write_entry(int fd, const char *name, const char *data, long long size) {
  struct tar_header h;
  fill_header(&h, name, size);
  static const char zero[512];
  if (write_all(fd, &h, sizeof h) != 0 || write_all(fd, data, (size_t)size) != 0) return -1;
  size_t pad = (size_t)((512 - size % 512) % 512);
  return pad > 0 ? write_all(fd, zero, pad) : 0;
}

/* Streams the images dir as ustar to fd, then the sums; returns 0, or -1 with err set. */
static int write_tar(int fd, const struct image_file *files, int n, char *err, size_t err_len) {
  static char buf[1 << 16];
  long long sums_len = sums_size(files, n);
  char *sums = malloc((size_t)sums_len + 1);
  if (sums == NULL) {
    snprintf(err, err_len, "out of memory");
    return -1;
  }
  size_t sums_used = 0;
  for (int i = 0; i < n; i++) {
    struct tar_header h;
    fill_header(&h, files[i].name, files[i].size);
    if (write_all(fd, &h, sizeof h) != 0) goto send_failed;
    char path[600];
    snprintf(path, sizeof path, "%s/%.99s", L.images_dir, files[i].name);
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) {
      snprintf(err, err_len, "cannot read %s: %s", path, strerror(errno));
      free(sums);
      return -1;
    }
    struct sum_state s;
    sum_init(&s);
    long long left = files[i].size;
    while (left > 0) {
      size_t want = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
      size_t got = read_full(in, buf, want);
      if (got != want) {
        snprintf(err, err_len, "%s changed while it was archived", path);
        close(in);
        free(sums);
        return -1;
      }
      sum_update(&s, (const unsigned char *)buf, got);
      if (write_all(fd, buf, got) != 0) {
        close(in);
        goto send_failed;
      }
      left -= (long long)got;
    }
    close(in);
    size_t pad = (size_t)((512 - files[i].size % 512) % 512);
    memset(buf, 0, pad);
    if (pad > 0 && write_all(fd, buf, pad) != 0) goto send_failed;
    sums_used += (size_t)snprintf(sums + sums_used, (size_t)sums_len + 1 - sums_used, "%016llx %s\n", (unsigned long long)sum_final(&s),
                                  files[i].name);
  }
  if (write_entry(fd, SUMS_NAME, sums, sums_len) != 0) goto send_failed;
  free(sums);
  memset(buf, 0, 1024);
  if (write_all(fd, buf, 1024) != 0) goto send_failed_freed;
  return 0;
send_failed:
  free(sums);
send_failed_freed:
  snprintf(err, err_len, "sending the archive failed: %s", strerror(errno));
  return -1;
}

static long long parse_octal(const char *field, size_t len, int *ok) {
  long long v = 0;
  size_t i = 0;
  while (i < len && field[i] == ' ') i++;
  size_t digits = 0;
  for (; i < len && field[i] >= '0' && field[i] <= '7'; i++, digits++) v = v * 8 + (field[i] - '0');
  for (; i < len; i++)
    if (field[i] != '\0' && field[i] != ' ') *ok = 0;
  if (digits == 0) *ok = 0;
  return v;
}

/*
 * Reads a ustar archive from fd into the images dir, up to its end-of-archive blocks. Only flat regular
 * files with plain names are accepted, the first must be the meta file and the last the sums, which must
 * match what arrived. Returns 0, or -1 with err set.
 */
static int read_tar(int fd, long long *total, char *err, size_t err_len) {
  static char buf[1 << 16];
  /* "HASH NAME\n" of every entry received, to compare with the sender's sums. */
  static char computed[1 << 16];
  size_t computed_used = 0;
  char *sums = NULL;
  long long offset = 0;
  int entries = 0;
  for (;;) {
    struct tar_header h;
    size_t got = read_full(fd, &h, sizeof h);
    if (got != sizeof h) {
      snprintf(err, err_len,
               "the archive ended after %lld bytes, before its end-of-archive blocks (truncated? %s)", offset + (long long)got,
               errno ? strerror(errno) : "EOF");
      goto fail;
    }
    static const char zero[512];
    if (memcmp(&h, zero, 512) == 0) {
      /* The second zero block is part of a well-formed end; tolerate its absence. */
      (void)read_full(fd, &h, sizeof h);
      offset += 1024;
      break;
    }
    if (sums != NULL) {
      snprintf(err, err_len, "entry %d follows %s, which must be the last: not a ums-launcher checkpoint", entries + 1, SUMS_NAME);
      goto fail;
    }
    int ok = 1;
    unsigned stored = (unsigned)parse_octal(h.chksum, sizeof h.chksum, &ok);
    if (!ok || stored != header_checksum(&h)) {
      snprintf(err, err_len, "entry %d at byte %lld has a bad header checksum: not a tar archive, or corrupt", entries + 1, offset);
      goto fail;
    }
    char name[101];
    memcpy(name, h.name, 100);
    name[100] = '\0';
    if ((h.typeflag != '0' && h.typeflag != '\0') || h.prefix[0] != '\0' || !name_ok(name)) {
      snprintf(err, err_len, "entry %d (%.100s) is not a plain file of a ums-launcher checkpoint", entries + 1, name);
      goto fail;
    }
    if (entries == 0 && strcmp(name, META_NAME) != 0) {
      snprintf(err, err_len, "the archive does not start with %s: not a ums-launcher checkpoint (first entry %s)", META_NAME, name);
      goto fail;
    }
    long long size = parse_octal(h.size, sizeof h.size, &ok);
    if (!ok || size < 0) {
      snprintf(err, err_len, "entry %s has a bad size field", name);
      goto fail;
    }
    offset += 512;
    int is_sums = strcmp(name, SUMS_NAME) == 0;
    if (is_sums && size > (long long)sizeof computed) {
      snprintf(err, err_len, "%s is implausibly large (%lld bytes)", SUMS_NAME, size);
      goto fail;
    }
    int out = -1;
    char path[600];
    snprintf(path, sizeof path, "%s/%s", L.images_dir, name);
    if (is_sums) {
      sums = calloc(1, (size_t)size + 1);
      if (sums == NULL) {
        snprintf(err, err_len, "out of memory");
        goto fail;
      }
    } else {
      out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
      if (out < 0) {
        snprintf(err, err_len, "cannot create %s: %s", path, strerror(errno));
        goto fail;
      }
    }
    struct sum_state s;
    sum_init(&s);
    long long left = (size + 511) / 512 * 512;
    long long data_left = size;
    while (left > 0) {
      size_t want = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
      size_t n = read_full(fd, buf, want);
      if (n != want) {
        if (out >= 0) close(out);
        snprintf(err, err_len, "the archive ended inside %s after %lld bytes (truncated? %s)", name, offset + (long long)n,
                 errno ? strerror(errno) : "EOF");
        goto fail;
      }
      size_t data = data_left < (long long)n ? (size_t)data_left : n;
      if (is_sums) {
        memcpy(sums + (size - data_left), buf, data);
      } else if (data > 0) {
        sum_update(&s, (const unsigned char *)buf, data);
        if (write_all(out, buf, data) != 0) {
          snprintf(err, err_len, "cannot write %s: %s", path, strerror(errno));
          close(out);
          goto fail;
        }
      }
      data_left -= (long long)data;
      left -= (long long)n;
      offset += (long long)n;
    }
    if (out >= 0) close(out);
    if (!is_sums) {
      int w = snprintf(computed + computed_used, sizeof computed - computed_used, "%016llx %s\n", (unsigned long long)sum_final(&s), name);
      if (w < 0 || (size_t)w >= sizeof computed - computed_used) {
        snprintf(err, err_len, "too many entries");
        goto fail;
      }
      computed_used += (size_t)w;
    }
    entries++;
  }
  if (entries == 0) {
    snprintf(err, err_len, "the archive is empty: not a ums-launcher checkpoint");
    goto fail;
  }
  if (sums == NULL) {
    snprintf(err, err_len, "the archive has no %s at its end: incomplete, or not a ums-launcher checkpoint", SUMS_NAME);
    goto fail;
  }
  if (strlen(sums) != computed_used || memcmp(sums, computed, computed_used) != 0) {
    /* Name the first file that differs: it tells transport corruption from a mixed-up archive. */
    const char *a = sums, *b = computed;
    while (*a && *a == *b) a++, b++;
    while (a > sums && a[-1] != '\n') a--;
    const char *end = strchr(a, '\n');
    int len = end != NULL ? (int)(end - a) : (int)strlen(a);
    snprintf(err, err_len, "checksum mismatch (sender's line: '%.*s'): the archive was corrupted in transit", len > 200 ? 200 : len, a);
    goto fail;
  }
  free(sums);
  *total = offset;
  return 0;
fail:
  free(sums);
  return -1;
}

/* ---- meta file ------------------------------------------------------------------------------------- */

struct meta {
  long pid, last_pid, files;
  unsigned long out_ino, err_ino;
  long long image_bytes;
  /* The permission bits of the container's "/" at the dump (0: not recorded). */
  unsigned int root_mode;
};

/* The permission bits of "/", which CRIU checks on restore (0 if it cannot be read). */
static unsigned int root_mode(void) {
  struct stat st;
  return stat("/", &st) == 0 ? (unsigned int)(st.st_mode & 07777) : 0;
}

static int write_meta(char *err, size_t err_len) {
  struct image_file files[1024];
  int n = list_images(files, 1024, err, err_len);
  if (n < 0) return -1;
  long long bytes = 0;
  for (int i = 0; i < n; i++) bytes += files[i].size;
  char path[600];
  snprintf(path, sizeof path, "%s/%s", L.images_dir, META_NAME);
  FILE *f = fopen(path, "we");
  if (f == NULL) {
    snprintf(err, err_len, "cannot write %s: %s", path, strerror(errno));
    return -1;
  }
  /* last_pid: where the destination must move its PID cursor so new processes do not take old PIDs. */
  fprintf(f, "ums-launcher-checkpoint=%d\npid=%d\nlast_pid=%ld\nstdout_pipe=%lu\nstderr_pipe=%lu\nfiles=%d\nimage_bytes=%lld\nroot_mode=%o\ncmd=%s\n",
          PROTOCOL_VERSION, (int)L.service, read_ns_last_pid(), L.out_ino, L.err_ino, n, bytes, root_mode(), L.cmd[0] != NULL ? L.cmd[0] : "");
  fclose(f);
  return 0;
}

static int read_meta(struct meta *m, char *err, size_t err_len) {
  char path[600];
  snprintf(path, sizeof path, "%s/%s", L.images_dir, META_NAME);
  FILE *f = fopen(path, "re");
  if (f == NULL) {
    snprintf(err, err_len, "cannot read %s: %s", path, strerror(errno));
    return -1;
  }
  memset(m, 0, sizeof *m);
  m->files = -1;
  int version = 0;
  char line[512];
  while (fgets(line, sizeof line, f) != NULL) {
    sscanf(line, "ums-launcher-checkpoint=%d", &version);
    sscanf(line, "pid=%ld", &m->pid);
    sscanf(line, "last_pid=%ld", &m->last_pid);
    sscanf(line, "stdout_pipe=%lu", &m->out_ino);
    sscanf(line, "stderr_pipe=%lu", &m->err_ino);
    sscanf(line, "files=%ld", &m->files);
    sscanf(line, "image_bytes=%lld", &m->image_bytes);
    sscanf(line, "root_mode=%o", &m->root_mode);
  }
  fclose(f);
  if (version != PROTOCOL_VERSION || m->pid <= 1 || m->out_ino == 0 || m->err_ino == 0 || m->files < 1) {
    snprintf(err, err_len, "%s is not a version %d ums-launcher checkpoint description", META_NAME, PROTOCOL_VERSION);
    return -1;
  }
  /* Completeness: the meta lists how many files (itself excluded) and bytes the dump had. */
  struct image_file files[1024];
  int n = list_images(files, 1024, err, err_len);
  if (n < 0) return -1;
  long long bytes = 0;
  for (int i = 0; i < n; i++)
    if (strcmp(files[i].name, META_NAME) != 0) bytes += files[i].size;
  if (n - 1 != m->files || bytes != m->image_bytes) {
    snprintf(err, err_len, "the archive holds %d image files (%lld bytes) but the checkpoint had %ld (%lld bytes): incomplete", n - 1,
             bytes, m->files, m->image_bytes);
    return -1;
  }
  return 0;
}

/* ---- operations ------------------------------------------------------------------------------------ */

static void op_status(int conn) {
  static pid_t pids[MAX_TREE];
  int n = L.service > 0 ? service_tree(L.service, pids, MAX_TREE) : 0;
  reply(conn, "ok version=%d mode=%s pid=%d procs=%d rss_kb=%ld checkpoints=%d restores=%d last_dump_ms=%ld last_restore_ms=%ld last_tar_bytes=%lld",
        PROTOCOL_VERSION, MODE_NAMES[L.mode], n > 0 ? (int)L.service : 0, n, tree_rss_kb(pids, n), L.checkpoints, L.restores,
        L.last_dump_ms, L.last_restore_ms, L.last_tar_bytes);
}

static void op_checkpoint(int conn) {
  char err[1024];
  if (L.mode != MODE_RUNNING && L.mode != MODE_RESTORED) {
    reply(conn, "err checkpoint: the service is %s, not running: %s", MODE_NAMES[L.mode],
          L.mode == MODE_FROZEN ? "it is already checkpointed; resume or discard it first" : "restore it first");
    return;
  }
  if (fresh_images_dir() != 0) {
    reply(conn, "err checkpoint: cannot prepare %s: %s", L.images_dir, strerror(errno));
    return;
  }
  char log_path[600], pid_arg[16];
  snprintf(log_path, sizeof log_path, "%s/dump.log", L.work_dir);
  snprintf(pid_arg, sizeof pid_arg, "%d", (int)L.service);
  /*
   * --unprivileged: only CAP_CHECKPOINT_RESTORE and CAP_SYS_PTRACE, no CAP_SYS_ADMIN.
   * --leave-stopped: the tree stays (stopped) so `resume` is a SIGCONT, with nothing to restore.
   * --manage-cgroups=ignore: the container's cgroup belongs to the engine, the destination has its own.
   */
  const char *args[] = {"dump", "--unprivileged", "-t", pid_arg, "-D", L.images_dir, "-o", log_path, "-v2", "--leave-stopped",
                        "--manage-cgroups=ignore", NULL};
  long started = now_ms();
  int status = run_criu(args, -1, -1);
  long dump_ms = now_ms() - started;
  if (status != 0) {
    char what[64], excerpt[700];
    describe_status(status, what, sizeof what);
    criu_log_excerpt(log_path, excerpt, sizeof excerpt);
    /* CRIU resumes the tree when a dump fails; make sure nothing is left stopped. */
    signal_tree(L.service, SIGCONT);
    logmsg("checkpoint failed: criu dump %s: %s", what, excerpt);
    reply(conn, "err checkpoint: criu dump %s (the service keeps running; log %s): %s", what, log_path, excerpt);
    return;
  }
  L.mode = MODE_FROZEN;
  L.checkpoints++;
  L.last_dump_ms = dump_ms;
  if (write_meta(err, sizeof err) != 0) {
    reply(conn, "err checkpoint: %s (the service is stopped; send resume)", err);
    return;
  }
  struct image_file files[1024];
  int n = list_images(files, 1024, err, sizeof err);
  if (n < 0) {
    reply(conn, "err checkpoint: %s (the service is stopped; send resume)", err);
    return;
  }
  long long bytes = tar_size(files, n);
  L.last_tar_bytes = bytes;
  logmsg("checkpointed pid %d in %ld ms: %d files, %lld archive bytes", (int)L.service, dump_ms, n, bytes);
  reply(conn, "ok dump_ms=%ld bytes=%lld files=%d", dump_ms, bytes, n);
  if (write_tar(conn, files, n, err, sizeof err) != 0) logmsg("checkpoint stream: %s (the service stays stopped)", err);
}

static void op_resume(int conn) {
  if (L.mode != MODE_FROZEN) {
    reply(conn, "err resume: the service is %s, not checkpointed (frozen): nothing to resume", MODE_NAMES[L.mode]);
    return;
  }
  static pid_t pids[MAX_TREE];
  int n = service_tree(L.service, pids, MAX_TREE);
  if (n == 0) {
    reply(conn, "err resume: the stopped service (pid %d) is gone", (int)L.service);
    return;
  }
  for (int i = 0; i < n; i++) kill(pids[i], SIGCONT);
  L.mode = L.restored ? MODE_RESTORED : MODE_RUNNING;
  logmsg("resumed pid %d (%d processes)", (int)L.service, n);
  reply(conn, "ok mode=%s pid=%d procs=%d", MODE_NAMES[L.mode], (int)L.service, n);
}

static void drain_pipes(void);

static void op_discard(int conn) {
  if (L.mode != MODE_FROZEN && L.mode != MODE_WAITING) {
    reply(conn, "err discard: the service is %s: only a checkpointed (frozen) service or a restore target can be discarded; "
                "checkpoint first, or stop the container",
          MODE_NAMES[L.mode]);
    return;
  }
  if (L.service > 0) {
    signal_tree(L.service, SIGKILL);
    kill(-L.service, SIGKILL);
  }
  logmsg("discarded (%s); exiting", MODE_NAMES[L.mode]);
  reply(conn, "ok discarded");
  close(conn);
  unlink(L.socket_path);
  drain_pipes();
  exit(0);
}

/* Reads and drops what the client still sends, so it sees our reply instead of EPIPE. */
static void set_receive_timeout(int conn, int seconds);

static void drain_input(int conn) {
  set_receive_timeout(conn, 2);
  static char buf[1 << 16];
  while (read(conn, buf, sizeof buf) > 0) {
  }
}

static void op_restore(int conn) {
  char err[1024];
  if (L.mode != MODE_WAITING) {
    drain_input(conn);
    reply(conn, "err restore: this launcher is %s; only one started in restore mode (--restore) accepts an archive", MODE_NAMES[L.mode]);
    return;
  }
  if (fresh_images_dir() != 0) {
    drain_input(conn);
    reply(conn, "err restore: cannot prepare %s: %s", L.images_dir, strerror(errno));
    return;
  }
  /* A stalled sender is given up on after this long without a byte (the service is not running yet). */
  set_receive_timeout(conn, 30);
  long started = now_ms();
  long long archive_bytes = 0;
  struct meta m;
  if (read_tar(conn, &archive_bytes, err, sizeof err) != 0 || read_meta(&m, err, sizeof err) != 0) {
    drain_input(conn);
    remove_dir_contents(L.images_dir);
    logmsg("restore refused: %s", err);
    reply(conn, "err restore: %s; still waiting for a valid archive", err);
    return;
  }
  long received_ms = now_ms() - started;
  int out[2], errp[2];
  unsigned long out_ino, err_ino;
  if (make_pipe(out, &out_ino) != 0 || make_pipe(errp, &err_ino) != 0) {
    reply(conn, "err restore: pipe: %s", strerror(errno));
    return;
  }
  char log_path[600], inherit_out[64], inherit_err[64];
  snprintf(log_path, sizeof log_path, "%s/restore.log", L.work_dir);
  snprintf(inherit_out, sizeof inherit_out, "fd[%d]:pipe:[%lu]", INHERIT_OUT_FD, m.out_ino);
  snprintf(inherit_err, sizeof inherit_err, "fd[%d]:pipe:[%lu]", INHERIT_ERR_FD, m.err_ino);
  /*
   * Engines make the container's "/" with modes of their own (Podman 0555 here, Docker 0755), and CRIU
   * refuses a root whose mode is not the dumped one ("File . has bad mode"): give it the source's.
   */
  unsigned int here = root_mode();
  if (m.root_mode != 0 && here != 0 && here != m.root_mode) {
    if (chmod("/", m.root_mode) != 0) logmsg("restore: cannot give / the source's mode %o (it has %o): %s", m.root_mode, here, strerror(errno));
    else logmsg("restore: / had mode %o, the source's had %o: set to the source's", here, m.root_mode);
  }
  /* --restore-detached: CRIU exits once the tree runs; the tree's root is then reparented to us (PID 1). */
  const char *args[] = {"restore", "--unprivileged", "-D", L.images_dir, "-o", log_path, "-v2", "--restore-detached",
                        "--manage-cgroups=ignore", "--inherit-fd", inherit_out, "--inherit-fd", inherit_err, NULL};
  long restore_started = now_ms();
  int status = run_criu(args, out[1], errp[1]);
  long restore_ms = now_ms() - restore_started;
  close(out[1]);
  close(errp[1]);
  if (status != 0 || kill((pid_t)m.pid, 0) != 0) {
    char what[64], excerpt[700];
    describe_status(status, what, sizeof what);
    criu_log_excerpt(log_path, excerpt, sizeof excerpt);
    close(out[0]);
    close(errp[0]);
    logmsg("restore failed: criu restore %s: %s", what, excerpt);
    reply(conn, "err restore: criu restore %s (log %s): %s; still waiting for an archive", what, log_path, excerpt);
    return;
  }
  L.service = (pid_t)m.pid;
  L.out_r = out[0];
  L.err_r = errp[0];
  L.out_ino = out_ino;
  L.err_ino = err_ino;
  L.mode = MODE_RESTORED;
  L.restored = 1;
  L.restores++;
  L.last_restore_ms = restore_ms;
  L.last_tar_bytes = archive_bytes;
  static pid_t pids[MAX_TREE];
  int n = service_tree(L.service, pids, MAX_TREE);
  logmsg("restored pid %d (%d processes) in %ld ms after receiving %lld bytes in %ld ms", (int)L.service, n, restore_ms, archive_bytes,
         received_ms);
  reply(conn, "ok restore_ms=%ld receive_ms=%ld pid=%d procs=%d bytes=%lld", restore_ms, received_ms, (int)L.service, n, archive_bytes);
  /* After replying, so it is not part of the downtime: new processes of the service must stay high too. */
  long highest = m.last_pid;
  for (int i = 0; i < n; i++)
    if (pids[i] > highest) highest = pids[i];
  if (highest < L.pid_base) highest = L.pid_base;
  advance_pid_cursor(highest + 1);
}

static void set_receive_timeout(int conn, int seconds) {
  struct timeval tv = {.tv_sec = seconds, .tv_usec = 0};
  setsockopt(conn, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

static void handle_connection(int conn) {
  /* Short: while a request is read, nothing copies the service's output, and a full pipe blocks the service. */
  set_receive_timeout(conn, 5);
  struct timeval stv = {.tv_sec = 120, .tv_usec = 0};
  setsockopt(conn, SOL_SOCKET, SO_SNDTIMEO, &stv, sizeof stv);
  /* Byte by byte, so nothing after the newline (the restore archive) is consumed here. */
  char line[256];
  size_t len = 0;
  for (;;) {
    char c;
    ssize_t n = read(conn, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    if (c == '\n') break;
    if (len + 1 >= sizeof line) {
      reply(conn, "err request line longer than %zu bytes", sizeof line - 1);
      return;
    }
    line[len++] = c;
  }
  line[len] = '\0';
  if (len > 0 && line[len - 1] == '\r') line[--len] = '\0';
  if (strcmp(line, "status") == 0) op_status(conn);
  else if (strcmp(line, "checkpoint") == 0) op_checkpoint(conn);
  else if (strcmp(line, "resume") == 0) op_resume(conn);
  else if (strcmp(line, "discard") == 0) op_discard(conn);
  else if (strcmp(line, "restore") == 0) op_restore(conn);
  else reply(conn, "err unknown request '%.60s': expected status, checkpoint, resume, discard or restore", line);
}

/* ---- main loop ------------------------------------------------------------------------------------- */

static int relay(int *fd, int to) {
  static char buf[1 << 16];
  ssize_t n = read(*fd, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return 0;
  if (n <= 0) {
    close(*fd);
    *fd = -1;
    return -1;
  }
  (void)write_all(to, buf, (size_t)n);
  return 0;
}

/* Copies what is left in the service's pipes, without waiting for writers that may never close them. */
static void drain_pipes(void) {
  int *fds[2] = {&L.out_r, &L.err_r};
  for (int i = 0; i < 2; i++) {
    if (*fds[i] < 0) continue;
    fcntl(*fds[i], F_SETFL, O_NONBLOCK);
    while (*fds[i] >= 0) {
      struct pollfd p = {.fd = *fds[i], .events = POLLIN};
      if (poll(&p, 1, 200) <= 0) break;
      relay(fds[i], i == 0 ? 1 : 2);
    }
  }
}

static void reap(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    if (pid != L.service) continue; /* orphans reparented to PID 1 */
    char what[64];
    describe_status(status, what, sizeof what);
    logmsg("service pid %d ended (%s); exiting", (int)pid, what);
    /* The rest of its group must not outlive it: nothing could reach them any more. */
    kill(-pid, SIGKILL);
    drain_pipes();
    unlink(L.socket_path);
    exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0));
  }
}

static void on_stop_signal(int sig) {
  logmsg("signal %d: stopping (%s)", sig, MODE_NAMES[L.mode]);
  if (L.service <= 0) {
    unlink(L.socket_path);
    exit(0);
  }
  if (L.mode == MODE_FROZEN) {
    /* A stopped tree cannot act on SIGTERM. */
    signal_tree(L.service, SIGKILL);
    kill(-L.service, SIGKILL);
  } else {
    signal_tree(L.service, sig);
  }
}

static int listen_control(void) {
  mkdir(L.control_dir, 0700);
  unlink(L.socket_path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(L.socket_path) >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy(addr.sun_path, L.socket_path);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0) return -1;
  chmod(L.socket_path, 0600);
  if (listen(fd, 8) != 0) return -1;
  return fd;
}

static const char *env_or(const char *name, const char *fallback) {
  const char *v = getenv(name);
  return v != NULL && *v != '\0' ? v : fallback;
}

int main(int argc, char **argv) {
  int restore = strcmp(env_or("UMS_LAUNCHER_RESTORE", "0"), "1") == 0;
  int i = 1;
  for (; i < argc; i++) {
    if (strcmp(argv[i], "--restore") == 0) restore = 1;
    else if (strcmp(argv[i], "--") == 0) {
      i++;
      break;
    } else if (argv[i][0] == '-') {
      fprintf(stderr, "usage: ums-launcher [--restore] [--] CMD [ARGS...]\n");
      return 2;
    } else break;
  }
  L.cmd = argv + i;
  if (!restore && L.cmd[0] == NULL) {
    fprintf(stderr, "usage: ums-launcher [--restore] [--] CMD [ARGS...]\n");
    return 2;
  }
  snprintf(L.control_dir, sizeof L.control_dir, "%s", env_or("UMS_LAUNCHER_DIR", "/run/ums-launcher"));
  snprintf(L.socket_path, sizeof L.socket_path, "%s/control.sock", L.control_dir);
  snprintf(L.work_dir, sizeof L.work_dir, "%s", env_or("UMS_LAUNCHER_WORK", "/var/lib/ums-launcher"));
  snprintf(L.images_dir, sizeof L.images_dir, "%s/images", L.work_dir);
  L.criu_dir = env_or("UMS_LAUNCHER_CRIU_DIR", "/usr/local/lib/ums-criu");
  L.criu_exe = getenv("UMS_LAUNCHER_CRIU");
  if (L.criu_exe != NULL && *L.criu_exe == '\0') L.criu_exe = NULL;
  L.pid_base = atol(env_or("UMS_LAUNCHER_PID_BASE", "10000"));
  if (L.pid_base < 2) L.pid_base = 2;

  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGCHLD);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  L.signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  if (L.signal_fd < 0) {
    logmsg("signalfd: %s", strerror(errno));
    return 1;
  }
  mkdir(L.work_dir, 0700);
  L.listen_fd = listen_control();
  if (L.listen_fd < 0) {
    logmsg("cannot listen on %s: %s", L.socket_path, strerror(errno));
    return 1;
  }
  if (restore) {
    L.mode = MODE_WAITING;
    logmsg("waiting for a checkpoint archive on %s", L.socket_path);
  } else {
    start_service();
  }
  logmsg("control socket %s (protocol %d)", L.socket_path, PROTOCOL_VERSION);

  for (;;) {
    struct pollfd fds[4] = {
        {.fd = L.signal_fd, .events = POLLIN},
        {.fd = L.listen_fd, .events = POLLIN},
        {.fd = L.out_r, .events = POLLIN},
        {.fd = L.err_r, .events = POLLIN},
    };
    if (poll(fds, 4, -1) < 0) {
      if (errno == EINTR) continue;
      logmsg("poll: %s", strerror(errno));
      return 1;
    }
    /* Output first, so what the service printed before an event reaches the log before our lines. */
    if (fds[2].revents) relay(&L.out_r, 1);
    if (fds[3].revents) relay(&L.err_r, 2);
    if (fds[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(L.signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGCHLD) reap();
        else on_stop_signal((int)si.ssi_signo);
      }
      /* A SIGCHLD merged into one already read still leaves a zombie: reap in any case. */
      reap();
    }
    if (fds[1].revents & POLLIN) {
      int conn = accept4(L.listen_fd, NULL, NULL, SOCK_CLOEXEC);
      if (conn >= 0) {
        handle_connection(conn);
        close(conn);
      }
    }
  }
}
