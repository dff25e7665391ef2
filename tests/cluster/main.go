// Command weir-testcluster runs a real Kubernetes control plane in one process
// for weir's tests: etcd, kube-apiserver, the controllers weir relies on, and a
// kwok-simulated node so that Pods become Ready without a kubelet.
//
//	weir-testcluster --dir DIR
//
// Once the cluster is usable it writes DIR/kubeconfig (admin, group
// system:masters) and prints `ready <url>` on stdout. It runs until SIGTERM or
// SIGINT, or until its stdin closes, so a test process that dies never leaves a
// cluster behind. All logs go to stderr.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"
)

// readyTimeout bounds each wait during startup; the harness has its own,
// larger deadline on top.
const readyTimeout = 90 * time.Second

func main() {
	flags := flag.NewFlagSet("weir-testcluster", flag.ContinueOnError)
	dir := flags.String("dir", "", "directory for the kubeconfig and the cluster's data (required)")
	verbosity := flags.String("v", "0", "klog verbosity of the Kubernetes components")
	if err := flags.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *dir == "" || flags.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: weir-testcluster --dir DIR [--v N]")
		os.Exit(2)
	}
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	if err := klogFlags.Set("v", *verbosity); err != nil {
		fmt.Fprintf(os.Stderr, "weir-testcluster: --v: %v\n", err)
		os.Exit(2)
	}
	if err := run(*dir); err != nil {
		fmt.Fprintf(os.Stderr, "weir-testcluster: %v\n", err)
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func run(dir string) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	// stdin closing is the parent's death (or its explicit wish): stop.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		klog.InfoS("stdin closed, shutting down")
		cancel()
	}()
	// Should a component hang on shutdown, exit anyway: the process must not
	// outlive its parent by more than a few seconds.
	go func() {
		<-ctx.Done()
		time.Sleep(15 * time.Second)
		fmt.Fprintln(os.Stderr, "weir-testcluster: shutdown took over 15s, exiting")
		os.Exit(1)
	}()
	rest.SetDefaultWarningHandler(rest.NoWarnings{})

	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	dataDir, err := os.MkdirTemp(dir, "data-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)

	p, err := newPKI(dataDir, net.ParseIP(serviceIP))
	if err != nil {
		return err
	}

	etcd, etcdURL, err := startEtcd(dataDir)
	if err != nil {
		return err
	}
	defer etcd.Close()

	// The listener is bound here and handed over, so the API server's port can
	// never be taken between choosing and binding it.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	url := "https://" + listener.Addr().String()
	apiDone, err := startAPIServer(ctx, listener, etcdURL, p)
	if err != nil {
		return err
	}

	// Components get their own copy of the admin kubeconfig; DIR/kubeconfig is
	// written last, as the signal that the cluster is usable.
	internalKubeconfig := filepath.Join(dataDir, "kubeconfig")
	if err := writeKubeconfig(internalKubeconfig, url, p); err != nil {
		return err
	}
	restConfig, err := clientcmd.BuildConfigFromFlags("", internalKubeconfig)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	if err := waitHealthy(ctx, client, apiDone); err != nil {
		return err
	}

	ctrlDone, err := startControllers(ctx, internalKubeconfig, p)
	if err != nil {
		return err
	}
	if err := createNode(ctx, client); err != nil {
		return err
	}
	if err := startKwok(ctx, internalKubeconfig); err != nil {
		return err
	}
	if err := startBinder(ctx, client); err != nil {
		return err
	}
	if err := waitClusterUsable(ctx, client); err != nil {
		return err
	}

	if err := writeKubeconfig(filepath.Join(dir, "kubeconfig"), url, p); err != nil {
		return err
	}
	fmt.Printf("ready %s\n", url)
	klog.InfoS("cluster ready", "url", url, "kubeconfig", filepath.Join(dir, "kubeconfig"))

	select {
	case <-ctx.Done():
	case err := <-apiDone:
		return fmt.Errorf("kube-apiserver stopped: %v", err)
	case err := <-ctrlDone:
		return fmt.Errorf("kube-controller-manager stopped: %v", err)
	}
	// The API server drains and closes its etcd clients before Run returns;
	// etcd is closed after it by the deferred Close.
	select {
	case err := <-apiDone:
		if err != nil {
			klog.ErrorS(err, "kube-apiserver shutdown")
		}
	case <-time.After(10 * time.Second):
		klog.InfoS("kube-apiserver still stopping after 10s; closing etcd anyway")
	}
	return nil
}

// waitHealthy polls /readyz until it answers ok, the server fails, or the
// deadline passes.
func waitHealthy(ctx context.Context, client kubernetes.Interface, apiDone <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var last string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		select {
		case err := <-apiDone:
			return false, fmt.Errorf("kube-apiserver exited while starting: %v", err)
		default:
		}
		body, err := client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			last = fmt.Sprintf("%v: %s", err, body)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w (last answer: %s)", err, last)
	}
	return nil
}

// waitClusterUsable waits for what the first test needs: the fake Node Ready
// (kwok works) and the `default` ServiceAccount (the controllers work).
func waitClusterUsable(ctx context.Context, client kubernetes.Interface) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	var waiting string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		node, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil || !nodeReady(node) {
			waiting = "node " + nodeName + " Ready"
			return false, nil
		}
		if _, err := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{}); err != nil {
			waiting = "service account default/default"
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", waiting, err)
	}
	return nil
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// writeKubeconfig writes an admin kubeconfig atomically (temp file, rename), so
// a reader never sees half a file.
func writeKubeconfig(path, url string, p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["weir"] = &clientcmdapi.Cluster{Server: url, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["weir-admin"] = &clientcmdapi.AuthInfo{
		ClientCertificateData: p.adminCertPEM,
		ClientKeyData:         p.adminKeyPEM,
	}
	cfg.Contexts["weir"] = &clientcmdapi.Context{Cluster: "weir", AuthInfo: "weir-admin", Namespace: "default"}
	cfg.CurrentContext = "weir"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return errors.Join(fmt.Errorf("write kubeconfig: %w", err), os.Remove(tmp))
	}
	return nil
}
