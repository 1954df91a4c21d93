#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl from their Go modules into a
# versioned cache outside the git tree. A second run with the binaries present does no network I/O.
#
#   hack/build-controlplane.sh            build (or confirm) the binaries, print their directory
#   KUBE_VERSION_OVERRIDE=v1.34.3 hack/... another release (the default is in controlplane.env)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=gobuild.sh
source "$HERE/gobuild.sh"
BINARIES=(etcd kube-apiserver kube-controller-manager kubectl)

all_present() {
  local b
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
  [[ -f "$OUT/STAMP" ]]
}

if all_present; then
  echo "$BIN"
  exit 0
fi

prepare_go_build

# --- Kubernetes: a wrapper module whose replaces come from the release's own go.mod -------------
KMOD="$OUT/src/kubernetes"
mkdir -p "$KMOD"
log "resolving k8s.io/kubernetes@$KUBE_VERSION"
KGOMOD=$(cd "$KMOD" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
KDIR=$(cd "$KMOD" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
STAGING_VERSION="v0.${KUBE_VERSION#v1.}"   # v1.34.4 -> v0.34.4

(
  cd "$KMOD"
  rm -f go.mod go.sum
  go mod init xmrescrow.dev/hack/kubernetes >/dev/null 2>&1
  GOVER=$(go mod edit -json "$KGOMOD" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Go"])')
  go mod edit -go="$GOVER"
  # Every staging module the release replaces with ./staging/src/... becomes its published tag.
  go mod edit -json "$KGOMOD" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        print(r["Old"]["Path"])
' | while read -r mod; do
    go mod edit -replace "$mod=$mod@$STAGING_VERSION"
  done
  go mod edit -require "k8s.io/kubernetes@$KUBE_VERSION"
  printf 'package tools\n' > tools.go
)

LDPKG=(k8s.io/component-base/version k8s.io/client-go/pkg/version)
MINOR=$(echo "$KUBE_VERSION" | cut -d. -f2)
LDFLAGS="-s -w"
for p in "${LDPKG[@]}"; do
  LDFLAGS+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

for cmd in kube-apiserver kube-controller-manager kubectl; do
  if [[ -x "$BIN/$cmd" ]]; then continue; fi
  (cd "$KMOD" && timed "building $cmd (once; a few minutes on 2 cores)" \
    go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
  mv "$BIN/$cmd.tmp" "$BIN/$cmd"
done

# --- etcd: the version this release pairs with, from its build/dependencies.yaml ----------------
ETCD_VERSION=$(python3 - "$KDIR/build/dependencies.yaml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r'- name: "etcd"\s*\n\s*version:\s*([0-9.]+)', text)
if not m:
    sys.exit("cannot find the etcd version in build/dependencies.yaml")
print(m.group(1))
PY
)
if [[ ! -x "$BIN/etcd" ]]; then
  timed "building etcd v$ETCD_VERSION" go_build_module "$OUT/src/etcd" "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" go.etcd.io/etcd/server/v3 "-s -w" "$BIN/etcd"
fi

printf 'kubernetes %s\netcd %s\n' "$KUBE_VERSION" "$ETCD_VERSION" > "$OUT/STAMP"
log "done in $SECONDS s"
echo "$BIN"
