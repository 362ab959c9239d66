package failover

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are failover's Prometheus metrics: the replicated state, read
// at scrape time, and what this node's executor did while it led.
type metrics struct {
	state   func() State
	moved   *prometheus.CounterVec
	batch   *prometheus.HistogramVec
	kicks   *prometheus.CounterVec
	decided *prometheus.CounterVec
	// dryRun and wouldMove count the dry-run plans and the users they
	// would have moved (failover.mode).
	dryRun    *prometheus.CounterVec
	wouldMove *prometheus.CounterVec
	nodeDesc  *prometheus.Desc
	planDesc  *prometheus.Desc
	frozen    *prometheus.Desc
	paused    *prometheus.Desc
	cordoned  *prometheus.Desc
}

func newMetrics(state func() State) *metrics {
	return &metrics{
		state: state,
		moved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_failover_users_moved_total", Help: "Users this node moved while it led, by plan kind.",
		}, []string{"kind"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "roost_routing_batch_seconds", Help: "How long each routing batch (one fenced transaction) took, by result.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"result"}),
		kicks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_kicks_total", Help: "Session kicks after moves (users' kicks and host kicks), by result.",
		}, []string{"what", "result"}),
		decided: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_failover_decisions_total", Help: "Commands the leader decided on its own (failover, failback, freeze), by command.",
		}, []string{"op"}),
		dryRun: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_failover_dry_run_plans_total", Help: "Plans this node ran as a dry run while it led (failover.mode dryrun): decided, nobody moved, by plan kind.",
		}, []string{"kind"}),
		wouldMove: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_failover_users_would_move_total", Help: "Users the dry-run plans would have moved, by plan kind.",
		}, []string{"kind"}),
		nodeDesc: prometheus.NewDesc("roost_failover_node_state", "1 for each mail node's failover state (active, draining, maintenance, failed, recovering).", []string{"node", "state"}, nil),
		planDesc: prometheus.NewDesc("roost_failover_plans_running", "Running plans by kind.", []string{"kind"}, nil),
		frozen:   prometheus.NewDesc("roost_failover_frozen", "1 while mass failure holds every automatic move (until nodectl ack).", nil, nil),
		paused:   prometheus.NewDesc("roost_failover_paused", "1 while an operator holds every automatic failover and failback (nodectl pause).", nil, nil),
		cordoned: prometheus.NewDesc("roost_failover_node_cordoned", "1 for each cordoned node: it keeps its users, and no plan places users on it.", []string{"node"}, nil),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m, m.moved, m.batch, m.kicks, m.decided, m.dryRun, m.wouldMove} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Describe and Collect export the replicated state.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.nodeDesc
	ch <- m.planDesc
	ch <- m.frozen
	ch <- m.paused
	ch <- m.cordoned
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	s := m.state()
	for name, r := range s.Nodes {
		for _, st := range []NodeState{Active, Draining, Maintenance, Failed, Recovering} {
			v := 0.0
			if r.State == st {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(m.nodeDesc, prometheus.GaugeValue, v, name, string(st))
		}
		c := 0.0
		if r.Cordoned {
			c = 1
		}
		ch <- prometheus.MustNewConstMetric(m.cordoned, prometheus.GaugeValue, c, name)
	}
	running := map[PlanKind]float64{PlanFailover: 0, PlanDrain: 0, PlanFailback: 0, PlanMove: 0, PlanRebalance: 0}
	for _, p := range s.RunningPlans() {
		running[p.Kind]++
	}
	for k, v := range running {
		ch <- prometheus.MustNewConstMetric(m.planDesc, prometheus.GaugeValue, v, string(k))
	}
	f := 0.0
	if s.Frozen != nil {
		f = 1
	}
	ch <- prometheus.MustNewConstMetric(m.frozen, prometheus.GaugeValue, f)
	p := 0.0
	if s.Paused != nil {
		p = 1
	}
	ch <- prometheus.MustNewConstMetric(m.paused, prometheus.GaugeValue, p)
}

// observeBatch records a routing batch's duration and outcome.
func (m *metrics) observeBatch(start time.Time, err error) {
	if m == nil {
		return
	}
	result := "ok"
	switch {
	case err != nil && isFenced(err):
		result = "fenced"
	case err != nil:
		result = "error"
	}
	m.batch.WithLabelValues(result).Observe(time.Since(start).Seconds())
}

func (m *metrics) kick(what string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.kicks.WithLabelValues(what, result).Inc()
}
