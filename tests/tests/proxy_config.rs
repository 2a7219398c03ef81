//! `weftctl lab proxy-config` against the lab's real agents: what the agent of a pod's
//! node holds for it, the same on the admin socket and on the metrics port (where
//! `weftctl proxy-config` reaches it through the API server on a cluster).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::{
    lab::{Lab, http_get, sa},
    weftctl,
};
use weftctl::lab;

fn proxy_config(pod: &str) -> Value {
    let out = weftctl(&["lab", "proxy-config", pod, "-o", "json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_agent_tells_what_it_holds_for_a_pod() {
    let lab = Lab::up(lab::topology::DEFAULT, &[], &[]);
    lab.apply(
        "cart-policy",
        "apiVersion: security.weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: cart-from-frontend\n  namespace: shop\nspec:\n  selector:\n    matchLabels: {app: cart}\n  action: ALLOW\n  rules:\n    - from:\n        - source:\n            principals: [cluster.local/ns/shop/sa/frontend]\n",
    );

    let cart = proxy_config("shop/cart-1");
    assert_eq!(cart["inMesh"], true);
    assert_eq!(cart["node"], "node-1");
    assert_eq!(cart["identity"], "spiffe://cluster.local/ns/shop/sa/cart");
    assert_eq!(cart["addresses"][0], lab.ip("shop/cart-1").to_string());
    assert_eq!(
        cart["enrollment"]["netns"],
        lab::netns_path(&lab.pod("shop/cart-1").netns)
            .display()
            .to_string()
    );
    assert_eq!(cart["certificate"]["state"], "ready");
    // The certificate lives 24 hours.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let not_after = cart["certificate"]["notAfter"].as_u64().unwrap();
    assert!(
        (now + 23 * 3600..=now + 25 * 3600).contains(&not_after),
        "{not_after} vs {now}"
    );
    assert_eq!(
        cart["policies"],
        serde_json::json!(["AuthorizationPolicy shop/cart-from-frontend"])
    );
    assert_eq!(
        cart["services"],
        serde_json::json!(["shop/cart (waypoint cart-waypoint)", "shop/cart-v1"])
    );
    assert_eq!(cart["peerAuthentication"], "PERMISSIVE");

    // Outside the mesh: no enrollment, no certificate, and the policy does not apply.
    let billing = proxy_config("legacy/billing-1");
    assert_eq!(billing["inMesh"], false);
    assert!(billing.get("enrollment").is_none(), "{billing}");
    assert!(billing.get("certificate").is_none(), "{billing}");
    assert_eq!(billing["policies"], serde_json::json!([]));

    // The same on the agent's metrics port, from the node's namespace.
    let node = lab::netns_path(&lab::node_netns("node-1"));
    let answer = http_get(
        &node,
        sa(lab.node_address("node-1"), 15020),
        "/v1/pods/shop/cart-1",
    );
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let over_http: Value = serde_json::from_str(body).unwrap();
    assert_eq!(over_http["identity"], cart["identity"]);
    assert_eq!(over_http["policies"], cart["policies"]);

    // A person's view.
    let out = weftctl(&["lab", "proxy-config", "shop/cart-1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        // 24 h, give or take the seconds since it was issued.
        ["expires in 23h", "expires in 1d 0h"]
            .iter()
            .any(|t| text.contains(&format!("certificate        ready, {t}"))),
        "{text}"
    );

    // A pod of another node is not this agent's; an unknown pod is said so.
    let out = weftctl(&["lab", "proxy-config", "shop/nope"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pod \"shop/nope\" in the lab"),
        "{out:?}"
    );
}
