#!/bin/sh
# Entrypoint of localhost/ums/webdis: Debian's webdis (an HTTP front end to redis) in the foreground on
# 0.0.0.0:7379, with its own redis-server on the container's loopback only (127.0.0.1:6379), both as root
# (CRIU cannot dump a non-root task on a host whose root lacks CAP_SYS_RESOURCE) and state in memory only
# (no RDB, no AOF): a migration must carry every applied POST in the process' memory.
#
# A request's command is its path or its POST body, e.g. `curl -d 'RPUSH/posts/abc' http://ADDR:7379/`
# appends abc to the list posts, and `GET /LRANGE/posts/0/-1` returns the list as JSON: tests count how
# often each POST was applied. Extra arguments go to redis-server.
set -eu
redis_port=6379
http_port=7379
config=/etc/webdis/ums-webdis.json

# webdis' JSON config (Debian's own daemonizes, listens on loopback and runs as user webdis). threads:
# event loops answering HTTP; pool_size: redis connections per thread, pipelined by hiredis, so 4 x 8 is
# ample for a few hundred requests per second. No ACL: the container is a test fixture on a private network.
mkdir -p /etc/webdis /var/log/webdis
cat >"$config" <<JSON
{
  "redis_host": "127.0.0.1",
  "redis_port": $redis_port,
  "redis_auth": null,
  "http_host": "0.0.0.0",
  "http_port": $http_port,
  "threads": 4,
  "pool_size": 8,
  "daemonize": false,
  "database": 0,
  "verbosity": 3,
  "logfile": "/var/log/webdis/webdis.log"
}
JSON

redis-server \
  --bind 127.0.0.1 --port "$redis_port" --protected-mode no \
  --daemonize no --supervised no --logfile '' \
  --save '' --appendonly no --dir /var/lib/redis \
  "$@" &
# webdis would answer 503 until its pool connects: start it only once redis answers.
tries=0
until redis-cli -h 127.0.0.1 -p "$redis_port" PING >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -gt 200 ]; then
    echo "ums-webdis: redis-server did not answer on 127.0.0.1:$redis_port within 10 s" >&2
    exit 1
  fi
  sleep 0.05
done

exec webdis "$config"
