//! `export DIR`: a static mirror written from the cache, which the real Terraform 1.0.3
//! accepts both as a `filesystem_mirror` and, served by a static HTTPS file server, as a
//! `network_mirror`; exporting again changes nothing, and a tampered file is refused.

mod common;

use std::collections::BTreeMap;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";
const FOO_DIR: &str = "registry.terraform.io/acme/foo";

fn other_platform() -> String {
    if local_platform() == "darwin_arm64" {
        "linux_amd64".to_owned()
    } else {
        "darwin_arm64".to_owned()
    }
}

/// acme/foo 1.0.0 and 1.1.0 for this host's platform and one other, and a cache warmed with
/// 1.1.0 for both.
fn warmed() -> (WarmFixture, BTreeMap<(String, String), Vec<u8>>) {
    let fx = WarmFixture::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let zips = rt.block_on(push_fake_versions(
        fx.registry(),
        FOO_REPO,
        "foo",
        &["1.0.0", "1.1.0"],
        &[&local_platform(), &other_platform()],
    ));
    let out = fx.cli(&["warm", "--platform", "all", "acme/foo@1.1.0"]);
    assert!(out.success(), "{out}");
    assert_eq!(fx.cached_hexes().len(), 2, "{out}");
    (fx, zips)
}

fn export(fx: &WarmFixture, dest: &std::path::Path, args: &[&str]) -> CliOutput {
    let mut all = vec!["export", dest.to_str().unwrap()];
    all.extend_from_slice(args);
    fx.cli(&all)
}

fn zip_name(version: &str, platform: &str) -> String {
    format!("terraform-provider-foo_{version}_{platform}.zip")
}

#[test]
fn export_writes_a_static_mirror_terraform_accepts_from_disk_and_over_https() {
    let (fx, zips) = warmed();
    let (local, other) = (local_platform(), other_platform());
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("static-mirror");
    let out = export(&fx, &dest, &["acme/foo@1.1.0", "--platform", "all"]);
    assert!(out.success(), "{out}");

    // The layout `terraform providers mirror` writes.
    let snapshot = dir_snapshot(&dest);
    let mut want_files: Vec<String> = vec![
        format!("{FOO_DIR}/index.json"),
        format!("{FOO_DIR}/1.1.0.json"),
        format!("{FOO_DIR}/{}", zip_name("1.1.0", &local)),
        format!("{FOO_DIR}/{}", zip_name("1.1.0", &other)),
    ];
    want_files.sort();
    assert_eq!(
        snapshot.keys().cloned().collect::<Vec<_>>(),
        want_files,
        "{out}"
    );
    let index = parse_json(&snapshot[&format!("{FOO_DIR}/index.json")]);
    assert_eq!(index, serde_json::json!({"versions": {"1.1.0": {}}}));
    let version_doc = parse_json(&snapshot[&format!("{FOO_DIR}/1.1.0.json")]);
    let archives = version_doc["archives"]
        .as_object()
        .unwrap_or_else(|| panic!("no archives: {version_doc}"));
    assert_eq!(archives.len(), 2, "{version_doc}");
    for platform in [&local, &other] {
        let zip = &zips[&("1.1.0".to_owned(), platform.clone())];
        let entry = &archives[platform.as_str()];
        assert_eq!(entry["url"], zip_name("1.1.0", platform), "{version_doc}");
        let hashes: Vec<&str> = entry["hashes"]
            .as_array()
            .unwrap_or_else(|| panic!("no hashes: {version_doc}"))
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert!(hashes.contains(&h1(zip).as_str()), "{version_doc}");
        assert!(hashes.contains(&zh(zip).as_str()), "{version_doc}");
        assert!(
            snapshot[&format!("{FOO_DIR}/{}", zip_name("1.1.0", platform))] == *zip,
            "the exported {platform} zip is not the package"
        );
    }

    // Exporting again changes nothing.
    let again = export(&fx, &dest, &["acme/foo@1.1.0", "--platform", "all"]);
    assert!(again.success(), "{again}");
    assert!(
        dir_snapshot(&dest) == snapshot,
        "the second export changed the directory:\n{again}"
    );

    let local_zip = &zips[&("1.1.0".to_owned(), local.clone())];
    let check_init = |how: &str, dir: &std::path::Path, run: &TerraformRun| {
        assert!(
            run.success,
            "terraform init from the {how} failed:\n{}",
            run.output
        );
        let lock = std::fs::read_to_string(dir.join(".terraform.lock.hcl"))
            .unwrap_or_else(|_| panic!("no lock file after init from the {how}:\n{}", run.output));
        assert_eq!(
            lock_file_version(&lock, FOO).as_deref(),
            Some("1.1.0"),
            "{lock}"
        );
        assert!(
            lock_file_hashes(&lock, FOO).contains(&h1(local_zip)),
            "{how}: {lock}"
        );
    };

    // Terraform's filesystem_mirror reads the packed layout (the JSON files beside it do
    // not bother it).
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("main.tf"),
        required_providers_tf(&[(FOO, "~> 1.0")]),
    )
    .unwrap();
    let run = terraform_in(
        work.path(),
        &["init", "-no-color", "-input=false"],
        &tf_filesystem_mirror_config(&dest),
        None,
    );
    check_init("filesystem mirror", work.path(), &run);

    // The same directory behind a static HTTPS server is a network mirror.
    let web = StaticHttpsServer::start(&dest, &fx.cert);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("main.tf"),
        required_providers_tf(&[(FOO, "~> 1.0")]),
    )
    .unwrap();
    let run = terraform_in(
        work.path(),
        &["init", "-no-color", "-input=false"],
        &tf_network_mirror_config(&web.url()),
        Some(&fx.cert),
    );
    check_init("static HTTPS server", work.path(), &run);
    let requests = web.requests();
    for path in [
        format!("/{FOO_DIR}/index.json"),
        format!("/{FOO_DIR}/1.1.0.json"),
        format!("/{FOO_DIR}/{}", zip_name("1.1.0", &local)),
    ] {
        assert!(
            requests.iter().any(|r| r == &format!("GET {path} 200")),
            "terraform did not GET {path}: {requests:?}"
        );
    }
}

#[test]
fn export_adds_versions_to_an_existing_export() {
    let (fx, zips) = warmed();
    let local = local_platform();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("m");
    let out = export(&fx, &dest, &["acme/foo@1.1.0"]);
    assert!(out.success(), "{out}");
    let out = fx.cli(&["warm", "acme/foo@1.0.0"]);
    assert!(out.success(), "{out}");
    let out = export(&fx, &dest, &["acme/foo@1.0.0"]);
    assert!(out.success(), "{out}");
    let snapshot = dir_snapshot(&dest);
    let index = parse_json(&snapshot[&format!("{FOO_DIR}/index.json")]);
    assert_eq!(
        index,
        serde_json::json!({"versions": {"1.0.0": {}, "1.1.0": {}}})
    );
    for version in ["1.0.0", "1.1.0"] {
        let zip = &zips[&(version.to_owned(), local.clone())];
        assert!(snapshot[&format!("{FOO_DIR}/{}", zip_name(version, &local))] == *zip);
        let doc = parse_json(&snapshot[&format!("{FOO_DIR}/{version}.json")]);
        assert_eq!(
            doc["archives"].as_object().map(|a| a.len()),
            Some(1),
            "{doc}"
        );
    }
}

#[test]
fn export_refuses_a_tampered_file_and_names_it() {
    let (fx, _zips) = warmed();
    let local = local_platform();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("m");
    let out = export(&fx, &dest, &["acme/foo@1.1.0", "--platform", "all"]);
    assert!(out.success(), "{out}");
    let victim = dest.join(FOO_DIR).join(zip_name("1.1.0", &local));
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let before = dir_snapshot(&dest);

    let out = export(&fx, &dest, &["acme/foo@1.1.0", "--platform", "all"]);
    assert!(!out.success(), "export accepted a tampered file:\n{out}");
    assert!(out.status.is_some(), "export was killed:\n{out}");
    assert!(
        out.stderr.contains(&victim.display().to_string()),
        "the error does not name {}:\n{out}",
        victim.display()
    );
    assert!(
        std::fs::read(&victim).unwrap() == bytes,
        "export overwrote the tampered file"
    );
    let after = dir_snapshot(&dest);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
}

#[test]
fn export_of_what_is_not_cached_fails_with_the_warm_command() {
    let (fx, _zips) = warmed();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("m");
    // 1.0.0 was never warmed.
    let out = export(&fx, &dest, &["acme/foo@1.0.0"]);
    assert!(!out.success(), "{out}");
    assert!(out.status.is_some(), "export was killed:\n{out}");
    assert!(
        out.stderr.contains(FOO) && out.stderr.contains("1.0.0"),
        "the error does not name what is missing:\n{out}"
    );
    assert!(
        out.stderr.contains("warm"),
        "the error does not say to warm it:\n{out}"
    );
    // Export never goes to the origin.
    let requests = fx.proxy.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("/1.0.0") || r.contains("manifests/1.0.0")),
        "export asked the registry: {requests:?}"
    );
}

#[test]
fn export_while_a_server_owns_the_cache_says_so() {
    let (fx, _zips) = warmed();
    let _server = fx.start_server(&[]);
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("m");
    let out = export(&fx, &dest, &["acme/foo@1.1.0"]);
    assert!(!out.success(), "{out}");
    assert!(
        out.stderr.contains(&fx.cache_dir().display().to_string()),
        "the error does not name the cache directory:\n{out}"
    );
    assert!(!dest.join(FOO_DIR).exists());
}

#[test]
fn export_refuses_a_version_document_listing_other_hashes() {
    let (fx, _zips) = warmed();
    let local = local_platform();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("m");
    let out = export(&fx, &dest, &["acme/foo@1.1.0", "--platform", &local]);
    assert!(out.success(), "{out}");
    let doc_path = dest.join(FOO_DIR).join("1.1.0.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&doc_path).unwrap()).unwrap();
    doc["archives"][local.as_str()]["hashes"] =
        serde_json::json!(["h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]);
    let tampered = serde_json::to_vec_pretty(&doc).unwrap();
    std::fs::write(&doc_path, &tampered).unwrap();
    // With the package gone too, a refused export must not bring it back: the document is
    // checked before anything is written.
    let zip_path = dest
        .join(FOO_DIR)
        .join(format!("terraform-provider-foo_1.1.0_{local}.zip"));
    std::fs::remove_file(&zip_path).unwrap();

    let out = export(&fx, &dest, &["acme/foo@1.1.0", "--platform", &local]);
    assert!(!out.success(), "export rewrote different hashes:\n{out}");
    assert!(
        !zip_path.exists(),
        "a refused export wrote {}",
        zip_path.display()
    );
    assert!(
        out.stderr.contains(&doc_path.display().to_string()),
        "the error does not name {}:\n{out}",
        doc_path.display()
    );
    assert_eq!(
        std::fs::read(&doc_path).unwrap(),
        tampered,
        "export changed the document"
    );
}
