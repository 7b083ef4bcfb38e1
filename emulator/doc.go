// Package emulator is an in-process emulation of the Azure endpoints
// cmkrotator calls: the App Service managed identity endpoint, Key Vault
// keys and the Microsoft.FluidRelay resource provider (api-version
// 2022-06-01) of Resource Manager. The real Azure SDK clients (azidentity,
// azkeys, azcore's ARM pipeline) run against it unchanged, over loopback
// HTTP(S) or, inside testing/synctest bubbles, over InProcessTransport.
//
// # Setting up a client
//
// Start listens on 127.0.0.1 ephemeral ports: a plain HTTP identity endpoint,
// an HTTPS Resource Manager endpoint, one HTTPS endpoint per vault
// (AddVault) and a plain HTTP control surface. One generated ECDSA
// certificate (IP SANs 127.0.0.1 and ::1, DNS localhost) serves every HTTPS
// endpoint; trust it with CertPool, CertFile (for SSL_CERT_FILE) or
// HTTPClient. Then:
//
//   - managed identity: IDENTITY_ENDPOINT=IdentityEndpoint(),
//     IDENTITY_HEADER=IdentityHeader(), AZURE_CLIENT_ID=ClientID();
//   - Key Vault: the vault's URL; the challenge names
//     resource="https://vault.azure.net", so azkeys needs
//     DisableChallengeResourceVerification for the loopback host;
//   - Resource Manager: cloud.ResourceManager with Endpoint ARMEndpoint() and
//     Audience "https://management.core.windows.net/".
//
// azidentity caches tokens per process by identity and resource, so tokens
// are signed with a per-process key and every emulator in the process
// accepts them. Start the emulator outside a synctest bubble and use
// InProcessTransport inside it.
//
// # Fidelity
//
// Wire shapes follow the services: KeyBundle with unpadded base64url key
// fields and integer Unix times; Key Vault's and ARM's error bodies; a 401
// with Key Vault's WWW-Authenticate challenge before any body is read; list
// pages whose nextLink is absolute (Key Vault: null at the end, 25 items a
// page unless maxresults asks for fewer; ARM: ""). Key Vault accepts any
// api-version; Resource Manager only 2022-06-01
// (MissingApiVersionParameter, InvalidApiVersionParameter otherwise). Key
// Vault accepts only tokens for https://vault.azure.net; Resource Manager
// only tokens for https://management.core.windows.net/ or
// https://management.azure.com/ (401 AuthenticationFailed without a token,
// InvalidAuthenticationToken for a bad one, ExpiredAuthenticationToken,
// InvalidAuthenticationTokenAudience). The identity endpoint requires
// X-IDENTITY-HEADER and api-version 2019-08-01 and, the function having a
// user-assigned identity only, refuses a request without the configured
// client_id with 400, as App Service does.
//
// Key versions are 32 lower-case hex digits; created times of one key are
// strictly increasing, at least a second apart; the current version is the
// newest. Key material is random: the emulator does no cryptography.
//
// As Key Vault does, GET /keys/{name}/{version} of a disabled version, and
// GET /keys/{name} when the current version is disabled, answer 403:
//
//	{"error":{"code":"Forbidden","message":"Operation get is not allowed on a disabled key.",
//	 "innererror":{"code":"KeyDisabled"}}}
//
// Listing versions still shows a disabled version, with
// attributes.enabled false; updating it (to enable it again) is allowed;
// Fluid Relay's checks below still see it as disabled. An update leaves
// the attributes it does not send, and removes nbf or exp sent as null.
//
// Kids name the vault's endpoint, https://127.0.0.1:P/keys/{name}/{version}.
// Vault.SetKeyIDHost makes them name another host instead, in answers,
// lists, KeyVersionInfo.KID and events, as a vault reached through an
// alias names its canonical host.
//
// PUT and PATCH of a server answer 200 only, synchronously, and leave its
// provisioningState Succeeded unless a fault says otherwise;
// SetServerProvisioningState sets another one until the server's next
// write. When they touch the customer-managed key they enforce Fluid
// Relay's rules against the emulated vaults (found by the key URL's host:
// a vault's loopback address, the host its kids name, or
// {name}.vault.azure.net). The error codes are the emulator's own, all
// with status 400:
//
//	InvalidRequestContent              malformed body or enum value
//	LocationRequired                   PUT without location
//	InvalidResourceLocation            location differs from the server's
//	CustomerManagedKeyCannotBeAdded    CMK on a server created without it
//	CustomerManagedKeyCannotBeRemoved  CMK removed or its URL emptied
//	UserAssignedIdentityRequired       identity.type or the key identity not exactly UserAssigned
//	UserAssignedIdentityNotFound       key identity not in identity.userAssignedIdentities
//	InvalidKeyEncryptionKeyUrl         not https://{vault}/keys/{name}[/{version}], or
//	                                   with a query, fragment or user info
//	KeyVaultNotFound                   no emulated vault at the URL's host
//	KeyVaultKeyNotFound                no such key or version
//	KeyVaultKeyTypeNotSupported        not RSA or RSA-HSM
//	KeyVaultKeyDisabled                version disabled
//	KeyVaultKeyNotYetValid             before nbf
//	KeyVaultKeyExpired                 at or after exp
//	KeyVaultKeyOperationsNotPermitted  wrapKey or unwrapKey missing
//	PreviousKeyVersionDisabled         the version in use is disabled
//	PreviousKeyVersionExpired          the version in use has expired
//	PreviousKeyVersionNotFound         the version in use cannot be found
//
// A versionless key URL is accepted and checked against the current version.
// Missing servers answer 404 ResourceNotFound; DELETE answers 200, or 204
// when there was nothing to delete.
//
// # Faults and throttling
//
// InjectFault changes how matching requests are answered, after
// authentication: a status with an error code and Retry-After, N times or
// always, latency, a connection reset, stale reads (the next K GETs of a
// server after a PATCH show the previous key URL), or a provisioningState
// (after a PATCH the server reports, say, Updating or Failed for its next
// N GETs, or until its next write, then Succeeded). SetThrottle turns on
// Resource Manager's per-subscription token buckets for reads and writes
// (ARMDefaultThrottle has ARM's sizes): answers carry
// x-ms-ratelimit-remaining-subscription-reads or -writes, and an empty
// bucket answers 429 SubscriptionRequestsThrottled with Retry-After. The
// buckets use time.Now, so a synctest bubble's clock drives them. Throttling
// is off after Start.
//
// # Control surface
//
// ControlURL serves JSON over plain HTTP, for the local job and for people:
//
//	GET    /                                       this list of routes, as JSON, with the values
//	                                               a restricted body member accepts
//	GET    /state                                  vaults, key versions, servers
//	POST   /vaults                                 {"name"}: add a vault
//	PATCH  /vaults/{vault}                         {"keyIdHost"}: the host its kids name ("": its own)
//	POST   /vaults/{vault}/keys/{key}              {"type","ops","disabled","notBefore","expires"}: create a version
//	POST   /vaults/{vault}/keys/{key}/rotate       rotate
//	PATCH  /vaults/{vault}/keys/{key}/{version}    {"enabled","notBefore","expires"}, each optional,
//	                                               null removes a time ("current" names the newest)
//	DELETE /vaults/{vault}/keys/{key}              delete the key
//	PUT    /servers                                {"subscription","resourceGroup","name","location","identity","keyUrl"}
//	PATCH  /servers                                {"id","keyUrl","provisioningState"}: change a server behind the product's back
//	DELETE /servers?id={id}                        delete a server
//	POST   /faults                                 a Fault in camelCase ("staleReads", "provisioningState",
//	                                               "stateReads", …), durations as "1.5s"; answers {"id"};
//	                                               service arm, keyvault or identity, method GET, HEAD,
//	                                               PUT, PATCH, POST or DELETE, absent for any
//	DELETE /faults, /faults/{id}                   clear all, or one
//	PUT    /throttle                               a Throttle, or null to turn it off
//	GET    /requests, DELETE /requests             recorded requests
//	POST   /events                                 {"type","vault","key","version","schema"}: a key event
//
// Errors answer {"error": "..."} with 400 or 404.
package emulator
