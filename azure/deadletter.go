package azure

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
)

// Metadata a replay writes on a dead-letter blob once every event in it
// ended final. Storage metadata names must be C# identifiers, so they use
// underscores; values are ASCII.
const (
	MetaReplayed = "cmkrotator_replayed" // RFC 3339 time the blob was done
	MetaOutcome  = "cmkrotator_outcome"  // one of the Outcome* constants
	MetaEvents   = "cmkrotator_events"   // events in the blob
	MetaFailed   = "cmkrotator_failed"   // events whose rotation failed for good
	MetaIgnored  = "cmkrotator_ignored"  // events ignored (not subscribed, not a rotation)
	MetaPoison   = "cmkrotator_poison"   // events that could not be decoded
)

// Outcomes of a done blob, in MetaOutcome.
const (
	OutcomeOK          = "ok"          // every event rotated, current, skipped or ignored
	OutcomeFailed      = "failed"      // some event failed for good; see the logs or report
	OutcomeUndecodable = "undecodable" // some or all events could not be decoded
	OutcomeRepublished = "republished" // sent back through Event Grid instead
)

// maxDeadLetterBlob bounds one blob's download: Event Grid writes a few
// events per blob, far below this.
const maxDeadLetterBlob = 64 << 20

// DeadLetterOptions configures DeadLetters. The zero value is ready.
type DeadLetterOptions struct {
	// ClientOptions apply to the blob client: Transport, Retry, Logging.
	ClientOptions azcore.ClientOptions
}

// DeadLetters reads the blobs Event Grid dead-letters events into, under
// one container and an optional prefix, and marks the ones a replay has
// finished. It is safe for concurrent use.
type DeadLetters struct {
	client *container.Client
	prefix string // blob name prefix within the container; may be empty
	where  string // container URL and prefix, without query or user info, for messages
}

// NewDeadLetters opens location, a container URL with an optional blob
// name prefix ("https://acct.blob.core.windows.net/deadletters/SUB"),
// authenticating with cred.
func NewDeadLetters(location string, cred azcore.TokenCredential, opts *DeadLetterOptions) (*DeadLetters, error) {
	parts, err := parseLocation(location)
	if err != nil {
		return nil, err
	}
	prefix := parts.BlobName
	parts.BlobName = ""
	c, err := container.NewClient(parts.String(), cred, containerOptions(opts))
	if err != nil {
		return nil, fmt.Errorf("new blob client for %s: %w", printable(location), err)
	}
	return &DeadLetters{client: c, prefix: prefix, where: printable(location)}, nil
}

// NewDeadLettersFromConnectionString opens location with a storage
// connection string (Azurite's, for one). location is a container URL
// with an optional prefix, as for NewDeadLetters, or just
// "container[/prefix]"; the account comes from the connection string.
func NewDeadLettersFromConnectionString(conn, location string, opts *DeadLetterOptions) (*DeadLetters, error) {
	name, prefix, _ := strings.Cut(strings.Trim(location, "/"), "/")
	if strings.Contains(location, "://") {
		parts, err := parseLocation(location)
		if err != nil {
			return nil, err
		}
		name, prefix = parts.ContainerName, parts.BlobName
	}
	where := printable(location)
	if name == "" {
		return nil, fmt.Errorf("open dead letters %q: no container name", where)
	}
	c, err := container.NewClientFromConnectionString(conn, name, containerOptions(opts))
	if err != nil {
		// The SDK's message may quote the connection string; never
		// repeat it.
		return nil, fmt.Errorf("open dead letters %s: malformed storage connection string", where)
	}
	return &DeadLetters{client: c, prefix: prefix, where: where}, nil
}

func parseLocation(location string) (azblob.URLParts, error) {
	where := printable(location)
	u, err := url.Parse(location)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return azblob.URLParts{}, fmt.Errorf("open dead letters %q: want a container URL such as "+
			"https://{account}.blob.core.windows.net/{container}[/{prefix}]", where)
	}
	parts, err := azblob.ParseURL(location)
	if err != nil {
		// The SDK's message may quote the URL with its query.
		return azblob.URLParts{}, fmt.Errorf("open dead letters %q: malformed container URL", where)
	}
	switch {
	case parts.ContainerName == "" && parts.IPEndpointStyleInfo.AccountName != "":
		// Azurite's style: the SDK reads the first path segment of an
		// IP host as the account.
		return azblob.URLParts{}, fmt.Errorf("open dead letters %q: no container name: for an IP host the URL "+
			"names the account first: http://127.0.0.1:10000/{account}/{container}[/{prefix}]", where)
	case parts.ContainerName == "":
		return azblob.URLParts{}, fmt.Errorf("open dead letters %q: no container name", where)
	}
	return parts, nil
}

// printable is location without its query (a SAS carries its signature
// there), fragment or user info, for errors and logs.
func printable(location string) string {
	location, _, _ = strings.Cut(location, "?")
	location, _, _ = strings.Cut(location, "#")
	scheme, rest, ok := strings.Cut(location, "://")
	if !ok {
		return location
	}
	host, path, _ := strings.Cut(rest, "/")
	if i := strings.LastIndex(host, "@"); i >= 0 {
		host = host[i+1:]
	}
	if path != "" || strings.HasSuffix(rest, "/") {
		host += "/"
	}
	return scheme + "://" + host + path
}

func containerOptions(opts *DeadLetterOptions) *container.ClientOptions {
	var co azcore.ClientOptions
	if opts != nil {
		co = opts.ClientOptions
	}
	return &container.ClientOptions{ClientOptions: pipelineOptions(co, transient...)}
}

// String names the container and prefix.
func (d *DeadLetters) String() string { return d.where }

// DeadLetterBlob is one blob under the prefix, as listed.
type DeadLetterBlob struct {
	Name string // full blob name within the container

	// Subscription and Hour come from Event Grid's path layout,
	// {SUBSCRIPTION}/{YYYY}/{M}/{D}/{H}/{guid}.json (UTC, not
	// zero-padded); both are zero for a name that does not follow it.
	Subscription string
	Hour         time.Time

	LastModified time.Time
	Size         int64
	ETag         azcore.ETag
	// Metadata is as listed, names spelled as they were set (Storage
	// compares them without case but keeps their case, which MarkDone
	// writes back); Meta looks one up.
	Metadata map[string]string

	// Replayed is when a replay marked the blob done; zero when not.
	Replayed time.Time
}

// Meta is the metadata value named name, in any case; "" when absent.
func (b DeadLetterBlob) Meta(name string) string {
	if v, ok := b.Metadata[name]; ok {
		return v
	}
	for k, v := range b.Metadata {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// Time is when the blob's events were dead-lettered: the end of the
// hour its path names, or its last modification when the path says
// nothing.
func (b DeadLetterBlob) Time() time.Time {
	if !b.Hour.IsZero() {
		return b.Hour.Add(time.Hour)
	}
	return b.LastModified
}

// List returns every blob under the prefix, in name order (which is
// not time order: the path's numbers are not zero-padded).
func (d *DeadLetters) List(ctx context.Context) ([]DeadLetterBlob, error) {
	opts := &container.ListBlobsFlatOptions{Include: container.ListBlobsInclude{Metadata: true}}
	if d.prefix != "" {
		opts.Prefix = &d.prefix
	}
	var out []DeadLetterBlob
	pager := d.client.NewListBlobsFlatPager(opts)
	for pager.More() {
		var resp *http.Response
		page, err := pager.NextPage(policy.WithCaptureResponse(ctx, &resp))
		if err != nil {
			return nil, classify("list dead-letter blobs in "+d.where, err)
		}
		names := listedMetadataNames(resp)
		for _, item := range page.Segment.BlobItems {
			if item == nil || item.Name == nil {
				continue
			}
			out = append(out, blobOf(item, names[*item.Name]))
		}
	}
	return out, nil
}

// listedMetadataNames reads a listing's XML for the metadata names of
// each blob as stored: the SDK hands them over in lower case, and
// MarkDone writes them back. A blob missing from the result (an
// unreadable body, an encoded name) keeps the SDK's names.
func listedMetadataNames(resp *http.Response) map[string][]string {
	if resp == nil {
		return nil
	}
	body, err := runtime.Payload(resp)
	if err != nil {
		return nil
	}
	var list struct {
		Blobs []struct {
			Name     string `xml:"Name"`
			Metadata struct {
				Items []struct {
					XMLName xml.Name
				} `xml:",any"`
			} `xml:"Metadata"`
		} `xml:"Blobs>Blob"`
	}
	if xml.Unmarshal(body, &list) != nil {
		return nil
	}
	out := make(map[string][]string, len(list.Blobs))
	for _, b := range list.Blobs {
		for _, it := range b.Metadata.Items {
			out[b.Name] = append(out[b.Name], it.XMLName.Local)
		}
	}
	return out
}

// blobOf is a listed blob; stored holds its metadata names as stored,
// which take the place of the SDK's lower-cased ones.
func blobOf(item *container.BlobItem, stored []string) DeadLetterBlob {
	b := DeadLetterBlob{Name: *item.Name, Metadata: map[string]string{}}
	b.Subscription, b.Hour = parseDeadLetterPath(b.Name)
	if p := item.Properties; p != nil {
		b.LastModified = deref(p.LastModified)
		if p.ContentLength != nil {
			b.Size = *p.ContentLength
		}
		if p.ETag != nil {
			b.ETag = *p.ETag
		}
	}
	spelled := make(map[string]string, len(stored))
	for _, k := range stored {
		spelled[strings.ToLower(k)] = k
	}
	for k, v := range item.Metadata {
		if v == nil {
			continue
		}
		if s, ok := spelled[strings.ToLower(k)]; ok {
			k = s
		}
		b.Metadata[k] = *v
	}
	if t, err := time.Parse(time.RFC3339, b.Meta(MetaReplayed)); err == nil {
		b.Replayed = t
	}
	return b
}

// parseDeadLetterPath reads {SUBSCRIPTION}/{YYYY}/{M}/{D}/{H}/{file}
// from the end of name, so that a prefix of any depth is allowed.
func parseDeadLetterPath(name string) (string, time.Time) {
	parts := strings.Split(name, "/")
	if len(parts) < 6 || path.Ext(parts[len(parts)-1]) != ".json" {
		return "", time.Time{}
	}
	p := parts[len(parts)-6:]
	var n [4]int
	for i, s := range p[1:5] {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return "", time.Time{}
		}
		n[i] = v
	}
	y, m, d, h := n[0], n[1], n[2], n[3]
	if y < 2000 || m < 1 || m > 12 || d < 1 || d > 31 || h > 23 {
		return "", time.Time{}
	}
	t := time.Date(y, time.Month(m), d, h, 0, 0, 0, time.UTC)
	if t.Day() != d { // 31 February and the like
		return "", time.Time{}
	}
	return p[0], t
}

// Read downloads one blob's content.
func (d *DeadLetters) Read(ctx context.Context, b DeadLetterBlob) ([]byte, error) {
	resp, err := d.client.NewBlobClient(b.Name).DownloadStream(ctx, nil)
	if err != nil {
		return nil, classify("read dead-letter blob "+b.Name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxDeadLetterBlob+1))
	if err != nil {
		return nil, classify("read dead-letter blob "+b.Name, err)
	}
	if len(data) > maxDeadLetterBlob {
		return nil, fmt.Errorf("read dead-letter blob %s: more than %d bytes", b.Name, maxDeadLetterBlob)
	}
	return data, nil
}

// ownMeta reports whether name is one of the Meta* names, in any case:
// those are written afresh, never twice in two spellings.
func ownMeta(name string) bool {
	for _, own := range []string{MetaReplayed, MetaOutcome, MetaEvents, MetaFailed, MetaIgnored, MetaPoison} {
		if strings.EqualFold(name, own) {
			return true
		}
	}
	return false
}

// Mark is what a finished replay records on a blob.
type Mark struct {
	Time    time.Time
	Outcome string // OutcomeOK, OutcomeFailed, OutcomeUndecodable or OutcomeRepublished
	Events  int
	Failed  int
	Ignored int
	Poison  int
}

// ErrBlobChanged means a blob was rewritten or marked by someone else
// between listing and marking; it was left as it is.
var ErrBlobChanged = errors.New("blob changed since it was listed")

// MarkDone records m on blob b, keeping its other metadata with their
// names as they were spelled (setting metadata replaces all of it). It
// writes only if the blob is unchanged since it was listed (If-Match on
// its ETag), so that two replays cannot both claim it.
func (d *DeadLetters) MarkDone(ctx context.Context, b DeadLetterBlob, m Mark) error {
	meta := make(map[string]*string, len(b.Metadata)+6)
	for k, v := range b.Metadata {
		if !ownMeta(k) {
			meta[k] = &v
		}
	}
	set := func(k, v string) { meta[k] = &v }
	set(MetaReplayed, m.Time.UTC().Format(time.RFC3339))
	set(MetaOutcome, m.Outcome)
	set(MetaEvents, strconv.Itoa(m.Events))
	set(MetaFailed, strconv.Itoa(m.Failed))
	set(MetaIgnored, strconv.Itoa(m.Ignored))
	set(MetaPoison, strconv.Itoa(m.Poison))

	opts := &blob.SetMetadataOptions{}
	if b.ETag != "" {
		etag := b.ETag
		opts.AccessConditions = &blob.AccessConditions{
			ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag},
		}
	}
	_, err := d.client.NewBlobClient(b.Name).SetMetadata(ctx, meta, opts)
	if re, ok := errors.AsType[*azcore.ResponseError](err); ok && re.StatusCode == 412 {
		return fmt.Errorf("mark dead-letter blob %s: %w", b.Name, ErrBlobChanged)
	}
	if err != nil {
		return classify("mark dead-letter blob "+b.Name, err)
	}
	return nil
}
