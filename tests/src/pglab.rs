//! A PostgreSQL server for tests (Debian's `postgresql`): a fresh cluster in a temporary
//! folder, started by PID on a loopback high port, restartable (the fault suite restarts it
//! mid-traffic) and removed when dropped. PostgreSQL refuses to run as root, so as root the
//! cluster belongs to, and runs as, the `postgres` user the package creates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::federation::TempDir;

/// A running (or stopped) test cluster.
pub struct PgLab {
    dir: TempDir,
    bin: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
}

fn bin_dir() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed (Debian package postgresql)")?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .context("no PostgreSQL binaries under /usr/lib/postgresql")
}

fn is_root() -> bool {
    // The effective user of this process, from /proc (no libc call needed).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PgLab {
    /// A fresh cluster, started.
    pub async fn start() -> Result<PgLab> {
        let bin = bin_dir()?;
        let dir = TempDir::new("ssp-pg");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir.0)
                .status()?
                .success();
            if !ok {
                bail!("cannot give {} to the postgres user", dir.0.display());
            }
            // The user must be able to reach it.
            let _ = Command::new("chmod").arg("755").arg(&dir.0).status();
        }
        let data = dir.0.join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "ssp", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("initdb: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = crate::dnslab::free_port();
        let mut lab = PgLab {
            dir,
            bin,
            port,
            child: None,
        };
        lab.run().await?;
        Ok(lab)
    }

    /// Its connection string.
    pub fn url(&self) -> String {
        format!("postgres://ssp@127.0.0.1:{}/postgres", self.port)
    }

    async fn run(&mut self) -> Result<()> {
        let data = self.dir.0.join("data");
        let log = std::fs::File::create(self.dir.0.join("postgres.log"))?;
        let child = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.0.display()))
            .args(["-c", "max_connections=50"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.0.join("postgres.log")).unwrap_or_default();
                bail!("PostgreSQL did not start within 20 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The postmaster's PID (runuser's child, so the signal must go to it directly).
    fn postmaster(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.0.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()
            .map(str::to_owned)
    }

    /// Stop it (fast shutdown: connections are cut, nothing committed is lost).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = self.postmaster().unwrap_or_else(|| c.id().to_string());
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop, then start again on the same data.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        self.run().await
    }
}

impl Drop for PgLab {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = self.postmaster().unwrap_or_else(|| c.id().to_string());
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
