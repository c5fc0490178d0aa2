package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/BurntSushi/toml"
)

// applyConfig sets, from the TOML file at path, every flag of fs the
// command line left alone, and returns the file's keys the command line
// overrides. The keys are the flag names themselves (read from fs, so no
// flag is left out): `log-level = "debug"`, or grouped in tables, where
// `[raft] heartbeat = "1s"` is the flag raft-heartbeat. Any other key is
// an error naming it and the file.
func applyConfig(fs *flag.FlagSet, path string) (overridden []string, err error) {
	vals, err := readConfig(fs, path)
	if err != nil {
		return nil, err
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	for _, name := range sortedKeys(vals) {
		if onCommandLine[name] {
			overridden = append(overridden, name)
			continue
		}
		if err := fs.Set(name, vals[name].value); err != nil {
			return nil, fmt.Errorf("config file %s: key %s = %s: %v", path, vals[name].key, vals[name].value, err)
		}
	}
	return overridden, nil
}

// configValue is one setting of a config file: the flag it sets, written
// as the command line would take it, and the key as the file spells it.
type configValue struct {
	key   string // "raft.heartbeat"
	value string
}

// readConfig parses the file into flag name → value, checking every key
// against fs's flags.
func readConfig(fs *flag.FlagSet, path string) (map[string]configValue, error) {
	var doc map[string]any
	if _, err := toml.DecodeFile(path, &doc); err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("config file %s: %s", path, strings.TrimSpace(perr.ErrorWithPosition()))
		}
		return nil, fmt.Errorf("config file: %w", err)
	}
	out := map[string]configValue{}
	if err := flatten(fs, path, "", "", doc, out); err != nil {
		return nil, err
	}
	return out, nil
}

// flatten walks a table: a key names flag prefix+key; a nested table's
// keys get its name and "-" as prefix.
func flatten(fs *flag.FlagSet, path, prefix, keyPrefix string, table map[string]any, out map[string]configValue) error {
	for _, k := range sortedKeys(table) {
		name, key := prefix+k, keyPrefix+k
		if name == "config" {
			return fmt.Errorf("config file %s: key %q: a config file cannot name another one", path, key)
		}
		v := table[k]
		if sub, ok := v.(map[string]any); ok {
			if fs.Lookup(name) != nil {
				return fmt.Errorf("config file %s: key %q is a setting, not a table: write %s = value", path, key, key)
			}
			if err := flatten(fs, path, name+"-", key+".", sub, out); err != nil {
				return err
			}
			continue
		}
		if fs.Lookup(name) == nil {
			return fmt.Errorf("config file %s: unknown key %q: not a flag of 'hastore serve' ('hastore serve -h' lists them; a key is a flag's name without --, or its last part in a table named by the rest)", path, key)
		}
		s, err := configString(v)
		if err != nil {
			return fmt.Errorf("config file %s: key %q: %v", path, key, err)
		}
		if _, dup := out[name]; dup {
			return fmt.Errorf("config file %s: key %q sets --%s, which another key of the file sets too", path, key, name)
		}
		out[name] = configValue{key: key, value: s}
	}
	return nil
}

// configString writes a TOML value as the flag takes it on the command
// line; an array is a comma-separated list (peers = ["n1=…", "n2=…"]).
func configString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case []any:
		parts := make([]string, 0, len(x))
		for _, e := range x {
			if _, ok := e.([]any); ok {
				return "", errors.New("an array of arrays: want a string, number, boolean or array of them")
			}
			if _, ok := e.(map[string]any); ok {
				return "", errors.New("an array of tables: want a string, number, boolean or array of them")
			}
			s, err := configString(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("a %T: want a string (durations too, \"30s\"), number, boolean or array of them", v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// flagValues is every flag's value in effect, as text.
func flagValues(fs *flag.FlagSet) map[string]string {
	vals := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { vals[f.Name] = f.Value.String() })
	return vals
}

// liveKeys are the settings a SIGHUP applies to a running node (the
// connection caps join them in livelimits.go); a change to any other
// needs a restart. (The certificate files named by the TLS
// settings are re-read on SIGHUP anyway; a new file name needs a restart.)
// Each checks a value and returns what applies it.
var liveKeys = map[string]func(value string) (apply func(), err error){
	"log-level": func(v string) (func(), error) {
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(v)); err != nil {
			return nil, fmt.Errorf("%q: want debug, info, warn or error", v)
		}
		return func() { logLevel.Set(lvl) }, nil
	},
}

// liveConfig re-reads serve's settings on SIGHUP.
type liveConfig struct {
	args []string // serve's command line, which still overrides the file
	path string

	mu      sync.Mutex
	applied map[string]string // the value in effect of every flag
}

// reload reads the command line and the file again, applies the changes
// that can be made live, and names those that wait for a restart. A file
// that does not parse changes nothing.
func (c *liveConfig) reload(log *slog.Logger) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o, err := parseServe(c.args)
	if err != nil {
		log.Error("SIGHUP: config file not applied; every setting in effect stays", "config", c.path, "err", err)
		return
	}
	now := flagValues(o.fs)
	var applied, restart []string
	for _, name := range sortedKeys(now) {
		old, v := c.applied[name], now[name]
		if old == v {
			continue
		}
		set, ok := liveKeys[name]
		if !ok {
			restart = append(restart, name)
			continue
		}
		apply, err := set(v)
		if err != nil {
			log.Error("SIGHUP: config setting not applied", "config", c.path, "key", name, "err", err)
			continue
		}
		// Said once, at the level in effect before or after the change,
		// whichever shows it (info to warn shows it before, warn to
		// debug after).
		said := log.Enabled(context.Background(), slog.LevelInfo)
		if said {
			log.Info("SIGHUP: config setting applied", "config", c.path, "key", name, "from", old, "to", v)
		}
		apply()
		if !said {
			log.Info("SIGHUP: config setting applied", "config", c.path, "key", name, "from", old, "to", v)
		}
		c.applied[name] = v
		applied = append(applied, name)
	}
	if len(o.overridden) > 0 {
		log.Info("SIGHUP: config file keys overridden by the command line", "config", c.path, "keys", strings.Join(o.overridden, ","))
	}
	if len(restart) > 0 {
		log.Warn("SIGHUP: config file changes that take effect only after a restart", "config", c.path, "keys", strings.Join(restart, ","))
	}
	if len(applied) == 0 && len(restart) == 0 {
		log.Info("SIGHUP: config file re-read, nothing changed", "config", c.path)
	}
}
