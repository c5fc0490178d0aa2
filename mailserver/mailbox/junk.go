package mailbox

import (
	"context"
	"errors"
	"strings"
)

// JunkSpecialUse is the special use (RFC 6154) of the mailbox spam is
// filed into.
const JunkSpecialUse = `\Junk`

// JunkMailbox returns the name of user's mailbox for spam: the one with
// the \Junk special use (the user may have renamed it), else "Junk",
// created with that special use if missing. A "Junk" the user made
// without the special use is used as it is rather than failing.
func (s *Store) JunkMailbox(ctx context.Context, user string) (string, error) {
	if name, ok, err := s.findJunk(user); err != nil || ok {
		return name, err
	}
	mb, err := s.CreateMailbox(ctx, user, "Junk", JunkSpecialUse)
	if err == nil {
		return mb.Name, nil
	}
	if !errors.Is(err, ErrExists) {
		return "", err
	}
	// Made meanwhile (another delivery, or this node's view lagged).
	if err := s.catchUp(ctx); err != nil {
		return "", err
	}
	if name, ok, err := s.findJunk(user); err != nil || ok {
		return name, err
	}
	return "Junk", nil
}

func (s *Store) findJunk(user string) (string, bool, error) {
	boxes, err := s.view.Mailboxes(user)
	if err != nil {
		return "", false, err
	}
	for _, mb := range boxes {
		for _, u := range strings.Fields(mb.SpecialUse) {
			if strings.EqualFold(u, JunkSpecialUse) {
				return mb.Name, true, nil
			}
		}
	}
	return "", false, nil
}
