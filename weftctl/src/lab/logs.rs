//! `weftctl lab logs --access POD`: the access log lines about one pod — each
//! connection its node's agent carried to or from it, and each request a waypoint
//! forwarded for it or to it — from the agents' and waypoints' logs, in the order
//! each process wrote them (agents first, then waypoints).

use std::path::PathBuf;

/// Whether `line` is an access log line whose source or destination is `workload`
/// (`namespace/name`), in the text or the JSON format.
pub fn about(line: &str, workload: &str) -> bool {
    let access = line.contains("weft::access");
    let text = ["src_workload=", "dst_workload="].iter().any(|field| {
        line.match_indices(&format!("{field}{workload}"))
            .any(|(i, m)| {
                let end = i + m.len();
                line[end..].starts_with(' ') || end == line.len()
            })
    });
    let json = ["\"src_workload\":", "\"dst_workload\":"]
        .iter()
        .any(|field| line.contains(&format!("{field}\"{workload}\"")));
    access && (text || json)
}

/// The logs that can speak of `pod`: its node's agent, and every waypoint.
fn sources(state: &super::State, pod: &super::PodState) -> Vec<PathBuf> {
    let agent = state
        .agents
        .iter()
        .filter(|a| a.node == pod.pod.node)
        .map(|a| a.log.clone());
    let waypoints = state
        .pods
        .iter()
        .filter(|p| p.pod.waypoint)
        .map(|p| p.log.clone());
    agent.chain(waypoints).collect()
}

pub fn print(pod: &str) -> anyhow::Result<()> {
    let state = super::running_lab()?;
    let p = state.pod(pod)?;
    let key = p.pod.key();
    let mut found = 0;
    for log in sources(&state, p) {
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        for line in text.lines().filter(|l| about(l, &key)) {
            println!("{line}");
            found += 1;
        }
    }
    if found == 0 {
        eprintln!("no access log lines about {key} yet");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_lines_of_one_workload_in_either_format() {
        let text = "2026-12-03T12:00:00Z  INFO weft::access: connection reporter=\"source\" src_workload=shop/frontend-1 dst_workload=shop/cart-1 sent=10";
        assert!(about(text, "shop/cart-1"));
        assert!(about(text, "shop/frontend-1"));
        // Not a prefix of another name, and only access lines.
        assert!(!about(text, "shop/cart"));
        assert!(!about(
            "INFO agent: src_workload=shop/cart-1 ",
            "shop/cart-1"
        ));
        let json = r#"{"target":"weft::access","fields":{"src_workload":"legacy/billing-1","dst_workload":"shop/cart-2"}}"#;
        assert!(about(json, "shop/cart-2"));
        assert!(!about(json, "shop/cart"));
    }
}
