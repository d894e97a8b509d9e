//! `cache stats | verify | prune`: look after the package cache directory.

use std::time::Duration;

use crate::config::units::{format_size, parse_duration, parse_size};
use crate::config::Config;
use crate::store::{
    now_millis, now_secs, read_stats_file, BlobStore, DirLock, StatsSnapshot, StoreConfig,
    StoreError,
};

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Entries, bytes, oldest entry, and the hit ratio since start if the server is running.
    Stats,
    /// Re-hash every stored package; remove and list those that do not match (exit 1 if any).
    Verify,
    /// Remove least recently used packages down to a size, and/or those unused for a while.
    Prune {
        /// Keep at most this much (e.g. 5GiB); default: the configured max_size.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<u64>,
        /// Also remove packages not used for this long (e.g. 30d).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<Duration>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CacheCommandError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} stored package(s) did not match their digest and were removed")]
    BadBlobs(usize),
}

pub fn run(config: &Config, command: CacheCommand) -> Result<(), CacheCommandError> {
    let dir = &config.cache.directory;
    if let (CacheCommand::Stats, Some(owner)) = (&command, DirLock::owner(dir)) {
        // A server owns the directory; it writes its figures for us every few seconds.
        match read_stats_file(dir) {
            Some(s) => print_stats(dir, &s, Some(&owner)),
            None => println!(
                "cache {} is in use by {owner}, which has not written stats yet",
                dir.display()
            ),
        }
        return Ok(());
    }
    let store = BlobStore::open(&StoreConfig::from_config(config))?;
    match command {
        CacheCommand::Stats => print_stats(dir, &store.snapshot(), None),
        CacheCommand::Verify => {
            let mut checked = 0;
            let bad = store.verify_all(|hex, ok| {
                checked += 1;
                if !ok {
                    println!("BAD  sha256:{hex} (removed)");
                }
            })?;
            println!(
                "verified {checked} package(s): {} good, {} bad",
                checked - bad.len(),
                bad.len()
            );
            if !bad.is_empty() {
                return Err(CacheCommandError::BadBlobs(bad.len()));
            }
        }
        CacheCommand::Prune {
            max_size,
            older_than,
        } => {
            let limit = max_size.unwrap_or(config.cache.max_size);
            let since = older_than.map(|d| now_millis().saturating_sub(d.as_millis() as u64));
            let (n, bytes) = store.evict_to(limit, since)?;
            store.flush()?;
            println!(
                "removed {n} package(s), {}; {} in {} package(s) remain",
                format_size(bytes),
                format_size(store.total_bytes()),
                store.entries().len()
            );
        }
    }
    Ok(())
}

fn print_stats(dir: &std::path::Path, s: &StatsSnapshot, owner: Option<&str>) {
    println!("cache directory: {}", dir.display());
    println!("entries:         {}", s.entries);
    println!(
        "size:            {} of {} max",
        format_size(s.bytes),
        format_size(s.max_size)
    );
    match s.oldest_stored_at {
        Some(t) => println!(
            "oldest entry:    stored {} ago",
            human_age(now_secs().saturating_sub(t))
        ),
        None => println!("oldest entry:    (empty)"),
    }
    match owner {
        Some(owner) => {
            let lookups = s.hits + s.misses + s.joins;
            let ratio = if lookups == 0 {
                "n/a".to_owned()
            } else {
                format!("{:.1}%", 100.0 * s.hits as f64 / lookups as f64)
            };
            println!(
                "server:          running ({owner}); figures as of {} ago",
                human_age(now_secs().saturating_sub(s.written_at))
            );
            println!(
                "hit ratio:       {ratio} ({} hits, {} misses, {} joined in-flight downloads)",
                s.hits, s.misses, s.joins
            );
            println!(
                "from origin:     {} in {} fetch(es); {} digest mismatch(es); {} eviction(s)",
                format_size(s.bytes_from_origin),
                s.origin_fetches,
                s.digest_mismatches,
                s.evictions
            );
        }
        None => println!("hit ratio:       n/a (the server is not running)"),
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
