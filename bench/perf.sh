#!/usr/bin/env bash
# bench/perf.sh: run every benchmark of docs/performance.md and print its
# figures as markdown; with --write, put them into docs/performance.md
# between its "bench:begin" and "bench:end" markers. See bench/README.md.
#
#   bash bench/perf.sh [--write] [--count N] [--no-ss]
set -euo pipefail

write=0
count=3
ss=1

usage() {
	cat <<EOF
usage: bash bench/perf.sh [--write] [--count N] [--no-ss]
  --write    replace the figures in docs/performance.md (between its markers)
  --count N  runs of each go benchmark; the table shows the median (default $count)
  --no-ss    leave out bench/ss.sh (40,000 loopback sockets, about 1.5 minutes)
EOF
}

die() {
	echo "perf.sh: $*" >&2
	exit 1
}

while (($#)); do
	case $1 in
	--write) write=1; shift ;;
	--count) count=${2:-}; shift 2 || die "--count needs a value" ;;
	--count=*) count=${1#*=}; shift ;;
	--no-ss) ss=0; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
[[ $count =~ ^[1-9][0-9]*$ ]] || die "--count $count: want a positive integer"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v go >/dev/null || die "go is not in PATH"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tcplab-perf.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT

# median FILE BENCH UNIT: the median of a benchmark's metric over its runs.
median() {
	awk -v name="$2" -v unit="$3" '
		$1 ~ "^"name"(-[0-9]+)?$" { for (i = 3; i < NF; i++) if ($(i+1) == unit) v[n++] = $i }
		END {
			if (n == 0) { print "-"; exit }
			for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
			m = (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
			if (m >= 1000) printf "%.0f", m; else if (m >= 10) printf "%.1f", m; else printf "%.3g", m
		}' "$1"
}

echo "running the go benchmarks ($count runs each) ..." >&2
go test -run '^$' -bench 'Bulk|Lifecycle' -benchmem -count "$count" ./sim >"$tmp/sim.txt"
go test -run '^$' -bench 'Tour' -benchmem -count "$count" ./scenario >"$tmp/tour.txt"
go test -run '^$' -bench 'EngineCorpus' -benchmem -count "$count" ./pkt >"$tmp/pkt.txt"
go test -run '^$' -bench 'Explain' -count "$count" ./capture >"$tmp/explain.txt"

echo "timing the binaries ..." >&2
CGO_ENABLED=0 go build -o "$tmp/tcplab" ./cmd/tcplab
CGO_ENABLED=0 go build -o "$tmp/tcplab-full" ./cmd/tcplab-full
# Package initialisation of tcplab ss, summed from GODEBUG=inittrace=1,
# the median of 21 starts.
for _ in $(seq 21); do
	GODEBUG=inittrace=1 "$tmp/tcplab" ss --state listening 2>&1 >/dev/null |
		awk '$1 == "init" { t += $5; b += $8 } END { printf "%.3f %d\n", t, b }'
done | sort -n | awk 'NR == 11 { print }' >"$tmp/init.txt"
read -r init_ms init_bytes <"$tmp/init.txt"
# tcplab tour: wall time (process start to exit) and peak RSS (GNU
# time's), the medians of 21 runs.
command -v /usr/bin/time >/dev/null || die "GNU time (/usr/bin/time) is not installed"
for _ in $(seq 21); do
	s=$(date +%s%N)
	"$tmp/tcplab" tour >/dev/null
	e=$(date +%s%N)
	echo $((e - s))
done | sort -n | awk 'NR == 11 { printf "%.1f\n", $1 / 1e6 }' >"$tmp/tour-ms.txt"
for _ in $(seq 21); do
	/usr/bin/time -f '%M' "$tmp/tcplab" tour 2>&1 >/dev/null | tail -1
done | sort -n | awk 'NR == 11 { print }' >"$tmp/tour-kb.txt"
tour_ms=$(cat "$tmp/tour-ms.txt")
tour_kb=$(cat "$tmp/tour-kb.txt")

{
	echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)),"
	echo "Linux $(uname -r), $(go version | awk '{ print $3 }'); medians of $count runs (\`bash bench/perf.sh\`)."
	echo
	echo "| benchmark | figure | reproduce |"
	echo "|---|---|---|"
	for v in trace-off trace-on; do
		f=$tmp/sim.txt
		echo "| bulk, 100 MB over one connection, trace ${v#trace-} | $(median "$f" "BenchmarkBulk/$v" MB/s) MB/s, $(median "$f" "BenchmarkBulk/$v" segments/s) segments/s, $(median "$f" "BenchmarkBulk/$v" alloc-B/byte) allocated bytes per byte | \`go test ./sim -run '^\$' -bench Bulk/$v -benchmem\` |"
	done
	for v in trace-off trace-on; do
		f=$tmp/sim.txt
		echo "| connection lifecycles, trace ${v#trace-} | $(median "$f" "BenchmarkLifecycle/$v" lifecycles/s)/s, $(median "$f" "BenchmarkLifecycle/$v" B/op) B and $(median "$f" "BenchmarkLifecycle/$v" allocs/op) allocations each | \`go test ./sim -run '^\$' -bench Lifecycle/$v -benchmem\` |"
	done
	echo "| the library ($(ls "$(dirname "$0")/../scenario/library"/*.tcplab | wc -l | tr -d ' ') scenarios) in the simulator | $(median "$tmp/tour.txt" BenchmarkTour ns/op | awk '{ printf "%.2f", $1 / 1e6 }') ms, $(median "$tmp/tour.txt" BenchmarkTour B/op | awk '{ printf "%.1f", $1 / 1e6 }') MB allocated | \`go test ./scenario -run '^\$' -bench Tour -benchmem\` |"
	echo "| \`tcplab tour\` as a process | $tour_ms ms wall, $(awk -v k="$tour_kb" 'BEGIN { printf "%.1f", k / 1024 }') MB peak RSS | \`/usr/bin/time -v tcplab tour\` |"
	echo "| own packetdrill scripts on the engine (pkt/testdata) | $(median "$tmp/pkt.txt" BenchmarkEngineCorpus ns/op | awk '{ printf "%.2f", $1 / 1e6 }') ms a pass | \`go test ./pkt -run '^\$' -bench EngineCorpus\` |"
	echo "| capture reading and inference (10,000 short connections) | $(median "$tmp/explain.txt" BenchmarkExplain packets/s | awk '{ printf "%.2f", $1 / 1e6 }') M packets/s | \`go test ./capture -run '^\$' -bench Explain\` |"
	echo "| package initialisation of \`tcplab ss --state listening\` | $init_ms ms, $init_bytes bytes of heap | \`GODEBUG=inittrace=1 tcplab ss --state listening\` |"
} >"$tmp/figures.md"

if ((ss)); then
	echo "running bench/ss.sh (40,000 loopback sockets) ..." >&2
	bash bench/ss.sh --runs 100 >"$tmp/ss.txt"
	{
		echo
		echo '```'
		sed '/./,$!d' "$tmp/ss.txt" # without the blank line before the table
		echo '```'
	} >>"$tmp/figures.md"
fi

cat "$tmp/figures.md"
if ((write)); then
	doc=docs/performance.md
	grep -q '^<!-- bench:begin -->$' "$doc" && grep -q '^<!-- bench:end -->$' "$doc" || die "$doc has no bench:begin/bench:end markers"
	awk -v figures="$tmp/figures.md" '
		/^<!-- bench:begin -->$/ { print; while ((getline l < figures) > 0) print l; skip = 1; next }
		/^<!-- bench:end -->$/ { skip = 0 }
		!skip { print }' "$doc" >"$tmp/doc.md"
	cp "$tmp/doc.md" "$doc"
	echo "perf.sh: wrote the figures into $doc" >&2
fi
