package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/lmrec/lmrec/clients/go/lmrecv1"
)

// answerProblems returns what is wrong with the answer to a Recommend request; none for a valid answer.
// An answer holds k items, except that a degraded one (from a fallback) may hold fewer but not none, and
// a filtered one may hold fewer (the filters may leave fewer candidates). Scores must not increase down
// the list of a greedy answer without diversity (exploration and diversity reorder items).
func answerProblems(req *lmrecv1.RecommendRequest, resp *lmrecv1.RecommendResponse) []string {
	var problems []string
	k, n := int(req.K), len(resp.Items)
	switch {
	case n > k:
		problems = append(problems, fmt.Sprintf("expected at most %d items, got %d", k, n))
	case resp.Degraded && n < 1:
		problems = append(problems, "degraded answer has no items")
	case !resp.Degraded && len(req.Filters) == 0 && n != k:
		problems = append(problems, fmt.Sprintf("expected exactly %d items, got %d", k, n))
	}
	rankedByScore := resp.Policy == "greedy" && req.GetDiversity() == 0
	seen := make(map[string]bool, n)
	for i, item := range resp.Items {
		where := fmt.Sprintf("item %d (%s)", i, item.ItemId)
		if item.ItemId == "" {
			problems = append(problems, fmt.Sprintf("item %d: empty item_id", i))
		} else if seen[item.ItemId] {
			problems = append(problems, fmt.Sprintf("item %d: duplicate item_id %s", i, item.ItemId))
		}
		seen[item.ItemId] = true
		if strings.TrimSpace(item.Title) == "" {
			problems = append(problems, where+": empty title")
		}
		if score := float64(item.Score); math.IsNaN(score) || math.IsInf(score, 0) {
			problems = append(problems, fmt.Sprintf("%s: score %v is not finite", where, item.Score))
		}
		if len(item.Reasons) == 0 {
			problems = append(problems, where+": no reason given")
		}
		for j, reason := range item.Reasons {
			if reason.Text == "" {
				problems = append(problems, fmt.Sprintf("%s: reason %d has no text", where, j))
			}
		}
		if rankedByScore && i > 0 && item.Score > resp.Items[i-1].Score {
			problems = append(problems, fmt.Sprintf("%s: score %v is above the previous %v",
				where, item.Score, resp.Items[i-1].Score))
		}
	}
	if resp.ModelVersion == "" {
		problems = append(problems, "model_version is empty")
	}
	return problems
}
