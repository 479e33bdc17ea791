//! The one way to the Kubernetes API, for the webhook, the agent, `check`, `audit` and `migrate`:
//! the client ([`client`]), watch-backed stores ([`reflector`]), and the API resource of each
//! kind the webhook knows ([`api_resource`]).

pub mod client;
pub mod reflector;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::core::ApiResource;

use crate::object::Kind;

/// The API resource (group, version, plural) of `kind`, for calls that work on any kind.
pub fn api_resource(kind: Kind) -> ApiResource {
    fn of<K: kube::Resource<DynamicType = ()>>() -> ApiResource {
        ApiResource::erase::<K>(&())
    }
    match kind {
        Kind::Pod => of::<Pod>(),
        Kind::ServiceAccount => of::<ServiceAccount>(),
        Kind::Deployment => of::<Deployment>(),
        Kind::StatefulSet => of::<StatefulSet>(),
        Kind::DaemonSet => of::<DaemonSet>(),
        Kind::ReplicaSet => of::<ReplicaSet>(),
        Kind::Job => of::<Job>(),
        Kind::CronJob => of::<CronJob>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_group_and_name() {
        for kind in Kind::ALL {
            let ar = api_resource(kind);
            assert_eq!(
                (ar.group.as_str(), ar.kind.as_str()),
                (kind.group(), kind.as_str())
            );
        }
    }
}
