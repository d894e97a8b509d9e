//! Registry authorization: credentials, `WWW-Authenticate` challenges and the token cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use sha2::{Digest as _, Sha256};

/// Whose authority a request to the origin is made with.
#[derive(Clone)]
pub enum Credential {
    Anonymous,
    /// The `Authorization` header a client sent us, passed through (the prototype's model).
    PassThrough(HeaderValue),
    /// Server-side credentials (docker `config.json` style), for work that has no client.
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret itself.
        match self {
            Credential::Anonymous => f.write_str("Anonymous"),
            Credential::PassThrough(_) => f.write_str("PassThrough(<redacted>)"),
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

impl Credential {
    /// A keyed-free fingerprint used only as a map key, so tokens obtained with one
    /// credential are never used for another.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        match self {
            Credential::Anonymous => h.update(b"anon"),
            Credential::PassThrough(v) => {
                h.update(b"pass\0");
                h.update(v.as_bytes());
            }
            Credential::Basic { username, password } => {
                h.update(b"basic\0");
                h.update(username.as_bytes());
                h.update(b"\0");
                h.update(password.as_bytes());
            }
        }
        h.finalize().into()
    }

    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credential::Anonymous => req,
            Credential::PassThrough(v) => req.header(reqwest::header::AUTHORIZATION, v.clone()),
            Credential::Basic { username, password } => req.basic_auth(username, Some(password)),
        }
    }
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// Parses `Scheme k="v", k2=v2`. Only the first challenge of a header is read.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = match header.find(char::is_whitespace) {
            Some(i) => (&header[..i], header[i..].trim_start()),
            None => (header, ""),
        };
        if scheme.is_empty() {
            return None;
        }
        let mut params = HashMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while matches!(chars.peek(), Some(c) if c.is_whitespace() || *c == ',') {
                chars.next();
            }
            let key: String = std::iter::from_fn(|| {
                chars.next_if(|c| *c != '=' && *c != ',' && !c.is_whitespace())
            })
            .collect();
            if key.is_empty() {
                break;
            }
            if chars.next_if_eq(&'=').is_none() {
                break;
            }
            let value = if chars.next_if_eq(&'"').is_some() {
                let mut v = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                v.push(n)
                            }
                        }
                        '"' => break,
                        c => v.push(c),
                    }
                }
                v
            } else {
                std::iter::from_fn(|| chars.next_if(|c| *c != ',' && !c.is_whitespace())).collect()
            };
            params.insert(key.to_ascii_lowercase(), value);
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    /// The token realm's URL for this challenge (with its `service`, and `scope` if given),
    /// when the realm is an http(s) URL.
    pub fn token_url(&self, scope: Option<&str>) -> Option<url::Url> {
        let mut url = url::Url::parse(self.params.get("realm")?).ok()?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return None;
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = self.params.get("service") {
                q.append_pair("service", service);
            }
            if let Some(scope) = scope {
                q.append_pair("scope", scope);
            }
        }
        Some(url)
    }

    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer"
    }
}

type TokenKey = (String, String, [u8; 32]);

/// Bearer tokens per (registry, scope, credential), kept until shortly before they expire.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

/// Upper bound on cached tokens, so many distinct client credentials cannot grow memory forever.
const MAX_TOKENS: usize = 10_000;

impl TokenCache {
    pub fn get(&self, registry: &str, scope: &str, cred: &Credential) -> Option<String> {
        let map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let key = (registry.to_owned(), scope.to_owned(), cred.fingerprint());
        map.get(&key)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(t, _)| t.clone())
    }

    pub fn put(
        &self,
        registry: &str,
        scope: &str,
        cred: &Credential,
        token: String,
        lifetime: Duration,
    ) {
        let mut map = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_TOKENS {
            map.retain(|_, (_, exp)| *exp > now);
            if map.len() >= MAX_TOKENS {
                map.clear();
            }
        }
        // Renew a little early so a token never expires in flight.
        let margin = (lifetime / 10).min(Duration::from_secs(30));
        map.insert(
            (registry.to_owned(), scope.to_owned(), cred.fingerprint()),
            (token, now + lifetime.saturating_sub(margin)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge() {
        let c = Challenge::parse(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#).unwrap();
        assert!(c.is_bearer());
        assert_eq!(c.params["realm"], "https://auth.example/token");
        assert_eq!(c.params["service"], "registry.example");
        assert_eq!(c.params["scope"], "repository:a/b:pull");
    }

    #[test]
    fn parses_basic_and_unquoted() {
        let c = Challenge::parse("Basic realm=x, charset=\"UTF-8\"").unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "x");
        assert_eq!(c.params["charset"], "UTF-8");
        assert_eq!(Challenge::parse("Bearer").unwrap().params.len(), 0);
        assert!(Challenge::parse("").is_none());
    }

    #[test]
    fn tokens_are_per_credential() {
        let cache = TokenCache::default();
        let a = Credential::PassThrough(HeaderValue::from_static("Bearer a"));
        let b = Credential::PassThrough(HeaderValue::from_static("Bearer b"));
        cache.put("r", "s", &a, "tok".into(), Duration::from_secs(60));
        assert_eq!(cache.get("r", "s", &a).as_deref(), Some("tok"));
        assert_eq!(cache.get("r", "s", &b), None);
        assert_eq!(cache.get("r", "other", &a), None);
        assert!(!format!("{a:?}").contains("Bearer a"));
    }
}
