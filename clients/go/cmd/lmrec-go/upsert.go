package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/lmrec/lmrec/clients/go/lmrecv1"
)

func upsertCommand(stdin io.Reader) *command {
	fs := flag.NewFlagSet("upsert", flag.ContinueOnError)
	file := fs.String("f", "", "read items from `FILE`, one JSON object per line ('-': standard input)")
	var items []*lmrecv1.Item
	cmd := &command{flags: fs, positional: true, synopsis: `upsert [flags] [ITEM_JSON ...]
Each item is an lmrec.v1.Item in protobuf JSON, e.g.
  '{"item_id": "m1", "title": "Heat (1995)", "text": "A crime thriller", "attributes": {"genre": {"values": ["Crime"]}}}'`}
	cmd.check = func() error {
		if fs.NArg() == 0 && *file == "" {
			return errors.New("no items: give ITEM_JSON arguments or -f FILE")
		}
		var err error
		if items, err = readItems(fs.Args(), *file, stdin); err != nil {
			return err
		}
		return nil
	}
	cmd.run = func(ctx context.Context, client lmrecv1.GatewayServiceClient, out io.Writer) error {
		return upsert(ctx, client, items, out)
	}
	return cmd
}

// readItems parses the items given as arguments, then those of file (JSON Lines; "-" is stdin).
func readItems(args []string, file string, stdin io.Reader) ([]*lmrecv1.Item, error) {
	var items []*lmrecv1.Item
	parse := func(text, where string) error {
		item := &lmrecv1.Item{}
		if err := protojson.Unmarshal([]byte(text), item); err != nil {
			return fmt.Errorf("%s: not an lmrec.v1.Item: %v", where, err)
		}
		items = append(items, item)
		return nil
	}
	for i, arg := range args {
		if err := parse(arg, fmt.Sprintf("argument %d", i+1)); err != nil {
			return nil, err
		}
	}
	if file == "" {
		return items, nil
	}
	in := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	scanner := bufio.NewScanner(in)
	scanner.Buffer(make([]byte, 0, 64*1024), 16<<20) // an item's text may run to megabytes
	for line := 1; scanner.Scan(); line++ {
		if text := strings.TrimSpace(scanner.Text()); text != "" {
			if err := parse(text, fmt.Sprintf("%s:%d", file, line)); err != nil {
				return nil, err
			}
		}
	}
	return items, scanner.Err()
}

// upsert writes the items in one call and checks that the gateway took all of them.
func upsert(ctx context.Context, client lmrecv1.GatewayServiceClient, items []*lmrecv1.Item, out io.Writer) error {
	resp, err := client.UpsertItems(ctx, &lmrecv1.UpsertItemsRequest{Items: items})
	if err != nil {
		return rpcError("UpsertItems", err)
	}
	ids := make([]string, len(items))
	for i, item := range items {
		ids[i] = item.ItemId
	}
	fmt.Fprintf(out, "upserted %d items: %s\n", resp.UpsertedCount, strings.Join(ids, ", "))
	if int(resp.UpsertedCount) != len(items) {
		return fmt.Errorf("sent %d items, the gateway upserted %d", len(items), resp.UpsertedCount)
	}
	return nil
}
