//! Example lorch plugin, package `ingester`: extracts messages from Gmail and Slack exports.
//!
//! Build it with `cargo build -p ingester`; lorch loads `target/debug/libingester.so` from a
//! plugin directory. Both jobs really read and filter their input: the sample exports under
//! `data/` are compiled in and used when no `--param` path is given.

mod export;

use lorch_plugin_api::{Args, Context, JobResult, Object, ParamSpec, json};

use export::Export;

lorch_plugin_api::export_plugin!();

lorch_plugin_api::job! {
    /// Extracts the Gmail messages of an account inside the requested time window.
    ///
    /// Reads a mailbox export (JSON Lines: id, account, date, from, subject), keeps the
    /// messages of `--account` (every account when not given) dated in `--since`/`--until`,
    /// stores each as a `gmail_message` object (idem key `gmail:ACCOUNT:ID`; `lorch objects
    /// list` shows them), and emits one `ingester.messages_extracted` event with the count and
    /// the message ids.
    ///
    /// Without `--param mailbox=PATH` it reads the sample mailbox bundled with this example,
    /// whose dates are shifted so its newest message is one hour old: `--since -7d` always
    /// finds mail.
    package = "ingester",
    name = "extract_gmail",
    params = [
        ParamSpec::string("mailbox").help("Mailbox export to read (JSON Lines); default: the bundled sample"),
        ParamSpec::int("limit").help("Stop after this many messages"),
    ],
    run = extract_gmail,
}

fn extract_gmail(ctx: &Context, args: &Args) -> JobResult {
    let export = Export::load(
        args.params.string("mailbox"),
        include_str!("../data/gmail.jsonl"),
        "date",
    )?;
    let limit = args
        .params
        .int("limit")
        .map_or(usize::MAX, |n| n.max(0) as usize);
    let messages: Vec<_> = export.select(args).take(limit).collect();
    for message in &messages {
        ctx.debug(format!("{} {}", message.at, message.record["subject"]));
    }
    // One upsert for the whole page: one call across the plugin boundary, one transaction.
    let objects: Vec<Object> = messages
        .iter()
        .map(|m| {
            let id = m.record["id"].as_str().unwrap_or_default();
            let account = m.record["account"].as_str().unwrap_or_default();
            Object::new(
                "gmail_message",
                format!("gmail:{account}:{id}"),
                m.record.clone(),
            )
            .external_id(id)
            .connection_name(account)
            .schema_ref("ingester.gmail_message.v1")
        })
        .collect();
    ctx.upsert_objects(&objects)?;
    ctx.info(format!(
        "extracted {} of {} messages from {}",
        messages.len(),
        export.len(),
        export.source
    ));
    ctx.emit(
        "ingester.messages_extracted",
        json!({
            "account": args.account,
            "source": export.source,
            "count": messages.len(),
            "message_ids": messages.iter().map(|m| &m.record["id"]).collect::<Vec<_>>(),
        }),
    )?;
    Ok(())
}

lorch_plugin_api::job! {
    /// Extracts the Slack messages of an account inside the requested time window.
    ///
    /// Reads a Slack export (JSON Lines: id, account, ts, channel, user, text), keeps the
    /// messages of `--account` in `--since`/`--until` (and of one channel with
    /// `--param channel=NAME`), and emits one `ingester.slack_extracted` event with the count
    /// per channel. Without `--param export=PATH` it reads the bundled sample.
    package = "ingester",
    name = "extract_slack",
    params = [
        ParamSpec::string("export").help("Slack export to read (JSON Lines); default: the bundled sample"),
        ParamSpec::string("channel").help("Only this channel, e.g. #deploys"),
    ],
    run = extract_slack,
}

fn extract_slack(ctx: &Context, args: &Args) -> JobResult {
    let export = Export::load(
        args.params.string("export"),
        include_str!("../data/slack.jsonl"),
        "ts",
    )?;
    let channel = args.params.string("channel");
    let mut per_channel = std::collections::BTreeMap::<String, u64>::new();
    for message in export.select(args) {
        let name = message.record["channel"].as_str().unwrap_or("?");
        if channel.is_none_or(|wanted| wanted == name) {
            *per_channel.entry(name.to_owned()).or_default() += 1;
        }
    }
    let count: u64 = per_channel.values().sum();
    ctx.info(format!(
        "extracted {count} Slack messages from {}",
        export.source
    ));
    ctx.emit(
        "ingester.slack_extracted",
        json!({ "account": args.account, "source": export.source, "count": count, "per_channel": per_channel }),
    )?;
    Ok(())
}
