#!/usr/bin/env bash
# Renders every overlay under deploy/overlays with `kubectl kustomize`, and
# each again with every optional component (components/cert-manager), and
# validates the result: every object against the Kubernetes schemas
# (kubernetes-validate, strict, pinned versions, offline) and against our own
# rules (deploy/check_manifests.py and deploy/checks/). Exit code 0 only when
# all pass.
#
#   deploy/validate.sh                  # all overlays
#   KEEP_RENDERED=out deploy/validate.sh  # also keep the rendered YAML in ./out
#
# Environment:
#   PYTHON          python with kubernetes-validate (default: the repo's .venv)
#   PERISCOPE_REPO  repository root, for the collector's config keys
#                   (default: the parent of this script's folder)
#   PERISCOPE_AGENT_BIN  a built periscope-agent; each overlay's agent
#                   arguments and config go through its --check-config
#                   (default: target/debug/periscope-agent when it exists)
#   K8S_VERSIONS    Kubernetes versions to validate against
#                   (default: "1.30.0 1.37.0", the oldest we support and the
#                   newest kubernetes-validate 1.37 ships schemas for)
set -euo pipefail

deploy_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${PERISCOPE_REPO:-$(dirname "$deploy_dir")}"
python="${PYTHON:-$repo/.venv/bin/python}"
read -r -a k8s_versions <<<"${K8S_VERSIONS:-1.30.0 1.37.0}"
# Overlays that enable API-server enrichment: the only ones allowed to (and
# required to) carry RBAC objects.
rbac_overlays=(cluster)
# Components no overlay uses: each overlay is also rendered with each of
# them, as `<overlay>+<component>`.
optional_components=(cert-manager)

fail() {
    echo "validate.sh: $*" >&2
    exit 1
}

command -v kubectl >/dev/null 2>&1 ||
    fail "kubectl not found: install kubectl 1.27 or newer (deploy/install-kubectl.sh does) to render the overlays"
[ -x "$python" ] || command -v "$python" >/dev/null 2>&1 ||
    fail "python not found at $python (set PYTHON, or run tests/run_e2e.sh once to create .venv)"
"$python" -c 'import kubernetes_validate' 2>/dev/null ||
    fail "$python cannot import kubernetes_validate: pip install -r tests/e2e/requirements.txt"

# Components, `labels` and JSON patches in `patches` need kustomize v5
# (kubectl 1.27 or newer); older kubectls embed kustomize 2 to 4 and fail
# with confusing errors, so say it up front.
kustomize_version="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\{0,1\}//p')"
case "$kustomize_version" in
    [5-9].* | [1-9][0-9].*) ;;
    *)
        kubectl version --client >&2 || true
        fail "kubectl embeds kustomize ${kustomize_version:-v2/v3 (no version line)}; deploy/ needs kustomize v5 or newer (kubectl 1.27+, see deploy/install-kubectl.sh)"
        ;;
esac

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

rendered=()
render() { # name, kustomization directory
    # Warnings (deprecated fields, ...) count as failures: stderr must stay empty.
    if ! kubectl kustomize "$2" >"$out/$1.yaml" 2>"$out/$1.err" || [ -s "$out/$1.err" ]; then
        echo "FAIL $1: kubectl kustomize $2:" >&2
        cat "$out/$1.err" >&2
        exit 1
    fi
    rendered+=("$out/$1.yaml")
}
relpath() { "$python" -c 'import os, sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$1" "$2"; }
for overlay in "$deploy_dir"/overlays/*/; do
    name="$(basename "$overlay")"
    render "$name" "$overlay"
    for component in "${optional_components[@]}"; do
        # The overlay plus the component; kustomize takes only relative
        # paths to other kustomizations.
        combo="$out/$name+$component"
        mkdir -p "$combo"
        printf '%s\n' \
            "apiVersion: kustomize.config.k8s.io/v1beta1" \
            "kind: Kustomization" \
            "resources:" \
            "  - $(relpath "$overlay" "$combo")" \
            "components:" \
            "  - $(relpath "$deploy_dir/components/$component" "$combo")" >"$combo/kustomization.yaml"
        render "$name+$component" "$combo"
    done
done
[ "${#rendered[@]}" -gt 0 ] || fail "no overlays under $deploy_dir/overlays"

version_args=()
for v in "${k8s_versions[@]}"; do version_args+=(--k8s-version "$v"); done
rbac_args=()
for o in "${rbac_overlays[@]}"; do
    rbac_args+=(--rbac-overlay "$o")
    for component in "${optional_components[@]}"; do rbac_args+=(--rbac-overlay "$o+$component"); done
done

agent_args=()
if [ -n "${PERISCOPE_AGENT_BIN:-}" ]; then
    [ -x "$PERISCOPE_AGENT_BIN" ] || fail "PERISCOPE_AGENT_BIN=$PERISCOPE_AGENT_BIN is not an executable"
    agent_args=(--agent-bin "$PERISCOPE_AGENT_BIN")
elif [ -x "$repo/target/debug/periscope-agent" ]; then
    agent_args=(--agent-bin "$repo/target/debug/periscope-agent")
else
    echo "note: no periscope-agent binary (PERISCOPE_AGENT_BIN or target/debug); its --check-config is not run"
fi

status=0
"$python" "$deploy_dir/check_manifests.py" --repo "$repo" "${version_args[@]}" "${rbac_args[@]}" \
    "${agent_args[@]}" "${rendered[@]}" || status=$?

if [ -n "${KEEP_RENDERED:-}" ]; then
    mkdir -p "$KEEP_RENDERED"
    cp "${rendered[@]}" "$KEEP_RENDERED"/
fi
if [ "$status" -ne 0 ]; then
    echo "validate.sh: manifests failed validation" >&2
    exit 1
fi
echo "validate.sh: ${#rendered[@]} renderings valid (each overlay, alone and with each optional component)"
