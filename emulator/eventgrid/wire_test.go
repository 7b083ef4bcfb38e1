package eventgrid_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cmkrotator/cmkrotator/emulator/eventgrid"
)

// TestWireErrors covers answers the SDK clients never provoke.
func TestWireErrors(t *testing.T) {
	srv := start(t, eventgrid.Options{})
	srv.AddNamespaceTopic(topicName).AddSubscription(subName, eventgrid.SubscriptionOptions{})
	const event = `{"id":"1","source":"/s","type":"t","specversion":"1.0"}`
	const (
		ce    = "application/cloudevents+json"
		batch = "application/cloudevents-batch+json"
	)
	bare := "/topics/" + topicName + ":publish"
	publish := bare + "?api-version=2024-06-01"
	peek := "/topics/" + topicName + "/eventsubscriptions/" + subName + ":peek?api-version=2024-06-01"
	huge := `{"data":"` + strings.Repeat("x", 1<<20) + `"}`

	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        string
		wantStatus  int
		wantCode    string
	}{
		{"get", "GET", publish, ce, event, 405, "MethodNotAllowed"},
		{"no api-version", "POST", bare, ce, event, 400, "BadRequest"},
		{"old api-version", "POST", bare + "?api-version=2018-01-01", ce, event, 400, "BadRequest"},
		{"plain json", "POST", publish, "application/json", event, 415, "UnsupportedMediaType"},
		{"batch that is an object", "POST", publish, batch, event, 400, "BadRequest"},
		{"spec version 0.3", "POST", publish, ce, strings.Replace(event, "1.0", "0.3", 1), 400, "BadRequest"},
		{"over 1 MB", "POST", publish, ce, huge, 413, "RequestEntityTooLarge"},
		{"unknown action", "POST", peek, "application/json", `{}`, 404, "NotFound"},
		{"ok", "POST", publish, ce + "; charset=utf-8", event, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL()+tt.path, bytes.NewBufferString(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tt.contentType)
			req.Header.Set("Authorization", "SharedAccessKey "+eventgrid.DefaultKey)
			resp, err := srv.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()

			var body struct {
				Error struct{ Code, Message string }
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != tt.wantStatus || body.Error.Code != tt.wantCode {
				t.Errorf("got %d %q (%s), want %d %q", resp.StatusCode, body.Error.Code,
					body.Error.Message, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

func TestNamespaceTopicPublish(t *testing.T) {
	srv := start(t, eventgrid.Options{})
	topic := srv.AddNamespaceTopic(topicName)
	a := topic.AddSubscription("a", eventgrid.SubscriptionOptions{})
	b := topic.AddSubscription("b", eventgrid.SubscriptionOptions{})

	err := topic.Publish(json.RawMessage(`{"id":"1","source":"/s","type":"t","specversion":"1.0"}`))
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	err = topic.Publish(json.RawMessage(`{"id":"2","source":"/s","type":"t","specversion":"1.0"}`),
		json.RawMessage(`{"id":"3","type":"t","specversion":"1.0"}`))
	if err == nil || !strings.Contains(err.Error(), "source") {
		t.Errorf("got %v, want an error naming the missing source", err)
	}

	for _, sub := range []*eventgrid.Subscription{a, b} {
		got := sub.Events()
		if len(got) != 1 || got[0].ID != "1" || got[0].State != eventgrid.StateAvailable {
			t.Errorf("subscription %s: got %+v, want event 1 available", sub.Name(), got)
		}
	}
	if n := len(topic.Published()); n != 1 {
		t.Errorf("got %d published, want 1", n)
	}
}

// FuzzPublish feeds arbitrary bodies to both publish endpoints: each
// is accepted or refused with 400, never anything else.
func FuzzPublish(f *testing.F) {
	f.Add(`{"id":"1","source":"/s","type":"t","specversion":"1.0"}`, "application/cloudevents+json")
	f.Add(`[{"id":"1","source":"/s","type":"t","specversion":"1.0","time":"2026-01-02T03:04:05Z"}]`,
		"application/cloudevents-batch+json")
	f.Add(`[{"id":"1","subject":"s","eventType":"t","eventTime":"2026-01-02T03:04:05Z","data":{}}]`,
		"application/json")
	f.Add(`[{"id":1}]`, "application/json")
	f.Add(`null`, "application/cloudevents+json")

	srv, err := eventgrid.Start(eventgrid.Options{InProcess: true})
	if err != nil {
		f.Fatal(err)
	}
	defer srv.Close()
	srv.AddNamespaceTopic(topicName)
	grid := srv.AddTopic("grid", eventgrid.TopicOptions{})
	client := &http.Client{Transport: srv.InProcessTransport()}

	f.Fuzz(func(t *testing.T, body, contentType string) {
		for _, target := range []struct{ url, authHeader, auth string }{
			{srv.URL() + "/topics/" + topicName + ":publish?api-version=2024-06-01",
				"Authorization", "SharedAccessKey " + eventgrid.DefaultKey},
			{grid.Endpoint() + "?api-version=2018-01-01", "aeg-sas-key", eventgrid.DefaultKey},
		} {
			req, err := http.NewRequest(http.MethodPost, target.url, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", contentType)
			req.Header.Set(target.authHeader, target.auth)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			switch resp.StatusCode {
			case 200, 400, 415:
			default:
				t.Errorf("%s: got status %d", target.url, resp.StatusCode)
			}
		}
	})
}
