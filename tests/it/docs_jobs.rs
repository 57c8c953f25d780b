//! The docs work as written: docs/jobs.md is a working tutorial (its `file=` code blocks,
//! written into a new crate outside the workspace, build a plugin that lorch lists, shows and
//! runs), and the README's Install and cron sections work under a umask of 002 and cron's
//! environment.

use std::path::Path;
use std::process::Command;

use crate::common;
use crate::common::Env;

/// The code blocks of `markdown` whose info string names a file: (file, contents).
fn file_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => {
                if let Some(file) = info
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("file="))
                {
                    current = Some((file.to_owned(), String::new()));
                }
            }
            (Some(_), Some("")) => blocks.push(current.take().unwrap()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

#[test]
fn the_plugin_written_from_docs_jobs_md_is_listed_shown_and_run() {
    let markdown = std::fs::read_to_string(Path::new(common::REPO).join("docs/jobs.md")).unwrap();
    let blocks = file_blocks(&markdown);
    let files: Vec<&str> = blocks.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(files, ["Cargo.toml", "src/lib.rs", "src/tests.rs"]);

    // The tutorial's crate sits next to a lorch checkout; here the path points at this one.
    let krate = tempfile::TempDir::new().unwrap();
    for (file, text) in &blocks {
        let text = text.replace(
            "../lorch/plugin-api",
            &format!("{}/plugin-api", common::REPO),
        );
        std::fs::create_dir_all(krate.path().join(file).parent().unwrap()).unwrap();
        std::fs::write(krate.path().join(file), text).unwrap();
    }
    // Same dependency versions as the workspace, so the build reuses what is compiled.
    std::fs::copy(
        Path::new(common::REPO).join("Cargo.lock"),
        krate.path().join("Cargo.lock"),
    )
    .unwrap();
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docs-target");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(krate.path())
        .args(["build", "--quiet", "--target-dir"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the crate from docs/jobs.md does not build"
    );
    // Its unit tests, written with lorch_plugin_api::testing, pass without lorch.
    let tested = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(krate.path())
        .args(["test", "--quiet", "--target-dir"])
        .arg(&target)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&tested.stdout);
    assert!(
        tested.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    assert!(report.contains("2 passed"), "{report}");

    let plugins = tempfile::TempDir::new().unwrap();
    let lib = common::lib_name("notes");
    std::fs::copy(target.join("debug").join(&lib), plugins.path().join(&lib)).unwrap();
    let env = Env::new(&[plugins.path()]);

    let out = env.run(&["jobs", "list"]);
    out.code(0);
    assert_eq!(out.stdout, "notes:\n  count_lines\n");

    // The `jobs show` output printed in the tutorial is the real one, but for the location.
    let out = env.run(&["jobs", "show", "notes", "count_lines"]);
    out.code(0);
    let shown = markdown
        .split("$ lorch jobs show notes count_lines\n")
        .nth(1)
        .and_then(|rest| rest.split("\n$ ").next())
        .unwrap();
    let expected = shown.replace(
        "/home/you/.local/share/lorch/plugins/libnotes.so",
        &plugins.path().join(&lib).display().to_string(),
    );
    assert_eq!(out.stdout, format!("{expected}\n"));

    let notes = env.home.path().join("notes.txt");
    std::fs::write(&notes, "TODO buy milk\ndone: taxes\ntodo: call Bob\n").unwrap();
    let file = format!("file={}", notes.display());
    let out = env.run(&[
        "run-job",
        "notes",
        "count_lines",
        "--param",
        &file,
        "--param",
        "ignore_case=true",
    ]);
    out.code(0);
    assert!(
        out.stdout.starts_with("✓ notes/count_lines completed in "),
        "{out:?}"
    );
    let events = env.events(&out.run_id());
    assert_eq!(events[1]["event_type"], "notes.counted");
    assert_eq!(events[1]["payload"]["read"], 3);
    assert_eq!(events[1]["payload"]["matched"], 2);

    let out = env.run(&[
        "run-job",
        "notes",
        "count_lines",
        "--param",
        "file=/no/such/notes.txt",
    ]);
    out.code(1);
    out.stderr_has("✗ notes/count_lines failed: cannot read /no/such/notes.txt: No such file");

    let out = env.run(&["run-job", "notes", "count_lines"]);
    out.code(2);
    assert!(
        out.stderr
            .contains("notes/count_lines requires --param file=<string> (The notes file to read)")
    );
}

/// The lines of the first code block of `language` after `heading` in `markdown`.
fn block_after<'a>(markdown: &'a str, heading: &str, language: &str) -> Vec<&'a str> {
    let section = &markdown[markdown.find(heading).expect(heading)..];
    let fence = format!("```{language}\n");
    let start = section.find(&fence).expect("no such block") + fence.len();
    let end = start + section[start..].find("```").unwrap();
    section[start..end].lines().collect()
}

#[test]
fn the_readme_install_and_cron_lines_work_under_umask_002_and_crons_environment() {
    let readme = std::fs::read_to_string(Path::new(common::REPO).join("README.md")).unwrap();
    let install = block_after(&readme, "## Install", "sh");
    let cron = block_after(&readme, "## Running from cron", "cron");
    let home = tempfile::TempDir::new().unwrap();
    // `cargo install --locked --path .` (too slow for a test): the binary where it puts it.
    let bin = home.path().join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_lorch"), bin.join("lorch")).unwrap();
    // Nothing of this machine's environment: only what a login shell or cron would set.
    let sh = |path: &str, line: &str| {
        let out = Command::new("/bin/sh")
            .args(["-c", &format!("umask 002; {line}")])
            .env_clear()
            .env("PATH", path)
            .env("HOME", home.path())
            .env("SHELL", "/bin/sh")
            .current_dir(home.path())
            .output()
            .unwrap();
        common::Run::from(out)
    };
    // Your shell after `cargo install`: ~/.cargo/bin on the PATH. The plugins were built by
    // the test harness, not into target/release.
    let shell_path = format!("{}:/usr/bin:/bin", bin.display());
    let built = format!("{}/", common::built().display());
    for line in install.iter().filter(|l| l.starts_with("lorch ")) {
        let line = line
            .split('#')
            .next()
            .unwrap()
            .replace("target/release/", &built);
        let out = sh(&shell_path, &line);
        assert_eq!(out.code, 0, "{line}: {out:?}");
        assert_eq!(out.stderr, "", "{line}: {out:?}");
    }
    let listed = sh(&shell_path, "lorch jobs list");
    listed.stdout_has("ingester:\n  extract_gmail");

    // cron: its PATH, the line as written after the five time fields.
    let line = cron.iter().find(|l| !l.starts_with('#')).unwrap();
    let command = line
        .split_whitespace()
        .skip(5)
        .collect::<Vec<_>>()
        .join(" ");
    let out = sh("/usr/bin:/bin", &command);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", ""),
        "a run that completes mails nothing: {out:?}"
    );
    let runs = sh(&shell_path, "lorch runs list --json");
    let runs = runs.json();
    let run = &runs["runs"][0];
    assert_eq!(run["status"], "completed", "{runs}");
    assert_eq!(run["account"], "acct1-personal", "{runs}");

    // A failing run from the same line does mail: a mailbox that is not there.
    let failing = format!("{command} --param mailbox=/nonexistent.jsonl");
    let out = sh("/usr/bin:/bin", &failing);
    out.code(1);
    out.stderr_has("✗ ingester/extract_gmail failed");
}

/// The TOML of each document that shows the configuration file, its blocks together, is a
/// file `config check` accepts with the example plugins: the jobs exist and take the params.
#[test]
fn the_configuration_examples_of_the_docs_pass_config_check() {
    let plugins = common::plugin_dir(&["ingester", "canonizer"]);
    let env = common::Env::new(&[plugins.path()]);
    for doc in [
        "README.md",
        "docs/configuration.md",
        "docs/schedules.md",
        "docs/pipelines.md",
        "docs/metrics.md",
    ] {
        let markdown = std::fs::read_to_string(Path::new(common::REPO).join(doc)).unwrap();
        let blocks: Vec<&str> = markdown
            .split("```toml\n")
            .skip(1)
            .map(|rest| rest.split("```").next().unwrap())
            .collect();
        assert!(!blocks.is_empty(), "{doc} has no TOML example");
        let file = env.home.path().join("lorch.toml");
        std::fs::write(&file, blocks.concat()).unwrap();
        let out = env.run(&["--config", file.to_str().unwrap(), "config", "check"]);
        assert_eq!(out.code, 0, "{doc}: {out:?}");
    }
}
