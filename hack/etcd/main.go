// Command etcd is a thin wrapper so we can build the etcd server from the Go
// module proxy at a pinned version (see go.mod) without a binary download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
