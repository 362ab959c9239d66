package mailcluster

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DocBlock is a fenced code block of the operator's guide (docs/*.md):
// "```dovecot roost" has Lang dovecot and Tag roost.
type DocBlock struct {
	File      string
	Line      int
	Lang, Tag string
	Body      string
}

func (b DocBlock) String() string { return fmt.Sprintf("%s:%d", b.File, b.Line) }

// DocBlocks lists the blocks of lang (and of tag, unless empty) in the
// Markdown files of dir, in file and line order. An indented block (in a
// list) loses its indentation.
func DocBlocks(dir, lang, tag string) ([]DocBlock, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.md"))
	if err != nil {
		return nil, err
	}
	var out []DocBlock
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		var cur *DocBlock
		indent, n := "", 0
		for sc.Scan() {
			n++
			line := sc.Text()
			trimmed := strings.TrimLeft(line, " ")
			switch {
			case cur == nil && strings.HasPrefix(trimmed, "```"):
				words := strings.Fields(strings.TrimPrefix(trimmed, "```"))
				cur = &DocBlock{File: f, Line: n}
				if len(words) > 0 {
					cur.Lang = words[0]
				}
				if len(words) > 1 {
					cur.Tag = words[1]
				}
				indent = line[:len(line)-len(trimmed)]
			case cur != nil && strings.HasPrefix(trimmed, "```"):
				if cur.Lang == lang && (tag == "" || cur.Tag == tag) {
					out = append(out, *cur)
				}
				cur = nil
			case cur != nil:
				cur.Body += strings.TrimPrefix(line, indent) + "\n"
			}
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DocSnippet returns the one block of lang and tag in the guide.
func DocSnippet(lang, tag string) (DocBlock, error) {
	dir, err := DocsDir()
	if err != nil {
		return DocBlock{}, err
	}
	bs, err := DocBlocks(dir, lang, tag)
	if err != nil {
		return DocBlock{}, err
	}
	if len(bs) != 1 {
		return DocBlock{}, fmt.Errorf("docs/: %d blocks \"%s %s\", want exactly one", len(bs), lang, tag)
	}
	return bs[0], nil
}

// DocsDir finds the guide: docs/ beside go.mod, from the working
// directory up.
func DocsDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "docs"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory: run from the source tree")
		}
		dir = parent
	}
}
