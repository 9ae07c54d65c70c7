//! Checks that run before a request reaches the chat layer: who is asking (auth) and whether
//! they may send now (rate limit). Payload validation is the domain types' `parse`, called at
//! each edge.

pub mod auth;
pub mod rate_limit;
