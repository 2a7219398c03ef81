//! Upgraded connections (`Connection: upgrade`, a WebSocket say): the request goes to
//! the endpoint like any other, and once both sides have switched protocols the two
//! connections are spliced as bytes.

use http::{Request, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// Whether `req` asks to switch protocols (HTTP/1.1 `Connection: upgrade`).
pub fn requested(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Copies both ways between an upgraded client connection and the upgraded endpoint
/// connection (a WebSocket, say) until both ends close.
pub async fn splice(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (d, u) = match tokio::join!(downstream, upstream) {
        (Ok(d), Ok(u)) => (d, u),
        (d, u) => {
            tracing::debug!(
                downstream = d.is_ok(),
                upstream = u.is_ok(),
                "an upgrade did not complete"
            );
            return;
        }
    };
    let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
    let counted = dataplane::copy::Counted::default();
    if let Err(e) = dataplane::copy::bidirectional(&mut d, &mut u, &counted).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}
