#!/usr/bin/env bash
# bench/ss.sh: time `tcplab ss` and `tcplab stats` against iproute2's `ss -tan`
# (and netstat if present) on the same table of loopback sockets, held open by
# bench/sockets. See bench/README.md.
#
#   bash bench/ss.sh [--conns N] [--runs N] [--timewait K]
set -euo pipefail

conns=20000
runs=10
timewait=0

usage() {
	cat <<EOF
usage: bash bench/ss.sh [--conns N] [--runs N] [--timewait K]
  --conns N     loopback TCP connections to hold open, 2N sockets (default $conns)
  --runs N      timed runs of each command (default $runs)
  --timewait K  close K of the connections first, leaving K sockets in TIME_WAIT (default $timewait)
EOF
}

die() {
	echo "ss.sh: $*" >&2
	exit 1
}

while (($#)); do
	case $1 in
	--conns) conns=${2:-}; shift 2 || die "--conns needs a value" ;;
	--conns=*) conns=${1#*=}; shift ;;
	--runs) runs=${2:-}; shift 2 || die "--runs needs a value" ;;
	--runs=*) runs=${1#*=}; shift ;;
	--timewait) timewait=${2:-}; shift 2 || die "--timewait needs a value" ;;
	--timewait=*) timewait=${1#*=}; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
[[ $conns =~ ^[1-9][0-9]*$ ]] || die "--conns $conns: want a positive integer"
[[ $runs =~ ^[1-9][0-9]*$ ]] || die "--runs $runs: want a positive integer"
[[ $timewait =~ ^[0-9]+$ ]] && ((timewait <= conns)) || die "--timewait $timewait: want 0..$conns"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v go >/dev/null || die "go is not in PATH (under sudo: sudo env PATH=\"\$PATH\" bash bench/ss.sh)"
command -v ss >/dev/null || die "ss (iproute2) is not installed"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcplab-bench.XXXXXX")
sock_pid=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $sock_pid ]]; then
		# SIGTERM and the end of its stdin both make it close everything.
		kill -TERM "$sock_pid" 2>/dev/null || true
		exec 3>&- || true
		local i
		for ((i = 0; i < 300; i++)); do
			kill -0 "$sock_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$sock_pid" 2>/dev/null; then
			echo "ss.sh: socket program (pid $sock_pid) still running after 30 s, killing it" >&2
			kill -KILL "$sock_pid" 2>/dev/null || true
		fi
		wait "$sock_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "building tcplab and bench/sockets" >&2
# As the README installs it: without cgo (the net package's cgo resolver
# would add libc's dynamic loading, about 0.7 ms, to every start).
CGO_ENABLED=0 go build -o "$tmp/tcplab" ./cmd/tcplab
go build -o "$tmp/sockets" ./bench/sockets
# The floor: a Go program that only prints a line.
mkdir "$tmp/hello"
printf 'package main\n\nimport "os"\n\nfunc main() { os.Stdout.WriteString("hello\\n") }\n' >"$tmp/hello/main.go"
printf 'module hello\n\ngo 1.22\n' >"$tmp/hello/go.mod"
(cd "$tmp/hello" && CGO_ENABLED=0 GOFLAGS= go build -o "$tmp/hello-world" .)

# The socket program runs until its stdin closes: keep a FIFO open on fd 3.
mkfifo "$tmp/in"
"$tmp/sockets" -conns "$conns" -timewait "$timewait" <"$tmp/in" >"$tmp/sockets.out" 2>"$tmp/sockets.err" &
sock_pid=$!
exec 3>"$tmp/in"
for ((i = 0; i < 900; i++)); do
	grep -q '^ready ' "$tmp/sockets.out" && break
	if ! kill -0 "$sock_pid" 2>/dev/null; then
		cat "$tmp/sockets.err" >&2
		sock_pid=
		die "the socket program ended before it was ready"
	fi
	sleep 0.1
done
grep -q '^ready ' "$tmp/sockets.out" || { cat "$tmp/sockets.err" >&2; die "the socket program was not ready after 90 s"; }
cat "$tmp/sockets.err" >&2
ready_pid=$(awk '/^ready /{print $2; exit}' "$tmp/sockets.out")
[[ $ready_pid == "$sock_pid" ]] || echo "ss.sh: warning: socket program says pid $ready_pid, started as $sock_pid" >&2

cmds=("$tmp/hello-world" "ss -tan" "ss -tan state listening")
if command -v netstat >/dev/null; then
	cmds+=("netstat -tan")
fi
cmds+=(
	"$tmp/tcplab ss"
	"$tmp/tcplab ss --state listening"
	"$tmp/tcplab ss --state established --sport 22"
	"$tmp/tcplab stats"
)

# Both listings should count the same sockets. Other programs open and
# close sockets meanwhile, so allow a few lines and try three times.
want=$((2 * conns - timewait))
for try in 1 2 3; do
	ss_lines=$(ss -tan | wc -l) || die "ss -tan failed"
	tl_lines=$("$tmp/tcplab" ss | wc -l) || die "tcplab ss failed"
	echo "lines: ss -tan $ss_lines, tcplab ss $tl_lines (bench sockets: $want)" >&2
	d=$((ss_lines - tl_lines))
	((d < 0)) && d=$((-d))
	((d <= 10)) && break
	((try < 3)) || die "ss -tan and tcplab ss differ by $d lines"
	sleep 1
done
((ss_lines > want)) || die "ss -tan shows $ss_lines lines, fewer than the $want sockets held open"

# One untimed run of each (a warm-up): a command that fails is not timed.
ok=()
declare -A failed=()
for c in "${cmds[@]}"; do
	read -ra argv <<<"$c"
	if "${argv[@]}" >/dev/null 2>"$tmp/cmd.err"; then
		ok+=("$c")
	else
		failed[$c]="failed (exit $?)"
		echo "ss.sh: ${c//"$tmp/"/}: $(head -c 300 "$tmp/cmd.err")" >&2
	fi
done

declare -A median=() best=()
if command -v hyperfine >/dev/null && ((${#ok[@]} > 0)); then
	method="hyperfine $(hyperfine --version | awk '{print $2}'), $runs runs, 1 warm-up"
	shell=()
	if [[ $(hyperfine --help) == *--shell=none* ]]; then
		shell=(--shell=none)
	fi
	names=()
	for c in "${ok[@]}"; do
		names+=(--command-name "${c//"$tmp/"/}")
	done
	hyperfine --runs "$runs" --warmup 1 "${shell[@]}" --style basic \
		--export-csv "$tmp/hyperfine.csv" "${names[@]}" "${ok[@]}" >&2
	# command,mean,stddev,median,user,system,min,max (seconds), in order.
	i=0
	while IFS=, read -r _ _ _ med _ _ min _; do
		median[${ok[i]}]=$(awk -v s="$med" 'BEGIN{printf "%.2f", s*1000}')
		best[${ok[i]}]=$(awk -v s="$min" 'BEGIN{printf "%.2f", s*1000}')
		i=$((i + 1))
	done < <(tail -n +2 "$tmp/hyperfine.csv")
	((i == ${#ok[@]})) || die "hyperfine exported $i rows for ${#ok[@]} commands"
else
	method="bash loop, date +%s%N, $runs runs after 1 warm-up"
	for c in "${ok[@]}"; do
		read -ra argv <<<"$c"
		times=()
		for ((r = 0; r < runs; r++)); do
			s=$(date +%s%N)
			"${argv[@]}" >/dev/null 2>&1 || { failed[$c]="failed (exit $?)"; break; }
			e=$(date +%s%N)
			times+=($((e - s)))
		done
		[[ -z ${failed[$c]:-} ]] || continue
		read -r "median[$c]" "best[$c]" < <(printf '%s\n' "${times[@]}" | sort -n | awk '
			{ a[NR] = $1 }
			END {
				m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
				printf "%.2f %.2f\n", m / 1e6, a[1] / 1e6
			}')
	done
fi

echo
echo "$ss_lines lines from ss -tan ($want bench sockets), $(uname -r), $method"
# Each tcplab listing against the ss command that lists the same sockets:
# above 1 is slower than ss, below 1 faster.
declare -A ref=(
	["$tmp/tcplab ss"]="ss -tan"
	["$tmp/tcplab ss --state listening"]="ss -tan state listening"
)
printf '%-46s %10s %10s  %s\n' command "median ms" "min ms" "vs ss (median)"
for c in "${cmds[@]}"; do
	name=${c//"$tmp/"/}
	if [[ -n ${failed[$c]:-} ]]; then
		printf '%-46s %21s\n' "$name" "${failed[$c]}"
		continue
	fi
	vs=
	r=${ref[$c]:-}
	if [[ -n $r && -n ${median[$r]:-} ]]; then
		vs=$(awk -v a="${median[$c]}" -v b="${median[$r]}" 'BEGIN{printf "%.2fx", a/b}')
		vs="$vs of $r"
	fi
	printf '%-46s %10s %10s  %s\n' "$name" "${median[$c]}" "${best[$c]}" "$vs"
done
