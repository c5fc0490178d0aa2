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

// mboxFileName is the file a mailbox is exported to: flat (a mailbox may
// have children, and a file cannot be a directory too), '/' as '.'.
func mboxFileName(mailbox string) string {
	return strings.ReplaceAll(mailbox, string(mailstate.MailboxDelim), ".") + ".mbox"
}

// exportMbox writes each of user's mailboxes as an mboxrd file in dir,
// rewritten whole on each run (written beside, fsynced, renamed over), one
// body in memory at a time.
func (a *adminClient) exportMbox(ctx context.Context, user, dir string, stdout io.Writer) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	conns, err := a.allConns()
	if err != nil {
		return err
	}
	mc := mailserver.NewMigrateClient(conns...)
	mbs, err := mc.Mailboxes(ctx, user)
	if err != nil {
		return err
	}
	written := 0
	for _, mb := range mbs {
		path := filepath.Join(dir, mboxFileName(mb.Name))
		f, err := os.OpenFile(path+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		err = func() error {
			for after := uint32(0); ; {
				page, err := mc.Messages(ctx, user, mb.ID, after)
				if err != nil || len(page) == 0 {
					return err
				}
				for _, m := range page {
					after = m.UID
					body, err := a.getObject(ctx, m.Object)
					if err != nil {
						return fmt.Errorf("%s UID %d: %v", mb.Name, m.UID, err)
					}
					if err := mailbox.WriteMboxMessage(f, body, m.Flags, m.InternalDate); err != nil {
						return err
					}
					written++
				}
			}
		}()
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(path+".tmp", path)
		}
		if err != nil {
			os.Remove(path + ".tmp")
			return fmt.Errorf("mailbox %s → %s: %w", mb.Name, path, err)
		}
	}
	fmt.Fprintf(stdout, "%s: %d mailboxes, %d messages written as mbox\n", dir, len(mbs), written)
	return nil
}
