//! Checks that run before a request reaches the chat layer: who is asking (auth). Payload
//! validation is the domain types' `parse`, called at each edge.

pub mod auth;
