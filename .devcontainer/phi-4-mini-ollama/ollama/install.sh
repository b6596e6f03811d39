#!/bin/sh
# Dev container feature: installs one pinned Ollama release for CPU inference, and `ollama-up`.
# Runs as root while the image is built (Codespaces, VS Code, devcontainers/ci). Options arrive as
# VERSION and SHA256 (devcontainer-feature.json). The release archive (about 1.8 GB since 0.12) is
# checked against SHA256 before anything is unpacked; its GPU libraries (CUDA, ROCm, Vulkan, MLX:
# more than 4 GB unpacked) are left out, since a codespace has no GPU.
# OLLAMA_FEATURE_PREFIX and OLLAMA_FEATURE_DOWNLOAD_BASE exist for tests/test_devcontainer.py only.
set -eu

VERSION=${VERSION:-0.13.0}
SHA256=${SHA256:-c5e5b4840008d9c9bf955ec32c32b03afc57c986ac1c382d44c89c9f7dd2cc30}
PREFIX=${OLLAMA_FEATURE_PREFIX:-/usr/local}
BASE=${OLLAMA_FEATURE_DOWNLOAD_BASE:-https://github.com/ollama/ollama/releases/download}
HERE=$(cd "$(dirname "$0")" && pwd)

case "$(uname -m)" in
    x86_64 | amd64) ARCH=amd64 ;;
    aarch64 | arm64) ARCH=arm64 ;;
    *) echo "ollama feature: unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
ARCHIVE="ollama-linux-$ARCH.tgz"
URL="$BASE/v$VERSION/$ARCHIVE"

if ! command -v curl >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates curl
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "ollama feature: downloading $URL"
curl -fsSL --retry 3 -o "$TMP/$ARCHIVE" "$URL"
echo "$SHA256  $TMP/$ARCHIVE" > "$TMP/SHA256SUM"
if ! sha256sum -c --quiet "$TMP/SHA256SUM"; then
    echo "ollama feature: $ARCHIVE of Ollama $VERSION does not have SHA-256 $SHA256." >&2
    echo "Set the feature's version and sha256 options together (the release's sha256sum.txt lists it)." >&2
    exit 1
fi

mkdir -p "$PREFIX"
tar -xzf "$TMP/$ARCHIVE" -C "$PREFIX" --no-same-owner \
    --exclude='cuda_*' --exclude='rocm*' --exclude='vulkan*' --exclude='mlx*'
install -m 0755 "$HERE/ollama-up.sh" "$PREFIX/bin/ollama-up"
echo "ollama feature: Ollama $VERSION installed in $PREFIX (CPU only)"
