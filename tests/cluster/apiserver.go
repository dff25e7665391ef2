package main

// apiserver.go configures and runs kube-apiserver in this process. Options are
// set as fields, never parsed from flags, so that the global flag registries of
// the components in this binary cannot collide.

import (
	"context"
	"fmt"
	"net"

	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
	"k8s.io/kubernetes/cmd/kube-apiserver/app/options"
	"k8s.io/kubernetes/pkg/controlplane/reconcilers"
)

const (
	serviceCIDR = "10.0.0.0/16"
	// serviceIP is the first address of serviceCIDR: the `kubernetes` Service.
	serviceIP = "10.0.0.1"
	issuer    = "https://kubernetes.default.svc.cluster.local"
)

// startAPIServer serves the API on listener and returns a channel that yields
// the server's exit error (nil after a clean stop) once ctx is cancelled.
func startAPIServer(ctx context.Context, listener net.Listener, etcdURL string, p *pki) (<-chan error, error) {
	s := options.NewServerRunOptions()
	addr := listener.Addr().(*net.TCPAddr)

	s.SecureServing.Listener = listener
	s.SecureServing.BindAddress = addr.IP
	s.SecureServing.BindPort = addr.Port
	s.SecureServing.ExternalAddress = addr.IP
	s.SecureServing.ServerCert.CertKey.CertFile = p.servingCert
	s.SecureServing.ServerCert.CertKey.KeyFile = p.servingKey
	s.SecureServing.ServerCert.CertDirectory = ""
	s.GenericServerRunOptions.AdvertiseAddress = addr.IP

	s.Etcd.StorageConfig.Transport.ServerList = []string{etcdURL}

	s.Authentication.ClientCert.ClientCA = p.caFile
	s.Authentication.ServiceAccounts.Issuers = []string{issuer}
	s.Authentication.ServiceAccounts.KeyFiles = []string{p.saKeyFile}
	s.ServiceAccountSigningKeyFile = p.saKeyFile
	s.Authorization.Modes = []string{"RBAC"}

	s.ServiceClusterIPRanges = serviceCIDR
	// The `kubernetes` Service would get 127.0.0.1 as its endpoint, which
	// Endpoints validation rejects; nothing in the tests runs in-cluster.
	s.EndpointReconcilerType = string(reconcilers.NoneEndpointReconcilerType)
	s.AllowPrivileged = true

	completed, err := s.Complete(ctx)
	if err != nil {
		return nil, fmt.Errorf("complete kube-apiserver options: %w", err)
	}
	if errs := completed.Validate(); len(errs) != 0 {
		return nil, fmt.Errorf("validate kube-apiserver options: %w", utilerrors.NewAggregate(errs))
	}
	config, err := app.NewConfig(completed)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver config: %w", err)
	}
	completedConfig, err := config.Complete()
	if err != nil {
		return nil, fmt.Errorf("complete kube-apiserver config: %w", err)
	}
	server, err := app.CreateServerChain(completedConfig)
	if err != nil {
		return nil, fmt.Errorf("create kube-apiserver: %w", err)
	}
	prepared, err := server.PrepareRun()
	if err != nil {
		return nil, fmt.Errorf("prepare kube-apiserver: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		done <- prepared.Run(ctx)
	}()
	return done, nil
}
