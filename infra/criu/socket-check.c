/*
 * A process that holds what a network service holds, for infra/criu/socket-check.sh to dump and restore
 * with CRIU: listening TCP sockets (IPv4 and, where the host has it, IPv6), a bound UDP socket, and an
 * established TCP connection whose both ends are in this process. The client end sends one byte every
 * 20 ms and the server end echoes it; every new connection to the listening IPv4 port is answered with
 * "ok <echoes>\n" and closed. After a restore, a count above the one read before the dump proves that the
 * listening socket and the established connection both came back working.
 *
 * Writes its IPv4 port to argv[1] (a file) once ready. Runs until killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int listener4(int type, unsigned short *port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, type, 0), one = 1;
  /* As every real server does: the checker's own connections leave TIME_WAIT sockets on this port, and a
   * restored listener must bind again beside them. */
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("socket");
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind ipv4");
  if (type == SOCK_STREAM && listen(fd, 16) < 0) die("listen ipv4");
  if (getsockname(fd, (struct sockaddr *)&a, &len) < 0) die("getsockname");
  if (port) *port = ntohs(a.sin_port);
  return fd;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s PORT_FILE\n", argv[0]);
    return 2;
  }
  unsigned short port = 0;
  int lst = listener4(SOCK_STREAM, &port);
  int udp = listener4(SOCK_DGRAM, NULL);
  (void)udp;
  int lst6 = socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  if (lst6 >= 0 && (bind(lst6, (struct sockaddr *)&a6, sizeof a6) < 0 || listen(lst6, 16) < 0)) {
    close(lst6); /* no IPv6 loopback on this host: IPv4 alone is still a meaningful check */
    lst6 = -1;
  }

  struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int client = socket(AF_INET, SOCK_STREAM, 0);
  if (client < 0 || connect(client, (struct sockaddr *)&to, sizeof to) < 0) die("connect");
  int server = accept(lst, NULL, NULL);
  if (server < 0) die("accept");

  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
  FILE *f = fopen(tmp, "w");
  if (!f || fprintf(f, "%u\n", port) < 0 || fclose(f) != 0 || rename(tmp, argv[1]) != 0) die("port file");

  unsigned long echoes = 0;
  for (;;) {
    if (write(client, "x", 1) != 1) die("client write");
    struct pollfd p[2] = {{.fd = server, .events = POLLIN}, {.fd = lst, .events = POLLIN}};
    if (poll(p, 2, 20) < 0 && errno != EINTR) die("poll");
    if (p[0].revents & POLLIN) {
      ssize_t n = read(server, tmp, sizeof tmp);
      if (n <= 0 || write(server, tmp, (size_t)n) != n) die("server echo");
      n = read(client, tmp, sizeof tmp);
      if (n <= 0) die("client read");
      echoes++;
    }
    if (p[1].revents & POLLIN) {
      int c = accept(lst, NULL, NULL);
      if (c >= 0) {
        int len = snprintf(tmp, sizeof tmp, "ok %lu\n", echoes);
        if (write(c, tmp, (size_t)len) < 0) { /* the checker went away; nothing to do */ }
        close(c);
      }
    }
  }
}
