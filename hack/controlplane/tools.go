//go:build tools

// Package tools pins the Kubernetes control-plane commands we build from
// source (see ../build-controlplane.sh). The build tag keeps this file out of
// every normal build while `go mod tidy` still records the dependencies.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
