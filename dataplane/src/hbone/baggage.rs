//! The W3C `baggage` header of a CONNECT request: how a tunnel's opener tells the
//! peer who it speaks for (`weft.source.workload`, `weft.source.principal`). Only
//! informative — for telemetry and logs, never for a decision.

use http::HeaderMap;

/// The value of `key` in the request's `baggage` headers, without its properties.
pub fn get<'h>(headers: &'h HeaderMap, key: &str) -> Option<&'h str> {
    headers
        .get_all("baggage")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|entry| {
            let (k, v) = entry.split_once('=')?;
            (k.trim() == key).then(|| v.split(';').next().unwrap_or(v).trim())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_without_properties() {
        let mut h = HeaderMap::new();
        h.append(
            "baggage",
            "a=1, weft.source.workload=shop/frontend-1;p=x"
                .parse()
                .unwrap(),
        );
        h.append(
            "baggage",
            "weft.source.principal = spiffe://td/ns/a/sa/b"
                .parse()
                .unwrap(),
        );
        assert_eq!(get(&h, "weft.source.workload"), Some("shop/frontend-1"));
        assert_eq!(
            get(&h, "weft.source.principal"),
            Some("spiffe://td/ns/a/sa/b")
        );
        assert_eq!(get(&h, "a"), Some("1"));
        assert_eq!(get(&h, "b"), None);
    }
}
