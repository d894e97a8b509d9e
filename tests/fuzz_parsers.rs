//! Property-based tests (proptest) for every parser that reads client, configuration or origin
//! input: request paths, `Range` / `If-None-Match` / `If-Range`, the HCL configuration and its
//! units, OCI manifests / indexes / digests / names / tags, `WWW-Authenticate` challenges,
//! version constraints, tag <-> version, provider addresses and package names, docker
//! `config.json`, sealed download URLs, and the layout classifier.
//!
//! Each parser gets (1) "never panics" on fully random input and on structured, near-valid
//! input, and (2) round-trip / consistency properties against an independent model where one
//! exists. Deep HCL nesting is tried in child processes, since a stack overflow aborts the whole
//! process and cannot be caught in-process.
//!
//! No failure files are written (`failure_persistence: None`); a failing case is printed by
//! proptest and kept below as a plain `#[test]` regression case.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Map, Value};

use odtr::cli::push::{parse_address as push_parse_address, parse_registry_url};
use odtr::config::{parse_config, units, Config, Diagnostic, FreshnessPolicy, Limits};
use odtr::http::range::{choose_range, if_range_allows, none_match, NoneMatch, RangeChoice};
use odtr::http::router::{route, RegistryRoute, Route, RouteError, MAX_PATH_LEN};
use odtr::mirror::sealed_url::{Binding, SealError, UrlSealer};
use odtr::oci::credentials::{DockerConfig, Lookup};
use odtr::oci::{
    is_valid_repository_name, is_valid_tag, Challenge, Descriptor, Digest, ImageIndex,
    ImageManifest, Manifest, Platform, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_EMPTY_JSON, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
};
use odtr::provider::constraints::Constraints;
use odtr::provider::layout::{
    classify, opentofu_package, VersionLayout, H1_ANNOTATION, SEED_CONFIG_MEDIA_TYPE,
    SEED_LAYER_MEDIA_TYPE, SEED_PLATFORMS_ANNOTATION, TITLE_ANNOTATION, TOFU_INDEX_ARTIFACT_TYPE,
    TOFU_LAYER_MEDIA_TYPE, TOFU_TARGET_ARTIFACT_TYPE,
};
use odtr::provider::requirements;
use odtr::provider::sources::parse_package_name;
use odtr::provider::{tag_for_version, version_from_tag, ProviderAddress, TargetPlatform};

/// The configuration file name given to `parse_config`; its directory does not exist, so
/// relative TLS paths never name a real file.
const CONFIG_PATH: &str = "/nonexistent-odtr-fuzz/config.hcl";

/// `option::weighted` that also takes the probabilities 0 and 1.
fn maybe<S: Strategy + 'static>(p: f64, s: S) -> BoxedStrategy<Option<S::Value>>
where
    S::Value: Clone + 'static,
{
    if p <= 0.0 {
        Just(None).boxed()
    } else if p >= 1.0 {
        s.prop_map(Some).boxed()
    } else {
        option::weighted(p, s).boxed()
    }
}

fn cfg(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// A cheap deterministic bit source for per-character choices inside one generated case.
struct Bits(u64);

impl Bits {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Percent-encodes about one character in four (as UTF-8 bytes, upper- or lower-case hex).
fn pct_mangle(s: &str, bits: &mut Bits) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let r = bits.next();
        if r.is_multiple_of(4) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                if r & 0x100 == 0 {
                    let _ = write!(out, "%{b:02X}");
                } else {
                    let _ = write!(out, "%{b:02x}");
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn random_case(s: &str, bits: &mut Bits) -> String {
    s.chars()
        .map(|c| {
            if bits.next().is_multiple_of(2) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Shared generators and reference models
// ---------------------------------------------------------------------------------------------

fn hex64() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

/// A semantic version with small or huge numbers, pre-release and build metadata.
fn semver_version() -> impl Strategy<Value = semver::Version> {
    let num = || prop_oneof![4 => 0..20u64, 1 => any::<u64>()];
    let ident = prop_oneof![
        "[0-9A-Za-z-]{1,6}".prop_map(|s| {
            // Numeric pre-release identifiers may not have leading zeros.
            if s.len() > 1 && s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit()) {
                format!("x{s}")
            } else {
                s
            }
        }),
        (0..1000u64).prop_map(|n| n.to_string()),
    ];
    (
        num(),
        num(),
        num(),
        option::of(vec(ident, 1..4)),
        option::of(vec("[0-9A-Za-z-]{1,6}", 1..3)),
    )
        .prop_map(|(major, minor, patch, pre, build)| {
            let mut v = semver::Version::new(major, minor, patch);
            if let Some(pre) = pre {
                v.pre = semver::Prerelease::new(&pre.join(".")).unwrap();
            }
            if let Some(build) = build {
                v.build = semver::BuildMetadata::new(&build.join(".")).unwrap();
            }
            v
        })
}

/// One DNS label, never a punycode (`xn--`) one.
fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?".prop_filter("no punycode", |l| !l.starts_with("xn--"))
}

/// A valid provider hostname: labels, a last label starting with a letter, optional port.
fn provider_hostname() -> impl Strategy<Value = String> {
    (
        vec(dns_label(), 0..3),
        "[a-z][a-z0-9]{0,6}",
        option::of(1..=65535u16),
    )
        .prop_map(|(mut labels, tld, port)| {
            labels.push(tld);
            let host = labels.join(".");
            match port {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
}

/// A provider namespace or type, in any case.
fn provider_label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,14}[a-zA-Z0-9])?"
}

fn valid_platform_word(w: &str) -> bool {
    !w.is_empty()
        && w.len() <= 32
        && w.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The hostname rules a normalised provider hostname must satisfy.
fn assert_normalized_address(a: &ProviderAddress) -> Result<(), TestCaseError> {
    let (host, port) = match a.hostname.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (a.hostname.as_str(), None),
    };
    if let Some(p) = port {
        let n: u16 = p
            .parse()
            .map_err(|_| TestCaseError::fail(format!("bad port in {a:?}")))?;
        prop_assert!(n != 0 && n.to_string() == p, "port not normalised: {a:?}");
    }
    prop_assert!(!host.is_empty(), "{a:?}");
    for l in host.split('.') {
        prop_assert!(
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "hostname label {l:?} of {a:?}"
        );
    }
    for l in [&a.namespace, &a.type_name] {
        prop_assert!(
            !l.is_empty()
                && l.len() <= 64
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "label {l:?} of {a:?}"
        );
    }
    // Normalising again changes nothing.
    let again = ProviderAddress::new(&a.hostname, &a.namespace, &a.type_name);
    prop_assert_eq!(again.as_ref(), Ok(a));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Request path routing
// ---------------------------------------------------------------------------------------------

const PATH_SEGMENTS: &[&str] = &[
    "v2",
    "v2",
    "tags",
    "list",
    "manifests",
    "blobs",
    "uploads",
    "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    "latest",
    "index.json",
    "download",
    "sha256",
    "",
    ".",
    "..",
    "%2e",
    "%2E%2e",
    "%2F",
    "%2f",
    "%5C",
    "%00",
    "%ff",
    "%",
    "%z",
    "%zz",
    "%c3%a9",
    "%C3",
    "metrics",
    "healthz",
    "readyz",
    "mirror",
    "registry.terraform.io",
    "Registry.Terraform.IO",
    "h.io:8443",
    "h.io:0",
    "h.io:99999",
    "127.0.0.1",
    "[::1]",
    "xn--bcher-kva.example",
    "bücher.example",
    "b%C3%BCcher.example",
    "hashicorp",
    "HashiCorp",
    "aws",
    "a_b",
    "-a",
    "1.2.3.json",
    "1.2.3%2Bbuild.5.json",
    "1.2.3+b.json",
    "01.2.3.json",
    "v1.2.3.json",
    "1.2.json",
    "f.zip",
    ".zip",
    "x.ZIP",
    "index.json?x",
    "a%2fb",
    "~",
    " ",
    "%20",
];

fn path_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(PATH_SEGMENTS).prop_map(str::to_owned),
        1 => hex64(),
        1 => "[0-9a-fA-F]{60,68}",
        2 => "[a-zA-Z0-9._~%+-]{0,12}",
        1 => "\\PC{0,8}",
        1 => any::<String>(),
    ]
}

fn soup_path() -> impl Strategy<Value = String> {
    let random = (vec(path_segment(), 0..10), 0..6u8).prop_map(|(segs, shape)| {
        let body = segs.join("/");
        match shape {
            0 | 1 => format!("/{body}"),
            2 => format!("/{body}/"),
            3 => body,
            4 => format!("//{body}"),
            _ => format!("/{body}?t=x"),
        }
    });
    // A valid mirror path with up to two segments replaced by soup.
    let near = (
        (
            mirror_name(),
            provider_hostname(),
            provider_label(),
            provider_label(),
        ),
        semver_version(),
        hex64(),
        0..3u8,
        vec((any::<Index>(), path_segment()), 0..3),
    )
        .prop_map(|((m, h, n, t), v, hex, kind, replace)| {
            let mut segs = vec![m, h, n, t];
            match kind {
                0 => segs.push("index.json".into()),
                1 => segs.push(format!("{v}.json")),
                _ => segs.extend(["download".into(), "sha256".into(), hex, "f.zip".into()]),
            }
            for (at, seg) in replace {
                let i = at.index(segs.len());
                segs[i] = seg;
            }
            format!("/{}", segs.join("/"))
        });
    prop_oneof![random, near]
}

/// What every routing answer must satisfy, whatever the path.
fn check_route(path: &str, r: &Result<Route, RouteError>) -> Result<(), TestCaseError> {
    if path.len() > MAX_PATH_LEN {
        prop_assert_eq!(r, &Err(RouteError::TooLong(MAX_PATH_LEN)));
        return Ok(());
    }
    prop_assert!(!matches!(r, Err(RouteError::TooLong(_))), "{path:?}: {r:?}");
    if !path.starts_with('/') {
        prop_assert!(
            matches!(r, Err(RouteError::Malformed(_))),
            "{path:?}: {r:?}"
        );
    }
    let check_mirror = |m: &str| -> Result<(), TestCaseError> {
        prop_assert!(
            m != "." && m != ".." && !m.contains(['/', '\\', '\0']),
            "mirror segment {m:?} from {path:?}"
        );
        Ok(())
    };
    match r {
        Ok(Route::MirrorIndex { mirror, addr }) => {
            check_mirror(mirror)?;
            assert_normalized_address(addr)?;
        }
        Ok(Route::MirrorVersion {
            mirror,
            addr,
            version,
        }) => {
            check_mirror(mirror)?;
            assert_normalized_address(addr)?;
            let again = semver::Version::parse(&version.to_string()).ok();
            prop_assert_eq!(again.as_ref(), Some(version));
        }
        Ok(Route::MirrorDownload {
            mirror,
            addr,
            digest,
        }) => {
            check_mirror(mirror)?;
            assert_normalized_address(addr)?;
            let again = Digest::parse(digest.as_str());
            prop_assert_eq!(again.as_ref(), Some(digest));
        }
        Ok(Route::Registry(r)) => {
            prop_assert!(path.starts_with("/v2"), "{path:?}: {r:?}");
            match r {
                RegistryRoute::Tags { name } => {
                    prop_assert!(is_valid_repository_name(name), "{path:?}: {r:?}");
                    prop_assert_eq!(path, format!("/v2/{name}/tags/list"));
                }
                RegistryRoute::Manifest { name, reference } => {
                    prop_assert!(is_valid_repository_name(name), "{path:?}: {r:?}");
                    prop_assert!(
                        is_valid_tag(reference) || Digest::parse(reference).is_some(),
                        "{path:?}: {r:?}"
                    );
                    prop_assert_eq!(path, format!("/v2/{name}/manifests/{reference}"));
                }
                RegistryRoute::Blob { name, digest } => {
                    prop_assert!(is_valid_repository_name(name), "{path:?}: {r:?}");
                    prop_assert_eq!(path, format!("/v2/{name}/blobs/{digest}"));
                }
                RegistryRoute::Base | RegistryRoute::Write => {}
            }
        }
        _ => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg(3000))]

    /// Any string at all: never a panic, and the answer obeys the invariants.
    #[test]
    fn route_never_panics_on_arbitrary_strings(s in any::<String>(), slash in any::<bool>()) {
        let path = if slash { format!("/{s}") } else { s };
        let r = route(&path);
        check_route(&path, &r)?;
    }

    /// Paths built from real mirror segments, bad percent escapes, dot segments and noise.
    #[test]
    fn route_never_panics_on_path_soup(path in soup_path()) {
        let r = route(&path);
        check_route(&path, &r)?;
    }
}

/// Names a configuration accepts for a mirror: the server's own endpoints are refused.
fn mirror_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9._~-]{0,15}".prop_filter("reserved for the server's own endpoints", |m| {
        !odtr::config::RESERVED_NAMES.contains(&m.as_str())
    })
}

proptest! {
    #![proptest_config(cfg(2000))]

    /// Generated valid mirror paths (randomly percent-encoded, host in any case) route to
    /// exactly the mirror, address, version and digest they were made from.
    #[test]
    fn route_recovers_generated_mirror_paths(
        mirror in mirror_name(),
        host in provider_hostname(),
        ns in provider_label(),
        ty in provider_label(),
        version in semver_version(),
        hex in hex64(),
        file in "[a-zA-Z0-9._+-]{0,20}",
        kind in 0..3u8,
        plus_raw in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut bits = Bits(seed);
        let cased_host = random_case(&host, &mut bits);
        let prefix = format!(
            "/{}/{}/{}/{}",
            pct_mangle(&mirror, &mut bits),
            pct_mangle(&cased_host, &mut bits),
            pct_mangle(&ns, &mut bits),
            pct_mangle(&ty, &mut bits),
        );
        let mut v = pct_mangle(&format!("{version}.json"), &mut bits);
        if !plus_raw {
            v = v.replace('+', "%2B");
        }
        let path = match kind {
            0 => format!("{prefix}/{}", pct_mangle("index.json", &mut bits)),
            1 => format!("{prefix}/{v}"),
            _ => format!(
                "{prefix}/download/{}/{hex}/{}",
                pct_mangle("sha256", &mut bits),
                pct_mangle(&format!("{file}.zip"), &mut bits)
            ),
        };
        let want_addr = ProviderAddress {
            hostname: host.to_ascii_lowercase(),
            namespace: ns.to_ascii_lowercase(),
            type_name: ty.to_ascii_lowercase(),
        };
        let r = route(&path);
        check_route(&path, &r)?;
        if path.len() > MAX_PATH_LEN {
            return Ok(());
        }
        let want = match kind {
            0 => Route::MirrorIndex { mirror, addr: want_addr },
            1 => Route::MirrorVersion { mirror, addr: want_addr, version },
            _ => Route::MirrorDownload {
                mirror,
                addr: want_addr,
                digest: Digest::from_sha256_hex(&hex).unwrap(),
            },
        };
        prop_assert_eq!(r, Ok(want), "path {:?}", path);
    }
}

/// A repository name of the Distribution grammar (path components joined by `/`).
fn repository_name() -> impl Strategy<Value = String> {
    vec("[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-z0-9]{1,4}){0,2}", 1..5).prop_map(|c| c.join("/"))
}

proptest! {
    #![proptest_config(cfg(2000))]

    /// `/v2/` paths made from valid repository names (even ones with components named
    /// `manifests`, `blobs` or `tags`), tags and digests route to exactly those.
    #[test]
    fn route_recovers_registry_paths(
        name in prop_oneof![
            4 => repository_name(),
            1 => (repository_name(), select(&["manifests", "blobs", "tags", "v2", "list", "blobs/uploads"][..]))
                .prop_map(|(n, c)| format!("{n}/{c}/{n}")),
        ],
        tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}",
        hex in hex64(),
        kind in 0..4u8,
    ) {
        let digest = Digest::from_sha256_hex(&hex).unwrap();
        let (path, want) = match kind {
            0 => (format!("/v2/{name}/tags/list"), RegistryRoute::Tags { name: name.clone() }),
            1 => (
                format!("/v2/{name}/manifests/{tag}"),
                RegistryRoute::Manifest { name: name.clone(), reference: tag.clone() },
            ),
            2 => (
                format!("/v2/{name}/manifests/{digest}"),
                RegistryRoute::Manifest { name: name.clone(), reference: digest.to_string() },
            ),
            _ => (
                format!("/v2/{name}/blobs/{digest}"),
                RegistryRoute::Blob { name: name.clone(), digest: digest.clone() },
            ),
        };
        let r = route(&path);
        check_route(&path, &r)?;
        // Names longer than the grammar's 255 characters are refused.
        if name.len() <= 255 {
            prop_assert_eq!(r, Ok(Route::Registry(want)), "{}", path);
        } else {
            prop_assert!(r.is_err());
        }
    }
}

proptest! {
    #![proptest_config(cfg(300))]

    /// Long paths, many slashes, many escapes: `TooLong` exactly above the limit.
    #[test]
    fn route_handles_pathological_lengths(
        prefix in select(&["/m/h.io/a/b/", "/", "/m/h.io/a/b/download/sha256/", "//", "/%"][..]),
        filler in select(&["a", "/", "%", "%2e", ".", "%ff", "é", "a/"][..]),
        target in prop_oneof![
            0..3000usize,
            MAX_PATH_LEN - 20..MAX_PATH_LEN + 20,
            Just(MAX_PATH_LEN),
            Just(MAX_PATH_LEN + 1),
        ],
        suffix in select(&["", "index.json", "/1.0.0.json", "/f.zip"][..]),
    ) {
        // About `target` bytes long, so both sides of the limit are tried.
        let n = target.saturating_sub(prefix.len() + suffix.len()) / filler.len();
        let path = format!("{prefix}{}{suffix}", filler.repeat(n));
        let r = route(&path);
        check_route(&path, &r)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Range / If-None-Match / If-Range
// ---------------------------------------------------------------------------------------------

/// RFC 9110 §14 for one byte range, computed with unbounded (u128, saturating) numbers.
/// `overflow` says a number did not fit in u64; then ignoring the header (200, `Full`) is
/// also acceptable, as the RFC lets a server ignore `Range`.
struct RangeModel {
    choice: RangeChoice,
    overflow: bool,
}

fn range_model(header: Option<&str>, size: u64) -> RangeModel {
    use RangeChoice::*;
    let full = RangeModel {
        choice: Full,
        overflow: false,
    };
    let Some(h) = header else { return full };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return full;
    };
    let spec = spec.trim();
    // Several ranges: we may serve the whole representation instead.
    if spec.contains(',') {
        return full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u128> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u128>().unwrap_or(u128::MAX))
    };
    let (na, nb) = (num(a), num(b));
    let overflow = [na, nb].iter().flatten().any(|n| *n > u128::from(u64::MAX));
    let size128 = u128::from(size);
    let last = size.wrapping_sub(1);
    let choice = match (a.is_empty(), b.is_empty()) {
        (true, false) => match nb {
            None => Full,
            // A zero-length suffix, or any suffix of an empty representation.
            Some(0) => Unsatisfiable,
            Some(_) if size == 0 => Unsatisfiable,
            Some(n) => Partial {
                start: (size128 - n.min(size128)) as u64,
                end: last,
            },
        },
        (false, true) => match na {
            None => Full,
            Some(f) if f >= size128 => Unsatisfiable,
            Some(f) => Partial {
                start: f as u64,
                end: last,
            },
        },
        (false, false) => match (na, nb) {
            // last < first: an invalid range, so the header is ignored.
            (Some(f), Some(l)) if f > l => Full,
            (Some(f), Some(_)) if f >= size128 => Unsatisfiable,
            (Some(f), Some(l)) => Partial {
                start: f as u64,
                end: l.min(size128 - 1) as u64,
            },
            _ => Full,
        },
        (true, true) => Full,
    };
    RangeModel { choice, overflow }
}

fn range_num() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (0..400u64).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => select(&[
            "18446744073709551615",
            "18446744073709551614",
            "18446744073709551616",
            "99999999999999999999999999999999999999999999",
            "0",
            "00000000000000000000000000000000000000000001",
        ][..]).prop_map(str::to_owned),
        1 => (0..400u64, 1..4usize).prop_map(|(n, z)| format!("{}{n}", "0".repeat(z))),
    ]
}

fn ows() -> impl Strategy<Value = &'static str> {
    select(&["", "", "", " ", "  ", "\t"][..])
}

fn range_header() -> impl Strategy<Value = String> {
    let soup_char = select(&['0', '1', '5', '9', '-', '-', ',', ' ', '\t', 'x', '+', '='][..]);
    prop_oneof![
        4 => (ows(), range_num(), ows(), ows(), range_num(), ows())
            .prop_map(|(w1, a, w2, w3, b, w4)| format!("bytes={w1}{a}{w2}-{w3}{b}{w4}")),
        2 => (ows(), range_num(), ows()).prop_map(|(w1, a, w2)| format!("{w1}bytes={a}-{w2}")),
        2 => (range_num(), ows()).prop_map(|(b, w)| format!("bytes=-{b}{w}")),
        3 => vec(soup_char.clone(), 0..24)
            .prop_map(|cs| format!("bytes={}", cs.into_iter().collect::<String>())),
        1 => (
            select(&["bytes", "Bytes", "BYTES", "bytes ", "items", "", " bytes", "bytes=bytes"][..]),
            vec(soup_char, 0..12),
        )
            .prop_map(|(p, cs)| format!("{p}={}", cs.into_iter().collect::<String>())),
        1 => (1..2000usize, select(&["0-1,", ",", "-", "1-", "-1,"][..]))
            .prop_map(|(n, unit)| format!("bytes={}", unit.repeat(n))),
        1 => any::<String>(),
    ]
}

fn representation_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => 0..4u64,
        4 => 0..500u64,
        1 => any::<u64>(),
        1 => Just(u64::MAX),
    ]
}

proptest! {
    #![proptest_config(cfg(5000))]

    /// Any header and size: the range chosen lies within 0..size, and it is exactly what
    /// RFC 9110 asks for (suffix, open-ended, closed; unsatisfiable only when the first byte
    /// is past the end or the suffix is empty).
    #[test]
    fn choose_range_matches_rfc_model(
        header in option::weighted(0.95, range_header()),
        size in representation_size(),
    ) {
        let got = choose_range(header.as_deref(), size);
        if let RangeChoice::Partial { start, end } = got {
            prop_assert!(start <= end && end < size, "{got:?} for size {size}, header {header:?}");
        }
        let want = range_model(header.as_deref(), size);
        if want.overflow {
            prop_assert!(
                got == want.choice || got == RangeChoice::Full,
                "header {:?}, size {}: got {:?}, want {:?} (or Full)", header, size, got, want.choice
            );
        } else {
            prop_assert_eq!(got, want.choice, "header {:?}, size {}", header, size);
        }
    }
}

#[derive(Debug, Clone)]
enum TagItem {
    Ours,
    OursWeak,
    Star,
    Other(String),
}

fn tag_item() -> impl Strategy<Value = TagItem> {
    prop_oneof![
        2 => Just(TagItem::Ours),
        1 => Just(TagItem::OursWeak),
        1 => Just(TagItem::Star),
        2 => "\"[a-z0-9:]{0,10}\"".prop_map(TagItem::Other),
        1 => "W/\"[a-z0-9:]{0,10}\"".prop_map(TagItem::Other),
        // Not ours: no quotes, lower-case weak prefix, a different digest.
        1 => Just(TagItem::Other("OURS-UNQUOTED".into())),
        1 => Just(TagItem::Other("w/OURS".into())),
        1 => "[^,*]{0,10}".prop_map(TagItem::Other),
    ]
}

proptest! {
    #![proptest_config(cfg(3000))]

    /// `If-None-Match`: our tag (strong or weak, anywhere in the list) is `Tag`; otherwise
    /// `*` is `Any`; otherwise `No`. `If-Range` allows the range only for our strong tag.
    #[test]
    fn none_match_and_if_range_follow_the_rfc(
        hex in hex64(),
        items in vec(tag_item(), 0..6),
        seps in vec(select(&[",", ", ", " ,", " , ", ",,", ",\t"][..]), 6),
        lead in ows(),
        trail in ows(),
        random in any::<String>(),
    ) {
        let etag = format!("\"sha256:{hex}\"");
        let text = |i: &TagItem| match i {
            TagItem::Ours => etag.clone(),
            TagItem::OursWeak => format!("W/{etag}"),
            TagItem::Star => "*".to_owned(),
            TagItem::Other(s) => s
                .replace("OURS-UNQUOTED", &format!("sha256:{hex}"))
                .replace("OURS", &etag),
        };
        let mut header = lead.to_owned();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                header.push_str(seps[i]);
            }
            header.push_str(&text(item));
        }
        header.push_str(trail);
        let want = if items.iter().any(|i| matches!(i, TagItem::Ours | TagItem::OursWeak)) {
            NoneMatch::Tag
        } else if items.iter().any(|i| matches!(i, TagItem::Star)) {
            NoneMatch::Any
        } else {
            NoneMatch::No
        };
        prop_assert_eq!(none_match(Some(&header), &etag), want, "header {:?}", header);
        prop_assert_eq!(none_match(None, &etag), NoneMatch::No);
        let _ = none_match(Some(&random), &etag);

        for item in &items {
            let h = format!("{lead}{}{trail}", text(item));
            let want = matches!(item, TagItem::Ours);
            prop_assert_eq!(if_range_allows(Some(&h), &etag), want, "If-Range {:?}", h);
        }
        prop_assert!(if_range_allows(None, &etag));
        prop_assert!(!if_range_allows(Some("Wed, 21 Oct 2015 07:28:00 GMT"), &etag));
        prop_assert_eq!(if_range_allows(Some(&random), &etag), random.trim() == etag);
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration (HCL) and units
// ---------------------------------------------------------------------------------------------

const LIMITS_ATTRS: &[&str] = &[
    "max_request_header_bytes",
    "max_request_headers",
    "max_path_length",
    "header_read_timeout",
    "idle_timeout",
    "max_connections",
    "max_origin_fetches",
    "max_manifest_size",
    "max_tag_pages",
    "max_tags",
    "max_package_size",
    "origin_fetch_timeout",
    "origin_metadata_timeout",
];

const BLOCK_IDENTS: &[&str] = &[
    "server",
    "cache",
    "metadata_cache",
    "provider_mirror",
    "provider_mirror",
    "provider_mirror",
    "limits",
    "tls",
    "frobnicate",
];

const ATTR_NAMES: &[&str] = &[
    "listen_addr",
    "query_string_secret",
    "download_url_ttl",
    "offline",
    "directory",
    "max_size",
    "index_max_age",
    "stale_while_revalidate",
    "stale_if_error",
    "negative_ttl",
    "auth_ttl",
    "origin_url",
    "origin_url",
    "name_prefix",
    "proxy_packages",
    "public",
    "previous_query_string_secrets",
    "admin_listen_addr",
    "certificate_file",
    "private_key_file",
    "max_request_header_bytes",
    "max_request_headers",
    "max_path_length",
    "header_read_timeout",
    "idle_timeout",
    "max_connections",
    "max_origin_fetches",
    "max_manifest_size",
    "max_tag_pages",
    "max_tags",
    "max_package_size",
    "origin_fetch_timeout",
    "origin_metadata_timeout",
    "proxy_pakages",
    "x",
];

/// Quoted-string contents: durations, sizes, URLs, addresses, secrets, paths and junk.
/// Paths only ever point under a directory that does not exist.
const STRING_VALUES: &[&str] = &[
    "90s",
    "5m",
    "2h",
    "30d",
    "250ms",
    "0s",
    "1s",
    "86400s",
    "86401s",
    "1d",
    "2d",
    "forever",
    "18446744073709551615s",
    "18446744073709551615ms",
    "99999999999999999999d",
    "213503982334601d",
    "1.5h",
    "-1s",
    "10 s",
    " 5m ",
    "5",
    "m",
    "5 weeks",
    "10GiB",
    "16KiB",
    "4MiB",
    "4GiB",
    "1024",
    "7B",
    "10 MiB",
    "5 parsecs",
    "99999999999TiB",
    "GiB",
    "1kB",
    "http://127.0.0.1:5000",
    "http://127.0.0.1:5000/",
    "https://registry.example/prefix",
    "http://[::1]:1/",
    "ftp://x/",
    "http://u:p@h/",
    "http://h/?q=1",
    "http://h/#f",
    "http://",
    "not a url",
    "unix:/x",
    "0.0.0.0:8443",
    "[::]:443",
    "127.0.0.1:0",
    "127.0.0.1:99999",
    "nonsense",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
    "0123456789abcdef",
    "zz23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "terraform-providers/",
    "/terraform-providers/x/",
    "UPPER",
    "a//b",
    "/",
    "",
    "true",
    "/nonexistent-odtr-fuzz/cert.pem",
    "/nonexistent-odtr-fuzz/key.pem",
    "rel/cert.pem",
    "é",
    "${var.x}",
    "%{ if true }x%{ endif }",
    "\\n\\t\\\"\\\\",
    "\\u00e9\\U0001F600",
];

const RAW_VALUES: &[&str] = &[
    "true",
    "false",
    "null",
    "0",
    "1",
    "-1",
    "100",
    "1.5",
    "1e400",
    "18446744073709551616",
    "99999999999999999999999",
    "0x10",
    "[]",
    "[1, \"a\"]",
    "{}",
    "{ a = 1 }",
    "var.x",
    "local.y[0]",
    "file(\"x\")",
    "1 + 2",
    "true ? \"a\" : \"b\"",
    "<<EOT\nheredoc\nEOT\n",
    "<<-EOT\n  indented\n  EOT\n",
    "[for x in y : x]",
    "[\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"]",
    "[\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\", \"abc\"]",
    "[\"x\", 1]",
    "[\"127.0.0.1:8443\"]",
    "{ for k, v in m : k => v }",
    "a.*.b",
    "!true",
    "-(-1)",
];

const LABELS: &[&str] = &[
    "\"mirror\"",
    "\"mirror\"",
    "\"m\"",
    "\"m2\"",
    "m",
    "\"a/b\"",
    "\"v2\"",
    "\"metrics\"",
    "\"\"",
    "\".x\"",
    "\"_x\"",
    "\"ok~name\"",
    "\"é\"",
    "\"a b\"",
];

fn hcl_value() -> impl Strategy<Value = String> {
    prop_oneof![
        5 => select(STRING_VALUES).prop_map(|s| format!("\"{s}\"")),
        2 => select(RAW_VALUES).prop_map(str::to_owned),
        // Random quoted strings: escapes, interpolation starts, stray quotes. No '/', so no
        // path can name an existing file.
        2 => "[a-zA-Z0-9 .:_~@é\\\\\"${}%\t-]{0,16}".prop_map(|s| format!("\"{s}\"")),
        1 => "\\PC{0,10}",
    ]
}

fn hcl_attr(indent: &'static str) -> impl Strategy<Value = String> {
    (select(ATTR_NAMES), ows(), hcl_value())
        .prop_map(move |(k, w, v)| format!("{indent}{k}{w}={w}{v}\n"))
}

fn hcl_block() -> impl Strategy<Value = String> {
    let inner = (
        select(&["tls", "limits", "server", "x"][..]),
        vec(hcl_attr("    "), 0..4),
    )
        .prop_map(|(ident, attrs)| format!("  {ident} {{\n{}  }}\n", attrs.concat()));
    let labels = prop_oneof![
        2 => Just(Vec::new()),
        5 => vec(select(LABELS), 1..=1),
        1 => vec(select(LABELS), 2..3),
    ];
    (
        select(BLOCK_IDENTS),
        labels,
        vec(hcl_attr("  "), 0..7),
        vec(inner, 0..2),
    )
        .prop_map(|(ident, labels, attrs, inner)| {
            let mut s = String::from(ident);
            for l in labels {
                s.push(' ');
                s.push_str(l);
            }
            s.push_str(" {\n");
            s.push_str(&attrs.concat());
            s.push_str(&inner.concat());
            s.push_str("}\n");
            s
        })
}

/// The attributes each block takes.
fn block_attrs(ident: &str) -> &'static [&'static str] {
    match ident {
        "server" => &[
            "listen_addr",
            "admin_listen_addr",
            "query_string_secret",
            "previous_query_string_secrets",
            "download_url_ttl",
            "offline",
        ],
        "cache" => &["directory", "max_size"],
        "metadata_cache" => FRESHNESS,
        "provider_mirror" => &[
            "origin_url",
            "name_prefix",
            "proxy_packages",
            "public",
            "index_max_age",
            "stale_while_revalidate",
            "stale_if_error",
            "negative_ttl",
            "auth_ttl",
        ],
        "limits" => LIMITS_ATTRS,
        "tls" => &["certificate_file", "private_key_file"],
        _ => &["x"],
    }
}

const DURATION_TEXTS: &[&str] = &[
    "90s",
    "5m",
    "1h",
    "30d",
    "1s",
    "86400s",
    "1d",
    "2d",
    "600s",
    "601s",
    "3600s",
    "0s",
    "250ms",
    "999ms",
    "forever",
    "5",
    "5 weeks",
    "-1s",
    "18446744073709551615s",
    "99999999999999999999d",
];
const SIZE_TEXTS: &[&str] = &[
    "10GiB",
    "16KiB",
    "8KiB",
    "8191",
    "1MiB",
    "1048577",
    "4MiB",
    "64MiB",
    "65MiB",
    "1023",
    "4GiB",
    "1TiB",
    "2TiB",
    "0",
    "1024",
    "5 parsecs",
    "99999999999TiB",
    "",
];
const COUNT_TEXTS: &[&str] = &[
    "0",
    "1",
    "7",
    "8",
    "64",
    "100",
    "255",
    "256",
    "1000",
    "1001",
    "2048",
    "4096",
    "10000",
    "10001",
    "65536",
    "65537",
    "100000",
    "1000000",
    "1000001",
    "10000000",
    "99999999999",
    "-1",
    "\"100\"",
    "1.5",
    "1e3",
];

/// A value that fits the attribute most of the time (valid or out of range), else anything.
fn value_for(attr: &'static str) -> BoxedStrategy<String> {
    let q = |pool: &'static [&'static str]| select(pool).prop_map(|s| format!("\"{s}\"")).boxed();
    let fitting = match attr {
        "listen_addr" | "admin_listen_addr" => q(&[
            "127.0.0.1:8443",
            "0.0.0.0:8443",
            "[::]:443",
            "127.0.0.1:9000",
            "nonsense",
            "127.0.0.1:99999",
            "127.0.0.1",
        ]),
        "query_string_secret" => prop_oneof![
            4 => hex64().prop_map(|h| format!("\"{h}\"")),
            1 => q(&["abc", "", "0123456789abcdef"]),
        ]
        .boxed(),
        "previous_query_string_secrets" => {
            vec(prop_oneof![4 => hex64(), 1 => Just("abc".to_owned())], 0..3)
                .prop_map(|v| {
                    let items: Vec<String> = v.iter().map(|h| format!("\"{h}\"")).collect();
                    format!("[{}]", items.join(", "))
                })
                .boxed()
        }
        "offline" | "proxy_packages" | "public" => select(&["true", "false", "\"true\"", "1"][..])
            .prop_map(str::to_owned)
            .boxed(),
        "directory" => q(&["/nonexistent-odtr-fuzz/cache", "rel/cache", ""]),
        "origin_url" => q(&[
            "http://127.0.0.1:5000",
            "http://127.0.0.1:5000/",
            "https://registry.example/prefix",
            "http://[::1]:1/",
            "ftp://x/",
            "http://u:p@h/",
            "http://h/?q=1",
            "http://",
            "not a url",
        ]),
        "name_prefix" => q(&[
            "terraform-providers",
            "/terraform-providers/",
            "a/b/c",
            "UPPER",
            "a//b",
            "",
            "/",
        ]),
        "certificate_file" | "private_key_file" => {
            q(&["/nonexistent-odtr-fuzz/cert.pem", "rel/key.pem", ""])
        }
        a if a.ends_with("_ttl")
            || a.ends_with("_timeout")
            || a.ends_with("_age")
            || a.starts_with("stale_") =>
        {
            q(DURATION_TEXTS)
        }
        "max_size" | "max_request_header_bytes" | "max_manifest_size" | "max_package_size" => {
            q(SIZE_TEXTS)
        }
        a if LIMITS_ATTRS.contains(&a) => select(COUNT_TEXTS).prop_map(str::to_owned).boxed(),
        _ => hcl_value().boxed(),
    };
    prop_oneof![9 => fitting, 1 => hcl_value()].boxed()
}

/// A block of a known kind with attributes of that kind and fitting values: this reaches
/// every validation, not just the syntax checks.
fn tidy_block() -> impl Strategy<Value = String> {
    let kinds = &[
        "server",
        "cache",
        "metadata_cache",
        "provider_mirror",
        "provider_mirror",
        "limits",
    ][..];
    select(kinds)
        .prop_flat_map(|ident| {
            // Distinct attributes (hcl-edit refuses a repeated one as a syntax error), in any
            // order; a mirror almost always with its origin_url.
            let all = block_attrs(ident);
            let must = if ident == "provider_mirror" { 0.9 } else { 0.0 };
            let attrs = (
                proptest::sample::subsequence(all, 0..=all.len().min(6)),
                maybe(must, Just("origin_url")),
            )
                .prop_flat_map(|(mut names, origin)| {
                    if let Some(o) = origin {
                        if !names.contains(&o) {
                            names.push(o);
                        }
                    }
                    attr_lines(names, "  ")
                })
                .prop_shuffle();
            let label = if ident == "provider_mirror" {
                prop_oneof![
                    8 => select(&["\"mirror\"", "\"m1\"", "\"m2\"", "\"other-mirror\""][..]),
                    1 => select(LABELS),
                ]
                .boxed()
            } else {
                prop_oneof![9 => Just(""), 1 => select(LABELS)].boxed()
            };
            let tls = if ident == "server" {
                option::weighted(
                    0.2,
                    proptest::sample::subsequence(block_attrs("tls"), 0..=2)
                        .prop_flat_map(|names| attr_lines(names, "    "))
                        .prop_map(|a| format!("  tls {{\n{}  }}\n", a.concat())),
                )
                .boxed()
            } else {
                Just(None).boxed()
            };
            (Just(ident), label, attrs, tls)
        })
        .prop_map(|(ident, label, attrs, tls)| {
            let label = if label.is_empty() {
                String::new()
            } else {
                format!(" {label}")
            };
            format!(
                "{ident}{label} {{\n{}{}}}\n",
                attrs.concat(),
                tls.unwrap_or_default()
            )
        })
}

fn attr_lines(names: Vec<&'static str>, indent: &'static str) -> Vec<BoxedStrategy<String>> {
    names
        .into_iter()
        .map(|a| {
            value_for(a)
                .prop_map(move |v| format!("{indent}{a} = {v}\n"))
                .boxed()
        })
        .collect()
}

/// Near-valid HCL: tidy blocks around a valid mirror; tidy and vocabulary blocks mixed; or
/// vocabulary blocks with one character inserted or deleted, or cut short.
fn hcl_document() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (vec(tidy_block(), 0..5), any::<bool>()).prop_map(|(blocks, first)| {
            let base = "provider_mirror \"base\" {\n  origin_url = \"http://127.0.0.1:5000/\"\n}\n";
            if first {
                format!("{base}{}", blocks.concat())
            } else {
                format!("{}{base}", blocks.concat())
            }
        }),
        3 => vec(prop_oneof![tidy_block(), hcl_block()], 0..5).prop_map(|b| b.concat()),
        3 => hcl_mutated_document(),
    ]
}

fn hcl_mutated_document() -> impl Strategy<Value = String> {
    (
        vec(hcl_block(), 0..5),
        0..8u8,
        any::<Index>(),
        prop_oneof![
            any::<char>(),
            select(&['{', '}', '"', '=', '\n', '[', '$', '%', '\\', '#', '/', '*'][..])
        ],
    )
        .prop_map(|(blocks, mutation, at, c)| {
            let mut text = blocks.concat();
            let bounds: Vec<usize> = text
                .char_indices()
                .map(|(i, _)| i)
                .chain([text.len()])
                .collect();
            let pos = bounds[at.index(bounds.len())];
            match mutation {
                0 => text.insert(pos, c),
                1 => text.truncate(pos),
                2 if pos < text.len() => {
                    text.remove(pos);
                }
                _ => {}
            }
            text
        })
}

fn valid_mirror_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        && !name.starts_with('.')
        && !name.starts_with('_')
        && !["v2", "metrics", "healthz", "readyz", "admin"].contains(&name)
}

/// What any answer of `parse_config` must satisfy, whatever the text.
fn check_config_outcome(
    text: &str,
    r: &Result<Config, Vec<Diagnostic>>,
) -> Result<(), TestCaseError> {
    match r {
        Err(diags) => {
            prop_assert!(!diags.is_empty(), "an error without diagnostics");
            let lines = text.split('\n').count();
            for d in diags {
                prop_assert_eq!(&d.file, Path::new(CONFIG_PATH));
                prop_assert!(
                    d.line >= 1 && d.column >= 1 && d.line <= lines + 1,
                    "diagnostic outside the text ({} lines): {:?}",
                    lines,
                    d
                );
                prop_assert!(!d.message.is_empty());
            }
        }
        Ok(c) => {
            prop_assert_eq!(&c.source, Path::new(CONFIG_PATH));
            prop_assert!(!c.provider_mirrors.is_empty());
            let names: BTreeSet<&str> =
                c.provider_mirrors.iter().map(|m| m.name.as_str()).collect();
            prop_assert_eq!(
                names.len(),
                c.provider_mirrors.len(),
                "duplicate mirror names"
            );
            for m in &c.provider_mirrors {
                prop_assert!(valid_mirror_name(&m.name), "mirror name {:?}", m.name);
                let u = &m.origin_url;
                prop_assert!(u.scheme() == "http" || u.scheme() == "https", "{}", u);
                prop_assert!(u.host().is_some() && u.path().ends_with('/'), "{}", u);
                prop_assert!(u.query().is_none() && u.fragment().is_none(), "{}", u);
                prop_assert!(u.username().is_empty() && u.password().is_none(), "{}", u);
                prop_assert!(
                    m.name_prefix.is_empty()
                        || (!m.name_prefix.starts_with('/')
                            && !m.name_prefix.ends_with('/')
                            && is_valid_repository_name(&m.name_prefix)),
                    "name_prefix {:?}",
                    m.name_prefix
                );
            }
            let ttl = c.server.download_url_ttl;
            prop_assert!(ttl >= Duration::from_secs(1) && ttl <= Duration::from_secs(86400));
            prop_assert!(c.server.admin_listen_addr != Some(c.server.listen_addr));
            prop_assert!(
                c.server.previous_query_string_secrets.is_empty()
                    || c.server.query_string_secret.is_some()
            );
            // The documented ranges, and no limit of zero.
            let l = &c.limits;
            prop_assert!(
                (8192..=1 << 20).contains(&l.max_request_header_bytes),
                "{l:?}"
            );
            prop_assert!((8..=1000).contains(&l.max_request_headers), "{l:?}");
            prop_assert!((256..=65_536).contains(&l.max_path_length), "{l:?}");
            prop_assert!(
                l.max_connections > 0
                    && l.max_origin_fetches > 0
                    && l.max_manifest_size > 0
                    && l.max_tag_pages > 0
                    && l.max_tags > 0
                    && l.max_package_size > 0,
                "{l:?}"
            );
            for d in [
                l.header_read_timeout,
                l.idle_timeout,
                l.origin_fetch_timeout,
                l.origin_metadata_timeout,
            ] {
                prop_assert!(d >= Duration::from_secs(1), "{l:?}");
            }
        }
    }
    Ok(())
}

fn parse_cfg(text: &str) -> Result<Config, Vec<Diagnostic>> {
    parse_config(Path::new(CONFIG_PATH), text)
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// Any text at all (including control characters and invalid-UTF-8-turned-U+FFFD).
    #[test]
    fn config_never_panics_on_random_text(
        text in prop_oneof![
            any::<String>(),
            vec(any::<u8>(), 0..300).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            "[a-z_ \"{}=\\[\\]\n#/*${}%<>.,:0-9-]{0,200}",
        ],
    ) {
        let r = parse_cfg(&text);
        check_config_outcome(&text, &r)?;
    }
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// HCL made of the real block and attribute names (including `limits`) with values of
    /// every kind: valid, out of range, wrong type, templates, references, heredocs.
    #[test]
    fn config_never_panics_on_near_valid_hcl(text in hcl_document()) {
        let r = parse_cfg(&text);
        check_config_outcome(&text, &r)?;
    }
}

/// `(text, value)` for a duration of `secs` seconds, written in one of the units that can
/// express it exactly, with optional leading zeros and surrounding blanks.
fn duration_text(secs: u64, pick: usize, zeros: bool, blanks: bool) -> (String, Duration) {
    let mut forms = vec![format!("{}ms", secs * 1000), format!("{secs}s")];
    for (unit, n) in [("m", 60), ("h", 3600), ("d", 86400)] {
        if secs.is_multiple_of(n) {
            forms.push(format!("{}{unit}", secs / n));
        }
    }
    let mut t = forms[pick % forms.len()].clone();
    if zeros {
        t.insert_str(0, "00");
    }
    if blanks {
        t = format!(" {t} ");
    }
    (t, Duration::from_secs(secs))
}

fn duration_secs() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..200u64,
        (0..100u64).prop_map(|n| n * 60),
        (0..100u64).prop_map(|n| n * 3600),
        (0..400u64).prop_map(|n| n * 86400),
        0..10_000_000u64,
    ]
}

fn duration_value(min: u64, max: u64) -> impl Strategy<Value = (String, Duration)> {
    (
        prop_oneof![min..=max, Just(min), Just(max)],
        any::<usize>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(secs, pick, zeros, blanks)| duration_text(secs, pick, zeros, blanks))
}

const SIZE_UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("kB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

const DURATION_UNITS: &[(&str, u64)] = &[("s", 1), ("m", 60), ("h", 3600), ("d", 86400)];

#[derive(Debug, Clone)]
struct MirrorSpec {
    name: String,
    url_text: String,
    url_want: String,
    prefix_text: Option<String>,
    prefix_want: String,
    proxy: Option<bool>,
    public: Option<bool>,
    fresh: Overrides,
}

/// A freshness attribute's text and value; `None` for "forever".
type FreshnessValue = Option<(String, Duration)>;
type Overrides = Vec<(&'static str, FreshnessValue)>;

const FRESHNESS: &[&str] = &[
    "index_max_age",
    "stale_while_revalidate",
    "stale_if_error",
    "negative_ttl",
    "auth_ttl",
];

/// Freshness attributes: each absent or set (stale_if_error may be "forever", `None`).
fn freshness_overrides() -> impl Strategy<Value = Overrides> {
    vec(
        option::weighted(
            0.4,
            prop_oneof![
                4 => (duration_secs(), any::<usize>(), any::<bool>(), any::<bool>())
                    .prop_map(|(s, p, z, b)| Some(duration_text(s, p, z, b))),
                1 => Just(None),
            ],
        ),
        FRESHNESS.len(),
    )
    .prop_map(|v| {
        v.into_iter()
            .zip(FRESHNESS)
            .filter_map(|(o, k)| o.map(|d| (*k, d)))
            // Only stale_if_error can be "forever".
            .filter(|(k, d)| d.is_some() || *k == "stale_if_error")
            .collect()
    })
}

fn apply_overrides(base: FreshnessPolicy, o: &[(&'static str, FreshnessValue)]) -> FreshnessPolicy {
    let mut p = base;
    for (k, d) in o {
        let d = d.as_ref().map(|(_, d)| *d);
        match *k {
            "index_max_age" => p.index_max_age = d.unwrap(),
            "stale_while_revalidate" => p.stale_while_revalidate = d.unwrap(),
            "stale_if_error" => p.stale_if_error = d,
            "negative_ttl" => p.negative_ttl = d.unwrap(),
            "auth_ttl" => p.auth_ttl = d.unwrap(),
            _ => unreachable!(),
        }
    }
    p
}

fn freshness_lines(o: &[(&'static str, FreshnessValue)]) -> String {
    o.iter()
        .map(|(k, d)| match d {
            Some((t, _)) => format!("  {k} = \"{t}\"\n"),
            None => format!("  {k} = \"forever\"\n"),
        })
        .collect()
}

fn mirror_spec() -> impl Strategy<Value = MirrorSpec> {
    let repo_component = "[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?";
    (
        "[a-zA-Z0-9][a-zA-Z0-9_.~-]{0,10}",
        select(&["http", "https"][..]),
        select(&["127.0.0.1", "localhost", "registry.example", "[::1]"][..]),
        option::of(1024..65535u16),
        select(&["", "/", "/v2x", "/a/b/", "/a/b"][..]),
        option::of((vec(repo_component, 0..4), any::<bool>(), any::<bool>())),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        freshness_overrides(),
    )
        .prop_map(
            |(base, scheme, host, port, path, prefix, proxy, public, fresh)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                let url_text = format!("{scheme}://{host}{port}{path}");
                let path_want = if path.is_empty() {
                    "/".to_owned()
                } else if path.ends_with('/') {
                    path.to_owned()
                } else {
                    format!("{path}/")
                };
                let url_want = format!("{scheme}://{host}{port}{path_want}");
                let (prefix_text, prefix_want) = match prefix {
                    None => (None, String::new()),
                    Some((parts, lead, trail)) => {
                        let joined = parts.join("/");
                        let text = format!(
                            "{}{joined}{}",
                            if lead { "/" } else { "" },
                            if trail { "/" } else { "" }
                        );
                        (Some(text), joined)
                    }
                };
                MirrorSpec {
                    name: base,
                    url_text,
                    url_want,
                    prefix_text,
                    prefix_want,
                    proxy,
                    public,
                    fresh,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct ConfigSpec {
    listen: Option<String>,
    /// Always a port other than the main listener's.
    admin: Option<String>,
    secret: Option<([u8; 32], bool)>,
    /// Only written when there is a current secret.
    previous: Vec<[u8; 32]>,
    limits: Option<Vec<LimitSetting>>,
    ttl: Option<(String, Duration)>,
    offline: Option<bool>,
    cache_dir: Option<(String, PathBuf)>,
    max_size: Option<(String, u64)>,
    globals: Option<Overrides>,
    mirrors: Vec<MirrorSpec>,
}

fn config_spec() -> impl Strategy<Value = ConfigSpec> {
    let listen = option::of(
        (
            select(&["127.0.0.1", "0.0.0.0", "[::1]", "[::]"][..]),
            any::<u16>(),
        )
            .prop_map(|(h, p)| format!("{h}:{p}")),
    );
    let secret = option::of((any::<[u8; 32]>(), any::<bool>()));
    let admin =
        option::of((select(&["127.0.0.1", "[::1]"][..]), any::<u16>()).prop_map(|(h, p)| (h, p)));
    let cache_dir = option::of(prop_oneof![
        "[a-z]{1,8}(/[a-z]{1,8}){0,2}".prop_map(|p| {
            let want = Path::new(CONFIG_PATH).parent().unwrap().join(&p);
            (p, want)
        }),
        "(/[a-z]{1,8}){1,3}".prop_map(|p| (p.clone(), PathBuf::from(p))),
    ]);
    let max_size = option::of((0..100_000u64, select(SIZE_UNITS), ows()).prop_map(
        |(n, (unit, mult), w)| {
            let sp = if unit.is_empty() { "" } else { w };
            (format!("{n}{sp}{unit}"), n * mult)
        },
    ));
    (
        (listen, admin, secret, vec(any::<[u8; 32]>(), 0..3)),
        option::of(duration_value(1, 86400)),
        option::of(any::<bool>()),
        cache_dir,
        max_size,
        option::of(freshness_overrides()),
        option::of(limits_spec()),
        vec(mirror_spec(), 1..4),
    )
        .prop_map(
            |(
                (listen, admin, secret, previous),
                ttl,
                offline,
                cache_dir,
                max_size,
                globals,
                limits,
                mirrors,
            )| {
                let listen_port = listen.as_ref().map_or(8443, |l: &String| {
                    l.rsplit_once(':').unwrap().1.parse::<u16>().unwrap()
                });
                let admin = admin.map(|(h, p)| {
                    let p = if p == listen_port {
                        p.wrapping_add(1)
                    } else {
                        p
                    };
                    format!("{h}:{p}")
                });
                let previous = if secret.is_some() {
                    previous
                } else {
                    Vec::new()
                };
                ConfigSpec {
                    listen,
                    admin,
                    secret,
                    previous,
                    limits,
                    ttl,
                    offline,
                    cache_dir,
                    max_size,
                    globals,
                    mirrors,
                }
            },
        )
}

fn config_text(s: &ConfigSpec) -> String {
    let mut t = String::new();
    if s.listen.is_some()
        || s.admin.is_some()
        || s.secret.is_some()
        || s.ttl.is_some()
        || s.offline.is_some()
    {
        t.push_str("server {\n");
        if let Some(l) = &s.listen {
            let _ = writeln!(t, "  listen_addr = \"{l}\"");
        }
        if let Some(a) = &s.admin {
            let _ = writeln!(t, "  admin_listen_addr = \"{a}\"");
        }
        if !s.previous.is_empty() {
            let keys: Vec<String> = s
                .previous
                .iter()
                .map(|k| format!("\"{}\"", hex::encode(k)))
                .collect();
            let _ = writeln!(t, "  previous_query_string_secrets = [{}]", keys.join(", "));
        }
        if let Some((k, upper)) = &s.secret {
            let h = hex::encode(k);
            let h = if *upper { h.to_ascii_uppercase() } else { h };
            let _ = writeln!(t, "  query_string_secret = \"{h}\"");
        }
        if let Some((ttl, _)) = &s.ttl {
            let _ = writeln!(t, "  download_url_ttl = \"{ttl}\"");
        }
        if let Some(o) = s.offline {
            let _ = writeln!(t, "  offline = {o}");
        }
        t.push_str("}\n");
    }
    if s.cache_dir.is_some() || s.max_size.is_some() {
        t.push_str("cache {\n");
        if let Some((d, _)) = &s.cache_dir {
            let _ = writeln!(t, "  directory = \"{d}\"");
        }
        if let Some((m, _)) = &s.max_size {
            let _ = writeln!(t, "  max_size = \"{m}\"");
        }
        t.push_str("}\n");
    }
    if let Some(g) = &s.globals {
        let _ = write!(t, "metadata_cache {{\n{}}}\n", freshness_lines(g));
    }
    if let Some(l) = &s.limits {
        t.push_str(&limits_text(l));
    }
    for (i, m) in s.mirrors.iter().enumerate() {
        let _ = writeln!(t, "provider_mirror \"{}-{i}\" {{", m.name);
        let _ = writeln!(t, "  origin_url = \"{}\"", m.url_text);
        if let Some(p) = &m.prefix_text {
            let _ = writeln!(t, "  name_prefix = \"{p}\"");
        }
        if let Some(p) = m.proxy {
            let _ = writeln!(t, "  proxy_packages = {p}");
        }
        if let Some(p) = m.public {
            let _ = writeln!(t, "  public = {p}");
        }
        t.push_str(&freshness_lines(&m.fresh));
        t.push_str("}\n");
    }
    t
}

proptest! {
    #![proptest_config(cfg(300))]

    /// Valid configurations parse to exactly the values written: durations in every unit,
    /// sizes with every suffix, secrets in either case, URLs normalised to end in `/`,
    /// name prefixes trimmed, and freshness from mirror over `metadata_cache` over defaults.
    #[test]
    fn config_values_round_trip(spec in config_spec()) {
        let text = config_text(&spec);
        // A public mirror cannot also seal credentials into URLs: that one combination is
        // refused, naming both settings.
        let both = spec
            .mirrors
            .iter()
            .any(|m| m.public == Some(true) && m.proxy == Some(true));
        if both {
            let d = parse_cfg(&text).expect_err("public and proxy_packages together");
            prop_assert!(
                d.iter().any(|d| d.message.contains("public = true") && d.message.contains("proxy_packages")),
                "{:?}", d
            );
            return Ok(());
        }
        let c = match parse_cfg(&text) {
            Ok(c) => c,
            Err(d) => return Err(TestCaseError::fail(format!("{d:?}\nfor:\n{text}"))),
        };
        if let Some(l) = &spec.listen {
            prop_assert_eq!(c.server.listen_addr, l.parse::<SocketAddr>().unwrap());
        }
        prop_assert_eq!(
            c.server.admin_listen_addr,
            spec.admin.as_ref().map(|a| a.parse::<SocketAddr>().unwrap())
        );
        let previous: Vec<[u8; 32]> =
            c.server.previous_query_string_secrets.iter().map(|k| k.0).collect();
        prop_assert_eq!(previous, spec.previous.clone());
        prop_assert_eq!(&c.limits, &expected_limits(spec.limits.as_deref().unwrap_or_default()));
        match &spec.secret {
            Some((k, _)) => prop_assert_eq!(c.server.query_string_secret.as_ref().map(|s| s.0), Some(*k)),
            None => prop_assert!(c.server.query_string_secret.is_none()),
        }
        prop_assert_eq!(
            c.server.download_url_ttl,
            spec.ttl.as_ref().map_or(Duration::from_secs(180), |t| t.1)
        );
        prop_assert_eq!(c.server.offline, spec.offline.unwrap_or(false));
        prop_assert!(c.server.tls.is_none());
        if let Some((_, want)) = &spec.cache_dir {
            prop_assert_eq!(&c.cache.directory, want);
        }
        prop_assert_eq!(c.cache.max_size, spec.max_size.as_ref().map_or(10 << 30, |m| m.1));
        let global = apply_overrides(
            FreshnessPolicy::default(),
            spec.globals.as_deref().unwrap_or_default(),
        );
        prop_assert_eq!(c.provider_mirrors.len(), spec.mirrors.len());
        for (i, (got, want)) in c.provider_mirrors.iter().zip(&spec.mirrors).enumerate() {
            prop_assert_eq!(&got.name, &format!("{}-{i}", want.name));
            prop_assert_eq!(got.origin_url.as_str(), want.url_want.as_str());
            prop_assert_eq!(&got.name_prefix, &want.prefix_want);
            prop_assert_eq!(got.proxy_packages, want.proxy.unwrap_or(false));
            prop_assert_eq!(got.public, want.public.unwrap_or(false));
            prop_assert_eq!(got.freshness, apply_overrides(global, &want.fresh));
        }
    }
}

/// One `limits` attribute: its name, HCL text and value.
type LimitSetting = (&'static str, String, LimitValue);

#[derive(Debug, Clone, Copy)]
enum LimitValue {
    Bytes(u64),
    Count(u64),
    Secs(u64),
}

/// Each `limits` attribute: its kind and the values tried as valid. The ranges are the
/// README's where it documents one (including both ends), else half to twice the default.
const LIMIT_RANGES: &[(&str, char, u64, u64)] = &[
    ("max_request_header_bytes", 'b', 8 << 10, 1 << 20),
    ("max_request_headers", 'n', 8, 1000),
    ("max_path_length", 'n', 256, 65_536),
    ("header_read_timeout", 't', 5, 20),
    ("idle_timeout", 't', 30, 120),
    ("max_connections", 'n', 2048, 8192),
    ("max_origin_fetches", 'n', 32, 128),
    ("max_manifest_size", 'b', 2 << 20, 8 << 20),
    ("max_tag_pages", 'n', 500, 2000),
    ("max_tags", 'n', 50_000, 200_000),
    ("max_package_size", 'b', 2 << 30, 8 << 30),
    ("origin_fetch_timeout", 't', 15 * 60, 60 * 60),
    ("origin_metadata_timeout", 't', 30, 120),
];

fn limit_value(kind: char, lo: u64, hi: u64) -> BoxedStrategy<(String, LimitValue)> {
    let amount = prop_oneof![lo..=hi, Just(lo), Just(hi)];
    match kind {
        'b' => (amount, select(SIZE_UNITS), ows())
            .prop_map(move |(bytes, (unit, mult), w)| {
                // Express it in the unit when that is exact, else in bytes.
                let sp = if unit.is_empty() { "" } else { w };
                if bytes.is_multiple_of(mult) {
                    (
                        format!("\"{}{sp}{unit}\"", bytes / mult),
                        LimitValue::Bytes(bytes),
                    )
                } else {
                    (format!("\"{bytes}\""), LimitValue::Bytes(bytes))
                }
            })
            .boxed(),
        'n' => amount
            .prop_map(|n| (n.to_string(), LimitValue::Count(n)))
            .boxed(),
        _ => (amount, any::<usize>(), any::<bool>())
            .prop_map(|(secs, pick, blanks)| {
                let (t, _) = duration_text(secs, pick, false, blanks);
                (format!("\"{t}\""), LimitValue::Secs(secs))
            })
            .boxed(),
    }
}

fn limits_spec() -> impl Strategy<Value = Vec<LimitSetting>> {
    let attrs: Vec<BoxedStrategy<Option<LimitSetting>>> = LIMIT_RANGES
        .iter()
        .map(|&(a, kind, lo, hi)| {
            option::weighted(0.6, limit_value(kind, lo, hi))
                .prop_map(move |v| v.map(|(text, value)| (a, text, value)))
                .boxed()
        })
        .collect();
    attrs.prop_map(|v| v.into_iter().flatten().collect())
}

fn limits_text(l: &[LimitSetting]) -> String {
    let mut t = String::from("limits {\n");
    for (a, text, _) in l {
        let _ = writeln!(t, "  {a} = {text}");
    }
    t.push_str("}\n");
    t
}

/// The spec's defaults, with `set` applied.
fn expected_limits(set: &[LimitSetting]) -> Limits {
    let mut l = Limits {
        max_request_header_bytes: 16 << 10,
        max_request_headers: 100,
        max_path_length: 2048,
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 4096,
        max_origin_fetches: 64,
        max_manifest_size: 4 << 20,
        max_tag_pages: 1000,
        max_tags: 100_000,
        max_package_size: 4 << 30,
        origin_fetch_timeout: Duration::from_secs(30 * 60),
        origin_metadata_timeout: Duration::from_secs(60),
    };
    for (a, _, v) in set {
        let (n, d) = match *v {
            LimitValue::Bytes(n) | LimitValue::Count(n) => (n, Duration::ZERO),
            LimitValue::Secs(s) => (s, Duration::from_secs(s)),
        };
        match *a {
            "max_request_header_bytes" => l.max_request_header_bytes = n as usize,
            "max_request_headers" => l.max_request_headers = n as usize,
            "max_path_length" => l.max_path_length = n as usize,
            "header_read_timeout" => l.header_read_timeout = d,
            "idle_timeout" => l.idle_timeout = d,
            "max_connections" => l.max_connections = n as usize,
            "max_origin_fetches" => l.max_origin_fetches = n as usize,
            "max_manifest_size" => l.max_manifest_size = n,
            "max_tag_pages" => l.max_tag_pages = n as usize,
            "max_tags" => l.max_tags = n as usize,
            "max_package_size" => l.max_package_size = n,
            "origin_fetch_timeout" => l.origin_fetch_timeout = d,
            "origin_metadata_timeout" => l.origin_metadata_timeout = d,
            _ => unreachable!(),
        }
    }
    l
}

const MINIMAL_MIRROR: &str =
    "provider_mirror \"m\" {\n  origin_url = \"http://127.0.0.1:5000/\"\n}\n";

#[test]
fn limits_defaults_are_the_specified_ones() {
    assert_eq!(Limits::default(), expected_limits(&[]));
    assert_eq!(
        parse_cfg(MINIMAL_MIRROR).unwrap().limits,
        expected_limits(&[])
    );
    let empty = format!("limits {{\n}}\n{MINIMAL_MIRROR}");
    assert_eq!(parse_cfg(&empty).unwrap().limits, expected_limits(&[]));
}

proptest! {
    #![proptest_config(cfg(300))]

    /// Any subset of the `limits` attributes, with sizes in every unit, durations in every
    /// unit, counts, at the documented bounds and between: accepted, and read as written.
    #[test]
    fn config_limits_round_trip(set in limits_spec(), first in any::<bool>()) {
        let block = limits_text(&set);
        let text = if first {
            format!("{block}{MINIMAL_MIRROR}")
        } else {
            format!("{MINIMAL_MIRROR}{block}")
        };
        match parse_cfg(&text) {
            Ok(c) => prop_assert_eq!(c.limits, expected_limits(&set), "{}", text),
            Err(d) => prop_assert!(false, "rejected:\n{}\n{:?}", text, d),
        }
    }

    /// A wrong value for any `limits` attribute (wrong type, unknown unit, zero, overflow,
    /// just outside a documented range) is an error that names the attribute.
    #[test]
    fn config_rejects_invalid_limits_values(
        attr in select(LIMITS_ATTRS),
        pick in any::<Index>(),
    ) {
        let mut bad: Vec<&str> = if attr.ends_with("_timeout") {
            vec!["\"10\"", "\"5 weeks\"", "\"-1s\"", "\"s\"", "\"0s\"", "\"0ms\"", "\"99999999999999999999d\"", "true", "[]", "10"]
        } else if matches!(attr, "max_request_header_bytes" | "max_manifest_size" | "max_package_size") {
            vec!["\"5 parsecs\"", "\"\"", "\"KiB\"", "\"-1KiB\"", "\"0\"", "\"99999999999TiB\"", "true", "[]", "16384"]
        } else {
            vec!["\"many\"", "\"100\"", "0", "-1", "1.5", "true", "99999999999999999999999", "[]", "{}"]
        };
        bad.extend(match attr {
            "max_request_header_bytes" => &["\"8191\"", "\"7KiB\"", "\"1048577\"", "\"2MiB\""][..],
            "max_request_headers" => &["7", "1001"][..],
            "max_path_length" => &["255", "65537"][..],
            _ => &[][..],
        });
        let value = bad[pick.index(bad.len())];
        let text = format!("{MINIMAL_MIRROR}limits {{\n  {attr} = {value}\n}}\n");
        match parse_cfg(&text) {
            Ok(_) => prop_assert!(false, "accepted {attr} = {value}"),
            // hcl-edit itself rejects an integer literal too large for it.
            Err(d) => prop_assert!(
                d.iter().any(|d| d.line == 5
                    && (d.message.contains(attr) || d.message.starts_with("HCL syntax error"))),
                "no diagnostic on line 5 names {}: {:?}", attr, d
            ),
        }
    }
}

proptest! {
    #![proptest_config(cfg(3000))]

    /// Units never panic on any text; `format_size` never panics on any number.
    #[test]
    fn units_never_panic(text in prop_oneof![
        any::<String>(),
        "[0-9 ]{0,25}[a-zA-Z ]{0,4}",
        "[0-9]{15,30}(ms|s|m|h|d|B|KiB|MiB|GiB|TiB|KB|kB|MB|GB|TB)",
    ], n in any::<u64>()) {
        let _ = units::parse_size(&text);
        let _ = units::parse_duration(&text);
        let _ = units::format_size(n);
    }

    /// Every documented size suffix and duration unit gives n × unit, or an error exactly
    /// when that overflows.
    #[test]
    fn units_every_suffix_parses_to_its_value(
        n in prop_oneof![0..2000u64, any::<u64>(), (0..64u32).prop_map(|s| 1u64 << s), Just(u64::MAX)],
        size_unit in select(SIZE_UNITS),
        duration_unit in select(DURATION_UNITS),
        lead in ows(),
        mid in ows(),
        trail in ows(),
        zeros in 0..3usize,
    ) {
        let (unit, mult) = size_unit;
        let mid = if unit.is_empty() { "" } else { mid };
        let text = format!("{lead}{}{n}{mid}{unit}{trail}", "0".repeat(zeros));
        let got = units::parse_size(&text);
        match n.checked_mul(mult) {
            Some(v) => prop_assert_eq!(got, Ok(v), "{:?}", text),
            None => prop_assert!(got.is_err(), "{:?} → {:?}", text, got),
        }

        let (unit, secs) = duration_unit;
        let text = format!("{lead}{}{n}{unit}{trail}", "0".repeat(zeros));
        let got = units::parse_duration(&text);
        match n.checked_mul(secs) {
            Some(v) => prop_assert_eq!(got, Ok(Duration::from_secs(v)), "{:?}", text),
            None => prop_assert!(got.is_err(), "{:?} → {:?}", text, got),
        }
        let text = format!("{lead}{n}ms{trail}");
        prop_assert_eq!(units::parse_duration(&text), Ok(Duration::from_millis(n)));
        // A number alone is not a duration.
        prop_assert!(units::parse_duration(&n.to_string()).is_err());
    }

    /// `format_size` (the only formatter) is exact below 1 KiB, where it parses back, and
    /// otherwise within rounding of the value, in the largest unit that keeps it below 1024.
    #[test]
    fn format_size_is_consistent(n in prop_oneof![0..5000u64, any::<u64>()]) {
        let f = units::format_size(n);
        if n < 1024 {
            prop_assert_eq!(&f, &format!("{n} B"));
            prop_assert_eq!(units::parse_size(&f), Ok(n));
            return Ok(());
        }
        let (num, unit) = f.split_once(' ').unwrap();
        let k = ["KiB", "MiB", "GiB", "TiB"].iter().position(|u| *u == unit).unwrap() as i32 + 1;
        let shown: f64 = num.parse().unwrap();
        let exact = n as f64 / 1024f64.powi(k);
        prop_assert!((shown - exact).abs() <= 0.05 + 1e-9 * exact, "{n} → {f}");
        if k < 4 {
            prop_assert!(exact < 1024.0, "{n} → {f}");
        }
        prop_assert!(exact >= 1.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests, indexes, digests, repository names, tags; the layout classifier
// ---------------------------------------------------------------------------------------------

const MEDIA_TYPES: &[&str] = &[
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_EMPTY_JSON,
    SEED_CONFIG_MEDIA_TYPE,
    SEED_LAYER_MEDIA_TYPE,
    SEED_LAYER_MEDIA_TYPE,
    TOFU_LAYER_MEDIA_TYPE,
    TOFU_LAYER_MEDIA_TYPE,
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "",
];

const ARTIFACT_TYPES: &[&str] = &[
    TOFU_INDEX_ARTIFACT_TYPE,
    TOFU_TARGET_ARTIFACT_TYPE,
    TOFU_TARGET_ARTIFACT_TYPE,
    "application/vnd.dev.cosign.artifact.sig.v1+json",
    "",
];

const PLATFORM_TEXTS: &[&str] = &[
    "linux_amd64",
    "linux_arm64",
    "darwin_arm64",
    "windows_386",
    "linux_amd64, darwin_arm64",
    "linux_amd64,linux_amd64",
    " , linux_arm64 ,",
    "",
    "linux",
    "Linux_AMD64",
    "linux_",
    "_amd64",
    "linux_amd64_v8",
    "linux-amd64",
];

const VALID_PLATFORMS: &[&str] = &[
    "linux_amd64",
    "linux_arm64",
    "darwin_arm64",
    "windows_386",
    "freebsd_amd64",
];

const OS_ARCH: &[&str] = &[
    "linux", "linux", "darwin", "windows", "amd64", "arm64", "386", "", "Linux", "a_b", "x-y",
];

fn digest_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => hex64().prop_map(|h| format!("sha256:{h}")),
        // A few fixed digests, so that layers often share one.
        4 => select(&["aa", "bb", "cc"][..]).prop_map(|h| format!("sha256:{}", h.repeat(32))),
        1 => Just("sha256:abc".to_owned()),
        1 => hex64().prop_map(|h| format!("sha512:{h}")),
        1 => hex64().prop_map(|h| format!("sha256:{}", h.to_ascii_uppercase())),
        1 => Just(String::new()),
    ]
}

fn h1_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9+/]{43}".prop_map(|b| format!("h1:{b}=")),
        "[A-Za-z0-9+/]{42,44}=?".prop_map(|b| format!("h1:{b}")),
        "\\PC{0,50}",
        Just("h1:é".to_owned() + &"a".repeat(40) + "="),
    ]
}

/// Raw JSON number tokens serde_json cannot hold in a `Value`; written as placeholder strings
/// and substituted after serialisation.
const RAW_NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "-1",
    "-0",
    "1.0",
    "0.5",
    "1E2",
    "4294967296",
    "18446744073709551615",
];

fn raw_number() -> impl Strategy<Value = Value> {
    (0..RAW_NUMBERS.len()).prop_map(|i| Value::String(format!("\u{1}RAW{i}\u{1}")))
}

fn substitute_raw_numbers(mut text: String) -> String {
    for (i, tok) in RAW_NUMBERS.iter().enumerate() {
        text = text.replace(&format!("\"\\u0001RAW{i}\\u0001\""), tok);
    }
    text
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        raw_number(),
        select(MEDIA_TYPES).prop_map(|s| json!(s)),
        select(PLATFORM_TEXTS).prop_map(|s| json!(s)),
        digest_text().prop_map(Value::String),
        "\\PC{0,12}".prop_map(Value::String),
    ]
}

const JSON_KEYS: &[&str] = &[
    "schemaVersion",
    "mediaType",
    "artifactType",
    "config",
    "layers",
    "manifests",
    "annotations",
    "digest",
    "size",
    "platform",
    "os",
    "architecture",
    "variant",
    "subject",
    "urls",
    "tags",
    SEED_PLATFORMS_ANNOTATION,
    H1_ANNOTATION,
    "",
    "MediaType",
];

fn json_soup() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            btree_map(
                prop_oneof![select(JSON_KEYS).prop_map(str::to_owned), "\\PC{0,6}"],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A good value most of the time, sometimes missing, sometimes of any other shape.
/// A good value; with `chaos` 1 rarely, with 2 often, missing or of any other shape.
fn field(good: impl Strategy<Value = Value> + 'static, chaos: u8) -> BoxedStrategy<Option<Value>> {
    let good_weight = match chaos {
        0 => return good.prop_map(Some).boxed(),
        1 => 60,
        _ => 8,
    };
    prop_oneof![
        good_weight => good.prop_map(Some),
        1 => Just(None),
        1 => json_soup().prop_map(Some),
    ]
    .boxed()
}

fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
    let mut m = Map::new();
    for (k, v) in fields {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    }
    Value::Object(m)
}

/// A descriptor as JSON for `role` (`'c'` config, `'l'` layer, `'m'` index entry): below
/// chaos 2 shaped like what that role holds in the two provider layouts.
fn descriptor_json(chaos: u8, role: char) -> impl Strategy<Value = Value> {
    let annotations = btree_map(
        prop_oneof![
            4 => Just(SEED_PLATFORMS_ANNOTATION.to_owned()),
            2 => Just(H1_ANNOTATION.to_owned()),
            1 => Just(TITLE_ANNOTATION.to_owned()),
            1 => "\\PC{0,8}",
        ],
        prop_oneof![
            4 => select(PLATFORM_TEXTS).prop_map(|s| json!(s)),
            2 => h1_text().prop_map(Value::String),
            u32::from(chaos.min(1)) => json_leaf(),
        ],
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    let shaped = chaos < 2;
    // A package layer's annotations: mostly a valid platform list.
    let annotations = if shaped && role == 'l' {
        (
            maybe(
                0.9,
                prop_oneof![
                    4 => vec(select(VALID_PLATFORMS), 1..3).prop_map(|p| p.join(", ")),
                    1 => select(PLATFORM_TEXTS).prop_map(str::to_owned),
                ],
            ),
            maybe(0.4, h1_text()),
            maybe(0.2, "\\PC{0,8}"),
        )
            .prop_map(|(platforms, h1, title)| {
                object(vec![
                    (SEED_PLATFORMS_ANNOTATION, platforms.map(Value::String)),
                    (H1_ANNOTATION, h1.map(Value::String)),
                    (TITLE_ANNOTATION, title.map(Value::String)),
                ])
            })
            .boxed()
    } else {
        annotations.boxed()
    };
    let os = if shaped {
        prop_oneof![
            8 => select(&["linux", "darwin", "windows", "freebsd"][..]),
            1 => select(&["Linux", "", "a_b", "x-y"][..]),
        ]
        .boxed()
    } else {
        select(OS_ARCH).boxed()
    };
    let arch = if shaped {
        prop_oneof![
            8 => select(&["amd64", "arm64", "386", "arm"][..]),
            1 => select(&["AMD64", "", "a_b"][..]),
        ]
        .boxed()
    } else {
        select(OS_ARCH).boxed()
    };
    let platform = (
        field(os.prop_map(|s| json!(s)), chaos),
        field(arch.prop_map(|s| json!(s)), chaos),
        option::of(select(&["v8", ""][..]).prop_map(|s| json!(s))),
    )
        .prop_map(|(os, arch, variant)| {
            object(vec![
                ("os", os),
                ("architecture", arch),
                ("variant", variant),
            ])
        });
    let media: BoxedStrategy<&'static str> = match (shaped, role) {
        (true, 'c') => prop_oneof![
            3 => Just(SEED_CONFIG_MEDIA_TYPE),
            2 => Just(MEDIA_TYPE_EMPTY_JSON),
            1 => select(MEDIA_TYPES),
        ]
        .boxed(),
        (true, 'l') => prop_oneof![
            4 => Just(SEED_LAYER_MEDIA_TYPE),
            2 => Just(TOFU_LAYER_MEDIA_TYPE),
            1 => select(MEDIA_TYPES),
        ]
        .boxed(),
        (true, _) => prop_oneof![
            4 => Just(MEDIA_TYPE_OCI_MANIFEST),
            1 => select(MEDIA_TYPES),
        ]
        .boxed(),
        _ => select(MEDIA_TYPES).boxed(),
    };
    let artifact: BoxedStrategy<Option<Value>> = if shaped && role == 'm' {
        prop_oneof![
            4 => Just(Some(json!(TOFU_TARGET_ARTIFACT_TYPE))),
            1 => Just(None),
            1 => select(ARTIFACT_TYPES).prop_map(|s| Some(json!(s))),
        ]
        .boxed()
    } else {
        option::weighted(0.5, select(ARTIFACT_TYPES).prop_map(|s| json!(s))).boxed()
    };
    let platform_odds = if shaped && role == 'm' { 0.9 } else { 0.3 };
    (
        field(media.prop_map(|s| json!(s)), chaos),
        field(
            if chaos == 0 {
                prop_oneof![
                    4 => hex64().prop_map(|h| json!(format!("sha256:{h}"))),
                    1 => select(&["aa", "bb"][..]).prop_map(|h| json!(format!("sha256:{}", h.repeat(32)))),
                ]
                .boxed()
            } else {
                digest_text().prop_map(Value::String).boxed()
            },
            chaos,
        ),
        field(
            prop_oneof![
                4 => any::<u64>().prop_map(|n| json!(n)),
                4 => (0..1000u64).prop_map(|n| json!(n)),
                2 * u32::from(chaos.min(1)) => raw_number(),
            ],
            chaos,
        ),
        artifact,
        option::weighted(
            0.7,
            prop_oneof![9 => annotations, u32::from(chaos.min(1)) => json_soup()],
        ),
        option::weighted(
            platform_odds,
            prop_oneof![9 => platform, u32::from(chaos.min(1)) => json_soup()],
        ),
    )
        .prop_map(|(media, digest, size, artifact, annotations, platform)| {
            object(vec![
                ("mediaType", media),
                ("digest", digest),
                ("size", size),
                ("artifactType", artifact),
                ("annotations", annotations),
                ("platform", platform),
            ])
        })
}

/// A manifest or index as JSON, with the content type to parse it under. Chaos 0: well
/// formed, kind and content type consistent; 1: a rare field missing or of another shape;
/// 2: often, and kinds, media types and content types mixed at random.
fn manifest_json(chaos: u8) -> impl Strategy<Value = (Value, Option<String>)> {
    let index = any::<bool>();
    (index, content_type()).prop_flat_map(move |(index, random_ct)| {
        let shaped = chaos < 2;
        let media: BoxedStrategy<Option<Value>> = if shaped {
            let own: &'static [&'static str] = if index {
                &[MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST]
            } else {
                &[MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST]
            };
            option::weighted(0.7, select(own).prop_map(|s| json!(s))).boxed()
        } else {
            option::weighted(0.7, select(MEDIA_TYPES).prop_map(|s| json!(s))).boxed()
        };
        let artifact: BoxedStrategy<Option<Value>> = if shaped && index {
            prop_oneof![
                4 => Just(Some(json!(TOFU_INDEX_ARTIFACT_TYPE))),
                1 => option::of(select(ARTIFACT_TYPES).prop_map(|s| json!(s))),
            ]
            .boxed()
        } else {
            option::weighted(0.5, select(ARTIFACT_TYPES).prop_map(|s| json!(s))).boxed()
        };
        let (layers_odds, manifests_odds) = match (shaped, index) {
            (true, false) => (0.95, 0.0),
            (true, true) => (0.0, 0.95),
            _ => (0.7, 0.4),
        };
        let ct: BoxedStrategy<Option<String>> = if shaped {
            let own = if index {
                MEDIA_TYPE_OCI_INDEX
            } else {
                MEDIA_TYPE_OCI_MANIFEST
            };
            prop_oneof![
                Just(None),
                Just(Some(own.to_owned())),
                Just(Some(format!("{own}; charset=utf-8"))),
                Just(Some("application/json".to_owned())),
            ]
            .boxed()
        } else {
            Just(random_ct).boxed()
        };
        (
            field(
                prop_oneof![4 => Just(json!(2)), u32::from(chaos.min(1)) => raw_number()],
                chaos,
            ),
            media,
            artifact,
            maybe(
                if shaped && index { 0.0 } else { 1.0 },
                field(descriptor_json(chaos, 'c'), chaos),
            ),
            maybe(
                layers_odds,
                field(
                    vec(descriptor_json(chaos, 'l'), 0..5).prop_map(Value::Array),
                    chaos,
                ),
            ),
            maybe(
                manifests_odds,
                field(
                    vec(descriptor_json(chaos, 'm'), 0..5).prop_map(Value::Array),
                    chaos,
                ),
            ),
            maybe(if chaos == 0 { 0.0 } else { 0.2 }, json_soup()),
            ct,
        )
            .prop_map(
                |(schema, media, artifact, config, layers, manifests, annotations, ct)| {
                    let doc = object(vec![
                        ("schemaVersion", schema),
                        ("mediaType", media),
                        ("artifactType", artifact),
                        ("config", config.flatten()),
                        ("layers", layers.flatten()),
                        ("manifests", manifests.flatten()),
                        ("annotations", annotations),
                    ]);
                    (doc, ct)
                },
            )
    })
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    option::of(prop_oneof![
        select(
            &[
                MEDIA_TYPE_OCI_MANIFEST,
                MEDIA_TYPE_OCI_INDEX,
                MEDIA_TYPE_DOCKER_MANIFEST,
                MEDIA_TYPE_DOCKER_MANIFEST_LIST,
                "application/json",
                "",
                ";",
            ][..]
        )
        .prop_map(str::to_owned),
        select(&[MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_OCI_INDEX][..])
            .prop_map(|t| format!(" {t} ; charset=utf-8")),
        "\\PC{0,20}",
    ])
}

/// An independent reading of the two layouts, compared with `classify`.
fn check_classify(m: &Manifest) -> Result<(), TestCaseError> {
    let got = classify(m);
    match m {
        Manifest::Image(im) => {
            // Model: platform -> digest, or None for "not a provider".
            let seed_layers: Vec<&Descriptor> = im
                .layers
                .iter()
                .filter(|l| l.media_type == SEED_LAYER_MEDIA_TYPE)
                .collect();
            let mut want: Option<BTreeMap<String, Digest>> = Some(BTreeMap::new());
            if im.config.media_type != SEED_CONFIG_MEDIA_TYPE && seed_layers.is_empty() {
                want = None;
            }
            'layers: for l in &seed_layers {
                let Some(w) = want.as_mut() else { break };
                let Some(list) = l.annotations.get(SEED_PLATFORMS_ANNOTATION) else {
                    want = None;
                    break;
                };
                for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let ok = p.split_once('_').is_some_and(|(os, arch)| {
                        valid_platform_word(os) && valid_platform_word(arch)
                    });
                    if !ok {
                        want = None;
                        break 'layers;
                    }
                    if let Some(prev) = w.insert(p.to_owned(), l.digest.clone()) {
                        if prev != l.digest {
                            want = None;
                            break 'layers;
                        }
                    }
                }
            }
            let want = want.filter(|w| !w.is_empty());
            match (got, want) {
                (Ok(VersionLayout::Seed(pkgs)), Some(w)) => {
                    let got: BTreeMap<String, Digest> = pkgs
                        .iter()
                        .map(|p| (p.platform.to_string(), p.digest.clone()))
                        .collect();
                    prop_assert_eq!(got.len(), pkgs.len(), "repeated platform");
                    prop_assert_eq!(&got, &w);
                    for p in &pkgs {
                        let layer = seed_layers.iter().find(|l| l.digest == p.digest).unwrap();
                        prop_assert!(
                            seed_layers
                                .iter()
                                .any(|l| l.digest == p.digest && l.size == p.size),
                            "size {} of {:?}",
                            p.size,
                            layer
                        );
                        if let Some(h1) = &p.annotated_h1 {
                            prop_assert!(
                                h1.len() == 47 && h1.starts_with("h1:") && h1.ends_with('='),
                                "{h1:?}"
                            );
                        }
                    }
                }
                (Err(_), None) => {}
                (got, want) => {
                    prop_assert!(false, "classify {:?} but the model says {:?}", got, want)
                }
            }
        }
        Manifest::Index(ix) => {
            let mut want: Option<BTreeMap<String, Digest>> = Some(BTreeMap::new());
            if ix.artifact_type.as_deref() != Some(TOFU_INDEX_ARTIFACT_TYPE) {
                want = None;
            }
            for d in &ix.manifests {
                let Some(w) = want.as_mut() else { break };
                if d.artifact_type
                    .as_deref()
                    .is_some_and(|a| a != TOFU_TARGET_ARTIFACT_TYPE)
                {
                    continue;
                }
                let Some(p) = &d.platform else {
                    want = None;
                    break;
                };
                if !valid_platform_word(&p.os) || !valid_platform_word(&p.architecture) {
                    want = None;
                    break;
                }
                if w.insert(format!("{}_{}", p.os, p.architecture), d.digest.clone())
                    .is_some()
                {
                    want = None;
                    break;
                }
            }
            let want = want.filter(|w| !w.is_empty());
            match (got, want) {
                (Ok(VersionLayout::OpenTofu(targets)), Some(w)) => {
                    let got: BTreeMap<String, Digest> = targets
                        .iter()
                        .map(|(p, d)| (p.to_string(), d.digest.clone()))
                        .collect();
                    prop_assert_eq!(got.len(), targets.len());
                    prop_assert_eq!(&got, &w);
                    for (_, d) in &targets {
                        prop_assert!(ix.manifests.contains(d));
                    }
                }
                (Err(_), None) => {}
                (got, want) => {
                    prop_assert!(false, "classify {:?} but the model says {:?}", got, want)
                }
            }
        }
    }
    Ok(())
}

/// An independent reading of one OpenTofu per-platform manifest.
fn check_opentofu_package(im: &ImageManifest) -> Result<(), TestCaseError> {
    let platform = TargetPlatform::parse("linux_amd64").unwrap();
    let got = opentofu_package(platform.clone(), im);
    let zips: Vec<&Descriptor> = im
        .layers
        .iter()
        .filter(|l| l.media_type == TOFU_LAYER_MEDIA_TYPE)
        .collect();
    let ok_type = match im.artifact_type.as_deref() {
        Some(a) => a == TOFU_TARGET_ARTIFACT_TYPE,
        None => im.config.media_type == MEDIA_TYPE_EMPTY_JSON,
    };
    match (got, ok_type, zips.as_slice()) {
        (Ok(p), true, [one]) => {
            prop_assert_eq!(p.platform, platform);
            prop_assert_eq!(&p.digest, &one.digest);
            prop_assert_eq!(p.size, one.size);
        }
        (Err(_), false, _) => {}
        (Err(_), true, zips) if zips.len() != 1 => {}
        (got, ok_type, zips) => prop_assert!(
            false,
            "opentofu_package {:?}, but type ok = {}, {} zip layers",
            got,
            ok_type,
            zips.len()
        ),
    }
    Ok(())
}

fn check_manifest(m: &Manifest) -> Result<(), TestCaseError> {
    check_classify(m)?;
    if let Manifest::Image(im) = m {
        check_opentofu_package(im)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg(3000))]

    /// Any bytes under any content type.
    #[test]
    fn manifest_parse_never_panics_on_random_bytes(
        ct in content_type(),
        body in prop_oneof![
            vec(any::<u8>(), 0..200),
            any::<String>().prop_map(String::into_bytes),
            "[\\[\\]{}\",:0-9a-z ]{0,80}".prop_map(String::into_bytes),
        ],
    ) {
        if let Ok(m) = Manifest::parse(ct.as_deref(), &body) {
            check_manifest(&m)?;
        }
    }
}

proptest! {
    #![proptest_config(cfg(2000))]

    /// Manifest-shaped JSON with random, missing and wrong-typed fields and numbers no
    /// integer type holds; whatever parses is classified exactly as the model says.
    #[test]
    fn manifest_parse_and_classify_json_soup(
        (doc, ct) in prop_oneof![
            4 => prop_oneof![2 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)]
                .prop_flat_map(manifest_json),
            1 => (json_soup(), content_type()),
        ],
        cut in option::weighted(0.1, any::<Index>()),
    ) {
        let mut body = substitute_raw_numbers(serde_json::to_string(&doc).unwrap()).into_bytes();
        if let Some(cut) = cut {
            // Anywhere, even inside a UTF-8 sequence.
            let at = cut.index(body.len() + 1);
            body.truncate(at);
        }
        match Manifest::parse(ct.as_deref(), &body) {
            Ok(m) => check_manifest(&m)?,
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }
}

fn platform_struct() -> impl Strategy<Value = Platform> {
    (
        select(OS_ARCH),
        select(OS_ARCH),
        option::of("[a-z0-9]{0,3}"),
    )
        .prop_map(|(os, arch, variant)| Platform {
            os: os.to_owned(),
            architecture: arch.to_owned(),
            variant,
        })
}

fn descriptor_struct() -> impl Strategy<Value = Descriptor> {
    (
        prop_oneof![4 => select(MEDIA_TYPES).prop_map(str::to_owned), 1 => "\\PC{0,12}"],
        digest_text().prop_filter_map("valid digest", |d| Digest::parse(&d)),
        prop_oneof![0..1000u64, any::<u64>()],
        option::of(select(ARTIFACT_TYPES).prop_map(str::to_owned)),
        btree_map(
            prop_oneof![
                select(&[SEED_PLATFORMS_ANNOTATION, H1_ANNOTATION, TITLE_ANNOTATION][..])
                    .prop_map(str::to_owned),
                "\\PC{0,8}",
            ],
            prop_oneof![select(PLATFORM_TEXTS).prop_map(str::to_owned), h1_text()],
            0..3,
        ),
        option::of(platform_struct()),
    )
        .prop_map(
            |(media_type, digest, size, artifact_type, annotations, platform)| Descriptor {
                media_type,
                digest,
                size,
                artifact_type,
                annotations,
                platform,
            },
        )
}

fn annotations_struct() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("\\PC{0,8}", "\\PC{0,8}", 0..3)
}

#[derive(Debug, Clone)]
enum AnyManifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

fn manifest_struct() -> impl Strategy<Value = AnyManifest> {
    let image = (
        any::<u32>(),
        option::of(prop_oneof![
            select(&[MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST][..])
                .prop_map(str::to_owned),
            "[a-z/.+]{0,12}",
        ]),
        option::of(select(ARTIFACT_TYPES).prop_map(str::to_owned)),
        descriptor_struct(),
        vec(descriptor_struct(), 0..5),
        annotations_struct(),
    )
        .prop_map(
            |(schema_version, media_type, artifact_type, config, layers, annotations)| {
                AnyManifest::Image(ImageManifest {
                    schema_version,
                    media_type,
                    artifact_type,
                    config,
                    layers,
                    subject: None,
                    annotations,
                })
            },
        );
    let index = (
        any::<u32>(),
        option::of(prop_oneof![
            select(&[MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST][..])
                .prop_map(str::to_owned),
            "[a-z/.+]{0,12}",
        ]),
        option::of(select(ARTIFACT_TYPES).prop_map(str::to_owned)),
        vec(descriptor_struct(), 0..5),
        annotations_struct(),
    )
        .prop_map(
            |(schema_version, media_type, artifact_type, manifests, annotations)| {
                AnyManifest::Index(ImageIndex {
                    schema_version,
                    media_type,
                    artifact_type,
                    manifests,
                    annotations,
                })
            },
        );
    prop_oneof![image, index]
}

proptest! {
    #![proptest_config(cfg(1000))]

    /// Serialise any manifest or index and parse it back, with the content type declared,
    /// declared with parameters, vague, or absent: the same document comes back.
    #[test]
    fn manifest_round_trips(m in manifest_struct(), ct_pick in 0..4u8) {
        let (body, want, declared) = match &m {
            AnyManifest::Image(im) => (
                serde_json::to_vec(im).unwrap(),
                Manifest::Image(im.clone()),
                MEDIA_TYPE_OCI_MANIFEST,
            ),
            AnyManifest::Index(ix) => (
                serde_json::to_vec(ix).unwrap(),
                Manifest::Index(ix.clone()),
                MEDIA_TYPE_OCI_INDEX,
            ),
        };
        let ct = match ct_pick {
            0 => None,
            1 => Some(declared.to_owned()),
            2 => Some(format!("{declared}; charset=utf-8")),
            _ => Some("application/json".to_owned()),
        };
        let got = Manifest::parse(ct.as_deref(), &body);
        prop_assert_eq!(got.as_ref(), Ok(&want), "{}", String::from_utf8_lossy(&body));
        check_manifest(&want)?;
    }
}

/// A reference matcher for the Distribution repository name grammar
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, total ≤ 255.
fn model_repository_name(name: &str) -> bool {
    fn component(c: &[u8]) -> bool {
        // State machine: after an alnum run we may see a separator; a separator must be
        // followed by an alnum.
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let mut i = 0;
        let mut need_alnum = true;
        while i < c.len() {
            if alnum(c[i]) {
                need_alnum = false;
                i += 1;
                continue;
            }
            if need_alnum {
                return false;
            }
            let rest = &c[i..];
            let sep_len = if rest.starts_with(b"__") {
                2
            } else if rest[0] == b'_' || rest[0] == b'.' {
                1
            } else if rest[0] == b'-' {
                rest.iter().take_while(|b| **b == b'-').count()
            } else {
                return false;
            };
            i += sep_len;
            need_alnum = true;
        }
        !need_alnum
    }
    name.len() <= 255 && name.split('/').all(|c| component(c.as_bytes()))
}

fn model_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || first == '_')
        && tag.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

proptest! {
    #![proptest_config(cfg(4000))]

    /// Digests: accepted exactly when `sha256:` + 64 lower-case hex digits, and kept verbatim.
    #[test]
    fn digest_parse_is_exact(s in prop_oneof![
        any::<String>(),
        hex64().prop_map(|h| format!("sha256:{h}")),
        "(sha256|SHA256|sha512|sha256 |)[:]?[0-9a-fA-Fg ]{62,66}",
        (hex64(), any::<Index>(), any::<char>()).prop_map(|(h, i, c)| {
            let mut h = h;
            let at = i.index(h.len());
            h.replace_range(at..at + 1, &c.to_string());
            format!("sha256:{h}")
        }),
    ]) {
        let want = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        let got = Digest::parse(&s);
        prop_assert_eq!(got.is_some(), want, "{:?}", s);
        if let Some(d) = got {
            prop_assert_eq!(d.as_str(), s.as_str());
            prop_assert_eq!(d.hex(), &s[7..]);
            prop_assert_eq!(d.to_string(), s.clone());
            prop_assert_eq!(Digest::from_sha256_hex(d.hex()), Some(d.clone()));
            let json = serde_json::to_string(&d).unwrap();
            prop_assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        }
    }

    /// Repository names and tags agree with reference matchers of the spec's grammars.
    #[test]
    fn repository_names_and_tags_follow_the_grammar(s in prop_oneof![
        any::<String>(),
        "[a-z0-9._/-]{0,20}",
        "[a-z0-9._/A-]{0,12}",
        "[a-z0-9]{1,5}((\\.|_|__|-+|___|\\.\\.|_-)[a-z0-9]{1,5}){0,3}(/[a-z0-9]{1,5}){0,3}",
        "[a-zA-Z0-9_.+-]{0,10}",
        (1..140usize, select(&["a", "a/", "a-", "_", "ab/c"][..])).prop_map(|(n, u)| u.repeat(n)),
    ]) {
        prop_assert_eq!(is_valid_repository_name(&s), model_repository_name(&s), "{:?}", s);
        prop_assert_eq!(is_valid_tag(&s), model_tag(&s), "{:?}", s);
    }
}

// ---------------------------------------------------------------------------------------------
// WWW-Authenticate
// ---------------------------------------------------------------------------------------------

fn challenge_soup() -> impl Strategy<Value = String> {
    vec(
        select(
            &[
                "Bearer",
                "Basic",
                "bearer",
                " ",
                " ",
                ",",
                ",",
                "=",
                "=",
                "\"",
                "\"",
                "\\",
                "realm",
                "service",
                "scope",
                "error",
                "\"https://a/b\"",
                "é",
                "\t",
                "\\\"",
                "==",
                "x",
                "repository:a/b:pull,push",
                "\u{a0}",
                "\n",
            ][..],
        ),
        0..16,
    )
    .prop_map(|parts| parts.concat())
}

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9_.-]{0,10}"
}

proptest! {
    #![proptest_config(cfg(4000))]

    /// Any header: never a panic; a challenge exactly when there is a non-blank scheme;
    /// the scheme and every key lower-case, keys without separators.
    #[test]
    fn challenge_never_panics(h in prop_oneof![any::<String>(), challenge_soup()]) {
        let c = Challenge::parse(&h);
        prop_assert_eq!(c.is_some(), !h.trim().is_empty(), "{:?}", h);
        if let Some(c) = c {
            prop_assert!(!c.scheme.is_empty());
            prop_assert_eq!(&c.scheme, &c.scheme.to_ascii_lowercase());
            for k in c.params.keys() {
                prop_assert!(!k.is_empty() && !k.contains(['=', ',']) && !k.contains(char::is_whitespace), "{k:?}");
                prop_assert_eq!(k, &k.to_ascii_lowercase());
            }
        }
    }
}

proptest! {
    #![proptest_config(cfg(2000))]

    /// A challenge written with quoted (escaped) and token values, in any case and spacing,
    /// parses back to its scheme and parameters.
    #[test]
    fn challenge_round_trips(
        scheme in token(),
        params in vec((token(), prop_oneof![
            "\\PC{0,20}".prop_map(|v| (v, true)),
            "[A-Za-z0-9._~+/:-]{1,20}".prop_map(|v| (v, false)),
        ]), 0..5),
        seps in vec(select(&[",", ", ", " , ", ",,", ",\t"][..]), 5),
        first in select(&[" ", "  ", "\t"][..]),
        lead in ows(),
        trail in ows(),
        escape_all in any::<bool>(),
    ) {
        let mut seen = BTreeSet::new();
        let params: Vec<_> = params
            .into_iter()
            .filter(|(k, _)| seen.insert(k.to_ascii_lowercase()))
            .collect();
        let mut h = format!("{lead}{scheme}");
        for (i, (k, (v, quoted))) in params.iter().enumerate() {
            h.push_str(if i == 0 { first } else { seps[i] });
            let v = if *quoted {
                let mut q = String::from("\"");
                for c in v.chars() {
                    if c == '"' || c == '\\' || escape_all {
                        q.push('\\');
                    }
                    q.push(c);
                }
                q.push('"');
                q
            } else {
                v.clone()
            };
            let _ = write!(h, "{k}={v}");
        }
        h.push_str(trail);
        let c = Challenge::parse(&h).unwrap();
        prop_assert_eq!(&c.scheme, &scheme.to_ascii_lowercase());
        let want: std::collections::HashMap<String, String> = params
            .iter()
            .map(|(k, (v, _))| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        prop_assert_eq!(&c.params, &want, "header {:?}", h);
        prop_assert_eq!(c.is_bearer(), scheme.eq_ignore_ascii_case("bearer"));
    }
}

// ---------------------------------------------------------------------------------------------
// Version constraints; tag <-> version
// ---------------------------------------------------------------------------------------------

const CONSTRAINT_OPS: &[&str] = &["", "=", "!=", ">", ">=", "<", "<=", "~>"];
const PRE: &[&str] = &["alpha", "beta.1", "rc.2", "0", "beta", "1"];

#[derive(Debug, Clone)]
struct VersionText {
    text: String,
    full: semver::Version,
    parts: usize,
}

fn version_text() -> impl Strategy<Value = VersionText> {
    (
        0..5u64,
        0..5u64,
        0..5u64,
        1..=3usize,
        option::weighted(0.25, select(PRE)),
        option::weighted(0.15, select(&["b1", "build.5", "x-y"][..])),
    )
        .prop_map(|(a, b, c, parts, pre, build)| {
            let mut full = semver::Version::new(a, b, if parts == 3 { c } else { 0 });
            let minor = if parts >= 2 { b } else { 0 };
            full.minor = minor;
            let mut text = match parts {
                1 => format!("{a}"),
                2 => format!("{a}.{b}"),
                _ => format!("{a}.{b}.{c}"),
            };
            if parts == 3 {
                if let Some(p) = pre {
                    text.push('-');
                    text.push_str(p);
                    full.pre = semver::Prerelease::new(p).unwrap();
                }
                if let Some(b) = build {
                    text.push('+');
                    text.push_str(b);
                    full.build = semver::BuildMetadata::new(b).unwrap();
                }
            }
            // No leading `v`: Terraform refuses it ("a \"v\" prefix should not be used").
            VersionText { text, full, parts }
        })
}

#[derive(Debug, Clone)]
struct OneConstraint {
    op: &'static str,
    v: VersionText,
    text: String,
}

fn one_constraint() -> impl Strategy<Value = OneConstraint> {
    (select(CONSTRAINT_OPS), ows(), version_text()).prop_map(|(op, w, v)| OneConstraint {
        op,
        text: format!("{op}{w}{}", v.text),
        v,
    })
}

fn constraint_list() -> impl Strategy<Value = (Vec<OneConstraint>, String)> {
    (
        vec(one_constraint(), 1..4),
        vec(select(&[",", ", ", " , ", ",  "][..]), 3),
        ows(),
        ows(),
    )
        .prop_map(|(cs, seps, lead, trail)| {
            let mut t = lead.to_owned();
            for (i, c) in cs.iter().enumerate() {
                if i > 0 {
                    t.push_str(seps[i - 1]);
                }
                t.push_str(&c.text);
            }
            t.push_str(trail);
            (cs, t)
        })
}

fn sample_version() -> impl Strategy<Value = semver::Version> {
    (
        0..6u64,
        0..6u64,
        0..6u64,
        option::weighted(0.3, select(PRE)),
        option::weighted(0.2, select(&["b1", "build.5", "zz"][..])),
    )
        .prop_map(|(a, b, c, pre, build)| {
            let mut v = semver::Version::new(a, b, c);
            if let Some(p) = pre {
                v.pre = semver::Prerelease::new(p).unwrap();
            }
            if let Some(b) = build {
                v.build = semver::BuildMetadata::new(b).unwrap();
            }
            v
        })
}

fn without_build(v: &semver::Version) -> semver::Version {
    let mut v = v.clone();
    v.build = semver::BuildMetadata::EMPTY;
    v
}

/// Terraform's documented meaning of one constraint, for a release (non-pre-release) version.
fn model_allows_release(c: &OneConstraint, v: &semver::Version) -> bool {
    use std::cmp::Ordering::*;
    assert!(v.pre.is_empty());
    let x = without_build(&c.v.full);
    let cmp = without_build(v).cmp(&x);
    match c.op {
        "" | "=" => cmp == Equal,
        "!=" => cmp != Equal,
        ">" => cmp == Greater,
        ">=" => cmp != Less,
        "<" => cmp == Less,
        "<=" => cmp != Greater,
        "~>" => cmp != Less && v.major == x.major && (c.v.parts < 3 || v.minor == x.minor),
        _ => unreachable!(),
    }
}

proptest! {
    #![proptest_config(cfg(4000))]

    /// Any text, and soups of operators, versions, commas and spaces: never a panic.
    #[test]
    fn constraints_never_panic(s in prop_oneof![
        any::<String>(),
        vec(select(&[
            "~>", ">=", "<=", "!=", ">", "<", "=", "=>", " ", ",", ",", "1", "2.3", ".", "0.1.2",
            "-beta", "+b", "v", "x", "99999999999999999999", "-", "é",
        ][..]), 0..12).prop_map(|p| p.concat()),
    ], v in sample_version()) {
        if let Ok(c) = Constraints::parse(&s) {
            let _ = c.allows(&v);
            let n = c.normalized();
            prop_assert!(Constraints::parse(&n).is_ok(), "normalized {:?} of {:?} does not parse", n, s);
            let _ = c.to_string();
        }
    }
}

proptest! {
    #![proptest_config(cfg(2000))]

    /// Generated constraints parse; `normalized()` parses back to the same normalized text and
    /// the same answers on sampled versions (releases, pre-releases, build metadata).
    #[test]
    fn constraints_normalized_round_trip(
        (cs, text) in constraint_list(),
        samples in vec(sample_version(), 16),
    ) {
        let parsed = Constraints::parse(&text);
        prop_assert!(parsed.is_ok(), "{:?}: {:?}", text, parsed);
        let c = parsed.unwrap();
        let n = c.normalized();
        let c2 = Constraints::parse(&n);
        prop_assert!(c2.is_ok(), "normalized {:?} of {:?} does not parse: {:?}", n, text, c2);
        let c2 = c2.unwrap();
        prop_assert_eq!(c2.normalized(), n.clone(), "from {:?}", text);
        let mut samples = samples;
        samples.extend(cs.iter().map(|c| c.v.full.clone()));
        for v in &samples {
            prop_assert_eq!(c.allows(v), c2.allows(v), "{} vs {:?} (normalized {:?})", v, text, n);
        }
    }

    /// Terraform's semantics on release versions, per constraint and for the conjunction;
    /// pre-releases only when named exactly by an `=` constraint.
    #[test]
    fn constraints_follow_terraform_semantics(
        (cs, text) in constraint_list(),
        samples in vec(sample_version(), 16),
    ) {
        let all = Constraints::parse(&text).unwrap();
        let mut samples = samples;
        samples.extend(cs.iter().map(|c| c.v.full.clone()));
        for v in &samples {
            if v.pre.is_empty() {
                let mut every = true;
                for c in &cs {
                    let want = model_allows_release(c, v);
                    let got = Constraints::parse(&c.text).unwrap().allows(v);
                    prop_assert_eq!(got, want, "{:?} allows {}", c.text, v);
                    every &= want;
                }
                prop_assert_eq!(all.allows(v), every, "{:?} allows {}", text, v);
            } else if all.allows(v) {
                prop_assert!(
                    cs.iter().any(|c| matches!(c.op, "" | "=")
                        && without_build(&c.v.full) == without_build(v)),
                    "{:?} allows pre-release {} without naming it", text, v
                );
            }
        }
        // A pre-release named exactly (with either `=` or no operator) is allowed.
        for c in cs.iter().filter(|c| matches!(c.op, "" | "=") && !c.v.full.pre.is_empty()) {
            prop_assert!(Constraints::parse(&c.text).unwrap().allows(&c.v.full), "{:?}", c.text);
        }
    }

    /// Build metadata never takes part in comparisons (constraints.rs says so): adding,
    /// changing or removing it never changes an answer.
    #[test]
    fn constraints_ignore_build_metadata(
        (cs, text) in constraint_list(),
        sample in sample_version(),
        named in option::of(any::<Index>()),
        build in option::of(select(&["b1", "other", "001"][..])),
    ) {
        let c = Constraints::parse(&text).unwrap();
        // Often a version the constraints name, where the pre-release rule applies.
        let v = named.map_or(sample, |i| cs[i.index(cs.len())].v.full.clone());
        let mut w = v.clone();
        w.build = build.map_or(semver::BuildMetadata::EMPTY, |b| semver::BuildMetadata::new(b).unwrap());
        prop_assert_eq!(c.allows(&v), c.allows(&w), "{:?}: {} vs {}", text, v, w);
    }
}

proptest! {
    #![proptest_config(cfg(3000))]

    /// version -> tag -> version is the identity; tags of versions up to 128 characters
    /// are valid OCI tags; a tag without `+` that reads as a version is that version's tag.
    #[test]
    fn version_tag_round_trip(v in semver_version(), t in prop_oneof![
        any::<String>(),
        "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}([-_][0-9A-Za-z._-]{0,10})?",
    ]) {
        let tag = tag_for_version(&v);
        prop_assert_eq!(version_from_tag(&tag), Some(v.clone()), "tag {:?}", tag);
        prop_assert!(!tag.contains('+'));
        prop_assert_eq!(is_valid_tag(&tag), tag.len() <= 128, "tag {:?}", tag);
        if let Some(w) = version_from_tag(&t) {
            if !t.contains('+') {
                prop_assert_eq!(tag_for_version(&w), t.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Provider addresses, platforms, package names, registry URLs, docker config.json
// ---------------------------------------------------------------------------------------------

const ADDRESS_PARTS: &[&str] = &[
    "registry.terraform.io",
    "Registry.Terraform.IO",
    "h.io:8443",
    "h.io:0",
    "h.io:65536",
    "h.io:",
    "127.0.0.1",
    "[::1]",
    "bücher.example",
    "xn--bcher-kva.example",
    "xn--zz",
    "ex ample.com",
    "a..b",
    ".a",
    "a.",
    "-a.com",
    "abc.123",
    "ABC.123",
    "hashicorp",
    "HashiCorp",
    "aws",
    "a_b",
    "-a",
    "",
    "ＡＢＣ.com",
    "a\u{200b}b.com",
];

fn address_text() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            4 => select(ADDRESS_PARTS).prop_map(str::to_owned),
            2 => "[a-zA-Z0-9.-]{0,12}",
            1 => "\\PC{0,8}",
        ],
        0..5,
    )
    .prop_map(|p| p.join("/"))
}

proptest! {
    #![proptest_config(cfg(3000))]

    /// Address parsers (`ADDR`, `ADDR@CONSTRAINTS`, push's `HOST/NS/TYPE`): never a panic;
    /// what they accept is normalised, stable when normalised again, and reads back from
    /// its own display form.
    #[test]
    fn address_parsers_normalize(
        s in prop_oneof![address_text(), any::<String>()],
        at in option::weighted(0.3, prop_oneof![
            select(&[">= 1.0", "~> 2", "", "1.2.3", "nonsense", ">=1,<2"][..]).prop_map(str::to_owned),
            any::<String>(),
        ]),
    ) {
        if let Ok(a) = requirements::parse_address(&s) {
            assert_normalized_address(&a)?;
            prop_assert_eq!(requirements::parse_address(&a.to_string()).ok(), Some(a.clone()));
        }
        if let Ok(a) = push_parse_address(&s, None) {
            assert_normalized_address(&a)?;
            prop_assert_eq!(push_parse_address(&a.to_string(), None).ok(), Some(a.clone()));
        }
        let spec = match &at {
            Some(c) => format!("{s}@{c}"),
            None => s.clone(),
        };
        if let Ok(r) = requirements::parse_spec(&spec) {
            assert_normalized_address(&r.address)?;
            if !s.contains('@') {
                prop_assert_eq!(r.constraints.is_any(), at.is_none());
            }
        }
        let parts: Vec<&str> = s.split('/').collect();
        if let [h, n, t] = parts.as_slice() {
            if let Ok(a) = ProviderAddress::new(h, n, t) {
                assert_normalized_address(&a)?;
            }
        }
        let _ = parse_registry_url(&s);
        if let Some(p) = TargetPlatform::parse(&s) {
            prop_assert_eq!(p.to_string(), s.clone());
        }
        let _ = parse_package_name(&s);
    }

    /// A hostname means the same in any letter case: accepted in one case iff in every
    /// case, normalised to the same lower-case form.
    #[test]
    fn hostnames_are_case_insensitive(
        labels in vec("[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", 1..4),
        seed in any::<u64>(),
    ) {
        let host = labels.join(".");
        prop_assume!(!labels.iter().any(|l| l.starts_with("xn--")));
        let cased = random_case(&host, &mut Bits(seed));
        let upper = host.to_ascii_uppercase();
        let lower = ProviderAddress::new(&host, "a", "b");
        for other in [&cased, &upper] {
            let got = ProviderAddress::new(other, "a", "b");
            prop_assert_eq!(
                got.is_ok(), lower.is_ok(),
                "{:?} → {:?} but {:?} → {:?}", host, lower, other, got
            );
            if let (Ok(a), Ok(b)) = (&lower, &got) {
                prop_assert_eq!(a, b);
            }
        }
    }

    /// Package file names made from a type, a version and a platform read back as those.
    #[test]
    fn package_names_round_trip(
        ty in "[a-zA-Z0-9][a-zA-Z0-9-]{0,10}",
        v in semver_version(),
        os in "[a-z0-9]{1,8}",
        arch in "[a-z0-9]{1,8}",
        noise in any::<String>(),
    ) {
        let name = format!("terraform-provider-{ty}_{v}_{os}_{arch}.zip");
        let p = parse_package_name(&name).unwrap();
        prop_assert_eq!(p.type_name, Some(ty.to_ascii_lowercase()));
        prop_assert_eq!(p.version, Some(v.to_string()));
        prop_assert_eq!(p.platform.to_string(), format!("{os}_{arch}"));
        let _ = parse_package_name(&noise);
        let _ = parse_package_name(&format!("{noise}.zip"));
        let _ = parse_package_name(&format!("terraform-provider-{noise}.zip"));
    }
}

proptest! {
    #![proptest_config(cfg(1500))]

    /// docker `config.json`: any JSON never panics, in parsing or lookup; a stored
    /// `auth` of `user:pass` is found under its host in any case and with a scheme.
    #[test]
    fn docker_config_parses_and_looks_up(
        soup in json_soup(),
        host in "[a-z][a-z0-9.-]{0,12}(:[0-9]{1,5})?",
        user in "[^:]{0,10}",
        pass in "\\PC{0,10}",
        key_form in 0..3u8,
    ) {
        let text = substitute_raw_numbers(serde_json::to_string(&soup).unwrap());
        if let Ok(c) = DockerConfig::parse(&text) {
            let _ = c.lookup(&host, Path::new("/nonexistent/config.json"));
        }
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let key = match key_form {
            0 => host.clone(),
            1 => format!("https://{}", host.to_ascii_uppercase()),
            _ => format!("http://{host}/v1/"),
        };
        let text = json!({ "auths": { key: { "auth": auth } } }).to_string();
        let c = DockerConfig::parse(&text).unwrap();
        prop_assert_eq!(
            c.lookup(&host, Path::new("/x")).unwrap(),
            Lookup::Basic { username: user, password: pass }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Sealed download URLs
// ---------------------------------------------------------------------------------------------

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Binding parts as they occur: no NUL (mirror names, repositories and digests are validated
/// before they get here, and the encoding relies on it).
fn binding_part() -> impl Strategy<Value = String> {
    prop_oneof!["[^\\x00]{0,24}", "[a-z0-9/._-]{0,30}"]
}

fn credential() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), 0..100),
        1 => Just(Vec::new()),
        1 => (8100..=8192usize).prop_map(|n| vec![b'x'; n]),
    ]
}

proptest! {
    #![proptest_config(cfg(300))]

    /// seal then open with the same binding gives the credential back; every single-character
    /// change of the token, a cut or an extension, any change of the binding, and another key
    /// all fail with an error (never a panic, never a credential).
    #[test]
    fn sealed_urls_round_trip_and_resist_tampering(
        key in any::<[u8; 32]>(),
        other_key in any::<[u8; 32]>(),
        parts in (binding_part(), binding_part(), binding_part()),
        cred in credential(),
        changed_part in 0..3usize,
        replacement in binding_part(),
        seed in any::<u64>(),
        junk in select(&['=', '+', '/', ' ', '.', 'é', '\0', '%'][..]),
        at in any::<Index>(),
    ) {
        let sealer = UrlSealer::new(&key, Duration::from_secs(3600));
        let (m, r, d) = &parts;
        let b = Binding { mirror: m, repository: r, digest: d };
        let token = sealer.seal(&b, &cred).unwrap();
        prop_assert!(token.bytes().all(|c| B64URL.contains(&c)), "{token:?}");
        prop_assert_eq!(sealer.open(&b, &token), Ok(cred.clone()));

        let bytes = token.as_bytes();
        let mut bits = Bits(seed);
        // Every position of short tokens; 64 spread positions and the last three of long ones.
        let positions: Vec<usize> = if bytes.len() <= 400 {
            (0..bytes.len()).collect()
        } else {
            (0..64)
                .map(|k| k * bytes.len() / 64)
                .chain(bytes.len() - 3..bytes.len())
                .collect()
        };
        for i in positions {
            let orig = B64URL.iter().position(|c| *c == bytes[i]).unwrap();
            let new = B64URL[(orig + 1 + (bits.next() % 63) as usize) % 64];
            let mut t = bytes.to_vec();
            t[i] = new;
            let t = String::from_utf8(t).unwrap();
            prop_assert_eq!(sealer.open(&b, &t), Err(SealError::Invalid), "byte {} changed: {:?}", i, t);
        }
        let i = at.index(token.len());
        let mut t: String = token.clone();
        t.replace_range(i..i + 1, &junk.to_string());
        prop_assert_eq!(sealer.open(&b, &t), Err(SealError::Invalid));
        for t in [
            token[1..].to_owned(),
            token[..token.len() - 1].to_owned(),
            format!("{token}A"),
            format!("A{token}"),
        ] {
            prop_assert_eq!(sealer.open(&b, &t), Err(SealError::Invalid), "{:?}", t);
        }

        let mut changed = [m.clone(), r.clone(), d.clone()];
        if changed[changed_part] != replacement {
            changed[changed_part] = replacement;
            let b2 = Binding { mirror: &changed[0], repository: &changed[1], digest: &changed[2] };
            prop_assert_eq!(sealer.open(&b2, &token), Err(SealError::Invalid), "binding {:?}", changed);
        }
        if other_key != key {
            let other = UrlSealer::new(&other_key, Duration::from_secs(3600));
            prop_assert_eq!(other.open(&b, &token), Err(SealError::Invalid));
            // Rotation: a sealer with `key` among its previous secrets opens the token (and
            // nothing tampered); one without it does not; its new tokens need the new key.
            let third = [key[0] ^ 0x5a; 32];
            let rotated = UrlSealer::with_previous(
                &other_key,
                &[third, key],
                Duration::from_secs(3600),
            );
            prop_assert_eq!(rotated.open(&b, &token), Ok(cred.clone()));
            let mut t = token.clone().into_bytes();
            let i = at.index(t.len());
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(t).unwrap();
            prop_assert_eq!(rotated.open(&b, &t), Err(SealError::Invalid));
            let dropped = UrlSealer::with_previous(&other_key, &[third], Duration::from_secs(3600));
            if third != key {
                prop_assert_eq!(dropped.open(&b, &token), Err(SealError::Invalid));
            }
            let fresh = rotated.seal(&b, &cred).unwrap();
            prop_assert_eq!(sealer.open(&b, &fresh), Err(SealError::Invalid));
            prop_assert_eq!(dropped.open(&b, &fresh), Ok(cred.clone()));
        }
    }
}

proptest! {
    #![proptest_config(cfg(3000))]

    /// Arbitrary tokens (random text, base64 of random bytes around the minimum length,
    /// very long ones) never open and never panic; over-long credentials are refused.
    #[test]
    fn sealed_urls_reject_arbitrary_tokens(
        token in prop_oneof![
            any::<String>(),
            vec(any::<u8>(), 0..80).prop_map(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)),
            vec(any::<u8>(), 28..36).prop_map(|b| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)),
            vec(any::<u8>(), 0..64).prop_map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            (16380..16400usize).prop_map(|n| "A".repeat(n)),
        ],
        parts in (binding_part(), binding_part(), binding_part()),
        extra in 1..200usize,
    ) {
        let sealer = UrlSealer::new(&[9; 32], Duration::from_secs(3600));
        let (m, r, d) = &parts;
        let b = Binding { mirror: m, repository: r, digest: d };
        prop_assert_eq!(sealer.open(&b, &token), Err(SealError::Invalid), "{:?}", token);
        prop_assert_eq!(sealer.seal(&b, &vec![b'x'; 8192 + extra]), Err(SealError::TooLong));
    }
}

// ---------------------------------------------------------------------------------------------
// Pathological sizes
// ---------------------------------------------------------------------------------------------

/// Runs `f` on a thread with a 2 MiB stack: the size of tokio's worker and blocking-pool
/// threads, where the server parses manifests and, on SIGHUP, its configuration.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn manifests_survive_pathological_sizes() {
    on_small_stack(|| {
        let cts = [
            None,
            Some(MEDIA_TYPE_OCI_MANIFEST),
            Some(MEDIA_TYPE_OCI_INDEX),
        ];
        let deep = |open: &str, close: &str, n: usize| {
            format!("{}1{}", open.repeat(n), close.repeat(n)).into_bytes()
        };
        let bodies: Vec<Vec<u8>> = vec![
            deep("[", "]", 100_000),
            deep("{\"a\":", "}", 100_000),
            format!(
                "{{\"schemaVersion\":2,\"manifests\":{}}}",
                String::from_utf8(deep("[", "]", 50_000)).unwrap()
            )
            .into_bytes(),
            format!(
                "{{\"schemaVersion\":2,\"config\":{{\"annotations\":{}}}}}",
                String::from_utf8(deep("{\"a\":", "}", 50_000)).unwrap()
            )
            .into_bytes(),
            format!("[{}]", ",".repeat(200_000)).into_bytes(),
            format!("{{\"layers\":[{}]}}", ",".repeat(200_000)).into_bytes(),
            vec![b' '; 1 << 20],
            format!("\"{}\"", "a".repeat(1 << 20)).into_bytes(),
            format!("{{\"mediaType\":\"{}\"}}", "\\u0000".repeat(100_000)).into_bytes(),
        ];
        for body in &bodies {
            for ct in cts {
                assert!(
                    Manifest::parse(ct, body).is_err(),
                    "{} bytes accepted",
                    body.len()
                );
            }
        }

        // Very many layers and platforms: parses and classifies.
        let layer = |i: usize| {
            format!(
                r#"{{"mediaType":"{SEED_LAYER_MEDIA_TYPE}","digest":"sha256:{:064x}","size":{i},"annotations":{{"{SEED_PLATFORMS_ANNOTATION}":"os{i}_arch{}"}}}}"#,
                i,
                ",".repeat(i % 3)
            )
        };
        let layers: Vec<String> = (0..20_000).map(layer).collect();
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{SEED_CONFIG_MEDIA_TYPE}","digest":"sha256:{}","size":2}},"layers":[{}]}}"#,
            "0".repeat(64),
            layers.join(",")
        );
        let m = Manifest::parse(None, body.as_bytes()).unwrap();
        let VersionLayout::Seed(pkgs) = classify(&m).unwrap() else {
            panic!("not seed")
        };
        assert_eq!(pkgs.len(), 20_000);
        // One platform list with 100 000 commas.
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{SEED_CONFIG_MEDIA_TYPE}","digest":"sha256:{}","size":2}},"layers":[{{"mediaType":"{SEED_LAYER_MEDIA_TYPE}","digest":"sha256:{}","size":1,"annotations":{{"{SEED_PLATFORMS_ANNOTATION}":"{}linux_amd64"}}}}]}}"#,
            "0".repeat(64),
            "1".repeat(64),
            ", ".repeat(100_000)
        );
        let m = Manifest::parse(None, body.as_bytes()).unwrap();
        assert!(matches!(classify(&m), Ok(VersionLayout::Seed(p)) if p.len() == 1));
    });
}

#[test]
fn small_parsers_survive_pathological_sizes() {
    on_small_stack(|| {
        let long = "a".repeat(1 << 20);
        let commas = ",".repeat(1 << 20);
        let range = format!("bytes={}", "0-1,".repeat(100_000));
        for h in [
            &long,
            &commas,
            &range,
            &format!("bytes=-{long}"),
            &format!("bytes={}-", "9".repeat(100_000)),
        ] {
            assert!(matches!(
                choose_range(Some(h), 1000),
                RangeChoice::Full | RangeChoice::Unsatisfiable
            ));
            assert_eq!(none_match(Some(h), "\"x\""), NoneMatch::No);
        }
        assert_eq!(
            choose_range(Some(&format!("bytes=-{}", "9".repeat(100_000))), 1000),
            RangeChoice::Full
        );
        let etag = format!("\"sha256:{}\"", "a".repeat(64));
        let many = format!("{}{etag}", "\"x\", ".repeat(100_000));
        assert_eq!(none_match(Some(&many), &etag), NoneMatch::Tag);

        for p in [
            format!("/{}", "a/".repeat(1023)),
            format!("/{}", "%".repeat(MAX_PATH_LEN - 1)),
            format!("/{}", "/".repeat(MAX_PATH_LEN - 1)),
            format!("/{}", "/".repeat(MAX_PATH_LEN)),
            format!("/{long}"),
        ] {
            let r = route(&p);
            assert_eq!(
                matches!(r, Err(RouteError::TooLong(_))),
                p.len() > MAX_PATH_LEN,
                "{r:?}"
            );
        }

        let challenge = format!("Bearer {}", "realm=\"x\",".repeat(100_000));
        assert_eq!(Challenge::parse(&challenge).unwrap().params.len(), 1);
        let challenge = format!("Bearer realm=\"{}", "\\".repeat(100_001));
        assert!(Challenge::parse(&challenge).is_some());
        let challenge = format!("Bearer {}", ",".repeat(1 << 20));
        assert!(Challenge::parse(&challenge).unwrap().params.is_empty());

        assert!(Constraints::parse(&">= 1.0, ".repeat(50_000)).is_err());
        let many = vec![">= 1.0"; 50_000].join(", ");
        let c = Constraints::parse(&many).unwrap();
        assert_eq!(c.normalized(), ">= 1.0.0");
        assert!(Constraints::parse(&format!(">= {}", "9".repeat(100_000))).is_err());
        assert!(Constraints::parse(&commas).is_err());

        assert!(units::parse_size(&"9".repeat(100_000)).is_err());
        assert!(units::parse_duration(&format!("{}s", "9".repeat(100_000))).is_err());
        assert!(version_from_tag(&long).is_none());
        assert!(Digest::parse(&long).is_none());
        assert!(!is_valid_repository_name(&long));
        assert!(!is_valid_tag(&long));
        assert!(requirements::parse_address(&"a/".repeat(100_000)).is_err());
        assert!(parse_package_name(&format!("{}.zip", "_".repeat(100_000))).is_err());
    });
}

#[test]
fn config_survives_long_inputs() {
    // A long string value, a long comment, many blocks, many errors: all bounded, every
    // error reported with its own line.
    // Up to the 1 MiB size limit a file is parsed; past it, refused unread with a message.
    let long_value = format!(
        "provider_mirror \"m\" {{\n  origin_url = \"http://h/{}\"\n}}\n",
        "a".repeat(1000 * 1000)
    );
    assert!(parse_cfg(&long_value).is_ok());
    let comment = format!("# {}\n{MINIMAL_MIRROR}", "x".repeat(1000 * 1000));
    assert!(parse_cfg(&comment).is_ok());
    let too_long = format!("# {}\n{MINIMAL_MIRROR}", "x".repeat(1 << 20));
    let d = parse_cfg(&too_long).expect_err("over the size limit");
    assert!(d[0].message.contains("larger than"), "{d:?}");
    let many_mirrors: String = (0..2000)
        .map(|i| format!("provider_mirror \"m{i}\" {{\n  origin_url = \"http://h/\"\n}}\n"))
        .collect();
    assert_eq!(
        parse_cfg(&many_mirrors).unwrap().provider_mirrors.len(),
        2000
    );
    let n = 2000;
    let many_errors = format!(
        "provider_mirror \"m\" {{\n  origin_url = \"http://h/\"\n{}}}\n",
        (0..n)
            .map(|i| format!("  unknown_{i} = 1\n"))
            .collect::<String>()
    );
    let diags = parse_cfg(&many_errors).unwrap_err();
    assert_eq!(diags.len(), n);
    for (i, d) in diags.iter().enumerate() {
        assert_eq!((d.line, d.column), (i + 3, 3), "{d}");
    }
    let commas = format!("{MINIMAL_MIRROR}x = [{}]\n", "1,".repeat(100_000));
    assert!(parse_cfg(&commas).is_err());
}

// ---------------------------------------------------------------------------------------------
// Deep nesting: in child processes, because a stack overflow aborts the process
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "ODTR_FUZZ_PARSERS_NESTING_CHILD";

/// `kind:depth` → text nested `depth` deep.
fn nested_text(kind: &str, depth: usize) -> String {
    match kind {
        // An attribute value: a tuple, an object, parentheses, a template in a template,
        // unary operators, a heredoc of templates.
        "tuple" => format!(
            "{MINIMAL_MIRROR}x = {}1{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        "object" => format!(
            "{MINIMAL_MIRROR}x = {}1{}\n",
            "{a = ".repeat(depth),
            "}".repeat(depth)
        ),
        "parens" => format!(
            "{MINIMAL_MIRROR}x = {}1{}\n",
            "(".repeat(depth),
            ")".repeat(depth)
        ),
        "template" => format!(
            "{MINIMAL_MIRROR}x = \"{}{}\"\n",
            "${\"".repeat(depth),
            "\"}".repeat(depth)
        ),
        "unary" => format!("{MINIMAL_MIRROR}x = {}1\n", "!-".repeat(depth)),
        // Blocks in blocks.
        "blocks" => format!(
            "{MINIMAL_MIRROR}{}{}",
            "server {\n".repeat(depth),
            "}\n".repeat(depth)
        ),
        // The value of a real attribute.
        "origin_url" => format!(
            "provider_mirror \"m\" {{\n  origin_url = {}\"http://h/\"{}\n}}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        _ => unreachable!("{kind}"),
    }
}

/// The child: parses one nested text on a 2 MiB stack and says so on stdout.
#[test]
fn nesting_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (kind, depth) = spec.split_once(':').unwrap();
    let kind = kind.to_owned();
    let depth: usize = depth.parse().unwrap();
    let ok = on_small_stack(move || {
        if let Some(kind) = kind.strip_prefix("lock-") {
            // The same text as a .terraform.lock.hcl, read by `warm` and `lock`.
            let dir = tempfile::tempdir().unwrap();
            let lock = dir.path().join(".terraform.lock.hcl");
            std::fs::write(&lock, nested_text(kind, depth)).unwrap();
            let _ = requirements::from_lock_file(&lock);
            std::fs::write(dir.path().join("main.tf"), nested_text(kind, depth)).unwrap();
            let _ = requirements::from_config_dir(dir.path());
            true
        } else {
            parse_cfg(&nested_text(&kind, depth)).is_err()
        }
    });
    assert!(ok, "{spec}: parsed without an error");
    println!("NESTING-CHILD-OK {spec}");
}

fn run_nesting_child(spec: &str, deadline: Instant) -> Result<(), String> {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "nesting_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{spec}: still running at the deadline"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    if status.success() && out.contains("NESTING-CHILD-OK") {
        Ok(())
    } else {
        let last = |s: &str| s.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        Err(format!(
            "{spec}: {status}; stderr: {}; stdout: {}",
            last(&err),
            last(&out)
        ))
    }
}

/// Deeply nested HCL (configuration, lock files, .tf files) is an error, not a crash: a
/// stack overflow aborts the process, which for a SIGHUP reload means the running server.
#[test]
fn deeply_nested_hcl_is_an_error_not_a_crash() {
    let mut failures = Vec::new();
    // All 27 children share one deadline; each normally takes a few milliseconds.
    let deadline = Instant::now() + Duration::from_secs(60);
    for kind in [
        "tuple",
        "object",
        "parens",
        "template",
        "unary",
        "blocks",
        "origin_url",
        "lock-tuple",
        "lock-blocks",
    ] {
        for depth in [64, 5_000, 100_000] {
            if let Err(e) = run_nesting_child(&format!("{kind}:{depth}"), deadline) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 27 nested inputs crashed or hung:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Regression cases: the minimal failing inputs proptest found, kept as plain tests
// ---------------------------------------------------------------------------------------------

/// From `constraints_ignore_build_metadata`: the pre-release rule ("only when named exactly")
/// compares build metadata, unlike every other comparison (src/provider/constraints.rs,
/// `Constraints::allows`, `c.version == *v`).
#[test]
fn regression_named_prerelease_with_build_metadata() {
    let c = Constraints::parse("0.0.0-alpha").unwrap();
    let plain = semver::Version::parse("0.0.0-alpha").unwrap();
    let with_build = semver::Version::parse("0.0.0-alpha+b1").unwrap();
    assert!(c.allows(&plain));
    assert_eq!(
        c.allows(&with_build),
        c.allows(&plain),
        "0.0.0-alpha allows 0.0.0-alpha but not 0.0.0-alpha+b1"
    );
    // As for releases, where build metadata is ignored:
    let c = Constraints::parse("1.2.3").unwrap();
    assert!(c.allows(&semver::Version::parse("1.2.3+b1").unwrap()));
}

/// From `hostnames_are_case_insensitive`: `a.0` is accepted (the all-lower-case fast path of
/// src/provider/mod.rs `normalize_hostname`) but `A.0` is refused (url's host parser takes a
/// numeric last label for IPv4), so a hostname's validity depends on its letter case.
#[test]
fn regression_hostname_validity_depends_on_case() {
    let lower = ProviderAddress::new("a.0", "a", "b");
    let upper = ProviderAddress::new("A.0", "a", "b");
    assert_eq!(
        lower.is_ok(),
        upper.is_ok(),
        "a.0 → {lower:?}, A.0 → {upper:?}"
    );
    assert_eq!(
        route("/m/a.0/a/b/index.json").is_ok(),
        route("/m/A.0/a/b/index.json").is_ok()
    );
}

/// From `route_recovers_registry_paths`: a repository path component named `manifests` (or
/// `blobs/uploads`) makes a valid `/v2/` path unroutable; src/http/router.rs
/// `registry_route` looks for `/manifests/` (and `/blobs/uploads` anywhere) before it looks at
/// the end of the path for `/blobs/<digest>`.
#[test]
fn regression_registry_route_with_manifests_component() {
    let hex = "a00aaaaaa0000aaa00aaa0aaaaaaa0aa000aa00aa0aaa00aaa0000aa00aa00a0";
    let digest = Digest::from_sha256_hex(hex).unwrap();
    assert_eq!(
        route(&format!("/v2/a/manifests/a/blobs/sha256:{hex}")),
        Ok(Route::Registry(RegistryRoute::Blob {
            name: "a/manifests/a".into(),
            digest,
        }))
    );
    assert_eq!(
        route("/v2/a/blobs/uploads/a/manifests/latest"),
        Ok(Route::Registry(RegistryRoute::Manifest {
            name: "a/blobs/uploads/a".into(),
            reference: "latest".into(),
        }))
    );
}
