//! Subcommands. Each is thin: it loads what it needs and calls the services.

pub mod cache;
pub mod export;
pub mod keygen;
pub mod lock;
pub mod push;
pub mod server;
pub mod warm;
