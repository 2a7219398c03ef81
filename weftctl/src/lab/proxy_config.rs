//! `weftctl lab proxy-config POD`: `weftctl proxy-config` for the lab, asking the pod's
//! node agent over its admin socket.

use anyhow::bail;

use crate::{output, proxy_config};

pub fn print(pod: &str, format: Option<output::Format>) -> anyhow::Result<()> {
    let state = super::running_lab()?;
    let p = state.pod(pod)?;
    let agent = state
        .agents
        .iter()
        .find(|a| a.node == p.pod.node)
        .expect("one agent per node");
    let r = api::admin::Client::new(&agent.admin_socket)
        .get(&format!("/v1/pods/{}/{}", p.pod.namespace, p.pod.name))?;
    if r.status != 200 {
        bail!("the agent of {} says: {}", agent.node, r.error_message());
    }
    let config: api::admin::PodConfig = serde_json::from_value(r.body)?;
    print!(
        "{}",
        output::render(format, &config, |colour| proxy_config::human(
            &config, colour
        ))
    );
    Ok(())
}
