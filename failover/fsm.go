package failover

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

type fsm struct {
	mu    sync.RWMutex
	state State
	// applied counts the entries and snapshots applied, so a request
	// planned on a copy of the state knows whether it is still current.
	applied uint64
}

func (f *fsm) Apply(l *raft.Log) any {
	var c command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("decoding raft entry %d: %w", l.Index, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied++
	if err := f.state.apply(c); err != nil {
		return fmt.Errorf("raft entry %d: %w", l.Index, err)
	}
	return nil
}

func (f *fsm) read() State {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.clone()
}

// readAt is read, with the count of entries applied to that state.
func (f *fsm) readAt() (State, uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.state.clone(), f.applied
}

func (f *fsm) appliedCount() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
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
	f.applied++
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
