#![forbid(unsafe_code)]
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use odtr::config::Config;

/// Serves Terraform's provider network mirror protocol from provider packages stored in OCI
/// Distribution registries (Harbor, GHCR, ECR, Zot, distribution).
///
/// Without --config, the configuration is read from config.hcl in the first of the
/// configuration directories that has one ($XDG_CONFIG_HOME/oci-distribution-terraform-registry,
/// each of $XDG_CONFIG_DIRS/oci-distribution-terraform-registry, then
/// /etc/oci-distribution-terraform-registry).
#[derive(Parser)]
#[command(
    name = "oci-distribution-terraform-registry",
    version,
    about,
    long_about
)]
struct Cli {
    /// Configuration file to use instead of searching the configuration directories.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log format on stderr: `human` (default) or `json` (one object per line).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "human", value_parser = ["human", "json"])]
    log_format: String,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (provider network mirrors over HTTPS).
    Server {
        /// Never contact any origin; serve only what the cache holds (same as
        /// `offline = true` in the server block).
        #[arg(long)]
        offline: bool,
    },
    /// Prefetch providers and modules into the cache (from ADDR[@CONSTRAINTS], lock files or configurations).
    Warm(odtr::cli::warm::WarmArgs),
    /// Write a static network mirror (index.json, VERSION.json, zips) from the cache.
    Export(odtr::cli::export::ExportArgs),
    /// Write or complete .terraform.lock.hcl with h1: and zh: hashes for every platform, from the cache.
    Lock(odtr::cli::lock::LockArgs),
    /// Inspect and look after the package cache.
    #[command(subcommand)]
    Cache(odtr::cli::cache::CacheCommand),
    /// Publish provider packages or a module into an OCI registry (see the README).
    Push(odtr::cli::push::PushArgs),
    /// Create an OpenPGP key pair for the provider registry to sign SHA256SUMS with.
    Keygen(odtr::cli::keygen::KeygenArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    // `push --registry` and `keygen` need no configuration file, so they run before one is loaded.
    let command = match cli.command {
        Some(Command::Push(args)) => return odtr::cli::push::main(cli.config.as_deref(), args),
        Some(Command::Keygen(args)) => return odtr::cli::keygen::main(args),
        other => other,
    };
    let config = match Config::locate_and_load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(command) = command else {
        eprintln!(
            "Configuration {} is valid. Run `oci-distribution-terraform-registry server` to start the server, or --help for more.",
            config.source.display()
        );
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Server { offline } => {
                let mut config = config;
                config.server.offline |= offline;
                odtr::cli::server::run(config)
                    .await
                    .map_err(|e| e.to_string())
            }
            Command::Warm(args) => odtr::cli::warm::run(config, args)
                .await
                .map_err(|e| e.to_string()),
            Command::Export(args) => odtr::cli::export::run(config, args)
                .await
                .map_err(|e| e.to_string()),
            Command::Lock(args) => odtr::cli::lock::run(config, args)
                .await
                .map_err(|e| e.to_string()),
            Command::Cache(c) => odtr::cli::cache::run(&config, c).map_err(|e| e.to_string()),
            Command::Push(_) | Command::Keygen(_) => {
                unreachable!("push and keygen run before the configuration is loaded")
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().with_current_span(false).init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}
