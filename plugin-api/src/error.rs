//! How a job reports failure.

use std::fmt;

/// What a job returns.
pub type JobResult = Result<(), JobError>;

/// A job's failure: a message, the chain of causes under it, and whether retrying can help.
///
/// Any `std::error::Error` converts into it with `?`, keeping its `source()` chain, so lorch can
/// record the whole chain in the `job.failed` event:
///
/// ```
/// use lorch_plugin_api::JobError;
/// fn read(path: &str) -> Result<String, JobError> {
///     let text = std::fs::read_to_string(path)
///         .map_err(|e| JobError::from(e).context(format!("cannot read {path}")))?;
///     Ok(text)
/// }
/// assert_eq!(read("/no/such/file").unwrap_err().message(), "cannot read /no/such/file");
/// ```
///
/// Like `anyhow::Error`, it deliberately does not implement `std::error::Error` itself: that is
/// what lets every error type convert into it.
#[derive(Clone, PartialEq, Eq)]
pub struct JobError {
    message: String,
    chain: Vec<String>,
    permanent: bool,
}

impl JobError {
    /// A failure with this message and no causes.
    pub fn new(message: impl fmt::Display) -> Self {
        JobError {
            message: message.to_string(),
            chain: Vec::new(),
            permanent: false,
        }
    }

    /// Puts `message` on top: the current message becomes the first cause.
    pub fn context(mut self, message: impl fmt::Display) -> Self {
        let cause = std::mem::replace(&mut self.message, message.to_string());
        self.chain.insert(0, cause);
        self
    }

    /// Marks the failure as one that retrying cannot fix (bad credentials, invalid input), so
    /// lorch does not retry it.
    pub fn permanent(mut self) -> Self {
        self.permanent = true;
        self
    }

    /// The top-level message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The causes under the message, outermost first.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    /// Whether [`permanent`](JobError::permanent) was set.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}

impl<E> From<E> for JobError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        let mut chain = Vec::new();
        let mut source = error.source();
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        JobError {
            message: error.to_string(),
            chain,
            permanent: false,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        for cause in &self.chain {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loading config")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn conversion_keeps_the_source_chain() {
        let err = JobError::from(Outer(std::io::Error::other("disk on fire")));
        assert_eq!(err.message(), "loading config");
        assert_eq!(err.chain(), ["disk on fire"]);
        assert!(!err.is_permanent());
        assert_eq!(err.to_string(), "loading config: disk on fire");
    }

    #[test]
    fn context_pushes_the_old_message_down() {
        let err = JobError::new("timeout")
            .context("fetching page 3")
            .permanent();
        assert_eq!(err.message(), "fetching page 3");
        assert_eq!(err.chain(), ["timeout"]);
        assert!(err.is_permanent());
    }
}
