// Command etcd is etcd's own server entry point, built from the Go module proxy
// because no package registry ships an etcd binary for this machine.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
