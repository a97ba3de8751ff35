//go:build tools

// Package tools pins the helm command we build from source (see
// ../build-helm.sh). The build tag keeps this file out of every normal build
// while `go mod tidy` still records the dependencies.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
