//! `lock`: a `.terraform.lock.hcl` for several platforms from the cache, compared byte for
//! byte (without its `zh:` lines) with what the real `terraform providers lock -net-mirror`
//! writes through the server on the same cache, and accepted by `terraform init`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

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

fn published() -> (WarmFixture, BTreeMap<(String, String), Vec<u8>>) {
    let fx = WarmFixture::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let zips = rt.block_on(push_fake_versions(
        fx.registry(),
        FOO_REPO,
        "foo",
        &["1.0.0", "1.1.0", "2.0.0"],
        &[&local_platform(), &other_platform()],
    ));
    (fx, zips)
}

fn config_dir(constraint: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("odtr-lock-cfg-")
        .tempdir()
        .unwrap();
    std::fs::write(
        dir.path().join("main.tf"),
        required_providers_tf(&[(FOO, constraint)]),
    )
    .unwrap();
    dir
}

fn read_lock(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(".terraform.lock.hcl"))
        .unwrap_or_else(|e| panic!("{}: no lock file: {e}", dir.display()))
}

/// `terraform providers lock -net-mirror=MIRROR -platform=P... ARGS...` in `dir` (a server
/// must own the cache); the lock file it wrote.
fn terraform_providers_lock(
    fx: &WarmFixture,
    dir: &Path,
    platforms: &[&str],
    args: &[&str],
) -> String {
    let mut argv = vec![
        "providers".to_owned(),
        "lock".to_owned(),
        "-no-color".to_owned(),
        format!("-net-mirror={}", fx.mirror_url()),
    ];
    argv.extend(platforms.iter().map(|p| format!("-platform={p}")));
    argv.extend(args.iter().map(|a| a.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let run = terraform_in(dir, &argv, "", Some(&fx.cert));
    assert!(
        run.success,
        "terraform providers lock failed:\n{}",
        run.output
    );
    read_lock(dir)
}

/// terraform init through the mirror (a server must own the cache) in `dir`, whose lock file
/// is `our_lock`: it must succeed and keep the lock file as it is.
fn assert_init_keeps(fx: &WarmFixture, dir: &Path, our_lock: &str) {
    let run = terraform_in(
        dir,
        &["init", "-no-color", "-input=false"],
        &tf_network_mirror_config(&fx.mirror_url()),
        Some(&fx.cert),
    );
    assert!(
        run.success,
        "terraform init with our lock file failed:\n{}\n--- lock ---\n{our_lock}",
        run.output
    );
    assert_eq!(
        read_lock(dir),
        our_lock,
        "terraform init changed our lock file"
    );
}

/// `terraform get`, then `terraform providers lock` for this host's platform in `theirs`
/// (through a server on the same cache): it must write `our_lock` without its `zh:` lines;
/// and `terraform init` in `ours` must keep `our_lock`.
fn assert_terraform_locks_the_same(fx: &WarmFixture, ours: &Path, theirs: &Path, our_lock: &str) {
    let server = fx.start_server(&[]);
    let run = terraform_in(theirs, &["get", "-no-color"], "", None);
    assert!(run.success, "terraform get: {}", run.output);
    let their_lock = terraform_providers_lock(fx, theirs, &[&local_platform()], &[]);
    assert_eq!(
        without_zh(our_lock),
        their_lock,
        "--- ours ---\n{our_lock}--- terraform's ---\n{their_lock}"
    );
    assert_init_keeps(fx, ours, our_lock);
    drop(server);
}

/// `lock --dir DIR --platform LOCAL --platform OTHER`.
fn lock_for_both_platforms(fx: &WarmFixture, dir: &Path) -> CliOutput {
    let (local, other) = (local_platform(), other_platform());
    let dir = dir.to_str().unwrap();
    fx.cli(&[
        "lock",
        "--dir",
        dir,
        "--platform",
        &local,
        "--platform",
        &other,
    ])
}

/// `lock --dir DIR ARGS...` must fail, saying each of `says`, and leave the lock file as it was.
fn assert_lock_refused(fx: &WarmFixture, dir: &Path, args: &[&str], says: &[&str]) {
    let before = read_lock(dir);
    let mut argv = vec!["lock", "--dir", dir.to_str().unwrap()];
    argv.extend_from_slice(args);
    let out = fx.cli(&argv);
    assert!(!out.success(), "lock {args:?} succeeded:\n{out}");
    assert!(out.status.is_some(), "lock was killed:\n{out}");
    for needle in says {
        assert!(
            out.stderr.contains(needle),
            "the error lacks {needle:?}:\n{out}"
        );
    }
    assert_eq!(read_lock(dir), before, "a refused lock changed the file");
}

/// `warm --dir DIR` then `lock --dir DIR`; the lock file written.
fn warm_and_lock(fx: &WarmFixture, dir: &Path) -> String {
    let dir_arg = dir.to_str().unwrap();
    let out = fx.cli(&["warm", "--dir", dir_arg]);
    assert!(out.success(), "{} warm: {out}", dir.display());
    let out = fx.cli(&["lock", "--dir", dir_arg]);
    assert!(out.success(), "{} lock: {out}", dir.display());
    read_lock(dir)
}

fn without_zh(lock: &str) -> String {
    lock.lines()
        .filter(|l| !l.trim_start().starts_with("\"zh:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn lock_matches_terraform_providers_lock_and_init_accepts_it() {
    let (fx, zips) = published();
    let (local, other) = (local_platform(), other_platform());
    let ours = config_dir("~> 1.0");
    let theirs = config_dir("~> 1.0");
    let platform_args = ["--platform", local.as_str(), "--platform", other.as_str()];

    let mut warm = vec!["warm", "--dir", ours.path().to_str().unwrap()];
    warm.extend_from_slice(&platform_args);
    let out = fx.cli(&warm);
    assert!(out.success(), "{out}");

    let mut lock = vec!["lock", "--dir", ours.path().to_str().unwrap()];
    lock.extend_from_slice(&platform_args);
    let out = fx.cli(&lock);
    assert!(out.success(), "{out}");
    let our_lock = read_lock(ours.path());
    let hashes = lock_file_hashes(&our_lock, FOO);
    for platform in [&local, &other] {
        let zip = &zips[&("1.1.0".to_owned(), platform.clone())];
        assert!(
            hashes.contains(&h1(zip)),
            "no h1 for {platform}:\n{our_lock}"
        );
        assert!(
            hashes.contains(&zh(zip)),
            "no zh for {platform}:\n{our_lock}"
        );
    }
    assert_eq!(hashes.len(), 4, "{our_lock}");

    // The real Terraform, through the server on the same cache.
    let _server = fx.start_server(&[]);
    let their_lock = terraform_providers_lock(&fx, theirs.path(), &[&local, &other], &[FOO]);
    assert_eq!(
        without_zh(&our_lock),
        their_lock,
        "our lock file (zh: lines removed) differs from Terraform's\n--- ours ---\n{our_lock}\n--- terraform's ---\n{their_lock}"
    );

    // terraform init accepts our lock file as it is (and keeps it).
    assert_init_keeps(&fx, ours.path(), &our_lock);
}

#[test]
fn lock_completes_a_lock_file_terraform_init_wrote_for_one_platform() {
    let (fx, zips) = published();
    let (local, other) = (local_platform(), other_platform());
    let cfg = config_dir(">= 1.0.0");
    // terraform init through the mirror: 2.0.0, the local platform's h1 only.
    let out = fx.cli(&["warm", "--platform", "all", "acme/foo@>= 1.0.0"]);
    assert!(out.success(), "{out}");
    let server = fx.start_server(&[]);
    let run = terraform_in(
        cfg.path(),
        &["init", "-no-color", "-input=false"],
        &tf_network_mirror_config(&fx.mirror_url()),
        Some(&fx.cert),
    );
    assert!(run.success, "{}", run.output);
    drop(server);
    let before = read_lock(cfg.path());
    assert_eq!(lock_file_version(&before, FOO).as_deref(), Some("2.0.0"));

    let out = lock_for_both_platforms(&fx, cfg.path());
    assert!(out.success(), "{out}");
    let after = read_lock(cfg.path());
    assert_eq!(
        lock_file_version(&after, FOO).as_deref(),
        Some("2.0.0"),
        "{after}"
    );
    let hashes = lock_file_hashes(&after, FOO);
    for h in lock_file_hashes(&before, FOO) {
        assert!(hashes.contains(&h), "lost {h}:\n{after}");
    }
    for platform in [&local, &other] {
        let zip = &zips[&("2.0.0".to_owned(), platform.clone())];
        assert!(hashes.contains(&h1(zip)), "no h1 for {platform}:\n{after}");
        assert!(hashes.contains(&zh(zip)), "no zh for {platform}:\n{after}");
    }
    assert!(after.contains("constraints = \">= 1.0.0\""), "{after}");
}

#[test]
fn lock_of_a_platform_not_warmed_fails_with_the_warm_command() {
    let (fx, _zips) = published();
    let other = other_platform();
    let cfg = config_dir("~> 1.0");
    let out = fx.cli(&["warm", "--dir", cfg.path().to_str().unwrap()]);
    assert!(out.success(), "{out}");
    let out = lock_for_both_platforms(&fx, cfg.path());
    assert!(!out.success(), "{out}");
    assert!(out.status.is_some(), "lock was killed:\n{out}");
    assert!(
        out.stderr.contains(&other) && out.stderr.contains("warm"),
        "the error does not name {other} and the warm command:\n{out}"
    );
    assert!(
        !cfg.path().join(".terraform.lock.hcl").exists(),
        "a partial lock file was written"
    );
}

#[test]
fn lock_writes_constraints_as_terraform_does() {
    // Terraform normalises the constraints it records (`>=1.0` → `>= 1.0.0`, `~> 1` →
    // `~> 1.0`, ...); our lock file must say the same, or `terraform init` rewrites it.
    let (fx, _zips) = published();
    let local = local_platform();
    let cases: &[&[(&str, &str)]] = &[
        &[("main.tf", ">= 1.0, < 2.0")],
        &[("main.tf", ">=1.0,<2")],
        &[("main.tf", "1.1.0")],
        &[("main.tf", "~> 1.1.0")],
        &[("main.tf", "~> 1")],
        &[("main.tf", "= 1.1.0")],
        &[("main.tf", "< 2.0, >= 1.0, != 1.0.1")],
        // Several operators on one version: Terraform orders them by operator.
        &[("main.tf", "!= 1.0.0, >= 1.0.0, < 2, ~> 1.0, >= 1.0")],
        // A two-part pessimistic constraint with a pre-release.
        &[("main.tf", "~> 1.0-beta.1")],
    ];
    let mut mismatches = Vec::new();
    for files in cases {
        let make = || {
            let dir = tempfile::Builder::new()
                .prefix("odtr-lock-cfg-")
                .tempdir()
                .unwrap();
            for (name, constraint) in files.iter() {
                std::fs::write(
                    dir.path().join(name),
                    required_providers_tf(&[(FOO, constraint)]),
                )
                .unwrap();
            }
            dir
        };
        let ours = make();
        let our_lock = warm_and_lock(&fx, ours.path());

        let theirs = make();
        let server = fx.start_server(&[]);
        let their_lock = terraform_providers_lock(&fx, theirs.path(), &[&local], &[FOO]);
        // And whether terraform init keeps our lock file as it is.
        let init = terraform_in(
            ours.path(),
            &["init", "-no-color", "-input=false"],
            &tf_network_mirror_config(&fx.mirror_url()),
            Some(&fx.cert),
        );
        drop(server);
        let after_init = read_lock(ours.path());
        if without_zh(&our_lock) != their_lock || !init.success || after_init != our_lock {
            mismatches.push(format!(
                "constraints {files:?}\n--- ours ---\n{our_lock}--- terraform providers lock's ---\n{their_lock}--- terraform init with ours: {} ---\n{}--- ours after terraform init ---\n{after_init}",
                if init.success { "succeeded" } else { "FAILED" },
                if init.success { String::new() } else { init.output.clone() },
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn lock_counts_the_providers_of_called_modules_as_terraform_does() {
    // A root module and a local child module both constrain foo: the lock file must carry
    // the constraints of both, as `terraform providers lock` writes them.
    let (fx, _zips) = published();
    let make = || {
        let dir = tempfile::Builder::new()
            .prefix("odtr-lock-mod-")
            .tempdir()
            .unwrap();
        let root = format!(
            "{}module \"net\" {{\n  source = \"./modules/net\"\n}}\n",
            required_providers_tf(&[(FOO, ">= 1.0")])
        );
        std::fs::write(dir.path().join("main.tf"), root).unwrap();
        std::fs::create_dir_all(dir.path().join("modules/net")).unwrap();
        std::fs::write(
            dir.path().join("modules/net/main.tf"),
            required_providers_tf(&[(FOO, "~> 1.0, != 1.0.0")]),
        )
        .unwrap();
        dir
    };
    let ours = make();
    let our_lock = warm_and_lock(&fx, ours.path());
    assert_eq!(lock_file_version(&our_lock, FOO).as_deref(), Some("1.1.0"));

    assert_terraform_locks_the_same(&fx, ours.path(), make().path(), &our_lock);
}

#[test]
fn json_configurations_and_override_files_are_read_as_terraform_reads_them() {
    // The root module in Terraform's JSON syntax, with an override file that replaces its
    // constraint on foo, a provider block's version, and a JSON child module adding one
    // more constraint: the lock file must be the one
    // `terraform providers lock` writes for the same directory.
    let (fx, _zips) = published();
    let make = || {
        let dir = tempfile::Builder::new()
            .prefix("odtr-lock-json-")
            .tempdir()
            .unwrap();
        let write = |rel: &str, text: String| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let required = |version: &str| {
            serde_json::json!({"terraform": [{"required_providers": {
                "//": "a comment",
                "foo": {"source": FOO, "version": version}
            }}]})
        };
        let mut root = required(">= 1.0");
        root["module"] = serde_json::json!({"net": {"source": "./modules/net"}});
        // The deprecated version argument of a provider block, which Terraform still counts,
        // in an array of blocks.
        root["provider"] = serde_json::json!({"foo": [{"version": "< 2.0"}]});
        write("main.tf.json", root.to_string());
        write("foo_override.tf.json", required("~> 1.0").to_string());
        write("modules/net/main.tf.json", required("!= 1.0.0").to_string());
        dir
    };
    let ours = make();
    let our_lock = warm_and_lock(&fx, ours.path());
    assert_eq!(lock_file_version(&our_lock, FOO).as_deref(), Some("1.1.0"));

    assert_terraform_locks_the_same(&fx, ours.path(), make().path(), &our_lock);
}

#[test]
fn lock_refuses_recorded_hashes_that_name_other_packages_and_drops_stale_constraints() {
    let (fx, zips) = published();
    let local = local_platform();
    let out = fx.cli(&["warm", "acme/foo@1.1.0"]);
    assert!(out.success(), "{out}");
    let lock_entry = |constraints: &str, hashes: &[String]| {
        let mut text = format!(
            "# This file is maintained automatically by \"terraform init\".\n# Manual edits may be lost in future updates.\n\nprovider \"{FOO}\" {{\n  version     = \"1.1.0\"\n"
        );
        if !constraints.is_empty() {
            text.push_str(&format!("  constraints = \"{constraints}\"\n"));
        }
        text.push_str("  hashes = [\n");
        for h in hashes {
            text.push_str(&format!("    \"{h}\",\n"));
        }
        text.push_str("  ]\n}\n");
        text
    };

    // Hashes of some other build of 1.1.0: refused, the lock file untouched.
    let forged = lock_entry(
        "~> 1.0",
        &[
            "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_owned(),
            format!("zh:{}", "0".repeat(64)),
        ],
    );
    let cfg = config_dir("~> 1.0");
    let lock_path = cfg.path().join(".terraform.lock.hcl");
    std::fs::write(&lock_path, &forged).unwrap();
    assert_lock_refused(&fx, cfg.path(), &[], &["matches the hashes", FOO]);

    // The configuration no longer sets a version: the constraints line goes, as
    // terraform providers lock drops it; the recorded (true) hash is kept.
    let zip = &zips[&("1.1.0".to_owned(), local.clone())];
    let cfg = tempfile::Builder::new()
        .prefix("odtr-lock-cfg-")
        .tempdir()
        .unwrap();
    std::fs::write(
        cfg.path().join("main.tf"),
        format!(
            "terraform {{\n  required_providers {{\n    foo = {{ source = \"{FOO}\" }}\n  }}\n}}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        cfg.path().join(".terraform.lock.hcl"),
        lock_entry("~> 1.0", &[h1(zip)]),
    )
    .unwrap();
    let out = fx.cli(&["lock", "--dir", cfg.path().to_str().unwrap()]);
    assert!(out.success(), "{out}");
    let after = read_lock(cfg.path());
    assert!(
        !after.contains("constraints"),
        "stale constraints kept:\n{after}"
    );
    assert_eq!(lock_file_version(&after, FOO).as_deref(), Some("1.1.0"));
    assert!(lock_file_hashes(&after, FOO).contains(&zh(zip)), "{after}");

    // An explicit version outside the recorded constraints would contradict itself.
    let out = fx.cli(&["warm", "acme/foo@2.0.0"]);
    assert!(out.success(), "{out}");
    let recorded = lock_entry("~> 1.0", &[h1(zip)]);
    std::fs::write(cfg.path().join(".terraform.lock.hcl"), &recorded).unwrap();
    assert_lock_refused(
        &fx,
        cfg.path(),
        &["acme/foo@2.0.0"],
        &["outside the constraints"],
    );
}

#[test]
fn lock_reads_through_a_running_server_that_owns_the_cache() {
    let (fx, zips) = published();
    let (local, other) = (local_platform(), other_platform());
    let out = fx.cli(&["warm", "--platform", "all", "acme/foo@1.1.0"]);
    assert!(out.success(), "{out}");
    let cfg = config_dir("~> 1.0");
    let server = fx.start_server(&[]);
    let out = lock_for_both_platforms(&fx, cfg.path());
    assert!(out.success(), "{out}\n--- server ---\n{}", server.stderr());
    assert!(out.stderr.contains("through it"), "{out}");
    let lock = read_lock(cfg.path());
    let hashes = lock_file_hashes(&lock, FOO);
    for platform in [&local, &other] {
        let zip = &zips[&("1.1.0".to_owned(), platform.clone())];
        assert!(hashes.contains(&h1(zip)), "no h1 for {platform}:\n{lock}");
        assert!(hashes.contains(&zh(zip)), "no zh for {platform}:\n{lock}");
    }
    assert_eq!(hashes.len(), 4, "{lock}");
    // A platform the server's cache lacks is reported, as without a server.
    assert_lock_refused(&fx, cfg.path(), &["acme/foo@1.0.0"], &["not in the cache"]);
}
