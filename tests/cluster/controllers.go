package main

// controllers.go runs the kube-controller-manager controllers weir's tests rely
// on, in this process, with leader election off and no serving port.

import (
	"context"
	"fmt"

	kcm "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	kcmoptions "k8s.io/kubernetes/cmd/kube-controller-manager/app/options"
	"k8s.io/kubernetes/cmd/kube-controller-manager/names"
)

// enabledControllers is the whole set that runs; everything else stays off.
var enabledControllers = []string{
	names.DeploymentController,
	names.ReplicaSetController,
	names.GarbageCollectorController,
	names.EndpointSliceController,
	// The ServiceAccount admission plugin rejects Pods until their namespace
	// has its `default` ServiceAccount, which this controller creates.
	names.ServiceAccountController,
	names.ServiceAccountTokenController,
	// Publishes kube-root-ca.crt, which projected token volumes refer to.
	names.RootCACertificatePublisherController,
	// Tests delete their namespaces; this controller empties and removes them.
	names.NamespaceController,
}

// startControllers returns a channel that yields the controllers' exit error
// once ctx is cancelled.
func startControllers(ctx context.Context, kubeconfig string, p *pki) (<-chan error, error) {
	s, err := kcmoptions.NewKubeControllerManagerOptions()
	if err != nil {
		return nil, fmt.Errorf("kube-controller-manager options: %w", err)
	}
	s.Generic.ClientConnection.Kubeconfig = kubeconfig
	s.Generic.ClientConnection.QPS = 200
	s.Generic.ClientConnection.Burst = 400
	s.Generic.LeaderElection.LeaderElect = false
	s.Generic.Controllers = enabledControllers
	// No port: BindPort 0 with no listener turns the serving endpoint off.
	s.SecureServing.BindPort = 0
	s.SAController.ServiceAccountKeyFile = p.saKeyFile
	s.SAController.RootCAFile = p.caFile

	config, err := s.Config(ctx, kcm.KnownControllers(), kcm.ControllersDisabledByDefault(), kcm.ControllerAliases())
	if err != nil {
		return nil, fmt.Errorf("kube-controller-manager config: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		done <- kcm.Run(ctx, config.Complete())
	}()
	return done, nil
}
