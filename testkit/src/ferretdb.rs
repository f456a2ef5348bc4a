//! A FerretDB of the test's own, to kill and restart: the "database restarts" step of the crash
//! test and the database-outage test, which can't use the shared `MONGODB_URI` server.
//!
//! The binary comes from `FERRETDB_BIN` (`scripts/test.sh` builds FerretDB v1 and exports it).
//! Without it a developer's run skips these tests and says why; with `CI=true` they fail.
//! It runs on SQLite in a temp dir, or, when `FERRETDB_POSTGRESQL_URL` names a PostgreSQL
//! database (`scripts/start-mongo.sh --backend postgresql` prints one as `POSTGRES_URL`), on
//! that: killing FerretDB then leaves PostgreSQL up, as a crashed FerretDB would.

use crate::process::{free_port, Proc};
use std::path::PathBuf;
use std::time::Duration;

/// FerretDB on SQLite in a temp dir (or on `FERRETDB_POSTGRESQL_URL`), on a fixed loopback
/// port that survives restarts.
pub struct FerretDb {
    bin: PathBuf,
    pub port: u16,
    dir: tempfile::TempDir,
    proc: Option<Proc>,
}

impl FerretDb {
    /// Starts one, or `None` (outside CI) when `FERRETDB_BIN` is unset.
    pub async fn start() -> Option<Self> {
        let Some(bin) = std::env::var_os("FERRETDB_BIN").map(PathBuf::from) else {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "FERRETDB_BIN is unset: scripts/test.sh builds FerretDB and exports it; \
                 in CI a missing database is a failure, not a skip"
            );
            eprintln!("skipped: FERRETDB_BIN is unset (run through scripts/test.sh)");
            return None;
        };
        let dir = tempfile::tempdir().expect("a temp dir for FerretDB's SQLite files");
        let mut db = Self {
            bin,
            port: free_port(),
            dir,
            proc: None,
        };
        db.restart().await;
        Some(db)
    }

    /// `mongodb://127.0.0.1:<port>/`
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: the database vanishes mid-write, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// SIGSTOP: the database hangs (a stalled disk, a long pause) with its connections open, so
    /// every command waits instead of failing.
    pub fn freeze(&self) {
        if let Some(p) = &self.proc {
            assert!(p.signal("STOP"), "SIGSTOP to FerretDB");
        }
    }

    /// SIGCONT: the hang ends and the waiting commands go on.
    pub fn thaw(&self) {
        if let Some(p) = &self.proc {
            assert!(p.signal("CONT"), "SIGCONT to FerretDB");
        }
    }

    /// Starts it (again) on the same port and files, and waits until it accepts connections.
    pub async fn restart(&mut self) {
        self.kill();
        let d = self.dir.path().display();
        let backend = match std::env::var("FERRETDB_POSTGRESQL_URL") {
            Ok(url) if !url.trim().is_empty() => [
                "--handler=postgresql".to_string(),
                format!("--postgresql-url={url}"),
            ],
            _ => [
                "--handler=sqlite".to_string(),
                format!("--sqlite-url=file:{d}/"),
            ],
        };
        let args = [
            backend[0].clone(),
            backend[1].clone(),
            format!("--state-dir={d}"),
            format!("--listen-addr=127.0.0.1:{}", self.port),
            "--debug-addr=-".into(),
            "--telemetry=disable".into(),
            "--log-level=warn".into(),
        ];
        let proc =
            Proc::spawn_program("ferretdb", &self.bin, &args, &[]).expect("FERRETDB_BIN starts");
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                self.proc = Some(proc);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("FerretDB did not listen on {addr}: {}", proc.log());
    }
}
