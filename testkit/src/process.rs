//! The service binaries as real processes: started with an exact environment, killed on drop.
//!
//! Used where in-process services can't show the behaviour: exit codes, the environment
//! docker-compose.yaml gives, and (for the saga crash test) SIGKILL.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `target/<profile>/<name>`: the binaries `cargo build --workspace --bins` made next to the
/// test executable. Panics with the command to run when one is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    // target/debug/deps/<test>-<hash> → target/debug/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A service process, killed when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts binary `name` with exactly `env` (plus PATH), logs to a temp file.
    pub fn spawn(name: &str, env: &[(String, String)]) -> std::io::Result<Self> {
        Self::spawn_program(name, &binary(name), &[], env)
    }

    /// Starts `program args…` (called `name` in logs) with exactly `env` (plus PATH).
    pub fn spawn_program(
        name: &str,
        program: &std::path::Path,
        args: &[String],
        env: &[(String, String)],
    ) -> std::io::Result<Self> {
        let log = std::env::temp_dir().join(format!(
            "saga-{name}-{}-{}.log",
            std::process::id(),
            crate::unique_db_name("p")
        ));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        let child = cmd.spawn()?;
        Ok(Self {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL (on Unix), and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (what `docker stop` sends) and waits up to `within` for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            return None;
        }
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends `signal` (a `kill` name such as `STOP` or `CONT`); true when it was delivered.
    pub fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The process id (to read `/proc/<pid>/status`).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{} log kept: {}", self.name, self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("the OS hands out a free loopback port")
}

/// Polls `url` until it answers 200, up to `within`.
pub async fn wait_ready(url: &str, within: Duration) -> bool {
    let client = reqwest::Client::new();
    let until = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < until {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// One service binary alone on loopback, on the embedded store in a temp dir: the shape for
/// tests that need a real socket and a process of their own (connection limits, raw-TCP
/// fuzzing, RSS from `/proc`). Killed on drop.
pub struct Alone {
    pub proc: Proc,
    pub addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Alone {
    /// Starts `name` (last hop: no `CHAIN_SVC`) with `env` on top of `HOST`, `PORT` and
    /// `DATA_DIR`, and waits until `/ready` answers.
    pub async fn start(name: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut vars: Vec<(String, String)> = vec![
            ("HOST".into(), "127.0.0.1".into()),
            ("PORT".into(), port.to_string()),
            ("DATA_DIR".into(), dir.path().display().to_string()),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let proc = Proc::spawn(name, &vars).expect("spawn the service");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            wait_ready(&format!("http://{addr}/ready"), Duration::from_secs(20)).await,
            "{name} never got ready: {}",
            proc.log()
        );
        Self {
            proc,
            addr,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resident memory in KiB (`VmRSS` in `/proc/<pid>/status`); `None` off Linux.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}
