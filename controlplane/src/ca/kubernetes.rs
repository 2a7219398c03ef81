//! The root kept on Kubernetes: a Secret (keys `root-cert.pem` and `root-key.pem`),
//! created at first start. When two control planes start at once, the one whose create
//! loses (409) reads the winner's root, so a cluster never has two.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use super::{Authority, Error, RootPem, Settings, generate_root};

const CERT_KEY: &str = "root-cert.pem";
const KEY_KEY: &str = "root-key.pem";

fn kube_err(what: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |e| Error::Kubernetes {
        what: what.to_owned(),
        detail: e.to_string(),
    }
}

fn root_of(secret: &Secret, name: &str) -> Result<RootPem, Error> {
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| Error::Material {
                what: format!("Secret {name}"),
                detail: format!("no {key}"),
            })
    };
    Ok(RootPem {
        cert: field(CERT_KEY)?,
        key: field(KEY_KEY)?,
    })
}

/// Loads the root from the Secret `namespace/name`, creating it the first time.
/// Returns whether it was created.
pub async fn load_or_create(
    client: Client,
    namespace: &str,
    name: &str,
    settings: Settings,
) -> Result<(Authority, bool), Error> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    if let Some(secret) = secrets
        .get_opt(name)
        .await
        .map_err(kube_err("reading the CA Secret"))?
    {
        let root = root_of(&secret, name)?;
        return Ok((Authority::from_root(&root, settings)?, false));
    }
    let root = generate_root(&settings.trust_domain)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "weft".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (
                CERT_KEY.to_owned(),
                ByteString(root.cert.clone().into_bytes()),
            ),
            (
                KEY_KEY.to_owned(),
                ByteString(root.key.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok((Authority::from_root(&root, settings)?, true)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Another control plane created it first: use its root.
            let secret = secrets
                .get(name)
                .await
                .map_err(kube_err("reading the CA Secret after a conflict"))?;
            Ok((
                Authority::from_root(&root_of(&secret, name)?, settings)?,
                false,
            ))
        }
        Err(e) => Err(kube_err("creating the CA Secret")(e)),
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::kube_mock::{body, json, mock, status};

    const PATH: &str = "/api/v1/namespaces/weft-system/secrets";

    #[tokio::test]
    async fn creates_the_secret_once_and_then_reuses_it() {
        let (client, mut handle) = mock();
        let scenario = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::GET);
            assert_eq!(req.uri().path(), format!("{PATH}/weft-root-ca"));
            send.send_response(status(404, "NotFound"));
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::POST);
            assert_eq!(req.uri().path(), PATH);
            let created = body(req).await;
            assert_eq!(created["metadata"]["name"], "weft-root-ca");
            assert_eq!(created["type"], "Opaque");
            send.send_response(json(201, created.clone()));
            created
        });
        let (first, created) =
            load_or_create(client, "weft-system", "weft-root-ca", Settings::default())
                .await
                .unwrap();
        assert!(created);
        let stored = scenario.await.unwrap();

        // A restart finds the Secret and keeps the same root.
        let (client, mut handle) = mock();
        let scenario = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::GET);
            send.send_response(json(200, stored));
            // Nothing else is asked (the client goes away, or nothing comes).
            let next =
                tokio::time::timeout(std::time::Duration::from_millis(200), handle.next_request())
                    .await;
            assert!(
                matches!(next, Err(_) | Ok(None)),
                "nothing is written when the Secret exists"
            );
        });
        let (second, created) =
            load_or_create(client, "weft-system", "weft-root-ca", Settings::default())
                .await
                .unwrap();
        scenario.await.unwrap();
        assert!(!created);
        assert_eq!(first.roots(), second.roots());
    }

    #[tokio::test]
    async fn a_lost_race_uses_the_winners_root() {
        let winner = generate_root("cluster.local").unwrap();
        let winner_secret = serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "weft-root-ca", "namespace": "weft-system"},
            "type": "Opaque",
            "data": {
                "root-cert.pem": k8s_openapi::ByteString(winner.cert.clone().into_bytes()),
                "root-key.pem": k8s_openapi::ByteString(winner.key.clone().into_bytes()),
            },
        });
        let (client, mut handle) = mock();
        let scenario = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(404, "NotFound"));
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::POST);
            send.send_response(status(409, "AlreadyExists"));
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), Method::GET);
            send.send_response(json(200, winner_secret));
        });
        let (ca, created) =
            load_or_create(client, "weft-system", "weft-root-ca", Settings::default())
                .await
                .unwrap();
        scenario.await.unwrap();
        assert!(!created);
        let winner_ca = Authority::from_root(&winner, Settings::default()).unwrap();
        assert_eq!(ca.roots(), winner_ca.roots());
    }

    #[tokio::test]
    async fn api_errors_and_broken_secrets_are_reported() {
        let (client, mut handle) = mock();
        let scenario = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(status(403, "Forbidden"));
        });
        let e = load_or_create(client, "weft-system", "weft-root-ca", Settings::default())
            .await
            .unwrap_err();
        scenario.await.unwrap();
        assert_eq!(e.reason(), "ca_kubernetes", "{e}");

        let (client, mut handle) = mock();
        let scenario = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.unwrap();
            send.send_response(json(
                200,
                serde_json::json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "weft-root-ca", "namespace": "weft-system"},
                    "data": {"root-cert.pem": "AAAA"},
                }),
            ));
        });
        let e = load_or_create(client, "weft-system", "weft-root-ca", Settings::default())
            .await
            .unwrap_err();
        scenario.await.unwrap();
        assert_eq!(e.reason(), "ca_material", "{e}");
        assert!(e.to_string().contains("no root-key.pem"), "{e}");
    }
}
