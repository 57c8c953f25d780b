//! Jobs for lorch's integration tests (package `testkit`). Each one does one observable thing.

use lorch_plugin_api::{Args, Context, JobError, JobResult, ParamSpec, json};

lorch_plugin_api::export_plugin!();

lorch_plugin_api::job! {
    /// Emits `testkit.args` with every argument it received.
    package = "testkit",
    name = "echo",
    params = [
        ParamSpec::int("n").help("An integer"),
        ParamSpec::float("ratio").help("A float"),
        ParamSpec::bool("flag").default("true").help("A boolean with a default"),
        ParamSpec::string("label").help("Some text"),
    ],
    run = echo,
}

fn echo(ctx: &Context, args: &Args) -> JobResult {
    ctx.emit(
        "testkit.args",
        json!({
            "run_id": ctx.run_id(),
            "account": args.account,
            "since": args.since,
            "until": args.until,
            "params": args.params,
        }),
    )
}

lorch_plugin_api::job! {
    /// Requires `--param n=INT`.
    package = "testkit",
    name = "needs_param",
    params = [ParamSpec::int("n").required().help("Required integer")],
    run = needs_param,
}

fn needs_param(ctx: &Context, args: &Args) -> JobResult {
    ctx.emit("testkit.n", json!({ "n": args.params.int("n") }))
}

lorch_plugin_api::job! {
    /// Emits `--param count=N` events of type `testkit.tick`, one store write each.
    package = "testkit",
    name = "emit_many",
    params = [ParamSpec::int("count").default("10").help("How many events")],
    run = emit_many,
}

fn emit_many(ctx: &Context, args: &Args) -> JobResult {
    for i in 0..args.params.int("count").unwrap_or(10) {
        ctx.emit_idempotent("testkit.tick", &format!("tick-{i}"), json!({ "i": i }))?;
    }
    Ok(())
}

lorch_plugin_api::job! {
    /// Emits `--param count=N` events from each of `--param threads=T` threads at once.
    package = "testkit",
    name = "emit_threads",
    params = [
        ParamSpec::int("threads").default("4").help("How many threads"),
        ParamSpec::int("count").default("10").help("Events per thread"),
    ],
    run = emit_threads,
}

fn emit_threads(ctx: &Context, args: &Args) -> JobResult {
    let count = args.params.int("count").unwrap_or(10);
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..args.params.int("threads").unwrap_or(4))
            .map(|thread| {
                scope.spawn(move || -> JobResult {
                    for i in 0..count {
                        ctx.emit("testkit.thread", json!({ "thread": thread, "i": i }))?;
                    }
                    Ok(())
                })
            })
            .collect();
        threads
            .into_iter()
            .try_for_each(|t| t.join().expect("an emitting thread panicked"))
    })
}

lorch_plugin_api::job! {
    /// Emits one event, then returns an error with a cause.
    package = "testkit",
    name = "fail",
    run = fail,
}

fn fail(ctx: &Context, _: &Args) -> JobResult {
    ctx.emit("testkit.before_failure", json!({}))?;
    Err(JobError::new("connection reset").context("fetching page 3"))
}

lorch_plugin_api::job! {
    /// Emits one event, then panics.
    package = "testkit",
    name = "panic",
    run = panic,
}

fn panic(ctx: &Context, _: &Args) -> JobResult {
    ctx.emit("testkit.before_panic", json!({}))?;
    panic!("boom")
}

lorch_plugin_api::job! {
    /// Tries to emit a reserved lifecycle event type and reports what lorch answered.
    package = "testkit",
    name = "emit_reserved",
    run = emit_reserved,
}

fn emit_reserved(ctx: &Context, _: &Args) -> JobResult {
    ctx.emit("job.completed", json!({}))
}

// Faults: each ends its process in a way lorch's supervisor must turn into one terminal event.

lorch_plugin_api::job! {
    /// Emits `--param events=N` events, then aborts the process (SIGABRT).
    package = "testkit",
    name = "abort",
    params = [ParamSpec::int("events").default("0").help("Events to emit first")],
    run = abort,
}

fn abort(ctx: &Context, args: &Args) -> JobResult {
    emit_before(ctx, args)?;
    std::process::abort()
}

lorch_plugin_api::job! {
    /// Emits `--param events=N` events, then writes through a null pointer (SIGSEGV).
    package = "testkit",
    name = "segfault",
    params = [ParamSpec::int("events").default("0").help("Events to emit first")],
    run = segfault,
}

fn segfault(ctx: &Context, args: &Args) -> JobResult {
    emit_before(ctx, args)?;
    // SAFETY: none; crashing is this job's purpose.
    unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
    Ok(())
}

lorch_plugin_api::job! {
    /// Emits `--param events=N` events, then calls `exit(7)`.
    package = "testkit",
    name = "exit",
    params = [ParamSpec::int("events").default("0").help("Events to emit first")],
    run = exit,
}

fn exit(ctx: &Context, args: &Args) -> JobResult {
    emit_before(ctx, args)?;
    std::process::exit(7)
}

fn emit_before(ctx: &Context, args: &Args) -> JobResult {
    for i in 0..args.params.int("events").unwrap_or(0) {
        ctx.emit("testkit.before_fault", json!({ "i": i }))?;
    }
    Ok(())
}

lorch_plugin_api::job! {
    /// Sleeps `--param seconds=N`, returning early with an error when cancelled.
    package = "testkit",
    name = "sleep",
    params = [ParamSpec::float("seconds").default("60").help("How long to sleep")],
    run = sleep,
}

fn sleep(ctx: &Context, args: &Args) -> JobResult {
    let end = std::time::Instant::now()
        + std::time::Duration::from_secs_f64(args.params.float("seconds").unwrap_or(60.0));
    ctx.emit("testkit.sleeping", json!({ "pid": std::process::id() }))?;
    while std::time::Instant::now() < end {
        if ctx.is_cancelled() {
            ctx.emit("testkit.noticed_cancellation", json!({}))?;
            return Err(JobError::new("cancelled"));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
}

lorch_plugin_api::job! {
    /// Ignores SIGTERM and cancellation, and sleeps for ten minutes.
    package = "testkit",
    name = "hang",
    run = hang,
}

fn hang(ctx: &Context, _: &Args) -> JobResult {
    ignore_sigterm();
    ctx.emit("testkit.hanging", json!({ "pid": std::process::id() }))?;
    std::thread::sleep(std::time::Duration::from_secs(600));
    Ok(())
}

lorch_plugin_api::job! {
    /// Starts `sleep 600` as a grandchild of lorch, records its pid, and hangs ignoring SIGTERM.
    package = "testkit",
    name = "grandchild",
    run = grandchild,
}

fn grandchild(ctx: &Context, _: &Args) -> JobResult {
    ignore_sigterm();
    let child = std::process::Command::new("sleep").arg("600").spawn()?;
    ctx.emit(
        "testkit.grandchild",
        json!({ "pid": child.id(), "worker": std::process::id() }),
    )?;
    std::thread::sleep(std::time::Duration::from_secs(600));
    Ok(())
}

fn ignore_sigterm() {
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
}

lorch_plugin_api::job! {
    /// Fails until it has been attempted `--param succeed_on=N` times (counted in `--param
    /// counter=FILE`), then succeeds.
    package = "testkit",
    name = "flaky",
    params = [
        ParamSpec::string("counter").required().help("File counting the attempts"),
        ParamSpec::int("succeed_on").default("3").help("The attempt that succeeds"),
    ],
    run = flaky,
}

fn flaky(ctx: &Context, args: &Args) -> JobResult {
    let counter = args.params.string("counter").unwrap_or_default();
    let seen: i64 = std::fs::read_to_string(counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
        + 1;
    std::fs::write(counter, seen.to_string())?;
    ctx.emit(
        "testkit.attempt",
        json!({ "seen": seen, "attempt": ctx.attempt() }),
    )?;
    if seen < args.params.int("succeed_on").unwrap_or(3) {
        return Err(JobError::new(format!("attempt {seen} fails")));
    }
    Ok(())
}

lorch_plugin_api::job! {
    /// Fails with an error marked permanent.
    package = "testkit",
    name = "fail_permanently",
    run = fail_permanently,
}

fn fail_permanently(_: &Context, _: &Args) -> JobResult {
    Err(JobError::new("bad credentials").permanent())
}

lorch_plugin_api::job! {
    /// Closes every file descriptor it inherited (as a careless daemonizing job would), then
    /// emits `--param count=N` events and returns.
    package = "testkit",
    name = "close_fds",
    params = [ParamSpec::int("count").default("100").help("How many events")],
    run = close_fds,
}

fn close_fds(ctx: &Context, args: &Args) -> JobResult {
    for fd in 3..4096 {
        // SAFETY: closing descriptors this process does not use itself; lorch's are among them
        // on purpose.
        unsafe { libc::close(fd) };
    }
    // A file the job opens now takes the lowest free number, where lorch's channel was.
    let scratch = std::env::temp_dir().join(format!("testkit-close-fds-{}", std::process::id()));
    let file = std::fs::File::create(&scratch)?;
    for i in 0..args.params.int("count").unwrap_or(100) {
        ctx.emit("testkit.tick", json!({ "i": i }))?;
    }
    drop(file);
    let written = std::fs::read(&scratch)?.len();
    std::fs::remove_file(&scratch)?;
    ctx.emit(
        "testkit.scratch",
        json!({ "bytes_written_by_others": written }),
    )
}

lorch_plugin_api::job! {
    /// Emits `testkit.waiting`, waits until the file `--param go=FILE` exists, then emits
    /// `--param count=N` events, counting those lorch refused, and reports the count last.
    package = "testkit",
    name = "emit_when",
    params = [
        ParamSpec::string("go").required().help("The file that starts the second half"),
        ParamSpec::int("count").default("100").help("How many events after the wait"),
    ],
    run = emit_when,
}

fn emit_when(ctx: &Context, args: &Args) -> JobResult {
    ctx.emit("testkit.waiting", json!({}))?;
    let go = args.params.string("go").unwrap_or_default();
    while !std::path::Path::new(go).exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let refused = (0..args.params.int("count").unwrap_or(100))
        .filter(|i| ctx.emit("testkit.tick", json!({ "i": i })).is_err())
        .count();
    std::fs::write(format!("{go}.refused"), refused.to_string())?;
    Ok(())
}

lorch_plugin_api::job! {
    #[doc = "Prints escape codes: \u{1b}[2J\u{1b}]0;pwned\u{7} in its description,"]
    /// its event type and its error message.
    package = "testkit",
    name = "ansi",
    run = ansi,
}

fn ansi(ctx: &Context, _: &Args) -> JobResult {
    ctx.emit("testkit.\u{1b}[31mred\u{7f}\u{202e}", json!({}))?;
    Err(JobError::new("\u{1b}[2J\u{1b}]0;pwned\u{7}screen cleared"))
}

lorch_plugin_api::job! {
    /// Upserts `count` objects `testkit_item` keyed `KEY_PREFIX` + a six-digit number from
    /// `from`, payload `{"i", "version"}`, in batches; every `twice`-th key is upserted again
    /// in the same run with `"again": true`. `then=segfault` crashes after the last upsert;
    /// `bad=empty_key|type_space|not_json` upserts one object lorch refuses.
    package = "testkit",
    name = "upsert",
    params = [
        ParamSpec::int("count").default("10").help("How many keys"),
        ParamSpec::int("from").default("0").help("The first key's number"),
        ParamSpec::int("twice").default("0").help("Upsert every N-th key twice (0: none)"),
        ParamSpec::string("version").default("v1").help("Put in every payload"),
        ParamSpec::string("key_prefix").default("k").help("Before each key's number"),
        ParamSpec::int("batch").default("1000").help("Objects per upsert call"),
        ParamSpec::string("then").help("segfault: crash after the last upsert"),
        ParamSpec::string("bad").help("empty_key, type_space or not_json"),
    ],
    run = upsert,
}

fn upsert(ctx: &Context, args: &Args) -> JobResult {
    use lorch_plugin_api::Object;
    let p = &args.params;
    match p.string("bad") {
        Some("empty_key") => ctx.upsert("testkit_item", "", json!({}))?,
        Some("type_space") => ctx.upsert("testkit item", "k", json!({}))?,
        Some("not_json") => {
            let map: std::collections::HashMap<(i32, i32), i32> = [((1, 2), 3)].into();
            ctx.upsert("testkit_item", "k", map)?
        }
        _ => {}
    }
    let (from, count) = (p.int("from").unwrap_or(0), p.int("count").unwrap_or(10));
    let twice = p.int("twice").unwrap_or(0);
    let version = p.string("version").unwrap_or("v1");
    let prefix = p.string("key_prefix").unwrap_or("k");
    let item = |i: i64, again: bool| {
        let mut payload = json!({ "i": i, "version": version });
        if again {
            payload["again"] = json!(true);
        }
        Object::new("testkit_item", format!("{prefix}{i:06}"), payload)
    };
    let mut batch = Vec::new();
    for i in from..from + count {
        batch.push(item(i, false));
        if twice > 0 && i % twice == 0 {
            batch.push(item(i, true));
        }
        if batch.len() as i64 >= p.int("batch").unwrap_or(1000) {
            ctx.upsert_objects(&batch)?;
            batch.clear();
        }
    }
    ctx.upsert_objects(&batch)?;
    if p.string("then") == Some("segfault") {
        // SAFETY: none; crashing is this job's purpose.
        unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
    }
    Ok(())
}

lorch_plugin_api::job! {
    /// Fails while the file `--param file=PATH` exists; completes otherwise.
    package = "testkit",
    name = "fail_if_exists",
    params = [ParamSpec::string("file").required().help("Fail while this file exists")],
    run = fail_if_exists,
}

fn fail_if_exists(_: &Context, args: &Args) -> JobResult {
    let file = args.params.string("file").unwrap_or_default();
    match std::path::Path::new(file).exists() {
        true => Err(JobError::new(format!("{file} exists"))),
        false => Ok(()),
    }
}

lorch_plugin_api::job! {
    /// Fails when its window starts at `--param fail_since=TIME` (RFC 3339) while the file
    /// `--param file=PATH` exists; completes otherwise.
    package = "testkit",
    name = "fail_on_window",
    params = [
        ParamSpec::string("fail_since").required().help("The start of the window that fails"),
        ParamSpec::string("file").required().help("Fail only while this file exists"),
    ],
    run = fail_on_window,
}

fn fail_on_window(_: &Context, args: &Args) -> JobResult {
    let fail_since = args.params.string("fail_since").unwrap_or_default();
    let file = args.params.string("file").unwrap_or_default();
    let starts = args.since.as_ref().map(|t| t.utc.to_rfc3339());
    let fail = fail_since
        .parse::<chrono::DateTime<chrono::Utc>>()
        .ok()
        .map(|t| t.to_rfc3339());
    if starts.is_some() && starts == fail && std::path::Path::new(file).exists() {
        return Err(JobError::new(format!("the window from {fail_since} fails")));
    }
    Ok(())
}

lorch_plugin_api::job! {
    /// Prints `--param stdout=N` lines to stdout and `--param stderr=N` to stderr, logs
    /// `--param logs=N` lines, writes `--param partial=TEXT` with no newline, then ends as
    /// `--param end=` says: `ok`, `fail` or `segfault`; `--param every=SECONDS` between stdout
    /// lines, `--param width=BYTES` pads each stdout line with `x` to that length.
    package = "testkit",
    name = "chatty",
    params = [
        ParamSpec::int("stdout").default("0").help("Lines to print to stdout"),
        ParamSpec::int("stderr").default("0").help("Lines to print to stderr"),
        ParamSpec::int("logs").default("0").help("Lines to log through the context"),
        ParamSpec::string("partial").help("Text to write last, with no newline"),
        ParamSpec::string("end").default("ok").help("ok, fail or segfault"),
        ParamSpec::float("every").default("0").help("Seconds to wait after each stdout line"),
        ParamSpec::int("width").default("0").help("Bytes of each stdout line, padded with x"),
    ],
    run = chatty,
}

fn chatty(ctx: &Context, args: &Args) -> JobResult {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let width = usize::try_from(args.params.int("width").unwrap_or(0)).unwrap_or(0);
    for i in 0..args.params.int("stdout").unwrap_or(0) {
        let line = format!("out {i}");
        writeln!(
            out,
            "{line}{}",
            "x".repeat(width.saturating_sub(line.len()))
        )
        .map_err(|e| JobError::new(e.to_string()))?;
        std::thread::sleep(std::time::Duration::from_secs_f64(
            args.params.float("every").unwrap_or(0.0),
        ));
    }
    for i in 0..args.params.int("stderr").unwrap_or(0) {
        eprintln!("err {i}");
    }
    for i in 0..args.params.int("logs").unwrap_or(0) {
        ctx.info(format_args!("log {i}"));
    }
    if let Some(partial) = args.params.string("partial") {
        out.write_all(partial.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| JobError::new(e.to_string()))?;
    }
    match args.params.string("end").unwrap_or("ok") {
        "fail" => {
            ctx.error("giving up");
            Err(JobError::new("chatty failed as asked"))
        }
        // SAFETY: none; crashing is what was asked.
        "segfault" => unsafe {
            std::ptr::null_mut::<u8>().write_volatile(1);
            Ok(())
        },
        _ => Ok(()),
    }
}

lorch_plugin_api::job! {
    /// Emits `testkit.env` with the value of the environment variable `--param name=NAME`
    /// (null when unset): what a job can see.
    package = "testkit",
    name = "env",
    params = [ParamSpec::string("name").required().help("The variable to read")],
    run = read_env,
}

fn read_env(ctx: &Context, args: &Args) -> JobResult {
    let name = args.params.string("name").unwrap_or_default();
    ctx.emit("testkit.env", json!({ "value": std::env::var(name).ok() }))?;
    Ok(())
}
