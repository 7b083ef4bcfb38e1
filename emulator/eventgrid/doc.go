// Package eventgrid emulates the parts of Azure Event Grid that the Go
// SDK clients speak, for tests: namespace topics with queue
// subscriptions (aznamespaces: publish, receive with lock,
// acknowledge, release, reject, renew locks) and custom topics
// (azeventgrid: PublishEvents and PublishCloudEvents).
//
// A Server listens on a loopback HTTPS port with a generated
// certificate (or the caller's), or, with Options.InProcess, on no
// socket at all; InProcessTransport reaches it either way:
//
//	srv, err := eventgrid.Start(eventgrid.Options{})
//	...
//	defer srv.Close()
//	topic := srv.AddNamespaceTopic("keys")
//	sub := topic.AddSubscription("rotator", eventgrid.SubscriptionOptions{})
//	opts := azcore.ClientOptions{Transport: srv.HTTPClient()}
//	cred := azcore.NewKeyCredential(eventgrid.DefaultKey)
//	receiver, err := aznamespaces.NewReceiverClientWithSharedKeyCredential(
//		srv.URL(), "keys", "rotator", cred,
//		&aznamespaces.ReceiverClientOptions{ClientOptions: opts})
//
// Custom topics are served at {URL}/customtopics/{name}/api/events
// (Topic.Endpoint). Both kinds take the shared key (Options.Key) in the
// header their client sends it in, or a bearer token for audience
// https://eventgrid.azure.net that Options.ValidateToken accepts.
//
// # Semantics
//
// An event published to a namespace topic is queued in every
// subscription the topic has at that time. A receive answers as soon
// as at least one event is available, or empty after maxWaitTime
// (10–120 s, default 60 s); each received event is locked for the
// subscription's LockDuration under a fresh lock token and its
// delivery count grows by one. Acknowledge removes it; reject
// dead-letters it; release makes it available again, after the
// release delay if one was given; renewLock extends the lock. A lock
// that expires makes the event available again. An event released or
// expired after MaxDeliveryCount deliveries is dead-lettered. Lock
// tokens that are unknown, settled or expired fail one by one with
// code TokenLost in the answer's failedLockTokens, as Azure does.
//
// Time is read from the time package, so under testing/synctest (with
// Options.InProcess and InProcessTransport) lock expiry, release delays
// and receive waits follow the bubble's fake clock.
//
// Requests are recorded (without credentials) and faults can be
// injected per operation and topic.
//
// Not emulated: event filters, retention and time to live, push
// delivery, SAS tokens (aeg-sas-token), and namespace topics with
// more than one namespace per server.
package eventgrid
