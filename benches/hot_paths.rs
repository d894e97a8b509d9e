//! Micro-benchmarks of the hot paths, so regressions show: `cargo bench --bench hot_paths`.

use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use odtr::http::router::route;
use odtr::mirror::sealed_url::{Binding, UrlSealer};
use odtr::oci::Manifest;
use odtr::provider::hash::h1_from_zip;
use odtr::provider::layout;

fn routes(c: &mut Criterion) {
    let hex = "ab".repeat(32);
    let download = format!("/mirror/registry.terraform.io/hashicorp/aws/download/sha256/{hex}/terraform-provider-aws_5.0.0_linux_amd64.zip");
    c.bench_function("route index.json", |b| {
        b.iter(|| {
            route(black_box(
                "/mirror/registry.terraform.io/hashicorp/aws/index.json",
            ))
        })
    });
    c.bench_function("route VERSION.json", |b| {
        b.iter(|| {
            route(black_box(
                "/mirror/registry.terraform.io/hashicorp/aws/5.31.0.json",
            ))
        })
    });
    c.bench_function("route download", |b| b.iter(|| route(black_box(&download))));
}

fn sealed_urls(c: &mut Criterion) {
    let sealer = UrlSealer::new(&[7; 32], Duration::from_secs(180));
    let binding = Binding {
        mirror: "mirror",
        repository: "terraform-providers/registry.terraform.io/hashicorp/aws",
        digest: "sha256:abababababababababababababababababababababababababababababababab",
    };
    let token = sealer.seal(&binding, b"Bearer some-token-value").unwrap();
    c.bench_function("seal download URL", |b| {
        b.iter(|| sealer.seal(black_box(&binding), black_box(b"Bearer some-token-value")))
    });
    c.bench_function("open download URL", |b| {
        b.iter(|| sealer.open(black_box(&binding), black_box(&token)))
    });
}

fn hashing(c: &mut Criterion) {
    let mut zip = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut zip);
        w.start_file(
            "terraform-provider-aws_v5.0.0",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
        let data: Vec<u8> = (0..4 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        w.write_all(&data).unwrap();
        w.finish().unwrap();
    }
    let zip = zip.into_inner();
    let mut g = c.benchmark_group("h1");
    g.throughput(criterion::Throughput::Bytes(zip.len() as u64));
    g.bench_function("h1 of a 4 MiB package", |b| {
        b.iter(|| h1_from_zip(black_box(&zip)).unwrap())
    });
    g.finish();
}

fn manifests(c: &mut Criterion) {
    let layers: Vec<String> = [
        "linux_amd64",
        "linux_arm64",
        "darwin_amd64",
        "darwin_arm64",
        "windows_amd64",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| {
        format!(
            r#"{{"mediaType":"{}","digest":"sha256:{}","size":{},"annotations":{{"{}":"{p}"}}}}"#,
            layout::SEED_LAYER_MEDIA_TYPE,
            format!("{i:02x}").repeat(32),
            1000 + i,
            layout::SEED_PLATFORMS_ANNOTATION
        )
    })
    .collect();
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"{}","digest":"sha256:{}","size":2}},"layers":[{}]}}"#,
        layout::SEED_CONFIG_MEDIA_TYPE,
        "44".repeat(32),
        layers.join(",")
    );
    c.bench_function("parse + classify seed manifest", |b| {
        b.iter(|| {
            let m = Manifest::parse(
                Some("application/vnd.oci.image.manifest.v1+json"),
                black_box(body.as_bytes()),
            )
            .unwrap();
            layout::classify(&m).unwrap()
        })
    });
}

criterion_group!(benches, routes, sealed_urls, hashing, manifests);
criterion_main!(benches);
