#!/usr/bin/env bash
# A/B of the bench's section 2 (`bench dispatch`): the code of a baseline commit against the
# working tree, both run alternately in the same minutes on this machine (tests/BENCH.md, "CPU
# per delivery against the code the issue measured").
#
#   tests/bench-ab.sh BASELINE [ROUNDS]      e.g. tests/bench-ab.sh 5c1692b 3
#
# Builds three bench binaries in one shared target dir (so dependencies compile once), with the
# same cheaper release settings for all (no LTO, 16 codegen units, line tables; not the shipped
# profile: an A/B needs equal settings):
#   bench-old            the baseline commit (exported with git archive), glibc malloc
#   bench-new-glibc      the working tree, glibc malloc
#   bench-new-mimalloc   the working tree, --features mimalloc (as the Lambda binaries ship)
# then runs `bench dispatch` ROUNDS times (default 3) in the order old, new-glibc, new-mimalloc,
# old, ..., each output in $AB_DIR/runs/ with the load average before and after, and prints one
# summary line per run.
#
# AB_DIR (default /tmp/bench-ab) holds old/ (the exported baseline), target/, bin/ and runs/.
# A binary is reused when bin/<name>.key matches its source (the baseline commit, or the tree of
# the code at HEAD with no local changes); delete bin/ to force a rebuild. Builds run under
# `nice -n 5`. A first build takes 20-40 minutes on a 2-vCPU VM.
set -euo pipefail

baseline=${1:?usage: tests/bench-ab.sh BASELINE [ROUNDS]}
rounds=${2:-3}
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
ab=${AB_DIR:-/tmp/bench-ab}
base_sha=$(git -C "$repo" rev-parse --verify "$baseline^{commit}")
mkdir -p "$ab/bin" "$ab/runs" "$ab/target"

export CARGO_TARGET_DIR="$ab/target"
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
export CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=false

# The code that goes into the bench (docs and scripts aside).
code=(Cargo.toml Cargo.lock shared functions tests/Cargo.toml tests/src)
new_key() {
    if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no -- "${code[@]}")" ]; then
        echo "dirty-$(date +%s)"
    else
        git -C "$repo" ls-tree -r HEAD -- "${code[@]}" | sha1sum | cut -d' ' -f1
    fi
}

# build NAME KEY DIR [cargo args...]
build() {
    local name=$1 key=$2 dir=$3
    shift 3
    if [ -x "$ab/bin/$name" ] && [ "$(cat "$ab/bin/$name.key" 2>/dev/null)" = "$key" ]; then
        echo "== $name: reusing $ab/bin/$name"
        return
    fi
    echo "== $name: building in $dir ($(date -u +%H:%M:%S) UTC)"
    (cd "$dir" && nice -n 5 cargo build --release -p webhooks-tests --bin bench "$@")
    cp "$CARGO_TARGET_DIR/release/bench" "$ab/bin/$name"
    echo "$key" > "$ab/bin/$name.key"
}

if [ "$(cat "$ab/old/.ab-commit" 2>/dev/null)" != "$base_sha" ]; then
    rm -rf "$ab/old"
    mkdir -p "$ab/old"
    git -C "$repo" archive "$base_sha" | tar -x -C "$ab/old"
    echo "$base_sha" > "$ab/old/.ab-commit"
fi
build bench-old "$base_sha" "$ab/old"
key=$(new_key)
build bench-new-glibc "$key" "$repo"
build bench-new-mimalloc "$key" "$repo" --features mimalloc

# One line per run: the raw ceiling and the dispatcher path (old: its one row; new: format 2).
summary() {
    awk -F'  +' '
        /^raw ceiling/ { raw_rate = $2; raw_cpu = $5 }
        /^Dispatcher::handle \(memory ports/ { p = "old path"; rate = $2; cpu = $5; vs = $7 }
        /^Dispatcher::handle, job format 2/ { p = "format 2"; rate = $2; cpu = $5; add = $6; vs = $8 }
        /^Dispatcher::handle, job format 1/ { f1add = $6 }
        /^CPU the dispatcher path adds per delivery:/ { split($0, a, ": "); add = sprintf("%.1f", a[2] + 0) }
        END {
            printf "raw %s/s %s us | %s %s/s %s us, adds %s us, vs raw %s", raw_rate, raw_cpu, p, rate, cpu, add, vs
            if (f1add != "") printf " | format 1 adds %s us", f1add
            printf "\n"
        }' "$1"
}

started=$(date -u +%Y%m%dT%H%M)
echo "== $rounds rounds of bench dispatch, alternating; outputs in $ab/runs/$started-*"
for r in $(seq 1 "$rounds"); do
    for name in bench-old bench-new-glibc bench-new-mimalloc; do
        out="$ab/runs/$started-r$r-$name.txt"
        {
            echo "# $name, round $r of $rounds: baseline $base_sha, new $(git -C "$repo" rev-parse --short HEAD)"
            echo "# start $(date -u +%FT%TZ), uptime: $(uptime)"
            (cd "$ab/runs" && "$ab/bin/$name" dispatch)
            echo "# end $(date -u +%FT%TZ), uptime: $(uptime)"
        } > "$out" 2>&1
        printf 'round %s %-19s load %s | %s\n' "$r" "$name" \
            "$(sed -n 2p "$out" | sed 's/.*load average: //')" "$(summary "$out")"
    done
done
