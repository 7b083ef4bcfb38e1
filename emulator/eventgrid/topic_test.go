package eventgrid_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/azeventgrid"
	"github.com/google/go-cmp/cmp"

	"github.com/cmkrotator/cmkrotator/emulator/eventgrid"
)

var eventTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newTopicClient(t *testing.T, srv *eventgrid.Server, endpoint, key string) *azeventgrid.Client {
	t.Helper()
	c, err := azeventgrid.NewClientWithSharedKeyCredential(endpoint, azcore.NewKeyCredential(key),
		&azeventgrid.ClientOptions{ClientOptions: clientOptions(srv, false, false)})
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return c
}

func gridEvent(id string) azeventgrid.Event {
	return azeventgrid.Event{
		ID:          to.Ptr(id),
		EventType:   to.Ptr("Microsoft.KeyVault.KeyNewVersionCreated"),
		Subject:     to.Ptr("cmk"),
		EventTime:   to.Ptr(eventTime),
		DataVersion: to.Ptr("1"),
		Data:        map[string]string{"Id": "https://v1.vault.azure.net/keys/cmk/" + id},
	}
}

// brief keeps the fields of a published event a test compares.
type brief struct {
	Topic, ID, Type, Subject, Source string
	Schema                           eventgrid.Schema
	Time                             time.Time
	Data                             string
}

func briefs(ps []eventgrid.Published) []brief {
	var out []brief
	for _, p := range ps {
		out = append(out, brief{p.Topic, p.ID, p.Type, p.Subject, p.Source, p.Schema, p.Time, string(p.Data)})
	}
	return out
}

func TestPublishEventGridSchema(t *testing.T) {
	srv := start(t, eventgrid.Options{})
	var forwarded []eventgrid.Published
	topic := srv.AddTopic("custom", eventgrid.TopicOptions{
		OnPublish: func(ps []eventgrid.Published) { forwarded = append(forwarded, ps...) },
	})
	client := newTopicClient(t, srv, topic.Endpoint(), eventgrid.DefaultKey)

	if _, err := client.PublishEvents(context.Background(),
		[]azeventgrid.Event{gridEvent("v1"), gridEvent("v2")}, nil); err != nil {
		t.Fatalf("publish events: %v", err)
	}

	want := []brief{
		{"custom", "v1", "Microsoft.KeyVault.KeyNewVersionCreated", "cmk", "", eventgrid.SchemaEventGrid,
			eventTime, `{"Id":"https://v1.vault.azure.net/keys/cmk/v1"}`},
		{"custom", "v2", "Microsoft.KeyVault.KeyNewVersionCreated", "cmk", "", eventgrid.SchemaEventGrid,
			eventTime, `{"Id":"https://v1.vault.azure.net/keys/cmk/v2"}`},
	}
	if diff := cmp.Diff(want, briefs(topic.Events())); diff != "" {
		t.Errorf("recorded events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, briefs(forwarded)); diff != "" {
		t.Errorf("forwarded events (-want +got):\n%s", diff)
	}

	var delivered azeventgrid.Event
	if err := json.Unmarshal(topic.Events()[0].Delivered, &delivered); err != nil {
		t.Fatalf("decode delivered event: %v", err)
	}
	if *delivered.Topic != topic.ResourceID() || *delivered.MetadataVersion != "1" {
		t.Errorf("delivered: got topic %q metadataVersion %q, want %q and 1",
			*delivered.Topic, *delivered.MetadataVersion, topic.ResourceID())
	}
}

func TestPublishCloudEventsToTopic(t *testing.T) {
	srv := start(t, eventgrid.Options{})
	topic := srv.AddTopic("ce", eventgrid.TopicOptions{Schema: eventgrid.SchemaCloudEvents})
	client := newTopicClient(t, srv, topic.Endpoint(), eventgrid.DefaultKey)

	ce, err := messaging.NewCloudEvent("/vaults/v1", "Microsoft.KeyVault.KeyNewVersionCreated",
		map[string]string{"Id": "k"}, &messaging.CloudEventOptions{Subject: to.Ptr("cmk"), Time: to.Ptr(eventTime)})
	if err != nil {
		t.Fatal(err)
	}
	ce.ID = "c1"
	if _, err := client.PublishCloudEvents(context.Background(), []messaging.CloudEvent{ce}, nil); err != nil {
		t.Fatalf("publish cloud events: %v", err)
	}

	want := []brief{{"ce", "c1", "Microsoft.KeyVault.KeyNewVersionCreated", "cmk", "/vaults/v1",
		eventgrid.SchemaCloudEvents, eventTime, `{"Id":"k"}`}}
	if diff := cmp.Diff(want, briefs(topic.Events())); diff != "" {
		t.Errorf("recorded events (-want +got):\n%s", diff)
	}
}

func TestTopicErrors(t *testing.T) {
	srv := start(t, eventgrid.Options{})
	grid := srv.AddTopic("grid", eventgrid.TopicOptions{})
	ce := srv.AddTopic("ce", eventgrid.TopicOptions{Schema: eventgrid.SchemaCloudEvents})
	ctx := context.Background()

	noSubject := gridEvent("v1")
	noSubject.Subject = nil
	otherTopic := gridEvent("v1")
	otherTopic.Topic = to.Ptr("/subscriptions/x/resourceGroups/y/providers/Microsoft.KeyVault/vaults/v1")
	cloud, err := messaging.NewCloudEvent("/s", "t", nil, nil)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name       string
		call       func() error
		wantStatus int
		wantCode   string
	}{
		{"missing subject", func() error {
			_, err := newTopicClient(t, srv, grid.Endpoint(), eventgrid.DefaultKey).
				PublishEvents(ctx, []azeventgrid.Event{noSubject}, nil)
			return err
		}, http.StatusBadRequest, "BadRequest"},
		{"topic of another resource", func() error {
			_, err := newTopicClient(t, srv, grid.Endpoint(), eventgrid.DefaultKey).
				PublishEvents(ctx, []azeventgrid.Event{otherTopic}, nil)
			return err
		}, http.StatusBadRequest, "BadRequest"},
		{"cloud events to an event grid topic", func() error {
			_, err := newTopicClient(t, srv, grid.Endpoint(), eventgrid.DefaultKey).
				PublishCloudEvents(ctx, []messaging.CloudEvent{cloud}, nil)
			return err
		}, http.StatusBadRequest, "BadRequest"},
		{"event grid events to a cloud events topic", func() error {
			_, err := newTopicClient(t, srv, ce.Endpoint(), eventgrid.DefaultKey).
				PublishEvents(ctx, []azeventgrid.Event{gridEvent("v1")}, nil)
			return err
		}, http.StatusBadRequest, "BadRequest"},
		{"wrong key", func() error {
			_, err := newTopicClient(t, srv, grid.Endpoint(), "wrong").
				PublishEvents(ctx, []azeventgrid.Event{gridEvent("v1")}, nil)
			return err
		}, http.StatusUnauthorized, "Unauthorized"},
		{"unknown topic", func() error {
			_, err := newTopicClient(t, srv, srv.URL()+"/customtopics/nope/api/events", eventgrid.DefaultKey).
				PublishEvents(ctx, []azeventgrid.Event{gridEvent("v1")}, nil)
			return err
		}, http.StatusNotFound, "NotFound"},
		{"unknown path", func() error {
			_, err := newTopicClient(t, srv, srv.URL()+"/api/events", eventgrid.DefaultKey).
				PublishEvents(ctx, []azeventgrid.Event{gridEvent("v1")}, nil)
			return err
		}, http.StatusNotFound, "NotFound"},
		{"bearer token without a validator", func() error {
			_, err := newTokenClient(t, srv, grid.Endpoint(), &fakeCredential{token: "t"}).
				PublishEvents(ctx, []azeventgrid.Event{gridEvent("v1")}, nil)
			return err
		}, http.StatusUnauthorized, "Unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantResponseError(t, tt.call(), tt.wantStatus, tt.wantCode)
		})
	}
	if n := len(grid.Events()) + len(ce.Events()); n != 0 {
		t.Errorf("got %d events recorded from refused requests, want 0", n)
	}
}

// fakeCredential hands out a fixed token and records the scopes asked.
type fakeCredential struct {
	token  string
	mu     sync.Mutex
	scopes []string
}

func (c *fakeCredential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.scopes = append(c.scopes, o.Scopes...)
	return azcore.AccessToken{Token: c.token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

func newTokenClient(t *testing.T, srv *eventgrid.Server, endpoint string, cred azcore.TokenCredential) *azeventgrid.Client {
	t.Helper()
	c, err := azeventgrid.NewClient(endpoint, cred,
		&azeventgrid.ClientOptions{ClientOptions: clientOptions(srv, false, false)})
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	return c
}

func TestBearerToken(t *testing.T) {
	var audiences []string
	srv := start(t, eventgrid.Options{ValidateToken: func(token, audience string) error {
		audiences = append(audiences, audience)
		if token != "good" {
			return errors.New("unknown token")
		}
		return nil
	}})
	topic := srv.AddTopic("custom", eventgrid.TopicOptions{})

	tests := []struct {
		token      string
		wantStatus int
	}{{"good", 0}, {"bad", http.StatusUnauthorized}}
	for _, tt := range tests {
		t.Run(tt.token, func(t *testing.T) {
			cred := &fakeCredential{token: tt.token}
			_, err := newTokenClient(t, srv, topic.Endpoint(), cred).
				PublishEvents(context.Background(), []azeventgrid.Event{gridEvent("v1")}, nil)
			var re *azcore.ResponseError
			switch {
			case tt.wantStatus == 0 && err != nil:
				t.Fatalf("publish: %v", err)
			case tt.wantStatus != 0 && (!errors.As(err, &re) || re.StatusCode != tt.wantStatus):
				t.Fatalf("got %v, want status %d", err, tt.wantStatus)
			}
			if diff := cmp.Diff([]string{"https://eventgrid.azure.net/.default"}, cred.scopes); diff != "" {
				t.Errorf("scopes (-want +got):\n%s", diff)
			}
		})
	}

	if diff := cmp.Diff([]string{eventgrid.Audience, eventgrid.Audience}, audiences); diff != "" {
		t.Errorf("audiences (-want +got):\n%s", diff)
	}
	var auths []string
	for _, r := range srv.Requests() {
		auths = append(auths, r.Auth)
	}
	if diff := cmp.Diff([]string{eventgrid.AuthBearer, ""}, auths); diff != "" {
		t.Errorf("recorded auth (-want +got):\n%s", diff)
	}
	if n := len(topic.Events()); n != 1 {
		t.Errorf("got %d events, want 1", n)
	}
}

func TestCallersTLSConfig(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}

	srv := start(t, eventgrid.Options{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	topic := srv.AddTopic("custom", eventgrid.TopicOptions{})
	if _, err := newTopicClient(t, srv, topic.Endpoint(), eventgrid.DefaultKey).
		PublishEvents(context.Background(), []azeventgrid.Event{gridEvent("v1")}, nil); err != nil {
		t.Fatalf("publish over the caller's certificate: %v", err)
	}

	conn, err := tls.Dial("tcp", srv.URL()[len("https://"):], &tls.Config{RootCAs: srv.CertPool()})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); got != 7 {
		t.Errorf("got certificate serial %d, want the caller's 7", got)
	}
}
