package main

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/lmrec/lmrec/clients/go/lmrecv1"
)

func item(id string, score float32, reasons ...string) *lmrecv1.RecommendedItem {
	it := &lmrecv1.RecommendedItem{ItemId: id, Title: "Title of " + id, Score: score}
	for _, text := range reasons {
		it.Reasons = append(it.Reasons, &lmrecv1.Reason{Kind: lmrecv1.ReasonKind_REASON_KIND_QUERY, Text: text})
	}
	return it
}

func TestAnswerProblems(t *testing.T) {
	valid := func() *lmrecv1.RecommendResponse {
		return &lmrecv1.RecommendResponse{ModelVersion: "v1", Policy: "greedy",
			Items: []*lmrecv1.RecommendedItem{item("a", 0.9, "matches"), item("b", 0.5, "matches")}}
	}
	request := func(k int32) *lmrecv1.RecommendRequest { return &lmrecv1.RecommendRequest{UserId: "u", K: k} }
	filtered := &lmrecv1.RecommendRequest{UserId: "u", K: 3,
		Filters: []*lmrecv1.AttributeFilter{{Key: "genre", Values: []string{"Comedy"}}}}
	diverse := &lmrecv1.RecommendRequest{UserId: "u", K: 2, Diversity: proto.Float32(0.5)}
	tests := []struct {
		name string
		req  *lmrecv1.RecommendRequest
		edit func(*lmrecv1.RecommendResponse)
		want string // a substring of the one expected problem; empty: no problem
	}{
		{"valid", request(2), func(*lmrecv1.RecommendResponse) {}, ""},
		{"too few", request(3), func(*lmrecv1.RecommendResponse) {}, "expected exactly 3 items, got 2"},
		{"too many", request(1), func(*lmrecv1.RecommendResponse) {}, "expected at most 1 items, got 2"},
		{"filtered may hold fewer", filtered, func(*lmrecv1.RecommendResponse) {}, ""},
		{"degraded may hold fewer", request(3), func(r *lmrecv1.RecommendResponse) { r.Degraded = true }, ""},
		{"degraded and empty", request(3), func(r *lmrecv1.RecommendResponse) { r.Degraded, r.Items = true, nil },
			"degraded answer has no items"},
		{"duplicate", request(2), func(r *lmrecv1.RecommendResponse) { r.Items[1].ItemId = "a" }, "duplicate item_id a"},
		{"blank title", request(2), func(r *lmrecv1.RecommendResponse) { r.Items[0].Title = " " }, "empty title"},
		{"no reason", request(2), func(r *lmrecv1.RecommendResponse) { r.Items[1].Reasons = nil }, "no reason given"},
		{"rising score", request(2), func(r *lmrecv1.RecommendResponse) { r.Items[1].Score = 2 }, "above the previous"},
		{"rising score with diversity", diverse, func(r *lmrecv1.RecommendResponse) { r.Items[1].Score = 2 }, ""},
		{"rising score when exploring", request(2), func(r *lmrecv1.RecommendResponse) {
			r.Items[1].Score, r.Policy = 2, "epsilon"
		}, ""},
		{"no model version", request(2), func(r *lmrecv1.RecommendResponse) { r.ModelVersion = "" }, "model_version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := valid()
			tt.edit(resp)
			problems := answerProblems(tt.req, resp)
			switch {
			case tt.want == "" && len(problems) > 0:
				t.Errorf("want no problem, got %q", problems)
			case tt.want != "" && (len(problems) != 1 || !strings.Contains(problems[0], tt.want)):
				t.Errorf("want one problem with %q, got %q", tt.want, problems)
			}
		})
	}
}

func TestCodeNamesAreCanonical(t *testing.T) {
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if _, ok := canonicalCodes[c]; !ok {
			t.Errorf("no canonical name for %v", c)
		}
	}
	if got := codeName(codes.Canceled); got != "CANCELLED" {
		t.Errorf("codeName(Canceled) = %s, want CANCELLED", got)
	}
}

func TestBadCommandLinesExitWithUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"nope"},
		{"recommend", "-k", "x"},
		{"recommend", "-k", "4294967296"},
		{"recommend", "-user-id", "1", "extra"},
		{"recommend", "-timeout", "0s"},
		{"feedback", "-user-id", "1", "-item-id", "2", "-type", "like"},
		{"upsert"},
		{"upsert", `{"item_id": "a", "nope": 1}`},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, strings.NewReader(""), &stdout, &stderr); code != exitUsage {
			t.Errorf("run(%q) = %d, want %d; stderr:\n%s", args, code, exitUsage, stderr.String())
		}
	}
}

func TestReadItemsFromArgumentsAndJSONLines(t *testing.T) {
	stdin := strings.NewReader(`{"itemId": "b", "title": "B", "attributes": {"genre": {"values": ["Comedy"]}}}` +
		"\n\n" + `{"item_id": "c", "text": "C"}` + "\n")
	items, err := readItems([]string{`{"item_id": "a", "title": "A"}`}, "-", stdin)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, it := range items {
		ids = append(ids, it.ItemId)
	}
	if strings.Join(ids, ",") != "a,b,c" {
		t.Errorf("ids = %v, want a,b,c", ids)
	}
	if got := items[1].Attributes["genre"].GetValues(); len(got) != 1 || got[0] != "Comedy" {
		t.Errorf("genre of b = %v, want [Comedy]", got)
	}
}
