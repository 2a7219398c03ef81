//! The control plane's service graph, as a person sees it: traffic of three kinds in the
//! lab (mutual TLS through a Service, plaintext from outside the mesh, connections a
//! policy denies), the page loaded by headless Chromium inside the lab, its screenshot
//! kept with the test's output, and the picture's elements checked for the edges and
//! their marks. Then the same data through `weftctl lab graph`'s relay on the host's
//! loopback.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{
    Process,
    lab::{Lab, sa, sample_command},
};
use weftctl::lab;

/// The opening tags of the edges of a page's DOM.
fn edges(dom: &str) -> Vec<String> {
    dom.match_indices("<g class=\"edge ")
        .map(|(i, _)| {
            dom[i..]
                .split_once('>')
                .map_or("", |(tag, _)| tag)
                .to_owned()
        })
        .collect()
}

fn has_edge(edges: &[String], source: &str, destination: &str, marks: &str) -> bool {
    let pair = format!("data-source=\"{source}\" data-destination=\"{destination}\"");
    edges.iter().any(|e| e.contains(&pair) && e.contains(marks))
}

#[test]
fn the_service_graph_shows_mtls_plaintext_and_denied_flows_in_chromium() {
    let lab = Lab::up_with(lab::topology::DEFAULT, &["--observability"], &[], &[]);
    lab.apply("cart-callers", tests::lab::CART_CALLERS);
    // Bounded load: connections per request from the mesh to cart-v1's VIP, and in
    // plaintext from outside the mesh to a frontend.
    let _mesh = Process::spawn(&mut sample_command(
        "shop/frontend-1",
        &["spread", "--connect", "10.96.0.11:80", "--count", "4000"],
    ));
    let frontend = sa(lab.ip("shop/frontend-2"), 8080).to_string();
    let _plain = Process::spawn(&mut sample_command(
        "legacy/billing-1",
        &["spread", "--connect", &frontend, "--count", "4000"],
    ));
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("graph.png");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut denials = 0;
    let dom = loop {
        // The policy refuses billing; a few attempts a round keep the denials coming.
        for _ in 0..3 {
            let refused = lab.echo("legacy/billing-1", sa(lab.ip("shop/cart-1"), 7000), 10, &[]);
            assert!(refused.is_err(), "the policy let billing in: {refused:?}");
            denials += 1;
        }
        let out = tests::weftctl(&[
            "lab",
            "graph",
            "--screenshot",
            shot.to_str().unwrap(),
            "--dom",
        ]);
        assert!(out.status.success(), "{out:?}");
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        let e = edges(&dom);
        let complete = has_edge(
            &e,
            "shop/frontend-1",
            "svc:shop/cart-v1",
            "data-mtls=\"true\"",
        ) && has_edge(&e, "svc:shop/cart-v1", "shop/cart-1", "data-mtls=\"true\"")
            && has_edge(
                &e,
                "legacy/billing-1",
                "shop/frontend-2",
                "data-mtls=\"false\"",
            )
            && has_edge(
                &e,
                "legacy/billing-1",
                "shop/cart-1",
                "data-denied=\"true\"",
            );
        if complete {
            break dom;
        }
        assert!(
            Instant::now() < deadline,
            "the graph never showed every flow ({denials} denials sent); edges: {e:#?}\n{dom}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    println!("screenshot of the service graph: {}", shot.display());
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a near-empty screenshot: {} bytes",
        png.len()
    );

    // The page's script ran (it fetched and inserted the picture) and said so.
    assert!(dom.contains("data-loaded=\"true\""), "{dom}");
    assert!(dom.contains("rates over 1m"), "{dom}");
    // Nodes are marked in the mesh or not; the mTLS edges are drawn as such.
    assert!(dom.contains("data-id=\"shop/cart-1\" data-kind=\"workload\" data-enrolled=\"true\""));
    assert!(
        dom.contains("data-id=\"legacy/billing-1\" data-kind=\"workload\" data-enrolled=\"false\"")
    );
    assert!(
        dom.contains("data-id=\"svc:shop/cart-v1\" data-kind=\"service\" data-enrolled=\"true\"")
    );
    let e = edges(&dom);
    assert!(has_edge(
        &e,
        "shop/frontend-1",
        "svc:shop/cart-v1",
        "class=\"edge mtls\""
    ));
    assert!(has_edge(
        &e,
        "legacy/billing-1",
        "shop/frontend-2",
        "class=\"edge plaintext\""
    ));
    assert!(has_edge(
        &e,
        "legacy/billing-1",
        "shop/cart-1",
        "class=\"edge denied\""
    ));
    // No flow from the mesh client straight to the pod: it went through the Service.
    assert!(
        !has_edge(&e, "shop/frontend-1", "shop/cart-1", ""),
        "{e:#?}"
    );

    // From the host, through the relay on loopback: the same data as JSON.
    let mut relay = Process::spawn(
        tests::weftctl_command(&["lab", "graph", "--listen", "127.0.0.1:0"]).stdout(Stdio::piped()),
    );
    let mut first = String::new();
    BufReader::new(relay.child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    let authority = url.trim_start_matches("http://").trim_end_matches("/graph");
    let get = |path: &str| -> (String, String) {
        let mut s = TcpStream::connect(authority).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        (head.to_owned(), body.to_owned())
    };
    let (head, body) = get("/graph.json?namespace=shop&window=30s");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let g: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(g["window"], "30s");
    assert_eq!(g["error"], Value::Null, "{g}");
    let edge = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "shop/frontend-1" && e["destination"] == "svc:shop/cart-v1")
        .unwrap_or_else(|| panic!("no mesh edge in {g}"));
    assert_eq!(edge["mtls"], true);
    assert!(edge["rate"].as_f64().unwrap() > 1.0, "{edge}");
    assert!(edge["bytesRate"].as_f64().unwrap() > 0.0, "{edge}");
    // A namespace keeps its nodes and their neighbours, nothing else.
    for n in g["nodes"].as_array().unwrap() {
        let id = n["id"].as_str().unwrap();
        assert!(
            n["namespace"] == "shop" || id == "legacy/billing-1",
            "{id} in the shop graph"
        );
    }
    let (head, body) = get("/graph.svg?window=1y");
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(body.contains("window=\"1y\""), "{body}");
    relay.kill();
}
