use super::*;

fn config(policies: Vec<(&str, &str, Policy)>) -> Config {
    let mut c = Config::default();
    for (ns, name, p) in policies {
        let kind = match p {
            Policy::Authorization(_) => "AuthorizationPolicy",
            Policy::PeerAuthentication(_) => "PeerAuthentication",
        };
        c.policies
            .insert((kind.to_owned(), ns.to_owned(), name.to_owned()), p);
    }
    c
}

fn authz(action: &str, selector: &[(&str, &str)], rules: Vec<wire::PolicyRule>) -> Policy {
    Policy::Authorization(wire::AuthorizationPolicy {
        action: action.to_owned(),
        selector: selector
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        rules,
    })
}

fn from(f: impl FnOnce(&mut wire::PolicySource)) -> wire::PolicyRule {
    let mut s = wire::PolicySource::default();
    f(&mut s);
    wire::PolicyRule {
        from: vec![s],
        ..Default::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn id(ns: &str, sa: &str) -> Identity {
    Identity::new("cluster.local", ns, sa).unwrap()
}

fn check(c: &Config, port: u16, who: Option<&Identity>, ip: &str) -> Decision {
    let labels: BTreeMap<String, String> = [("app".to_owned(), "cart".to_owned())].into();
    authorize(
        c,
        &Target {
            namespace: "shop",
            labels: &labels,
            port,
        },
        &Source {
            identity: who,
            ip: ip.parse().unwrap(),
        },
    )
}

#[test]
fn no_policy_allows() {
    let d = check(&Config::default(), 80, None, "10.0.0.1");
    assert!(d.allowed);
    assert_eq!(d.reason, "no policy");
}

#[test]
fn allow_by_namespace_denies_the_rest() {
    let c = config(vec![(
        "shop",
        "only-shop",
        authz(
            "ALLOW",
            &[],
            vec![from(|s| s.namespaces = strings(&["shop"]))],
        ),
    )]);
    let d = check(&c, 80, Some(&id("shop", "frontend")), "10.0.0.1");
    assert_eq!((d.allowed, d.reason.as_str()), (true, "shop/only-shop"));
    let d = check(&c, 80, Some(&id("legacy", "billing")), "10.0.0.1");
    assert_eq!(
        (d.allowed, d.reason.as_str()),
        (false, "no ALLOW policy matched")
    );
    // A plaintext client has no namespace.
    assert!(!check(&c, 80, None, "10.0.0.1").allowed);
}

#[test]
fn deny_wins_over_allow_and_audit_is_reported() {
    let c = config(vec![
        ("shop", "all", authz("ALLOW", &[], vec![from(|_| {})])),
        (
            "shop",
            "no-billing",
            authz(
                "DENY",
                &[],
                vec![from(|s| {
                    s.principals = strings(&["cluster.local/ns/legacy/sa/billing"])
                })],
            ),
        ),
        (
            "shop",
            "watch",
            authz("AUDIT", &[], vec![from(|s| s.namespaces = strings(&["*"]))]),
        ),
    ]);
    let d = check(&c, 80, Some(&id("legacy", "billing")), "10.0.0.1");
    assert_eq!((d.allowed, d.reason.as_str()), (false, "shop/no-billing"));
    assert_eq!(d.audited, vec!["shop/watch".to_owned()]);
    let d = check(&c, 80, Some(&id("legacy", "other")), "10.0.0.1");
    assert_eq!((d.allowed, d.reason.as_str()), (true, "shop/all"));
}

#[test]
fn selector_scope_and_mesh_wide_policies() {
    let c = config(vec![
        (
            "shop",
            "for-frontend",
            authz("ALLOW", &[("app", "frontend")], vec![]),
        ),
        ("other", "elsewhere", authz("ALLOW", &[], vec![])),
    ]);
    // Neither selects app=cart in shop.
    assert!(check(&c, 80, None, "10.0.0.1").allowed);
    let c = config(vec![(
        ROOT_NAMESPACE,
        "mesh-deny-7000",
        authz(
            "DENY",
            &[],
            vec![wire::PolicyRule {
                ports: vec![7000],
                ..Default::default()
            }],
        ),
    )]);
    assert!(!check(&c, 7000, Some(&id("shop", "a")), "10.0.0.1").allowed);
    assert!(check(&c, 80, Some(&id("shop", "a")), "10.0.0.1").allowed);
}

#[test]
fn allow_without_rules_denies_all() {
    let c = config(vec![("shop", "nothing", authz("ALLOW", &[], vec![]))]);
    assert!(!check(&c, 80, Some(&id("shop", "a")), "10.0.0.1").allowed);
}

#[test]
fn principals_wildcards_negations_and_ip_blocks() {
    let rule = from(|s| {
        s.principals = strings(&["cluster.local/ns/shop/*"]);
        s.not_principals = strings(&["*/sa/intruder"]);
        s.ip_blocks = strings(&["10.244.0.0/16"]);
        s.not_ip_blocks = strings(&["10.244.9.0/24"]);
    });
    let c = config(vec![("shop", "p", authz("ALLOW", &[], vec![rule]))]);
    assert!(check(&c, 80, Some(&id("shop", "a")), "10.244.1.5").allowed);
    assert!(!check(&c, 80, Some(&id("shop", "intruder")), "10.244.1.5").allowed);
    assert!(!check(&c, 80, Some(&id("legacy", "a")), "10.244.1.5").allowed);
    assert!(!check(&c, 80, Some(&id("shop", "a")), "10.244.9.5").allowed);
    assert!(!check(&c, 80, Some(&id("shop", "a")), "10.1.1.5").allowed);
    assert!(check(&c, 80, Some(&id("shop", "a")), "::ffff:10.244.1.5").allowed);
}

#[test]
fn http_conditions_never_widen_an_l4_decision() {
    let get_only = wire::PolicyRule {
        methods: vec!["GET".to_owned()],
        ..Default::default()
    };
    // ALLOW GET: a TCP connection cannot show it is a GET, so it is not allowed.
    let c = config(vec![(
        "shop",
        "get",
        authz("ALLOW", &[], vec![get_only.clone()]),
    )]);
    assert!(!check(&c, 80, Some(&id("shop", "a")), "10.0.0.1").allowed);
    // DENY GET: denied at L4 (more than asked, never less).
    let c = config(vec![
        ("shop", "all", authz("ALLOW", &[], vec![from(|_| {})])),
        ("shop", "no-get", authz("DENY", &[], vec![get_only])),
    ]);
    let d = check(&c, 80, Some(&id("shop", "a")), "10.0.0.1");
    assert_eq!((d.allowed, d.reason.as_str()), (false, "shop/no-get"));
}

#[test]
fn ip_blocks() {
    assert!(in_block("10.0.0.0/8", "10.1.2.3".parse().unwrap()));
    assert!(!in_block("10.0.0.0/8", "11.1.2.3".parse().unwrap()));
    assert!(in_block("0.0.0.0/0", "11.1.2.3".parse().unwrap()));
    assert!(in_block("10.1.2.3", "10.1.2.3".parse().unwrap()));
    assert!(in_block("fd00::/8", "fd12::1".parse().unwrap()));
    assert!(!in_block("fd00::/8", "10.1.2.3".parse().unwrap()));
    assert!(!in_block("10.0.0.0/33", "10.1.2.3".parse().unwrap()));
    assert!(!in_block("nonsense", "10.1.2.3".parse().unwrap()));
}

fn peer(mode: &str, selector: &[(&str, &str)]) -> Policy {
    Policy::PeerAuthentication(wire::PeerAuthentication {
        mode: mode.to_owned(),
        selector: selector
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    })
}

#[test]
fn peer_modes_most_specific_wins() {
    let cart: BTreeMap<String, String> = [("app".to_owned(), "cart".to_owned())].into();
    let other: BTreeMap<String, String> = [("app".to_owned(), "x".to_owned())].into();
    assert_eq!(
        peer_mode(&Config::default(), "shop", &cart),
        PeerMode::Permissive
    );
    let c = config(vec![(ROOT_NAMESPACE, "mesh", peer("STRICT", &[]))]);
    assert_eq!(peer_mode(&c, "shop", &cart), PeerMode::Strict);
    let c = config(vec![
        (ROOT_NAMESPACE, "mesh", peer("STRICT", &[])),
        ("shop", "ns", peer("PERMISSIVE", &[])),
        ("shop", "cart", peer("STRICT", &[("app", "cart")])),
    ]);
    assert_eq!(peer_mode(&c, "shop", &cart), PeerMode::Strict);
    assert_eq!(peer_mode(&c, "shop", &other), PeerMode::Permissive);
    assert_eq!(peer_mode(&c, "legacy", &other), PeerMode::Strict);
}

#[test]
fn a_waypoint_decides_http_conditions_with_the_request() {
    let public_get = wire::PolicyRule {
        methods: vec!["GET".to_owned()],
        paths: vec!["/public/*".to_owned()],
        ..Default::default()
    };
    let admin = wire::PolicyRule {
        paths: vec!["/admin*".to_owned()],
        ..from(|s| s.not_principals = vec!["cluster.local/ns/ops/sa/admin".to_owned()])
    };
    let c = config(vec![
        ("shop", "public", authz("ALLOW", &[], vec![public_get])),
        ("shop", "no-admin", authz("DENY", &[], vec![admin])),
    ]);
    let labels: BTreeMap<String, String> = BTreeMap::new();
    let target = Target {
        namespace: "shop",
        labels: &labels,
        port: 8080,
    };
    let headers = http::HeaderMap::new();
    let decide = |method: &str, path: &str, who: &Identity| {
        authorize_request(
            &c,
            &target,
            &Source {
                identity: Some(who),
                ip: "10.0.0.1".parse().unwrap(),
            },
            &Request {
                method,
                path,
                host: "cart.shop",
                headers: &headers,
            },
        )
    };
    let frontend = id("shop", "frontend");
    let d = decide("GET", "/public/a", &frontend);
    assert_eq!((d.allowed, d.reason.as_str()), (true, "shop/public"));
    let d = decide("POST", "/public/a", &frontend);
    assert_eq!(
        (d.allowed, d.reason.as_str()),
        (false, "no ALLOW policy matched")
    );
    // The DENY rule's paths and source hold together.
    let d = decide("GET", "/admin", &frontend);
    assert_eq!((d.allowed, d.reason.as_str()), (false, "shop/no-admin"));
    let d = decide("GET", "/admin", &id("ops", "admin"));
    assert_eq!(
        (d.allowed, d.reason.as_str()),
        (false, "no ALLOW policy matched")
    );
}

#[test]
fn a_tunnel_for_requests_is_refused_only_when_no_request_could_pass() {
    let get_only = wire::PolicyRule {
        methods: vec!["GET".to_owned()],
        ..from(|s| s.namespaces = vec!["shop".to_owned()])
    };
    let no_admin = wire::PolicyRule {
        paths: vec!["/admin".to_owned()],
        ..Default::default()
    };
    let c = config(vec![
        ("shop", "get", authz("ALLOW", &[], vec![get_only])),
        ("shop", "no-admin", authz("DENY", &[], vec![no_admin])),
    ]);
    let labels = BTreeMap::new();
    let target = Target {
        namespace: "shop",
        labels: &labels,
        port: 80,
    };
    let decide = |who: &Identity| {
        authorize_in(
            &c,
            &target,
            &Source {
                identity: Some(who),
                ip: "10.0.0.1".parse().unwrap(),
            },
            Scope::AnyRequest,
        )
    };
    // A GET from shop could pass; the DENY on /admin waits for the request.
    assert!(decide(&id("shop", "frontend")).allowed);
    // Nothing from another namespace could.
    assert!(!decide(&id("legacy", "billing")).allowed);
    // A connection cannot show it carries a GET.
    assert!(!check(&c, 80, Some(&id("shop", "frontend")), "10.0.0.1").allowed);
}
