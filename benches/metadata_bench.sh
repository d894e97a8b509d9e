#!/usr/bin/env bash
# Metadata-serving benchmark: our server against nginx serving the same bytes as static
# files, all on 127.0.0.1. One run prints a results table and writes it to
# benches/METADATA_RESULTS.md (newest first).
#
#   bash benches/metadata_bench.sh
#
# What it measures (overridable: BENCH_DURATION seconds of load (20), BENCH_CONNECTIONS (64),
# BENCH_PROVIDERS (10), BENCH_PKG_KIB package size (1024), BENCH_SHORT_MAX_AGE (5s)):
#   1. warm VERSION.json requests/second with wrk (keep-alive, HTTPS, HTTP/1.1) against our
#      server (proxy_packages = false, index_max_age = 1h) vs nginx serving the same bytes as a
#      static file over HTTPS; the origin requests (docker-registry's access log: GETs and
#      HEADs on /v2/ paths) during the load, per key.
#      An extra row repeats the load with index_max_age = BENCH_SHORT_MAX_AGE, to show the
#      origin traffic while entries expire and are revalidated under load.
#   2. `terraform init` (1.0.3) of BENCH_PROVIDERS cached providers with the registry stopped
#      (best of 3, fresh work directory each, no plugin cache) vs the same init against nginx
#      serving a static mirror of the same files (our server's index.json and VERSION.json,
#      archive URLs rewritten to file names, and the packages).
#
# Needs: cargo, curl, openssl, python3, docker-registry and Terraform 1.0.3
# (scripts/install-test-deps.sh), wrk and nginx (installed with apt-get if missing). Every
# child is stopped on exit. Every wait is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DURATION="${BENCH_DURATION:-20}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
NPROV="${BENCH_PROVIDERS:-10}"
PKG_KIB="${BENCH_PKG_KIB:-1024}"
SHORT_MAX_AGE="${BENCH_SHORT_MAX_AGE:-5s}"
TERRAFORM="${ODTR_TERRAFORM:-$ROOT/.tools/terraform-1.0.3/terraform}"
NS="registry.terraform.io/bench"
PREFIX="bench"
START_TIME=$SECONDS
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"

log() { printf '[%4ds] %s\n' $((SECONDS - START_TIME)) "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# --- children and cleanup ----------------------------------------------------------------
W="$(mktemp -d /tmp/odtr-metabench.XXXXXX)"
PIDS=()
stop_pid() { # PID [grace seconds]
    local pid="$1" grace="${2:-10}" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid" 5; done
    for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # URL SECONDS [curl args...]: until it answers at all
    local url="$1" secs="$2" i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        if curl -s -o /dev/null --max-time 2 "$@" "$url"; then return 0; fi
        sleep 0.1
    done
    return 1
}

# --- build and tools -----------------------------------------------------------------------
log "building the release binary"
cargo build --release --bin oci-distribution-terraform-registry >"$W/build.log" 2>&1 ||
    { tail -30 "$W/build.log" >&2; die "cargo build --release"; }
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/oci-distribution-terraform-registry"
[ -x "$BIN" ] || die "no binary at $BIN"
command -v docker-registry >/dev/null || die "docker-registry missing: run scripts/install-test-deps.sh"
[ -x "$TERRAFORM" ] || die "Terraform 1.0.3 missing at $TERRAFORM: run scripts/install-test-deps.sh"
for tool in curl openssl python3 sha256sum awk; do
    command -v "$tool" >/dev/null || die "$tool missing"
done
apt_install() { # PACKAGE
    log "installing $1 (apt-get)"
    [ "$(id -u)" -eq 0 ] || die "$1 missing and not root to install it"
    timeout 300 apt-get update >/dev/null || true
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends "$1" >/dev/null
}
command -v wrk >/dev/null || apt_install wrk
WRK="$(command -v wrk)" || die "wrk missing"
NGINX="$(command -v nginx || true)"
[ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; } || true
if [ -z "$NGINX" ]; then
    apt_install nginx
    NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
fi
unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY no_proxy NO_PROXY

cat >"$W/helper.py" <<'PY'
import hashlib, json, os, socket, sys, zipfile
cmd = sys.argv[1]
if cmd == "free-port":
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
elif cmd == "make-zip":  # OUT KIB NAME
    out, kib, name = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = 0o100755 << 16
        z.writestr(info, b"#!/bin/sh\nexit 1\n" + os.urandom(kib * 1024))
    data = open(out, "rb").read()
    print(hashlib.sha256(data).hexdigest(), len(data))
elif cmd == "manifest":  # CONFIG_HEX CONFIG_SIZE LAYER_HEX LAYER_SIZE PLATFORMS
    c, cs, l, ls, p = sys.argv[2:7]
    print(json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.hashicorp.terraform-provider.config.v1+json",
                   "digest": "sha256:" + c, "size": int(cs)},
        "layers": [{"mediaType": "application/vnd.hashicorp.terraform.provider-package+zip",
                    "digest": "sha256:" + l, "size": int(ls),
                    "annotations": {"io.terraform.target-platforms": p}}],
    }, separators=(",", ":")))
elif cmd == "origin-counts":  # LOG FROM_LINE: origin requests per key after line FROM_LINE
    import re
    counts = {}
    with open(sys.argv[2], errors="replace") as f:
        for i, line in enumerate(f):
            if i < int(sys.argv[3]):
                continue
            m = re.search(r'"(GET|HEAD) (/v2/[^ ?"]+)[^"]* HTTP/[0-9.]+"', line)
            if m:
                key = m.group(1) + " " + m.group(2)
                counts[key] = counts.get(key, 0) + 1
    total = sum(counts.values())
    worst = max(counts.values()) if counts else 0
    detail = "; ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"
    print(f"{total}\t{worst}\t{len(counts)}\t{detail}")
elif cmd == "static-version":  # OURS_JSON OURS_URL TYPE VERSION
    # The same document with each archive URL a plain file name next to it; prints the
    # document, and "absolute-url file-name" per archive on stderr.
    from urllib.parse import urljoin
    doc = json.load(open(sys.argv[2]))
    for platform, a in doc["archives"].items():
        name = f"terraform-provider-{sys.argv[4]}_{sys.argv[5]}_{platform}.zip"
        print(urljoin(sys.argv[3], a["url"]), name, file=sys.stderr)
        a["url"] = name
    print(json.dumps(doc, separators=(",", ":")))
elif cmd == "min":
    print(min(float(x) for x in sys.argv[2:]))
PY
HELPER=(python3 "$W/helper.py")

log "self-signed certificate for 127.0.0.1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
    -keyout "$W/key.pem" -out "$W/cert.pem" >/dev/null 2>&1 || die "openssl req"
CURL=(curl -s --max-time 60 --cacert "$W/cert.pem")

PLATFORM="$(uname -s | tr '[:upper:]' '[:lower:]')_$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')"

# --- registry ------------------------------------------------------------------------------
RPORT="$("${HELPER[@]}" free-port)"
mkdir -p "$W/registry"
cat >"$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: "$W/registry/data"
  delete:
    enabled: true
http:
  addr: "127.0.0.1:$RPORT"
EOF
REGISTRY_LOG="$W/registry/registry.log"
REGISTRY_PID=""
start_registry() {
    env -u REGISTRY_HTTP_ADDR docker-registry serve "$W/registry/config.yml" >>"$REGISTRY_LOG" 2>&1 &
    REGISTRY_PID=$!
    PIDS+=("$REGISTRY_PID")
    wait_http "http://127.0.0.1:$RPORT/v2/" 20 || die "docker-registry did not start: $(tail -5 "$REGISTRY_LOG")"
}
log "starting docker-registry on 127.0.0.1:$RPORT"
start_registry
REGISTRY="http://127.0.0.1:$RPORT"

push_blob() { # REPO FILE HEX
    local loc code
    loc="$(curl -s --max-time 30 -D - -o /dev/null -X POST "$REGISTRY/v2/$1/blobs/uploads/" |
        tr -d '\r' | sed -n 's/^[Ll]ocation: //p')"
    [ -n "$loc" ] || die "blob upload to $1: no Location"
    case "$loc" in http*) ;; *) loc="$REGISTRY$loc" ;; esac
    code="$(curl -s --max-time 60 -o /dev/null -w '%{http_code}' -T "$2" \
        -H 'Content-Type: application/octet-stream' "$loc&digest=sha256:$3")"
    [ "$code" = 201 ] || die "blob upload of $2: HTTP $code"
}

log "publishing $NPROV providers $NS/p0..p$((NPROV - 1)) 1.0.0 ($PLATFORM, ${PKG_KIB} KiB each, seed layout)"
printf '{}' >"$W/config.json"
CONFIG_HEX="$(sha256sum "$W/config.json" | cut -d' ' -f1)"
PROVIDERS=()
for ((i = 0; i < NPROV; i++)); do
    repo="$PREFIX/$NS/p$i"
    out="$("${HELPER[@]}" make-zip "$W/p$i.zip" "$PKG_KIB" "terraform-provider-p${i}_v1.0.0")"
    hex="${out% *}" size="${out#* }"
    push_blob "$repo" "$W/config.json" "$CONFIG_HEX"
    push_blob "$repo" "$W/p$i.zip" "$hex"
    "${HELPER[@]}" manifest "$CONFIG_HEX" 2 "$hex" "$size" "$PLATFORM" >"$W/manifest.json"
    code="$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary @"$W/manifest.json" "$REGISTRY/v2/$repo/manifests/1.0.0")"
    [ "$code" = 201 ] || die "manifest of p$i: HTTP $code"
    PROVIDERS+=("$NS/p$i")
done

# --- our server ----------------------------------------------------------------------------
write_config() { # FILE CACHE_DIR INDEX_MAX_AGE
    cat >"$1" <<EOF
server {
  listen_addr = "127.0.0.1:0"
  tls {
    certificate_file = "$W/cert.pem"
    private_key_file = "$W/key.pem"
  }
}

cache {
  directory = "$2"
  max_size  = "4GiB"
}

provider_mirror "mirror" {
  origin_url     = "$REGISTRY/"
  name_prefix    = "$PREFIX"
  proxy_packages = false
  index_max_age  = "$3"
}
EOF
}

SERVER_PID="" SERVER_URL=""
start_server() { # CONFIG NAME
    local i line
    : >"$W/$2.out"
    RUST_LOG=warn "$BIN" --config="$1" server >"$W/$2.out" 2>>"$W/$2.err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for ((i = 0; i < 300; i++)); do
        line="$(grep -m1 '^listening on ' "$W/$2.out" || true)"
        if [ -n "$line" ]; then
            SERVER_URL="${line#listening on }"
            SERVER_URL="${SERVER_URL%/}"
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || die "server $2 exited: $(tail -5 "$W/$2.err")"
        sleep 0.1
    done
    die "server $2 printed no 'listening on' line within 30 s"
}
stop_server() { stop_pid "$SERVER_PID" 35; }

# --- nginx ---------------------------------------------------------------------------------
NPORT="$("${HELPER[@]}" free-port)"
mkdir -p "$W/nginx/logs" "$W/nginx/tmp" "$W/www/static" "$W/www/mirror"
NGINX_USER=""
[ "$(id -u)" -eq 0 ] && NGINX_USER="user root;"
cat >"$W/nginx/nginx.conf" <<EOF
$NGINX_USER
daemon off;
worker_processes auto;
pid $W/nginx/nginx.pid;
error_log $W/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  types { application/json json; application/zip zip; }
  default_type application/octet-stream;
  client_body_temp_path $W/nginx/tmp/body;
  proxy_temp_path $W/nginx/tmp/proxy;
  fastcgi_temp_path $W/nginx/tmp/fastcgi;
  uwsgi_temp_path $W/nginx/tmp/uwsgi;
  scgi_temp_path $W/nginx/tmp/scgi;
  server {
    listen 127.0.0.1:$NPORT ssl http2;
    ssl_certificate $W/cert.pem;
    ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:1m;
    root $W/www;
  }
}
EOF
log "starting nginx ($("$NGINX" -v 2>&1 | sed 's/.*version: //')) on 127.0.0.1:$NPORT (https)"
"$NGINX" -p "$W/nginx" -c "$W/nginx/nginx.conf" -e "$W/nginx/logs/error.log" >"$W/nginx/stdout.log" 2>&1 &
PIDS+=($!)
echo ok >"$W/www/ready.txt"
wait_http "https://127.0.0.1:$NPORT/ready.txt" 20 --cacert "$W/cert.pem" ||
    die "nginx did not start: $(cat "$W/nginx/logs/error.log")"

# --- wrk -----------------------------------------------------------------------------------
# Sets RPS (requests/s) and P99 (latency); dies on errors or non-2xx answers.
RPS="" P99=""
run_wrk() { # URL NAME
    timeout $((DURATION + 60)) "$WRK" -t "$(nproc)" -c "$CONNECTIONS" -d "${DURATION}s" --timeout 10s \
        --latency "$1" >"$W/wrk-$2.txt" 2>&1 || die "wrk $2: $(cat "$W/wrk-$2.txt")"
    if grep -q 'Non-2xx' "$W/wrk-$2.txt"; then die "wrk $2: non-2xx answers: $(cat "$W/wrk-$2.txt")"; fi
    if grep -q 'Socket errors' "$W/wrk-$2.txt"; then log "   wrk $2: $(grep 'Socket errors' "$W/wrk-$2.txt")"; fi
    RPS="$(awk '/^Requests\/sec:/ { print $2 }' "$W/wrk-$2.txt")"
    P99="$(awk '$1 == "99%" { print $2 }' "$W/wrk-$2.txt")"
    [ -n "$RPS" ] || die "wrk $2: no Requests/sec: $(cat "$W/wrk-$2.txt")"
}
log_lines() { wc -l <"$REGISTRY_LOG"; }

# --- 1. VERSION.json requests/second -------------------------------------------------------
VERSION_PATH="mirror/$NS/p0/1.0.0.json"
write_config "$W/long.hcl" "$W/cache" 1h
start_server "$W/long.hcl" ours-long
OURS_VERSION="$SERVER_URL/$VERSION_PATH"
"${CURL[@]}" -f -o "$W/www/static/1.0.0.json" "$OURS_VERSION" || die "GET $OURS_VERSION"
"${CURL[@]}" -f -o /dev/null "$OURS_VERSION" # warm (and fresh) for the whole load
log "1. warm VERSION.json ($(wc -c <"$W/www/static/1.0.0.json") bytes): wrk -c $CONNECTIONS -d ${DURATION}s, HTTPS keep-alive"
MARK="$(log_lines)"
run_wrk "$OURS_VERSION" ours
RPS_OURS="$RPS" P99_OURS="$P99"
sleep 1
IFS=$'\t' read -r O_TOTAL O_WORST O_KEYS O_DETAIL < <("${HELPER[@]}" origin-counts "$REGISTRY_LOG" "$MARK")
log "   ours: $RPS_OURS req/s (p99 $P99_OURS); origin requests during the load: $O_TOTAL ($O_DETAIL)"
NGINX_VERSION="https://127.0.0.1:$NPORT/static/1.0.0.json"
cmp -s <("${CURL[@]}" "$NGINX_VERSION") "$W/www/static/1.0.0.json" || die "nginx serves other bytes"
run_wrk "$NGINX_VERSION" nginx
RPS_NGINX="$RPS" P99_NGINX="$P99"
log "   nginx: $RPS_NGINX req/s (p99 $P99_NGINX)"

# Warm every provider's documents and package for part 2 (the origin is still up).
log "   warming $NPROV providers through our server with terraform init"

TF_SECS=""
tf_init() { # MIRROR_URL WORKDIR -> sets TF_SECS; dies on failure
    local mirror="$1" work="$2" p name t0 t1
    mkdir -p "$work/home"
    {
        echo 'terraform {'
        echo '  required_providers {'
        for p in "${PROVIDERS[@]}"; do
            name="${p##*/}"
            printf '    %s = {\n      source  = "%s"\n      version = "1.0.0"\n    }\n' "$name" "$p"
        done
        echo '  }'
        echo '}'
    } >"$work/main.tf"
    printf 'provider_installation {\n  network_mirror {\n    url = "%s"\n  }\n}\n' "$mirror" >"$work/cli.tfrc"
    t0="$(date +%s.%N)"
    (cd "$work" && env -i PATH="$PATH" HOME="$work/home" TF_CLI_CONFIG_FILE="$work/cli.tfrc" \
        SSL_CERT_FILE="$W/cert.pem" CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1 \
        timeout 300 "$TERRAFORM" init -no-color -input=false >"$work/init.log" 2>&1) ||
        die "terraform init against $mirror: $(tail -20 "$work/init.log")"
    t1="$(date +%s.%N)"
    TF_SECS="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
}
tf_init "$SERVER_URL/mirror/" "$W/tf-warm"

log "   writing a static mirror for nginx from our server's documents and packages"
for p in "${PROVIDERS[@]}"; do
    d="$W/www/mirror/$p"
    mkdir -p "$d"
    "${CURL[@]}" -f -o "$d/index.json" "$SERVER_URL/mirror/$p/index.json" || die "GET $p/index.json"
    "${CURL[@]}" -f -o "$d/ours-1.0.0.json" "$SERVER_URL/mirror/$p/1.0.0.json" || die "GET $p/1.0.0.json"
    "${HELPER[@]}" static-version "$d/ours-1.0.0.json" "$SERVER_URL/mirror/$p/1.0.0.json" "${p##*/}" 1.0.0 \
        >"$d/1.0.0.json" 2>"$d/downloads.txt" || die "static mirror of $p"
    while read -r url file; do
        "${CURL[@]}" -f -o "$d/$file" "$url" || die "GET $url"
    done <"$d/downloads.txt"
    rm -f "$d/ours-1.0.0.json" "$d/downloads.txt"
done
stop_server

# The same load with a short index_max_age: entries expire and are revalidated under load.
write_config "$W/short.hcl" "$W/cache" "$SHORT_MAX_AGE"
start_server "$W/short.hcl" ours-short
OURS_VERSION="$SERVER_URL/$VERSION_PATH"
"${CURL[@]}" -f -o /dev/null "$OURS_VERSION"
log "   again with index_max_age = $SHORT_MAX_AGE"
MARK="$(log_lines)"
run_wrk "$OURS_VERSION" ours-short
RPS_SHORT="$RPS" P99_SHORT="$P99"
sleep 1
IFS=$'\t' read -r S_TOTAL S_WORST S_KEYS S_DETAIL < <("${HELPER[@]}" origin-counts "$REGISTRY_LOG" "$MARK")
stop_server
SHORT_SECS="$(awk -v s="$SHORT_MAX_AGE" 'BEGIN { n = s + 0; if (s ~ /ms$/) n /= 1000; else if (s ~ /m$/) n *= 60; else if (s ~ /h$/) n *= 3600; print n }')"
S_ALLOWED="$(awk -v d="$DURATION" -v a="$SHORT_SECS" 'BEGIN { n = d / a; printf "%d", (n == int(n)) ? n : int(n) + 1 }')"
log "   ours (max age $SHORT_MAX_AGE): $RPS_SHORT req/s (p99 $P99_SHORT); origin requests: $S_TOTAL ($S_DETAIL)"

# --- 2. terraform init with the origin stopped ----------------------------------------------
log "2. terraform init of $NPROV cached providers, registry stopped, best of 3"
stop_pid "$REGISTRY_PID" 10
curl -s -o /dev/null --max-time 2 "$REGISTRY/v2/" && die "the registry still answers"
start_server "$W/long.hcl" ours-init
T_OURS=() T_NGINX=()
for i in 1 2 3; do
    tf_init "$SERVER_URL/mirror/" "$W/tf-ours-$i"
    T_OURS+=("$TF_SECS")
    tf_init "https://127.0.0.1:$NPORT/mirror/" "$W/tf-nginx-$i"
    T_NGINX+=("$TF_SECS")
done
for i in 1 2 3; do
    n="$(grep -c '^- Installed ' "$W/tf-ours-$i/init.log" || true)"
    [ "$n" = "$NPROV" ] || die "init $i against ours installed $n providers: $(cat "$W/tf-ours-$i/init.log")"
done
stop_server
B_OURS="$("${HELPER[@]}" min "${T_OURS[@]}")"
B_NGINX="$("${HELPER[@]}" min "${T_NGINX[@]}")"
log "   ours ${T_OURS[*]} s; nginx ${T_NGINX[*]} s"

# --- results -------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v v="$1" -v op="$2" -v goal="$3" 'BEGIN {
    if (v == "n/a") { print "n/a"; exit }
    ok = (op == ">=") ? (v + 0 >= goal + 0) : (v + 0 <= goal + 0)
    print ok ? "met" : "NOT met" }'; }
R_RPS="$(ratio "$RPS_OURS" "$RPS_NGINX")"
R_INIT="$(ratio "$B_OURS" "$B_NGINX")"
ORIGIN_VERDICT="$(verdict "$O_WORST" "<=" 1)"
SHORT_VERDICT="$(verdict "$S_WORST" "<=" "$S_ALLOWED")"
CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
COMMIT="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
git diff --quiet HEAD -- src 2>/dev/null || COMMIT="$COMMIT (+ uncommitted changes in src/)"
TABLE="| measurement | ours | nginx (static files) | ratio | goal | |
| --- | ---: | ---: | ---: | --- | --- |
| warm VERSION.json, wrk ${CONNECTIONS} conns, ${DURATION}s, HTTPS keep-alive (index_max_age 1h) | $RPS_OURS req/s (p99 $P99_OURS) | $RPS_NGINX req/s (p99 $P99_NGINX) | $R_RPS | ≥ 1.2 | $(verdict "$R_RPS" ">=" 1.2) |
| origin requests during that load (most for one key) | $O_TOTAL ($O_WORST) | | | ≤ 1 per key per index_max_age | $ORIGIN_VERDICT |
| same load, index_max_age $SHORT_MAX_AGE: req/s; origin requests (most for one key) | $RPS_SHORT req/s (p99 $P99_SHORT); $S_TOTAL ($S_WORST) | | | ≤ $S_ALLOWED per key in ${DURATION}s | $SHORT_VERDICT |
| terraform init, $NPROV cached providers, origin stopped (best of 3) | ${B_OURS} s | ${B_NGINX} s | $R_INIT | ≤ 1.2 | $(verdict "$R_INIT" "<=" 1.2) |"
NOTES="- origin requests by key during the 1h load: $O_DETAIL; during the $SHORT_MAX_AGE load: $S_DETAIL (docker-registry's access log, GET/HEAD on /v2/).
- terraform init samples (s): ours ${T_OURS[*]}; nginx ${T_NGINX[*]}. Terraform 1.0.3, fresh work directory each, no plugin cache; ${PKG_KIB} KiB packages for $PLATFORM; the nginx mirror holds our server's index.json, 1.0.0.json (archive URLs made plain file names) and packages.
- wrk $("$WRK" -v 2>&1 | head -1 | awk '{ print $2 }'), $(nproc) threads, HTTP/1.1 over TLS; nginx $("$NGINX" -v 2>&1 | sed 's/.*version: //'), worker_processes auto, access_log off, OpenSSL; both use the same EC P-256 certificate; client and servers share the $(nproc) CPUs."
REPORT="## $(date -u '+%Y-%m-%d %H:%M UTC')

Machine: $(nproc) CPUs ($CPU), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr). Commit $COMMIT. All traffic on 127.0.0.1. Run time $((SECONDS - START_TIME)) s. Load average at start $LOAD_AT_START, at end $(cut -d' ' -f1-3 /proc/loadavg) (anything else running on the machine shares its CPUs).

$TABLE

$NOTES
"
echo
echo "$REPORT"
RESULTS="$ROOT/benches/METADATA_RESULTS.md"
if [ ! -f "$RESULTS" ]; then
    printf '# Metadata-serving benchmark results\n\nWritten by `bash benches/metadata_bench.sh` (newest first).\n\n' >"$RESULTS"
fi
{
    head -4 "$RESULTS"
    echo "$REPORT"
    tail -n +5 "$RESULTS"
} >"$W/results.md"
cp "$W/results.md" "$RESULTS"
log "results written to benches/METADATA_RESULTS.md"
