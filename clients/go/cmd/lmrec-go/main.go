// Command lmrec-go calls the lmrec gateway (lmrec.v1.GatewayService): it upserts catalogue items,
// records feedback events and asks for recommendations, printing each item with its score and reasons.
//
// Usage:
//
//	lmrec-go upsert    [-target HOST:PORT] [-timeout D] [-f FILE] [ITEM_JSON ...]
//	lmrec-go feedback  [-target HOST:PORT] [-timeout D] -user-id ID -item-id ID -type TYPE [-value V]
//	lmrec-go recommend [-target HOST:PORT] [-timeout D] -user-id ID [-k K] [-query TEXT] [-scenario S]
//
// Every call carries a deadline (-timeout). The gateway validates the values; the client only parses
// them, so a wrong value comes back as the gateway's INVALID_ARGUMENT.
//
// Exit status: 0 on success (recommend: the answer passed every check), 1 when the call failed (its gRPC
// status is printed) or an answer failed a check, 2 on bad arguments.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/lmrec/lmrec/clients/go/lmrecv1"
)

const usage = `usage: lmrec-go COMMAND [flags]

commands:
  upsert     add or replace catalogue items (lmrec.v1.Item as JSON, arguments or -f FILE)
  feedback   record one interaction event
  recommend  top-k items for a user, printed with scores and reasons, and checked

Run lmrec-go COMMAND -h for the flags of a command.
`

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// command is one subcommand: its flags and what it does with a connected client.
type command struct {
	flags *flag.FlagSet
	// synopsis is the usage line after "lmrec-go ", and any lines of explanation below it.
	synopsis string
	run      func(ctx context.Context, client lmrecv1.GatewayServiceClient, out io.Writer) error
	// check validates the parsed flags before any connection is made; an error is a usage error.
	check func() error
	// positional says whether the command takes arguments after its flags.
	positional bool
}

// connection holds the flags every command shares.
type connection struct {
	target  string
	timeout time.Duration
}

func (c *connection) register(fs *flag.FlagSet) {
	fs.StringVar(&c.target, "target", "127.0.0.1:50051", "gateway address `HOST:PORT`")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline of the call, a `DURATION` such as 2s or 500ms")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run executes one command line and returns the process's exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	var conn connection
	var cmd *command
	switch name := args[0]; name {
	case "upsert":
		cmd = upsertCommand(stdin)
	case "feedback":
		cmd = feedbackCommand()
	case "recommend":
		cmd = recommendCommand()
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "lmrec-go: unknown command %q\n%s", name, usage)
		return exitUsage
	}
	conn.register(cmd.flags)
	cmd.flags.SetOutput(stderr)
	cmd.flags.Usage = func() {
		fmt.Fprintf(stderr, "usage: lmrec-go %s\n", cmd.synopsis)
		cmd.flags.PrintDefaults()
	}
	if err := cmd.flags.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage // the flag package has printed the error and the usage
	}
	if cmd.flags.NArg() > 0 && !cmd.positional {
		return reportUsage(stderr, cmd.flags, fmt.Errorf("unexpected argument %q", cmd.flags.Arg(0)))
	}
	if conn.timeout <= 0 {
		return reportUsage(stderr, cmd.flags, errors.New("-timeout must be positive"))
	}
	if cmd.check != nil {
		if err := cmd.check(); err != nil {
			return reportUsage(stderr, cmd.flags, err)
		}
	}

	dialOptions, err := connectionOptions()
	if err != nil {
		fmt.Fprintf(stderr, "lmrec-go: %v\n", err)
		return exitFailed
	}
	cc, err := grpc.Dial(conn.target, dialOptions...)
	if err != nil {
		fmt.Fprintf(stderr, "lmrec-go: cannot dial %s: %v\n", conn.target, err)
		return exitFailed
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), conn.timeout)
	defer cancel()

	if err := cmd.run(ctx, lmrecv1.NewGatewayServiceClient(cc), stdout); err != nil {
		fmt.Fprintf(stderr, "lmrec-go: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// tokenAuth sends LMREC_TOKEN as a bearer token on every call. It does not require TLS: plaintext stays
// possible on a trusted local network, as the gateway's own default.
type tokenAuth string

func (t tokenAuth) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (t tokenAuth) RequireTransportSecurity() bool { return false }

// connectionOptions: TLS when LMREC_TLS_CA names the CA of the gateway's certificate, else plaintext
// (grpc-go 1.33, Debian bookworm's, predates credentials/insecure); the token from LMREC_TOKEN.
func connectionOptions() ([]grpc.DialOption, error) {
	options := []grpc.DialOption{grpc.WithInsecure()}
	if ca := os.Getenv("LMREC_TLS_CA"); ca != "" {
		creds, err := credentials.NewClientTLSFromFile(ca, "")
		if err != nil {
			return nil, fmt.Errorf("LMREC_TLS_CA: %v", err)
		}
		options = []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	}
	if token := os.Getenv("LMREC_TOKEN"); token != "" {
		options = append(options, grpc.WithPerRPCCredentials(tokenAuth(token)))
	}
	return options, nil
}

func reportUsage(stderr io.Writer, fs *flag.FlagSet, err error) int {
	fmt.Fprintf(stderr, "lmrec-go %s: %v\n", fs.Name(), err)
	fs.Usage()
	return exitUsage
}

// rpcError describes a failed call with its canonical gRPC status name, e.g.
// "Recommend failed: INVALID_ARGUMENT: k: must be in 1..1000, got -1".
func rpcError(method string, err error) error {
	st := status.Convert(err)
	return fmt.Errorf("%s failed: %s: %s", method, codeName(st.Code()), st.Message())
}

// canonicalCodes are the status names of the gRPC spec (codes.Code.String says "InvalidArgument").
var canonicalCodes = map[codes.Code]string{
	codes.OK:                 "OK",
	codes.Canceled:           "CANCELLED",
	codes.Unknown:            "UNKNOWN",
	codes.InvalidArgument:    "INVALID_ARGUMENT",
	codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
	codes.NotFound:           "NOT_FOUND",
	codes.AlreadyExists:      "ALREADY_EXISTS",
	codes.PermissionDenied:   "PERMISSION_DENIED",
	codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION",
	codes.Aborted:            "ABORTED",
	codes.OutOfRange:         "OUT_OF_RANGE",
	codes.Unimplemented:      "UNIMPLEMENTED",
	codes.Internal:           "INTERNAL",
	codes.Unavailable:        "UNAVAILABLE",
	codes.DataLoss:           "DATA_LOSS",
	codes.Unauthenticated:    "UNAUTHENTICATED",
}

func codeName(c codes.Code) string {
	if name, ok := canonicalCodes[c]; ok {
		return name
	}
	return "CODE_" + strconv.Itoa(int(c))
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string { return fmt.Sprint(*s) }

func (s *stringList) Set(v string) error {
	*s = append(*s, v)
	return nil
}

// int32Flag parses a flag into an int32, refusing values that do not fit (flag.Int would wrap them).
func int32Flag(dst *int32) func(string) error {
	return func(s string) error {
		v, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return fmt.Errorf("not a 32-bit integer: %q", s)
		}
		*dst = int32(v)
		return nil
	}
}
