//! The commands: each asks the node's agent and turns its answer (or its silence)
//! into the CNI result or error.

use std::{path::Path, time::Duration};

use api::admin::{Client, CniRequest, NAMESPACE_RECORD, NamespaceRecord};
use serde_json::{Value, json};

use crate::conf::{Command, Env, Error, NetConf, SUPPORTED_VERSIONS, code};

/// How long the agent may take to answer; it waits up to its `WEFT_CNI_WAIT` (10 s by
/// default) for the configuration to name the pod.
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one command; `Ok(Some(json))` is printed on stdout.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, Error> {
    if env.command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": "1.0.0",
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    let pod = match (&env.pod_namespace, &env.pod_name) {
        (Some(ns), Some(name)) if !conf.exclude_namespaces.contains(ns) => {
            Some((ns.as_str(), name.as_str()))
        }
        // Not a pod (no Kubernetes arguments) or one of an excluded namespace.
        _ => None,
    };
    let Some((namespace, name)) = pod else {
        return Ok((env.command == Command::Add).then(|| conf.result()));
    };
    let request = CniRequest {
        container_id: env.container_id.clone(),
        netns: env.netns.clone(),
        namespace: Some(namespace.to_owned()),
        pod: Some(name.to_owned()),
    };
    let path = match env.command {
        Command::Add => "/v1/cni/add",
        Command::Del => "/v1/cni/del",
        _ => "/v1/cni/check",
    };
    let client = Client::new(&conf.agent_socket).with_timeout(AGENT_TIMEOUT);
    let body = serde_json::to_string(&request).expect("serializable");
    let who = format!("pod {namespace}/{name}");
    match client.post_json(path, &body) {
        Ok(r) if r.status == 200 => Ok((env.command == Command::Add).then(|| conf.result())),
        Ok(r) if r.status == 503 => Err(Error::new(
            code::TRY_AGAIN_LATER,
            format!("the Weft agent cannot place {who} yet"),
            r.error_message(),
        )),
        Ok(r) => Err(Error::new(
            code::AGENT_REFUSED,
            format!("the Weft agent refused {who} ({})", r.status),
            r.error_message(),
        )),
        // The namespace of a deleted pod is gone or going: a restarted agent drops
        // enrollments of namespaces that no longer exist.
        Err(_) if env.command == Command::Del => Ok(None),
        Err(e) => match recorded(&conf.agent_socket, namespace) {
            Some(false) => Ok((env.command == Command::Add).then(|| conf.result())),
            known => Err(Error::new(
                code::TRY_AGAIN_LATER,
                format!(
                    "the Weft agent of this node does not answer at {}, and {}: {who} waits for it (the runtime retries)",
                    conf.agent_socket.display(),
                    if known.is_some() {
                        format!("namespace {namespace} is in the mesh")
                    } else {
                        format!("whether namespace {namespace} is in the mesh is not known")
                    }
                ),
                e.to_string(),
            )),
        },
    }
}

/// What the agent last wrote down of `namespace`: `None` when there is no readable
/// record or it does not name the namespace.
fn recorded(socket: &Path, namespace: &str) -> Option<bool> {
    let path = socket.parent()?.join(NAMESPACE_RECORD);
    let record: NamespaceRecord = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    if record.version == 0 {
        return None;
    }
    // One the record does not name may have been made (and labelled) since.
    record.namespaces.get(namespace).copied()
}
