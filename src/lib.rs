//! postchat: a Socket.IO chat server where a user asks about a post (an article) and gets
//! streamed answers, or asks for social-media posts in their own voice.
//!
//! # Layout
//! The modules follow a message through the server:
//! - [`socket`]: Socket.IO connections, the handshake, one handler per event, delivery to rooms.
//! - [`http`]: the REST API (posts, sessions, messages, preferences, health) and the bounded
//!   accept loop every connection comes through (`http::connections`).
//! - [`auth`]: who is asking (JWT verification and, in dev mode, issuing).
//! - [`limits`]: whether they may now (rates per user and per address, sockets per user).
//!   Payload validation is the [`domain`] types' `parse`, called at each edge.
//! - [`chat`]: the controller (one exchange from acceptance to its terminal event, stop, join),
//!   the session service (ownership, AI context, persistence) and its cache, in-flight answers.
//! - [`ai`]: intent detection (a trained classifier), streamed answers and streamed social posts
//!   within the model's window, on langchain-rust's `LLM` trait: our OpenAI-compatible client or
//!   the offline `local` engine.
//! - [`store`]: the storage seam with its PostgreSQL and SQLite backends, metered, and the
//!   answers' statements batched across answers.
//! - [`expansion`]: fetching a post's page (readable text, title) from public addresses only.
//! - [`domain`]: validated values and entities, no I/O.
//! - [`cluster`]: cluster mode (`REDIS_URL`): several processes as one server through Redis
//!   (answer streams, leases, stop, shared limits and cache versions), as the adapter behind
//!   the ports [`chat`], [`limits`] and [`http`] own for "the other processes"; its module doc
//!   follows one token from the generating process to a socket on another.
//! - [`config`], [`telemetry`], [`startup`], [`shutdown`]: running it.
//!
//! Dependencies point one way: startup → cluster → socket/http → auth, limits → chat →
//! ai/store → domain (cluster implements the lower layers' ports; nothing below imports it,
//! and startup picks it or the one-process implementations once). Inside
//! [`chat`], the controller holds the answers' runner; an answer never reaches back into it.
//!
//! `tests/common/app.rs` builds this whole application in-process for the Rust tests.

pub mod ai;
pub mod auth;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod expansion;
pub mod http;
pub mod limits;
pub mod shutdown;
pub mod socket;
pub mod startup;
pub mod store;
pub mod telemetry;
