//! A MongoDB-wire server for tests, from wherever one can be had.
//!
//! In order: `MONGODB_URI` (a server the caller started: `scripts/test.sh` starts FerretDB where
//! Docker is missing), else a throw-away `mongo` container through testcontainers. When neither
//! works, a developer's run skips the MongoDB tests and says why, but CI (`CI=true`) panics: a
//! missing database there is a broken setup, and a suite that silently skips is a suite that
//! silently stops testing.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage};

/// The image tag used when testcontainers starts the server.
pub const MONGO_IMAGE: (&str, &str) = ("mongo", "7");

/// How long pulling and starting the container may take before we call it unavailable.
const CONTAINER_START_TIMEOUT: Duration = Duration::from_secs(300);

/// A reachable MongoDB-wire server. A container started for it lives as long as this value.
pub struct MongoServer {
    uri: String,
    _container: Option<ContainerAsync<GenericImage>>,
}

impl MongoServer {
    /// A `mongodb://` URI for the server, without a database name.
    pub fn uri(&self) -> &str {
        &self.uri
    }
}

impl std::fmt::Debug for MongoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoServer")
            .field("uri", &self.uri)
            .field("container", &self._container.as_ref().map(|c| c.id()))
            .finish()
    }
}

/// A server to test against: `MONGODB_URI` if set, else a `mongo` container.
///
/// Returns `None` (and prints why) when neither is available, so the caller can skip with
/// "skipped: no MongoDB". Panics instead when `CI=true`.
pub async fn mongo() -> Option<MongoServer> {
    if let Some(uri) = std::env::var("MONGODB_URI")
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        return Some(MongoServer {
            uri,
            _container: None,
        });
    }
    let why = match start_container().await {
        Ok(server) => return Some(server),
        Err(why) => why,
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "no MongoDB for the tests: MONGODB_URI is unset and testcontainers failed: {why:#}. \
             In CI a missing database is a failure, not a skip: set MONGODB_URI (scripts/test.sh \
             starts FerretDB) or make Docker available."
        );
    }
    eprintln!(
        "no MongoDB: MONGODB_URI is unset and testcontainers failed: {why:#} \
         (set MONGODB_URI or start Docker to run these tests)"
    );
    None
}

async fn start_container() -> anyhow::Result<MongoServer> {
    let (name, tag) = MONGO_IMAGE;
    let image = GenericImage::new(name, tag)
        .with_exposed_port(27017.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Waiting for connections"));
    let container = tokio::time::timeout(CONTAINER_START_TIMEOUT, image.start())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the {name}:{tag} container did not start within {CONTAINER_START_TIMEOUT:?}"
            )
        })??;
    let host = container.get_host().await?;
    let port = container.get_host_port_ipv4(27017).await?;
    Ok(MongoServer {
        uri: format!("mongodb://{host}:{port}/"),
        _container: Some(container),
    })
}

/// A database name no other test (in this process or another) uses: `<prefix>_<ms>_<pid>_<n>`.
/// The prefix is cut down to characters every MongoDB-wire server accepts (ASCII letters, digits
/// and `_`) and to a length that keeps the name under 63 characters.
pub fn unique_db_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix: String = prefix
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(24)
        .collect();
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}_{millis}_{}_{n}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::unique_db_name;

    #[test]
    fn unique_db_names_differ_and_stay_short_and_plain() {
        let long = "a prefix/with.odd$chars and far too many of them";
        let a = unique_db_name(long);
        let b = unique_db_name(long);
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(name.len() < 63, "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{name}"
            );
        }
    }
}
