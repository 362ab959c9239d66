// Package secret reads the small files that hold secrets and settings
// (API tokens, gossip keys, passwords, database DSNs, CA bundles): regular
// files only, of bounded size, with errors that name what the file is for.
// /dev/zero, /dev/urandom or a FIFO given as a key file is refused at once
// instead of filling memory or hanging.
package secret

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// MaxSize bounds a secret file: a CA bundle, the largest of them, is tens
// of KiB.
const MaxSize = 1 << 20

// Read returns the contents of the file at path; what names it in errors
// (e.g. "gossip.key_file"). The file must be a regular file of at most
// MaxSize bytes and hold more than white space.
func Read(what, path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO must not wait for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s %s: not a regular file (%s)", what, path, fi.Mode().Type())
	}
	if fi.Size() > MaxSize {
		return nil, fmt.Errorf("%s %s: %d bytes, over the limit of %d", what, path, fi.Size(), MaxSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s %s: over the limit of %d bytes", what, path, MaxSize)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, fmt.Errorf("%s %s is empty", what, path)
	}
	return b, nil
}
