#!/usr/bin/env bash
# Builds helm, kustomize and kind from their Go modules, and gitops-verdict from this repository's
# hack/gitops-verdict, into the same versioned cache directory as the control plane
# (hack/build-controlplane.sh), outside the git tree. A second run with the binaries present does no
# network I/O and exits at once.
#
#   hack/build-tools.sh                   build (or confirm) the tools, print their directory
#   HELM_VERSION=v3.19.5 hack/...         another release of one tool (the pins are below)
#
# Pins: released versions that build with Go 1.26 (GOTOOLCHAIN=local) and use the Kubernetes 1.34
# libraries of the dev cluster:
#   helm      v3.19.5  k8s.io/client-go v0.34.2, go 1.24   (v3.20+ moves to client-go v0.35+)
#   kustomize v5.7.1   the kustomize kubectl v1.34 embeds, so `kustomize build` == `kubectl kustomize`
#   kind      v0.30.0  default node image kindest/node:v1.34.0 (hack/kind-e2e.sh)
# gitops-verdict (tests/support/gitops.py) pins its own modules in hack/gitops-verdict/go.mod; its
# stamp is a hash of its sources, so an edited main.go or go.mod is built again.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=gobuild.sh
source "$HERE/gobuild.sh"
HELM_VERSION="${HELM_VERSION:-v3.19.5}"
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.7.1}"
KIND_VERSION="${KIND_VERSION:-v0.30.0}"

# tool  module  package  version
TOOLS=(
  "helm helm.sh/helm/v3 helm.sh/helm/v3/cmd/helm $HELM_VERSION"
  "kustomize sigs.k8s.io/kustomize/kustomize/v5 sigs.k8s.io/kustomize/kustomize/v5 $KUSTOMIZE_VERSION"
  "kind sigs.k8s.io/kind sigs.k8s.io/kind $KIND_VERSION"
)

# gitops-verdict: a module of this repository, stamped with a hash of its sources (go.mod, go.sum,
# main.go in this order; tests/support/gitops.py computes the same to refuse a stale binary).
VERDICT_SRC="$HERE/gitops-verdict"
VERDICT_VERSION="src-$(cat "$VERDICT_SRC/go.mod" "$VERDICT_SRC/go.sum" "$VERDICT_SRC/main.go" | sha256sum | cut -c1-16)"

# A tool is built when its binary exists and its stamp names the pinned version.
built() { # name version
  [[ -x "$BIN/$1" ]] && [[ "$(cat "$OUT/src/$1/VERSION" 2>/dev/null)" == "$2" ]]
}

all_built() {
  local t name mod pkg version
  for t in "${TOOLS[@]}"; do
    read -r name mod pkg version <<<"$t"
    built "$name" "$version" || return 1
  done
  built gitops-verdict "$VERDICT_VERSION"
}

if all_built; then
  echo "$BIN"
  exit 0
fi

prepare_go_build

ldflags() { # name version
  local flags="-s -w"
  case "$1" in
    helm)
      # What helm's Makefile sets: its version, and the Kubernetes version that
      # .Capabilities.KubeVersion and `helm lint` assume without a cluster (client-go v0.34 -> 1.34).
      flags+=" -X helm.sh/helm/v3/internal/version.version=$2 -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
      local p
      for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        flags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=34"
      done
      ;;
  esac
  echo "$flags"
}

# --- one wrapper module per tool, built serially (2 cores are shared) -------------------------
for t in "${TOOLS[@]}"; do
  read -r name mod pkg version <<<"$t"
  if built "$name" "$version"; then continue; fi
  src="$OUT/src/$name"
  rm -f "$src/VERSION"
  timed "building $name $version" go_build_module "$src" "$mod@$version" "$pkg" "$(ldflags "$name" "$version")" "$BIN/$name"
  echo "$version" > "$src/VERSION"
done

# --- gitops-verdict, from its own module in the tree --------------------------------------------
# -mod=readonly: a go.mod or go.sum that does not cover the imports fails the build instead of
# being rewritten in the git tree.
if ! built gitops-verdict "$VERDICT_VERSION"; then
  mkdir -p "$OUT/src/gitops-verdict"
  rm -f "$OUT/src/gitops-verdict/VERSION"
  (cd "$VERDICT_SRC" && GOFLAGS=-mod=readonly timed "building gitops-verdict" go build -trimpath -ldflags "-s -w" -o "$BIN/gitops-verdict.tmp" .)
  mv "$BIN/gitops-verdict.tmp" "$BIN/gitops-verdict"
  echo "$VERDICT_VERSION" > "$OUT/src/gitops-verdict/VERSION"
fi

log "done in $SECONDS s"
echo "$BIN"
