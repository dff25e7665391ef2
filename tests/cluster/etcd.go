package main

// etcd.go runs etcd in this process: one member, data in the run's temp dir,
// fsync off (the data is thrown away at exit, so durability buys nothing).

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// startEtcd starts etcd on two free loopback ports and returns it with its
// client URL. A port taken between choosing it and binding it is retried on
// new ports.
func startEtcd(dataDir string) (*embed.Etcd, string, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return nil, "", err
		}
		clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))}
		peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))}

		cfg := embed.NewConfig()
		cfg.Name = "weir"
		cfg.Dir = filepath.Join(dataDir, fmt.Sprintf("etcd-%d", attempt))
		cfg.UnsafeNoFsync = true
		cfg.LogLevel = "error"
		cfg.LogOutputs = []string{"stderr"}
		cfg.ListenClientUrls = []url.URL{clientURL}
		cfg.AdvertiseClientUrls = []url.URL{clientURL}
		cfg.ListenPeerUrls = []url.URL{peerURL}
		cfg.AdvertisePeerUrls = []url.URL{peerURL}
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, "", err
		}

		e, err := embed.StartEtcd(cfg)
		if err != nil {
			lastErr = err
			if errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use") {
				continue
			}
			return nil, "", fmt.Errorf("start etcd: %w", err)
		}
		select {
		case <-e.Server.ReadyNotify():
			return e, clientURL.String(), nil
		case err := <-e.Err():
			e.Close()
			return nil, "", fmt.Errorf("etcd failed while starting: %w", err)
		case <-time.After(60 * time.Second):
			e.Close()
			return nil, "", errors.New("etcd not ready after 60s")
		}
	}
	return nil, "", fmt.Errorf("start etcd: ports kept conflicting: %w", lastErr)
}

// freePorts asks the kernel for n distinct free loopback ports. They are free
// when this returns, not necessarily when bound; callers retry on a conflict.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	listeners := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
