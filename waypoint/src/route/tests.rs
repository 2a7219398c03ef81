use super::*;

fn key(kind: &str, ns: &str, name: &str) -> Key {
    (kind.to_owned(), ns.to_owned(), name.to_owned())
}

fn parent(kind: &str, name: &str, port: u32) -> wire::ParentRef {
    wire::ParentRef {
        kind: kind.into(),
        namespace: "shop".into(),
        name: name.into(),
        port,
        section_name: String::new(),
    }
}

fn backend(name: &str) -> wire::BackendRef {
    wire::BackendRef {
        namespace: "shop".into(),
        name: name.into(),
        port: 80,
        weight: 1,
    }
}

fn path(kind: &str, value: &str) -> wire::HttpRouteMatch {
    wire::HttpRouteMatch {
        path: Some(wire::HttpPathMatch {
            r#type: kind.into(),
            value: value.into(),
        }),
        ..Default::default()
    }
}

fn rule(matches: Vec<wire::HttpRouteMatch>, to: &str) -> wire::HttpRouteRule {
    wire::HttpRouteRule {
        matches,
        backends: vec![backend(to)],
        ..Default::default()
    }
}

fn config(routes: Vec<(&str, WireRoute)>) -> Config {
    let mut c = Config::default();
    for (name, r) in routes {
        let kind = match r {
            WireRoute::Http(_) => "HTTPRoute",
            WireRoute::Grpc(_) => "GRPCRoute",
        };
        c.routes.insert(key(kind, "shop", name), r);
    }
    c
}

fn http(parents: Vec<wire::ParentRef>, rules: Vec<wire::HttpRouteRule>) -> WireRoute {
    WireRoute::Http(wire::HttpRoute {
        parents,
        hostnames: vec![],
        rules,
    })
}

struct Probe {
    method: Method,
    normalized: Normalized,
    headers: HeaderMap,
}

fn probe(method: &str, target: &str) -> Probe {
    let (p, q) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    Probe {
        method: method.parse().unwrap(),
        normalized: Normalized {
            path: p.to_owned(),
            query: q,
            host: "cart".into(),
            port: None,
        },
        headers: HeaderMap::new(),
    }
}

/// The backend the request goes to: a service name, `default` or `404`.
fn to(table: &Table, p: &Probe, grpc: bool) -> String {
    let svc = key("Service", "shop", "cart");
    let req = Request {
        method: &p.method,
        normalized: &p.normalized,
        headers: &p.headers,
    };
    match table.lookup(Some(&svc), 80, grpc, &req) {
        Lookup::Default => "default".into(),
        Lookup::NoMatch => "404".into(),
        Lookup::Matched(s) => s.rule().backends[0].service.2.clone(),
    }
}

#[test]
fn gateway_api_precedence() {
    let mut header = path("PathPrefix", "/api");
    header.headers = vec![wire::HeaderMatch {
        r#type: "Exact".into(),
        name: "x-user".into(),
        value: "tester".into(),
    }];
    let mut method = path("PathPrefix", "/api");
    method.method = "POST".into();
    let c = config(vec![
        (
            "b",
            http(
                vec![parent("Service", "cart", 0)],
                vec![
                    rule(vec![path("PathPrefix", "/")], "root"),
                    rule(vec![path("PathPrefix", "/api")], "api"),
                    rule(vec![path("PathPrefix", "/api/v1")], "api-v1"),
                    rule(vec![path("Exact", "/api")], "exact"),
                    rule(vec![path("RegularExpression", "/api/[0-9]+")], "regex"),
                ],
            ),
        ),
        (
            "a",
            http(
                vec![parent("Service", "cart", 80)],
                vec![rule(vec![header], "tagged"), rule(vec![method], "post")],
            ),
        ),
    ]);
    let t = Table::new(&c, ("shop", "waypoint")).unwrap();
    assert_eq!(to(&t, &probe("GET", "/api"), false), "exact");
    assert_eq!(to(&t, &probe("GET", "/api/42"), false), "regex");
    assert_eq!(to(&t, &probe("GET", "/api/v1/x"), false), "api-v1");
    assert_eq!(to(&t, &probe("GET", "/api/v10"), false), "api");
    assert_eq!(to(&t, &probe("GET", "/apix"), false), "root");
    assert_eq!(to(&t, &probe("POST", "/api/x"), false), "post");
    let mut tagged = probe("POST", "/api/x");
    tagged.headers.insert("x-user", "tester".parse().unwrap());
    // A method match ranks above a header match.
    assert_eq!(to(&t, &tagged, false), "post");
    tagged.method = Method::GET;
    assert_eq!(to(&t, &tagged, false), "tagged");
}

#[test]
fn without_routes_the_service_itself_and_without_a_match_404() {
    let t = Table::new(&Config::default(), ("shop", "waypoint")).unwrap();
    assert_eq!(to(&t, &probe("GET", "/"), false), "default");
    let c = config(vec![(
        "r",
        http(
            vec![parent("Service", "cart", 0)],
            vec![rule(vec![path("Exact", "/only")], "only")],
        ),
    )]);
    let t = Table::new(&c, ("shop", "waypoint")).unwrap();
    assert_eq!(to(&t, &probe("GET", "/other"), false), "404");
    // A route for another port leaves this one to its default.
    let c = config(vec![(
        "r",
        http(
            vec![parent("Service", "cart", 8080)],
            vec![rule(vec![], "only")],
        ),
    )]);
    let t = Table::new(&c, ("shop", "waypoint")).unwrap();
    assert_eq!(to(&t, &probe("GET", "/"), false), "default");
}

#[test]
fn query_matches_and_ties_by_name() {
    let mut q = path("PathPrefix", "/");
    q.query_params = vec![wire::HeaderMatch {
        r#type: "Exact".into(),
        name: "v".into(),
        value: "2".into(),
    }];
    let c = config(vec![
        (
            "z",
            http(
                vec![parent("Service", "cart", 0)],
                vec![rule(vec![], "z-all"), rule(vec![q], "v2")],
            ),
        ),
        (
            "m",
            http(
                vec![parent("Service", "cart", 0)],
                vec![rule(vec![], "m-all")],
            ),
        ),
    ]);
    let t = Table::new(&c, ("shop", "waypoint")).unwrap();
    assert_eq!(to(&t, &probe("GET", "/x?v=2"), false), "v2");
    assert_eq!(to(&t, &probe("GET", "/x?v=3"), false), "m-all");
}

#[test]
fn grpc_routes_first_for_grpc_requests_and_gateway_hostnames() {
    let grpc = WireRoute::Grpc(wire::GrpcRoute {
        parents: vec![parent("Gateway", "waypoint", 0)],
        hostnames: vec![],
        rules: vec![wire::GrpcRouteRule {
            matches: vec![wire::GrpcRouteMatch {
                method: Some(wire::GrpcMethodMatch {
                    r#type: "Exact".into(),
                    service: "sample.Echo".into(),
                    method: String::new(),
                }),
                headers: vec![],
            }],
            backends: vec![backend("grpc")],
            ..Default::default()
        }],
    });
    let mut named = http(
        vec![parent("Gateway", "waypoint", 0)],
        vec![rule(vec![], "named")],
    );
    if let WireRoute::Http(r) = &mut named {
        r.hostnames = vec!["*.shop".into()];
    }
    let c = config(vec![
        ("g", grpc),
        (
            "h",
            http(
                vec![parent("Gateway", "waypoint", 0)],
                vec![rule(vec![], "any")],
            ),
        ),
        ("n", named),
        // Another waypoint's route is not this one's.
        (
            "o",
            http(
                vec![parent("Gateway", "other", 0)],
                vec![rule(vec![], "other")],
            ),
        ),
    ]);
    let t = Table::new(&c, ("shop", "waypoint")).unwrap();
    assert_eq!(to(&t, &probe("POST", "/sample.Echo/Say"), true), "grpc");
    assert_eq!(to(&t, &probe("POST", "/sample.Echo/Say"), false), "any");
    let mut p = probe("GET", "/");
    p.normalized.host = "cart.shop".into();
    assert_eq!(to(&t, &p, false), "named");
}

#[test]
fn a_route_that_does_not_compile_is_named() {
    let c = config(vec![(
        "bad",
        http(
            vec![parent("Service", "cart", 0)],
            vec![rule(vec![path("RegularExpression", "(")], "x")],
        ),
    )]);
    let e = Table::new(&c, ("shop", "waypoint")).unwrap_err();
    assert!(
        e.starts_with("HTTPRoute shop/bad: \"(\" is not a regular expression"),
        "{e}"
    );
}
