//go:build !manpages

package manpage

import "github.com/spf13/cobra"

// Add does nothing without the manpages build tag.
func Add(*cobra.Command, string) {}
