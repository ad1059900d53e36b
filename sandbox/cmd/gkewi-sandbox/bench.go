package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/gkewi/gkewi/contract"
	"github.com/gkewi/gkewi/sandbox/stack"
	"github.com/gkewi/gkewi/workflows"
)

// Targets the benchmark reports against; a miss is reported, never fatal.
const (
	targetSingle        = 3 * time.Second
	targetRepeat        = time.Second
	targetThousand      = 120 * time.Second
	targetRSSBytes      = 300 << 20
	targetSetPolicyRate = 1.2
	sharedGSAs          = 50
	benchApprover       = "bench-support@carto.example"
)

// minimumCalls is the fewest mutating calls a fresh onboarding on a fresh cluster
// needs, by method: what the sequence must change, each once. Reads are not
// bounded here; they are reported as they are.
func minimumCalls(nodePools int) map[string]int {
	return map[string]int{
		"serviceusage.services.enable":                           1, // iamcredentials
		"container.projects.locations.clusters.update":           1, // workload pool
		"container.projects.locations.clusters.nodePools.update": nodePools,
		"iam.projects.serviceAccounts.create":                    1,
		"iam.projects.serviceAccounts.setIamPolicy":              2, // tokenCreator before approval, workloadIdentityUser after
		"cloudresourcemanager.projects.setIamPolicy":             2, // dataEditor on data project, jobUser on billing project
		"bigquery.datasets.insert":                               1, // temp dataset
		"bigquery.datasets.patch":                                1, // the GSA's access entry on the temp dataset
	}
}

type benchReport struct {
	StartedAt      time.Time          `json:"startedAt"`
	SandboxStart   float64            `json:"sandboxStartSeconds"`
	Setup          []string           `json:"setup"`
	Single         *benchSingle       `json:"single,omitempty"`
	Calls          []benchCall        `json:"callsPerOnboarding,omitempty"`
	Scale          []benchScale       `json:"scale,omitempty"`
	Repeat         *benchRepeat       `json:"repeat,omitempty"`
	CriticalPath   *benchCriticalPath `json:"criticalPath,omitempty"`
	BudgetExceeded string             `json:"budgetExceeded,omitempty"`
	Errors         []string           `json:"errors,omitempty"`
	Plot           string             `json:"plot,omitempty"`
	Targets        map[string]bool    `json:"targetsMet"`
	RequestCounts  map[string]int     `json:"emulatorRequestCounts,omitempty"`
}

type benchSingle struct {
	Seconds float64         `json:"seconds"`
	Steps   []benchStep     `json:"steps"`
	State   workflows.State `json:"state"`
}

type benchStep struct {
	Name    string  `json:"name"`
	State   string  `json:"state"`
	Seconds float64 `json:"seconds"`
	Changed bool    `json:"changed"`
}

type benchCall struct {
	Method  string `json:"method"`
	Calls   int    `json:"calls"`
	Minimum *int   `json:"minimum,omitempty"`
}

type benchScale struct {
	N               int     `json:"n"`
	GSAs            int     `json:"gsas"`
	Completed       int     `json:"completed"`
	Failed          int     `json:"failed"`
	TotalSeconds    float64 `json:"totalSeconds"`
	P50Seconds      float64 `json:"p50Seconds"`
	P99Seconds      float64 `json:"p99Seconds"`
	WorkerPeakRSSMB float64 `json:"workerPeakRSSMB"`
	SetIamPolicy    int     `json:"setIamPolicyCalls"`
	MinSetIamPolicy int     `json:"minSetIamPolicyCalls"`
	SetPolicyRate   float64 `json:"setIamPolicyPerMinimum"`
	Aborted         int     `json:"setIamPolicyConflicts"`
	// CPUSeconds is the CPU time of each sandbox process during the round.
	CPUSeconds map[string]float64 `json:"cpuSeconds"`
	FirstError string             `json:"firstError,omitempty"`
}

type benchRepeat struct {
	Seconds  float64  `json:"seconds"`
	Mutating []string `json:"mutatingCalls"`
	State    string   `json:"state"`
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gkewi-sandbox bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sf sandboxFlags
	sf.register(fs)
	nList := fs.String("n", "100,250,500,1000", "comma-separated numbers of concurrent onboardings")
	maxDuration := fs.Duration("max-duration", time.Hour, "stop scaling up once the benchmark has run this long")
	perRun := fs.Duration("run-timeout", 30*time.Minute, "give up waiting for one round of concurrent onboardings after this long")
	clusters := fs.Int("clusters", 10, "emulated GKE clusters the onboardings are spread over (one local control plane plays them all)")
	timeScale := fs.Float64("time-scale", 20, "divide the latency profile's times by this for the critical-path round (60: minutes take seconds; the default 20 keeps the sandbox's own fixed costs small against the profile)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var ns []int
	for _, f := range strings.Split(*nList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return exitError{code: 2, msg: fmt.Sprintf("--n: %q is not a positive number", f)}
		}
		ns = append(ns, n)
	}
	slices.Sort(ns)

	cfg, err := stack.LoadConfig(sf.config)
	if err != nil {
		return err
	}
	cfg.OperationDuration, cfg.PropagationDelay, cfg.ServiceEnableLag, cfg.Faults = 0, 0, 0, nil
	if *clusters < 1 {
		return exitError{code: 2, msg: "--clusters: must be at least 1"}
	}
	if *timeScale <= 0 {
		return exitError{code: 2, msg: "--time-scale: must be positive"}
	}
	if err := cfg.LatencyProfile.Validate(); err != nil {
		return fmt.Errorf("sandbox config %s: %w", sf.config, err)
	}
	// One more cluster, fresh for the critical-path round.
	addClusters(&cfg, *clusters+1)
	opts := sf.options(&prefixWriter{w: stdout, prefix: "  "})
	opts.Config, opts.Headless = &cfg, true
	// The worker polls as often, in scaled time, as it would for real.
	opts.WorkerEnv = append(opts.WorkerEnv,
		"GKEWI_OPERATION_POLL_INTERVAL="+scaledPoll(2*time.Second, *timeScale),
		"GKEWI_VERIFY_POLL_INTERVAL="+scaledPoll(5*time.Second, *timeScale))
	if !sf.verbose {
		opts.Log = io.Discard
	}
	begin := time.Now()
	fmt.Fprintln(stdout, "Starting the sandbox (zero emulated latency: GKE/Service Usage operations finish at once, enabled APIs and IAM changes count at once; the latency profile applies to its own round only)")
	sb, err := stack.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err := sb.Stop(); err != nil {
			fmt.Fprintln(stderr, "gkewi-sandbox: stopping the sandbox:", err)
		}
	}()
	b := &bench{sb: sb, c: sb.TemporalClient(), out: stdout, started: begin}
	b.rep = benchReport{StartedAt: begin, SandboxStart: sb.StartedIn().Seconds(), Targets: map[string]bool{}}
	cl := sb.Cluster()
	all := sb.Clusters()
	b.clusters = all[:len(all)-1]
	b.rep.Setup = []string{
		fmt.Sprintf("%d emulated GKE clusters (%s/%s/%s and %d more, %d node pools each), all played by one local kube-apiserver "+
			"(one kubeconfig context per cluster); onboardings go round-robin over the clusters, each in its own namespace",
			len(b.clusters), cl.Project, cl.Location, cl.Name, len(b.clusters)-1, len(cl.NodePools)),
		fmt.Sprintf("min(%d, N/5) shared GSAs per round (accountId reused): several grants land on one GSA's IAM policy", sharedGSAs),
		"approval is sent with the start (signal-with-start), so no approval email is sent and no wait is measured",
		"one worker process, one Temporal dev server (SQLite), emulator in the bench process; all on this machine",
	}
	for _, s := range b.rep.Setup {
		fmt.Fprintln(stdout, "  - "+s)
	}

	b.single(ctx)
	b.repeat(ctx)
	b.criticalPath(ctx, all[len(all)-1], cfg.LatencyProfile, *timeScale)
	for i, n := range ns {
		if el := time.Since(begin); el > *maxDuration {
			b.rep.BudgetExceeded = fmt.Sprintf("stopped before N=%d: %s elapsed, over --max-duration %s (not run: %v)",
				n, el.Round(time.Second), *maxDuration, ns[i:])
			fmt.Fprintln(stdout, "\n"+b.rep.BudgetExceeded)
			break
		}
		if ctx.Err() != nil {
			break
		}
		b.scale(ctx, n, *perRun)
	}
	b.rep.RequestCounts = sb.Emulator().RequestCounts()
	b.summary()

	if len(b.rep.Scale) > 0 {
		plotPath := filepath.Join(sb.Dir(), "bench-total-time.png")
		if err := writePlot(plotPath, b.rep.Scale); err != nil {
			b.rep.Errors = append(b.rep.Errors, "plot: "+err.Error())
		} else {
			b.rep.Plot = plotPath
			fmt.Fprintf(stdout, "plot: %s\n", relPath(plotPath))
		}
	}
	path := filepath.Join(sb.Dir(), "bench-results.json")
	if err := writeJSON(path, b.rep); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "results: %s\n", relPath(path))
	return nil
}

type bench struct {
	sb       *stack.Sandbox
	clusters []stack.ClusterSpec
	c        client.Client
	out      io.Writer
	started  time.Time
	rep      benchReport
}

func (b *bench) request(ns, gsa string) workflows.OnboardRequest {
	return b.requestOn(b.sb.Cluster(), ns, gsa)
}

// requestOn is an onboarding of namespace ns on cluster c, bound to GSA gsa.
func (b *bench) requestOn(c stack.ClusterSpec, ns, gsa string) workflows.OnboardRequest {
	return workflows.OnboardRequest{
		Project: c.Project, Location: c.Location, Cluster: c.Name,
		GSA:       workflows.GSASpec{AccountID: gsa},
		Namespace: ns,
		Helm: workflows.HelmSpec{
			Release: "carto",
			Chart:   filepath.Join(b.sb.RepoDir(), "deploy", "charts", "carto-demo"),
		},
		BigQuery: &workflows.BigQuerySpec{
			DataProject: "carto-data", BillingProject: "carto-billing",
			TempDataset: "tmp_" + strings.ReplaceAll(ns, "-", "_"), ConnectionOwnerID: "owner@carto.example",
		},
		// Approved by signal at once: the bench measures the grant, not the proof.
		Support: workflows.SupportSpec{Approvers: []string{benchApprover}, ReminderInterval: "1h", ApprovalTimeout: "1h", Proof: workflows.ProofNone},
	}
}

// onboard starts an onboarding approved from the start and waits for its end.
func (b *bench) onboard(ctx context.Context, req workflows.OnboardRequest) (time.Duration, error) {
	return b.onboardThen(ctx, req, func() {})
}

// onboardThen is onboard, calling started once the start request returned.
func (b *bench) onboardThen(ctx context.Context, req workflows.OnboardRequest, started func()) (time.Duration, error) {
	begin := time.Now()
	id := workflows.OnboardWorkflowID(req)
	run, err := b.c.SignalWithStartWorkflow(ctx, id, contract.SignalSupportApproval,
		workflows.ApprovalDecision{Approved: true, Approver: benchApprover, Ticket: "BENCH"},
		client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue}, workflows.OnboardWorkflowName, req)
	if err != nil {
		started()
		return 0, fmt.Errorf("starting %s: %w", id, err)
	}
	started()
	var res workflows.OnboardResult
	if err := run.Get(ctx, &res); err != nil {
		return time.Since(begin), fmt.Errorf("%s: %w", id, err)
	}
	return time.Since(begin), nil
}

func (b *bench) status(ctx context.Context, req workflows.OnboardRequest) (workflows.Status, error) {
	var s workflows.Status
	v, err := b.c.QueryWorkflow(ctx, workflows.OnboardWorkflowID(req), "", contract.QueryStatus)
	if err == nil {
		err = v.Get(&s)
	}
	return s, err
}

func (b *bench) single(ctx context.Context) {
	fmt.Fprintln(b.out, "\nOne onboarding, auto-approved, fresh cluster")
	req := b.request("bench-single", "bench-single")
	before := b.sb.Emulator().RequestCounts()
	d, err := b.onboard(ctx, req)
	if err != nil {
		b.fail("single onboarding: " + err.Error())
		return
	}
	after := b.sb.Emulator().RequestCounts()
	s, err := b.status(ctx, req)
	if err != nil {
		b.fail("single onboarding status: " + err.Error())
	}
	sg := &benchSingle{Seconds: d.Seconds(), State: s.State}
	for _, st := range s.Steps {
		sec := 0.0
		if !st.StartedAt.IsZero() && !st.EndedAt.IsZero() {
			sec = st.EndedAt.Sub(st.StartedAt).Seconds()
		}
		sg.Steps = append(sg.Steps, benchStep{Name: st.Name, State: string(st.State), Seconds: sec, Changed: st.Changed})
		fmt.Fprintf(b.out, "  %-28s %-8s %7.3fs\n", st.Name, st.State, sec)
	}
	b.rep.Single = sg
	b.target("single onboarding < 3s", fmt.Sprintf("%.2fs", d.Seconds()), d < targetSingle)

	fmt.Fprintln(b.out, "\nGoogle Cloud calls of that onboarding, by method (minimum: mutating calls the sequence needs)")
	mins := minimumCalls(len(b.sb.Cluster().NodePools))
	diff := countDiff(before, after)
	for _, m := range sortedKeys(diff) {
		call := benchCall{Method: m, Calls: diff[m]}
		minStr := "-"
		if v, ok := mins[m]; ok {
			call.Minimum = &v
			minStr = strconv.Itoa(v)
		} else if isMutatingMethod(m) {
			zero := 0
			call.Minimum, minStr = &zero, "0"
		}
		mark := ""
		if call.Minimum != nil && call.Calls > *call.Minimum {
			mark = "  above minimum"
		}
		fmt.Fprintf(b.out, "  %-60s %4d  min %s%s\n", m, call.Calls, minStr, mark)
		b.rep.Calls = append(b.rep.Calls, call)
	}
	for _, m := range sortedKeys(mins) {
		if _, ok := diff[m]; !ok {
			fmt.Fprintf(b.out, "  %-60s %4d  min %d  (missing)\n", m, 0, mins[m])
		}
	}
}

func (b *bench) repeat(ctx context.Context) {
	if b.rep.Single == nil {
		return
	}
	fmt.Fprintln(b.out, "\nRepeat of the finished onboarding (same request)")
	req := b.request("bench-single", "bench-single")
	since := time.Now()
	d, err := b.onboard(ctx, req)
	if err != nil {
		b.fail("repeat: " + err.Error())
		return
	}
	r := &benchRepeat{Seconds: d.Seconds(), Mutating: []string{}}
	for _, e := range b.sb.Emulator().RecentRequests() {
		if !e.Time.Before(since) && isMutatingMethod(e.Method) {
			r.Mutating = append(r.Mutating, fmt.Sprintf("%s %d", e.Method, e.Status))
		}
	}
	if s, err := b.status(ctx, req); err == nil {
		r.State = string(s.State)
	}
	b.rep.Repeat = r
	b.target("repeat < 1s", fmt.Sprintf("%.2fs", d.Seconds()), d < targetRepeat)
	b.target("repeat makes 0 mutating calls", strconv.Itoa(len(r.Mutating)), len(r.Mutating) == 0)
}

func (b *bench) scale(ctx context.Context, n int, timeout time.Duration) {
	// Every GSA carries several grants: N/5 GSAs, at most sharedGSAs (50 from N=250).
	gsas := min(sharedGSAs, max(1, n/5))
	fmt.Fprintf(b.out, "\n%d concurrent onboardings, %d shared GSAs\n", n, gsas)
	emu := b.sb.Emulator()
	before := emu.RequestCounts()
	resetPeakRSS(b.sb.WorkerPID())
	cpuBefore := sandboxCPU()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      []string
		wg        sync.WaitGroup
	)
	// Starting is throttled on the client side only; every onboarding runs at once.
	starts := make(chan struct{}, 32)
	begin := time.Now()
	for i := range n {
		req := b.requestOn(b.clusters[i%len(b.clusters)], fmt.Sprintf("bn%d-%d", n, i), fmt.Sprintf("bench-n%d-g%d", n, i%gsas))
		wg.Add(1)
		go func() {
			defer wg.Done()
			starts <- struct{}{}
			d, err := b.onboardThen(ctx, req, func() { <-starts })
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err.Error())
				return
			}
			latencies = append(latencies, d)
		}()
	}
	wg.Wait()
	total := time.Since(begin)
	diff := countDiff(before, emu.RequestCounts())

	sc := benchScale{N: n, GSAs: gsas, Completed: len(latencies), Failed: len(errs), TotalSeconds: total.Seconds(),
		CPUSeconds: cpuDiff(cpuBefore, sandboxCPU())}
	sc.WorkerPeakRSSMB = float64(peakRSS(b.sb.WorkerPID())) / (1 << 20)
	slices.Sort(latencies)
	sc.P50Seconds, sc.P99Seconds = percentile(latencies, 0.50).Seconds(), percentile(latencies, 0.99).Seconds()
	for m, c := range diff {
		if strings.HasSuffix(m, ".setIamPolicy") {
			sc.SetIamPolicy += c
		}
	}
	// Per round: one workloadIdentityUser binding per onboarding, and per GSA its
	// tokenCreator binding plus the two project-level BigQuery roles.
	sc.MinSetIamPolicy = n + 3*gsas
	sc.SetPolicyRate = float64(sc.SetIamPolicy) / float64(sc.MinSetIamPolicy)
	for _, e := range emu.RecentRequests() {
		if !e.Time.Before(begin) && strings.HasSuffix(e.Method, ".setIamPolicy") && e.Status == 409 {
			sc.Aborted++
		}
	}
	if len(errs) > 0 {
		sc.FirstError = errs[0]
	}
	b.rep.Scale = append(b.rep.Scale, sc)
	fmt.Fprintf(b.out, "  completed %d/%d in %.1fs; per onboarding p50 %.2fs p99 %.2fs; worker peak RSS %.0f MB\n",
		sc.Completed, n, sc.TotalSeconds, sc.P50Seconds, sc.P99Seconds, sc.WorkerPeakRSSMB)
	fmt.Fprintf(b.out, "  setIamPolicy calls %d for a minimum of %d (%.2f per binding; %d refused with 409)\n",
		sc.SetIamPolicy, sc.MinSetIamPolicy, sc.SetPolicyRate, sc.Aborted)
	fmt.Fprintf(b.out, "  CPU per onboarding (%d cores here, %.0f%% busy): %s\n", runtime.NumCPU(),
		100*sumValues(sc.CPUSeconds)/sc.TotalSeconds/float64(runtime.NumCPU()), cpuLine(sc.CPUSeconds, n))
	if sc.Failed > 0 {
		fmt.Fprintf(b.out, "  %d failed; first: %s\n", sc.Failed, sc.FirstError)
	}
	b.target(fmt.Sprintf("N=%d all complete", n), fmt.Sprintf("%d/%d", sc.Completed, n), sc.Completed == n)
	if n >= 1000 {
		b.target(fmt.Sprintf("N=%d under 120s", n), fmt.Sprintf("%.1fs", sc.TotalSeconds), total < targetThousand)
	} else {
		// The 1000-in-120s target scaled linearly to this N.
		limit := time.Duration(float64(targetThousand) * float64(n) / 1000)
		b.target(fmt.Sprintf("N=%d under %s (120s/1000 scaled)", n, limit), fmt.Sprintf("%.1fs", sc.TotalSeconds), total < limit)
	}
	b.target(fmt.Sprintf("N=%d worker RSS < 300MB", n), fmt.Sprintf("%.0fMB", sc.WorkerPeakRSSMB), sc.WorkerPeakRSSMB*(1<<20) < targetRSSBytes)
	b.target(fmt.Sprintf("N=%d setIamPolicy per binding <= 1.2", n), fmt.Sprintf("%.2f", sc.SetPolicyRate), sc.SetPolicyRate <= targetSetPolicyRate)
	if k := len(b.rep.Scale); k >= 2 {
		prev := b.rep.Scale[k-2]
		// Growth no worse than linear: time per onboarding does not grow by more than 25%.
		per, prevPer := sc.TotalSeconds/float64(n), prev.TotalSeconds/float64(prev.N)
		b.target(fmt.Sprintf("N=%d→%d growth no worse than linear", prev.N, n),
			fmt.Sprintf("%.3fs→%.3fs per onboarding", prevPer, per), per <= prevPer*1.25)
	}
}

func (b *bench) target(name, got string, ok bool) {
	b.rep.Targets[name] = ok
	mark := "PASS"
	if !ok {
		mark = "MISS"
	}
	fmt.Fprintf(b.out, "  %-4s %-50s %s\n", mark, name, got)
}

func (b *bench) fail(msg string) {
	b.rep.Errors = append(b.rep.Errors, msg)
	fmt.Fprintln(b.out, "  error: "+msg)
}

func (b *bench) summary() {
	fmt.Fprintln(b.out, "\nSummary")
	fmt.Fprintf(b.out, "  %6s %5s %9s %9s %8s %8s %8s %10s\n", "N", "GSAs", "completed", "total s", "p50 s", "p99 s", "RSS MB", "setIAM/min")
	for _, s := range b.rep.Scale {
		fmt.Fprintf(b.out, "  %6d %5d %9d %9.1f %8.2f %8.2f %8.0f %10.2f\n", s.N, s.GSAs, s.Completed, s.TotalSeconds, s.P50Seconds, s.P99Seconds, s.WorkerPeakRSSMB, s.SetPolicyRate)
	}
	pass, miss := 0, 0
	for _, ok := range b.rep.Targets {
		if ok {
			pass++
		} else {
			miss++
		}
	}
	fmt.Fprintf(b.out, "  targets: %d PASS, %d MISS; sandbox start %.1fs; bench %.1fs in all\n", pass, miss, b.rep.SandboxStart, time.Since(b.started).Seconds())
	for _, e := range b.rep.Errors {
		fmt.Fprintln(b.out, "  error: "+e)
	}
}

// addClusters gives the first project of cfg n clusters, copies of its first
// (named carto-2, carto-3, ...), so the benchmark spreads over n clusters.
func addClusters(cfg *stack.Config, n int) {
	for i := range cfg.Projects {
		p := &cfg.Projects[i]
		if len(p.Clusters) == 0 {
			continue
		}
		first := p.Clusters[0]
		for k := len(p.Clusters) + 1; k <= n; k++ {
			c := first
			c.Name = fmt.Sprintf("%s-%d", first.Name, k)
			p.Clusters = append(p.Clusters, c)
		}
		return
	}
}

func sumValues(m map[string]float64) float64 {
	t := 0.0
	for _, v := range m {
		t += v
	}
	return t
}

func countDiff(before, after map[string]int) map[string]int {
	out := map[string]int{}
	for m, c := range after {
		if d := c - before[m]; d > 0 {
			out[m] = d
		}
	}
	return out
}

// isMutatingMethod tells the emulator's method ids that change state.
func isMutatingMethod(method string) bool {
	verb := method[strings.LastIndex(method, ".")+1:]
	switch verb {
	case "create", "update", "delete", "setIamPolicy", "enable", "disable", "insert", "patch", "undelete":
		return true
	}
	return false
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// peakRSS is the process's peak resident set (VmHWM), in bytes.
func peakRSS(pid int) int64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

// resetPeakRSS restarts VmHWM from the current RSS (Linux: clear_refs value 5), so
// each round reports its own peak.
func resetPeakRSS(pid int) {
	if pid != 0 {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
}

// scaledPoll is d divided by scale, at least 20ms.
func scaledPoll(d time.Duration, scale float64) string {
	return max(time.Duration(float64(d)/scale), 20*time.Millisecond).String()
}
