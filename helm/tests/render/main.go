// Renders the chart the way `helm template` does for the functions this chart uses (Go
// text/template + sprig, plus Helm's include, toYaml, required), so the chart can be tested on
// machines without a helm binary. Prints JSON: {"values": merged values, "manifests": [{"template",
// "object"}]}.
//
//	go run main.go CHART_DIR [VALUES_FILE ...]   (GO111MODULE=off GOPATH=/usr/share/gocode)
//	go run main.go --yaml-json FILE              (a YAML file as JSON)
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func readYAML(path string) map[string]interface{} {
	raw, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(raw, &out); err != nil {
		fail("%s: %v", path, err)
	}
	return out
}

// merge overlays b onto a, recursively for maps (Helm's values coalescing).
func merge(a, b map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]interface{}); ok {
			if am, ok := out[k].(map[string]interface{}); ok {
				out[k] = merge(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// chartFiles is the chart's .Files: Get reads a file of the chart ("" when absent), as Helm's does.
type chartFiles struct{ dir string }

func (f chartFiles) Get(name string) string {
	raw, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil {
		return ""
	}
	return string(raw)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: render CHART_DIR [VALUES_FILE ...] | render --yaml-json FILE")
	}
	if os.Args[1] == "--yaml-json" && len(os.Args) == 3 {
		// Any YAML file as JSON (tests of the compose file and other YAML the repo ships).
		out, err := json.Marshal(readYAML(os.Args[2]))
		if err != nil {
			fail("%v", err)
		}
		os.Stdout.Write(out)
		return
	}
	chartDir := os.Args[1]
	chart := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	values := readYAML(filepath.Join(chartDir, "values.yaml"))
	for _, extra := range os.Args[2:] {
		values = merge(values, readYAML(extra))
	}
	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = func(v interface{}) string {
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return ""
		}
		return strings.TrimSuffix(buf.String(), "\n")
	}
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["required"] = func(message string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", message)
		}
		return v, nil
	}
	root.Funcs(funcs).Option("missingkey=zero")
	files, _ := filepath.Glob(filepath.Join(chartDir, "templates", "*"))
	sort.Strings(files)
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			fail("%v", err)
		}
		if _, err := root.New(filepath.Base(file)).Parse(string(raw)); err != nil {
			fail("%s: %v", file, err)
		}
	}
	data := map[string]interface{}{
		"Files":   chartFiles{dir: chartDir},
		"Values":  values,
		"Chart":   map[string]interface{}{"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
		"Release": map[string]interface{}{"Name": "rollout", "Namespace": "default", "Service": "Helm"},
	}
	manifests := []map[string]interface{}{}
	for _, file := range files {
		name := filepath.Base(file)
		if strings.HasPrefix(name, "_") || !strings.HasSuffix(name, ".yaml") {
			continue
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			fail("%s: %v", name, err)
		}
		for _, doc := range strings.Split(buf.String(), "\n---") {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			object := map[string]interface{}{}
			if err := yaml.Unmarshal([]byte(doc), &object); err != nil {
				fail("%s renders invalid YAML: %v\n%s", name, err, doc)
			}
			if len(object) > 0 {
				manifests = append(manifests, map[string]interface{}{"template": name, "object": object})
			}
		}
	}
	out, err := json.Marshal(map[string]interface{}{"values": values, "manifests": manifests})
	if err != nil {
		fail("%v", err)
	}
	os.Stdout.Write(out)
}
