#!/usr/bin/env bash
# Load-and-soak benchmark: mixed Terraform mirror traffic from many keep-alive clients against
# our server (HTTPS, cold cache, default freshness) in front of the real docker-registry, for
# BENCH_DURATION seconds, watching memory, open fds and origin traffic; then the same mix for a
# short time against the warm server and against nginx serving the same files. All on
# 127.0.0.1. Prints a Markdown report and writes it to benches/SOAK_RESULTS.md (newest first).
#
#   bash benches/soak_bench.sh                       # 600 s soak, ~12 min in all
#   BENCH_NO_BUILD=1 BENCH_DURATION=60 bash benches/soak_bench.sh
#
# Set-up (overridable): BENCH_PROVIDERS (20) providers × BENCH_VERSIONS (3) versions × 2
# platforms, packages of random size in [BENCH_PKG_MIN_KIB (256), BENCH_PKG_MAX_KIB (2048)]
# KiB, published with `push`. Nothing is warmed: the first minute includes the cold fills.
# Load: wrk, BENCH_CONNECTIONS (200) connections, BENCH_THREADS (nproc) threads, HTTP/1.1
# over TLS, request mix BENCH_MIX ("30 40 30": % index.json, VERSION.json, packages; the
# package URLs are the ones the VERSION.json documents give). Every BENCH_SAMPLE_INTERVAL
# (10) s: the server's VmRSS, open fds, CPU time, a /metrics snapshot and the registry's
# access-log line count. Reference: BENCH_REF_DURATION (30) s of the same mix against our
# (now warm) server, then against nginx.
# BENCH_INDEX_MAX_AGE (unset: the server's default, 5m) sets index_max_age, for trying the
# origin accounting in a short run.
#
# Exits non-zero if any request failed (non-2xx/3xx or socket errors), if RSS or open fds grew
# more than BENCH_GROWTH_LIMIT (1.5) times between the end of the warm-up (the first minute,
# or half of a shorter run) and the end, if a key was fetched from the origin more often than
# index_max_age allows (or a package more than once), or if the server died or panicked. The
# report also compares the CPU time of wrk with the server's (wrk should need less).
#
# BENCH_NO_BUILD=1 skips `cargo build --release`; BENCH_KEEP=1 keeps the work directory.
# Needs: curl, openssl, python3, ss, docker-registry (scripts/install-test-deps.sh), wrk and
# nginx (installed with apt-get if missing). Every child is stopped on exit; every wait is
# bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. "$ROOT/benches/lib.sh"
COMMAND="$(for v in BENCH_NO_BUILD BENCH_DURATION BENCH_CONNECTIONS BENCH_PROVIDERS BENCH_VERSIONS \
    BENCH_PKG_MIN_KIB BENCH_PKG_MAX_KIB BENCH_THREADS BENCH_MIX BENCH_SAMPLE_INTERVAL \
    BENCH_REF_DURATION BENCH_INDEX_MAX_AGE BENCH_GROWTH_LIMIT BENCH_WARMUP BENCH_QUIET_WAIT; do
    [ -n "${!v:-}" ] && printf '%s=%s ' "$v" "${!v}"; done; echo "bash benches/soak_bench.sh")"
HELPER=(python3 "$ROOT/benches/soak_helper.py")
DURATION="${BENCH_DURATION:-600}"
CONNECTIONS="${BENCH_CONNECTIONS:-200}"
NPROV="${BENCH_PROVIDERS:-20}"
NVERSIONS="${BENCH_VERSIONS:-3}"
PKG_MIN_KIB="${BENCH_PKG_MIN_KIB:-256}"
PKG_MAX_KIB="${BENCH_PKG_MAX_KIB:-2048}"
THREADS="${BENCH_THREADS:-$(nproc)}"
read -r MIX_INDEX MIX_VERSION MIX_PACKAGE <<<"${BENCH_MIX:-30 40 30}"
INTERVAL="${BENCH_SAMPLE_INTERVAL:-10}"
REF_DURATION="${BENCH_REF_DURATION:-30}"
INDEX_MAX_AGE="${BENCH_INDEX_MAX_AGE:-}"
GROWTH_LIMIT="${BENCH_GROWTH_LIMIT:-1.5}"
WARMUP="${BENCH_WARMUP:-60}"
[ "$WARMUP" -le $((DURATION / 2)) ] || WARMUP=$((DURATION / 2))
QUIET_WAIT="${BENCH_QUIET_WAIT:-20}"
PLATFORMS="linux_amd64,darwin_arm64"
HOST="registry.terraform.io"
NS="soak"
PREFIX="soak"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"
KEEP_WORKDIR="${BENCH_KEEP:-}"
[ "$DURATION" -ge 20 ] || die "BENCH_DURATION must be at least 20 s"
[ $((MIX_INDEX + MIX_VERSION + MIX_PACKAGE)) = 100 ] || die "BENCH_MIX must add up to 100"

make_workdir odtr-soak

# Other work on the machine skews every figure: wait (at most QUIET_WAIT s) until the CPUs
# are mostly idle for a second, and note how busy they were.
QUIET_NOTE=""
wait_quiet() {
    wait_idle "going on"
    QUIET_NOTE="${IDLE_BUSY}% busy (waited $IDLE_WAITED s, at most $QUIET_WAIT)"
}
machine_busy_ticks() { # busy jiffies of all CPUs since boot
    awk 'NR == 1 { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# --- build and tools -----------------------------------------------------------------------
build_release
BIN_AGE="$(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC')"
require_tools curl openssl python3 sha256sum awk ss
find_wrk
find_nginx
local_only
make_cert
CURL=(curl -s --max-time 30 --cacert "$W/cert.pem")

# --- registry ------------------------------------------------------------------------------
start_registry warn
# The access log has one line per completed request: "GET /v2/REPO/... HTTP/1.1" STATUS ...
registry_lines() { wc -l <"$REGISTRY_LOG"; }
registry_requests() { grep -cE '"(GET|HEAD) /v2/' "$REGISTRY_LOG" || true; }

# --- publish -------------------------------------------------------------------------------
VERSIONS="$(seq -s, -f '1.%g.0' 0 $((NVERSIONS - 1)))"
NPLATFORMS="$(tr ',' '\n' <<<"$PLATFORMS" | wc -l)"
log "writing $NPROV providers × $NVERSIONS versions ($VERSIONS) × $NPLATFORMS platforms of ${PKG_MIN_KIB}–${PKG_MAX_KIB} KiB"
read -r NPKG PKG_BYTES < <("${HELPER[@]}" make-packages "$W/pkgs" "$HOST" "$NS" "$NPROV" "$VERSIONS" \
    "$PLATFORMS" "$PKG_MIN_KIB" "$PKG_MAX_KIB" 1)
[ -n "${PKG_BYTES:-}" ] || die "make-packages"
log "publishing $NPKG packages ($((PKG_BYTES >> 20)) MiB) with push"
timeout 600 "$BIN" push --registry "$REGISTRY" --repository-prefix "$PREFIX" "$W/pkgs" >"$W/push.log" 2>&1 ||
    { tail -20 "$W/push.log" >&2; die "push"; }

# --- our server ----------------------------------------------------------------------------
write_config() { # FILE CACHE_DIR
    local max_age=""
    [ -n "$INDEX_MAX_AGE" ] && max_age="  index_max_age  = \"$INDEX_MAX_AGE\""
    cat >"$1" <<EOF
$(server_block tls)

cache {
  directory = "$2"
}

provider_mirror "mirror" {
  origin_url     = "$REGISTRY/"
  name_prefix    = "$PREFIX"
$max_age
}
EOF
}

# A throw-away server (its own cache) gives the documents and package URLs, and checks every
# package once; the soak server starts with an empty cache.
log "reading the documents and package URLs through a throw-away server; static copy for nginx"
write_config "$W/prep.hcl" "$W/cache-prep"
start_server "$W/prep.hcl" prep
mkdir -p "$W/www"
KINDS="$(timeout 300 "${HELPER[@]}" prep "$SERVER_URL/mirror/" "$W/cert.pem" "$W/pkgs" "$W/www" "$W/paths.txt")" ||
    die "prep"
stop_server
rm -rf "$W/cache-prep"
log "   request paths: $KINDS"
NVERSION_DOCS="$(grep -c '^version ' "$W/paths.txt")"

# --- nginx ---------------------------------------------------------------------------------
NPORT="$(free_port)"
write_nginx_conf 4096 "worker_rlimit_nofile 8192;" "  keepalive_requests 1000000;
  types { application/json json; application/zip zip; }
  default_type application/octet-stream;" \
    "$(nginx_tls_server "$NPORT" ssl "ssl_session_cache shared:SSL:1m;")"
NGINX_URL="https://127.0.0.1:$NPORT"
FIRST_PKG="$(awk '$1 == "package" { print $2; exit }' "$W/paths.txt")"
start_nginx "127.0.0.1:$NPORT (https)" "$NGINX_URL$FIRST_PKG" --cacert "$W/cert.pem" -f
for kind in index version package; do
    p="$(awk -v k="$kind" '$1 == k { print $2; exit }' "$W/paths.txt")"
    code="$("${CURL[@]}" -o /dev/null -w '%{http_code}' "$NGINX_URL$p")"
    [ "$code" = 200 ] || die "nginx: GET $p: HTTP $code"
done

# --- wrk -----------------------------------------------------------------------------------
WRK_PID=""
start_wrk() { # NAME URL SECONDS: in the background; its CPU time goes to cpu-NAME.txt
    (
        rc=0
        timeout $(($3 + 60)) "$WRK" -t "$THREADS" -c "$CONNECTIONS" -d "$3s" --timeout 10s --latency \
            -s "$ROOT/benches/soak.lua" "$2" -- "$W/paths.txt" "$MIX_INDEX" "$MIX_VERSION" \
            >"$W/wrk-$1.txt" 2>&1 || rc=$?
        times >"$W/cpu-$1.txt"
        exit $rc
    ) &
    WRK_PID=$!
}
wait_wrk() { # NAME
    local rc=0
    wait "$WRK_PID" || rc=$?
    [ "$rc" = 0 ] || die "wrk $1 exited with $rc: $(tail -20 "$W/wrk-$1.txt")"
    grep -q '^SOAK_RESULT ' "$W/wrk-$1.txt" || die "wrk $1 printed no result: $(tail -20 "$W/wrk-$1.txt")"
}
run_wrk() { # NAME URL SECONDS
    start_wrk "$@"
    wait_wrk "$1"
    log "   $1: $(grep -E '^ +[0-9]+ requests in' "$W/wrk-$1.txt" | sed 's/^ *//'), $(grep '^Requests/sec' "$W/wrk-$1.txt" | tr -s ' ')"
}

# --- the soak ------------------------------------------------------------------------------
write_config "$W/soak.hcl" "$W/cache"
start_server "$W/soak.hcl" soak
SOAK_PID="$SERVER_PID"
CLK_TCK="$(getconf CLK_TCK)"
printf 't\trss_kb\thwm_kb\tfds\tthreads\tcpu_ticks\tregistry_requests\torigin_conns\tmetrics\tphase\n' >"$W/samples.tsv"
NSAMPLE=0
sample() { # T PHASE: one line of samples.tsv
    local rss hwm fds threads cpu mfile stat conns
    kill -0 "$SOAK_PID" 2>/dev/null || die "the server died: $(tail -20 "$W/soak.err")"
    NSAMPLE=$((NSAMPLE + 1))
    mfile="metrics-$NSAMPLE.txt"
    "${CURL[@]}" --max-time 10 -o "$W/$mfile" "$SERVER_URL/metrics" || log "   (no /metrics at $1 s)"
    rss="$(awk '/^VmRSS/ { print $2 }' "/proc/$SOAK_PID/status")"
    hwm="$(awk '/^VmHWM/ { print $2 }' "/proc/$SOAK_PID/status")"
    threads="$(awk '/^Threads/ { print $2 }' "/proc/$SOAK_PID/status")"
    fds="$(find "/proc/$SOAK_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)"
    stat="$(cat "/proc/$SOAK_PID/stat")"
    stat="${stat##*) }" # fields from 3 on; utime and stime are fields 14 and 15
    cpu="$(awk '{ print $12 + $13 }' <<<"$stat")"
    # Connections to the registry (only the server talks to it during the soak).
    conns="$(ss -Htn state established "( dport = :$RPORT )" 2>/dev/null | wc -l)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$rss" "$hwm" "$fds" "$threads" "$cpu" \
        "$(registry_requests)" "$conns" "$mfile" "$2" >>"$W/samples.tsv"
}

sample 0 idle
REG_MARK_START="$(registry_lines)"
wait_quiet
log "soak: $CONNECTIONS connections, $THREADS threads, ${DURATION}s, mix $MIX_INDEX/$MIX_VERSION/$MIX_PACKAGE against $SERVER_URL (cold cache, index_max_age ${INDEX_MAX_AGE:-default})"
BUSY0="$(machine_busy_ticks)"
T0="$(date +%s.%N)"
start_wrk soak "$SERVER_URL" "$DURATION"
# Samples every INTERVAL s while the load runs (the last at least 2 s before its end, so
# that every sample is taken under load).
k=1
while :; do
    target=$((k * INTERVAL))
    [ "$target" -le $((DURATION - 2)) ] || break
    now="$(date +%s.%N)"
    delay="$(awk -v t0="$T0" -v n="$now" -v t="$target" 'BEGIN { d = t0 + t - n; print (d > 0) ? d : 0 }')"
    sleep "$delay"
    kill -0 "$WRK_PID" 2>/dev/null || die "wrk stopped early: $(tail -20 "$W/wrk-soak.txt")"
    sample "$target" load
    if [ $((target % 60)) = 0 ]; then
        log "   ${target}s: RSS $(awk -F'\t' 'END { printf "%.1f MiB, %d fds", $2 / 1024, $4 }' "$W/samples.tsv")"
    fi
    k=$((k + 1))
done
wait_wrk soak
BUSY1="$(machine_busy_ticks)"
T_END="$(awk -v t0="$T0" -v n="$(date +%s.%N)" 'BEGIN { printf "%.0f", n - t0 }')"
sleep 2 # let the server close the connections and the registry log its last lines
sample $((T_END + 2)) after
REG_MARK_END="$(registry_lines)"
log "   soak: $(grep -E '^ +[0-9]+ requests in' "$W/wrk-soak.txt" | sed 's/^ *//'), $(grep '^Requests/sec' "$W/wrk-soak.txt" | tr -s ' ')"

# --- reference: the same mix, warm, ours then nginx -------------------------------------------
log "reference: ${REF_DURATION}s of the same mix against our (warm) server, then nginx"
run_wrk ref-ours "$SERVER_URL" "$REF_DURATION"
run_wrk ref-nginx "$NGINX_URL" "$REF_DURATION"
stop_pid "$SOAK_PID" 35
if grep -q 'panicked' "$W/soak.err"; then die "the server panicked: $(grep -m3 panicked "$W/soak.err")"; fi

# --- report --------------------------------------------------------------------------------
COMMIT="$(commit_desc)"
MACHINE="$(machine_desc)"
if [ -n "$INDEX_MAX_AGE" ]; then
    FRESHNESS="index_max_age = $INDEX_MAX_AGE (other freshness attributes default)"
    MAX_AGE_SECS="$(awk -v s="$INDEX_MAX_AGE" 'BEGIN { n = s + 0; if (s ~ /ms$/) n /= 1000; else if (s ~ /m$/) n *= 60; else if (s ~ /h$/) n *= 3600; else if (s ~ /d$/) n *= 86400; print n }')"
else
    FRESHNESS="default freshness (index_max_age 5m, stale_while_revalidate 1h)"
    MAX_AGE_SECS=300
fi
RC=0
REPORT="$("${HELPER[@]}" report work="$W" duration="$DURATION" warmup="$WARMUP" interval="$INTERVAL" \
    index_max_age_secs="$MAX_AGE_SECS" packages="$NPKG" version_docs="$NVERSION_DOCS" providers="$NPROV" \
    manifests_by_digest="$((NVERSION_DOCS * (1 + NPLATFORMS)))" nplatforms="$NPLATFORMS" \
    pkg_min_kib="$PKG_MIN_KIB" pkg_max_kib="$PKG_MAX_KIB" pkg_bytes="$PKG_BYTES" \
    registry_log="$REGISTRY_LOG" registry_mark_start="$REG_MARK_START" registry_mark_end="$REG_MARK_END" \
    growth_limit="$GROWTH_LIMIT" clk_tck="$CLK_TCK" nproc="$(nproc)" \
    machine_busy_secs="$(awk -v a="$BUSY0" -v b="$BUSY1" -v t="$CLK_TCK" 'BEGIN { print (b - a) / t }')" \
    date="$(date -u '+%Y-%m-%d %H:%M UTC')" machine="$MACHINE" commit="$COMMIT (binary built $BIN_AGE)" \
    run_secs="$((SECONDS - START_TIME))" load_start="$LOAD_AT_START" load_end="$(cut -d' ' -f1-3 /proc/loadavg)" \
    command="$COMMAND" freshness="$FRESHNESS" wrk_version="$("$WRK" -v 2>&1 | head -1 | awk '{ print $2 }')" \
    threads="$THREADS" connections="$CONNECTIONS" mix="$MIX_INDEX/$MIX_VERSION/$MIX_PACKAGE %" \
    ref_duration="$REF_DURATION" nginx_version="$NGINX_VERSION" quiet_note="$QUIET_NOTE")" || RC=$?
[ -n "$REPORT" ] || die "no report (exit $RC)"
echo
echo "$REPORT"
prepend_results SOAK_RESULTS.md "Load-and-soak benchmark results" "$REPORT"$'\n'
[ "$RC" = 0 ] || die "goals not met (see the report)"
