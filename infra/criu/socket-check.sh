#!/usr/bin/env bash
# ums-criu-socket-check: can this host's CRIU checkpoint a network service? `criu check` cannot tell: CRIU
# 4.1 passes it on Linux >= 6.16 and still fails every dump of a process holding an inet socket. This dumps
# and restores a real process (socket-check.c: listening TCP v4/v6, bound UDP, an established connection
# with both ends inside) with --tcp-established, then asks the restored process over its listening port
# whether the connection went on. Exit 0 and one line "ok: ..." when it did; otherwise exit 1 and CRIU's
# own error lines.
#
# Usage: socket-check.sh [CRIU]   (default: criu from PATH). Needs root. Takes about a second.
set -u
criu="${1:-criu}"
here="$(cd "$(dirname "$0")" && pwd)"
prog="$here/ums-socket-holder"
[ -x "$prog" ] || { echo "missing $prog (infra/host-setup.sh builds it)"; exit 1; }
work="$(mktemp -d /tmp/ums-socket-check.XXXXXX)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  [ -f "$work/restored.pid" ] && kill -9 "$(cat "$work/restored.pid")" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "$1"
  # CRIU's own reason: its "Error (file:line): ..." lines, not its command line.
  for log in "$work/img/dump.log" "$work/img/restore.log"; do
    [ -f "$log" ] && grep -E '^\(.*\) Error|Error \(' "$log" | sed 's/^([ 0-9.]*) //' | tail -n 4
  done
  exit 1
}
ask() { # prints the holder's "ok N" line from a new connection to its listening port
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  read -r line <&3
  exec 3<&-
  printf '%s\n' "$line"
}
mkdir -p "$work/img"
# setsid: its own session, so CRIU needs no --shell-job and nothing of this shell goes into the dump.
setsid "$prog" "$work/port" </dev/null >/dev/null 2>"$work/holder.err" &
pid=$!
disown # still our child (wait reaps it), but bash does not announce its SIGKILL by CRIU
i=0
while [ ! -s "$work/port" ]; do
  i=$((i + 1)); [ "$i" -gt 100 ] && fail "the socket holder did not start: $(cat "$work/holder.err")"
  sleep 0.05
done
port="$(cat "$work/port")"
sleep 0.2
before="$(ask "$port" 2>/dev/null | awk '{print $2}')"
[ -n "$before" ] || fail "the socket holder does not answer on 127.0.0.1:$port"
"$criu" dump -t "$pid" -D "$work/img" --tcp-established -o dump.log -v4 >/dev/null 2>&1 ||
  fail "criu dump of a process holding TCP sockets failed"
wait "$pid" 2>/dev/null # reap it now: its pid must be free for the restore
pid=""
"$criu" restore -D "$work/img" --tcp-established -d --pidfile "$work/restored.pid" -o restore.log -v4 >/dev/null 2>&1 ||
  fail "criu restore of a process holding TCP sockets failed"
sleep 0.2
after="$(ask "$port" 2>/dev/null | awk '{print $2}')"
[ -n "$after" ] || fail "the restored process does not answer on its listening port 127.0.0.1:$port"
[ "$after" -gt "$before" ] || fail "the established connection did not go on after the restore (echoes $before, then $after)"
echo "ok: dumped and restored listening TCP/UDP sockets and an established connection (echoes $before -> $after)"
