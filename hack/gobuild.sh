# Sourced (not run) by hack/build-controlplane.sh and hack/build-tools.sh: the versioned cache they
# build into, outside the git tree, and building one Go command from a throwaway wrapper module.
#
# Sets KUBE_VERSION (controlplane.env, or KUBE_VERSION_OVERRIDE), OUT (the cache directory of that
# release) and BIN (its bin/). XMR_ESCROW_CACHE moves the cache root.

GOBUILD_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=controlplane.env
source "$GOBUILD_HERE/controlplane.env"
KUBE_VERSION="${KUBE_VERSION_OVERRIDE:-$KUBE_VERSION}"
CACHE_ROOT="${XMR_ESCROW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xmr-escrow-operator}"
OUT="$CACHE_ROOT/controlplane/$KUBE_VERSION"
BIN="$OUT/bin"
LOG_TAG="$(basename "$0" .sh)"

log() { printf '[%s %(%H:%M:%S)T] %s\n' "$LOG_TAG" -1 "$*" >&2; }

# timed WHAT COMMAND...: log WHAT, run the command, log how long it took (a newcomer's first build
# runs for minutes: every step says what it does and when it is done).
timed() {
  local what=$1 started=$SECONDS
  shift
  log "$what"
  "$@"
  log "$what: done in $((SECONDS - started)) s"
}

# Call once something has to be built: checks for Go and sets the build environment.
prepare_go_build() {
  command -v go >/dev/null || {
    echo "error: Go is not installed; install Go >= 1.24 (apt-get install golang) and run again" >&2
    exit 1
  }
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  mkdir -p "$BIN"
}

# go_build_module DIR MODULE@VERSION PACKAGE LDFLAGS OUTPUT: a wrapper module in DIR (named after DIR)
# that requires MODULE@VERSION builds PACKAGE into OUTPUT through a temporary name, so a killed build
# leaves no binary behind.
go_build_module() {
  local dir=$1 requirement=$2 package=$3 ldflags=$4 output=$5
  mkdir -p "$dir"
  (
    cd "$dir"
    rm -f go.mod go.sum
    go mod init "xmrescrow.dev/hack/$(basename "$dir")" >/dev/null 2>&1
    go mod edit -require "$requirement"
    printf 'package tools\n' > tools.go
    go build -trimpath -ldflags "$ldflags" -o "$output.tmp" "$package"
  )
  mv "$output.tmp" "$output"
}
