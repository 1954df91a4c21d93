// Command gitops-verdict tells what GitOps tools say about Kubernetes objects, by running their own
// status code on them: kstatus (sigs.k8s.io/cli-utils, the library behind Flux's health checks, kpt
// and `kubectl wait`-style tooling) and the Argo CD health checks written in docs/install.md, in
// gopher-lua with the environment Argo CD gives them.
//
//	gitops-verdict -install-md docs/install.md < objects.json
//
// stdin holds a JSON list of objects, or {"kind": K, "objects": [...]}, or a Kubernetes List
// ({"items": [...]}, as `kubectl get -o json` prints). K (an argocd-cm key such as
// "xmrescrow.dev/Escrow", or just "Escrow") picks the health check for objects without their own
// apiVersion and kind. For each object, in order, one JSON line is printed (Argo CD says
// Progressing, "Pending deletion", of an object being deleted without running its health check; so
// does this command):
//
//	{"kstatus": "InProgress", "kstatusMessage": "...", "argo": "Progressing", "argoMessage": "..."}
//
// An unreadable document, an object kstatus cannot read, a missing health check, or a bad script
// (one that does not compile, raises an error, runs over its time or returns something other than a
// health table) ends the command with a non-zero status and a message on stderr.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// Verdict is one output line.
type Verdict struct {
	KStatus        string `json:"kstatus"`
	KStatusMessage string `json:"kstatusMessage"`
	Argo           string `json:"argo"`
	ArgoMessage    string `json:"argoMessage"`
}

// healthKeyPrefix is how argocd-cm names a health check: resource.customizations.health.<group>_<Kind>.
const healthKeyPrefix = "resource.customizations.health."

// Argo CD's health codes; any other status a script returns becomes Unknown with this message.
var argoStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

const argoInvalidStatus = "Lua returned an invalid health status"

// argoHookFinalizer marks Argo CD's hook objects, whose health is still checked while they are deleted.
const argoHookFinalizer = "argocd.argoproj.io/hook-finalizer"

// argoTimeout is the time Argo CD gives one script run.
const argoTimeout = time.Second

func main() {
	installMD := flag.String("install-md", "docs/install.md", "the markdown file holding the argocd-cm health checks")
	flag.Parse()
	if flag.NArg() != 0 {
		fail("unexpected arguments %q (objects are read from stdin)", flag.Args())
	}
	text, err := os.ReadFile(*installMD)
	if err != nil {
		fail("%v", err)
	}
	scripts, err := healthScripts(text)
	if err != nil {
		fail("%s: %v", *installMD, err)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	defaultKind, objects, err := readObjects(input)
	if err != nil {
		fail("stdin: %v", err)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for i, obj := range objects {
		v, err := judge(obj, defaultKind, scripts, *installMD)
		if err != nil {
			out.Flush()
			fail("object %d%s: %v", i, describe(obj), err)
		}
		if err := enc.Encode(v); err != nil {
			fail("writing: %v", err)
		}
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "gitops-verdict: "+format+"\n", args...)
	os.Exit(1)
}

func describe(obj map[string]any) string {
	u := unstructured.Unstructured{Object: obj}
	name := u.GetName()
	if u.GetNamespace() != "" {
		name = u.GetNamespace() + "/" + name
	}
	if what := strings.TrimSpace(u.GetKind() + " " + name); what != "" {
		return " (" + what + ")"
	}
	return ""
}

// --- input --------------------------------------------------------------------------------------

// readObjects decodes the document on stdin. Numbers are decoded as the API machinery decodes them
// (integers as int64), so kstatus and the Lua conversion see what they see in Flux and Argo CD.
func readObjects(data []byte) (defaultKind string, objects []map[string]any, err error) {
	data = bytes.TrimSpace(data)
	var raw []json.RawMessage
	if len(data) > 0 && data[0] == '[' {
		if err := json.Unmarshal(data, &raw); err != nil {
			return "", nil, err
		}
	} else {
		var doc struct {
			Kind    string            `json:"kind"`
			Objects []json.RawMessage `json:"objects"`
			Items   []json.RawMessage `json:"items"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return "", nil, fmt.Errorf("want a JSON list of objects or {\"kind\": ..., \"objects\": [...]}: %w", err)
		}
		switch {
		case doc.Objects != nil && doc.Items != nil:
			return "", nil, errors.New(`both "objects" and "items" given`)
		case doc.Objects == nil && doc.Items == nil:
			return "", nil, errors.New(`want a JSON list of objects, or an object with "objects" (or "items") holding them`)
		}
		raw = append(doc.Objects, doc.Items...)
		if doc.Items == nil {
			defaultKind = doc.Kind // a List's kind ("List", "EscrowList") names no health check
		}
	}
	for i, r := range raw {
		var obj map[string]any
		if err := utiljson.Unmarshal(r, &obj); err != nil {
			return "", nil, fmt.Errorf("object %d: %w", i, err)
		}
		if obj == nil {
			return "", nil, fmt.Errorf("object %d is not a JSON object", i)
		}
		objects = append(objects, obj)
	}
	return defaultKind, objects, nil
}

// --- the health checks in the markdown ----------------------------------------------------------

var fence = regexp.MustCompile("^( *)(```+|~~~+)\\s*([A-Za-z0-9_-]*)")

// healthScripts finds the argocd-cm health checks in the markdown: every fenced yaml block is parsed
// as YAML, and each `data` key resource.customizations.health.<group>_<Kind> (the form argocd-cm
// takes) yields the script for "<group>/<Kind>", exactly as Argo CD would read it from the ConfigMap.
func healthScripts(markdown []byte) (map[string]string, error) {
	scripts := map[string]string{}
	for _, block := range fencedBlocks(string(markdown), "yaml") {
		if !strings.Contains(block, healthKeyPrefix) {
			continue
		}
		var doc struct {
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(block), &doc); err != nil {
			return nil, fmt.Errorf("a yaml block with %s... does not parse: %w", healthKeyPrefix, err)
		}
		for key, script := range doc.Data {
			rest, ok := strings.CutPrefix(key, healthKeyPrefix)
			if !ok {
				continue
			}
			group, kind, ok := strings.Cut(rest, "_")
			if !ok || kind == "" {
				return nil, fmt.Errorf("%s: want %s<group>_<Kind>", key, healthKeyPrefix)
			}
			gk := group + "/" + kind
			if _, dup := scripts[gk]; dup {
				return nil, fmt.Errorf("two health checks for %s", gk)
			}
			scripts[gk] = script
		}
	}
	if len(scripts) == 0 {
		return nil, fmt.Errorf("no argocd-cm health check (a yaml block with data: %s<group>_<Kind>: |)", healthKeyPrefix)
	}
	return scripts, nil
}

// fencedBlocks returns the bodies of the fenced code blocks of the given language, with the fence's
// indentation removed (a block inside a list item is indented).
func fencedBlocks(markdown, language string) []string {
	var blocks []string
	var body []string
	var open, indent string
	inBlock, wanted := false, false
	for _, line := range strings.Split(markdown, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if !inBlock {
			if m := fence.FindStringSubmatch(line); m != nil {
				inBlock, indent, open, wanted, body = true, m[1], m[2], m[3] == language, nil
			}
			continue
		}
		trimmed := strings.TrimLeft(line, " ")
		if strings.HasPrefix(trimmed, open) && strings.TrimSpace(strings.TrimLeft(trimmed, open[:1])) == "" {
			if wanted {
				blocks = append(blocks, strings.Join(body, "\n")+"\n")
			}
			inBlock = false
			continue
		}
		body = append(body, strings.TrimPrefix(line, indent))
	}
	return blocks
}

// scriptFor picks the health check of an object: by its own apiVersion and kind, else by the
// document's kind (a full "<group>/<Kind>" key, or a Kind that only one health check has).
func scriptFor(u *unstructured.Unstructured, defaultKind string, scripts map[string]string) (string, string, error) {
	if u.GetKind() != "" {
		gk := u.GroupVersionKind().Group + "/" + u.GetKind()
		if s, ok := scripts[gk]; ok {
			return gk, s, nil
		}
		return "", "", fmt.Errorf("no health check for %s (have %s)", gk, keys(scripts))
	}
	if defaultKind == "" {
		return "", "", fmt.Errorf("the object has no kind and the document names none (have %s)", keys(scripts))
	}
	if s, ok := scripts[defaultKind]; ok {
		return defaultKind, s, nil
	}
	var found []string
	for gk := range scripts {
		if strings.HasSuffix(gk, "/"+defaultKind) {
			found = append(found, gk)
		}
	}
	if len(found) != 1 {
		return "", "", fmt.Errorf("kind %q matches %d health checks (have %s)", defaultKind, len(found), keys(scripts))
	}
	return found[0], scripts[found[0]], nil
}

func keys(m map[string]string) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

// --- the verdicts -------------------------------------------------------------------------------

func judge(obj map[string]any, defaultKind string, scripts map[string]string, installMD string) (Verdict, error) {
	u := &unstructured.Unstructured{Object: obj}
	res, err := status.Compute(u)
	if err != nil {
		return Verdict{}, fmt.Errorf("kstatus: %w", err)
	}
	gk, script, err := scriptFor(u, defaultKind, scripts)
	if err != nil {
		return Verdict{}, fmt.Errorf("argo: %w", err)
	}
	if u.GetDeletionTimestamp() != nil && !slices.Contains(u.GetFinalizers(), argoHookFinalizer) {
		// Argo CD decides this before any health check runs.
		return Verdict{KStatus: res.Status.String(), KStatusMessage: res.Message, Argo: "Progressing", ArgoMessage: "Pending deletion"}, nil
	}
	health, message, err := argoHealth(obj, script)
	if err != nil {
		return Verdict{}, fmt.Errorf("argo: the health check of %s in %s: %w", gk, installMD, err)
	}
	return Verdict{KStatus: res.Status.String(), KStatusMessage: res.Message, Argo: health, ArgoMessage: message}, nil
}

// argoHealth runs a health check the way Argo CD does by default (useOpenLibs off): a fresh state
// with only the package, base and table libraries and a restricted os module (time and date) that
// scripts get through require("os"); the object as the global table `obj`; one second to run. The
// returned table's status and message are the verdict; a status that is not one of Argo CD's health
// codes reads Unknown, as in Argo CD.
func argoHealth(obj map[string]any, script string) (string, string, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		l.Push(l.NewFunction(lib.open))
		l.Push(lua.LString(lib.name))
		if err := l.PCall(1, 0, nil); err != nil {
			return "", "", fmt.Errorf("opening the %q library: %w", lib.name, err)
		}
	}
	restrictOs(l)

	ctx, cancel := context.WithTimeout(context.Background(), argoTimeout)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))

	fn, err := l.LoadString(script)
	if err != nil {
		return "", "", fmt.Errorf("does not compile: %w", err)
	}
	l.Push(fn)
	if err := l.PCall(0, lua.MultRet, nil); err != nil {
		return "", "", fmt.Errorf("fails: %w", err)
	}
	ret := l.Get(-1)
	table, ok := ret.(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("returned %s, not a table with status and message", ret.Type())
	}
	health, err := stringField(table, "status")
	if err != nil {
		return "", "", err
	}
	message, err := stringField(table, "message")
	if err != nil {
		return "", "", err
	}
	if health == "" && message == "" {
		return "", "", errors.New("returned a table without status or message")
	}
	if !argoStatuses[health] {
		return "Unknown", argoInvalidStatus, nil
	}
	return health, message, nil
}

func stringField(t *lua.LTable, name string) (string, error) {
	switch v := t.RawGetString(name).(type) {
	case *lua.LNilType:
		return "", nil
	case lua.LString:
		return string(v), nil
	default:
		return "", fmt.Errorf("returned a %s as %s, not a string", v.Type(), name)
	}
}

// restrictOs makes require("os") return a module with only os.time and os.date (gopher-lua's own),
// and leaves no global os, as Argo CD's restricted os library does.
func restrictOs(l *lua.LState) {
	l.Push(l.NewFunction(lua.OpenOs))
	l.Push(lua.LString(lua.OsLibName))
	l.Call(1, 1)
	full, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		panic("gopher-lua's OpenOs returned no table")
	}
	l.Pop(1)
	safe := map[string]lua.LValue{"time": full.RawGetString("time"), "date": full.RawGetString("date")}
	l.SetGlobal(lua.OsLibName, lua.LNil)
	if loaded, ok := l.GetField(l.Get(lua.RegistryIndex), "_LOADED").(*lua.LTable); ok {
		loaded.RawSetString(lua.OsLibName, lua.LNil)
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int {
		mod := l.NewTable()
		for name, fn := range safe {
			mod.RawSetString(name, fn)
		}
		l.Push(mod)
		return 1
	})
}

// toLua converts a decoded object into Lua values the way Argo CD hands objects to scripts: maps
// become tables keyed by string, lists become sequences, numbers become Lua numbers.
func toLua(l *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case json.Number:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case int32:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for key, item := range v {
			t.RawSetH(lua.LString(key), toLua(l, item))
		}
		return t
	default:
		return lua.LNil
	}
}
