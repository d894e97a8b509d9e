//! `push` against a real docker-registry (anonymous and htpasswd): every source kind in both
//! layouts, read back through the OCI API and through the server, `terraform init` through
//! the server, idempotence, `--force`, and refusals that leave the registry untouched.

mod common;
mod push_support;

use std::path::{Path, PathBuf};

use common::*;
use odtr::oci::{ClientOptions, Credential, OciClient, Registry as OciRegistry, UploadOptions};
use odtr::provider::layout::H1_ANNOTATION;
use odtr::provider::publish::{
    self, NoProgress, PublishLayout, PushOptions, PushReport, PushTarget, VersionOutcome,
};
use odtr::provider::sources::{self, SourceOptions};
use odtr::provider::ProviderAddress;
use push_support::{
    get_blob, get_manifest, keys, package, package_name, push_cli, tags, write_mirror_dir,
    write_release_dir, CliRun, HtpasswdRegistry, PASSWORD, USER,
};
use serde_json::json;

const FOO: &str = "registry.terraform.io/acme/foo";
const BAR: &str = "registry.terraform.io/acme/bar";
const PREFIX: &str = "terraform-providers";
const TITLE: &str = "org.opencontainers.image.title";

fn repo(prefix: &str, addr: &str) -> String {
    format!("{prefix}/{addr}")
}

fn address(addr: &str) -> ProviderAddress {
    let p: Vec<&str> = addr.split('/').collect();
    ProviderAddress::new(p[0], p[1], p[2]).expect("address")
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("odtr-push-")
        .tempdir()
        .expect("tempdir")
}

fn concat<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}

/// Pushes through the library, as the CLI does, and returns the report.
async fn push_lib(
    registry_url: &str,
    prefix: &str,
    credential: Credential,
    sources: &[PathBuf],
    address_flag: Option<&str>,
    opts: PushOptions,
) -> PushReport {
    let source_opts = SourceOptions {
        address: address_flag.map(address),
        version: None,
    };
    let releases = sources::collect(sources, &source_opts)
        .unwrap_or_else(|errs| panic!("sources refused: {errs:#?}"));
    let client = OciClient::new(ClientOptions::default()).expect("client");
    let target = PushTarget {
        registry: OciRegistry::new(url::Url::parse(registry_url).unwrap()),
        name_prefix: prefix.to_owned(),
        naming: odtr::provider::Naming::WithHostname,
        credential,
    };
    publish::push(&client, &target, &releases, &opts, &NoProgress)
        .await
        .unwrap_or_else(|errs| panic!("plan refused: {errs:#?}"))
}

fn layout_opts(layout: PublishLayout) -> PushOptions {
    PushOptions {
        layout,
        ..PushOptions::default()
    }
}

fn outcomes(r: &PushReport) -> Vec<VersionOutcome> {
    r.versions.iter().map(|v| v.outcome.clone()).collect()
}

/// Checks that `repo:tag` is exactly the OpenTofu layout for `packages` (platform, zip) and
/// that every blob is there. Returns the index digest.
async fn check_opentofu(
    registry_url: &str,
    repo: &str,
    tag: &str,
    packages: &[(String, Vec<u8>)],
    auth: Option<&str>,
) -> String {
    let index = get_manifest(registry_url, repo, tag, auth)
        .await
        .unwrap_or_else(|| panic!("{repo}:{tag} does not exist"));
    assert_eq!(index.content_type, MEDIA_TYPE_OCI_INDEX);
    let j = &index.json;
    assert_eq!(
        keys(j),
        ["artifactType", "manifests", "mediaType", "schemaVersion"],
        "{j}"
    );
    assert_eq!(j["schemaVersion"], 2);
    assert_eq!(j["mediaType"], MEDIA_TYPE_OCI_INDEX);
    assert_eq!(j["artifactType"], ARTIFACT_TYPE_TOFU_PROVIDER);
    let entries = j["manifests"].as_array().expect("manifests");
    assert_eq!(entries.len(), packages.len(), "{j}");
    for (platform, zip) in packages {
        let (os, arch) = platform.split_once('_').unwrap();
        let entry = entries
            .iter()
            .find(|e| e["platform"] == json!({"os": os, "architecture": arch}))
            .unwrap_or_else(|| panic!("no index entry for {platform}: {j}"));
        assert_eq!(
            keys(entry),
            ["artifactType", "digest", "mediaType", "platform", "size"]
        );
        assert_eq!(entry["mediaType"], MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(entry["artifactType"], ARTIFACT_TYPE_TOFU_TARGET);
        let digest = entry["digest"].as_str().unwrap();
        let m = get_manifest(registry_url, repo, digest, auth)
            .await
            .unwrap_or_else(|| panic!("{platform} manifest {digest} missing"));
        assert_eq!(m.digest, digest);
        assert_eq!(m.content_type, MEDIA_TYPE_OCI_MANIFEST);
        let mj = &m.json;
        assert_eq!(
            keys(mj),
            [
                "artifactType",
                "config",
                "layers",
                "mediaType",
                "schemaVersion"
            ],
            "{mj}"
        );
        assert_eq!(mj["schemaVersion"], 2);
        assert_eq!(mj["mediaType"], MEDIA_TYPE_OCI_MANIFEST);
        assert_eq!(mj["artifactType"], ARTIFACT_TYPE_TOFU_TARGET);
        assert_eq!(
            mj["config"],
            json!({"mediaType": MEDIA_TYPE_EMPTY, "digest": EMPTY_DIGEST, "size": 2})
        );
        let layers = mj["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 1, "{mj}");
        let layer = &layers[0];
        assert_eq!(keys(layer), ["annotations", "digest", "mediaType", "size"]);
        assert_eq!(layer["mediaType"], MEDIA_TYPE_ZIP);
        assert_eq!(layer["digest"], sha256_digest(zip));
        assert_eq!(layer["size"], zip.len());
        assert_eq!(keys(&layer["annotations"]), [H1_ANNOTATION, TITLE]);
        assert_eq!(layer["annotations"][H1_ANNOTATION], h1(zip));
        assert!(layer["annotations"][TITLE]
            .as_str()
            .is_some_and(|t| t.ends_with(&format!("{platform}.zip"))));
        assert!(
            get_blob(registry_url, repo, &sha256_digest(zip), auth).await == *zip,
            "{platform} blob differs"
        );
    }
    assert_eq!(
        get_blob(registry_url, repo, EMPTY_DIGEST, auth).await,
        b"{}"
    );
    index.digest
}

/// Checks that `repo:tag` is exactly the seed layout for `packages`. Returns its digest.
async fn check_seed(
    registry_url: &str,
    repo: &str,
    tag: &str,
    packages: &[(String, Vec<u8>)],
    auth: Option<&str>,
) -> String {
    let m = get_manifest(registry_url, repo, tag, auth)
        .await
        .unwrap_or_else(|| panic!("{repo}:{tag} does not exist"));
    assert_eq!(m.content_type, MEDIA_TYPE_OCI_MANIFEST);
    let j = &m.json;
    assert_eq!(
        keys(j),
        ["config", "layers", "mediaType", "schemaVersion"],
        "{j}"
    );
    assert_eq!(j["schemaVersion"], 2);
    assert_eq!(j["mediaType"], MEDIA_TYPE_OCI_MANIFEST);
    assert_eq!(
        j["config"],
        json!({"mediaType": MEDIA_TYPE_SEED_CONFIG, "digest": EMPTY_DIGEST, "size": 2})
    );
    let layers = j["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), packages.len(), "{j}");
    for (platform, zip) in packages {
        let layer = layers
            .iter()
            .find(|l| l["digest"] == sha256_digest(zip))
            .unwrap_or_else(|| panic!("no layer for {platform}: {j}"));
        assert_eq!(keys(layer), ["annotations", "digest", "mediaType", "size"]);
        assert_eq!(layer["mediaType"], MEDIA_TYPE_SEED_PACKAGE);
        assert_eq!(layer["size"], zip.len());
        assert_eq!(
            keys(&layer["annotations"]),
            [H1_ANNOTATION, ANNOTATION_TARGET_PLATFORMS, TITLE]
        );
        assert_eq!(layer["annotations"][ANNOTATION_TARGET_PLATFORMS], *platform);
        assert_eq!(layer["annotations"][H1_ANNOTATION], h1(zip));
        assert!(get_blob(registry_url, repo, &sha256_digest(zip), auth).await == *zip);
    }
    assert_eq!(
        get_blob(registry_url, repo, EMPTY_DIGEST, auth).await,
        b"{}"
    );
    m.digest
}

/// Reads the version back through the server's network mirror protocol: exactly these
/// platforms, right hashes, archive URLs serving the packages.
async fn check_served(
    registry_url: &str,
    addr: &str,
    version: &str,
    packages: &[(String, Vec<u8>)],
) {
    let cert = TestCert::generate();
    let server = Server::start(&server_config(&cert, registry_url, false));
    let client = https_client(&cert);
    let archives = fetch_archives(&client, &server.mirror_url(), addr, version, None).await;
    let mut got: Vec<&String> = archives.keys().collect();
    got.sort();
    let mut want: Vec<&String> = packages.iter().map(|(p, _)| p).collect();
    want.sort();
    assert_eq!(got, want, "{addr} {version}: platforms served");
    for (platform, zip) in packages {
        let a = &archives[platform];
        let zh = format!("zh:{}", sha256_hex(zip));
        assert!(
            a.hashes.contains(&zh),
            "{platform}: {:?} lacks {zh}",
            a.hashes
        );
        for h in a.hashes.iter().filter(|h| h.starts_with("h1:")) {
            assert_eq!(h, &h1(zip), "{platform}: wrong h1");
        }
        let download = fetch(&client, a.url.as_str(), None).await;
        download.expect_status(200);
        assert!(download.body == *zip, "{platform}: served package differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_directory_in_the_opentofu_layout_is_exact_and_served() {
    let registry = Registry::start(RegistryAuth::None);
    let dir = tmp();
    let platforms = [
        local_platform(),
        "darwin_arm64".into(),
        "windows_amd64".into(),
    ];
    let platform_refs: Vec<&str> = platforms.iter().map(String::as_str).collect();
    let packages = write_release_dir(dir.path(), "foo", "1.0.0", &platform_refs);

    let report = push_lib(
        &registry.url(),
        PREFIX,
        Credential::Anonymous,
        &[dir.path().to_owned()],
        Some(FOO),
        layout_opts(PublishLayout::OpenTofu),
    )
    .await;
    assert_eq!(outcomes(&report), [VersionOutcome::Pushed]);
    assert_eq!(report.blobs_uploaded, 4, "config and three packages");
    assert_eq!(report.manifests_written, 4, "three targets and the index");
    let total: usize = packages.iter().map(|(_, z)| z.len()).sum();
    assert_eq!(report.bytes_uploaded, total as u64 + 2);
    let digest = check_opentofu(
        &registry.url(),
        &repo(PREFIX, FOO),
        "1.0.0",
        &packages,
        None,
    )
    .await;
    assert_eq!(
        report.versions[0].digest.as_ref().unwrap().to_string(),
        digest
    );
    check_served(&registry.url(), FOO, "1.0.0", &packages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_directory_in_the_seed_layout_is_exact_and_served() {
    let registry = Registry::start(RegistryAuth::None);
    let dir = tmp();
    let platforms = [local_platform(), "linux_arm64".into()];
    let platform_refs: Vec<&str> = platforms.iter().map(String::as_str).collect();
    let packages = write_release_dir(dir.path(), "foo", "1.2.0", &platform_refs);
    let report = push_lib(
        &registry.url(),
        PREFIX,
        Credential::Anonymous,
        &[dir.path().to_owned()],
        Some(FOO),
        layout_opts(PublishLayout::Seed),
    )
    .await;
    assert_eq!(outcomes(&report), [VersionOutcome::Pushed]);
    assert_eq!(report.blobs_uploaded, 3);
    assert_eq!(report.manifests_written, 1);
    check_seed(
        &registry.url(),
        &repo(PREFIX, FOO),
        "1.2.0",
        &packages,
        None,
    )
    .await;
    check_served(&registry.url(), FOO, "1.2.0", &packages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_directory_in_both_layouts_with_cross_repository_mounts() {
    let registry = Registry::start(RegistryAuth::None);
    let root = tmp();
    let foo1 = write_mirror_dir(root.path(), FOO, "1.0.0", &["linux_amd64", "darwin_arm64"]);
    let foo2 = write_mirror_dir(root.path(), FOO, "1.1.0", &["linux_amd64"]);
    let bar = write_mirror_dir(root.path(), BAR, "2.0.0", &["linux_amd64", "windows_386"]);

    for (prefix, layout) in [
        ("tofu", PublishLayout::OpenTofu),
        ("seed", PublishLayout::Seed),
    ] {
        let report = push_lib(
            &registry.url(),
            prefix,
            Credential::Anonymous,
            &[root.path().to_owned()],
            None,
            layout_opts(layout),
        )
        .await;
        assert_eq!(
            outcomes(&report),
            vec![VersionOutcome::Pushed; 3],
            "{prefix}"
        );
        // The config blob is uploaded to the first repository and mounted into the second.
        assert_eq!(report.blobs_mounted, 1, "{prefix}: {report:?}");
        assert_eq!(
            report.blobs_present, 1,
            "{prefix}: config again in foo 1.1.0"
        );
        assert_eq!(report.blobs_uploaded, 1 + 5, "{prefix}");
        let url = registry.url();
        match layout {
            PublishLayout::OpenTofu => {
                check_opentofu(&url, &repo(prefix, FOO), "1.0.0", &foo1, None).await;
                check_opentofu(&url, &repo(prefix, FOO), "1.1.0", &foo2, None).await;
                check_opentofu(&url, &repo(prefix, BAR), "2.0.0", &bar, None).await;
            }
            PublishLayout::Seed => {
                check_seed(&url, &repo(prefix, FOO), "1.0.0", &foo1, None).await;
                check_seed(&url, &repo(prefix, FOO), "1.1.0", &foo2, None).await;
                check_seed(&url, &repo(prefix, BAR), "2.0.0", &bar, None).await;
            }
        }
        let mut foo_tags = tags(&url, &repo(prefix, FOO), None).await.unwrap();
        foo_tags.sort();
        assert_eq!(foo_tags, ["1.0.0", "1.1.0"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_files_through_the_cli_with_address_and_version() {
    let registry = Registry::start(RegistryAuth::None);
    let dir = tmp();
    let version = "2.0.0+ent.1";
    let a = package("foo", version, "linux_amd64");
    let b = package("foo", version, "darwin_arm64");
    let a_path = dir.path().join(package_name("foo", version, "linux_amd64"));
    // A name without the version: --version supplies it.
    let b_path = dir.path().join("build-output_darwin_arm64.zip");
    std::fs::write(&a_path, &a).unwrap();
    std::fs::write(&b_path, &b).unwrap();
    let url = registry.url();
    let run = push_cli(
        &[
            "push",
            "--registry",
            &url,
            "--repository-prefix",
            PREFIX,
            "--address",
            FOO,
            "--version",
            version,
            a_path.to_str().unwrap(),
            b_path.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert!(run.success, "{}", run.describe());
    assert!(
        run.stdout
            .contains("Pushed 1 version, 0 already up to date, 0 failed."),
        "{}",
        run.describe()
    );
    assert!(run.stdout.contains("3 uploaded"), "{}", run.describe());
    assert!(
        run.stderr
            .contains("uploaded     build-output_darwin_arm64.zip"),
        "{}",
        run.describe()
    );
    let packages = vec![
        ("linux_amd64".to_owned(), a),
        ("darwin_arm64".to_owned(), b),
    ];
    // `+` cannot be in a tag: OpenTofu writes `_`.
    check_opentofu(&url, &repo(PREFIX, FOO), "2.0.0_ent.1", &packages, None).await;
    assert_eq!(
        tags(&url, &repo(PREFIX, FOO), None).await.unwrap(),
        ["2.0.0_ent.1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_push_uploads_nothing_and_force_overwrites() {
    let registry = Registry::start(RegistryAuth::None);
    let url = registry.url();
    let dir = tmp();
    let packages = write_release_dir(dir.path(), "foo", "3.0.0", &["linux_amd64", "linux_arm64"]);
    let dir_arg = dir.path().to_str().unwrap().to_owned();
    let push_args = |extra: &[&str]| {
        let mut args = vec![
            "push",
            "--registry",
            url.as_str(),
            "--repository-prefix",
            PREFIX,
            "--address",
            FOO,
        ];
        args.extend_from_slice(extra);
        args.push(dir_arg.as_str());
        args.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let cli = |extra: &[&str]| {
        let args = push_args(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        push_cli(&refs, &[], None)
    };

    let first = cli(&[]);
    assert!(first.success, "{}", first.describe());
    assert!(first.stdout.contains("3 uploaded"), "{}", first.describe());
    let tofu_digest = check_opentofu(&url, &repo(PREFIX, FOO), "3.0.0", &packages, None).await;

    // Same content again: nothing uploaded, nothing written, said so.
    let second = cli(&[]);
    assert!(second.success, "{}", second.describe());
    assert!(
        second.stdout.contains("Pushed 0 versions, 1 already up to date, 0 failed. Blobs: 0 uploaded (0 B), 0 mounted, 0 already present; 0 manifests written"),
        "{}",
        second.describe()
    );
    let report = push_lib(
        &url,
        PREFIX,
        Credential::Anonymous,
        &[dir.path().to_owned()],
        Some(FOO),
        layout_opts(PublishLayout::OpenTofu),
    )
    .await;
    assert_eq!(outcomes(&report), [VersionOutcome::UpToDate]);
    assert_eq!(
        (
            report.blobs_uploaded,
            report.blobs_mounted,
            report.manifests_written,
            report.bytes_uploaded
        ),
        (0, 0, 0, 0)
    );

    // Different content (the other layout) for the same tag: refused without --force.
    let refused = cli(&["--layout", "seed"]);
    assert!(!refused.success, "{}", refused.describe());
    assert!(
        refused
            .stderr
            .contains("already exists with different content")
            && refused.stderr.contains("--force"),
        "{}",
        refused.describe()
    );
    assert_eq!(
        get_manifest(&url, &repo(PREFIX, FOO), "3.0.0", None)
            .await
            .unwrap()
            .digest,
        tofu_digest,
        "a refused push must not move the tag"
    );

    // A dry run says what --force would do and writes nothing.
    let dry = cli(&["--layout", "seed", "--force", "--dry-run"]);
    assert!(dry.success, "{}", dry.describe());
    assert!(
        dry.stdout.contains(
            "Dry run, nothing was written: 1 version would be pushed (1 replacing a tag)"
        ),
        "{}",
        dry.describe()
    );
    assert!(dry.stdout.contains("0 to upload"), "{}", dry.describe());
    assert_eq!(
        get_manifest(&url, &repo(PREFIX, FOO), "3.0.0", None)
            .await
            .unwrap()
            .digest,
        tofu_digest
    );

    // --force: replaced; the packages are already there, only the manifest is written.
    let mut opts = layout_opts(PublishLayout::Seed);
    opts.force = true;
    let report = push_lib(
        &url,
        PREFIX,
        Credential::Anonymous,
        &[dir.path().to_owned()],
        Some(FOO),
        opts,
    )
    .await;
    assert_eq!(report.versions.len(), 1);
    match &report.versions[0].outcome {
        VersionOutcome::Replaced {
            previous: Some(previous),
        } => {
            assert_eq!(previous.to_string(), tofu_digest)
        }
        other => panic!("expected Replaced, got {other:?}"),
    }
    assert_eq!(
        (
            report.blobs_uploaded,
            report.blobs_present,
            report.manifests_written
        ),
        (0, 3, 1)
    );
    check_seed(&url, &repo(PREFIX, FOO), "3.0.0", &packages, None).await;
}

/// Asserts that the CLI refused with `expect` in its error output and wrote nothing.
async fn assert_refused_and_untouched(
    registry_url: &str,
    run: &CliRun,
    expect: &[&str],
    repos: &[&str],
) {
    assert!(!run.success, "{}", run.describe());
    assert!(
        run.stderr.contains("nothing was pushed"),
        "{}",
        run.describe()
    );
    for e in expect {
        assert!(
            run.stderr.contains(e),
            "stderr lacks {e:?}: {}",
            run.describe()
        );
    }
    for r in repos {
        assert_eq!(
            tags(registry_url, r, None).await,
            None,
            "{r} was written to"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_zip_is_refused_and_nothing_is_written() {
    let registry = Registry::start(RegistryAuth::None);
    let url = registry.url();
    let dir = tmp();
    let packages = write_release_dir(dir.path(), "foo", "1.0.0", &["linux_amd64", "darwin_arm64"]);
    // A damaged archive whose SHA256SUMS entry was made to match: only opening it finds out.
    let bad_name = package_name("foo", "1.0.0", "darwin_arm64");
    let mut bad = packages[1].1.clone();
    let n = bad.len();
    bad.truncate(n - 30);
    std::fs::write(dir.path().join(&bad_name), &bad).unwrap();
    let sums = format!(
        "{}  {}\n{}  {bad_name}\n",
        sha256_hex(&packages[0].1),
        package_name("foo", "1.0.0", "linux_amd64"),
        sha256_hex(&bad)
    );
    std::fs::write(
        dir.path().join("terraform-provider-foo_1.0.0_SHA256SUMS"),
        sums,
    )
    .unwrap();
    // A good provider in the same command is not pushed either.
    let good_root = tmp();
    write_mirror_dir(good_root.path(), BAR, "1.0.0", &["linux_amd64"]);
    let garbage = dir
        .path()
        .join("x")
        .join(package_name("foo", "1.0.1", "linux_amd64"));
    std::fs::create_dir_all(garbage.parent().unwrap()).unwrap();
    std::fs::write(&garbage, b"this is not a zip file").unwrap();

    let run = push_cli(
        &[
            "push",
            "--registry",
            &url,
            "--repository-prefix",
            PREFIX,
            "--address",
            FOO,
            good_root.path().to_str().unwrap(),
            dir.path().to_str().unwrap(),
            garbage.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_refused_and_untouched(
        &url,
        &run,
        &[
            "2 problems",
            &bad_name,
            "not a valid provider package",
            garbage.to_str().unwrap(),
        ],
        &[&repo(PREFIX, FOO), &repo(PREFIX, BAR)],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha256sums_mismatch_is_refused_and_nothing_is_written() {
    let registry = Registry::start(RegistryAuth::None);
    let url = registry.url();
    let dir = tmp();
    write_release_dir(dir.path(), "foo", "1.0.0", &["linux_amd64", "darwin_arm64"]);
    // Replaced after the checksums were written (a valid zip, but not the released one).
    let replaced = package_name("foo", "1.0.0", "linux_amd64");
    std::fs::write(
        dir.path().join(&replaced),
        package("foo", "1.0.0", "tampered"),
    )
    .unwrap();
    let run = push_cli(
        &[
            "push",
            "--registry",
            &url,
            "--repository-prefix",
            PREFIX,
            "--address",
            FOO,
            "--layout",
            "seed",
            dir.path().to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_refused_and_untouched(
        &url,
        &run,
        &[
            "1 problem",
            &replaced,
            "terraform-provider-foo_1.0.0_SHA256SUMS says",
            "download it again",
        ],
        &[&repo(PREFIX, FOO)],
    )
    .await;

    // A release directory without its SHA256SUMS is refused too.
    std::fs::remove_file(dir.path().join("terraform-provider-foo_1.0.0_SHA256SUMS")).unwrap();
    let run = push_cli(
        &[
            "push",
            "--registry",
            &url,
            "--address",
            FOO,
            dir.path().to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_refused_and_untouched(&url, &run, &["SHA256SUMS"], &[FOO]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_registry_with_password_stdin_and_docker_config() {
    let registry = HtpasswdRegistry::start();
    let url = registry.url();
    let auth = registry.auth_header();
    let dir = tmp();
    let v1 = write_release_dir(&dir.path().join("v1"), "foo", "1.0.0", &["linux_amd64"]);
    let v2 = write_release_dir(&dir.path().join("v2"), "foo", "2.0.0", &["linux_amd64"]);
    let base = [
        "push",
        "--registry",
        url.as_str(),
        "--repository-prefix",
        PREFIX,
        "--address",
        FOO,
    ];
    let v1_dir = dir.path().join("v1");
    let v2_dir = dir.path().join("v2");

    // Anonymous: refused by the registry, with a message that says so.
    let run = push_cli(&concat(&base, &[v1_dir.to_str().unwrap()]), &[], None);
    assert!(!run.success, "{}", run.describe());
    assert!(
        run.stderr.contains("requires authorization"),
        "{}",
        run.describe()
    );

    // --username/--password-stdin.
    let run = push_cli(
        &concat(
            &base,
            &[
                "--username",
                USER,
                "--password-stdin",
                v1_dir.to_str().unwrap(),
            ],
        ),
        &[],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(run.success, "{}", run.describe());
    check_opentofu(&url, &repo(PREFIX, FOO), "1.0.0", &v1, Some(&auth)).await;

    // docker's config.json, keyed the way `docker login http://...` writes it.
    let docker = dir.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    use base64::Engine as _;
    let config = json!({
        "auths": {
            format!("http://127.0.0.1:{}", registry.port()): {
                "auth": base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
            }
        }
    });
    std::fs::write(docker.join("config.json"), config.to_string()).unwrap();
    let run = push_cli(
        &concat(&base, &["--layout", "seed", v2_dir.to_str().unwrap()]),
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
        None,
    );
    assert!(run.success, "{}", run.describe());
    check_seed(&url, &repo(PREFIX, FOO), "2.0.0", &v2, Some(&auth)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_packages_go_up_in_chunks_with_basic_auth() {
    let registry = HtpasswdRegistry::start();
    let url = registry.url();
    let dir = tmp();
    // An incompressible ~600 KiB package, pushed with small limits so it takes several PATCHes.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise: Vec<u8> = (0..600 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let zip = {
        use std::io::Write as _;
        let mut out = std::io::Cursor::new(Vec::new());
        let mut w = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .unix_permissions(0o755);
        w.start_file("terraform-provider-foo_v1.0.0", opts).unwrap();
        w.write_all(&noise).unwrap();
        w.finish().unwrap();
        out.into_inner()
    };
    let path = dir.path().join(package_name("foo", "1.0.0", "linux_amd64"));
    std::fs::write(&path, &zip).unwrap();
    let opts = PushOptions {
        upload: UploadOptions {
            monolithic_limit: 64 * 1024,
            chunk_size: 100 * 1024,
            ..UploadOptions::default()
        },
        ..PushOptions::default()
    };
    let cred = Credential::Basic {
        username: USER.into(),
        password: PASSWORD.into(),
    };
    let report = push_lib(&url, PREFIX, cred, &[path], Some(FOO), opts).await;
    assert_eq!(outcomes(&report), [VersionOutcome::Pushed]);
    assert_eq!(report.bytes_uploaded, zip.len() as u64 + 2);
    let patches = registry.log().matches("\"PATCH /v2/").count();
    assert!(
        patches >= 6,
        "expected a chunked upload, saw {patches} PATCH requests"
    );
    let packages = vec![("linux_amd64".to_owned(), zip)];
    check_opentofu(
        &url,
        &repo(PREFIX, FOO),
        "1.0.0",
        &packages,
        Some(&registry.auth_header()),
    )
    .await;
}

/// `push --mirror mirror` with the server's own configuration, then `terraform init` through
/// the server.
async fn push_then_terraform_init(
    layout: &str,
    source: &Path,
    address_flag: Option<&str>,
    version: &str,
    local_zip: &[u8],
) {
    let registry = Registry::start(RegistryAuth::None);
    let cert = TestCert::generate();
    let config = server_config(&cert, &registry.url(), false);
    let dir = tmp();
    let config_path = dir.path().join("config.hcl");
    std::fs::write(&config_path, &config).unwrap();
    let config_arg = format!("--config={}", config_path.display());
    let mut args = vec![
        config_arg.as_str(),
        "push",
        "--mirror",
        "mirror",
        "--layout",
        layout,
    ];
    if let Some(a) = address_flag {
        args.extend_from_slice(&["--address", a]);
    }
    args.push(source.to_str().unwrap());
    let run = push_cli(&args, &[], None);
    assert!(run.success, "{}", run.describe());

    let server = Server::start(&config);
    let init = terraform_init(&server.mirror_url(), &cert, &[(FOO, version)], None);
    assert!(init.success, "terraform init failed:\n{}", init.output);
    let lock = init.lock_file.expect("lock file");
    assert_eq!(
        lock_file_version(&lock, FOO).as_deref(),
        Some(version),
        "{lock}"
    );
    assert!(
        lock_file_hashes(&lock, FOO).contains(&h1(local_zip)),
        "lock file lacks the local package's h1:\n{lock}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_init_after_pushing_a_release_directory_in_the_opentofu_layout() {
    let dir = tmp();
    let local = local_platform();
    let packages = write_release_dir(dir.path(), "foo", "1.4.0", &[&local, "darwin_arm64"]);
    push_then_terraform_init("opentofu", dir.path(), Some(FOO), "1.4.0", &packages[0].1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_init_after_pushing_a_mirror_directory_in_the_seed_layout() {
    let root = tmp();
    let local = local_platform();
    let packages = write_mirror_dir(root.path(), FOO, "1.5.0", &[&local, "windows_amd64"]);
    push_then_terraform_init("seed", root.path(), None, "1.5.0", &packages[0].1).await;
}
