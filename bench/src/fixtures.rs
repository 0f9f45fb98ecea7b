//! Realistic admission requests: a pod as a Deployment's ReplicaSet creates it (about
//! 5 KiB), with its own required node affinity and two tolerations, and the
//! NamespaceOffloading specs the strategies use.

use serde_json::{Value, json};

/// The `spec` of a NamespaceOffloading with `strategy`, selecting clusters of `region=eu`.
pub fn offloading_spec(strategy: &str) -> Value {
    json!({
        "namespaceMappingStrategy": "DefaultName",
        "podOffloadingStrategy": strategy,
        "clusterSelector": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "region", "operator": "In", "values": ["eu"]}]}
        ]},
    })
}

/// The pod's own required node-affinity terms, when it has some.
fn own_affinity(terms: usize) -> Value {
    let terms: Vec<Value> = (0..terms)
        .map(|i| {
            json!({"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64", "arm64"]},
                {"key": "node.example.com/pool", "operator": "NotIn", "values": [format!("batch-{i}")]},
            ]})
        })
        .collect();
    json!({
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms},
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 50, "preference": {"matchExpressions": [
                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["eu-west-1a"]}
                ]}}
            ],
        },
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "checkout"}},
                "topologyKey": "kubernetes.io/hostname"}}
        ]},
    })
}

/// A pod of a Deployment `checkout` in `namespace`; `own_terms` required node-affinity
/// terms of its own (0: no node affinity of its own).
pub fn pod(namespace: &str, own_terms: usize) -> Value {
    let mut spec = json!({
        "volumes": [
            {"name": "config", "configMap": {"name": "checkout-config", "defaultMode": 420}},
            {"name": "kube-api-access-7xq2p", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}
        ],
        "containers": [{
            "name": "checkout",
            "image": "registry.example.com/shop/checkout:1.42.3",
            "args": ["--listen=:8080", "--metrics=:9090", "--log-format=json"],
            "ports": [
                {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}
            ],
            "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}},
                {"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "checkout-db", "key": "url"}}},
                {"name": "CACHE_ADDR", "value": "redis.shop.svc.cluster.local:6379"},
                {"name": "PAYMENTS_URL", "value": "http://payments.shop.svc.cluster.local:8080"},
                {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector.observability:4317"}
            ],
            "resources": {"limits": {"cpu": "1", "memory": "512Mi"}, "requests": {"cpu": "250m", "memory": "256Mi"}},
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/checkout", "readOnly": true},
                {"name": "kube-api-access-7xq2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}
            ],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                              "initialDelaySeconds": 10, "timeoutSeconds": 1, "periodSeconds": 10,
                              "successThreshold": 1, "failureThreshold": 3},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"},
                               "timeoutSeconds": 1, "periodSeconds": 5, "successThreshold": 1, "failureThreshold": 3},
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}}
        }],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": "checkout",
        "serviceAccount": "checkout",
        "securityContext": {"fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}},
        "imagePullSecrets": [{"name": "registry-credentials"}],
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ],
        "priority": 0,
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority"
    });
    if own_terms > 0 {
        spec["affinity"] = own_affinity(own_terms);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "checkout-7d9f8b6c5d-",
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "checkout",
                "app.kubernetes.io/part-of": "shop",
                "app.kubernetes.io/version": "1.42.3",
                "pod-template-hash": "7d9f8b6c5d"
            },
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090",
                "kubectl.kubernetes.io/restartedAt": "2026-11-20T09:12:44Z"
            },
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "checkout-7d9f8b6c5d",
                                 "uid": "5b0c1e6e-2f4c-4d53-9d1e-0f6a3c2b7e91", "controller": true,
                                 "blockOwnerDeletion": true}]
        },
        "spec": spec,
        "status": {"phase": "Pending", "qosClass": "Burstable"}
    })
}

/// The AdmissionReview the API server sends for `pod`'s creation.
pub fn pod_review(uid: &str, pod: &Value) -> Value {
    let namespace = pod["metadata"]["namespace"].clone();
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "a7c1d0a4-64c8-4b6e-9a0e-6b7c8d9e0f12",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

/// The AdmissionReview for creating a NamespaceOffloading `offloading` with `spec`.
pub fn offloading_review(uid: &str, namespace: &str, spec: &Value) -> Value {
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": uid,
            "kind": {"group": "offloading.liqo.io", "version": "v1alpha1", "kind": "NamespaceOffloading"},
            "resource": {"group": "offloading.liqo.io", "version": "v1alpha1", "resource": "namespaceoffloadings"},
            "name": "offloading",
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": {"apiVersion": "offloading.liqo.io/v1alpha1", "kind": "NamespaceOffloading",
                       "metadata": {"name": "offloading", "namespace": namespace}, "spec": spec},
            "oldObject": null,
            "dryRun": true,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_is_about_five_kib() {
        let bytes = serde_json::to_vec(&pod_review("u", &pod("shop", 1)))
            .map(|b| b.len())
            .unwrap_or_default();
        assert!((4_500..6_500).contains(&bytes), "{bytes} bytes");
    }
}
