package emulator_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/cmkrotator/cmkrotator/emulator"
)

// A test starts the emulator, seeds a vault, a key and a server, and
// points the real SDK clients at it.
func Example() {
	e, err := emulator.Start(emulator.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()

	v := e.AddVault("contoso")
	first, _ := v.CreateKey("fluid-cmk", emulator.KeyOptions{})
	id, _ := e.PutServer(emulator.ServerSpec{Name: "relay-eu", KeyURL: first.KID})
	second, _ := v.RotateKey("fluid-cmk")

	// In a test, prefer t.Setenv.
	os.Setenv("IDENTITY_ENDPOINT", e.IdentityEndpoint())
	os.Setenv("IDENTITY_HEADER", e.IdentityHeader())
	defer os.Unsetenv("IDENTITY_ENDPOINT")
	defer os.Unsetenv("IDENTITY_HEADER")
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{
		ID:            azidentity.ClientID(e.ClientID()),
		ClientOptions: azcore.ClientOptions{Transport: e.HTTPClient()},
	})
	if err != nil {
		log.Fatal(err)
	}
	keys, err := azkeys.NewClient(v.URL(), cred, &azkeys.ClientOptions{
		ClientOptions:                        azcore.ClientOptions{Transport: e.HTTPClient()},
		DisableChallengeResourceVerification: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	cur, err := keys.GetKey(context.Background(), "fluid-cmk", "", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("current is the rotated version:", cur.Key.KID.Version() == second.Version)

	url, _ := e.ServerKeyURL(id)
	fmt.Println("server still on the first version:", url == first.KID)

	for _, r := range e.Requests() {
		if r.Service == "keyvault" {
			fmt.Println(r.Method, r.Path, r.Status)
		}
	}
	// Output:
	// current is the rotated version: true
	// server still on the first version: true
	// GET /keys/fluid-cmk/ 401
	// GET /keys/fluid-cmk/ 200
}
