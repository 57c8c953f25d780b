//! `lorch schedule install --cron | --systemd`: the lines that call `tick`, every path absolute
//! and quoted for where it goes.

use std::path::Path;

use crate::child::Lorch;
use crate::error::{Error, Exit, Result};
use crate::output::{self};

/// `lorch schedule install --cron | --systemd`: the lines that call `tick`, printed with how to
/// install them (nothing is installed). Every path is made absolute (cron runs from `$HOME`,
/// systemd from `/`) and quoted for where it goes: the shell of a cron line (where `%` ends
/// the command unless escaped), or a unit file (where `%` and `$` are specifiers).
pub fn install(lorch: &Lorch, systemd: bool) -> Result<Exit> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Environment(anyhow::anyhow!("cannot find lorch's own binary: {e}")))?;
    let quote = |text: &str| match systemd {
        true => unit_quote(text),
        false => cron_quote(text),
    };
    let path = |p: &Path| quote(&absolute(p).display().to_string());
    // What this command was told, the installed tick is told too.
    let mut exe = path(&exe);
    if let Some(file) = lorch.config {
        exe.push_str(&format!(" --config {}", path(file)));
    }
    for dir in lorch.plugin_path {
        exe.push_str(&format!(" --plugin-path {}", path(dir)));
    }
    if lorch.allow_insecure_plugins {
        exe.push_str(" --allow-insecure-plugins");
    }
    let vars: Vec<(&str, String)> = ["LORCH_HOME", "LORCH_CONFIG", "LORCH_PLUGIN_PATH"]
        .into_iter()
        .filter_map(|name| std::env::var_os(name).map(|v| (name, v)))
        .map(|(name, value)| {
            let paths = std::env::split_paths(&value).map(|p| absolute(&p));
            let value = std::env::join_paths(paths).unwrap_or(value);
            (name, value.to_string_lossy().into_owned())
        })
        .collect();
    // The shell takes `NAME='a b'` as an assignment, systemd `"NAME=a b"`.
    let cron_vars: String = vars
        .iter()
        .map(|(name, value)| format!("{name}={} ", cron_quote(value)))
        .collect();
    let unit_vars: String = vars
        .iter()
        .map(|(name, value)| format!("Environment={}\n", unit_quote(&format!("{name}={value}"))))
        .collect();
    let text = if systemd {
        format!(
            "# ~/.config/systemd/user/lorch-tick.service
[Unit]
Description=lorch: run the schedules of lorch.toml that are due

[Service]
Type=oneshot
{unit_vars}ExecStart={exe} tick --quiet

# ~/.config/systemd/user/lorch-tick.timer
[Unit]
Description=lorch tick every minute

[Timer]
OnCalendar=*-*-* *:*:00
Persistent=true

[Install]
WantedBy=timers.target

# Install: save the two files above, then
#   systemctl --user daemon-reload && systemctl --user enable --now lorch-tick.timer
# (loginctl enable-linger $USER keeps it running while you are logged out.)
"
        )
    } else {
        format!(
            "# Add with `crontab -e`: every minute, tick runs the schedules of lorch.toml that are
# due, and catches up on those missed while the machine was off or asleep.
* * * * * {cron_vars}{exe} tick --quiet
"
        )
    };
    output::print(&text)?;
    Ok(Exit::Success)
}

/// `path` from the root: as given when it is, else from the current directory (not resolved
/// further: a link the user named stays the link).
fn absolute(path: &Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// One word for the shell of a crontab line: single-quoted unless it is plain, with `%` escaped
/// (cron turns an unescaped one into a newline and the end of the command).
fn cron_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:+,@".contains(c);
    let word = match text.chars().all(plain) && !text.is_empty() {
        true => text.to_owned(),
        false => format!("'{}'", text.replace('\'', r"'\''")),
    };
    word.replace('%', r"\%")
}

/// One word of a systemd unit's `ExecStart=` or `Environment=`: double-quoted unless it is
/// plain, with `%` and `$` doubled (systemd reads them as specifiers and variables).
fn unit_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-=:+,@".contains(c);
    let escaped = text
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('%', "%%")
        .replace('$', "$$");
    match text.chars().all(plain) && !text.is_empty() {
        true => escaped,
        false => format!("\"{escaped}\""),
    }
}
