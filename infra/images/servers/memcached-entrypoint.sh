#!/bin/sh
# Entrypoint of localhost/ums/memcached: Debian's memcached as root (-u root; CRIU cannot dump a non-root
# task on a host whose root lacks CAP_SYS_RESOURCE), in the foreground on port 11211, all IPv4 and IPv6
# addresses. Extra arguments go to memcached (e.g. -m 1024 for a 1 GiB cache; the default here is 64 MiB).
#
# UMS_INNER_CLIENT=1 also starts a client inside the container's own process tree, so a checkpoint takes
# it along (a `podman exec` process would not be): ONE TCP connection (busybox nc) to UMS_INNER_ADDRESS
# (default 127.0.0.2, a loopback address no other client uses, so `stats conns` tells this connection
# apart: busybox nc cannot choose its source port) that sets inner:count to 0 and then sends
# `incr inner:count 1` every UMS_INNER_INTERVAL seconds (default 0.1). Nothing reconnects: if that
# connection broke, nc would exit and the count would stop. Continuity proof from outside: `stats conns`
# still lists the connection with listen_addr tcp:127.0.0.2:11211 on the same fd from the same source
# port, and inner:count goes on past its value at the checkpoint.
set -eu
port=11211

if [ "${UMS_INNER_CLIENT:-0}" = 1 ]; then
  interval="${UMS_INNER_INTERVAL:-0.1}"
  inner_address="${UMS_INNER_ADDRESS:-127.0.0.2}"
  (
    until printf 'version\r\nquit\r\n' | nc 127.0.0.1 "$port" 2>/dev/null | grep -q '^VERSION'; do sleep 0.05; done
    echo "ums-inner: client connecting to $inner_address:$port (incr inner:count every ${interval}s)" >&2
    {
      printf 'set inner:count 0 0 1\r\n0\r\n'
      while :; do
        printf 'incr inner:count 1\r\n'
        sleep "$interval"
      done
    } | nc "$inner_address" "$port" >/dev/null
    echo "ums-inner: client ended" >&2
  ) &
fi

exec memcached -u root -p "$port" -U 0 -m 64 "$@"
