// istiod-local runs Istio's control plane on a rendered Helm chart, without a
// Kubernetes cluster. See README.md.
package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/sms-checker/sms-checker-mesh/istiod-local/internal/cli"
)

// The process may re-execute itself with istiod's environment (see
// cli.applyEnv). Exec from the main thread keeps what its parent set on that
// thread, such as a parent-death signal; Go's other threads have none.
func init() {
	runtime.LockOSThread()
}

func main() {
	if err := cli.Run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "istiod-local: %v\n", err)
		os.Exit(1)
	}
}
