//! Reading what the load tools print: wrk's summary and latency distribution, and
//! h2load's.

/// A latency written by wrk: `961.00us`, `14.44ms`, `1.02s`, `2.00m`; in ms.
pub fn wrk_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (number, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

/// What wrk said.
#[derive(Debug, Clone, PartialEq)]
pub struct Wrk {
    pub requests: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers that were not 2xx or 3xx, and socket errors.
    pub failures: f64,
}

pub fn parse_wrk(text: &str) -> Option<Wrk> {
    let mut w = Wrk {
        requests: 0.0,
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        failures: 0.0,
    };
    let (mut p50, mut p99, mut rps, mut requests) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("50%"), Some(v)) => p50 = wrk_duration_ms(v),
            (Some("99%"), Some(v)) => p99 = wrk_duration_ms(v),
            (Some("Requests/sec:"), Some(v)) => rps = v.parse().ok(),
            (Some(n), Some("requests")) => requests = n.parse().ok(),
            _ => {}
        }
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.failures += n.trim().parse::<f64>().unwrap_or(0.0);
        }
        if let Some(errors) = line.strip_prefix("Socket errors:") {
            w.failures += errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<f64>().ok())
                .sum::<f64>();
        }
    }
    w.p50_ms = p50?;
    w.p99_ms = p99?;
    w.rps = rps?;
    w.requests = requests?;
    Some(w)
}

/// What h2load said.
#[derive(Debug, Clone, PartialEq)]
pub struct H2load {
    pub rps: f64,
    pub succeeded: f64,
    pub failed: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
}

pub fn parse_h2load(text: &str) -> Option<H2load> {
    let mut rps = None;
    let (mut succeeded, mut failed) = (None, None);
    let (mut mean, mut max) = (None, None);
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            rps = rest
                .split(',')
                .nth(1)
                .and_then(|p| p.trim().strip_suffix(" req/s"))
                .and_then(|n| n.parse().ok());
        } else if let Some(rest) = line.strip_prefix("requests:") {
            for part in rest.split(',').map(str::trim) {
                let mut w = part.split_whitespace();
                match (w.next(), w.next()) {
                    (Some(n), Some("succeeded")) => succeeded = n.parse().ok(),
                    (Some(n), Some("failed" | "errored" | "timeout")) => {
                        failed = Some(failed.unwrap_or(0.0) + n.parse::<f64>().ok()?)
                    }
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            let v: Vec<&str> = rest.split_whitespace().collect();
            max = v.get(1).and_then(|s| wrk_duration_ms(s));
            mean = v.get(2).and_then(|s| wrk_duration_ms(s));
        }
    }
    Some(H2load {
        rps: rps?,
        succeeded: succeeded?,
        failed: failed.unwrap_or(0.0),
        mean_ms: mean?,
        max_ms: max?,
    })
}
