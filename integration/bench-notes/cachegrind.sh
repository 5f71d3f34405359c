#!/bin/bash
# Simulated cache misses per packet of each process of a P2/P3 transfer (valgrind's cachegrind:
# one private cache hierarchy per process, so it shows capacity and conflict misses, not the
# lines the two CPUs pass each other).
#   cachegrind.sh BIN_DIR pipe|vale PACKETS [pkt-gen flags]
set -eu
bin=$1 topo=$2 n=$3
shift 3
if [ "$topo" = pipe ]; then a='netmap:bp{1' b='netmap:bp}1'; else a=vale0:1 b=vale0:2; fi
d=$(mktemp -d /tmp/cgc-XXXX)
vg=(valgrind --tool=cachegrind --cache-sim=yes)
taskset -c 0,1 "${vg[@]}" --cachegrind-out-file="$d/daemon" "$bin/ptnet-backend" --socket-dir "$d" "$a" "$b" >"$d/daemon.log" 2>&1 &
dpid=$!
for _ in $(seq 600); do [ -S "$d/$a.sock" ] && [ -S "$d/$b.sock" ] && break; sleep 0.1; done
taskset -c 1 "${vg[@]}" --cachegrind-out-file="$d/rx" "$bin/ptnet-pkt-gen" -i "vhost-user:$d/$b.sock" -f rx --timeout 5 -T 0 "$@" >"$d/rx.out" 2>"$d/rx.log" &
rpid=$!
sleep 3
taskset -c 0 "${vg[@]}" --cachegrind-out-file="$d/tx" "$bin/ptnet-pkt-gen" -i "vhost-user:$d/$a.sock" -f tx -n "$n" -T 0 "$@" >"$d/tx.out" 2>"$d/tx.log"
wait $rpid || true
kill -TERM $dpid
wait $dpid || true
got=$(sed -n 's/^rx: \([0-9]*\) packets.*/\1/p' "$d/rx.out")
echo "$topo $*: sent $n, received $got ($d); per received packet:"
for p in daemon tx rx; do
	# summary: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw
	awk -v got="$got" -v p="$p" '/^summary:/ { printf "  %-7s Ir %6.1f  D refs %5.1f  D1 misses %5.2f  LL misses %5.2f\n", p, $2/got, ($5+$8)/got, ($6+$9)/got, ($7+$10)/got }' "$d/$p"
done
