package eventgrid_test

import (
	"context"
	"fmt"
	"log"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/messaging"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/messaging/eventgrid/aznamespaces"

	"github.com/cmkrotator/cmkrotator/emulator/eventgrid"
)

// A namespace topic with one queue subscription, driven by the real
// aznamespaces clients over HTTPS.
func Example() {
	srv, err := eventgrid.Start(eventgrid.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	sub := srv.AddNamespaceTopic("keys").AddSubscription("rotator", eventgrid.SubscriptionOptions{})

	opts := azcore.ClientOptions{Transport: srv.HTTPClient()}
	cred := azcore.NewKeyCredential(eventgrid.DefaultKey)
	sender, err := aznamespaces.NewSenderClientWithSharedKeyCredential(srv.URL(), "keys", cred,
		&aznamespaces.SenderClientOptions{ClientOptions: opts})
	if err != nil {
		log.Fatal(err)
	}
	receiver, err := aznamespaces.NewReceiverClientWithSharedKeyCredential(srv.URL(), "keys", "rotator", cred,
		&aznamespaces.ReceiverClientOptions{ClientOptions: opts})
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	ev, err := messaging.NewCloudEvent("/vaults/v1", "Microsoft.KeyVault.KeyNewVersionCreated",
		map[string]string{"Id": "https://v1.vault.azure.net/keys/cmk/v2"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := sender.SendEvent(ctx, &ev, nil); err != nil {
		log.Fatal(err)
	}

	resp, err := receiver.ReceiveEvents(ctx, &aznamespaces.ReceiveEventsOptions{
		MaxEvents: to.Ptr[int32](10), MaxWaitTime: to.Ptr[int32](10),
	})
	if err != nil {
		log.Fatal(err)
	}
	var tokens []string
	for _, d := range resp.Details {
		fmt.Printf("%s delivery %d: %s\n", d.Event.Type, *d.BrokerProperties.DeliveryCount, d.Event.Data)
		tokens = append(tokens, *d.BrokerProperties.LockToken)
	}

	ack, err := receiver.AcknowledgeEvents(ctx, tokens, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("acknowledged:", len(ack.SucceededLockTokens), "waiting:", len(sub.Events()))
	// Output:
	// Microsoft.KeyVault.KeyNewVersionCreated delivery 1: {"Id":"https://v1.vault.azure.net/keys/cmk/v2"}
	// acknowledged: 1 waiting: 0
}
