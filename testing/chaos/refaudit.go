package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
)

// auditRefs asks every node to check, on its own metadata replica after a
// read barrier, that each content chunk of each inode of the chaos site
// has a live object record with at least as many references as the site
// uses it (SiteAudit.ContentRefs). A shortfall is a file lost or about to
// be (a double release of a shared chunk shows only when the other user
// goes), so it fails the run like a lost file. Every node is asked so that
// replicas that disagree show too.
func (s *state) auditRefs(v *verdict) {
	problems := map[string]string{} // object → first description
	answered := 0
	var errs []string
	for _, nd := range s.c.nodes() {
		line, err := auditNode(nd, problems)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", nd.id, err))
			continue
		}
		answered++
		v.RefAudit = append(v.RefAudit, line)
	}
	if answered == 0 {
		v.Errors = append(v.Errors, fmt.Sprintf("reference audit: no node answered: %v", errs))
		return
	}
	v.RefAudit = append(v.RefAudit, errs...)
	v.RefProblems = len(problems)
	keys := make([]string, 0, len(problems))
	for k := range problems {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		if i == 20 {
			v.RefProblemList = append(v.RefProblemList, fmt.Sprintf("... %d more", len(keys)-i))
			break
		}
		v.RefProblemList = append(v.RefProblemList, problems[k])
	}
}

// auditNode runs ContentRefs on one node and adds its problems to
// problems; it returns a line summing up the node's answer.
func auditNode(nd *node, problems map[string]string) (string, error) {
	key, err := transport.LoadKey(nd.keyFile)
	if err != nil {
		return "", err
	}
	opts, err := transport.DialOptions(transport.Config{Key: key})
	if err != nil {
		return "", err
	}
	cc, err := grpc.NewClient("passthrough:///"+nd.cluster, opts...)
	if err != nil {
		return "", err
	}
	defer cc.Close()
	var r *pb.ContentRefsReply
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		r, err = pb.NewSiteAuditClient(cc).ContentRefs(ctx, &pb.SiteRequest{Site: siteName})
		cancel()
		if err == nil || try == 2 {
			break
		}
		time.Sleep(time.Second)
	}
	if err != nil {
		return "", err
	}
	for _, p := range r.Problems {
		id := hex.EncodeToString(p.Object)
		if _, ok := problems[id]; !ok {
			d := fmt.Sprintf("object %s (inode #%d): %d reference(s) for %d use(s), seen on %s", id, p.Ino, p.Refs, p.Used, nd.id)
			if p.Error != "" {
				d += ": " + p.Error
			}
			problems[id] = d
		}
	}
	line := fmt.Sprintf("%s: %d inodes, %d chunk references to %d objects, %d short, %d with surplus references (leaked)",
		nd.id, r.Inodes, r.Chunks, r.Objects, len(r.Problems)+int(r.MoreProblems), r.Surplus)
	if r.MoreProblems > 0 {
		problems[fmt.Sprintf("~more on %s", nd.id)] = fmt.Sprintf("%d more on %s not listed", r.MoreProblems, nd.id)
	}
	return line, nil
}
