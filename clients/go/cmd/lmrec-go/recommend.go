package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/lmrec/lmrec/clients/go/lmrecv1"
)

func recommendCommand() *command {
	fs := flag.NewFlagSet("recommend", flag.ContinueOnError)
	req := &lmrecv1.RecommendRequest{K: 10}
	var genres, recent stringList
	fs.StringVar(&req.UserId, "user-id", "", "user `ID` to recommend for; an unknown id is a cold user")
	fs.Func("k", "number of items `K`, 1..1000 (default 10)", int32Flag(&req.K))
	fs.StringVar(&req.Query, "query", "", "free-text request `TEXT`")
	fs.StringVar(&req.Scenario, "scenario", "", "surface `NAME` the request comes from (empty: default)")
	fs.Var(&genres, "genre", "keep only items of genre `G` (repeatable; any of them matches)")
	fs.Var(&recent, "recent", "`ITEM_ID` of an item the user saw in this session, oldest first (repeatable)")
	fs.Func("diversity", "diversity `D` of the list, 0..1 (unset: the scenario's default)", func(s string) error {
		v, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return fmt.Errorf("not a number: %q", s)
		}
		req.Diversity = proto.Float32(float32(v))
		return nil
	})
	return &command{
		flags:    fs,
		synopsis: "recommend [flags] -user-id ID [-k K] [-query TEXT]",
		run: func(ctx context.Context, client lmrecv1.GatewayServiceClient, out io.Writer) error {
			req.RecentItemIds = recent
			if len(genres) > 0 {
				req.Filters = []*lmrecv1.AttributeFilter{{Key: "genre", Values: genres}}
			}
			return recommend(ctx, client, req, out)
		},
	}
}

// recommend sends one request, prints the answer and checks it.
func recommend(ctx context.Context, client lmrecv1.GatewayServiceClient, req *lmrecv1.RecommendRequest,
	out io.Writer) error {
	started := time.Now()
	resp, err := client.Recommend(ctx, req)
	if err != nil {
		return rpcError("Recommend", err)
	}
	printAnswer(out, req.UserId, resp, time.Since(started))
	if problems := answerProblems(req, resp); len(problems) > 0 {
		return fmt.Errorf("answer failed %d check(s):\n  - %s", len(problems), strings.Join(problems, "\n  - "))
	}
	fmt.Fprintln(out, "OK: answer passed all checks")
	return nil
}

// printAnswer prints a summary line, then each item (rank, id, score, title) with its reasons below it.
func printAnswer(out io.Writer, userID string, resp *lmrecv1.RecommendResponse, elapsed time.Duration) {
	degraded := ""
	if resp.Degraded {
		degraded = fmt.Sprintf(" DEGRADED (%s)", orUnknown(resp.DegradedReason))
	}
	fmt.Fprintf(out, "user %s: %d items in %.1f ms, model %s, source %s, scenario %s, policy %s%s\n",
		userID, len(resp.Items), float64(elapsed.Microseconds())/1000, orUnknown(resp.ModelVersion),
		orUnknown(resp.Source), orUnknown(resp.Scenario), orUnknown(resp.Policy), degraded)
	for i, item := range resp.Items {
		fmt.Fprintf(out, "%3d. %-8s %9.4f  %s\n", i+1, item.ItemId, item.Score, item.Title)
		for _, reason := range item.Reasons {
			fmt.Fprintf(out, "%15s- %s\n", "", reason.Text)
		}
	}
	if len(resp.Refinements) > 0 {
		texts := make([]string, len(resp.Refinements))
		for i, r := range resp.Refinements {
			texts[i] = r.Text
		}
		fmt.Fprintf(out, "     refine: %s\n", strings.Join(texts, " | "))
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}
