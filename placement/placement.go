// Package placement holds the values that say where users are placed,
// shared by the failover leader that decides moves and the routing store
// that writes them: a move, a node users may be moved to, the fence that
// keeps a deposed leader from writing, and how a user name (any bytes) is
// written as text and read back.
package placement

import "errors"

// Fence is the writer's raft term and name.
type Fence struct {
	Term   uint64
	Leader string
}

// ErrFenced: the database refused this leader's write, because a writer
// with a newer term has written; this one is deposed and wrote nothing.
var ErrFenced = errors.New("fenced: a newer raft term has written routing")

// Move is one user's move from one host to another.
type Move struct {
	User, From, To string
	// Rehome makes To the user's home in the journal (an operator's move),
	// so a failback of their old home leaves them where they were put.
	Rehome bool
}

// Target is a node users may be moved to.
type Target struct {
	// Node is the Roost node name; Host the proxy_host value its users get.
	Node string
	Host string
	// Weight is its share of the users (1 when all are alike).
	Weight float64
	// Max is the most users it may hold (0: no bound).
	Max int
}
