//! Faults a rule injects (a TrafficFilter's `fault`): a delay before the request goes
//! on, an abort the waypoint answers itself, each for a share of the requests, drawn
//! for each request on its own.

use std::time::Duration;

use api::proto::config as wire;
use dataplane::discovery::MILLION;
use http::StatusCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Http(StatusCode),
    /// A gRPC status (answered as a trailers-only response).
    Grpc(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    delay: Option<(Duration, u32)>,
    abort: Option<(Abort, u32)>,
}

/// What a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Injected {
    pub delay: Option<Duration>,
    pub abort: Option<Abort>,
}

fn drawn(ppm: u32) -> bool {
    ppm >= MILLION || (ppm > 0 && rand::random_range(0..MILLION) < ppm)
}

impl Fault {
    pub fn compile(f: &wire::Fault) -> Result<Self, String> {
        let abort = match (f.abort_http_status, f.abort_grpc_status) {
            (0, 0) => None,
            (0, grpc) => Some(Abort::Grpc(grpc)),
            (http, _) => Some(Abort::Http(
                u16::try_from(http)
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .ok_or_else(|| format!("{http} is not an HTTP status"))?,
            )),
        };
        Ok(Fault {
            delay: (f.delay_ms > 0).then(|| (Duration::from_millis(f.delay_ms), f.delay_ppm)),
            abort: abort.map(|a| (a, f.abort_ppm)),
        })
    }

    /// Draws what this request gets.
    pub fn draw(&self) -> Injected {
        Injected {
            delay: self.delay.filter(|(_, p)| drawn(*p)).map(|(d, _)| d),
            abort: self.abort.filter(|(_, p)| drawn(*p)).map(|(a, _)| a),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_drawn_per_request() {
        let f = Fault::compile(&wire::Fault {
            delay_ms: 5,
            delay_ppm: 500_000,
            abort_http_status: 503,
            abort_ppm: 100_000,
            ..Default::default()
        })
        .unwrap();
        let draws: Vec<Injected> = (0..10_000).map(|_| f.draw()).collect();
        let delayed = draws.iter().filter(|i| i.delay.is_some()).count();
        let aborted = draws.iter().filter(|i| i.abort.is_some()).count();
        // Binomial: σ = 50 and 30; 5σ either way.
        assert!((4750..=5250).contains(&delayed), "{delayed}");
        assert!((850..=1150).contains(&aborted), "{aborted}");
        assert!(
            draws
                .iter()
                .filter_map(|i| i.abort)
                .all(|a| a == Abort::Http(StatusCode::SERVICE_UNAVAILABLE))
        );

        let all = Fault::compile(&wire::Fault {
            abort_grpc_status: 14,
            abort_ppm: MILLION,
            ..Default::default()
        })
        .unwrap();
        assert!((0..100).all(|_| all.draw().abort == Some(Abort::Grpc(14))));
        assert!((0..100).all(|_| all.draw().delay.is_none()));
        let none = Fault::compile(&wire::Fault {
            abort_http_status: 500,
            abort_ppm: 0,
            ..Default::default()
        })
        .unwrap();
        assert!((0..1000).all(|_| none.draw() == Injected::default()));
        assert!(
            Fault::compile(&wire::Fault {
                abort_http_status: 1000,
                ..Default::default()
            })
            .is_err()
        );
    }
}
