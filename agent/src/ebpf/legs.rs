//! `CLIENT_LEGS`: the agent's legs to applications that leave from a client's address,
//! announced to `sk_lookup` while they connect (see `netns::client_address`).

use std::{net::SocketAddr, sync::Mutex};

use agent_common::LocalKey;
use aya::maps::{HashMap, MapData};

use super::keys::addr_bytes;

/// The map, shared by every connecting leg.
pub struct ClientLegs(Mutex<HashMap<MapData, LocalKey, u8>>);

impl std::fmt::Debug for ClientLegs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLegs").finish_non_exhaustive()
    }
}

/// One leg in the map; removed when dropped (connected, refused or timed out alike:
/// only the SYN needs the entry).
#[must_use]
pub struct Leg<'a> {
    legs: &'a ClientLegs,
    key: LocalKey,
}

impl ClientLegs {
    pub(super) fn new(map: HashMap<MapData, LocalKey, u8>) -> Self {
        ClientLegs(Mutex::new(map))
    }

    /// Announces the leg from `client` (the agent's bound socket) to `app`.
    pub fn begin(&self, client: SocketAddr, app: SocketAddr) -> std::io::Result<Leg<'_>> {
        let key = leg_key(client, app);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, 1, 0)
            .map_err(std::io::Error::other)?;
        Ok(Leg { legs: self, key })
    }
}

impl Drop for Leg<'_> {
    fn drop(&mut self) {
        let mut map = self.legs.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = map.remove(&self.key) {
            tracing::debug!(error = %e, "removing a client leg from CLIENT_LEGS failed");
        }
    }
}

/// The key as the application's side sees the connection, in the form `sk_lookup`
/// builds: no namespace cookie, host-order ports.
fn leg_key(client: SocketAddr, app: SocketAddr) -> LocalKey {
    LocalKey {
        netns_cookie: 0,
        local: addr_bytes(app.ip()),
        remote: addr_bytes(client.ip()),
        local_port: app.port(),
        remote_port: client.port(),
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_application_side_with_mapped_ipv4() {
        let k = leg_key(
            "10.244.1.2:40000".parse().unwrap(),
            "10.244.2.3:8080".parse().unwrap(),
        );
        assert_eq!(k.local_port, 8080);
        assert_eq!(k.remote_port, 40000);
        assert_eq!(
            k.remote,
            std::net::Ipv4Addr::new(10, 244, 1, 2)
                .to_ipv6_mapped()
                .octets()
        );
        assert_eq!(k.netns_cookie, 0);
    }
}
