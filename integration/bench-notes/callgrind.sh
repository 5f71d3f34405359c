#!/bin/bash
# Instructions per packet for each thread of a P2 (pipe) or P3 (VALE) transfer, all three
# processes under `valgrind --tool=callgrind --separate-threads=yes` (placed as ptnet-bench
# places them: daemon on CPUs 0,1, receiver on 1, sender on 0).
#
#   callgrind.sh BIN_DIR pipe|vale PACKETS [pkt-gen flags, e.g. --fast] [-- daemon flags]
#
# Prints each thread's instruction count (Ir) and Ir per packet received; the out files stay
# in the printed directory (callgrind_annotate them for the functions).
set -eu
bin=$1 topo=$2 n=$3
shift 3
gen=() dmn=()
while [ $# -gt 0 ]; do
	if [ "$1" = -- ]; then shift; dmn=("$@"); break; fi
	gen+=("$1"); shift
done
if [ "$topo" = pipe ]; then a='netmap:bp{1' b='netmap:bp}1'; else a=vale0:1 b=vale0:2; fi
d=$(mktemp -d /tmp/cg-XXXX)
vg=(valgrind --tool=callgrind --separate-threads=yes --dump-instr=${DUMP_INSTR:-no})
taskset -c 0,1 "${vg[@]}" --callgrind-out-file="$d/daemon.%p" "$bin/ptnet-backend" \
	--socket-dir "$d" "${dmn[@]}" "$a" "$b" >"$d/daemon.log" 2>&1 &
dpid=$!
for _ in $(seq 600); do [ -S "$d/$a.sock" ] && [ -S "$d/$b.sock" ] && break; sleep 0.1; done
taskset -c 1 "${vg[@]}" --callgrind-out-file="$d/rx.%p" "$bin/ptnet-pkt-gen" -i "vhost-user:$d/$b.sock" \
	-f rx --timeout 5 -T 0 "${gen[@]}" >"$d/rx.out" 2>"$d/rx.log" &
rpid=$!
sleep 3
taskset -c 0 "${vg[@]}" --callgrind-out-file="$d/tx.%p" "$bin/ptnet-pkt-gen" -i "vhost-user:$d/$a.sock" \
	-f tx -n "$n" -T 0 "${gen[@]}" >"$d/tx.out" 2>"$d/tx.log"
wait $rpid || true
kill -TERM $dpid
wait $dpid || true
got=$(sed -n 's/^rx: \([0-9]*\) packets.*/\1/p' "$d/rx.out")
echo "$topo ${gen[*]:-}: sent $n, received $got ($d)"
cat "$d/rx.out" "$d/tx.out"
for f in "$d"/daemon.* "$d"/tx.* "$d"/rx.*; do
	case $f in *.log | *.out) continue ;; esac
	ir=$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$f")
	[ -n "$ir" ] || ir=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$f")
	[ "${ir:-0}" -gt 10000000 ] || continue
	printf '%-22s %14d Ir %8.1f Ir/pkt' "$(basename "$f")" "$ir" "$(echo "$ir / $got" | bc -l)"
	# Syscalls per 1000 packets: poll (sleeps, and checks), write/pwritev2 (kicks, interrupts,
	# notifications), and the passes run.
	python3 "$(dirname "$0")/calls.py" "$f" | awk -v got="$got" '
		$2 == "poll" || $2 == "write" || $2 == "pwritev2" || $2 ~ /HostKring::(tx|rx)_pass$/ {
			n = $2; sub(/.*::/, "", n); printf "  %s=%.2f", n, 1000 * $1 / got }
		END { print "  (per 1000 packets)" }'
done
