//! `server`: run the HTTP server.

use std::io::Write;

use crate::config::Config;

pub async fn run(config: Config) -> Result<(), crate::http::ServerError> {
    tracing::info!(
        config = %config.source.display(),
        mirrors = ?config.provider_mirrors.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
        "starting server"
    );
    crate::http::serve(&config, |addr, tls| {
        let scheme = if tls { "https" } else { "http" };
        // One line on stdout that scripts and tests can wait for.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {scheme}://{addr}/");
        let _ = out.flush();
        tracing::info!(%addr, tls, "listening");
    })
    .await
}
