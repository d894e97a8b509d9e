#!/usr/bin/env bash
# warm benchmark: `warm --jobs 8 --platform all` of many providers against a cold cache,
# compared with the fastest sequential raw download of the same blobs straight from the
# registry with curl; then a second warm with everything cached. All on 127.0.0.1. One run
# prints a results table and writes it to benches/WARM_RESULTS.md.
#
#   bash benches/warm_bench.sh
#
# What it measures (overridable: BENCH_PROVIDERS=20, BENCH_PKG_MIB=2, BENCH_JOBS=8,
# BENCH_ROUNDS=3):
#   1. cold warm: PROVIDERS providers × 3 platforms (linux_amd64, darwin_arm64,
#      windows_amd64) of PKG_MIB MiB random (incompressible) packages, published with
#      `push`; `warm --jobs JOBS --platform all` into an empty cache directory, wall time
#      including process start, tag lists and manifests (best of ROUNDS, each on a fresh
#      cache directory) — against the raw download: the same blobs GET from the registry one
#      after the other with curl, the sum of curl's time_total (best of ROUNDS). Goal: the
#      ratio warm / raw ≤ 1.3.
#   2. second warm with everything cached: wall time (goal < 1 s) and the registry's blob
#      GETs while it runs, from docker-registry's access log (goal 0).
#
# BENCH_NO_BUILD=1 skips `cargo build --release`. Needs: cargo, curl, python3, sha256sum,
# docker-registry (scripts/install-test-deps.sh). Every child is stopped on exit; every wait
# and transfer is bounded in time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. "$ROOT/benches/lib.sh"
HELPER=("${BENCH_HELPER[@]}")
PROVIDERS="${BENCH_PROVIDERS:-20}"
PKG_MIB="${BENCH_PKG_MIB:-2}"
JOBS="${BENCH_JOBS:-8}"
ROUNDS="${BENCH_ROUNDS:-3}"
PLATFORMS=(linux_amd64 darwin_arm64 windows_amd64)
PREFIX="terraform-providers"
NS="bench"
VERSION="1.0.0"
make_workdir odtr-warm-bench

now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }
min_of() { python3 -c "import sys; print(f'{min(map(float, sys.argv[1:])):.3f}')" "$@"; }
median_of() { python3 -c "import sys, statistics; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "$@"; }

# --- build and tools -----------------------------------------------------------------------
build_release
require_tools curl python3 sha256sum
local_only

# --- registry ------------------------------------------------------------------------------
start_registry info
# The access log has one line per completed request: "GET /v2/REPO/blobs/sha256:HEX HTTP/1.1".
# The registry's CPU time (user+sys) in seconds: on a 2-CPU machine it shares the CPUs with
# warm, while the raw curl leaves it a CPU of its own.
TICKS="$(getconf CLK_TCK)"
registry_cpu() { awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$REGISTRY_PID/stat"; }
cpu_since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$1" "$(registry_cpu)"; }
blob_gets() { grep -c '"GET /v2/[^ ]*/blobs/sha256:' "$W/registry/registry.log" || true; }

# --- publish -------------------------------------------------------------------------------
log "publishing $PROVIDERS providers × ${#PLATFORMS[@]} platforms of $PKG_MIB MiB (random, stored zip) with push"
BLOB_URLS=()
TOTAL_BYTES=0
SPECS=()
for ((i = 1; i <= PROVIDERS; i++)); do
    type="p$i"
    dir="$W/pkgs/$type"
    mkdir -p "$dir"
    files=()
    for platform in "${PLATFORMS[@]}"; do
        f="$dir/terraform-provider-${type}_${VERSION}_${platform}.zip"
        out="$("${HELPER[@]}" make-zip "$f" $((PKG_MIB << 20)) "terraform-provider-${type}_v$VERSION")"
        hex="${out% *}"
        size="${out#* }"
        TOTAL_BYTES=$((TOTAL_BYTES + size))
        BLOB_URLS+=("$REGISTRY/v2/$PREFIX/registry.terraform.io/$NS/$type/blobs/sha256:$hex")
        files+=("$f")
    done
    timeout 120 "$BIN" push --registry "$REGISTRY" --repository-prefix "$PREFIX" \
        --address "registry.terraform.io/$NS/$type" "${files[@]}" >"$W/push.log" 2>&1 ||
        { tail -20 "$W/push.log" >&2; die "push of $type"; }
    rm -rf "$dir"
    SPECS+=("$NS/$type@$VERSION")
done
NPKG=${#BLOB_URLS[@]}
log "published $NPKG packages ($((TOTAL_BYTES >> 20)) MiB)"

# --- raw download baseline -----------------------------------------------------------------
raw_round() { # -> sum of time_total over all blobs
    local url out code bytes t sum=0
    local times=()
    for url in "${BLOB_URLS[@]}"; do
        out="$(curl -s --max-time 60 -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$url")" ||
            die "curl $url"
        read -r code bytes t <<<"$out"
        [ "$code" = 200 ] || die "GET $url: HTTP $code"
        times+=("$t")
    done
    python3 -c "import sys; print(f'{sum(map(float, sys.argv[1:])):.3f}')" "${times[@]}"
}
RAW=()
RAW_REG_CPU=()
for ((r = 1; r <= ROUNDS; r++)); do
    c0="$(registry_cpu)"
    RAW+=("$(raw_round)")
    RAW_REG_CPU+=("$(cpu_since "$c0")")
    log "raw sequential download of $NPKG blobs, round $r: ${RAW[-1]} s"
done
RAW_BEST="$(min_of "${RAW[@]}")"
# For information: the same downloads written to files on the cache's disk, plus one `sync`
# (warm has to store, and fsync, what it fetches; curl to /dev/null does not).
raw_disk_round() { # -> seconds of wall time
    local url i=0 t0 t1
    rm -rf "$W/raw" && mkdir -p "$W/raw"
    t0="$(now)"
    for url in "${BLOB_URLS[@]}"; do
        i=$((i + 1))
        curl -s --max-time 60 -o "$W/raw/$i" "$url" || die "curl $url"
    done
    timeout 120 sync
    t1="$(now)"
    rm -rf "$W/raw"
    elapsed "$t0" "$t1"
}
RAW_DISK=()
for ((r = 1; r <= ROUNDS; r++)); do
    RAW_DISK+=("$(raw_disk_round)")
    log "raw sequential download of $NPKG blobs to files + sync, round $r: ${RAW_DISK[-1]} s"
done
RAW_DISK_BEST="$(min_of "${RAW_DISK[@]}")"

# --- warm ----------------------------------------------------------------------------------
WPORT="$(free_port)"
write_config() { # FILE CACHE_DIR
    cat >"$1" <<EOF
server {
  listen_addr = "127.0.0.1:$WPORT"
}

cache {
  directory = "$2"
  max_size  = "16GiB"
}

provider_mirror "mirror" {
  origin_url  = "$REGISTRY/"
  name_prefix = "$PREFIX"
}
EOF
}

TIME_BIN=""
[ -x /usr/bin/time ] && TIME_BIN=/usr/bin/time
run_warm() { # CONFIG LOG -> prints seconds (and writes user+sys CPU seconds to LOG.cpu)
    local t0 t1 timer=()
    [ -n "$TIME_BIN" ] && timer=("$TIME_BIN" -f '%U %S' -o "$2.time")
    t0="$(now)"
    timeout 300 "${timer[@]}" "$BIN" --config="$1" warm --jobs "$JOBS" --platform all "${SPECS[@]}" >"$2" 2>&1 ||
        { tail -20 "$2" >&2; die "warm failed (see above)"; }
    t1="$(now)"
    if [ -n "$TIME_BIN" ]; then
        python3 -c "import sys; u, s = open(sys.argv[1]).read().split()[-2:]; print(f'{float(u) + float(s):.2f}')" "$2.time" >"$2.cpu"
    else
        echo "?" >"$2.cpu"
    fi
    elapsed "$t0" "$t1"
}

COLD=()
COLD_CPU=()
COLD_REG_CPU=()
for ((r = 1; r <= ROUNDS; r++)); do
    cfg="$W/config-$r.hcl"
    rm -rf "$W/cache-$r"
    write_config "$cfg" "$W/cache-$r"
    c0="$(registry_cpu)"
    COLD+=("$(run_warm "$cfg" "$W/warm-cold-$r.log")")
    COLD_REG_CPU+=("$(cpu_since "$c0")")
    grep -q "$NPKG fetched" "$W/warm-cold-$r.log" || { cat "$W/warm-cold-$r.log" >&2; die "cold warm $r did not fetch $NPKG packages"; }
    COLD_CPU+=("$(cat "$W/warm-cold-$r.log.cpu")")
    log "cold warm --jobs $JOBS of $NPKG packages, round $r: ${COLD[-1]} s (CPU ${COLD_CPU[-1]} s)"
    # Keep only the last cache: the second warm runs on it.
    if [ "$r" -lt "$ROUNDS" ]; then rm -rf "$W/cache-$r"; fi
done
COLD_BEST="$(min_of "${COLD[@]}")"

# --- where the CPU goes ----------------------------------------------------------------------
# The registry's CPU for the metadata requests a cold warm has to make (tag lists, image
# indexes, per-platform manifests) and the raw download does not: the last cold round's
# requests, from the registry's access log, replayed with one curl (one connection).
sleep 1 # the registry logs a request when its response completes
META_PATHS=()
mapfile -t META_PATHS < <(grep '"oci-distribution-terraform-registry/' "$W/registry/registry.log" |
    sed -n 's/.*"GET \(\/v2\/[^ ]*\) HTTP[^"]*".*/\1/p' | grep -v '/blobs/' | tail -n "$((PROVIDERS * 5))" || true)
META_REG_CPU=()
if [ "${#META_PATHS[@]}" -gt 0 ]; then
    for ((r = 1; r <= ROUNDS; r++)); do
        args=()
        for path in "${META_PATHS[@]}"; do args+=(-o /dev/null "$REGISTRY$path"); done
        c0="$(registry_cpu)"
        curl -s --max-time 60 -H 'Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' "${args[@]}" ||
            die "replaying warm's metadata requests"
        META_REG_CPU+=("$(cpu_since "$c0")")
    done
fi
# On a machine with few CPUs the work of both processes bounds the wall time from below:
# (warm's CPU + the registry's CPU while warm ran) / CPUs, for the fastest round.
BEST_ROUND=0
for ((r = 0; r < ROUNDS; r++)); do
    [ "${COLD[$r]}" = "$COLD_BEST" ] && BEST_ROUND=$r && break
done
FLOOR="n/a"
if [ "${COLD_CPU[$BEST_ROUND]}" != "?" ]; then
    FLOOR="$(python3 -c "import sys; print(f'{(float(sys.argv[1]) + float(sys.argv[2])) / int(sys.argv[3]):.3f}')" \
        "${COLD_CPU[$BEST_ROUND]}" "${COLD_REG_CPU[$BEST_ROUND]}" "$(nproc)")"
fi
COLD_MEDIAN="$(median_of "${COLD[@]}")"
RAW_MEDIAN="$(median_of "${RAW[@]}")"
RATIO="$(ratio "$COLD_BEST" "$RAW_BEST")"
RATIO_MEDIAN="$(ratio "$COLD_MEDIAN" "$RAW_MEDIAN")"

# --- second warm, everything cached --------------------------------------------------------
sleep 1 # the registry logs a request when its response completes
BEFORE="$(blob_gets)"
HOT=()
for ((r = 1; r <= ROUNDS; r++)); do
    HOT+=("$(run_warm "$W/config-$ROUNDS.hcl" "$W/warm-hot-$r.log")")
    grep -q "Nothing to fetch" "$W/warm-hot-$r.log" || { cat "$W/warm-hot-$r.log" >&2; die "the second warm fetched something"; }
    log "warm with everything cached, run $r: ${HOT[-1]} s"
done
sleep 1
AFTER="$(blob_gets)"
HOT_GETS=$((AFTER - BEFORE))
HOT_WORST="$(python3 -c "import sys; print(f'{max(map(float, sys.argv[1:])):.3f}')" "${HOT[@]}")"
HOT_FIRST="${HOT[0]}"

# --- report --------------------------------------------------------------------------------
V_RATIO="$(verdict "$RATIO" "<=" 1.3)"
V_HOT="$(verdict "$HOT_WORST" "<" 1.0)"
V_GETS="$(verdict "$HOT_GETS" "=" 0)"
CPU="$(cpu_model)"
CPU="${CPU:-unknown}"
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
MIB_TOTAL=$((TOTAL_BYTES >> 20))
TABLE="$(cat <<EOF
| Measurement | Value | Goal | Verdict |
| --- | --- | --- | --- |
| raw sequential curl of $NPKG blobs ($MIB_TOTAL MiB), sum of time_total, best of $ROUNDS | ${RAW_BEST} s (rounds: ${RAW[*]}) | | |
| cold \`warm --jobs $JOBS --platform all\` of $PROVIDERS providers ($NPKG packages), wall time, best of $ROUNDS | ${COLD_BEST} s (rounds: ${COLD[*]}) | | |
| for information: the raw download written to files on the same disk, plus \`sync\`, wall time, best of $ROUNDS | ${RAW_DISK_BEST} s (rounds: ${RAW_DISK[*]}) | | |
| for information: the cold warm's CPU time (user+sys), per round | ${COLD_CPU[*]} s | | |
| for information: the registry's CPU time (user+sys) per raw round, then per cold warm round | ${RAW_REG_CPU[*]} s; ${COLD_REG_CPU[*]} s | | |
| for information: the registry's CPU time for the ${#META_PATHS[@]} metadata requests of a cold warm (tag lists, manifests), replayed with curl, per round | ${META_REG_CPU[*]:-n/a} s | | |
| for information: CPU floor of the fastest cold warm, (its CPU + the registry's) / $(nproc) CPUs | ${FLOOR} s ($(ratio "$FLOOR" "$RAW_BEST")× the raw download) | | |
| ratio cold warm / raw download (best of each) | **${RATIO}** (medians: ${RATIO_MEDIAN}) | ≤ 1.3 | $V_RATIO |
| second warm, everything cached ($NPKG packages), wall time | ${HOT_FIRST} s (runs: ${HOT[*]}) | < 1 s | $V_HOT |
| registry blob GETs during the $ROUNDS cached warms | $HOT_GETS | 0 | $V_GETS |
EOF
)"
RESULTS="$(cat <<EOF
# warm benchmark results

Measured by \`bash benches/warm_bench.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) CPU(s),
$CPU; everything on 127.0.0.1 (docker-registry $(docker-registry --version 2>/dev/null | awk '{print $NF}' || echo '?'),
the release binary). $PROVIDERS providers × ${#PLATFORMS[@]} platforms (${PLATFORMS[*]}) of $PKG_MIB MiB random
(incompressible) packages, published with \`push\` (OpenTofu layout). Load average at the end:
$LOADAVG (other work on the machine makes the disk-bound rows noisy).

$TABLE

- The raw download is the lower bound for moving the bytes: one \`curl\` per blob straight
  from the registry, one after the other, timing only the transfers (not curl's start-up).
- The cold warm's time is the whole command: start-up, tag lists, manifests, downloads with
  sha256 verification, fsync and the index, into an empty cache directory (warm leaves each
  package's \`h1:\` hash to its first use, or to the server's background pass).
- The registry's own CPU time bounds both: on a machine with few CPUs, warm and the registry
  share them, while during the raw download curl is nearly idle and the registry has a CPU
  to itself. A cold warm also has to make the metadata requests the raw download skips (a
  tag list, the image index and one manifest per platform for each provider; the offline
  answers need them); the registry's CPU for those alone is the replay row. The CPU floor
  row is the wall time the fastest cold warm could not beat on this machine even if the
  two processes shared the CPUs perfectly.
- The cached warm still resolves every version (its metadata is fresh in the cache index) and
  finds every package in the cache; the registry's access log shows no blob GET during it.
EOF
)"
printf '%s\n' "$RESULTS" >"$ROOT/benches/WARM_RESULTS.md"
printf '\n%s\n\n' "$TABLE"
log "wrote benches/WARM_RESULTS.md"
