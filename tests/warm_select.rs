//! `warm`: which versions and platforms it fetches — from ADDR@CONSTRAINTS, `--platform`,
//! `--all-matching`, `--lock-file` and `--dir` — and how it reports what it could not do. Real
//! docker-registry (behind a counting proxy), the real binary, a cache directory per test.

mod common;

use std::collections::BTreeMap;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const BAR: &str = "registry.terraform.io/acme/bar";
const BAR_REPO: &str = "terraform-providers/registry.terraform.io/acme/bar";
const VERSIONS: [&str; 4] = ["1.0.0", "1.1.0", "1.2.0-beta.1", "2.0.0"];

/// The platform of the second package of every version (the first is this host's).
fn other_platform() -> String {
    if local_platform() == "darwin_arm64" {
        "linux_amd64".to_owned()
    } else {
        "darwin_arm64".to_owned()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A registry holding acme/foo 1.0.0, 1.1.0, 1.2.0-beta.1 and 2.0.0 (OpenTofu layout) for
/// this host's platform and one other, and acme/bar 3.0.0 (seed layout) for this host's.
struct Published {
    fx: WarmFixture,
    /// (address, version, platform) → package
    zips: BTreeMap<(String, String, String), Vec<u8>>,
}

impl Published {
    fn start() -> Published {
        let fx = WarmFixture::start();
        let rt = runtime();
        let mut zips = BTreeMap::new();
        for version in VERSIONS {
            let mut packages = Vec::new();
            for platform in [local_platform(), other_platform()] {
                let zip = fake_provider_zip_for("foo", version, &platform);
                let (os, arch) = platform.split_once('_').unwrap();
                packages.push((os.to_owned(), arch.to_owned(), zip.clone()));
                zips.insert((FOO.to_owned(), version.to_owned(), platform.clone()), zip);
            }
            let packages: Vec<(&str, &str, Vec<u8>)> = packages
                .iter()
                .map(|(o, a, z)| (o.as_str(), a.as_str(), z.clone()))
                .collect();
            rt.block_on(push_opentofu_layout(
                fx.registry(),
                FOO_REPO,
                version,
                &packages,
                None,
            ));
        }
        let bar = fake_provider_zip_for("bar", "3.0.0", &local_platform());
        rt.block_on(push_seed_layout(
            fx.registry(),
            BAR_REPO,
            "3.0.0",
            &[(local_platform().as_str(), bar.clone())],
            None,
        ));
        zips.insert((BAR.to_owned(), "3.0.0".to_owned(), local_platform()), bar);
        Published { fx, zips }
    }

    fn zip(&self, addr: &str, version: &str, platform: &str) -> &Vec<u8> {
        self.zips
            .get(&(addr.to_owned(), version.to_owned(), platform.to_owned()))
            .unwrap_or_else(|| panic!("no fixture package {addr} {version} {platform}"))
    }

    /// The sorted digests (hex) of the packages of `addr` for `(version, platform)` pairs.
    fn hexes(&self, addr: &str, wanted: &[(&str, &str)]) -> Vec<String> {
        hexes_of(wanted.iter().map(|(v, p)| self.zip(addr, v, p)))
    }

    fn warm(&self, args: &[&str]) -> CliOutput {
        let mut all = vec!["warm"];
        all.extend_from_slice(args);
        self.fx.cli(&all)
    }

    /// Names the packages the cache holds, for failure messages.
    fn describe_cache(&self) -> String {
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for ((a, v, p), zip) in &self.zips {
            names.insert(sha256_hex(zip), format!("{a} {v} {p}"));
        }
        self.fx
            .cached_hexes()
            .iter()
            .map(|h| {
                names
                    .get(h)
                    .cloned()
                    .unwrap_or_else(|| format!("unknown {h}"))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn assert_cache_holds(&self, expected: Vec<String>, out: &CliOutput) {
        assert_eq!(
            self.fx.cached_hexes(),
            expected,
            "the cache holds [{}]\n{out}",
            self.describe_cache()
        );
    }
}

#[test]
fn constraint_selects_the_newest_release_for_the_host_platform_only() {
    let p = Published::start();
    let local = local_platform();
    let out = p.warm(&["acme/foo@~> 1.0"]);
    assert!(out.success(), "{out}");
    // 1.1.0 is the newest release matching ~> 1.0; 1.2.0-beta.1 is a pre-release not named
    // exactly, 2.0.0 is out of range; only this host's platform by default.
    p.assert_cache_holds(p.hexes(FOO, &[("1.1.0", &local)]), &out);
    assert!(
        out.stderr.contains(&format!("{FOO} 1.1.0 {local}")),
        "no line for the package fetched:\n{out}"
    );
    assert!(
        !out.stderr.contains(&other_platform()),
        "mentions the other platform:\n{out}"
    );
    assert!(
        out.stdout.contains("1 fetched"),
        "summary does not say 1 fetched:\n{out}"
    );
    assert_eq!(p.fx.proxy.blob_gets(), 1, "{:?}", p.fx.proxy.requests());
}

#[test]
fn no_constraint_takes_the_newest_release_not_a_prerelease() {
    let p = Published::start();
    let local = local_platform();
    let out = p.warm(&["acme/foo", "registry.terraform.io/acme/bar"]);
    assert!(out.success(), "{out}");
    let mut want = p.hexes(FOO, &[("2.0.0", &local)]);
    want.extend(p.hexes(BAR, &[("3.0.0", &local)]));
    want.sort();
    p.assert_cache_holds(want, &out);
}

#[test]
fn platform_all_fetches_every_platform_the_origin_has() {
    let p = Published::start();
    let (local, other) = (local_platform(), other_platform());
    let out = p.warm(&["--platform", "all", "acme/foo@~> 1.0"]);
    assert!(out.success(), "{out}");
    p.assert_cache_holds(p.hexes(FOO, &[("1.1.0", &local), ("1.1.0", &other)]), &out);

    // Naming the platforms explicitly is the same.
    let q = Published::start();
    let out = q.warm(&[
        "--platform",
        &local,
        "--platform",
        &other,
        "acme/foo@~> 1.0",
    ]);
    assert!(out.success(), "{out}");
    q.assert_cache_holds(q.hexes(FOO, &[("1.1.0", &local), ("1.1.0", &other)]), &out);
}

#[test]
fn all_matching_fetches_every_matching_release() {
    let p = Published::start();
    let (local, other) = (local_platform(), other_platform());
    let out = p.warm(&["--all-matching", "--platform", "all", "acme/foo@~> 1.0"]);
    assert!(out.success(), "{out}");
    p.assert_cache_holds(
        p.hexes(
            FOO,
            &[
                ("1.0.0", &local),
                ("1.0.0", &other),
                ("1.1.0", &local),
                ("1.1.0", &other),
            ],
        ),
        &out,
    );
    assert!(out.stdout.contains("4 fetched"), "{out}");
}

#[test]
fn an_exactly_named_prerelease_is_selected() {
    let p = Published::start();
    let local = local_platform();
    let out = p.warm(&["acme/foo@1.2.0-beta.1"]);
    assert!(out.success(), "{out}");
    p.assert_cache_holds(p.hexes(FOO, &[("1.2.0-beta.1", &local)]), &out);

    // `= VERSION` names it too; an inexact operator does not select a pre-release.
    let q = Published::start();
    let out = q.warm(&["--all-matching", "acme/foo@>= 1.1.0, < 2.0.0"]);
    assert!(out.success(), "{out}");
    q.assert_cache_holds(q.hexes(FOO, &[("1.1.0", &local)]), &out);
    let out = q.warm(&["acme/foo@= 1.2.0-beta.1"]);
    assert!(out.success(), "{out}");
    q.assert_cache_holds(
        q.hexes(FOO, &[("1.1.0", &local), ("1.2.0-beta.1", &local)]),
        &out,
    );
}

#[test]
fn no_matching_version_fails_naming_provider_constraint_and_available_versions() {
    let p = Published::start();
    let out = p.warm(&["acme/foo@>= 3.0, < 4.0"]);
    assert!(!out.success(), "warm succeeded without a match:\n{out}");
    assert!(out.status.is_some(), "warm was killed:\n{out}");
    let all = format!("{}{}", out.stdout, out.stderr);
    for needle in [FOO, ">= 3.0, < 4.0", "1.0.0, 1.1.0, 1.2.0-beta.1, 2.0.0"] {
        assert!(all.contains(needle), "the output lacks {needle:?}:\n{out}");
    }
    assert!(p.fx.cached_hexes().is_empty(), "{out}");
    assert_eq!(p.fx.proxy.blob_gets(), 0);
}

#[test]
fn platforms_the_version_lacks_are_each_listed_and_the_others_still_fetched() {
    let p = Published::start();
    let local = local_platform();
    let out = p.warm(&[
        "--platform",
        "windows_386",
        "--platform",
        "freebsd_amd64",
        "--platform",
        &local,
        "acme/foo@1.1.0",
    ]);
    assert!(!out.success(), "{out}");
    assert!(out.status.is_some(), "warm was killed:\n{out}");
    let all = format!("{}{}", out.stdout, out.stderr);
    for needle in [FOO, "1.1.0", &local, &other_platform()] {
        assert!(all.contains(needle), "the output lacks {needle:?}:\n{out}");
    }
    for missing in ["windows_386", "freebsd_amd64"] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains("  - ") && l.contains(missing)),
            "the failure list does not name {missing}:\n{out}"
        );
    }
    // What exists is fetched all the same.
    p.assert_cache_holds(p.hexes(FOO, &[("1.1.0", &local)]), &out);
}

fn lock_file(version: &str, hashes: &[String]) -> String {
    let mut s = format!(
        "# This file is maintained automatically by \"terraform init\".\n# Manual edits may be lost in future updates.\n\nprovider \"{FOO}\" {{\n  version     = \"{version}\"\n  constraints = \"~> 1.0\"\n  hashes = [\n"
    );
    for h in hashes {
        s.push_str(&format!("    \"{h}\",\n"));
    }
    s.push_str("  ]\n}\n");
    s
}

#[test]
fn lock_file_with_the_right_h1_warms_exactly_its_version() {
    let p = Published::start();
    let local = local_platform();
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join(".terraform.lock.hcl");
    // What terraform init through a network mirror records: the local platform's h1 only.
    std::fs::write(
        &lock,
        lock_file("1.0.0", &[h1(p.zip(FOO, "1.0.0", &local))]),
    )
    .unwrap();
    let out = p.warm(&["--lock-file", lock.to_str().unwrap()]);
    assert!(out.success(), "{out}");
    p.assert_cache_holds(p.hexes(FOO, &[("1.0.0", &local)]), &out);

    // A lock file with zh: hashes only is checked against those.
    let q = Published::start();
    std::fs::write(
        &lock,
        lock_file(
            "1.0.0",
            &[
                zh(q.zip(FOO, "1.0.0", &local)),
                zh(q.zip(FOO, "1.0.0", &other_platform())),
            ],
        ),
    )
    .unwrap();
    let out = q.warm(&["--platform", "all", "--lock-file", lock.to_str().unwrap()]);
    assert!(out.success(), "{out}");
    q.assert_cache_holds(
        q.hexes(FOO, &[("1.0.0", &local), ("1.0.0", &other_platform())]),
        &out,
    );
}

#[test]
fn lock_file_with_wrong_hashes_fails_reporting_the_mismatch() {
    let p = Published::start();
    let local = local_platform();
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join(".terraform.lock.hcl");
    // The hashes of another version's package.
    let wrong_h1 = h1(p.zip(FOO, "1.1.0", &local));
    let wrong_zh = zh(p.zip(FOO, "1.1.0", &local));
    std::fs::write(
        &lock,
        lock_file("1.0.0", &[wrong_h1.clone(), wrong_zh.clone()]),
    )
    .unwrap();
    let out = p.warm(&["--lock-file", lock.to_str().unwrap()]);
    assert!(
        !out.success(),
        "warm accepted a package the lock file does not match:\n{out}"
    );
    assert!(out.status.is_some(), "warm was killed:\n{out}");
    let all = format!("{}{}", out.stdout, out.stderr);
    let right_zh = zh(p.zip(FOO, "1.0.0", &local));
    for needle in [FOO, "1.0.0", &local, "lock file", &right_zh] {
        assert!(all.contains(needle), "the output lacks {needle:?}:\n{out}");
    }
    assert!(
        all.contains("matches none") || all.contains("mismatch") || all.contains("does not match"),
        "the output does not report a hash mismatch:\n{out}"
    );
    // The package was fetched before its hashes could be checked: its line must still end
    // up saying it failed, not only "fetched".
    assert!(
        all.lines()
            .any(|l| l.starts_with("FAILED") && l.contains(FOO) && l.contains("matches none")),
        "no FAILED line for the package whose hashes do not match:\n{out}"
    );
    // Nothing is kept for the refused package: not 1.0.0, which the lock file refuses, nor
    // 1.1.0 (whose hashes were given), which is not what its version says.
    assert!(
        p.fx.cached_hexes().is_empty(),
        "a package the lock file refuses was kept:\n{}\n{out}",
        p.describe_cache()
    );
    let stats = p.fx.cli(&["cache", "stats"]);
    assert!(
        stats
            .stdout
            .lines()
            .any(|l| l.starts_with("entries:") && l.split_whitespace().nth(1) == Some("0")),
        "the index still has an entry:\n{stats}"
    );
}

#[test]
fn config_dir_required_providers_of_the_module_and_its_children_combine() {
    let p = Published::start();
    let local = local_platform();
    let dir = tempfile::tempdir().unwrap();
    // Alone, `< 2.0` selects 1.1.0 and `!= 1.1.0` selects 2.0.0; together only 1.0.0 is left.
    std::fs::write(
        dir.path().join("main.tf"),
        "terraform {\n  required_providers {\n    foo = {\n      source  = \"acme/foo\"\n      version = \"< 2.0\"\n    }\n  }\n}\n\nresource \"foo_thing\" \"x\" {}\n\nmodule \"child\" {\n  source = \"./child\"\n}\n",
    )
    .unwrap();
    let versions = "terraform {\n  required_version = \">= 1.0\"\n  required_providers {\n    foo = { source = \"registry.terraform.io/acme/foo\", version = \"!= 1.1.0\" }\n  }\n}\n";
    std::fs::create_dir_all(dir.path().join("child")).unwrap();
    std::fs::write(dir.path().join("child/versions.tf"), versions).unwrap();
    // Not a .tf file: ignored.
    std::fs::write(
        dir.path().join("notes.txt"),
        "foo = { source = \"acme/foo\", version = \"2.0.0\" }\n",
    )
    .unwrap();
    let out = p.warm(&["--dir", dir.path().to_str().unwrap()]);
    assert!(out.success(), "{out}");
    p.assert_cache_holds(p.hexes(FOO, &[("1.0.0", &local)]), &out);

    // Two required_providers blocks in one module: Terraform refuses that configuration
    // ("Duplicate required providers configuration"), and so does warm, naming the file.
    std::fs::write(dir.path().join("versions.tf"), versions).unwrap();
    let out = p.warm(&["--dir", dir.path().to_str().unwrap()]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains("versions.tf") && out.stderr.contains("required_providers"),
        "the error does not name the second block:\n{out}"
    );
}

#[test]
fn one_missing_provider_fails_the_run_but_the_good_one_is_cached() {
    let p = Published::start();
    let local = local_platform();
    let out = p.warm(&["acme/bar@3.0.0", "acme/nope@~> 1.0"]);
    assert!(
        !out.success(),
        "warm succeeded with a nonexistent provider:\n{out}"
    );
    assert!(out.status.is_some(), "warm was killed:\n{out}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("registry.terraform.io/acme/nope"),
        "the failure does not name the missing provider:\n{out}"
    );
    assert!(
        !out.stderr
            .lines()
            .any(|l| l.contains("acme/bar") && (l.contains("FAILED") || l.contains("  - "))),
        "the good provider is listed as a failure:\n{out}"
    );
    p.assert_cache_holds(p.hexes(BAR, &[("3.0.0", &local)]), &out);
    // The error's "N of M" must count the package that was warmed as well as the failure.
    let counts = all
        .split("could not be warmed")
        .next()
        .and_then(|head| head.rsplit("Error: ").next())
        .map(|s| s.split_whitespace().collect::<Vec<_>>());
    if let Some(words) = counts {
        if let [n, "of", m, ..] = words.as_slice() {
            let (n, m): (usize, usize) = (n.parse().unwrap(), m.parse().unwrap());
            assert!(
                n == 1 && m >= 2,
                "with 1 package warmed and 1 provider failed, the error says \"{n} of {m}\":\n{out}"
            );
        }
    }
}

#[test]
fn bad_arguments_are_refused_before_any_download() {
    let p = Published::start();
    for args in [
        vec!["acme/foo@>= x"],
        vec!["not-an-address"],
        vec!["--platform", "amd64", "acme/foo"],
        vec![],
    ] {
        let out = p.warm(&args);
        assert!(!out.success(), "warm {args:?} succeeded:\n{out}");
        assert!(out.status.is_some(), "warm {args:?} was killed:\n{out}");
        assert!(
            !out.stderr.trim().is_empty(),
            "warm {args:?} said nothing:\n{out}"
        );
    }
    assert_eq!(p.fx.proxy.blob_gets(), 0);
    assert!(p.fx.cached_hexes().is_empty());
}

#[test]
fn two_lock_files_pinning_different_versions_warm_both() {
    // The CI-runner case of the README: warm from the lock files of every repository the
    // runner builds. Two repositories pinning acme/foo at different versions need both.
    let p = Published::start();
    let local = local_platform();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.lock.hcl");
    let b = dir.path().join("b.lock.hcl");
    std::fs::write(&a, lock_file("1.0.0", &[h1(p.zip(FOO, "1.0.0", &local))])).unwrap();
    std::fs::write(&b, lock_file("1.1.0", &[h1(p.zip(FOO, "1.1.0", &local))])).unwrap();
    let out = p.warm(&[
        "--lock-file",
        a.to_str().unwrap(),
        "--lock-file",
        b.to_str().unwrap(),
    ]);
    assert!(
        out.success(),
        "warm of two lock files pinning {FOO} 1.0.0 and 1.1.0 failed:\n{out}"
    );
    p.assert_cache_holds(p.hexes(FOO, &[("1.0.0", &local), ("1.1.0", &local)]), &out);
}

#[test]
fn two_specs_for_one_provider_warm_both_versions() {
    // `warm acme/foo@1.0.0 acme/foo@2.0.0`: each argument is a request of its own.
    let p = Published::start();
    let local = local_platform();
    let out = p.warm(&["acme/foo@1.0.0", "acme/foo@2.0.0"]);
    assert!(
        out.success(),
        "warm acme/foo@1.0.0 acme/foo@2.0.0 failed:\n{out}"
    );
    p.assert_cache_holds(p.hexes(FOO, &[("1.0.0", &local), ("2.0.0", &local)]), &out);
}
