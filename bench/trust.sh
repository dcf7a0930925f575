#!/usr/bin/env bash
# bench/trust.sh: can the kernel tests and `tcplab diff` be trusted? It runs,
# from this tree, as root:
#
#   1. go test -count=1 ./kernel/... ./internal/full/...   N times in a row
#      (default 20), stopping at the first failure;
#   2. the same M times in a row (default 10) while one core is kept busy by
#      a CPU-burning loop that this script starts and ends (by its PID; it
#      also has a time limit of its own);
#   3. tcplab diff --all   K times (default 5), checking that the verdict
#      table is the same every time, and printing each run's harness line.
#
# and prints the counts and wall times (docs/kernel.md, "Trust"). It creates
# only temporary files and, through the tests, labs that remove themselves.
#
#   sudo env PATH="$PATH" bash bench/trust.sh [--runs N] [--busy M] [--diffs K] [--markdown FILE]
#
# --markdown FILE keeps the last diff's report (diff --all --markdown), the
# text of docs/conformance.md.
set -euo pipefail

runs=20
busy=10
diffs=5
markdown=""
usage() {
	cat <<EOF
usage: bash bench/trust.sh [--runs N] [--busy M] [--diffs K]
  --runs N   test runs on a quiet machine (default 20; 0 to skip)
  --busy M   test runs with one core kept busy (default 10; 0 to skip)
  --diffs K  runs of tcplab diff --all (default 5; 0 to skip)
  --markdown FILE  write the last diff's Markdown report to FILE
EOF
}
while (($#)); do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--busy) busy=$2; shift 2 ;;
	--diffs) diffs=$2; shift 2 ;;
	--markdown) markdown=$2; shift 2 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
for n in "$runs" "$busy" "$diffs"; do
	[[ $n =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v go >/dev/null || { echo "trust.sh: go is not in PATH (sudo env PATH=\"\$PATH\" ...)" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "trust.sh: needs root (network namespaces)" >&2; exit 1; }

tmp=$(mktemp -d)
burner=""
cleanup() {
	if [[ -n $burner ]]; then
		kill "$burner" 2>/dev/null || true
		wait "$burner" 2>/dev/null || true
	fi
	rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Compile first, so that the runs measure the tests, not the build.
go test -count=1 -run '^$' ./kernel/... ./internal/full/... >/dev/null
go build -o "$tmp/tcplab" ./cmd/tcplab
# Beside tcplab, which hands it the commands it keeps out (kernel runs).
go build -o "$tmp/tcplab-full" ./cmd/tcplab-full

# series NAME COUNT: runs the tests COUNT times in a row; prints how many
# passed before the first failure and the wall time of each.
series() {
	local name=$1 count=$2 i start end ok=0 times=()
	for ((i = 1; i <= count; i++)); do
		start=$(date +%s)
		if go test -count=1 ./kernel/... ./internal/full/... >"$tmp/run.txt" 2>&1; then
			ok=$((ok + 1))
			end=$(date +%s)
			times+=("$((end - start))")
			echo "$name: run $i passed ($((end - start)) s)" >&2
		else
			echo "$name: run $i FAILED:"
			# The failing tests with what they said.
			grep -E -A100 -- '--- FAIL|^panic' "$tmp/run.txt" | head -200
			break
		fi
	done
	echo "$name: $ok of $count runs passed in a row (seconds each: ${times[*]:-none})"
	[[ $ok == "$count" ]]
}

status=0
if ((runs > 0)); then
	series "quiet" "$runs" || status=1
fi
if ((busy > 0)); then
	# One core busy: a shell loop, bounded by its own time limit too.
	timeout $((busy * 600)) sh -c 'while :; do :; done' &
	burner=$!
	series "one core busy" "$busy" || status=1
	kill "$burner" 2>/dev/null || true
	wait "$burner" 2>/dev/null || true
	burner=""
fi
if ((diffs > 0)); then
	first=""
	same=0
	for ((i = 1; i <= diffs; i++)); do
		start=$(date +%s)
		"$tmp/tcplab" diff --all --markdown >"$tmp/diff.md" 2>"$tmp/diff.err" || true
		end=$(date +%s)
		# The verdict table: "| scenario | verdict | first difference |".
		awk -F' [|] ' '/^[|] / && !/^[|] scenario/ { sub(/^[|] /, "", $1); print $1, $2 }' "$tmp/diff.md" >"$tmp/table.$i"
		echo "diff --all run $i ($((end - start)) s): $(cut -d' ' -f2- "$tmp/table.$i" | sed 's/known differences/known/' | sort | uniq -c | tr -s ' \n' ' ')"
		grep -E '^harness:' "$tmp/diff.md" | sed 's/^/  /' || true
		grep -E '^- .*(started .* late|run [0-9]+ times)' "$tmp/diff.md" | sed 's/^/  /' || true
		cat "$tmp/diff.err"
		if [[ -n $markdown ]]; then
			cp -- "$tmp/diff.md" "$markdown"
		fi
		if [[ -z $first ]]; then
			first="$tmp/table.$i"
			same=1
		elif cmp -s "$first" "$tmp/table.$i"; then
			same=$((same + 1))
		else
			echo "  the verdict table differs from run 1:"
			diff "$first" "$tmp/table.$i" | sed 's/^/    /' || true
		fi
	done
	echo "diff --all: $same of $diffs runs gave the verdict table of run 1"
	[[ $same == "$diffs" ]] || status=1
fi
exit $status
