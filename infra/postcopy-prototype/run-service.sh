#!/usr/bin/env bash
# PROTOTYPE: service level with design (b): CRIU runs *inside* the container, unprivileged
# (CAP_CHECKPOINT_RESTORE + CAP_SYS_PTRACE, seccomp unconfined: the launcher's flags), the page stream goes
# through fds the agent hands in (`podman exec --preserve-fds`, standing for the launcher receiving them over
# its control socket) and ps-relay.ts (TLS-PSK) between the hosts. PID 1 is a busybox shell standing for
# the launcher. usage: run-service.sh MIB   (needs netns.sh up, pc-host.sh src/dst up)
set -uo pipefail
MIB=${1:-64}; HERE="$(cd "$(dirname "$0")" && pwd)"; H="$HERE/pc-host.sh"; TSX="$HERE/../../node_modules/.bin/tsx"
ms() { date +%s%3N; }
W=$(mktemp -d /tmp/pc-svc.XXXX); mkdir -p $W/A $W/B; PSK=$(openssl rand -hex 32)
CRIU="/opt/ums/criu/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /opt/ums/criu/usr/lib/x86_64-linux-gnu /opt/ums/criu/usr/sbin/criu"
RUN=(--ulimit nofile=${NOFILE:-1024}:${NOFILE:-1024} --ulimit nproc=1024:1024 --cap-add CHECKPOINT_RESTORE,SYS_PTRACE --security-opt seccomp=unconfined -v /opt/ums/criu:/opt/ums/criu:ro
     -v /bin/busybox:/bin/busybox:ro -v $W:/w localhost/pc-workload:1)
# "launcher": PID 1 shell; the service writes to a file (the real launcher hands stdout/err over with --inherit-fd)
$H src podman run -d --name svc-src "${RUN[@]}" /bin/busybox sh -c "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40; do /bin/busybox true; done; /bin/busybox setsid /bin/workload $MIB >> /w/out 2>&1 & exec /bin/busybox sleep 100000" >/dev/null
$H dst podman run -d --name svc-dst "${RUN[@]}" /bin/busybox sleep 100000 >/dev/null
for _ in $(seq 100); do grep -q "verify ok" $W/out 2>/dev/null && break; sleep 0.2; done; sleep 1
SPID=$(sed -n 's/^start pid=\([0-9]*\).*/\1/p' $W/out | head -1); echo "service pid in the container: $SPID"
PC_GO_FILE=$W/go-src $H src run "$TSX" "$HERE/ps-relay.ts" src 10.231.0.1 7720 $PSK -- \
  "$H" src podman \
  exec --preserve-fds 2 svc-src $CRIU dump --unprivileged -t $SPID -D /w/A -o dump.log -v4 --lazy-pages --ps-socket 3 --status-fd 4 --manage-cgroups=ignore > $W/src.out 2>&1 &
SR=$!; until grep -q LISTEN $W/src.out 2>/dev/null; do sleep 0.05; done
if [ "${DST_DAEMON:-host}" = host ]; then
  # the lazy-pages daemon runs on the destination host (the agent's CRIU), its socket in the images dir that
  # the container sees too (/w/B): the unprivileged restore inside the container connects to it
  PC_GO_FILE=$W/go-dst $H dst run "$TSX" "$HERE/ps-relay.ts" dst 10.231.0.1 7720 $PSK -- \
    criu lazy-pages --page-server --ps-socket 3 -D $W/B -W $W/B -o lazy.log -v4 > $W/dst.out 2>&1 &
else
  PC_GO_FILE=$W/go-dst $H dst run "$TSX" "$HERE/ps-relay.ts" dst 10.231.0.1 7720 $PSK -- \
    "$H" dst podman exec --preserve-fds 1 svc-dst $CRIU lazy-pages --unprivileged --page-server --ps-socket 3 -D /w/B -o lazy.log -v4 > $W/dst.out 2>&1 &
fi
DR=$!; until grep -q CONNECTED $W/dst.out 2>/dev/null; do sleep 0.05; done
T0=$(ms); touch $W/go-src
until grep -q READY $W/src.out; do sleep 0.005; kill -0 $SR 2>/dev/null || { cat $W/src.out; grep Error $W/A/dump.log; exit 1; }; done
T1=$(ms); echo "non-memory images ready +$((T1-T0)) ms"; cp -a $W/A/. $W/B/; rm -f $W/B/dump.log; touch $W/go-dst
until [ -S $W/B/lazy-pages.socket ]; do sleep 0.005; kill -0 $DR 2>/dev/null || { cat $W/dst.out; tail -5 $W/B/lazy.log; exit 1; }; done
T2=$(ms); echo "lazy-pages daemon up in the destination container +$((T2-T0)) ms"
$H dst podman exec svc-dst $CRIU restore --unprivileged -D /w/B --lazy-pages --restore-detached --manage-cgroups=ignore -o restore.log -v4; RC=$?
T3=$(ms); echo "restore rc=$RC +$((T3-T0)) ms"; [ $RC = 0 ] || grep Error $W/B/restore.log | tail -3
wait $DR; echo "lazy-pages ended +$(( $(ms)-T0 )) ms"; wait $SR; echo "dump ended +$(( $(ms)-T0 )) ms"
cat $W/src.out $W/dst.out | grep -E 'CRIU-EXIT|CONNECTED'
sleep 2.5; awk -v t0=$T0 '/^tick/{ if (p && $3-p > 120) printf "gap %.0f ms before tick %s (at +%.0f ms)\n", $3-p, $2, $3-t0; p=$3 } /verify/' $W/out | tail -4
echo "processes: src: $($H src podman top svc-src pid args 2>&1 | tail -n +2 | tr '\n' ';')  dst: $($H dst podman top svc-dst pid args 2>&1 | tail -n +2 | tr '\n' ';')"
echo $W
