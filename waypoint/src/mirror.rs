//! Request mirrors: a copy of each request a rule matches goes to every mirror
//! backend, with the body copied as it streams ([`body::Tee`]); answers are read and
//! thrown away, failures counted and otherwise ignored. A mirror never slows or fails
//! the request it copies, and is decided by the mirror endpoint's policies like any
//! request.

use std::{sync::Arc, time::Duration};

use dataplane::policy::{self, Scope};
use http::{Request, request::Parts};
use http_body_util::BodyExt as _;

use crate::{
    Waypoint,
    backend::Backend,
    body::{self, Body, Tee},
    downstream::Downstream,
    upstream::Version,
    view::View,
};

/// A mirror's answer is waited for at most this long.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a copy of the request (`parts` as forwarded, its normalized `host`, `body`)
/// to each of `mirrors`; returns the body for the request itself.
pub fn start(
    waypoint: &Arc<Waypoint>,
    view: &View,
    down: &Downstream,
    (parts, host): (&Parts, &str),
    mut body: Body,
    mirrors: &[Backend],
    version: Version,
) -> Body {
    let request = policy::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        host,
        headers: &parts.headers,
    };
    let source = down.source();
    let v4 = down.authority.is_ipv4();
    for mirror in mirrors {
        let Ok((destination, _)) =
            waypoint
                .balancer
                .destination(view, &mirror.service, (mirror.port, v4), None)
        else {
            waypoint.metrics.local_reply("mirror_no_endpoint");
            continue;
        };
        let decision =
            crate::authorize::destination(view, &destination, &source, Scope::Request(&request));
        if decision.is_some_and(|d| !d.allowed) {
            waypoint.metrics.local_reply("mirror_denied");
            continue;
        }
        let (tee, copy) = Tee::new(body);
        body = body::boxed(tee);
        let mut copy_parts = Request::new(()).into_parts().0;
        copy_parts.method = parts.method.clone();
        copy_parts.uri = parts.uri.clone();
        copy_parts.version = parts.version;
        copy_parts.headers = parts.headers.clone();
        let req = Request::from_parts(copy_parts, body::boxed(copy));
        let (waypoint, caller) = (Arc::clone(waypoint), down.client.clone());
        tokio::spawn(async move {
            let send = waypoint
                .upstreams
                .send(&destination, &caller, (version, None), req);
            match tokio::time::timeout(MIRROR_TIMEOUT, send).await {
                Ok(Ok(response)) => {
                    let _ = response.into_body().collect().await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "mirror request failed"),
                Err(_) => tracing::debug!("mirror request timed out"),
            }
        });
    }
    body
}
