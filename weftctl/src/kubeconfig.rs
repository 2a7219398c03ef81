//! Finding the API server as kubectl does: `KUBECONFIG` (or `~/.kube/config`), its
//! current context or the one named, else the pod's own service account.

use kube::Client;

/// A client for `context` (else the current one).
pub async fn client(context: Option<&str>) -> anyhow::Result<Client> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match kube::Config::from_kubeconfig(&options).await {
        Ok(c) => c,
        Err(e) if context.is_some() => anyhow::bail!("kubeconfig: {e}"),
        Err(_) => kube::Config::incluster().map_err(|e| {
            anyhow::anyhow!("no kubeconfig (KUBECONFIG, ~/.kube/config) and not in a pod: {e}")
        })?,
    };
    Ok(Client::try_from(config)?)
}
