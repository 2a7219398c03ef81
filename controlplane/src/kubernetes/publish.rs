//! What the control plane publishes at start in Kubernetes mode, so that the mesh's
//! parts trust it: the root certificates in the ConfigMap `weft-roots` of its namespace
//! (the agents mount it), and the same roots as the CA bundle of its admission webhook
//! (`ValidatingWebhookConfiguration weft-controlplane`, left alone when it is not
//! installed).

use k8s_openapi::{
    ByteString,
    api::{admissionregistration::v1::ValidatingWebhookConfiguration, core::v1::ConfigMap},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::waypoints::FIELD_MANAGER;

pub const ROOTS_CONFIG_MAP: &str = "weft-roots";
pub const WEBHOOK: &str = "weft-controlplane";
pub const WEBHOOK_NAME: &str = "validation.weft.dev";

/// Publishes `roots_pem`; `Ok(false)` when the webhook configuration is not installed.
pub async fn publish(
    client: &Client,
    namespace: &str,
    roots_pem: &str,
) -> Result<bool, kube::Error> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ROOTS_CONFIG_MAP, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "weft"}},
        "data": {"roots.pem": roots_pem},
    });
    maps.patch(
        ROOTS_CONFIG_MAP,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&map),
    )
    .await?;
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    // A strategic merge: the webhook is matched by its name, nothing else changes.
    let bundle =
        serde_json::to_value(ByteString(roots_pem.as_bytes().to_vec())).expect("bytes serialize");
    let patch = json!({"webhooks": [{"name": WEBHOOK_NAME, "clientConfig": {"caBundle": bundle}}]});
    match hooks
        .patch(WEBHOOK, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Publishes once this replica leads, until it has (every 5 s after a failure).
pub async fn keep_trying(
    client: Client,
    namespace: String,
    roots_pem: String,
    mut leading: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        match publish(&client, &namespace, &roots_pem).await {
            Ok(webhook) => {
                tracing::info!(
                    configmap = %format_args!("{namespace}/{ROOTS_CONFIG_MAP}"),
                    webhook,
                    "published the root certificates"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "publishing the root certificates failed; trying again in 5 s");
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::kube_mock::{self, body, json as answer, status};

    const ROOTS: &str = "-----BEGIN CERTIFICATE-----\nroot\n-----END CERTIFICATE-----\n";

    #[tokio::test]
    async fn roots_go_to_the_configmap_and_the_webhook() {
        let (client, mut api) = kube_mock::mock();
        let task = tokio::spawn(async move { publish(&client, "weft-system", ROOTS).await });
        let (req, reply) = api.next_request().await.unwrap();
        assert_eq!(req.method(), Method::PATCH);
        assert_eq!(
            req.uri().path(),
            "/api/v1/namespaces/weft-system/configmaps/weft-roots"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let map = body(req).await;
        assert_eq!(map["data"]["roots.pem"], ROOTS);
        reply.send_response(answer(200, map));

        let (req, reply) = api.next_request().await.unwrap();
        assert_eq!(
            req.uri().path(),
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/weft-controlplane"
        );
        assert_eq!(
            req.headers()["content-type"],
            "application/strategic-merge-patch+json"
        );
        let patch = body(req).await;
        let hook = &patch["webhooks"][0];
        assert_eq!(hook["name"], WEBHOOK_NAME);
        let bundle: ByteString =
            serde_json::from_value(hook["clientConfig"]["caBundle"].clone()).unwrap();
        assert_eq!(bundle.0, ROOTS.as_bytes());
        reply.send_response(answer(
            200,
            json!({"apiVersion": "admissionregistration.k8s.io/v1",
                   "kind": "ValidatingWebhookConfiguration",
                   "metadata": {"name": WEBHOOK}}),
        ));
        assert!(task.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn no_webhook_installed_is_no_failure() {
        let (client, mut api) = kube_mock::mock();
        let task = tokio::spawn(async move { publish(&client, "weft-system", ROOTS).await });
        let (req, reply) = api.next_request().await.unwrap();
        reply.send_response(answer(200, body(req).await));
        let (_, reply) = api.next_request().await.unwrap();
        reply.send_response(status(404, "NotFound"));
        assert!(!task.await.unwrap().unwrap());
    }
}
