package failover

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	autopilot "github.com/hashicorp/raft-autopilot"
)

// apDelegate lets raft-autopilot see the cluster through gossip and the
// cluster port. Its methods are called from autopilot's goroutines.
type apDelegate Cluster

func (d *apDelegate) AutopilotConfig() *autopilot.Config {
	return &autopilot.Config{
		CleanupDeadServers:      d.cfg.CleanupDeadServers,
		LastContactThreshold:    d.cfg.HeartbeatTimeout,
		MaxTrailingLogs:         250,
		MinQuorum:               d.cfg.minQuorum(),
		ServerStabilizationTime: d.cfg.ServerStabilizationTime,
	}
}

func (d *apDelegate) KnownServers() map[raft.ServerID]*autopilot.Server {
	_, leader := d.raft.LeaderWithID()
	out := map[raft.ServerID]*autopilot.Server{}
	for _, s := range d.members.Servers() {
		status := autopilot.NodeAlive
		switch s.Status {
		case ServerFailed:
			status = autopilot.NodeFailed
		case ServerLeft:
			status = autopilot.NodeLeft
		}
		id := raft.ServerID(s.ID)
		out[id] = &autopilot.Server{
			ID: id, Name: s.ID, Address: raft.ServerAddress(s.Addr), NodeStatus: status,
			Version: s.Version, IsLeader: id == leader, NodeType: autopilot.NodeVoter,
		}
	}
	return out
}

// serverStats is the answer on the stats channel of the cluster port.
type serverStats struct {
	LastContact time.Duration `json:"last_contact"` // -1: never
	LastTerm    uint64        `json:"last_term"`
	LastIndex   uint64        `json:"last_index"`
}

func (c *Cluster) localStats() serverStats {
	st := serverStats{LastIndex: c.raft.LastIndex()}
	st.LastTerm, _ = strconv.ParseUint(c.raft.Stats()["last_log_term"], 10, 64)
	switch lc := c.raft.LastContact(); {
	case c.raft.State() == raft.Leader:
	case lc.IsZero():
		st.LastContact = -1
	default:
		st.LastContact = time.Since(lc)
	}
	return st
}

// serveStats answers each request byte on a stats connection with one
// JSON line, until the peer closes it or it idles for a minute: the leader
// keeps one connection per peer instead of a TLS handshake per poll.
func (c *Cluster) serveStats(conn net.Conn) {
	defer conn.Close()
	enc := json.NewEncoder(conn)
	var req [1]byte
	for {
		_ = conn.SetDeadline(time.Now().Add(time.Minute))
		if _, err := io.ReadFull(conn, req[:]); err != nil {
			return
		}
		if err := enc.Encode(c.localStats()); err != nil {
			return
		}
	}
}

// statsConn is a pooled stats connection to one peer.
type statsConn struct {
	mu   sync.Mutex
	conn net.Conn
	dec  *json.Decoder
}

func (d *apDelegate) FetchServerStats(ctx context.Context, servers map[raft.ServerID]*autopilot.Server) map[raft.ServerID]*autopilot.ServerStats {
	c := (*Cluster)(d)
	out := map[raft.ServerID]*autopilot.ServerStats{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for id, s := range servers {
		if s.NodeStatus != autopilot.NodeAlive {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st serverStats
			if string(id) == c.id {
				st = c.localStats()
			} else if !c.fetchStats(ctx, string(s.Address), &st) {
				return
			}
			mu.Lock()
			out[id] = &autopilot.ServerStats{LastContact: st.LastContact, LastTerm: st.LastTerm, LastIndex: st.LastIndex}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

func (c *Cluster) fetchStats(ctx context.Context, addr string, st *serverStats) bool {
	timeout := time.Second
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = time.Until(dl)
	}
	c.mu.Lock()
	sc := c.statsConns[addr]
	if sc == nil {
		sc = &statsConn{}
		c.statsConns[addr] = sc
	}
	c.mu.Unlock()
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for attempt := 0; attempt < 2; attempt++ {
		if sc.conn == nil {
			conn, err := c.stream.dial(addr, chanStats, timeout)
			if err != nil {
				return false
			}
			sc.conn, sc.dec = conn, json.NewDecoder(conn)
		}
		_ = sc.conn.SetDeadline(time.Now().Add(timeout))
		if _, err := sc.conn.Write([]byte{'?'}); err == nil && sc.dec.Decode(st) == nil {
			return true
		}
		sc.conn.Close() // stale (the peer restarted): redial once
		sc.conn, sc.dec = nil, nil
	}
	return false
}

func (d *apDelegate) NotifyState(s *autopilot.State) {
	d.mu.Lock()
	d.apState = s
	d.mu.Unlock()
}

func (d *apDelegate) RemoveFailedServer(s *autopilot.Server) {
	err := d.raft.RemoveServer(s.ID, 0, 5*time.Second).Error()
	d.log.Info("raft_server_removed", "node", string(s.ID), "status", string(s.NodeStatus), "err", err)
}

// promoter promotes stable non-voters while fewer than max servers vote.
type promoter struct {
	autopilot.StablePromoter
	max int
}

func (p *promoter) CalculatePromotionsAndDemotions(c *autopilot.Config, s *autopilot.State) autopilot.RaftChanges {
	var changes autopilot.RaftChanges
	voters := 0
	var candidates []raft.ServerID
	now := time.Now()
	for id, srv := range s.Servers {
		switch {
		case srv.HasVotingRights():
			voters++
		case srv.State == autopilot.RaftNonVoter && srv.Health.IsStable(now, s.ServerStabilizationTime(c)):
			candidates = append(candidates, id)
		}
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i] < candidates[j] })
	for _, id := range candidates {
		if voters >= p.max {
			break
		}
		changes.Promotions = append(changes.Promotions, id)
		voters++
	}
	return changes
}
