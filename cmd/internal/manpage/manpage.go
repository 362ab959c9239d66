//go:build manpages

// Package manpage gives each command a hidden "man DIR" verb that writes
// its man pages (the packages ship them). It is built only with the
// manpages tag (make stage does): the binaries people run link no man-page
// generator.
package manpage

import (
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/roost-mail/roost/version"
)

// Add gives root a hidden "man DIR" verb that writes the man pages of root
// and every command under it to DIR, dated by version.BuildDate
// (SOURCE_DATE_EPOCH: reproducible).
func Add(root *cobra.Command, title string) {
	root.AddCommand(&cobra.Command{
		Use:    "man DIR",
		Short:  "Write man pages to DIR",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			date := version.BuildDate()
			return doc.GenManTree(root, &doc.GenManHeader{Title: title, Section: "1", Source: "Roost " + version.String(), Manual: "Roost", Date: &date}, args[0])
		},
	})
}
