// Command rulecheck checks Prometheus rule files the way `promtool check rules` does, with the same parser
// (model/rulefmt, which validates every PromQL expression, label and annotation template), and reports the
// metric names that PromQL expressions select, so dashboards and alerts can be checked against the metrics
// the processor exports. Building all of promtool through the Go module proxy takes minutes and pulls in
// every service-discovery SDK; this needs only the rule and PromQL packages.
//
//	rulecheck rules FILE...   exit 1 if any file is invalid or holds duplicate rules
//	rulecheck exprs < exprs.json   JSON list of expressions in, JSON {"metrics": [...]} out; exit 1 on a bad one
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: rulecheck rules FILE... | rulecheck exprs < exprs.json")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "rules":
		os.Exit(checkRules(os.Args[2:]))
	case "exprs":
		os.Exit(checkExprs(os.Stdin))
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func checkRules(files []string) int {
	status := 0
	for _, file := range files {
		groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation)
		if len(errs) > 0 {
			status = 1
			fmt.Printf("FAILED: %s\n", file)
			for _, err := range errs {
				fmt.Printf("  %s\n", err)
			}
			continue
		}
		rules, dups := 0, 0
		for _, group := range groups.Groups {
			seen := map[string]bool{}
			for _, rule := range group.Rules {
				rules++
				// the same alert or record with the same expression and labels twice is a copy-paste slip
				labels, _ := json.Marshal(rule.Labels)
				key := rule.Alert + "\x00" + rule.Record + "\x00" + rule.Expr + "\x00" + string(labels)
				if seen[key] {
					dups++
					fmt.Printf("  duplicate rule in group %q: %s%s\n", group.Name, rule.Alert, rule.Record)
				}
				seen[key] = true
			}
		}
		if dups > 0 || rules == 0 {
			status = 1
			fmt.Printf("FAILED: %s: %d rules, %d duplicates\n", file, rules, dups)
			continue
		}
		fmt.Printf("SUCCESS: %s: %d rules found\n", file, rules)
	}
	return status
}

func checkExprs(in io.Reader) int {
	var exprs []string
	if err := json.NewDecoder(in).Decode(&exprs); err != nil {
		fmt.Fprintf(os.Stderr, "reading expressions: %s\n", err)
		return 2
	}
	status := 0
	metrics := map[string]bool{}
	for _, text := range exprs {
		expr, err := parser.ParseExpr(text)
		if err != nil {
			status = 1
			fmt.Fprintf(os.Stderr, "invalid PromQL %q: %s\n", text, err)
			continue
		}
		parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
			if selector, ok := node.(*parser.VectorSelector); ok && selector.Name != "" {
				metrics[selector.Name] = true
			}
			return nil
		})
	}
	names := make([]string, 0, len(metrics))
	for name := range metrics {
		names = append(names, name)
	}
	sort.Strings(names)
	out, _ := json.Marshal(map[string][]string{"metrics": names})
	fmt.Println(string(out))
	return status
}
