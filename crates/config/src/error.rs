use thiserror::Error;

/// A configuration that cannot be used, with where and why.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}")]
    Io(String, String),
    /// `FILE, line N: problem` (or without the file, from text).
    #[error("syntax error: {0}")]
    Parse(String),
    #[error("{place}: {problem}")]
    Invalid { place: String, problem: String },
}

impl ConfigError {
    pub fn invalid(place: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError::Invalid { place: place.into(), problem: problem.into() }
    }
}
