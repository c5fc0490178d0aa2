package imap_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	hsimap "hastore/mailserver/imap"
	"hastore/mailserver/mailbox"
)

// TestGoIMAPClient runs go-imap's client, whose response parser is strict,
// against the server: every response this layer encodes must parse into
// the values the backend meant.
func TestGoIMAPClient(t *testing.T) {
	e := startGuardEnv(t)
	plain, _ := e.listen(t, hsimap.Config{})
	var mu = make(chan uint32, 16)
	c, err := imapclient.DialInsecure(plain, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				select {
				case mu <- *d.NumMessages:
				default:
				}
			}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("g@guard.test", "pw").Wait(); err != nil {
		t.Fatalf("LOGIN: %v", err)
	}
	caps := c.Caps()
	for _, cp := range []imap.Cap{imap.CapIMAP4rev1, imap.CapCondStore, imap.CapQResync, imap.CapSort, imap.CapMove, imap.CapUIDPlus, imap.CapQuota, imap.CapLiteralPlus} {
		if !caps.Has(cp) {
			t.Errorf("capabilities %v lack %s", caps, cp)
		}
	}
	if err := c.Create("Cl/Sub", nil).Wait(); err != nil {
		t.Fatalf("CREATE: %v", err)
	}
	msg := "From: \"Ann Example\" <ann@x.test>\r\nTo: undisclosed-recipients:;\r\nCc: bob@y.test\r\n" +
		"Subject: =?utf-8?q?caf=C3=A9?=\r\nDate: Mon, 05 Jan 2026 09:30:00 +0100\r\nMessage-ID: <m1@x.test>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello \"world\"\r\n" +
		"--b\r\nContent-Type: application/octet-stream; name=a.bin\r\nContent-Disposition: attachment; filename=a.bin\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n" +
		"--b--\r\n"
	date := time.Date(2026, 1, 5, 10, 0, 0, 0, time.FixedZone("", 3600))
	ac := c.Append("Cl/Sub", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagFlagged, "$Label1"}, Time: date})
	ac.Write([]byte(msg))
	ac.Close()
	ad, err := ac.Wait()
	if err != nil || ad.UID != 1 {
		t.Fatalf("APPEND: %+v %v", ad, err)
	}
	lst, err := c.List("", "Cl/*", &imap.ListOptions{ReturnStatus: &imap.StatusOptions{NumMessages: true, UIDNext: true}}).Collect()
	if err != nil || len(lst) != 1 || lst[0].Mailbox != "Cl/Sub" || lst[0].Delim != '/' || lst[0].Status == nil || *lst[0].Status.NumMessages != 1 {
		t.Errorf("LIST RETURN (STATUS): %+v %v", lst, err)
	}
	st, err := c.Status("Cl/Sub", &imap.StatusOptions{NumMessages: true, UIDNext: true, UIDValidity: true, NumUnseen: true, Size: true, HighestModSeq: true}).Wait()
	if err != nil || *st.NumMessages != 1 || st.UIDNext != 2 || *st.NumUnseen != 1 || *st.Size != int64(len(msg)) || st.HighestModSeq == 0 {
		t.Errorf("STATUS: %+v %v", st, err)
	}
	sel, err := c.Select("Cl/Sub", &imap.SelectOptions{CondStore: true}).Wait()
	if err != nil || sel.NumMessages != 1 || sel.UIDNext != 2 || sel.HighestModSeq == 0 || len(sel.PermanentFlags) == 0 {
		t.Fatalf("SELECT: %+v %v", sel, err)
	}
	hdr := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject", "Message-ID"}, Peek: true}
	part := &imap.FetchItemBodySection{Part: []int{1}, Peek: true, Partial: &imap.SectionPartial{Offset: 6, Size: 7}}
	bin := &imap.FetchItemBinarySection{Part: []int{2}, Peek: true}
	msgs, err := c.Fetch(imap.UIDSetNum(1), &imap.FetchOptions{
		UID: true, Flags: true, InternalDate: true, RFC822Size: true, Envelope: true, ModSeq: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true}, BodySection: []*imap.FetchItemBodySection{hdr, part},
		BinarySection: []*imap.FetchItemBinarySection{bin}, BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{2}}},
	}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FETCH: %v %v", msgs, err)
	}
	m := msgs[0]
	if m.UID != 1 || m.RFC822Size != int64(len(msg)) || !m.InternalDate.Equal(date) || m.ModSeq == 0 {
		t.Errorf("FETCH UID/RFC822.SIZE/INTERNALDATE/MODSEQ: %d %d %v %d", m.UID, m.RFC822Size, m.InternalDate, m.ModSeq)
	}
	if fl := fmt.Sprint(m.Flags); fl != `[$Label1 \Flagged \Recent]` {
		t.Errorf("FETCH FLAGS: %s", fl)
	}
	env := m.Envelope
	if env == nil || env.Subject != "café" || env.MessageID != "m1@x.test" || len(env.From) != 1 || env.From[0].Name != "Ann Example" ||
		env.From[0].Addr() != "ann@x.test" || len(env.Cc) != 1 || env.Cc[0].Addr() != "bob@y.test" || !env.Date.Equal(time.Date(2026, 1, 5, 8, 30, 0, 0, time.UTC)) {
		t.Errorf("ENVELOPE: %+v", env)
	}
	mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
	if !ok || len(mp.Children) != 2 || !strings.EqualFold(mp.Subtype, "mixed") {
		t.Fatalf("BODYSTRUCTURE: %#v", m.BodyStructure)
	}
	if att, ok := mp.Children[1].(*imap.BodyStructureSinglePart); !ok || att.Filename() != "a.bin" || !strings.EqualFold(att.Encoding, "base64") {
		t.Errorf("BODYSTRUCTURE part 2: %#v", mp.Children[1])
	}
	if b := m.FindBodySection(hdr); !bytes.Contains(b, []byte("Message-ID: <m1@x.test>")) || bytes.Contains(b, []byte("From:")) {
		t.Errorf("BODY[HEADER.FIELDS (Subject Message-ID)]: %q", b)
	}
	if b := m.FindBodySection(part); string(b) != `"world"` {
		t.Errorf("BODY[1]<6.7>: %q", b)
	}
	if b := m.FindBinarySection(bin); !bytes.Equal(b, []byte{0, 1, 2, 3}) {
		t.Errorf("BINARY[2]: %q", b)
	}
	if n, ok := m.FindBinarySectionSize([]int{2}); !ok || n != 4 {
		t.Errorf("BINARY.SIZE[2]: %d %v", n, ok)
	}
	// STORE, SEARCH (ESEARCH), SORT, THREAD, MOVE, QUOTA, IDLE.
	if _, err := c.Store(imap.UIDSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Collect(); err != nil {
		t.Errorf("STORE: %v", err)
	}
	sd, err := c.UIDSearch(&imap.SearchCriteria{Flag: []imap.Flag{imap.FlagSeen}}, &imap.SearchOptions{ReturnCount: true, ReturnMin: true}).Wait()
	if err != nil || sd.Count != 1 || sd.Min != 1 {
		t.Errorf("UID SEARCH RETURN (COUNT MIN) SEEN: %+v %v", sd, err)
	}
	if nums, err := c.Sort(&imapclient.SortOptions{SearchCriteria: &imap.SearchCriteria{}, SortCriteria: []imapclient.SortCriterion{{Key: imapclient.SortKeyDate}}}).Wait(); err != nil || len(nums) != 1 || nums[0] != 1 {
		t.Errorf("SORT: %v %v", nums, err)
	}
	if th, err := c.Thread(&imapclient.ThreadOptions{Algorithm: imap.ThreadReferences, SearchCriteria: &imap.SearchCriteria{}}).Wait(); err != nil || len(th) != 1 {
		t.Errorf("THREAD: %+v %v", th, err)
	}
	if q, err := c.GetQuotaRoot("INBOX").Wait(); err != nil || len(q) != 0 {
		t.Errorf("GETQUOTAROOT: %+v %v", q, err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	e.deliver(t, "g@guard.test", "Cl/Sub")
	select {
	case n := <-mu:
		if n != 2 {
			t.Errorf("EXISTS during IDLE: %d", n)
		}
	case <-time.After(10 * time.Second):
		t.Error("no EXISTS during IDLE")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Errorf("IDLE: %v", err)
	}
	if md, err := c.Move(imap.UIDSetNum(1), "INBOX").Wait(); err != nil || md.UIDValidity == 0 || md.DestUIDs == nil {
		t.Errorf("MOVE: %+v %v", md, err)
	}
	if err := c.Logout().Wait(); err != nil {
		t.Errorf("LOGOUT: %v", err)
	}
}

// deliver puts a small message in a user's mailbox, as the LMTP side does.
func (e *guardEnv) deliver(t *testing.T, user, mbox string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d := e.st.NewDelivery()
	if err := d.AddRecipient(mailbox.Recipient{Address: user, Mailbox: mbox}); err != nil {
		t.Fatal(err)
	}
	if err := d.Body(ctx, []byte("From: z@x.test\r\nSubject: new\r\n\r\nnew\r\n"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Commit(ctx, true); err != nil {
		t.Fatal(err)
	}
}
