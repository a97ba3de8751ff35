# Local Kubernetes control plane (real kube-apiserver/etcd/controller-manager/
# scheduler + kwok fake GPU nodes). Include from the top-level Makefile:
#     include hack/cluster.mk
# Targets: controlplane, cluster-up, cluster-nodes, cluster-down, cluster-purge.
# Needs only bash, go, openssl, curl and python3 (stdlib), not the venv.

CLUSTER_HACK := $(dir $(lastword $(MAKEFILE_LIST)))
NODES ?= 16

.PHONY: controlplane cluster-up cluster-nodes cluster-down cluster-purge

controlplane: ## build (or reuse) the pinned control-plane binaries in ~/.cache/hybridgpu
	$(CLUSTER_HACK)build-controlplane.sh

cluster-up: controlplane ## start the local cluster and load $(NODES) fake GPU nodes
	$(CLUSTER_HACK)cluster-up.sh
	python3 $(CLUSTER_HACK)load-gpu-nodes.py --limit $(NODES)

cluster-nodes: ## (re)load $(NODES) fake GPU nodes into the running cluster
	python3 $(CLUSTER_HACK)load-gpu-nodes.py --limit $(NODES)

cluster-down: ## stop the demo's processes and the local cluster (keeps .local/ data)
	-$(MAKE) --no-print-directory demo-down
	$(CLUSTER_HACK)cluster-down.sh

cluster-purge: ## stop the local cluster and delete its data in .local/
	$(CLUSTER_HACK)cluster-down.sh --purge
