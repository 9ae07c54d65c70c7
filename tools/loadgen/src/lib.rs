//! The load generator's Socket.IO client, also used by the server's in-process tests
//! (`tests/common/app.rs`): a minimal Socket.IO v5 / Engine.IO v4 client over websocket.

pub mod sio;
