//! `warm` a second time (nothing fetched, no blob GET at the registry), `warm` while a server
//! owns the cache (through that server), and the air-gapped path: a warmed cache answering
//! the real `terraform init` from `server --offline` with the registry stopped.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";

fn other_platform() -> String {
    if local_platform() == "darwin_arm64" {
        "linux_amd64".to_owned()
    } else {
        "darwin_arm64".to_owned()
    }
}

/// A fixture whose registry holds acme/foo 1.0.0, 1.1.0 and 2.0.0 for this host's platform
/// and one other.
fn published() -> (WarmFixture, BTreeMap<(String, String), Vec<u8>>) {
    let fx = WarmFixture::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = local_platform();
    let other = other_platform();
    let zips = rt.block_on(push_fake_versions(
        fx.registry(),
        FOO_REPO,
        "foo",
        &["1.0.0", "1.1.0", "2.0.0"],
        &[&local, &other],
    ));
    (fx, zips)
}

fn zip<'a>(zips: &'a BTreeMap<(String, String), Vec<u8>>, v: &str, p: &str) -> &'a Vec<u8> {
    &zips[&(v.to_owned(), p.to_owned())]
}

fn warm(fx: &WarmFixture, args: &[&str]) -> CliOutput {
    let mut all = vec!["warm"];
    all.extend_from_slice(args);
    fx.cli(&all)
}

#[test]
fn a_second_identical_warm_fetches_nothing_and_gets_no_blob_from_the_registry() {
    let (fx, zips) = published();
    let args = [
        "--platform",
        "all",
        "--all-matching",
        "acme/foo@>= 1.0, < 3.0",
    ];
    let first = warm(&fx, &args);
    assert!(first.success(), "{first}");
    let all: Vec<&Vec<u8>> = zips.values().collect();
    assert_eq!(fx.cached_hexes(), hexes_of(all), "{first}");
    assert_eq!(fx.proxy.blob_gets(), 6, "{:?}", fx.proxy.requests());
    std::thread::sleep(Duration::from_millis(300));
    let registry_gets_before = registry_log_blob_gets(&fx.registry().log());
    let second = warm(&fx, &args);
    assert!(second.success(), "{second}");
    assert!(
        second.stdout.contains("Nothing to fetch"),
        "the second warm does not say \"Nothing to fetch\":\n{second}"
    );
    assert!(
        second.stdout.contains("6 package(s) already cached"),
        "{second}"
    );
    assert_eq!(
        fx.proxy.blob_gets(),
        6,
        "the second warm fetched blobs from the registry: {:?}",
        fx.proxy.requests()
    );
    // The registry's own access log agrees (it logs a request when it completes).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        registry_log_blob_gets(&fx.registry().log()),
        registry_gets_before,
        "{}",
        fx.registry().log()
    );
}

#[test]
fn a_second_warm_from_a_lock_file_and_a_dir_fetches_nothing() {
    let (fx, zips) = published();
    let (local, other) = (local_platform(), other_platform());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.tf"),
        required_providers_tf(&[(FOO, "~> 1.0")]),
    )
    .unwrap();
    let lock = dir.path().join(".terraform.lock.hcl");
    std::fs::write(
        &lock,
        format!(
            "provider \"{FOO}\" {{\n  version = \"1.1.0\"\n  hashes = [\n    \"{}\",\n    \"{}\",\n  ]\n}}\n",
            h1(zip(&zips, "1.1.0", &local)),
            zh(zip(&zips, "1.1.0", &other)),
        ),
    )
    .unwrap();
    let args = [
        "--platform",
        "all",
        "--dir",
        dir.path().to_str().unwrap(),
        "--lock-file",
        lock.to_str().unwrap(),
    ];
    let first = warm(&fx, &args);
    assert!(first.success(), "{first}");
    assert_eq!(
        fx.cached_hexes(),
        hexes_of([zip(&zips, "1.1.0", &local), zip(&zips, "1.1.0", &other)]),
        "{first}"
    );
    let gets = fx.proxy.blob_gets();
    let second = warm(&fx, &args);
    assert!(second.success(), "{second}");
    assert!(second.stdout.contains("Nothing to fetch"), "{second}");
    assert_eq!(fx.proxy.blob_gets(), gets, "{:?}", fx.proxy.requests());
}

#[test]
fn the_same_provider_from_a_dir_and_a_lock_file_is_one_requirement() {
    // The README's air-gapped example: `warm --lock-file infra/.terraform.lock.hcl --dir
    // infra/modules/network`. When both name the same provider, the lock file's version is
    // the one Terraform will install; it satisfies the configuration's constraint, so warm
    // must fetch it (and not fail because `~> 1.0` and `= 1.0.0` were read as one set).
    let (fx, zips) = published();
    let local = local_platform();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.tf"),
        required_providers_tf(&[(FOO, "~> 1.0")]),
    )
    .unwrap();
    let lock = dir.path().join(".terraform.lock.hcl");
    std::fs::write(
        &lock,
        format!(
            "provider \"{FOO}\" {{\n  version     = \"1.0.0\"\n  constraints = \"~> 1.0\"\n  hashes = [\n    \"{}\",\n  ]\n}}\n",
            h1(zip(&zips, "1.0.0", &local))
        ),
    )
    .unwrap();
    let out = warm(
        &fx,
        &[
            "--lock-file",
            lock.to_str().unwrap(),
            "--dir",
            dir.path().to_str().unwrap(),
        ],
    );
    assert!(out.success(), "{out}");
    let cached = fx.cached_hexes();
    assert!(
        cached.contains(&sha256_hex(zip(&zips, "1.0.0", &local))),
        "the locked 1.0.0 was not warmed:\n{out}"
    );
}

/// A config's `cache stats` output once it reports `entries`, polled for up to 15 s (a
/// running server writes its figures every few seconds).
fn stats_with_entries(fx: &WarmFixture, entries: usize) -> CliOutput {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(15), || {
        let out = fx.cli(&["cache", "stats"]);
        let done = out.success()
            && out.stdout.lines().any(|l| {
                l.starts_with("entries:")
                    && l.split_whitespace().nth(1) == Some(&entries.to_string())
            });
        last = Some(out);
        done
    });
    let last = last.unwrap();
    assert!(ok, "cache stats never showed {entries} entries:\n{last}");
    last
}

#[test]
fn warm_while_a_server_owns_the_cache_goes_through_it_then_offline_init_works() {
    let (mut fx, zips) = published();
    let (local, other) = (local_platform(), other_platform());
    let mut server = fx.start_server(&[]);
    assert_eq!(server.base_url(), format!("https://127.0.0.1:{}/", fx.port));

    let out = warm(&fx, &["--platform", "all", "acme/foo@~> 1.0"]);
    assert!(out.success(), "{out}\n--- server ---\n{}", server.stderr());
    assert!(
        out.stderr.contains("owned by a running server")
            && out.stderr.contains("warming through it"),
        "warm does not say it warms through the server:\n{out}"
    );
    let want = hexes_of([zip(&zips, "1.1.0", &local), zip(&zips, "1.1.0", &other)]);
    assert_eq!(fx.cached_hexes(), want, "{out}");
    assert_eq!(fx.proxy.blob_gets(), 2, "{:?}", fx.proxy.requests());
    // The server did the fetching: its log has the downloads.
    assert!(
        server.stderr().contains("/download/sha256/"),
        "the server logged no download:\n{}",
        server.stderr()
    );

    let stats = stats_with_entries(&fx, 2);
    assert!(stats.stdout.contains("server:"), "{stats}");

    // Again through the server: nothing to fetch.
    let again = warm(&fx, &["--platform", "all", "acme/foo@~> 1.0"]);
    assert!(again.success(), "{again}");
    assert!(again.stdout.contains("Nothing to fetch"), "{again}");
    assert_eq!(fx.proxy.blob_gets(), 2, "{:?}", fx.proxy.requests());

    // Air-gapped: the origin goes away; `server --offline` on the same cache answers
    // terraform init.
    let status = server.terminate(Duration::from_secs(35));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        !fx.cache_dir().join("server-address").exists(),
        "a stopped server left its address in the cache directory"
    );
    fx.stop_registry();
    let server = fx.start_server(&["--offline"]);
    let mark = fx.proxy.request_mark();
    let init = terraform_init(&server.mirror_url(), &fx.cert, &[(FOO, "~> 1.0")], None);
    assert!(
        init.success,
        "terraform init through the offline server failed:\n{}\n--- server ---\n{}",
        init.output,
        server.stderr()
    );
    let lock = init.lock_file.as_deref().unwrap_or_default();
    assert_eq!(
        lock_file_version(lock, FOO).as_deref(),
        Some("1.1.0"),
        "{lock}"
    );
    assert!(
        lock_file_hashes(lock, FOO).contains(&h1(zip(&zips, "1.1.0", &local))),
        "{lock}"
    );
    assert!(
        fx.proxy.requests_since_matching(mark, &[""]).is_empty(),
        "the offline server contacted the origin: {:?}",
        fx.proxy.requests_since_matching(mark, &[""])
    );
}

#[test]
fn a_directly_warmed_cache_serves_terraform_init_offline() {
    let (mut fx, zips) = published();
    let local = local_platform();
    let out = warm(&fx, &["--platform", "all", "acme/foo@~> 1.0"]);
    assert!(out.success(), "{out}");
    assert!(
        !out.stderr.contains("warming through"),
        "no server runs, yet:\n{out}"
    );
    fx.stop_registry();
    let server = fx.start_server(&["--offline"]);
    let init = terraform_init(&server.mirror_url(), &fx.cert, &[(FOO, "~> 1.0")], None);
    assert!(
        init.success,
        "terraform init through the offline server failed:\n{}\n--- server ---\n{}",
        init.output,
        server.stderr()
    );
    let lock = init.lock_file.as_deref().unwrap_or_default();
    assert_eq!(
        lock_file_version(lock, FOO).as_deref(),
        Some("1.1.0"),
        "{lock}"
    );
    assert!(
        lock_file_hashes(lock, FOO).contains(&h1(zip(&zips, "1.1.0", &local))),
        "{lock}"
    );

    // What was not warmed is a clear failure, not a hang.
    let init = terraform_init(&server.mirror_url(), &fx.cert, &[(FOO, "1.0.0")], None);
    assert!(!init.success, "{}", init.output);

    // warm leaves the h1: hashes to first use: the server derives a cached package's before
    // it lists it (or earlier, in its background pass), so even its first answer lists the
    // hash of the verified bytes for every platform (these packages carry no annotation).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = https_client(&fx.cert);
    let archives = rt.block_on(fetch_archives(
        &client,
        &server.mirror_url(),
        FOO,
        "1.1.0",
        None,
    ));
    assert_eq!(archives.len(), 2, "{archives:?}");
    for (platform, archive) in &archives {
        let zip = zip(&zips, "1.1.0", platform);
        assert!(
            archive.hashes.contains(&h1(zip)) && archive.hashes.contains(&zh(zip)),
            "{platform}: {:?}\n--- server ---\n{}",
            archive.hashes,
            server.stderr()
        );
    }
}

#[test]
fn warm_finds_a_server_listening_on_a_port_chosen_at_start() {
    // `listen_addr = "127.0.0.1:0"` is allowed ("Port 0 picks a free port"). warm must still
    // reach the server that owns the cache (it cannot open the cache itself).
    let registry = Registry::start(RegistryAuth::None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = local_platform();
    let zips = rt.block_on(push_fake_versions(
        &registry,
        FOO_REPO,
        "foo",
        &["1.0.0"],
        &[&local],
    ));
    let cert = TestCert::generate();
    let cache = tempfile::tempdir().unwrap();
    let config = with_cache(
        &MirrorConfig::new(&cert, &registry.url(), false).to_hcl(),
        cache.path(),
        "1GiB",
    );
    assert!(config.contains("\"127.0.0.1:0\""));
    let server = Server::start(&config);
    let out = run_cli(&config, &["warm", "acme/foo"], Duration::from_secs(50));
    assert!(
        out.success(),
        "warm could not warm through the server on {}:\n{out}",
        server.base_url()
    );
    let want = hexes_of([&zips[&("1.0.0".to_owned(), local.clone())]]);
    let got: Vec<String> = cache_blob_files(cache.path())
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    assert_eq!(got, want);
}

#[test]
fn warm_through_a_server_with_proxy_packages_and_lock_file_checks() {
    let (mut fx, zips) = published();
    let local = local_platform();
    assert!(fx.config.contains("proxy_packages = false"));
    fx.config = fx
        .config
        .replace("proxy_packages = false", "proxy_packages = true");
    let server = fx.start_server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.lock.hcl");
    let bad = dir.path().join("bad.lock.hcl");
    let lock = |version: &str, hash: &str| {
        format!("provider \"{FOO}\" {{\n  version = \"{version}\"\n  hashes = [\n    \"{hash}\",\n  ]\n}}\n")
    };
    std::fs::write(&good, lock("1.0.0", &h1(zip(&zips, "1.0.0", &local)))).unwrap();
    std::fs::write(&bad, lock("2.0.0", &h1(zip(&zips, "1.0.0", &local)))).unwrap();

    let out = warm(&fx, &["--lock-file", good.to_str().unwrap()]);
    assert!(out.success(), "{out}\n--- server ---\n{}", server.stderr());
    assert!(out.stderr.contains("warming through it"), "{out}");
    assert_eq!(
        fx.cached_hexes(),
        hexes_of([zip(&zips, "1.0.0", &local)]),
        "{out}"
    );

    let out = warm(&fx, &["--lock-file", bad.to_str().unwrap()]);
    assert!(
        !out.success(),
        "a wrong lock-file hash was accepted through the server:\n{out}"
    );
    assert!(
        out.stderr.contains(FOO) && out.stderr.contains("2.0.0"),
        "{out}"
    );
}

#[test]
fn warm_with_the_registry_down_fails_promptly_naming_the_provider() {
    let (mut fx, _zips) = published();
    fx.stop_registry();
    let started = std::time::Instant::now();
    let out = warm(&fx, &["acme/foo@~> 1.0"]);
    assert!(
        out.status.is_some(),
        "warm hung with the registry down:\n{out}"
    );
    assert!(!out.success(), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "warm took {:?} to give up",
        started.elapsed()
    );
    assert!(out.stderr.contains(FOO), "{out}");
    assert!(fx.cached_hexes().is_empty());
}

#[test]
fn a_warm_cache_needs_no_registry_to_warm_again() {
    let (mut fx, _zips) = published();
    let args = ["--platform", "all", "acme/foo@~> 1.0"];
    let out = warm(&fx, &args);
    assert!(out.success(), "{out}");
    fx.stop_registry();
    let out = warm(&fx, &args);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("Nothing to fetch"), "{out}");
}

/// Publishes `acme/foo` `version` for `platforms` with the binary's own `push` (which
/// records each package's h1 as a layer annotation) into `registry_url`.
fn push_with_cli(registry_url: &str, version: &str, platforms: &[&str]) -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let mut zips = Vec::new();
    for platform in platforms {
        let zip = fake_provider_zip_for("foo", version, platform);
        let path = dir
            .path()
            .join(format!("terraform-provider-foo_{version}_{platform}.zip"));
        std::fs::write(&path, &zip).unwrap();
        files.push(path);
        zips.push(zip);
    }
    let binary = env!("CARGO_BIN_EXE_oci-distribution-terraform-registry");
    let mut cmd = std::process::Command::new(binary);
    cmd.args([
        "push",
        "--registry",
        registry_url,
        "--repository-prefix",
        "terraform-providers",
        "--address",
        FOO,
    ])
    .args(&files)
    .env("HOME", dir.path())
    .env("DOCKER_CONFIG", dir.path().join("docker"))
    .stdin(std::process::Stdio::null());
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("run push");
    assert!(
        out.status.success(),
        "push failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    zips
}

#[test]
fn warm_through_a_server_fetches_packages_published_with_push() {
    // push records each package's h1 as an annotation, and VERSION.json lists it before the
    // package is cached. warm through the server must still bring the packages into the cache.
    let fx = WarmFixture::start();
    let (local, other) = (local_platform(), other_platform());
    let zips = push_with_cli(&fx.registry().url(), "1.0.0", &[&local, &other]);
    let server = fx.start_server(&[]);
    let out = warm(&fx, &["--platform", "all", "acme/foo"]);
    assert!(out.success(), "{out}\n--- server ---\n{}", server.stderr());
    assert!(out.stderr.contains("warming through it"), "{out}");
    assert_eq!(
        fx.cached_hexes(),
        hexes_of(&zips),
        "warm through the server left the cache without the packages it reported:\n{out}"
    );
    assert_eq!(fx.proxy.blob_gets(), 2, "{:?}", fx.proxy.requests());
    assert!(
        !out.stdout.contains("Nothing to fetch"),
        "the first warm of an empty cache says \"Nothing to fetch\":\n{out}"
    );
}

#[test]
fn direct_warm_fetches_packages_published_with_push() {
    let fx = WarmFixture::start();
    let (local, other) = (local_platform(), other_platform());
    let zips = push_with_cli(&fx.registry().url(), "1.0.0", &[&local, &other]);
    let out = warm(&fx, &["--platform", "all", "acme/foo"]);
    assert!(out.success(), "{out}");
    assert_eq!(fx.cached_hexes(), hexes_of(&zips), "{out}");
}

#[test]
fn warm_waits_for_another_holder_of_the_cache_that_is_not_a_server() {
    // Another warm (here: this test) holds the cache, and the directory still names a server
    // address from some other process: warm must neither talk to that address nor fail, but
    // wait for the holder and then open the cache itself.
    let (fx, zips) = published();
    let local = local_platform();
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(fx.cache_dir().join("lock"))
        .unwrap();
    lock.try_lock().expect("the cache is free");
    std::fs::write(fx.cache_dir().join("lock"), std::process::id().to_string()).unwrap();
    std::fs::write(
        fx.cache_dir().join("server-address"),
        format!("127.0.0.1:{}\n1\n", fx.port),
    )
    .unwrap();
    let waiting = std::thread::scope(|scope| {
        let warm = scope.spawn(|| warm(&fx, &["acme/foo@1.1.0"]));
        std::thread::sleep(Duration::from_millis(1500));
        let waiting = !warm.is_finished();
        drop(lock);
        let out = warm.join().unwrap();
        assert!(out.success(), "{out}");
        assert!(
            out.stderr.contains("not a running server") && out.stderr.contains("waiting"),
            "warm does not say what it waits for:\n{out}"
        );
        waiting
    });
    assert!(waiting, "warm did not wait for the cache's holder");
    assert_eq!(fx.cached_hexes(), hexes_of([zip(&zips, "1.1.0", &local)]));
}

#[test]
fn warm_through_a_server_that_cannot_keep_a_package_fails_each_time() {
    // The server's cache is smaller than the package: it serves it, but cannot keep it.
    // warm must say so (as it does without a server), not report it fetched.
    let (mut fx, _zips) = published();
    let small = fx
        .config
        .replace("max_size  = \"1GiB\"", "max_size  = \"16B\"");
    assert_ne!(
        small, fx.config,
        "with_cache no longer writes max_size as expected"
    );
    fx.config = small;
    let server = fx.start_server(&[]);
    for run in 1..=2 {
        let out = warm(&fx, &["acme/foo@1.1.0"]);
        assert!(
            !out.success(),
            "run {run}: warm says it fetched a package the server did not keep:\n{out}"
        );
        assert!(out.status.is_some(), "run {run}: warm was killed:\n{out}");
        assert!(
            out.stderr.contains("could not keep it"),
            "run {run}: the failure does not say the server could not keep it:\n{out}\n--- server ---\n{}",
            server.stderr()
        );
    }
    assert!(fx.cached_hexes().is_empty());
    // Asking whether it was kept (HEAD, Cache-Control: only-if-cached) fetches nothing: one
    // origin GET per run, the download's.
    assert_eq!(fx.proxy.blob_gets(), 2, "{:?}", fx.proxy.requests());
    // And its "not kept" answers are counted apart, not as download errors.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metrics = rt.block_on(async {
        let client = https_client(&fx.cert);
        let resp = client
            .get(format!("https://127.0.0.1:{}/metrics", fx.port))
            .send()
            .await
            .expect("GET /metrics");
        resp.text().await.expect("metrics body")
    });
    assert!(
        metrics.contains("odtr_requests_total{route=\"cache_probe\",status=\"504\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("odtr_requests_total{route=\"download\",status=\"504\"}"),
        "{metrics}"
    );
    drop(server);
}
