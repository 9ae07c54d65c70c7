//! The tokens the load is sent with: the server's own minting, so they are what real clients
//! present.

use postchat::auth::JwtKeys;
use postchat::domain::UserId;

use crate::Cli;

/// A token for `user`, signed with the server's secret.
pub fn user_token(cli: &Cli, user: &str) -> Result<String, String> {
    let keys = JwtKeys::hs256(cli.jwt_secret.as_bytes(), None, None);
    let user = UserId::parse(user).map_err(|e| e.to_string())?;
    keys.issue(&user, 24 * 3600).map_err(|e| e.to_string())
}
