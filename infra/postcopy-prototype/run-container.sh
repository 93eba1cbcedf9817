#!/usr/bin/env bash
# PROTOTYPE: container-level post-copy through Podman's own checkpoint/restore with the runc-lazy shim
# (design a: CRIU's page server on the source host's address). MODE=lazy (default) or MODE=copy (plain
# stop-and-copy, the baseline). usage: run-container.sh MIB   (needs netns.sh up, pc-host.sh src/dst up)
set -uo pipefail
MIB=${1:-128}; MODE=${MODE:-lazy}; HERE="$(cd "$(dirname "$0")" && pwd)"; H="$HERE/pc-host.sh"
ms() { date +%s%3N; }
N=pcw-$MODE-$$; W=$(mktemp -d /tmp/pc-ctr.XXXX)
$H src podman run -d --runtime runc-lazy --name $N localhost/pc-workload:1 /bin/workload $MIB >/dev/null
until $H src podman logs $N 2>&1 | grep -q 'verify ok'; do sleep 0.3; done; sleep 1
ID=$($H src podman inspect $N --format '{{.Id}}'); SPID=$($H src podman inspect $N --format '{{.State.Pid}}')
SRCPS="10.231.0.1:7710"; DSTPS="10.231.0.1 7710"
if [ "${DESIGN:-a}" = b ]; then
  # design (b): runc's page server on the source host's loopback, the shim's lazy-pages daemon dials the
  # destination host's loopback; the relays (agents) carry the stream over TLS-PSK between the hosts
  SRCPS="127.0.0.1:7711"; DSTPS="127.0.0.1 7712"; PSK=$(openssl rand -hex 32); TSX="$HERE/../../node_modules/.bin/tsx"
  $H src run "$TSX" "$HERE/ps-relay.ts" src 10.231.0.1 7700 $PSK -- tcp-connect:127.0.0.1:7711 > $W/src-relay.out 2>&1 &
  until grep -q LISTEN $W/src-relay.out 2>/dev/null; do sleep 0.05; done
  $H dst run "$TSX" "$HERE/ps-relay.ts" dst 10.231.0.1 7700 $PSK -- tcp-listen:127.0.0.1:7712 > $W/dst-relay.out 2>&1 &
  until grep -q LOCAL-LISTEN $W/dst-relay.out 2>/dev/null && grep -q CONNECTED $W/dst-relay.out; do sleep 0.05; done
fi
[ $MODE = lazy ] && echo "$SRCPS" > /run/pc-lazy/$ID.dump
T0=$(ms); $H src podman container checkpoint --export $W/ckpt.tar --compress none $N 2>$W/ckpt.err >/dev/null; RC=$?
T1=$(ms); echo "checkpoint rc=$RC +$((T1-T0)) ms, archive $(stat -c %s $W/ckpt.tar) bytes; stderr: $(cut -c1-120 $W/ckpt.err)"
[ $MODE = lazy ] && echo "$DSTPS" > /run/pc-lazy/$ID.restore
$H dst podman container restore --import $W/ckpt.tar --name $N >/dev/null 2>$W/restore.err; RC=$?
T2=$(ms); echo "restore rc=$RC +$((T2-T0)) ms $(cat $W/restore.err)"
if [ -n "${FAIL_AFTER_MS:-}" ]; then   # the source's page server dies while pages are still moving
  sleep $(awk "BEGIN{print $FAIL_AFTER_MS/1000}"); B=$(cat /run/pc-lazy/$ID.pid); R=$(pgrep -P $B); C=$(pgrep -P $R)
  echo "killing the source's criu (pid $C, child of runc $R) at +$(( $(ms)-T0 )) ms"
  kill -KILL $C; sleep 3
  echo "shim: $(grep -E 'ended' /run/pc-lazy/shim.log | tail -1 | cut -c15-140)"
  DU=$(ls -dt /tmp/pc-host-dst/root/overlay-containers/*/userdata | head -1)
  echo "dst lazy-pages.log: $(grep -E 'Error' $DU/lazy-pages.log | tail -2 | tr '\n' ' ')"
  SRCPID=$(cat /run/pc-lazy/$ID.srcpid 2>/dev/null)
fi
[ $MODE = lazy ] && { while [ -e /run/pc-lazy/$ID.busy ]; do sleep 0.01; done; echo "source dump ended (all pages moved) +$(( $(ms)-T0 )) ms"; }
sleep 2.5
echo "src: $($H src podman ps -a --filter name=$N --format '{{.Names}} {{.Status}}') $($H src podman inspect $N --format 'checkpointed={{.State.Checkpointed}} exit={{.State.ExitCode}}')"
echo "dst: $($H dst podman ps -a --filter name=$N --format '{{.Names}} {{.Status}}') $($H dst podman inspect $N --format 'restored={{.State.Restored}} ip={{.NetworkSettings.IPAddress}} pid={{.State.Pid}}')"
last=$($H src podman logs $N 2>&1 | grep '^tick' | tail -1 | cut -d' ' -f2,3)
$H dst podman logs $N 2>&1 | awk -v l="${last% *}" -v lt="${last#* }" -v t0=$T0 '
  /^tick/ && $2>l { if (!p) printf "freeze: last source tick at +%.0f ms, first destination tick at +%.0f ms: gap %.0f ms\n", lt-t0, $3-t0, $3-lt; else if ($3-p > 120) printf "later stall %.0f ms before tick %s\n", $3-p, $2; p=$3 }
  /^verify/ && seen { print } /^tick/ && $2>l {seen=1}' | head -6
echo "source task $SPID: $(ps -o stat=,wchan:20= -p $SPID || echo gone) $(grep -h freezer.state /dev/null $(ls /sys/fs/cgroup/freezer/libpod_parent/libpod-$ID/freezer.state 2>/dev/null) ; cat /sys/fs/cgroup/freezer/libpod_parent/libpod-$ID/freezer.state 2>/dev/null)"
[ "${DESIGN:-a}" = b ] && { wait; grep -hE 'CONNECTED|LOCAL|PEER' $W/src-relay.out $W/dst-relay.out; }
rm -f /run/pc-lazy/$ID.*; echo "$N $W"
