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
