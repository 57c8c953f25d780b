//! Finding jobs (README, "Everywhere"; docs/plugin-abi.md): built-in and plugin jobs, broken plugin files, duplicates, C plugins.

use crate::common;
use crate::common::{Env, c_compiler, c_plugin, compile_c, plugin_dir};
use serde_json::{Value, json};
use std::path::Path;

#[test]
#[allow(clippy::too_many_lines)] // one scenario of many broken files, read top to bottom
fn broken_files_are_each_reported_once_and_never_hide_good_plugins() {
    let Some(cc) = c_compiler() else { return };
    let dir = plugin_dir(&["ingester"]);
    std::fs::write(dir.path().join("x.so"), "this is a text file\n").unwrap();
    compile_c(
        &cc,
        "int not_a_plugin(void) { return 1; }\n",
        &dir.path().join("libnoentry.so"),
        &[],
    );
    compile_c(
        &cc,
        &c_plugin("future", "job", 999),
        &dir.path().join("libfuture.so"),
        &[],
    );
    compile_c(
        &cc,
        &c_plugin("Bad Name", "job", 1),
        &dir.path().join("libbadmeta.so"),
        &[],
    );
    // A plugin linked against a library that is gone by the time lorch loads it.
    let gone = tempfile::TempDir::new().unwrap();
    compile_c(
        &cc,
        "int helper(void) { return 1; }\n",
        &gone.path().join("libgone.so"),
        &[],
    );
    let link = format!("-L{}", gone.path().display());
    let needs_gone = c_plugin("needs", "job", 1)
        + "extern int helper(void);\nint use_helper(void) { return helper(); }\n";
    compile_c(
        &cc,
        &needs_gone,
        &dir.path().join("libneedsgone.so"),
        &[&link, "-lgone"],
    );
    drop(gone);
    let env = Env::new(&[dir.path()]);
    let path = |name: &str| dir.path().join(name).display().to_string();

    let out = env.run(&["jobs", "list"]);
    out.code(0);
    assert_eq!(out.stdout, "ingester:\n  extract_gmail\n  extract_slack\n");
    let warnings: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(warnings.len(), 5, "{out:?}");
    assert!(warnings.iter().any(|w| w.starts_with(&format!(
        "warning: {}: not a loadable shared library",
        path("x.so")
    ))));
    assert!(warnings.iter().any(|w| w.starts_with(&format!(
        "warning: {}: no `lorch_plugin_entry` symbol",
        path("libnoentry.so")
    ))));
    assert!(warnings.contains(&format!(
        "warning: {}: plugin ABI version 999, but this lorch supports ABI version 1; rebuild the plugin against a matching lorch-plugin-api",
        path("libfuture.so")
    ).as_str()), "{out:?}");
    assert!(
        warnings.contains(
            &format!(
                "warning: {}: invalid metadata: package name \"Bad Name\" must match [a-z0-9_-]+",
                path("libbadmeta.so")
            )
            .as_str()
        ),
        "{out:?}"
    );
    assert!(
        warnings.iter().any(|w| {
            w.starts_with(&format!(
        "warning: {}: not a loadable shared library: libgone.so: cannot open shared object file",
        path("libneedsgone.so")
    ))
        }),
        "{out:?}"
    );

    let out = env.run(&["run-job", "ingester", "extract_gmail", "--since", "-7d"]);
    out.code(0);
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("warning: "))
            .count(),
        5,
        "{out:?}"
    );

    let out = env.run(&["plugins", "list", "--json"]);
    out.code(0);
    let doc = out.json();
    let plugins = doc["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 6);
    let by_path = |p: String| {
        plugins
            .iter()
            .find(|e| e["path"] == p.as_str())
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_path(path("libingester.so"))["jobs"],
        json!(["ingester/extract_gmail", "ingester/extract_slack"])
    );
    assert_eq!(by_path(path("libingester.so"))["abi_version"], 1);
    assert_eq!(by_path(path("libingester.so"))["error"], json!(null));
    assert!(
        by_path(path("libfuture.so"))["error"]
            .as_str()
            .unwrap()
            .contains("ABI version 999")
    );
    assert!(
        by_path(path("x.so"))["error"]
            .as_str()
            .unwrap()
            .contains("not a loadable shared library")
    );

    let out = env.run(&["plugins", "list"]);
    assert!(
        out.stdout.contains(&format!(
            "{} (ABI 1)\n  ingester/extract_gmail\n",
            path("libingester.so")
        )),
        "{out:?}"
    );
    assert!(
        out.stdout.contains(&format!(
            "{}\n  error: plugin ABI version 999",
            path("libfuture.so")
        )),
        "{out:?}"
    );
}

#[test]
fn a_package_whose_plugin_failed_to_load_is_an_environment_error() {
    let dir = tempfile::TempDir::new().unwrap();
    std::fs::write(dir.path().join("libingester.so"), "truncated").unwrap();
    let env = Env::new(&[dir.path()]);
    let out = env.run(&["run-job", "ingester", "extract_gmail"]);
    out.code(3);
    out.stderr_has("package `ingester` is not available: its plugin");
    assert_eq!(env.all_events().len(), 0);
}

#[test]
fn a_duplicate_job_is_reported_with_both_locations_and_the_first_wins() {
    let first = plugin_dir(&["ingester"]);
    let second = plugin_dir(&["ingester"]);
    let env = Env::new(&[first.path(), second.path()]);
    let out = env.run(&["jobs", "show", "ingester", "extract_gmail"]);
    out.code(0);
    let first_lib = first.path().join("libingester.so").display().to_string();
    let second_lib = second.path().join("libingester.so").display().to_string();
    assert!(
        out.stdout.contains(&format!("Location: {first_lib}\n")),
        "{out:?}"
    );
    assert!(out.stderr.contains(&format!(
        "warning: {second_lib}: duplicate job ingester/extract_gmail: ignored here, already provided by {first_lib}"
    )), "{out:?}");
    let out = env.run(&["plugins", "list"]);
    assert!(
        out.stdout.contains(&format!(
            "  ingester/extract_slack (ignored: already provided by {first_lib})"
        )),
        "{out:?}"
    );
}

#[test]
fn the_search_path_is_flags_then_lorch_plugin_path_then_the_default_directory() {
    let flag = plugin_dir(&["canonizer"]);
    let from_env = plugin_dir(&["ingester"]);
    let default = plugin_dir(&["testkit", "ingester"]);
    let env = Env::new(&[flag.path()]);
    let default_dir = env.home.path().join("data/lorch/plugins");
    std::fs::create_dir_all(default_dir.parent().unwrap()).unwrap();
    std::fs::rename(default.path(), &default_dir).unwrap();

    let out = env
        .lorch()
        .args(["jobs", "list", "--json"])
        .env(
            "LORCH_PLUGIN_PATH",
            format!("/nonexistent:{}", from_env.path().display()),
        )
        .run();
    out.code(0);
    let locations: Vec<(String, String)> = out.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["id"].as_str().unwrap().to_owned(),
                j["location"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let location_of = |id: &str| locations.iter().find(|(i, _)| i == id).unwrap().1.clone();
    assert!(
        location_of("canonizer/canonicalize_email").starts_with(&flag.path().display().to_string())
    );
    assert!(
        location_of("ingester/extract_gmail").starts_with(&from_env.path().display().to_string())
    );
    assert!(location_of("testkit/echo").starts_with(&default_dir.display().to_string()));
    // The default directory's ingester is a duplicate of the LORCH_PLUGIN_PATH one.
    out.stderr_has("duplicate job ingester/extract_gmail");
    // A directory the user named that does not exist is worth a warning.
    assert!(
        out.stderr.contains(
            "warning: /nonexistent: cannot read plugin directory (from LORCH_PLUGIN_PATH)"
        ),
        "{out:?}"
    );
}

#[test]
fn a_c_plugin_written_against_the_header_loads_and_runs() {
    let Some(cc) = c_compiler() else { return };
    let dir = tempfile::TempDir::new().unwrap();
    let source = std::fs::read_to_string(
        std::path::Path::new(common::REPO).join("examples/c-plugin/greeter.c"),
    )
    .unwrap();
    compile_c(&cc, &source, &dir.path().join("libgreeter.so"), &[]);
    let env = Env::new(&[dir.path()]);

    let out = env.run(&["jobs", "show", "greeter", "hello"]);
    out.code(0);
    out.stdout_has("  who=<string>  Whom to greet (default: world)\n");
    out.stdout_has("Description:\n  Greets someone from C.\n");

    let out = env.run(&["run-job", "greeter", "hello", "--param", "who=Ada"]);
    out.code(0);
    assert!(
        out.stderr.contains("hello, Ada"),
        "the job's log line reaches lorch's log: {out:?}"
    );
    let events = env.events(&out.run_id());
    assert_eq!(events[1]["event_type"], "greeter.hello");
    assert_eq!(events[1]["source_system"], "greeter/hello");
    assert_eq!(events[1]["payload"], json!({"who": "Ada"}));
    assert_eq!(events[2]["event_type"], "job.completed");
    // Its upsert, with the defaults lorch fills in: the package, the run's (absent) account.
    let object = env.run(&["objects", "show", "greeter:Ada", "--json"]);
    object.code(0);
    let object = object.json();
    assert_eq!(
        (
            &object["object_type"],
            &object["payload"],
            &object["source_system"]
        ),
        (
            &json!("greeter_greeting"),
            &json!({"who": "Ada"}),
            &json!("greeter")
        )
    );
    assert_eq!(object["connection_name"], Value::Null);

    let out = env.run(&["run-job", "greeter", "hello", "--param", "who=nobody"]);
    out.code(1);
    out.stderr_has("✗ greeter/hello failed: nobody to greet: who=nobody");
}

#[test]
fn a_custom_binary_has_its_jobs_built_in() {
    let env = Env::new(&[]);
    let binary = common::built().join("custom-lorch");
    let out = common::Run::from(env.cmd_with(&binary, &["jobs", "list"]).output().unwrap());
    out.code(0);
    assert_eq!(out.stdout, "canonizer:\n  canonicalize_email\n");
    let out = common::Run::from(
        env.cmd_with(
            &binary,
            &["jobs", "show", "canonizer", "canonicalize_email"],
        )
        .output()
        .unwrap(),
    );
    out.stdout_has("Location: built-in\n");
    let out = common::Run::from(
        env.cmd_with(&binary, &["run", "canonicalize_email"])
            .output()
            .unwrap(),
    );
    out.code(0);
    let events = env.events(&out.run_id());
    assert_eq!(events[1]["payload"]["distinct"], 5);
    assert_eq!(events[0]["payload"]["plugin"], "built-in");
}

#[test]
fn listing_never_runs_job_code() {
    // testkit/emit_many would write events if it ran; listing and showing must not.
    let dir = plugin_dir(&["testkit"]);
    let env = Env::new(&[dir.path()]);
    for args in [
        &["jobs", "list"][..],
        &["jobs", "show", "testkit", "emit_many"],
        &["plugins", "list"],
    ] {
        assert_eq!(env.run(args).code, 0);
    }
    assert!(
        !env.home.path().join("lorch/events.db").exists(),
        "listing opened the event store"
    );
}

#[test]
fn a_plugin_in_a_world_writable_directory_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = plugin_dir(&["ingester"]);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let env = Env::new(&[dir.path()]);

    let out = env.run(&["run-job", "ingester", "extract_gmail"]);
    out.code(3);
    let message = format!(
        "refusing to load it: the plugin directory {} is group- and world-writable (fix: chmod go-w {})",
        dir.path().display(),
        dir.path().display()
    );
    out.stderr_has(&message);
    out.stderr_has("pass --allow-insecure-plugins to load it anyway");
    assert_eq!(env.run(&["jobs", "list"]).stdout, "");

    let out = env.run(&[
        "--allow-insecure-plugins",
        "run-job",
        "ingester",
        "extract_gmail",
    ]);
    out.code(0);
}

#[test]
fn the_metadata_cache_never_shows_stale_jobs() {
    let Some(cc) = c_compiler() else { return };
    let dir = tempfile::TempDir::new().unwrap();
    let build = tempfile::TempDir::new().unwrap();
    let plugin = dir.path().join("libalpha.so");
    let compile = |job: &str| {
        let out = build.path().join(format!("{job}.so"));
        compile_c(&cc, &c_plugin("alpha", job, 1), &out, &[]);
        out
    };
    let (one, two, six) = (compile("one"), compile("two"), compile("six"));
    assert_eq!(
        std::fs::metadata(&one).unwrap().len(),
        std::fs::metadata(&two).unwrap().len()
    );
    let env = Env::new(&[dir.path()]);
    let list = || env.run(&["jobs", "list", "alpha"]).stdout;

    std::fs::copy(&one, &plugin).unwrap();
    assert_eq!(list(), "Jobs in alpha:\n  one\n");
    assert_eq!(list(), "Jobs in alpha:\n  one\n", "served from the cache");
    let cache = cache_files(&env);
    assert_eq!(cache.len(), 1, "one cache file per directory: {cache:?}");
    assert!(
        contains(&std::fs::read(&cache[0]).unwrap(), b"one"),
        "the cache was written"
    );

    // Overwritten in place: same inode, same size, new content.
    std::fs::copy(&two, &plugin).unwrap();
    assert_eq!(list(), "Jobs in alpha:\n  two\n");
    // Replaced by rename: a new inode.
    let staged = dir.path().join("staged.tmp");
    std::fs::copy(&six, &staged).unwrap();
    std::fs::rename(&staged, &plugin).unwrap();
    assert_eq!(list(), "Jobs in alpha:\n  six\n");
    // Broken after being cached: reported, not served from the cache.
    std::fs::write(&plugin, "garbage").unwrap();
    let out = env.run(&["jobs", "list"]);
    assert_eq!(out.stdout, "");
    out.stderr_has("not a loadable shared library");
    // Deleted: gone from the listing.
    std::fs::remove_file(&plugin).unwrap();
    assert_eq!(env.run(&["jobs", "list"]).stdout, "");
}

#[test]
fn plugins_install_checks_replaces_atomically_and_is_safe_under_any_umask() {
    use std::os::unix::fs::PermissionsExt;
    let built = plugin_dir(&["testkit"]);
    let library = built.path().join(common::lib_name("testkit"));
    let env = Env::new(&[]);
    let install = |files: &[&std::path::Path]| {
        // A umask that makes every new file group-writable, as on many workstations.
        let mut sh = std::process::Command::new("sh");
        sh.args([
            "-c",
            "umask 002; exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_lorch"),
        ]);
        let mut args = vec!["plugins", "install"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        common::Run::from(env.cmd_in(sh, &args).output().unwrap())
    };
    let out = install(&[&library]);
    out.code(0);
    let dir = env.home.path().join("data/lorch/plugins");
    let installed = dir.join(common::lib_name("testkit"));
    assert!(
        out.stdout.starts_with(&format!(
            "installed {} (ABI 1): testkit/",
            installed.display()
        )),
        "{out:?}"
    );
    assert_eq!(
        out.stderr, "",
        "lorch would refuse what it installed: {out:?}"
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dir), mode(&installed)), (0o755, 0o644));

    // Installing again while a job runs from the file leaves the running job alone.
    let running = common::start(&env, &["sleep", "--param", "seconds=2"], "testkit.sleeping");
    assert_eq!(install(&[&library]).code, 0);
    let out = common::Run::from(running.wait_with_output().unwrap());
    out.code(0);

    // A file that is not a plugin: nothing is installed, every problem named.
    let junk = built.path().join(common::lib_name("junk"));
    std::fs::write(&junk, "not a library").unwrap();
    let out = install(&[&junk, &library]);
    out.code(2);
    assert!(
        out.stderr.contains("nothing was installed")
            && out.stderr.contains(&format!(
                "{} is not a plugin lorch can load",
                junk.display()
            )),
        "{out:?}"
    );
    assert!(!dir.join(common::lib_name("junk")).exists());
}

/// The plugin metadata cache's files (README, "Files").
fn cache_files(env: &Env) -> Vec<std::path::PathBuf> {
    let dir = env.home.path().join(".cache/lorch/plugins");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_command_reads_the_metadata_cache_of_its_own_search_path_only() {
    let Some(strace) = common::strace() else {
        return;
    };
    let big = plugin_dir(&["testkit", "ingester"]);
    let small = plugin_dir(&["canonizer"]);
    let env = Env::new(&[]);
    let list = |dir: &Path| env.run(&["--plugin-path", dir.to_str().unwrap(), "jobs", "list"]);
    assert_eq!(list(big.path()).code, 0);
    let big_cache = cache_files(&env);
    assert_eq!(big_cache.len(), 1, "{big_cache:?}");
    assert_eq!(list(small.path()).code, 0);
    assert_eq!(cache_files(&env).len(), 2);

    let trace = env.home.path().join("trace.txt");
    let mut traced = std::process::Command::new(strace);
    traced
        .args(["-e", "trace=openat", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_lorch"));
    let args = [
        "--plugin-path",
        small.path().to_str().unwrap(),
        "jobs",
        "list",
    ];
    let out = common::Run::from(env.cmd_in(traced, &args).output().unwrap());
    assert_eq!(out.stdout, "canonizer:\n  canonicalize_email\n", "{out:?}");
    let calls = std::fs::read_to_string(&trace).unwrap();
    let cache_opens: Vec<&str> = calls
        .lines()
        .filter(|l| l.contains(".cache/lorch/plugins/"))
        .collect();
    assert_eq!(cache_opens.len(), 1, "{calls}");
    assert!(
        !cache_opens[0].contains(big_cache[0].to_str().unwrap()),
        "{calls}"
    );
    assert!(
        !calls.contains(&big.path().display().to_string()),
        "nothing of the other directory is touched: {calls}"
    );
}

#[test]
fn a_damaged_metadata_cache_is_ignored_and_rewritten() {
    let dir = plugin_dir(&["ingester"]);
    let env = Env::new(&[dir.path()]);
    let expected = env.run(&["jobs", "show", "ingester", "extract_gmail"]);
    expected.code(0);
    let cache = cache_files(&env).pop().unwrap();
    let good = std::fs::read(&cache).unwrap();
    let mut huge_header = good.clone();
    huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut torn_metadata = good.clone();
    torn_metadata.truncate(good.len() - 10);
    for damaged in [
        Vec::new(),
        b"garbage".to_vec(),
        good[..good.len() / 2].to_vec(),
        huge_header,
        torn_metadata,
    ] {
        std::fs::write(&cache, &damaged).unwrap();
        let out = env.run(&["jobs", "show", "ingester", "extract_gmail"]);
        out.code(0);
        assert_eq!(out.stdout, expected.stdout, "{damaged:?}");
        assert_eq!(
            env.run(&["jobs", "show", "ingester", "extract_gmail"])
                .stdout,
            expected.stdout
        );
    }
}

#[test]
fn the_metadata_cache_is_private_and_an_open_one_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = plugin_dir(&["testkit"]);
    let env = Env::new(&[dir.path()]);
    // A umask that makes new files group-writable, as on many workstations.
    let mut sh = std::process::Command::new("sh");
    sh.args([
        "-c",
        "umask 002; exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_lorch"),
    ]);
    common::Run::from(env.cmd_in(sh, &["jobs", "list"]).output().unwrap()).code(0);
    let root = env.home.path().join(".cache/lorch/plugins");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700);
    let files = cache_files(&env);
    assert_eq!(files.len(), 1);
    assert_eq!(mode(&files[0]), 0o600);

    // A cache file replaced by a link (to a copy of itself) is not read: rewritten, not followed.
    let elsewhere = env.home.path().join("elsewhere.postcard");
    std::fs::copy(&files[0], &elsewhere).unwrap();
    std::fs::remove_file(&files[0]).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &files[0]).unwrap();
    env.run(&["jobs", "list"]).code(0).stderr_is("");
    assert!(
        !files[0].is_symlink(),
        "the link was replaced by lorch's own file"
    );

    // A cache directory others can write to: its files could be anyone's, so it is not used.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.run(&["jobs", "list", "testkit"]);
    out.code(0)
        .stderr_has("not using the plugin metadata cache")
        .stderr_has("chmod go-w");
    assert!(out.stdout.contains("  echo\n"), "{out:?}");
}
