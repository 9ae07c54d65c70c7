//! Whether a user or an address may do something now: a rate per key (messages per user,
//! connections per address) and a cap on the sockets one user holds open. The HTTP write
//! quotas and the handshake's own limits build on these (`http/`, `startup.rs`).

mod rate_limit;
mod sockets_per_user;

pub use rate_limit::RateLimit;
pub use sockets_per_user::SocketsPerUser;
