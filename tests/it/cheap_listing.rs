//! Listing stays cheap (docs/performance.md): `jobs list` and `jobs show` start no async runtime (no threads), open no network
//! connection and read no credentials. Checked on the real process with strace.

use std::process::Command;

use crate::common;
use crate::common::{Env, plugin_dir, strace};

#[test]
fn listing_and_showing_open_no_socket_start_no_thread_and_read_no_credentials() {
    let Some(strace) = strace() else { return };
    let plugins = plugin_dir(&["ingester", "canonizer"]);
    let env = Env::new(&[plugins.path()]);
    let trace = env.home.path().join("trace.txt");
    for args in [
        &["jobs", "list"][..],
        &["jobs", "list", "--json"],
        &["jobs", "show", "ingester", "extract_gmail"],
    ] {
        let mut strace_lorch = Command::new(strace);
        strace_lorch
            .args([
                "-f",
                "-e",
                "trace=socket,connect,clone,clone3,fork,vfork,open,openat",
                "-o",
            ])
            .arg(&trace)
            .arg(env!("CARGO_BIN_EXE_lorch"))
            .env(
                "GOOGLE_APPLICATION_CREDENTIALS",
                env.home.path().join("key.json"),
            );
        let mut cmd = env.cmd_in(strace_lorch, args);
        let out = common::Run::from(cmd.output().unwrap());
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        let calls = std::fs::read_to_string(&trace).unwrap();
        // The plugin directory is read every time (the .so files only when not cached).
        let dir = plugins.path().display().to_string();
        assert!(
            calls.contains(&dir),
            "the trace missed the plugin directory: {calls}"
        );
        for forbidden in [
            "socket(",
            "connect(",
            "clone(",
            "clone3(",
            "fork(",
            "key.json",
            "gcloud",
            "application_default",
        ] {
            let hits: Vec<&str> = calls.lines().filter(|l| l.contains(forbidden)).collect();
            assert!(hits.is_empty(), "{args:?} made {forbidden}: {hits:#?}");
        }
    }
}
