#!/usr/bin/env bash
# PROTOTYPE: design (a): CRIU's own page server on the source "host" address, the destination's lazy-pages
# daemon connects to it directly. usage: run-direct.sh MIB [tls]   (needs netns.sh up)
set -uo pipefail
MIB=${1:-128}; MODE=${2:-plain}
HERE="$(cd "$(dirname "$0")" && pwd)"
W=$(mktemp -d /tmp/pc-direct.XXXX); mkdir -p $W/A $W/B; echo "work dir $W mode $MODE"
SRC="nsenter --net=/run/netns/pc-src"; DST="nsenter --net=/run/netns/pc-dst"
ms() { date +%s%3N; }
TLS_SRC=(); TLS_DST=()
if [ "$MODE" = tls ]; then
  "$HERE/make-tls.sh" $W/tls 10.231.0.1 >/dev/null
  TLS_SRC=(--tls --tls-cacert $W/tls/ca.pem --tls-cert $W/tls/server.pem --tls-key $W/tls/server.key)
  TLS_DST=(--tls --tls-cacert $W/tls/ca.pem --tls-cert $W/tls/client.pem --tls-key $W/tls/client.key)
fi
$SRC unshare -p -f setsid /tmp/pc-workload "$MIB" >>$W/workload.out 2>&1 < /dev/null &
until grep -q 'verify ok' $W/workload.out 2>/dev/null; do sleep 0.2; done; sleep 1
PID=$(pgrep -n -x pc-workload); echo "workload pid $PID"
T0=$(ms)
exec 5>$W/status   # status fd: CRIU writes \0 when the non-memory images are written
$SRC criu dump -t $PID -D $W/A -o dump.log -v4 --lazy-pages --address 10.231.0.1 --port 7701 --status-fd 5 "${TLS_SRC[@]}" &
DUMP=$!; exec 5>&-
until [ -s $W/status ]; do sleep 0.01; kill -0 $DUMP 2>/dev/null || { echo "dump exited"; grep -E 'Error|Warn' $W/A/dump.log | tail -5; exit 1; }; done
T1=$(ms); echo "T1 non-memory images ready +$((T1-T0)) ms"
cp -a $W/A/. $W/B/; rm -f $W/B/dump.log
$DST criu lazy-pages --page-server --address 10.231.0.1 --port 7701 -D $W/B -o lazy.log -v4 "${TLS_DST[@]}" &
LAZY=$!
until [ -S $W/B/lazy-pages.socket ]; do sleep 0.01; kill -0 $LAZY 2>/dev/null || { echo "lazy-pages exited"; grep -E 'Error' $W/B/lazy.log | tail -5; kill $DUMP; exit 1; }; done
T3=$(ms); echo "T3 lazy-pages daemon up +$((T3-T0)) ms"
$DST criu restore -D $W/B --lazy-pages -d -o restore.log -v4; RC=$?
T4=$(ms); echo "T4 restore rc=$RC +$((T4-T0)) ms"
wait $LAZY; echo "T5 lazy-pages exited rc=$? +$(( $(ms)-T0 )) ms"
wait $DUMP; echo "T6 dump exited rc=$? +$(( $(ms)-T0 )) ms"
grep -iE 'tls|gnutls' $W/A/dump.log | head -5; grep -iE 'tls|gnutls' $W/B/lazy.log | head -3
sleep 2.5
awk -v t0=$T0 '/^tick/{ if (p && $3-p > 120) printf "gap %.0f ms before tick %s (at +%.0f ms)\n", $3-p, $2, $3-t0; p=$3 } /verify|start/' $W/workload.out | tail -6
NEWPID=$(pgrep -n -x pc-workload); echo "restored pid $NEWPID state $(ps -o stat= -p $NEWPID) netns $(ip netns identify $NEWPID)"
echo "$W $NEWPID" > /tmp/pc-last
