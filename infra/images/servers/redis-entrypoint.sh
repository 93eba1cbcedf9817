#!/bin/sh
# Entrypoint of localhost/ums/redis: Debian's redis-server as root (CRIU cannot dump a non-root task on a
# host whose root lacks CAP_SYS_RESOURCE), in the foreground, state in memory only. Extra arguments go to
# redis-server (e.g. --maxmemory 1gb, or --save 60 1 to persist after all). DEBUG (POPULATE, DIGEST, ...)
# is allowed from loopback connections only, for tests run in the container's network namespace.
#
# UMS_INNER_CLIENT=1 also starts a client inside the container's own process tree, so a checkpoint takes
# it along (a `podman exec` process would not be): ONE redis-cli connection, fed commands on stdin, that
# names itself "inner" and then runs INCR inner:count every UMS_INNER_INTERVAL seconds (default 0.1).
# Continuity proof from outside: CLIENT LIST shows name=inner with the same id and a growing age, and
# inner:count goes on past its value at the checkpoint. redis-cli reconnects silently after a broken
# connection, but the new one would have no name: name=inner with the old id can only be the old socket.
set -eu
port=6379

if [ "${UMS_INNER_CLIENT:-0}" = 1 ]; then
  interval="${UMS_INNER_INTERVAL:-0.1}"
  (
    until redis-cli -p "$port" PING >/dev/null 2>&1; do sleep 0.05; done
    echo "ums-inner: client connecting to 127.0.0.1:$port (CLIENT SETNAME inner, INCR inner:count every ${interval}s)" >&2
    {
      echo 'CLIENT SETNAME inner'
      while :; do
        echo 'INCR inner:count'
        sleep "$interval"
      done
    } | redis-cli -h 127.0.0.1 -p "$port" >/dev/null
    echo "ums-inner: client ended" >&2
  ) &
fi

# '-::*': also IPv6, where the kernel has it ('-' = skip the address when it cannot be bound).
exec redis-server \
  --bind '* -::*' --port "$port" --protected-mode no \
  --daemonize no --supervised no --logfile '' \
  --save '' --appendonly no --dir /var/lib/redis \
  --enable-debug-command local \
  "$@"
