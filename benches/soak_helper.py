#!/usr/bin/env python3
"""Helpers for benches/soak_bench.sh (standard library only; reuses bench_helper.py).

  make-packages ROOT HOST NS NPROV VERSIONS PLATFORMS MIN_KIB MAX_KIB SEED
        write ROOT/HOST/NS/p<i>/terraform-provider-p<i>_<VERSION>_<PLATFORM>.zip (a
        `terraform providers mirror` tree without JSON documents, which `push` accepts);
        VERSIONS and PLATFORMS are comma separated; sizes uniform in [MIN_KIB, MAX_KIB];
        prints "packages total_bytes"
  prep BASE_URL CACERT PKG_ROOT WWW PATHS_OUT
        through a throw-away server at BASE_URL (.../mirror): GET every index.json and
        VERSION.json, download every package once and check its sha256 against the local zip,
        then write the same documents (fetched again, now with h1: hashes) and hard links to
        the zips under WWW at the same URL paths (nginx's root), and the request paths, one
        "KIND PATH" per line (KIND index|version|package), to PATHS_OUT
  report KEY=VALUE...
        read the soak's samples, /metrics snapshots, wrk results and the registry's access
        log; print the Markdown report; exit 1 if a goal is not met (see soak_bench.sh)
"""
import json
import math
import os
import random
import re
import ssl
import sys
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no benches/__pycache__ from importing bench_helper
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_helper  # noqa: E402  (make_zip, sha256_file)


# --- packages ----------------------------------------------------------------------------
def make_packages(root, host, ns, nprov, versions, platforms, min_kib, max_kib, seed):
    rng = random.Random(int(seed))
    count = total = 0
    for i in range(int(nprov)):
        typ = f"p{i}"
        d = os.path.join(root, host, ns, typ)
        os.makedirs(d, exist_ok=True)
        for version in versions.split(","):
            for platform in platforms.split(","):
                size = rng.randint(int(min_kib), int(max_kib)) * 1024
                out = os.path.join(d, f"terraform-provider-{typ}_{version}_{platform}.zip")
                _, written = bench_helper.make_zip(out, size, f"terraform-provider-{typ}_v{version}")
                count += 1
                total += written
    print(count, total)


# --- prep: documents, URLs and the static copy for nginx ---------------------------------
def _get(url, ctx):
    with urllib.request.urlopen(url, context=ctx, timeout=60) as r:
        if r.status != 200:
            raise SystemExit(f"GET {url}: HTTP {r.status}")
        return r.read()


def prep(base_url, cacert, pkg_root, www, paths_out):
    import hashlib

    ctx = ssl.create_default_context(cafile=cacert)
    base = base_url.rstrip("/") + "/"
    base_path = urllib.parse.urlsplit(base).path
    lines = []
    static = []  # (url path, bytes) written after the packages are cached
    links = []  # (url path, local zip)
    for host in sorted(os.listdir(pkg_root)):
        for ns in sorted(os.listdir(os.path.join(pkg_root, host))):
            for typ in sorted(os.listdir(os.path.join(pkg_root, host, ns))):
                pdir = os.path.join(pkg_root, host, ns, typ)
                local = {}
                for name in os.listdir(pdir):
                    m = re.fullmatch(rf"terraform-provider-{re.escape(typ)}_(.+)_([a-z0-9]+_[a-z0-9]+)\.zip", name)
                    if m:
                        local[(m.group(1), m.group(2))] = os.path.join(pdir, name)
                want_versions = sorted({v for v, _ in local})
                prov = f"{host}/{ns}/{typ}"
                index_url = urllib.parse.urljoin(base, f"{prov}/index.json")
                index = json.loads(_get(index_url, ctx))
                got = sorted(index.get("versions", {}))
                if got != want_versions:
                    raise SystemExit(f"{index_url}: versions {got}, expected {want_versions}")
                lines.append(("index", urllib.parse.urlsplit(index_url).path))
                for version in want_versions:
                    vurl = urllib.parse.urljoin(base, f"{prov}/{version}.json")
                    doc = json.loads(_get(vurl, ctx))
                    lines.append(("version", urllib.parse.urlsplit(vurl).path))
                    archives = doc.get("archives", {})
                    want_platforms = sorted(p for v, p in local if v == version)
                    if sorted(archives) != want_platforms:
                        raise SystemExit(f"{vurl}: platforms {sorted(archives)}, expected {want_platforms}")
                    for platform, a in sorted(archives.items()):
                        purl = urllib.parse.urljoin(vurl, a["url"])
                        path = urllib.parse.urlsplit(purl).path
                        if not path.startswith(base_path):
                            raise SystemExit(f"{vurl}: archive URL {purl} is not under {base}")
                        body = _get(purl, ctx)
                        zpath = local[(version, platform)]
                        if hashlib.sha256(body).hexdigest() != bench_helper.sha256_file(zpath):
                            raise SystemExit(f"GET {purl}: not the bytes of {zpath}")
                        lines.append(("package", path))
                        links.append((path, zpath))
                    static.append((urllib.parse.urlsplit(vurl).path, vurl))
                static.append((urllib.parse.urlsplit(index_url).path, index_url))
    for path, url in static:  # again: VERSION.json now lists h1: hashes too
        out = os.path.join(www, path.lstrip("/"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as f:
            f.write(_get(url, ctx))
    for path, zpath in links:
        out = os.path.join(www, path.lstrip("/"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        try:
            os.link(zpath, out)
        except OSError:
            import shutil

            shutil.copyfile(zpath, out)
    with open(paths_out, "w") as f:
        for kind, path in lines:
            f.write(f"{kind} {path}\n")
    kinds = {k: sum(1 for x, _ in lines if x == k) for k in ("index", "version", "package")}
    print(" ".join(f"{k}={v}" for k, v in kinds.items()))


# --- report --------------------------------------------------------------------------------
METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)$')
ROUTES = ("index", "version", "download")
ROUTE_KIND = {"index": "index.json", "version": "VERSION.json", "download": "package"}


def parse_metrics(path):
    """{(name, frozenset(labels)): value}"""
    out = {}
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            m = METRIC_RE.match(line.strip())
            if not m:
                continue
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
            try:
                out[(m.group(1), labels)] = float(m.group(3))
            except ValueError:
                pass
    return out


def metric(ms, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in ms.items() if n == name and want <= set(ls))


def requests_by_route_status(ms):
    r = {}
    for (n, ls), v in ms.items():
        if n == "odtr_requests_total":
            d = dict(ls)
            r[(d.get("route"), d.get("status"))] = v
    return r


def hist(ms, route):
    """[(le, cumulative count)] sorted, with +Inf last."""
    pts = []
    for (n, ls), v in ms.items():
        if n == "odtr_request_duration_seconds_bucket":
            d = dict(ls)
            if d.get("route") == route:
                le = math.inf if d["le"] == "+Inf" else float(d["le"])
                pts.append((le, v))
    return sorted(pts)


def hist_diff(a, b):
    da = dict(a)
    return [(le, v - da.get(le, 0)) for le, v in b]


def hist_quantile(pts, q):
    """Prometheus' histogram_quantile (linear inside the bucket) -> (value, bucket_low,
    bucket_high); None without observations."""
    if not pts or pts[-1][1] <= 0:
        return None
    rank = q * pts[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in pts:
        if c >= rank:
            if math.isinf(le) or c == prev_c:
                return (prev_le if math.isinf(le) else le, prev_le, le)
            return (prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c), prev_le, le)
        prev_le, prev_c = le, c
    return None


def fmt_ms(secs):
    if secs is None:
        return "n/a"
    ms = secs * 1000
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def fmt_q(q):
    """A histogram quantile: "< 1 ms" in the first bucket, "> 30 s" past the last."""
    if q is None:
        return "n/a"
    value, low, high = q
    if low == 0:
        return f"< {fmt_ms(high)}"
    if math.isinf(high):
        return f"> {fmt_ms(low)}"
    return f"~{fmt_ms(value)}"


def fmt_us(us):
    return fmt_ms(us / 1e6)


def read_wrk(path):
    if not path or not os.path.exists(path):
        return None
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("SOAK_RESULT "):
                return json.loads(line[len("SOAK_RESULT "):])
    return None


def read_cpu(path):
    """`times` output of the subshell that ran wrk: second line is children's user and sys."""
    try:
        with open(path) as f:
            lines = f.read().split("\n")
        secs = 0.0
        for part in lines[1].split():
            m = re.fullmatch(r"(\d+)m([\d.]+)s", part)
            if m:
                secs += int(m.group(1)) * 60 + float(m.group(2))
        return secs
    except (OSError, IndexError):
        return None


ORIGIN_RE = re.compile(r'\[([^\]]+)\] "(GET|HEAD) (/v2/[^ ?"]*)[^"]* HTTP/[0-9.]+" (\d+)')


def origin_keys(log, start_line, end_line):
    """Origin requests between two line marks of docker-registry's access log:
    {key: [time (s), ...]}, the key being the kind of request and its path."""
    import datetime

    keys = {}
    with open(log, errors="replace") as f:
        for i, line in enumerate(f):
            if i < start_line:
                continue
            if i >= end_line:
                break
            m = ORIGIN_RE.search(line)
            if not m:
                continue
            when = datetime.datetime.strptime(m.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
            path = m.group(3)
            if path == "/v2/":
                key = "ping"
            elif "/blobs/" in path:
                key = "blob " + path
            elif path.endswith("/tags/list"):
                key = "tags " + path
            elif "/manifests/sha256:" in path:
                key = "manifest-by-digest " + path
            elif "/manifests/" in path:
                key = "tag " + path
            else:
                key = "other " + path
            keys.setdefault(key, []).append(when)
    return keys


def read_samples(path):
    samples = []
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            row = dict(zip(header, line.rstrip("\n").split("\t")))
            if "phase" not in row:
                continue
            s = {k: (int(row[k]) if row.get(k, "").isdigit() else 0)
                 for k in ("rss_kb", "hwm_kb", "fds", "threads", "cpu_ticks", "registry_requests", "origin_conns")}
            s["t"] = float(row["t"])
            s["phase"] = row["phase"]
            s["metrics"] = parse_metrics(os.path.join(os.path.dirname(path), row["metrics"]))
            samples.append(s)
    return samples


def report(kv):
    w = kv["work"]
    duration = float(kv["duration"])
    warmup = float(kv["warmup"])
    max_age = float(kv["index_max_age_secs"])
    npkg, nver, nprov = int(kv["packages"]), int(kv["version_docs"]), int(kv["providers"])
    by_digest = int(kv["manifests_by_digest"])
    limit = float(kv.get("growth_limit", 1.5))
    tick = float(kv.get("clk_tck", 100))
    failures = []

    samples = read_samples(os.path.join(w, "samples.tsv"))
    idle = next((s for s in samples if s["phase"] == "idle"), None)
    load = [s for s in samples if s["phase"] == "load"]
    after = next((s for s in samples if s["phase"] == "after"), None)
    if not idle or not load or not after:
        print("missing samples (idle, under load, after)", file=sys.stderr)
        sys.exit(1)
    warm = next((s for s in load if s["t"] >= warmup - 0.5), load[-1])  # end of the warm-up
    last = load[-1]  # the last sample under load

    soak = read_wrk(os.path.join(w, "wrk-soak.txt")) or {}
    ref_ours = read_wrk(os.path.join(w, "wrk-ref-ours.txt")) or {}
    ref_nginx = read_wrk(os.path.join(w, "wrk-ref-nginx.txt")) or {}
    wrk_cpu = read_cpu(os.path.join(w, "cpu-soak.txt"))

    def errs(r):
        return int(sum(r.get(k, 0) for k in ("connect", "read", "write", "status", "timeout")))

    def secs(r):
        return r.get("duration_us", 0) / 1e6

    def rps(r):
        return r["requests"] / secs(r) if secs(r) else 0.0

    def mbps(r):
        return r["bytes"] / secs(r) / 1e6 if secs(r) else 0.0

    if not soak:
        failures.append("wrk printed no result for the soak")
    soak_errs = errs(soak) if soak else 0
    if soak_errs:
        failures.append(f"{soak_errs} failed requests during the soak")
    for name, r in (("reference run against our server", ref_ours), ("reference run against nginx", ref_nginx)):
        if not r:
            failures.append(f"wrk printed no result for the {name}")
        elif errs(r):
            failures.append(f"{errs(r)} failed requests in the {name}")

    # Server side, over the soak (the "after" sample's counters include every soak request).
    end_m = after["metrics"]
    by_rs = requests_by_route_status(end_m)
    served = sum(v for (r, _), v in by_rs.items() if r in ROUTES)
    bad_server = sum(v for (r, s), v in by_rs.items() if r in ROUTES and not s.startswith(("2", "3")))
    if bad_server:
        failures.append(f"{int(bad_server)} non-2xx/3xx answers counted by the server")
    other_routes = {f"{r} {s}": int(v) for (r, s), v in by_rs.items() if r not in ROUTES}

    def served_at(s):
        return sum(v for (r, _), v in requests_by_route_status(s["metrics"]).items() if r in ROUTES)

    def body_bytes(s):
        return metric(s["metrics"], "odtr_response_bytes_total")

    dt = last["t"] - warm["t"]
    post_rps = (served_at(last) - served_at(warm)) / dt if dt > 0 else float("nan")
    post_mbps = (body_bytes(last) - body_bytes(warm)) / dt / 1e6 if dt > 0 else float("nan")

    # Memory and open fds.
    def ratio(a, b):
        return a / b if b else float("inf")

    rss_ratio = ratio(last["rss_kb"], warm["rss_kb"])
    fd_ratio = ratio(last["fds"], warm["fds"])
    if rss_ratio > limit:
        failures.append(f"RSS grew {rss_ratio:.2f}× between the end of the warm-up and the end (limit {limit}×)")
    if fd_ratio > limit:
        failures.append(f"open fds grew {fd_ratio:.2f}× between the end of the warm-up and the end (limit {limit}×)")
    rss = [s["rss_kb"] / 1024 for s in load]
    fds = [s["fds"] for s in load]
    post = [s for s in load if s["t"] >= warm["t"]]
    rss_post = [s["rss_kb"] / 1024 for s in post]
    fd_post = [s["fds"] for s in post]

    # Origin requests: the server's counters and docker-registry's access log.
    def origin(s):
        m = s["metrics"]
        return (metric(m, "odtr_metadata_origin_requests_total"), metric(m, "odtr_origin_blob_fetches_total"))

    meta_total = origin(after)[0] - origin(idle)[0]
    blob_total = origin(after)[1] - origin(idle)[1]
    meta_post = origin(after)[0] - origin(warm)[0]
    blob_post = origin(after)[1] - origin(warm)[1]
    keys = origin_keys(kv["registry_log"], int(kv["registry_mark_start"]), int(kv["registry_mark_end"]))
    reg_total = sum(len(t) for t in keys.values())
    reg_post = after["registry_requests"] - warm["registry_requests"]

    # The policy: a key costs at most one origin request per index_max_age after its cold fill.
    # Revalidated keys: each provider's tag list and each version's tag (a HEAD). A tag's cold
    # fill is a HEAD, then a GET of its image index and of each platform's manifest by digest
    # (immutable: once each); a package is fetched once. So per revalidated key: at most
    # 1 + ceil(duration / index_max_age) requests, and no two of them closer than
    # index_max_age (less 2 s: the access log's times are whole seconds).
    revalidated = nprov + nver
    refreshes = math.ceil(duration / max_age)
    expected = revalidated * duration / max_age
    per_key = 1 + refreshes
    min_gap = max(max_age - 2, max_age / 2)
    cold = nprov + nver + by_digest + npkg
    allowed = cold + revalidated * refreshes
    key_limit = {"tags": per_key, "tag": per_key, "manifest-by-digest": 1, "blob": 1, "ping": per_key}
    worst, by_kind, over, close = {}, {}, [], []
    closest = None
    for k, times in keys.items():
        kind, n = k.split(" ", 1)[0], len(times)
        worst[kind] = max(worst.get(kind, 0), n)
        c, t = by_kind.get(kind, (0, 0))
        by_kind[kind] = (c + 1, t + n)
        if n > key_limit.get(kind, 0):
            over.append(f"{k}: {n} (limit {key_limit.get(kind, 0)})")
        if kind in ("tags", "tag") and n > 1:
            times = sorted(times)
            gap = min(b - a for a, b in zip(times, times[1:]))
            closest = gap if closest is None else min(closest, gap)
            if gap < min_gap:
                close.append((k, gap))
    if over:
        failures.append("origin requests over the policy: " + "; ".join(sorted(over)[:5])
                        + (f" and {len(over) - 5} more" if len(over) > 5 else ""))
    if close:
        close.sort(key=lambda kg: kg[1])
        failures.append(f"{len(close)} of {revalidated} revalidated keys were asked from the origin twice within "
                        f"{max(g for _, g in close):.0f} s (index_max_age {max_age:.0f} s), e.g. "
                        + ", ".join(f"{k} {g:.0f} s apart" for k, g in close[:3]))
    if reg_total > allowed:
        failures.append(f"{reg_total} origin requests, over the {allowed} the policy allows")
    if blob_total > npkg:
        failures.append(f"{int(blob_total)} package fetches from the origin for {npkg} packages")

    # Per minute of the soak (server counters, and the registry's access log).
    per_minute = []
    pts = [idle] + load + [after]
    prev, edge = idle, 60.0
    while prev is not after:
        cur = [s for s in pts if s["t"] <= edge + 0.5][-1]
        if cur is prev or edge >= duration:
            cur = after if edge >= duration else cur
        if cur is not prev:
            (m0, b0), (m1, b1) = origin(prev), origin(cur)
            per_minute.append(f"{prev['t']:.0f}–{cur['t']:.0f} s: {int(m1 - m0)} + {int(b1 - b0)} "
                              f"({cur['registry_requests'] - prev['registry_requests']})")
            prev = cur
        edge += 60.0

    # Latency per kind, server side (time to response headers).
    kind_rows = []
    for route in ROUTES:
        h_all = hist(end_m, route)
        h_post = hist_diff(hist(warm["metrics"], route), hist(last["metrics"], route))
        n = int(sum(v for (r, _), v in by_rs.items() if r == route))
        statuses = ", ".join(f"{s}: {int(v)}" for (r, s), v in sorted(by_rs.items()) if r == route)
        share = n / served * 100 if served else 0
        kind_rows.append(
            f"| {ROUTE_KIND[route]} | {n} ({share:.1f}%) | {statuses or 'none'} "
            f"| {fmt_q(hist_quantile(h_all, 0.5))} / {fmt_q(hist_quantile(h_all, 0.99))} "
            f"| {fmt_q(hist_quantile(h_post, 0.5))} / {fmt_q(hist_quantile(h_post, 0.99))} |")

    # CPU.
    server_cpu = (after["cpu_ticks"] - idle["cpu_ticks"]) / tick
    machine = float(kv.get("machine_busy_secs", "nan"))
    wrk_ratio = wrk_cpu / server_cpu if (wrk_cpu is not None and server_cpu > 0) else float("nan")

    r_ours, r_nginx = rps(ref_ours) if ref_ours else 0.0, rps(ref_nginx) if ref_nginx else 0.0
    ratio_rps = r_ours / r_nginx if r_nginx else float("nan")
    ratio_mb = mbps(ref_ours) / mbps(ref_nginx) if ref_nginx and mbps(ref_nginx) else float("nan")

    def v(ok):
        return "met" if ok else "**NOT met**"

    def mib(x):
        return f"{x:.1f}"

    e = soak
    out = [f"## {kv['date']}\n",
           f"Machine: {kv['machine']}. Commit {kv['commit']}. All traffic on 127.0.0.1. Run time "
           f"{kv['run_secs']} s. Load average at start {kv['load_start']}, at end {kv['load_end']} "
           f"(anything else running on the machine shares its CPUs).\n",
           f"Command: `{kv['command']}`\n",
           f"Set-up: {nprov} providers × {nver // max(nprov, 1)} versions × {kv['nplatforms']} platforms = "
           f"{npkg} packages of {kv['pkg_min_kib']}–{kv['pkg_max_kib']} KiB ({int(kv['pkg_bytes']) / 1048576:.0f} MiB "
           f"in all), published with `push` (OpenTofu layout) to docker-registry. Our server: HTTPS, empty cache "
           f"directory, {kv['freshness']}; nothing warmed, so the first minute includes the cold fills. "
           f"Load: wrk {kv['wrk_version']}, {kv['threads']} threads, {kv['connections']} keep-alive connections "
           f"(HTTP/1.1 over TLS), {kv['duration']} s, request mix {kv['mix']} index.json / VERSION.json / "
           f"package (the package URLs are those of the VERSION.json documents). Samples every {kv['interval']} s; "
           f"the warm-up is the first {warmup:.0f} s.\n",
           "| measurement | value | goal | |",
           "| --- | --- | --- | --- |",
           f"| requests | {int(soak.get('requests', 0))} in {secs(soak):.0f} s (the server counted {int(served)}) | | |",
           f"| throughput, whole soak (wrk) | {rps(soak):.0f} req/s, {mbps(soak):.1f} MB/s | | |",
           f"| throughput after the warm-up ({warm['t']:.0f}–{last['t']:.0f} s, server counters, body bytes) | "
           f"{post_rps:.0f} req/s, {post_mbps:.1f} MB/s | | |",
           f"| latency, all requests (wrk, whole response) | p50 {fmt_us(e.get('p50_us', 0))}, p90 {fmt_us(e.get('p90_us', 0))}, "
           f"p99 {fmt_us(e.get('p99_us', 0))}, p99.9 {fmt_us(e.get('p999_us', 0))}, max {fmt_us(e.get('lat_max_us', 0))} | | |",
           f"| errors: non-2xx/3xx; socket connect / read / write / timeout | {int(e.get('status', 0))}; "
           f"{int(e.get('connect', 0))} / {int(e.get('read', 0))} / {int(e.get('write', 0))} / {int(e.get('timeout', 0))} "
           f"(non-2xx/3xx counted by the server: {int(bad_server)}) | 0 | {v(bool(soak) and soak_errs == 0 and bad_server == 0)} |",
           f"| RSS (MiB): idle before the load / first / min / max / last; peak (VmHWM) | {mib(idle['rss_kb'] / 1024)} / "
           f"{mib(rss[0])} / {mib(min(rss))} / {mib(max(rss))} / {mib(rss[-1])}; {mib(after['hwm_kb'] / 1024)} | | |",
           f"| RSS from the end of the warm-up ({warm['t']:.0f} s) to the end ({last['t']:.0f} s) | "
           f"{mib(warm['rss_kb'] / 1024)} → {mib(last['rss_kb'] / 1024)} MiB: last / warm-up = **{rss_ratio:.2f}**, "
           f"{'flat' if rss_ratio <= limit else 'GROWING'} (range {mib(min(rss_post))}–{mib(max(rss_post))}) | "
           f"≤ {limit}× | {v(rss_ratio <= limit)} |",
           f"| open fds: idle before the load / first / max / last | {idle['fds']} / {fds[0]} / {max(fds)} / {fds[-1]} | | |",
           f"| open fds from the end of the warm-up to the end | {warm['fds']} → {last['fds']}: last / warm-up = "
           f"**{fd_ratio:.2f}**, {'flat' if fd_ratio <= limit else 'GROWING'} (range {min(fd_post)}–{max(fd_post)}) | "
           f"≤ {limit}× | {v(fd_ratio <= limit)} |",
           f"| 2 s after the load stopped: RSS; open fds (of which connections to the origin) | "
           f"{mib(after['rss_kb'] / 1024)} MiB; {after['fds']} ({after['origin_conns']}) | (info) | |",
           f"| origin requests (registry access log) | {reg_total}; after the warm-up {reg_post} | ≤ {allowed} "
           f"(cold fills {cold} + {revalidated} keys × {refreshes}) | {v(reg_total <= allowed)} |",
           f"| origin requests (server counters): metadata; packages | {int(meta_total)}; {int(blob_total)}; after the "
           f"warm-up {int(meta_post)}; {int(blob_post)} | packages ≤ {npkg} | {v(blob_total <= npkg)} |",
           f"| most origin requests for one key: tag list; tag; manifest by digest; package | {worst.get('tags', 0)}; "
           f"{worst.get('tag', 0)}; {worst.get('manifest-by-digest', 0)}; {worst.get('blob', 0)} | ≤ {per_key}; ≤ {per_key}; "
           f"≤ 1; ≤ 1 | {v(not over)} |",
           f"| closest two origin requests for one tag list or tag | "
           + (f"{closest:.0f} s apart; {len(close)} keys closer than {min_gap:.0f} s" if closest is not None else "no key asked twice")
           + f" | ≥ {min_gap:.0f} s (one per index_max_age) | {v(not close)} |",
           f"| origin requests per minute: metadata + packages (registry log) | {'; '.join(per_minute)} | (info) | |",
           f"| reference, {kv['ref_duration']} s each, same mix, warm: ours / nginx | {r_ours:.0f} / {r_nginx:.0f} req/s, "
           f"{mbps(ref_ours) if ref_ours else 0:.1f} / {mbps(ref_nginx) if ref_nginx else 0:.1f} MB/s, p99 "
           f"{fmt_us(ref_ours.get('p99_us', 0))} / {fmt_us(ref_nginx.get('p99_us', 0))} | (info) | |",
           f"| **throughput ratio ours / nginx** | **{ratio_rps:.2f}** (req/s), {ratio_mb:.2f} (MB/s) | (info) | |",
           f"| CPU time during the soak: server; wrk; whole machine (of {secs(soak) * int(kv['nproc']):.0f} s) | "
           f"{server_cpu:.0f} s; {wrk_cpu if wrk_cpu is not None else float('nan'):.0f} s; {machine:.0f} s | "
           f"wrk ≤ server ({wrk_ratio:.2f}×) | {v(wrk_ratio <= 1.0)} |",
           "",
           "Per request kind (server side, from `/metrics`: latency is the time to the response headers, "
           "interpolated inside the histogram's buckets; packages are then streamed):\n",
           "| kind | requests (share) | statuses | p50 / p99, whole soak | p50 / p99, after the warm-up |",
           "| --- | ---: | --- | --- | --- |"]
    out.extend(kind_rows)
    out.append("")
    out.append(f"- Origin policy: {revalidated} revalidated keys ({nprov} tag lists, {nver} tags) and index_max_age "
               f"{max_age:.0f} s give about {expected:.0f} revalidations in {duration:.0f} s (keys × duration / "
               f"index_max_age; at most {revalidated * refreshes}), on top of the cold fills: {nprov} tag lists, "
               f"{nver} tag HEADs, {by_digest} manifests by digest (each version's image index and one manifest per "
               f"platform) and {npkg} packages = {cold}.")
    out.append("- Registry access log during the soak by kind (keys, requests): "
               + ("; ".join(f"{k}: {c} keys, {t}" for k, (c, t) in sorted(by_kind.items())) or "none") + ".")
    if other_routes:
        out.append("- Other requests the server answered (the sampler's): "
                   + ", ".join(f"{k}: {n}" for k, n in sorted(other_routes.items())) + ".")
    out.append(f"- RSS (MiB) every {kv['interval']} s: " + " ".join(f"{x:.0f}" for x in rss) + ".")
    out.append(f"- Open fds every {kv['interval']} s: " + " ".join(str(x) for x in fds)
               + "; of which connections to the origin: " + " ".join(str(s["origin_conns"]) for s in load)
               + " (the origin connection pool keeps idle connections for 90 s).")
    out.append(f"- nginx {kv['nginx_version']} (worker_processes auto, access_log off, OpenSSL, the same "
               f"certificate) serves the same index.json, VERSION.json and package files at the same paths. The "
               f"reference runs (ours, then nginx) follow the soak, with our cache warm; client and servers share "
               f"the {kv['nproc']} CPUs.")
    out.append(f"- Before the soak the machine was {kv.get('quiet_note', 'n/a')}.")
    out.append("\n**FAILED:** " + "; ".join(failures) + "." if failures else "\nAll goals met.")
    print("\n".join(out))
    sys.exit(1 if failures else 0)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "make-packages":
        make_packages(*args)
    elif cmd == "prep":
        prep(*args)
    elif cmd == "report":
        report(dict(a.split("=", 1) for a in args))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
