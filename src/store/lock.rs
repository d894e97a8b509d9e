//! One process owns a cache directory: an exclusive advisory lock on `DIR/lock`, with the
//! owner's pid written inside so a second process can say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the cache directory {dir} is in use by another process ({owner}); stop it first, or give this one another cache directory")]
    Held { dir: PathBuf, owner: String },
    #[error("cannot lock the cache directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// Held for as long as the process uses the directory; the OS releases it at exit, even on kill -9.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_owned(),
            source,
        };
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = match owner.trim() {
                    "" => "pid unknown".to_owned(),
                    pid => format!("pid {pid}"),
                };
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    owner,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DirLock { _file: file })
    }

    /// The pid recorded in `dir`'s lock file, when another process holds the lock.
    pub fn owner(dir: &Path) -> Option<String> {
        match DirLock::acquire(dir) {
            Err(LockError::Held { owner, .. }) => Some(owner),
            _ => None,
        }
    }

    /// Who holds `dir`'s lock: `None` when nobody does; `Some(None)` when the holder's pid
    /// is unknown. Never writes: a free lock is taken and let go at once, so a process that
    /// acquires it meanwhile can only lose a race it then retries (see `warm`).
    pub fn probe(dir: &Path) -> Option<Option<u32>> {
        let mut file = File::open(dir.join("lock")).ok()?;
        match file.try_lock() {
            Ok(()) => None,
            Err(TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                Some(owner.trim().parse().ok())
            }
            Err(TryLockError::Error(_)) => None,
        }
    }
}

/// `DIR/server-address`: how local tools reach the server that owns the cache. It names the
/// server's pid, so a tool can tell the server from another holder of the lock (a `warm`, a
/// `lock`), and a file a killed server left behind from a live one.
pub const SERVER_ADDRESS_FILE: &str = "server-address";

/// Records this process as the cache's server, listening on `addr`.
pub fn record_server_address(dir: &Path, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = dir.join(format!("{SERVER_ADDRESS_FILE}.tmp"));
    std::fs::write(&tmp, format!("{addr}\n{}\n", std::process::id()))?;
    std::fs::rename(&tmp, dir.join(SERVER_ADDRESS_FILE))
}

/// Removes this process's record (a server that is stopping takes no new work).
pub fn clear_server_address(dir: &Path) {
    if recorded_server(dir).is_some_and(|(_, pid)| pid == Some(std::process::id())) {
        let _ = std::fs::remove_file(dir.join(SERVER_ADDRESS_FILE));
    }
}

/// The recorded server address and pid (no pid in files older servers wrote).
pub fn recorded_server(dir: &Path) -> Option<(SocketAddr, Option<u32>)> {
    let text = std::fs::read_to_string(dir.join(SERVER_ADDRESS_FILE)).ok()?;
    let mut lines = text.lines();
    let addr = lines.next()?.trim().parse().ok()?;
    let pid = lines.next().and_then(|p| p.trim().parse().ok());
    Some((addr, pid))
}

/// Who holds a cache directory, as a command that wants it sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheHolder {
    Nobody,
    /// The running server that recorded this address: the lock's holder wrote the record.
    Server {
        addr: SocketAddr,
        pid: u32,
    },
    /// A record without a pid, which servers of older versions wrote: it cannot be told
    /// whether the holder is that server.
    UnprovenServer {
        pid: Option<u32>,
        addr: SocketAddr,
    },
    /// Another process (a `warm`, `lock` or `export`, a server starting or stopping).
    Other(Option<u32>),
}

pub fn cache_holder(dir: &Path) -> CacheHolder {
    let Some(holder) = DirLock::probe(dir) else {
        return CacheHolder::Nobody;
    };
    match recorded_server(dir) {
        Some((addr, Some(pid))) if Some(pid) == holder => CacheHolder::Server { addr, pid },
        Some((addr, None)) => CacheHolder::UnprovenServer { pid: holder, addr },
        _ => CacheHolder::Other(holder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_naming_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn only_the_lock_holder_counts_as_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:4443".parse().unwrap();
        assert_eq!(cache_holder(dir.path()), CacheHolder::Nobody);
        // A record with no holder: a server that was killed.
        record_server_address(dir.path(), addr).unwrap();
        assert_eq!(cache_holder(dir.path()), CacheHolder::Nobody);
        // Held by this process, which recorded it: the server.
        let held = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(
            cache_holder(dir.path()),
            CacheHolder::Server {
                addr,
                pid: std::process::id()
            }
        );
        // Probing never rewrites the holder's pid.
        let pid = std::fs::read_to_string(dir.path().join("lock")).unwrap();
        assert_eq!(pid, std::process::id().to_string());
        // A record naming another pid (stale, or another server's): not ours.
        std::fs::write(dir.path().join(SERVER_ADDRESS_FILE), format!("{addr}\n1\n")).unwrap();
        assert_eq!(
            cache_holder(dir.path()),
            CacheHolder::Other(Some(std::process::id()))
        );
        // An older server's record, without a pid.
        std::fs::write(dir.path().join(SERVER_ADDRESS_FILE), format!("{addr}\n")).unwrap();
        assert!(matches!(
            cache_holder(dir.path()),
            CacheHolder::UnprovenServer { .. }
        ));
        // A stopping server removes its own record only.
        clear_server_address(dir.path());
        assert!(dir.path().join(SERVER_ADDRESS_FILE).exists());
        record_server_address(dir.path(), addr).unwrap();
        clear_server_address(dir.path());
        assert_eq!(recorded_server(dir.path()), None);
        drop(held);
    }
}
