// Package deploy_test checks what deploy/ holds with the projects' own
// libraries: the Kubernetes manifests rendered by kustomize and decoded
// strictly into the API's types, the alerting rules with Prometheus's rule
// parser and query engine, Prometheus's configuration with its loader, and
// the Grafana dashboard with Grafana's schema types; and, as root, runs the
// DaemonSet's command line under its security context in a namespace with
// real TCP problems, scrapes it, and evaluates the alerts on what it says.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"

	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	promcommon "github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	_ "github.com/prometheus/prometheus/discovery/kubernetes" // kubernetes_sd_configs
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/tcplab/tcplab/inspect"
)

var promParser = parser.NewParser(parser.Options{})

// exporterMetrics are the metric names the exporter writes, from one
// collection of this process's namespace (sock_diag and /proc/net need no
// root there).
func exporterMetrics(t *testing.T) map[string]bool {
	t.Helper()
	h, err := inspect.OpenHost(inspect.Target{})
	if err != nil {
		t.Skipf("sock_diag not available: %v", err)
	}
	defer h.Close()
	var b bytes.Buffer
	if _, err := inspect.NewCollector(h, inspect.CollectorOptions{}).WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, l := range strings.Split(b.String(), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		name, _, _ := strings.Cut(l, "{")
		name, _, _ = strings.Cut(name, " ")
		names[name] = true
	}
	if len(names) < 50 {
		t.Fatalf("the exporter wrote only %d metrics", len(names))
	}
	return names
}

// metricNames are the metric names an expression selects.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := promParser.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	var out []string
	for _, ms := range parser.ExtractSelectors(e) {
		for _, m := range ms {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				out = append(out, m.Value)
			}
		}
	}
	if len(out) == 0 {
		t.Errorf("%q selects no metric by name", expr)
	}
	return out
}

// renderKustomization builds deploy/kubernetes as kubectl apply -k would.
func renderKustomization(t *testing.T) [][]byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), "kubernetes")
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, b)
	}
	return docs
}

// manifests are the rendered resources, each decoded strictly (an unknown
// or misspelt field is an error) into its API type.
type manifests struct {
	ns *corev1.Namespace
	sa *corev1.ServiceAccount
	ds *appsv1.DaemonSet
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	var m manifests
	for _, doc := range renderKustomization(t) {
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		var into any
		switch meta.APIVersion + " " + meta.Kind {
		case "v1 Namespace":
			m.ns = &corev1.Namespace{}
			into = m.ns
		case "v1 ServiceAccount":
			m.sa = &corev1.ServiceAccount{}
			into = m.sa
		case "apps/v1 DaemonSet":
			m.ds = &appsv1.DaemonSet{}
			into = m.ds
		default:
			t.Fatalf("unexpected resource %s %s", meta.APIVersion, meta.Kind)
		}
		// Strictly as the API server reads: field names match exactly
		// (encoding/json would take HostNetwork for hostNetwork), none
		// unknown, none twice.
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			t.Fatal(err)
		}
		strict, err := kjson.UnmarshalStrict(js, into)
		if err != nil || len(strict) > 0 {
			t.Fatalf("%s: %v %v\n%s", meta.Kind, err, strict, doc)
		}
	}
	if m.ns == nil || m.sa == nil || m.ds == nil {
		t.Fatalf("want a Namespace, a ServiceAccount and a DaemonSet; got %+v", m)
	}
	return m
}

// The DaemonSet runs on the node's network, as nobody, with no capability
// and nothing it does not need, and serves on the pod's (the node's) address
// with --allow-remote; the port it serves on is the one declared, probed
// and annotated.
func TestDaemonSet(t *testing.T) {
	m := loadManifests(t)
	ds := m.ds
	ns := ds.Namespace
	if m.ns.Name != ns || m.sa.Namespace != ns {
		t.Errorf("namespaces: %s, service account in %s, DaemonSet in %s", m.ns.Name, m.sa.Namespace, ns)
	}
	if m.ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" || m.ns.Labels["pod-security.kubernetes.io/warn"] != "restricted" {
		t.Errorf("namespace labels %v: hostNetwork needs enforce=privileged; warn should stay restricted", m.ns.Labels)
	}
	if m.sa.AutomountServiceAccountToken == nil || *m.sa.AutomountServiceAccountToken {
		t.Error("the service account mounts a token; the exporter talks to no API server")
	}
	spec := ds.Spec.Template.Spec
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod's labels %v", k, v, ds.Spec.Template.Labels)
		}
	}
	if !spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("hostNetwork %v, hostPID %v, hostIPC %v: want the node's network and nothing else", spec.HostNetwork, spec.HostPID, spec.HostIPC)
	}
	if spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy %s", spec.DNSPolicy)
	}
	if spec.ServiceAccountName != m.sa.Name || spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("service account %q, token mounted %v", spec.ServiceAccountName, spec.AutomountServiceAccountToken)
	}
	if len(spec.Volumes) != 0 || len(spec.InitContainers) != 0 || len(spec.Containers) != 1 {
		t.Fatalf("%d volumes, %d init containers, %d containers: want one container and no volume", len(spec.Volumes), len(spec.InitContainers), len(spec.Containers))
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context %+v: want a non-root user and the runtime's seccomp profile", psc)
	}
	c := spec.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
		len(sc.Capabilities.Add) != 0 || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("container security context %+v: want unprivileged, no escalation, read-only root, every capability dropped and none added", sc)
	}
	if want := kustomizedImage(t); c.Image != want {
		t.Errorf("image %q, want %q (kustomization.yaml names it)", c.Image, want)
	}
	if strings.HasSuffix(c.Image, ":latest") && c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %s pulled %s: a moved tag is not pulled again", c.Image, c.ImagePullPolicy)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priority class %q: the node's watcher should be the last evicted", spec.PriorityClassName)
	}
	if i := slices.IndexFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" }); i < 0 ||
		c.Env[i].ValueFrom == nil || c.Env[i].ValueFrom.ResourceFieldRef == nil || c.Env[i].ValueFrom.ResourceFieldRef.Resource != "limits.memory" {
		t.Error("no GOMEMLIMIT from the memory limit")
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("resources %+v: want a memory limit and a CPU request", c.Resources)
	}
	// args: exporter --listen $(POD_IP):PORT --allow-remote
	if len(c.Args) == 0 || c.Args[0] != "exporter" || !slices.Contains(c.Args, "--allow-remote") {
		t.Fatalf("args %q", c.Args)
	}
	i := slices.Index(c.Args, "--listen")
	if i < 0 || i+1 >= len(c.Args) || !strings.HasPrefix(c.Args[i+1], "$(POD_IP):") {
		t.Fatalf("args %q: want --listen $(POD_IP):PORT", c.Args)
	}
	port := strings.TrimPrefix(c.Args[i+1], "$(POD_IP):")
	if len(c.Env) == 0 || c.Env[0].Name != "POD_IP" || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FieldRef == nil ||
		c.Env[0].ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("env %+v: want POD_IP from status.podIP first", c.Env)
	}
	if len(c.Ports) != 1 || fmt.Sprint(c.Ports[0].ContainerPort) != port || c.Ports[0].Name != "metrics" {
		t.Errorf("ports %+v: want one named metrics, %s", c.Ports, port)
	}
	// A second scraper (an annotation-driven job) would split the
	// doctor's intervals.
	for k := range ds.Spec.Template.Annotations {
		if strings.HasPrefix(k, "prometheus.io/") {
			t.Errorf("annotation %s invites a second scraper", k)
		}
	}
	// Probes connect; a GET of /metrics would be a scrape, taking the
	// doctor's interval from Prometheus.
	for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if p == nil || p.TCPSocket == nil || p.HTTPGet != nil || p.TCPSocket.Port.String() != "metrics" {
			t.Errorf("%s probe %+v: want a TCP connect to the metrics port", name, p)
		}
	}
	if len(spec.Tolerations) != 1 || spec.Tolerations[0].Operator != corev1.TolerationOpExists {
		t.Errorf("tolerations %+v: want every node", spec.Tolerations)
	}
}

// kustomizedImage is the image kustomization.yaml names.
func kustomizedImage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("kubernetes/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kusttypes.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatal(err)
	}
	if len(k.Images) != 1 || k.Images[0].Name != "tcplab" || k.Images[0].NewName == "" {
		t.Fatalf("images %+v: want one, for the image named tcplab", k.Images)
	}
	img := k.Images[0].NewName
	if k.Images[0].NewTag != "" {
		img += ":" + k.Images[0].NewTag
	}
	if k.Images[0].Digest != "" {
		img += "@" + k.Images[0].Digest
	}
	return img
}

// The image runs what the DaemonSet expects: tcplab-full, as the user the
// pod runs as, built from a command that exists with the Go of go.mod.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	ds := loadManifests(t).ds
	psc := ds.Spec.Template.Spec.SecurityContext
	if want := fmt.Sprintf("\nUSER %d:%d\n", *psc.RunAsUser, *psc.RunAsGroup); !strings.Contains(df, want) {
		t.Errorf("the Dockerfile has no %q", strings.TrimSpace(want))
	}
	if !strings.Contains(df, `ENTRYPOINT ["/usr/local/bin/tcplab-full"]`) {
		t.Error("the entrypoint is not tcplab-full, whose first argument the DaemonSet's args give (exporter)")
	}
	build := regexp.MustCompile(`go build .* (\./cmd/[a-z-]+)\n`).FindStringSubmatch(df)
	if build == nil {
		t.Fatal("no go build line")
	}
	if _, err := os.Stat(filepath.Join("..", build[1], "main.go")); err != nil {
		t.Errorf("the Dockerfile builds %s: %v", build[1], err)
	}
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (1\.\d+)`).FindSubmatch(mod)
	if goVersion == nil || !strings.Contains(df, "FROM golang:"+string(goVersion[1])+" ") {
		t.Errorf("the build image is not the Go of go.mod (%s)", goVersion)
	}
}

func loadRules(t *testing.T) []rulefmt.Rule {
	t.Helper()
	rgs, errs := rulefmt.ParseFile("prometheus/tcplab-alerts.yaml", false, promcommon.UTF8Validation, promParser, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("the alerting rules do not parse: %v", errs)
	}
	var out []rulefmt.Rule
	for _, g := range rgs.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// Every rule parses strictly, is an alert with a severity, a summary and a
// description, and selects metrics the exporter writes (or up).
func TestAlertRulesStatic(t *testing.T) {
	have := exporterMetrics(t)
	rules := loadRules(t)
	if len(rules) < 8 {
		t.Fatalf("%d rules", len(rules))
	}
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Alert == "" || seen[r.Alert] {
			t.Errorf("rule %q: not an alert, or a second one of that name", r.Alert)
		}
		seen[r.Alert] = true
		if s := r.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q", r.Alert, s)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s: no summary or description", r.Alert)
		}
		for _, name := range metricNames(t, r.Expr) {
			if name != "up" && !have[name] {
				t.Errorf("%s selects %s, which the exporter does not write", r.Alert, name)
			}
		}
	}
}

// prometheus.yml loads with Prometheus's own loader, with the rule file
// beside it, and its job is the one the rules name.
func TestPrometheusConfig(t *testing.T) {
	cfg, err := config.LoadFile("prometheus/prometheus.yml", false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != "tcplab" {
		t.Fatalf("scrape configs %+v: want one job named tcplab (the rules' up{job=\"tcplab\"})", cfg.ScrapeConfigs)
	}
	if len(cfg.RuleFiles) != 1 || filepath.Base(cfg.RuleFiles[0]) != "tcplab-alerts.yaml" {
		t.Errorf("rule files %v", cfg.RuleFiles)
	}
	for _, r := range loadRules(t) {
		if strings.Contains(r.Expr, "job=") && !strings.Contains(r.Expr, `job="tcplab"`) {
			t.Errorf("%s names another job: %s", r.Alert, r.Expr)
		}
	}
	if time.Duration(cfg.GlobalConfig.ScrapeInterval) != scrapeInterval {
		t.Errorf("scrape interval %v; the end-to-end test and the rules' durations assume %v", cfg.GlobalConfig.ScrapeInterval, scrapeInterval)
	}
	// The relabelling, on what Kubernetes discovery gives for pods: the
	// exporter's running pod's metrics port is kept, named by its node;
	// another port, another pod and a pod not running are dropped.
	ds := loadManifests(t).ds
	pod := func(app, port, phase string) labels.Labels {
		return labels.FromMap(map[string]string{
			"__address__": "10.0.0.7:" + port,
			"__meta_kubernetes_pod_label_app_kubernetes_io_name": app,
			"__meta_kubernetes_pod_container_port_name":          map[string]string{"9469": "metrics", "8080": "http"}[port],
			"__meta_kubernetes_pod_phase":                        phase,
			"__meta_kubernetes_pod_node_name":                    "node-7",
			"job":                                                "tcplab",
		})
	}
	app := ds.Spec.Template.Labels["app.kubernetes.io/name"]
	port := fmt.Sprint(ds.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort)
	rc := cfg.ScrapeConfigs[0].RelabelConfigs
	process := func(l labels.Labels) (labels.Labels, bool) {
		lb := labels.NewBuilder(l)
		keep := relabel.ProcessBuilder(lb, rc...)
		return lb.Labels(), keep
	}
	got, keep := process(pod(app, port, "Running"))
	if !keep || got.Get("instance") != "node-7" || got.Get("__address__") != "10.0.0.7:"+port {
		t.Errorf("the exporter's pod: kept %v as %v", keep, got)
	}
	for name, l := range map[string]labels.Labels{
		"another port":      pod(app, "8080", "Running"),
		"another pod":       pod("web", port, "Running"),
		"a pod not running": pod(app, port, "Pending"),
	} {
		if _, keep := process(l); keep {
			t.Errorf("%s is scraped", name)
		}
	}
}

// sdkError is err, but nil for the SDK's empty list of errors (it returns
// one, typed, when all is well).
func sdkError(err error) error {
	var errs cog.BuildErrors
	if errors.As(err, &errs) && len(errs) == 0 {
		return nil
	}
	return err
}

// The dashboard decodes strictly into Grafana's dashboard schema, and every
// query parses and selects metrics the exporter writes.
func TestDashboard(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	b, err := os.ReadFile("grafana/tcplab-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard.Dashboard
	if err := sdkError(d.UnmarshalJSONStrict(b)); err != nil {
		t.Fatal(err)
	}
	if err := sdkError(d.Validate()); err != nil {
		t.Fatal(err)
	}
	have := exporterMetrics(t)
	// Each panel on its own: this SDK's PanelOrRowPanel drops a panel
	// whose strict decoding returns its empty error list.
	var raw struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Panels) != len(d.Panels) {
		t.Fatalf("%d panels decoded of %d", len(d.Panels), len(raw.Panels))
	}
	// Targets too, for the same reason, as Prometheus queries.
	type panel struct {
		title   string
		targets []prometheus.Dataquery
	}
	var panels []panel
	add := func(i int, r json.RawMessage, p dashboard.Panel) {
		var rt struct {
			Targets []json.RawMessage `json:"targets"`
		}
		if err := json.Unmarshal(r, &rt); err != nil {
			t.Fatal(err)
		}
		x := panel{title: fmt.Sprintf("panels[%d]", i)}
		if p.Title != nil {
			x.title = *p.Title
		}
		for j, tr := range rt.Targets {
			var q prometheus.Dataquery
			if err := sdkError(q.UnmarshalJSONStrict(tr)); err != nil {
				t.Errorf("%s: targets[%d]: %v", x.title, j, err)
			}
			x.targets = append(x.targets, q)
		}
		panels = append(panels, x)
	}
	for i, r := range raw.Panels {
		var kind struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(r, &kind); err != nil {
			t.Fatal(err)
		}
		if kind.Type == "row" {
			var row dashboard.RowPanel
			if err := sdkError(row.UnmarshalJSONStrict(r)); err != nil {
				t.Errorf("panels[%d]: %v", i, err)
			}
			if err := sdkError(row.Validate()); err != nil {
				t.Errorf("panels[%d]: %v", i, err)
			}
			if len(row.Panels) > 0 {
				t.Errorf("panels[%d]: a row holding panels; keep them beside it", i)
			}
			continue
		}
		var p dashboard.Panel
		if err := sdkError(p.UnmarshalJSONStrict(r)); err != nil {
			t.Errorf("panels[%d]: %v", i, err)
		}
		if err := sdkError(p.Validate()); err != nil {
			t.Errorf("panels[%d]: %v", i, err)
		}
		add(i, r, p)
	}
	// Grafana's variables, as a query would have them.
	vars := strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*")
	queries := 0
	for _, p := range panels {
		if len(p.targets) == 0 {
			t.Errorf("panel %q has no query", p.title)
		}
		for _, q := range p.targets {
			queries++
			if q.Datasource == nil || q.Datasource.Type == nil || *q.Datasource.Type != "prometheus" {
				t.Errorf("panel %q: a query not of the Prometheus data source", p.title)
			}
			for _, name := range metricNames(t, vars.Replace(q.Expr)) {
				if !have[name] {
					t.Errorf("panel %q selects %s, which the exporter does not write", p.title, name)
				}
			}
		}
	}
	if queries < 10 {
		t.Errorf("%d queries", queries)
	}
	var names []string
	for _, v := range d.Templating.List {
		names = append(names, v.Name)
	}
	if !slices.Contains(names, "datasource") || !slices.Contains(names, "instance") {
		t.Errorf("variables %v: want datasource and instance", names)
	}
}
