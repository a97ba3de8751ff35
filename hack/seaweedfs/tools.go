//go:build tools

// Package tools pins the SeaweedFS `weed` command we build from source (see
// ../build-seaweedfs.sh): a real S3-compatible object store for the tests and
// the demo. The build tag keeps this file out of every normal build while
// `go mod tidy` still records the dependencies.
package tools

import (
	_ "github.com/seaweedfs/seaweedfs/weed"
)
