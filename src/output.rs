//! Everything lorch prints for people goes through here, for two promises (README, "What lorch
//! guarantees"):
//!
//! - printing never panics and never changes an exit code: a closed pipe (`lorch jobs list |
//!   head -1`), a full disk or a closed stderr (`2>&-`, `2>/dev/full`) only lose the text;
//! - text that came from a plugin or a job (metadata, error messages, event types) cannot drive
//!   the terminal: control characters other than newline and tab, and the invisible characters
//!   that reorder text, are printed escaped (`\u{1b}`), as lorch's log lines already are. In
//!   JSON output they are JSON escapes (`\u001b`), so the document stays valid JSON.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};

/// Writes `text` to stdout. A closed pipe is not an error: the reader has what it wanted.
pub fn print(text: &str) -> anyhow::Result<()> {
    write_stdout(&clean(text, Style::Text))
}

/// Whether to colour what goes to a stream: only a terminal, and not with `NO_COLOR` set
/// (no-color.org) or `TERM=dumb`.
pub fn colours(terminal: bool) -> bool {
    terminal
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// Writes `text` to stdout as it is: for text lorch cleaned itself, with its own colours.
pub fn print_raw(text: &str) -> anyhow::Result<()> {
    write_stdout(text)
}

/// Rows in aligned columns under a header, two spaces apart, one line each.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .map(|cell| cell.chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

/// `1 request`, `2 requests`: a count and its noun, `many` unless there is one.
pub fn count(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// Writes one JSON document and a newline.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_stdout(&clean(&format!("{text}\n"), Style::Json))
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    gone(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    )
    .map(drop)
}

/// Output written piece by piece (a million events): buffered, cleaned, in constant memory,
/// and ended early without an error when the reader closes the pipe (`| head -1`).
pub struct Stream {
    out: io::BufWriter<io::StdoutLock<'static>>,
    style: Style,
    closed: bool,
}

impl Stream {
    /// A stream of text, or (`json`) of one JSON document.
    pub fn new(json: bool) -> Stream {
        Stream {
            out: io::BufWriter::with_capacity(64 << 10, io::stdout().lock()),
            style: if json { Style::Json } else { Style::Text },
            closed: false,
        }
    }

    /// Writes `text`; `false` once the reader has gone, so the caller stops producing more.
    pub fn write(&mut self, text: &str) -> anyhow::Result<bool> {
        if !self.closed {
            let text = clean(text, self.style);
            self.closed = gone(self.out.write_all(text.as_bytes()))?;
        }
        Ok(!self.closed)
    }

    /// Writes what is buffered: for output that waits between pieces (`runs logs --follow`).
    pub fn flush(&mut self) -> anyhow::Result<bool> {
        if !self.closed {
            self.closed = gone(self.out.flush())?;
        }
        Ok(!self.closed)
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        if !self.closed {
            gone(self.out.flush())?;
        }
        Ok(())
    }
}

/// Whether a write found the pipe closed; other failures are errors.
fn gone(written: io::Result<()>) -> anyhow::Result<bool> {
    match written {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// One line on stderr, cleaned; whatever stderr is, this neither fails nor panics.
pub fn stderr_line(args: fmt::Arguments<'_>) {
    let line = args.to_string();
    let _ = writeln!(io::stderr().lock(), "{}", clean(&line, Style::Text));
}

/// `eprintln!` that never panics and escapes control characters: see [`stderr_line`].
macro_rules! stderr {
    ($($arg:tt)*) => { $crate::output::stderr_line(format_args!($($arg)*)) };
}
pub(crate) use stderr;

/// A duration as people read it: `850ms`, `2.41s`, `3m 12s` (never `26ms 532us 156ns`).
pub fn round_duration(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.2}s", duration.as_secs_f64()),
        _ => humantime::format_duration(std::time::Duration::from_secs(duration.as_secs()))
            .to_string(),
    }
}

/// How an unsafe character is written.
#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// `\u{1b}`, as Rust and lorch's logs write it.
    Text,
    /// `\u001b`: JSON text only has such characters inside strings (its own syntax is ASCII),
    /// where this is the standard escape.
    Json,
}

/// `text` with every character that could drive a terminal escaped. Borrowed when there is
/// none, which is almost always.
pub fn clean(text: &str, style: Style) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match (unsafe_char(c), style) {
            (false, _) => out.push(c),
            (true, Style::Text) => out.extend(c.escape_unicode()),
            // Every unsafe character is in the Basic Multilingual Plane: four hex digits.
            (true, Style::Json) => out.push_str(&format!("\\u{:04x}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// C0 and C1 controls (ESC, CR, BEL, CSI...) but newline and tab, DEL, and the bidirectional
/// overrides and isolates that make text read differently from what it is.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::{Style, clean, round_duration};
    use std::time::Duration;

    #[test]
    fn durations_read_well() {
        assert_eq!(round_duration(Duration::from_micros(1500)), "1ms");
        assert_eq!(round_duration(Duration::from_nanos(26_532_156)), "26ms");
        assert_eq!(round_duration(Duration::from_millis(2414)), "2.41s");
        assert_eq!(round_duration(Duration::from_millis(192_700)), "3m 12s");
    }

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_borrowed() {
        let text = |s| clean(s, Style::Text);
        assert!(matches!(
            text("ok: 3 lines\n\tindented"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            text("\u{1b}[2J\u{1b}]0;pwned\u{7}done\r"),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}done\\u{d}"
        );
        assert_eq!(
            text("a\u{202e}b\u{9b}c\u{7f}"),
            "a\\u{202e}b\\u{9b}c\\u{7f}"
        );
        assert_eq!(text("naïve 日本"), "naïve 日本");
    }

    #[test]
    fn json_keeps_being_json() {
        // serde_json leaves DEL, C1 controls and the bidi overrides as they are.
        let value = serde_json::json!({"t": "a\u{7f}b\u{9b}c\u{202e}d\u{1b}e"});
        let printed = value.to_string();
        let cleaned = clean(&printed, Style::Json);
        assert!(!cleaned.chars().any(super::unsafe_char), "{cleaned}");
        assert!(cleaned.contains("a\\u007fb\\u009bc\\u202ed"), "{cleaned}");
        let back: serde_json::Value = serde_json::from_str(&cleaned).unwrap();
        assert_eq!(back, value);
    }
}
