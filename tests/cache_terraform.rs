//! Terraform 1.0.3 through the mirror twice: the second `terraform init` (a fresh working
//! directory, so Terraform downloads again) is served from the package cache.

mod common;

use std::time::Duration;

use common::*;

const FOO: &str = "registry.terraform.io/acme/foo";
const FOO_REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_terraform_init_fetches_no_package_from_the_origin() {
    let fx = CacheFixture::start(false, "1GiB");
    let local = local_platform();
    let zip = fake_provider_zip_for("foo", "1.0.0", &local);
    let darwin = fake_provider_zip_for("foo", "1.0.0", "darwin_arm64");
    push_seed_layout(
        &fx.registry,
        FOO_REPO,
        "1.0.0",
        &[(local.as_str(), zip.clone()), ("darwin_arm64", darwin)],
        None,
    )
    .await;

    let mirror = fx.server.mirror_url();
    for round in 1..=2 {
        let init = tokio::task::block_in_place(|| {
            terraform_init(&mirror, &fx.cert, &[(FOO, "1.0.0")], None)
        });
        assert!(
            init.success,
            "terraform init #{round} failed:\n{}",
            init.output
        );
        let lock = init.lock_file.as_deref().unwrap_or_default();
        assert!(
            lock_file_hashes(lock, FOO).contains(&h1(&zip)),
            "terraform init #{round}: lock file lacks the package's h1:\n{lock}"
        );
        assert_eq!(
            fx.proxy.blob_gets(),
            1,
            "origin blob GETs after terraform init #{round}: {:#?}",
            fx.proxy.requests()
        );
        if round == 1 {
            let cache = fx.cache_dir().to_owned();
            let hex = sha256_hex(&zip);
            assert!(
                wait_until(Duration::from_secs(5), || cache_blob_files(&cache)
                    .iter()
                    .any(|(h, _)| *h == hex)),
                "package not cached after the first init"
            );
        }
    }
}
