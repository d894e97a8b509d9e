//! A real docker-registry with `auth: token` (how GHCR, Harbor, Docker Hub and most hosted
//! registries work): every request needs a Bearer token from a separate token service, which
//! hands them out for Basic credentials. The token service here is a small issuer of ES256
//! JWTs that the registry verifies against its root certificate; the registry is the real one.
//! `push`, the mirror (public, with the server's credential, and private, with the client's)
//! and `terraform init` go through it.

mod common;
mod push_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use push_support::{
    push_cli, write_release_dir, HtpasswdRegistry, PASSWORD, TOKEN_ISSUER, TOKEN_SERVICE, USER,
};
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

const FOO: &str = "registry.terraform.io/acme/foo";
const PREFIX: &str = "terraform-providers";
const REPO: &str = "terraform-providers/registry.terraform.io/acme/foo";

/// One request the token service answered.
#[derive(Debug, Clone)]
struct Grant {
    /// `Basic` credentials presented: Some(valid?); None when anonymous.
    credentials: Option<bool>,
    scopes: Vec<String>,
    status: u16,
}

/// The token service: a thread answering `GET /token?service=...&scope=...` on 127.0.0.1.
/// Valid Basic credentials get every action they ask for. Anonymous requests get a 401, as a
/// private registry's token service answers, or with `anonymous_pull` a token for `pull`
/// only, as GHCR and Docker Hub answer for public images. Wrong credentials get a 401.
struct TokenService {
    port: u16,
    cert_pem: String,
    grants: Arc<Mutex<Vec<Grant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenService {
    fn start(anonymous_pull: bool) -> TokenService {
        let key = rcgen::KeyPair::generate().expect("P-256 key");
        let params = rcgen::CertificateParams::new(vec!["odtr-token-issuer".to_owned()])
            .expect("certificate parameters");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        let signer = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("ring reads the key");
        let cert_der = cert.der().to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token service");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().unwrap().port();
        let grants = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (grants, stop) = (grants.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(g) = answer(stream, &signer, &cert_der, anonymous_pull) {
                                grants.lock().unwrap().push(g);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        TokenService {
            port,
            cert_pem: cert.pem(),
            grants,
            stop,
            thread: Some(thread),
        }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn grants(&self) -> Vec<Grant> {
        self.grants.lock().unwrap().clone()
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if std::thread::panicking() {
            eprintln!("----- token service grants -----\n{:#?}", self.grants());
        }
    }
}

/// Answers one token request (HTTP/1.0 style: one request, then close).
fn answer(
    stream: TcpStream,
    signer: &EcdsaKeyPair,
    cert_der: &[u8],
    anonymous_pull: bool,
) -> Option<Grant> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut authorization = None;
    // A bounded head: at most 100 header lines.
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1)?;
    let url = url::Url::parse(&format!("http://token{target}")).ok()?;
    let scopes: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.into_owned())
        .collect();
    let service_ok = url
        .query_pairs()
        .any(|(k, v)| k == "service" && v == TOKEN_SERVICE);
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    let credentials = authorization
        .as_ref()
        .filter(|a| a.starts_with("Basic "))
        .map(|a| *a == expected);
    let granted = match credentials {
        Some(valid) => valid,
        None => anonymous_pull,
    };
    let (status, body) = if granted && service_ok {
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                // repository:NAME:ACTIONS (NAME holds no ':').
                let (kind, rest) = s.split_once(':')?;
                let (name, actions) = rest.rsplit_once(':')?;
                let actions: Vec<&str> = actions
                    .split(',')
                    .filter(|a| credentials.is_some() || *a == "pull")
                    .collect();
                Some(json!({ "type": kind, "name": name, "actions": actions }))
            })
            .collect();
        let token = jwt(signer, cert_der, access);
        (
            200,
            json!({ "token": token, "access_token": token, "expires_in": 300 }).to_string(),
        )
    } else {
        (
            401,
            json!({ "details": "credentials required" }).to_string(),
        )
    };
    let mut stream = stream;
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
    // Let the client read before the close.
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = reader.get_mut().read(&mut [0u8; 1]);
    Some(Grant {
        credentials,
        scopes,
        status,
    })
}

/// An ES256 JWT in the form docker-registry's `token` auth verifies: the signing certificate
/// in `x5c`, chained to the registry's root bundle (here the certificate itself).
fn jwt(signer: &EcdsaKeyPair, cert_der: &[u8], access: Vec<serde_json::Value>) -> String {
    let b64u = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(cert_der)],
    });
    let claims = json!({
        "iss": TOKEN_ISSUER,
        "sub": USER,
        "aud": TOKEN_SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{now}-{}", rand_suffix()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64u.encode(header.to_string()),
        b64u.encode(claims.to_string())
    );
    let sig = signer
        .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
        .expect("sign");
    format!("{input}.{}", b64u.encode(sig.as_ref()))
}

fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The token service, the registry behind it, and foo 1.0.0 pushed through both by `push`.
struct Fixture {
    tokens: TokenService,
    registry: HtpasswdRegistry,
    _work: tempfile::TempDir,
    docker_config: std::path::PathBuf,
}

impl Fixture {
    fn start(anonymous_pull: bool) -> Fixture {
        let tokens = TokenService::start(anonymous_pull);
        let registry = HtpasswdRegistry::start_token(&tokens.realm(), &tokens.cert_pem);
        let work = temp_dir("odtr-token-realm-");
        let release = work.path().join("release");
        write_release_dir(&release, "foo", "1.0.0", &["linux_amd64", "darwin_arm64"]);
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
                "--username",
                USER,
                "--password-stdin",
                release.to_str().unwrap(),
            ],
            &[],
            Some(&format!("{PASSWORD}\n")),
        );
        assert!(
            run.success,
            "push through the token realm: {}",
            run.describe()
        );
        // The server's own credential, as `docker login` writes it.
        let docker_config = work.path().join("docker");
        std::fs::create_dir_all(&docker_config).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        std::fs::write(
            docker_config.join("config.json"),
            json!({ "auths": { format!("127.0.0.1:{}", registry.port()): { "auth": auth } } })
                .to_string(),
        )
        .unwrap();
        Fixture {
            tokens,
            registry,
            _work: work,
            docker_config,
        }
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn push_and_terraform_init_through_a_bearer_token_realm() {
    let fx = Fixture::start(false);
    // push asked for push access with the Basic credentials, and got it.
    let grants = fx.tokens.grants();
    assert!(
        grants.iter().any(|g| g.credentials == Some(true)
            && g.status == 200
            && g.scopes
                .iter()
                .any(|s| s.starts_with(&format!("repository:{REPO}:")) && s.contains("push"))),
        "push took no push token: {grants:#?}"
    );
    // Without a token the registry refuses: the realm is really in charge.
    let status = wait_for("the registry", || {
        raw_http_status(fx.registry.port(), &format!("/v2/{REPO}/tags/list"))
    });
    assert_eq!(status, 401);

    // A public mirror reads with the server's own credential, through the realm.
    let cert = TestCert::generate();
    let origin = fx.registry.url();
    let mut mc = MirrorConfig::new(&cert, &origin, false);
    mc.extra_mirror = "  public = true";
    let server = Server::start_with_env(
        &mc.to_hcl(),
        &[],
        &[("DOCKER_CONFIG", fx.docker_config.to_str().unwrap())],
    );
    let before = fx.tokens.grants().len();
    let init = terraform_init(&server.mirror_url(), &cert, &[(FOO, "1.0.0")], None);
    assert!(init.success, "terraform init: {}", init.output);
    let lock = init.lock_file.expect("a lock file");
    assert!(
        lock_file_hashes(&lock, FOO)
            .iter()
            .any(|h| h.starts_with("h1:")),
        "{lock}"
    );
    let pulls: Vec<Grant> = fx.tokens.grants()[before..].to_vec();
    assert!(
        pulls.iter().any(|g| g.credentials == Some(true)
            && g.status == 200
            && g.scopes
                .iter()
                .any(|s| s == &format!("repository:{REPO}:pull"))),
        "the server took no pull token for {REPO}: {pulls:#?}"
    );
    // Tokens are reused, not fetched per request: a handful for the whole init.
    assert!(
        pulls.len() <= 6,
        "{} token requests for one init: {pulls:#?}",
        pulls.len()
    );
}

#[test]
fn a_private_mirror_presents_the_clients_credential_to_the_token_realm() {
    let fx = Fixture::start(false);
    let cert = TestCert::generate();
    let origin = fx.registry.url();
    let server = Server::start(&server_config(&cert, &origin, true));
    let client = https_client(&cert);
    let index = format!("{}{FOO}/index.json", server.mirror_url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |auth: Option<String>| {
        let mut req = client.get(&index);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        rt.block_on(async {
            let resp = req.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        })
    };
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };

    // Anonymous: the realm refuses, so the mirror does too, with a challenge.
    let (status, body) = get(None);
    assert_eq!(status, 401, "anonymous: {body}");
    // A wrong password: refused by the realm, refused here.
    let (status, body) = get(Some(basic(USER, "wrong")));
    assert_eq!(status, 401, "wrong password: {body}");
    // The right one: the realm grants a pull token and the versions come back.
    let (status, body) = get(Some(basic(USER, PASSWORD)));
    assert_eq!(status, 200, "right password: {body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["versions"]["1.0.0"].is_object(), "{body}");
    // And again anonymous right after: still refused, whatever is cached.
    let (status, body) = get(None);
    assert_eq!(
        status, 401,
        "anonymous after a credentialed request: {body}"
    );
    let grants = fx.tokens.grants();
    assert!(
        grants
            .iter()
            .any(|g| g.credentials == Some(false) && g.status == 401),
        "the wrong password never reached the realm: {grants:#?}"
    );
    // Anonymous was refused by the realm itself, not guessed at by the mirror.
    assert!(
        grants
            .iter()
            .any(|g| g.credentials.is_none() && g.status == 401),
        "the anonymous request never reached the realm: {grants:#?}"
    );
}

#[test]
fn anonymous_terraform_init_against_a_registry_handing_out_anonymous_pull_tokens() {
    // As GHCR and Docker Hub serve public images: no credential anywhere, yet every request
    // needs a token, which the realm hands out for pull.
    let fx = Fixture::start(true);
    let cert = TestCert::generate();
    let origin = fx.registry.url();
    let server = Server::start(&server_config(&cert, &origin, false));
    let before = fx.tokens.grants().len();
    let init = terraform_init(&server.mirror_url(), &cert, &[(FOO, "1.0.0")], None);
    assert!(init.success, "terraform init: {}", init.output);
    let pulls: Vec<Grant> = fx.tokens.grants()[before..].to_vec();
    assert!(
        pulls.iter().any(|g| g.credentials.is_none()
            && g.status == 200
            && g.scopes
                .iter()
                .any(|s| s == &format!("repository:{REPO}:pull"))),
        "no anonymous pull token was asked for: {pulls:#?}"
    );
    // A second init, served from the cache with the token still valid.
    let init = terraform_init(&server.mirror_url(), &cert, &[(FOO, "1.0.0")], None);
    assert!(init.success, "second terraform init: {}", init.output);
}
