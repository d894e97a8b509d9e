#!/usr/bin/env bash
# Package-serving benchmark: our server against nginx and against the registry itself, all on
# 127.0.0.1. One run prints a results table with ratios and writes it to benches/RESULTS.md.
#
#   bash benches/package_bench.sh
#
# What it measures (sizes overridable: BENCH_BIG_MIB, BENCH_MID_MIB, BENCH_HUGE_MIB,
# BENCH_CLIENTS):
#   1. warm throughput of one BIG (256 MiB) package over one connection (curl, median of
#      BENCH_THROUGHPUT_SAMPLES, default 9, ours and nginx alternating; nginx's own rate
#      varies by a third from one download to the next here, so a best of 3 mostly measured luck):
#      ours HTTPS vs nginx HTTPS (HTTP/1.1 for both; HTTP/2 rows for information), and ours
#      plain HTTP vs nginx plain HTTP with sendfile.
#   2. cold time to first byte of the BIG package through our server (a fresh server with an
#      empty cache for every sample; the client first fetches VERSION.json, as Terraform does)
#      vs a direct GET of the blob from the registry (median of BENCH_TTFB_SAMPLES, default 9;
#      plain HTTP for both); and, for information, the time to the last byte.
#   3. CLIENTS (50) concurrent cold requests for one MID (20 MiB) package: origin blob GETs
#      (from docker-registry's access log) and whether every client got the same sha256.
#   4. peak RSS (VmHWM) of a fresh server process while CLIENTS clients download the warm
#      HUGE (1 GiB) package at once over HTTPS.
#
# BENCH_NO_BUILD=1 skips `cargo build --release` (uses target/release as it is).
# Needs: cargo, curl, openssl, python3, docker-registry (scripts/install-test-deps.sh) and
# nginx (installed with apt-get if missing). Every child is stopped on exit. Every wait and
# transfer is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. "$ROOT/benches/lib.sh"
HELPER=("${BENCH_HELPER[@]}")
BIG_MIB="${BENCH_BIG_MIB:-256}"
MID_MIB="${BENCH_MID_MIB:-20}"
HUGE_MIB="${BENCH_HUGE_MIB:-1024}"
CLIENTS="${BENCH_CLIENTS:-50}"
TTFB_SAMPLES="${BENCH_TTFB_SAMPLES:-9}"
THROUGHPUT_SAMPLES="${BENCH_THROUGHPUT_SAMPLES:-9}"
ADDR="registry.terraform.io/bench/pkg"
REPO="bench/$ADDR"
PLATFORM="linux_amd64"
SERVER_RUST_LOG=info

make_workdir odtr-bench

# Other work on the machine (a build, tests) skews every figure: before each measurement wait
# (at most BENCH_QUIET_WAIT seconds) until the CPUs are mostly idle for a second.
QUIET_WAIT="${BENCH_QUIET_WAIT:-30}"
QUIET_NOTES=()
wait_quiet() { # LABEL
    wait_idle "measuring anyway"
    QUIET_NOTES+=("$1: ${IDLE_BUSY}% busy")
}

# --- build and tools -----------------------------------------------------------------------
build_release
require_tools curl openssl python3 sha256sum
find_nginx
local_only
make_cert
CURL=(curl -s --max-time 300 --cacert "$W/cert.pem")

# --- registry ------------------------------------------------------------------------------
start_registry info

publish() { # VERSION SIZE_MIB -> sets PKG_HEX PKG_SIZE PKG_FILE
    local version="$1" mib="$2" out
    PKG_FILE="$W/pkg-$version.zip"
    out="$("${HELPER[@]}" make-zip "$PKG_FILE" $((mib << 20)) "terraform-provider-pkg_v$version")"
    PKG_HEX="${out% *}"
    PKG_SIZE="${out#* }"
    push_image "$REPO" "$version" "$PKG_FILE" "$PKG_HEX" "$PKG_SIZE" "$PLATFORM"
}

log "publishing packages: ${BIG_MIB} MiB, ${MID_MIB} MiB, ${HUGE_MIB} MiB (random, stored zip)"
publish 1.0.0 "$BIG_MIB"
BIG_HEX="$PKG_HEX" BIG_SIZE="$PKG_SIZE" BIG_FILE="$PKG_FILE"
publish 2.0.0 "$MID_MIB"
MID_HEX="$PKG_HEX" MID_SIZE="$PKG_SIZE"
rm -f "$PKG_FILE"
publish 3.0.0 "$HUGE_MIB"
HUGE_HEX="$PKG_HEX" HUGE_SIZE="$PKG_SIZE"
rm -f "$PKG_FILE" # only the registry keeps it

# --- our server ----------------------------------------------------------------------------
write_config() { # FILE CACHE_DIR tls|plain
    cat >"$1" <<EOF
$(server_block "$3")

cache {
  directory = "$2"
  max_size  = "16GiB"
}

provider_mirror "mirror" {
  origin_url     = "$REGISTRY/"
  name_prefix    = "bench"
  proxy_packages = false
}
EOF
}

pkg_url() { # VERSION HEX
    echo "$SERVER_URL/mirror/$ADDR/download/sha256/$2/terraform-provider-pkg_$1_$PLATFORM.zip"
}
check_download() { # URL HEX SIZE [curl args] : a complete, correct download
    local url="$1" hex="$2" got
    shift 3
    got="$("${CURL[@]}" "$@" "$url" | sha256sum | cut -d' ' -f1)"
    [ "$got" = "$hex" ] || die "GET $url: sha256 $got, expected $hex"
}

# curl -w FIELDS of one transfer, checking status and size. Prints the FIELDS.
curl_fields() { # FIELDS URL SIZE [curl args]
    local url="$2" size="$3" out
    out="$("${CURL[@]}" "${@:4}" -o /dev/null -w "%{http_code} %{size_download} $1" "$url")"
    set -- $out
    [ "$1" = 200 ] && [ "$2" = "$size" ] || die "GET $url: HTTP $1, $2 bytes of $size"
    shift 2
    echo "$*"
}
speed_once() { curl_fields '%{speed_download}' "$@"; } # URL SIZE [curl args] -> bytes/s
# Best of 3 for two URLs, alternating A B A B A B so that a burst of other load does not
# fall on one side only. Prints "bestA bestB".
median_pair() { # LABEL URL_A URL_B SIZE [curl args] : "MEDIAN_A MEDIAN_B"; samples in $W/samples-LABEL
    local label="$1" ua="$2" ub="$3" size="$4" a=() b=() i
    shift 4
    for i in $(seq 1 "$THROUGHPUT_SAMPLES"); do
        a+=("$(speed_once "$ua" "$size" "$@")")
        b+=("$(speed_once "$ub" "$size" "$@")")
    done
    echo "$label MiB/s, ours: $(for x in "${a[@]}"; do mibs "$x"; echo -n " "; done)nginx: $(for x in "${b[@]}"; do mibs "$x"; echo -n " "; done)" >"$W/samples-$label"
    echo "$("${HELPER[@]}" median "${a[@]}") $("${HELPER[@]}" median "${b[@]}")"
}
mibs() { awk -v s="$1" 'BEGIN { printf "%.0f", s / 1048576 }'; }

# --- nginx ---------------------------------------------------------------------------------
NPORT_TLS="$(free_port)"
NPORT_PLAIN="$(free_port)"
mkdir -p "$W/www"
ln "$BIG_FILE" "$W/www/pkg.zip" 2>/dev/null || cp "$BIG_FILE" "$W/www/pkg.zip"
write_nginx_conf 1024 "" "  default_type application/zip;" "$(nginx_tls_server "$NPORT_TLS" "ssl http2")
  server {
    listen 127.0.0.1:$NPORT_PLAIN;
    root $W/www;
  }"
NGINX_TLS="https://127.0.0.1:$NPORT_TLS/pkg.zip"
NGINX_PLAIN="http://127.0.0.1:$NPORT_PLAIN/pkg.zip"
start_nginx "$NPORT_TLS (https) and $NPORT_PLAIN (http)" "$NGINX_PLAIN"
check_download "$NGINX_TLS" "$BIG_HEX" "$BIG_SIZE"

# --- 1. warm throughput --------------------------------------------------------------------
write_config "$W/tls.hcl" "$W/cache-tls" tls
write_config "$W/plain.hcl" "$W/cache-plain" plain

log "1. warm throughput of the ${BIG_MIB} MiB package, one connection, median of $THROUGHPUT_SAMPLES"
start_server "$W/tls.hcl" ours-tls
OURS_TLS="$(pkg_url 1.0.0 "$BIG_HEX")"
check_download "$OURS_TLS" "$BIG_HEX" "$BIG_SIZE" # fills the cache
check_download "$OURS_TLS" "$BIG_HEX" "$BIG_SIZE" # from the cache
wait_quiet "https/1.1"
PAIR="$(median_pair https1 "$OURS_TLS" "$NGINX_TLS" "$BIG_SIZE" --http1.1)"
S_OURS_TLS="${PAIR% *}" S_NGINX_TLS="${PAIR#* }"
wait_quiet "https/2"
PAIR="$(median_pair https2 "$OURS_TLS" "$NGINX_TLS" "$BIG_SIZE" --http2)"
S_OURS_H2="${PAIR% *}" S_NGINX_H2="${PAIR#* }"
stop_server

start_server "$W/plain.hcl" ours-plain
OURS_PLAIN="$(pkg_url 1.0.0 "$BIG_HEX")"
check_download "$OURS_PLAIN" "$BIG_HEX" "$BIG_SIZE"
check_download "$OURS_PLAIN" "$BIG_HEX" "$BIG_SIZE"
wait_quiet "plain http"
PAIR="$(median_pair plain "$OURS_PLAIN" "$NGINX_PLAIN" "$BIG_SIZE")"
S_OURS_PLAIN="${PAIR% *}" S_NGINX_PLAIN="${PAIR#* }"
stop_server
log "   https/1.1 ours $(mibs "$S_OURS_TLS") MiB/s, nginx $(mibs "$S_NGINX_TLS") MiB/s; plain ours $(mibs "$S_OURS_PLAIN"), nginx $(mibs "$S_NGINX_PLAIN")"

# --- 2. cold time to first byte ------------------------------------------------------------
log "2. cold time to first byte of the ${BIG_MIB} MiB package ($TTFB_SAMPLES samples, fresh server and cache each)"
ttfb() { curl_fields '%{time_starttransfer} %{time_total}' "$@"; } # URL SIZE [curl args]
T_REG=() T_OURS=() TT_REG=() TT_OURS=()
wait_quiet "cold"
for ((i = 1; i <= TTFB_SAMPLES; i++)); do
    set -- $(ttfb "$REGISTRY/v2/$REPO/blobs/sha256:$BIG_HEX" "$BIG_SIZE")
    T_REG+=("$1") TT_REG+=("$2")
    rm -rf "$W/cache-cold"
    write_config "$W/cold.hcl" "$W/cache-cold" plain
    start_server "$W/cold.hcl" "ours-cold-$i"
    # As Terraform does: VERSION.json first (same origin), then the package.
    "${CURL[@]}" -o /dev/null "$SERVER_URL/mirror/$ADDR/1.0.0.json"
    set -- $(ttfb "$(pkg_url 1.0.0 "$BIG_HEX")" "$BIG_SIZE")
    T_OURS+=("$1") TT_OURS+=("$2")
    stop_server
done
rm -rf "$W/cache-cold"
M_REG="$("${HELPER[@]}" median "${T_REG[@]}")"
M_OURS="$("${HELPER[@]}" median "${T_OURS[@]}")"
MT_REG="$("${HELPER[@]}" median "${TT_REG[@]}")"
MT_OURS="$("${HELPER[@]}" median "${TT_OURS[@]}")"
ms() { awk -v s="$1" 'BEGIN { printf "%.2f", s * 1000 }'; }
log "   first byte: registry ${T_REG[*]} s; ours ${T_OURS[*]} s"
log "   last byte:  registry ${TT_REG[*]} s; ours ${TT_OURS[*]} s"

# --- 3. concurrent cold requests -----------------------------------------------------------
log "3. $CLIENTS concurrent cold requests for the ${MID_MIB} MiB package"
count_blob_gets() { grep -c "\"GET /v2/$REPO/blobs/sha256:$1 HTTP" "$W/registry/registry.log" || true; }
write_config "$W/c50.hcl" "$W/cache-c50" tls
start_server "$W/c50.hcl" ours-c50
MID_URL="$(pkg_url 2.0.0 "$MID_HEX")"
BEFORE="$(count_blob_gets "$MID_HEX")"
wait_quiet "concurrent cold"
mkdir -p "$W/c50"
C_START=$SECONDS
CPIDS=()
for ((i = 0; i < CLIENTS; i++)); do
    ( "${CURL[@]}" --max-time 120 "$MID_URL" | sha256sum | cut -d' ' -f1 >"$W/c50/$i" ) &
    CPIDS+=($!)
done
for pid in "${CPIDS[@]}"; do wait "$pid" || true; done
C_SECS=$((SECONDS - C_START))
sleep 1 # the registry logs a request when its response completes
AFTER="$(count_blob_gets "$MID_HEX")"
ORIGIN_GETS=$((AFTER - BEFORE))
SUMS_OK="$(cat "$W"/c50/* | sort | uniq -c | awk -v want="$MID_HEX" -v n="$CLIENTS" \
    '{ if ($2 == want && $1 == n) ok = 1 } END { print ok ? "yes" : "no" }')"
DISTINCT="$(cat "$W"/c50/* | sort -u | wc -l)"
stop_server
rm -rf "$W/c50" "$W/cache-c50"
log "   origin blob GETs: $ORIGIN_GETS; all $CLIENTS sha256 equal to the package's: $SUMS_OK ($DISTINCT distinct)"

# --- 4. memory -----------------------------------------------------------------------------
log "4. peak RSS: $CLIENTS clients downloading the warm ${HUGE_MIB} MiB package over HTTPS"
start_server "$W/tls.hcl" ours-warmup
check_download "$(pkg_url 3.0.0 "$HUGE_HEX")" "$HUGE_HEX" "$HUGE_SIZE" # fill the cache
stop_server
start_server "$W/tls.hcl" ours-mem
HUGE_URL="$(pkg_url 3.0.0 "$HUGE_HEX")"
mkdir -p "$W/mem"
wait_quiet "memory"
M_START=$SECONDS
CPIDS=()
for ((i = 0; i < CLIENTS; i++)); do
    "${CURL[@]}" --max-time 420 -o /dev/null -w '%{size_download} %{http_code}\n' "$HUGE_URL" >"$W/mem/$i" &
    CPIDS+=($!)
done
PEAK_RSS_KB=0
while :; do
    alive=0
    for pid in "${CPIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1 && break; done
    rss="$(awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)"
    [ "${rss:-0}" -gt "$PEAK_RSS_KB" ] && PEAK_RSS_KB="$rss"
    [ "$alive" = 1 ] || break
    [ $((SECONDS - M_START)) -lt 450 ] || break
    sleep 0.5
done
for pid in "${CPIDS[@]}"; do wait "$pid" || true; done
M_SECS=$((SECONDS - M_START))
HWM_KB="$(awk '/^VmHWM/ { print $2 }' "/proc/$SERVER_PID/status")"
M_OK="$(cat "$W"/mem/* | awk -v size="$HUGE_SIZE" '$1 == size && $2 == 200 { n++ } END { print n + 0 }')"
stop_server
log "   VmHWM $((HWM_KB / 1024)) MiB (sampled VmRSS peak $((PEAK_RSS_KB / 1024)) MiB); $M_OK/$CLIENTS complete in ${M_SECS}s"

# --- results -------------------------------------------------------------------------------
R_TLS="$(ratio "$S_OURS_TLS" "$S_NGINX_TLS")"
R_H2="$(ratio "$S_OURS_H2" "$S_NGINX_H2")"
R_PLAIN="$(ratio "$S_OURS_PLAIN" "$S_NGINX_PLAIN")"
R_TTFB="$(ratio "$M_OURS" "$M_REG")"
AGG_MIBS="$(awk -v n="$M_OK" -v s="$HUGE_SIZE" -v t="$M_SECS" 'BEGIN { if (t > 0) printf "%.0f", n * s / t / 1048576; else print "n/a" }')"
C50_VERDICT="NOT met"
[ "$ORIGIN_GETS" = 1 ] && [ "$SUMS_OK" = yes ] && C50_VERDICT="met"
MEM_VERDICT="$(verdict "$((HWM_KB / 1024))" "<=" 99)"

TABLE="| measurement | ours | reference | ratio | goal | |
| --- | ---: | ---: | ---: | --- | --- |
| warm ${BIG_MIB} MiB, one HTTPS connection, HTTP/1.1 (median of $THROUGHPUT_SAMPLES) | $(mibs "$S_OURS_TLS") MiB/s | nginx $(mibs "$S_NGINX_TLS") MiB/s | $R_TLS | ≥ 1.1 | $(verdict "$R_TLS" ">=" 1.1) |
| warm ${BIG_MIB} MiB, one HTTPS connection, HTTP/2 (median of $THROUGHPUT_SAMPLES) | $(mibs "$S_OURS_H2") MiB/s | nginx $(mibs "$S_NGINX_H2") MiB/s | $R_H2 | (info) | |
| warm ${BIG_MIB} MiB, one plain HTTP connection (median of $THROUGHPUT_SAMPLES) | $(mibs "$S_OURS_PLAIN") MiB/s | nginx sendfile $(mibs "$S_NGINX_PLAIN") MiB/s | $R_PLAIN | ≥ 0.9 | $(verdict "$R_PLAIN" ">=" 0.9) |
| cold time to first byte, ${BIG_MIB} MiB (median of $TTFB_SAMPLES) | $(ms "$M_OURS") ms | registry direct $(ms "$M_REG") ms | $R_TTFB | ≤ 1.2 | $(verdict "$R_TTFB" "<=" 1.2) |
| cold time to last byte, ${BIG_MIB} MiB (median of $TTFB_SAMPLES) | $(ms "$MT_OURS") ms | registry direct $(ms "$MT_REG") ms | $(ratio "$MT_OURS" "$MT_REG") | (info) | |
| $CLIENTS concurrent cold GETs of ${MID_MIB} MiB: origin blob GETs | $ORIGIN_GETS | 1 | | = 1, all sha256 equal ($SUMS_OK) | $C50_VERDICT |
| $CLIENTS clients × warm ${HUGE_MIB} MiB over HTTPS: server VmHWM | $((HWM_KB / 1024)) MiB | | | < 100 MiB | $MEM_VERDICT |"
NOTES="- throughput samples, alternating ours and nginx: $(cat "$W/samples-https1"); $(cat "$W/samples-https2"); $(cat "$W/samples-plain"). Over plain HTTP both send the file with sendfile(2).
- cold samples (s), first byte: ours ${T_OURS[*]}; registry ${T_REG[*]}; last byte: ours ${TT_OURS[*]}; registry ${TT_REG[*]}. Ours is a fresh server process with an empty cache per sample; the client fetches VERSION.json first (as Terraform does), then the package; both plain HTTP.
- $CLIENTS concurrent ${MID_MIB} MiB downloads took ${C_SECS}s; $DISTINCT distinct sha256 among the clients.
- $CLIENTS × ${HUGE_MIB} MiB: $M_OK/$CLIENTS complete in ${M_SECS}s (about $AGG_MIBS MiB/s in all); sampled VmRSS peak $((PEAK_RSS_KB / 1024)) MiB; curl's default protocol (HTTP/2 by ALPN).
- CPU use by anything else just before each measurement (waited up to ${QUIET_WAIT}s for ≤ 20%): $(IFS=';'; echo "${QUIET_NOTES[*]}" | sed 's/;/; /g'); load average at the end $(cut -d' ' -f1-3 /proc/loadavg).
- nginx: $NGINX_VERSION, worker_processes auto, sendfile on, TLS by OpenSSL (no kTLS); curl: $(curl --version | head -1 | cut -d' ' -f1-2); both servers use the same EC P-256 certificate."

REPORT="## $(date -u '+%Y-%m-%d %H:%M UTC')

Machine: $(machine_desc). Commit $(commit_desc). All traffic on 127.0.0.1. Run time $((SECONDS - START_TIME)) s.

$TABLE

$NOTES
"
echo
echo "$REPORT"
prepend_results RESULTS.md "Package-serving benchmark results" "$REPORT"
