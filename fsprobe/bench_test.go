package fsprobe

import (
	"context"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/roost-mail/roost/faultfs"
	"github.com/roost-mail/roost/faultfs/faultfstest"
)

// BenchmarkHealthyRound is the cost of one probe round on a healthy FUSE
// mount (faultfs over the local disk).
// Run: go test -run '^$' -bench HealthyRound ./fsprobe/
func BenchmarkHealthyRound(b *testing.B) {
	_, m := benchMount(b)
	b.ResetTimer()
	for range b.N {
		if r := m.Round(); r.Class != ClassOK {
			b.Fatal(r)
		}
	}
}

func benchMount(b *testing.B) (*faultfs.FS, *Mount) {
	b.Helper()
	f, _, mnt := faultfstest.Mount(b)
	def := DefaultConfig()
	return f, NewMount(MountConfig{Path: mnt}, "bench", def.Timeout, def.SlowThreshold)
}

// BenchmarkDetection: with the default interval (1 s), timeout (2 s) and
// slow threshold (500 ms), the time from injecting each fault into a
// running prober to the prober reporting it. b.N runs per class; reports
// the median and maximum per class.
// Run: go test -run '^$' -bench Detection -benchtime 10x -timeout 30m ./fsprobe/
func BenchmarkDetection(b *testing.B) {
	cases := []struct {
		class  Class
		inject func(f *faultfs.FS) error
	}{
		{ClassHung, func(f *faultfs.FS) error { return f.Set(faultfs.Fault{Hang: true}) }},
		{ClassDisconnected, func(f *faultfs.FS) error { return f.Abort() }},
		{ClassNotMounted, func(f *faultfs.FS) error { return f.Unmount() }},
		{ClassSlow, func(f *faultfs.FS) error {
			return f.Set(faultfs.Fault{Ops: []string{"Fsync"}, Delay: faultfs.Duration(700 * time.Millisecond)})
		}},
		{ClassIOError, func(f *faultfs.FS) error { return f.Set(faultfs.Fault{Ops: []string{"Write"}, Errno: "EIO"}) }},
		{ClassFull, func(f *faultfs.FS) error { return f.Set(faultfs.Fault{Ops: []string{"Write"}, Errno: "ENOSPC"}) }},
		{ClassReadOnly, func(f *faultfs.FS) error { return f.Set(faultfs.Fault{Ops: []string{"Create"}, Errno: "EROFS"}) }},
		{ClassMismatch, func(f *faultfs.FS) error { return f.Set(faultfs.Fault{Corrupt: true}) }},
	}
	for _, tc := range cases {
		var ds []time.Duration
		for range b.N {
			f, _, mnt := faultfstest.Mount(b)
			cfg := DefaultConfig()
			cfg.Mounts = []MountConfig{{Path: mnt}}
			p, err := New(cfg, "bench", slog.New(slog.DiscardHandler), nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { p.Run(ctx); close(done) }()
			waitClass(b, p, ClassOK)
			time.Sleep(time.Duration(len(ds)%10) * 100 * time.Millisecond) // spread injections over the interval
			start := time.Now()
			if err := tc.inject(f); err != nil {
				b.Fatal(err)
			}
			waitClass(b, p, tc.class)
			ds = append(ds, time.Since(start))
			f.Clear()
			cancel()
			<-done
			_ = f.Unmount()
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		b.ReportMetric(ds[len(ds)/2].Seconds(), string(tc.class)+"-median-s")
		b.ReportMetric(ds[len(ds)-1].Seconds(), string(tc.class)+"-max-s")
	}
}

func waitClass(b *testing.B, p *Prober, want Class) {
	b.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if l := p.Latest(); len(l) == 1 && l[0].Class == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("no %s within 20s: %v", want, p.Latest())
}
