package main

// hastore admin import --mbox: one mbox file into one mailbox, through the
// maildir import's batches (importFolder), so a re-run skips what an
// earlier run brought in (each message's key: a digest of its bytes).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hastore/mailserver"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
)

// mboxChunkBytes bounds the bodies held before they are stored.
const mboxChunkBytes = 64 << 20

// mboxFolderName is the mailbox a file goes to by default: its name
// without ".mbox", and INBOX for Dovecot's and mutt's "inbox"/"mbox".
func mboxFolderName(file string) string {
	name := filepath.Base(file)
	for _, ext := range []string{".mbox", ".mbx"} {
		if len(name) > len(ext) && strings.EqualFold(name[len(name)-len(ext):], ext) {
			name = name[:len(name)-len(ext)]
		}
	}
	if strings.EqualFold(name, "inbox") || strings.EqualFold(name, "mbox") {
		return mailstate.InboxName
	}
	return name
}

// eachMboxMessage streams the messages of file to fn.
func eachMboxMessage(file string, limit int64, fn func(*mailbox.MboxMessage) error) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	r := mailbox.NewMboxReader(f, limit)
	for {
		m, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %v", file, err)
		}
		if err := fn(m); err != nil {
			return err
		}
	}
}

func (a *adminClient) importMbox(ctx context.Context, user, file, folder string, limit int64, dry bool, parallel int, stdout io.Writer) error {
	if folder == "" {
		folder = mboxFolderName(file)
	}
	// A first pass counts, for the progress lines and --dry-run.
	total, big := 0, 0
	if err := eachMboxMessage(file, limit, func(m *mailbox.MboxMessage) error {
		total++
		if m.TooBig {
			big++
		}
		return nil
	}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d messages (%d over %d bytes) into %s\n", file, total, big, limit, folder)
	if dry {
		return nil
	}
	conns, err := a.allConns()
	if err != nil {
		return err
	}
	mc := mailserver.NewMigrateClient(conns...)
	var st importStats
	start := time.Now()
	var chunk []maildirMessage
	var chunkBytes int64
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		err := a.importFolder(ctx, mc, user, maildirFolder{dir: file, name: folder, msgs: chunk}, &st, total, start, parallel)
		chunk, chunkBytes = nil, 0
		return err
	}
	err = eachMboxMessage(file, limit, func(m *mailbox.MboxMessage) error {
		where := fmt.Sprintf("%s (message at byte %d)", file, m.Offset)
		switch {
		case m.TooBig:
			st.failed++
			fmt.Fprintf(os.Stderr, "%s: over %d bytes: skipped (raise --max-message-size if the servers take it)\n", where, limit)
		case len(m.Body) == 0:
			st.failed++
			fmt.Fprintf(os.Stderr, "%s: empty: skipped\n", where)
		default:
			chunk = append(chunk, maildirMessage{path: where, key: m.Key, flags: m.Flags, mtime: m.InternalDate, size: m.Size, body: m.Body})
			if chunkBytes += m.Size; len(chunk) >= mailstate.MaxMailMessages || chunkBytes >= mboxChunkBytes {
				return flush()
			}
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		fmt.Fprintf(stdout, "stopped: %d imported, %d already there, %d failed of %d; run the same command again to go on\n", st.imported, st.existed, st.failed, total)
		return fmt.Errorf("mbox %s: %w", file, err)
	}
	fmt.Fprintf(stdout, "done in %s: %d imported, %d already there, %d failed of %d\n",
		time.Since(start).Round(time.Second), st.imported, st.existed, st.failed, total)
	if st.failed > 0 {
		return fmt.Errorf("%d messages failed (see above)", st.failed)
	}
	return nil
}
