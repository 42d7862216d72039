"""Kubernetes settings of runs, read by dagster-k8s when the instance uses K8sRunLauncher
(the Helm deployment, deploy/k8s/values.yaml); any other run launcher ignores them.

``weekly_retrain`` trains ATFT-GAT-FAN: its run pod goes to a GPU node (the node label that
NVIDIA's GPU operator sets, tolerating the usual GPU taint) and asks for one GPU and the
memory of the production panel. Every other run keeps the chart's default pod size.
"""

from __future__ import annotations

import json

K8S_CONFIG_TAG = "dagster-k8s/config"

TRAINING_POD = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "1"},
            "limits": {"memory": "96Gi", "nvidia.com/gpu": "1"},
        },
    },
    "pod_spec_config": {
        "node_selector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}

TRAINING_RUN_TAGS = {K8S_CONFIG_TAG: json.dumps(TRAINING_POD)}
