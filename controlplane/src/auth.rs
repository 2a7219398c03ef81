//! Who is calling: node agents authenticate with a bearer token. In local mode each node
//! has a bootstrap token (a file of `node: token` lines, read again when it changes); on
//! Kubernetes the agent's service account token is checked with a TokenReview, and the
//! node comes from the token's binding to the agent's pod. A waypoint presents its node's
//! token, or on Kubernetes its pod's own service account token, which the TokenReview
//! binds to the pod and its node ([`Caller::Pod`]); what that token may subscribe to is
//! decided by the registry.

use std::{collections::BTreeMap, path::PathBuf, sync::Mutex, time::SystemTime};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("no bearer token in the request's authorization metadata")]
    MissingToken,
    #[error("the token belongs to no node")]
    UnknownToken,
    #[error("the node token file {path} cannot be read: {detail}")]
    TokenFile { path: PathBuf, detail: String },
    #[error("the API server does not accept the token: {detail}")]
    Rejected { detail: String },
    #[error("{user} is not the agent's service account ({want})")]
    NotAgent { user: String, want: String },
    #[error("the token is not bound to a pod on a node")]
    NoNode,
    #[error("{user} is not a service account")]
    NotServiceAccount { user: String },
    #[error("the TokenReview failed: {detail}")]
    Review { detail: String },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::MissingToken => "missing_token",
            Error::UnknownToken => "unknown_token",
            Error::TokenFile { .. } => "token_file",
            Error::Rejected { .. } => "token_rejected",
            Error::NotAgent { .. } => "not_an_agent",
            Error::NoNode => "token_not_bound_to_node",
            Error::NotServiceAccount { .. } => "not_a_service_account",
            Error::Review { .. } => "token_review_failed",
        }
    }

    /// Whether the fault is ours (the caller cannot fix it by asking again).
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::TokenFile { .. } | Error::Review { .. })
    }
}

/// Node bootstrap tokens from a YAML map `node-name: token`.
#[derive(Debug)]
pub struct NodeTokens {
    path: PathBuf,
    cache: Mutex<(Option<SystemTime>, BTreeMap<String, String>)>,
}

impl NodeTokens {
    pub fn new(path: PathBuf) -> Self {
        NodeTokens {
            path,
            cache: Mutex::new((None, BTreeMap::new())),
        }
    }

    /// The node a token belongs to.
    pub fn authenticate(&self, token: &str) -> Result<String, Error> {
        if token.is_empty() {
            return Err(Error::MissingToken);
        }
        let file_err = |detail: String| Error::TokenFile {
            path: self.path.clone(),
            detail,
        };
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| file_err(e.to_string()))?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != Some(modified) {
            let text = std::fs::read_to_string(&self.path).map_err(|e| file_err(e.to_string()))?;
            let tokens: BTreeMap<String, String> =
                serde_yaml_ng::from_str(&text).map_err(|e| file_err(e.to_string()))?;
            *cache = (Some(modified), tokens);
        }
        // Compare every token in full, so timing says nothing about which one is close.
        let mut found = None;
        for (node, known) in &cache.1 {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(node.clone());
            }
        }
        found.ok_or(Error::UnknownToken)
    }
}

/// The bearer token of a gRPC request's `authorization` metadata (empty if none).
pub fn bearer_token<T>(req: &tonic::Request<T>) -> String {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned()
}

/// Who a token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A node: its bootstrap token (local mode), or its agent's service account token.
    Node { node: String },
    /// A pod, by its own service account token (Kubernetes), bound to the pod.
    Pod {
        namespace: String,
        service_account: String,
        pod: String,
        node: String,
    },
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Node { node } => write!(f, "node {node}"),
            Caller::Pod {
                namespace,
                service_account,
                pod,
                node,
            } => write!(
                f,
                "pod {namespace}/{pod} (service account {service_account}, node {node})"
            ),
        }
    }
}

impl Caller {
    /// The node the caller runs on.
    pub fn node(&self) -> &str {
        match self {
            Caller::Node { node } | Caller::Pod { node, .. } => node,
        }
    }
}

/// How callers are authenticated.
pub enum Authenticator {
    Tokens(NodeTokens),
    Kubernetes(TokenReviewer),
}

impl Authenticator {
    /// The node whose agent the token belongs to (certificates, an agent's
    /// subscription).
    pub async fn authenticate(&self, token: &str) -> Result<String, Error> {
        match self {
            Authenticator::Tokens(t) => t.authenticate(token),
            Authenticator::Kubernetes(r) => r.authenticate(token).await,
        }
    }

    /// Who the token belongs to: a node, or (Kubernetes) a pod.
    pub async fn caller(&self, token: &str) -> Result<Caller, Error> {
        match self {
            Authenticator::Tokens(t) => t.authenticate(token).map(|node| Caller::Node { node }),
            Authenticator::Kubernetes(r) => r.caller(token).await,
        }
    }
}

/// The extra field in which the API server names the node of the pod a token is bound
/// to (projected service account tokens).
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
/// The extra field that names the pod a token is bound to.
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";

/// Checks agents' service account tokens with the API server.
pub struct TokenReviewer {
    client: kube::Client,
    /// `system:serviceaccount:<namespace>:<name>` of the agent DaemonSet.
    agent_user: String,
    audiences: Vec<String>,
}

impl TokenReviewer {
    pub fn new(
        client: kube::Client,
        agent_namespace: &str,
        agent_service_account: &str,
        audiences: Vec<String>,
    ) -> Self {
        TokenReviewer {
            client,
            agent_user: format!("system:serviceaccount:{agent_namespace}:{agent_service_account}"),
            audiences,
        }
    }

    /// The node of the agent the token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<String, Error> {
        let (username, extra) = self.review(token).await?;
        if username != self.agent_user {
            return Err(Error::NotAgent {
                user: username,
                want: self.agent_user.clone(),
            });
        }
        first(&extra, NODE_NAME_EXTRA).ok_or(Error::NoNode)
    }

    /// The agent's node, or the pod another service account's token is bound to.
    pub async fn caller(&self, token: &str) -> Result<Caller, Error> {
        let (username, extra) = self.review(token).await?;
        let node = first(&extra, NODE_NAME_EXTRA).ok_or(Error::NoNode)?;
        if username == self.agent_user {
            return Ok(Caller::Node { node });
        }
        let account = username
            .strip_prefix("system:serviceaccount:")
            .and_then(|a| a.split_once(':'));
        let Some((namespace, service_account)) = account else {
            return Err(Error::NotServiceAccount { user: username });
        };
        Ok(Caller::Pod {
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
            pod: first(&extra, POD_NAME_EXTRA).ok_or(Error::NoNode)?,
            node,
        })
    }

    /// Reviews a token: the user it authenticates, and the extra fields of its binding.
    async fn review(&self, token: &str) -> Result<(String, BTreeMap<String, Vec<String>>), Error> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        if token.is_empty() {
            return Err(Error::MissingToken);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..TokenReview::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let answer = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| Error::Review {
                detail: e.to_string(),
            })?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(Error::Rejected {
                detail: status
                    .error
                    .unwrap_or_else(|| "not authenticated".to_owned()),
            });
        }
        let user = status.user.unwrap_or_default();
        Ok((
            user.username.unwrap_or_default(),
            user.extra.unwrap_or_default(),
        ))
    }
}

/// The first value of a TokenReview extra field, if it is not empty.
fn first(extra: &BTreeMap<String, Vec<String>>, field: &str) -> Option<String> {
    extra
        .get(field)
        .and_then(|v| v.first())
        .filter(|v| !v.is_empty())
        .cloned()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random token (32 bytes, hex).
pub fn new_token() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_map_to_nodes() {
        let path = std::env::temp_dir().join(format!("weft-tokens-{}", rand::random::<u64>()));
        let (a, b) = (new_token(), new_token());
        std::fs::write(&path, format!("node-1: {a}\nnode-2: {b}\n")).unwrap();
        let t = NodeTokens::new(path.clone());
        assert_eq!(t.authenticate(&a).unwrap(), "node-1");
        assert_eq!(t.authenticate(&b).unwrap(), "node-2");
        assert_eq!(t.authenticate(&new_token()), Err(Error::UnknownToken));
        assert_eq!(t.authenticate(""), Err(Error::MissingToken));
        assert_eq!(t.authenticate(&a[..10]), Err(Error::UnknownToken));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(t.authenticate(&a).unwrap_err().reason(), "token_file");
    }

    use crate::kube_mock::{body, json, mock, status};

    /// Runs one TokenReview against a mock API server that answers `answer`; returns
    /// what the reviewer concluded and the review it sent.
    async fn review(
        token: &str,
        answer: http::Response<kube::client::Body>,
    ) -> (Result<String, Error>, Option<serde_json::Value>) {
        let (client, mut handle) = mock();
        let scenario = tokio::spawn(async move {
            let (req, send) = handle.next_request().await?;
            assert_eq!(req.method(), http::Method::POST);
            assert_eq!(
                req.uri().path(),
                "/apis/authentication.k8s.io/v1/tokenreviews"
            );
            let sent = body(req).await;
            send.send_response(answer);
            Some(sent)
        });
        let reviewer = TokenReviewer::new(client, "weft-system", "weft-agent", vec!["weft".into()]);
        let result = reviewer.authenticate(token).await;
        // Without the client the scenario's wait for a request ends.
        drop(reviewer);
        (result, scenario.await.unwrap())
    }

    fn reviewed(authenticated: bool, user: &str, node: Option<&str>) -> serde_json::Value {
        let mut extra = serde_json::Map::new();
        if let Some(node) = node {
            extra.insert(NODE_NAME_EXTRA.into(), serde_json::json!([node]));
        }
        serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {},
            "status": {
                "authenticated": authenticated,
                "user": {"username": user, "extra": extra},
            },
        })
    }

    const AGENT: &str = "system:serviceaccount:weft-system:weft-agent";

    #[tokio::test]
    async fn token_review_names_the_agents_node() {
        let (node, sent) = review("tok", json(201, reviewed(true, AGENT, Some("node-7")))).await;
        assert_eq!(node.unwrap(), "node-7");
        let sent = sent.unwrap();
        assert_eq!(sent["spec"]["token"], "tok");
        assert_eq!(sent["spec"]["audiences"], serde_json::json!(["weft"]));
    }

    /// Like `review`, for a subscription's caller.
    async fn review_caller(answer: serde_json::Value) -> Result<Caller, Error> {
        let (client, mut handle) = mock();
        let scenario = tokio::spawn(async move {
            let (_, send) = handle.next_request().await?;
            send.send_response(json(201, answer));
            Some(())
        });
        let reviewer = TokenReviewer::new(client, "weft-system", "weft-agent", vec![]);
        let result = reviewer.caller("tok").await;
        drop(reviewer);
        scenario.await.unwrap();
        result
    }

    #[tokio::test]
    async fn a_pods_token_names_the_pod_and_its_node() {
        let mut answer = reviewed(true, "system:serviceaccount:shop:waypoint", Some("node-2"));
        answer["status"]["user"]["extra"][POD_NAME_EXTRA] = serde_json::json!(["wp-7f9c"]);
        assert_eq!(
            review_caller(answer).await.unwrap(),
            Caller::Pod {
                namespace: "shop".into(),
                service_account: "waypoint".into(),
                pod: "wp-7f9c".into(),
                node: "node-2".into(),
            }
        );
        assert_eq!(
            review_caller(reviewed(true, AGENT, Some("node-7")))
                .await
                .unwrap(),
            Caller::Node {
                node: "node-7".into()
            }
        );
        // Not bound to a pod, or not a service account at all: refused.
        let unbound = reviewed(true, "system:serviceaccount:shop:waypoint", Some("node-2"));
        assert_eq!(
            review_caller(unbound).await.unwrap_err().reason(),
            "token_not_bound_to_node"
        );
        assert_eq!(
            review_caller(reviewed(true, "alice", Some("node-2")))
                .await
                .unwrap_err()
                .reason(),
            "not_a_service_account"
        );
    }

    #[tokio::test]
    async fn token_review_refusals_have_reasons() {
        let (r, _) = review("tok", json(201, reviewed(false, "", None))).await;
        assert_eq!(r.unwrap_err().reason(), "token_rejected");
        let other = "system:serviceaccount:default:intruder";
        let (r, _) = review("tok", json(201, reviewed(true, other, Some("node-7")))).await;
        assert_eq!(r.unwrap_err().reason(), "not_an_agent");
        let (r, _) = review("tok", json(201, reviewed(true, AGENT, None))).await;
        assert_eq!(r.unwrap_err().reason(), "token_not_bound_to_node");
        let (r, _) = review("tok", status(500, "InternalError")).await;
        let e = r.unwrap_err();
        assert_eq!(e.reason(), "token_review_failed");
        assert!(e.is_internal());
        // No token: the API server is not even asked.
        let (r, sent) = review("", json(201, reviewed(true, AGENT, Some("n")))).await;
        assert_eq!(r.unwrap_err(), Error::MissingToken);
        assert!(sent.is_none());
    }
}
