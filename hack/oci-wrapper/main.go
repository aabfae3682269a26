// qscale-runc is a tiny OCI runtime shim in front of runc.
//
// This VM's capability bounding set lacks some capabilities (CAP_SYS_RESOURCE),
// so runc fails to start a --privileged container ("unable to apply caps")
// because the spec asks for every capability. Before handing over to runc we
// drop, from every capability set of the spec, each capability that our own
// bounding set does not hold. Everything else is passed through untouched.
//
// Spec files touched: <bundle>/config.json on create/run, the --process JSON
// on exec. The real runc is $QSCALE_REAL_RUNC, else the first of the usual
// paths that exists.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Linux capability numbers (include/uapi/linux/capability.h).
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// missingCaps returns the names of known capabilities absent from our
// bounding set. Always includes CAP_SYS_RESOURCE when forced by env.
func missingCaps() map[string]bool {
	missing := map[string]bool{}
	if os.Getenv("QSCALE_DROP_SYS_RESOURCE") == "1" {
		missing["CAP_SYS_RESOURCE"] = true
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return missing
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "CapBnd:") {
			continue
		}
		v, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(line, "CapBnd:")), 16, 64)
		if err != nil {
			return missing
		}
		for i, name := range capNames {
			if v&(uint64(1)<<uint(i)) == 0 {
				missing[name] = true
			}
		}
	}
	return missing
}

// filterCaps removes missing capabilities from a "capabilities" object.
func filterCaps(caps map[string]interface{}, missing map[string]bool) bool {
	changed := false
	for _, set := range []string{"bounding", "effective", "inheritable", "permitted", "ambient"} {
		list, ok := caps[set].([]interface{})
		if !ok {
			continue
		}
		kept := make([]interface{}, 0, len(list))
		for _, c := range list {
			if s, ok := c.(string); ok && missing[s] {
				changed = true
				continue
			}
			kept = append(kept, c)
		}
		caps[set] = kept
	}
	return changed
}

// rewrite loads a JSON file, applies fn to the object, writes it back in place.
func rewrite(path string, fn func(map[string]interface{}) bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep big integers (uids, rlimits) exact
	var obj map[string]interface{}
	if err := dec.Decode(&obj); err != nil {
		return err
	}
	if !fn(obj) {
		return nil
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	tmp := path + ".qscale-tmp"
	if err := os.WriteFile(tmp, out, st.Mode().Perm()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// globalWithValue lists runc's global flags that take a separate value.
var globalWithValue = map[string]bool{
	"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true,
}

// flagValue finds the value of a flag given as "--f v", "--f=v", "-f v".
func flagValue(args []string, names ...string) (string, bool) {
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1], true
			}
			if strings.HasPrefix(a, n+"=") {
				return strings.TrimPrefix(a, n+"="), true
			}
		}
	}
	return "", false
}

func realRunc() string {
	if p := os.Getenv("QSCALE_REAL_RUNC"); p != "" {
		return p
	}
	self, _ := os.Executable()
	for _, p := range []string{"/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc", "/sbin/runc"} {
		if rp, err := filepath.EvalSymlinks(p); err == nil && rp != self {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	return "runc"
}

func main() {
	args := os.Args[1:]
	// find the subcommand: first non-flag argument after global flags
	sub, subIdx := "", -1
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if globalWithValue[a] {
				i++
			}
			continue
		}
		sub, subIdx = a, i
		break
	}
	missing := missingCaps()
	if len(missing) > 0 && subIdx >= 0 {
		rest := args[subIdx+1:]
		var err error
		switch sub {
		case "create", "run":
			bundle, ok := flagValue(rest, "--bundle", "-b")
			if !ok {
				bundle, _ = os.Getwd()
			}
			err = rewrite(filepath.Join(bundle, "config.json"), func(o map[string]interface{}) bool {
				p, ok := o["process"].(map[string]interface{})
				if !ok {
					return false
				}
				c, ok := p["capabilities"].(map[string]interface{})
				return ok && filterCaps(c, missing)
			})
		case "exec":
			if pf, ok := flagValue(rest, "--process", "-p"); ok {
				err = rewrite(pf, func(o map[string]interface{}) bool {
					c, ok := o["capabilities"].(map[string]interface{})
					return ok && filterCaps(c, missing)
				})
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "qscale-runc: cannot adjust spec: %v\n", err)
		}
	}
	bin := realRunc()
	path := bin
	if !strings.Contains(bin, "/") {
		for _, d := range filepath.SplitList(os.Getenv("PATH")) {
			if _, err := os.Stat(filepath.Join(d, bin)); err == nil {
				path = filepath.Join(d, bin)
				break
			}
		}
	}
	if err := syscall.Exec(path, append([]string{bin}, args...), os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "qscale-runc: exec %s: %v\n", path, err)
		os.Exit(127)
	}
}
