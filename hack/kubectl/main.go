// kubectl, built from the k8s.io/kubectl Go module for the stock-kind path
// (QSCALE_KIND_NODE_IMAGE) when no kubectl binary can be downloaded: the same main
// as kubernetes' cmd/kubectl, without building the Kubernetes sources.
package main

import (
	_ "k8s.io/client-go/plugin/pkg/client/auth"
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
