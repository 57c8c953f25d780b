//! A NATS server with JetStream for the fleet tests (docs/fleet.md): started per test on a free
//! port with a store of its own, killed when dropped. Without `nats-server` the tests are skipped
//! with a loud message; in CI (`CI=true`, where `.ci/run` installs it) that is a failure.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct Nats {
    child: Child,
    port: u16,
    /// What `nats-server` was started with besides JetStream, its port and store.
    extra: Vec<String>,
    /// `nats://127.0.0.1:PORT`, what `--nats` takes.
    pub url: String,
    store: TempDir,
}

impl Nats {
    /// A server, or `None` (said loudly) when `nats-server` is not installed here.
    pub fn start() -> Option<Nats> {
        Nats::start_with(&[])
    }

    /// A server started with these options too (`--user`, `--pass`), or `None` as [`start`].
    pub fn start_with(extra: &[&str]) -> Option<Nats> {
        let installed = Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("nats-server is required in CI (.ci/run installs it) and is missing");
            }
            eprintln!(
                "\n!!! SKIPPING fleet tests: nats-server is not installed (apt-get install nats-server) !!!\n"
            );
            return None;
        }
        let store = TempDir::new().unwrap();
        let port = super::bigquery::free_port();
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        Some(Nats {
            child: serve(port, &store, &extra),
            port,
            extra,
            url: format!("nats://127.0.0.1:{port}"),
            store,
        })
    }

    /// Creates a stream with this JetStream configuration (JSON) through the server's API, in
    /// NATS's own text protocol: what another program sharing the server could do.
    pub fn create_stream(&self, config: &str) {
        use std::io::{BufRead as _, BufReader, Write as _};
        let name = serde_json::from_str::<serde_json::Value>(config).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap(); // INFO
        write!(
            stream,
            "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.test 1\r\nPUB $JS.API.STREAM.CREATE.{name} _INBOX.test {}\r\n{config}\r\n",
            config.len()
        )
        .unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line.starts_with("MSG ") {
                line.clear();
                reader.read_line(&mut line).unwrap();
                assert!(line.contains("\"config\""), "stream not created: {line}");
                return;
            }
        }
    }

    /// Stops the server as its service manager would (SIGTERM: it tells its clients it shuts
    /// down), and waits for it to be gone.
    pub fn shut_down(&mut self) {
        super::signal(&self.child, "TERM");
        let _ = self.child.wait();
    }

    /// Stops the server, and starts it again on the same port and store after `down`.
    pub fn restart_after(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = serve(self.port, &self.store, &self.extra);
    }
}

/// `nats-server` with JetStream on `port`, its store in `store`, once it takes connections.
fn serve(port: u16, store: &TempDir, extra: &[String]) -> Child {
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(store.path())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
