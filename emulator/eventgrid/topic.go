package eventgrid

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
)

// TopicOptions configures a custom topic.
type TopicOptions struct {
	// Schema is the topic's input schema; events in the other one are
	// refused. Zero: SchemaEventGrid, as Azure creates topics.
	Schema Schema

	// ResourceID is the topic's Azure resource ID, which Event Grid
	// stamps into events as "topic". Zero: an ID under the all-zero
	// subscription, resource group "eventgrid-emulator".
	ResourceID string

	// OnPublish, when set, receives the events of every accepted
	// publish request, after they are recorded and before the client
	// is answered, so a test can deliver them onward. It runs on the
	// request's goroutine without the server's lock held.
	OnPublish func([]Published)
}

// Topic is an Event Grid custom topic, published to with azeventgrid.
type Topic struct {
	s      *Server
	name   string
	opts   TopicOptions
	events []Published
}

// AddTopic creates the custom topic name, replacing any topic of that
// name and its events.
func (s *Server) AddTopic(name string, opts TopicOptions) *Topic {
	if opts.Schema == "" {
		opts.Schema = SchemaEventGrid
	}
	if opts.ResourceID == "" {
		opts.ResourceID = "/subscriptions/00000000-0000-0000-0000-000000000000" +
			"/resourceGroups/eventgrid-emulator/providers/Microsoft.EventGrid/topics/" + name
	}
	t := &Topic{s: s, name: name, opts: opts}
	s.mu.Lock()
	s.topics[name] = t
	s.mu.Unlock()
	return t
}

// Topic returns the custom topic name, or nil.
func (s *Server) Topic(name string) *Topic {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.topics[name]
}

// Name is the topic's name.
func (t *Topic) Name() string { return t.name }

// ResourceID is the topic's Azure resource ID.
func (t *Topic) ResourceID() string { return t.opts.ResourceID }

// Endpoint is the URL azeventgrid.NewClient* take for this topic:
// {URL}/customtopics/{name}/api/events.
func (t *Topic) Endpoint() string {
	return t.s.URL() + "/customtopics/" + url.PathEscape(t.name) + "/api/events"
}

// Events returns a copy of the events published to the topic, in the
// order they were accepted.
func (t *Topic) Events() []Published {
	t.s.mu.Lock()
	defer t.s.mu.Unlock()
	return slices.Clone(t.events)
}

// publishEvents serves azeventgrid's PublishEvents and
// PublishCloudEvents: a JSON array in the topic's schema (a
// CloudEvents topic also takes one event alone).
func (s *Server) publishEvents(w http.ResponseWriter, r *http.Request, name string, body []byte) {
	t := s.Topic(name)
	if t == nil {
		writeError(w, http.StatusNotFound, "NotFound", "topic "+name+" does not exist")
		return
	}

	mt := mediaType(r.Header.Get("Content-Type"))
	var want []string
	switch t.opts.Schema {
	case SchemaCloudEvents:
		want = []string{ctCloudEventBatch, ctCloudEvent}
	default:
		want = []string{ctJSON}
	}
	if !slices.Contains(want, mt) {
		writeError(w, http.StatusBadRequest, "BadRequest", "this topic takes events in the "+
			string(t.opts.Schema)+" schema; content type "+mt+" does not carry them")
		return
	}

	raws, err := splitEvents(body, mt == ctCloudEvent)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", badEventMessage(err))
		return
	}
	parse := parseCloudEvent
	if t.opts.Schema != SchemaCloudEvents {
		parse = func(raw json.RawMessage) (Published, error) { return parseGridEvent(raw, t.opts.ResourceID) }
	}
	events, _, err := parseEvents(raws, name, parse)
	if err != nil {
		writeError(w, http.StatusBadRequest, "BadRequest", badEventMessage(err))
		return
	}

	s.mu.Lock()
	t.events = append(t.events, events...)
	s.mu.Unlock()
	if t.opts.OnPublish != nil {
		t.opts.OnPublish(slices.Clone(events))
	}
	w.WriteHeader(http.StatusOK)
}
