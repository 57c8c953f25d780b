//! A real BigQuery emulator for the tests (PyPI `bqemulator`, installed into a virtualenv under
//! the target directory on first use), a fault-injecting TCP proxy to put in front of it, and
//! reads through its REST API.
//!
//! Without Python or PyPI the tests are skipped with a loud message; in CI (`CI=true`) they
//! fail instead.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{REPO, Run};

pub const PROJECT: &str = "lorch-test";
/// The emulator, and the Prometheus client whose parser checks lorch's metrics file
/// (tests/it/status.rs).
const PACKAGES: [&str; 3] = ["bqemulator==1.4.0", "numpy", "prometheus_client==0.26.0"];

/// The venv's python with the emulator and the Prometheus parser installed, or `None` after a
/// loud message (locally).
pub fn python() -> Option<&'static Path> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON.get_or_init(install).as_deref()
}

fn install() -> Option<PathBuf> {
    if let Ok(python) = std::env::var("LORCH_TEST_BQEMULATOR_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bqemulator-venv");
    let python = venv.join("bin/python");
    // Named after what is installed: a venv from an older list is completed.
    let done = venv.join(format!(".installed-{}", PACKAGES.len()));
    // Test binaries may start together: one installs, the others wait for it.
    let lock = std::fs::File::create(venv.with_extension("lock")).unwrap();
    lock.lock().unwrap();
    if done.exists() {
        return Some(python);
    }
    eprintln!(
        "installing the BigQuery emulator ({}) into {}",
        PACKAGES.join(" "),
        venv.display()
    );
    let step = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        match out.status.success() {
            true => Ok(()),
            false => Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    };
    let installed = step(Command::new("python3").args(["-m", "venv"]).arg(&venv)).and_then(|()| {
        step(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PACKAGES),
        )
    });
    match installed {
        Ok(()) => {
            std::fs::write(&done, "").unwrap();
            Some(python)
        }
        Err(why) => unavailable(&why),
    }
}

fn unavailable<T>(why: &str) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the BigQuery emulator is required in CI and could not be set up: {why}");
    }
    eprintln!("\n!!! SKIPPING BigQuery emulator tests: {why} !!!\n");
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One emulator process.
pub struct Emulator {
    /// `http://127.0.0.1:PORT`, what `LORCH_BQ_ENDPOINT` takes.
    pub url: String,
    port: u16,
    data_dir: Option<PathBuf>,
    child: Mutex<Option<Child>>,
}

impl Emulator {
    /// The emulator this test binary shares (in memory); each test uses its own dataset.
    pub fn shared() -> Option<&'static Emulator> {
        static SHARED: OnceLock<Option<Emulator>> = OnceLock::new();
        SHARED.get_or_init(|| Emulator::start(None)).as_ref()
    }

    /// A new emulator; with `data_dir` its tables survive a [`restart`](Self::restart).
    pub fn start(data_dir: Option<&Path>) -> Option<Emulator> {
        python()?;
        let port = free_port();
        let emulator = Emulator {
            url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir: data_dir.map(Path::to_owned),
            child: Mutex::new(None),
        };
        emulator.restart();
        Some(emulator)
    }

    /// Starts the process (again, on the same port) and waits until it answers.
    pub fn restart(&self) {
        let mut cmd = Command::new(python().unwrap());
        cmd.arg(Path::new(REPO).join("tests/emulator/launch.py"))
            .args(["start", "--project", PROJECT, "--log-level", "warning"])
            .args(["--rest-port", &self.port.to_string()])
            .args(["--grpc-port", &free_port().to_string()]);
        if let Some(dir) = &self.data_dir {
            cmd.arg("--persistent").arg("--data-dir").arg(dir);
        }
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("cannot start the BigQuery emulator");
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.get(&format!("/projects/{PROJECT}/datasets")).is_none() {
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            assert!(
                Instant::now() < deadline,
                "the emulator did not come up:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `COUNT(*)` and `COUNT(DISTINCT event_id)` of a table: equal when no row is there twice.
    pub fn counts(&self, dataset: &str, table: &str) -> (u64, u64) {
        let row = self
            .query(&format!(
                "SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM `{PROJECT}.{dataset}.{table}`"
            ))
            .remove(0);
        let number = |v: &Value| v.as_str().unwrap().parse().unwrap();
        (number(&row["n"]), number(&row["d"]))
    }

    /// Stops the process (SIGTERM, then waits for it).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            Command::new("kill")
                .arg(child.id().to_string())
                .status()
                .unwrap();
            child.wait().unwrap();
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/bigquery/v2{path}", self.url)
    }

    fn get(&self, path: &str) -> Option<Value> {
        let mut response = ureq::get(&self.api(path)).call().ok()?;
        response.body_mut().read_json().ok()
    }

    /// POSTs `body` and returns the answer, failing the test on an error status.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let mut response = ureq::post(&self.api(path))
            .config()
            .http_status_as_error(false)
            .build()
            .send_json(body)
            .unwrap();
        let status = response.status();
        let answer: Value = response.body_mut().read_json().unwrap();
        assert!(status.is_success(), "POST {path}: {status} {answer}");
        answer
    }

    /// Creates a dataset with a name unique to the calling test.
    pub fn dataset(&self, name: &str) -> String {
        let dataset = format!("{name}_{}", free_port());
        self.post(
            &format!("/projects/{PROJECT}/datasets"),
            &json!({"datasetReference": {"projectId": PROJECT, "datasetId": dataset}}),
        );
        dataset
    }

    /// Runs `sql` with `jobs.query` and returns the rows as column -> value (all strings, as
    /// the REST API gives them; NULL is `null`).
    pub fn query(&self, sql: &str) -> Vec<Map<String, Value>> {
        let answer = self.post(
            &format!("/projects/{PROJECT}/queries"),
            &json!({"query": sql, "useLegacySql": false, "timeoutMs": 30000}),
        );
        assert_eq!(answer["jobComplete"], true, "{answer}");
        let names: Vec<String> = answer["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_owned())
            .collect();
        let rows = answer["rows"].as_array().cloned().unwrap_or_default();
        rows.iter()
            .map(|row| {
                names
                    .iter()
                    .cloned()
                    .zip(row["f"].as_array().unwrap().iter().map(|c| c["v"].clone()))
                    .collect()
            })
            .collect()
    }

    /// A [`Proxy`] in front of this emulator.
    pub fn proxy(&self, default: Fault) -> Proxy {
        Proxy::start(Some(self.url.replace("http://", "")), default)
    }

    pub fn table_exists(&self, dataset: &str, table: &str) -> bool {
        self.get(&format!(
            "/projects/{PROJECT}/datasets/{dataset}/tables/{table}"
        ))
        .is_some()
    }

    /// Every row of `dataset.table`.
    pub fn rows(&self, dataset: &str, table: &str) -> Vec<Map<String, Value>> {
        self.query(&format!(
            "SELECT * FROM `{PROJECT}.{dataset}.{table}` ORDER BY created_at"
        ))
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The environment that points lorch at `endpoint` for `dataset.event_log`, with no
/// credentials (the emulator takes none).
pub fn vars(endpoint: &str, dataset: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LORCH_BQ_ENDPOINT", endpoint.to_owned()),
        ("BQ_EVENTS_DATASET", dataset.to_owned()),
        ("BQ_EVENTS_TABLE", "event_log".to_owned()),
        ("BQ_PROJECT", PROJECT.to_owned()),
        ("LORCH_BQ_FLUSH_TIMEOUT", "2s".to_owned()),
    ]
}

/// `lorch ARGS` in `env` with the extra variables `vars`.
pub fn run(env: &super::Env, vars: &[(&str, String)], args: &[&str]) -> Run {
    let mut cmd = env.cmd(args);
    for (name, value) in vars {
        cmd.env(name, value);
    }
    Run::from(cmd.output().unwrap())
}

/// What the proxy does with a connection.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Pass it through to the upstream.
    Forward,
    /// Read the request, then close without answering.
    Drop,
    /// Answer with this status and body, then close.
    Respond(u16, String),
    /// Answer with this status and an HTML page, as a proxy or a load balancer does.
    Page(u16, String),
    /// Pass it through, but hold the upstream's answer back this long: a slow server, whose
    /// answer comes after a client that gave up early.
    Slow(Duration),
}

impl Fault {
    /// A BigQuery-style error answer.
    pub fn status(code: u16) -> Fault {
        let body = json!({"error": {"code": code, "message": "injected by the test proxy",
            "errors": [{"reason": "backendError", "message": "injected"}], "status": "UNAVAILABLE"}});
        Fault::Respond(code, body.to_string())
    }
}

/// A TCP proxy that applies the next planned fault to each new connection (then `default`),
/// and keeps every byte it received so tests can look for headers.
pub struct Proxy {
    pub url: String,
    plan: Arc<Mutex<(VecDeque<Fault>, Fault)>>,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    /// A proxy to `upstream` (`host:port`, or `None` for a server that only answers).
    pub fn start(upstream: Option<String>, default: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let plan = Arc::new(Mutex::new((VecDeque::new(), default)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (thread_plan, thread_received) = (plan.clone(), received.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let fault = {
                    let mut plan = thread_plan.lock().unwrap();
                    plan.0.pop_front().unwrap_or_else(|| plan.1.clone())
                };
                let received = thread_received.clone();
                let upstream = upstream.clone();
                std::thread::spawn(move || serve(client, fault, upstream, received));
            }
        });
        Proxy {
            url,
            plan,
            received,
        }
    }

    /// Faults for the next connections, in order.
    pub fn then(&self, faults: impl IntoIterator<Item = Fault>) {
        self.plan.lock().unwrap().0.extend(faults);
    }

    /// What every connection gets once the planned faults are used up.
    pub fn always(&self, fault: Fault) {
        let mut plan = self.plan.lock().unwrap();
        plan.0.clear();
        plan.1 = fault;
    }

    /// Everything clients sent, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    /// How many `insertAll` requests clients sent.
    pub fn inserts(&self) -> usize {
        self.received().matches("/insertAll HTTP/1.1").count()
    }
}

fn serve(
    mut client: TcpStream,
    fault: Fault,
    upstream: Option<String>,
    received: Arc<Mutex<Vec<u8>>>,
) {
    match fault {
        Fault::Forward | Fault::Slow(_) => {
            let Ok(mut server) = TcpStream::connect(upstream.unwrap()) else {
                return;
            };
            let (mut client_in, mut server_out) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let upload = std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = client_in.read(&mut buf) {
                    received.lock().unwrap().extend_from_slice(&buf[..n]);
                    if server_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server_out.shutdown(Shutdown::Write);
            });
            if let Fault::Slow(delay) = fault {
                let mut first = [0u8; 1];
                if let Ok(1) = server.read(&mut first) {
                    std::thread::sleep(delay);
                    let _ = client.write_all(&first);
                }
            }
            let _ = std::io::copy(&mut server, &mut client);
            let _ = client.shutdown(Shutdown::Both);
            let _ = upload.join();
        }
        Fault::Drop => {
            read_request(&mut client, &received);
            let _ = client.shutdown(Shutdown::Both);
        }
        Fault::Respond(code, body) => {
            answer(&mut client, &received, code, "application/json", &body)
        }
        Fault::Page(code, page) => answer(&mut client, &received, code, "text/html", &page),
    }
}

/// Reads the request, answers with `code` and `body`, and closes.
fn answer(client: &mut TcpStream, received: &Mutex<Vec<u8>>, code: u16, kind: &str, body: &str) {
    read_request(client, received);
    let _ = write!(
        client,
        "HTTP/1.1 {code} Injected\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.shutdown(Shutdown::Both);
}

/// Reads one HTTP request (head and `Content-Length` body).
fn read_request(stream: &mut TcpStream, received: &Mutex<Vec<u8>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 16384];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                break;
            }
        }
    }
    received.lock().unwrap().extend_from_slice(&data);
}
