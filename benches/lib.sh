# Shared start-up and teardown for the bench scripts (sourced, not run):
#
#   ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
#   cd "$ROOT"
#   . "$ROOT/benches/lib.sh"
#
# Gives log/die, a work directory $W whose children ($PIDS) are stopped on exit, the release
# binary ($BIN), tool checks, the self-signed certificate, docker-registry, our server, nginx,
# the wait for an idle machine, and the machine/commit lines and results file of the reports.
# Every wait is bounded in time. Needs `set -euo pipefail` in the script that sources it.

BENCH_DIR="$ROOT/benches"
BENCH_HELPER=(python3 "$BENCH_DIR/bench_helper.py")
START_TIME=$SECONDS

log() { printf '[%4ds] %s\n' $((SECONDS - START_TIME)) "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# --- children and cleanup ----------------------------------------------------------------
# make_workdir NAME: W=/tmp/NAME.XXXXXX, removed on exit (kept, and said so, if KEEP_WORKDIR
# is set) after every PID in PIDS and every background job is stopped.
make_workdir() {
    W="$(mktemp -d "/tmp/$1.XXXXXX")"
    PIDS=()
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
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
    # Background curls of an interrupted step.
    for pid in $(jobs -p); do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP_WORKDIR:-}" ]; then log "kept $W"; else rm -rf "$W"; fi
}

wait_http() { # URL [seconds (20)] [curl args...]: until it answers at all
    local url="$1" secs="${2:-20}" i
    shift $(($# < 2 ? $# : 2))
    for ((i = 0; i < secs * 10; i++)); do
        if curl -s -o /dev/null --max-time 2 "$@" "$url"; then return 0; fi
        sleep 0.1
    done
    return 1
}
free_port() { "${BENCH_HELPER[@]}" free-port; } # a TCP port free on 127.0.0.1 a moment ago

# --- waiting for an idle machine -----------------------------------------------------------
# Other work on the machine (a build, tests) skews every figure: before a measurement, wait (at
# most QUIET_WAIT seconds) until the CPUs are mostly idle for a second.
cpu_busy_pct() { # busy % of all CPUs over one second
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    awk -v u1="${a[1]}" -v n1="${a[2]}" -v s1="${a[3]}" -v i1="${a[4]}" -v w1="${a[5]}" -v q1="${a[6]}" -v o1="${a[7]}" \
        -v u2="${b[1]}" -v n2="${b[2]}" -v s2="${b[3]}" -v i2="${b[4]}" -v w2="${b[5]}" -v q2="${b[6]}" -v o2="${b[7]}" \
        'BEGIN { t = (u2+n2+s2+i2+w2+q2+o2) - (u1+n1+s1+i1+w1+q1+o1); idle = (i2+w2) - (i1+w1);
                 if (t <= 0) print 0; else printf "%d", 100 * (t - idle) / t }'
}
wait_idle() { # WHAT_THEN (logged if the machine stays busy) -> IDLE_BUSY (%), IDLE_WAITED (s)
    local start=$SECONDS
    while :; do
        IDLE_BUSY="$(cpu_busy_pct)"
        [ "$IDLE_BUSY" -le 20 ] && break
        if [ $((SECONDS - start)) -ge "$QUIET_WAIT" ]; then
            log "   machine still ${IDLE_BUSY}% busy after ${QUIET_WAIT}s; $1"
            break
        fi
    done
    IDLE_WAITED=$((SECONDS - start))
}

# --- build and tools -----------------------------------------------------------------------
build_release() { # -> BIN; BENCH_NO_BUILD=1 uses target/release as it is
    if [ -n "${BENCH_NO_BUILD:-}" ]; then
        log "BENCH_NO_BUILD set: using the release binary as it is"
    else
        log "building the release binary"
        timeout 3000 cargo build --release --bin oci-distribution-terraform-registry >"$W/build.log" 2>&1 ||
            { tail -30 "$W/build.log" >&2; die "cargo build --release"; }
    fi
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/oci-distribution-terraform-registry"
    [ -x "$BIN" ] || die "no binary at $BIN"
}
require_tools() { # TOOL...: docker-registry and these
    local tool
    command -v docker-registry >/dev/null || die "docker-registry missing: run scripts/install-test-deps.sh"
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool missing"
    done
}
apt_install() { # PACKAGE
    log "installing $1 (apt-get)"
    [ "$(id -u)" -eq 0 ] || die "$1 missing and not root to install it"
    timeout 300 apt-get update >/dev/null || true
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y --no-install-recommends "$1" >/dev/null
}
find_wrk() { # -> WRK, installed with apt-get if missing
    command -v wrk >/dev/null || apt_install wrk
    WRK="$(command -v wrk)" || die "wrk missing"
}
find_nginx() { # -> NGINX NGINX_VERSION, installed with apt-get if missing
    NGINX="$(command -v nginx || true)"
    [ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; } || true
    if [ -z "$NGINX" ]; then
        apt_install nginx
        NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
    fi
    NGINX_VERSION="$("$NGINX" -v 2>&1 | sed 's/.*version: //')"
}
local_only() { # our tools only talk to 127.0.0.1 (after any apt-get)
    unset http_proxy https_proxy all_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY no_proxy NO_PROXY
}
make_cert() { # -> $W/cert.pem, $W/key.pem (EC P-256, for 127.0.0.1 and localhost)
    log "self-signed certificate for 127.0.0.1"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost \
        -keyout "$W/key.pem" -out "$W/cert.pem" >/dev/null 2>&1 || die "openssl req"
}

# --- docker-registry -----------------------------------------------------------------------
# start_registry [LOG_LEVEL (info)] [delete]: docker-registry on a free 127.0.0.1 port, its
# storage in $W/registry/data ("delete" enables deletes) -> RPORT REGISTRY REGISTRY_LOG
# REGISTRY_PID. Its access log has one line per completed request:
# "GET /v2/REPO/... HTTP/1.1" STATUS ...
start_registry() {
    local delete=""
    [ "${2:-}" = delete ] && delete="
  delete:
    enabled: true"
    RPORT="$(free_port)"
    REGISTRY="http://127.0.0.1:$RPORT"
    REGISTRY_LOG="$W/registry/registry.log"
    mkdir -p "$W/registry"
    cat >"$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: ${1:-info}
  formatter: text
storage:
  filesystem:
    rootdirectory: "$W/registry/data"$delete
http:
  addr: "127.0.0.1:$RPORT"
EOF
    log "starting docker-registry on 127.0.0.1:$RPORT"
    env -u REGISTRY_HTTP_ADDR docker-registry serve "$W/registry/config.yml" >>"$REGISTRY_LOG" 2>&1 &
    REGISTRY_PID=$!
    PIDS+=("$REGISTRY_PID")
    wait_http "$REGISTRY/v2/" 20 || die "docker-registry did not start: $(tail -5 "$REGISTRY_LOG")"
}
push_blob() { # REPO FILE HEX
    local loc code
    loc="$(curl -s --max-time 30 -D - -o /dev/null -X POST "$REGISTRY/v2/$1/blobs/uploads/" |
        tr -d '\r' | sed -n 's/^[Ll]ocation: //p')"
    [ -n "$loc" ] || die "blob upload to $1: no Location"
    case "$loc" in http*) ;; *) loc="$REGISTRY$loc" ;; esac
    code="$(curl -s --max-time 300 -o /dev/null -w '%{http_code}' -T "$2" \
        -H 'Content-Type: application/octet-stream' "$loc&digest=sha256:$3")"
    [ "$code" = 201 ] || die "blob upload of $2: HTTP $code"
}
# push_image REPO TAG ZIP HEX SIZE PLATFORMS: a provider package in the seed layout (an empty
# JSON config, the zip as the one layer) as REPO:TAG.
push_image() {
    local code
    if [ -z "${CONFIG_HEX:-}" ]; then
        printf '{}' >"$W/config.json"
        CONFIG_HEX="$(sha256sum "$W/config.json" | cut -d' ' -f1)"
    fi
    push_blob "$1" "$W/config.json" "$CONFIG_HEX"
    push_blob "$1" "$3" "$4"
    "${BENCH_HELPER[@]}" manifest "sha256:$CONFIG_HEX" 2 "sha256:$4" "$5" "$6" >"$W/manifest.json"
    code="$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' -X PUT \
        -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
        --data-binary @"$W/manifest.json" "$REGISTRY/v2/$1/manifests/$2")"
    [ "$code" = 201 ] || die "manifest $1:$2: HTTP $code"
}

# --- our server ----------------------------------------------------------------------------
# start_server CONFIG NAME -> SERVER_PID SERVER_URL (no trailing slash), once it printed its
# "listening on" line; stdout in $W/NAME.out, stderr in $W/NAME.err, RUST_LOG=$SERVER_RUST_LOG
# (warn).
SERVER_PID="" SERVER_URL=""
start_server() {
    local i line
    : >"$W/$2.out"
    RUST_LOG="${SERVER_RUST_LOG:-warn}" "$BIN" --config="$1" server >"$W/$2.out" 2>>"$W/$2.err" &
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
server_block() { # tls|plain: the config's server block, on 127.0.0.1 (any port); HTTPS with
    # the bench certificate with "tls"
    echo 'server {'
    echo '  listen_addr = "127.0.0.1:0"'
    if [ "$1" = tls ]; then
        printf '  tls {\n    certificate_file = "%s"\n    private_key_file = "%s"\n  }\n' "$W/cert.pem" "$W/key.pem"
    fi
    echo '}'
}

# --- nginx ---------------------------------------------------------------------------------
# write_nginx_conf WORKER_CONNECTIONS MAIN_EXTRA HTTP_EXTRA SERVERS: $W/nginx/nginx.conf, in
# the foreground, access log off, sendfile, its files under $W/nginx; the *_EXTRA directives
# go after worker_processes and after keepalive_timeout, SERVERS (server blocks) at the end
# of the http block.
write_nginx_conf() {
    local user=""
    [ "$(id -u)" -eq 0 ] && user="user root;"
    mkdir -p "$W/nginx/logs" "$W/nginx/tmp"
    cat >"$W/nginx/nginx.conf" <<EOF
$user
daemon off;
worker_processes auto;${2:+
$2}
pid $W/nginx/nginx.pid;
error_log $W/nginx/logs/error.log warn;
events { worker_connections $1; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
$3
  client_body_temp_path $W/nginx/tmp/body;
  proxy_temp_path $W/nginx/tmp/proxy;
  fastcgi_temp_path $W/nginx/tmp/fastcgi;
  uwsgi_temp_path $W/nginx/tmp/uwsgi;
  scgi_temp_path $W/nginx/tmp/scgi;
$4
}
EOF
}
# nginx_tls_server PORT LISTEN_PARAMS [DIRECTIVE]: an HTTPS server block on 127.0.0.1:PORT
# with the bench certificate, serving $W/www.
nginx_tls_server() {
    cat <<EOF
  server {
    listen 127.0.0.1:$1 $2;
    ssl_certificate $W/cert.pem;
    ssl_certificate_key $W/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;${3:+
    $3}
    root $W/www;
  }
EOF
}
start_nginx() { # WHERE (for the log) URL [curl args...]: until URL answers
    local url="$2"
    log "starting nginx ($NGINX_VERSION) on $1"
    "$NGINX" -p "$W/nginx" -c "$W/nginx/nginx.conf" -e "$W/nginx/logs/error.log" >"$W/nginx/stdout.log" 2>&1 &
    PIDS+=($!)
    shift 2
    wait_http "$url" 20 "$@" || die "nginx did not start: $(cat "$W/nginx/logs/error.log")"
}

# --- reports -------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { # VALUE OP GOAL (OP one of >= <= < =) -> met | NOT met | n/a
    awk -v v="$1" -v op="$2" -v goal="$3" 'BEGIN {
    if (v == "n/a") { print "n/a"; exit }
    if (op == ">=") ok = v + 0 >= goal + 0
    else if (op == "<=") ok = v + 0 <= goal + 0
    else if (op == "<") ok = v + 0 < goal + 0
    else if (op == "=") ok = v + 0 == goal + 0
    else { print "verdict: unknown operator " op > "/dev/stderr"; exit 1 }
    print ok ? "met" : "NOT met" }'
}
cpu_model() { grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'; }
machine_desc() { # "2 CPUs (model), 8 GiB RAM, Linux 6.1"
    echo "$(nproc) CPUs ($(cpu_model)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(uname -sr)"
}
commit_desc() { # short HEAD, noting uncommitted changes in src/
    local commit
    commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    git diff --quiet HEAD -- src 2>/dev/null || commit="$commit (+ uncommitted changes in src/)"
    echo "$commit"
}
# prepend_results FILE TITLE TEXT: TEXT (and a newline) goes first in benches/FILE, under its
# four header lines (written, with TITLE, if the file is new).
prepend_results() {
    local results="$BENCH_DIR/$1" script
    script="$(basename "$0")"
    if [ ! -f "$results" ]; then
        printf '# %s\n\nWritten by `bash benches/%s` (newest first).\n\n' "$2" "$script" >"$results"
    fi
    {
        head -4 "$results"
        printf '%s\n' "$3"
        tail -n +5 "$results"
    } >"$W/results.md"
    cp "$W/results.md" "$results"
    log "results written to benches/$1"
}
