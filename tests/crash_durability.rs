//! The durability promise (README, "Crash safety"): `kill -9` at any moment leaves a cache
//! that starts cleanly, and never a stored package with wrong bytes.
//!
//! Cycles of: start the server on a cache directory kept across cycles (smaller than the
//! packages in play, so fills and evictions run all the time); 100 concurrent downloads,
//! cold and warm, some with `Range`; `kill -9` after a random delay; then, with the server
//! dead: every file in `blobs/` must hash to its name, `cache verify` must report clean, the
//! temp files a crash leaves must be gone after the next open, and every response that
//! completed must have carried exactly the right bytes (and a cut one, a correct prefix).
//! After the cycles, one more start serves every package right.
//!
//! The RNG seed is printed; `ODTR_CRASH_SEED=N` replays a run, `ODTR_CRASH_CYCLES=N` changes
//! the number of cycles (default 20).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use sha2::{Digest as _, Sha256};

const CONCURRENT_DOWNLOADS: usize = 100;
const MAX_KILL_DELAY_MS: u64 = 1500;

/// One package in the registry.
struct Pkg {
    addr: String,
    type_name: String,
    version: String,
    platform: String,
    bytes: Vec<u8>,
    hex: String,
}

impl Pkg {
    /// The download path under the server's base URL (no query: `proxy_packages = false`).
    fn path(&self) -> String {
        format!(
            "mirror/{}/download/sha256/{}/terraform-provider-{}_{}_{}.zip",
            self.addr, self.hex, self.type_name, self.version, self.platform
        )
    }
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What one download was and what came back.
struct Outcome {
    pkg: usize,
    /// Inclusive byte range asked for.
    range: Option<(u64, u64)>,
    got: Download,
}

#[derive(Default, Debug)]
struct Figures {
    cycles: usize,
    downloads: usize,
    complete_200: usize,
    complete_206: usize,
    cut_with_correct_prefix: usize,
    no_response: usize,
    bad_responses: Vec<String>,
    bad_blobs: Vec<String>,
    temp_files_left_by_crashes: usize,
    temp_files_after_reopen: usize,
    repairs: Vec<String>,
    blobs_after_cycle: Vec<usize>,
}

/// Checks one response against the package; returns a description of what is wrong.
fn check_outcome(o: &Outcome, pkgs: &[Pkg], f: &mut Figures) -> Option<String> {
    let pkg = &pkgs[o.pkg];
    let size = pkg.bytes.len() as u64;
    let d = &o.got;
    let what = format!(
        "{} {}_{} ({} bytes), range {:?}",
        pkg.addr, pkg.version, pkg.platform, size, o.range
    );
    match d.status {
        0 => {
            f.no_response += 1;
            None
        }
        200 | 206 => {
            // Which bytes this response claims to carry.
            let start = if d.status == 206 {
                let cr = d.header("content-range").unwrap_or("");
                match parse_content_range::<u64>(cr) {
                    Some((a, b, total)) if total == size.to_string() && Some((a, b)) == o.range => {
                        if d.error.is_none() && d.len != b - a + 1 {
                            return Some(format!("{what}: 206 {cr} complete with {} bytes", d.len));
                        }
                        a
                    }
                    _ => return Some(format!("{what}: 206 with Content-Range {cr:?}")),
                }
            } else {
                if d.error.is_none() && d.len != size {
                    return Some(format!(
                        "{what}: 200 complete with {} bytes, expected {size}",
                        d.len
                    ));
                }
                0
            };
            let end = (start + d.len) as usize;
            if end > pkg.bytes.len() {
                return Some(format!("{what}: {} bytes past the end", d.len));
            }
            if sha_hex(&pkg.bytes[start as usize..end]) != d.sha256 {
                return Some(format!(
                    "{what}: status {} with WRONG BYTES ({} bytes from {start}, error {:?})",
                    d.status, d.len, d.error
                ));
            }
            match (d.status, d.error.is_none()) {
                (200, true) => f.complete_200 += 1,
                (206, true) => f.complete_206 += 1,
                _ => f.cut_with_correct_prefix += 1,
            }
            None
        }
        s => Some(format!("{what}: status {s} (error {:?})", d.error)),
    }
}

/// Files under `blobs/sha256/` whose content does not hash to their name (or that are not
/// named like a stored package at all).
fn bad_blob_files(cache: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    let base = cache.join("blobs").join("sha256");
    let Ok(prefixes) = std::fs::read_dir(&base) else {
        return bad;
    };
    for prefix in prefixes.flatten() {
        let pname = prefix.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(prefix.path()) else {
            bad.push(format!("blobs/sha256/{pname} is not a directory"));
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let ok_name = name.len() == 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                && name.starts_with(&pname);
            let content = std::fs::read(f.path()).unwrap_or_default();
            let actual = sha_hex(&content);
            if !ok_name || actual != name {
                bad.push(format!(
                    "blobs/sha256/{pname}/{name}: {} bytes hashing to {actual}",
                    content.len()
                ));
            }
        }
    }
    bad
}

/// The `RepairReport { ... }` the store logged when `cache verify` opened it, if any.
fn repair_report(stderr: &str) -> Option<String> {
    let start = stderr.find("RepairReport {")?;
    let end = stderr[start..].find('}')? + start + 1;
    Some(stderr[start..end].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_downloads_never_corrupts_the_cache() {
    let test_started = Instant::now();
    let seed: u64 = std::env::var("ODTR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let cycles: usize = std::env::var("ODTR_CRASH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    eprintln!(
        "crash_durability: seed {seed} (replay with ODTR_CRASH_SEED={seed}), {cycles} cycles"
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    // Packages of 1-4 MiB: 3 providers × 2 versions × 2 platforms.
    let registry = Registry::start(RegistryAuth::None);
    let mut pkgs = Vec::new();
    for type_name in ["alpha", "beta", "gamma"] {
        for version in ["1.0.0", "2.0.0"] {
            let repo = format!("terraform-providers/registry.terraform.io/acme/{type_name}");
            let mut layer = Vec::new();
            for platform in ["linux_amd64", "darwin_arm64"] {
                let size = rng.gen_range((1 << 20)..(4 << 20));
                let bytes = random_provider_zip(type_name, version, size, rng.gen());
                layer.push((platform, bytes.clone()));
                pkgs.push(Pkg {
                    addr: format!("registry.terraform.io/acme/{type_name}"),
                    type_name: type_name.to_owned(),
                    version: version.to_owned(),
                    platform: platform.to_owned(),
                    hex: sha_hex(&bytes),
                    bytes,
                });
            }
            push_seed_layout(&registry, &repo, version, &layer, None).await;
        }
    }
    let total: usize = pkgs.iter().map(|p| p.bytes.len()).sum();
    eprintln!(
        "{} packages, {:.1} MiB in all; cache max_size 16MiB",
        pkgs.len(),
        total as f64 / 1048576.0
    );

    let cert = TestCert::generate();
    let cache = temp_dir("odtr-crash-cache-");
    let config = cached_mirror_config(&cert, &registry.url(), false, cache.path(), "16MiB");
    let mut f = Figures::default();

    for cycle in 0..cycles {
        let mut server = Server::start(&config);
        let base = server.base_url().to_owned();
        if cycle == 0 {
            // The paths used below are the ones the mirror hands out.
            let client = https_client(&cert);
            for p in &pkgs {
                let archives =
                    fetch_archives(&client, &server.mirror_url(), &p.addr, &p.version, None).await;
                assert_eq!(
                    archives[&p.platform].url.as_str(),
                    format!("{base}{}", p.path()),
                    "the mirror's download URL"
                );
            }
        }
        let clients = [https_client(&cert), https_client_http1(&cert)];
        let mut tasks = Vec::new();
        for i in 0..CONCURRENT_DOWNLOADS {
            let pkg = rng.gen_range(0..pkgs.len());
            let size = pkgs[pkg].bytes.len() as u64;
            let range = rng.gen_bool(0.3).then(|| {
                let a = rng.gen_range(0..size);
                let b = rng.gen_range(a..size);
                (a, b)
            });
            let url = format!("{base}{}", pkgs[pkg].path());
            let client = clients[i % 2].clone();
            tasks.push(tokio::spawn(async move {
                let header = range.map(|(a, b)| format!("bytes={a}-{b}"));
                let headers: Vec<(&str, &str)> = header
                    .as_deref()
                    .map(|h| vec![("range", h)])
                    .unwrap_or_default();
                let got = download_hashed(&client, &url, &headers).await;
                Outcome { pkg, range, got }
            }));
        }
        let delay = rng.gen_range(0..=MAX_KILL_DELAY_MS);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill9();
        let stderr = server.stderr();
        assert!(
            !stderr.contains("panicked"),
            "cycle {cycle}: the server panicked:\n{stderr}"
        );
        drop(server);

        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for task in tasks {
            let o = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .unwrap_or_else(|_| {
                    panic!("cycle {cycle}: a download did not end within 30 s of the kill")
                })
                .expect("download task");
            *statuses.entry(o.got.status).or_default() += 1;
            f.downloads += 1;
            if let Some(problem) = check_outcome(&o, &pkgs, &mut f) {
                f.bad_responses.push(format!("cycle {cycle}: {problem}"));
            }
        }

        // The server is dead. Files in blobs/ are whole and right, whatever the moment.
        let bad = bad_blob_files(cache.path());
        f.bad_blobs
            .extend(bad.iter().map(|b| format!("cycle {cycle}: {b}")));
        let temp_left = cache_temp_files(cache.path());
        f.temp_files_left_by_crashes += temp_left.len();

        // `cache verify` opens the store (repairing what the crash left) and re-hashes it all.
        let verify = run_cli(&config, &["cache", "verify"], Duration::from_secs(50));
        assert!(
            verify.success() && verify.stdout.contains(" 0 bad"),
            "cycle {cycle} (seed {seed}, killed after {delay} ms): cache verify is not clean:\n{verify}"
        );
        if let Some(report) = repair_report(&verify.stderr) {
            assert!(
                report.contains("bad_files_removed: 0") && report.contains("index_rebuilt: false"),
                "cycle {cycle} (seed {seed}): the store found damage on open: {report}"
            );
            f.repairs.push(format!("cycle {cycle}: {report}"));
        }
        let temp_after = cache_temp_files(cache.path());
        f.temp_files_after_reopen += temp_after.len();
        assert!(
            temp_after.is_empty(),
            "cycle {cycle}: temp files survived the next open of the store: {temp_after:?}"
        );
        let blobs = cache_blob_files(cache.path());
        f.blobs_after_cycle.push(blobs.len());
        f.cycles += 1;
        eprintln!(
            "cycle {cycle:2}: killed after {delay:4} ms; statuses {statuses:?}; {} temp file(s) left by the crash; {} blob(s) stored; {}",
            temp_left.len(),
            blobs.len(),
            verify.stdout.trim()
        );
        assert!(
            f.bad_responses.is_empty() && f.bad_blobs.is_empty(),
            "cycle {cycle} (seed {seed}, killed after {delay} ms):\nbad responses:\n{}\nbad blobs:\n{}",
            f.bad_responses.join("\n"),
            f.bad_blobs.join("\n")
        );
    }

    // One more start: everything is served right, cached or fetched again.
    let mut server = Server::start(&config);
    let base = server.base_url().to_owned();
    let client = https_client(&cert);
    let mut final_hits = 0;
    for (i, p) in pkgs.iter().enumerate() {
        let url = format!("{base}{}", p.path());
        let d = download_hashed(&client, &url, &[]).await;
        assert!(
            d.is_exactly(&p.bytes),
            "after the cycles, {} {}_{}: status {} len {} error {:?}",
            p.addr,
            p.version,
            p.platform,
            d.status,
            d.len,
            d.error
        );
        if d.header("x-cache") == Some("HIT") {
            final_hits += 1;
        }
        let size = p.bytes.len() as u64;
        let (a, b) = (size / 3 + i as u64, size / 2);
        let o = Outcome {
            pkg: i,
            range: Some((a, b)),
            got: download_hashed(&client, &url, &[("range", &format!("bytes={a}-{b}"))]).await,
        };
        assert_eq!(o.got.status, 206, "after the cycles, a range of {url}");
        let mut scratch = Figures::default();
        if let Some(problem) = check_outcome(&o, &pkgs, &mut scratch) {
            panic!("after the cycles: {problem}");
        }
    }
    let status = server.terminate(Duration::from_secs(35));
    assert!(
        status.is_some_and(|s| s.success()),
        "the server did not stop cleanly: {status:?}\n{}",
        server.stderr()
    );
    assert!(
        !server.stderr().contains("panicked"),
        "the server panicked:\n{}",
        server.stderr()
    );
    drop(server);
    let temp = cache_temp_files(cache.path());
    assert!(
        temp.is_empty(),
        "temp files after a clean run and shutdown: {temp:?}"
    );
    let bad = bad_blob_files(cache.path());
    assert!(bad.is_empty(), "after the final run: {bad:?}");
    let verify = run_cli(&config, &["cache", "verify"], Duration::from_secs(50));
    assert!(
        verify.success() && verify.stdout.contains(" 0 bad"),
        "final cache verify:\n{verify}"
    );

    eprintln!(
        "repairs made on open after crashes:\n  {}",
        f.repairs.join("\n  ")
    );
    eprintln!(
        "CRASH-DURABILITY seed={seed}: cycles survived {} of {cycles}; downloads {}: {} complete 200, {} complete 206, {} cut with a correct prefix, {} without a response; bad responses {}; bad blobs {}; temp files left by crashes {} (after the next open: {}); blobs per cycle {:?}; final run: {} packages right ({} from the cache); {:.1} s",
        f.cycles,
        f.downloads,
        f.complete_200,
        f.complete_206,
        f.cut_with_correct_prefix,
        f.no_response,
        f.bad_responses.len(),
        f.bad_blobs.len(),
        f.temp_files_left_by_crashes,
        f.temp_files_after_reopen,
        f.blobs_after_cycle,
        pkgs.len(),
        final_hits,
        test_started.elapsed().as_secs_f64()
    );
    assert!(
        f.complete_200 + f.complete_206 > 0,
        "no download completed in any cycle: the byte checks proved nothing"
    );
}
