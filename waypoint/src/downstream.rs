//! A tunnel's client and what it opened the tunnel for: who asks (for policies) and
//! the source half of every metric label set the tunnel's requests and streams get.

use std::net::SocketAddr;

use api::identity::Identity;
use dataplane::{
    policy,
    telemetry::{ConnectionLabels, Reporter},
};

use crate::view::{Target, View};

#[derive(Debug)]
pub struct Downstream {
    pub client: Identity,
    /// The client's workload (`namespace/name`), as its agent says in the CONNECT's
    /// baggage; for telemetry only, and only in the client identity's namespace.
    client_workload: Option<String>,
    /// The client's address (its pod's).
    pub peer: SocketAddr,
    pub target: Target,
    /// The tunnel's authority: the address the client asked for.
    pub authority: SocketAddr,
}

impl Downstream {
    /// A tunnel from `client` at `peer` to `target`, asked for as `authority`, with the
    /// headers of its CONNECT request.
    pub fn new(
        client: Identity,
        peer: SocketAddr,
        (target, authority): (Target, SocketAddr),
        connect: &http::HeaderMap,
    ) -> Self {
        let client_workload = dataplane::hbone::baggage::get(connect, "weft.source.workload")
            .filter(|w| {
                w.split_once('/')
                    .is_some_and(|(ns, _)| ns == client.namespace())
            })
            .map(str::to_owned);
        Downstream {
            client,
            client_workload,
            peer,
            target,
            authority,
        }
    }

    /// The client as policies see it.
    pub fn source(&self) -> policy::Source<'_> {
        policy::Source {
            identity: Some(&self.client),
            ip: self.peer.ip(),
        }
    }

    /// `(namespace, name)` of the client's workload, when known.
    pub fn client_workload(&self) -> Option<(&str, &str)> {
        self.client_workload.as_deref()?.split_once('/')
    }

    /// The labels of what this tunnel carries, with its source filled in: the
    /// client's principal and namespace, and its workload by the baggage, else by
    /// its address.
    pub fn labels(&self, view: &View) -> ConnectionLabels {
        let mut labels = ConnectionLabels {
            reporter: Reporter::Waypoint,
            source_workload_namespace: self.client.namespace().to_owned(),
            source_principal: self.client.to_string(),
            connection_security_policy: "mutual_tls",
            ..ConnectionLabels::default()
        };
        if let Some((_, name)) = self
            .client_workload()
            .or_else(|| view.workload_at(self.peer.ip()))
        {
            labels.source_workload = name.to_owned();
        }
        labels
    }
}
