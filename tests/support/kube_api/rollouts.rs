//! What the workload controllers do after a PATCH changes a pod template: the workload's pods
//! replaced by pods of its template (stored as is: no webhook runs here), and the rollout
//! reported done.

use serde_json::{Value, json};

use super::store::{Cluster, ObjectKey};

impl Cluster {
    /// What the controllers do after a pod template change: new pods from the template (the old
    /// ones deleted), then a finished rollout status. What admission would add is not added.
    pub(super) fn roll(&self, plural: &str, ns: &str, name: &str) {
        let mut objects = self.objects.lock().unwrap();
        let key = (plural.to_string(), ns.to_string(), name.to_string());
        let Some(workload) = objects.get(&key).cloned() else {
            return;
        };
        let replica_sets: Vec<String> = objects
            .iter()
            .filter(|((p, n, _), rs)| {
                p == "replicasets"
                    && n == ns
                    && rs["metadata"]["ownerReferences"][0]["name"] == name
            })
            .map(|((_, _, n), _)| n.clone())
            .collect();
        let owned = |pod: &Value| {
            let owner = &pod["metadata"]["ownerReferences"][0]["name"];
            owner == name || replica_sets.iter().any(|rs| owner == rs.as_str())
        };
        let old: Vec<(ObjectKey, Value)> = objects
            .iter()
            .filter(|((p, n, _), pod)| p == "pods" && n == ns && owned(pod))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let generation = workload["metadata"]["generation"].as_i64().unwrap_or(1);
        let template = &workload["spec"]["template"];
        for (k, old_pod) in old {
            objects.remove(&k);
            // A replacement as the controller makes it: the workload's pod template, stored as
            // is (no webhook runs here; a test admits new pods with the program's own mutation).
            let new_name = format!("{}-g{generation}", k.2);
            let mut spec = template["spec"].clone();
            spec["nodeName"] = old_pod["spec"]["nodeName"].clone();
            let pod = json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": new_name, "namespace": ns, "uid": format!("uid-pod-{ns}-{new_name}"),
                    "labels": template["metadata"]["labels"].clone(),
                    "ownerReferences": old_pod["metadata"]["ownerReferences"].clone(),
                },
                "spec": spec,
                "status": {"phase": "Running"},
            });
            objects.insert((k.0, k.1, new_name), pod);
        }
        let w = objects.get_mut(&key).unwrap();
        let replicas = w["spec"]["replicas"].as_i64().unwrap_or(1);
        w["status"] = json!({
            "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "desiredNumberScheduled": replicas, "updatedNumberScheduled": replicas,
            "numberAvailable": replicas, "currentNumberScheduled": replicas,
        });
    }
}
