package main

// nodes.go stands in for kubelets and the scheduler: one fake Node, kwok's
// controller (as a library, with its "fast" stages) making that Node and its
// Pods Ready, and a binder that puts every unscheduled Pod on the Node.

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	nodefast "sigs.k8s.io/kwok/kustomize/stage/node/fast"
	podfast "sigs.k8s.io/kwok/kustomize/stage/pod/fast"
	"sigs.k8s.io/kwok/pkg/apis/internalversion"
	"sigs.k8s.io/kwok/pkg/client/clientset/versioned"
	kwokconfig "sigs.k8s.io/kwok/pkg/config"
	"sigs.k8s.io/kwok/pkg/kwok/controllers"
	kwokclient "sigs.k8s.io/kwok/pkg/utils/client"
)

const (
	nodeName = "weir-node-0"
	nodeIP   = "10.243.0.1"
	// podCIDR is where kwok takes Pod IPs from.
	podCIDR = "10.244.0.1/16"
)

// createNode registers the fake Node. kwok's node-initialize stage then fills
// in its conditions (Ready) and addresses.
func createNode(ctx context.Context, client kubernetes.Interface) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("1000"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: nodeName,
			Labels: map[string]string{
				"kubernetes.io/hostname": nodeName,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
			},
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	created, err := client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create node %s: %w", nodeName, err)
	}
	created.Status.Capacity = capacity
	created.Status.Allocatable = capacity
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("set capacity of node %s: %w", nodeName, err)
	}
	return nil
}

// startKwok runs kwok's controller for the fake Node until ctx is cancelled.
func startKwok(ctx context.Context, kubeconfig string) error {
	clientset, err := kwokclient.NewClientset("", kubeconfig)
	if err != nil {
		return err
	}
	restConfig, err := clientset.ToRESTConfig()
	if err != nil {
		return err
	}
	dynamicClient, err := clientset.ToDynamicClient()
	if err != nil {
		return err
	}
	restMapper, err := clientset.ToRESTMapper()
	if err != nil {
		return err
	}
	restClient, err := rest.RESTClientFor(restConfig)
	if err != nil {
		return err
	}
	typedClient, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return err
	}
	typedKwokClient, err := versioned.NewForConfig(restConfig)
	if err != nil {
		return err
	}

	stages := map[internalversion.StageResourceRef][]*internalversion.Stage{}
	for _, raw := range []string{
		nodefast.DefaultNodeInit,
		podfast.DefaultPodReady,
		podfast.DefaultPodComplete,
		podfast.DefaultPodDelete,
	} {
		stage, err := kwokconfig.UnmarshalWithType[*internalversion.Stage](raw)
		if err != nil {
			return fmt.Errorf("parse kwok stage: %w", err)
		}
		stages[stage.Spec.ResourceRef] = append(stages[stage.Spec.ResourceRef], stage)
	}

	ctr, err := controllers.NewController(controllers.Config{
		Clock:                      clock.RealClock{},
		DynamicClient:              dynamicClient,
		RESTClient:                 restClient,
		RESTMapper:                 restMapper,
		ImpersonatingDynamicClient: clientset.ToImpersonatingDynamicClient(),
		ImpersonatingTypedClient:   clientset.ToImpersonatingTypedClient(),
		TypedClient:                typedClient,
		TypedKwokClient:            typedKwokClient,
		ManageSingleNode:           nodeName,
		CIDR:                       podCIDR,
		NodeIP:                     nodeIP,
		LocalStages:                stages,
		PodPlayStageParallelism:    4,
		NodePlayStageParallelism:   1,
		PodsOnNodeSyncParallelism:  2,
		ID:                         "weir-testcluster",
	})
	if err != nil {
		return fmt.Errorf("kwok controller: %w", err)
	}
	if err := ctr.Start(ctx); err != nil {
		return fmt.Errorf("start kwok controller: %w", err)
	}
	return nil
}

// startBinder binds every Pod that has no node and asks for the default
// scheduler to the fake Node, until ctx is cancelled. It replaces
// kube-scheduler: with one node there is nothing to choose.
func startBinder(ctx context.Context, client kubernetes.Interface) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", "").String()
		}))
	podInformer := factory.Core().V1().Pods()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName]())
	enqueue := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok || pod.Spec.NodeName != "" || pod.DeletionTimestamp != nil {
			return
		}
		if pod.Spec.SchedulerName != "" && pod.Spec.SchedulerName != corev1.DefaultSchedulerName {
			return
		}
		queue.Add(cache.MetaObjectToName(pod))
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	go func() {
		<-ctx.Done()
		queue.ShutDown()
		factory.Shutdown()
	}()
	go func() {
		for {
			key, shutdown := queue.Get()
			if shutdown {
				return
			}
			err := bindPod(ctx, client, podInformer.Lister().Pods(key.Namespace), key)
			if err != nil {
				klog.ErrorS(err, "bind pod", "pod", key.String())
				queue.AddRateLimited(key)
			} else {
				queue.Forget(key)
			}
			queue.Done(key)
		}
	}()
	return nil
}

type podGetter interface {
	Get(name string) (*corev1.Pod, error)
}

func bindPod(ctx context.Context, client kubernetes.Interface, pods podGetter, key cache.ObjectName) error {
	pod, err := pods.Get(key.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName != "" || pod.DeletionTimestamp != nil {
		return nil
	}
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: nodeName},
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err = client.CoreV1().Pods(pod.Namespace).Bind(ctx, binding, metav1.CreateOptions{})
	// NotFound: deleted meanwhile. Conflict: already bound by an earlier try.
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}
