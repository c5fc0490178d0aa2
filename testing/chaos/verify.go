package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

type verdict struct {
	Acked         int      `json:"acked"`
	Lost          int      `json:"lost"`
	Duplicate     int      `json:"duplicate"`
	UnackedStored int      `json:"unacked_but_stored"` // failed deliveries that did land: allowed
	LostIDs       []string `json:"lost_ids,omitempty"`
	DupIDs        []string `json:"duplicate_ids,omitempty"`
	Reused        []string `json:"uid_reuse,omitempty"`
	FinalHTTPBad  int      `json:"final_http_failures"`
	Errors        []string `json:"verify_errors,omitempty"`
	FuseAcked     int      `json:"fuse_files_acked"` // also counted in Acked
	FuseLost      int      `json:"fuse_files_lost"`  // also counted in Lost
	FuseMountBad  int      `json:"fuse_final_mount_read_failures"`
	// The chaos site's content references (auditRefs): objects with
	// fewer references than uses, and each node's summary.
	RefProblems    int      `json:"ref_problems"`
	RefProblemList []string `json:"ref_problem_list,omitempty"`
	RefAudit       []string `json:"ref_audit,omitempty"`
}

// withAnyNode runs fn on the nodes in turn until one succeeds.
func (s *state) withAnyNode(fn func(ctx context.Context, nd *node) error) error {
	var err error
	for round := 0; round < 3; round++ {
		for _, nd := range s.c.nodes() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			err = fn(ctx, nd)
			cancel()
			if err == nil {
				return nil
			}
		}
		time.Sleep(time.Second)
	}
	return err
}

func (s *state) verify() verdict {
	var v verdict
	seen := map[string]int{}
	for _, u := range s.users[1:] {
		mbox := u + "/INBOX"
		var unreadable []string
		err := s.withAnyNode(func(ctx context.Context, nd *node) error {
			unreadable = unreadable[:0]
			c, err := s.login(ctx, nd, u)
			if err != nil {
				return err
			}
			defer c.Close()
			sel, err := c.Select("INBOX", nil).Wait()
			if err != nil {
				return err
			}
			if sel.NumMessages == 0 {
				return nil
			}
			// In chunks, and a chunk that fails one message at a time, so
			// that an unreadable message costs itself, not its mailbox.
			opts := &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}
			var msgs []*imapclient.FetchMessageBuffer
			for lo := uint32(1); lo <= sel.NumMessages; lo += 500 {
				var set imap.SeqSet
				set.AddRange(lo, min(lo+499, sel.NumMessages))
				got, err := c.Fetch(set, opts).Collect()
				if err == nil {
					msgs = append(msgs, got...)
					continue
				}
				if ctx.Err() != nil {
					return err
				}
				for seq := lo; seq <= min(lo+499, sel.NumMessages); seq++ {
					got, err := c.Fetch(imap.SeqSetNum(seq), opts).Collect()
					if err != nil {
						if ctx.Err() != nil {
							return err
						}
						unreadable = append(unreadable, fmt.Sprintf("%s message %d on %s: %v", mbox, seq, nd.id, err))
						continue
					}
					msgs = append(msgs, got...)
				}
			}
			if os.Getenv("CHAOS_DEBUG") != "" {
				nb := 0
				for _, m := range msgs {
					nb += len(m.BodySection)
				}
				logf("verify %s on %s: EXISTS %d, fetched %d, body sections %d", mbox, nd.id, sel.NumMessages, len(msgs), nb)
			}
			local := map[string]int{}
			for _, m := range msgs {
				for _, b := range m.BodySection {
					id, _ := s.checkBody(nd.id, mbox, uint32(m.UID), b.Bytes)
					s.noteUID(mbox, sel.UIDValidity, uint32(m.UID), id)
					local[id]++
				}
			}
			for id, n := range local {
				seen[id] += n
			}
			return nil
		})
		if err != nil {
			v.Errors = append(v.Errors, fmt.Sprintf("reading %s: %v", mbox, err))
		}
		if len(unreadable) > 0 {
			v.Errors = append(v.Errors, fmt.Sprintf("%d messages unreadable in %s, first: %s", len(unreadable), mbox, unreadable[0]))
		}
	}
	s.msgMu.Lock()
	for id, m := range s.msgs {
		n := seen[id]
		if m.Acked {
			v.Acked++
			switch {
			case n == 0:
				v.Lost++
				v.LostIDs = append(v.LostIDs, m.User+":"+id)
			case n > 1:
				v.Duplicate++
				v.DupIDs = append(v.DupIDs, fmt.Sprintf("%s:%s×%d", m.User, id, n))
			}
		} else if n > 0 {
			v.UnackedStored++
			if n > 1 {
				v.Duplicate++
				v.DupIDs = append(v.DupIDs, fmt.Sprintf("%s:%s×%d (unacked)", m.User, id, n))
			}
		}
	}
	s.msgMu.Unlock()
	sort.Strings(v.LostIDs)
	if len(v.LostIDs) > 20 {
		v.LostIDs = v.LostIDs[:20]
	}

	// The shared mailbox's final state, as the last read of its history.
	err := s.withAnyNode(func(ctx context.Context, nd *node) error {
		sc := &sharedClient{s: s, id: 99}
		if err := sc.connect(ctx, nd); err != nil {
			return err
		}
		defer sc.close()
		return sc.do(ctx, nil, "read")
	})
	if err != nil {
		v.Errors = append(v.Errors, fmt.Sprintf("final read of %s: %v", sharedBox, err))
	}

	// Every site file once more, from every node in turn.
	cl := &http.Client{}
	for i, p := range s.paths {
		nd := s.c.nodes()[i%len(s.c.nodes())]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.getFile(ctx, cl, nd, p); err != nil {
			v.FinalHTTPBad++
			if len(v.Errors) < 30 {
				v.Errors = append(v.Errors, fmt.Sprintf("final GET /%s on %s: %v", p, nd.id, err))
			}
		}
		cancel()
	}
	s.verifyFuse(&v)
	s.auditRefs(&v)
	s.uidMu.Lock()
	v.Reused = append(v.Reused, s.reused...)
	s.uidMu.Unlock()
	return v
}
