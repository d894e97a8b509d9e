#!/usr/bin/env bash
# Metadata-serving benchmark: our server against nginx serving the same bytes as static
# files, all on 127.0.0.1. One run prints a results table and writes it to
# benches/METADATA_RESULTS.md (newest first).
#
#   bash benches/metadata_bench.sh
#
# What it measures (overridable: BENCH_DURATION seconds of load per round (10),
# BENCH_ROUNDS (3), BENCH_CONNECTIONS (64), BENCH_PROVIDERS (10), BENCH_PKG_KIB package size
# (1024), BENCH_SHORT_MAX_AGE (5s)):
#   1. warm VERSION.json requests/second with wrk (keep-alive, HTTPS, HTTP/1.1) against our
#      server (proxy_packages = false, index_max_age = 1h) vs nginx serving the same bytes as a
#      static file over HTTPS, in ROUNDS interleaved rounds (ours, nginx, ours, nginx, ...) so
#      that other load on the machine falls on both alike; the ratio is of the medians. The
#      origin requests (docker-registry's access log: GETs and HEADs on /v2/ paths) during our
#      rounds, per key. For information, each round also loads the ceiling: a bare hyper +
#      rustls server (benches/bare_json_server.rs, our TLS configuration) answering the same
#      bytes as a constant.
#      An extra row repeats the load with index_max_age = BENCH_SHORT_MAX_AGE, to show the
#      origin traffic while entries expire and are revalidated under load.
#   2. `terraform init` (1.0.3) of BENCH_PROVIDERS cached providers with the registry stopped
#      (best of 3, fresh work directory each, no plugin cache) vs the same init against nginx
#      serving a static mirror of the same files (our server's index.json and VERSION.json,
#      archive URLs rewritten to file names, and the packages).
#
# BENCH_NO_BUILD=1 skips `cargo build --release` (uses target/release as it is).
# Needs: cargo, curl, openssl, python3, docker-registry and Terraform 1.0.3
# (scripts/install-test-deps.sh), wrk and nginx (installed with apt-get if missing). Every
# child is stopped on exit. Every wait is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. "$ROOT/benches/lib.sh"
HELPER=("${BENCH_HELPER[@]}")
DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-3}"
CONNECTIONS="${BENCH_CONNECTIONS:-64}"
NPROV="${BENCH_PROVIDERS:-10}"
PKG_KIB="${BENCH_PKG_KIB:-1024}"
SHORT_MAX_AGE="${BENCH_SHORT_MAX_AGE:-5s}"
TERRAFORM="${ODTR_TERRAFORM:-$ROOT/.tools/terraform-1.0.3/terraform}"
NS="registry.terraform.io/bench"
PREFIX="bench"
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"

make_workdir odtr-metabench

# --- build and tools -----------------------------------------------------------------------
build_release
# The ceiling reference (benches/bare_json_server.rs), built as a bench target (quick when
# it is up to date, so BENCH_NO_BUILD does not skip it).
BARE_BIN="$(timeout 3000 cargo build --release --bench bare_json_server --message-format=json 2>"$W/bare-build.log" |
    python3 -c 'import sys, json
for m in map(json.loads, sys.stdin):
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "bare_json_server" and m.get("executable"):
        print(m["executable"])' | tail -1)"
[ -x "$BARE_BIN" ] || die "cannot build benches/bare_json_server.rs: $(tail -20 "$W/bare-build.log")"
[ -x "$TERRAFORM" ] || die "Terraform 1.0.3 missing at $TERRAFORM: run scripts/install-test-deps.sh"
require_tools curl openssl python3 sha256sum awk
find_wrk
find_nginx
local_only
make_cert
CURL=(curl -s --max-time 60 --cacert "$W/cert.pem")

PLATFORM="$(uname -s | tr '[:upper:]' '[:lower:]')_$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')"

# --- registry ------------------------------------------------------------------------------
start_registry info delete

log "publishing $NPROV providers $NS/p0..p$((NPROV - 1)) 1.0.0 ($PLATFORM, ${PKG_KIB} KiB each, seed layout)"
PROVIDERS=()
for ((i = 0; i < NPROV; i++)); do
    repo="$PREFIX/$NS/p$i"
    out="$("${HELPER[@]}" make-zip "$W/p$i.zip" $((PKG_KIB * 1024)) "terraform-provider-p${i}_v1.0.0" sh)"
    push_image "$repo" 1.0.0 "$W/p$i.zip" "${out% *}" "${out#* }" "$PLATFORM"
    PROVIDERS+=("$NS/p$i")
done

# --- our server ----------------------------------------------------------------------------
write_config() { # FILE CACHE_DIR INDEX_MAX_AGE
    cat >"$1" <<EOF
$(server_block tls)

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

# --- nginx ---------------------------------------------------------------------------------
NPORT="$(free_port)"
mkdir -p "$W/www/static" "$W/www/mirror"
write_nginx_conf 4096 "" "  keepalive_requests 1000000;
  types { application/json json; application/zip zip; }
  default_type application/octet-stream;" \
    "$(nginx_tls_server "$NPORT" "ssl http2" "ssl_session_cache shared:SSL:1m;")"
echo ok >"$W/www/ready.txt"
start_nginx "127.0.0.1:$NPORT (https)" "https://127.0.0.1:$NPORT/ready.txt" --cacert "$W/cert.pem"

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
NGINX_VERSION_URL="https://127.0.0.1:$NPORT/static/1.0.0.json"
cmp -s <("${CURL[@]}" "$NGINX_VERSION_URL") "$W/www/static/1.0.0.json" || die "nginx serves other bytes"
BPORT="$(free_port)"
"$BARE_BIN" "$W/cert.pem" "$W/key.pem" "$W/www/static/1.0.0.json" "127.0.0.1:$BPORT" >"$W/bare.log" 2>&1 &
BARE_PID=$!
PIDS+=("$BARE_PID")
BARE_URL="https://127.0.0.1:$BPORT/1.0.0.json"
wait_http "$BARE_URL" 20 --cacert "$W/cert.pem" || die "the bare server did not start: $(cat "$W/bare.log")"
MARK="$(log_lines)"
R_OURS=() R_NGINX=() R_BARE=() P_OURS=() P_NGINX=()
for ((r = 1; r <= ROUNDS; r++)); do
    run_wrk "$OURS_VERSION" "ours-$r"
    R_OURS+=("$RPS") P_OURS+=("$P99")
    run_wrk "$NGINX_VERSION_URL" "nginx-$r"
    R_NGINX+=("$RPS") P_NGINX+=("$P99")
    run_wrk "$BARE_URL" "bare-$r"
    R_BARE+=("$RPS")
    log "   round $r: ours ${R_OURS[-1]}, nginx ${R_NGINX[-1]}, bare hyper+rustls ${R_BARE[-1]} req/s"
done
stop_pid "$BARE_PID" 5
sleep 1
IFS=$'\t' read -r O_TOTAL O_WORST O_KEYS O_DETAIL < <("${HELPER[@]}" origin-counts "$REGISTRY_LOG" "$MARK")
RPS_OURS="$("${HELPER[@]}" median "${R_OURS[@]}")" P99_OURS="$("${HELPER[@]}" median-time "${P_OURS[@]}")"
RPS_NGINX="$("${HELPER[@]}" median "${R_NGINX[@]}")" P99_NGINX="$("${HELPER[@]}" median-time "${P_NGINX[@]}")"
RPS_BARE="$("${HELPER[@]}" median "${R_BARE[@]}")"
log "   medians: ours $RPS_OURS, nginx $RPS_NGINX, bare $RPS_BARE req/s; origin requests during our rounds: $O_TOTAL ($O_DETAIL)"

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
R_RPS="$(ratio "$RPS_OURS" "$RPS_NGINX")"
RATIO_BARE="$(ratio "$RPS_BARE" "$RPS_NGINX")"
ROUND_RATIOS=""
for ((r = 0; r < ROUNDS; r++)); do ROUND_RATIOS+="$(ratio "${R_OURS[$r]}" "${R_NGINX[$r]}") "; done
R_INIT="$(ratio "$B_OURS" "$B_NGINX")"
ORIGIN_VERDICT="$(verdict "$O_WORST" "<=" 1)"
SHORT_VERDICT="$(verdict "$S_WORST" "<=" "$S_ALLOWED")"
TABLE="| measurement | ours | nginx (static files) | ratio | goal | |
| --- | ---: | ---: | ---: | --- | --- |
| warm VERSION.json, wrk ${CONNECTIONS} conns, HTTPS keep-alive (index_max_age 1h), median of $ROUNDS interleaved ${DURATION}s rounds | $RPS_OURS req/s (p99 $P99_OURS) | $RPS_NGINX req/s (p99 $P99_NGINX) | $R_RPS (rounds: $ROUND_RATIOS) | ≥ 1.2 | $(verdict "$R_RPS" ">=" 1.2) |
| for information: the ceiling, a bare hyper + rustls server answering the same bytes as a constant (same rounds) | $RPS_BARE req/s | | $RATIO_BARE | | |
| origin requests during our rounds (most for one key) | $O_TOTAL ($O_WORST) | | | ≤ 1 per key per index_max_age | $ORIGIN_VERDICT |
| same load, index_max_age $SHORT_MAX_AGE: req/s; origin requests (most for one key) | $RPS_SHORT req/s (p99 $P99_SHORT); $S_TOTAL ($S_WORST) | | | ≤ $S_ALLOWED per key in ${DURATION}s | $SHORT_VERDICT |
| terraform init, $NPROV cached providers, origin stopped (best of 3) | ${B_OURS} s | ${B_NGINX} s | $R_INIT | ≤ 1.2 | $(verdict "$R_INIT" "<=" 1.2) |"
NOTES="- req/s per round: ours ${R_OURS[*]}; nginx ${R_NGINX[*]}; bare ${R_BARE[*]}.
- origin requests by key during the 1h load: $O_DETAIL; during the $SHORT_MAX_AGE load: $S_DETAIL (docker-registry's access log, GET/HEAD on /v2/).
- terraform init samples (s): ours ${T_OURS[*]}; nginx ${T_NGINX[*]}. Terraform 1.0.3, fresh work directory each, no plugin cache; ${PKG_KIB} KiB packages for $PLATFORM; the nginx mirror holds our server's index.json, 1.0.0.json (archive URLs made plain file names) and packages.
- wrk $("$WRK" -v 2>&1 | head -1 | awk '{ print $2 }'), $(nproc) threads, HTTP/1.1 over TLS; nginx $NGINX_VERSION, worker_processes auto, access_log off, OpenSSL; both use the same EC P-256 certificate; client and servers share the $(nproc) CPUs."
REPORT="## $(date -u '+%Y-%m-%d %H:%M UTC')

Machine: $(machine_desc). Commit $(commit_desc). All traffic on 127.0.0.1. Run time $((SECONDS - START_TIME)) s. Load average at start $LOAD_AT_START, at end $(cut -d' ' -f1-3 /proc/loadavg) (anything else running on the machine shares its CPUs).

$TABLE

$NOTES
"
echo
echo "$REPORT"
prepend_results METADATA_RESULTS.md "Metadata-serving benchmark results" "$REPORT"
