package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	pb "hastore/proto/hastorepb"
	"hastore/replica/transport"
)

const credUsage = `  cred ca --out DIR           make the cluster CA (DIR/ca.pem, DIR/ca.key: keep ca.key on the admin host)
  cred issue node|admin|mount --ca DIR --out DIR [--host H]... [--site S]... [--name LABEL] [--days N]
                              sign a credential (node: --host each name/IP it is dialed at;
                              mount: --site each site it may reach); recorded in the cluster if --addr is given
  cred list [--json]          the recorded credentials and revocations
  cred revoke ID [--force]    refuse the credential on every node from now on
`

// listFlag collects a repeatable flag, commas allowed.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// credOffline runs `cred ca` and `cred issue`, which need the CA key and no
// connection; a, if not nil, records what issue made.
func credOffline(args []string, a *adminClient, out io.Writer) error {
	switch args[0] {
	case "ca":
		fs := flag.NewFlagSet("cred ca", flag.ContinueOnError)
		dir := fs.String("out", "", "directory for ca.pem and ca.key (created 0700)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			return errors.New("usage: cred ca --out DIR")
		}
		if _, err := transport.NewCA(*dir); err != nil {
			return err
		}
		fmt.Fprintf(out, "cluster CA made in %s: give %s/%s to every node (--tls-ca) and keep %s/%s private\n",
			*dir, *dir, transport.CAFile, *dir, transport.CAKeyFile)
		return nil
	case "issue":
		return credIssue(args[1:], a, out)
	}
	return fmt.Errorf("cred %s: want ca, issue, list or revoke", args[0])
}

func credIssue(args []string, a *adminClient, out io.Writer) error {
	fs := flag.NewFlagSet("cred issue", flag.ContinueOnError)
	caDir := fs.String("ca", os.Getenv("HASTORE_CA"), "the cluster CA's directory (ca.pem, ca.key)")
	outDir := fs.String("out", "", "directory to write the credential to (cert.pem, key.pem, ca.pem)")
	name := fs.String("name", "", "a label for 'cred list': the host or customer it is for")
	days := fs.Int("days", 0, "days the credential is valid (0: 365, nodes 3650)")
	var sites, hosts listFlag
	fs.Var(&sites, "site", "a site a mount credential reaches (repeat or comma-separate)")
	fs.Var(&hosts, "host", "a name or IP address a node is dialed at (repeat or comma-separate)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *caDir == "" || *outDir == "" {
		return errors.New("usage: cred issue node|admin|mount --ca DIR --out DIR [--host H]... [--site S]... [--name LABEL]")
	}
	role, err := transport.ParseRole(pos[0])
	if err != nil {
		return err
	}
	ca, err := transport.LoadCA(*caDir)
	if err != nil {
		return err
	}
	issued, err := ca.Issue(transport.CredRequest{Role: role, Sites: sites, Hosts: hosts, Valid: time.Duration(*days) * 24 * time.Hour})
	if err != nil {
		return err
	}
	if err := ca.WriteCredential(*outDir, issued); err != nil {
		return err
	}
	fmt.Fprintf(out, "%s credential %s written to %s (valid until %s)\n", role, issued.ID, *outDir, issued.NotAfter.Format(time.DateOnly))
	if a == nil {
		fmt.Fprintln(out, "not recorded in a cluster (no --addr): 'cred list' will not show it; 'cred revoke --force ID' still revokes it")
		return nil
	}
	rec := &pb.CredRecord{Id: issued.ID, Role: string(role), Sites: sites, Name: *name,
		IssuedUnixNano: time.Now().UnixNano(), ExpiresUnixNano: issued.NotAfter.UnixNano()}
	if *name == "" && len(hosts) > 0 {
		rec.Name = strings.Join(hosts, ",")
	}
	err = a.eachCreds(func(c pb.CredsClient) error {
		_, err := c.RecordCred(context.Background(), rec)
		return err
	})
	if err != nil {
		return fmt.Errorf("credential written to %s but not recorded in the cluster (it works; 'cred list' will not show it): %w", *outDir, err)
	}
	return nil
}

func (a *adminClient) eachCreds(fn func(pb.CredsClient) error) error {
	return a.eachConn(func(c *grpc.ClientConn) error { return fn(pb.NewCredsClient(c)) })
}

func (a *adminClient) cred(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage:\n%s", credUsage)
	}
	switch args[0] {
	case "ca", "issue":
		return credOffline(args, a, out)
	case "list":
		fs := flag.NewFlagSet("cred list", flag.ContinueOnError)
		asJSON := fs.Bool("json", false, "print JSON")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		var r *pb.ListCredsReply
		if err := a.eachCreds(func(c pb.CredsClient) (err error) { r, err = c.ListCreds(ctx, &pb.ListCredsRequest{}); return }); err != nil {
			return err
		}
		creds := r.GetCreds()
		sort.Slice(creds, func(i, j int) bool { return creds[i].GetIssuedUnixNano() < creds[j].GetIssuedUnixNano() })
		when := func(ns int64) string {
			if ns == 0 {
				return ""
			}
			return time.Unix(0, ns).UTC().Format(time.DateOnly)
		}
		if *asJSON {
			type cred struct {
				ID      string   `json:"id"`
				Role    string   `json:"role"`
				Sites   []string `json:"sites,omitempty"`
				Name    string   `json:"name,omitempty"`
				Issued  string   `json:"issued,omitempty"`
				Expires string   `json:"expires,omitempty"`
				Revoked string   `json:"revoked,omitempty"`
			}
			v := []cred{}
			for _, c := range creds {
				v = append(v, cred{c.GetId(), c.GetRole(), c.GetSites(), c.GetName(), when(c.GetIssuedUnixNano()), when(c.GetExpiresUnixNano()), when(c.GetRevokedUnixNano())})
			}
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tROLE\tSITES\tNAME\tISSUED\tEXPIRES\tREVOKED")
		for _, c := range creds {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.GetId(), c.GetRole(), strings.Join(c.GetSites(), ","), c.GetName(),
				when(c.GetIssuedUnixNano()), when(c.GetExpiresUnixNano()), when(c.GetRevokedUnixNano()))
		}
		return tw.Flush()
	case "revoke":
		fs := flag.NewFlagSet("cred revoke", flag.ContinueOnError)
		force := fs.Bool("force", false, "revoke an ID the cluster has no record of")
		pos, err := parseArgs(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return errors.New("usage: cred revoke ID [--force]")
		}
		err = a.eachCreds(func(c pb.CredsClient) error {
			_, err := c.RevokeCred(ctx, &pb.RevokeCredRequest{Id: pos[0], Force: *force})
			return err
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "credential %s revoked; every node refuses it once it has applied the change\n", pos[0])
		return nil
	}
	return fmt.Errorf("cred %s: want ca, issue, list or revoke", args[0])
}
