//! `CLIENT_LEGS`: the agent's legs to applications that leave from a client's address,
//! announced to `sk_lookup` while they connect (see `netns::client_address`), and
//! known to the agent while they are open, so that one coming back to the agent's own
//! listeners is recognised and refused rather than carried again, in a loop.

use std::{collections::HashSet, net::SocketAddr, sync::Mutex};

use agent_common::LocalKey;
use aya::maps::{HashMap, MapData};

use super::keys::addr_bytes;

/// The map, shared by every connecting leg, and the legs open now.
pub struct ClientLegs {
    map: Mutex<HashMap<MapData, LocalKey, u8>>,
    /// `(client, application)` of every open leg.
    open: Mutex<HashSet<(SocketAddr, SocketAddr)>>,
}

impl std::fmt::Debug for ClientLegs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLegs").finish_non_exhaustive()
    }
}

/// One leg: in the map until [`Leg::connected`] (only the SYN needs the entry), open
/// until dropped.
#[must_use]
pub struct Leg<'a> {
    legs: &'a ClientLegs,
    key: LocalKey,
    addrs: (SocketAddr, SocketAddr),
    announced: bool,
}

impl ClientLegs {
    pub(super) fn new(map: HashMap<MapData, LocalKey, u8>) -> Self {
        ClientLegs {
            map: Mutex::new(map),
            open: Mutex::new(HashSet::new()),
        }
    }

    /// Announces the leg from `client` (the agent's bound socket) to `app`.
    pub fn begin(&self, client: SocketAddr, app: SocketAddr) -> std::io::Result<Leg<'_>> {
        let key = leg_key(client, app);
        let addrs = (canonical(client), canonical(app));
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addrs);
        // Dropped on an error, the leg leaves the open set again.
        let mut leg = Leg {
            legs: self,
            key,
            addrs,
            announced: false,
        };
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, 1, 0)
            .map_err(std::io::Error::other)?;
        leg.announced = true;
        Ok(leg)
    }

    /// Whether a connection from `client` to `app` is one of the agent's own open legs.
    pub fn is_open(&self, client: SocketAddr, app: SocketAddr) -> bool {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(canonical(client), canonical(app)))
    }
}

impl Leg<'_> {
    /// The connect is over: the kernel's programs need the entry no longer.
    pub fn connected(&mut self) {
        if std::mem::take(&mut self.announced) {
            let mut map = self.legs.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = map.remove(&self.key) {
                tracing::debug!(error = %e, "removing a client leg from CLIENT_LEGS failed");
            }
        }
    }
}

impl Drop for Leg<'_> {
    fn drop(&mut self) {
        self.connected();
        self.legs
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.addrs);
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
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
