#!/bin/sh
# UMS multi-process workload for the service-level launcher: two counters, each behind a labelling loop
# that keeps a line count of its own. Five processes (this shell, two counters, two loop shells) with
# state only in memory, joined by pipes inside the tree: a migration that loses any of them shows as a
# count or a line number that starts over.
#
# Output, one line per tick of either counter:  `a lines=N count=M t=MS` / `b lines=N count=M t=MS`.

label() {
  n=0
  while IFS= read -r line; do
    case "$line" in
      count=*)
        n=$((n + 1))
        echo "$1 lines=$n $line"
        ;;
    esac
  done
}

/usr/local/bin/counter -f /var/lib/counter/a | label a &
/usr/local/bin/counter -f /var/lib/counter/b | label b &
wait
