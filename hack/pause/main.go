// Command pause is the sandbox ("pause") container of the local node: it holds the
// pod's namespaces and does nothing until it is told to stop. Built static, so the
// image needs no base layer.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
