//! The CRDs in `deploy/crds/` are generated from the Rust types (kube's
//! `CustomResourceExt`) and must match them. To regenerate after changing a type:
//! `WEFT_UPDATE_CRDS=1 cargo test -p controlplane --test crds`.

use std::path::Path;

use controlplane::model::{
    AuthorizationPolicyResource, BackendPolicyResource, ExternalServiceResource,
    PeerAuthenticationResource, TrafficFilterResource, WorkloadResource,
};
use kube::CustomResourceExt;

fn render<K: CustomResourceExt>() -> (String, String) {
    let crd = K::crd();
    let name = crd.metadata.name.clone().expect("a CRD has a name");
    let yaml = serde_yaml_ng::to_string(&crd).expect("serializable");
    (
        format!("{name}.yaml"),
        format!("# Generated from controlplane/src/model by the crds test; do not edit.\n{yaml}"),
    )
}

#[test]
fn generated_crds_are_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let update = std::env::var("WEFT_UPDATE_CRDS").is_ok_and(|v| v == "1");
    for (file, yaml) in [
        render::<WorkloadResource>(),
        render::<AuthorizationPolicyResource>(),
        render::<PeerAuthenticationResource>(),
        render::<TrafficFilterResource>(),
        render::<BackendPolicyResource>(),
        render::<ExternalServiceResource>(),
    ] {
        let path = dir.join(&file);
        if update {
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == yaml,
            "deploy/crds/{file} is out of date; regenerate it with \
             `WEFT_UPDATE_CRDS=1 cargo test -p controlplane --test crds`"
        );
    }
}

#[test]
fn crds_carry_schemas_that_refuse_unknown_fields() {
    let crd = AuthorizationPolicyResource::crd();
    let version = &crd.spec.versions[0];
    assert_eq!(crd.spec.group, "security.weft.dev");
    assert_eq!(version.name, "v1alpha1");
    let schema = serde_json::to_value(version.schema.as_ref().unwrap()).unwrap();
    let action = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["action"];
    assert_eq!(
        action["enum"],
        serde_json::json!(["ALLOW", "DENY", "AUDIT"]),
        "{action}"
    );
}
