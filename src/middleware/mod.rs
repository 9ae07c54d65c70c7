//! Checks that run before a request reaches the chat layer: who is asking (auth), and whether
//! they may now (rate limits, sockets per user). Payload validation is
//! the domain types' `parse`, called at each edge.

pub mod auth;
pub mod connection_limit;
pub mod rate_limit;
