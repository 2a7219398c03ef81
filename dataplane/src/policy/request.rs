//! The HTTP conditions of a policy rule, checked against a request as a waypoint sees
//! it after normalization: the method, the normalized path (without query), the
//! normalized host (lowercase, no port, no trailing dot) and the headers.
//!
//! Values are matched as the documents write them: exact, with one `*` first (suffix)
//! or last (prefix), or `*` alone for anything. A condition that is set must hold;
//! a `not_` list must hold for none of its values. A header condition holds when one of
//! the request's values of that header matches one of its values (a header sent twice
//! is two values, each checked).

use api::proto::config as wire;

use super::wildcard_matches;

/// What a policy sees of an HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Normalized, without query.
    pub path: &'a str,
    /// Normalized: lowercase, without port.
    pub host: &'a str,
    pub headers: &'a http::HeaderMap,
}

/// Whether every HTTP condition of `rule` holds for `request`.
pub(super) fn conditions_hold(rule: &wire::PolicyRule, request: &Request<'_>) -> bool {
    let any = |list: &[String], value: &str| list.iter().any(|p| wildcard_matches(p, value));
    let positive = |list: &[String], value: &str| list.is_empty() || any(list, value);
    let negative = |list: &[String], value: &str| !any(list, value);
    positive(&rule.methods, request.method)
        && negative(&rule.not_methods, request.method)
        && positive(&rule.paths, request.path)
        && negative(&rule.not_paths, request.path)
        && positive(&rule.hosts, request.host)
        && negative(&rule.not_hosts, request.host)
        && rule.headers.iter().all(|h| {
            request
                .headers
                .get_all(h.name.as_str())
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| any(&h.values, v)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(f: impl FnOnce(&mut wire::PolicyRule)) -> wire::PolicyRule {
        let mut r = wire::PolicyRule::default();
        f(&mut r);
        r
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn request<'a>(method: &'a str, path: &'a str, headers: &'a http::HeaderMap) -> Request<'a> {
        Request {
            method,
            path,
            host: "cart.shop.svc.cluster.local",
            headers,
        }
    }

    #[test]
    fn methods_paths_and_hosts() {
        let h = http::HeaderMap::new();
        let r = rule(|r| {
            r.methods = strings(&["GET", "HEAD"]);
            r.paths = strings(&["/public/*", "*.css", "/exact"]);
            r.hosts = strings(&["cart.shop*"]);
        });
        assert!(conditions_hold(&r, &request("GET", "/public/a", &h)));
        assert!(conditions_hold(&r, &request("HEAD", "/x/site.css", &h)));
        assert!(conditions_hold(&r, &request("GET", "/exact", &h)));
        assert!(!conditions_hold(&r, &request("GET", "/exact/", &h)));
        assert!(!conditions_hold(&r, &request("POST", "/public/a", &h)));
        assert!(!conditions_hold(&r, &request("get", "/public/a", &h)));
        let mut other = request("GET", "/public/a", &h);
        other.host = "billing.legacy";
        assert!(!conditions_hold(&r, &other));
    }

    #[test]
    fn negations_exclude() {
        let h = http::HeaderMap::new();
        let r = rule(|r| {
            r.not_paths = strings(&["/healthz"]);
            r.not_methods = strings(&["OPTIONS"]);
        });
        assert!(conditions_hold(&r, &request("GET", "/admin", &h)));
        assert!(!conditions_hold(&r, &request("GET", "/healthz", &h)));
        assert!(!conditions_hold(&r, &request("OPTIONS", "/admin", &h)));
    }

    #[test]
    fn headers_match_any_of_their_values() {
        let r = rule(|r| {
            r.headers = vec![wire::HeaderCondition {
                name: "x-tenant".into(),
                values: strings(&["blue", "green*"]),
            }];
        });
        let mut h = http::HeaderMap::new();
        assert!(!conditions_hold(&r, &request("GET", "/", &h)));
        h.append("x-tenant", "red".parse().unwrap());
        assert!(!conditions_hold(&r, &request("GET", "/", &h)));
        h.append("x-tenant", "green-2".parse().unwrap());
        assert!(conditions_hold(&r, &request("GET", "/", &h)));
    }
}
