//! One error type for every zdr crate: a matchable [`ErrorKind`], a retry
//! [`ErrorStatus`], and context (component, tier, key, ...) that tells the
//! operator what failed and where.

use std::fmt;

/// What went wrong, as a category callers can `match` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is wrong: a malformed config, an unknown tier or component,
    /// a bad argument. Retrying with the same input cannot help.
    BadInput,
    /// The thing asked for does not exist (a backup, a key, a file).
    NotFound,
    /// Stored bytes do not match what the manifest recorded: a checksum
    /// mismatch, a truncated artifact, a corrupt stream.
    Integrity,
    /// Decryption failed: no identity matches the artifact, or a wrong passphrase.
    Decrypt,
    /// The restore target already holds different data and overwriting was not asked for.
    Conflict,
    /// A storage tier failed (network, permissions, service errors).
    Storage,
    /// The datastore being backed up or restored failed.
    Source,
    /// A local I/O failure outside the storage tiers.
    Io,
    /// The operation is not supported by this component or tier.
    Unsupported,
    /// A bug or an unexpected state.
    Unexpected,
}

impl ErrorKind {
    /// A short stable name of the kind, used in JSON output.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadInput => "bad_input",
            Self::NotFound => "not_found",
            Self::Integrity => "integrity",
            Self::Decrypt => "decrypt",
            Self::Conflict => "conflict",
            Self::Storage => "storage",
            Self::Source => "source",
            Self::Io => "io",
            Self::Unsupported => "unsupported",
            Self::Unexpected => "unexpected",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether retrying the same operation can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorStatus {
    /// Retrying cannot help.
    Permanent,
    /// A transient failure (timeout, connection reset, throttling): retry with backoff.
    Temporary,
    /// Was temporary, but retries were exhausted.
    Persistent,
}

/// The error type of every zdr crate.
pub struct Error {
    kind: ErrorKind,
    status: ErrorStatus,
    message: String,
    context: Vec<(&'static str, String)>,
    hint: Option<String>,
    report: Option<Box<crate::VerifyReport>>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new permanent error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: ErrorStatus::Permanent,
            message: message.into(),
            context: Vec::new(),
            hint: None,
            report: None,
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::BadInput`].
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// Shorthand for [`ErrorKind::Integrity`].
    pub fn integrity(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Integrity, message)
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::Unexpected`].
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unexpected, message)
    }

    /// Mark the error temporary: retrying can help.
    #[must_use]
    pub fn temporary(mut self) -> Self {
        self.status = ErrorStatus::Temporary;
        self
    }

    /// Mark a temporary error persistent: retries were exhausted.
    #[must_use]
    pub fn persistent(mut self) -> Self {
        if self.status == ErrorStatus::Temporary {
            self.status = ErrorStatus::Persistent;
        }
        self
    }

    /// Add a context pair, such as `("tier", "minio")` or `("key", "configs/...")`.
    /// A key already present keeps its first (innermost) value.
    #[must_use]
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        if !self.context.iter().any(|(k, _)| *k == key) {
            self.context.push((key, value.to_string()));
        }
        self
    }

    /// Tell the operator what to do next.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attach the verification that failed (an [`ErrorKind::Integrity`] error of restored
    /// data), so callers get the problems as data, not only inside the message.
    #[must_use]
    pub fn with_verify_report(mut self, report: crate::VerifyReport) -> Self {
        self.report = Some(Box::new(report));
        self
    }

    /// The verification that failed, when the error carries one.
    #[must_use]
    pub fn verify_report(&self) -> Option<&crate::VerifyReport> {
        self.report.as_deref()
    }

    /// Attach the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// A copy of the error for reporting it in two places; the source chain is kept as text.
    #[must_use]
    pub fn duplicate(&self) -> Self {
        Self {
            kind: self.kind,
            status: self.status,
            message: self.message.clone(),
            context: self.context.clone(),
            hint: self.hint.clone(),
            report: self.report.clone(),
            source: self.source.as_ref().map(|s| {
                Box::new(SourceText(s.to_string())) as Box<dyn std::error::Error + Send + Sync>
            }),
        }
    }

    /// The kind of the error.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying can help.
    #[must_use]
    pub fn status(&self) -> ErrorStatus {
        self.status
    }

    /// True if the error is [`ErrorStatus::Temporary`].
    #[must_use]
    pub fn is_temporary(&self) -> bool {
        self.status == ErrorStatus::Temporary
    }

    /// The message, without context.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The context pairs, innermost first.
    #[must_use]
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// The value of one context key, if set.
    #[must_use]
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.context
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// What the operator should do next, if known.
    #[must_use]
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Convert an I/O error, keeping a kind that fits it.
    pub fn from_io(err: std::io::Error, what: impl Into<String>) -> Self {
        // Errors that travelled through an io::Error from inside zdr keep their kind.
        if err.get_ref().is_some_and(|e| e.is::<Error>()) {
            if let Some(inner) = err.into_inner()
                && let Ok(e) = inner.downcast::<Error>()
            {
                return *e;
            }
            return Self::unexpected("lost error");
        }
        use std::io::ErrorKind as K;
        let (kind, temporary) = match err.kind() {
            K::NotFound => (ErrorKind::NotFound, false),
            K::InvalidData | K::UnexpectedEof => (ErrorKind::Integrity, false),
            K::TimedOut | K::ConnectionReset | K::ConnectionAborted | K::Interrupted => {
                (ErrorKind::Io, true)
            }
            K::AlreadyExists => (ErrorKind::Conflict, false),
            _ => (ErrorKind::Io, false),
        };
        let e = Self::new(kind, what).with_source(err);
        if temporary { e.temporary() } else { e }
    }

    /// Wrap this error in an [`std::io::Error`] so it can cross an `AsyncRead`/`AsyncWrite`
    /// boundary; [`Error::from_io`] recovers it intact.
    #[must_use]
    pub fn into_io(self) -> std::io::Error {
        let kind = match self.kind {
            ErrorKind::Integrity => std::io::ErrorKind::InvalidData,
            ErrorKind::NotFound => std::io::ErrorKind::NotFound,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, self)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if !self.context.is_empty() {
            f.write_str(" (")?;
            for (i, (k, v)) in self.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}: {v}")?;
            }
            f.write_str(")")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// The text of a source error, kept by [`Error::duplicate`].
#[derive(Debug)]
struct SourceText(String);

impl fmt::Display for SourceText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SourceText {}

/// The result type of every zdr crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_context_and_hint() {
        let e = Error::integrity("checksum mismatch")
            .with_context("tier", "local")
            .with_context("key", "configs/daily/x.tar.zst")
            .with_hint("run `zdr verify`");
        let s = e.to_string();
        assert!(s.contains("checksum mismatch (tier: local, key: configs/daily/x.tar.zst)"));
        assert!(s.ends_with("hint: run `zdr verify`"));
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert_eq!(e.context_value("tier"), Some("local"));
    }

    #[test]
    fn io_round_trip_keeps_kind() {
        let e = Error::new(ErrorKind::Decrypt, "no identity").with_context("key", "k");
        let io = e.into_io();
        let back = Error::from_io(io, "ignored");
        assert_eq!(back.kind(), ErrorKind::Decrypt);
        assert_eq!(back.context_value("key"), Some("k"));
        let copy = back.with_hint("h").duplicate();
        assert_eq!(
            (copy.kind(), copy.context_value("key"), copy.hint()),
            (ErrorKind::Decrypt, Some("k"), Some("h"))
        );
    }

    #[test]
    fn io_timeouts_are_temporary_and_exhaust_to_persistent() {
        let e = Error::from_io(std::io::Error::from(std::io::ErrorKind::TimedOut), "read");
        assert!(e.is_temporary());
        assert_eq!(e.persistent().status(), ErrorStatus::Persistent);
    }
}
