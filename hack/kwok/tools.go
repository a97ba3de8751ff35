//go:build tools

// Package tools pins sigs.k8s.io/kwok; ../build-controlplane.sh builds
// sigs.k8s.io/kwok/cmd/kwok from this module.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
