#!/usr/bin/env bash
# Regenerates the end-to-end section of BENCHMARKS.md, its raw results (docs/bench/results/*.jsonl)
# and the charts (docs/bench/*.svg): LAN and 20 ms WAN runs of every standard workload, a batch
# sweep and an RTT sweep, each comparison method forced, all through `party-node bench` (three
# processes, QUIC on loopback); the throughput of a 10,000-row prediction and warm-pool latency
# through three daemons; then the peers (CrypTen, SecretFlow SPU) in the same sitting, through
# ../shared/anchors when their venvs exist (ANCHORS=0 skips them; their own setup.sh installs them).
#
#   tools/bench/regenerate.sh            # full run (~40–70 min on 2 cores with the peers)
#   RUNS=3 WAN_RUNS=2 tools/bench/regenerate.sh
#   REPORT_ONLY=1 tools/bench/regenerate.sh   # rebuild the Markdown and charts from the results
#
# Run it on a quiet machine: the three parties share the cores, and so does anything else.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
RUNS=${RUNS:-5}
WAN_RUNS=${WAN_RUNS:-3}
SWEEP_RUNS=${SWEEP_RUNS:-3}
OUT=docs/bench/results
TARGET=${CARGO_TARGET_DIR:-target}
mkdir -p "$OUT"

if [[ -z "${REPORT_ONLY:-}" ]]; then
    cargo build --release -p party-node
    BIN="$TARGET/release/party-node"
    {
        echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "commit:  $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (modified)')"
        echo "nproc:   $(nproc)"
        echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
        echo "kernel:  $(uname -srm)"
        echo "memory:  $(grep MemTotal /proc/meminfo | awk '{printf "%.1f GiB", $2/1048576}')"
        echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, before the runs)"
        echo "runs:    LAN $RUNS, WAN $WAN_RUNS, sweeps $SWEEP_RUNS counted run(s) after 1 warm-up"
    } > "$OUT/machine.txt"
    "$BIN" bench --workload all --runs "$RUNS" --json-out "$OUT/lan.jsonl"
    "$BIN" bench --workload all --runs "$WAN_RUNS" --rtt 20ms --rate 1gbit --json-out "$OUT/wan20.jsonl"
    "$BIN" bench --workload mlp-a-b8,mlp-a-b32,lenet5-b8,lenet5-b32 --runs "$SWEEP_RUNS" --json-out "$OUT/batch.jsonl"
    for r in 0 5 10 20 40; do
        "$BIN" bench --workload mlp-a-b1,lenet5-b1 --runs "$SWEEP_RUNS" --rtt "${r}ms" --rate 1gbit \
            --json-out "$OUT/rtt-$(printf %02d "$r").jsonl"
    done
    for m in helper fss fss1; do
        "$BIN" bench --workload relu-100k,cmp-100k,mlp-a-b128,lenet5-b1,lenet5-b64 --runs "$SWEEP_RUNS" \
            --nonlinear "$m" --json-out "$OUT/methods-$m.jsonl"
    done
    rm -f "$OUT/throughput.jsonl" "$OUT/pool.jsonl"
    "$BIN" bench --workload mnist-cnn-10k --json-out "$OUT/throughput.jsonl"
    "$BIN" bench --workload pool-lenet5-b1,pool-mlp-a-b1 --json-out "$OUT/pool.jsonl"
    ANCHORS_DIR=${ANCHORS_DIR:-../shared/anchors}
    if [[ "${ANCHORS:-1}" != 0 && -x /tmp/crypten-anchor/venv/bin/python && -d "$ANCHORS_DIR/crypten" ]]; then
        tmp=$(mktemp -d)
        (cd "$ANCHORS_DIR/crypten" && /tmp/crypten-anchor/venv/bin/python bench.py --out-dir "$tmp") || true
        cat "$tmp"/results-*.jsonl > "$OUT/crypten.jsonl" || true
        # The CIFAR architectures (resnet20-b1, mobilenetv2-b1) and CrypTen's converter matrix.
        rm -f "$OUT/crypten-arch.jsonl"
        /tmp/crypten-anchor/venv/bin/python tools/anchors/crypten_arch.py --out "$OUT/crypten-arch.jsonl" || true
        rm -rf "$tmp"
    fi
    if [[ "${ANCHORS:-1}" != 0 && -x /tmp/spu-anchor/venv/bin/python && -d "$ANCHORS_DIR/spu" ]]; then
        tmp=$(mktemp -d)
        (cd "$ANCHORS_DIR/spu" && /tmp/spu-anchor/venv/bin/python bench.py --out-dir "$tmp" \
            --only matmul_128x784x128,mul_1e6,relu_1e5,gt0_1e5,mlp_a_b1,mlp_a_b128,lenet5_b1,lenet5_b64 \
            --deadline-s "${SPU_DEADLINE_S:-2400}") || true
        cat "$tmp"/results-*.jsonl > "$OUT/spu.jsonl" || true
        rm -rf "$tmp"
    fi
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (after the runs)" >> "$OUT/machine.txt"
fi
cargo run --release -p party-node --example bench_report -- "$OUT" BENCHMARKS.md docs/bench
