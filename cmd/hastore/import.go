package main

// Accounts and migration: hastore admin user disable|enable|add|passwd|import
// and hastore admin import (a Dovecot maildir).

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"hastore/mailserver"
	"hastore/mailserver/mailbox"
	"hastore/mailserver/mailstate"
	pb "hastore/proto/hastorepb"
	"hastore/replica/meta"
	"hastore/replica/transport"
)

const migrateUsage = `  user disable U@D            refuse the user's logins (and end its sessions) and mail to it (550 5.2.1)
  user enable U@D             undo disable
  user add U@D [--quota SIZE] [--password-hash '{SCHEME}HASH'] [--password-min-length N]
                              with a password from stdin/terminal (at least N characters, default 8),
                              or a hash as Dovecot writes it: {ARGON2ID} {BLF-CRYPT} {SHA512-CRYPT}
                              {SHA256-CRYPT}; replaced by argon2id at the user's first login
  user passwd U@D [--password-hash '{SCHEME}HASH'] [--password-min-length N]
  user import FILE [--password-min-length N]
                              users from FILE ('-': stdin), one a line: 'address:{SCHEME}hash' (a
                              Dovecot passwd-file; further :fields are ignored) or 'address password';
                              users that exist are left alone; prints counts
  import --user U@D MAILDIR [--dry-run] [--parallel N]
                              a Dovecot maildir (Maildir++ folders, flags, keywords, dates, UIDs and
                              UIDVALIDITY); run it again to resume: nothing is imported twice
  import --user U@D --mbox FILE [--folder NAME] [--max-message-size 50M] [--dry-run]
                              an mbox file (mboxrd/mboxo; Status/X-Status/X-Keywords flags, From_
                              line dates) into NAME (default: the file name; INBOX for inbox/mbox);
                              run it again to resume: nothing is imported twice
  export --user U@D DIR       the user's mail as a Dovecot maildir (folders, flags, keywords, dates,
                              UIDs, UIDVALIDITY): a per-customer backup that import (or Dovecot) reads
  export --user U@D --mbox DIR
                              one mboxrd file per mailbox (Sub/Folder → DIR/Sub.Folder.mbox, INBOX →
                              DIR/INBOX.mbox) with flags in Status/X-Status/X-Keywords
`

// migrateCommand runs the commands of this file; ok is false for a command
// it does not own.
func (a *adminClient) migrateCommand(ctx context.Context, rest []string, stdin io.Reader, stdout io.Writer) (ok bool, err error) {
	if rest[0] == "import" {
		return true, a.importMaildir(ctx, rest[1:], stdout)
	}
	if rest[0] == "export" {
		return true, a.exportMaildir(ctx, rest[1:], stdout)
	}
	if rest[0] != "user" || len(rest) < 2 {
		return false, nil
	}
	switch rest[1] {
	case "disable", "enable", "add", "passwd", "import":
	default:
		return false, nil
	}
	conns, err := a.allConns()
	if err != nil {
		return true, err
	}
	mc := mailserver.NewMigrateClient(conns...)
	cl := mailserver.NewClient(conns...)
	verb := rest[1]
	fs := flag.NewFlagSet("user "+verb, flag.ContinueOnError)
	quota := fs.String("quota", "0", "quota (e.g. 2G; 0: no limit)")
	hash := fs.String("password-hash", "", "a password hash as Dovecot writes it, instead of a password")
	minLen := fs.Int("password-min-length", mailbox.DefaultPasswordMinLength, "shortest password accepted")
	pos, err := parseInterleaved(fs, rest[2:])
	if err != nil {
		return true, err
	}
	if len(pos) != 1 {
		return true, fmt.Errorf("usage:\n%s", migrateUsage)
	}
	addr := pos[0]
	switch verb {
	case "disable", "enable":
		if err := mc.SetDisabled(ctx, addr, verb == "disable"); err != nil {
			return true, err
		}
		fmt.Fprintf(stdout, "user %s %sd\n", addr, verb)
		return true, nil
	case "import":
		return true, a.importUsers(ctx, mc, cl, addr, stdin, stdout, *minLen)
	}
	q, err := parseSize(*quota)
	if err != nil {
		return true, err
	}
	if a.cfg.ClientTLS == nil && *hash == "" {
		fmt.Fprintln(os.Stderr, "hastore admin: warning: this cluster runs without TLS (--insecure): the password crosses the network in clear")
	}
	if *hash != "" {
		if verb == "add" {
			err = mc.AddUserHash(ctx, addr, *hash, q)
		} else {
			err = mc.SetPasswordHash(ctx, addr, *hash)
		}
	} else {
		pw, perr := readPassword(stdin, "Password for "+addr+": ")
		if perr != nil {
			return true, perr
		}
		if err := mailbox.CheckPasswordPolicy(pw, *minLen); err != nil {
			return true, errors.New(strings.TrimPrefix(err.Error(), mailbox.ErrInvalid.Error()+": "))
		}
		// One logical call, one ID, kept when the client repeats it on the
		// next node (MigrateClient's calls get theirs by themselves).
		ctx := transport.WithOutgoingRequestID(ctx, transport.NewRequestID())
		if verb == "add" {
			err = cl.AddUser(ctx, addr, pw, q)
		} else {
			err = cl.SetPassword(ctx, addr, pw)
		}
	}
	if err != nil {
		return true, err
	}
	if verb == "add" {
		fmt.Fprintf(stdout, "user %s added\n", addr)
	} else {
		fmt.Fprintf(stdout, "password of %s changed\n", addr)
	}
	return true, nil
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
}

func (a *adminClient) allConns() ([]grpc.ClientConnInterface, error) {
	var conns []grpc.ClientConnInterface
	for _, addr := range a.addrs {
		c, err := a.conn(addr)
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// importUsers creates the users listed in file. A user that exists is
// left alone (its password may have changed since the list was made), so
// running it again is harmless.
func (a *adminClient) importUsers(ctx context.Context, mc *mailserver.MigrateClient, cl *mailserver.Client, file string, stdin io.Reader, stdout io.Writer, minLen int) error {
	var in io.Reader = stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	var added, existed, failed int
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		var err error
		if addr, rest, ok := strings.Cut(line, ":"); ok && !strings.ContainsAny(addr, " \t") {
			// passwd-file: user:password[:uid:gid:gecos:home:shell:extra]
			h, _, _ := strings.Cut(rest, ":")
			if strings.HasPrefix(h, "{") {
				if i := strings.IndexByte(h, '}'); i > 0 {
					// "{SCHEME}hash" may hold ':' in no scheme accepted, so the cut is safe.
					h = h[:i+1] + strings.SplitN(h[i+1:], ":", 2)[0]
				}
			}
			err = mc.AddUserHash(ctx, addr, h, 0)
		} else if addr, pw, ok := strings.Cut(line, " "); ok {
			pw = strings.TrimSpace(pw)
			if err = mailbox.CheckPasswordPolicy(pw, minLen); err == nil {
				err = cl.AddUser(transport.WithOutgoingRequestID(ctx, transport.NewRequestID()), addr, pw, 0)
			}
		} else {
			err = errors.New("want 'address:{SCHEME}hash' or 'address password'")
		}
		var me *mailserver.MigrateError
		switch {
		case err == nil:
			added++
		case errors.As(err, &me) && me.Code == codes.AlreadyExists,
			strings.Contains(err.Error(), "exists"):
			existed++
		default:
			failed++
			fmt.Fprintf(os.Stderr, "%s:%d: %v\n", file, n, err)
		}
		if (added+existed+failed)%100 == 0 {
			fmt.Fprintf(os.Stderr, "… %d added, %d existed, %d failed\n", added, existed, failed)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %v", file, err)
	}
	fmt.Fprintf(stdout, "users: %d added, %d already existed (left alone), %d failed\n", added, existed, failed)
	if failed > 0 {
		return fmt.Errorf("%d users could not be imported (see above); fix those lines and run the import again", failed)
	}
	return nil
}

// ---------------------------------------------------------------------------
// Maildir import.

// maildirMessage is one message file of a maildir folder.
type maildirMessage struct {
	path  string
	key   string // base name, before ":2,"
	uid   uint32 // from dovecot-uidlist, 0 if not listed
	flags []string
	mtime time.Time
	size  int64
	body  []byte // the message already read (mbox), or nil: read path
}

// maildirFolder is one folder: the root (INBOX) or a Maildir++ ".Sub.Folder".
type maildirFolder struct {
	dir         string
	name        string // hastore mailbox name
	uidValidity uint32
	msgs        []maildirMessage
}

// maxImportMessage bounds a message the import reads into memory.
const maxImportMessage = 256 << 20

// readMaildir lists the folders of a Dovecot maildir and their messages.
func readMaildir(root string) ([]maildirFolder, error) {
	if _, err := os.Stat(filepath.Join(root, "cur")); err != nil {
		return nil, fmt.Errorf("%s is no maildir (no cur/ in it): %v", root, err)
	}
	folders := []maildirFolder{{dir: root, name: mailstate.InboxName}}
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || !strings.HasPrefix(n, ".") || n == "." || n == ".." {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, n, "cur")); err != nil {
			continue
		}
		name, err := maildirFolderName(n[1:])
		if err != nil {
			return nil, fmt.Errorf("folder %s: %v", n, err)
		}
		folders = append(folders, maildirFolder{dir: filepath.Join(root, n), name: name})
	}
	for i := range folders {
		if err := folders[i].read(); err != nil {
			return nil, fmt.Errorf("folder %s: %v", folders[i].dir, err)
		}
	}
	return folders, nil
}

// maildirFolderName turns a Maildir++ folder name ("Sub.Folder", modified
// UTF-7 as Dovecot writes it) into a mailbox name ("Sub/Folder", UTF-8).
func maildirFolderName(s string) (string, error) {
	name, err := decodeMUTF7(s)
	if err != nil {
		return "", err
	}
	if strings.EqualFold(name, mailstate.InboxName) {
		return mailstate.InboxName, nil
	}
	return strings.ReplaceAll(name, ".", string(mailstate.MailboxDelim)), nil
}

// decodeMUTF7 decodes IMAP's modified UTF-7 (RFC 3501 5.1.3).
func decodeMUTF7(s string) (string, error) {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '&' {
			out.WriteByte(c)
			continue
		}
		j := strings.IndexByte(s[i:], '-')
		if j < 0 {
			return "", fmt.Errorf("%q: unterminated &", s)
		}
		enc := s[i+1 : i+j]
		i += j
		if enc == "" {
			out.WriteByte('&')
			continue
		}
		b, err := base64.RawStdEncoding.DecodeString(strings.ReplaceAll(enc, ",", "/"))
		if err != nil || len(b)%2 != 0 {
			return "", fmt.Errorf("%q: bad modified UTF-7", s)
		}
		u := make([]uint16, len(b)/2)
		for k := range u {
			u[k] = uint16(b[2*k])<<8 | uint16(b[2*k+1])
		}
		out.WriteString(string(utf16.Decode(u)))
	}
	return out.String(), nil
}

// read lists the folder's messages with their flags, keywords and UIDs.
func (f *maildirFolder) read() error {
	keywords := map[byte]string{}
	if b, err := os.ReadFile(filepath.Join(f.dir, "dovecot-keywords")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			idx, kw, ok := strings.Cut(strings.TrimSpace(line), " ")
			n, err := strconv.Atoi(idx)
			if ok && err == nil && n >= 0 && n < 26 && kw != "" {
				keywords[byte('a'+n)] = kw
			}
		}
	}
	uids := map[string]uint32{}
	if b, err := os.ReadFile(filepath.Join(f.dir, "dovecot-uidlist")); err == nil {
		lines := strings.Split(string(b), "\n")
		for _, fld := range strings.Fields(lines[0]) {
			if v, ok := strings.CutPrefix(fld, "V"); ok && lines[0][0] == '3' {
				if n, err := strconv.ParseUint(v, 10, 32); err == nil {
					f.uidValidity = uint32(n)
				}
			}
		}
		for _, line := range lines[1:] {
			// "<uid> [<ext>...] :<filename>" (version 3)
			i := strings.Index(line, " :")
			if i < 0 {
				continue
			}
			uidStr, _, _ := strings.Cut(line, " ")
			n, err := strconv.ParseUint(uidStr, 10, 32)
			if err != nil || n == 0 {
				continue
			}
			base, _, _ := strings.Cut(line[i+2:], ":")
			uids[base] = uint32(n)
		}
	}
	for _, sub := range []string{"cur", "new"} {
		ents, err := os.ReadDir(filepath.Join(f.dir, sub))
		if err != nil {
			return err
		}
		for _, e := range ents {
			if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			info, err := e.Info()
			if err != nil {
				continue // moved away meanwhile (Dovecot still running)
			}
			base, suffix, _ := strings.Cut(e.Name(), ":")
			m := maildirMessage{path: filepath.Join(f.dir, sub, e.Name()), key: base, uid: uids[base], mtime: info.ModTime(), size: info.Size()}
			if fl, ok := strings.CutPrefix(suffix, "2,"); ok {
				for i := 0; i < len(fl); i++ {
					c := fl[i]
					switch c {
					case 'D':
						m.flags = append(m.flags, mailstate.FlagDraft)
					case 'F':
						m.flags = append(m.flags, mailstate.FlagFlagged)
					case 'P':
						m.flags = append(m.flags, "$Forwarded")
					case 'R':
						m.flags = append(m.flags, mailstate.FlagAnswered)
					case 'S':
						m.flags = append(m.flags, mailstate.FlagSeen)
					case 'T':
						m.flags = append(m.flags, mailstate.FlagDeleted)
					default:
						if kw, ok := keywords[c]; ok {
							m.flags = append(m.flags, kw)
						}
					}
				}
			}
			f.msgs = append(f.msgs, m)
		}
	}
	// Source UIDs ascending, then the messages the uidlist does not name
	// yet (they get the next UIDs), in name order (delivery time first).
	sort.Slice(f.msgs, func(i, j int) bool {
		a, b := f.msgs[i], f.msgs[j]
		if (a.uid == 0) != (b.uid == 0) {
			return a.uid != 0
		}
		if a.uid != b.uid {
			return a.uid < b.uid
		}
		return a.key < b.key
	})
	return nil
}

// importBatchBytes bounds the info of one Import call, under the cluster
// port's 4 MiB request limit.
const importBatchBytes = 2 << 20

func (a *adminClient) importMaildir(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	user := fs.String("user", "", "the hastore user to import into (must exist)")
	dry := fs.Bool("dry-run", false, "list what would be imported")
	parallel := fs.Int("parallel", 8, "messages stored at once")
	mbox := fs.String("mbox", "", "an mbox file to import instead of a maildir")
	folder := fs.String("folder", "", "with --mbox: the mailbox to import into (default: from the file name)")
	maxMsg := fs.String("max-message-size", "50M", "with --mbox: larger messages are skipped (the servers' --max-message-size)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *mbox != "" {
		if len(pos) != 0 || *user == "" {
			return errors.New("usage: hastore admin import --user U@D --mbox FILE [--folder NAME] [--dry-run]")
		}
		limit, err := parseSize(*maxMsg)
		if err != nil || limit <= 0 {
			return fmt.Errorf("--max-message-size %q: want a positive size such as 50M", *maxMsg)
		}
		return a.importMbox(ctx, *user, *mbox, *folder, limit, *dry, *parallel, stdout)
	}
	if len(pos) != 1 || *user == "" {
		return errors.New("usage: hastore admin import --user U@D MAILDIR [--dry-run]")
	}
	folders, err := readMaildir(pos[0])
	if err != nil {
		return err
	}
	total := 0
	for _, f := range folders {
		total += len(f.msgs)
	}
	fmt.Fprintf(stdout, "%s: %d folders, %d messages\n", pos[0], len(folders), total)
	if *dry {
		for _, f := range folders {
			fmt.Fprintf(stdout, "  %-30s %6d messages  UIDVALIDITY %d\n", f.name, len(f.msgs), f.uidValidity)
		}
		return nil
	}
	conns, err := a.allConns()
	if err != nil {
		return err
	}
	mc := mailserver.NewMigrateClient(conns...)
	var st importStats
	start := time.Now()
	for _, f := range folders {
		if err := a.importFolder(ctx, mc, *user, f, &st, total, start, *parallel); err != nil {
			fmt.Fprintf(stdout, "stopped: %d imported, %d already there, %d failed of %d; run the same command again to go on\n", st.imported, st.existed, st.failed, total)
			return fmt.Errorf("folder %s: %w", f.name, err)
		}
	}
	fmt.Fprintf(stdout, "done in %s: %d imported, %d already there, %d failed of %d; UIDs kept for %d, renumbered for %d, new for %d (not in dovecot-uidlist)\n",
		time.Since(start).Round(time.Second), st.imported, st.existed, st.failed, total, st.kept, st.renumbered, st.fresh)
	if st.failed > 0 {
		return fmt.Errorf("%d messages failed (see above)", st.failed)
	}
	return nil
}

type importStats struct {
	imported, existed, failed int
	// Of the imported: UIDs kept, UIDs changed (the mailbox held mail),
	// and new UIDs for messages the source had given none.
	kept, renumbered, fresh int
	lastReport              time.Time
}

func (a *adminClient) importFolder(ctx context.Context, mc *mailserver.MigrateClient, user string, f maildirFolder, st *importStats, total int, start time.Time, parallel int) error {
	mb, err := mc.EnsureMailbox(ctx, user, f.name)
	if err != nil {
		return err
	}
	if f.uidValidity != 0 && mb.UIDValidity != f.uidValidity && mb.UIDNext > 1 {
		fmt.Fprintf(os.Stderr, "%s: the mailbox already held mail, so it keeps UIDVALIDITY %d and the messages get new UIDs (clients download them again)\n", f.name, mb.UIDValidity)
	}
	if len(f.msgs) == 0 && f.uidValidity != 0 {
		// An empty folder still takes its UIDVALIDITY.
		if _, err := mc.Import(ctx, mailserver.MigrateImport{Address: user, Mailbox: f.name, UIDValidity: f.uidValidity}); err != nil {
			return err
		}
	}
	for i := 0; i < len(f.msgs); {
		// The next batch: what one Import call may carry.
		j := min(i+mailstate.MaxMailMessages, len(f.msgs))
		batch := f.msgs[i:j]
		i = j
		keys := make([]string, len(batch))
		for k, m := range batch {
			keys[k] = m.key
		}
		done, err := mc.Imported(ctx, user, mb.ID, keys)
		if err != nil {
			return err
		}
		var todo []maildirMessage
		for k, m := range batch {
			switch {
			case done[k] != 0:
				st.existed++
			case m.size > maxImportMessage:
				st.failed++
				fmt.Fprintf(os.Stderr, "%s: %d bytes, over %d: skipped\n", m.path, m.size, maxImportMessage)
			default:
				todo = append(todo, m)
			}
		}
		ups := a.uploadAll(ctx, todo, parallel)
		var held []meta.BlobID
		var firstErr error
		for _, u := range ups {
			switch {
			case u.held:
				held = append(held, u.id)
			case errors.Is(u.err, os.ErrNotExist):
				// Dovecot renamed it (a flag changed): read again on the next run.
				st.failed++
				fmt.Fprintf(os.Stderr, "%s: gone (flags changed while importing?); run the import again\n", u.m.path)
			case u.err != nil && firstErr == nil:
				firstErr = u.err
			}
		}
		release := func(ids []meta.BlobID) {
			for _, id := range ids {
				_ = a.each(func(c pb.ClusterClient) error {
					_, err := c.DeleteObject(ctx, &pb.ObjectRef{Id: id[:]})
					return err
				})
			}
		}
		if firstErr != nil {
			release(held)
			return firstErr
		}
		// One Import call per run of messages whose info fits a request.
		var reqs []mailserver.MigrateImport
		bytes := importBatchBytes + 1
		for _, u := range ups {
			if !u.held {
				continue
			}
			if bytes += len(u.info)*4/3 + 512; bytes > importBatchBytes {
				reqs = append(reqs, mailserver.MigrateImport{Address: user, Mailbox: f.name, UIDValidity: f.uidValidity})
				bytes = len(u.info)*4/3 + 512
			}
			r := &reqs[len(reqs)-1]
			r.Messages = append(r.Messages, mailserver.MigrateMessage{Key: u.m.key, UID: u.m.uid, Object: u.id, Size: u.size,
				InternalDate: u.m.mtime, Info: u.info, Flags: u.m.flags})
		}
		for n, req := range reqs {
			res, err := mc.Import(ctx, req)
			if err != nil {
				if mailserver.Decided(err) {
					// Nothing of this call was applied; the later calls' bodies are ours too.
					var ids []meta.BlobID
					for _, r := range reqs[n:] {
						for _, m := range r.Messages {
							ids = append(ids, m.Object)
						}
					}
					release(ids)
				}
				return err
			}
			for k, r := range res {
				m := req.Messages[k]
				switch {
				case r.Error != "":
					st.failed++
					fmt.Fprintf(os.Stderr, "%s/%s: %s\n", f.name, m.Key, r.Error)
				case r.Existed:
					st.existed++
				default:
					st.imported++
					switch {
					case m.UID == 0:
						st.fresh++
					case r.UID == m.UID && r.UIDValidity == f.uidValidity:
						st.kept++
					default:
						st.renumbered++
					}
				}
			}
		}
		if time.Since(st.lastReport) > 2*time.Second || i == len(f.msgs) {
			st.lastReport = time.Now()
			doneN := st.imported + st.existed + st.failed
			fmt.Fprintf(os.Stderr, "… %s: %d/%d messages (%d imported, %d already there, %d failed), %s\n",
				f.name, doneN, total, st.imported, st.existed, st.failed, time.Since(start).Round(time.Second))
		}
	}
	return nil
}

// upload is one message read and stored: held says the cluster holds its
// body with one reference for the import to consume.
type upload struct {
	m    maildirMessage
	id   meta.BlobID
	size int64
	info []byte
	held bool
	err  error
}

// uploadAll reads and stores msgs, parallel at a time (each body is one
// quorum write; in a row they would wait for each other's fsyncs). The
// results keep msgs' order, which the UIDs need.
func (a *adminClient) uploadAll(ctx context.Context, msgs []maildirMessage, parallel int) []upload {
	ups := make([]upload, len(msgs))
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
	for k, m := range msgs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			u := upload{m: m}
			body, err := m.body, error(nil)
			if body == nil {
				body, err = os.ReadFile(m.path)
			}
			if err == nil {
				body = mailbox.NormalizeCRLF(body)
				u.info, err = mailbox.EncodeInfo(mailbox.ParseInfo(body))
			}
			if err == nil {
				u.id, err = a.putObject(ctx, body)
				if err != nil {
					err = fmt.Errorf("%s: storing it: %v", m.path, err)
				}
			} else if !errors.Is(err, os.ErrNotExist) {
				err = fmt.Errorf("%s: %v", m.path, err)
			}
			u.size, u.held, u.err = int64(len(body)), err == nil, err
			ups[k] = u
		}()
	}
	wg.Wait()
	return ups
}

// putObject stores a body and returns its ID with one reference held.
func (a *adminClient) putObject(ctx context.Context, data []byte) (meta.BlobID, error) {
	var ref *pb.ObjectRef
	err := a.each(func(c pb.ClusterClient) error {
		stream, err := c.PutObject(ctx)
		if err != nil {
			return err
		}
		for rest := data; ; {
			n := min(len(rest), 1<<20)
			if err := stream.Send(&pb.DataChunk{Data: rest[:n]}); err != nil {
				break // the real error comes from CloseAndRecv
			}
			if rest = rest[n:]; len(rest) == 0 {
				break
			}
		}
		ref, err = stream.CloseAndRecv()
		return err
	})
	var id meta.BlobID
	if err != nil {
		return id, err
	}
	if len(ref.Id) != len(id) {
		return id, fmt.Errorf("object ID of %d bytes", len(ref.Id))
	}
	copy(id[:], ref.Id)
	return id, nil
}

// ---------------------------------------------------------------------------
// Maildir export: a user's mail as a Dovecot maildir (Maildir++ folders,
// flags and keywords in the file names, INTERNALDATE as the files' times,
// UIDs and UIDVALIDITY in dovecot-uidlist), so that Dovecot — or
// `hastore admin import` — takes it with nothing re-downloaded.

// exportFileName is a message's maildir name: unique, stable across runs
// (so a second run finds what the first wrote), and with S= for Dovecot.
func exportFileName(uv, uid uint32, size int64) string {
	return fmt.Sprintf("%d.V%dU%d.hastore,S=%d", uid, uv, uid, size)
}

// maildirFlags is the ":2," suffix for flags; keywords get letters a–z
// in kw (extended as new ones appear; past 26 they are dropped and counted).
func maildirFlags(flags []string, kw *[]string, dropped *int) string {
	var letters []byte
	for _, f := range flags {
		switch f {
		case mailstate.FlagDraft:
			letters = append(letters, 'D')
		case mailstate.FlagFlagged:
			letters = append(letters, 'F')
		case mailstate.FlagAnswered:
			letters = append(letters, 'R')
		case mailstate.FlagSeen:
			letters = append(letters, 'S')
		case mailstate.FlagDeleted:
			letters = append(letters, 'T')
		default:
			i := -1
			for k, w := range *kw {
				if w == f {
					i = k
				}
			}
			if i < 0 && len(*kw) < 26 {
				*kw = append(*kw, f)
				i = len(*kw) - 1
			}
			if i < 0 {
				*dropped++
				continue
			}
			letters = append(letters, byte('a'+i))
		}
	}
	sort.Slice(letters, func(i, j int) bool { return letters[i] < letters[j] })
	return ":2," + string(letters)
}

// encodeMUTF7 encodes a mailbox name in IMAP's modified UTF-7, as Dovecot
// names maildir folders.
func encodeMUTF7(s string) string {
	var out strings.Builder
	var run []rune
	flush := func() {
		if len(run) == 0 {
			return
		}
		u := utf16.Encode(run)
		b := make([]byte, 0, 2*len(u))
		for _, c := range u {
			b = append(b, byte(c>>8), byte(c))
		}
		out.WriteString("&" + strings.ReplaceAll(base64.RawStdEncoding.EncodeToString(b), "/", ",") + "-")
		run = run[:0]
	}
	for _, r := range s {
		if r >= 0x20 && r <= 0x7e {
			flush()
			if r == '&' {
				out.WriteString("&-")
			} else {
				out.WriteRune(r)
			}
			continue
		}
		run = append(run, r)
	}
	flush()
	return out.String()
}

func (a *adminClient) exportMaildir(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	user := fs.String("user", "", "the hastore user to export")
	mbox := fs.String("mbox", "", "write one mbox file per mailbox into this directory instead of a maildir")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if *mbox != "" {
		if len(pos) != 0 || *user == "" {
			return errors.New("usage: hastore admin export --user U@D --mbox DIR")
		}
		return a.exportMbox(ctx, *user, *mbox, stdout)
	}
	if len(pos) != 1 || *user == "" {
		return errors.New("usage: hastore admin export --user U@D DIR")
	}
	root := pos[0]
	conns, err := a.allConns()
	if err != nil {
		return err
	}
	mc := mailserver.NewMigrateClient(conns...)
	mbs, err := mc.Mailboxes(ctx, *user)
	if err != nil {
		return err
	}
	var written, existed, dropped int
	for _, mb := range mbs {
		dir := root
		if mb.Name != mailstate.InboxName {
			if strings.Contains(mb.Name, ".") {
				fmt.Fprintf(os.Stderr, "mailbox %q: a '.' in a name cannot be kept in Maildir++; written as '_'\n", mb.Name)
			}
			dir = filepath.Join(root, "."+encodeMUTF7(strings.ReplaceAll(strings.ReplaceAll(mb.Name, ".", "_"), string(mailstate.MailboxDelim), ".")))
		}
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
				return err
			}
		}
		if dir != root {
			if err := os.WriteFile(filepath.Join(dir, "maildirfolder"), nil, 0o600); err != nil {
				return err
			}
		}
		// What an earlier export left: base name → file name. A message
		// whose flags changed is renamed; one no longer there is removed
		// (the export mirrors the mailbox).
		old := map[string]string{}
		if ents, err := os.ReadDir(filepath.Join(dir, "cur")); err == nil {
			for _, e := range ents {
				if base, _, _ := strings.Cut(e.Name(), ":"); strings.Contains(base, ".hastore,") {
					old[base] = e.Name()
				}
			}
		}
		var kw []string
		uidlist := fmt.Sprintf("3 V%d N%d\n", mb.UIDValidity, mb.UIDNext)
		for after := uint32(0); ; {
			page, err := mc.Messages(ctx, *user, mb.ID, after)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				break
			}
			for _, m := range page {
				after = m.UID
				base := exportFileName(mb.UIDValidity, m.UID, m.Size)
				name := base + maildirFlags(m.Flags, &kw, &dropped)
				uidlist += fmt.Sprintf("%d :%s\n", m.UID, base)
				path := filepath.Join(dir, "cur", name)
				if prev, ok := old[base]; ok {
					delete(old, base)
					if prev != name {
						if err := os.Rename(filepath.Join(dir, "cur", prev), path); err != nil {
							return err
						}
					}
					existed++
					continue
				}
				body, err := a.getObject(ctx, m.Object)
				if err != nil {
					return fmt.Errorf("%s UID %d: %v", mb.Name, m.UID, err)
				}
				tmp := filepath.Join(dir, "tmp", name)
				if err := writeFileSync(tmp, body); err != nil {
					return err
				}
				if err := os.Chtimes(tmp, m.InternalDate, m.InternalDate); err != nil {
					return err
				}
				if err := os.Rename(tmp, path); err != nil {
					return err
				}
				written++
			}
			fmt.Fprintf(os.Stderr, "… %s: %d written, %d already there\n", mb.Name, written, existed)
		}
		for _, name := range old {
			if err := os.Remove(filepath.Join(dir, "cur", name)); err != nil {
				return err
			}
		}
		if err := writeFileSync(filepath.Join(dir, "dovecot-uidlist"), []byte(uidlist)); err != nil {
			return err
		}
		var kws strings.Builder
		for i, w := range kw {
			fmt.Fprintf(&kws, "%d %s\n", i, w)
		}
		if err := writeFileSync(filepath.Join(dir, "dovecot-keywords"), []byte(kws.String())); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%s: %d mailboxes, %d messages written, %d already there\n", root, len(mbs), written, existed)
	if dropped > 0 {
		fmt.Fprintf(stdout, "warning: %d keywords past the 26 a maildir folder can name were not written\n", dropped)
	}
	return nil
}

// writeFileSync writes a file and fsyncs it: an export is a backup.
func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// getObject reads a whole object (checksums are verified by the node).
func (a *adminClient) getObject(ctx context.Context, id meta.BlobID) ([]byte, error) {
	var data []byte
	err := a.each(func(c pb.ClusterClient) error {
		data = data[:0]
		stream, err := c.GetObject(ctx, &pb.GetObjectRequest{Id: id[:], Length: -1})
		if err != nil {
			return err
		}
		for {
			chunk, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			data = append(data, chunk.Data...)
		}
	})
	return data, err
}
