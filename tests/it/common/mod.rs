//! Shared by the integration tests: builds the example and test plugins once, runs `lorch` in
//! an isolated home, compiles C plugins.

pub mod bigquery;
pub mod nats;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Builds the plugin crates (and the custom binary) into a target directory of their own, once
/// per test binary; cargo's lock serializes test binaries that build at the same time. Returns
/// the directory holding the built artifacts.
pub fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugins-target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .current_dir(REPO)
            .args([
                "build",
                "--quiet",
                "-p",
                "ingester",
                "-p",
                "canonizer",
                "-p",
                "testkit",
                "-p",
                "custom-lorch",
            ])
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("cannot run cargo to build the test plugins");
        assert!(status.success(), "building the test plugins failed");
        target.join("debug")
    })
}

/// The file name of a Rust plugin crate's library: `libingester.so`.
pub fn lib_name(krate: &str) -> String {
    format!(
        "{}{krate}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// A fresh directory holding copies of the named plugin crates' libraries.
pub fn plugin_dir(crates: &[&str]) -> TempDir {
    let dir = TempDir::new().unwrap();
    for krate in crates {
        let name = lib_name(krate);
        std::fs::copy(built().join(&name), dir.path().join(&name)).unwrap();
    }
    dir
}

/// A fresh home with the testkit plugin: what most tests start from. Keep the directory alive
/// as long as the environment.
pub fn testkit_env() -> (TempDir, Env) {
    let plugins = plugin_dir(&["testkit"]);
    let env = Env::new(&[plugins.path()]);
    (plugins, env)
}

/// An isolated lorch environment: its own LORCH_HOME and XDG directories, no inherited plugin
/// path, so nothing from the machine leaks in.
pub struct Env {
    pub home: TempDir,
    pub plugins: Vec<PathBuf>,
}

impl Env {
    pub fn new(plugin_dirs: &[&Path]) -> Env {
        Env {
            home: TempDir::new().unwrap(),
            plugins: plugin_dirs.iter().map(|p| p.to_path_buf()).collect(),
        }
    }

    /// `lorch --plugin-path DIR... ARGS` in this environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_with(env!("CARGO_BIN_EXE_lorch"), args)
    }

    /// Another lorch binary (e.g. the custom one) in this environment.
    pub fn cmd_with(&self, binary: impl AsRef<Path>, args: &[&str]) -> Command {
        self.cmd_in(Command::new(binary.as_ref()), args)
    }

    /// `cmd` (a lorch binary, or a wrapper such as strace followed by one) with this
    /// environment, the plugin directories and `args` added.
    pub fn cmd_in(&self, mut cmd: Command, args: &[&str]) -> Command {
        let home = self.home.path();
        cmd.env("LORCH_HOME", home.join("lorch"))
            .env("HOME", home)
            .env("XDG_DATA_HOME", home.join("data"))
            .env("XDG_STATE_HOME", home.join("state"))
            .env_remove("LORCH_PLUGIN_PATH")
            .env_remove("LORCH_TRACE_ID")
            .env_remove("LORCH_CONFIG")
            .env_remove("LORCH_NOW")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("LORCH_LOG");
        // BigQuery only where a test asks for it.
        for name in [
            "BQ_EVENTS_DATASET",
            "BQ_EVENTS_TABLE",
            "BQ_PROJECT",
            "GOOGLE_CLOUD_PROJECT",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "CLOUDSDK_CONFIG",
            "LORCH_BQ_ENDPOINT",
            "LORCH_BQ_FLUSH_TIMEOUT",
        ] {
            cmd.env_remove(name);
        }
        for dir in &self.plugins {
            cmd.arg("--plugin-path").arg(dir);
        }
        cmd.args(args);
        cmd
    }

    /// Writes `text` as the default configuration file (`~/.config/lorch/lorch.toml`), and
    /// says where.
    pub fn write_config(&self, text: &str) -> PathBuf {
        let dir = self.home.path().join(".config/lorch");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("lorch.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    /// A lorch command line in this environment, built up then run:
    /// `env.lorch().args(["runs", "list"]).env("NO_COLOR", "1").run().code(0)`.
    pub fn lorch(&self) -> Lorch<'_> {
        Lorch {
            env: self,
            args: Vec::new(),
            vars: Vec::new(),
        }
    }

    /// Every event of a run, through `lorch events list --run ID --json`.
    pub fn events(&self, run_id: &str) -> Vec<Value> {
        let out = self.run(&["events", "list", "--run", run_id, "--json"]);
        out.code(0);
        out.json()["events"].as_array().unwrap().clone()
    }

    /// Every event in the store.
    pub fn all_events(&self) -> Vec<Value> {
        let out = self.run(&["events", "list", "--limit", "1000000", "--json"]);
        out.code(0);
        out.json()["events"].as_array().unwrap().clone()
    }
}

/// `lorch run-job testkit ARGS`, and the run's events.
pub fn run_testkit(env: &Env, args: &[&str]) -> (Run, Vec<Value>) {
    let mut full = vec!["run-job", "testkit"];
    full.extend_from_slice(args);
    let out = env.run(&full);
    let events = env.events(&out.run_id());
    (out, events)
}

/// The `event_type` of each event, in order.
pub fn types(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect()
}

/// A lorch command line being built (see [`Env::lorch`]).
pub struct Lorch<'a> {
    env: &'a Env,
    args: Vec<String>,
    vars: Vec<(String, String)>,
}

impl Lorch<'_> {
    pub fn args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn env(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.vars.push((name.to_owned(), value.as_ref().to_owned()));
        self
    }

    pub fn run(self) -> Run {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut cmd = self.env.cmd(&args);
        cmd.envs(self.vars);
        Run::from(cmd.output().unwrap())
    }
}

/// A finished lorch process.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Run {
    /// stdout as one JSON document (it must be nothing else).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    /// Asserts the exit code, showing the whole output when it differs.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(self.code, expected, "{self:?}");
        self
    }

    #[track_caller]
    pub fn stdout_is(&self, expected: &str) -> &Self {
        assert_eq!(self.stdout, expected, "{self:?}");
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, part: &str) -> &Self {
        assert!(
            self.stdout.contains(part),
            "stdout lacks {part:?}: {self:?}"
        );
        self
    }

    #[track_caller]
    pub fn stderr_is(&self, expected: &str) -> &Self {
        assert_eq!(self.stderr, expected, "{self:?}");
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, part: &str) -> &Self {
        assert!(
            self.stderr.contains(part),
            "stderr lacks {part:?}: {self:?}"
        );
        self
    }

    /// The run id named in the `✓`/`✗` line.
    pub fn run_id(&self) -> String {
        let text = format!("{}{}", self.stdout, self.stderr);
        let start = text
            .find("(run ")
            .unwrap_or_else(|| panic!("no run id in {self:?}"))
            + 5;
        text[start..start + 36].to_owned()
    }
}

/// strace, or `None` after a loud message outside CI; in CI a missing strace fails the test.
pub fn strace() -> Option<&'static str> {
    if Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("strace");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("strace is missing in CI: the tests that trace lorch cannot run");
    }
    eprintln!(
        "\n!!! SKIPPING: strace not found; install it to run the tests that trace lorch !!!\n"
    );
    None
}

/// The C compiler, or `None` after a loud message when there is none outside CI. In CI a
/// missing compiler fails the test.
pub fn c_compiler() -> Option<String> {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    if Command::new(&cc)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some(cc);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("no C compiler ({cc}) in CI: the C plugin tests cannot run");
    }
    eprintln!(
        "\n!!! SKIPPING: no C compiler ({cc}) found; install one (e.g. gcc) to run the C plugin tests !!!\n"
    );
    None
}

/// Compiles `source` into the shared library `out`, against the lorch plugin header; `extra`
/// goes to the compiler after the source (e.g. libraries to link).
pub fn compile_c(cc: &str, source: &str, out: &Path, extra: &[&str]) {
    let src = out.with_extension("c");
    std::fs::write(&src, source).unwrap();
    let output = Command::new(cc)
        .args(["-Wall", "-Werror", "-shared", "-fPIC", "-o"])
        .arg(out)
        .arg("-I")
        .arg(Path::new(REPO).join("plugin-api/include"))
        .arg(&src)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_file(src).unwrap();
}

/// The C source of a minimal plugin with one job `package/job` that emits `<package>.ran`,
/// declaring ABI version `abi`.
pub fn c_plugin(package: &str, job: &str, abi: u32) -> String {
    format!(
        r#"#include "lorch_plugin.h"
static const char METADATA[] = "{{\"jobs\": [{{\"package\": \"{package}\", \"name\": \"{job}\"}}]}}";
static const char EVENT[] = "{{\"event_type\": \"{package}.ran\"}}";
static LorchStr metadata(void) {{ LorchStr s = {{(const uint8_t *)METADATA, sizeof METADATA - 1}}; return s; }}
static int32_t run(const LorchHost *host, LorchStr job, LorchStr request) {{
    (void)job; (void)request;
    LorchStr s = {{(const uint8_t *)EVENT, sizeof EVENT - 1}};
    return host->emit(host->ctx, s) == LORCH_EMIT_OK ? LORCH_RUN_OK : LORCH_RUN_FAILED;
}}
static const LorchPluginHeader HEADER = {{ {abi}u, sizeof(LorchPluginHeader), metadata, run }};
const LorchPluginHeader *lorch_plugin_entry(void) {{ return &HEADER; }}
"#
    )
}

/// True when no live process has this pid (a zombie waiting for its reaper counts as gone).
pub fn gone(pid: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        let alive = state.is_some_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        });
        if !alive {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `lorch run-job testkit ARGS` in the background and waits until the store holds one
/// more `ready_event` than before.
pub fn start(env: &Env, args: &[&str], ready_event: &str) -> std::process::Child {
    start_with(env, &[], args, ready_event)
}

/// [`start`] with extra environment variables.
pub fn start_with(
    env: &Env,
    vars: &[(&str, String)],
    args: &[&str],
    ready_event: &str,
) -> std::process::Child {
    let count = || {
        env.all_events()
            .iter()
            .filter(|e| e["event_type"] == ready_event)
            .count()
    };
    let before = count();
    let mut full = vec!["run-job", "testkit"];
    full.extend_from_slice(args);
    let child = env
        .cmd(&full)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count() == before {
        assert!(Instant::now() < deadline, "{ready_event} never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

pub fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `path` with `suffix` appended to its file name (`events.db` and `-shm`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The processes whose environment has `name=value` (those this user may read).
pub fn processes_with_env(name: &str, value: &str) -> Vec<u32> {
    let wanted = format!("{name}={value}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            });
            alive
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == wanted.as_bytes()))
        })
        .collect()
}

/// `lorch backfill testkit/sleep` over two days of 30-second windows, its output piped, once
/// its first window's job is sleeping; and that job's pid.
#[allow(clippy::zombie_processes)] // the child goes back to the caller, who waits for it
pub fn backfill_sleeping(env: &Env) -> (std::process::Child, u64) {
    let mut backfill = env
        .cmd(&["backfill", "testkit/sleep", "--since", "2026-01-01"])
        .args([
            "--until",
            "2026-01-03",
            "--step",
            "1d",
            "--param",
            "seconds=30",
        ])
        .env("LORCH_NOW", "2026-06-01T00:00:00Z")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = env.all_events();
        if let Some(e) = events
            .iter()
            .find(|e| e["event_type"] == "testkit.sleeping")
        {
            return (backfill, e["payload"]["pid"].as_u64().unwrap());
        }
        if Instant::now() >= deadline {
            let _ = backfill.kill();
            let _ = backfill.wait();
            panic!("the window never started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
