package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/lmrec/lmrec/clients/go/lmrecv1"
)

func feedbackCommand() *command {
	fs := flag.NewFlagSet("feedback", flag.ContinueOnError)
	event := &lmrecv1.FeedbackEvent{}
	fs.StringVar(&event.UserId, "user-id", "", "user `ID` who interacted")
	fs.StringVar(&event.ItemId, "item-id", "", "`ID` of the item interacted with")
	eventType := fs.String("type", "", "event `TYPE`: view, click, rating, purchase or dismiss")
	fs.Func("value", "rating or other magnitude `V` (default 0)", func(s string) error {
		v, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return fmt.Errorf("not a number: %q", s)
		}
		event.Value = float32(v)
		return nil
	})
	fs.StringVar(&event.Scenario, "scenario", "", "surface the event happened on")
	fs.StringVar(&event.RequestId, "request-id", "", "the Recommend answer in which the user saw the item")
	fs.StringVar(&event.SessionId, "session-id", "", "the conversation in which the user saw the item")
	cmd := &command{flags: fs, synopsis: "feedback [flags] -user-id ID -item-id ID -type TYPE"}
	cmd.check = func() error {
		t, err := parseEventType(*eventType)
		event.EventType = t
		return err
	}
	cmd.run = func(ctx context.Context, client lmrecv1.GatewayServiceClient, out io.Writer) error {
		return recordFeedback(ctx, client, event, out)
	}
	return cmd
}

// parseEventType maps "click" (any case) to EVENT_TYPE_CLICK.
func parseEventType(name string) (lmrecv1.EventType, error) {
	value, ok := lmrecv1.EventType_value["EVENT_TYPE_"+strings.ToUpper(name)]
	if !ok || value == int32(lmrecv1.EventType_EVENT_TYPE_UNSPECIFIED) {
		return 0, fmt.Errorf("-type must be view, click, rating, purchase or dismiss, got %q", name)
	}
	return lmrecv1.EventType(value), nil
}

// recordFeedback stores one event (its time: now) and checks that the gateway accepted it.
func recordFeedback(ctx context.Context, client lmrecv1.GatewayServiceClient, event *lmrecv1.FeedbackEvent,
	out io.Writer) error {
	resp, err := client.RecordFeedback(ctx, &lmrecv1.RecordFeedbackRequest{Events: []*lmrecv1.FeedbackEvent{event}})
	if err != nil {
		return rpcError("RecordFeedback", err)
	}
	fmt.Fprintf(out, "recorded %d event: user %s %s item %s\n", resp.AcceptedCount, event.UserId,
		strings.ToLower(strings.TrimPrefix(event.EventType.String(), "EVENT_TYPE_")), event.ItemId)
	if resp.AcceptedCount != 1 {
		return fmt.Errorf("sent 1 event, the gateway accepted %d", resp.AcceptedCount)
	}
	return nil
}
