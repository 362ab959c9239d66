// Command build makes Roost's .deb and .rpm with the nfpm library from
// packaging/nfpm.yaml; `make deb rpm` runs it from the repository root.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
}

func run() error {
	config := flag.String("config", "packaging/nfpm.yaml", "nfpm configuration")
	format := flag.String("format", "deb", "deb or rpm")
	out := flag.String("out", "dist", "directory for the package")
	mtime := flag.Int64("mtime", 0, "Unix time stamped on every file (reproducible builds; SOURCE_DATE_EPOCH)")
	flag.Parse()

	b, err := os.ReadFile(*config)
	if err != nil {
		return err
	}
	// ${VERSION}, ${ARCH} and ${STAGE} anywhere in the file, paths too.
	for _, v := range []string{"VERSION", "ARCH", "STAGE"} {
		if os.Getenv(v) == "" {
			return fmt.Errorf("%s is not set (make deb sets it)", v)
		}
	}
	cfg, err := nfpm.Parse(strings.NewReader(os.ExpandEnv(string(b))))
	if err != nil {
		return fmt.Errorf("%s: %w", *config, err)
	}
	info, err := cfg.Get(*format)
	if err != nil {
		return err
	}
	info = nfpm.WithDefaults(info)
	if *mtime > 0 {
		info.MTime = time.Unix(*mtime, 0).UTC()
	}
	if err := nfpm.PrepareForPackager(info, *format); err != nil {
		return err
	}
	pkg, err := nfpm.Get(*format)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	path := filepath.Join(*out, pkg.ConventionalFileName(info))
	w, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pkg.Package(info, w); err != nil {
		w.Close()
		os.Remove(path)
		return fmt.Errorf("packaging %s: %w", path, err)
	}
	if err := w.Close(); err != nil {
		return err
	}
	fmt.Println(path)
	return nil
}
