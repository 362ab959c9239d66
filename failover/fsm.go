package failover

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// State is the replicated cluster state. The FSM that holds it is
// deterministic and does no I/O: it only applies committed commands.
type State struct {
	// ClusterID names the raft cluster; set once by its first leader.
	ClusterID string `json:"cluster_id"`
}

// command is one raft log entry.
type command struct {
	Op        string `json:"op"`
	ClusterID string `json:"cluster_id,omitempty"`
}

const opInit = "init"

type fsm struct {
	mu    sync.RWMutex
	state State
}

func (f *fsm) Apply(l *raft.Log) any {
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("decoding raft entry %d: %w", l.Index, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch c.Op {
	case opInit:
		if f.state.ClusterID == "" {
			f.state.ClusterID = c.ClusterID
		}
	default:
		// A newer agent's command: ignore rather than diverge.
		return fmt.Errorf("unknown raft command %q at index %d", c.Op, l.Index)
	}
	return nil
}

func (f *fsm) read() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	b, err := json.Marshal(f.read())
	if err != nil {
		return nil, err
	}
	return snapshot(b), nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var s State
	if err := json.NewDecoder(rc).Decode(&s); err != nil {
		return fmt.Errorf("restoring snapshot: %w", err)
	}
	f.mu.Lock()
	f.state = s
	f.mu.Unlock()
	return nil
}

type snapshot []byte

func (s snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s snapshot) Release() {}
