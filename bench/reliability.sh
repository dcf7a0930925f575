#!/usr/bin/env bash
# bench/reliability.sh: the load-and-fault test of docs/reliability.md. It
# reproduces each defect of issue 14 against the tcplab built from this tree
# and prints the figures: what happens to output paths a run cannot write
# or is interrupted on, time and peak RSS of runaway scenarios and bad
# inputs, the parser on 100,000 lines, watch's loss at a given rate of state
# changes, and the web page under concurrent hostile requests.
#
#   sudo env PATH="$PATH" bash bench/reliability.sh [--quick] [--skip-watch]
#
# Everything it creates is in a temporary directory (and, for watch, in a
# network namespace the load program makes and removes); traffic goes to
# loopback only. Without root the device-node, kernel and watch parts are
# skipped and say so.
set -euo pipefail

quick=0
watch=1
usage() {
	cat <<EOF
usage: bash bench/reliability.sh [--quick] [--skip-watch]
  --quick       shorter watch load (3 s per rate instead of 10 s)
  --skip-watch  leave out the watch load (it needs root and tracefs)
EOF
}
while (($#)); do
	case $1 in
	--quick) quick=1; shift ;;
	--skip-watch) watch=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done

die() {
	echo "reliability.sh: $*" >&2
	exit 1
}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v go >/dev/null || die "go is not in PATH (under sudo: sudo env PATH=\"\$PATH\" bash bench/reliability.sh)"
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time, Debian package time) is needed for peak RSS"
root=0
[[ $(id -u) == 0 ]] && root=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcplab-reliability.XXXXXX")
serve_pid=
cleanup() {
	trap - EXIT INT TERM
	if [[ -n $serve_pid ]]; then
		kill -TERM "$serve_pid" 2>/dev/null || true
		wait "$serve_pid" 2>/dev/null || true
	fi
	rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building tcplab and the load programs ..."
go build -o "$tmp/tcplab" ./cmd/tcplab
# Beside tcplab, which hands it the commands it keeps out (kernel runs).
go build -o "$tmp/tcplab-full" ./cmd/tcplab-full
go build -o "$tmp/hostile" ./bench/hostile
if ((watch)); then
	go build -o "$tmp/watchload" ./bench/watchload
fi
tcplab=$tmp/tcplab
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%Y-%m-%d)"

# measure LABEL CMD...: runs CMD with GNU time and prints one row: exit
# status, wall seconds, peak RSS, and the first line of its error output
# (cut to 100 bytes), plus the error output's size.
measure() {
	local label=$1
	shift
	local rc=0
	/usr/bin/time -o "$tmp/time" -f "%e %M" "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
	local secs kb
	read -r secs kb < <(tail -n 1 "$tmp/time")
	local first
	first=$(head -c 4096 "$tmp/err" | grep -v '^Command exited' | head -n 1 | cut -c1-100 || true)
	printf '%-34s %4s %8s %8s MB %9s  %s\n' "$label" "$rc" "${secs}s" "$((kb / 1024))" "$(wc -c <"$tmp/err")" "$first"
}
header() {
	printf '\n== %s\n' "$1"
	printf '%-34s %4s %8s %11s %9s  %s\n' "case" "exit" "wall" "peak RSS" "err bytes" "first line of the error"
}

# --- 1. output paths --------------------------------------------------------
printf '\n== output paths a failed, refused or interrupted run was given\n'
printf '%-58s %4s  %s\n' "case" "exit" "the path afterwards"
out=$tmp/out-paths
mkdir "$out"
printf 'host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80\nserver: accept\nserver: read conn\n' >"$out/failing.tcplab"
printf 'host attacker 10.0.9.1\nhost server 10.0.0.2\nserver: listen 80\nattacker: inject [S] from 10.0.9.1:1000 to server:80 count 100000 every 1us\nafter 1s\n' >"$out/runaway.tcplab"
removed=0
describe() { # PATH: what the path is now
	local p=$1
	if [[ -L $p ]]; then
		echo "kept: a symlink to $(readlink "$p") holding '$(head -c 20 "$p" 2>/dev/null </dev/null)'"
	elif [[ -c $p ]]; then
		echo "kept: a character device"
	elif [[ -f $p ]]; then
		echo "kept: a file holding '$(head -c 20 "$p")'"
	elif [[ -e $p ]]; then
		echo "kept"
	else
		removed=1
		echo "REMOVED"
	fi
}
row() { printf '%-58s %4s  %s\n' "$1" "$2" "$3"; }
leftovers() { # the temporary files a run left beside its outputs
	find "$out" -name '.*.tcplab-*' | wc -l
}

echo "before" >"$out/report.html"
rc=0
"$tcplab" run "$out/failing.tcplab" --svg "$out/report.html" >/dev/null 2>&1 || rc=$?
row "a failing run, --svg an existing file" "$rc" "$(describe "$out/report.html")"
ln -s report.html "$out/link.html"
rc=0
"$tcplab" run "$out/failing.tcplab" --html "$out/link.html" >/dev/null 2>&1 || rc=$?
row "a failing run, --html a symlink" "$rc" "$(describe "$out/link.html")"
rc=0
"$tcplab" run "$out/runaway.tcplab" --max-events 100000000 --html "$out/link.html" >/dev/null 2>&1 &
pid=$!
sleep 0.3
kill -INT "$pid"
wait "$pid" || rc=$?
row "a run interrupted by SIGINT, --html a symlink" "$rc" "$(describe "$out/link.html")"
if ((root)); then
	mknod "$out/full" c 1 7
	mknod "$out/null" c 1 3
	rc=0
	"$tcplab" run hutu --pcap "$out/full" >/dev/null 2>&1 || rc=$?
	row "--pcap a device node that fails writes (/dev/full's)" "$rc" "$(describe "$out/full")"
	rc=0
	"$tcplab" run --kernel syn-recv-windows --svg "$out/null" >/dev/null 2>&1 || rc=$?
	row "a refused kernel run, --svg a device node (/dev/null's)" "$rc" "$(describe "$out/null")"
	if ((removed)); then
		row "/dev/stdout: not tried, a path above was removed" "-" ""
	else
		rc=0
		"$tcplab" run --kernel hutu --pcap /dev/stdout >"$out/stdout.pcap" 2>/dev/null &
		pid=$!
		sleep 2
		kill -INT "$pid"
		wait "$pid" || rc=$?
		if [[ -L /dev/stdout ]]; then
			what="kept: a symlink to $(readlink /dev/stdout)"
		else
			what=REMOVED
			removed=1
		fi
		row "a kernel run interrupted by SIGINT, --pcap /dev/stdout" "$rc" "$what, $(wc -c <"$out/stdout.pcap") bytes of report there"
	fi
else
	row "device nodes, the kernel and /dev/stdout: skipped (need root)" "-" ""
fi
row "temporary files left beside the outputs" "-" "$(leftovers)"

# --- 2. runaway scenarios ---------------------------------------------------
header "runaway scenarios on the command line (default budget: 200,000 events, 128 MB, 5M sockets and packets for conditions)"
sc=$tmp/sc
mkdir "$sc"
printf 'host attacker 10.0.9.1\nhost server 10.0.0.2\nserver: listen 80\nattacker: inject [S] from 10.0.9.1:1000 to server:80 count 1000000 every 1us\n' >"$sc/million.tcplab"
cp "$out/runaway.tcplab" "$sc/flood.tcplab"
{
	printf 'host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80 backlog 4096\n'
	for i in $(seq 0 9); do printf 'repeat 10000 client: connect server:80 as c%d{i}\n' "$i"; done
	printf 'after 1s\n'
} >"$sc/connections.tcplab"
printf 'host client 10.0.0.1\nhost server 10.0.0.2\nhost attacker 10.0.9.1\nserver: listen 80 backlog 4096\nrepeat 10000 client: connect server:80 as a{i}\nafter 1s\nattacker: inject [S] from 10.0.9.1:1000 to server:80 count 100000 every 10us\nuntil server: count ESTABLISHED >= 100000 within 1h\n' >"$sc/until.tcplab"
{
	printf 'host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80\nset server tcp_rcv_window 1073741824\nclient: connect server:80\nafter 10ms\n'
	for _ in $(seq 1000); do printf 'client: write conn 1048576 bytes\nafter 100ms\n'; done
} >"$sc/data.tcplab"
{
	printf 'host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80 backlog 4096\n'
	# The lines that fit in 64 KB (about 1,400).
	for i in $(seq 0 1399); do printf 'repeat 10000 client: connect server:80 as c%dx{i}\n' "$i"; done >"$tmp/lines"
	head -c 63000 "$tmp/lines"
} >"$sc/repeats64k.tcplab"
printf 'host client 10.0.0.1\nhost server 10.0.0.2\nhost attacker 10.0.9.1\nserver: listen 80\nserver: accept\nclient: connect server:80\nuntil server: conn accept returned within 1s\nclient: write conn 1000000 bytes\nafter 2s\nserver: read conn 1000000\nafter 1s\nattacker: inject [S] from 10.0.9.1:1000 to server:80 count 10000 every 10us\nuntil server: conn received "zzz" within 1s\n' >"$sc/received.tcplab"
printf 'host attacker 10.0.9.1\nhost server 10.0.0.2\nserver: listen 80\nattacker: inject [S] from 10.0.9.1:1000 to server:80 count 60000 every 1us\nuntil server: packets in [S] >= 1000000 within 1s\n' >"$sc/packets.tcplab"
{
	printf 'host client 10.0.0.1\nhost server 10.0.0.2\n'
	for _ in $(seq 100000); do printf 'rule server in sport 9 drop\n'; done
} >"$sc/rules.tcplab"
printf 'host client 10.0.0.1\nhost server 10.0.0.2\nserver: listen 80 backlog 4096\nrepeat 10000 client: connect server:80 as c{i}\n' >"$sc/at.tcplab"
at_flags=()
for i in $(seq 200); do at_flags+=(--at "$((1000 + i))ms"); done
measure "inject count 1000000 every 1us" "$tcplab" run "$sc/million.tcplab"
measure "inject 100,000 SYNs every 1us" "$tcplab" run "$sc/flood.tcplab"
measure "the same with --html" "$tcplab" run "$sc/flood.tcplab" --html "$tmp/flood.html"
measure "the same with --max-events 1000000" "$tcplab" run "$sc/flood.tcplab" --max-events 1000000
measure "100,000 repeated connects" "$tcplab" run "$sc/connections.tcplab"
measure "the same with --html" "$tcplab" run "$sc/connections.tcplab" --html "$tmp/conns.html"
measure "until on a 4,098-socket host" "$tcplab" run "$sc/until.tcplab"
measure "1,000 writes of 1 MB, 1 GB window" "$tcplab" run "$sc/data.tcplab"
measure "64 KB of repeat 10000 lines" "$tcplab" run "$sc/repeats64k.tcplab"
measure "until received TEXT after a 1 MB read" "$tcplab" run "$sc/received.tcplab"
measure "until packets during a 60,000-SYN flood" "$tcplab" run "$sc/packets.tcplab"
measure "100,000 rule lines" "$tcplab" run "$sc/rules.tcplab"
measure "200 --at snapshots of 10,000 sockets" "$tcplab" run "$sc/at.tcplab" "${at_flags[@]}"

# --- 3. bad inputs ----------------------------------------------------------
header "bad inputs (files are read up to 4 MiB)"
seq 1 100000 | awk '{printf "host h%d 10.%d.%d.%d\n", $1, int($1/65536)%256, int($1/256)%256, $1%256}' >"$tmp/hosts.tcplab"
{
	printf 'host '
	head -c 1048576 /dev/zero | tr '\0' x
	printf ' 10.0.0.1\n'
} >"$tmp/word.tcplab"
head -c 5000000 /dev/zero | tr '\0' '\n' >"$tmp/big.tcplab"
measure "/dev/zero" "$tcplab" run /dev/zero
measure "/dev/urandom" "$tcplab" run /dev/urandom
measure "a 5 MB file" "$tcplab" run "$tmp/big.tcplab"
measure "100,000 host lines" "$tcplab" run "$tmp/hosts.tcplab"
measure "a 1 MB word" "$tcplab" run "$tmp/word.tcplab"
measure "a 100 KB scenario name" "$tcplab" run "$(head -c 100000 /dev/zero | tr '\0' n)"

# --- 4. the parser ----------------------------------------------------------
printf '\n== the parser on valid scenarios of 1,000 to 100,000 lines\n'
go test -run '^$' -bench 'Parse$' -benchtime 5x ./scenario | grep '^Benchmark' || true

# --- 5. watch ---------------------------------------------------------------
if ((watch)); then
	printf '\n== watch under load (loopback connections in a namespace of its own)\n'
	if ((root)); then
		secs=10
		((quick)) && secs=3
		# Each connection makes ten state changes: 500, 1,000 and 2,000
		# connections/s are 5k, 10k and 20k changes/s; then 5,000 and
		# 10,000 connections/s (50k and 100k changes/s).
		"$tmp/watchload" -rates 500,1000,2000,5000,10000 -duration "${secs}s" || echo "watchload failed"
	else
		echo "skipped: watch needs root"
	fi
fi

# --- 6. the page ------------------------------------------------------------
printf '\n== the page under 50 hostile requests at once (4 simulator runs at a time, 10 s each at most)\n'
port=$((20000 + RANDOM % 20000))
"$tcplab" serve --kernel=false --listen "127.0.0.1:$port" >"$tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do
	curl -s -o /dev/null "http://127.0.0.1:$port/api/info" 2>/dev/null && break
	sleep 0.05
done
"$tmp/hostile" -url "http://127.0.0.1:$port" -n 50 || echo "the page did not answer a plain run afterwards"
echo "the server's peak RSS: $(awk '/VmHWM/ {printf "%d MB", $2/1024}' "/proc/$serve_pid/status")"
"$tmp/hostile" -url "http://127.0.0.1:$port" -n 50 >/dev/null 2>&1 &
load=$!
sleep 0.3
start=$(date +%s%N)
kill -TERM "$serve_pid"
rc=0
wait "$serve_pid" || rc=$?
echo "SIGTERM during a second round of 50: the server exited ($rc) in $((($(date +%s%N) - start) / 1000000)) ms"
serve_pid=
wait "$load" 2>/dev/null || true
