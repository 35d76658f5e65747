#!/usr/bin/env bash
# The three-party demo in containers: builds a static party-node on the host, a FROM-scratch
# image around it (nothing is pulled), and runs deploy/docker-compose.yml: alice publishes the
# bundled MNIST CNN, bob and the dealer register its plan, bob predicts on bundled images and
# prints accuracy and agreement with plaintext. Exits with the demo's status; removes the
# containers, network and volumes on every exit path.
#
#   deploy/demo.sh                 build everything, run the demo
#   deploy/demo.sh --no-build      reuse the image MEMBRANE_IMAGE (default membrane/party-node:local)
#   deploy/demo.sh --build-only    build the binary and the image, run nothing
#
# Environment: MEMBRANE_IMAGE, MEMBRANE_PROJECT (compose project, default membrane-demo),
# DEMO_IMAGES (1-100, default 24), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

export MEMBRANE_IMAGE=${MEMBRANE_IMAGE:-membrane/party-node:local}
PROJECT=${MEMBRANE_PROJECT:-membrane-demo}
TARGET=x86_64-unknown-linux-gnu
BIN=${CARGO_TARGET_DIR:-target}/$TARGET/release/party-node
mode=${1:-run}
case $mode in run | --no-build | --build-only) ;; *)
  echo "usage: deploy/demo.sh [--no-build | --build-only]" >&2
  exit 2
  ;;
esac

# docker-compose v1 or the `docker compose` plugin, whichever exists.
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  COMPOSE=(docker-compose)
else
  echo "deploy/demo.sh: neither \`docker compose\` nor docker-compose is installed" >&2
  exit 127
fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f deploy/docker-compose.yml "$@"; }

build() {
  echo "== static party-node ($TARGET, crt-static)"
  RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
    cargo build --release --locked -p party-node --target "$TARGET"
  echo "== image $MEMBRANE_IMAGE (FROM scratch)"
  ctx=$(mktemp -d)
  mkdir -p "$ctx"/fixtures "$ctx"/rootfs/membrane/{alice,bob,dealer} "$ctx"/rootfs/{exchange,tmp}
  # Debug info is two thirds of the binary; the image does not need it.
  if command -v strip >/dev/null 2>&1; then strip -o "$ctx"/party-node "$BIN"; else cp "$BIN" "$ctx"/party-node; fi
  cp fixtures/onnx/mnist_cnn.{onnx,input.npy,labels.npy} "$ctx"/fixtures/
  docker build -q -f deploy/Dockerfile -t "$MEMBRANE_IMAGE" "$ctx"
}
ctx=""
started=""
cleanup() {
  [[ -z $ctx ]] || rm -rf "$ctx"
  [[ -z $started ]] || compose down -v --remove-orphans >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ $mode == --no-build ]] || build
[[ $mode == --build-only ]] && exit 0

started=1
compose down -v --remove-orphans >/dev/null 2>&1 || true # leftovers of an interrupted run

echo "== docker-compose demo (project $PROJECT)"
t0=$(date +%s%N)
status=0
# Only `demo` (bob's driver) is attached: the one-shot init and the other drivers exit on their
# own without stopping the stack; when `demo` exits, everything stops and its status is ours.
compose up --no-color --abort-on-container-exit --exit-code-from demo demo || status=$?
echo "== other parties' drivers"
compose logs --no-color alice-driver dealer-driver 2>/dev/null | grep -v '^Attaching' || true
if [[ $status -ne 0 ]]; then
  echo "== node logs (demo failed with status $status)"
  compose logs --no-color --tail 30 alice bob dealer || true
fi
t=$((($(date +%s%N) - t0) / 1000000))
printf "== compose demo: %d.%03d s (status %d)\n" $((t / 1000)) $((t % 1000)) "$status"
exit "$status"
