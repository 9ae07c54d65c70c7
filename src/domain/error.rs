//! The one error a domain parse can give: which field was wrong and why.

/// A value from a client that does not satisfy the domain's rules.
///
/// `field` is the wire name (camelCase) so the client's error message names what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidInput {
    pub field: &'static str,
    pub reason: String,
}

impl InvalidInput {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}
