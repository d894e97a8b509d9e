#!/usr/bin/env bash
# A self-contained demo: installs docker-registry and Terraform 1.0.3 if missing, builds the
# server, starts a local registry, publishes a sample provider into it, starts the mirror
# with a generated certificate, runs `terraform init` through it, and shows what happened.
# Everything runs on 127.0.0.1 and is stopped when the script ends.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

say "Installing what the demo needs (docker-registry, Terraform 1.0.3) if missing"
bash scripts/install-test-deps.sh
TERRAFORM="$REPO_ROOT/.tools/terraform-1.0.3/terraform"
if ! command -v openssl >/dev/null 2>&1; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openssl
fi

say "Building oci-distribution-terraform-registry (release)"
cargo build --release --quiet
BIN="$REPO_ROOT/target/release/oci-distribution-terraform-registry"

WORK="$(mktemp -d -t odtr-demo-XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

REG_PORT="$(free_port)"
MIRROR_PORT="$(free_port)"

say "Starting a local OCI registry (docker-registry) on 127.0.0.1:$REG_PORT"
cat > "$WORK/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry-data}}
http: {addr: 127.0.0.1:$REG_PORT}
EOF
docker-registry serve "$WORK/registry.yml" > "$WORK/registry.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done

say "Publishing a sample provider example.com/demo/hello 1.0.0 (linux_amd64, darwin_arm64)"
mkdir -p "$WORK/release"
python3 - "$WORK/release" <<'EOF'
import os, sys, zipfile
out = sys.argv[1]
for platform in ["linux_amd64", "darwin_arm64"]:
    path = os.path.join(out, f"terraform-provider-hello_1.0.0_{platform}.zip")
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("terraform-provider-hello_v1.0.0")
        info.external_attr = 0o755 << 16
        z.writestr(info, f"#!/bin/sh\necho 'a demo provider for {platform}'\n")
EOF
"$BIN" push --registry "http://127.0.0.1:$REG_PORT" --repository-prefix terraform-providers \
    --address example.com/demo/hello "$WORK"/release/*.zip

say "Generating a self-signed certificate for 127.0.0.1"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=localhost" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

cat > "$WORK/config.hcl" <<EOF
server {
  listen_addr = "127.0.0.1:$MIRROR_PORT"
  tls {
    certificate_file = "cert.pem"
    private_key_file = "key.pem"
  }
}

cache {
  directory = "cache"
}

provider_mirror "mirror" {
  origin_url  = "http://127.0.0.1:$REG_PORT/"
  name_prefix = "terraform-providers"
}
EOF

say "Starting the mirror: $BIN --config=$WORK/config.hcl server"
"$BIN" --config="$WORK/config.hcl" server > "$WORK/server.out" 2> "$WORK/server.log" &
PIDS+=($!)
for _ in $(seq 1 100); do
    grep -q '^listening on' "$WORK/server.out" 2>/dev/null && break
    sleep 0.1
done
grep '^listening on' "$WORK/server.out"

say "Running terraform init through https://127.0.0.1:$MIRROR_PORT/mirror/"
mkdir -p "$WORK/project"
cat > "$WORK/project/main.tf" <<'EOF'
terraform {
  required_providers {
    hello = {
      source  = "example.com/demo/hello"
      version = "~> 1.0"
    }
  }
}
EOF
cat > "$WORK/terraformrc" <<EOF
provider_installation {
  network_mirror {
    url = "https://127.0.0.1:$MIRROR_PORT/mirror/"
  }
}
EOF
(cd "$WORK/project" && TF_CLI_CONFIG_FILE="$WORK/terraformrc" SSL_CERT_FILE="$WORK/cert.pem" \
    CHECKPOINT_DISABLE=1 "$TERRAFORM" init -no-color -input=false)

say "The lock file Terraform wrote"
cat "$WORK/project/.terraform.lock.hcl"

say "What the mirror cached"
sleep 2.5 # the server writes its cache figures every 2 s
"$BIN" --config="$WORK/config.hcl" cache stats

say "What the mirror logged"
cat "$WORK/server.log"

cat <<EOF

Done. To use a mirror like this one, put in your Terraform CLI configuration
(~/.terraformrc, or the file named by TF_CLI_CONFIG_FILE):

  provider_installation {
    network_mirror {
      url = "https://YOUR-MIRROR-HOST/mirror/"
    }
  }

The demo's registry, mirror and files are removed now.
EOF
