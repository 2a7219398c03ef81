//! `weftctl enroll <namespace>` (and `--off`): sets the namespace's `weft.dev/mesh`
//! label, which puts its pods in the mesh (or takes them out).

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

pub const LABEL: &str = "weft.dev/mesh";

/// Labels `namespace` `enabled` (or `disabled` with `on` false).
pub async fn set(client: &Client, namespace: &str, on: bool) -> anyhow::Result<()> {
    let value = if on { "enabled" } else { "disabled" };
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = json!({"metadata": {"labels": {LABEL: value}}});
    match api
        .patch(namespace, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            anyhow::bail!("the cluster has no namespace {namespace}")
        }
        Err(e) => Err(e.into()),
    }
}

/// The command: prints what it did.
pub fn run(namespace: &str, on: bool, context: Option<&str>) -> anyhow::Result<()> {
    api::names::dns_label(namespace).map_err(|e| anyhow::anyhow!("{namespace:?}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = crate::kubeconfig::client(context).await?;
        set(&client, namespace, on).await
    })?;
    println!(
        "namespace {namespace}: {LABEL}={}",
        if on { "enabled" } else { "disabled" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::reply;

    #[tokio::test]
    async fn the_label_is_merged_in_and_a_missing_namespace_is_named() {
        let (client, mut handle) = crate::testing::cluster();
        let task = tokio::spawn({
            let client = client.clone();
            async move { set(&client, "shop", true).await }
        });
        let (req, send) = handle.next_request().await.unwrap();
        assert_eq!(req.method(), http::Method::PATCH);
        assert_eq!(req.uri().path(), "/api/v1/namespaces/shop");
        assert_eq!(
            req.headers()["content-type"],
            "application/merge-patch+json"
        );
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let patch: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(patch, json!({"metadata": {"labels": {LABEL: "enabled"}}}));
        send.send_response(reply(
            200,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "shop", "labels": {LABEL: "enabled"}}}),
        ));
        task.await.unwrap().unwrap();

        let task = tokio::spawn(async move { set(&client, "nope", false).await });
        let (_, send) = handle.next_request().await.unwrap();
        send.send_response(reply(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "reason": "NotFound", "code": 404, "message": "namespaces \"nope\" not found"}),
        ));
        let e = task.await.unwrap().unwrap_err().to_string();
        assert_eq!(e, "the cluster has no namespace nope");
    }
}
