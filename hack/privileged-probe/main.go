// privileged-probe is the only program in the image hack/docker.sh runs as a
// --privileged container to learn whether this Docker can start kind's node.
//
// It is static and alone in its image (built here with `docker import`), so the
// probe never depends on whatever other image happens to be on the machine. It
// prints the capability sets it was given, for the log, and exits 0.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

func main() {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		fmt.Println("privileged-probe: started (no /proc)")
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var caps []string
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "Cap") {
			caps = append(caps, strings.Join(strings.Fields(line), " "))
		}
	}
	fmt.Printf("privileged-probe: started; %s\n", strings.Join(caps, ", "))
}
