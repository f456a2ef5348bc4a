//! A Redis server for tests, and a proxy in front of it that a test can cut.
//!
//! [`redis_url()`] is `REDIS_URL` (a server the caller started: `redis-server --port 6390 --save ''
//! --appendonly no --daemonize yes`). When it is unset a developer's run skips the Redis tests
//! and says why, but CI (`CI=true`) panics: a missing server there is a broken setup, not a
//! reason to stop testing quietly.
//!
//! [`RedisProxy`] forwards a loopback port to that server and can make Redis go away (refuse
//! and drop connections), hang (accept, never answer) and come back on the same port: the
//! "Redis is down / slow / back" scenarios, without root, Docker or a second server binary.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use reqwest::Url;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The test Redis: `REDIS_URL`, or `None` (and a line saying why) so the caller can skip with
/// "skipped: no Redis". Panics instead when `CI=true`.
pub fn redis_url() -> Option<String> {
    if let Some(url) = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        return Some(url);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "no Redis for the tests: REDIS_URL is unset. In CI a missing server is a failure, \
             not a skip: start one (redis-server --port 6390 --save '' --appendonly no \
             --daemonize yes) and set REDIS_URL=redis://127.0.0.1:6390/"
        );
    }
    eprintln!(
        "no Redis: REDIS_URL is unset (start redis-server and set \
         REDIS_URL=redis://127.0.0.1:6390/ to run these tests)"
    );
    None
}

/// A loopback port whose nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a probe port");
    listener.local_addr().expect("probe port address").port()
}

/// What the proxy does with connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forwards to Redis.
    Up,
    /// Nothing listens; open connections are closed.
    Down,
    /// Accepts and holds connections, forwarding nothing, as a stalled server would.
    Hang,
}

/// A TCP proxy to the test Redis on a loopback port (see the module docs). Stops when dropped.
pub struct RedisProxy {
    url: String,
    port: u16,
    mode: watch::Sender<Mode>,
    task: JoinHandle<()>,
}

impl RedisProxy {
    /// A proxy to the Redis at `redis_url`, up.
    pub async fn start(redis_url: &str) -> std::io::Result<Self> {
        let invalid = |why: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{redis_url}: {why}"),
            )
        };
        let mut url = Url::parse(redis_url).map_err(|e| invalid(&e.to_string()))?;
        let host = url.host_str().ok_or_else(|| invalid("no host"))?.to_owned();
        let target = tokio::net::lookup_host((host.as_str(), url.port().unwrap_or(6379)))
            .await?
            .next()
            .ok_or_else(|| invalid("host does not resolve"))?;
        let listener = bind(0)?;
        let port = listener.local_addr()?.port();
        url.set_host(Some("127.0.0.1"))
            .map_err(|e| invalid(&e.to_string()))?;
        url.set_port(Some(port))
            .map_err(|()| invalid("cannot set a port"))?;
        let (mode, rx) = watch::channel(Mode::Up);
        let task = tokio::spawn(serve(Some(listener), port, target, rx));
        Ok(Self {
            url: url.to_string(),
            port,
            mode,
            task,
        })
    }

    /// The proxy's `redis://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Redis goes away: open connections close, new ones are refused. Returns once refused.
    pub async fn down(&self) {
        self.mode.send_replace(Mode::Down);
        self.wait_until(false).await;
    }

    /// Redis stops answering: connections stay open, nothing comes back.
    pub async fn hang(&self) {
        self.mode.send_replace(Mode::Hang);
        self.wait_until(true).await;
    }

    /// Redis is back on the same port. Returns once it accepts connections.
    pub async fn up(&self) {
        self.mode.send_replace(Mode::Up);
        self.wait_until(true).await;
    }

    async fn wait_until(&self, accepting: bool) {
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        for _ in 0..200 {
            if TcpStream::connect(addr).await.is_ok() == accepting {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the Redis proxy on port {} did not switch (accepting: {accepting})",
            self.port
        );
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener on `port` (0: any) that can be bound again right after it was closed.
fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(128)
}

/// Accepts while the mode is not `Down`; closes the listener while it is.
async fn serve(
    mut listener: Option<TcpListener>,
    port: u16,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    loop {
        let current = *mode.borrow_and_update();
        match (&listener, current) {
            (Some(_), Mode::Down) => listener = None,
            (None, Mode::Up | Mode::Hang) => match bind(port) {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ => {}
        }
        let Some(l) = &listener else {
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            changed = mode.changed() => if changed.is_err() { return },
            accepted = l.accept() => if let Ok((client, _)) = accepted {
                tokio::spawn(connection(client, target, mode.clone()));
            },
        }
    }
}

/// One client connection: forwarded while `Up`, held silent while `Hang`, closed on `Down` (and
/// on leaving `Hang`, like a server that died while stalled).
async fn connection(mut client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if *mode.borrow_and_update() == Mode::Up {
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
            changed = mode.changed() => if changed.is_err() { return },
        }
    }
    while *mode.borrow_and_update() == Mode::Hang {
        if mode.changed().await.is_err() {
            return;
        }
    }
}
