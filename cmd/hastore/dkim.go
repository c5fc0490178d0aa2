package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"hastore/mailserver/outbound"
)

// dkim runs `hastore admin domain dkim create|show DOMAIN`.
func (a *adminClient) dkim(ctx context.Context, args []string, out io.Writer) error {
	const usage = "usage: hastore admin domain dkim create DOMAIN [--algorithm rsa|ed25519] [--selector S] [--replace]\n       hastore admin domain dkim show DOMAIN [--json]"
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("domain dkim "+args[0], flag.ContinueOnError)
	algo := fs.String("algorithm", "rsa", "rsa (2048 bits, verified everywhere) or ed25519 (RFC 8463; not every receiver verifies it yet)")
	selector := fs.String("selector", "hastore", "DKIM selector: the key is published at SELECTOR._domainkey.DOMAIN")
	replace := fs.Bool("replace", false, "replace the domain's key (publish the new record before mail signed with it arrives: use a new --selector to roll over)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New(usage)
	}
	req := &outbound.AdminRequest{Domain: pos[0]}
	switch args[0] {
	case "create":
		req.Op, req.Algorithm, req.Selector, req.Replace = "dkim create", *algo, *selector, *replace
	case "show":
		req.Op = "dkim show"
	default:
		return errors.New(usage)
	}
	rep, err := a.outboundCall(ctx, req)
	if err != nil {
		return err
	}
	k := rep.Key
	if *asJSON {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(k)
	}
	if args[0] == "create" {
		fmt.Fprintf(out, "DKIM key (%s) made for %s; outbound mail from %s is signed with it from now on.\n", k.Algorithm, k.Domain, k.Domain)
	}
	fmt.Fprintf(out, "Publish this TXT record (name %s):\n\n%s\n\nvalue: %s\n", k.Name, k.Zone, k.Record)
	return nil
}
