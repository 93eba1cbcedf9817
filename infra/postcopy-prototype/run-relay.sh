#!/usr/bin/env bash
# PROTOTYPE: post-copy of a plain process tree from "host" pc-src to "host" pc-dst with design (b):
# CRIU's page stream through ps-relay.ts (agent-carried, TLS-PSK) over the veth, CRIU on --ps-socket.
# usage: run-relay.sh MIB [KILL_SRC_AFTER_MS]   (needs netns.sh up, fs.pipe-max-size >= 4 MiB)
set -uo pipefail
MIB=${1:-128}; KILL_AFTER=${2:-}
HERE="$(cd "$(dirname "$0")" && pwd)"; TSX="$HERE/../../node_modules/.bin/tsx"
W=$(mktemp -d /tmp/pc-run.XXXX); mkdir -p $W/A $W/B; echo "work dir $W"
SRC="nsenter --net=/run/netns/pc-src"; DST="nsenter --net=/run/netns/pc-dst"
PSK=$(openssl rand -hex 32)
ms() { date +%s%3N; }
# the workload: init of its own PID namespace (so its PIDs are free at the destination), no pdeath_sig
$SRC unshare -p -f setsid /tmp/pc-workload "$MIB" >>$W/workload.out 2>&1 < /dev/null &
sleep 0.3; PID=$(pgrep -P $(pgrep -P $! -x unshare || echo $!) -x pc-workload || true)
[ -z "$PID" ] && PID=$(pgrep -n -x pc-workload)
until grep -q 'verify ok' $W/workload.out; do sleep 0.2; done; sleep 1
echo "workload pid $PID rss $(awk '/VmRSS/{print $2,$3}' /proc/$PID/status)"
# both agents' relays are up and connected (TLS-PSK) before the migration starts, as long-lived agents would be
PC_GO_FILE=$W/go-src $SRC "$TSX" "$HERE/ps-relay.ts" src 10.231.0.1 7700 $PSK -- criu dump -t $PID -D $W/A -o dump.log -v4 \
   --lazy-pages --ps-socket 3 --status-fd 4 ${DUMP_EXTRA:-} > $W/src.out 2>&1 &
SRCRELAY=$!
until grep -q LISTEN $W/src.out 2>/dev/null; do sleep 0.05; done
PC_GO_FILE=$W/go-dst $DST "$TSX" "$HERE/ps-relay.ts" dst 10.231.0.1 7700 $PSK -- criu lazy-pages --page-server --ps-socket 3 -D $W/B -o lazy.log -v4 > $W/dst.out 2>&1 &
DSTRELAY=$!
until grep -q CONNECTED $W/dst.out 2>/dev/null; do sleep 0.05; done
T0=$(ms); echo "T0 dump start $T0"; touch $W/go-src
until grep -q READY $W/src.out 2>/dev/null; do sleep 0.005; kill -0 $SRCRELAY 2>/dev/null || { echo "src died"; cat $W/src.out; tail $W/A/dump.log; exit 1; }; done
T1=$(ms); echo "T1 non-memory images ready +$((T1-T0)) ms; sizes: $(du -sh $W/A | cut -f1) total, pages files: $(ls -la $W/A/pages-*.img | awk '{s+=$5} END{print s}') bytes"
cp -a $W/A/. $W/B/; rm -f $W/B/dump.log    # stands for "the agent ships the non-memory images"
T2=$(ms); echo "T2 images copied +$((T2-T0)) ms"
touch $W/go-dst
until [ -S $W/B/lazy-pages.socket ]; do sleep 0.005; done
T3=$(ms); echo "T3 lazy-pages daemon up +$((T3-T0)) ms"
$DST criu restore -D $W/B --lazy-pages -d -o restore.log -v4; RC=$?
T4=$(ms); echo "T4 restore returned rc=$RC +$((T4-T0)) ms"
if [ -n "$KILL_AFTER" ]; then
  sleep $(awk "BEGIN{print $KILL_AFTER/1000}")
  echo "killing the source relay (the source agent's end) at +$(( $(ms)-T0 )) ms"
  pkill -KILL -P $SRCRELAY; kill -KILL $SRCRELAY
  if [ "${PC_HOLD_ON_LOSS:-}" = 1 ]; then
    sleep 2; NEWPID=$(pgrep -n -x pc-workload)
    echo "held: restored pid $NEWPID: $(ps -o stat=,wchan:32= -p $NEWPID); last tick: $(grep tick $W/workload.out | tail -1)"
    sleep 1; echo "held +1 s: $(ps -o stat=,wchan:32= -p $NEWPID); last tick: $(grep tick $W/workload.out | tail -1)"
    echo "killing restored pid $NEWPID"; kill -KILL $NEWPID; sleep 0.5; pkill -KILL -P $DSTRELAY; kill -KILL $DSTRELAY
  fi
fi
wait $DSTRELAY; T5=$(ms); echo "T5 lazy-pages daemon exited +$((T5-T0)) ms"
wait $SRCRELAY; T6=$(ms); echo "T6 source dump exited +$((T6-T0)) ms"
cat $W/src.out $W/dst.out
echo "source pid $PID still there? $(ps -o pid=,stat= -p $PID || echo gone)"
sleep 2.5
echo "--- workload output around the switch:"; awk -v t0=$T0 '/^tick/{ if (p && $3-p > 120) printf "gap %.0f ms before tick %s (at +%.0f ms)\n", $3-p, $2, $3-t0; p=$3 } /verify|start/' $W/workload.out | tail -8
NEWPID=$(pgrep -n -x pc-workload); echo "restored pid $NEWPID state $(ps -o stat= -p $NEWPID) netns $(ip netns identify $NEWPID)"
echo "$W $NEWPID" > /tmp/pc-last
