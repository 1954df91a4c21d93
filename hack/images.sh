#!/usr/bin/env bash
# make images: build xmr-escrow/operator (the default distroless target, and the debian target as
# xmr-escrow/operator:VERSION-debian) and xmr-escrow/wallet-rpc with podman, from Debian's packages:
# wallet-rpc:0.18.0.0 from bookworm and wallet-rpc:0.18.4.0 from trixie, each Debian package version
# pinned (WALLET_RPC below).
#
# Works on a machine with no Docker engine and no reachable container registry:
# - base images that cannot be pulled are made locally: debian:bookworm-slim and debian:trixie-slim
#   with mmdebstrap (minbase, merged /usr, no docs, man pages or locales), and a stand-in for
#   gcr.io/distroless/python3-debian12:nonroot from the Debian packages that image is made of
#   (extracted, never configured: no shell, no package manager; the nonroot user 65532; the CA bundle);
# - podman runs with runc and default ulimits within the hard limits, through a containers.conf of
#   its own (CONTAINERS_CONF), never the host's /etc/containers;
# - when the host trusts extra CA certificates (/usr/local/share/ca-certificates, a TLS-inspecting
#   proxy), they are mounted into the build only, where ca-certificates adds them for pip; no layer of
#   a final image holds them.
# Each step is skipped when its result exists, so running it twice builds nothing new.
#
#   hack/images.sh                      every image
#   hack/images.sh wallet-rpc:0.18.4.0  only what the process kubelet needs to run that wallet-rpc
#                                       image (its base, the image, its exported root filesystem):
#                                       what `make demo` builds
#   XMR_ESCROW_IMAGES=DIR               an image cache of its own in DIR, with a podman storage of its
#                                       own: a machine on which no image was ever built
# Images carry OCI labels with the version and the git commit; wallet-rpc images also the monero
# version and the Debian package version (dev.xmrescrow.monero.version, dev.xmrescrow.monero.deb-version).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${XMR_ESCROW_IMAGES:-${XMR_ESCROW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/xmr-escrow-operator}/images}
ONLY=${1:-}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -1)
COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
DEBIAN=docker.io/library/debian:bookworm-slim
TRIXIE=docker.io/library/debian:trixie-slim
DISTROLESS=gcr.io/distroless/python3-debian12:nonroot
EXTRA_CA=/usr/local/share/ca-certificates
mkdir -p "$STATE"

log() { printf '==> %s\n' "$*" >&2; }
# quietly LOG COMMAND...: the command's output (dpkg's, hundreds of lines) into LOG, shown only when
# it fails.
quietly() {
    local out=$1
    shift
    "$@" >"$out" 2>&1 || { tail -n 30 "$out" >&2; return 1; }
}
# timed WHAT COMMAND...: say what a long step does, run it, say how long it took.
timed() {
    local what=$1 started=$SECONDS
    shift
    log "$what"
    "$@"
    log "$what: done in $((SECONDS - started)) s"
}

# --- podman, and how it runs here --------------------------------------------------------------
if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null || ! command -v runc >/dev/null; then
    log "installing podman, runc and mmdebstrap (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc mmdebstrap uidmap >/dev/null
fi
# podman's defaults (nofile 1048576, nproc at the host's maximum) are refused here ("setrlimit:
# operation not permitted"); 4096 of each is within every limit seen and plenty for both images.
cat >"$STATE/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$STATE/containers.conf
if [ -n "${XMR_ESCROW_IMAGES:-}" ]; then
    # An image cache of its own: podman's images and layers under it too, with the host's driver.
    driver=$(podman info --format '{{.Store.GraphDriverName}}' 2>/dev/null || echo overlay)
    cat >"$STATE/storage.conf" <<EOF
[storage]
driver = "$driver"
graphroot = "$STATE/storage"
runroot = "$STATE/run"
EOF
    export CONTAINERS_STORAGE_CONF=$STATE/storage.conf
fi

# wallet-rpc: "MONERO_VERSION SUITE MONERO_DEB_VERSION", one image per line, tagged with the monero
# version. The Debian package version is pinned: when a point release replaces it the build fails
# (apt: version not found) and the pin is updated here, after checking the new package.
WALLET_RPC=(
    "0.18.0.0 bookworm 0.18.0.0+~0+20200826-1+deb12u1"
    "0.18.4.0 trixie 0.18.4.0+~0+20200826-1"
)
OPERATOR=1
if [ -n "$ONLY" ]; then
    # one wallet-rpc image (xmr-escrow/wallet-rpc:V, or wallet-rpc:V): that entry alone, no operator
    OPERATOR=
    picked=()
    for entry in "${WALLET_RPC[@]}"; do
        read -r monero _ _ <<<"$entry"
        [ "${ONLY##*/}" = "wallet-rpc:$monero" ] && picked+=("$entry")
    done
    if [ ${#picked[@]} -eq 0 ]; then
        echo "hack/images.sh: no image $ONLY here; the wallet-rpc images are: ${WALLET_RPC[*]}" >&2
        exit 2
    fi
    WALLET_RPC=("${picked[@]}")
fi
suites=" "
for entry in "${WALLET_RPC[@]}"; do
    read -r _ suite _ <<<"$entry"
    suites+="$suite "
done
[ -n "$OPERATOR" ] && suites+="bookworm "

have() { podman image exists "$1"; }
pull() { timeout 60 podman pull -q "$1" >/dev/null 2>&1; }

# --- base images -------------------------------------------------------------------------------
# debian_base SUITE IMAGE: IMAGE (debian:SUITE-slim) pulled, or made with mmdebstrap.
debian_base() {
    local suite=$1 image=$2
    if ! have "$image" && ! pull "$image"; then
        timed "making $image with mmdebstrap (a minute or two)" \
            quietly "$STATE/mmdebstrap-$suite.log" mmdebstrap --quiet --variant=minbase \
            --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
            --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            "$suite" "$STATE/debian-$suite.tar" http://deb.debian.org/debian
        podman import -q --change 'CMD ["bash"]' "$STATE/debian-$suite.tar" "$image" >/dev/null
        rm -f "$STATE/debian-$suite.tar"
    fi
}
[[ $suites == *" bookworm "* ]] && debian_base bookworm "$DEBIAN"
[[ $suites == *" trixie "* ]] && debian_base trixie "$TRIXIE"

# A stand-in made before dpkg was taken out of it (below) is made again.
stale=
if [ -n "$OPERATOR" ] && have "$DISTROLESS" && podman run --rm --network=none --entrypoint /usr/bin/dpkg "$DISTROLESS" --version >/dev/null 2>&1; then
    log "$DISTROLESS has dpkg: an old stand-in, made again"
    stale=1
fi
if [ -n "$OPERATOR" ] && { [ -n "$stale" ] || ! have "$DISTROLESS"; } && ! pull "$DISTROLESS"; then
    log "making a stand-in for $DISTROLESS from Debian's packages"
    tree=$STATE/distroless
    rm -rf "$tree"
    # What distroless/python3-debian12 is made of: glibc, Python 3.11 and the libraries its standard
    # library loads (apt resolves them: ssl, zlib, ffi, expat, bz2, lzma, sqlite, ...), libstdc++ for
    # binary wheels, netbase; the CA bundle from Debian's ca-certificates, extracted on its own (as a
    # dependency it would bring debconf and perl).
    mmdebstrap --quiet --variant=extract --skip=cleanup/apt/cache \
        --include=libc6,libgcc-s1,libstdc++6,python3.11-minimal,libpython3.11-stdlib,netbase \
        bookworm "$tree" http://deb.debian.org/debian
    # readline-common (of libreadline8) depends on "dpkg | install-info", so apt brings dpkg, and tar
    # with it: a package manager and an archiver the real image does not have. Their files are taken
    # out (not their directories: other packages share them).
    for deb in "$tree"/var/cache/apt/archives/{dpkg,tar}_*.deb; do
        [ -e "$deb" ] || continue
        dpkg-deb --fsys-tarfile "$deb" | tar -t | sed 's|^\./||' | while read -r path; do
            if [ -n "$path" ] && { [ -f "$tree/$path" ] || [ -L "$tree/$path" ]; }; then
                rm -f "${tree:?}/$path"
            fi
        done
    done
    (cd "$STATE" && rm -f ca-certificates_*.deb && apt-get download -q ca-certificates >/dev/null)
    dpkg-deb -x "$STATE"/ca-certificates_*.deb "$tree"
    rm -f "$STATE"/ca-certificates_*.deb
    # Not configured by dpkg (no maintainer scripts ran): what they would have made, by hand.
    install -d "$tree/etc/ssl/certs"
    find "$tree/usr/share/ca-certificates/mozilla" -name '*.crt' -exec cat {} + >"$tree/etc/ssl/certs/ca-certificates.crt"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$tree/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$tree/etc/group"
    install -d -m 0700 -o 65532 -g 65532 "$tree/home/nonroot"
    install -d -m 1777 "$tree/tmp"
    rm -rf "$tree/var/lib/apt" "$tree/var/cache/apt" "$tree/var/lib/dpkg" "$tree/usr/share/doc" "$tree/usr/share/man" \
        "$tree/bin/sh" "$tree/usr/bin/sh" "$tree/bin/bash" "$tree/usr/bin/bash" "$tree/bin/dash" "$tree/usr/bin/dash"
    tar -C "$tree" -cf "$STATE/distroless.tar" .
    podman import -q --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
        --change 'ENTRYPOINT ["/usr/bin/python3.11"]' "$STATE/distroless.tar" "$DISTROLESS" >/dev/null
    rm -rf "$tree" "$STATE/distroless.tar"
fi

# --- the images ----------------------------------------------------------------------------------
labels=(
    --label "org.opencontainers.image.version=$VERSION"
    --label "org.opencontainers.image.revision=$COMMIT"
    --label "org.opencontainers.image.source=xmr-escrow-operator"
)
ca=()
if compgen -G "$EXTRA_CA/*.crt" >/dev/null; then
    ca=(--volume "$EXTRA_CA:$EXTRA_CA:ro")
fi
build() {
    local tag=$1
    shift
    timed "building $tag" podman build --quiet --pull=never --network=host "${labels[@]}" --tag "$tag" "$@" "$ROOT" >/dev/null
}
if [ -n "$OPERATOR" ]; then
    build "xmr-escrow/operator:$VERSION" -f "$ROOT/images/operator.Dockerfile" "${ca[@]}"
    build "xmr-escrow/operator:$VERSION-debian" -f "$ROOT/images/operator.Dockerfile" --target debian "${ca[@]}"
fi
for entry in "${WALLET_RPC[@]}"; do
    read -r monero suite deb <<<"$entry"
    build "xmr-escrow/wallet-rpc:$monero" -f "$ROOT/images/wallet-rpc.Dockerfile" \
        --build-arg "DEBIAN_IMAGE=docker.io/library/debian:$suite-slim" \
        --build-arg "MONERO_VERSION=$monero" --build-arg "MONERO_DEB_VERSION=$deb"
done

# The process kubelet runs wallet-rpc from each image's own root filesystem (its loader and
# libraries, hack/devcluster/podman.py), exported here once per image ID.
for entry in "${WALLET_RPC[@]}"; do
    read -r monero _ _ <<<"$entry"
    image="xmr-escrow/wallet-rpc:$monero"
    tree=$STATE/rootfs/wallet-rpc-$monero
    id=$(podman image inspect --format '{{.Id}}' "$image")
    if [ "$(cat "$tree.id" 2>/dev/null)" != "$id" ]; then
        log "exporting $image's root filesystem for the process kubelet"
        # Into a new directory, then renamed: the kubelet, which looks for the tree while pods wait
        # for it, never finds half of one.
        rm -rf "$tree.new" && mkdir -p "$tree.new"
        cid=$(podman create -q "$image")
        podman export "$cid" | tar -x -C "$tree.new" --exclude='dev/*'
        podman rm -f "$cid" >/dev/null
        rm -rf "$tree" "$tree.id"
        mv "$tree.new" "$tree"
        echo "$id" >"$tree.id"
    fi
done

podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^localhost/xmr-escrow/' >&2

# --- smoke: each image runs as its non-root user on a read-only root filesystem ----------------------
# Output is read whole before grep looks at it: `podman run ... | grep -q` fails under pipefail when
# grep exits at its first match and podman then writes to the closed pipe ("broken pipe", 126).
run() { podman run --rm --read-only --network=none "$@"; }
for entry in "${WALLET_RPC[@]}"; do
    read -r monero _ _ <<<"$entry"
    out=$(run "xmr-escrow/wallet-rpc:$monero" --version)
    grep -qF "(v$monero-" <<<"$out"
done
if [ -z "$OPERATOR" ]; then
    log "smoke: ${WALLET_RPC[*]%% *} runs read-only as UID 10001"
    exit 0
fi
for tag in "$VERSION" "$VERSION-debian"; do
    out=$(run --user 10001:10001 "xmr-escrow/operator:$tag" crds)
    grep -q 'kind: CustomResourceDefinition' <<<"$out"
    run "xmr-escrow/operator:$tag" walletfs --help >/dev/null
done
if run --entrypoint /bin/sh "xmr-escrow/operator:$VERSION" -c true 2>/dev/null; then
    echo "xmr-escrow/operator:$VERSION has a shell" >&2
    exit 1
fi
log "smoke: every image runs read-only as UID 10001; the distroless operator has no shell"
