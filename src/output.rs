//! Everything lorch prints for people goes through here, for two promises (README, "What lorch
//! guarantees"):
//!
//! - printing never panics and never changes an exit code: a closed pipe (`lorch jobs list |
//!   head -1`), a full disk or a closed stderr (`2>&-`, `2>/dev/full`) only lose the text;
//! - text that came from a plugin or a job (metadata, error messages, event types) cannot drive
//!   the terminal: control characters other than newline and tab, and the invisible characters
//!   that reorder text, are printed escaped (`\u{1b}`), as lorch's log lines already are. JSON
//!   output is escaped by the JSON writer itself.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Write};

/// Writes `text` to stdout. A closed pipe is not an error: the reader has what it wanted.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(clean(text).as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// Writes one JSON document and a newline.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    print(&format!("{value:#}\n"))
}

/// Output written piece by piece (a million events): buffered, cleaned, in constant memory,
/// and ended early without an error when the reader closes the pipe (`| head -1`).
pub struct Stream {
    out: io::BufWriter<io::StdoutLock<'static>>,
    closed: bool,
}

impl Stream {
    pub fn new() -> Stream {
        Stream {
            out: io::BufWriter::with_capacity(64 << 10, io::stdout().lock()),
            closed: false,
        }
    }

    /// Writes `text`; `false` once the reader has gone, so the caller stops producing more.
    pub fn write(&mut self, text: &str) -> anyhow::Result<bool> {
        if !self.closed {
            self.closed = gone(self.out.write_all(clean(text).as_bytes()))?;
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
    let _ = writeln!(io::stderr().lock(), "{}", clean(&line));
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

/// `text` with every character that could drive a terminal escaped. Borrowed when there is
/// none, which is almost always.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
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
    use super::{clean, round_duration};
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
        assert!(matches!(
            clean("ok: 3 lines\n\tindented"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            clean("\u{1b}[2J\u{1b}]0;pwned\u{7}done\r"),
            "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}done\\u{d}"
        );
        assert_eq!(
            clean("a\u{202e}b\u{9b}c\u{7f}"),
            "a\\u{202e}b\\u{9b}c\\u{7f}"
        );
        assert_eq!(clean("naïve 日本"), "naïve 日本");
    }
}
